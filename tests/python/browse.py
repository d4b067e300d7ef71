"""stomp.py scenario: a `browser:true` subscription to a queue.

Three messages wait on a queue. A browsing subscription gets each of them, then one more
MESSAGE marking the end of the browse, as ActiveMQ 5.17 sends it: an empty body and exactly
the headers browser:end, destination (the queue), message-id:0 and subscription (the browsing
subscription's id). Nothing comes after it, and browsing consumed nothing: an ordinary
consumer then gets all three.
"""

from scenario import check, connect, disconnect, log, parse_args, run, send, subscribe

DESTINATION = "/queue/py-browse"
BODIES = ["first", "second", "third"]


def main():
    hosts = parse_args(__doc__).hosts
    producer, precorder = connect(hosts, "producer")
    for i, body in enumerate(BODIES):
        send(producer, precorder, DESTINATION, body, f"browse-{i}")

    browser, browsed = connect(hosts, "browser")
    subscribe(browser, browsed, DESTINATION, "browse", browser="true")
    browsed.wait_for_messages(len(BODIES) + 1)
    got = browsed.quiet_for(1.0)
    for m in got:
        log(f"browsed {m.body!r}: {m.headers}")
    check(len(got) == len(BODIES) + 1,
          f"{len(got)} frames for {len(BODIES)} messages and the end marker: "
          f"{[m.body for m in got]}")
    check([m.body for m in got[:-1]] == BODIES, f"browsed {[m.body for m in got]}")
    check(not any("browser" in m.headers for m in got[:-1]),
          f"a browsed message carries a browser header: {[m.headers for m in got]}")
    marker = got[-1]
    want = {"browser": "end", "destination": DESTINATION, "message-id": "0",
            "subscription": "browse"}
    check(marker.headers == want and marker.body == "",
          f"the last frame is not the end marker {want}: {marker.headers} {marker.body!r}")

    consumer, consumed = connect(hosts, "consumer")
    subscribe(consumer, consumed, DESTINATION, "consume")
    consumed.wait_for_messages(len(BODIES))
    got = consumed.quiet_for(1.0)
    check([m.body for m in got] == BODIES,
          f"after the browse a consumer got {[m.body for m in got]}")
    for conn, recorder in ((producer, precorder), (browser, browsed), (consumer, consumed)):
        disconnect(conn, recorder)
    log("browsed a snapshot and its end marker; the messages stayed on the queue")


if __name__ == "__main__":
    run(main)
