//! The public client: cheap, cloneable handles onto one session task (see `session.rs` for the
//! reconnect invariants).

use crate::backoff::Backoff;
use crate::session::{self, AckToken, Command, Done, Session};
use crate::transport::{TlsError, TlsOptions};
use crate::url::{FailoverUrl, UrlError};
use bytes::Bytes;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use stomp_codec::frame::Limits;
use tokio::sync::{broadcast, mpsc, oneshot, Semaphore};

/// Errors of the client API.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Url(#[from] UrlError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("no broker accepted a STOMP connection after {passes} passes over the address list (last: {last})")]
    GaveUp { passes: u32, last: String },
    #[error("{address} refused the connection: {message}")]
    Refused { address: String, message: String },
    #[error("the broker rejected the frame: {0}")]
    Rejected(String),
    #[error(
        "transaction {0} was rolled back by the broker when its connection was lost; run it again"
    )]
    TransactionLost(String),
    #[error(
        "no connection or no room in the receipt window within {0:?} (failover option `timeout`)"
    )]
    Timeout(Duration),
    #[error("the client is closed: {0}")]
    Closed(String),
}

/// Acknowledgement mode of a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckMode {
    /// The broker considers a message consumed once sent.
    Auto,
    /// An ACK acknowledges the message and every earlier one of the subscription.
    Client,
    /// An ACK acknowledges exactly one message.
    ClientIndividual,
}

impl AckMode {
    /// The `ack` header value.
    pub fn as_str(self) -> &'static str {
        match self {
            AckMode::Auto => "auto",
            AckMode::Client => "client",
            AckMode::ClientIndividual => "client-individual",
        }
    }
}

impl fmt::Display for AckMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AckMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(AckMode::Auto),
            "client" => Ok(AckMode::Client),
            "client-individual" => Ok(AckMode::ClientIndividual),
            other => Err(format!(
                "unknown ack mode {other:?}: expected auto, client or client-individual"
            )),
        }
    }
}

/// Heart-beat periods this client offers (STOMP 1.1+); zero switches a direction off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartBeat {
    /// How often we can send (the first number of the `heart-beat` header).
    pub send: Duration,
    /// How often we want to hear from the broker (the second number). A broker silent for
    /// twice the negotiated period is dropped and the client fails over.
    pub receive: Duration,
}

/// Connection options that the failover URL does not carry.
#[derive(Debug, Clone)]
pub struct Options {
    pub login: Option<String>,
    pub passcode: Option<String>,
    /// The CONNECT `host` header; defaults to the host of the address being connected.
    pub virtual_host: Option<String>,
    /// Extra CONNECT headers, e.g. ActiveMQ's `client-id` for durable topic subscriptions.
    pub connect_headers: Vec<(String, String)>,
    /// Default 10 s both ways.
    pub heart_beat: HeartBeat,
    /// TCP connect plus CONNECTED, per address (default 5 s).
    pub connect_timeout: Duration,
    /// SENDs awaiting their RECEIPT at once (default 100); `send` waits while the window is full.
    pub receipt_window: usize,
    /// Messages buffered per subscription before the client stops reading (default 1024).
    pub subscription_buffer: usize,
    pub limits: Limits,
    /// The CA (and client certificate) for `ssl://` addresses; read once, at [`Client::connect`].
    pub tls: TlsOptions,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            login: None,
            passcode: None,
            virtual_host: None,
            connect_headers: Vec::new(),
            heart_beat: HeartBeat {
                send: Duration::from_secs(10),
                receive: Duration::from_secs(10),
            },
            connect_timeout: Duration::from_secs(5),
            receipt_window: 100,
            subscription_buffer: 1024,
            // A broker's frames may be larger than what it takes from a client.
            limits: Limits {
                max_frame_bytes: Limits::default().max_frame_bytes,
                max_headers: 1000,
                max_header_bytes: 64 * 1024,
            },
            tls: TlsOptions::default(),
        }
    }
}

