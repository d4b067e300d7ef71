//! Bad input against the real brokerd binary over TCP: each malformed or refused frame gets an
//! ERROR naming the problem, the connection is closed, and other clients are unaffected. As in
//! protocol.rs, a RECEIPT is the barrier; no test sleeps to synchronise.

mod harness;

use harness::node::*;
use harness::RawFrame;

/// Sends `frame` on a fresh 1.2 session (after a bystander connected) and checks the refusal;
/// returns the ERROR.
fn refused_on(node: &Node, version: &str, setup: &[&[u8]], frame: &[u8], needle: &str) -> RawFrame {
    let mut bystander = node.client("1.2");
    subscribe(&mut bystander, "b", "/queue/bystander", "auto");
    let mut client = if version == "1.0" {
        node.client_with(&[], "1.0")
    } else {
        node.client(version)
    };
    for bytes in setup {
        client.send(bytes);
    }
    client.send(frame);
    let error = client.expect_refusal(needle);
    // The bystander's session is untouched, and new clients are served.
    send(&mut bystander, "/queue/bystander", "fine");
    assert_eq!(next_message(&mut bystander).text(), "fine");
    node.assert_still_serving();
    error
}

fn refused(node: &Node, frame: &[u8], needle: &str) -> RawFrame {
    refused_on(node, "1.2", &[], frame, needle)
}

#[test]
fn send_without_destination_is_refused() {
    let node = Node::start(&[]);
    let error = refused(
        &node,
        b"SEND\nreceipt:r-1\n\nbody\0",
        "SEND needs a destination header",
    );
    assert_eq!(error.get("receipt-id"), Some("r-1"));
}

#[test]
fn commit_of_an_unknown_transaction_is_refused() {
    let node = Node::start(&[]);
    let error = refused(
        &node,
        b"COMMIT\ntransaction:never-begun\nreceipt:r-5\n\n\0",
        "transaction \"never-begun\" is not open",
    );
    assert_eq!(error.get("receipt-id"), Some("r-5"));
}

#[test]
fn subscribing_twice_with_one_id_is_refused() {
    let node = Node::start(&[]);
    let error = refused_on(
        &node,
        "1.2",
        &[b"SUBSCRIBE\nid:0\ndestination:/queue/a\n\n\0"],
        b"SUBSCRIBE\nid:0\ndestination:/queue/b\nreceipt:r-6\n\n\0",
        "subscription id \"0\" is already in use",
    );
    assert_eq!(error.get("receipt-id"), Some("r-6"));
}

#[test]
fn nack_is_refused_in_stomp_1_0() {
    let node = Node::start(&[]);
    let error = refused_on(
        &node,
        "1.0",
        &[],
        b"NACK\nmessage-id:m\nreceipt:r-7\n\n\0",
        "NACK does not exist in STOMP 1.0",
    );
    assert_eq!(error.get("receipt-id"), Some("r-7"));
}

#[test]
fn a_second_connect_is_refused() {
    let node = Node::start(&[]);
    let error = refused(
        &node,
        b"CONNECT\naccept-version:1.2\nreceipt:r-8\n\n\0",
        "unexpected CONNECT: the session is already connected",
    );
    assert_eq!(error.get("receipt-id"), Some("r-8"));
    refused(
        &node,
        b"STOMP\naccept-version:1.2\n\n\0",
        "unexpected STOMP: the session is already connected",
    );
}

#[test]
fn an_unknown_command_is_refused() {
    let node = Node::start(&[]);
    let error = refused(
        &node,
        b"PUBLISH\nreceipt:r-9\n\n\0",
        "unknown command PUBLISH",
    );
    assert_eq!(error.get("receipt-id"), Some("r-9"));
}

#[test]
fn a_frame_over_max_frame_bytes_is_refused_naming_the_limit() {
    let node = Node::start(&["--max-frame-bytes", "4096"]);
    let mut frame = b"SEND\ndestination:/queue/a\nreceipt:r-10\n\n".to_vec();
    frame.extend(vec![b'x'; 8 * 1024]);
    frame.push(0);
    let error = refused(&node, &frame, "max-frame-bytes limit of 4096 bytes");
    assert_eq!(error.get("receipt-id"), Some("r-10"));
    // A content-length beyond the limit is refused before the body arrives.
    refused(
        &node,
        b"SEND\ndestination:/queue/a\ncontent-length:100000\n\n",
        "max-frame-bytes limit of 4096 bytes",
    );
}

#[test]
fn a_multi_megabyte_frame_arriving_in_many_small_writes_is_received_whole() {
    let node = Node::start(&["--max-frame-bytes", &(16 << 20).to_string()]);
    let mut producer = node.client("1.2");
    let size = 6 << 20;
    let body: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
    let length = format!("content-length:{size}");
    // Without content-length (the body ends at the NUL), then with it.
    for (receipt, extra) in [("big-nul", None), ("big-length", Some(length.as_str()))] {
        let mut wire = format!("SEND\ndestination:/queue/big\nreceipt:{receipt}\n").into_bytes();
        if let Some(header) = extra {
            wire.extend_from_slice(header.as_bytes());
            wire.push(b'\n');
        }
        wire.push(b'\n');
        wire.extend_from_slice(&body);
        wire.push(0);
        producer.client.send_in_pieces(&wire, 1024);
        producer.expect_receipt(receipt);
    }
    let mut consumer = node.client("1.2");
    subscribe(&mut consumer, "s", "/queue/big", "auto");
    for _ in 0..2 {
        let message = next_message(&mut consumer);
        assert_eq!(message.body.len(), size);
        assert!(message.body == body, "the body changed on the way");
    }
}

#[test]
fn a_frame_over_max_headers_is_refused_naming_the_limit() {
    let node = Node::start(&["--max-headers", "4"]);
    let error = refused(
        &node,
        b"SEND\nreceipt:r-11\ndestination:/queue/a\nh1:1\nh2:2\nh3:3\n\nbody\0",
        "max-headers limit of 4 headers",
    );
    assert_eq!(error.get("receipt-id"), Some("r-11"));
}

#[test]
fn a_header_over_max_header_bytes_is_refused_naming_the_limit() {
    let node = Node::start(&["--max-header-bytes", "128"]);
    let long = format!(
        "SEND\nreceipt:r-12\ndestination:/queue/a\nx-long:{}\n\nbody\0",
        "y".repeat(300)
    );
    let error = refused(
        &node,
        long.as_bytes(),
        "max-header-bytes limit of 128 bytes",
    );
    assert_eq!(error.get("receipt-id"), Some("r-12"));
}

#[test]
fn a_durable_subscription_needs_a_client_id() {
    let node = Node::start(&[]);
    let error = refused(
        &node,
        b"SUBSCRIBE\nid:0\ndestination:/topic/t\nactivemq.subscriptionName:s\nreceipt:r-13\n\n\0",
        "needs a client-id header on CONNECT",
    );
    assert_eq!(error.get("receipt-id"), Some("r-13"));
}
