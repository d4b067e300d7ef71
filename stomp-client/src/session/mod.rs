//! The session task: the one owner of the socket and of everything that must survive a
//! reconnect (subscriptions, unreceipted SENDs, open transactions).
//!
//! [`crate::Client`] handles talk to it over a bounded command channel. Invariants:
//! - A SEND that asked for a receipt stays in `sends` until its RECEIPT (or an ERROR naming its
//!   receipt) arrives; after every reconnect all of them are written again, in their original
//!   order, before any new command. So a receipted send is never lost by the client, and an
//!   unreceipted one may reach the broker twice (at-least-once).
//! - Every subscription is written again after a reconnect with the same id, destination, ack
//!   mode and headers, before any resent SEND, so a consumer and a producer sharing a client see
//!   their own messages.
//! - Acks carry the connection generation of their message; an ack for a message delivered on an
//!   earlier connection is dropped, since the broker has already put that message back. Inside
//!   a transaction it also rolls the transaction back, whose COMMIT then fails: a receipted
//!   COMMIT applied every ack it was given.
//! - Transactions die with their connection (the broker rolls them back); their COMMIT fails
//!   with [`Error::TransactionLost`] so the caller can run them again.
//! - A full subscription buffer stops reading the socket (TCP back-pressure to the broker)
//!   instead of buffering without bound; heart-beat silence is not counted while stalled.
//! - A message an auto-ack subscription received is handed to the application even if the
//!   connection is lost first: the broker counts it as consumed once written to the socket, so
//!   it will not come again. When a connection ends, the frames already received (in the read
//!   buffer, and whatever the socket still holds, up to [`SALVAGE_LIMIT`]) are read as usual;
//!   the auto-mode messages among them, and one stalled on a full buffer, are delivered, in
//!   order, before anything from the next connection is read. Messages of client-ack
//!   subscriptions the application has not received yet are dropped instead: they are still the
//!   broker's, which delivers them again (flagged `redelivered`), and their acks could not be
//!   sent anyway. A message cut off by the connection's end is lost in auto mode (the broker
//!   wrote it); that is what auto mode means.

use crate::backoff::Backoff;
use crate::client::{AckMode, Error, Event, Message, Options, Shared};
use crate::transport::{self, ReadHalf, WriteHalf};
use crate::url::{Address, ReconnectPolicy};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use rustls::ClientConfig;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use stomp_codec::frame::{self, Decoder, Frame, FrameError, Limits};
use stomp_codec::Version;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};
use tokio::time::{Instant, Interval, MissedTickBehavior};

mod conn;

pub(crate) use conn::*;

/// Stop taking commands while this much is waiting to be written (back-pressure to callers).
const HIGH_WATER: usize = 256 * 1024;
/// Read buffer growth step.
const READ_CHUNK: usize = 64 * 1024;
/// What is read from a lost connection's socket at most, after the loss, to find the messages
/// it still held (its receive buffer; a broker still sending cannot keep us there).
pub(crate) const SALVAGE_LIMIT: usize = 16 * 1024 * 1024;

pub(crate) type Done = oneshot::Sender<Result<(), Error>>;

/// What a client handle asks of the session.
pub(crate) enum Command {
    Send {
        headers: Vec<(String, String)>,
        body: Bytes,
        /// Present when the SEND asks for a receipt: resolved at RECEIPT, and the permit holds
        /// the caller's place in the receipt window until then.
        receipt: Option<(Done, OwnedSemaphorePermit)>,
        transaction: Option<String>,
    },
    Subscribe {
        id: String,
        destination: String,
        ack: AckMode,
        headers: Vec<(String, String)>,
        deliver: mpsc::Sender<Message>,
        done: Done,
    },
    Unsubscribe {
        id: String,
    },
    Ack {
        token: AckToken,
        nack: bool,
        transaction: Option<String>,
    },
    Begin {
        transaction: String,
    },
    End {
        transaction: String,
        commit: bool,
        done: Done,
    },
}

/// What acking a message needs, and which connection delivered it.
#[derive(Debug, Clone)]
pub(crate) struct AckToken {
    pub ack: String,
    pub message_id: String,
    pub subscription: String,
    pub generation: u64,
}

struct Sub {
    destination: String,
    ack: AckMode,
    headers: Vec<(String, String)>,
    deliver: mpsc::Sender<Message>,
    /// Receipt id and caller of a SUBSCRIBE not yet confirmed.
    confirm: Option<(u64, Done)>,
}

