//! The broker core's rules, driven request by request without sockets or a store.

use super::*;
use crate::journal::Op;
use message::Published;

struct Client {
    conn: ConnId,
    outbox: mpsc::UnboundedReceiver<Outbound>,
}

/// Node n1 of `epoch`, with a topic backlog of 3, 4 subscriptions per connection and 8
/// destinations at most.
fn settings(epoch: u64, max_redeliveries: u32) -> Settings {
    Settings {
        node: "n1".into(),
        epoch,
        max_redeliveries,
        dead_letter_queue: "/queue/DLQ".into(),
        topic_backlog: 3,
        caps: limits::Caps {
            subscriptions_per_connection: 4,
            destinations: 8,
        },
    }
}

fn broker() -> Broker {
    Broker::new(settings(7, 2), Box::new(Volatile))
}

fn open(broker: &mut Broker, conn: ConnId, client_id: Option<&str>) -> Client {
    let (outbox, rx) = mpsc::unbounded_channel();
    let (verdict, mut answer) = oneshot::channel();
    broker.handle(Request::Open {
        conn,
        client_id: client_id.map(str::to_owned),
        peer: format!("127.0.0.1:{conn}"),
        outbox,
        verdict,
    });
    assert_eq!(answer.try_recv(), Ok(Ok(())), "connection {conn} refused");
    Client { conn, outbox: rx }
}

fn send(
    broker: &mut Broker,
    client: &Client,
    destination: &str,
    body: &str,
    extra: &[(&str, &str)],
) {
    let mut headers = vec![("destination".to_string(), destination.to_string())];
    headers.extend(extra.iter().map(|(n, v)| (n.to_string(), v.to_string())));
    let transaction = extra
        .iter()
        .find(|(n, _)| *n == "transaction")
        .map(|(_, v)| v.to_string());
    broker.handle(Request::Send {
        conn: client.conn,
        published: Published::from_headers(&headers).unwrap(),
        body: Bytes::copy_from_slice(body.as_bytes()),
        transaction,
        receipt: None,
    });
}

fn subscribe(
    broker: &mut Broker,
    client: &Client,
    id: &str,
    destination: &str,
    ack: AckMode,
    prefetch: u32,
) {
    broker.handle(Request::Subscribe {
        conn: client.conn,
        spec: SubscribeSpec {
            id: id.into(),
            destination: destination.into(),
            ack,
            prefetch,
            durable_name: None,
        },
        receipt: None,
    });
}

/// (body, ack, redelivered) of every MESSAGE waiting in the outbox; panics on an ERROR.
fn received(client: &mut Client) -> Vec<(String, Option<String>, bool)> {
    let mut out = Vec::new();
    while let Ok(frame) = client.outbox.try_recv() {
        match frame {
            Outbound::Message { ack, msg, .. } => out.push((
                String::from_utf8_lossy(&msg.body).into_owned(),
                ack.map(|a| a.to_string()),
                msg.redeliveries > 0,
            )),
            Outbound::Receipt(_) => {}
            Outbound::Error { message, .. } => panic!("unexpected ERROR: {message}"),
        }
    }
    out
}

fn bodies(client: &mut Client) -> Vec<String> {
    received(client).into_iter().map(|(b, _, _)| b).collect()
}

/// (body, redelivered) of every MESSAGE waiting in the outbox; panics on an ERROR.
fn flags(client: &mut Client) -> Vec<(String, bool)> {
    received(client)
        .into_iter()
        .map(|(b, _, r)| (b, r))
        .collect()
}

/// `expected` as [`flags`] returns it.
fn flagged(expected: &[(&str, bool)]) -> Vec<(String, bool)> {
    expected.iter().map(|(b, r)| (b.to_string(), *r)).collect()
}

/// The session reports `count` auto-mode messages of its subscription `id` written to its
/// socket.
fn written(broker: &mut Broker, client: &Client, id: &str, count: u32) {
    let sub = broker.connections[&client.conn].subscriptions[id];
    broker.handle(Request::Written {
        conn: client.conn,
        sub,
        count,
    });
}

