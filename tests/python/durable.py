"""stomp.py scenario: a durable topic subscription, ActiveMQ style.

A subscriber connects with `client-id`, subscribes to a topic with `activemq.subscriptionName`
and disconnects. Messages published while it is away are kept for it: on reconnecting with the
same client id and subscription name it receives all of them, in order. A plain (non-durable)
subscriber that was away at the same time gets none of them.
"""

from scenario import check, connect, disconnect, log, parse_args, run, send, subscribe

TOPIC = "/topic/durable-news"
CLIENT_ID = "stomp-py-durable"
NAME = "news-feed"
COUNT = 5


def durable_subscriber(hosts, name):
    conn, recorder = connect(hosts, name, headers={"client-id": CLIENT_ID})
    subscribe(conn, recorder, TOPIC, "d", ack="client-individual",
              **{"activemq.subscriptionName": NAME})
    return conn, recorder


def main():
    hosts = parse_args(__doc__).hosts

    conn, recorder = durable_subscriber(hosts, "durable-first")
    plain, precorder = connect(hosts, "plain-first")
    subscribe(plain, precorder, TOPIC, "p")
    producer, prod = connect(hosts, "publisher")
    send(producer, prod, TOPIC, "while online", "online", persistent="true")
    got = recorder.wait_for_messages(1)
    check([m.body for m in got] == ["while online"], f"online durable got {[m.body for m in got]}")
    conn.ack(got[0].headers["ack"], receipt="ack-online")
    recorder.wait_for_receipt("ack-online")
    precorder.wait_for_messages(1)
    disconnect(conn, recorder)
    disconnect(plain, precorder)
    log("durable subscriber registered, received one message online, disconnected")

    bodies = [f"while away {i}" for i in range(COUNT)]
    for i, body in enumerate(bodies):
        send(producer, prod, TOPIC, body, f"away-{i}", persistent="true")
    disconnect(producer, prod)

    plain, precorder = connect(hosts, "plain-again")
    subscribe(plain, precorder, TOPIC, "p")
    conn, recorder = durable_subscriber(hosts, "durable-again")
    got = recorder.wait_for_messages(COUNT)
    got = got + recorder.quiet_for(1.0)[len(got):]
    check([m.body for m in got] == bodies,
          f"reconnected durable subscriber got {[m.body for m in got]}, want {bodies}")
    for i, m in enumerate(got):
        check(m.headers.get("destination") == TOPIC, f"destination header {m.headers}")
        conn.ack(m.headers["ack"], receipt=f"ack-away-{i}")
        recorder.wait_for_receipt(f"ack-away-{i}")
    check(not precorder.messages,
          f"a non-durable subscriber got messages published before it subscribed: "
          f"{precorder.bodies()}")
    disconnect(conn, recorder)
    disconnect(plain, precorder)
    log(f"reconnected with the same client-id and subscription name: all {COUNT} messages "
        f"published while away delivered in order")


if __name__ == "__main__":
    run(main)
