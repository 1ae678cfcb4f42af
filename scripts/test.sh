#!/usr/bin/env bash
# Every test: formatting, lints, unit/property/crash/cluster tests of all crates, including
# the end-to-end checks of the CLI against real daemons on loopback (crates/quarry-cli/tests).
# Idempotent; installs what it needs (scripts/setup.sh). Tests start their own daemons on free
# loopback ports and stop only what they started.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export PATH="$(pwd)/target/bin:$PATH"
export RUST_BACKTRACE=1
# Test threads get 8 MiB of stack (the main thread's default) instead of 2: debug builds' async
# futures are several times their release size, and four quarry-rbd tests were within ~4 KB
# of 2 MiB (a 4 KB larger future in the wire layer overflowed them). Release code is not run
# on these stacks.
export RUST_MIN_STACK=8388608
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# Dependencies are optimised in the test profile (Cargo.toml), so cluster tests run fast.
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
  cargo test --workspace --doc --locked
else
  cargo test --workspace --locked --no-fail-fast
fi
echo "all tests passed"
