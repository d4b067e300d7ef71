#!/usr/bin/env bash
# TLS throughput benchmark: one standalone release brokerd on a fresh store with a plain and an
# ssl:// listener, and `ctl bench` over each in turn, persistent and non-persistent, 1 producer +
# 1 consumer and 4 + 4 (receipt window 100, 1 KiB bodies). Each configuration runs plain then TLS,
# --rounds times, on fresh queues; the best of each is printed side by side with TLS's cost.
# The certificate is a throwaway RSA 2048 one made with openssl.
#   tests/bench/tls.sh [--messages N] [--rounds R]
# Builds into ${CARGO_TARGET_DIR:-target}.
set -euo pipefail
cd "$(dirname "$0")/../.."
messages=20000
rounds=3
while [ $# -gt 0 ]; do
  case $1 in
    --messages) messages=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    *) echo "usage: $0 [--messages N] [--rounds R]" >&2; exit 2 ;;
  esac
done
# The ssl:// listener, with a throwaway CA and a server certificate it signed.
before_brokerd() {
  tls_port=$(free_port)
  openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=bench CA" \
    -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' > "$dir/ext"
  openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -set_serial 1 \
    -days 1 -extfile "$dir/ext" -out "$dir/server.pem" 2>/dev/null
  extra=(--listen "ssl://127.0.0.1:$tls_port"
         --tls-cert-file "$dir/server.pem" --tls-key-file "$dir/server.key")
}
# shellcheck source=tests/bench/standalone-brokerd.sh
. tests/bench/standalone-brokerd.sh

# The received rate of one run.
rate() {
  "$bin/ctl" bench --json --messages "$messages" --receipt-window 100 "$@" |
    python3 -c 'import json,sys; print(round(json.load(sys.stdin)["received_per_s"]))'
}
printf '%-40s %12s %12s %8s\n' configuration "plain msg/s" "TLS msg/s" "TLS/plain"
for config in "--persistent" "--persistent --producers 4 --consumers 4" \
              "" "--producers 4 --consumers 4"; do
  best_plain=0
  best_tls=0
  for _ in $(seq "$rounds"); do
    # shellcheck disable=SC2086
    plain=$(rate --url "127.0.0.1:$port" $config)
    # shellcheck disable=SC2086
    tls=$(rate --url "ssl://127.0.0.1:$tls_port" --tls-ca-file "$dir/ca.pem" $config)
    [ "$plain" -gt "$best_plain" ] && best_plain=$plain
    [ "$tls" -gt "$best_tls" ] && best_tls=$tls
  done
  label=$(case "$config" in
    "--persistent") echo "persistent, 1+1" ;;
    "--persistent --producers 4 --consumers 4") echo "persistent, 4+4" ;;
    "") echo "non-persistent, 1+1" ;;
    *) echo "non-persistent, 4+4" ;;
  esac)
  printf '%-40s %12d %12d %8s\n' "$label" "$best_plain" "$best_tls" \
    "$(python3 -c "print(f'{$best_tls / $best_plain:.2f}')")"
done
