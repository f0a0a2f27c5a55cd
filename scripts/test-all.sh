#!/usr/bin/env bash
# Runs every check CI runs: formatting, lints, unit tests and the end-to-end tests against the
# real `ctr` and runc. The integration tests need root; with CI=true a missing prerequisite fails.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-prereqs.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The devmapper kernel tests are only built with this feature (integration/tests/devmapper_guest.rs
# builds them so and runs them in a QEMU guest); lint them too.
cargo clippy -p berth-snapshotters --lib --tests --features devmapper-kernel-tests -- -D warnings
# The integration tests start the berthd binary, so build it before testing.
cargo build --workspace
cargo test --workspace --no-fail-fast
# Every fuzz target for a bounded time (40 s each, plus their build): scripts/fuzz.sh.
scripts/fuzz.sh
