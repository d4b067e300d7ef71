//! The channel to lockd: the inherited socketpair end named by `LOCKD_CONTROL_FD`.
//!
//! Before activation the broker talks to lockd in lockstep ([`Control::handshake`],
//! [`Control::wait_for_activate`]), refusing anything out of order. Once active, a reader task
//! turns lockd's messages into [`Request`]s while the broker serves clients, and any EOF, read
//! error or out-of-step message becomes [`Lost`]: lockd is gone or cannot be trusted, and the
//! broker must exit at once.
//!
//! Replies that need the broker core (a liveness `Pong`, `Stats`) or the scheduler (`ctl
//! schedules`) go through [`Deferred`]: each waits in a task of its own, so a stuck core cannot
//! hide behind a live control reader (no pong) nor stop the control loop from seeing `Stop` or a
//! lost lockd.

use shared_proto::control::{BrokerStats, FromBroker, ToBroker, CONTROL_FD_ENV};
use shared_proto::destinations::DestinationCall;
use shared_proto::schedules::Cancel;
use shared_proto::wire::{self, WireError};
use shared_proto::PROTOCOL_VERSION;
use std::future::Future;
use std::io;
use std::os::fd::{FromRawFd, RawFd};
use std::time::Duration;
use tokio::io::BufReader;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tracing::Instrument;

/// Requests lockd may send while the broker serves; a few are plenty since each is answered
/// at once.
const REQUEST_QUEUE: usize = 8;

/// Why the control channel could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{CONTROL_FD_ENV}={value:?} is not a descriptor number")]
    BadFdVar { value: String },
    #[error("descriptor {fd} from {CONTROL_FD_ENV} is not an open socket")]
    NotASocket {
        fd: RawFd,
        #[source]
        source: io::Error,
    },
    #[error("lockd closed the control socket before activating this broker")]
    Closed,
    #[error(transparent)]
    Wire(#[from] WireError),
}

/// What lockd decided before the broker opened anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Activation {
    /// Open the store under this epoch and serve.
    Activate { epoch: u64 },
    /// Stop without ever serving.
    Stop { reason: String },
}

/// A request from lockd to an active broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Report stats now.
    Stats,
    /// Stop gracefully within `deadline`.
    Stop { deadline: Duration, reason: String },
    /// Liveness check: answer `Pong { seq }` once the broker core has handled it ([`Deferred`]).
    Ping { seq: u64 },
    /// List pending scheduled jobs; answered through [`Deferred`] (see [`crate::schedules`]).
    ListSchedules { id: u64, limit: u32 },
    /// Cancel scheduled jobs; answered through [`Deferred`] once durable.
    CancelSchedules { id: u64, which: Cancel },
    /// List, purge or delete destinations; answered through [`Deferred`].
    Destinations { id: u64, call: DestinationCall },
}

/// lockd is gone, or said something that shows the channel is out of step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Lost {
    /// What happened on the channel.
    pub reason: String,
}

/// The control channel before activation, read and written in lockstep.
#[derive(Debug)]
pub struct Control {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    buf: Vec<u8>,
}

/// lockd's requests to an active broker, read by a background task.
#[derive(Debug)]
pub struct Requests {
    rx: mpsc::Receiver<Result<Request, Lost>>,
}

/// The broker's side of the channel once active: answers and the final `Stopping`.
#[derive(Debug)]
pub struct Replies {
    writer: OwnedWriteHalf,
}

/// The descriptor lockd handed down, if any: its presence decides controlled mode.
pub fn fd_from_env() -> Result<Option<RawFd>, ControlError> {
    let Some(value) = std::env::var_os(CONTROL_FD_ENV) else {
        return Ok(None);
    };
    let value = value.to_string_lossy().into_owned();
    match value.trim().parse::<RawFd>() {
        Ok(fd) if fd >= 0 => Ok(Some(fd)),
        _ => Err(ControlError::BadFdVar { value }),
    }
}

