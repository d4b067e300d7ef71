//! The client-facing side: binding the listeners (plain `tcp://` and TLS `ssl://`), accepting
//! connections within the connection limit, and ending every session when the node goes passive.
//!
//! A TLS handshake runs in the connection's own task, never in the accept loop, and counts
//! against the CONNECT deadline: a client that stalls its handshake holds only its own slot.
//! A client refused at a connection limit is told why over the same handshake, at most
//! [`REFUSALS_IN_FLIGHT`] at a time.
//!
//! [`run`] owns the listeners and every session task. Shutdown is a future passed in by the
//! caller (lockd's Stop, or a signal in standalone mode); when it resolves the listeners are
//! dropped first, so no new client can connect while the others are told to leave.

use crate::admission::Sources;
use crate::auth::Security;
use crate::broker::Request;
use crate::memory::Usage;
use crate::reload::Current;
use crate::stats::Stats;
use crate::stomp::connection::Connection;
use crate::stomp::frame::{Frame, Limits};
use crate::stomp::session::{self, SessionContext};
use crate::stomp::stream::Stream;
use rustls::ServerConfig;
pub use shared_proto::endpoint::{Endpoint, Transport};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, error, info, info_span, warn, Instrument};

/// Accepted sockets waiting for the run loop; accepting pauses when it is full.
const ACCEPT_QUEUE: usize = 64;

/// Refused clients being told why at once (an ERROR frame, after a TLS handshake on an
/// `ssl://` listener, within the CONNECT deadline). Each costs a task and, over TLS, a
/// handshake's CPU: past this many, a flood beyond the connection limits is closed unexplained.
const REFUSALS_IN_FLIGHT: usize = 64;

/// Pause after a failed accept (e.g. out of descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How the server serves clients.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Bounds on each client frame.
    pub limits: Limits,
    /// Open client connections beyond which new ones are refused.
    pub max_connections: u64,
    /// Open connections one client address may hold; more from it are refused.
    pub max_connections_per_source: u32,
    /// How long one frame may take to arrive, from its first byte to its last.
    pub frame_timeout: Duration,
    /// Start of every session id, unique to this node and epoch.
    pub session_prefix: String,
    /// How long a new connection may take to send CONNECT before it is closed.
    pub connect_timeout: Duration,
    /// Heart-beat interval offered to and asked of clients; zero disables heart-beating.
    pub heartbeat: Duration,
    /// Who may connect and what they may do; `None`: anyone, anything.
    pub security: Option<Current<Security>>,
    /// Waiting messages' bytes past which SENDs wait, then are refused.
    pub memory_limit: usize,
    pub send_wait: Duration,
}

/// Why and how fast to stop serving.
#[derive(Debug, Clone)]
pub struct Shutdown {
    /// Sent to every client in the ERROR frame, and logged.
    pub reason: String,
    /// How long sessions get to say goodbye before they are cut off.
    pub drain: Duration,
}

/// A bound listener, with the TLS configuration its connections use when it is `ssl://`.
#[derive(Debug)]
pub struct Listener {
    tcp: TcpListener,
    tls: Option<Current<ServerConfig>>,
}

impl Listener {
    /// The bound address as clients name it: `HOST:PORT` for plain listeners (the form lockd
    /// and the tests have always read), `ssl://HOST:PORT` for TLS ones.
    pub fn local_addr(&self) -> io::Result<String> {
        let addr = self.tcp.local_addr()?;
        Ok(match self.tls {
            Some(_) => format!("ssl://{addr}"),
            None => addr.to_string(),
        })
    }
}

/// A `--listen` address that could not be served.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("could not listen on {addr}")]
    Bind {
        /// The address as given on the command line.
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "listener ssl://{addr} needs a certificate: give --tls-cert-file and --tls-key-file \
         (lockd: tls_cert_file and tls_key_file)"
    )]
    NoCertificate { addr: String },
}

/// Binds every address, all or nothing: a node that serves only some of its addresses would
/// confuse clients whose failover URL names the others. `tls` serves the `ssl://` ones.
pub async fn bind(
    endpoints: &[Endpoint],
    tls: Option<&Current<ServerConfig>>,
) -> Result<Vec<Listener>, BindError> {
    let mut listeners = Vec::with_capacity(endpoints.len());
    for endpoint in endpoints {
        let addr = &endpoint.addr;
        let tls = match endpoint.transport {
            Transport::Tcp => None,
            Transport::Ssl => Some(
                tls.cloned()
                    .ok_or_else(|| BindError::NoCertificate { addr: addr.clone() })?,
            ),
        };
        let tcp = TcpListener::bind(addr.as_str())
            .await
            .map_err(|source| BindError::Bind {
                addr: addr.clone(),
                source,
            })?;
        listeners.push(Listener { tcp, tls });
    }
    Ok(listeners)
}

