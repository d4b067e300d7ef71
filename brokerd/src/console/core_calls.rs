//! The console's calls to the broker core: figures, purge, a test SEND and a browse.
//!
//! A SEND and a browse go through the core as a session's would, on a connection of the console
//! opened for the one call ([`Call`]) and closed after it: the core applies its own rules
//! (draining, caps, durability before the receipt, a browser's snapshot including paged-out
//! messages), and the users file's authorisation entries apply to the logged-in user as to a
//! STOMP client. Every wait is bounded by [`WAIT`].

use super::Shared;
use crate::auth::{Access, Guard, Operation};
use crate::broker::message::Published;
use crate::broker::{names, AckMode, Figures, Opening, Outbound, Request, SubscribeSpec};
use crate::destination_calls;
use bytes::Bytes;
use serde::Serialize;
use shared_proto::control::FromBroker;
use shared_proto::destinations::{DestinationAnswer, DestinationCall};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How long the console waits for the core (or the scheduler) before it says so.
pub const WAIT: Duration = Duration::from_secs(5);

/// Console connections are numbered from here: the server numbers client sessions up from 1,
/// so the two never meet.
pub const FIRST_CONN: u64 = 1 << 62;

/// A browse shows at most this many messages.
pub const BROWSE_LIMIT: u32 = 50;

/// Bytes of a message body shown in a browse, at most.
pub const PREVIEW_BYTES: usize = 1024;

/// A message as a browse shows it.
#[derive(Debug, Serialize)]
pub struct Browsed {
    pub id: String,
    pub timestamp_unix_ms: u64,
    pub persistent: bool,
    pub priority: u8,
    pub redeliveries: u32,
    pub headers: Vec<(String, String)>,
    /// The body's first [`PREVIEW_BYTES`], as text (invalid UTF-8 replaced).
    pub body: String,
    pub body_bytes: usize,
    pub truncated: bool,
}

/// The core's figures: `None` if it does not answer within [`WAIT`] (it is stopping).
pub async fn figures(shared: &Shared) -> Option<Figures> {
    let (tx, rx) = oneshot::channel();
    let ask = async {
        shared.parts.broker.send(Request::Figures(tx)).await.ok()?;
        rx.await.ok()
    };
    tokio::time::timeout(WAIT, ask).await.ok().flatten()
}

/// Purges `queue` as `ctl purge` does; how many messages went, or why none did.
pub async fn purge(shared: &Shared, queue: &str) -> Result<u64, String> {
    let call = DestinationCall::Purge {
        queue: queue.to_owned(),
    };
    match destination_calls::answer(&shared.parts.broker, 0, call).await {
        FromBroker::Destinations {
            answer: DestinationAnswer::Purged { removed },
            ..
        } => Ok(removed),
        FromBroker::Destinations {
            answer: DestinationAnswer::Refused { message },
            ..
        }
        | FromBroker::CallFailed { message, .. } => Err(message),
        other => Err(format!("unexpected answer from the broker: {other:?}")),
    }
}

/// Sends a persistent text message to `destination` as `access`; returns once it is durable
/// (the core's receipt).
pub async fn send(
    shared: &Shared,
    access: &Access,
    destination: &str,
    body: &str,
) -> Result<(), String> {
    let mut call = Call::open(shared, access).await?;
    call.permit(Operation::Write, destination)?;
    let length = body.len().to_string();
    let headers: Vec<(String, String)> = [
        ("destination", destination),
        ("persistent", "true"),
        ("content-type", "text/plain"),
        ("content-length", &length),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_owned(), v.to_owned()))
    .collect();
    let published = Published::from_headers(&headers).map_err(|e| e.to_string())?;
    call.ask(Request::Send {
        conn: call.conn,
        published,
        body: Bytes::copy_from_slice(body.as_bytes()),
        transaction: None,
        receipt: Some("console".into()),
    })
    .await?;
    match call.next().await? {
        Outbound::Receipt(_) => Ok(()),
        other => Err(refusal(other)),
    }
}

