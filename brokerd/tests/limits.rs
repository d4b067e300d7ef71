//! Bounded load against the real brokerd binary (issue 11 item 5): a frame sent a byte at a
//! time or never finished is cut off by the frame deadline; a connection flood from one address
//! stops at the per-address limit and one from everywhere at the total, while clients within
//! the limits are served throughout; a slow consumer holds up neither producers nor the other
//! subscribers of its topic. Counts and waits are bounded; nothing here measures speed.

mod harness;

use harness::node::*;
use harness::{Client, PATIENCE};
use std::time::{Duration, Instant};

/// The deadline the tests give frames: long enough for any honest frame here, short enough
/// to wait for.
const FRAME_TIMEOUT_MS: &str = "500";

#[test]
fn a_frame_sent_a_byte_at_a_time_is_cut_off_at_the_frame_deadline() {
    let node = Node::start(&["--frame-timeout-ms", FRAME_TIMEOUT_MS]);
    let mut slow = node.client("1.2");
    let frame = b"SEND\ndestination:/queue/slowloris\nreceipt:never\n\nthis frame would take far longer than its deadline\0";
    let started = Instant::now();
    // One byte every 50 ms (the frame would need about 5 s; the deadline is 0.5 s), until the
    // broker answers: nothing is sent after its ERROR, which it could discard unread.
    slow.client.set_read_timeout(Duration::from_millis(50));
    let mut sent = 0;
    let error = loop {
        assert!(
            sent < frame.len(),
            "the whole frame went through a byte at a time"
        );
        assert!(started.elapsed() < PATIENCE, "never cut off");
        slow.client.send(&frame[sent..=sent]);
        sent += 1;
        if let Some(answer) = slow.client.try_read_raw() {
            break answer;
        }
    };
    slow.client.set_read_timeout(PATIENCE);
    assert_eq!(error.command, "ERROR", "{error:?}");
    assert_eq!(
        error.unescaped("message").as_deref(),
        Some("frame not complete within 500 ms of its first byte")
    );
    assert_eq!(error.get("receipt-id"), None);
    slow.expect_eof();
    // Nothing of it was taken, and the broker serves others as before.
    let mut other = node.client("1.2");
    subscribe(&mut other, "s", "/queue/slowloris", "auto");
    assert_nothing_delivered(&mut other, "slowloris");
    node.assert_still_serving();
}

#[test]
fn a_frame_never_finished_is_cut_off_and_a_connect_too() {
    let node = Node::start(&["--frame-timeout-ms", FRAME_TIMEOUT_MS]);
    let mut stalled = node.client("1.2");
    stalled.send(b"SEND\ndestination:/queue/stalled\ncontent-length:100\n\nonly a few bytes");
    stalled.expect_refusal("frame not complete within 500 ms");
    // Before CONNECT as well: half a CONNECT frame.
    let mut half = Client::connect(&node.addr);
    half.send(b"CONNECT\naccept-version:1.2\n");
    half.expect_refusal("frame not complete within 500 ms");
}

#[test]
fn a_session_that_waits_between_frames_is_not_cut_off() {
    let node = Node::start(&["--frame-timeout-ms", FRAME_TIMEOUT_MS]);
    let mut patient = node.client("1.2");
    subscribe(&mut patient, "s", "/queue/patient", "auto");
    // Four times the frame deadline between whole frames is fine: only a frame in progress
    // has a deadline.
    std::thread::sleep(Duration::from_millis(2000));
    send(&mut patient, "/queue/patient", "late but whole");
    assert_eq!(next_message(&mut patient).text(), "late but whole");
    disconnect(&mut patient);
}

#[test]
fn a_connection_flood_from_one_address_stops_at_its_limit_until_one_leaves() {
    let mut node = Node::start(&["--max-connections-per-source", "20"]);
    let mut held: Vec<Session> = (0..20).map(|_| node.client("1.2")).collect();
    // The 21st from 127.0.0.1 is refused, however many try.
    for _ in 0..50 {
        let mut extra = Client::connect(&node.addr);
        let error = extra.read_raw();
        assert_eq!(error.command, "ERROR", "{error:?}");
        assert_eq!(error.message(), "connection limit per address 20 reached");
        extra.expect_eof();
    }
    wait_for_connections(&mut node, 20);
    // A slot given back is a slot for the next one.
    disconnect(&mut held.pop().unwrap());
    wait_for_connections(&mut node, 19);
    let mut next = node.client("1.2");
    send(&mut next, "/queue/flood", "after one left");
    disconnect(&mut next);
}

