"""stomp.py scenario: transactions.

- SENDs inside BEGIN/COMMIT are invisible until COMMIT, then all delivered.
- SENDs inside an ABORTed transaction are never delivered (a later plain SEND is, alone).
- ACKs inside a transaction: ABORT rolls them back (the messages come back to the next
  consumer), COMMIT makes them take effect (nothing comes back).
"""

from scenario import (check, connect, disconnect, log, parse_args, redelivered, run, send,
                      subscribe)


def commit_and_abort(hosts):
    destination = "/queue/tx-send"
    consumer, crecorder = connect(hosts, "tx-consumer")
    subscribe(consumer, crecorder, destination, "c")
    producer, precorder = connect(hosts, "tx-producer")

    tx = producer.begin()
    for i in range(3):
        producer.send(destination, f"committed {i}", transaction=tx,
                      headers={"receipt": f"tx-send-{i}"})
    for i in range(3):
        precorder.wait_for_receipt(f"tx-send-{i}")
    early = crecorder.quiet_for(1.0)
    check(not early, f"messages of an open transaction delivered: {[m.body for m in early]}")
    producer.commit(tx, headers={"receipt": "tx-commit"})
    precorder.wait_for_receipt("tx-commit")
    got = crecorder.wait_for_messages(3)
    check([m.body for m in got] == [f"committed {i}" for i in range(3)],
          f"after COMMIT got {[m.body for m in got]}")
    crecorder.take()
    log("COMMIT: three transacted SENDs invisible before, delivered after")

    tx = producer.begin()
    for i in range(2):
        producer.send(destination, f"aborted {i}", transaction=tx,
                      headers={"receipt": f"tx-abort-send-{i}"})
    for i in range(2):
        precorder.wait_for_receipt(f"tx-abort-send-{i}")
    producer.abort(tx, headers={"receipt": "tx-abort"})
    precorder.wait_for_receipt("tx-abort")
    send(producer, precorder, destination, "after the abort", "tx-marker")
    crecorder.wait_for_messages(1)
    got = crecorder.quiet_for(1.0)
    check([m.body for m in got] == ["after the abort"],
          f"after ABORT got {[m.body for m in got]}, want only the plain SEND")
    disconnect(producer, precorder)
    disconnect(consumer, crecorder)
    log("ABORT: transacted SENDs never delivered")


def ack_in_transaction(conn, recorder, messages, tag, end, end_receipt):
    """ACKs each of `messages` in one new transaction, each receipted as TAG-i, then ends it
    with `end` (conn.commit or conn.abort), receipted as `end_receipt`."""
    tx = conn.begin()
    for i, m in enumerate(messages):
        conn.ack(m.headers["ack"], transaction=tx, receipt=f"{tag}-{i}")
        recorder.wait_for_receipt(f"{tag}-{i}")
    end(tx, headers={"receipt": end_receipt})
    recorder.wait_for_receipt(end_receipt)


def acks_in_transactions(hosts):
    destination = "/queue/tx-ack"
    producer, precorder = connect(hosts, "ack-producer")
    bodies = [f"to ack {i}" for i in range(2)]
    for i, body in enumerate(bodies):
        send(producer, precorder, destination, body, f"ack-fill-{i}", persistent="true")
    disconnect(producer, precorder)

    # ACK both inside a transaction, then ABORT: the ACKs never happened.
    first, frecorder = connect(hosts, "ack-abort")
    subscribe(first, frecorder, destination, "a", ack="client-individual")
    got = frecorder.wait_for_messages(2)
    check([m.body for m in got] == bodies, f"first consumer got {[m.body for m in got]}")
    ack_in_transaction(first, frecorder, got, "tx-ack", first.abort, "ack-abort")
    disconnect(first, frecorder)

    # The messages come back; ACK them inside a transaction and COMMIT.
    second, srecorder = connect(hosts, "ack-commit")
    subscribe(second, srecorder, destination, "b", ack="client-individual")
    got = srecorder.wait_for_messages(2)
    check([m.body for m in got] == bodies,
          f"after the aborted ACKs the next consumer got {[m.body for m in got]}")
    check(all(redelivered(m) for m in got), f"not flagged redelivered: {[m.headers for m in got]}")
    ack_in_transaction(second, srecorder, got, "tx-ack2", second.commit, "ack-commit")
    disconnect(second, srecorder)

    # Committed ACKs took effect: nothing comes back before a fresh marker message.
    third, trecorder = connect(hosts, "ack-after")
    send(third, trecorder, destination, "marker", "ack-marker")
    subscribe(third, trecorder, destination, "c")
    trecorder.wait_for_messages(1)
    got = trecorder.quiet_for(1.0)
    check([m.body for m in got] == ["marker"],
          f"after COMMITted ACKs the queue still held {[m.body for m in got]}")
    disconnect(third, trecorder)
    log("ACK in a transaction: ABORT rolled the ACKs back, COMMIT applied them")


def main():
    args = parse_args(__doc__)
    commit_and_abort(args.hosts)
    acks_in_transactions(args.hosts)


if __name__ == "__main__":
    run(main)
