//! STOMP protocol tests against the real brokerd binary, active under a simulated lockd, spoken
//! to over TCP on 127.0.0.1: every client frame, the destinations and delivery rules, logins,
//! timeouts and heart-beats (bad input is in errors.rs, the memory limit in flow_control.rs, a
//! restart on the same store in restart.rs).
//!
//! No test sleeps to synchronise. The broker core handles requests one at a time and writes to a
//! session in the order it decided, so a RECEIPT is a barrier: once a client has the RECEIPT of a
//! frame, everything that frame caused has been decided, and anything the broker sends that
//! client afterwards was decided later. "Nothing was delivered" is shown by a marker message or a
//! receipt arriving first, never by waiting for silence.

mod harness;

use harness::node::*;
use harness::{Broker, Client, Dirs, RawFrame, PATIENCE};
use std::time::{Duration, Instant};

// ---- Frames and headers ----

#[test]
fn send_with_receipt_gets_a_receipt() {
    let node = Node::start(&[]);
    let mut client = node.client("1.2");
    client.send_frame(
        "SEND",
        &["destination:/queue/receipts", "receipt:r-1"],
        b"hello",
    );
    client.expect_receipt("r-1");
    disconnect(&mut client);
}

#[test]
fn message_carries_routing_headers_custom_headers_in_order_and_a_binary_body() {
    let node = Node::start(&[]);
    let mut producer = node.client("1.2");
    let mut consumer = node.client("1.2");
    subscribe(&mut consumer, "sub-7", "/queue/headers", "auto");
    let body = b"a\0b\0\0c";
    producer.send_frame(
        "SEND",
        &[
            "destination:/queue/headers",
            "receipt:r-1",
            "x-first:1",
            "reply-to:/queue/replies",
            "x-dup:first",
            "correlation-id:c-42",
            "x-dup:second",
            "x-last:3",
            "content-type:application/octet-stream",
            &format!("content-length:{}", body.len()),
        ],
        body,
    );
    producer.expect_receipt("r-1");

    let message = next_message(&mut consumer);
    assert_eq!(message.get("destination"), Some("/queue/headers"));
    assert_eq!(message.get("subscription"), Some("sub-7"));
    assert!(
        message.header("message-id").len() > 3,
        "message-id should identify the message: {message:?}"
    );
    assert_eq!(message.body, body);
    assert_eq!(message.get("content-length"), Some("6"));
    assert_eq!(message.get("reply-to"), Some("/queue/replies"));
    assert_eq!(message.get("correlation-id"), Some("c-42"));
    assert_eq!(
        message.get("content-type"),
        Some("application/octet-stream")
    );
    // Repeated headers: the first wins.
    assert_eq!(message.get("x-dup"), Some("first"));
    assert!(message.get("receipt").is_none(), "{message:?}");
    // Custom headers keep the producer's order.
    let position = |name: &str| {
        message
            .headers
            .iter()
            .position(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no {name} in {message:?}"))
    };
    let order = [
        "x-first",
        "reply-to",
        "x-dup",
        "correlation-id",
        "x-last",
        "content-type",
    ]
    .map(position);
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{message:?}");
    disconnect(&mut consumer);
}

#[test]
fn message_ids_are_distinct() {
    let node = Node::start(&[]);
    let mut client = node.client("1.2");
    send(&mut client, "/queue/ids", "one");
    send(&mut client, "/queue/ids", "two");
    subscribe(&mut client, "s", "/queue/ids", "auto");
    let first = next_message(&mut client);
    let second = next_message(&mut client);
    assert_ne!(first.header("message-id"), second.header("message-id"));
}

#[test]
fn stomp_1_0_headers_are_not_escaped() {
    let node = Node::start(&[]);
    let mut client = node.client_with(&[], "1.0");
    let value = r"C:\temp\new\c\\x";
    client.send_frame(
        "SEND",
        &[
            "destination:/queue/raw",
            "receipt:r-1",
            &format!("path:{value}"),
            "ratio:a:b",
        ],
        b"x",
    );
    client.expect_receipt("r-1");
    client.send_frame("SUBSCRIBE", &["destination:/queue/raw"], b"");
    let message = next_message(&mut client);
    assert_eq!(message.get("path"), Some(value));
    // The first colon separates name and value; later ones belong to the value.
    assert_eq!(message.get("ratio"), Some("a:b"));
    // As ActiveMQ: a 1.0 subscription without an id gets MESSAGEs without one, and no 1.0
    // MESSAGE has an ack header (1.0 acknowledges by message-id).
    assert_eq!(message.get("subscription"), None, "{message:?}");
    assert_eq!(message.get("ack"), None, "{message:?}");
    client.send_frame(
        "SUBSCRIBE",
        &["destination:/queue/raw-id", "id:named", "ack:client"],
        b"",
    );
    client.send_frame("SEND", &["destination:/queue/raw-id", "receipt:r-2"], b"y");
    client.expect_receipt("r-2");
    let named = next_message(&mut client);
    assert_eq!(named.get("subscription"), Some("named"));
    assert_eq!(named.get("ack"), None, "{named:?}");
}

fn escaped_headers_round_trip(version: &str) {
    let node = Node::start(&[]);
    let mut client = node.client(version);
    client.send_frame(
        "SEND",
        &[
            "destination:/queue/escapes",
            "receipt:r-1",
            r"x-text:line1\nline2\ckey\\path",
            r"x\cname:v",
        ],
        b"x",
    );
    client.expect_receipt("r-1");
    subscribe(&mut client, "s", "/queue/escapes", "auto");
    let message = next_message(&mut client);
    assert_eq!(
        message.get("x-text"),
        Some(r"line1\nline2\ckey\\path"),
        "sent escaped as {version} requires"
    );
    assert_eq!(
        message.unescaped("x-text").as_deref(),
        Some("line1\nline2:key\\path")
    );
    assert_eq!(message.get(r"x\cname"), Some("v"));
}

#[test]
fn stomp_1_1_header_escapes_round_trip() {
    escaped_headers_round_trip("1.1");
}

#[test]
fn stomp_1_2_header_escapes_round_trip() {
    escaped_headers_round_trip("1.2");
}

#[test]
fn a_cr_in_a_header_goes_raw_in_1_1_and_escaped_in_1_2() {
    let node = Node::start(&[]);
    // STOMP 1.1 has no \r escape: a 1.1 producer sends CR as it is, inside the value.
    let mut producer = node.client("1.1");
    producer.send_frame(
        "SEND",
        &["destination:/topic/cr", "receipt:r-1", "x-cr:a\rb"],
        b"x",
    );
    producer.expect_receipt("r-1");
    let mut v11 = node.client("1.1");
    let mut v12 = node.client("1.2");
    subscribe(&mut v11, "s", "/topic/cr", "auto");
    subscribe(&mut v12, "s", "/topic/cr", "auto");
    send_with(&mut producer, "/topic/cr", &["x-cr:a\rb"], "m");
    assert_eq!(next_message(&mut v11).get("x-cr"), Some("a\rb"));
    let message = next_message(&mut v12);
    assert_eq!(message.get("x-cr"), Some(r"a\rb"));
    assert_eq!(message.unescaped("x-cr").as_deref(), Some("a\rb"));
}

#[test]
fn a_cr_escape_from_a_1_1_client_is_refused_as_undefined() {
    let node = Node::start(&[]);
    let mut client = node.client("1.1");
    client.send_frame(
        "SEND",
        &["receipt:r-1", "destination:/queue/a", r"x-cr:a\rb"],
        b"x",
    );
    let error = client.expect_refusal("undefined escape");
    assert_eq!(error.get("receipt-id"), Some("r-1"));
    assert!(
        error.unescaped("message").unwrap().contains("STOMP 1.1"),
        "{error:?}"
    );
    node.assert_still_serving();
}

#[test]
fn an_undefined_escape_is_refused() {
    let node = Node::start(&[]);
    let mut client = node.client("1.2");
    client.send_frame(
        "SEND",
        &["receipt:r-1", "destination:/queue/a", r"x-tab:a\tb"],
        b"x",
    );
    let error = client.expect_refusal("undefined escape");
    assert_eq!(error.get("receipt-id"), Some("r-1"));
    node.assert_still_serving();
}

// ---- Acknowledgement ----

#[test]
fn auto_ack_messages_are_not_redelivered() {
    let node = Node::start(&[]);
    let mut producer = node.client("1.2");
    send(&mut producer, "/queue/auto", "m1");
    let mut consumer = node.client("1.2");
    subscribe(&mut consumer, "s", "/queue/auto", "auto");
    let message = next_message(&mut consumer);
    assert_eq!(message.text(), "m1");
    assert_eq!(message.get("ack"), None, "auto mode needs no ack id");
    disconnect(&mut consumer);

    let mut again = node.client("1.2");
    subscribe(&mut again, "s", "/queue/auto", "client-individual");
    send(&mut producer, "/queue/auto", "marker");
    assert_eq!(next_message(&mut again).text(), "marker");
}

#[test]
fn client_ack_is_cumulative() {
    let node = Node::start(&[]);
    let mut producer = node.client("1.2");
    send(&mut producer, "/queue/cumulative", "m1");
    send(&mut producer, "/queue/cumulative", "m2");
    let mut consumer = node.client("1.2");
    subscribe(&mut consumer, "s", "/queue/cumulative", "client");
    assert_eq!(next_message(&mut consumer).text(), "m1");
    let second = next_message(&mut consumer);
    assert_eq!(second.text(), "m2");
    let id = format!("id:{}", second.header("ack"));
    consumer.send_frame("ACK", &[&id, "receipt:acked"], b"");
    consumer.expect_receipt("acked");
    disconnect(&mut consumer);

    // Neither message comes back: acknowledging the second acknowledged the first.
    let mut again = node.client("1.2");
    subscribe(&mut again, "s", "/queue/cumulative", "client-individual");
    send(&mut producer, "/queue/cumulative", "marker");
    let next = next_message(&mut again);
    assert_eq!(next.text(), "marker", "{next:?}");
}

#[test]
fn client_individual_ack_acknowledges_one_message() {
    let node = Node::start(&[]);
    let mut producer = node.client("1.2");
    send(&mut producer, "/queue/individual", "m1");
    send(&mut producer, "/queue/individual", "m2");
    let mut consumer = node.client("1.2");
    subscribe(&mut consumer, "s", "/queue/individual", "client-individual");
    assert_eq!(next_message(&mut consumer).text(), "m1");
    let second = next_message(&mut consumer);
    let id = format!("id:{}", second.header("ack"));
    consumer.send_frame("ACK", &[&id, "receipt:acked"], b"");
    consumer.expect_receipt("acked");
    disconnect(&mut consumer);

    let mut again = node.client("1.2");
    subscribe(&mut again, "s", "/queue/individual", "client-individual");
    let redelivered = next_message(&mut again);
    assert_eq!(redelivered.text(), "m1");
    assert_eq!(redelivered.get("redelivered"), Some("true"));
    send(&mut producer, "/queue/individual", "marker");
    assert_eq!(next_message(&mut again).text(), "marker");
}

/// Acknowledges the one message of `/queue/ack-{version}` with `ack` (given the MESSAGE), then
/// checks a new consumer does not get it again.
fn ack_is_accepted(version: &str, connect: &[&str], ack: fn(&RawFrame) -> Vec<String>) {
    let node = Node::start(&[]);
    let destination = format!("/queue/ack-{version}");
    let mut producer = node.client("1.2");
    send(&mut producer, &destination, "m1");
    let mut consumer = node.client_with(connect, version);
    let (destination_header, id_header) = (format!("destination:{destination}"), "id:sub-1");
    consumer.send_frame(
        "SUBSCRIBE",
        &[&destination_header, id_header, "ack:client-individual"],
        b"",
    );
    let message = next_message(&mut consumer);
    assert_eq!(message.text(), "m1");
    let mut headers = ack(&message);
    headers.push("receipt:acked".into());
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    consumer.send_frame("ACK", &headers, b"");
    consumer.expect_receipt("acked");
    disconnect(&mut consumer);

    let mut again = node.client("1.2");
    subscribe(&mut again, "s", &destination, "client-individual");
    send(&mut producer, &destination, "marker");
    assert_eq!(next_message(&mut again).text(), "marker");
}

#[test]
fn stomp_1_2_ack_names_the_message_by_its_ack_header() {
    ack_is_accepted("1.2", &["accept-version:1.2"], |message| {
        vec![format!("id:{}", message.header("ack"))]
    });
}

#[test]
fn stomp_1_1_ack_names_message_id_and_subscription() {
    ack_is_accepted("1.1", &["accept-version:1.1"], |message| {
        assert_eq!(message.get("subscription"), Some("sub-1"));
        vec![
            format!("message-id:{}", message.header("message-id")),
            "subscription:sub-1".into(),
        ]
    });
}

#[test]
fn stomp_1_0_ack_names_the_message_id() {
    ack_is_accepted("1.0", &[], |message| {
        vec![format!("message-id:{}", message.header("message-id"))]
    });
}

#[test]
fn nack_redelivers_flagged_redelivered() {
    let node = Node::start(&[]);
    let mut client = node.client("1.2");
    send(&mut client, "/queue/nack", "m1");
    subscribe(&mut client, "s", "/queue/nack", "client-individual");
    let first = next_message(&mut client);
    assert_eq!(first.get("redelivered"), None, "{first:?}");
    let id = format!("id:{}", first.header("ack"));
    client.send_frame("NACK", &[&id], b"");
    let again = next_message(&mut client);
    assert_eq!(again.text(), "m1");
    assert_eq!(again.get("redelivered"), Some("true"), "{again:?}");
    assert_eq!(again.header("message-id"), first.header("message-id"));
}

#[test]
fn a_message_nacked_past_max_redeliveries_goes_to_the_dead_letter_queue() {
    let node = Node::start(&["--max-redeliveries", "2"]);
    let mut client = node.client("1.2");
    send_with(
        &mut client,
        "/queue/poison",
        &["x-custom:kept", "persistent:true"],
        "m1",
    );
    subscribe(&mut client, "s", "/queue/poison", "client-individual");
    // The first delivery and two redeliveries; the third NACK is one too many.
    for delivery in 0..3 {
        let message = next_message(&mut client);
        assert_eq!(message.text(), "m1", "delivery {delivery}");
        let id = format!("id:{}", message.header("ack"));
        let receipt = format!("receipt:nack-{delivery}");
        client.send_frame("NACK", &[&id, &receipt], b"");
        client.expect_receipt(&format!("nack-{delivery}"));
    }
    subscribe(&mut client, "dlq", "/queue/ActiveMQ.DLQ", "auto");
    let dead = next_message(&mut client);
    assert_eq!(dead.text(), "m1");
    assert_eq!(dead.get("subscription"), Some("dlq"));
    assert_eq!(dead.get("destination"), Some("/queue/ActiveMQ.DLQ"));
    assert_eq!(dead.get("original-destination"), Some("/queue/poison"));
    assert_eq!(dead.get("x-custom"), Some("kept"));
}

#[test]
fn a_message_whose_consumers_keep_vanishing_goes_to_the_dead_letter_queue() {
    // --max-redeliveries documents "deliveries without an ACK (NACK, consumer gone)".
    let mut node = Node::start(&["--max-redeliveries", "1"]);
    let mut producer = node.client("1.2");
    send_with(&mut producer, "/queue/crashy", &["persistent:true"], "m1");
    for delivery in 0..2 {
        let mut consumer = node.client("1.2");
        subscribe(&mut consumer, "s", "/queue/crashy", "client-individual");
        assert_eq!(
            next_message(&mut consumer).text(),
            "m1",
            "delivery {delivery}"
        );
        drop(consumer);
        wait_for_connections(&mut node, 1);
    }
    let mut watcher = node.client("1.2");
    subscribe(&mut watcher, "dlq", "/queue/ActiveMQ.DLQ", "auto");
    subscribe(&mut watcher, "again", "/queue/crashy", "client-individual");
    let message = next_message(&mut watcher);
    assert_eq!(message.get("subscription"), Some("dlq"), "{message:?}");
    assert_eq!(message.get("original-destination"), Some("/queue/crashy"));
}

#[test]
fn unacked_messages_of_a_closed_connection_go_to_another_consumer_flagged_redelivered() {
    let node = Node::start(&[]);
    let mut producer = node.client("1.2");
    let mut first = node.client("1.2");
    subscribe(&mut first, "s", "/queue/handover", "client-individual");
    send(&mut producer, "/queue/handover", "m1");
    assert_eq!(next_message(&mut first).text(), "m1");
    let mut second = node.client("1.2");
    subscribe(&mut second, "s", "/queue/handover", "client-individual");
    assert_nothing_delivered(&mut second, "before");

    drop(first);
    let message = next_message(&mut second);
    assert_eq!(message.text(), "m1");
    assert_eq!(message.get("redelivered"), Some("true"));
}

// ---- Prefetch and round-robin ----

#[test]
fn prefetch_of_one_holds_the_next_message_until_the_ack() {
    let node = Node::start(&[]);
    let mut producer = node.client("1.2");
    let mut consumer = node.client("1.2");
    subscribe_with(
        &mut consumer,
        "s",
        "/queue/prefetch",
        "client-individual",
        &["activemq.prefetchSize:1"],
    );
    send(&mut producer, "/queue/prefetch", "m1");
    send(&mut producer, "/queue/prefetch", "m2");
    let first = next_message(&mut consumer);
    assert_eq!(first.text(), "m1");
    assert_nothing_delivered(&mut consumer, "unacked");

    let id = format!("id:{}", first.header("ack"));
    consumer.send_frame("ACK", &[&id], b"");
    assert_eq!(next_message(&mut consumer).text(), "m2");
}

#[test]
fn competing_consumers_take_turns() {
    let node = Node::start(&[]);
    let mut producer = node.client("1.2");
    let mut a = node.client("1.2");
    let mut b = node.client("1.2");
    subscribe(&mut a, "s", "/queue/turns", "auto");
    subscribe(&mut b, "s", "/queue/turns", "auto");
    for body in ["m1", "m2", "m3", "m4"] {
        send(&mut producer, "/queue/turns", body);
    }
    assert_eq!(bodies(&mut a, 2), ["m1", "m3"]);
    assert_eq!(bodies(&mut b, 2), ["m2", "m4"]);
    assert_nothing_delivered(&mut a, "a");
    assert_nothing_delivered(&mut b, "b");
}

// ---- Topics ----

#[test]
fn a_topic_message_reaches_every_current_subscriber() {
    let node = Node::start(&[]);
    let mut producer = node.client("1.2");
    let mut a = node.client("1.2");
    let mut b = node.client("1.2");
    subscribe(&mut a, "a", "/topic/news", "auto");
    subscribe(&mut b, "b", "/topic/news", "client-individual");
    send(&mut producer, "/topic/news", "extra");
    for (client, id) in [(&mut a, "a"), (&mut b, "b")] {
        let message = next_message(client);
        assert_eq!(message.text(), "extra");
        assert_eq!(message.get("destination"), Some("/topic/news"));
        assert_eq!(message.get("subscription"), Some(id));
    }
    // A later subscriber does not get what was published before it came.
    let mut late = node.client("1.2");
    subscribe(&mut late, "late", "/topic/news", "auto");
    send(&mut producer, "/topic/news", "later");
    assert_eq!(next_message(&mut late).text(), "later");
}

#[test]
fn a_durable_subscription_keeps_messages_published_while_disconnected() {
    let node = Node::start(&[]);
    let mut producer = node.client("1.2");
    let durable = ["accept-version:1.2", "client-id:reader-1"];
    let subscribe_durable = |client: &mut Session| {
        subscribe_with(
            client,
            "d",
            "/topic/prices",
            "client-individual",
            &["activemq.subscriptionName:prices-feed"],
        );
    };
    let mut reader = node.client_with(&durable, "1.2");
    subscribe_durable(&mut reader);
    disconnect(&mut reader);

    send(&mut producer, "/topic/prices", "while-away");
    let mut reader = node.client_with(&durable, "1.2");
    subscribe_durable(&mut reader);
    let message = next_message(&mut reader);
    assert_eq!(message.text(), "while-away");
    assert_eq!(message.get("destination"), Some("/topic/prices"));
    assert_eq!(message.get("subscription"), Some("d"));
}

#[test]
fn unsubscribe_with_the_subscription_name_deletes_a_durable_subscription() {
    let node = Node::start(&[]);
    let mut producer = node.client("1.2");
    let durable = ["accept-version:1.2", "client-id:reader-2"];
    let name = "activemq.subscriptionName:gone-feed";
    let mut reader = node.client_with(&durable, "1.2");
    subscribe_with(&mut reader, "d", "/topic/gone", "auto", &[name]);
    reader.send_frame("UNSUBSCRIBE", &["id:d", name, "receipt:unsubscribed"], b"");
    reader.expect_receipt("unsubscribed");
    disconnect(&mut reader);

    send(&mut producer, "/topic/gone", "nobody-kept-this");
    let mut reader = node.client_with(&durable, "1.2");
    subscribe_with(&mut reader, "d", "/topic/gone", "auto", &[name]);
    send(&mut producer, "/topic/gone", "marker");
    assert_eq!(next_message(&mut reader).text(), "marker");
}

// ---- Transactions ----

#[test]
fn sends_in_a_transaction_are_invisible_until_commit() {
    let node = Node::start(&[]);
    let mut producer = node.client("1.2");
    let mut consumer = node.client("1.2");
    subscribe(&mut consumer, "s", "/queue/tx", "auto");
    producer.send_frame("BEGIN", &["transaction:t1"], b"");
    send_with(&mut producer, "/queue/tx", &["transaction:t1"], "in-tx-1");
    send_with(&mut producer, "/queue/tx", &["transaction:t1"], "in-tx-2");
    send(&mut producer, "/queue/tx", "outside");
    assert_eq!(next_message(&mut consumer).text(), "outside");
    assert_nothing_delivered(&mut consumer, "before-commit");

    producer.send_frame("COMMIT", &["transaction:t1", "receipt:committed"], b"");
    producer.expect_receipt("committed");
    assert_eq!(next_message(&mut consumer).text(), "in-tx-1");
    assert_eq!(next_message(&mut consumer).text(), "in-tx-2");
}

#[test]
fn abort_discards_a_transactions_sends() {
    let node = Node::start(&[]);
    let mut producer = node.client("1.2");
    let mut consumer = node.client("1.2");
    subscribe(&mut consumer, "s", "/queue/aborted", "auto");
    producer.send_frame("BEGIN", &["transaction:t1"], b"");
    send_with(
        &mut producer,
        "/queue/aborted",
        &["transaction:t1"],
        "in-tx",
    );
    producer.send_frame("ABORT", &["transaction:t1", "receipt:aborted"], b"");
    producer.expect_receipt("aborted");
    send(&mut producer, "/queue/aborted", "marker");
    assert_eq!(next_message(&mut consumer).text(), "marker");
    // The transaction is gone: committing it now is an error.
    producer.send_frame("COMMIT", &["transaction:t1"], b"");
    producer.expect_refusal("transaction \"t1\" is not open");
}

#[test]
fn a_dropped_connection_discards_its_open_transaction() {
    let mut node = Node::start(&[]);
    let mut consumer = node.client("1.2");
    subscribe(&mut consumer, "s", "/queue/dropped", "auto");
    let mut producer = node.client("1.2");
    producer.send_frame("BEGIN", &["transaction:t1"], b"");
    send_with(
        &mut producer,
        "/queue/dropped",
        &["transaction:t1"],
        "in-tx",
    );
    drop(producer);
    wait_for_connections(&mut node, 1);

    let mut other = node.client("1.2");
    send(&mut other, "/queue/dropped", "marker");
    assert_eq!(next_message(&mut consumer).text(), "marker");
    assert_nothing_delivered(&mut consumer, "after");
}

#[test]
fn an_ack_in_an_aborted_transaction_leaves_the_message_unacknowledged() {
    let node = Node::start(&[]);
    let mut producer = node.client("1.2");
    send(&mut producer, "/queue/tx-ack", "m1");
    let mut consumer = node.client("1.2");
    subscribe(&mut consumer, "s", "/queue/tx-ack", "client-individual");
    let message = next_message(&mut consumer);
    let id = format!("id:{}", message.header("ack"));
    consumer.send_frame("BEGIN", &["transaction:t1"], b"");
    consumer.send_frame("ACK", &[&id, "transaction:t1"], b"");
    consumer.send_frame("ABORT", &["transaction:t1", "receipt:aborted"], b"");
    consumer.expect_receipt("aborted");
    disconnect(&mut consumer);

    let mut again = node.client("1.2");
    subscribe(&mut again, "s", "/queue/tx-ack", "client-individual");
    let redelivered = next_message(&mut again);
    assert_eq!(redelivered.text(), "m1");
    assert_eq!(redelivered.get("redelivered"), Some("true"));
}

#[test]
fn an_ack_in_a_committed_transaction_takes_effect_at_commit() {
    let node = Node::start(&[]);
    let mut producer = node.client("1.2");
    send(&mut producer, "/queue/tx-commit-ack", "m1");
    let mut consumer = node.client("1.2");
    subscribe(
        &mut consumer,
        "s",
        "/queue/tx-commit-ack",
        "client-individual",
    );
    let message = next_message(&mut consumer);
    let id = format!("id:{}", message.header("ack"));
    consumer.send_frame("BEGIN", &["transaction:t1"], b"");
    consumer.send_frame("ACK", &[&id, "transaction:t1"], b"");
    consumer.send_frame("COMMIT", &["transaction:t1", "receipt:committed"], b"");
    consumer.expect_receipt("committed");
    disconnect(&mut consumer);

    let mut again = node.client("1.2");
    subscribe(&mut again, "s", "/queue/tx-commit-ack", "client-individual");
    send(&mut producer, "/queue/tx-commit-ack", "marker");
    assert_eq!(next_message(&mut again).text(), "marker");
}

// ---- expires and priority ----

#[test]
fn an_expired_message_is_never_delivered() {
    let node = Node::start(&[]);
    let mut producer = node.client("1.2");
    // Waiting in the queue when it expires...
    send_with(
        &mut producer,
        "/queue/expiry",
        &["expires:1"],
        "stale-backlog",
    );
    let mut consumer = node.client("1.2");
    subscribe(&mut consumer, "s", "/queue/expiry", "auto");
    // ...or arriving already expired at a waiting consumer.
    send_with(&mut producer, "/queue/expiry", &["expires:1"], "stale-live");
    let in_an_hour = shared_proto::unix_ms() + 3_600_000;
    send_with(
        &mut producer,
        "/queue/expiry",
        &[&format!("expires:{in_an_hour}")],
        "fresh",
    );
    assert_eq!(next_message(&mut consumer).text(), "fresh");
    assert_nothing_delivered(&mut consumer, "after");
}

#[test]
fn priority_9_overtakes_priority_1_in_a_backlog() {
    let node = Node::start(&[]);
    let mut producer = node.client("1.2");
    send_with(&mut producer, "/queue/priority", &["priority:1"], "low-1");
    send_with(&mut producer, "/queue/priority", &["priority:1"], "low-2");
    send_with(&mut producer, "/queue/priority", &["priority:9"], "high");
    let mut consumer = node.client("1.2");
    subscribe(&mut consumer, "s", "/queue/priority", "auto");
    assert_eq!(bodies(&mut consumer, 3), ["high", "low-1", "low-2"]);
}

// ---- Authentication ----

fn users_node() -> Node {
    let dirs = Dirs::new();
    let users = dirs.data.with_extension("users.toml");
    // alice's password is s3cret (`ctl passwd --password s3cret`).
    std::fs::write(
        &users,
        "[users.alice]\npassword = \"$argon2id$v=19$m=19456,t=2,p=1$1R+t2fNEcMk5SAADz3rniw$DEHXuMlcAO7w7mGhf2MdyQop4OJiiwsegLXwXVYBc3E\"\n",
    )
    .unwrap();
    let mut broker = Broker::spawn(&dirs.data, &["--users-file", users.to_str().unwrap()]);
    let addr = broker.activate(1);
    Node {
        broker,
        addr,
        _dirs: dirs,
    }
}

// ---- Connection timeout ----

#[test]
fn a_connection_that_sends_nothing_is_closed_after_the_connect_timeout() {
    let mut node = Node::start(&["--connect-timeout-ms", "200"]);
    let started = Instant::now();
    let mut silent = Client::connect(&node.addr);
    // Half a CONNECT does not count: the whole frame must arrive in time.
    let mut partial = Client::connect(&node.addr);
    partial.send(b"CONNECT\naccept-version:1.2\n");
    let error = silent.expect_refusal("no CONNECT frame within 200 ms");
    assert_eq!(error.get("content-type"), Some("text/plain"));
    partial.expect_refusal("no CONNECT frame within 200 ms");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(200) && waited < PATIENCE,
        "closed after {waited:?}"
    );
    wait_for_connections(&mut node, 0);
    // A client that connects in time is served as usual.
    node.assert_still_serving();
}

