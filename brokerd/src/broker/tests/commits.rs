//! Transactions: COMMIT, ABORT, their bounds.

use super::*;

#[test]
fn a_transaction_takes_effect_at_commit_and_not_at_all_on_abort() {
    let mut b = broker();
    let producer = open(&mut b, 1, None);
    let mut consumer = open(&mut b, 2, None);
    subscribe(
        &mut b,
        &consumer,
        "s",
        "/queue/t",
        AckMode::ClientIndividual,
        10,
    );
    for tx in ["t1", "t2"] {
        b.handle(Request::Begin {
            conn: producer.conn,
            transaction: tx.into(),
            receipt: None,
        });
    }
    send(
        &mut b,
        &producer,
        "/queue/t",
        "committed",
        &[("transaction", "t1")],
    );
    send(
        &mut b,
        &producer,
        "/queue/t",
        "aborted",
        &[("transaction", "t2")],
    );
    assert!(received(&mut consumer).is_empty(), "nothing before COMMIT");
    b.handle(Request::Abort {
        conn: producer.conn,
        transaction: "t2".into(),
        receipt: None,
    });
    b.handle(Request::Commit {
        conn: producer.conn,
        transaction: "t1".into(),
        receipt: None,
    });
    let got = received(&mut consumer);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, "committed");
    // An ACK in a transaction that is aborted leaves the message unacknowledged.
    b.handle(Request::Begin {
        conn: consumer.conn,
        transaction: "c".into(),
        receipt: None,
    });
    b.handle(Request::Ack {
        conn: consumer.conn,
        which: AckRef::Ack(got[0].1.clone().unwrap()),
        nack: false,
        transaction: Some("c".into()),
        receipt: None,
    });
    b.handle(Request::Abort {
        conn: consumer.conn,
        transaction: "c".into(),
        receipt: None,
    });
    assert_eq!(b.counts().messages, 1);
}

#[test]
fn after_a_refused_frame_a_commit_already_sent_applies_nothing() {
    let mut b = broker();
    let mut producer = open(&mut b, 1, None);
    request_with_receipt(&mut b, &producer, "BEGIN", "t", "begun");
    send(
        &mut b,
        &producer,
        "/queue/q",
        "kept?",
        &[("transaction", "t")],
    );
    // The second SEND is refused (no such transaction): the ERROR ends the session, but the
    // client's COMMIT of the first is already on its way.
    b.handle(Request::Send {
        conn: producer.conn,
        published: Published::from_headers(&[("destination".into(), "/queue/q".into())])
            .expect("valid headers"),
        body: Bytes::from_static(b"refused"),
        transaction: Some("typo".into()),
        receipt: Some("refused".into()),
    });
    request_with_receipt(&mut b, &producer, "COMMIT", "t", "committed");
    let (receipts, errors) = answers(&mut producer);
    assert_eq!(receipts, ["begun"]);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].1.as_deref(), Some("refused"));
    assert_eq!(b.counts().messages, 0, "no part of the transaction applied");
}

#[test]
fn transactions_are_bounded_in_number_and_size() {
    let mut b = broker();
    let mut client = open(&mut b, 1, None);
    let begin = |b: &mut Broker, tx: String| {
        b.handle(Request::Begin {
            conn: 1,
            transaction: tx,
            receipt: None,
        })
    };
    for i in 0..MAX_TRANSACTIONS {
        begin(&mut b, i.to_string());
    }
    assert!(client.outbox.try_recv().is_err(), "up to the limit is fine");
    begin(&mut b, "one too many".into());
    match client.outbox.try_recv() {
        Ok(Outbound::Error { message, .. }) => assert!(
            message.contains("at most 64 open transactions"),
            "{message}"
        ),
        other => panic!("expected an ERROR, got {other:?}"),
    }
    // The ERROR ended that session (and aborted its transactions): the size limit on another.
    let mut client = open(&mut b, 2, None);
    b.handle(Request::Begin {
        conn: 2,
        transaction: "0".into(),
        receipt: None,
    });
    for _ in 0..MAX_TRANSACTION_OPS {
        send(&mut b, &client, "/queue/t", "x", &[("transaction", "0")]);
    }
    assert!(client.outbox.try_recv().is_err());
    send(&mut b, &client, "/queue/t", "x", &[("transaction", "0")]);
    match client.outbox.try_recv() {
        Ok(Outbound::Error { message, .. }) => {
            assert!(message.contains("limit of 10000"), "{message}")
        }
        other => panic!("expected an ERROR, got {other:?}"),
    }
}
