//! The client against a scripted in-test STOMP server on 127.0.0.1:0 that can misbehave on
//! cue: close mid-stream, refuse, send ERROR, go silent. No broker of this workspace is needed.
//! Every wait is bounded; nothing asserts on timing.

use bytes::BytesMut;
use std::time::Duration;
use stomp_client::{AckMode, Client, Error, Event, HeartBeat, Options};
use stomp_codec::frame::{encode, parse, Frame, Limits};
use stomp_codec::Version;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WAIT: Duration = Duration::from_secs(10);

async fn bounded<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// A scripted broker: each accepted connection is driven by the test, frame by frame.
struct Mock {
    listener: TcpListener,
    addr: String,
}

impl Mock {
    async fn bind() -> Mock {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        Mock { listener, addr }
    }

    async fn accept(&self) -> Peer {
        let (stream, _) = bounded("a connection", self.listener.accept())
            .await
            .unwrap();
        Peer {
            stream,
            buf: BytesMut::new(),
        }
    }

    /// Accepts and completes the STOMP 1.2 handshake (no heart-beats).
    async fn accept_connected(&self) -> Peer {
        let mut peer = self.accept().await;
        peer.handshake("0,0").await;
        peer
    }

    /// A client connected to this broker alone (`query` appended to the failover URL), and the
    /// broker's end of that connection, handshake done.
    async fn connected(&self, query: &str, options: Options) -> (Client, Peer) {
        let (client, peer) = tokio::join!(
            connect(url(&[&self.addr], query), options),
            self.accept_connected()
        );
        (client.unwrap(), peer)
    }
}

/// Subscribes while the broker's end confirms the SUBSCRIBE; returns both.
async fn subscribed(
    client: &Client,
    peer: &mut Peer,
    destination: &str,
    ack: AckMode,
    headers: &[(&str, &str)],
) -> (stomp_client::Subscription, Frame) {
    let (sub, frame) = tokio::join!(
        client.subscribe(destination, ack, headers),
        peer.subscribed()
    );
    (sub.unwrap(), frame)
}

/// An address nothing listens on.
async fn dead_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().to_string()
}

struct Peer {
    stream: TcpStream,
    buf: BytesMut,
}

impl Peer {
    async fn next(&mut self) -> Frame {
        bounded("a frame from the client", async {
            loop {
                let limits = Limits::default();
                if let Some((frame, used)) = parse(&self.buf, &limits, Version::V1_2).unwrap() {
                    let _ = self.buf.split_to(used);
                    return frame;
                }
                let n = self.stream.read_buf(&mut self.buf).await.unwrap();
                assert!(n > 0, "client closed the connection");
            }
        })
        .await
    }

    async fn expect(&mut self, command: &str) -> Frame {
        let frame = self.next().await;
        assert_eq!(frame.command, command, "{frame:?}");
        frame
    }

    async fn put(&mut self, command: &str, headers: &[(&str, &str)], body: &[u8]) {
        let mut out = BytesMut::new();
        encode(
            &mut out,
            command,
            headers.iter().copied(),
            body,
            Version::V1_2,
        );
        self.stream.write_all(&out).await.unwrap();
    }

    async fn handshake(&mut self, heart_beat: &str) -> Frame {
        let connect = self.expect("CONNECT").await;
        self.put(
            "CONNECTED",
            &[("version", "1.2"), ("heart-beat", heart_beat)],
            b"",
        )
        .await;
        connect
    }

    async fn receipt(&mut self, frame: &Frame) {
        let id = frame.get("receipt").expect("a receipt header").to_string();
        self.put("RECEIPT", &[("receipt-id", &id)], b"").await;
    }

    /// Reads the SUBSCRIBE and confirms it.
    async fn subscribed(&mut self) -> Frame {
        let sub = self.expect("SUBSCRIBE").await;
        self.receipt(&sub).await;
        sub
    }