/// A socket just accepted, with the TLS configuration current when it was accepted (`ssl://`).
struct Accepted {
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<Arc<ServerConfig>>,
}

/// Runs the TLS handshake of an `ssl://` connection within `deadline`; a plain one passes
/// through. `None` (logged) when the handshake failed: a client that does not trust our
/// certificate, one without the client certificate we require, or one that stalled.
async fn secure(
    stream: TcpStream,
    tls: Option<Arc<ServerConfig>>,
    deadline: Duration,
) -> Option<Stream> {
    let Some(config) = tls else {
        return Some(Stream::Plain(stream));
    };
    let handshake = tokio_rustls::TlsAcceptor::from(config).accept(stream);
    match tokio::time::timeout(deadline, handshake).await {
        Ok(Ok(tls)) => Some(Stream::Tls(Box::new(tls))),
        Ok(Err(err)) => {
            info!(error = %err, "TLS handshake failed; closing");
            None
        }
        Err(_) => {
            info!(timeout = ?deadline, "no TLS handshake within the CONNECT deadline; closing");
            None
        }
    }
}

/// Serves clients on `listeners` until `shutdown` resolves, then stops accepting, tells every
/// client the node is going passive, and returns once their sessions ended or the drain time
/// passed.
pub async fn run(
    listeners: Vec<Listener>,
    settings: Settings,
    stats: Arc<Stats>,
    broker: mpsc::Sender<Request>,
    memory: Usage,
    shutdown: impl Future<Output = Shutdown>,
) {
    let (accepted_tx, mut accepted) = mpsc::channel(ACCEPT_QUEUE);
    let mut acceptors = JoinSet::new();
    for listener in listeners {
        acceptors.spawn(accept(listener, accepted_tx.clone()).in_current_span());
    }
    drop(accepted_tx);
    let (passive_tx, passive_rx) = watch::channel(None);
    let mut sessions = JoinSet::new();
    let mut next_session = 0u64;
    let sources = Sources::new(settings.max_connections_per_source);
    let refusals = Arc::new(Semaphore::new(REFUSALS_IN_FLIGHT));
    let mut start = |sessions: &mut JoinSet<()>, accepted: Accepted| {
        let Accepted { stream, peer, tls } = accepted;
        next_session += 1;
        let span = info_span!("client", %peer, tls = tls.is_some());
        let refuse = |sessions: &mut JoinSet<()>, stream, refusal| {
            let Ok(permit) = Arc::clone(&refusals).try_acquire_owned() else {
                debug!(%peer, "closing a refused client unexplained: {REFUSALS_IN_FLIGHT} refusals in flight");
                return;
            };
            let explained = refuse(
                stream,
                tls.clone(),
                settings.connect_timeout,
                refusal,
                settings.limits,
            );
            sessions.spawn(
                async move {
                    explained.await;
                    drop(permit);
                }
                .instrument(span.clone()),
            );
        };
        let limit = settings.max_connections;
        if stats.connections() >= limit {
            warn!(%peer, limit, "refusing a client: connection limit reached");
            let refusal = Refusal {
                message: format!("connection limit {limit} reached"),
                detail: format!(
                    "This node already serves {limit} connections (--max-connections). Try \
                     again later or another node.\n"
                ),
            };
            refuse(sessions, stream, refusal);
            return;
        }
        let Some(slot) = sources.admit(peer.ip()) else {
            let limit = sources.limit();
            warn!(%peer, limit, "refusing a client: connection limit per address reached");
            let refusal = Refusal {
                message: format!("connection limit per address {limit} reached"),
                detail: format!(
                    "{} already holds {limit} connections to this node \
                     (--max-connections-per-source). Close some first.\n",
                    peer.ip()
                ),
            };
            refuse(sessions, stream, refusal);
            return;
        };
        let open = stats.open_connection();
        let ctx = SessionContext {
            id: format!("{}-{next_session}", settings.session_prefix),
            conn: next_session,
            peer,
            stats: Arc::clone(&stats),
            passive: passive_rx.clone(),
            broker: broker.clone(),
            connect_timeout: settings.connect_timeout,
            accepted: tokio::time::Instant::now(),
            heartbeat: settings.heartbeat,
            security: settings.security.clone(),
            memory: memory.clone(),
            memory_limit: settings.memory_limit,
            send_wait: settings.send_wait,
        };
        let (limits, frame_timeout) = (settings.limits, settings.frame_timeout);
        sessions.spawn(
            async move {
                // A TLS handshake is part of the time a client has to say CONNECT: the deadline
                // counts from the accept.
                if let Some(stream) = secure(stream, tls, ctx.connect_timeout).await {
                    session::run(Connection::new(stream, limits, frame_timeout), ctx).await;
                }
                drop((open, slot));
            }
            .instrument(span),
        );
    };
    tokio::pin!(shutdown);
    let shutdown = loop {
        tokio::select! {
            shutdown = &mut shutdown => break shutdown,
            Some(socket) = accepted.recv() => start(&mut sessions, socket),
            Some(ended) = sessions.join_next() => log_session_end(ended),
        }
    };
    info!(reason = %shutdown.reason, "going passive: closing listeners and client connections");
    // Dropping the acceptors closes the listeners. Sockets they already accepted are still
    // served, only to be told at once that the node is going passive.
    acceptors.shutdown().await;
    while let Ok(socket) = accepted.try_recv() {
        start(&mut sessions, socket);
    }
    // Before telling clients to leave: refuse further SENDs, let what is in flight land, and
    // wait until every stored message is durable, so each receipt owed is in its session's
    // outbox and leaves before the ERROR that says goodbye.
    let (drained_tx, drained_rx) = oneshot::channel();
    if broker.send(Request::Drain(drained_tx)).await.is_ok()
        && tokio::time::timeout(shutdown.drain / 2, drained_rx)
            .await
            .is_err()
    {
        warn!("the store did not confirm every write within the drain time");
    }
    // No session task is gone while we hold `passive_tx`, so every one of them sees this.
    passive_tx.send_replace(Some(shutdown.reason.as_str().into()));
    let drained = tokio::time::timeout(shutdown.drain, async {
        while let Some(ended) = sessions.join_next().await {
            log_session_end(ended);
        }
    })
    .await;
    if drained.is_err() {
        warn!(
            remaining = sessions.len(),
            drain = ?shutdown.drain,
            "client connections did not close within the drain time; cutting them off"
        );
        sessions.shutdown().await;
    }
}

