#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests, and the cross-process tests that start
# real lockd/brokerd processes. Needs only the Rust toolchain (rustfmt and clippy components).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
# The fuzz targets (fuzz/, run with nightly's cargo-fuzz) are not workspace members: check that
# they still compile against the crates they fuzz, on stable, without running them.
echo "== the fuzz targets compile"
cargo check --quiet --manifest-path fuzz/Cargo.toml --bins
echo "== build the binaries the cross-process tests start"
cargo build --workspace --bins
# The real-client tests (tests/tests/real_clients.rs) drive stomp.py, from PyPI. The client-suite
# test (tests/tests/client_suites.rs) fetches stomp.py 4.1.24's sdist itself (pip download, into
# the target directory) and needs docopt for that release's command-line client.
if ! python3 -c 'import stomp, docopt' 2>/dev/null; then
    echo "== stomp.py for the real-client tests"
    # Debian's python3 has no pip until python3-pip is installed.
    if ! python3 -m pip --version >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        apt-get update -qq && apt-get install -y -qq python3-pip >/dev/null
    fi
    # Debian's python3 refuses installs into its own packages (PEP 668, "externally managed"):
    # then install for this user only, into ~/.local, which touches nothing of the system's.
    python3 -m pip install --quiet 'stomp.py>=8' docopt-ng 2>/dev/null ||
        python3 -m pip install --quiet --user --break-system-packages --no-warn-script-location \
            'stomp.py>=8' docopt-ng
fi
# The hostile-storage tests (tests/tests/hostile.rs) mount bindfs (FUSE), which needs root.
if [ "$(id -u)" = 0 ]; then
    if ! command -v bindfs >/dev/null; then
        echo "== bindfs for the hostile-storage tests"
        apt-get update -qq && apt-get install -y -qq bindfs >/dev/null
    fi
    # The TLS tests (tests/tests/tls.rs) make their test CA and certificates with openssl.
    if ! command -v openssl >/dev/null; then
        apt-get update -qq && apt-get install -y -qq openssl >/dev/null
    fi
    # The power-cut test (tests/tests/power_loss.rs) mounts its own FUSE filesystem through
    # fusermount3 (Debian's fuse3; bindfs pulls it in too).
    if ! command -v fusermount3 >/dev/null; then
        apt-get update -qq && apt-get install -y -qq fuse3 >/dev/null
    fi
    # The other-language client tests (tests/tests/other_clients.rs) drive Ruby's stomp gem
    # and PHP's PECL stomp extension, both from Debian.
    if ! ruby -e "require 'stomp'" 2>/dev/null \
        || ! php -r "exit(extension_loaded('stomp') ? 0 : 1);" 2>/dev/null; then
        echo "== ruby-stomp and php8.2-stomp for the other-language client tests"
        apt-get update -qq && apt-get install -y -qq ruby-stomp php8.2-cli php8.2-stomp >/dev/null
    fi
    # The web console test (tests/tests/console.rs) drives Debian's headless chromium through
    # chromedriver; its screenshots go to target/test-artifacts/console/.
    if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
        echo "== chromium and chromium-driver for the web console test"
        apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null
    fi
    # The package tests (tests/tests/package.rs) run systemd-analyze, systemd-sysusers and
    # systemd-tmpfiles (Debian's systemd; the unit's sandbox test needs only systemd-analyze).
    if ! command -v systemd-analyze >/dev/null; then
        apt-get update -qq && apt-get install -y -qq systemd >/dev/null
    fi
    # The package tests (tests/tests/package.rs) install the Debian package into a scratch root
    # (dpkg --root, root only) and take it from target/debian/: built here, once, as it ships
    # (the release profile, fat LTO: about 7 minutes on 2 cores, plus 1.5 to install cargo-deb
    # the first time). Without root those tests are skipped, so the build is too.
    if ! cargo deb --version >/dev/null 2>&1; then
        echo "== cargo-deb for the package tests"
        cargo install --quiet cargo-deb --locked
    fi
    echo "== the Debian package (cargo deb -p lockd)"
    cargo deb -p lockd
fi
# Tests that need root or FUSE (bindfs, the power-cut filesystem, ctl as another uid), or
# packages only root can install (ruby-stomp, php8.2-stomp), are #[ignore = "needs ..."]:
# `cargo test` reports them as ignored, never as passed. As root this script runs them too,
# with --include-ignored in the same run so none is counted twice; run that way, a test
# whose prerequisite is missing fails with what to install.
# --no-fail-fast: every test binary runs, so the summary counts every test.
ignored=()
if [ "$(id -u)" = 0 ]; then
    ignored=(--include-ignored)
fi
echo "== cargo test ${ignored[*]}"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --no-fail-fast -- "${ignored[@]}" 2>&1 | tee "$log" || status=$?
# One closing line for the whole suite, summed over every test binary, printed even when a test
# failed (then the script exits with cargo's status): "skipped" counts the ignored tests that
# did not run (all of them without root, none as root). A test binary that died (a crash, an
# abort) prints no result line: each such binary counts as one failure, so the line never says
# "0 failed" while cargo failed.
awk '/^ +(Running|Doc-tests) / { binaries++ }
     /^test result:/ { results++; passed += $4; failed += $6; ignored += $8 }
     END {
         died = binaries - results
         if (died > 0) { failed += died; printf "%d test binaries ended without a result\n", died }
         printf "tests: %d passed, %d failed, %d skipped\n", passed, failed, ignored
     }' "$log"
exit "$status"
