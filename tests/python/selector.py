"""stomp.py scenario: a subscription with a JMS selector in its `selector` header.

Five messages go to a queue, with a custom `color` header and the STOMP `priority` header
(JMSPriority to the selector). A consumer subscribed with "color = 'red' AND JMSPriority > 4"
gets only the two that match; the three that do not (red at priority 4, blue at 9, no color
at 9) stay on the queue, and a second consumer without a selector, subscribed while the first
still is, gets exactly those.
"""

from scenario import check, connect, disconnect, log, parse_args, run, send, subscribe

DESTINATION = "/queue/py-selector"
SELECTOR = "color = 'red' AND JMSPriority > 4"
MESSAGES = {
    "red-9": {"color": "red", "priority": "9"},
    "red-4": {"color": "red", "priority": "4"},
    "blue-9": {"color": "blue", "priority": "9"},
    "none-9": {"priority": "9"},
    "red-5": {"color": "red", "priority": "5"},
}
MATCHING = ["red-9", "red-5"]


def main():
    hosts = parse_args(__doc__).hosts
    producer, precorder = connect(hosts, "producer")
    for body, headers in MESSAGES.items():
        send(producer, precorder, DESTINATION, body, f"send-{body}", **headers)

    selecting, selected = connect(hosts, "selecting")
    subscribe(selecting, selected, DESTINATION, "red-and-urgent", selector=SELECTOR)
    selected.wait_for_messages(len(MATCHING))
    got = selected.quiet_for(1.0)
    for m in got:
        log(f"the selector let through {m.body}: color={m.headers.get('color')} "
            f"priority={m.headers.get('priority')}")
    check(sorted(m.body for m in got) == sorted(MATCHING),
          f"the selecting consumer got {[m.body for m in got]}, want {MATCHING}")

    other, rest = connect(hosts, "other")
    subscribe(other, rest, DESTINATION, "everything")
    left = [body for body in MESSAGES if body not in MATCHING]
    rest.wait_for_messages(len(left))
    got = rest.quiet_for(1.0)
    log(f"left on the queue for another consumer: {[m.body for m in got]}")
    check(sorted(m.body for m in got) == sorted(left),
          f"the other consumer got {[m.body for m in got]}, want {left}")
    check(len(selected.messages) == len(MATCHING),
          f"the selecting consumer got more: {selected.bodies()}")
    for conn, recorder in ((producer, precorder), (selecting, selected), (other, rest)):
        disconnect(conn, recorder)
    log("the selector took only its matches; the rest stayed for another consumer")


if __name__ == "__main__":
    run(main)