struct PendingSend {
    headers: Vec<(String, String)>,
    body: Bytes,
    done: Done,
    _permit: OwnedSemaphorePermit,
}

enum Control {
    Subscribed(String),
    TxEnd(String, Done),
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Lost {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("connection closed by the broker")]
    Eof,
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("ERROR frame: {0}")]
    ServerError(String),
    #[error("no data from the broker for {0:?} (twice the negotiated heart-beat)")]
    Silent(Duration),
}

/// The session task's state.
pub(crate) struct Session {
    pub addresses: Vec<Address>,
    /// The TLS configuration for `ssl://` addresses, read once at start.
    pub tls: Option<Arc<ClientConfig>>,
    pub policy: ReconnectPolicy,
    pub options: Options,
    pub commands: mpsc::Receiver<Command>,
    pub close_requests: mpsc::Receiver<Done>,
    pub shared: Arc<Shared>,
    pub rng: u64,
    pub last_failed: Option<Address>,
    subs: BTreeMap<String, Sub>,
    sends: BTreeMap<u64, PendingSend>,
    controls: HashMap<u64, Control>,
    open_txs: HashSet<String>,
    lost_txs: HashSet<String>,
    generation: u64,
    next_id: u64,
    /// Messages received and not yet handed to the application, oldest first: one that met a
    /// full subscription buffer, and those salvaged from a lost connection. While there are any,
    /// nothing more is read from the broker.
    held: VecDeque<(mpsc::Sender<Message>, Message)>,
    closing: bool,
    disconnect_sent: bool,
    close_waiters: Vec<Done>,
}

/// How the serve loop ended.
enum Ended {
    /// DISCONNECT receipted, or nothing left to do after every handle was dropped.
    Closed,
    Lost(Lost),
}

