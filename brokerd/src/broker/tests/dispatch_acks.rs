//! Dispatch, acknowledgement and redelivery.

use super::*;

#[test]
fn a_queue_round_robins_between_consumers_within_their_prefetch() {
    let mut b = broker();
    let producer = open(&mut b, 1, None);
    let mut c1 = open(&mut b, 2, None);
    let mut c2 = open(&mut b, 3, None);
    subscribe(&mut b, &c1, "s", "/queue/q", AckMode::ClientIndividual, 2);
    subscribe(&mut b, &c2, "s", "/queue/q", AckMode::ClientIndividual, 2);
    for i in 0..6 {
        send(&mut b, &producer, "/queue/q", &i.to_string(), &[]);
    }
    assert_eq!(bodies(&mut c1), ["0", "2"]);
    assert_eq!(bodies(&mut c2), ["1", "3"]);
    assert_eq!(b.counts().messages, 6);
}

#[test]
fn client_acks_are_cumulative_and_individual_acks_are_not() {
    let mut b = broker();
    let producer = open(&mut b, 1, None);
    let mut cumulative = open(&mut b, 2, None);
    subscribe(&mut b, &cumulative, "c", "/queue/a", AckMode::Client, 10);
    for i in 0..3 {
        send(&mut b, &producer, "/queue/a", &i.to_string(), &[]);
    }
    let got = received(&mut cumulative);
    ack(&mut b, &cumulative, got[1].1.as_deref().unwrap(), false);
    assert_eq!(
        b.counts().messages,
        1,
        "acking the second acks the first too"
    );

    let mut individual = open(&mut b, 3, None);
    subscribe(
        &mut b,
        &individual,
        "i",
        "/queue/b",
        AckMode::ClientIndividual,
        10,
    );
    for i in 0..3 {
        send(&mut b, &producer, "/queue/b", &i.to_string(), &[]);
    }
    let got = received(&mut individual);
    ack(&mut b, &individual, got[1].1.as_deref().unwrap(), false);
    assert_eq!(b.counts().messages, 1 + 2);
}

#[test]
fn unacked_messages_of_a_closed_consumer_go_to_another_flagged_redelivered() {
    let mut b = broker();
    let producer = open(&mut b, 1, None);
    let mut first = open(&mut b, 2, None);
    subscribe(&mut b, &first, "s", "/queue/q", AckMode::Client, 10);
    send(&mut b, &producer, "/queue/q", "m1", &[]);
    send(&mut b, &producer, "/queue/q", "m2", &[]);
    assert_eq!(received(&mut first).len(), 2);
    let mut second = open(&mut b, 3, None);
    subscribe(&mut b, &second, "s", "/queue/q", AckMode::Auto, 10);
    b.handle(Request::Close { conn: first.conn });
    assert_eq!(
        flags(&mut second),
        flagged(&[("m1", true), ("m2", true)]),
        "in their original order, flagged"
    );
}

#[test]
fn nacked_messages_are_redelivered_then_dead_lettered_with_their_origin() {
    let mut b = broker();
    let producer = open(&mut b, 1, None);
    let mut consumer = open(&mut b, 2, None);
    subscribe(
        &mut b,
        &consumer,
        "s",
        "/queue/work",
        AckMode::ClientIndividual,
        10,
    );
    let mut dlq = open(&mut b, 3, None);
    send(
        &mut b,
        &producer,
        "/queue/work",
        "poison",
        &[("persistent", "true")],
    );
    // max_redeliveries is 2: delivered, nacked, redelivered twice, then the DLQ.
    for attempt in 0..3 {
        let got = received(&mut consumer);
        assert_eq!(got.len(), 1, "attempt {attempt}");
        assert_eq!(
            got[0].2,
            attempt > 0,
            "redelivered flag on attempt {attempt}"
        );
        ack(&mut b, &consumer, got[0].1.as_deref().unwrap(), true);
    }
    assert!(received(&mut consumer).is_empty());
    subscribe(&mut b, &dlq, "d", "/queue/DLQ", AckMode::Auto, 10);
    match dlq.outbox.try_recv().unwrap() {
        Outbound::Message { msg, .. } => {
            assert_eq!(&*msg.body, b"poison");
            assert!(msg
                .headers
                .contains(&("original-destination".into(), "/queue/work".into())));
            assert_eq!(
                message::header(&msg.headers, "dlqDeliveryFailureCause"),
                Some("redelivered 2 times, more than the limit of 2")
            );
        }
        other => panic!("expected the dead letter, got {other:?}"),
    }
}

