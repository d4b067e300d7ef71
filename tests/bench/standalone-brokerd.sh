# Sourced by the broker benchmarks: builds brokerd and ctl (release, into
# ${CARGO_TARGET_DIR:-target}) and starts a standalone brokerd on a fresh store and an ephemeral
# port on 127.0.0.1, stopped and removed on exit. Sets bin, dir, port and broker (its pid), and
# cpu_ticks (its user + system CPU ticks so far). A script that defines before_brokerd has it
# called once dir exists, to add brokerd options to the array extra (more listeners, files).
cargo build --release --quiet -p brokerd -p ctl
bin=${CARGO_TARGET_DIR:-target}/release
dir=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
extra=()
if declare -F before_brokerd >/dev/null; then before_brokerd; fi
"$bin/brokerd" --data-dir "$dir/data" --listen "127.0.0.1:$port" "${extra[@]}" 2> "$dir/brokerd.log" &
broker=$!
trap 'kill $broker 2>/dev/null; wait $broker 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.05; done
cpu_ticks() { awk '{print $14 + $15}' /proc/$broker/stat; }
