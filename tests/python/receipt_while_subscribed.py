"""stomp.py scenario: SEND with a receipt to a queue the same connection is subscribed to.

The broker owes this connection two frames for every SEND: the RECEIPT and the MESSAGE the
SEND causes (ActiveMQ writes the RECEIPT first). SENDS times the client sends with a receipt
and waits for it, so whichever order the two frames come in, and however they share a read,
stomp.py's receiver thread must hand each to the listener: every RECEIPT arrives, and every
message arrives exactly once, in order.
"""

from scenario import check, connect, disconnect, log, parse_args, run, send, subscribe

SENDS = 200
DESTINATION = "/queue/py-receipt-while-subscribed"


def main():
    conn, recorder = connect(parse_args(__doc__).hosts, "client")
    subscribe(conn, recorder, DESTINATION, "py-self")
    for i in range(SENDS):
        send(conn, recorder, DESTINATION, f"self {i}", f"self-{i}", **{"x-index": str(i)})
    log(f"{SENDS} SENDs to a queue this connection is subscribed to, each with its RECEIPT")
    recorder.wait_for_messages(SENDS)
    got = recorder.quiet_for(0.5)
    check(len(got) == SENDS, f"{len(got)} messages for {SENDS} sent")
    check([m.body for m in got] == [f"self {i}" for i in range(SENDS)],
          f"messages out of order or changed: {[m.body for m in got][:20]}")
    check(all(m.headers.get("subscription") == "py-self" for m in got),
          f"a message for another subscription: {[m.headers for m in got][:5]}")
    disconnect(conn, recorder)
    log(f"{SENDS} messages received once each, in order")


if __name__ == "__main__":
    run(main)