#[test]
fn higher_priority_goes_first_and_expired_messages_are_never_delivered() {
    let mut b = broker();
    let producer = open(&mut b, 1, None);
    send(&mut b, &producer, "/queue/p", "low", &[("priority", "1")]);
    send(
        &mut b,
        &producer,
        "/queue/p",
        "expired",
        &[("expires", "1")],
    );
    send(&mut b, &producer, "/queue/p", "high", &[("priority", "9")]);
    let mut consumer = open(&mut b, 2, None);
    subscribe(&mut b, &consumer, "s", "/queue/p", AckMode::Auto, 10);
    assert_eq!(bodies(&mut consumer), ["high", "low"]);
    written(&mut b, &consumer, "s", 2);
    assert_eq!(b.counts().messages, 0);
}

#[test]
fn auto_mode_messages_the_session_never_wrote_go_back_to_the_queue() {
    let mut b = broker();
    let producer = open(&mut b, 1, None);
    let mut lost = open(&mut b, 2, None);
    subscribe(&mut b, &lost, "s", "/queue/q", AckMode::Auto, 10);
    for i in 0..3 {
        send(
            &mut b,
            &producer,
            "/queue/q",
            &i.to_string(),
            &[("persistent", "true")],
        );
    }
    assert_eq!(bodies(&mut lost), ["0", "1", "2"]);
    // Only the first reached the socket before the connection died.
    written(&mut b, &lost, "s", 1);
    b.handle(Request::Close { conn: lost.conn });
    let mut next = open(&mut b, 3, None);
    subscribe(&mut b, &next, "s", "/queue/q", AckMode::Auto, 10);
    assert_eq!(
        flags(&mut next),
        flagged(&[("1", true), ("2", true)]),
        "the unwritten ones come again, flagged: some bytes may have reached the socket"
    );
}

#[test]
fn a_written_report_for_an_ended_subscription_leaves_a_new_one_with_the_same_id_alone() {
    let store = MapStore::default();
    let mut b = stored_broker(&store);
    let producer = open(&mut b, 1, None);
    let mut consumer = open(&mut b, 2, None);
    subscribe(&mut b, &consumer, "s", "/queue/q", AckMode::Auto, 10);
    persistent_sends(&mut b, &producer, "/queue/q", 0..1);
    let old_sub = match consumer.outbox.try_recv() {
        Ok(Outbound::Message { sub, .. }) => sub,
        other => panic!("expected a MESSAGE, got {other:?}"),
    };
    // The client leaves before the session wrote the message, and comes back under the same id:
    // the message goes back to the queue and comes to the new subscription.
    b.handle(Request::Unsubscribe {
        conn: consumer.conn,
        id: "s".into(),
        durable_name: None,
        receipt: None,
    });
    subscribe(&mut b, &consumer, "s", "/queue/q", AckMode::Auto, 10);
    // Only now does the session report the old delivery written.
    b.handle(Request::Written {
        conn: consumer.conn,
        sub: old_sub,
        count: 1,
    });
    assert_eq!(
        store.count("q//queue/q"),
        1,
        "the redelivery, not yet written, is still stored"
    );
    b.handle(Request::Close {
        conn: consumer.conn,
    });
    let mut next = open(&mut b, 3, None);
    subscribe(
        &mut b,
        &next,
        "s",
        "/queue/q",
        AckMode::ClientIndividual,
        10,
    );
    assert_eq!(
        bodies(&mut next),
        ["0"],
        "the message comes back to the next consumer"
    );
}

