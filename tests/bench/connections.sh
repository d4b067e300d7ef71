#!/usr/bin/env bash
# What connections cost brokerd in memory (issue 11 item 5): its resident set before and after
# 2,000 idle STOMP connections (CONNECTed, then silent), then its peak while 200 more connections
# are busy (`ctl bench`: 100 producers and 100 consumers, 1 KiB messages) beside the idle ones.
# Prints the figures per connection. Usage: tests/bench/connections.sh [IDLE] [ACTIVE_PAIRS]
set -euo pipefail
cd "$(dirname "$0")/../.."
idle=${1:-2000}
pairs=${2:-100}
source tests/bench/standalone-brokerd.sh
python3 - "$broker" "$port" "$idle" "$pairs" "$bin/ctl" <<'PY'
import socket, subprocess, sys, threading, time

pid, port, idle, pairs, ctl = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]

def rss_kib():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])

def connect(i):
    # From 127.0.0.2, .3, ...: 500 per address, within the per-address limit, as from many hosts.
    s = socket.create_connection(("127.0.0.1", port), source_address=(f"127.0.0.{2 + i // 500}", 0))
    s.sendall(b"CONNECT\naccept-version:1.2\nhost:bench\nheart-beat:0,0\n\n\0")
    got = b""
    while b"\0" not in got:
        chunk = s.recv(4096)
        if not chunk:
            raise SystemExit("brokerd closed a connection: " + got.decode(errors="replace"))
        got += chunk
    if not got.startswith(b"CONNECTED"):
        raise SystemExit("not CONNECTED: " + got.decode(errors="replace"))
    return s

time.sleep(0.5)
base = rss_kib()
sockets = [connect(i) for i in range(idle)]
time.sleep(1.0)
with_idle = rss_kib()
print(f"brokerd resident: {base} KiB at start, {with_idle} KiB with {idle} idle connections: "
      f"{(with_idle - base) * 1024 / idle / 1024:.1f} KiB per idle connection")

peak = [with_idle]
done = threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], rss_kib())
        time.sleep(0.05)
sampler = threading.Thread(target=sample)
sampler.start()
bench = subprocess.run(
    [ctl, "bench", "--url", f"tcp://127.0.0.1:{port}", "--producers", str(pairs),
     "--consumers", str(pairs), "--messages", str(pairs * 2000), "--size", "1024"],
    capture_output=True, text=True)
done.set()
sampler.join()
if bench.returncode != 0:
    raise SystemExit("ctl bench failed: " + bench.stderr)
summary = [l for l in bench.stdout.splitlines() if "msg/s" in l]
print(f"{2 * pairs} busy connections beside them ({summary[0].strip() if summary else bench.stdout.strip()}):")
print(f"  peak {peak[0]} KiB: {(peak[0] - with_idle) / (2 * pairs):.1f} KiB per busy connection "
      f"(messages in flight included)")
for s in sockets:
    s.close()
time.sleep(1.0)
print(f"after closing the idle ones: {rss_kib()} KiB")
PY