fn ack(broker: &mut Broker, client: &Client, id: &str, nack: bool) {
    broker.handle(Request::Ack {
        conn: client.conn,
        which: AckRef::Ack(id.into()),
        nack,
        transaction: None,
        receipt: None,
    });
}

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
    send(&mut b, &producer, "/queue/work", "poison", &[]);
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
fn a_durable_subscription_keeps_messages_while_offline() {
    let mut b = broker();
    let producer = open(&mut b, 1, None);
    let mut sub = open(&mut b, 2, Some("client-a"));
    let durable = |id: &str| SubscribeSpec {
        id: id.into(),
        destination: "/topic/news".into(),
        ack: AckMode::ClientIndividual,
        prefetch: 10,
        durable_name: Some("daily".into()),
    };
    b.handle(Request::Subscribe {
        conn: sub.conn,
        spec: durable("s1"),
        receipt: None,
    });
    send(&mut b, &producer, "/topic/news", "one", &[]);
    let got = received(&mut sub);
    assert_eq!(got.len(), 1);
    b.handle(Request::Close { conn: sub.conn });
    send(&mut b, &producer, "/topic/news", "two", &[]);
    let mut back = open(&mut b, 3, Some("client-a"));
    b.handle(Request::Subscribe {
        conn: back.conn,
        spec: durable("s2"),
        receipt: None,
    });
    assert_eq!(flags(&mut back), flagged(&[("one", true), ("two", false)]));
}

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
fn bad_requests_are_refused_with_an_error_naming_the_problem() {
    let mut b = broker();
    let mut client = open(&mut b, 1, None);
    let refused = |client: &mut Client| match client.outbox.try_recv() {
        Ok(Outbound::Error { message, .. }) => message,
        other => panic!("expected an ERROR, got {other:?}"),
    };
    // Epoch 7 is this broker's: an id of its own that names nothing is refused.
    ack(&mut b, &client, "7-99-1", false);
    assert!(refused(&mut client).contains("no unacknowledged message has ack id \"7-99-1\""));
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
    assert!(refused(&mut other).contains("no unacknowledged message has ack id"));
    ack(&mut b, &owner, &id, false);
    assert!(owner.outbox.try_recv().is_err(), "the owner's ACK is taken");
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
        },
        receipt: None,
    });
    assert!(refused(&mut client).contains("needs a client-id"));
}

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

/// Everything in `client`'s outbox: receipt ids, and ERROR messages with their receipt-id.
fn answers(client: &mut Client) -> (Vec<String>, Vec<(String, Option<String>)>) {
    let (mut receipts, mut errors) = (Vec::new(), Vec::new());
    while let Ok(frame) = client.outbox.try_recv() {
        match frame {
            Outbound::Receipt(r) => receipts.push(r),
            Outbound::Error { message, receipt } => errors.push((message, receipt)),
            Outbound::Message { .. } => {}
        }
    }
    (receipts, errors)
}

fn request_with_receipt(b: &mut Broker, client: &Client, kind: &str, tx: &str, receipt: &str) {
    let (conn, transaction, receipt) = (client.conn, tx.to_string(), Some(receipt.to_string()));
    b.handle(match kind {
        "BEGIN" => Request::Begin {
            conn,
            transaction,
            receipt,
        },
        "COMMIT" => Request::Commit {
            conn,
            transaction,
            receipt,
        },
        _ => unreachable!("{kind}"),
    });
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

/// A store in memory that keeps what the broker writes and serves its page reads, so paging is
/// tested without sled. Its barrier runs at once, like [`Volatile`]'s.
#[derive(Clone, Default)]
struct MapStore(Arc<std::sync::Mutex<Stored>>);

/// (space, key) -> value, in the store's order.
type Stored = std::collections::BTreeMap<(String, Vec<u8>), Bytes>;

impl MapStore {
    fn map(&self) -> std::sync::MutexGuard<'_, Stored> {
        self.0.lock().unwrap()
    }

    /// How many entries `space` holds.
    fn count(&self, space: &str) -> usize {
        self.map().keys().filter(|(s, _)| s == space).count()
    }

    /// How many entries the durable subscriptions' spaces hold, whatever their incarnations.
    fn count_durable(&self) -> usize {
        self.map()
            .keys()
            .filter(|(s, _)| s.starts_with("s/") || s.starts_with("d/"))
            .count()
    }
}

impl Durability for MapStore {
    fn put(&self, space: Arc<str>, key: Bytes, value: Value, on_durable: Option<OnDurable>) {
        let value = value.to_bytes();
        self.map().insert((space.to_string(), key.to_vec()), value);
        if let Some(done) = on_durable {
            done();
        }
    }
    fn remove(&self, space: Arc<str>, key: Bytes) {
        self.map().remove(&(space.to_string(), key.to_vec()));
    }
    fn barrier(&self, on_durable: OnDurable) {
        on_durable();
    }
    fn apply(&self, ops: Vec<Op>, on_durable: Option<OnDurable>) {
        for op in ops {
            match op {
                Op::Put { space, key, value } => self.put(space, key, value, None),
                Op::Remove { space, key } => self.remove(space, key),
            }
        }
        if let Some(done) = on_durable {
            done();
        }
    }
}

