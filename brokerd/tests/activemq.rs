//! ActiveMQ's STOMP extensions and edge behaviours against the real brokerd binary (issue 10):
//! destination names as ActiveMQ reads them, the headers of a MESSAGE, wildcard and composite
//! destinations, and temporary destinations for request/reply.
//!
//! As in `protocol.rs`, no test sleeps to synchronise: a RECEIPT is a barrier, and "nothing was
//! delivered" is shown by a marker arriving first.

mod harness;

use harness::node::*;
use harness::RawFrame;

/// The next MESSAGE's destination and body.
fn delivered(client: &mut Session) -> (String, String) {
    let msg = next_message(client);
    (msg.header("destination").to_owned(), msg.text().to_owned())
}

#[test]
fn a_destination_without_a_known_prefix_is_a_queue_of_that_literal_name() {
    let node = Node::start(&[]);
    let mut client = node.client("1.2");
    subscribe(&mut client, "plain", "orders", "auto");
    subscribe(&mut client, "exchange", "/exchange/amq.topic/x", "auto");
    send(&mut client, "orders", "o1");
    assert_eq!(
        delivered(&mut client),
        ("/queue/orders".into(), "o1".into())
    );
    // The same queue by its /queue/ name.
    send(&mut client, "/queue/orders", "o2");
    assert_eq!(
        delivered(&mut client),
        ("/queue/orders".into(), "o2".into())
    );
    send(&mut client, "/exchange/amq.topic/x", "e1");
    assert_eq!(
        delivered(&mut client),
        ("/queue//exchange/amq.topic/x".into(), "e1".into())
    );
    // Padding is trimmed, as ActiveMQ does.
    send(&mut client, "  /queue/orders ", "o3");
    assert_eq!(
        delivered(&mut client),
        ("/queue/orders".into(), "o3".into())
    );
}

#[test]
fn a_message_carries_activemq_headers_and_a_content_length_only_if_sent_one() {
    let node = Node::start(&[]);
    let mut client = node.client("1.2");
    subscribe(&mut client, "s", "/queue/headers", "auto");
    let before = shared_proto::unix_ms();
    // No content-length: none delivered (ActiveMQ's text message).
    client.send_frame(
        "SEND",
        &["destination:/queue/headers", "receipt:r1", "type:order"],
        b"text",
    );
    client.expect_receipt("r1");
    let text = next_message(&mut client);
    let after = shared_proto::unix_ms();
    assert_eq!(text.get("content-length"), None, "{text:?}");
    assert_eq!(text.get("expires"), Some("0"));
    assert_eq!(text.get("priority"), Some("4"));
    assert_eq!(text.get("persistent"), None);
    assert_eq!(text.get("type"), Some("order"));
    let stamp: u64 = text.header("timestamp").parse().unwrap();
    assert!(
        (before..=after).contains(&stamp),
        "{before} <= {stamp} <= {after}"
    );
    // With one: kept. A SEND's timestamp, priority and expires are the message's.
    client.send(
        b"SEND\ndestination:/queue/headers\nreceipt:r2\ncontent-length:3\npersistent:true\n\
          timestamp:1700000000000\npriority:7\nexpires:4102444800000\n\na\0b\0",
    );
    client.expect_receipt("r2");
    let bytes = next_message(&mut client);
    assert_eq!(bytes.get("content-length"), Some("3"));
    assert_eq!(bytes.body, b"a\0b");
    assert_eq!(bytes.get("persistent"), Some("true"));
    assert_eq!(bytes.get("timestamp"), Some("1700000000000"));
    assert_eq!(bytes.get("priority"), Some("7"));
    assert_eq!(bytes.get("expires"), Some("4102444800000"));
    // Each header once.
    for name in ["timestamp", "priority", "expires", "content-length"] {
        assert_eq!(bytes.headers.iter().filter(|(n, _)| n == name).count(), 1);
    }
}

#[test]
fn header_values_activemq_accepts_are_accepted() {
    let node = Node::start(&[]);
    let mut client = node.client("1.2");
    subscribe(&mut client, "s", "/queue/lenient", "auto");
    send_with(&mut client, "/queue/lenient", &["priority:10"], "high");
    let high = next_message(&mut client);
    assert_eq!((high.text(), high.get("priority")), ("high", Some("9")));
    send_with(&mut client, "/queue/lenient", &["priority:-1"], "low");
    assert_eq!(next_message(&mut client).get("priority"), Some("0"));
    // Anything but "true" is non-persistent.
    send_with(&mut client, "/queue/lenient", &["persistent:yes"], "maybe");
    let maybe = next_message(&mut client);
    assert_eq!((maybe.text(), maybe.get("persistent")), ("maybe", None));
}

