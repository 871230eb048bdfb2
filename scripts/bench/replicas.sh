#!/usr/bin/env bash
# Stateful `echo` throughput on 1 vs 3 replicas sharing PostgreSQL + Redis: each request is
# `POST /threads/{id}/runs/wait` on a random replica and a random one of 64 threads (so runs of
# one thread are created on different replicas and queue behind each other), with oha.
#
#   scripts/bench/replicas.sh [ANTLER_BIN]      (default target/release/antler)
# Knobs: REPLICAS ("1 3"), CONC (32), DURATION (10s), THREADS (64), BASE_PORT (2041),
#        PGURL (postgres://postgres@127.0.0.1:5432/test: a fresh database is made next to it),
#        REDIS_URL (redis://127.0.0.1:6379).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
BIN="${1:-target/release/antler}"
REPLICAS="${REPLICAS:-1 3}"
CONC="${CONC:-32}"
DURATION="${DURATION:-10s}"
THREADS="${THREADS:-64}"
BASE_PORT="${BASE_PORT:-2041}"
PGURL="${PGURL:-postgres://postgres@127.0.0.1:5432/test}"
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
command -v oha >/dev/null || cargo install oha --locked
work=$(mktemp -d)
pids=()
db=""
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "$db" ] && psql -q "$PGURL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

printf '%-9s %10s %10s %10s %18s\n' replicas runs/s p50_ms p99_ms cpu_ms_per_run
for n in $REPLICAS; do
  db="antler_bench_rep_$$_$n"
  psql -q "$PGURL" -c "CREATE DATABASE $db" >/dev/null
  url="${PGURL%/*}/$db"
  cat >"$work/config.yaml" <<EOF
database:
  backend: postgres
  postgres_url: "$url"
stream_bridge:
  type: redis
  redis_url: "$REDIS_URL"
  key_prefix: "antler-bench-$$-$n:"
EOF
  pids=()
  ports=()
  for i in $(seq 0 $((n - 1))); do
    port=$((BASE_PORT + i))
    mkdir -p "$work/r$i"
    "$BIN" serve --host 127.0.0.1 --port "$port" --config "$work/config.yaml" --data-dir "$work/r$i" \
      >"$work/r$i.out" 2>"$work/r$i.err" &
    pids+=($!)
    ports+=("$port")
    for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$port/ok" >/dev/null 2>&1 && break; sleep 0.1; done
  done
  ids=()
  for _ in $(seq "$THREADS"); do
    ids+=("$(curl -fsS -XPOST "http://127.0.0.1:${ports[0]}/threads" -d '{}' |
      python3 -c 'import json,sys;print(json.load(sys.stdin)["thread_id"])')")
  done
  alt_ids=$(IFS='|'; echo "${ids[*]}")
  alt_ports=$(IFS='|'; echo "${ports[*]}")
  body='{"assistant_id":"echo","input":{"messages":[{"role":"human","content":"hi"}]}}'
  ticks() { local t=0 p; for p in "${pids[@]}"; do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat"))); done; echo "$t"; }
  t0=$(ticks)
  out=$(oha -z "$DURATION" -c "$CONC" --no-tui --output-format json -m POST \
    -H 'content-type: application/json' -d "$body" \
    --rand-regex-url "http://127.0.0.1:($alt_ports)/threads/($alt_ids)/runs/wait")
  t1=$(ticks)
  echo "$out" | python3 -c '
import json, sys
n, t0, t1, hz = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
d = json.load(sys.stdin)
s = d["summary"]; p = d["latencyPercentiles"]
codes = d.get("statusCodeDistribution", {})
runs = sum(codes.values())
bad = {k: v for k, v in codes.items() if k != "200"}
if bad:
    sys.exit(f"non-200 answers with {n} replicas: {bad}")
cpu = (t1 - t0) / hz * 1000 / max(runs, 1)
rps, p50, p99 = s["requestsPerSec"], p["p50"] * 1000, p["p99"] * 1000
print(f"{n:<9} {rps:10.1f} {p50:10.2f} {p99:10.2f} {cpu:18.3f}")
' "$n" "$t0" "$t1" "$(getconf CLK_TCK)"
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=()
  psql -q "$PGURL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
  db=""
done
