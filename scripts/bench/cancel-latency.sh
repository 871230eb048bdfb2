#!/usr/bin/env bash
# Cross-replica cancel latency: two replicas sharing PostgreSQL + Redis; a `slow` run executes
# on replica A, replica B cancels it with `wait=true`; the time of that request is how long the
# cancel took to reach A (durable request + Redis pub/sub wake-up) and for A to stop the run.
# Polls are set 30 s apart (`runs.poll_interval_ms`), so anything under that is the wake-up.
#
#   scripts/bench/cancel-latency.sh [ANTLER_BIN]      (default target/release/antler)
# Knobs: N (30 cancels), BASE_PORT (2051), PGURL, REDIS_URL, POLL_MS (30000).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
BIN="${1:-target/release/antler}"
N="${N:-30}"
BASE_PORT="${BASE_PORT:-2051}"
PGURL="${PGURL:-postgres://postgres@127.0.0.1:5432/test}"
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
POLL_MS="${POLL_MS:-30000}"
work=$(mktemp -d)
pids=()
db="antler_bench_cancel_$$"
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql -q "$PGURL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
psql -q "$PGURL" -c "CREATE DATABASE $db" >/dev/null
cat >"$work/config.yaml" <<EOF
database:
  backend: postgres
  postgres_url: "${PGURL%/*}/$db"
stream_bridge:
  type: redis
  redis_url: "$REDIS_URL"
  key_prefix: "antler-bench-cancel-$$:"
runs:
  poll_interval_ms: $POLL_MS
EOF
for i in 0 1; do
  port=$((BASE_PORT + i))
  mkdir -p "$work/r$i"
  "$BIN" serve --host 127.0.0.1 --port "$port" --config "$work/config.yaml" --data-dir "$work/r$i" \
    >"$work/r$i.out" 2>"$work/r$i.err" &
  pids+=($!)
  for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$port/ok" >/dev/null 2>&1 && break; sleep 0.1; done
done
python3 - "http://127.0.0.1:$BASE_PORT" "http://127.0.0.1:$((BASE_PORT + 1))" "$N" <<'PY'
import json, statistics, sys, time, urllib.request

a, b, n = sys.argv[1], sys.argv[2], int(sys.argv[3])

def call(method, url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        raw = r.read()
        return json.loads(raw) if raw else None

lat = []
for _ in range(n):
    tid = call("POST", f"{a}/threads", {})["thread_id"]
    run = call("POST", f"{a}/threads/{tid}/runs", {
        "assistant_id": "slow", "config": {"configurable": {"delay": 5.0}},
        "input": {"messages": [{"type": "human", "content": "go"}]}})
    rid = run["run_id"]
    while call("GET", f"{a}/threads/{tid}/runs/{rid}")["status"] != "running":
        time.sleep(0.01)
    t0 = time.perf_counter()
    call("POST", f"{b}/threads/{tid}/runs/{rid}/cancel?wait=true&action=interrupt")
    lat.append((time.perf_counter() - t0) * 1000)
    status = call("GET", f"{b}/threads/{tid}/runs/{rid}")["status"]
    assert status == "interrupted", status
lat.sort()
print(f"cross-replica cancel (wait=true), n={n}: p50 {statistics.median(lat):.1f} ms, "
      f"p90 {lat[int(0.9 * (n - 1))]:.1f} ms, max {lat[-1]:.1f} ms")
PY
