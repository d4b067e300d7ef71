//! Virtual topics: a topic's messages fanned out to its consumer groups' queues.

use super::*;

#[test]
fn each_consumer_group_shares_one_queue_and_every_group_sees_every_message() {
    let mut b = broker();
    let producer = open(&mut b, 1, None);
    let (mut a1, mut a2, mut b1, mut plain) = (
        open(&mut b, 2, None),
        open(&mut b, 3, None),
        open(&mut b, 4, None),
        open(&mut b, 5, None),
    );
    let (group_a, group_b) = (
        "/queue/Consumer.A.VirtualTopic.Orders",
        "/queue/Consumer.B.VirtualTopic.Orders",
    );
    subscribe(&mut b, &a1, "s", group_a, AckMode::Auto, 100);
    subscribe(&mut b, &a2, "s", group_a, AckMode::Auto, 100);
    subscribe(&mut b, &b1, "s", group_b, AckMode::Auto, 100);
    subscribe(
        &mut b,
        &plain,
        "s",
        "/topic/VirtualTopic.Orders",
        AckMode::Auto,
        100,
    );
    for n in 0..4 {
        send(
            &mut b,
            &producer,
            "/topic/VirtualTopic.Orders",
            &format!("o{n}"),
            &[],
        );
    }
    let (first, second) = (bodies(&mut a1), bodies(&mut a2));
    assert_eq!((first.len(), second.len()), (2, 2), "{first:?} {second:?}");
    assert_eq!(bodies(&mut b1), ["o0", "o1", "o2", "o3"]);
    assert_eq!(
        bodies(&mut plain),
        ["o0", "o1", "o2", "o3"],
        "still a topic"
    );
    // A group away keeps its queue, and its messages wait there.
    written(&mut b, &b1, "s", 4);
    unsubscribe(&mut b, &b1, "s");
    send(
        &mut b,
        &producer,
        "/topic/VirtualTopic.Orders",
        "while away",
        &[],
    );
    subscribe(&mut b, &b1, "back", group_b, AckMode::Auto, 100);
    assert_eq!(bodies(&mut b1), ["while away"]);
}

#[test]
fn consumer_queues_outlive_a_takeover_even_empty() {
    let store = MapStore::default();
    let mut first = stored_broker(&store);
    let consumer = open(&mut first, 1, None);
    subscribe(
        &mut first,
        &consumer,
        "s",
        "/queue/Consumer.A.VirtualTopic.Prices",
        AckMode::Auto,
        10,
    );
    drop(first);
    assert_eq!(store.count(created::SPACE), 1);
    // The next broker knows the group's queue before anyone subscribes to it again.
    let mut next = Broker::new(settings(8, 2), Box::new(store.clone()));
    next.recover(&store).unwrap();
    let producer = open(&mut next, 1, None);
    send(
        &mut next,
        &producer,
        "/topic/VirtualTopic.Prices",
        "p1",
        &[("persistent", "true")],
    );
    let mut back = open(&mut next, 2, None);
    subscribe(
        &mut next,
        &back,
        "s",
        "/queue/Consumer.A.VirtualTopic.Prices",
        AckMode::Auto,
        10,
    );
    assert_eq!(bodies(&mut back), ["p1"]);
    assert_eq!(store.count(created::SPACE), 1, "recorded once");
}