/// Accepts connections on one listener and hands them to the run loop until dropped. Each
/// `ssl://` connection takes the TLS configuration current at its accept (a SIGHUP reload
/// serves the next connection, never an open one).
async fn accept(listener: Listener, accepted: mpsc::Sender<Accepted>) {
    loop {
        match listener.tcp.accept().await {
            Ok((stream, peer)) => {
                // STOMP frames are small and latency matters more than packet count.
                if let Err(err) = stream.set_nodelay(true) {
                    debug!(%peer, error = %err, "could not set TCP_NODELAY");
                }
                let tls = listener.tls.as_ref().map(|tls| Arc::clone(&tls.borrow()));
                let socket = Accepted { stream, peer, tls };
                if accepted.send(socket).await.is_err() {
                    return;
                }
            }
            Err(err) => {
                warn!(error = %err, "accept failed; retrying");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Why a client over a connection limit cannot stay.
struct Refusal {
    message: String,
    detail: String,
}

/// Tells a client over a connection limit why it cannot stay (over TLS on an `ssl://`
/// listener, within the CONNECT deadline), then closes.
async fn refuse(
    stream: TcpStream,
    tls: Option<Arc<ServerConfig>>,
    deadline: Duration,
    refusal: Refusal,
    limits: Limits,
) {
    let Some(stream) = secure(stream, tls, deadline).await else {
        return;
    };
    // Not read from: the frame deadline is never reached.
    let mut conn = Connection::new(stream, limits, Duration::MAX);
    let frame = Frame::new("ERROR")
        .with_header("message", refusal.message)
        .with_header("content-type", "text/plain")
        .with_body(refusal.detail);
    if let Err(err) = conn.write_frame(&frame).await {
        debug!(error = %err, "could not tell a refused client why");
    }
    conn.close().await;
}

/// A session task ends by returning; a panic is a bug worth an error line, and must not take the
/// server down with it.
fn log_session_end(ended: Result<(), tokio::task::JoinError>) {
    if let Err(err) = ended {
        if err.is_panic() {
            error!(error = %err, "a client session panicked");
        }
    }
}
