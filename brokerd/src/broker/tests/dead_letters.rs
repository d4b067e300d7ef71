//! Redelivery delays and dead-letter queues, as ActiveMQ's policies have them.

use super::*;
use crate::broker::redelivery::RedeliveryPolicy;

fn broker_with(policy: RedeliveryPolicy) -> Broker {
    let mut settings = settings(7, policy.max_redeliveries);
    settings.redelivery = policy;
    Broker::new(settings, Box::new(Volatile))
}

/// NACKs the one message `client` has waiting, `times` times over; returns how many came.
fn nack_each(b: &mut Broker, client: &mut Client) -> usize {
    let got = received(client);
    for (_, ack_id, _) in &got {
        ack(b, client, ack_id.as_deref().expect("client mode"), true);
    }
    got.len()
}

#[test]
fn a_non_persistent_message_past_the_limit_is_dropped_unless_the_policy_keeps_it() {
    for keep in [false, true] {
        let mut b = broker_with(RedeliveryPolicy {
            max_redeliveries: 0,
            non_persistent: keep,
            ..Default::default()
        });
        let (producer, mut consumer) = (open(&mut b, 1, None), open(&mut b, 2, None));
        subscribe(
            &mut b,
            &consumer,
            "s",
            "/queue/q",
            AckMode::ClientIndividual,
            10,
        );
        send(&mut b, &producer, "/queue/q", "volatile", &[]);
        assert_eq!(nack_each(&mut b, &mut consumer), 1);
        let mut dlq = open(&mut b, 3, None);
        subscribe(&mut b, &dlq, "d", "/queue/ActiveMQ.DLQ", AckMode::Auto, 10);
        let expected: &[&str] = if keep { &["volatile"] } else { &[] };
        assert_eq!(bodies(&mut dlq), expected, "kept: {keep}");
    }
}

#[test]
fn an_expired_persistent_message_goes_to_its_own_dead_letter_queue_without_an_expiry() {
    let mut b = broker_with(RedeliveryPolicy {
        individual: true,
        ..Default::default()
    });
    let producer = open(&mut b, 1, None);
    let past = (now_ms() - 1000).to_string();
    send(
        &mut b,
        &producer,
        "/queue/orders",
        "late",
        &[("persistent", "true"), ("expires", &past)],
    );
    send(
        &mut b,
        &producer,
        "/queue/orders",
        "late, volatile",
        &[("expires", &past)],
    );
    let mut consumer = open(&mut b, 2, None);
    subscribe(&mut b, &consumer, "s", "/queue/orders", AckMode::Auto, 10);
    assert!(bodies(&mut consumer).is_empty(), "expired: never delivered");
    subscribe(
        &mut b,
        &consumer,
        "d",
        "/queue/ActiveMQ.DLQ.Queue.orders",
        AckMode::Auto,
        10,
    );
    let Ok(Outbound::Message { msg, .. }) = consumer.outbox.try_recv() else {
        panic!("the expired persistent message, dead-lettered");
    };
    assert_eq!((&msg.body[..], msg.expires), (&b"late"[..], 0));
    assert_eq!(
        message::header(&msg.headers, "dlqDeliveryFailureCause"),
        Some("expired")
    );
    assert!(
        consumer.outbox.try_recv().is_err(),
        "the non-persistent one is dropped"
    );
}

#[test]
fn a_redelivery_waits_out_its_backed_off_delay() {
    let mut b = broker_with(RedeliveryPolicy {
        initial_delay_ms: 30,
        backoff: 2.0,
        ..Default::default()
    });
    let (producer, mut consumer) = (open(&mut b, 1, None), open(&mut b, 2, None));
    subscribe(
        &mut b,
        &consumer,
        "s",
        "/queue/q",
        AckMode::ClientIndividual,
        10,
    );
    send(
        &mut b,
        &producer,
        "/queue/q",
        "retry me",
        &[("persistent", "true")],
    );
    for delay in [30, 60, 120] {
        assert_eq!(nack_each(&mut b, &mut consumer), 1);
        let nacked_at = now_ms();
        // Not before its delay, however often the broker looks.
        let due = b.next_due().expect("a redelivery waits");
        assert!(
            due >= nacked_at + delay - 1,
            "due {due}, nacked at {nacked_at}"
        );
        b.release_delayed();
        if now_ms() < due {
            assert!(received(&mut consumer).is_empty(), "released early");
        }
        std::thread::sleep(std::time::Duration::from_millis(
            due.saturating_sub(now_ms()) + 1,
        ));
        b.release_delayed();
    }
    let again = received(&mut consumer);
    assert_eq!((again[0].0.as_str(), again[0].2), ("retry me", true));
    assert_eq!(b.next_due(), None);
}
