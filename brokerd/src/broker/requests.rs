//! What the sessions and the daemon say to the broker core, and what they hear back: each
//! [`Request`] arrives on the core's inbox; frames for a client leave as [`Outbound`] on its
//! session's channel.

use super::*;

/// How a subscription acknowledges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    /// Delivered = acknowledged.
    Auto,
    /// An ACK acknowledges that message and every earlier one of the subscription.
    Client,
    /// An ACK acknowledges exactly one message.
    ClientIndividual,
}

/// The `ack` header of a delivery in a client ack mode: `EPOCH-SUB-TAG`. The epoch makes ack
/// ids unique across failovers (a late ACK of a delivery by the previous broker can never
/// acknowledge a different message here); the subscription and tag find the delivery without
/// a search. Written straight into the frame, never as a `String`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckId {
    pub epoch: u64,
    pub sub: SubKey,
    pub tag: u64,
}

impl std::fmt::Display for AckId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}-{}", self.epoch, self.sub, self.tag)
    }
}

impl AckId {
    /// The ack id `text` names, if it is one this broker's kind writes.
    pub fn parse(text: &str) -> Option<AckId> {
        let mut parts = text.splitn(3, '-').map(str::parse::<u64>);
        match (parts.next(), parts.next(), parts.next()) {
            (Some(Ok(epoch)), Some(Ok(sub)), Some(Ok(tag))) => Some(AckId { epoch, sub, tag }),
            _ => None,
        }
    }
}

/// What a SUBSCRIBE asked for.
#[derive(Debug, Clone)]
pub struct SubscribeSpec {
    /// The client's subscription id (the `subscription` header of every MESSAGE).
    pub id: String,
    pub destination: String,
    pub ack: AckMode,
    /// Unacknowledged (or, in auto mode, unwritten) deliveries at most.
    pub prefetch: u32,
    /// `activemq.subscriptionName` on a topic: a durable subscription of the connection's
    /// client-id.
    pub durable_name: Option<String>,
    /// `browser:true`: a snapshot of a queue, not consumed, then an end marker.
    pub browser: bool,
    pub options: consumers::ConsumerOptions,
}

/// How an ACK or NACK names its message.
#[derive(Debug, Clone)]
pub enum AckRef {
    /// STOMP 1.2: the MESSAGE's `ack` header.
    Ack(String),
    /// STOMP 1.0/1.1: `message-id`, and `subscription` when given.
    MessageId {
        message_id: String,
        subscription: Option<String>,
    },
}

/// A session that connected: frames for it go to `outbox`; `verdict` says whether it may go
/// on (the session answers CONNECTED) or why not (a `client-id` already connected).
pub struct Opening {
    pub conn: ConnId,
    /// The session id (CONNECTED's `session`): it names the connection's temporary
    /// destinations ([`names::temporary_prefix`]).
    pub session: String,
    pub client_id: Option<String>,
    /// The client's address, named when another client asks for its client-id.
    pub peer: String,
    /// Who the client is, where the users file says what it may do: destinations it may not
    /// create (`admin`) are refused.
    pub access: Option<crate::auth::Access>,
    pub outbox: mpsc::UnboundedSender<Outbound>,
    pub verdict: oneshot::Sender<Result<(), String>>,
}

