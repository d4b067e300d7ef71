//! One client's STOMP session, from its CONNECT to the closing of its socket.
//!
//! The first frame must be CONNECT (or STOMP); after that each frame is dispatched by its
//! [`Command`]. Anything the broker cannot accept ends the session with an ERROR frame that
//! says why, then a close: a bad client only ever affects its own connection. When the node goes
//! passive, every session sends its client an ERROR saying so and closes.

use super::command::Command;
use super::connection::{Connection, ConnectionError};
use super::frame::Frame;
use super::Version;
use crate::stats::Stats;
use std::sync::Arc;
use tokio::sync::watch;
use tracing::debug;

/// The `server` header of CONNECTED frames.
const SERVER: &str = concat!("brokerd/", env!("CARGO_PKG_VERSION"));

/// Why the server ends every session: `Some(reason)` once the node is going passive.
pub type Passive = watch::Receiver<Option<Arc<str>>>;

/// What a session gets from the server that accepted it.
#[derive(Debug)]
pub struct SessionContext {
    /// Unique session id, sent to the client in CONNECTED.
    pub id: String,
    /// Broker-wide counters.
    pub stats: Arc<Stats>,
    /// Tells the session the node is going passive.
    pub passive: Passive,
}

/// What to do after handling a frame.
enum Flow {
    /// Read the next frame.
    Continue,
    /// The session is over; close the connection.
    Close,
}

/// An ERROR frame about to end the session.
struct Refusal {
    message: String,
    detail: String,
    receipt: Option<String>,
}

impl Refusal {
    fn new(message: impl Into<String>, detail: impl Into<String>) -> Self {
        Refusal {
            message: message.into(),
            detail: detail.into(),
            receipt: None,
        }
    }

    /// Answers the frame's `receipt` header with `receipt-id`, so the client can tell which of
    /// its frames was refused.
    fn answering(mut self, frame: &Frame) -> Self {
        self.receipt = frame.get("receipt").map(str::to_owned);
        self
    }

    fn into_frame(self) -> Frame {
        let mut frame = Frame::new("ERROR")
            .with_header("message", self.message)
            .with_header("content-type", "text/plain");
        if let Some(receipt) = self.receipt {
            frame = frame.with_header("receipt-id", receipt);
        }
        frame.with_body(format!("{}\n", self.detail))
    }
}

/// The ERROR frame that tells a client the node stops serving, so it fails over.
pub fn going_passive_frame(reason: &str) -> Frame {
    Refusal::new(
        format!("node going passive ({reason}); reconnect to another node"),
        "This broker node is handing over to another node. Reconnect through your failover \
         URL; messages already receipted as persistent are kept.",
    )
    .into_frame()
}

/// Serves one client until its session ends, then closes the connection.
pub async fn run(mut conn: Connection, mut ctx: SessionContext) {
    let mut connected = false;
    loop {
        let read = tokio::select! {
            read = conn.read_frame() => read,
            reason = passive(&mut ctx.passive) => {
                debug!(%reason, "closing session: node going passive");
                send(&mut conn, going_passive_frame(&reason)).await;
                break;
            }
        };
        let frame = match read {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                debug!("client closed the connection");
                break;
            }
            Err(ConnectionError::Frame(err)) => {
                debug!(error = %err, "refusing a malformed frame");
                let refusal = Refusal {
                    message: format!("malformed frame: {err}"),
                    detail: "The frame could not be read, so the connection is out of step \
                             and is closed."
                        .into(),
                    receipt: err.receipt,
                };
                send(&mut conn, refusal.into_frame()).await;
                break;
            }
            Err(err) => {
                debug!(error = %err, "client connection ended");
                break;
            }
        };
        ctx.stats.frame_received();
        let handled = if connected {
            handle(&mut conn, &frame).await
        } else {
            connect(&mut conn, &ctx.id, &frame).await
        };
        match handled {
            // Only an accepted CONNECT gets here before the session is connected.
            Ok(Flow::Continue) => connected = true,
            Ok(Flow::Close) => break,
            Err(refusal) => {
                debug!(message = %refusal.message, "refusing a frame");
                send(&mut conn, refusal.into_frame()).await;
                break;
            }
        }
    }
    conn.close().await;
}

