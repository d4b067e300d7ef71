//! One client's STOMP session, from its CONNECT to the closing of its socket.
//!
//! The first frame must be CONNECT (or STOMP); after that each frame becomes a request to the
//! broker core, which answers on the session's outbox with MESSAGE, RECEIPT and ERROR frames.
//! The session writes whatever the outbox holds in one write, and tells the broker how many
//! auto-acknowledged messages it wrote, which is what bounds a slow consumer's memory. Anything
//! the broker cannot accept ends the session with an ERROR frame that says why, then a close: a
//! bad client only ever affects its own connection. When the node goes passive, every session
//! first writes what it still owes its client (receipts above all), then an ERROR saying so.

use super::command::Command;
use super::connection::{Connection, ConnectionError};
use super::frame::{put_header_text, Frame, FRAME_END};
use super::receipt_order::ReceiptOrder;
use super::Version;
use crate::auth::{Access, Guard, LoginError, Operation, Security};
use crate::broker::consumers::ConsumerOptions;
use crate::broker::message::Published;
use crate::broker::names;
use crate::broker::{AckMode, AckRef, ConnId, Opening, Outbound, Request, SubKey, SubscribeSpec};
use crate::reload::Current;
use crate::stats::Stats;
use bytes::{BufMut, BytesMut};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info};

/// The `server` header of CONNECTED frames.
const SERVER: &str = concat!("brokerd/", env!("CARGO_PKG_VERSION"));

/// Outbound frames written in one go at most.
const WRITE_BATCH: usize = 256;

/// Prefetch of a subscription without `activemq.prefetchSize` (ActiveMQ's queue default).
pub const DEFAULT_PREFETCH: u32 = 1000;

/// Largest prefetch a subscription may ask for: deliveries in flight are held in memory, per
/// subscription, outside the memory limit.
pub const MAX_PREFETCH: u32 = 65_536;

/// Why the server ends every session: `Some(reason)` once the node is going passive.
pub type Passive = watch::Receiver<Option<Arc<str>>>;