impl PageStore for MapStore {
    fn spaces(&self) -> Result<Vec<Arc<str>>, StoreError> {
        let mut spaces: Vec<Arc<str>> = self.map().keys().map(|(s, _)| s.as_str().into()).collect();
        spaces.dedup();
        Ok(spaces)
    }
    fn read(&self, space: &str, from: &[u8], limit: usize) -> Result<paging::Entries, StoreError> {
        Ok(self
            .map()
            .range((space.to_string(), from.to_vec())..)
            .take_while(|((s, _), _)| s == space)
            .take(limit)
            .map(|((_, k), v)| (Bytes::copy_from_slice(k), v.clone()))
            .collect())
    }
}

/// A broker of `epoch` on `store` that keeps `page` waiting messages per space in memory.
fn paged_broker(
    store: &MapStore,
    epoch: u64,
    page: usize,
) -> (Broker, mpsc::UnboundedReceiver<PageRead>) {
    let mut b = Broker::new(settings(epoch, 5), Box::new(store.clone()));
    let reads = b.page_out(page);
    (b, reads)
}

/// Serves every page read the broker asked for; returns how many.
fn serve(b: &mut Broker, reads: &mut mpsc::UnboundedReceiver<PageRead>, store: &MapStore) -> usize {
    let mut served = 0;
    while let Ok(read) = reads.try_recv() {
        b.handle(read.serve(store));
        served += 1;
    }
    served
}

/// Receives, and acknowledges one by one, until nothing more comes: (body, redelivered).
fn drain_acking(
    b: &mut Broker,
    reads: &mut mpsc::UnboundedReceiver<PageRead>,
    store: &MapStore,
    client: &mut Client,
) -> Vec<(String, bool)> {
    let mut got = Vec::new();
    loop {
        let batch = received(client);
        let served = serve(b, reads, store);
        if batch.is_empty() && served == 0 {
            return got;
        }
        for (body, ack, redelivered) in batch {
            ack_now(b, client, &ack.expect("client-individual"));
            got.push((body, redelivered));
        }
    }
}

fn ack_now(b: &mut Broker, client: &Client, id: &str) {
    ack(b, client, id, false);
}

fn persistent_sends(
    b: &mut Broker,
    producer: &Client,
    destination: &str,
    range: std::ops::Range<u32>,
) {
    for i in range {
        send(
            b,
            producer,
            destination,
            &i.to_string(),
            &[("persistent", "true")],
        );
    }
}

fn numbers(range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|i| i.to_string()).collect()
}

#[test]
fn paged_out_messages_come_back_in_order_once_each_across_refills() {
    let store = MapStore::default();
    let (mut b, mut reads) = paged_broker(&store, 7, 4);
    let producer = open(&mut b, 1, None);
    persistent_sends(&mut b, &producer, "/queue/q", 0..20);
    // Only the budget is in memory; everything is in the store, and counted.
    assert_eq!(b.counts().messages, 20);
    assert_eq!(store.count("q//queue/q"), 20);
    assert_eq!(b.memory().bytes(), 0);

    let mut consumer = open(&mut b, 2, None);
    subscribe(
        &mut b,
        &consumer,
        "s",
        "/queue/q",
        AckMode::ClientIndividual,
        3,
    );
    let first = received(&mut consumer);
    assert_eq!(
        first.iter().map(|(m, _, _)| m.as_str()).collect::<Vec<_>>(),
        ["0", "1", "2"]
    );
    // Below the low-water mark: a read is asked for. Before it is answered, a message is
    // acknowledged and a new one is paged out behind the others.
    ack_now(&mut b, &consumer, first[0].1.as_deref().unwrap());
    persistent_sends(&mut b, &producer, "/queue/q", 20..21);
    assert_eq!(b.counts().messages, 20);
    let mut got: Vec<(String, bool)> = first.into_iter().map(|(m, _, r)| (m, r)).collect();
    // The other two by message-id (STOMP 1.1 style); the page is still unanswered.
    for id in ["ID:n1-7-2", "ID:n1-7-3"] {
        b.handle(Request::Ack {
            conn: consumer.conn,
            which: AckRef::MessageId {
                message_id: id.into(),
                subscription: None,
            },
            nack: false,
            transaction: None,
            receipt: None,
        });
    }
    got.extend(drain_acking(&mut b, &mut reads, &store, &mut consumer));
    let bodies: Vec<String> = got.iter().map(|(m, _)| m.clone()).collect();
    assert_eq!(bodies, numbers(0..21));
    assert!(got.iter().all(|(_, redelivered)| !redelivered));
    assert_eq!(store.count("q//queue/q"), 0);
    assert_eq!(b.counts().messages, 0);
}

