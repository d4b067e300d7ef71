//! Refusals and caps: bad requests, client-ids, subscriptions and destinations.

use super::*;

#[test]
fn an_ack_of_nothing_awaiting_one_is_answered_with_an_error_that_leaves_the_session_open() {
    let mut b = broker();
    let warned = |client: &mut Client| match client.outbox.try_recv() {
        Ok(Outbound::Warning { message, .. }) => message,
        other => panic!("expected an ERROR that leaves the session open, got {other:?}"),
    };
    // Epoch 7 is this broker's: an id of its own that names nothing.
    let mut client = open(&mut b, 1, None);
    ack(&mut b, &client, "7-99-1", false);
    assert!(warned(&mut client).contains("no unacknowledged message has ack id \"7-99-1\""));
    // Nor may a connection acknowledge another's delivery, though its ack id names it.
    let producer = open(&mut b, 11, None);
    let mut owner = open(&mut b, 12, None);
    subscribe(
        &mut b,
        &owner,
        "s",
        "/queue/owned",
        AckMode::ClientIndividual,
        1,
    );
    send(&mut b, &producer, "/queue/owned", "mine", &[]);
    let id = received(&mut owner)[0].1.clone().expect("an ack id");
    let mut other = open(&mut b, 13, None);
    ack(&mut b, &other, &id, false);
    assert!(warned(&mut other).contains("no unacknowledged message has ack id"));
    // The session goes on: its next frames are taken.
    subscribe(&mut b, &other, "s", "/queue/other", AckMode::Auto, 1);
    send(&mut b, &producer, "/queue/other", "still served", &[]);
    assert_eq!(bodies(&mut other), ["still served"]);
    ack(&mut b, &owner, &id, false);
    assert!(owner.outbox.try_recv().is_err(), "the owner's ACK is taken");
}

#[test]
fn bad_requests_are_refused_with_an_error_naming_the_problem() {
    let mut b = broker();
    let refused = |client: &mut Client| match client.outbox.try_recv() {
        Ok(Outbound::Error { message, .. }) => message,
        other => panic!("expected an ERROR, got {other:?}"),
    };
    // An ERROR ends its session: each refusal below is on a connection of its own.
    let mut client = open(&mut b, 2, None);
    b.handle(Request::Commit {
        conn: 2,
        transaction: "t".into(),
        receipt: None,
    });
    assert!(refused(&mut client).contains("transaction \"t\" is not open"));
    let mut client = open(&mut b, 3, None);
    subscribe(&mut b, &client, "s", "/queue/q", AckMode::Auto, 1);
    subscribe(&mut b, &client, "s", "/queue/q", AckMode::Auto, 1);
    assert!(refused(&mut client).contains("already in use"));
    let mut client = open(&mut b, 4, None);
    b.handle(Request::Subscribe {
        conn: 4,
        spec: SubscribeSpec {
            id: "d".into(),
            destination: "/topic/x".into(),
            ack: AckMode::Auto,
            prefetch: 1,
            durable_name: Some("n".into()),
            browser: false,
            options: Default::default(),
        },
        receipt: None,
    });
    assert!(refused(&mut client).contains("needs a client-id"));
}

#[test]
fn a_client_id_already_connected_is_refused_as_activemq_does() {
    let mut b = broker();
    let first = open(&mut b, 1, Some("app"));
    let (outbox, _rx) = mpsc::unbounded_channel();
    let (verdict, mut answer) = oneshot::channel();
    b.handle(Request::Open(Opening {
        conn: 2,
        session: "n1-7-2".into(),
        client_id: Some("app".into()),
        peer: "127.0.0.1:2".into(),
        access: None,
        outbox,
        verdict,
    }));
    assert_eq!(
        answer.try_recv(),
        Ok(Err(
            "Broker: n1 - Client: app already connected from tcp://127.0.0.1:1".into()
        ))
    );
    assert_eq!(b.counts().consumers, 0);
    b.handle(Request::Close { conn: first.conn });
    open(&mut b, 3, Some("app"));
}

#[test]
fn subscriptions_per_connection_and_destinations_are_capped_with_errors_naming_the_limit() {
    let mut b = broker();
    let mut consumer = open(&mut b, 1, None);
    for i in 0..4 {
        let queue = format!("/queue/q{i}");
        subscribe(
            &mut b,
            &consumer,
            &format!("s{i}"),
            &queue,
            AckMode::Auto,
            1,
        );
    }
    assert!(
        consumer.outbox.try_recv().is_err(),
        "up to the limit is fine"
    );
    subscribe(&mut b, &consumer, "s4", "/queue/q0", AckMode::Auto, 1);
    let message = refusal(&mut consumer);
    assert!(
        message.contains("at most 4 subscriptions (--max-subscriptions-per-connection)"),
        "{message}"
    );
    let mut producer = open(&mut b, 2, None);
    for i in 4..8 {
        send(&mut b, &producer, &format!("/queue/q{i}"), "x", &[]);
    }
    assert!(
        producer.outbox.try_recv().is_err(),
        "up to the limit is fine"
    );
    send(&mut b, &producer, "/queue/one-too-many", "x", &[]);
    let message = refusal(&mut producer);
    assert!(
        message.contains("limit of 8 destinations (--max-destinations)"),
        "{message}"
    );
    let mut other = open(&mut b, 3, None);
    subscribe(&mut b, &other, "t", "/topic/new", AckMode::Auto, 1);
    assert!(refusal(&mut other).contains("--max-destinations"));
    // Existing destinations are still served.
    let producer = open(&mut b, 4, None);
    send(&mut b, &producer, "/queue/q0", "still", &[]);
    assert_eq!(bodies(&mut consumer), ["still"]);
    assert_eq!(b.counts().destinations, 8);
}

#[test]
fn an_empty_unused_queue_is_removed_so_unique_reply_queues_do_not_pile_up() {
    let mut b = broker();
    let producer = open(&mut b, 1, None);
    let mut requester = open(&mut b, 2, None);
    // More unique reply queues than the destinations cap (8).
    for i in 0..20 {
        let reply = format!("/queue/reply-{i}");
        subscribe(
            &mut b,
            &requester,
            "r",
            &reply,
            AckMode::ClientIndividual,
            1,
        );
        send(&mut b, &producer, &reply, "answer", &[]);
        let got = received(&mut requester);
        assert_eq!(got.len(), 1, "reply {i}");
        ack(&mut b, &requester, got[0].1.as_deref().unwrap(), false);
        unsubscribe(&mut b, &requester, "r");
    }
    assert_eq!(b.counts().destinations, 0);
    // A queue whose consumer left a message unacknowledged keeps it.
    subscribe(
        &mut b,
        &requester,
        "r",
        "/queue/kept",
        AckMode::ClientIndividual,
        1,
    );
    send(&mut b, &producer, "/queue/kept", "unacked", &[]);
    assert_eq!(bodies(&mut requester), ["unacked"]);
    unsubscribe(&mut b, &requester, "r");
    assert_eq!(b.counts().destinations, 1);
    subscribe(
        &mut b,
        &requester,
        "r",
        "/queue/kept",
        AckMode::ClientIndividual,
        1,
    );
    assert_eq!(flags(&mut requester), flagged(&[("unacked", true)]));
}
