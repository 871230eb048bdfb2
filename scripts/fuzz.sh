#!/usr/bin/env bash
# The long fuzz run: tests/python/test_fuzz.py (schemathesis, every phase, on SQLite, PostgreSQL
# and MySQL, in auth.mode none and api_key) with a bigger time budget per server than the test
# suite's 30 s. Usage: scripts/fuzz.sh [SECONDS_PER_SERVER (default 240)] [pytest args...]
# Set ANTLER_FUZZ_SEED to replay another seed. Needs the services of .ci/run and a built binary
# (cargo build -p antler, or ANTLER_BIN).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
seconds="${1:-240}"
shift || true
python="${PYTHON:-.ci/.venv/bin/python}"
export ANTLER_FUZZ_SECONDS="$seconds"
exec "$python" -m pytest tests/python/test_fuzz.py -v "$@"