#[test]
fn topic_wildcards_deliver_every_matching_topic_with_its_own_name() {
    let node = Node::start(&[]);
    let mut one = node.client("1.2");
    subscribe(&mut one, "one", "/topic/prices.*", "auto");
    let mut rest = node.client("1.2");
    subscribe(&mut rest, "rest", "/topic/prices.>", "auto");
    let mut producer = node.client("1.2");
    for (topic, body) in [
        ("/topic/prices.eu", "eu"),
        ("/topic/prices.eu.fr", "fr"),
        ("/topic/prices", "root"),
        ("/topic/other.eu", "other"),
        ("/topic/prices.us", "us"),
    ] {
        send(&mut producer, topic, body);
    }
    assert_eq!(
        delivered(&mut one),
        ("/topic/prices.eu".into(), "eu".into())
    );
    assert_eq!(
        delivered(&mut one),
        ("/topic/prices.us".into(), "us".into())
    );
    assert_nothing_delivered(&mut one, "one");
    // `>` matches none or more segments, as ActiveMQ's.
    for (topic, body) in [
        ("/topic/prices.eu", "eu"),
        ("/topic/prices.eu.fr", "fr"),
        ("/topic/prices", "root"),
        ("/topic/prices.us", "us"),
    ] {
        assert_eq!(delivered(&mut rest), (topic.into(), body.into()));
    }
    assert_nothing_delivered(&mut rest, "rest");
}

#[test]
fn a_queue_wildcard_consumes_from_queues_there_are_and_queues_to_come() {
    let node = Node::start(&[]);
    let mut producer = node.client("1.2");
    send(&mut producer, "/queue/orders.eu", "before");
    let mut consumer = node.client("1.2");
    subscribe(&mut consumer, "all", "/queue/orders.>", "client-individual");
    let first = next_message(&mut consumer);
    assert_eq!(
        (first.header("destination"), first.text()),
        ("/queue/orders.eu", "before")
    );
    send(&mut producer, "/queue/orders.us.east", "new queue");
    send(&mut producer, "/queue/invoices.eu", "not matched");
    let second = next_message(&mut consumer);
    assert_eq!(
        (second.header("destination"), second.text()),
        ("/queue/orders.us.east", "new queue")
    );
    // Acknowledged from the queue it came from; the unmatched queue keeps its message.
    for msg in [&first, &second] {
        let ack = format!("id:{}", msg.header("ack"));
        consumer.send_frame("ACK", &[&ack, "receipt:acked"], b"");
        consumer.expect_receipt("acked");
    }
    disconnect(&mut consumer);
    let mut again = node.client("1.2");
    subscribe(&mut again, "all", "/queue/orders.>", "auto");
    subscribe(&mut again, "invoices", "/queue/invoices.eu", "auto");
    assert_eq!(
        delivered(&mut again),
        ("/queue/invoices.eu".into(), "not matched".into())
    );
    assert_nothing_delivered(&mut again, "acked");
}

#[test]
fn unacknowledged_messages_of_a_wildcard_subscription_return_to_their_own_queues() {
    let node = Node::start(&[]);
    let mut producer = node.client("1.2");
    send(&mut producer, "/queue/jobs.a", "a");
    send(&mut producer, "/queue/jobs.b", "b");
    let mut consumer = node.client("1.2");
    subscribe(&mut consumer, "all", "/queue/jobs.*", "client-individual");
    let mut got = [delivered(&mut consumer), delivered(&mut consumer)];
    got.sort();
    assert_eq!(
        got,
        [
            ("/queue/jobs.a".into(), "a".into()),
            ("/queue/jobs.b".into(), "b".into())
        ]
    );
    disconnect(&mut consumer);
    let mut b = node.client("1.2");
    subscribe(&mut b, "b", "/queue/jobs.b", "auto");
    let back = next_message(&mut b);
    assert_eq!((back.text(), back.get("redelivered")), ("b", Some("true")));
    assert_nothing_delivered(&mut b, "b");
}