#[test]
fn a_stale_or_repeated_page_never_delivers_a_message_twice() {
    let store = MapStore::default();
    let (mut b, mut reads) = paged_broker(&store, 7, 4);
    let producer = open(&mut b, 1, None);
    persistent_sends(&mut b, &producer, "/queue/q", 0..12);
    let mut consumer = open(&mut b, 2, None);
    subscribe(
        &mut b,
        &consumer,
        "s",
        "/queue/q",
        AckMode::ClientIndividual,
        2,
    );
    // The read asked for after the first deliveries, widened to start at the very first key
    // (as a read racing a moving cursor might): what memory has held is skipped, not
    // delivered again. Answered twice: the second answer's ticket is spent, so it is ignored.
    let mut read = reads.try_recv().expect("a refill below the low-water mark");
    read.from = Bytes::copy_from_slice(&0u64.to_be_bytes());
    read.limit += 4;
    b.handle(read.clone().serve(&store));
    b.handle(read.serve(&store));
    let got = drain_acking(&mut b, &mut reads, &store, &mut consumer);
    let bodies: Vec<String> = got.iter().map(|(m, _)| m.clone()).collect();
    assert_eq!(bodies, numbers(0..12));
}

#[test]
fn unacked_paged_messages_are_redelivered_in_place_and_the_rest_follow() {
    let store = MapStore::default();
    let (mut b, mut reads) = paged_broker(&store, 7, 4);
    let producer = open(&mut b, 1, None);
    persistent_sends(&mut b, &producer, "/queue/q", 0..10);
    let mut quitter = open(&mut b, 2, None);
    subscribe(
        &mut b,
        &quitter,
        "s",
        "/queue/q",
        AckMode::ClientIndividual,
        3,
    );
    assert_eq!(bodies(&mut quitter), ["0", "1", "2"]);
    serve(&mut b, &mut reads, &store);
    b.handle(Request::Close { conn: quitter.conn });
    let mut consumer = open(&mut b, 3, None);
    subscribe(
        &mut b,
        &consumer,
        "s",
        "/queue/q",
        AckMode::ClientIndividual,
        2,
    );
    let got = drain_acking(&mut b, &mut reads, &store, &mut consumer);
    let expected: Vec<(String, bool)> = (0..10).map(|i| (i.to_string(), i < 3)).collect();
    assert_eq!(got, expected);
    assert_eq!(store.count("q//queue/q"), 0);
}

#[test]
fn a_takeover_loads_one_page_and_pages_the_rest_in_flagged_redelivered() {
    let store = MapStore::default();
    {
        let (mut b, _reads) = paged_broker(&store, 7, 4);
        let producer = open(&mut b, 1, None);
        persistent_sends(&mut b, &producer, "/queue/q", 0..10);
        send(&mut b, &producer, "/queue/q", "gone", &[]);
    }
    let (mut b, mut reads) = paged_broker(&store, 8, 4);
    assert_eq!(b.recover(&store).unwrap(), 4);
    assert_eq!(b.counts().messages, 4);
    let producer = open(&mut b, 1, None);
    // New messages go behind the paged-out backlog.
    persistent_sends(&mut b, &producer, "/queue/q", 10..12);
    let mut consumer = open(&mut b, 2, None);
    subscribe(
        &mut b,
        &consumer,
        "s",
        "/queue/q",
        AckMode::ClientIndividual,
        3,
    );
    let got = drain_acking(&mut b, &mut reads, &store, &mut consumer);
    let expected: Vec<(String, bool)> = (0..12).map(|i| (i.to_string(), i < 10)).collect();
    assert_eq!(got, expected);
    assert_eq!(store.count("q//queue/q"), 0);
}

