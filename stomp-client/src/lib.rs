//! A STOMP client for brokers behind an ActiveMQ failover URL.
//!
//! - Frames go through `stomp-codec`, the broker's own codec (incremental, bounded).
//! - [`url`]: `failover:(tcp://h1:61613,ssl://h2:61614)?options` and its reconnect policy;
//!   [`TlsOptions`]: the CA and client certificate for `ssl://` addresses.
//! - [`backoff`]: the pause between connection passes, ActiveMQ's rules.
//! - [`Client`]: connects to the first broker that answers CONNECT and, on any connection loss
//!   or ERROR frame, reconnects with back-off, renews every subscription and resends every SEND
//!   whose RECEIPT had not arrived. A message whose [`Receipt`] resolved is the broker's
//!   responsibility; one whose receipt did not is never dropped by the client (at-least-once).
//!
//! What a failover does not carry over, by design: a transaction open when the connection
//! dropped was rolled back by the broker, so its commit fails with
//! [`Error::TransactionLost`]; an ack for a message delivered on an earlier connection is
//! dropped (the broker redelivers that message, flagged `redelivered`; inside a transaction, the
//! transaction is rolled back and its commit fails with [`Error::TransactionLost`]), and so is a client-ack
//! message received on that connection but not yet taken by the application (the broker
//! delivers it again); a SEND without a receipt ([`Client::send_unreceipted`]) may be lost. An
//! auto-ack message, which the broker counts as consumed once written, is never dropped by the
//! client once received: those still unread when a connection dies are delivered first. A broker that answers the *first*
//! CONNECT with ERROR (bad credentials) fails [`Client::connect`] at once instead of being
//! retried. STOMP 1.0, 1.1 and 1.2 are negotiated; acks take the negotiated version's form.
//!
//! ```ignore
//! let client = Client::connect("failover:(tcp://h1:61613,tcp://h2:61613)?randomize=false",
//!                              Options::default()).await?;
//! client.send("/queue/a", &[("persistent", "true")], "hello").await?.await?;
//! let mut sub = client.subscribe("/queue/a", AckMode::ClientIndividual, &[]).await?;
//! let msg = sub.next().await.unwrap();
//! client.ack(&msg).await?;
//! client.disconnect().await?;
//! ```

pub mod backoff;
mod client;
mod session;
mod transport;
pub mod url;

/// Bodies and codec buffers (re-exported so callers need no `bytes` dependency).
pub use bytes::{Bytes, BytesMut};
pub use client::{
    AckMode, Client, Error, Event, HeartBeat, Message, Options, Receipt, Stats, Subscription,
    Transaction,
};
pub use stomp_codec::frame::{Frame, FrameError, Limits};
pub use transport::{TlsError, TlsOptions};
pub use url::{Address, FailoverUrl, ReconnectPolicy, UrlError};
