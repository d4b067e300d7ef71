"""Shared pieces of the stomp.py scenarios: argument parsing, a listener that records every
frame and lets the script wait for a condition with a deadline, and a clear way to fail.

Every scenario takes the broker addresses as HOST:PORT arguments (the Rust test passes the
cluster's nodes), exits 0 when every check held and 1 with a message on stderr otherwise.
Every wait is bounded, so a broker that goes silent fails the scenario instead of hanging it.
"""

import argparse
import sys
import threading
import time

import stomp

# Long enough for a debug build on a busy 2-core machine; never a measure of speed.
WAIT = 20.0


class ScenarioFailed(Exception):
    """A check did not hold; the message says which and what was seen."""


def check(condition, message):
    if not condition:
        raise ScenarioFailed(message)


def parse_args(description, extra=None):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("hosts", nargs="+", metavar="HOST:PORT", help="broker addresses")
    if extra:
        extra(parser)
    args = parser.parse_args()
    args.hosts = [parse_host(h) for h in args.hosts]
    return args


def parse_host(text):
    host, _, port = text.rpartition(":")
    return (host, int(port))


def run(main):
    """Runs `main()`, turning a failed check or an unexpected error into exit status 1."""
    try:
        main()
    except ScenarioFailed as e:
        print(f"FAILED: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    except Exception as e:  # a stomp.py exception, a timeout: still a clear failure
        print(f"FAILED with {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        raise
    print("OK", flush=True)


def log(text):
    print(text, flush=True)


class Recorder(stomp.ConnectionListener):
    """Records MESSAGE, RECEIPT and ERROR frames and disconnects, for `wait_until`."""

    def __init__(self, name):
        self.name = name
        self.cond = threading.Condition()
        self.messages = []
        self.receipts = set()
        self.errors = []
        self.disconnects = 0

    def on_message(self, frame):
        with self.cond:
            self.messages.append(frame)
            self.cond.notify_all()

    def on_receipt(self, frame):
        with self.cond:
            self.receipts.add(frame.headers["receipt-id"])
            self.cond.notify_all()

    def on_error(self, frame):
        with self.cond:
            self.errors.append(frame)
            self.cond.notify_all()

    def on_disconnected(self):
        with self.cond:
            self.disconnects += 1
            self.cond.notify_all()

    def wait_until(self, what, predicate, timeout=WAIT):
        """Waits until `predicate()` holds (called under the lock); fails after `timeout`."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ScenarioFailed(
                        f"{self.name}: timed out after {timeout:.0f} s waiting for {what}; "
                        f"seen {len(self.messages)} messages {self.bodies()}, "
                        f"receipts {sorted(self.receipts)}, errors {self.error_texts()}"
                    )
                self.cond.wait(left)

    def wait_for_receipt(self, receipt, timeout=WAIT):
        self.wait_until(f"RECEIPT {receipt}", lambda: receipt in self.receipts, timeout)

    def wait_for_messages(self, count, timeout=WAIT):
        self.wait_until(f"{count} messages", lambda: len(self.messages) >= count, timeout)
        with self.cond:
            return list(self.messages)

    def quiet_for(self, seconds):
        """Lets `seconds` pass and returns the messages seen, for checks that nothing came."""
        time.sleep(seconds)
        with self.cond:
            return list(self.messages)

    def take(self):
        """Returns the messages seen so far and forgets them."""
        with self.cond:
            taken, self.messages = self.messages, []
            return taken

    def bodies(self):
        return [m.body for m in self.messages]

    def error_texts(self):
        return [m.headers.get("message", m.body) for m in self.errors]


def connect(hosts, name, version=12, headers=None, **options):
    """A connected stomp.py connection of the given protocol version with a Recorder."""
    cls = {10: stomp.Connection10, 11: stomp.Connection11, 12: stomp.Connection12}[version]
    conn = cls(hosts, timeout=WAIT, **options)
    recorder = Recorder(name)
    conn.set_listener("recorder", recorder)
    conn.connect(wait=True, headers=headers or {})
    check(conn.is_connected(), f"{name}: not connected after CONNECT")
    return conn, recorder


def disconnect(conn, recorder):
    """DISCONNECT with a receipt, so everything sent before it has reached the broker."""
    receipt = f"bye-{recorder.name}"
    conn.disconnect(receipt=receipt)
    recorder.wait_for_receipt(receipt)


def send(conn, recorder, destination, body, receipt, **headers):
    """SEND with a receipt and wait for it: after this the broker has the message."""
    conn.send(destination, body, headers=dict(headers, receipt=receipt))
    recorder.wait_for_receipt(receipt)


def subscribe(conn, recorder, destination, sub_id, ack="auto", **headers):
    """SUBSCRIBE with a receipt and wait for it: after this the subscription is in place."""
    receipt = f"sub-{sub_id}"
    conn.subscribe(destination, id=sub_id, ack=ack, headers=dict(headers, receipt=receipt))
    recorder.wait_for_receipt(receipt)


def redelivered(frame):
    return frame.headers.get("redelivered") == "true"
