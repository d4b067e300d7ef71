//! ActiveMQ's per-consumer options: exclusive, priority, message groups, noLocal, retroactive.

use super::*;
use crate::broker::consumers::ConsumerOptions;

fn exclusive() -> ConsumerOptions {
    ConsumerOptions {
        exclusive: true,
        ..Default::default()
    }
}

fn priority(priority: u8) -> ConsumerOptions {
    ConsumerOptions {
        priority,
        ..Default::default()
    }
}

/// The ack ids of the messages waiting in `client`'s outbox, with their bodies.
fn acks(client: &mut Client) -> Vec<(String, String)> {
    received(client)
        .into_iter()
        .map(|(body, ack, _)| (body, ack.expect("a client-mode delivery")))
        .collect()
}

#[test]
fn an_exclusive_consumer_gets_every_message_while_it_is_there() {
    let mut b = broker();
    let (mut plain, mut only) = (open(&mut b, 1, None), open(&mut b, 2, None));
    subscribe(&mut b, &plain, "p", "/queue/x", AckMode::Auto, 100);
    subscribe_with(
        &mut b,
        &only,
        "e",
        "/queue/x",
        AckMode::Auto,
        100,
        exclusive(),
    );
    for n in 0..4 {
        send(&mut b, &plain, "/queue/x", &format!("m{n}"), &[]);
    }
    assert_eq!(bodies(&mut only), ["m0", "m1", "m2", "m3"]);
    assert!(bodies(&mut plain).is_empty());
    written(&mut b, &only, "e", 4);
    unsubscribe(&mut b, &only, "e");
    send(&mut b, &plain, "/queue/x", "after", &[]);
    assert_eq!(bodies(&mut plain), ["after"]);
}

#[test]
fn an_exclusive_consumer_without_credit_holds_the_queue_for_itself() {
    let mut b = broker();
    let (mut plain, mut only) = (open(&mut b, 1, None), open(&mut b, 2, None));
    subscribe(&mut b, &plain, "p", "/queue/x", AckMode::Auto, 100);
    subscribe_with(
        &mut b,
        &only,
        "e",
        "/queue/x",
        AckMode::ClientIndividual,
        1,
        exclusive(),
    );
    send(&mut b, &plain, "/queue/x", "m0", &[]);
    send(&mut b, &plain, "/queue/x", "m1", &[]);
    let first = acks(&mut only);
    assert_eq!(first[0].0, "m0");
    assert!(
        bodies(&mut plain).is_empty(),
        "m1 waits for the exclusive consumer"
    );
    ack(&mut b, &only, &first[0].1, false);
    assert_eq!(bodies(&mut only), ["m1"]);
}

#[test]
fn higher_priority_consumers_are_served_first() {
    let mut b = broker();
    let (mut low, mut high) = (open(&mut b, 1, None), open(&mut b, 2, None));
    subscribe_with(
        &mut b,
        &low,
        "l",
        "/queue/p",
        AckMode::ClientIndividual,
        10,
        priority(1),
    );
    subscribe_with(
        &mut b,
        &high,
        "h",
        "/queue/p",
        AckMode::ClientIndividual,
        2,
        priority(9),
    );
    for n in 0..5 {
        send(&mut b, &low, "/queue/p", &format!("m{n}"), &[]);
    }
    // The high-priority consumer fills its prefetch first; the rest spill over.
    let got = acks(&mut high);
    assert_eq!(
        got.iter().map(|(b, _)| b.as_str()).collect::<Vec<_>>(),
        ["m0", "m1"]
    );
    assert_eq!(bodies(&mut low), ["m2", "m3", "m4"]);
    ack(&mut b, &high, &got[0].1, false);
    send(&mut b, &low, "/queue/p", "m5", &[]);
    assert_eq!(bodies(&mut high), ["m5"]);
}