/// Resolves with the reason once the node goes passive; never resolves otherwise.
async fn passive(rx: &mut Passive) -> Arc<str> {
    let reason = rx
        .wait_for(Option::is_some)
        .await
        .ok()
        .and_then(|reason| reason.as_ref().map(Arc::clone));
    match reason {
        Some(reason) => reason,
        // The server keeps the sender until every session has ended, so this only happens
        // while the server itself is being torn down.
        None => std::future::pending().await,
    }
}

/// Writes a frame the session cannot continue without; a failed write means the client is gone,
/// which ends the session just as well.
async fn send(conn: &mut Connection, frame: Frame) {
    if let Err(err) = conn.write_frame(&frame).await {
        debug!(error = %err, command = %frame.command, "could not write to client");
    }
}

/// Handles the first frame: it must be CONNECT or STOMP, and the versions must meet.
async fn connect(conn: &mut Connection, id: &str, frame: &Frame) -> Result<Flow, Refusal> {
    if Command::of(frame) != Command::Connect {
        return Err(Refusal::new(
            format!(
                "expected CONNECT or STOMP as the first frame, got {}",
                frame.command
            ),
            "A STOMP session starts with a CONNECT (or STOMP) frame.",
        )
        .answering(frame));
    }
    let offered = frame.get("accept-version");
    let Some(version) = Version::negotiate(offered) else {
        // The one refusal with an extra header: `version` lists what we speak.
        let mut refusal = Refusal::new(
            format!(
                "supported protocol versions are {}",
                Version::supported_list()
            ),
            format!(
                "The client accepts versions {:?}; this broker speaks {}.",
                offered.unwrap_or_default(),
                Version::supported_list()
            ),
        )
        .into_frame();
        refusal
            .headers
            .push(("version".into(), Version::supported_list()));
        send(conn, refusal).await;
        return Ok(Flow::Close);
    };
    conn.set_version(version);
    let connected = Frame::new("CONNECTED")
        .with_header("version", version.as_str())
        .with_header("server", SERVER)
        .with_header("session", id)
        .with_header("heart-beat", "0,0");
    debug!(session = id, %version, "client connected");
    match conn.write_frame(&connected).await {
        Ok(()) => Ok(Flow::Continue),
        Err(err) => {
            debug!(error = %err, "could not send CONNECTED");
            Ok(Flow::Close)
        }
    }
}

/// Handles a frame of a connected session.
async fn handle(conn: &mut Connection, frame: &Frame) -> Result<Flow, Refusal> {
    match Command::of(frame) {
        Command::Disconnect => {
            if let Some(receipt) = frame.get("receipt") {
                send(
                    conn,
                    Frame::new("RECEIPT").with_header("receipt-id", receipt),
                )
                .await;
            }
            Ok(Flow::Close)
        }
        Command::Connect => Err(Refusal::new(
            format!(
                "unexpected {}: the session is already connected",
                frame.command
            ),
            "CONNECT is only valid as the first frame of a connection.",
        )
        .answering(frame)),
        Command::Unsupported(name) => Err(Refusal::new(
            format!("command {name} is not supported by this broker yet"),
            "This broker currently accepts CONNECT, STOMP and DISCONNECT only.",
        )
        .answering(frame)),
        Command::Unknown(name) => Err(Refusal::new(
            format!("unknown command {name}"),
            "Client frames are CONNECT, STOMP, SEND, SUBSCRIBE, UNSUBSCRIBE, ACK, NACK, BEGIN, \
             COMMIT, ABORT and DISCONNECT.",
        )
        .answering(frame)),
    }
}