/// What a session gets from the server that accepted it.
#[derive(Debug)]
pub struct SessionContext {
    /// Unique session id, sent to the client in CONNECTED.
    pub id: String,
    /// The session's identity in the broker core.
    pub conn: ConnId,
    /// The client's address, named to another client that asks for this one's client-id.
    pub peer: std::net::SocketAddr,
    /// Broker-wide counters.
    pub stats: Arc<Stats>,
    /// Tells the session the node is going passive.
    pub passive: Passive,
    /// The broker core.
    pub broker: mpsc::Sender<Request>,
    /// A connection that sends no whole CONNECT within this long of `accepted` (its TLS
    /// handshake included) is closed with an ERROR, so idle sockets cannot hold connection
    /// slots (`--connect-timeout-ms`).
    pub connect_timeout: Duration,
    /// When the connection was accepted.
    pub accepted: tokio::time::Instant,
    /// Heart-beat interval this broker offers and asks for; zero disables heart-beating.
    pub heartbeat: Duration,
    /// Who may connect and what they may do; `None`: anyone, without credentials, anything.
    pub security: Option<Current<Security>>,
    /// Bytes held by waiting messages, and the limit past which SENDs wait.
    pub memory: crate::memory::Usage,
    pub memory_limit: usize,
    /// How long a SEND waits for memory before it is refused.
    pub send_wait: Duration,
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

/// A connected session's state.
struct Session {
    conn: Connection,
    ctx: SessionContext,
    version: Version,
    outbox: mpsc::UnboundedReceiver<Outbound>,
    /// Heart-beat intervals: how often we must write, how long the client may stay silent.
    send_every: Option<Duration>,
    silence_limit: Option<Duration>,
    /// A DISCONNECT's receipt we wait for before closing.
    closing: Option<String>,
    /// The prefix of this connection's temporary destinations, which it sees by the names
    /// it gave them.
    temporary: Arc<str>,
    /// RECEIPTs before the MESSAGEs their SENDs cause here, as ActiveMQ writes them.
    order: ReceiptOrder,
    /// STOMP 1.0 subscriptions made without an `id` (named by their destination).
    implicit_ids: std::collections::HashSet<String>,
    /// What the client may read and write, where the users file has authorisation entries.
    guard: Option<Guard>,
}

/// Serves one client until its session ends, then closes the connection.
pub async fn run(mut conn: Connection, mut ctx: SessionContext) {
    let first = tokio::select! {
        read = conn.read_frame() => read,
        () = tokio::time::sleep_until(ctx.accepted + ctx.connect_timeout) => {
            debug!(timeout = ?ctx.connect_timeout, "no CONNECT in time; closing");
            let refusal = Refusal::new(
                format!("no CONNECT frame within {} ms", ctx.connect_timeout.as_millis()),
                "A STOMP session starts with a CONNECT (or STOMP) frame (see \
                 --connect-timeout-ms).",
            );
            send(&mut conn, refusal.into_frame()).await;
            conn.close().await;
            return;
        }
        reason = passive(&mut ctx.passive) => {
            send(&mut conn, going_passive_frame(&reason)).await;
            conn.close().await;
            return;
        }
    };
    let frame = match first {
        Ok(Some(frame)) => frame,
        Ok(None) => return conn.close().await,
        Err(err) => {
            refuse_read(&mut conn, err).await;
            return conn.close().await;
        }
    };
    ctx.stats.frame_received();
    let Some(mut session) = connect(conn, ctx, &frame).await else {
        return;
    };
    session.serve().await;
    let _ = session
        .ctx
        .broker
        .send(Request::Close {
            conn: session.ctx.conn,
        })
        .await;
    session.conn.close().await;
}

/// Tells the client why its frame could not be read, if it is still there to hear it.
async fn refuse_read(conn: &mut Connection, err: ConnectionError) {
    match err {
        ConnectionError::Frame(err) => {
            debug!(error = %err, "refusing a malformed frame");
            let refusal = Refusal {
                message: format!("malformed frame: {err}"),
                detail: "The frame could not be read, so the connection is out of step \
                         and is closed."
                    .into(),
                receipt: err.receipt,
            };
            send(conn, refusal.into_frame()).await;
        }
        ConnectionError::FrameTimeout(limit) => {
            info!(
                limit_ms = limit.as_millis() as u64,
                "cutting off a client whose frame did not arrive in time"
            );
            let refusal = Refusal::new(
                err.to_string(),
                "A frame must arrive whole within --frame-timeout-ms of its first byte; the \
                 connection is closed.",
            );
            send(conn, refusal.into_frame()).await;
        }
        err => debug!(error = %err, "client connection ended"),
    }
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

/// Handles the first frame: it must be CONNECT or STOMP, and the versions must meet. Returns the
/// connected session, or `None` after refusing (and closing).
async fn connect(mut conn: Connection, ctx: SessionContext, frame: &Frame) -> Option<Session> {
    if Command::of(frame) != Command::Connect {
        let refusal = Refusal::new(
            format!(
                "expected CONNECT or STOMP as the first frame, got {}",
                frame.command
            ),
            "A STOMP session starts with a CONNECT (or STOMP) frame.",
        )
        .answering(frame);
        send(&mut conn, refusal.into_frame()).await;
        conn.close().await;
        return None;
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
        send(&mut conn, refusal).await;
        conn.close().await;
        return None;
    };
    let (client_send, client_wants) = match frame.get("heart-beat").map(parse_heartbeat) {
        None => (0, 0),
        Some(Some(pair)) => pair,
        Some(None) => {
            let refusal = Refusal::new(
                format!(
                    "heart-beat {:?} is not two comma-separated millisecond counts",
                    frame.get("heart-beat").unwrap_or_default()
                ),
                "Send heart-beat:cx,cy as STOMP 1.1 describes, e.g. heart-beat:10000,10000.",
            );
            send(&mut conn, refusal.into_frame()).await;
            conn.close().await;
            return None;
        }
    };
    let access = match &ctx.security {
        None => None,
        Some(security) => {
            let login = Access::authenticate(security, frame.get("login"), frame.get("passcode"));
            let deadline = ctx.accepted + ctx.connect_timeout;
            let login = tokio::time::timeout_at(deadline, login).await;
            match login.unwrap_or(Err(LoginError::TimedOut)) {
                Ok(access) => Some(access),
                Err(err) => {
                    info!(login = frame.get("login").unwrap_or_default(), reason = %err, "refusing a client: authentication failed");
                    let refusal = Refusal::new(
                        "authentication failed: unknown login or wrong passcode",
                        "This broker only accepts the users of its users file; send login and \
                         passcode headers on CONNECT.",
                    );
                    send(&mut conn, refusal.into_frame()).await;
                    conn.close().await;
                    return None;
                }
            }
        }
    };
    // STOMP 1.0 has no heart-beating.
    let ours = if version == Version::V1_0 {
        0
    } else {
        ctx.heartbeat.as_millis() as u64
    };
    let negotiate = |a: u64, b: u64| (a > 0 && b > 0).then(|| Duration::from_millis(a.max(b)));
    let send_every = negotiate(ours, client_wants);
    // Twice the agreed interval before giving up on a silent client, as network delays vary.
    let silence_limit = negotiate(client_send, ours).map(|d| d * 2);
    conn.set_version(version);
    let (outbox_tx, outbox) = mpsc::unbounded_channel();
    let (verdict_tx, verdict) = oneshot::channel();
    let open = Request::Open(Opening {
        conn: ctx.conn,
        session: ctx.id.clone(),
        client_id: frame.get("client-id").map(str::to_owned),
        peer: ctx.peer.to_string(),
        access: access.clone(),
        outbox: outbox_tx,
        verdict: verdict_tx,
    });
    if ctx.broker.send(open).await.is_err() {
        return None;
    }
    match verdict.await {
        Ok(Ok(())) => {}
        Ok(Err(message)) => {
            let refusal = Refusal::new(
                message,
                "A client-id may be connected once at a time (as in ActiveMQ): close the other \
                 connection first, or use another client-id.",
            );
            send(&mut conn, refusal.into_frame()).await;
            conn.close().await;
            return None;
        }
        Err(_) => return None,
    }
    let connected = Frame::new("CONNECTED")
        .with_header("version", version.as_str())
        .with_header("server", SERVER)
        .with_header("session", ctx.id.as_str())
        .with_header("heart-beat", format!("{ours},{ours}"));
    debug!(session = %ctx.id, %version, "client connected");
    if let Err(err) = conn.write_frame(&connected).await {
        debug!(error = %err, "could not send CONNECTED");
        let _ = ctx.broker.send(Request::Close { conn: ctx.conn }).await;
        return None;
    }
    let temporary = names::temporary_prefix(&ctx.id);
    Some(Session {
        guard: access.map(|access| Guard::new(access, Arc::clone(&temporary))),
        temporary,
        order: ReceiptOrder::default(),
        implicit_ids: Default::default(),
        conn,
        ctx,
        version,
        outbox,
        send_every,
        silence_limit,
        closing: None,
    })
}

/// `cx,cy` in milliseconds.
fn parse_heartbeat(value: &str) -> Option<(u64, u64)> {
    let (x, y) = value.split_once(',')?;
    Some((x.trim().parse().ok()?, y.trim().parse().ok()?))
}

impl Session {
    /// The connected session's loop: frames in, outbox out, heart-beats both ways. A SEND that
    /// finds memory over the limit is held while the session waits for room: it reads nothing
    /// more from its client meanwhile (TCP slows the producer down), but keeps writing what the
    /// broker sends it (MESSAGEs, RECEIPTs) and its heart-beats.
    async fn serve(&mut self) {
        let mut last_write = tokio::time::Instant::now();
        let mut held: Option<Held> = None;
        loop {
            let beat_at = self.send_every.map(|d| last_write + d);
            // While a SEND is held the client's frames and heart-beats wait unread in the
            // socket: its silence is ours, not the client's.
            let silent_at = self
                .silence_limit
                .filter(|_| held.is_none())
                .map(|d| self.conn.last_read() + d);
            let room_by = held.as_ref().map(|h| (h.scheduled, h.deadline));
            tokio::select! {
                read = self.conn.read_frame(), if held.is_none() => {
                    match read {
                        Ok(Some(frame)) => {
                            self.ctx.stats.frame_received();
                            let send = Command::of(&frame) == Command::Send;
                            let scheduled = send && scheduled(&frame);
                            if send && !self.memory_fits(scheduled) {
                                debug!(limit = self.ctx.memory_limit, scheduled, "memory limit reached: holding a SEND");
                                held = Some(Held {
                                    frame,
                                    scheduled,
                                    deadline: tokio::time::Instant::now() + self.ctx.send_wait,
                                });
                                continue;
                            }
                            if !self.take(frame).await {
                                return;
                            }
                        }
                        Ok(None) => {
                            debug!("client closed the connection");
                            return;
                        }
                        Err(err) => {
                            refuse_read(&mut self.conn, err).await;
                            return;
                        }
                    }
                }
                fits = wait_for_room(&self.ctx.memory, self.ctx.memory_limit, room_by) => {
                    let Held { frame, .. } = held.take().expect("waited for a held SEND");
                    if !fits {
                        let refusal = memory_refusal(self.ctx.memory_limit);
                        debug!(message = %refusal.message, "refusing a frame");
                        send(&mut self.conn, refusal.into_frame()).await;
                        return;
                    }
                    if !self.take(frame).await {
                        return;
                    }
                }
                Some(first) = self.outbox.recv() => {
                    last_write = tokio::time::Instant::now();
                    if !self.write_outbox(first).await {
                        return;
                    }
                }
                reason = passive(&mut self.ctx.passive) => {
                    debug!(%reason, "closing session: node going passive");
                    // Everything the broker owes this client (receipts above all) is in the
                    // outbox by now: the server drained the broker before saying passive. A
                    // held SEND was not taken, and gets no receipt: the client resends it.
                    while let Ok(out) = self.outbox.try_recv() {
                        if !self.write_outbox(out).await {
                            return;
                        }
                    }
                    send(&mut self.conn, going_passive_frame(&reason)).await;
                    return;
                }
                () = sleep_until(beat_at) => {
                    last_write = tokio::time::Instant::now();
                    if self.conn.write_raw(b"\n").await.is_err() {
                        return;
                    }
                }
                () = sleep_until(silent_at) => {
                    // Heart-beat EOLs are read inside read_frame without ending it: look at when
                    // the client last sent anything before calling it silent.
                    if self.silence_limit.is_some_and(|d| self.conn.last_read().elapsed() < d) {
                        continue;
                    }
                    debug!(limit = ?self.silence_limit, "client stopped heart-beating; closing");
                    let refusal = Refusal::new(
                        "no frame or heart-beat from the client within twice the agreed heart-beat interval",
                        "The connection is considered dead and is closed.",
                    );
                    send(&mut self.conn, refusal.into_frame()).await;
                    return;
                }
            }
        }
    }

    /// Hands one client frame to the broker. Returns false when the session must end (after
    /// writing the refusal, if there is one).
    async fn take(&mut self, frame: Frame) -> bool {
        match self.handle(frame).await {
            Ok(keep_going) => keep_going,
            Err(refusal) => {
                debug!(message = %refusal.message, "refusing a frame");
                send(&mut self.conn, refusal.into_frame()).await;
                false
            }
        }
    }

    /// Writes `first` and whatever else the outbox holds, in one write. Returns false when the
    /// session must end (an ERROR was written, the DISCONNECT receipt went out, or the client is
    /// gone).
    async fn write_outbox(&mut self, first: Outbound) -> bool {
        let mut buf = BytesMut::with_capacity(4096);
        let mut written: HashMap<SubKey, u32> = HashMap::new();
        let mut keep_going = true;
        let mut next = Some(first);
        let mut count = 0;
        while let Some(out) = next.take() {
            count += 1;
            if let Some(out) = self.order.pass(self.ctx.conn, out) {
                if !self.encode_out(&mut buf, &mut written, out) {
                    keep_going = false;
                    break;
                }
            }
            if count < WRITE_BATCH {
                next = self.outbox.try_recv().ok();
            }
        }
        if let Err(err) = self.conn.write_raw(&buf).await {
            debug!(error = %err, "could not write to client");
            return false;
        }
        for (sub, count) in written {
            let written = Request::Written {
                conn: self.ctx.conn,
                sub,
                count,
            };
            if self.ctx.broker.send(written).await.is_err() {
                return false;
            }
        }
        keep_going
    }

    /// Encodes one frame for the client, counting auto-mode MESSAGEs as `written`; a RECEIPT
    /// brings the MESSAGEs it released with it. False once the session is to end (an ERROR,
    /// or the DISCONNECT's RECEIPT).
    fn encode_out(
        &mut self,
        buf: &mut BytesMut,
        written: &mut HashMap<SubKey, u32>,
        out: Outbound,
    ) -> bool {
        match out {
            Outbound::Message {
                subscription,
                sub,
                ack,
                msg,
            } => {
                // As ActiveMQ: a 1.0 SUBSCRIBE without an id gets MESSAGEs without one.
                let implicit =
                    self.version == Version::V1_0 && self.implicit_ids.contains(&*subscription);
                let shown = (!implicit).then_some(&*subscription);
                encode_message(buf, self.version, shown, ack, &msg, &self.temporary);
                if ack.is_none() {
                    *written.entry(sub).or_default() += 1;
                }
            }
            Outbound::BrowseEnd {
                subscription,
                destination,
            } => encode_browse_end(buf, self.version, &subscription, &destination),
            Outbound::Receipt(receipt) => {
                encode_receipt(buf, self.version, &receipt);
                for released in self.order.written(&receipt) {
                    self.encode_out(buf, written, released);
                }
                return self.closing.as_deref() != Some(receipt.as_str());
            }
            Outbound::Error { message, receipt } => {
                let refusal = Refusal {
                    detail: message.clone(),
                    message,
                    receipt,
                };
                refusal.into_frame().encode_into(buf, self.version);
                return false;
            }
            Outbound::Warning { message, receipt } => {
                let warning = Refusal {
                    detail: format!("{message}. The connection stays open."),
                    message,
                    receipt,
                };
                warning.into_frame().encode_into(buf, self.version);
            }
        }
        true
    }

    /// Whether memory counted against the limit is at or below it. It counts messages that
    /// cannot be paged out to the store (non-persistent ones, topic backlogs), transactions'
    /// SENDs, deliveries in flight and store writes not yet done: persistent messages beyond a
    /// queue's page wait on disk instead (see [`crate::memory`]).
    fn memory_fits(&self, scheduled: bool) -> bool {
        self.ctx.memory.fits(self.ctx.memory_limit, scheduled)
    }

    /// Refuses a SEND (`Write`) or SUBSCRIBE (`Read`) the users file does not allow.
    fn authorise(
        &mut self,
        op: Operation,
        destination: &str,
        frame: &Frame,
    ) -> Result<(), Refusal> {
        let Some(guard) = &mut self.guard else {
            return Ok(());
        };
        guard.check(op, destination).map_err(|denied| {
            info!(reason = %denied, "refused a client's {}", frame.command);
            Refusal::new(denied.to_string(), denied.detail()).answering(frame)
        })
    }

    /// Turns one client frame into a request to the broker core. `Ok(false)`: the client
    /// disconnected and expects no receipt.
    async fn handle(&mut self, frame: Frame) -> Result<bool, Refusal> {
        let conn = self.ctx.conn;
        let receipt = frame.get("receipt").map(str::to_owned);
        let transaction = frame.get("transaction").map(str::to_owned);
        let refuse =
            |message: String, detail: &str| Err(Refusal::new(message, detail).answering(&frame));
        let request = match Command::of(&frame) {
            Command::Send => match Published::from_headers(&frame.headers) {
                Ok(published) => {
                    self.authorise(Operation::Write, &published.destination, &frame)?;
                    Request::Send {
                        conn,
                        published,
                        body: frame.body.clone(),
                        transaction,
                        receipt,
                    }
                }
                Err(err) => return refuse(err.to_string(), "The SEND was not accepted."),
            },
            Command::Subscribe => {
                let Some(destination) = frame.get("destination") else {
                    return refuse("SUBSCRIBE needs a destination header".into(), "");
                };
                self.authorise(Operation::Read, destination, &frame)?;
                let id = match (frame.get("id"), self.version) {
                    (Some(id), _) => id.to_owned(),
                    (None, Version::V1_0) => {
                        self.implicit_ids.insert(destination.to_owned());
                        destination.to_owned()
                    }
                    (None, _) => return refuse("SUBSCRIBE needs an id header".into(), ""),
                };
                let ack = match frame.get("ack").unwrap_or("auto") {
                    "auto" => AckMode::Auto,
                    "client" => AckMode::Client,
                    "client-individual" => AckMode::ClientIndividual,
                    other => {
                        return refuse(
                            format!("ack mode {other:?} is not auto, client or client-individual"),
                            "",
                        )
                    }
                };
                let browser = frame.get("browser") == Some("true");
                if browser && self.version == Version::V1_0 {
                    // As ActiveMQ.
                    return refuse("browser:true needs STOMP 1.1 or later".into(), "");
                }
                let prefetch = match frame.get("activemq.prefetchSize") {
                    None => DEFAULT_PREFETCH,
                    Some(p) => match p.parse::<u32>() {
                        Ok(p) if p > 0 && p <= MAX_PREFETCH => p,
                        _ => {
                            return refuse(
                                format!(
                                    "activemq.prefetchSize {p:?} is not a number from 1 to {MAX_PREFETCH}"
                                ),
                                "",
                            )
                        }
                    },
                };
                Request::Subscribe {
                    conn,
                    spec: SubscribeSpec {
                        id,
                        destination: destination.to_owned(),
                        ack,
                        prefetch,
                        durable_name: frame.get("activemq.subscriptionName").map(str::to_owned),
                        browser,
                        options: match consumer_options(&frame) {
                            Ok(options) => options,
                            Err(message) => return refuse(message, ""),
                        },
                    },
                    receipt,
                }
            }
            Command::Unsubscribe => {
                let Some(id) = frame.get("id").or(frame.get("destination")) else {
                    return refuse("UNSUBSCRIBE needs an id header".into(), "");
                };
                Request::Unsubscribe {
                    conn,
                    id: id.to_owned(),
                    durable_name: frame.get("activemq.subscriptionName").map(str::to_owned),
                    receipt,
                }
            }
            command @ (Command::Ack | Command::Nack) => {
                let nack = command == Command::Nack;
                if nack && self.version == Version::V1_0 {
                    return refuse("NACK does not exist in STOMP 1.0".into(), "");
                }
                let which = match (self.version, frame.get("id"), frame.get("message-id")) {
                    (Version::V1_2, Some(id), _) => AckRef::Ack(id.to_owned()),
                    (_, _, Some(message_id)) => AckRef::MessageId {
                        message_id: message_id.to_owned(),
                        subscription: frame.get("subscription").map(str::to_owned),
                    },
                    (Version::V1_2, None, None) => {
                        return refuse(
                            format!(
                                "{} needs an id header (the MESSAGE's ack header)",
                                frame.command
                            ),
                            "",
                        )
                    }
                    _ => return refuse(format!("{} needs a message-id header", frame.command), ""),
                };
                Request::Ack {
                    conn,
                    which,
                    nack,
                    transaction,
                    receipt,
                }
            }
            command @ (Command::Begin | Command::Commit | Command::Abort) => {
                let Some(transaction) = transaction else {
                    return refuse(format!("{} needs a transaction header", frame.command), "");
                };
                match command {
                    Command::Begin => Request::Begin {
                        conn,
                        transaction,
                        receipt,
                    },
                    Command::Commit => Request::Commit {
                        conn,
                        transaction,
                        receipt,
                    },
                    _ => Request::Abort {
                        conn,
                        transaction,
                        receipt,
                    },
                }
            }
            Command::Disconnect => match receipt {
                // The receipt comes back once everything before it is processed and durable;
                // the session closes when it has written it.
                Some(receipt) => {
                    self.closing = Some(receipt.clone());
                    Request::Receipt { conn, receipt }
                }
                None => return Ok(false),
            },
            Command::Connect => {
                return refuse(
                    format!(
                        "unexpected {}: the session is already connected",
                        frame.command
                    ),
                    "CONNECT is only valid as the first frame of a connection.",
                )
            }
            Command::Unknown(name) => {
                return refuse(
                    format!("unknown command {name}"),
                    "Client frames are CONNECT, STOMP, SEND, SUBSCRIBE, UNSUBSCRIBE, ACK, NACK, \
                     BEGIN, COMMIT, ABORT and DISCONNECT.",
                )
            }
        };
        if let Request::Send {
            receipt: Some(receipt),
            ..
        }
        | Request::Commit {
            receipt: Some(receipt),
            ..
        } = &request
        {
            self.order.asked(receipt);
        }
        if self.ctx.broker.send(request).await.is_err() {
            // Without receipt-id: a passing condition, the client should fail over and resend.
            return Err(Refusal::new(
                "the broker is stopping; reconnect to another node",
                "",
            ));
        }
        Ok(true)
    }
}

/// Writes a MESSAGE frame straight into `buf`, without building a [`Frame`] first: this is the
/// broker's hottest path. The headers are ActiveMQ's: `expires`, `priority` and `timestamp`
/// always, `persistent` when true, `content-length` only when the SEND had one, `ack` on 1.2
/// only, `subscription` unless a 1.0 SUBSCRIBE gave no id. The
/// connection's own temporary destinations (`temporary`, their prefix) appear by the names it
/// gave them, in `destination` and `reply-to`.
fn encode_message(
    buf: &mut BytesMut,
    version: Version,
    subscription: Option<&str>,
    ack: Option<crate::broker::AckId>,
    msg: &crate::broker::message::Message,
    temporary: &str,
) {
    use std::fmt::Write;
    let escaped = version.escaping("MESSAGE");
    let header = |buf: &mut BytesMut, name: &str, value: &str| {
        put_header_text(buf, name, escaped);
        buf.put_u8(b':');
        put_header_text(buf, value, escaped);
        buf.put_u8(b'\n');
    };
    buf.put_slice(b"MESSAGE\n");
    if let Some(subscription) = subscription {
        header(buf, "subscription", subscription);
    }
    header(buf, "message-id", &msg.id);
    header(
        buf,
        "destination",
        &names::shown(&msg.destination, temporary),
    );
    // The `ack` header is STOMP 1.2's; earlier versions acknowledge by message-id.
    if let Some(ack) = ack.filter(|_| version == Version::V1_2) {
        // Digits and dashes: nothing to escape, and no String made.
        let _ = writeln!(buf, "ack:{ack}");
    }
    if msg.redeliveries > 0 {
        buf.put_slice(b"redelivered:true\n");
    }
    let _ = writeln!(
        buf,
        "expires:{}\npriority:{}\ntimestamp:{}",
        msg.expires, msg.priority, msg.timestamp
    );
    if msg.persistent {
        buf.put_slice(b"persistent:true\n");
    }
    for (name, value) in &msg.headers {
        match name.as_str() {
            "reply-to" => header(buf, name, &names::shown(value, temporary)),
            _ => header(buf, name, value),
        }
    }
    if msg.sized {
        let _ = writeln!(buf, "content-length:{}", msg.body.len());
    }
    buf.put_u8(b'\n');
    buf.put_slice(&msg.body);
    buf.put_slice(FRAME_END);
}

/// ActiveMQ's per-consumer SUBSCRIBE headers and the `selector` (`activemq.dispatchAsync` is
/// accepted and has nothing to change: every dispatch here is asynchronous).
fn consumer_options(frame: &Frame) -> Result<ConsumerOptions, String> {
    // ActiveMQ reads these as Java booleans: "true" in any case.
    let flag = |name: &str| {
        frame
            .get(name)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    };
    let priority = match frame.get("activemq.priority") {
        None => 0,
        Some(v) => v
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= 127)
            .ok_or_else(|| format!("activemq.priority {v:?} is not a number from 0 to 127"))?,
    };
    // ActiveMQ's STOMP reads selectors with string conversion on: a header `price:12`
    // matches `price > 10`.
    let selector = match frame.get("selector") {
        None => None,
        Some(text) => Some(Arc::new(
            selector::Selector::parse_stomp(text).map_err(|e| format!("selector {text:?}: {e}"))?,
        )),
    };
    Ok(ConsumerOptions {
        exclusive: flag("activemq.exclusive"),
        priority,
        no_local: flag("activemq.noLocal"),
        retroactive: flag("activemq.retroactive"),
        selector,
    })
}

/// Writes ActiveMQ's end-of-browse marker: a MESSAGE with `browser:end`, `message-id:0` and
/// no body.
fn encode_browse_end(buf: &mut BytesMut, version: Version, subscription: &str, destination: &str) {
    let escaped = version.escaping("MESSAGE");
    buf.put_slice(b"MESSAGE\nsubscription:");
    put_header_text(buf, subscription, escaped);
    buf.put_slice(b"\ndestination:");
    put_header_text(buf, destination, escaped);
    buf.put_slice(b"\nmessage-id:0\nbrowser:end\n\n");
    buf.put_slice(FRAME_END);
}

/// Writes a RECEIPT frame straight into `buf`, as [`Frame::encode`] would write it: one goes
/// out for every receipted SEND, so it is on the producers' hot path too.
fn encode_receipt(buf: &mut BytesMut, version: Version, receipt: &str) {
    buf.put_slice(b"RECEIPT\nreceipt-id:");
    put_header_text(buf, receipt, version.escaping("RECEIPT"));
    buf.put_slice(b"\n\n");
    buf.put_slice(FRAME_END);
}

/// A SEND read while memory was over the limit, waiting for room until `deadline`.
struct Held {
    frame: Frame,
    /// It schedules a job ([`crate::memory::Usage::fits`]).
    scheduled: bool,
    deadline: tokio::time::Instant,
}

/// Whether a SEND schedules a job (`AMQ_SCHEDULED_REPEAT` alone does not).
fn scheduled(frame: &Frame) -> bool {
    use crate::scheduler::spec::{CRON, DELAY, PERIOD};
    [DELAY, PERIOD, CRON].iter().any(|h| frame.get(h).is_some())
}

/// Waits until a held SEND (scheduled or not) fits under `limit`, until `deadline`; forever
/// without one. Returns whether it fits (see [`crate::memory`]: released memory wakes it).
async fn wait_for_room(
    memory: &crate::memory::Usage,
    limit: usize,
    held: Option<(bool, tokio::time::Instant)>,
) -> bool {
    match held {
        Some((scheduled, deadline)) => memory.wait_for_room(limit, scheduled, deadline).await,
        None => std::future::pending().await,
    }
}

/// The ERROR for a SEND that waited at the memory limit and was not let through. Without
/// `receipt-id`: the refusal is transient, not a verdict on the SEND, so a client must not
/// take it as "rejected for good"; it reconnects and resends.
fn memory_refusal(limit: usize) -> Refusal {
    Refusal::new(
        format!(
            "memory limit of {} MiB reached (transient): consumers are not keeping up; \
             reconnect and retry the SEND",
            limit >> 20
        ),
        "The broker waited for memory to free up (--send-wait-ms) and gave up; the SEND was \
         not accepted this time. This is temporary: reconnect and send it again once consumers \
         catch up (or raise --memory-limit-mb).",
    )
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receipt_is_encoded_as_a_receipt_frame_would_be() {
        for version in Version::SUPPORTED {
            for receipt in ["r-1", "a:b\\c\nd\re", ""] {
                let mut buf = BytesMut::new();
                encode_receipt(&mut buf, version, receipt);
                let frame = Frame::new("RECEIPT").with_header("receipt-id", receipt);
                assert_eq!(buf, frame.encode(version), "{version} {receipt:?}");
            }
        }
    }
}
