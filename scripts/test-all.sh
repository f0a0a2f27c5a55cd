#!/usr/bin/env bash
# Runs every check CI runs: formatting, lints, unit tests and the end-to-end tests against the
# real `ctr` and runc. The integration tests need root; with CI=true a missing prerequisite fails.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-prereqs.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The integration tests start the berthd binary, so build it before testing.
cargo build --workspace
cargo test --workspace --no-fail-fast
# Every fuzz target for a bounded time (40 s each, plus their build): scripts/fuzz.sh.
scripts/fuzz.sh
