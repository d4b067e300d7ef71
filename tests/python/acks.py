"""stomp.py scenario: ack modes client-individual and client (cumulative), and NACK through
redelivery to the dead-letter queue.

- client-individual: of five messages the consumer ACKs 1, 3 and 5 and disconnects; a new
  consumer gets exactly 2 and 4, flagged redelivered.
- client: ACK of the third of five acknowledges the first three; a new consumer gets 4 and 5.
- NACK: a NACKed message comes back with redelivered:true; after --max-redeliveries
  redeliveries the next NACK moves it to /queue/ActiveMQ.DLQ with original-destination set,
  and the consumer sees it no more.
"""

from scenario import (check, connect, disconnect, log, parse_args, redelivered, run, send,
                      subscribe)


def fill(hosts, destination, count):
    producer, recorder = connect(hosts, f"producer-{destination}")
    bodies = [f"{destination} #{i}" for i in range(1, count + 1)]
    for i, body in enumerate(bodies):
        send(producer, recorder, destination, body, f"fill-{destination}-{i}", persistent="true")
    disconnect(producer, recorder)
    return bodies


def remaining(hosts, destination, expected, name):
    """A fresh auto-ack consumer gets exactly `expected`, each flagged redelivered."""
    conn, recorder = connect(hosts, name)
    subscribe(conn, recorder, destination, f"{name}-sub")
    got = recorder.wait_for_messages(len(expected))
    got = got + recorder.quiet_for(1.0)[len(got):]
    check([m.body for m in got] == expected,
          f"{name}: after the first consumer left, got {[m.body for m in got]}, want {expected}")
    check(all(redelivered(m) for m in got),
          f"{name}: unacked messages not flagged redelivered: {[m.headers for m in got]}")
    disconnect(conn, recorder)


def client_individual(hosts):
    destination = "/queue/acks-individual"
    bodies = fill(hosts, destination, 5)
    conn, recorder = connect(hosts, "individual")
    subscribe(conn, recorder, destination, "ind", ack="client-individual")
    got = recorder.wait_for_messages(5)
    check([m.body for m in got] == bodies, f"individual: got {[m.body for m in got]}")
    check(not any(redelivered(m) for m in got), "individual: first delivery flagged redelivered")
    for i in (0, 2, 4):
        conn.ack(got[i].headers["ack"], receipt=f"ack-ind-{i}")
        recorder.wait_for_receipt(f"ack-ind-{i}")
    disconnect(conn, recorder)
    remaining(hosts, destination, [bodies[1], bodies[3]], "individual-after")
    log("client-individual: ACKed messages gone, the others redelivered with redelivered:true")


def client_cumulative(hosts):
    destination = "/queue/acks-client"
    bodies = fill(hosts, destination, 5)
    conn, recorder = connect(hosts, "cumulative")
    subscribe(conn, recorder, destination, "cum", ack="client")
    got = recorder.wait_for_messages(5)
    check([m.body for m in got] == bodies, f"cumulative: got {[m.body for m in got]}")
    conn.ack(got[2].headers["ack"], receipt="ack-cum")
    recorder.wait_for_receipt("ack-cum")
    disconnect(conn, recorder)
    remaining(hosts, destination, bodies[3:], "cumulative-after")
    log("client: ACK of the third message acknowledged the first three")


def nack_to_dlq(hosts, max_redeliveries):
    destination = "/queue/acks-nack"
    conn, recorder = connect(hosts, "nack")
    subscribe(conn, recorder, "/queue/ActiveMQ.DLQ", "dlq")
    subscribe(conn, recorder, destination, "work", ack="client-individual")
    [body] = fill(hosts, destination, 1)
    deliveries = 0
    for delivery in range(max_redeliveries + 1):
        recorder.wait_until(f"delivery {delivery + 1} of the NACKed message",
                            lambda: any(m.headers.get("subscription") == "work"
                                        for m in recorder.messages))
        [m] = recorder.take()
        deliveries += 1
        check(m.headers.get("subscription") == "work" and m.body == body,
              f"nack: unexpected frame {m.headers} {m.body!r}")
        check(redelivered(m) == (delivery > 0),
              f"nack: delivery {delivery + 1} has redelivered={m.headers.get('redelivered')}")
        conn.nack(m.headers["ack"], receipt=f"nack-{delivery}")
        recorder.wait_for_receipt(f"nack-{delivery}")
    recorder.wait_until("the message on /queue/ActiveMQ.DLQ",
                        lambda: any(m.headers.get("subscription") == "dlq"
                                    for m in recorder.messages))
    got = recorder.take() + recorder.quiet_for(1.0)
    check(len(got) == 1, f"nack: after the last NACK got {[(m.headers, m.body) for m in got]}")
    dead = got[0]
    check(dead.headers.get("subscription") == "dlq" and dead.body == body,
          f"nack: not the dead letter: {dead.headers} {dead.body!r}")
    check(dead.headers.get("original-destination") == destination,
          f"nack: dead letter lacks original-destination: {dead.headers}")
    disconnect(conn, recorder)
    log(f"NACK: delivered {deliveries} times (redelivered:true after the first), "
        f"then on /queue/ActiveMQ.DLQ with original-destination")


def main():
    args = parse_args(__doc__, lambda p: p.add_argument(
        "--max-redeliveries", type=int, default=6, help="the broker's --max-redeliveries"))
    client_individual(args.hosts)
    client_cumulative(args.hosts)
    nack_to_dlq(args.hosts, args.max_redeliveries)


if __name__ == "__main__":
    run(main)