impl Control {
    /// Takes ownership of the inherited descriptor. Call once, from the runtime, before anything
    /// else could open a descriptor under the same number.
    pub fn adopt(fd: RawFd) -> Result<Control, ControlError> {
        // SAFETY: fcntl(F_GETFD) only inspects the descriptor table, whatever `fd` is.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(ControlError::NotASocket {
                fd,
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: `fd` is open (checked above) and lockd handed it to this process for the
        // control channel alone; nothing else in the process refers to it, and `adopt` is called
        // once, so the stream becomes its only owner and closes it exactly once.
        let stream = unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) };
        let not_a_socket = |source| ControlError::NotASocket { fd, source };
        // getsockname fails with ENOTSOCK for a pipe or file, which would otherwise only show up
        // as odd read errors later.
        stream.local_addr().map_err(not_a_socket)?;
        // SAFETY: F_SETFD on a descriptor we own. Close-on-exec keeps lockd's channel out of any
        // process this broker might ever start.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
            return Err(not_a_socket(io::Error::last_os_error()));
        }
        stream.set_nonblocking(true).map_err(not_a_socket)?;
        let stream = UnixStream::from_std(stream).map_err(not_a_socket)?;
        let (reader, writer) = stream.into_split();
        Ok(Control {
            reader: BufReader::new(reader),
            writer,
            buf: Vec::new(),
        })
    }

    /// Exchanges `Hello`s: ours first, then lockd's, whose version must equal ours.
    pub async fn handshake(&mut self) -> Result<(), ControlError> {
        let hello = FromBroker::Hello {
            version: PROTOCOL_VERSION,
            pid: std::process::id(),
        };
        wire::write_message(&mut self.writer, &hello).await?;
        match self.read().await? {
            ToBroker::Hello { version } => Ok(wire::check_version(version)?),
            other => Err(unexpected("hello", &other)),
        }
    }

    /// Waits for lockd's `Activate` (or `Stop`), answering `Stats` with zeros meanwhile since
    /// nothing is open yet.
    pub async fn wait_for_activate(&mut self) -> Result<Activation, ControlError> {
        loop {
            match self.read().await? {
                ToBroker::Activate { epoch } => return Ok(Activation::Activate { epoch }),
                ToBroker::Stop { reason, .. } => return Ok(Activation::Stop { reason }),
                ToBroker::Stats => {
                    let stats = FromBroker::Stats {
                        stats: BrokerStats::default(),
                    };
                    wire::write_message(&mut self.writer, &stats).await?;
                }
                other => return Err(unexpected("activate, stats or stop", &other)),
            }
        }
    }

    /// Sends one message in lockstep mode.
    pub async fn send(&mut self, msg: &FromBroker) -> Result<(), ControlError> {
        Ok(wire::write_message(&mut self.writer, msg).await?)
    }

    /// Switches to serving mode: a task reads lockd's requests from now on, so the broker can
    /// wait for them alongside other work.
    pub fn listen(self) -> (Requests, Replies) {
        let (tx, rx) = mpsc::channel(REQUEST_QUEUE);
        let Control {
            mut reader,
            writer,
            mut buf,
        } = self;
        tokio::spawn(
            async move {
                loop {
                    let request = match wire::read_message(&mut reader, &mut buf).await {
                        Ok(Some(ToBroker::Stats)) => Ok(Request::Stats),
                        Ok(Some(ToBroker::Ping { seq })) => Ok(Request::Ping { seq }),
                        Ok(Some(ToBroker::ListSchedules { id, limit })) => {
                            Ok(Request::ListSchedules { id, limit })
                        }
                        Ok(Some(ToBroker::CancelSchedules { id, which })) => {
                            Ok(Request::CancelSchedules { id, which })
                        }
                        Ok(Some(ToBroker::Destinations { id, call })) => {
                            Ok(Request::Destinations { id, call })
                        }
                        Ok(Some(ToBroker::Stop {
                            deadline_ms,
                            reason,
                        })) => Ok(Request::Stop {
                            deadline: Duration::from_millis(deadline_ms),
                            reason,
                        }),
                        Ok(Some(other)) => Err(Lost {
                            reason: unexpected("stats, stop, ping or a scheduler request", &other)
                                .to_string(),
                        }),
                        Ok(None) => Err(Lost {
                            reason: "lockd closed the control socket".into(),
                        }),
                        Err(err) => Err(Lost {
                            reason: err.to_string(),
                        }),
                    };
                    let last = request.is_err();
                    if tx.send(request).await.is_err() || last {
                        return;
                    }
                }
            }
            .in_current_span(),
        );
        (Requests { rx }, Replies { writer })
    }

    async fn read(&mut self) -> Result<ToBroker, ControlError> {
        wire::read_message(&mut self.reader, &mut self.buf)
            .await?
            .ok_or(ControlError::Closed)
    }
}

impl Requests {
    /// The next request, or why there will be none. Cancel-safe.
    pub async fn next(&mut self) -> Result<Request, Lost> {
        self.rx.recv().await.unwrap_or_else(|| {
            Err(Lost {
                reason: "the control reader stopped".into(),
            })
        })
    }
}

impl Replies {
    /// Sends one message; failing to means lockd is gone.
    pub async fn send(&mut self, msg: &FromBroker) -> Result<(), Lost> {
        wire::write_message(&mut self.writer, msg)
            .await
            .map_err(|err| Lost {
                reason: err.to_string(),
            })
    }
}

/// Replies owed to lockd that wait for the broker core (a liveness `Pong`, `Stats`) or the
/// scheduler (each bounded by [`crate::schedules::ANSWER_TIMEOUT`]).
///
/// Each waits in its own small task, so a stuck core delays only its reply, never the control
/// loop (which must still see `Stop` and a lost lockd). lockd keeps one ping in flight and asks
/// for stats once per keepalive, so few such tasks wait on a stuck core before lockd replaces it.
#[derive(Debug)]
pub struct Deferred {
    tx: mpsc::Sender<FromBroker>,
    rx: mpsc::Receiver<FromBroker>,
}

impl Deferred {
    /// No replies owed yet.
    pub fn new() -> Deferred {
        let (tx, rx) = mpsc::channel(REQUEST_QUEUE);
        Deferred { tx, rx }
    }

    /// Owes lockd what `reply` resolves to; `None` (the core is gone) owes nothing.
    pub fn defer(&self, reply: impl Future<Output = Option<FromBroker>> + Send + 'static) {
        let tx = self.tx.clone();
        tokio::spawn(
            async move {
                if let Some(reply) = reply.await {
                    // The receiver lives as long as `self`; once it is gone nobody wants it.
                    let _ = tx.send(reply).await;
                }
            }
            .in_current_span(),
        );
    }

    /// The next reply to send. Cancel-safe; pending forever while none is owed.
    pub async fn next(&mut self) -> FromBroker {
        match self.rx.recv().await {
            Some(reply) => reply,
            // Unreachable: `self` holds a sender. Wait rather than invent a reply.
            None => std::future::pending().await,
        }
    }
}

impl Default for Deferred {
    fn default() -> Self {
        Deferred::new()
    }
}

fn unexpected(expected: &'static str, got: &ToBroker) -> ControlError {
    ControlError::Wire(WireError::Unexpected {
        expected,
        got: format!("{got:?}"),
    })
}