#[test]
fn a_composite_send_reaches_every_destination_it_lists() {
    let node = Node::start(&[]);
    let mut client = node.client("1.2");
    subscribe(&mut client, "a", "/queue/comp.a", "auto");
    subscribe(&mut client, "t", "/topic/comp.t", "auto");
    send(&mut client, "/queue/comp.a,/topic/comp.t", "both");
    let mut got = [next_message(&mut client), next_message(&mut client)];
    got.sort_by(|x, y| x.header("destination").cmp(y.header("destination")));
    assert_eq!(got[0].header("destination"), "/queue/comp.a");
    assert_eq!(got[1].header("destination"), "/topic/comp.t");
    // One message, one id, as ActiveMQ's composite send.
    assert_eq!(got[0].header("message-id"), got[1].header("message-id"));
    assert!(got.iter().all(|m| m.text() == "both"));
}

#[test]
fn a_composite_subscription_reads_every_queue_it_lists() {
    let node = Node::start(&[]);
    let mut client = node.client("1.2");
    subscribe(&mut client, "ab", "/queue/list.a, /queue/list.b", "auto");
    send(&mut client, "/queue/list.b", "b");
    assert_eq!(delivered(&mut client), ("/queue/list.b".into(), "b".into()));
    send(&mut client, "/queue/list.c", "c");
    send(&mut client, "/queue/list.a", "a");
    assert_eq!(delivered(&mut client), ("/queue/list.a".into(), "a".into()));
    // Queues and topics do not mix in one subscription.
    client.send(b"SUBSCRIBE\nid:mixed\ndestination:/queue/x,/topic/y\n\n\0");
    client.expect_refusal("lists both queues and topics");
}

/// A request/reply round over a temporary queue, as an ActiveMQ user writes it: returns the
/// requester (still connected) and the reply-to the responder saw.
fn request_reply(node: &Node) -> (Session, String) {
    let mut requester = node.client("1.2");
    subscribe(&mut requester, "replies", "/temp-queue/replies", "auto");
    let mut responder = node.client("1.2");
    subscribe(&mut responder, "requests", "/queue/service", "auto");
    send_with(
        &mut requester,
        "/queue/service",
        &["reply-to:/temp-queue/replies", "correlation-id:c1"],
        "question",
    );
    let request = next_message(&mut responder);
    let reply_to = request.header("reply-to").to_owned();
    assert!(
        reply_to.starts_with("/remote-temp-queue/"),
        "rewritten for other connections: {reply_to}"
    );
    send_with(&mut responder, &reply_to, &["correlation-id:c1"], "answer");
    let reply = next_message(&mut requester);
    // The requester sees its temporary queue by the name it gave it.
    assert_eq!(reply.header("destination"), "/temp-queue/replies");
    assert_eq!(
        (reply.text(), reply.get("correlation-id")),
        ("answer", Some("c1"))
    );
    disconnect(&mut responder);
    (requester, reply_to)
}

#[test]
fn request_reply_over_a_temporary_queue() {
    let node = Node::start(&[]);
    let (mut requester, reply_to) = request_reply(&node);
    // Private to its connection: another may send to it, not read it.
    let mut other = node.client("1.2");
    other.send(format!("SUBSCRIBE\nid:x\ndestination:{reply_to}\n\n\0").as_bytes());
    other.expect_refusal("belongs to another connection");
    disconnect(&mut requester);
    // Gone with its connection, and whatever waited in it.
    let mut late = node.client("1.2");
    late.send(format!("SEND\ndestination:{reply_to}\nreceipt:late\n\nlate\0").as_bytes());
    let error: RawFrame = late.expect_refusal("does not exist");
    assert_eq!(error.get("receipt-id"), Some("late"));
    node.assert_still_serving();
}

#[test]
fn a_temporary_queue_is_never_stored() {
    let node = Node::start(&[]);
    let (mut requester, _) = request_reply(&node);
    send_with(
        &mut requester,
        "/temp-queue/replies",
        &["persistent:true"],
        "own",
    );
    let own = next_message(&mut requester);
    assert_eq!((own.text(), own.get("persistent")), ("own", None));
    disconnect(&mut requester);
}