#[test]
fn the_connect_timeout_must_be_a_positive_number_of_milliseconds() {
    for bad in ["0", "-5", "soon", "3600001"] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_brokerd"))
            .args(["--data-dir", "/nonexistent", "--listen", "127.0.0.1:0"])
            .arg(format!("--connect-timeout-ms={bad}"))
            .output()
            .expect("run brokerd");
        assert_eq!(output.status.code(), Some(2), "{bad}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("--connect-timeout-ms"), "{bad}: {stderr}");
    }
}

#[test]
fn a_client_id_already_connected_is_refused_at_connect_until_it_disconnects() {
    let node = Node::start(&[]);
    let mut first = node.client_with(&["accept-version:1.2", "client-id:only-once"], "1.2");
    let mut second = Client::connect(&node.addr);
    second.send_frame(
        "CONNECT",
        &["accept-version:1.2", "client-id:only-once"],
        b"",
    );
    // ActiveMQ's InvalidClientIDException, in its words.
    let error = second.expect_refusal("only-once already connected from tcp");
    let message = error.unescaped("message").unwrap();
    assert!(
        message.starts_with(
            "Broker: test - Client: only-once already connected from tcp://127.0.0.1:"
        ),
        "{message}"
    );
    disconnect(&mut first);
    let mut third = node.client_with(&["accept-version:1.2", "client-id:only-once"], "1.2");
    disconnect(&mut third);
}

