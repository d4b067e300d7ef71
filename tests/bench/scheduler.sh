#!/usr/bin/env bash
# Scheduler benchmark (issue 9): scheduling throughput and brokerd's memory with pending
# schedules, lateness of a burst falling due at one time and once caught up, and the takeover
# time with 1M pending schedules against an empty scheduler store. Each part runs a standalone
# release brokerd on a fresh temporary directory; see tests/src/bin/scheduler-bench.rs.
#   tests/bench/scheduler.sh [--schedules N] [--takeover-jobs N] [--rounds N] [--quick]
# The full run needs about 3 GB of free space in $TMPDIR (1M pending 1 KiB schedules).
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --quiet -p brokerd -p ha-tests --bins
exec ./target/release/scheduler-bench "$@"