/// Browses `queue` on `client` (with `extra` SUBSCRIBE headers): the bodies of the snapshot,
/// checking the end marker after.
fn browse_with(client: &mut Session, id: &str, queue: &str, extra: &[&str]) -> Vec<String> {
    let mut headers = vec!["browser:true"];
    headers.extend_from_slice(extra);
    subscribe_with(client, id, queue, "auto", &headers);
    let mut bodies = Vec::new();
    loop {
        let msg = next_message(client);
        if msg.get("browser") == Some("end") {
            assert_eq!(msg.get("subscription"), Some(id));
            assert_eq!(msg.get("message-id"), Some("0"));
            assert_eq!(msg.get("destination"), Some(queue));
            assert!(msg.body.is_empty(), "{msg:?}");
            return bodies;
        }
        assert_eq!(msg.get("ack"), None, "a browsed copy needs no ACK");
        bodies.push(msg.text().to_owned());
    }
}

fn browse(client: &mut Session, id: &str, queue: &str) -> Vec<String> {
    browse_with(client, id, queue, &[])
}

#[test]
fn a_browser_gets_a_snapshot_then_the_end_marker_and_consumes_nothing() {
    let node = Node::start(&[]);
    let mut producer = node.client("1.2");
    for body in ["m1", "m2", "m3"] {
        send_with(&mut producer, "/queue/browsed", &["persistent:true"], body);
    }
    let mut browser = node.client("1.2");
    assert_eq!(
        browse(&mut browser, "b1", "/queue/browsed"),
        ["m1", "m2", "m3"]
    );
    // A snapshot: what comes later is not browsed.
    send(&mut producer, "/queue/browsed", "m4");
    assert_nothing_delivered(&mut browser, "after-end");
    // An empty queue: the marker alone.
    assert!(browse(&mut browser, "b2", "/queue/nothing-here").is_empty());
    let mut consumer = node.client("1.2");
    subscribe(&mut consumer, "c", "/queue/browsed", "auto");
    assert_eq!(bodies(&mut consumer, 4), ["m1", "m2", "m3", "m4"]);
}

#[test]
fn a_browser_reads_what_is_paged_out_too() {
    let node = Node::start(&["--page-size", "3"]);
    let mut producer = node.client("1.2");
    let sent: Vec<String> = (1..=11).map(|n| format!("m{n}")).collect();
    for body in &sent {
        send_with(&mut producer, "/queue/deep", &["persistent:true"], body);
    }
    let mut browser = node.client("1.2");
    // A prefetch smaller than a page: the snapshot waits for credit, in order.
    assert_eq!(
        browse_with(
            &mut browser,
            "b",
            "/queue/deep",
            &["activemq.prefetchSize:2"]
        ),
        sent,
        "every message, memory's and the store's"
    );
    let mut consumer = node.client("1.2");
    subscribe(&mut consumer, "c", "/queue/deep", "auto");
    assert_eq!(bodies(&mut consumer, sent.len()), sent);
}

#[test]
fn browsing_is_for_one_queue_on_stomp_1_1_and_later() {
    let node = Node::start(&[]);
    let mut client = node.client("1.2");
    client.send(b"SUBSCRIBE\nid:b\ndestination:/topic/t\nbrowser:true\n\n\0");
    client.expect_refusal("browses one queue");
    let mut old = node.client_with(&[], "1.0");
    old.send(b"SUBSCRIBE\ndestination:/queue/q\nbrowser:true\n\n\0");
    old.expect_refusal("browser:true needs STOMP 1.1");
}

#[test]
fn consumer_options_are_read_from_activemq_headers() {
    let node = Node::start(&[]);
    let mut plain = node.client("1.2");
    subscribe_with(
        &mut plain,
        "p",
        "/queue/opts",
        "auto",
        &["activemq.dispatchAsync:true"],
    );
    let mut only = node.client("1.2");
    subscribe_with(
        &mut only,
        "e",
        "/queue/opts",
        "auto",
        &["activemq.exclusive:TRUE", "activemq.priority:5"],
    );
    send(&mut plain, "/queue/opts", "to the exclusive one");
    assert_eq!(next_message(&mut only).text(), "to the exclusive one");
    assert_nothing_delivered(&mut plain, "exclusive");
    // noLocal: the topic message this connection sent is not delivered to it.
    subscribe_with(
        &mut plain,
        "t",
        "/topic/opts",
        "auto",
        &["activemq.noLocal:true"],
    );
    send(&mut plain, "/topic/opts", "own");
    send(&mut only, "/topic/opts", "other");
    let msg = next_message(&mut plain);
    assert_eq!((msg.get("subscription"), msg.text()), (Some("t"), "other"));
    plain.send(b"SUBSCRIBE\nid:x\ndestination:/queue/y\nactivemq.priority:200\n\n\0");
    plain.expect_refusal("activemq.priority \"200\" is not a number from 0 to 127");
}

