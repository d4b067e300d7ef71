"""stomp.py scenario: ActiveMQ's destination wildcards, `.` separating the parts of a name,
`*` matching one part and `>` the rest.

A subscription to /topic/py-foo.* gets what is sent to /topic/py-foo.a and /topic/py-foo.b,
not /topic/py-foo (`*` is exactly one part), /topic/py-foo.a.deeper nor /topic/py-bar.a; one
to /queue/py-orders.> gets /queue/py-orders.us, /queue/py-orders.eu.fr and, as ActiveMQ 5.17
does, /queue/py-orders itself (`>` is zero or more parts), not /queue/py-orders-archive.us.
Each MESSAGE's destination header is the concrete destination it was sent to, and its
subscription header the wildcard subscription's id.
"""

from scenario import check, connect, disconnect, log, parse_args, run, send, subscribe

TOPIC_PATTERN = "/topic/py-foo.*"
QUEUE_PATTERN = "/queue/py-orders.>"
TOPIC_MATCHES = ["/topic/py-foo.a", "/topic/py-foo.b"]
QUEUE_MATCHES = ["/queue/py-orders.us", "/queue/py-orders.eu.fr", "/queue/py-orders"]
OTHERS = ["/topic/py-foo", "/topic/py-foo.a.deeper", "/topic/py-bar.a",
          "/queue/py-orders-archive.us"]


def main():
    hosts = parse_args(__doc__).hosts
    consumer, recorder = connect(hosts, "consumer")
    # Receipted SUBSCRIBEs: the topic subscription is in place before anything is published.
    subscribe(consumer, recorder, TOPIC_PATTERN, "topic-wild")
    subscribe(consumer, recorder, QUEUE_PATTERN, "queue-wild")
    producer, precorder = connect(hosts, "producer")
    for i, destination in enumerate(OTHERS + TOPIC_MATCHES + QUEUE_MATCHES):
        send(producer, precorder, destination, f"to {destination}", f"wild-{i}")

    matches = TOPIC_MATCHES + QUEUE_MATCHES
    recorder.wait_for_messages(len(matches))
    got = recorder.quiet_for(1.0)
    for m in got:
        log(f"{m.headers.get('subscription')} got {m.body!r}: "
            f"destination {m.headers.get('destination')}")
    check(sorted(m.body for m in got) == sorted(f"to {d}" for d in matches),
          f"the wildcard subscriptions got {[m.body for m in got]}, "
          f"want what was sent to {matches}")
    for m in got:
        h = m.headers
        check(h.get("destination") == m.body.removeprefix("to "),
              f"destination header is not the concrete destination: {h}")
        want = "topic-wild" if h["destination"].startswith("/topic/") else "queue-wild"
        check(h.get("subscription") == want, f"subscription header: {h}")
    disconnect(producer, precorder)
    disconnect(consumer, recorder)
    log("each wildcard subscription got exactly its matches, under their concrete names")


if __name__ == "__main__":
    run(main)