#[test]
fn a_late_ack_from_an_earlier_epoch_is_answered_and_changes_nothing() {
    let mut b = broker();
    let producer = open(&mut b, 1, None);
    let mut consumer = open(&mut b, 2, None);
    subscribe(
        &mut b,
        &consumer,
        "s",
        "/queue/q",
        AckMode::ClientIndividual,
        10,
    );
    send(&mut b, &producer, "/queue/q", "m", &[]);
    let got = received(&mut consumer);
    assert!(
        got[0].1.as_deref().unwrap().starts_with("7-"),
        "ack ids carry the epoch"
    );
    b.handle(Request::Ack {
        conn: consumer.conn,
        which: AckRef::Ack("6-1-1".into()),
        nack: false,
        transaction: None,
        receipt: Some("late".into()),
    });
    match consumer.outbox.try_recv() {
        Ok(Outbound::Receipt(r)) => assert_eq!(r, "late"),
        other => panic!("expected the receipt, got {other:?}"),
    }
    assert_eq!(
        b.counts().messages,
        1,
        "the delivery of this epoch is still unacknowledged"
    );
}

#[test]
fn a_committed_message_an_auto_consumer_took_on_the_spot_is_stored_before_the_receipt() {
    let store = MapStore::default();
    let mut b = stored_broker(&store);
    let mut producer = open(&mut b, 1, None);
    let mut consumer = open(&mut b, 2, None);
    subscribe(&mut b, &consumer, "s", "/queue/q", AckMode::Auto, 10);
    b.handle(Request::Begin {
        conn: producer.conn,
        transaction: "t".into(),
        receipt: None,
    });
    send(
        &mut b,
        &producer,
        "/queue/q",
        "m",
        &[("persistent", "true"), ("transaction", "t")],
    );
    b.handle(Request::Commit {
        conn: producer.conn,
        transaction: "t".into(),
        receipt: Some("c".into()),
    });
    assert_eq!(bodies(&mut consumer), ["m"]);
    assert!(got_receipt(&mut producer, "c"));
    // The COMMIT is receipted while the message is not yet written to its consumer: a crash
    // now must not lose it.
    assert_eq!(store.count("q//queue/q"), 1);
    written(&mut b, &consumer, "s", 1);
    assert_eq!(store.count("q//queue/q"), 0);
}

#[test]
fn a_dead_letter_an_auto_consumer_took_on_the_spot_is_stored_before_the_original_goes() {
    let store = MapStore::default();
    let mut b = stored_broker(&store);
    let mut producer = open(&mut b, 1, None);
    let mut consumer = open(&mut b, 2, None);
    let mut dlq = open(&mut b, 3, None);
    subscribe(
        &mut b,
        &consumer,
        "s",
        "/queue/work",
        AckMode::ClientIndividual,
        10,
    );
    subscribe(&mut b, &dlq, "d", "/queue/DLQ", AckMode::Auto, 10);
    b.handle(Request::Send {
        conn: producer.conn,
        published: Published::from_headers(&[
            ("destination".into(), "/queue/work".into()),
            ("persistent".into(), "true".into()),
        ])
        .unwrap(),
        body: Bytes::from_static(b"poison"),
        transaction: None,
        receipt: Some("r".into()),
    });
    assert!(got_receipt(&mut producer, "r"));
    // max_redeliveries is 2: the third NACK moves it to the DLQ, where a consumer is waiting.
    for _ in 0..3 {
        let got = received(&mut consumer);
        ack(&mut b, &consumer, got[0].1.as_deref().unwrap(), true);
    }
    assert_eq!(bodies(&mut dlq), ["poison"]);
    // The receipted message is in the store somewhere until the DLQ's consumer has it.
    assert_eq!(store.count("q//queue/work"), 0);
    assert_eq!(store.count("q//queue/DLQ"), 1);
    written(&mut b, &dlq, "d", 1);
    assert_eq!(store.count("q//queue/DLQ"), 0);
}