#[test]
fn a_selector_subscription_gets_what_it_matches_and_a_bad_one_is_refused_at_its_token() {
    let node = Node::start(&[]);
    let mut client = node.client("1.2");
    subscribe_with(
        &mut client,
        "big",
        "/queue/sized",
        "auto",
        &["selector:size > 10 AND JMSPriority >= 5"],
    );
    send_with(
        &mut client,
        "/queue/sized",
        &["size:5", "priority:9"],
        "small",
    );
    send_with(
        &mut client,
        "/queue/sized",
        &["size:50", "priority:9"],
        "big",
    );
    send_with(&mut client, "/queue/sized", &["size:50"], "low");
    assert_eq!(next_message(&mut client).text(), "big");
    subscribe(&mut client, "rest", "/queue/sized", "auto");
    assert_eq!(bodies(&mut client, 2), ["small", "low"]);
    client.send(b"SUBSCRIBE\nid:bad\ndestination:/queue/x\nselector:size > AND x = 1\n\n\0");
    let error = client.expect_refusal("unexpected \"AND\" at column 8");
    assert!(
        error
            .unescaped("message")
            .unwrap()
            .contains("size > AND x = 1"),
        "{error:?}"
    );
}

#[test]
fn a_receipt_comes_before_what_its_frame_causes_on_the_same_connection() {
    let node = Node::start(&[]);
    let mut client = node.client("1.2");
    send(&mut client, "/queue/own", "waiting");
    // A SUBSCRIBE's RECEIPT before the messages it finds waiting.
    client.send(b"SUBSCRIBE\nid:s\ndestination:/queue/own\nreceipt:sub\n\n\0");
    let raw = &mut client.client;
    let first = raw.read_raw();
    assert_eq!(
        (first.command.as_str(), first.get("receipt-id")),
        ("RECEIPT", Some("sub"))
    );
    assert_eq!(raw.read_raw().text(), "waiting");
    // A SEND's RECEIPT before the MESSAGE it causes here, persistent (stored first) or not.
    for n in 0..100 {
        let persistent = if n % 2 == 0 { "true" } else { "false" };
        raw.send(
            format!(
                "SEND\ndestination:/queue/own\npersistent:{persistent}\nreceipt:r{n}\n\nm{n}\0"
            )
            .as_bytes(),
        );
        let receipt = raw.read_raw();
        assert_eq!(
            (receipt.command.as_str(), receipt.get("receipt-id")),
            ("RECEIPT", Some(format!("r{n}").as_str())),
            "{receipt:?}"
        );
        let message = raw.read_raw();
        assert_eq!(
            (message.command.as_str(), message.text()),
            ("MESSAGE", format!("m{n}").as_str())
        );
    }
}

#[test]
fn an_ack_of_nothing_awaiting_one_gets_an_error_and_the_connection_stays_open() {
    let node = Node::start(&[]);
    // STOMP 1.2: the node runs at epoch 1, so this id of its own epoch names nothing. (One of
    // an earlier epoch is a late ACK of the previous broker's delivery: answered, not refused.)
    let mut client = node.client("1.2");
    client.send(b"ACK\nid:1-99-1\nreceipt:r-4\n\n\0");
    let error = client.read_raw();
    assert_eq!(error.command, "ERROR", "{error:?}");
    assert_eq!(error.get("receipt-id"), Some("r-4"));
    let message = error.unescaped("message").unwrap();
    assert!(
        message.contains("no unacknowledged message has ack id \"1-99-1\""),
        "{message}"
    );
    // As ActiveMQ: the connection goes on.
    subscribe(&mut client, "s", "/queue/after-ack", "client");
    send(&mut client, "/queue/after-ack", "served");
    assert_eq!(next_message(&mut client).text(), "served");
    // STOMP 1.1 names a message-id.
    let mut old = node.client("1.1");
    old.send(b"ACK\nmessage-id:ID:nothing\nsubscription:s\n\n\0");
    let error = old.read_raw();
    assert_eq!(error.command, "ERROR", "{error:?}");
    disconnect(&mut old);
}

