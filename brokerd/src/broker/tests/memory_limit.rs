//! What counts against the producers' memory limit.

use super::*;

#[test]
fn a_slow_non_durable_topic_subscriber_loses_its_oldest_messages_not_memory() {
    let mut b = broker();
    let producer = open(&mut b, 1, None);
    let mut slow = open(&mut b, 2, None);
    subscribe(&mut b, &slow, "s", "/topic/t", AckMode::ClientIndividual, 1);
    for i in 0..10 {
        send(&mut b, &producer, "/topic/t", &i.to_string(), &[]);
    }
    // One in flight (prefetch 1), at most topic_backlog (3) waiting.
    let got = received(&mut slow);
    assert_eq!(got.len(), 1);
    ack(&mut b, &slow, got[0].1.as_deref().unwrap(), false);
    assert_eq!(bodies(&mut slow), ["7"]);
}

#[test]
fn transaction_contents_and_deliveries_in_flight_count_against_the_memory_limit() {
    let mut b = broker();
    let mut producer = open(&mut b, 1, None);
    let mut consumer = open(&mut b, 2, None);
    request_with_receipt(&mut b, &producer, "BEGIN", "t", "begun");
    send(
        &mut b,
        &producer,
        "/queue/q",
        "in a transaction",
        &[("transaction", "t")],
    );
    let held = b.memory().bytes();
    assert!(
        held > 0,
        "a transaction's SEND is held in memory until COMMIT"
    );
    b.handle(Request::Abort {
        conn: producer.conn,
        transaction: "t".into(),
        receipt: None,
    });
    assert_eq!(b.memory().bytes(), 0, "released by ABORT");
    subscribe(
        &mut b,
        &consumer,
        "s",
        "/queue/q",
        AckMode::ClientIndividual,
        1,
    );
    send(&mut b, &producer, "/queue/q", "in flight", &[]);
    let got = received(&mut consumer);
    assert_eq!(got.len(), 1);
    assert!(
        b.memory().bytes() > 0,
        "a delivery is held in memory until its ACK"
    );
    ack(&mut b, &consumer, got[0].1.as_deref().unwrap(), false);
    assert_eq!(b.memory().bytes(), 0, "released by the ACK");
    let _ = answers(&mut producer);
}

#[test]
fn slow_topic_subscribers_backlogs_count_against_the_memory_limit_once_per_message() {
    let mut b = broker();
    let producer = open(&mut b, 1, None);
    let mut fast = open(&mut b, 2, None);
    let mut slow = open(&mut b, 3, None);
    let mut slower = open(&mut b, 4, None);
    subscribe(&mut b, &fast, "f", "/topic/t", AckMode::Auto, 100);
    subscribe(&mut b, &slow, "s", "/topic/t", AckMode::ClientIndividual, 1);
    subscribe(
        &mut b,
        &slower,
        "s",
        "/topic/t",
        AckMode::ClientIndividual,
        1,
    );
    // Message i is the broker's (i + 1)th: its id ends in i + 1.
    let footprint = |i: usize| {
        Message {
            id: format!("ID:n1-7-{}", i + 1).into(),
            seq: 0,
            destination: "/topic/t".into(),
            headers: Vec::new(),
            body: Bytes::from(i.to_string()),
            persistent: false,
            priority: 4,
            expires: 0,
            redeliveries: 0,
            timestamp: 0,
            sized: true,
            from: 0,
        }
        .footprint()
    };
    let (zero, one, two) = (footprint(0), footprint(1), footprint(2));
    send(&mut b, &producer, "/topic/t", "0", &[]);
    // Delivered to all three at once: nothing waits, and each delivery counts until it is
    // written or acknowledged.
    assert_eq!(b.memory().bytes(), 3 * zero);
    for i in 1..3 {
        send(&mut b, &producer, "/topic/t", &i.to_string(), &[]);
    }
    assert_eq!(bodies(&mut fast), ["0", "1", "2"]);
    written(&mut b, &fast, "f", 3);
    // "1" and "2" wait for both slow subscribers, and are counted once each; "0" is in flight
    // to both.
    assert_eq!(b.memory().bytes(), one + two + 2 * zero);
    // The status reports what the limit counts.
    assert_eq!(b.counts().memory_bytes, (one + two + 2 * zero) as u64);
    assert_eq!(
        b.counts().messages,
        2 + 2 * 2,
        "two in flight, two waiting twice"
    );
    // One slow subscriber takes "1": the other still holds it in its backlog.
    let got = received(&mut slow);
    ack(&mut b, &slow, got[0].1.as_deref().unwrap(), false);
    assert_eq!(b.memory().bytes(), one + two + zero + one);
    // The other leaves: its backlog and its delivery go; "1" is only in flight now.
    b.handle(Request::Close { conn: slower.conn });
    assert_eq!(b.memory().bytes(), two + one);
    let got = received(&mut slow);
    assert_eq!(got[0].0, "1");
    ack(&mut b, &slow, got[0].1.as_deref().unwrap(), false);
    assert_eq!(b.memory().bytes(), two, "only the delivery of \"2\"");
    // Past --topic-backlog (3 here) the oldest go, and are uncounted.
    for i in 3..10 {
        send(&mut b, &producer, "/topic/t", &i.to_string(), &[]);
    }
    assert_eq!(bodies(&mut fast).len(), 7);
    written(&mut b, &fast, "f", 7);
    assert_eq!(
        b.memory().bytes(),
        two + footprint(7) + footprint(8) + footprint(9)
    );
    b.handle(Request::Close { conn: slow.conn });
    assert_eq!(b.memory().bytes(), 0);
    let _ = received(&mut slower);
}

#[test]
fn only_non_persistent_messages_count_against_the_memory_limit_and_pages_keep_fifo_around_them() {
    let store = MapStore::default();
    let (mut b, mut reads) = paged_broker(&store, 7, 4);
    let producer = open(&mut b, 1, None);
    persistent_sends(&mut b, &producer, "/queue/q", 0..6);
    assert_eq!(b.memory().bytes(), 0);
    send(&mut b, &producer, "/queue/q", "np", &[]);
    assert!(b.memory().bytes() > 0);
    let mut consumer = open(&mut b, 2, None);
    subscribe(
        &mut b,
        &consumer,
        "s",
        "/queue/q",
        AckMode::ClientIndividual,
        1,
    );
    let got: Vec<String> = drain_acking(&mut b, &mut reads, &store, &mut consumer)
        .into_iter()
        .map(|(m, _)| m)
        .collect();
    // A non-persistent message cannot wait in the store, but a page brought in before it is
    // delivered takes its place ahead of it, by sequence.
    assert_eq!(got, ["0", "1", "2", "3", "4", "5", "np"]);
    assert_eq!(b.memory().bytes(), 0);
}