#[test]
fn a_connection_flood_stops_at_the_total_limit() {
    let mut node = Node::start(&["--max-connections", "30"]);
    let held: Vec<Session> = (0..30).map(|_| node.client("1.2")).collect();
    for _ in 0..50 {
        let mut extra = Client::connect(&node.addr);
        assert_eq!(extra.read_raw().message(), "connection limit 30 reached");
        extra.expect_eof();
    }
    wait_for_connections(&mut node, 30);
    drop(held);
    wait_for_connections(&mut node, 0);
    node.assert_still_serving();
}

#[test]
fn a_slow_consumer_holds_up_neither_producers_nor_the_fast_subscribers_of_its_topic() {
    // 4 MiB of memory; 200 messages of 64 KiB are 12.5 MiB. A SEND held at the limit would be
    // refused after 200 ms, so every RECEIPT below shows the producer was never held.
    let mut node = Node::start(&["--memory-limit-mb", "4", "--send-wait-ms", "200"]);
    // Slow in both ways: one never acknowledges (prefetch 1), one never reads its socket.
    let mut unacking = node.client("1.2");
    subscribe_with(
        &mut unacking,
        "slow",
        "/topic/ticks",
        "client-individual",
        &["activemq.prefetchSize:1"],
    );
    let mut unreading = node.client("1.2");
    subscribe_with(
        &mut unreading,
        "stuck",
        "/topic/ticks",
        "auto",
        &["activemq.prefetchSize:1"],
    );
    let mut fast = node.client("1.2");
    subscribe(&mut fast, "fast", "/topic/ticks", "auto");
    // A queue whose consumer never acknowledges either.
    let mut queue_consumer = node.client("1.2");
    subscribe_with(
        &mut queue_consumer,
        "q",
        "/queue/work",
        "client",
        &["activemq.prefetchSize:1"],
    );

    let mut producer = node.client("1.2");
    let mut other = node.client("1.2");
    let body = vec![b't'; 64 * 1024];
    let length = format!("content-length:{}", body.len());
    for n in 0..200 {
        let (receipt, number) = (format!("receipt:tick-{n}"), format!("n:{n}"));
        producer.send_frame(
            "SEND",
            &["destination:/topic/ticks", &receipt, &number, &length],
            &body,
        );
        producer.expect_receipt(&format!("tick-{n}"));
        // The fast subscriber keeps up, message by message.
        let got = next_message(&mut fast);
        assert_eq!(got.body.len(), body.len());
        if n % 20 == 0 {
            // Producers to other destinations go on too.
            send_with(
                &mut other,
                "/queue/work",
                &["persistent:true"],
                &format!("work-{n}"),
            );
        }
    }
    let stats = node.broker.stats();
    assert!(stats.memory_bytes <= 4 << 20, "{stats:?}");
    // The slow subscriber missed the oldest, not the newest: after its one in-flight message
    // (the first) come the last few, in order, as many as a sixteenth of the limit holds.
    let mut got = vec![next_message(&mut unacking)];
    for round in 0.. {
        let last = got.last().unwrap();
        unacking.send_frame("ACK", &[&format!("id:{}", last.header("ack"))], b"");
        // What the ACK let through arrives before this probe's receipt.
        let probe = format!("probe-{round}");
        unacking.send_frame("BEGIN", &["transaction:p"], b"");
        unacking.send_frame(
            "ABORT",
            &["transaction:p", &format!("receipt:{probe}")],
            b"",
        );
        unacking.expect_receipt(&probe);
        match unacking.early.pop_front() {
            Some(message) => got.push(message),
            None => break,
        }
        assert!(
            got.len() <= 10,
            "the backlog kept more than its bytes allow"
        );
    }
    let numbers: Vec<&str> = got.iter().map(|m| m.header("n")).collect();
    let kept = &numbers[1..];
    let expected: Vec<String> = (200 - kept.len()..200).map(|n| n.to_string()).collect();
    assert!(
        numbers[0] == "0" && !kept.is_empty() && kept == expected,
        "the slow subscriber got {numbers:?}"
    );
    assert_nothing_delivered(&mut unacking, "slow");
    drop(unreading);
    disconnect(&mut fast);
    node.assert_still_serving();
}
