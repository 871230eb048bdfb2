#!/usr/bin/env bash
# Side-by-side benchmark of Antler and the reference LangGraph server (langgraph-api, in-memory),
# through the shared harness ../shared/bench/run-anchors.sh (same tests, same load tool: oha):
#   1  stateless echo POST /runs/wait at concurrency 1, 8, 32: runs/s, p50, p99
#   2  POST /threads + POST /threads/{id}/runs/stream: time to first byte (and to the end)
#   3  1,000 (and 100) concurrent join_stream subscribers to one `slow` run
#   4  idle RSS after start, peak RSS under load
#   5  startup time: process start -> GET /ok answers 200
#
#   scripts/bench/run.sh antler      # builds target/release/antler (or uses $ANTLER_BIN)
#   scripts/bench/run.sh lg          # the reference peer (venv from ../shared/peers/setup-langgraph.sh, $LG_VENV)
#   scripts/bench/run.sh both        # both, then a side-by-side table with ratios (default)
#   scripts/bench/run.sh compare DIR_A DIR_B ...   # table of earlier result directories
#
# Knobs: the harness's (DURATION, REPEATS, CONCURRENCIES, STREAM_RUNS, FANOUT_NS, FANOUT_REPEATS,
# STARTUP_REPEATS, TESTS, CALIBRATE ...; see ../shared/bench/README.md), plus
#   BENCH_HARNESS  the harness directory     (default: <repo>/../shared/bench)
#   RESULTS        where result dirs go      (default: scripts/bench/results, git-ignored)
#   ANTLER_BIN     binary to measure          (default: target/release/antler, built here)
#   ANTLER_PORT    (default 2034)   LG_PORT (default 2032)   LG_VENV (default /work/peers/lg)
# The load generator runs on the same machine: compare figures from the same run only.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
BENCH_HARNESS="${BENCH_HARNESS:-$REPO/../shared/bench}"
RESULTS="${RESULTS:-$HERE/results}"
ANTLER_PORT="${ANTLER_PORT:-2034}"
LG_PORT="${LG_PORT:-2032}"
export LG_VENV="${LG_VENV:-/work/peers/lg}"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
log() { printf '[bench %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

[ -f "$BENCH_HARNESS/run-anchors.sh" ] || {
  log "harness not found at $BENCH_HARNESS (set BENCH_HARNESS to the shared bench/ directory)"
  exit 1
}
BENCH_HARNESS="$(cd "$BENCH_HARNESS" && pwd)"

ensure_oha() {
  if [ -n "${OHA:-}" ] && [ -x "$OHA" ]; then return; fi
  OHA="$(command -v oha || true)"
  [ -z "$OHA" ] && [ -x "$HOME/.cargo/bin/oha" ] && OHA="$HOME/.cargo/bin/oha"
  if [ -z "$OHA" ]; then
    log "oha not found: cargo install oha --locked"
    cargo install oha --locked
    OHA="$HOME/.cargo/bin/oha"
  fi
  export OHA
}

# No calibration unless the harness's ceiling server was built (cargo build --release in bench/ceiling).
if [ -z "${CALIBRATE:-}" ]; then
  if [ -x "$BENCH_HARNESS/ceiling/target/release/bench-ceiling" ]; then export CALIBRATE=1; else export CALIBRATE=0; fi
fi

run_antler() {
  local bin="${ANTLER_BIN:-}"
  if [ -z "$bin" ]; then
    log "cargo build --release -p antler"
    (cd "$REPO" && cargo build --release -p antler)
    local target_dir
    target_dir=$(cd "$REPO" && cargo metadata --format-version 1 --no-deps |
      python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
    bin="$target_dir/release/antler"
  fi
  [ -x "$bin" ] || { log "no antler binary at $bin"; exit 1; }
  local data="${TMPDIR:-/tmp}/antler-bench-data-$$"
  local out="$RESULTS/antler-$STAMP"
  mkdir -p "$RESULTS"
  # a fresh data dir on every start (test 5 starts it several times)
  ANTLER_BENCH_BIN="$bin" ANTLER_BENCH_DATA="$data" \
    START_CMD="rm -rf \"\$ANTLER_BENCH_DATA\" && mkdir -p \"\$ANTLER_BENCH_DATA\" && exec \"\$ANTLER_BENCH_BIN\" serve --host 127.0.0.1 --port $ANTLER_PORT --data-dir \"\$ANTLER_BENCH_DATA\"" \
    TARGET_URL="http://127.0.0.1:$ANTLER_PORT" LABEL=antler OUT_DIR="$out" \
    bash "$BENCH_HARNESS/run-anchors.sh" >&2
  rm -rf "$data"
  echo "$out"
}

run_lg() {
  [ -x "$LG_VENV/bin/langgraph" ] || {
    log "no reference peer in $LG_VENV: LG_VENV=$LG_VENV bash ../shared/peers/setup-langgraph.sh"
    exit 1
  }
  local out="$RESULTS/lg-$STAMP"
  mkdir -p "$RESULTS"
  PORT="$LG_PORT" START_CMD='exec bash "$BENCH_DIR/servers/start-lg.sh"' \
    TARGET_URL="http://127.0.0.1:$LG_PORT" LABEL=lg OUT_DIR="$out" \
    bash "$BENCH_HARNESS/run-anchors.sh" >&2
  echo "$out"
}

compare() { python3 "$BENCH_HARNESS/lib/compare.py" "$@"; }

what="${1:-both}"
case "$what" in
  antler) ensure_oha; run_antler ;;
  lg) ensure_oha; run_lg ;;
  both)
    ensure_oha
    lg_dir=$(run_lg)
    antler_dir=$(run_antler)
    compare "$lg_dir" "$antler_dir" | tee "$RESULTS/compare-$STAMP.txt"
    ;;
  compare) shift; compare "$@" ;;
  *) sed -n '2,25p' "$0"; exit 2 ;;
esac