#[test]
fn a_group_sticks_to_one_consumer_until_it_leaves_or_the_group_closes() {
    let mut b = broker();
    let (mut one, mut two) = (open(&mut b, 1, None), open(&mut b, 2, None));
    subscribe(
        &mut b,
        &one,
        "s",
        "/queue/g",
        AckMode::ClientIndividual,
        100,
    );
    subscribe(
        &mut b,
        &two,
        "s",
        "/queue/g",
        AckMode::ClientIndividual,
        100,
    );
    for n in 0..6 {
        let group = if n % 2 == 0 { "even" } else { "odd" };
        send(
            &mut b,
            &one,
            "/queue/g",
            &format!("{group}{n}"),
            &[("JMSXGroupID", group)],
        );
    }
    let (first, second) = (bodies(&mut one), bodies(&mut two));
    assert_eq!(first, ["even0", "even2", "even4"]);
    assert_eq!(second, ["odd1", "odd3", "odd5"]);
    // The owner leaves: its unacknowledged messages and its group go to the other.
    unsubscribe(&mut b, &one, "s");
    assert_eq!(bodies(&mut two), ["even0", "even2", "even4"]);
    send(
        &mut b,
        &two,
        "/queue/g",
        "even6",
        &[("JMSXGroupID", "even")],
    );
    assert_eq!(bodies(&mut two), ["even6"]);
    // JMSXGroupSeq -1 closes a group: its next message may go to anyone.
    subscribe(
        &mut b,
        &one,
        "s2",
        "/queue/g",
        AckMode::ClientIndividual,
        100,
    );
    send(
        &mut b,
        &two,
        "/queue/g",
        "close",
        &[("JMSXGroupID", "odd"), ("JMSXGroupSeq", "-1")],
    );
    assert_eq!(bodies(&mut two), ["close"]);
    send(
        &mut b,
        &two,
        "/queue/g",
        "reopen",
        &[("JMSXGroupID", "odd")],
    );
    assert_eq!(
        bodies(&mut one),
        ["reopen"],
        "the next in turn takes the reopened group"
    );
}

#[test]
fn a_message_waiting_for_its_group_does_not_hold_up_the_others() {
    let mut b = broker();
    let (mut one, mut two) = (open(&mut b, 1, None), open(&mut b, 2, None));
    subscribe(&mut b, &one, "s", "/queue/g", AckMode::ClientIndividual, 1);
    send(&mut b, &one, "/queue/g", "a1", &[("JMSXGroupID", "a")]);
    assert_eq!(bodies(&mut one), ["a1"]);
    subscribe(&mut b, &two, "s", "/queue/g", AckMode::ClientIndividual, 10);
    send(&mut b, &one, "/queue/g", "a2", &[("JMSXGroupID", "a")]);
    send(&mut b, &one, "/queue/g", "plain", &[]);
    assert_eq!(
        bodies(&mut two),
        ["plain"],
        "a2 waits for the group's consumer"
    );
}

#[test]
fn no_local_consumers_never_get_their_own_connections_messages() {
    let mut b = broker();
    let (mut me, mut other) = (open(&mut b, 1, None), open(&mut b, 2, None));
    let no_local = ConsumerOptions {
        no_local: true,
        ..Default::default()
    };
    subscribe_with(
        &mut b,
        &me,
        "t",
        "/topic/chat",
        AckMode::Auto,
        100,
        no_local.clone(),
    );
    send(&mut b, &me, "/topic/chat", "mine", &[]);
    send(&mut b, &other, "/topic/chat", "theirs", &[]);
    assert_eq!(bodies(&mut me), ["theirs"]);
    // On a queue, a declined message stays for another consumer, and does not block the rest.
    subscribe_with(
        &mut b,
        &me,
        "q",
        "/queue/work",
        AckMode::Auto,
        100,
        no_local,
    );
    send(&mut b, &me, "/queue/work", "own", &[]);
    send(&mut b, &other, "/queue/work", "foreign", &[]);
    assert_eq!(bodies(&mut me), ["foreign"]);
    subscribe(&mut b, &other, "q", "/queue/work", AckMode::Auto, 100);
    assert_eq!(bodies(&mut other), ["own"]);
}