/// NACKs `msg` (STOMP 1.2) and waits for the receipt.
fn nack(client: &mut Session, msg: &RawFrame) {
    let id = format!("id:{}", msg.header("ack"));
    client.send_frame("NACK", &[&id, "receipt:nacked"], b"");
    client.expect_receipt("nacked");
}

#[test]
fn a_nacked_message_comes_back_after_the_redelivery_delay_then_goes_to_activemq_dlq() {
    let node = Node::start(&["--redelivery-delay-ms", "300", "--max-redeliveries", "1"]);
    let mut client = node.client("1.2");
    subscribe(&mut client, "s", "/queue/flaky", "client-individual");
    send_with(&mut client, "/queue/flaky", &["persistent:true"], "poison");
    let first = next_message(&mut client);
    let nacked = std::time::Instant::now();
    nack(&mut client, &first);
    let again = next_message(&mut client);
    assert!(
        nacked.elapsed() >= std::time::Duration::from_millis(300),
        "redelivered after {:?}",
        nacked.elapsed()
    );
    assert_eq!(
        (again.text(), again.get("redelivered")),
        ("poison", Some("true"))
    );
    nack(&mut client, &again);
    subscribe(&mut client, "dlq", "/queue/ActiveMQ.DLQ", "auto");
    let dead = next_message(&mut client);
    assert_eq!(dead.text(), "poison");
    assert_eq!(dead.get("original-destination"), Some("/queue/flaky"));
    assert!(dead.get("dlqDeliveryFailureCause").is_some(), "{dead:?}");
}

#[test]
fn a_virtual_topic_fans_out_to_its_consumer_queues() {
    let node = Node::start(&[]);
    let mut group = node.client("1.2");
    subscribe(
        &mut group,
        "a",
        "/queue/Consumer.A.VirtualTopic.Events",
        "auto",
    );
    let mut other = node.client("1.2");
    subscribe(
        &mut other,
        "b",
        "/queue/Consumer.B.VirtualTopic.Events",
        "auto",
    );
    let mut producer = node.client("1.2");
    send_with(
        &mut producer,
        "/topic/VirtualTopic.Events",
        &["persistent:true"],
        "e1",
    );
    for client in [&mut group, &mut other] {
        let msg = next_message(client);
        assert_eq!(msg.text(), "e1");
        assert!(
            msg.header("destination").ends_with(".VirtualTopic.Events"),
            "{msg:?}"
        );
    }
}

#[test]
fn a_temporary_topic_is_private_to_its_connection_and_reachable_through_reply_to() {
    let node = Node::start(&[]);
    let mut owner = node.client("1.2");
    subscribe(&mut owner, "events", "/temp-topic/events", "auto");
    send_with(
        &mut owner,
        "/queue/ask",
        &["reply-to:/temp-topic/events"],
        "question",
    );
    let mut other = node.client("1.2");
    subscribe(&mut other, "ask", "/queue/ask", "auto");
    let request = next_message(&mut other);
    let reply_to = request.header("reply-to").to_owned();
    assert!(reply_to.starts_with("/remote-temp-topic/"), "{reply_to}");
    send(&mut other, &reply_to, "event");
    let event = next_message(&mut owner);
    assert_eq!(
        (event.header("destination"), event.text()),
        ("/temp-topic/events", "event")
    );
    other.send(format!("SUBSCRIBE\nid:x\ndestination:{reply_to}\n\n\0").as_bytes());
    other.expect_refusal("belongs to another connection");
}

#[test]
fn a_16_mib_message_fans_out_to_several_topic_subscribers_by_default() {
    let node = Node::start(&[]);
    let mut subscribers: Vec<Session> = (0..3)
        .map(|n| {
            let mut client = node.client("1.2");
            subscribe(&mut client, &format!("s{n}"), "/topic/big", "auto");
            client
        })
        .collect();
    let body: Vec<u8> = (0..16 << 20).map(|i| (i % 251) as u8).collect();
    let mut producer = node.client("1.2");
    let length = format!("content-length:{}", body.len());
    producer.send_frame(
        "SEND",
        &["destination:/topic/big", "receipt:big", &length],
        &body,
    );
    producer.expect_receipt("big");
    for client in &mut subscribers {
        let msg = next_message(client);
        assert_eq!(msg.body.len(), body.len());
        assert!(msg.body == body, "the body arrives intact");
    }
}