#[test]
fn with_a_users_file_a_client_without_login_is_refused() {
    let node = users_node();
    let mut client = Client::connect(&node.addr);
    client.send_frame("CONNECT", &["accept-version:1.2", "host:test"], b"");
    client.expect_refusal("authentication failed");
}

#[test]
fn with_a_users_file_a_wrong_passcode_is_refused() {
    let node = users_node();
    let mut client = Client::connect(&node.addr);
    client.send_frame(
        "CONNECT",
        &["accept-version:1.2", "login:alice", "passcode:guess"],
        b"",
    );
    client.expect_refusal("authentication failed");
    let mut unknown = Client::connect(&node.addr);
    unknown.send_frame(
        "CONNECT",
        &["accept-version:1.2", "login:mallory", "passcode:s3cret"],
        b"",
    );
    unknown.expect_refusal("authentication failed");
}

#[test]
fn with_a_users_file_the_right_passcode_connects() {
    let node = users_node();
    let mut client = node.client_with(
        &["accept-version:1.2", "login:alice", "passcode:s3cret"],
        "1.2",
    );
    send(&mut client, "/queue/authenticated", "hello");
    disconnect(&mut client);
}

// ---- Heart-beating ----

#[test]
fn the_broker_heart_beats_a_client_that_asks_for_it() {
    let node = Node::start(&["--heartbeat-ms", "100"]);
    let mut client = node.client_with(&["accept-version:1.2", "heart-beat:0,500"], "1.2");
    // The connection is idle: every byte now is a heart-beat EOL (the first may be the one
    // that ends the CONNECTED frame).
    for beat in 0..3 {
        match client.read_byte() {
            Some(b'\n') => {}
            other => panic!("heart-beat {beat}: expected an EOL, got {other:?}"),
        }
    }
}

