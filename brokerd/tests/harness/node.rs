//! STOMP sessions against a broker active in epoch 1, for the protocol-level test files: a
//! [`Node`], a [`Session`] that keeps MESSAGEs arriving before an awaited RECEIPT, and the
//! frames tests send most (each waiting for its receipt, so later frames find its effect).

use super::{Broker, Client, Dirs, RawFrame, PATIENCE};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A broker active in epoch 1 and the address clients use; the broker is killed on drop, before
/// its directory goes.
pub struct Node {
    pub broker: Broker,
    pub addr: String,
    pub _dirs: Dirs,
}

impl Node {
    pub fn start(extra: &[&str]) -> Node {
        let dirs = Dirs::new();
        let mut broker = Broker::spawn(&dirs.data, extra);
        let addr = broker.activate(1);
        Node {
            broker,
            addr,
            _dirs: dirs,
        }
    }

    /// A client connected with `accept-version:version`.
    pub fn client(&self, version: &str) -> Session {
        Session::connect(&self.addr, version)
    }

    /// A client connected with the given CONNECT headers, checking the negotiated version.
    pub fn client_with(&self, headers: &[&str], version: &str) -> Session {
        Session::open(&self.addr, headers, version)
    }

    /// Checks the broker still serves a new client fully: send, subscribe, receive, disconnect.
    pub fn assert_still_serving(&self) {
        let mut client = self.client("1.2");
        send(&mut client, "/queue/still-serving", "alive");
        subscribe(&mut client, "s", "/queue/still-serving", "auto");
        assert_eq!(next_message(&mut client).text(), "alive");
        disconnect(&mut client);
    }
}

/// A connected client that keeps the MESSAGEs that arrive before an awaited RECEIPT for later:
/// the broker may deliver what a SUBSCRIBE found waiting before it acknowledges the SUBSCRIBE.
pub struct Session {
    pub client: Client,
    pub early: VecDeque<RawFrame>,
}

impl Session {
    /// Connects with `host:test` and `headers`, checking the negotiated version.
    pub fn open(addr: &str, headers: &[&str], version: &str) -> Session {
        let mut client = Client::connect(addr);
        let mut all = vec!["host:test"];
        all.extend_from_slice(headers);
        client.send_frame("CONNECT", &all, b"");
        let connected = client.read_raw();
        assert_eq!(connected.command, "CONNECTED", "{connected:?}");
        assert_eq!(connected.get("version"), Some(version), "{connected:?}");
        Session {
            client,
            early: VecDeque::new(),
        }
    }

    /// Connects with `accept-version:version`, checking that version is negotiated.
    pub fn connect(addr: &str, version: &str) -> Session {
        Session::open(addr, &[&format!("accept-version:{version}")], version)
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.client.send(bytes);
    }

    pub fn send_frame(&mut self, command: &str, headers: &[&str], body: &[u8]) {
        self.client.send_frame(command, headers, body);
    }

    /// The next frame, MESSAGEs kept by [`Session::expect_receipt`] first.
    pub fn read_raw(&mut self) -> RawFrame {
        self.early
            .pop_front()
            .unwrap_or_else(|| self.client.read_raw())
    }

    /// Waits for the RECEIPT for `id`, keeping MESSAGEs that come first; any other frame fails.
    pub fn expect_receipt(&mut self, id: &str) {
        loop {
            let frame = self.client.read_raw();
            if frame.command == "MESSAGE" {
                self.early.push_back(frame);
                continue;
            }
            assert_eq!(
                (frame.command.as_str(), frame.get("receipt-id")),
                ("RECEIPT", Some(id)),
                "expected the RECEIPT for {id:?}, got {frame:?}"
            );
            return;
        }
    }

    /// The RECEIPT for `id` must be the very next frame: nothing was delivered before it.
    pub fn expect_receipt_now(&mut self, id: &str) {
        assert!(self.early.is_empty(), "undelivered: {:?}", self.early);
        self.client.expect_receipt(id);
    }

