#!/usr/bin/env bash
# The durable path at the limit (issue 15), Antler vs the reference server in ONE run: alternating
# rounds, each round every server in turn on a fresh start (fresh data dir, fresh database):
#   1  stateful `echo` POST /threads/{id}/runs/wait on 64 threads (oha, random thread) at c=1/8/32,
#      then stateless POST /runs/wait at c=32: runs/s, p50, p99, server CPU per run
#   2  cost growth on ONE thread: CPU per run for runs 1-100 vs 901-1000 (~2,000 messages), for
#      runs/stream (stream_mode updates) and runs/wait (+ response bytes, + GET state cost)
#   3  commits and statements per run (PostgreSQL pg_stat_database, MariaDB SHOW GLOBAL STATUS)
#   4  p50/p99 of a stateful run at c=1 (from 1)
# then medians, ratios and targets per backend: stdout and scripts/bench/results/durable-<stamp>/.
#
#   scripts/bench/durable.sh [--rounds N] [--backends sqlite,postgres,mysql] [--skip-ref] BIN [BIN2 ...]
#   scripts/bench/durable.sh --help                    (all options)
#   python3 scripts/bench/durable_report.py DIR        (re-render DIR/summary.md from DIR/raw)
#
# Knobs (environment, or the matching --option): ROUNDS (3), BACKENDS (sqlite,postgres,mysql),
# DURATION (8s per oha window), CONCURRENCIES ("1 8 32"), STATELESS_C (32), THREADS (64),
# GROWTH_RUNS (1000 runs per growth thread; 0 = no growth), GROWTH_WINDOW (100), GROWTH_ROUNDS
# (0 = growth in every round, K = first K rounds only), SKIP_REF (0),
# DURABLE_PORT (2061), DURABLE_REF_PORT (2062), LG_VENV (/work/peers/lg), BENCH_HARNESS
# (<repo>/../shared/bench), PG_BASE (postgres://postgres@127.0.0.1:5432), MYSQL_BASE
# (mysql://root@127.0.0.1:3306), PG_SETTLE (11 s: PostgreSQL 15 publishes an idle backend's
# statistics up to 10 s late), RESULTS (scripts/bench/results), OHA, KEEP_WORK (1 keeps the
# servers' data dirs and logs).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
export LG_VENV="${LG_VENV:-/work/peers/lg}"
export BENCH_HARNESS="${BENCH_HARNESS:-$REPO/../shared/bench}"

skip_ref="${SKIP_REF:-0}"
for arg in "$@"; do
  case "$arg" in
    --skip-ref) skip_ref=1 ;;
    -h|--help) exec python3 "$HERE/durable.py" --help ;;
  esac
done

if [ -z "${OHA:-}" ]; then
  OHA="$(command -v oha || true)"
  [ -z "$OHA" ] && [ -x "$HOME/.cargo/bin/oha" ] && OHA="$HOME/.cargo/bin/oha"
  if [ -z "$OHA" ]; then
    echo "[durable] oha not found: cargo install oha --locked" >&2
    cargo install oha --locked
    OHA="$HOME/.cargo/bin/oha"
  fi
fi
export OHA

if [ "$skip_ref" != 1 ] && [ ! -x "$LG_VENV/bin/langgraph" ]; then
  echo "[durable] no reference peer in $LG_VENV: installing it (../shared/peers/setup-langgraph.sh)" >&2
  bash "$REPO/../shared/peers/setup-langgraph.sh"
fi

exec python3 "$HERE/durable.py" "$@"
