//! Going passive: the drain.

use super::*;

#[test]
fn a_drain_stops_dispatching_and_waits_for_every_delivery_to_be_acknowledged() {
    let mut b = broker();
    let producer = open(&mut b, 1, None);
    let mut consumer = open(&mut b, 2, None);
    subscribe(
        &mut b,
        &consumer,
        "s",
        "/queue/q",
        AckMode::ClientIndividual,
        1,
    );
    send(&mut b, &producer, "/queue/q", "delivered", &[]);
    send(&mut b, &producer, "/queue/q", "waiting", &[]);
    let got = received(&mut consumer);
    assert_eq!(got.len(), 1);
    let (tx, mut drained) = oneshot::channel();
    b.handle(Request::Drain(tx));
    assert!(
        drained.try_recv().is_err(),
        "not drained while a delivery awaits its ACK"
    );
    send(&mut b, &producer, "/queue/q", "refused while draining", &[]);
    ack(&mut b, &consumer, got[0].1.as_deref().unwrap(), false);
    assert!(drained.try_recv().is_ok(), "drained once the ACK landed");
    assert!(
        received(&mut consumer).is_empty(),
        "nothing more is dispatched"
    );
    assert_eq!(
        b.counts().messages,
        1,
        "the waiting message stays for the next node"
    );
}

#[test]
fn a_drain_aborts_transactions_and_no_receipt_follows_a_dropped_send() {
    let mut b = broker();
    let mut producer = open(&mut b, 1, None);
    let mut other = open(&mut b, 2, None);
    request_with_receipt(&mut b, &producer, "BEGIN", "t", "begun");
    send(
        &mut b,
        &producer,
        "/queue/q",
        "before",
        &[("transaction", "t")],
    );
    request_with_receipt(&mut b, &other, "BEGIN", "u", "begun");
    send(&mut b, &other, "/queue/q", "kept", &[("transaction", "u")]);
    let (tx, _drained) = oneshot::channel();
    b.handle(Request::Drain(tx));
    send(
        &mut b,
        &producer,
        "/queue/q",
        "dropped",
        &[("transaction", "t")],
    );
    request_with_receipt(&mut b, &producer, "COMMIT", "t", "committed");
    b.handle(Request::Receipt {
        conn: producer.conn,
        receipt: "disconnect".into(),
    });
    let (receipts, errors) = answers(&mut producer);
    assert_eq!(receipts, ["begun"], "no receipt after the dropped SEND");
    assert_eq!(errors.len(), 1, "the COMMIT is refused: {errors:?}");
    assert!(errors[0].0.contains("aborted"), "{errors:?}");
    // The other connection dropped nothing, but its transaction was aborted all the same.
    request_with_receipt(&mut b, &other, "COMMIT", "u", "committed");
    let (receipts, errors) = answers(&mut other);
    assert_eq!(receipts, ["begun"]);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].1.as_deref(), Some("committed"));
    assert_eq!(b.counts().messages, 0, "no transaction took effect");
}