/// What a session asks of the broker.
pub enum Request {
    /// A session connected.
    Open(Opening),
    Send {
        conn: ConnId,
        published: Published,
        body: Bytes,
        transaction: Option<String>,
        receipt: Option<String>,
    },
    Subscribe {
        conn: ConnId,
        spec: SubscribeSpec,
        receipt: Option<String>,
    },
    Unsubscribe {
        conn: ConnId,
        id: String,
        /// `activemq.subscriptionName` on UNSUBSCRIBE: delete the durable subscription.
        durable_name: Option<String>,
        receipt: Option<String>,
    },
    Ack {
        conn: ConnId,
        which: AckRef,
        nack: bool,
        transaction: Option<String>,
        receipt: Option<String>,
    },
    Begin {
        conn: ConnId,
        transaction: String,
        receipt: Option<String>,
    },
    Commit {
        conn: ConnId,
        transaction: String,
        receipt: Option<String>,
    },
    Abort {
        conn: ConnId,
        transaction: String,
        receipt: Option<String>,
    },
    /// The session wrote `count` auto-acknowledged messages of subscription `sub` to its
    /// socket (the [`Outbound::Message`]'s `sub`).
    Written {
        conn: ConnId,
        sub: SubKey,
        count: u32,
    },
    /// A receipt once everything before it is processed and durable (DISCONNECT, or any other
    /// frame the session handles itself).
    Receipt { conn: ConnId, receipt: String },
    /// The session ended: its subscriptions end, its deliveries return, its transactions abort.
    Close { conn: ConnId },
    /// Figures for `ctl status`.
    Stats(oneshot::Sender<Counts>),
    /// Every figure the console's `/metrics` shows, in one answer per scrape.
    Figures(oneshot::Sender<Figures>),
    /// An operator's destination call (`ctl destinations`, `purge`, `delete`).
    Destinations {
        call: shared_proto::destinations::DestinationCall,
        reply: admin::Reply,
    },
    /// lockd's liveness ping: answered once every request queued before it was handled.
    Ping(oneshot::Sender<()>),
    /// The node goes passive: refuse further SENDs, and answer once every stored message and
    /// every receipt already owed is durable.
    Drain(oneshot::Sender<()>),
    /// The scheduler enqueues a batch of deliveries: each goes to its destination, and the
    /// batch's fired marker into the store with them, in one atomic group; `done` runs once
    /// that is durable (never, if the broker is draining: the next broker enqueues them).
    Fire {
        batch: u64,
        deliveries: Vec<Message>,
        done: OnDurable,
    },
    /// A message the broker itself publishes (the scheduler's BROWSE copies): it gets its id
    /// and seq here; it is not stored (non-persistent).
    Publish { msg: Message },
    /// The answer to a [`PageRead`]: paged-out messages read back from the store, off the
    /// router task.
    Page {
        ticket: u64,
        result: Result<paging::Entries, Arc<StoreError>>,
    },
    /// The answer to a counting [`PageRead`].
    Counted {
        ticket: u64,
        result: Result<paging::Counted, Arc<StoreError>>,
    },
}

/// What the broker sends a session.
#[derive(Debug)]
pub enum Outbound {
    Message {
        /// The client's subscription id, for the `subscription` header.
        subscription: Arc<str>,
        /// The broker's subscription, which the session names when it reports it written.
        sub: SubKey,
        /// The `ack` header, in client modes.
        ack: Option<AckId>,
        msg: Arc<Message>,
    },
    Receipt(String),
    /// ActiveMQ's end-of-browse marker: a MESSAGE with `browser:end` and `message-id:0`.
    BrowseEnd {
        subscription: Arc<str>,
        destination: Arc<str>,
    },
    /// An ERROR frame, after which the session closes.
    Error {
        message: String,
        receipt: Option<String>,
    },
    /// An ERROR frame that leaves the session open: ActiveMQ's answer to a frame it does not
    /// take but need not end the connection for (an ACK of nothing awaiting one). The frame
    /// changed nothing; later ones are taken as usual.
    Warning {
        message: String,
        receipt: Option<String>,
    },
}

/// Broker figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub destinations: u64,
    /// Messages held for consumers: waiting (queues, durable subscriptions, topic backlogs, a
    /// topic subscriber's copy each) in memory or paged out to the store, delivered and not yet
    /// acknowledged (or, in auto mode, not yet written). Right after a takeover, messages stored
    /// beyond the first page of each queue are added as a background count reaches them.
    pub messages: u64,
    pub consumers: u64,
    /// Bytes of the waiting messages in memory.
    pub memory_bytes: u64,
}

/// The broker core's figures for `/metrics`: [`Counts`], every destination as `ctl
/// destinations` lists it (uncut), and counters since this broker started.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub counts: Counts,
    pub destinations: Vec<shared_proto::destinations::Destination>,
    /// Messages that came back for another delivery (NACKed, or their consumer went away).
    pub redelivered: u64,
    /// Messages moved to a dead-letter queue.
    pub dead_lettered: u64,
}

/// Settings the broker core needs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub node: String,
    pub epoch: u64,
    /// Redelivery delays and dead-letter queues.
    pub redelivery: redelivery::RedeliveryPolicy,
    /// What a slow non-durable topic subscriber may have waiting before the oldest are
    /// dropped.
    pub topic_backlog: pending::BacklogLimit,
    /// Subscriptions per connection and destinations in total at most.
    pub caps: limits::Caps,
    /// Whether to remember every destination created ([`super::created`]): only a users file
    /// makes anyone need `admin` to create one. Without it only virtual topics' consumer
    /// queues are remembered, and unique reply-queue names cost no write and no takeover time.
    pub remember_created: bool,
}
