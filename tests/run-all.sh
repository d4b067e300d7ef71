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
# The real-client tests (tests/tests/real_clients.rs) drive stomp.py, from PyPI. The client-suite
# test (tests/tests/client_suites.rs) fetches stomp.py 4.1.24's sdist itself (pip download, into
# the target directory) and needs docopt for that release's command-line client.
echo "== stomp.py for the real-client tests"
python3 -c 'import stomp, docopt' 2>/dev/null || python3 -m pip install --quiet 'stomp.py>=8' docopt-ng
# The hostile-storage tests (tests/tests/hostile.rs) mount bindfs (FUSE), which needs root.
if [ "$(id -u)" = 0 ]; then
    if ! command -v bindfs >/dev/null; then
        echo "== bindfs for the hostile-storage tests"
        apt-get update -qq && apt-get install -y -qq bindfs >/dev/null
    fi
    # As root they must run: a missing FUSE fails them instead of skipping them.
    export HA_TESTS_REQUIRE_BINDFS=1
    # The power-cut test (tests/tests/power_loss.rs) mounts its own FUSE filesystem through
    # fusermount3 (Debian's fuse3; bindfs pulls it in too).
    if ! command -v fusermount3 >/dev/null; then
        apt-get update -qq && apt-get install -y -qq fuse3 >/dev/null
    fi
fi
echo "== cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace 2>&1 | tee "$log"
# The power-cut test is #[ignore]d where it cannot run (no root or FUSE); as root it runs here.
if [ "$(id -u)" = 0 ]; then
    cargo test -p ha-tests --test power_loss -- --ignored 2>&1 | tee -a "$log"
fi
# One closing line for the whole suite, summed over every test binary.
awk '/^test result:/ { passed += $4; failed += $6; ignored += $8 }
     END { printf "tests: %d passed, %d failed, %d skipped\n", passed, failed, ignored }' "$log"
