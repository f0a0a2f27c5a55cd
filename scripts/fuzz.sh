#!/usr/bin/env bash
# Builds the cargo-fuzz targets in fuzz/ and runs each for a bounded time over its seed corpus
# (fuzz/corpus/<target>/, kept in the repository), on the stable toolchain: no sanitizer
# (`-s none`, the one cargo-fuzz mode that needs no nightly flag), with libFuzzer's coverage
# instrumentation, debug assertions and overflow checks.
#
#   scripts/fuzz.sh                 every target, FUZZ_SECONDS (default 40) each
#   scripts/fuzz.sh filter 600      one target for 10 minutes
#
# New inputs libFuzzer finds go to a temporary directory, not into the repository; to keep some,
# minimize them into the corpus by hand (`cargo fuzz cmin -s none <target>`). A crash stops the
# script with its input saved under fuzz/artifacts/<target>/ (reproduce with
# `cargo fuzz run -s none -O <target> <file>`); once fixed, add that file to the corpus as
# `crash-<what>`. The layer_apply target needs root (it shuts itself in a mount namespace).
#
# Cost on 2 cores: a cold build about 5 min (fuzz/target, ~1.5 GB; berth-transfer brings
# reqwest and aws-lc), a warm one seconds; then FUZZ_SECONDS + ~2 s per target.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds=${FUZZ_SECONDS:-40}
targets=(filter layer_apply manifest ttrpc_frame)
build=()  # cargo fuzz build with no target builds them all
if [ $# -ge 1 ]; then
  targets=("$1")
  build=("$1")
  seconds=${2:-$seconds}
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: cargo-fuzz is missing: run scripts/install-prereqs.sh" >&2
  exit 1
fi

start=$SECONDS
cargo fuzz build -s none -O "${build[@]}"
echo "fuzz: built in $((SECONDS - start)) s"

work=$(mktemp -d /tmp/berth-fuzz.XXXXXX)
trap 'rm -rf "$work"' EXIT
for target in "${targets[@]}"; do
  mkdir -p "$work/$target" "artifacts/$target"
  echo "fuzz: $target for $seconds s"
  # -timeout: one input taking a second is a hang; -rss_limit_mb: a 4 MiB frame, a few
  # thousand tar entries and libFuzzer itself fit well under it.
  if ! cargo fuzz run -s none -O "$target" "$work/$target" "corpus/$target" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="$PWD/artifacts/$target/" 2>"$work/$target.log"; then
    tail -n 60 "$work/$target.log" >&2
    echo "fuzz: $target FAILED; input saved in fuzz/artifacts/$target/:" >&2
    ls -1 "artifacts/$target" >&2
    exit 1
  fi
  grep -E '^(#[0-9]+[[:space:]]+DONE|Done )' "$work/$target.log" || true
done
echo "fuzz: all targets passed in $((SECONDS - start)) s"
echo "fuzz: ${#targets[@]} passed, 0 failed"