    /// The next frame other than MESSAGE or RECEIPT must be an ERROR whose (unescaped) `message`
    /// contains `needle`, and then the connection must close; returns the ERROR.
    pub fn expect_refusal(&mut self, needle: &str) -> RawFrame {
        let error = loop {
            let frame = self.read_raw();
            if frame.command != "RECEIPT" && frame.command != "MESSAGE" {
                break frame;
            }
        };
        assert_eq!(error.command, "ERROR", "{error:?}");
        let message = error.unescaped("message").expect("ERROR with a message");
        assert!(
            message.contains(needle),
            "ERROR message {message:?} does not mention {needle:?}"
        );
        assert_eq!(error.get("content-type"), Some("text/plain"));
        self.client.expect_eof();
        error
    }

    pub fn expect_eof(&mut self) {
        assert!(self.early.is_empty(), "undelivered: {:?}", self.early);
        self.client.expect_eof();
    }

    pub fn read_byte(&mut self) -> Option<u8> {
        self.client.read_byte()
    }
}

/// Sends `body` to `destination` with a receipt and waits for it.
pub fn send(client: &mut Session, destination: &str, body: &str) {
    send_with(client, destination, &[], body);
}

/// [`send`] with extra headers, given as wire lines.
pub fn send_with(client: &mut Session, destination: &str, extra: &[&str], body: &str) {
    let destination = format!("destination:{destination}");
    let receipt = format!("receipt:sent-{body}");
    let mut headers = vec![destination.as_str(), receipt.as_str()];
    headers.extend_from_slice(extra);
    client.send_frame("SEND", &headers, body.as_bytes());
    client.expect_receipt(&format!("sent-{body}"));
}

/// Subscribes with a receipt and waits for it, so later SENDs find the subscription.
pub fn subscribe(client: &mut Session, id: &str, destination: &str, ack: &str) {
    subscribe_with(client, id, destination, ack, &[]);
}

pub fn subscribe_with(
    client: &mut Session,
    id: &str,
    destination: &str,
    ack: &str,
    extra: &[&str],
) {
    let (id_header, destination, ack, receipt) = (
        format!("id:{id}"),
        format!("destination:{destination}"),
        format!("ack:{ack}"),
        format!("receipt:subscribed-{id}"),
    );
    let mut headers = vec![
        id_header.as_str(),
        destination.as_str(),
        ack.as_str(),
        receipt.as_str(),
    ];
    headers.extend_from_slice(extra);
    client.send_frame("SUBSCRIBE", &headers, b"");
    client.expect_receipt(&format!("subscribed-{id}"));
}

/// The next frame, which must be a MESSAGE.
pub fn next_message(client: &mut Session) -> RawFrame {
    let frame = client.read_raw();
    assert_eq!(frame.command, "MESSAGE", "{frame:?}");
    frame
}

/// Receives `n` MESSAGEs, acknowledging each at once; returns (body, redelivered header).
pub fn take_acking(client: &mut Session, n: usize) -> Vec<(String, Option<String>)> {
    (0..n)
        .map(|_| {
            let message = next_message(client);
            let id = format!("id:{}", message.header("ack"));
            client.send_frame("ACK", &[&id], b"");
            (
                message.text().to_owned(),
                message.get("redelivered").map(str::to_owned),
            )
        })
        .collect()
}

/// The bodies of the next `n` frames, which must be MESSAGEs.
pub fn bodies(client: &mut Session, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| next_message(client).text().to_owned())
        .collect()
}

/// Checks that the broker has nothing more for `client` right now: a no-op transaction's receipt
/// comes back before any MESSAGE.
pub fn assert_nothing_delivered(client: &mut Session, tag: &str) {
    let transaction = format!("transaction:probe-{tag}");
    let receipt = format!("receipt:probe-{tag}");
    client.send_frame("BEGIN", &[&transaction], b"");
    client.send_frame("ABORT", &[&transaction, &receipt], b"");
    client.expect_receipt_now(&format!("probe-{tag}"));
}

/// DISCONNECT with a receipt: the RECEIPT, then EOF.
pub fn disconnect(client: &mut Session) {
    client.send_frame("DISCONNECT", &["receipt:bye"], b"");
    client.expect_receipt("bye");
    client.expect_eof();
}

/// Waits, within [`PATIENCE`], until the broker counts `n` open client connections: how a test
/// knows the broker has seen a connection drop.
pub fn wait_for_connections(node: &mut Node, n: u64) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let open = node.broker.stats().connections;
        if open == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "broker still counts {open} connections, expected {n}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
