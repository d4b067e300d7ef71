//! Flow control against the real brokerd binary over TCP: what happens at the memory limit
//! (persistent messages page out, non-persistent producers are refused or held, a held producer
//! still gets heart-beats and resumes when a consumer makes room). As in protocol.rs, a RECEIPT
//! is the barrier; no test sleeps to synchronise.

mod harness;

use harness::node::*;
use std::time::{Duration, Instant};

#[test]
fn persistent_messages_past_the_memory_limit_page_out_instead_of_being_refused() {
    // 4 MiB of persistent messages against a 1 MiB limit: all but a page of them wait in the
    // store only, so the producer is never held back, and a consumer later gets them all.
    let node = Node::start(&[
        "--memory-limit-mb",
        "1",
        "--send-wait-ms",
        "200",
        "--page-size",
        "4",
    ]);
    let mut producer = node.client("1.2");
    let body = |i: usize| format!("{i:04}{}", "p".repeat(64 * 1024));
    for i in 0..64 {
        let receipt = format!("receipt:p-{i}");
        producer.send_frame(
            "SEND",
            &["destination:/queue/paged", &receipt, "persistent:true"],
            body(i).as_bytes(),
        );
        producer.expect_receipt(&format!("p-{i}"));
    }
    let mut consumer = node.client("1.2");
    subscribe_with(
        &mut consumer,
        "s",
        "/queue/paged",
        "client-individual",
        &["activemq.prefetchSize:2"],
    );
    let got: Vec<String> = take_acking(&mut consumer, 64)
        .into_iter()
        .map(|(text, redelivered)| {
            assert_eq!(redelivered, None);
            text[..4].to_owned()
        })
        .collect();
    let expected: Vec<String> = (0..64).map(|i| format!("{i:04}")).collect();
    assert_eq!(got, expected);
    assert_nothing_delivered(&mut consumer, "drained");
}

/// Sends 64 KiB receipted messages (receipt ids `tag-0`, `tag-1`, ...; headers `before`, the
/// receipt and content-length, then `after`) until a node with `--memory-limit-mb 1` refuses
/// one, and checks the refusal: an ERROR naming the limit, saying it is transient, without a
/// receipt-id, then EOF, after at least 8 accepted messages. Returns how many were accepted.
fn send_until_refused(
    producer: &mut Session,
    tag: &str,
    before: &[&str],
    after: &[&str],
    body: &[u8],
) -> usize {
    let length = format!("content-length:{}", body.len());
    let mut accepted = 0;
    let error = loop {
        assert!(
            accepted < 200,
            "no refusal after {accepted} 64 KiB messages"
        );
        let receipt = format!("receipt:{tag}-{accepted}");
        let mut headers = before.to_vec();
        headers.extend([receipt.as_str(), length.as_str()]);
        headers.extend_from_slice(after);
        producer.send_frame("SEND", &headers, body);
        let answer = producer.read_raw();
        match answer.command.as_str() {
            "RECEIPT" => accepted += 1,
            _ => break answer,
        }
    };
    assert_eq!(error.command, "ERROR", "{error:?}");
    assert!(
        error
            .unescaped("message")
            .is_some_and(|m| m.contains("memory limit of 1 MiB reached")),
        "{error:?}"
    );
    // Transient, not a verdict on the SEND: no receipt-id marks it rejected for good.
    assert_eq!(error.get("receipt-id"), None, "{error:?}");
    assert!(
        error
            .unescaped("message")
            .is_some_and(|m| m.contains("transient") && m.contains("retry")),
        "{error:?}"
    );
    producer.expect_eof();
    assert!(accepted >= 8, "refused after only {accepted} messages");
    accepted
}

#[test]
fn a_producer_without_consumers_is_refused_at_the_memory_limit() {
    let mut node = Node::start(&["--memory-limit-mb", "1", "--send-wait-ms", "200"]);
    let mut producer = node.client("1.2");
    let body = vec![b'm'; 64 * 1024];
    let accepted = send_until_refused(
        &mut producer,
        "m",
        &["destination:/queue/memory"],
        &["persistent:false"],
        &body,
    );

    // Memory stays bounded: the limit plus at most the message that crossed it.
    let stats = node.broker.stats();
    assert!(
        stats.memory_bytes <= (1 << 20) + 2 * body.len() as u64,
        "{stats:?}"
    );
    let rss_kib = std::fs::read_to_string(format!("/proc/{}/status", node.broker.pid()))
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .expect("VmRSS");
    assert!(rss_kib < 64 * 1024, "brokerd uses {rss_kib} KiB");

    // Other clients are still served: a consumer drains the queue, and then producing works
    // again.
    let mut consumer = node.client("1.2");
    subscribe(&mut consumer, "s", "/queue/memory", "auto");
    for _ in 0..accepted {
        assert_eq!(next_message(&mut consumer).body.len(), body.len());
    }
    send(&mut consumer, "/queue/after", "room-again");
    node.assert_still_serving();
}