/// Something a tool may want to show or log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A STOMP session is up; after a reconnect, `resent` unreceipted SENDs went out again.
    Connected {
        address: String,
        version: String,
        reconnect: bool,
        resent: usize,
    },
    /// The connection to `address` ended; the client is reconnecting.
    Lost { address: String, error: String },
    /// Reconnecting was given up (`maxReconnectAttempts`); the client is closed.
    GaveUp { error: String },
}

/// Counters since the client was created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// The broker currently connected to, if any.
    pub address: Option<String>,
    /// Successful reconnects after a lost connection.
    pub reconnects: u64,
    /// SENDs written again after a reconnect because their RECEIPT had not arrived.
    pub resent: u64,
}

/// State the session task shares with the handles.
pub(crate) struct Shared {
    pub reconnects: AtomicU64,
    pub resent: AtomicU64,
    pub address: Mutex<Option<String>>,
    pub closed: Mutex<Option<Error>>,
    pub events: broadcast::Sender<Event>,
}

impl Shared {
    pub(crate) fn emit(&self, event: Event) {
        // No receiver is fine: events are optional.
        let _ = self.events.send(event);
    }

    fn closed(&self) -> Error {
        self.closed
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(|| Error::Closed("the session ended".into()))
    }
}

/// A message delivered to a [`Subscription`].
#[derive(Debug, Clone)]
pub struct Message {
    /// Every header of the MESSAGE frame, in order (the first of a repeated name wins).
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// The subscription id that received it.
    pub subscription: String,
    pub(crate) token: Option<AckToken>,
}

impl Message {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn destination(&self) -> Option<&str> {
        self.header("destination")
    }

    pub fn message_id(&self) -> Option<&str> {
        self.header("message-id")
    }

    /// The broker flagged this as a redelivery.
    pub fn redelivered(&self) -> bool {
        self.header("redelivered") == Some("true")
    }
}

/// Resolves when the broker's RECEIPT for a SEND arrives (possibly after resends on later
/// connections), or with the error that ended the attempt.
#[must_use = "a Receipt does nothing unless awaited; drop it only if you do not need the confirmation"]
pub struct Receipt(oneshot::Receiver<Result<(), Error>>, Arc<Shared>);

impl Future for Receipt {
    type Output = Result<(), Error>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match Pin::new(&mut self.0).poll(cx) {
            Poll::Ready(Ok(result)) => Poll::Ready(result),
            Poll::Ready(Err(_)) => Poll::Ready(Err(self.1.closed())),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A failover STOMP client. Clones share one connection and one session task.
#[derive(Clone)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    close: mpsc::Sender<Done>,
    window: Arc<Semaphore>,
    shared: Arc<Shared>,
    ids: Arc<AtomicU64>,
    send_timeout: Option<Duration>,
    subscription_buffer: usize,
}

impl Client {
    /// Parses `url` (see [`crate::url`]) and connects; returns once a broker accepted CONNECT.
    /// Retries as `startupMaxReconnectAttempts` (else `maxReconnectAttempts`) allows, except
    /// that a broker answering CONNECT with ERROR (e.g. bad credentials) fails at once.
    pub async fn connect(url: &str, options: Options) -> Result<Client, Error> {
        Client::connect_to(url.parse()?, options).await
    }

    /// As [`Client::connect`], with a parsed URL.
    pub async fn connect_to(url: FailoverUrl, mut options: Options) -> Result<Client, Error> {
        options.receipt_window = options.receipt_window.max(1);
        options.subscription_buffer = options.subscription_buffer.max(1);
        // Only when some address needs it: a plain URL works without any TLS file.
        let tls = match url.addresses.iter().any(|a| a.tls) {
            true => Some(options.tls.load()?),
            false => None,
        };
        let rng = seed();
        let (commands, commands_rx) = mpsc::channel(1024);
        let (close, close_rx) = mpsc::channel(4);
        let shared = Arc::new(Shared {
            reconnects: AtomicU64::new(0),
            resent: AtomicU64::new(0),
            address: Mutex::new(None),
            closed: Mutex::new(None),
            events: broadcast::channel(64).0,
        });
        let window = Arc::new(Semaphore::new(options.receipt_window));
        let mut session = Session::new(
            url.addresses,
            tls,
            url.reconnect,
            options,
            commands_rx,
            close_rx,
            shared.clone(),
            rng,
        );
        let mut backoff = Backoff::new(&session.policy, true);
        let conn = session::establish(
            &session.addresses,
            session.tls.as_ref(),
            &session.policy,
            &session.options,
            &mut backoff,
            &mut session.rng,
            &mut session.last_failed,
            true,
        )
        .await?;
        // Visible at once, before the session task first runs.
        *shared.address.lock().unwrap() = Some(conn.address.to_string());
        let send_timeout = session.policy.send_timeout;
        let subscription_buffer = session.options.subscription_buffer;
        tokio::spawn(session.run(conn));
        Ok(Client {
            commands,
            close,
            window,
            shared,
            ids: Arc::new(AtomicU64::new(0)),
            send_timeout,
            subscription_buffer,
        })
    }

