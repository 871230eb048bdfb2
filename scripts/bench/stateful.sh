#!/usr/bin/env bash
# Stateful run throughput: `POST /threads/{id}/runs/wait` of `echo` spread over N threads (each
# run checkpoints to the database, updates its thread and persists its run events), with oha at
# concurrencies 1, 8 and 32. Complements test 1 of run-anchors.sh (stateless /runs/wait).
#
#   scripts/bench/stateful.sh [ANTLER_BIN]      (default target/release/antler)
# Knobs: PORT (2035), THREADS (64), DURATION (10s), CONCURRENCIES ("1 8 32"), CONFIG (a config file)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
BIN="${1:-target/release/antler}"
PORT="${PORT:-2035}"
THREADS="${THREADS:-64}"
DURATION="${DURATION:-10s}"
CONCURRENCIES="${CONCURRENCIES:-1 8 32}"
command -v oha >/dev/null || cargo install oha --locked
data=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$data"' EXIT
args=(serve --host 127.0.0.1 --port "$PORT" --data-dir "$data")
[ -n "${CONFIG:-}" ] && args+=(--config "$CONFIG")
"$BIN" "${args[@]}" >"$data/out" 2>"$data/err" &
pid=$!
for _ in $(seq 50); do curl -fsS "http://127.0.0.1:$PORT/ok" >/dev/null 2>&1 && break; sleep 0.1; done
ids=()
for _ in $(seq "$THREADS"); do
  ids+=("$(curl -fsS -XPOST "http://127.0.0.1:$PORT/threads" -d '{}' | python3 -c 'import json,sys;print(json.load(sys.stdin)["thread_id"])')")
done
alt=$(IFS='|'; echo "${ids[*]}")
body='{"assistant_id":"echo","input":{"messages":[{"role":"human","content":"hi"}]}}'
ticks() { awk '{print $14+$15}' "/proc/$pid/stat"; }
hz=$(getconf CLK_TCK)
printf '%-6s %10s %10s %10s %14s\n' conc runs/s p50_ms p99_ms cpu_ms_per_run
for c in $CONCURRENCIES; do
  t0=$(ticks)
  out=$(oha -z "$DURATION" -c "$c" --no-tui --output-format json -m POST \
    -H 'content-type: application/json' -d "$body" \
    --rand-regex-url "http://127.0.0.1:$PORT/threads/($alt)/runs/wait")
  t1=$(ticks)
  echo "$out" | python3 -c '
import json, sys
c, t0, t1, hz = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
d = json.load(sys.stdin)
s = d["summary"]; p = d["latencyPercentiles"]
codes = d.get("statusCodeDistribution", {})
n = sum(codes.values())
bad = {k: v for k, v in codes.items() if k != "200"}
if bad:
    sys.exit(f"non-200 answers at c={c}: {bad}")
cpu = (t1 - t0) / hz * 1000 / max(n, 1)
rps, p50, p99 = s["requestsPerSec"], p["p50"] * 1000, p["p99"] * 1000
print(f"{c:<6} {rps:10.1f} {p50:10.2f} {p99:10.2f} {cpu:14.3f}")
' "$c" "$t0" "$t1" "$hz"
done