#[test]
fn a_slow_topic_subscriber_allowed_more_than_the_memory_limit_holds_producers_at_it() {
    // By default a slow subscriber drops its oldest past a sixteenth of the memory limit
    // (limits.rs); allowed more, the memory limit still bounds it.
    let mut node = Node::start(&[
        "--memory-limit-mb",
        "1",
        "--send-wait-ms",
        "200",
        "--topic-backlog-mb",
        "64",
    ]);
    let mut slow = node.client("1.2");
    subscribe_with(
        &mut slow,
        "s",
        "/topic/slow",
        "client-individual",
        &["activemq.prefetchSize:1"],
    );
    let mut producer = node.client("1.2");
    let body = vec![b't'; 64 * 1024];
    let accepted = send_until_refused(&mut producer, "t", &["destination:/topic/slow"], &[], &body);
    let stats = node.broker.stats();
    assert!(
        stats.memory_bytes <= (1 << 20) + 2 * body.len() as u64,
        "{stats:?}"
    );
    assert_eq!(stats.messages, accepted as u64, "{stats:?}");
    // The subscriber catches up, which releases the memory: producing works again.
    let got = take_acking(&mut slow, accepted);
    assert!(got.iter().all(|(text, _)| text.len() == body.len()));
    send(&mut slow, "/queue/after", "room-again");
    node.assert_still_serving();
}

#[test]
fn a_producer_held_at_the_memory_limit_still_gets_heart_beats_and_its_receipt() {
    let mut node = Node::start(&[
        "--memory-limit-mb",
        "1",
        "--send-wait-ms",
        "60000",
        "--heartbeat-ms",
        "100",
    ]);
    let mut producer = node.client_with(&["accept-version:1.2", "heart-beat:0,100"], "1.2");
    let body = vec![b'b'; 64 * 1024];
    let length = format!("content-length:{}", body.len());
    let mut sent = 0;
    while node.broker.stats().memory_bytes <= 1 << 20 {
        assert!(sent < 100, "memory never went over the limit");
        let receipt = format!("receipt:b-{sent}");
        producer.send_frame(
            "SEND",
            &["destination:/queue/beats", &receipt, &length],
            &body,
        );
        producer.expect_receipt(&format!("b-{sent}"));
        sent += 1;
    }
    producer.send_frame(
        "SEND",
        &["destination:/queue/beats", "receipt:held", &length],
        &body,
    );
    // Held for up to a minute, yet the session keeps heart-beating (each read waits at most
    // PATIENCE; a frozen session sends nothing at all). The first may be the EOL ending the
    // last RECEIPT.
    for beat in 0..6 {
        match producer.client.read_byte() {
            Some(b'\n') => {}
            other => panic!("heart-beat {beat} while held: expected an EOL, got {other:?}"),
        }
    }
    let mut consumer = node.client("1.2");
    subscribe(&mut consumer, "s", "/queue/beats", "auto");
    producer.expect_receipt("held");
    disconnect(&mut producer);
}

#[test]
fn a_producer_held_at_the_memory_limit_resumes_as_soon_as_a_consumer_makes_room() {
    // The SEND wait is long: the held SEND must be let through by the release, not time out.
    let mut node = Node::start(&["--memory-limit-mb", "1", "--send-wait-ms", "60000"]);
    let mut producer = node.client("1.2");
    let body = vec![b'h'; 64 * 1024];
    let length = format!("content-length:{}", body.len());
    let mut sent = 0;
    while node.broker.stats().memory_bytes <= 1 << 20 {
        assert!(sent < 100, "memory never went over the limit");
        let receipt = format!("receipt:h-{sent}");
        producer.send_frame(
            "SEND",
            &["destination:/queue/held", &receipt, &length],
            &body,
        );
        producer.expect_receipt(&format!("h-{sent}"));
        sent += 1;
    }
    // Over the limit: this one waits.
    producer.send_frame(
        "SEND",
        &["destination:/queue/held", "receipt:held", &length],
        &body,
    );
    let mut consumer = node.client("1.2");
    let started = Instant::now();
    subscribe(&mut consumer, "s", "/queue/held", "auto");
    for _ in 0..=sent {
        assert_eq!(next_message(&mut consumer).body.len(), body.len());
    }
    producer.expect_receipt("held");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the held SEND took {:?}",
        started.elapsed()
    );
}