#[test]
fn a_takeover_counts_what_is_stored_beyond_its_first_page_in_the_background() {
    let store = MapStore::default();
    let stored = 2 * paging::COUNT_CHUNK + 5;
    {
        let (mut b, _reads) = paged_broker(&store, 7, 4);
        let producer = open(&mut b, 1, None);
        persistent_sends(&mut b, &producer, "/queue/q", 0..stored as u32);
    }
    let (mut b, mut reads) = paged_broker(&store, 8, 4);
    assert_eq!(b.recover(&store).unwrap(), 4);
    // Only the first page so far; the count is asked for, not yet answered.
    assert_eq!(b.counts().messages, 4);
    let producer = open(&mut b, 1, None);
    persistent_sends(&mut b, &producer, "/queue/q", 0..2);
    assert_eq!(b.counts().messages, 4 + 2, "new page-outs count at once");
    // A consumer drains below the low-water mark while the count goes on: pages are read
    // between counts, and nothing is counted twice or missed.
    let mut consumer = open(&mut b, 2, None);
    subscribe(
        &mut b,
        &consumer,
        "s",
        "/queue/q",
        AckMode::ClientIndividual,
        3,
    );
    let mut taken = 0;
    let mut served = 0;
    while let Ok(read) = reads.try_recv() {
        let counting = read.count_below.is_some();
        b.handle(read.serve(&store));
        served += usize::from(counting);
        for (_, ack, _) in received(&mut consumer) {
            ack_now(&mut b, &consumer, &ack.unwrap());
            taken += 1;
        }
        if counting {
            assert!(b.counts().messages <= (stored + 2 - taken) as u64);
        }
    }
    assert_eq!(served, 3, "in chunks of {}", paging::COUNT_CHUNK);
    assert!(taken > 0);
    assert_eq!(b.counts().messages, (stored + 2 - taken) as u64);
    let rest = drain_acking(&mut b, &mut reads, &store, &mut consumer);
    assert_eq!(taken + rest.len(), stored + 2);
    assert_eq!(b.counts().messages, 0);
    assert_eq!(store.count("q//queue/q"), 0);
}

#[test]
fn a_message_paged_out_where_a_count_is_under_way_is_counted_once() {
    // Before the takeover: six messages on the DLQ (seqs 1-6), two on /queue/work (7, 8).
    let store = MapStore::default();
    {
        let (mut b, _reads) = paged_broker(&store, 7, 4);
        let producer = open(&mut b, 1, None);
        persistent_sends(&mut b, &producer, "/queue/DLQ", 0..6);
        persistent_sends(&mut b, &producer, "/queue/work", 6..8);
    }
    let (mut b, mut reads) = paged_broker(&store, 8, 4);
    b.recover(&store).unwrap();
    // The DLQ's count (from seq 5) is read now, but its answer arrives late.
    let count = reads.try_recv().expect("the DLQ's count");
    assert!(count.count_below.is_some());
    let answer = count.serve(&store);
    // Meanwhile seq 7 is dead-lettered (NACKed past max-redeliveries) and, keeping its seq,
    // paged out into the DLQ's range still being counted; the count above did not see it.
    let mut consumer = open(&mut b, 2, None);
    subscribe(
        &mut b,
        &consumer,
        "s",
        "/queue/work",
        AckMode::ClientIndividual,
        1,
    );
    while let Some((body, ack, _)) = received(&mut consumer).into_iter().next() {
        if body != "6" {
            ack_now(&mut b, &consumer, &ack.unwrap());
            continue;
        }
        ack_nack(&mut b, &consumer, &ack.unwrap());
    }
    assert_eq!(store.count("q//queue/DLQ"), 7);
    b.handle(answer);
    serve(&mut b, &mut reads, &store);
    // 4 DLQ messages in memory and 3 in the store only, nothing else.
    assert_eq!(b.counts().messages, 7);
}

