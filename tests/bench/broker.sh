#!/usr/bin/env bash
# Broker throughput benchmark: issue 3's five configurations (`ctl bench --preset issue3`)
# against a standalone release brokerd on a fresh store, plus what the broker itself used:
# CPU microseconds per message and resident memory, idle and peak.
#   tests/bench/broker.sh [--messages N]
# If the neutral load generator ../shared/stompbench is built (cargo build --release there),
# the same configurations are also run with it, for comparison with the ActiveMQ figures.
# Builds into ${CARGO_TARGET_DIR:-target}.
set -euo pipefail
cd "$(dirname "$0")/../.."
messages=20000
[ "${1:-}" = "--messages" ] && messages=$2
# shellcheck source=tests/bench/standalone-brokerd.sh
. tests/bench/standalone-brokerd.sh
rss() { awk '/^VmRSS/ {print $2}' /proc/$broker/status; }
idle_rss=$(rss)
ticks_before=$(cpu_ticks)
"$bin/ctl" bench --url "127.0.0.1:$port" --preset issue3 --messages "$messages"
ticks_after=$(cpu_ticks)
hz=$(getconf CLK_TCK)
# Five runs, each sending and receiving $messages.
total=$((5 * messages))
echo "brokerd: $(( (ticks_after - ticks_before) * 1000000 / hz / total )) us of CPU per message (sent and received), over $total messages"
echo "brokerd: resident memory idle $((idle_rss / 1024)) MiB, peak $(( $(awk '/^VmHWM/ {print $2}' /proc/$broker/status) / 1024 )) MiB"
stompbench=../shared/stompbench/target/release/stompbench
if [ -x "$stompbench" ]; then
  echo "== the same with the neutral stompbench"
  for config in "--persistent --receipt-window 100" "--persistent --receipt-window 100 --producers 4 --consumers 4" \
                "--receipt-window 100" "--receipt-window 100 --producers 4 --consumers 4" "--persistent --receipt-window 1"; do
    # shellcheck disable=SC2086
    "$stompbench" --url "127.0.0.1:$port" --messages "$messages" --dest "/queue/sb$RANDOM" $config 2>/dev/null |
      python3 -c 'import json,sys; d=json.load(sys.stdin); print("{:60} {:>9.0f} sent/s {:>9.0f} recv/s  p50 {} ms".format(sys.argv[1], d["sent_per_s"], d["received_per_s"], d["latency_ms"]["p50"]))' "$config"
  done
fi
