"""stomp.py scenario: SEND with receipts and receive on a queue, over STOMP 1.2, 1.1 and 1.0.

Checks that every SEND is receipted, that a subscriber gets every message in order with its
body (non-ASCII included) and custom headers, and the MESSAGE headers each version requires.
"""

from scenario import check, connect, disconnect, log, parse_args, run, send, subscribe

COUNT = 20


def one_version(hosts, version):
    destination = f"/queue/send-receive-{version}"
    producer, precorder = connect(hosts, f"producer{version}", version)
    consumer, crecorder = connect(hosts, f"consumer{version}", version)
    subscribe(consumer, crecorder, destination, f"s{version}")
    bodies = [f"message {i} over {version / 10:.1f}: caf\u00e9 \u2713" for i in range(COUNT)]
    for i, body in enumerate(bodies):
        send(producer, precorder, destination, body, f"r{version}-{i}", **{"x-index": str(i)})
    got = crecorder.wait_for_messages(COUNT)
    check(len(got) == COUNT, f"{version}: {len(got)} messages for {COUNT} sent")
    check([m.body for m in got] == bodies, f"{version}: bodies differ: {[m.body for m in got]}")
    ids = set()
    for i, m in enumerate(got):
        h = m.headers
        check(h.get("destination") == destination, f"{version}: destination header {h}")
        check(h.get("x-index") == str(i), f"{version}: custom header not passed through: {h}")
        check("message-id" in h, f"{version}: no message-id: {h}")
        ids.add(h["message-id"])
        if version >= 11:
            check(h.get("subscription") == f"s{version}", f"{version}: subscription header {h}")
    check(len(ids) == COUNT, f"{version}: message ids not unique: {ids}")
    check(not precorder.errors and not crecorder.errors,
          f"{version}: ERROR frames {precorder.error_texts()} {crecorder.error_texts()}")
    disconnect(producer, precorder)
    disconnect(consumer, crecorder)
    log(f"STOMP {version / 10:.1f}: {COUNT} messages sent with receipts and received in order")


def main():
    args = parse_args(__doc__)
    for version in (12, 11, 10):
        one_version(args.hosts, version)


if __name__ == "__main__":
    run(main)
