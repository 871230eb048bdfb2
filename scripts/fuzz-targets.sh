#!/usr/bin/env bash
# Runs the libFuzzer targets of fuzz/ (config + ${VAR} substitution, Last-Event-ID, run-create
# bodies, stored checkpoints / JSON columns) for SECONDS each (default 60):
#   scripts/fuzz-targets.sh [SECONDS] [TARGET...]
# With a nightly toolchain and cargo-fuzz installed: `cargo +nightly fuzz run` (coverage-guided,
# sanitizers). Otherwise (this project's machines have one stable toolchain): a stable release
# build of the same targets, which replays fuzz/seeds/<target> and fuzz/corpus/<target> and
# mutates them without coverage guidance. A crash leaves its input in fuzz/artifacts/ (or the
# working directory) and fails the script.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
secs="${1:-60}"
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then targets=(config last_event_id run_create checkpoint); fi
if cargo +nightly --version >/dev/null 2>&1 && cargo +nightly fuzz --version >/dev/null 2>&1; then
  for t in "${targets[@]}"; do
    cargo +nightly fuzz run --fuzz-dir fuzz "$t" "fuzz/seeds/$t" -- -max_total_time="$secs"
  done
  exit 0
fi
echo "no nightly cargo-fuzz here: stable build, seeds replayed and mutated without coverage guidance"
# the workspace's target directory (fuzz/Cargo.lock pins the workspace's versions, so most of
# the build is shared); FUZZ_PROFILE=debug (what scripts/test.sh uses) or release (default)
profile="${FUZZ_PROFILE:-release}"
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
flag=(); [ "$profile" = release ] && flag=(--release)
cargo build "${flag[@]}" --manifest-path fuzz/Cargo.toml --target-dir "$target_dir"
mkdir -p fuzz/artifacts
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  echo "==> $t ($secs s)"
  "$target_dir/$profile/$t" -max_total_time="$secs" -artifact_prefix="fuzz/artifacts/$t-" \
    "fuzz/corpus/$t" "fuzz/seeds/$t"
done