    /// Sends a message and asks for a RECEIPT. Waits while the receipt window is full (or while
    /// reconnecting), then returns a [`Receipt`] that resolves once the broker confirmed it.
    /// Until then the SEND is resent after every reconnect. `client.send(..).await?.await?`
    /// is a synchronous send.
    pub async fn send(
        &self,
        destination: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Receipt, Error> {
        let body = body.into();
        let queued = async {
            let permit = self
                .window
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| self.shared.closed())?;
            let (done, rx) = oneshot::channel();
            self.command(Command::Send {
                headers: message_headers(destination, headers),
                body,
                receipt: Some((done, permit)),
                transaction: None,
            })
            .await?;
            Ok(Receipt(rx, self.shared.clone()))
        };
        self.bounded(queued).await
    }

    /// Sends a message without a receipt: fire and forget, lost if the connection drops before
    /// the broker read it. Returns once queued.
    pub async fn send_unreceipted(
        &self,
        destination: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<(), Error> {
        let command = Command::Send {
            headers: message_headers(destination, headers),
            body: body.into(),
            receipt: None,
            transaction: None,
        };
        self.bounded(self.command(command)).await
    }

    /// Subscribes and returns once the broker receipted the SUBSCRIBE (or delivered a first
    /// message on it, which proves as much). The subscription is
    /// renewed on every reconnect with the same id, ack mode and headers (e.g.
    /// `activemq.prefetchSize`).
    pub async fn subscribe(
        &self,
        destination: &str,
        ack: AckMode,
        headers: &[(&str, &str)],
    ) -> Result<Subscription, Error> {
        let id = format!("sub-{}", self.ids.fetch_add(1, Relaxed));
        let (deliver, messages) = mpsc::channel(self.subscription_buffer);
        let (done, confirmed) = oneshot::channel();
        self.command(Command::Subscribe {
            id: id.clone(),
            destination: destination.to_string(),
            ack,
            headers: owned(headers),
            deliver,
            done,
        })
        .await?;
        Receipt(confirmed, self.shared.clone()).await?;
        Ok(Subscription {
            id,
            messages,
            client: self.clone(),
        })
    }

    /// Acknowledges `message` (a no-op for `auto` subscriptions). Returns once queued.
    pub async fn ack(&self, message: &Message) -> Result<(), Error> {
        self.acknowledge(message, false, None).await
    }

    /// Rejects `message` so the broker redelivers it or moves it to its dead-letter queue.
    pub async fn nack(&self, message: &Message) -> Result<(), Error> {
        self.acknowledge(message, true, None).await
    }

    async fn acknowledge(
        &self,
        message: &Message,
        nack: bool,
        transaction: Option<String>,
    ) -> Result<(), Error> {
        let Some(token) = &message.token else {
            return Ok(());
        };
        self.command(Command::Ack {
            token: token.clone(),
            nack,
            transaction,
        })
        .await
    }

    /// Begins a transaction. Its SENDs and ACKs take effect at [`Transaction::commit`].
    pub async fn begin(&self) -> Result<Transaction, Error> {
        let id = format!("tx-{}", self.ids.fetch_add(1, Relaxed));
        self.command(Command::Begin {
            transaction: id.clone(),
        })
        .await?;
        Ok(Transaction {
            id,
            client: self.clone(),
        })
    }

    /// Waits for every unreceipted SEND to be receipted, sends DISCONNECT and waits for its
    /// receipt, so every ack before it has been processed. Other clones are closed too.
    pub async fn disconnect(self) -> Result<(), Error> {
        let (done, rx) = oneshot::channel();
        if self.close.send(done).await.is_err() {
            return Ok(());
        }
        match rx.await {
            Ok(result) => result,
            Err(_) => Ok(()),
        }
    }

    /// Counters and the current address.
    pub fn stats(&self) -> Stats {
        Stats {
            address: self.shared.address.lock().unwrap().clone(),
            reconnects: self.shared.reconnects.load(Relaxed),
            resent: self.shared.resent.load(Relaxed),
        }
    }

    /// Connection events from now on (a slow reader misses old ones, never blocks the client).
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.shared.events.subscribe()
    }