    async fn message(&mut self, sub: &Frame, id: &str, body: &[u8]) {
        let subscription = sub.get("id").unwrap().to_string();
        let destination = sub.get("destination").unwrap().to_string();
        self.put(
            "MESSAGE",
            &[
                ("subscription", &subscription),
                ("message-id", id),
                ("ack", &format!("ack-{id}")),
                ("destination", &destination),
            ],
            body,
        )
        .await;
    }
}

async fn connect(url: String, options: Options) -> Result<Client, Error> {
    Client::connect(&url, options).await
}

fn url(addrs: &[&str], query: &str) -> String {
    let list: Vec<String> = addrs.iter().map(|a| format!("tcp://{a}")).collect();
    format!(
        "failover:({})?randomize=false&initialReconnectDelay=1&maxReconnectDelay=20{query}",
        list.join(",")
    )
}

fn quiet() -> Options {
    Options {
        heart_beat: HeartBeat {
            send: Duration::ZERO,
            receive: Duration::ZERO,
        },
        ..Options::default()
    }
}

#[tokio::test]
async fn connects_to_the_first_address_that_answers_connect() {
    let mock = Mock::bind().await;
    let dead = dead_address().await;
    let (client, _peer) = tokio::join!(
        connect(url(&[&dead, &mock.addr], ""), quiet()),
        mock.accept_connected()
    );
    let client = client.unwrap();
    assert_eq!(client.stats().address.as_deref(), Some(mock.addr.as_str()));
    assert_eq!(client.stats().reconnects, 0);
}

#[tokio::test]
async fn connect_sends_credentials_and_a_refusal_is_reported_at_once() {
    let mock = Mock::bind().await;
    let options = Options {
        login: Some("alice".into()),
        passcode: Some("p:w".into()),
        ..quiet()
    };
    let script = async {
        let mut peer = mock.accept().await;
        let connect = peer.expect("CONNECT").await;
        assert_eq!(connect.get("login"), Some("alice"));
        assert_eq!(connect.get("passcode"), Some("p:w"));
        assert_eq!(connect.get("accept-version"), Some("1.0,1.1,1.2"));
        peer.put("ERROR", &[("message", "bad credentials")], b"")
            .await;
        peer
    };
    let (result, _peer) = tokio::join!(connect(url(&[&mock.addr], ""), options), script);
    match result {
        Err(Error::Refused { message, .. }) => assert_eq!(message, "bad credentials"),
        Err(other) => panic!("expected a refusal, got {other}"),
        Ok(_) => panic!("expected a refusal, got a client"),
    }
}

#[tokio::test]
async fn startup_gives_up_after_startup_max_reconnect_attempts() {
    let dead = dead_address().await;
    let result = connect(url(&[&dead], "&startupMaxReconnectAttempts=3"), quiet()).await;
    match result {
        Err(Error::GaveUp { passes, .. }) => assert_eq!(passes, 3),
        Err(other) => panic!("expected GaveUp, got {other}"),
        Ok(_) => panic!("nothing listens there"),
    }
}

