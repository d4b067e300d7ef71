"""stomp.py scenario: a 16 MiB message sent with a receipt and received intact.

The body is 16 MiB of pseudo-random bytes (NULs and invalid UTF-8 included, so only its
content-length can delimit it). Both connections turn off stomp.py's auto_decode, as its users
do for binary bodies, so the consumer gets the bytes as sent; it checks their length and
SHA-256 against the sender's, and the sender's checksum header, passed through unchanged.
"""

import hashlib
import random
import time

from scenario import check, connect, disconnect, log, parse_args, run, send, subscribe

SIZE = 16 * 1024 * 1024
DESTINATION = "/queue/py-big-message"


def main():
    hosts = parse_args(__doc__).hosts
    body = random.Random(16).randbytes(SIZE)
    sha256 = hashlib.sha256(body).hexdigest()
    producer, precorder = connect(hosts, "producer", auto_decode=False)
    started = time.monotonic()
    send(producer, precorder, DESTINATION, body, "big", **{"x-sha256": sha256})
    log(f"{SIZE} bytes sent, RECEIPT after {time.monotonic() - started:.2f} s")

    consumer, crecorder = connect(hosts, "consumer", auto_decode=False)
    subscribe(consumer, crecorder, DESTINATION, "py-big")
    [got] = crecorder.wait_for_messages(1)
    check(isinstance(got.body, bytes), f"stomp.py decoded the body to {type(got.body)}")
    check(len(got.body) == SIZE, f"received {len(got.body)} bytes, sent {SIZE}")
    check(hashlib.sha256(got.body).hexdigest() == sha256, "the body changed on the way")
    check(got.headers.get("x-sha256") == sha256,
          f"checksum header changed: {got.headers.get('x-sha256')}")
    disconnect(producer, precorder)
    disconnect(consumer, crecorder)
    log(f"{SIZE} bytes received intact (SHA-256 {sha256[:16]}...)")


if __name__ == "__main__":
    run(main)