/// The first [`BROWSE_LIMIT`] messages waiting on `queue`, without consuming them (a queue
/// browser's snapshot, paged-out messages included), as `access`.
pub async fn browse(shared: &Shared, access: &Access, queue: &str) -> Result<Vec<Browsed>, String> {
    let mut call = Call::open(shared, access).await?;
    call.permit(Operation::Read, queue)?;
    let spec = SubscribeSpec {
        id: "console-browse".into(),
        destination: queue.to_owned(),
        ack: AckMode::Auto,
        // Credit for exactly what is shown: the core stops there.
        prefetch: BROWSE_LIMIT,
        durable_name: None,
        browser: true,
        options: Default::default(),
    };
    call.ask(Request::Subscribe {
        conn: call.conn,
        spec,
        receipt: Some("console".into()),
    })
    .await?;
    let mut browsed = Vec::new();
    while browsed.len() < BROWSE_LIMIT as usize {
        match call.next().await? {
            Outbound::Receipt(_) => {}
            Outbound::Message { msg, .. } => browsed.push(preview(&msg)),
            Outbound::BrowseEnd { .. } => break,
            other => return Err(refusal(other)),
        }
    }
    Ok(browsed)
}

fn preview(msg: &crate::broker::message::Message) -> Browsed {
    let shown = &msg.body[..msg.body.len().min(PREVIEW_BYTES)];
    Browsed {
        id: msg.id.to_string(),
        timestamp_unix_ms: msg.timestamp,
        persistent: msg.persistent,
        priority: msg.priority,
        redeliveries: msg.redeliveries,
        headers: msg.headers.clone(),
        body: String::from_utf8_lossy(shown).into_owned(),
        body_bytes: msg.body.len(),
        truncated: shown.len() < msg.body.len(),
    }
}

/// Why the core refused a call, from the frame it sent instead of the expected one.
fn refusal(frame: Outbound) -> String {
    match frame {
        Outbound::Error { message, .. } | Outbound::Warning { message, .. } => message,
        other => format!("unexpected answer from the broker: {other:?}"),
    }
}

/// A console connection to the core for one call; closed when dropped.
struct Call {
    conn: u64,
    broker: mpsc::Sender<Request>,
    outbox: mpsc::UnboundedReceiver<Outbound>,
    guard: Guard,
}

impl Call {
    async fn open(shared: &Shared, access: &Access) -> Result<Call, String> {
        let conn = FIRST_CONN + shared.next_conn.fetch_add(1, Ordering::Relaxed);
        let session = format!("console-{}-{conn}", shared.parts.node);
        let (outbox_tx, outbox) = mpsc::unbounded_channel();
        let (verdict, verdict_rx) = oneshot::channel();
        let call = Call {
            conn,
            broker: shared.parts.broker.clone(),
            outbox,
            guard: Guard::new(access.clone(), names::temporary_prefix(&session)),
        };
        call.ask(Request::Open(Opening {
            conn,
            session,
            client_id: None,
            peer: "web console".into(),
            access: Some(access.clone()),
            outbox: outbox_tx,
            verdict,
        }))
        .await?;
        match tokio::time::timeout(WAIT, verdict_rx).await {
            Ok(Ok(Ok(()))) => Ok(call),
            Ok(Ok(Err(message))) => Err(message),
            Ok(Err(_)) => Err(stopping()),
            Err(_) => Err(silent()),
        }
    }

    /// The users file's authorisation entries, as a STOMP client's SEND or SUBSCRIBE meets them.
    fn permit(&mut self, op: Operation, destination: &str) -> Result<(), String> {
        self.guard.check(op, destination).map_err(|d| d.detail())
    }

    async fn ask(&self, request: Request) -> Result<(), String> {
        match tokio::time::timeout(WAIT, self.broker.send(request)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(stopping()),
            Err(_) => Err(silent()),
        }
    }

    async fn next(&mut self) -> Result<Outbound, String> {
        match tokio::time::timeout(WAIT, self.outbox.recv()).await {
            Ok(Some(frame)) => Ok(frame),
            Ok(None) => Err(stopping()),
            Err(_) => Err(silent()),
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        let (broker, conn) = (self.broker.clone(), self.conn);
        // The core must hear of the end (its subscription ends, its copies go), even from a
        // handler cut short: a task of its own, since Drop cannot wait.
        tokio::spawn(async move {
            let _ = broker.send(Request::Close { conn }).await;
        });
    }
}

fn stopping() -> String {
    "the broker is stopping: this node no longer serves".into()
}

fn silent() -> String {
    format!(
        "the broker did not answer within {} s (busy, or stopping)",
        WAIT.as_secs()
    )
}
