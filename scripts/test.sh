#!/usr/bin/env bash
# Runs every test of the project, and fails on the first failure:
#   1. cargo fmt --all -- --check
#   2. cargo clippy --workspace --all-targets -- -D warnings
#   3. cargo nextest run --workspace   (cargo test --workspace when nextest is missing)
#   4. cargo build -p antler
#   5. the libFuzzer targets of fuzz/, 5 s each (scripts/fuzz-targets.sh)
#   6. pytest tests/python against the binary just built (the official langgraph-sdk client)
#
# Python: $PYTHON if set, else .ci/.venv/bin/python if present, else python3; it needs
# tests/python/requirements.txt installed (.ci/run does that). Extra arguments go to pytest,
# e.g. `scripts/test.sh -k stream -x`. SKIP_CARGO=1 runs only step 6 (on an existing $ANTLER_BIN or
# target/debug/antler), for iterating on the Python suite.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*"; }

if [ "${SKIP_CARGO:-0}" != "1" ]; then
  step "cargo fmt --all -- --check"
  cargo fmt --all -- --check

  step "cargo clippy --workspace --all-targets -- -D warnings"
  cargo clippy --workspace --all-targets -- -D warnings

  if cargo nextest --version >/dev/null 2>&1; then
    step "cargo nextest run --workspace"
    cargo nextest run --workspace
  else
    step "cargo test --workspace (cargo-nextest not installed)"
    cargo test --workspace
  fi

  step "cargo build -p antler"
  cargo build -p antler

  step "fuzz targets, 5 s each (scripts/fuzz-targets.sh: stable, seeds replayed and mutated)"
  FUZZ_PROFILE=debug bash scripts/fuzz-targets.sh 5
fi

if [ -z "${PYTHON:-}" ]; then
  if [ -x .ci/.venv/bin/python ]; then PYTHON=.ci/.venv/bin/python; else PYTHON=python3; fi
fi
if ! "$PYTHON" -c 'import langgraph_sdk, pytest, pytest_asyncio' 2>/dev/null; then
  # A fresh machine: make the test venv here (what .ci/run does too).
  step "creating .ci/.venv with tests/python/requirements.txt"
  python3 -m venv .ci/.venv
  .ci/.venv/bin/python -m pip install -q --disable-pip-version-check -r tests/python/requirements.txt
  PYTHON=.ci/.venv/bin/python
fi

target_dir=$(cargo metadata --format-version 1 --no-deps |
  "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
export ANTLER_BIN="${ANTLER_BIN:-$target_dir/debug/antler}"

step "pytest tests/python (ANTLER_BIN=$ANTLER_BIN)"
set +e
env -u ANTLER_TEST_URL "$PYTHON" -m pytest tests/python "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
exit "$rc"
