#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests, and the cross-process tests that start
# real lockd/brokerd processes. Needs only the Rust toolchain (rustfmt and clippy components).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== build the binaries the cross-process tests start"
cargo build --workspace --bins
echo "== cargo test"
cargo test --workspace