#[tokio::test]
async fn resubscribes_and_resends_unreceipted_sends_after_a_dropped_connection() {
    let mock = Mock::bind().await;
    let (client, mut peer) = mock.connected("", quiet()).await;
    let mut events = client.events();

    let headers = [("activemq.prefetchSize", "10")];
    let (mut sub, first) = subscribed(
        &client,
        &mut peer,
        "/queue/a",
        AckMode::ClientIndividual,
        &headers,
    )
    .await;
    assert_eq!(first.get("ack"), Some("client-individual"));

    let mut receipts = Vec::new();
    for i in 0..3 {
        let body = format!("m{i}");
        receipts.push(
            client
                .send("/queue/a", &[("persistent", "true")], body)
                .await
                .unwrap(),
        );
    }
    let mut sends = Vec::new();
    for _ in 0..3 {
        sends.push(peer.expect("SEND").await);
    }
    assert_eq!(sends[0].get("persistent"), Some("true"));
    peer.receipt(&sends[0]).await;
    peer.message(&first, "old", b"delivered before the drop")
        .await;
    let old = bounded("the first message", sub.next()).await.unwrap();
    bounded("the first receipt", receipts.remove(0))
        .await
        .unwrap();
    drop(peer); // the broker dies with two SENDs unreceipted

    let mut peer = mock.accept_connected().await;
    let again = peer.expect("SUBSCRIBE").await;
    assert_eq!(again.get("receipt"), None, "already confirmed once");
    for name in ["id", "destination", "ack", "activemq.prefetchSize"] {
        assert_eq!(again.get(name), first.get(name), "{name}");
    }
    let resent = [peer.expect("SEND").await, peer.expect("SEND").await];
    assert_eq!(&resent[0].body[..], b"m1");
    assert_eq!(&resent[1].body[..], b"m2");
    for frame in &resent {
        peer.receipt(frame).await;
    }
    for receipt in receipts {
        bounded("a resent receipt", receipt).await.unwrap();
    }
    let stats = client.stats();
    assert_eq!((stats.reconnects, stats.resent), (1, 2));

    // An ack for a message of the old connection is dropped (the broker already put it
    // back); the new delivery is acked with the 1.2 `id` header.
    client.ack(&old).await.unwrap();
    peer.message(&again, "new", b"after").await;
    let new = bounded("the redelivery", sub.next()).await.unwrap();
    assert_eq!(&new.body[..], b"after");
    client.ack(&new).await.unwrap();
    let ack = peer.expect("ACK").await;
    assert_eq!(ack.get("id"), Some("ack-new"));

    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        seen.push(event);
    }
    // The first connection's event may or may not be seen; the outage must be.
    let lost = seen
        .iter()
        .position(|e| matches!(e, Event::Lost { .. }))
        .unwrap_or_else(|| panic!("{seen:?}"));
    assert!(
        matches!(
            &seen[lost + 1],
            Event::Connected {
                reconnect: true,
                resent: 2,
                ..
            }
        ),
        "{seen:?}"
    );
}

#[tokio::test]
async fn an_error_frame_fails_over_to_the_next_broker() {
    let (a, b) = (Mock::bind().await, Mock::bind().await);
    let (client, mut peer) = tokio::join!(
        connect(url(&[&a.addr, &b.addr], ""), quiet()),
        a.accept_connected()
    );
    let client = client.unwrap();
    let receipt = client.send("/queue/x", &[], "payload").await.unwrap();
    peer.expect("SEND").await;
    peer.put("ERROR", &[("message", "going passive, reconnect")], b"")
        .await;
    // The broker that failed is tried last, so the client lands on b.
    let mut other = b.accept_connected().await;
    let send = other.expect("SEND").await;
    assert_eq!(&send.body[..], b"payload");
    other.receipt(&send).await;
    bounded("the receipt from b", receipt).await.unwrap();
    assert_eq!(client.stats().address.as_deref(), Some(b.addr.as_str()));
}

#[tokio::test]
async fn an_error_naming_a_send_rejects_it_instead_of_resending() {
    let mock = Mock::bind().await;
    let (client, mut peer) = mock.connected("", quiet()).await;
    let rejected = client.send("/queue/forbidden", &[], "x").await.unwrap();
    let send = peer.expect("SEND").await;
    let id = send.get("receipt").unwrap().to_string();
    peer.put(
        "ERROR",
        &[("message", "no such destination"), ("receipt-id", &id)],
        b"",
    )
    .await;
    match bounded("the rejection", rejected).await {
        Err(Error::Rejected(text)) => assert!(text.contains("no such destination")),
        other => panic!("expected a rejection, got {other:?}"),
    }
    let mut peer = mock.accept_connected().await;
    let next = client.send("/queue/ok", &[], "y").await.unwrap();
    let send = peer.expect("SEND").await;
    assert_eq!(
        send.get("destination"),
        Some("/queue/ok"),
        "the rejected SEND was not resent"
    );
    peer.receipt(&send).await;
    bounded("the next receipt", next).await.unwrap();
}