fn ack_nack(b: &mut Broker, client: &Client, id: &str) {
    ack(b, client, id, true);
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

#[test]
fn a_durable_subscription_pages_out_and_its_deletion_purges_the_store() {
    let store = MapStore::default();
    let (mut b, mut reads) = paged_broker(&store, 7, 4);
    let producer = open(&mut b, 1, None);
    let durable = |id: &str| SubscribeSpec {
        id: id.into(),
        destination: "/topic/news".into(),
        ack: AckMode::ClientIndividual,
        prefetch: 2,
        durable_name: Some("daily".into()),
    };
    let sub = open(&mut b, 2, Some("client-a"));
    b.handle(Request::Subscribe {
        conn: sub.conn,
        spec: durable("s1"),
        receipt: None,
    });
    b.handle(Request::Close { conn: sub.conn });
    persistent_sends(&mut b, &producer, "/topic/news", 0..10);
    // The subscription's space: the first number the broker of epoch 7 took.
    let space = &*registry::space((7 << 40) | 1);
    assert_eq!(store.count(space), 10);
    assert_eq!(b.counts().messages, 10, "4 in memory, 6 paged out");
    let mut back = open(&mut b, 3, Some("client-a"));
    b.handle(Request::Subscribe {
        conn: back.conn,
        spec: durable("s2"),
        receipt: None,
    });
    let got = drain_acking(&mut b, &mut reads, &store, &mut back);
    assert_eq!(
        got.into_iter().map(|(m, _)| m).collect::<Vec<_>>(),
        numbers(0..10)
    );
    b.handle(Request::Close { conn: back.conn });

    persistent_sends(&mut b, &producer, "/topic/news", 10..20);
    assert_eq!(store.count(space), 10);
    let gone = open(&mut b, 4, Some("client-a"));
    b.handle(Request::Unsubscribe {
        conn: gone.conn,
        id: "none".into(),
        durable_name: Some("daily".into()),
        receipt: None,
    });
    serve(&mut b, &mut reads, &store);
    assert_eq!(store.count(space), 0);
    assert_eq!(store.count(registry::REGISTRY), 0);
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

/// A store whose writes become durable only when the test says so.
#[derive(Clone, Default)]
struct HeldStore(Arc<std::sync::Mutex<Vec<OnDurable>>>);

impl HeldStore {
    /// Makes everything written so far durable.
    fn release(&self) {
        let held = std::mem::take(&mut *self.0.lock().unwrap());
        for done in held {
            done();
        }
    }

    fn hold(&self, on_durable: Option<OnDurable>) {
        self.0.lock().unwrap().extend(on_durable);
    }
}

impl Durability for HeldStore {
    fn put(&self, _: Arc<str>, _: Bytes, _: Value, on_durable: Option<OnDurable>) {
        self.hold(on_durable);
    }
    fn remove(&self, _: Arc<str>, _: Bytes) {}
    fn barrier(&self, on_durable: OnDurable) {
        self.hold(Some(on_durable));
    }
    fn apply(&self, _: Vec<Op>, on_durable: Option<OnDurable>) {
        self.hold(on_durable);
    }
}

fn subscribe_durable(
    b: &mut Broker,
    client: &Client,
    id: &str,
    topic: &str,
    receipt: Option<&str>,
) {
    b.handle(Request::Subscribe {
        conn: client.conn,
        spec: SubscribeSpec {
            id: id.into(),
            destination: topic.into(),
            ack: AckMode::ClientIndividual,
            prefetch: 1,
            durable_name: Some("feed".into()),
        },
        receipt: receipt.map(str::to_owned),
    });
}

#[test]
fn durable_subscribe_and_unsubscribe_are_receipted_once_the_registry_change_is_durable() {
    let store = HeldStore::default();
    let mut b = Broker::new(settings(7, 2), Box::new(store.clone()));
    let mut reader = open(&mut b, 1, Some("reader"));
    subscribe_durable(&mut b, &reader, "d", "/topic/t", Some("subscribed"));
    assert_eq!(answers(&mut reader), (vec![], vec![]), "not durable yet");
    store.release();
    assert_eq!(answers(&mut reader).0, ["subscribed"]);
    b.handle(Request::Unsubscribe {
        conn: reader.conn,
        id: "d".into(),
        durable_name: Some("feed".into()),
        receipt: Some("deleted".into()),
    });
    assert_eq!(answers(&mut reader), (vec![], vec![]), "not durable yet");
    store.release();
    assert_eq!(answers(&mut reader).0, ["deleted"]);
}

#[test]
fn a_refused_durable_subscribe_leaves_the_active_subscriptions_messages_alone() {
    let store = MapStore::default();
    let mut b = stored_broker(&store);
    let producer = open(&mut b, 1, None);
    let mut reader = open(&mut b, 2, Some("reader"));
    subscribe_durable(&mut b, &reader, "d", "/topic/a", None);
    persistent_sends(&mut b, &producer, "/topic/a", 0..3);
    assert_eq!(bodies(&mut reader), ["0"], "prefetch 1");
    // The same durable subscription, active, asked for again on another topic.
    subscribe_durable(&mut b, &reader, "again", "/topic/b", None);
    let (_, errors) = answers(&mut reader);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].0.contains("already active"), "{errors:?}");
    assert_eq!(store.count_durable(), 3, "its messages are still stored");
    assert_eq!(b.counts().messages, 3, "and still waiting for it");
}