#[test]
fn a_retroactive_subscriber_gets_the_retained_message_first() {
    let mut b = broker();
    let (mut producer, mut late, mut plain) = (
        open(&mut b, 1, None),
        open(&mut b, 2, None),
        open(&mut b, 3, None),
    );
    let retroactive = ConsumerOptions {
        retroactive: true,
        ..Default::default()
    };
    send(
        &mut b,
        &producer,
        "/topic/price",
        "old",
        &[("ActiveMQ.Retain", "true")],
    );
    send(
        &mut b,
        &producer,
        "/topic/price",
        "last",
        &[("ActiveMQ.Retain", "true")],
    );
    send(&mut b, &producer, "/topic/price", "unretained", &[]);
    subscribe(&mut b, &plain, "p", "/topic/price", AckMode::Auto, 100);
    assert!(bodies(&mut plain).is_empty());
    subscribe_with(
        &mut b,
        &late,
        "r",
        "/topic/price",
        AckMode::Auto,
        100,
        retroactive.clone(),
    );
    let Ok(Outbound::Message { msg, .. }) = late.outbox.try_recv() else {
        panic!("the retained message");
    };
    assert_eq!(&msg.body[..], b"last");
    assert_eq!(
        message::header(&msg.headers, "ActiveMQ.Retained"),
        Some("true")
    );
    assert_eq!(message::header(&msg.headers, "ActiveMQ.Retain"), None);
    // A wildcard subscription gets the retained messages of the topics it matches.
    subscribe_with(
        &mut b,
        &late,
        "w",
        "/topic/>",
        AckMode::Auto,
        100,
        retroactive.clone(),
    );
    assert_eq!(bodies(&mut late), ["last"]);
    // An empty retained message clears it.
    send(
        &mut b,
        &producer,
        "/topic/price",
        "",
        &[("ActiveMQ.Retain", "true")],
    );
    bodies(&mut late);
    subscribe_with(
        &mut b,
        &late,
        "again",
        "/topic/price",
        AckMode::Auto,
        100,
        retroactive,
    );
    assert!(bodies(&mut late).is_empty());
    drop(producer.outbox.try_recv());
}

fn selecting(text: &str) -> ConsumerOptions {
    ConsumerOptions {
        selector: Some(Arc::new(selector::Selector::parse_stomp(text).unwrap())),
        ..Default::default()
    }
}

#[test]
fn selectors_share_a_queue_and_what_one_skips_waits_for_another() {
    let mut b = broker();
    let (mut red, mut blue) = (open(&mut b, 1, None), open(&mut b, 2, None));
    let producer = open(&mut b, 3, None);
    subscribe_with(
        &mut b,
        &red,
        "r",
        "/queue/paint",
        AckMode::Auto,
        100,
        selecting("color = 'red'"),
    );
    for (body, color) in [
        ("r1", "red"),
        ("b1", "blue"),
        ("r2", "red"),
        ("g1", "green"),
    ] {
        send(&mut b, &producer, "/queue/paint", body, &[("color", color)]);
    }
    assert_eq!(
        bodies(&mut red),
        ["r1", "r2"],
        "the others do not hold it up"
    );
    subscribe_with(
        &mut b,
        &blue,
        "b",
        "/queue/paint",
        AckMode::Auto,
        100,
        selecting("color <> 'red'"),
    );
    assert_eq!(
        bodies(&mut blue),
        ["b1", "g1"],
        "they waited for a consumer of their own"
    );
}

#[test]
fn selectors_read_jms_fields_and_string_headers_as_activemq_stomp_does() {
    let mut b = broker();
    let (mut client, producer) = (open(&mut b, 1, None), open(&mut b, 2, None));
    let selector = "JMSPriority > 4 AND price > 10 AND JMSDeliveryMode = 'PERSISTENT' \
                    AND JMSType = 'order' AND JMSCorrelationID LIKE 'c-%'";
    subscribe_with(
        &mut b,
        &client,
        "s",
        "/topic/orders",
        AckMode::Auto,
        100,
        selecting(selector),
    );
    let base = [
        ("priority", "7"),
        ("price", "12"),
        ("persistent", "true"),
        ("type", "order"),
        ("correlation-id", "c-1"),
    ];
    send(&mut b, &producer, "/topic/orders", "match", &base);
    for (at, (name, value)) in [
        (0, ("priority", "4")),
        (1, ("price", "9")),
        (2, ("persistent", "false")),
        (3, ("type", "refund")),
        (4, ("correlation-id", "x-1")),
    ] {
        let mut headers = base;
        headers[at] = (name, value);
        send(
            &mut b,
            &producer,
            "/topic/orders",
            &format!("no {name}"),
            &headers,
        );
    }
    assert_eq!(bodies(&mut client), ["match"]);
}