impl Session {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        addresses: Vec<Address>,
        tls: Option<Arc<ClientConfig>>,
        policy: ReconnectPolicy,
        options: Options,
        commands: mpsc::Receiver<Command>,
        close_requests: mpsc::Receiver<Done>,
        shared: Arc<Shared>,
        rng: u64,
    ) -> Session {
        Session {
            addresses,
            tls,
            policy,
            options,
            commands,
            close_requests,
            shared,
            rng: rng | 1,
            last_failed: None,
            subs: BTreeMap::new(),
            sends: BTreeMap::new(),
            controls: HashMap::new(),
            open_txs: HashSet::new(),
            lost_txs: HashSet::new(),
            generation: 0,
            next_id: 0,
            held: VecDeque::new(),
            closing: false,
            disconnect_sent: false,
            close_waiters: Vec::new(),
        }
    }

    /// Runs until DISCONNECT or until reconnecting is given up; `conn` is the first connection.
    pub(crate) async fn run(mut self, mut conn: Conn) {
        let mut reconnect = false;
        let reason = loop {
            self.connected(&mut conn, reconnect);
            let lost = match self.serve(&mut conn).await {
                Ended::Closed => break None,
                Ended::Lost(lost) => lost,
            };
            let address = conn.address.to_string();
            tracing::info!(%address, error = %lost, "connection lost; reconnecting");
            *self.shared.address.lock().unwrap() = None;
            self.shared.emit(Event::Lost {
                address,
                error: lost.to_string(),
            });
            self.last_failed = Some(conn.address.clone());
            if self.disconnect_sent {
                // Everything was receipted before DISCONNECT went out: nothing to save.
                break None;
            }
            self.salvage(&mut conn);
            drop(conn);
            match self.reestablish().await {
                Ok(Some(next)) => conn = next,
                Ok(None) => break None,
                Err(e) => break Some(e),
            }
            reconnect = true;
        };
        let reason = match reason {
            Some(e) => {
                tracing::error!(error = %e, "giving up");
                self.shared.emit(Event::GaveUp {
                    error: e.to_string(),
                });
                e
            }
            None => Error::Closed("disconnected".into()),
        };
        let held = self.held.iter().filter(|(tx, _)| !tx.is_closed()).count();
        if held > 0 {
            tracing::warn!(
                held,
                "the client closed with received messages the application had not taken"
            );
        }
        *self.shared.closed.lock().unwrap() = Some(reason.clone());
        *self.shared.address.lock().unwrap() = None;
        for (_, send) in std::mem::take(&mut self.sends) {
            let _ = send.done.send(Err(reason.clone()));
        }
        for (_, control) in self.controls.drain() {
            if let Control::TxEnd(_, done) = control {
                let _ = done.send(Err(reason.clone()));
            }
        }
        for waiter in self.close_waiters.drain(..) {
            let _ = waiter.send(Ok(()));
        }
    }

    /// Reconnects after a loss. `Ok(None)`: a DISCONNECT arrived during the outage with nothing
    /// left unreceipted, so there is no reason to come back.
    /// Auto-ack messages held from the lost connection keep going to the application meanwhile.
    async fn reestablish(&mut self) -> Result<Option<Conn>, Error> {
        let mut backoff = Backoff::new(&self.policy, false);
        let attempt = establish(
            &self.addresses,
            self.tls.as_ref(),
            &self.policy,
            &self.options,
            &mut backoff,
            &mut self.rng,
            &mut self.last_failed,
            false,
        );
        tokio::pin!(attempt);
        loop {
            let front = self.held.front().map(|(tx, _)| tx.clone());
            tokio::select! {
                result = &mut attempt => return result.map(Some),
                request = self.close_requests.recv(), if !self.closing => {
                    if let Some(done) = request {
                        self.close_waiters.push(done);
                    }
                    self.closing = true;
                    if self.sends.is_empty() {
                        return Ok(None);
                    }
                }
                permit = reserve(front.as_ref()), if front.is_some() => {
                    let (_, message) = self.held.pop_front().expect("held");
                    match permit {
                        Some(permit) => permit.send(message),
                        // The application dropped the subscription: not renewed on reconnect.
                        None => {
                            self.subs.remove(&message.subscription);
                        }
                    }
                }
            }
        }
    }

    /// Starts a new connection: bumps the generation and writes every subscription and
    /// unreceipted SEND again.
    fn connected(&mut self, conn: &mut Conn, reconnect: bool) {
        self.generation += 1;
        // Held client-ack messages are the broker's again: it delivers them again, flagged, on
        // this connection. Auto-ack ones are the application's: they stay, and go first.
        let held = self.held.len();
        self.held.retain(|(_, message)| message.token.is_none());
        if self.held.len() < held {
            tracing::debug!(
                dropped = held - self.held.len(),
                "client-ack messages not yet taken are left to the broker to deliver again"
            );
        }
        let address = conn.address.to_string();
        if reconnect {
            self.shared.reconnects.fetch_add(1, Relaxed);
        }
        *self.shared.address.lock().unwrap() = Some(address.clone());
        for (id, sub) in &self.subs {
            put_subscribe(conn, id, sub);
        }
        let resent = self.sends.len();
        for (seq, send) in &self.sends {
            put_send(conn, *seq, &send.headers, &send.body);
        }
        self.shared.resent.fetch_add(resent as u64, Relaxed);
        // The broker rolled back every transaction of the old connection.
        self.lost_txs.extend(self.open_txs.drain());
        let ended: Vec<u64> = self
            .controls
            .iter()
            .filter(|(_, control)| matches!(control, Control::TxEnd(..)))
            .map(|(seq, _)| *seq)
            .collect();
        for seq in ended {
            if let Some(Control::TxEnd(tx, done)) = self.controls.remove(&seq) {
                self.lost_txs.remove(&tx);
                let _ = done.send(Err(Error::TransactionLost(tx)));
            }
        }
        tracing::info!(%address, version = conn.version, reconnect, resent, subscriptions = self.subs.len(), "connected");
        self.shared.emit(Event::Connected {
            address,
            version: format!("1.{}", conn.version - 10),
            reconnect,
            resent,
        });
    }

    async fn serve(&mut self, conn: &mut Conn) -> Ended {
        let period = match (conn.send_every, conn.expect_every) {
            (Some(s), Some(e)) => Some(s.min(e)),
            (s, e) => s.or(e),
        };
        let mut tick = period.map(|p| {
            let mut tick = tokio::time::interval(p / 2);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            tick
        });
        let mut last_read = Instant::now();
        let mut last_write = Instant::now();
        loop {
            while self.held.is_empty() {
                match conn.next_frame(&self.options.limits) {
                    Ok(Some(frame)) => match self.on_frame(frame, conn) {
                        Ok(true) => {}
                        Ok(false) => return Ended::Closed,
                        Err(lost) => return Ended::Lost(lost),
                    },
                    Ok(None) => break,
                    Err(e) => return Ended::Lost(e.into()),
                }
            }
            if self.closing && !self.disconnect_sent && self.sends.is_empty() {
                conn.put("DISCONNECT", [("receipt", "bye")], b"");
                self.disconnect_sent = true;
            }
            let stall_tx = self.held.front().map(|(tx, _)| tx.clone());
            let take_commands = !self.closing && conn.wbuf.len() < HIGH_WATER;
            if conn.rbuf.capacity() - conn.rbuf.len() < 4096 {
                conn.rbuf.reserve(READ_CHUNK);
            }
            tokio::select! {
                biased;
                n = conn.read.read_buf(&mut conn.rbuf), if stall_tx.is_none() => match n {
                    Ok(0) => return Ended::Lost(Lost::Eof),
                    Ok(_) => last_read = Instant::now(),
                    Err(e) => return Ended::Lost(e.into()),
                },
                // With nothing left to write, a flush of what TLS still holds (never on TCP).
                n = conn.write.write_or_flush(&conn.wbuf),
                    if !conn.wbuf.is_empty() || conn.write.unflushed() => match n {
                    Ok(Some(0)) => return Ended::Lost(Lost::Eof),
                    Ok(Some(n)) => {
                        conn.wbuf.advance(n);
                        last_write = Instant::now();
                    }
                    Ok(None) => {}
                    Err(e) => return Ended::Lost(e.into()),
                },
                permit = reserve(stall_tx.as_ref()), if stall_tx.is_some() => {
                    let (_, message) = self.held.pop_front().expect("held");
                    match permit {
                        Some(permit) => permit.send(message),
                        None => self.drop_subscription(conn, &message.subscription),
                    }
                    // The broker was not read while stalled; do not count that as silence.
                    last_read = Instant::now();
                },
                command = self.commands.recv(), if take_commands => match command {
                    Some(command) => {
                        self.on_command(command, conn);
                        while conn.wbuf.len() < HIGH_WATER {
                            match self.commands.try_recv() {
                                Ok(command) => self.on_command(command, conn),
                                Err(_) => break,
                            }
                        }
                    }
                    // Every handle is gone: finish the unreceipted sends, then disconnect.
                    None => self.closing = true,
                },
                request = self.close_requests.recv(), if !self.closing => {
                    if let Some(done) = request {
                        self.close_waiters.push(done);
                    }
                    // Commands queued before the DISCONNECT (acks above all) still go out
                    // first, whatever the write buffer holds.
                    while let Ok(command) = self.commands.try_recv() {
                        self.on_command(command, conn);
                    }
                    self.closing = true;
                },
                _ = tick_opt(&mut tick) => {
                    if let Some(every) = conn.send_every {
                        if conn.wbuf.is_empty() && last_write.elapsed() >= every / 2 {
                            conn.wbuf.put_u8(b'\n');
                        }
                    }
                    if let Some(every) = conn.expect_every {
                        if self.held.is_empty() && last_read.elapsed() > every * 2 {
                            return Ended::Lost(Lost::Silent(every * 2));
                        }
                    }
                },
            }
        }
    }

    /// Handles one frame from the broker; `Ok(false)` ends the session (DISCONNECT receipted).
    fn on_frame(&mut self, frame: Frame, conn: &mut Conn) -> Result<bool, Lost> {
        match frame.command.as_str() {
            "MESSAGE" => self.on_message(frame, conn),
            "RECEIPT" => {
                let id = frame.get("receipt-id").unwrap_or("");
                if id == "bye" {
                    return Ok(false);
                }
                self.on_receipt(id);
            }
            "ERROR" => {
                let text = error_text(&frame);
                // An ERROR naming a SEND's receipt rejects that SEND: resending it would only
                // be rejected again.
                if let Some(seq) = frame.get("receipt-id").and_then(|r| parse_id(r, 's')) {
                    if let Some(send) = self.sends.remove(&seq) {
                        let _ = send.done.send(Err(Error::Rejected(text.clone())));
                    }
                }
                return Err(Lost::ServerError(text));
            }
            other => tracing::debug!(command = other, "ignoring frame"),
        }
        Ok(true)
    }

    fn on_receipt(&mut self, id: &str) {
        if let Some(seq) = parse_id(id, 's') {
            if let Some(send) = self.sends.remove(&seq) {
                let _ = send.done.send(Ok(()));
            }
        } else if let Some(seq) = parse_id(id, 'c') {
            match self.controls.remove(&seq) {
                Some(Control::Subscribed(sub)) => {
                    if let Some((_, done)) = self.subs.get_mut(&sub).and_then(|s| s.confirm.take())
                    {
                        let _ = done.send(Ok(()));
                    }
                }
                Some(Control::TxEnd(tx, done)) => {
                    self.open_txs.remove(&tx);
                    let _ = done.send(Ok(()));
                }
                None => {}
            }
        }
    }

    fn on_message(&mut self, frame: Frame, conn: &mut Conn) {
        let subscription = frame.get("subscription").unwrap_or("").to_string();
        let Some(sub) = self.subs.get_mut(&subscription) else {
            tracing::debug!(%subscription, "MESSAGE for an unknown subscription");
            return;
        };
        let token = (sub.ack != AckMode::Auto).then(|| {
            let message_id = frame.get("message-id").unwrap_or("").to_string();
            AckToken {
                ack: frame
                    .get("ack")
                    .map_or_else(|| message_id.clone(), str::to_string),
                message_id,
                subscription: subscription.clone(),
                generation: self.generation,
            }
        });
        // A MESSAGE proves the subscription exists; a broker may send a backlog before the
        // RECEIPT, and the caller cannot drain it until `subscribe` returns.
        if let Some((_, done)) = sub.confirm.take() {
            let _ = done.send(Ok(()));
        }
        let message = Message {
            headers: frame.headers,
            body: frame.body,
            subscription,
            token,
        };
        if !self.held.is_empty() {
            // Behind the messages still waiting for the application (salvaging a connection).
            self.held.push_back((sub.deliver.clone(), message));
            return;
        }
        match sub.deliver.try_send(message) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(message)) => {
                self.held.push_back((sub.deliver.clone(), message));
            }
            Err(mpsc::error::TrySendError::Closed(message)) => {
                self.drop_subscription(conn, &message.subscription);
            }
        }
    }

    /// Reads what a lost connection had already received, before it is dropped: the frames in
    /// its read buffer, then whatever its socket still holds, without waiting for more (see the
    /// module's invariants). Auto-ack messages go to `held` (or straight to the application);
    /// receipts and errors count as usual; client-ack messages are left to the broker.
    fn salvage(&mut self, conn: &mut Conn) {
        let mut read = 0;
        loop {
            loop {
                match conn.next_frame(&self.options.limits) {
                    Ok(Some(frame)) => self.on_salvaged(frame, conn),
                    Ok(None) => break,
                    // Garbage (maybe why the connection was dropped): nothing more to read.
                    Err(_) => return,
                }
            }
            if read >= SALVAGE_LIMIT {
                return;
            }
            if conn.rbuf.capacity() - conn.rbuf.len() < 4096 {
                conn.rbuf.reserve(READ_CHUNK);
            }
            match conn.read.try_read_buf(&mut conn.rbuf) {
                Ok(n) if n > 0 => read += n,
                // EOF, nothing more for now, or the socket is gone.
                _ => return,
            }
        }
    }

    /// One frame read from a connection already lost.
    fn on_salvaged(&mut self, frame: Frame, conn: &mut Conn) {
        if frame.command == "MESSAGE" {
            let subscription = frame.get("subscription").unwrap_or("");
            if self
                .subs
                .get(subscription)
                .is_some_and(|sub| sub.ack != AckMode::Auto)
            {
                tracing::debug!(%subscription, "client-ack message of a lost connection left to the broker");
                return;
            }
        }
        // The connection's end is already decided: an ERROR or the DISCONNECT's receipt among
        // these frames changes nothing more.
        let _ = self.on_frame(frame, conn);
    }

    fn drop_subscription(&mut self, conn: &mut Conn, id: &str) {
        if self.subs.remove(id).is_some() {
            conn.put("UNSUBSCRIBE", [("id", id)], b"");
        }
    }

    fn on_command(&mut self, command: Command, conn: &mut Conn) {
        match command {
            Command::Send {
                mut headers,
                body,
                receipt,
                transaction,
            } => {
                if let Some(tx) = transaction {
                    if self.lost_txs.contains(&tx) {
                        return;
                    }
                    headers.push(("transaction".into(), tx));
                    conn.put("SEND", headers.iter().map(pair), &body);
                    return;
                }
                match receipt {
                    Some((done, permit)) => {
                        let seq = self.next_id();
                        put_send(conn, seq, &headers, &body);
                        self.sends.insert(
                            seq,
                            PendingSend {
                                headers,
                                body,
                                done,
                                _permit: permit,
                            },
                        );
                    }
                    None => conn.put("SEND", headers.iter().map(pair), &body),
                }
            }
            Command::Subscribe {
                id,
                destination,
                ack,
                headers,
                deliver,
                done,
            } => {
                let seq = self.next_id();
                self.controls.insert(seq, Control::Subscribed(id.clone()));
                let sub = Sub {
                    destination,
                    ack,
                    headers,
                    deliver,
                    confirm: Some((seq, done)),
                };
                put_subscribe(conn, &id, &sub);
                self.subs.insert(id, sub);
            }
            Command::Unsubscribe { id } => self.drop_subscription(conn, &id),
            Command::Ack {
                token,
                nack,
                transaction,
            } => {
                if token.generation != self.generation {
                    tracing::debug!(message_id = %token.message_id, "ack for a message of an earlier connection dropped; the broker redelivers it");
                    // A COMMIT without this ack would confirm less than the caller asked for:
                    // roll the transaction back now, so its COMMIT fails instead.
                    if let Some(tx) = transaction.filter(|tx| self.open_txs.remove(tx)) {
                        conn.put("ABORT", [("transaction", tx.as_str())], b"");
                        self.lost_txs.insert(tx);
                    }
                    return;
                }
                if transaction
                    .as_ref()
                    .is_some_and(|tx| self.lost_txs.contains(tx))
                {
                    return;
                }
                let command = if nack { "NACK" } else { "ACK" };
                if nack && conn.version == 10 {
                    tracing::warn!("NACK is not part of STOMP 1.0; not sent");
                    return;
                }
                let mut headers: Vec<(&str, &str)> = match conn.version {
                    12 => vec![("id", &token.ack)],
                    _ => vec![
                        ("message-id", &token.message_id),
                        ("subscription", &token.subscription),
                    ],
                };
                if let Some(tx) = &transaction {
                    headers.push(("transaction", tx));
                }
                conn.put(command, headers, b"");
            }
            Command::Begin { transaction } => {
                conn.put("BEGIN", [("transaction", transaction.as_str())], b"");
                self.open_txs.insert(transaction);
            }
            Command::End {
                transaction,
                commit,
                done,
            } => {
                if self.lost_txs.remove(&transaction) {
                    let _ = done.send(Err(Error::TransactionLost(transaction)));
                    return;
                }
                let seq = self.next_id();
                let receipt = format!("c-{seq}");
                let command = if commit { "COMMIT" } else { "ABORT" };
                conn.put(
                    command,
                    [("transaction", transaction.as_str()), ("receipt", &receipt)],
                    b"",
                );
                self.controls.insert(seq, Control::TxEnd(transaction, done));
            }
        }
    }

    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