#[test]
fn a_client_id_already_connected_is_refused_as_activemq_does() {
    let mut b = broker();
    let first = open(&mut b, 1, Some("app"));
    let (outbox, _rx) = mpsc::unbounded_channel();
    let (verdict, mut answer) = oneshot::channel();
    b.handle(Request::Open {
        conn: 2,
        client_id: Some("app".into()),
        peer: "127.0.0.1:2".into(),
        outbox,
        verdict,
    });
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

fn unsubscribe(b: &mut Broker, client: &Client, id: &str) {
    b.handle(Request::Unsubscribe {
        conn: client.conn,
        id: id.into(),
        durable_name: None,
        receipt: None,
    });
}

/// The message of the ERROR waiting in `client`'s outbox.
fn refusal(client: &mut Client) -> String {
    match client.outbox.try_recv() {
        Ok(Outbound::Error { message, .. }) => message,
        other => panic!("expected an ERROR, got {other:?}"),
    }
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

/// A broker without paging on `store`, with [`broker`]'s settings.
fn stored_broker(store: &MapStore) -> Broker {
    Broker::new(settings(7, 2), Box::new(store.clone()))
}

/// Whether `client` got the receipt `id` (skipping messages).
fn got_receipt(client: &mut Client, id: &str) -> bool {
    std::iter::from_fn(|| client.outbox.try_recv().ok())
        .any(|frame| matches!(frame, Outbound::Receipt(r) if r == id))
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

/// Subscribes `client` to the durable subscription `name` of `/topic/news`, as subscription "d".
fn subscribe_durable_named(b: &mut Broker, client: &Client, name: &str) {
    b.handle(Request::Subscribe {
        conn: client.conn,
        spec: SubscribeSpec {
            id: "d".into(),
            destination: "/topic/news".into(),
            ack: AckMode::ClientIndividual,
            prefetch: 2,
            durable_name: Some(name.into()),
        },
        receipt: None,
    });
}

#[test]
fn durable_subscriptions_whose_names_hold_the_old_separator_stay_apart_across_a_restart() {
    // Joined by U+0001, both pairs were the key "a\u{1}b\u{1}c".
    let pairs = [("a\u{1}b", "c"), ("a", "b\u{1}c")];
    let store = MapStore::default();
    {
        let (mut b, _reads) = paged_broker(&store, 7, 4);
        for (conn, (client_id, name)) in (10..).zip(pairs) {
            let client = open(&mut b, conn, Some(client_id));
            subscribe_durable_named(&mut b, &client, name);
            b.handle(Request::Close { conn });
        }
        let producer = open(&mut b, 1, None);
        persistent_sends(&mut b, &producer, "/topic/news", 0..3);
    }
    let (mut b, mut reads) = paged_broker(&store, 8, 4);
    b.recover(&store).unwrap();
    for (conn, (client_id, name)) in (20..).zip(pairs) {
        let mut client = open(&mut b, conn, Some(client_id));
        subscribe_durable_named(&mut b, &client, name);
        let got = drain_acking(&mut b, &mut reads, &store, &mut client);
        assert_eq!(
            got.into_iter().map(|(m, _)| m).collect::<Vec<_>>(),
            numbers(0..3),
            "client-id {client_id:?}, subscription {name:?}"
        );
    }
}

#[test]
fn a_deleted_durable_subscription_stays_deleted_after_a_crash_mid_purge() {
    let store = MapStore::default();
    {
        let (mut b, _reads) = paged_broker(&store, 7, 4);
        let client = open(&mut b, 2, Some("client-a"));
        subscribe_durable_named(&mut b, &client, "daily");
        b.handle(Request::Close { conn: client.conn });
        let producer = open(&mut b, 1, None);
        // Four in memory, six paged out to the store only.
        persistent_sends(&mut b, &producer, "/topic/news", 0..10);
        let gone = open(&mut b, 3, Some("client-a"));
        b.handle(Request::Unsubscribe {
            conn: gone.conn,
            id: "none".into(),
            durable_name: Some("daily".into()),
            receipt: Some("deleted".into()),
        });
        // The crash: the purge's page reads (in `_reads`) are never served.
    }
    assert_eq!(store.count(&registry::space((7 << 40) | 1)), 6);
    // The same subscription is created again, and the broker crashes again before reading the
    // recovery's purge.
    {
        let (mut b, _reads) = paged_broker(&store, 8, 4);
        b.recover(&store).unwrap();
        let client = open(&mut b, 2, Some("client-a"));
        subscribe_durable_named(&mut b, &client, "daily");
        b.handle(Request::Close { conn: client.conn });
        let producer = open(&mut b, 1, None);
        persistent_sends(&mut b, &producer, "/topic/news", 100..102);
    }
    let (mut b, mut reads) = paged_broker(&store, 9, 4);
    b.recover(&store).unwrap();
    let mut client = open(&mut b, 2, Some("client-a"));
    subscribe_durable_named(&mut b, &client, "daily");
    let got = drain_acking(&mut b, &mut reads, &store, &mut client);
    assert_eq!(
        got.into_iter().map(|(m, _)| m).collect::<Vec<_>>(),
        numbers(100..102),
        "only what was published after the re-creation"
    );
    // The recovery finished the purge the crash cut short.
    assert_eq!(store.count(&registry::space((7 << 40) | 1)), 0);
}

#[test]
fn an_older_brokerds_durable_subscriptions_are_migrated_in_place() {
    let store = MapStore::default();
    {
        let (mut b, _reads) = paged_broker(&store, 7, 4);
        let client = open(&mut b, 2, Some("client-a"));
        subscribe_durable_named(&mut b, &client, "daily");
        b.handle(Request::Close { conn: client.conn });
        let producer = open(&mut b, 1, None);
        persistent_sends(&mut b, &producer, "/topic/news", 0..6);
    }
    // Rewrite the store as an older brokerd had it: registry "subs", key "client-id U+0001
    // name", value the topic, messages in "d/" ++ key.
    {
        let mut map = store.map();
        let new_space = registry::space((7 << 40) | 1).to_string();
        let moved: Vec<_> = map
            .iter()
            .filter(|((s, _), _)| *s == new_space || s == registry::REGISTRY)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for ((space, key), value) in moved {
            map.remove(&(space.clone(), key.clone()));
            if space == registry::REGISTRY {
                map.insert(
                    ("subs".into(), b"client-a\x01daily".to_vec()),
                    Bytes::from_static(b"/topic/news"),
                );
            } else {
                map.insert(("d/client-a\u{1}daily".into(), key), value);
            }
        }
        // An entry no brokerd could read (no client-id separator): left alone, messages too.
        map.insert(
            ("subs".into(), b"no-client-id".to_vec()),
            Bytes::from_static(b"/topic/news"),
        );
        map.insert(
            ("d/no-client-id".into(), b"m".to_vec()),
            Bytes::from_static(b"kept"),
        );
    }
    let (mut b, mut reads) = paged_broker(&store, 8, 4);
    b.recover(&store).unwrap();
    assert_eq!(store.count("subs"), 1, "only the unreadable entry stays");
    assert_eq!(store.count(registry::REGISTRY), 1);
    assert_eq!(store.count("d/client-a\u{1}daily"), 6, "no message moved");
    let mut client = open(&mut b, 2, Some("client-a"));
    subscribe_durable_named(&mut b, &client, "daily");
    let got = drain_acking(&mut b, &mut reads, &store, &mut client);
    assert_eq!(
        got.into_iter().map(|(m, _)| m).collect::<Vec<_>>(),
        numbers(0..6)
    );
    // Every page read the recovery asked for (the purge of orphans among them) is served.
    serve(&mut b, &mut reads, &store);
    assert_eq!(
        store.count("d/no-client-id"),
        1,
        "an entry left alone keeps its messages"
    );
}

#[test]
fn a_subscription_in_both_registries_refuses_the_start_instead_of_purging_either() {
    let store = MapStore::default();
    {
        let (mut b, _reads) = paged_broker(&store, 7, 4);
        let client = open(&mut b, 2, Some("client-a"));
        subscribe_durable_named(&mut b, &client, "daily");
    }
    // An older brokerd ran afterwards and created the same subscription in its own layout.
    store.map().insert(
        ("subs".into(), b"client-a\x01daily".to_vec()),
        Bytes::from_static(b"/topic/news"),
    );
    let (mut b, _reads) = paged_broker(&store, 8, 4);
    let err = b.recover(&store).unwrap_err();
    assert!(
        matches!(err, StoreError::RegistryConflict { ref client_id, ref name } if client_id == "client-a" && name == "daily"),
        "{err}"
    );
    assert_eq!(store.count("subs"), 1, "nothing migrated or purged");
    assert_eq!(store.count(registry::REGISTRY), 1);
}