#[test]
fn a_client_that_stops_heart_beating_is_disconnected() {
    let node = Node::start(&["--heartbeat-ms", "100"]);
    let mut client = node.client_with(&["accept-version:1.2", "heart-beat:200,0"], "1.2");
    // Silent from now on; the broker gives up within PATIENCE (each read waits that long).
    client.expect_refusal("heart-beat");
    node.assert_still_serving();
}

#[test]
fn a_client_that_heart_beats_with_eols_only_stays_connected() {
    let node = Node::start(&["--heartbeat-ms", "500"]);
    let mut client = node.client_with(&["accept-version:1.2", "heart-beat:500,0"], "1.2");
    // The broker allows twice the agreed 500 ms; beat every 100 ms for three times that.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        if client.client.try_send(b"\n").is_err() {
            let error = client.read_raw();
            panic!("the broker closed a heart-beating connection: {error:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    disconnect(&mut client);
}

// ---- DISCONNECT ----

#[test]
fn disconnect_with_receipt_gets_the_receipt_then_eof() {
    let node = Node::start(&[]);
    let mut client = node.client("1.2");
    client.send_frame("SEND", &["destination:/queue/last"], b"last words");
    client.send_frame("DISCONNECT", &["receipt:bye-42"], b"");
    client.expect_receipt("bye-42");
    client.expect_eof();
    // Everything before the DISCONNECT was processed.
    let mut consumer = node.client("1.2");
    subscribe(&mut consumer, "s", "/queue/last", "auto");
    assert_eq!(next_message(&mut consumer).text(), "last words");
}
