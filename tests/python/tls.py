"""stomp.py scenario over TLS (ssl:// listeners), one of three checks chosen by --check:

  sendrecv  stomp.py connects over TLS (trusting --ca, with --cert/--key if given), sends
            messages with receipts and receives them on a queue.
  refused   a TLS client trusting --ca (with --cert/--key if given) gets no CONNECTED: the
            handshake or the first read fails.
  reload    stomp.py connects and sees the certificate with serial --serial; prints "connected",
            waits for the file --go (the test has replaced the certificate and sent SIGHUP),
            then checks that this same connection still sends and receives, and that a new
            connection is served the certificate with serial --new-serial.
"""

import os
import socket
import ssl
import time

import stomp

from scenario import WAIT, Recorder, check, log, parse_args, run, send, subscribe


def extra(parser):
    parser.add_argument("--check", required=True, choices=["sendrecv", "refused", "reload"])
    parser.add_argument("--ca", required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--serial", help="hex serial of the certificate served now")
    parser.add_argument("--new-serial", help="hex serial served after the reload")
    parser.add_argument("--go", help="file whose appearance means the reload was done")


def tls_connect(args, host, name):
    conn = stomp.Connection12([host], heartbeats=(0, 0), timeout=WAIT)
    conn.set_ssl(for_hosts=[host], ca_certs=args.ca, cert_file=args.cert, key_file=args.key)
    recorder = Recorder(name)
    conn.set_listener(name, recorder)
    conn.connect(wait=True, headers={"client-id": name})
    return conn, recorder


def round_trip(conn, recorder, destination, count, tag):
    recorder.take()
    subscribe(conn, recorder, destination, f"s-{tag}")
    for i in range(count):
        send(conn, recorder, destination, f"{tag} {i}", f"{tag}-{i}")
    bodies = [m.body for m in recorder.wait_for_messages(count)]
    check(bodies == [f"{tag} {i}" for i in range(count)], f"{tag}: received {bodies}")
    check(not recorder.errors, f"{tag}: ERROR frames {recorder.error_texts()}")
    conn.unsubscribe(id=f"s-{tag}")


def served_serial(args, host):
    """Opens a fresh TLS connection, says CONNECT, returns (first frame's command, serial)."""
    context = ssl.create_default_context(cafile=args.ca)
    if args.cert:
        context.load_cert_chain(args.cert, args.key)
    with socket.create_connection(host, timeout=WAIT) as raw:
        with context.wrap_socket(raw, server_hostname=host[0]) as tls:
            serial = int(tls.getpeercert()["serialNumber"], 16)
            tls.sendall(b"CONNECT\naccept-version:1.2\nhost:localhost\n\n\0")
            reply = tls.recv(4096)
            if not reply:
                raise ConnectionError("closed before CONNECTED")
            return reply.split(b"\n", 1)[0].decode(), serial


def main():
    args = parse_args(__doc__, extra)
    host = args.hosts[0]
    if args.check == "sendrecv":
        conn, recorder = tls_connect(args, host, "tls-client")
        cipher = conn.transport.socket.cipher()
        log(f"TLS session: {cipher[1]} {cipher[0]}")
        round_trip(conn, recorder, "/queue/tls", 10, "tls")
        conn.disconnect()
        log("10 messages sent with receipts and received over TLS")
    elif args.check == "refused":
        try:
            command, _ = served_serial(args, host)
        except (ssl.SSLError, OSError) as e:
            log(f"refused as expected: {type(e).__name__}: {e}")
            return
        check(command != "CONNECTED", f"a client that should be refused got {command}")
        log(f"refused as expected: answered {command}")
    else:
        conn, recorder = tls_connect(args, host, "long-lived")
        serial = int(conn.transport.socket.getpeercert()["serialNumber"], 16)
        check(serial == int(args.serial, 16), f"served serial {serial:x}, expected {args.serial}")
        round_trip(conn, recorder, "/queue/reload", 3, "before")
        log("connected")
        deadline = time.monotonic() + 2 * WAIT
        while not os.path.exists(args.go):
            check(time.monotonic() < deadline, f"{args.go} never appeared")
            time.sleep(0.05)
        round_trip(conn, recorder, "/queue/reload", 3, "after")
        log("the connection opened before the reload still sends and receives")
        deadline = time.monotonic() + WAIT
        while True:
            command, serial = served_serial(args, host)
            check(command == "CONNECTED", f"a new connection got {command}")
            if serial == int(args.new_serial, 16):
                break
            check(time.monotonic() < deadline,
                  f"new connections still get serial {serial:x}, not {args.new_serial}")
            time.sleep(0.1)
        log(f"a new connection is served the new certificate (serial {serial:x})")
        round_trip(conn, recorder, "/queue/reload", 1, "last")
        conn.disconnect()


if __name__ == "__main__":
    run(main)