#[tokio::test]
async fn gives_up_after_max_reconnect_attempts_and_fails_pending_sends() {
    let mock = Mock::bind().await;
    let (client, mut peer) = mock.connected("&maxReconnectAttempts=2", quiet()).await;
    let mut events = client.events();
    let receipt = client.send("/queue/a", &[], "z").await.unwrap();
    peer.expect("SEND").await;
    drop(peer);
    drop(mock); // nothing listens any more
    match bounded("giving up", receipt).await {
        Err(Error::GaveUp { passes, .. }) => assert_eq!(passes, 2),
        other => panic!("expected GaveUp, got {other:?}"),
    }
    let gave_up = bounded("the GaveUp event", async {
        loop {
            if let Event::GaveUp { error } = events.recv().await.unwrap() {
                return error;
            }
        }
    })
    .await;
    assert!(gave_up.contains("passes"), "{gave_up}");
    assert!(matches!(
        client.send("/queue/a", &[], "late").await,
        Err(Error::GaveUp { .. })
    ));
}

#[tokio::test]
async fn a_silent_broker_is_dropped_after_missed_heart_beats() {
    let mock = Mock::bind().await;
    let options = Options {
        heart_beat: HeartBeat {
            send: Duration::from_millis(20),
            receive: Duration::from_millis(20),
        },
        ..Options::default()
    };
    let script = async {
        let mut peer = mock.accept().await;
        let connect = peer.handshake("20,20").await;
        assert_eq!(connect.get("heart-beat"), Some("20,20"));
        peer
    };
    let (client, mut silent) = tokio::join!(connect(url(&[&mock.addr], ""), options), script);
    let client = client.unwrap();
    // The client beats (EOLs, which read_frame skips) but the broker never answers: it is
    // dropped and the client comes back on a new connection.
    let mut beats = [0u8; 16];
    let n = bounded("a heart-beat", silent.stream.read(&mut beats))
        .await
        .unwrap();
    assert!(n > 0 && beats[..n].iter().all(|&b| b == b'\n'));
    let _second = mock.accept_connected().await;
    bounded("the reconnect", async {
        while client.stats().reconnects == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_transaction_cut_by_a_reconnect_fails_its_commit() {
    let mock = Mock::bind().await;
    let (client, mut peer) = mock.connected("", quiet()).await;
    let tx = client.begin().await.unwrap();
    tx.send("/queue/t", &[], "in tx").await.unwrap();
    let begin = peer.expect("BEGIN").await;
    let send = peer.expect("SEND").await;
    assert_eq!(send.get("transaction"), begin.get("transaction"));
    drop(peer);
    let _peer = mock.accept_connected().await;
    bounded("the reconnect", async {
        while client.stats().reconnects == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(matches!(
        bounded("commit", tx.commit()).await,
        Err(Error::TransactionLost(_))
    ));
}

#[tokio::test]
async fn a_transactional_ack_for_a_message_of_an_earlier_connection_fails_the_commit() {
    // The broker put that message back when the connection dropped; a COMMIT confirmed without
    // its ack would tell the application the message was consumed when it will come again.
    let mock = Mock::bind().await;
    let (client, mut peer) = mock.connected("", quiet()).await;
    let (mut sub, frame) = subscribed(
        &client,
        &mut peer,
        "/queue/q",
        AckMode::ClientIndividual,
        &[],
    )
    .await;
    peer.message(&frame, "0", b"first connection").await;
    let message = bounded("the message", sub.next()).await.unwrap();
    drop(peer);
    let mut peer = mock.accept_connected().await;
    peer.expect("SUBSCRIBE").await;
    let tx = client.begin().await.unwrap();
    tx.ack(&message).await.unwrap();
    let begin = peer.expect("BEGIN").await;
    let abort = peer.expect("ABORT").await;
    assert_eq!(abort.get("transaction"), begin.get("transaction"));
    assert!(matches!(
        bounded("commit", tx.commit()).await,
        Err(Error::TransactionLost(_))
    ));
}

#[tokio::test]
async fn commit_and_disconnect_wait_for_their_receipts() {
    let mock = Mock::bind().await;
    let (client, mut peer) = mock.connected("", quiet()).await;
    let broker = async move {
        peer.expect("BEGIN").await;
        peer.expect("SEND").await;
        let commit = peer.expect("COMMIT").await;
        peer.receipt(&commit).await;
        let send = peer.expect("SEND").await;
        // DISCONNECT must wait until this SEND is receipted.
        peer.receipt(&send).await;
        let bye = peer.expect("DISCONNECT").await;
        peer.receipt(&bye).await;
    };
    let work = async {
        let tx = client.begin().await.unwrap();
        tx.send("/queue/t", &[], "a").await.unwrap();
        tx.commit().await.unwrap();
        let receipt = client.send("/queue/t", &[], "b").await.unwrap();
        client.clone().disconnect().await.unwrap();
        receipt.await.unwrap();
    };
    bounded("commit and disconnect", async {
        tokio::join!(broker, work)
    })
    .await;
}

#[tokio::test]
async fn bodies_with_nul_bytes_and_escaped_headers_reach_the_subscriber() {
    let mock = Mock::bind().await;
    let (client, mut peer) = mock.connected("", quiet()).await;
    let (mut sub, frame) = subscribed(&client, &mut peer, "/topic/t", AckMode::Auto, &[]).await;
    let subscription = frame.get("id").unwrap().to_string();
    peer.put(
        "MESSAGE",
        &[
            ("subscription", &subscription),
            ("message-id", "1"),
            ("destination", "/topic/t"),
            ("custom", "a:b\nc"),
        ],
        b"\0binary\0",
    )
    .await;
    let message = bounded("the message", sub.next()).await.unwrap();
    assert_eq!(&message.body[..], b"\0binary\0");
    assert_eq!(message.header("custom"), Some("a:b\nc"));
    // Auto mode: acking is a no-op, nothing reaches the broker.
    client.ack(&message).await.unwrap();
}

#[tokio::test]
async fn a_backlog_delivered_before_the_subscribe_receipt_does_not_deadlock() {
    // Regression: a broker that pushes its backlog before the RECEIPT filled the subscription
    // buffer, the client stopped reading, and `subscribe` waited for a RECEIPT it never read.
    let mock = Mock::bind().await;
    let options = Options {
        subscription_buffer: 2,
        ..quiet()
    };
    let (client, mut peer) = mock.connected("", options).await;
    let broker = async {
        let sub = peer.expect("SUBSCRIBE").await;
        for i in 0..20 {
            peer.message(&sub, &i.to_string(), b"backlog").await;
        }
        peer.receipt(&sub).await;
    };
    let (sub, ()) = tokio::join!(
        bounded(
            "subscribe",
            client.subscribe("/queue/b", AckMode::Auto, &[])
        ),
        broker
    );
    let mut sub = sub.unwrap();
    for i in 0..20 {
        let message = bounded("the backlog", sub.next()).await.unwrap();
        assert_eq!(message.message_id(), Some(i.to_string().as_str()));
    }
}

#[tokio::test]
async fn acks_queued_before_disconnect_reach_the_broker_before_it() {
    let mock = Mock::bind().await;
    let (client, mut peer) = mock.connected("", quiet()).await;
    let (mut sub, frame) = subscribed(
        &client,
        &mut peer,
        "/queue/q",
        AckMode::ClientIndividual,
        &[],
    )
    .await;
    for i in 0..3 {
        peer.message(&frame, &i.to_string(), b"m").await;
    }
    let consumer = async {
        for _ in 0..3 {
            let message = sub.next().await.unwrap();
            client.ack(&message).await.unwrap();
        }
        client.clone().disconnect().await.unwrap();
    };
    let broker = async {
        for i in 0..3 {
            let ack = peer.expect("ACK").await;
            assert_eq!(ack.get("id"), Some(format!("ack-{i}").as_str()));
        }
        let bye = peer.expect("DISCONNECT").await;
        peer.receipt(&bye).await;
    };
    bounded("acks, then DISCONNECT", async {
        tokio::join!(consumer, broker)
    })
    .await;
}

/// The first connection of the salvage tests: subscribes with a one-message buffer, sends
/// messages 0-4 (the application takes none of them yet, so 1 stalls and 2-4 stay unread), then
/// closes the connection, which the client only notices when a heart-beat write fails (it reads
/// nothing while a message is stalled). Returns the client and the subscription.
async fn deliver_then_vanish(mock: &Mock, ack: AckMode) -> (Client, stomp_client::Subscription) {
    let options = Options {
        subscription_buffer: 1,
        heart_beat: HeartBeat {
            send: Duration::from_millis(20),
            receive: Duration::ZERO,
        },
        ..quiet()
    };
    let (client, mut peer) = tokio::join!(connect(url(&[&mock.addr], ""), options), async {
        let mut peer = mock.accept().await;
        // The broker wants a heart-beat every 20 ms and sends none.
        peer.handshake("0,20").await;
        peer
    });
    let client = client.unwrap();
    let (sub, frame) = subscribed(&client, &mut peer, "/queue/q", ack, &[]).await;
    for i in 0..5 {
        peer.message(&frame, &i.to_string(), b"first connection")
            .await;
    }
    // FIN after the messages; then, once a heart-beat shows the client is still writing, the
    // socket goes away for good, and the client's next heart-beat fails.
    peer.stream.shutdown().await.unwrap();
    let mut beat = [0u8; 1];
    bounded("a heart-beat", peer.stream.read_exact(&mut beat))
        .await
        .unwrap();
    drop(peer);
    (client, sub)
}

#[tokio::test]
async fn auto_ack_messages_received_before_a_connection_is_lost_still_reach_the_application() {
    // In auto mode the broker counts a message as consumed once it wrote it: dropping the
    // stalled one and the unread ones on reconnect would lose them for good.
    let mock = Mock::bind().await;
    let (client, mut sub) = deliver_then_vanish(&mock, AckMode::Auto).await;
    let mut peer = mock.accept_connected().await;
    // Renewed without a receipt: it was confirmed the first time.
    let frame = peer.expect("SUBSCRIBE").await;
    peer.message(&frame, "5", b"second connection").await;
    let mut ids = Vec::new();
    for _ in 0..6 {
        let message = bounded("a message", sub.next()).await.unwrap();
        ids.push(message.message_id().unwrap().to_string());
    }
    assert_eq!(ids, ["0", "1", "2", "3", "4", "5"]);
    assert_eq!(client.stats().reconnects, 1);
}

#[tokio::test]
async fn client_ack_messages_not_yet_taken_are_left_to_the_broker_to_deliver_again() {
    // The broker still owns them and delivers them again on the next connection; handing over
    // the first connection's copies too would duplicate them (and their acks could not be sent).
    let mock = Mock::bind().await;
    let (client, mut sub) = deliver_then_vanish(&mock, AckMode::ClientIndividual).await;
    let mut peer = mock.accept_connected().await;
    // Renewed without a receipt: it was confirmed the first time.
    let frame = peer.expect("SUBSCRIBE").await;
    for i in 1..6 {
        let id = i.to_string();
        let ack = format!("again-{i}");
        peer.put(
            "MESSAGE",
            &[
                ("subscription", frame.get("id").unwrap()),
                ("message-id", &id),
                ("ack", &ack),
                ("destination", "/queue/q"),
                ("redelivered", if i < 5 { "true" } else { "false" }),
            ],
            b"second connection",
        )
        .await;
    }
    let mut got = Vec::new();
    for _ in 0..6 {
        let message = bounded("a message", sub.next()).await.unwrap();
        got.push((
            message.message_id().unwrap().to_string(),
            String::from_utf8_lossy(&message.body).into_owned(),
        ));
        client.ack(&message).await.unwrap();
    }
    let first = "first connection".to_string();
    let second = "second connection".to_string();
    assert_eq!(got[0], ("0".to_string(), first));
    for (i, message) in got[1..].iter().enumerate() {
        assert_eq!(message, &((i + 1).to_string(), second.clone()));
    }
    // Only the second connection's messages are acked on it; the first one's ack is dropped.
    for i in 1..6 {
        let ack = peer.expect("ACK").await;
        assert_eq!(ack.get("id"), Some(format!("again-{i}").as_str()));
    }
}