    async fn command(&self, command: Command) -> Result<(), Error> {
        self.commands
            .send(command)
            .await
            .map_err(|_| self.shared.closed())
    }

    /// Applies the failover `timeout` option to waiting for the session.
    async fn bounded<T>(&self, fut: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
        match self.send_timeout {
            Some(limit) => tokio::time::timeout(limit, fut)
                .await
                .map_err(|_| Error::Timeout(limit))?,
            None => fut.await,
        }
    }
}

/// Messages of one subscription, in delivery order.
pub struct Subscription {
    id: String,
    messages: mpsc::Receiver<Message>,
    client: Client,
}

impl Subscription {
    /// The next message; `None` once the client is closed for good.
    pub async fn next(&mut self) -> Option<Message> {
        self.messages.recv().await
    }

    /// The subscription id sent to the broker.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The client this subscription belongs to (for acks).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Sends UNSUBSCRIBE; messages already buffered are dropped.
    pub async fn unsubscribe(self) -> Result<(), Error> {
        let id = self.id.clone();
        self.client.command(Command::Unsubscribe { id }).await
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // Best effort; if the queue is full the session notices the closed receiver on the
        // next MESSAGE and unsubscribes then.
        let _ = self.client.commands.try_send(Command::Unsubscribe {
            id: self.id.clone(),
        });
    }
}

/// An open transaction. Dropping it without commit leaves it to the broker (rolled back when
/// the connection closes); prefer [`Transaction::abort`].
pub struct Transaction {
    id: String,
    client: Client,
}

impl Transaction {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Sends inside the transaction (no receipt per message: the COMMIT's receipt covers all).
    pub async fn send(
        &self,
        destination: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<(), Error> {
        self.client
            .command(Command::Send {
                headers: message_headers(destination, headers),
                body: body.into(),
                receipt: None,
                transaction: Some(self.id.clone()),
            })
            .await
    }

    pub async fn ack(&self, message: &Message) -> Result<(), Error> {
        self.client
            .acknowledge(message, false, Some(self.id.clone()))
            .await
    }

    pub async fn nack(&self, message: &Message) -> Result<(), Error> {
        self.client
            .acknowledge(message, true, Some(self.id.clone()))
            .await
    }

    /// Commits and waits for the broker's receipt. [`Error::TransactionLost`] if the connection
    /// was lost since BEGIN: nothing of it took effect.
    pub async fn commit(self) -> Result<(), Error> {
        self.end(true).await
    }

    /// Rolls back and waits for the broker's receipt.
    pub async fn abort(self) -> Result<(), Error> {
        self.end(false).await
    }

    async fn end(self, commit: bool) -> Result<(), Error> {
        let (done, rx) = oneshot::channel();
        self.client
            .command(Command::End {
                transaction: self.id.clone(),
                commit,
                done,
            })
            .await?;
        Receipt(rx, self.client.shared.clone()).await
    }
}

fn owned(headers: &[(&str, &str)]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn message_headers(destination: &str, headers: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut all = Vec::with_capacity(headers.len() + 1);
    all.push(("destination".to_string(), destination.to_string()));
    all.extend(
        headers
            .iter()
            .filter(|(k, _)| !matches!(*k, "destination" | "receipt" | "transaction"))
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    all
}

/// A random seed without a dependency: std's hasher keys are random per process.
fn seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    h.finish()
}