fn pair((k, v): &(String, String)) -> (&str, &str) {
    (k, v)
}

fn put_send(conn: &mut Conn, seq: u64, headers: &[(String, String)], body: &[u8]) {
    let receipt = format!("s-{seq}");
    let headers = headers
        .iter()
        .map(pair)
        .chain(std::iter::once(("receipt", receipt.as_str())));
    conn.put("SEND", headers, body);
}

fn put_subscribe(conn: &mut Conn, id: &str, sub: &Sub) {
    let receipt = sub.confirm.as_ref().map(|(seq, _)| format!("c-{seq}"));
    let mut headers = vec![
        ("destination", sub.destination.as_str()),
        ("id", id),
        ("ack", sub.ack.as_str()),
    ];
    headers.extend(sub.headers.iter().map(pair));
    if let Some(receipt) = &receipt {
        headers.push(("receipt", receipt));
    }
    conn.put("SUBSCRIBE", headers, b"");
}

fn parse_id(receipt: &str, kind: char) -> Option<u64> {
    receipt.strip_prefix(kind)?.strip_prefix('-')?.parse().ok()
}

async fn reserve(tx: Option<&mpsc::Sender<Message>>) -> Option<mpsc::Permit<'_, Message>> {
    match tx {
        Some(tx) => tx.reserve().await.ok(),
        None => std::future::pending().await,
    }
}

async fn tick_opt(tick: &mut Option<Interval>) {
    match tick {
        Some(tick) => {
            tick.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// A one-line description of an ERROR frame: its `message` header and the body's first line.
fn error_text(frame: &Frame) -> String {
    let message = frame.get("message").unwrap_or("");
    let body = String::from_utf8_lossy(&frame.body);
    let detail = body.lines().next().unwrap_or("").trim();
    match (message.is_empty(), detail.is_empty() || detail == message) {
        (true, true) => "ERROR frame without a message".to_string(),
        (false, true) => message.to_string(),
        (true, false) => detail.to_string(),
        (false, false) => format!("{message}: {detail}"),
    }
}
