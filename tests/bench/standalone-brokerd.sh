# Sourced by the broker benchmarks: builds brokerd and ctl (release, into
# ${CARGO_TARGET_DIR:-target}) and starts a standalone brokerd on a fresh store and an ephemeral
# port on 127.0.0.1, stopped and removed on exit. Sets bin, dir, port and broker (its pid), and
# cpu_ticks (its user + system CPU ticks so far).
cargo build --release --quiet -p brokerd -p ctl
bin=${CARGO_TARGET_DIR:-target}/release
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin/brokerd" --data-dir "$dir/data" --listen "127.0.0.1:$port" 2> "$dir/brokerd.log" &
broker=$!
trap 'kill $broker 2>/dev/null; wait $broker 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.05; done
cpu_ticks() { awk '{print $14 + $15}' /proc/$broker/stat; }
