//! The broker core: one task owns every destination, subscription, unacknowledged delivery and
//! open transaction. Sessions send it [`Request`]s over a bounded channel and receive
//! [`Outbound`] frames on their own channel; nothing here is shared behind a lock.
//!
//! Invariants kept here:
//! - a RECEIPT for a persistent SEND (or a COMMIT containing one) leaves only once the message is
//!   durable, or was consumed and acknowledged before it had to be: [`Durability`] runs the
//!   receipt when it may;
//! - a message is removed from the store only when it is acknowledged (or delivered in auto
//!   mode), expired, or moved to the dead-letter queue;
//! - every delivered, unacknowledged message returns to its destination, flagged redelivered,
//!   when its subscription or connection ends;
//! - with paging on, a space holds at most about a page of persistent messages in memory; the
//!   rest are only in the store and come back in key (FIFO) order, each at most once per broker
//!   (see [`paging`]). Priority orders what is in memory: a paged-out message waits for its
//!   page even if its priority is higher than that of messages already in memory.

mod drain;
pub mod limits;
pub mod message;
pub mod paging;
pub mod pending;
pub mod registry;
mod standing;

use crate::journal::Op;
use crate::memory::{Gauge, Meter};
use crate::scheduler::{self, job::Job};
use crate::store::StoreError;
use bytes::Bytes;
use message::{Kind, Message, Published};
use paging::{PageRead, PageStore, Paged, Paging};
use pending::{Backlogged, Charge, Pending};
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

/// A session's identity within the broker.
pub type ConnId = u64;

/// Runs once its write is durable (or cancelled because the message was consumed first).
pub type OnDurable = Box<dyn FnOnce() + Send + 'static>;

/// Where the broker keeps persistent messages. The store's journal implements it; tests use
/// [`Volatile`].
pub trait Durability: Send {
    /// Stores `value` under `key` in `space`; `on_durable` runs once it is durable.
    fn put(&self, space: Arc<str>, key: Bytes, value: Bytes, on_durable: Option<OnDurable>);
    /// Removes `key`; a put still waiting to be written is cancelled, and its `on_durable` runs.
    fn remove(&self, space: Arc<str>, key: Bytes);
    /// Runs `on_durable` once everything submitted before is durable.
    fn barrier(&self, on_durable: OnDurable);
    /// Applies several writes atomically (a COMMIT): after a crash, all or none of them.
    fn apply(&self, ops: Vec<Op>, on_durable: Option<OnDurable>);
}

impl Durability for crate::journal::Journal {
    fn put(&self, space: Arc<str>, key: Bytes, value: Bytes, on_durable: Option<OnDurable>) {
        crate::journal::Journal::put(self, space, key, value, on_durable);
    }
    fn remove(&self, space: Arc<str>, key: Bytes) {
        crate::journal::Journal::remove(self, space, key, None);
    }
    fn barrier(&self, on_durable: OnDurable) {
        crate::journal::Journal::barrier(self, on_durable);
    }
    fn apply(&self, ops: Vec<Op>, on_durable: Option<OnDurable>) {
        crate::journal::Journal::apply(self, ops, on_durable);
    }
}

/// No store at all: every write is "durable" at once. For unit tests of the broker's logic.
#[derive(Debug, Default)]
pub struct Volatile;

impl Durability for Volatile {
    fn put(&self, _: Arc<str>, _: Bytes, _: Bytes, on_durable: Option<OnDurable>) {
        if let Some(done) = on_durable {
            done();
        }
    }
    fn remove(&self, _: Arc<str>, _: Bytes) {}
    fn barrier(&self, on_durable: OnDurable) {
        on_durable();
    }
    fn apply(&self, _: Vec<Op>, on_durable: Option<OnDurable>) {
        if let Some(done) = on_durable {
            done();
        }
    }
}

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

/// What a session asks of the broker.
pub enum Request {
    /// A session connected; frames for it go to `outbox`. `verdict` says whether it may go on
    /// (the session answers CONNECTED) or why not (a `client-id` already connected).
    Open {
        conn: ConnId,
        client_id: Option<String>,
        /// The client's address, named when another client asks for its client-id.
        peer: String,
        outbox: mpsc::UnboundedSender<Outbound>,
        verdict: oneshot::Sender<Result<(), String>>,
    },
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
        ack: Option<Arc<str>>,
        msg: Arc<Message>,
    },
    Receipt(String),
    /// An ERROR frame, after which the session closes.
    Error {
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

/// Settings the broker core needs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub node: String,
    pub epoch: u64,
    /// Deliveries without an ACK (NACK, consumer gone) after which a message goes to the DLQ.
    pub max_redeliveries: u32,
    pub dead_letter_queue: String,
    /// Messages a slow non-durable topic subscriber may have waiting before the oldest are
    /// dropped.
    pub topic_backlog: usize,
    /// Subscriptions per connection and destinations in total at most.
    pub caps: limits::Caps,
}

/// Unix milliseconds now.
fn now_ms() -> u64 {
    shared_proto::unix_ms()
}

/// Whether `msg` has expired, reading the clock only for messages that can expire.
fn expired_now(msg: &Message) -> bool {
    msg.expires != 0 && msg.expired(now_ms())
}

/// One delivery awaiting its ACK.
#[derive(Debug)]
struct InFlight {
    tag: u64,
    ack: Arc<str>,
    msg: Arc<Message>,
    /// Held in memory until acknowledged: counted against the producers' memory limit.
    _charge: Charge,
}

/// Where a subscription's messages come from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Queue(Arc<str>),
    Topic(Arc<str>),
    Durable(DurableKey),
}

type DurableKey = (String, String);
/// The broker's own identity of a subscription, never reused: a client may reuse its
/// subscription ids (UNSUBSCRIBE, then SUBSCRIBE with the same id), so whatever refers to one
/// subscription across time (auto-mode "written" reports) uses this instead.
pub type SubKey = u64;

#[derive(Debug)]
struct Subscription {
    conn: ConnId,
    id: Arc<str>,
    source: Source,
    ack: AckMode,
    prefetch: u32,
    next_tag: u64,
    in_flight: VecDeque<InFlight>,
    /// Auto mode: handed to the session but not yet written to its socket. Auto mode counts a
    /// message as acknowledged once it is *sent*, so these are still the broker's to keep: if
    /// the connection ends first, they go back to the destination.
    unwritten: VecDeque<Unwritten>,
    /// Non-durable topic subscriptions: messages waiting for credit, counted in the memory
    /// gauge (once each, however many backlogs share them).
    backlog: VecDeque<Arc<Backlogged>>,
}

impl Subscription {
    fn has_credit(&self) -> bool {
        let used = match self.ack {
            AckMode::Auto => self.unwritten.len(),
            _ => self.in_flight.len(),
        };
        used < self.prefetch as usize
    }
}

/// An auto-mode delivery not yet written to the client's socket.
struct Unwritten {
    msg: Arc<Message>,
    /// Set when the message was taken the moment it was published, before it was ever stored:
    /// the producer's receipt, owed once the message is written (consumed), or once it is
    /// stored if the connection ends first.
    unstored_receipt: Option<OnDurable>,
    /// Held in memory until written: counted against the producers' memory limit.
    _charge: Charge,
}

impl std::fmt::Debug for Unwritten {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unwritten")
            .field("msg", &self.msg.id)
            .field("unstored", &self.unstored_receipt.is_some())
            .finish()
    }
}

/// A queue is idle when nothing would be lost by forgetting it: no consumer, no message in
/// memory, none paged out or being read or counted.
fn idle(queue: &Queue) -> bool {
    let paged = &queue.paged;
    queue.consumers.is_empty()
        && queue.pending.is_empty()
        && paged.cursor.is_none()
        && paged.reading.is_none()
        && paged.counting.is_none()
}

#[derive(Debug)]
struct Queue {
    /// Its store space, made once: every store write and removal of the queue names it.
    space: Arc<str>,
    pending: Pending,
    paged: Paged,
    consumers: Vec<SubKey>,
    next: usize,
}

#[derive(Debug)]
struct Durable {
    topic: Arc<str>,
    space: Arc<str>,
    pending: Pending,
    paged: Paged,
    active: Option<SubKey>,
}

/// What an outstanding [`PageRead`] is for.
enum Ticket {
    /// Refilling a space's memory from its cursor.
    Refill { source: Source, limit: usize },
    /// Counting what a takeover found stored in a space (see [`paging`]'s "Counting").
    Count { source: Source },
    /// Removing a deleted durable subscription's paged-out messages, those up to `upto`
    /// (a subscription re-created under the same name only has newer ones).
    Purge {
        space: Arc<str>,
        upto: u64,
        limit: usize,
    },
}

enum TxOp {
    /// Held in memory until COMMIT or ABORT: counted against the producers' memory limit.
    Send(Message, Charge),
    /// A scheduled SEND, likewise; its schedule starts at COMMIT.
    Schedule(Job, Charge),
    Ack {
        which: AckRef,
        nack: bool,
    },
}

struct Connection {
    outbox: mpsc::UnboundedSender<Outbound>,
    client_id: Option<String>,
    peer: String,
    subscriptions: HashMap<String, SubKey>,
    transactions: HashMap<String, Vec<TxOp>>,
    /// Whether its receipts may still go out (see [`standing`]).
    standing: standing::Standing,
}

/// The broker's state; owned by the task running [`Broker::run`].
pub struct Broker {
    settings: Settings,
    store: Persist,
    counter: u64,
    connections: HashMap<ConnId, Connection>,
    /// The connection holding each client-id (ActiveMQ allows one at a time).
    client_ids: HashMap<String, ConnId>,
    subscriptions: HashMap<SubKey, Subscription>,
    next_sub: SubKey,
    queues: HashMap<Arc<str>, Queue>,
    topics: HashMap<Arc<str>, Vec<SubKey>>,
    durables: HashMap<DurableKey, Durable>,
    draining: bool,
    /// Bytes of every waiting message, shared with the sessions for flow control.
    memory: Gauge,
    /// Bytes of new jobs not yet in the scheduler's store (the scheduler releases them).
    scheduling: Gauge,
    /// The answer to a Drain, owed once every delivered message is acknowledged.
    drained: Option<oneshot::Sender<()>>,
    /// `EPOCH-`, the start of every ack id this broker hands out.
    ack_prefix: Box<str>,
    /// While a queue message is being published: its sequence, until it is consumed.
    unstored: std::cell::Cell<Option<u64>>,
    /// The auto-mode subscription that took the message being published, if one did.
    taken_unstored: std::cell::Cell<Option<SubKey>>,
    /// Paging persistent messages out to the store; `None`: every message stays in memory.
    paging: Option<Paging>,
    next_ticket: u64,
    /// Page reads asked for and not answered yet.
    tickets: HashMap<u64, Ticket>,
    /// Where scheduled SENDs go; `None` until one is attached.
    scheduler: Option<scheduler::Link>,
}

/// The store as the broker writes it: straight through, or, while a COMMIT is being applied,
/// collected into one atomic group.
struct Persist {
    store: Box<dyn Durability>,
    batch: RefCell<Option<Vec<Op>>>,
}

impl Persist {
    fn put(&self, space: Arc<str>, key: Bytes, value: Bytes, on_durable: Option<OnDurable>) {
        match self.batch.borrow_mut().as_mut() {
            Some(ops) => ops.push(Op::Put { space, key, value }),
            None => self.store.put(space, key, value, on_durable),
        }
    }

    fn remove(&self, space: Arc<str>, key: Bytes) {
        match self.batch.borrow_mut().as_mut() {
            Some(ops) => ops.push(Op::Remove { space, key }),
            None => self.store.remove(space, key),
        }
    }

    fn barrier(&self, on_durable: OnDurable) {
        self.store.barrier(on_durable);
    }

    /// From now on, collect writes instead of submitting them.
    fn begin_group(&self) {
        *self.batch.borrow_mut() = Some(Vec::new());
    }

    /// Submits the collected writes as one atomic group; `on_durable` runs once it is durable.
    fn commit_group(&self, on_durable: Option<OnDurable>) {
        let writes = self.batch.borrow_mut().take().unwrap_or_default();
        match (writes.is_empty(), on_durable) {
            (false, done) => self.store.apply(writes, done),
            (true, Some(done)) => self.store.barrier(done),
            (true, None) => {}
        }
    }
}

/// A request refused with an ERROR that closes the session.
struct Refused(String);

/// Open transactions per connection at most: each holds its operations in memory until COMMIT.
const MAX_TRANSACTIONS: usize = 64;

/// Operations (SENDs and ACKs) in one transaction at most.
const MAX_TRANSACTION_OPS: usize = 10_000;

/// Space names: one per queue; durable subscriptions' are in [`registry`].
fn queue_space(destination: &str) -> Arc<str> {
    format!("q/{destination}").into()
}
fn registry_key(key: &DurableKey) -> Bytes {
    registry::key(&key.0, &key.1)
}

impl Broker {
    /// A broker with nothing in it.
    pub fn new(settings: Settings, store: Box<dyn Durability>) -> Broker {
        let ack_prefix = format!("{}-", settings.epoch).into();
        let memory = Gauge::default();
        Broker {
            settings,
            store: Persist {
                store,
                batch: RefCell::new(None),
            },
            counter: 0,
            connections: HashMap::new(),
            client_ids: HashMap::new(),
            subscriptions: HashMap::new(),
            next_sub: 1,
            queues: HashMap::new(),
            topics: HashMap::new(),
            durables: HashMap::new(),
            draining: false,
            memory: Arc::clone(&memory),
            scheduling: Arc::new(Meter::sharing(Arc::clone(memory.room()))),
            drained: None,
            ack_prefix,
            unstored: std::cell::Cell::new(None),
            taken_unstored: std::cell::Cell::new(None),
            paging: None,
            next_ticket: 1,
            tickets: HashMap::new(),
            scheduler: None,
        }
    }

    /// Hands scheduled SENDs to the scheduler from now on (before the core starts).
    pub fn attach_scheduler(&mut self, link: scheduler::Link) {
        self.scheduler = Some(link);
    }

    /// Turns paging on, before anything is published or recovered: each space keeps at most
    /// `page` waiting messages in memory, and persistent ones beyond that only in the store.
    /// The broker asks for pages on the returned channel; whoever reads it serves each
    /// [`PageRead`] off the router (it blocks on disk) and answers with [`Request::Page`].
    pub fn page_out(&mut self, page: usize) -> mpsc::UnboundedReceiver<PageRead> {
        let (reads, rx) = mpsc::unbounded_channel();
        self.paging = Some(Paging {
            page: page.max(2),
            reads,
        });
        rx
    }

    /// A new list of waiting messages; with paging on its persistent messages stay out of the
    /// producers' memory gauge.
    fn new_pending(&self) -> Pending {
        Pending::new(&self.memory, self.paging.is_some())
    }

    /// Bytes held by waiting messages that cannot be paged out (non-persistent ones, or all of
    /// them with paging off), updated as they come and go: sessions slow their producers down
    /// when it is over the memory limit. Persistent messages are bounded by paging instead.
    pub fn memory(&self) -> Gauge {
        Arc::clone(&self.memory)
    }

    /// Bytes of new jobs on their way into the scheduler's store: scheduled SENDs wait while
    /// they are over [`crate::memory::SCHEDULING_BACKLOG`], so that producers faster than the
    /// scheduler's store cannot grow the backlog without bound.
    pub fn scheduling(&self) -> Gauge {
        Arc::clone(&self.scheduling)
    }

    /// Refuses a client's request that would create `destination` past the destinations cap.
    /// Only clients are refused: the broker's own routing (the dead-letter queue) is not.
    fn room_for(&self, destination: &str) -> Result<(), Refused> {
        let exists = match message::kind_of(destination) {
            Ok(Kind::Queue) => self.queues.contains_key(destination),
            Ok(Kind::Topic) => self.topics.contains_key(destination),
            // Refused later, with the reason.
            Err(_) => return Ok(()),
        };
        let caps = self.settings.caps;
        if exists || self.queues.len() + self.topics.len() < caps.destinations {
            return Ok(());
        }
        Err(Refused(caps.too_many_destinations(destination)))
    }

    fn queue(&mut self, destination: &Arc<str>) -> &mut Queue {
        if !self.queues.contains_key(destination) {
            let pending = self.new_pending();
            self.queues.insert(
                Arc::clone(destination),
                Queue {
                    space: queue_space(destination),
                    pending,
                    paged: Paged::default(),
                    consumers: Vec::new(),
                    next: 0,
                },
            );
        }
        self.queues.get_mut(destination).expect("inserted above")
    }

    /// Restores what the store holds: durable subscriptions, and the first page of every
    /// queue's and durable subscription's messages (all of them with paging off). The rest
    /// stays in the store until consumers make room, so a takeover costs about the store's open
    /// time whatever the backlog. Blocking reads: run it before the router task starts, off
    /// the async threads. Returns how many messages it brought into memory.
    ///
    /// Everything recovered may have been delivered before the takeover, so it is flagged
    /// redelivered when delivered again (the JMS reading of the flag: "possibly delivered").
    pub fn recover(&mut self, store: &dyn PageStore) -> Result<usize, StoreError> {
        let page = self.paging.as_ref().map_or(usize::MAX, |p| p.page);
        let mut restored = 0;
        let spaces = store.spaces()?;
        let registry = registry::recover(store, &spaces)?;
        if !registry.migration.is_empty() {
            self.store.store.apply(registry.migration, None);
        }
        for space in registry.orphans {
            // A deleted subscription's purge, cut short by a crash: finish it.
            self.purge_from(space, 0, u64::MAX);
        }
        for space in &spaces {
            let Some(destination) = space.strip_prefix("q/") else {
                continue;
            };
            let entries = store.read(space, &[], page)?;
            let epoch = self.settings.epoch;
            let queue = self.queue(&destination.into());
            queue.paged.cursor = Some(0);
            // Everything stored so far is to be counted: the first page comes in uncounted.
            queue.paged.count_from_cursor(epoch << 40);
            restored += queue.paged.load(&mut queue.pending, entries, page, epoch);
        }
        for entry in registry.entries {
            let key: DurableKey = (entry.client_id, entry.name);
            let space = entry.space;
            let mut durable = Durable {
                topic: entry.topic.into(),
                pending: self.new_pending(),
                paged: Paged {
                    cursor: Some(0),
                    ..Paged::default()
                },
                active: None,
                space,
            };
            if spaces.contains(&durable.space) {
                let entries = store.read(&durable.space, &[], page)?;
                let (paged, pending) = (&mut durable.paged, &mut durable.pending);
                paged.count_from_cursor(self.settings.epoch << 40);
                restored += paged.load(pending, entries, page, self.settings.epoch);
            } else {
                durable.paged.cursor = None;
            }
            self.durables.insert(key, durable);
        }
        // Count what stays stored beyond the first pages, in the background: the requests
        // queue up for the page reader, which starts with the router.
        let sources: Vec<Source> = (self.queues.keys().cloned().map(Source::Queue))
            .chain(self.durables.keys().cloned().map(Source::Durable))
            .collect();
        for source in sources {
            self.refill(&source);
        }
        Ok(restored)
    }

    /// Serves requests until every sender is gone.
    pub async fn run(mut self, mut requests: mpsc::Receiver<Request>) {
        while let Some(request) = requests.recv().await {
            self.handle(request);
        }
    }

    fn handle(&mut self, request: Request) {
        self.apply_request(request);
        let settled = |s: &Subscription| s.in_flight.is_empty() && s.unwritten.is_empty();
        if self.drained.is_some() && self.subscriptions.values().all(settled) {
            if let Some(reply) = self.drained.take() {
                self.store.barrier(Box::new(move || {
                    let _ = reply.send(());
                }));
            }
        }
    }

    fn apply_request(&mut self, request: Request) {
        let conn = match &request {
            Request::Send { conn, .. }
            | Request::Subscribe { conn, .. }
            | Request::Unsubscribe { conn, .. }
            | Request::Ack { conn, .. }
            | Request::Begin { conn, .. }
            | Request::Commit { conn, .. }
            | Request::Abort { conn, .. } => Some(*conn),
            _ => None,
        };
        let receipt = match &request {
            Request::Send { receipt, .. }
            | Request::Subscribe { receipt, .. }
            | Request::Unsubscribe { receipt, .. }
            | Request::Ack { receipt, .. }
            | Request::Begin { receipt, .. }
            | Request::Commit { receipt, .. }
            | Request::Abort { receipt, .. } => receipt.clone(),
            _ => None,
        };
        let standing = conn
            .and_then(|c| self.connections.get(&c))
            .map(|c| c.standing);
        if standing == Some(standing::Standing::Refused) {
            // Sent before the client read its ERROR: nothing more of it is taken.
            return;
        }
        if let Err(Refused(message)) = self.apply(request) {
            if let Some(conn) = conn.and_then(|c| self.connections.get_mut(&c)) {
                conn.standing = standing::Standing::Refused;
                conn.transactions.clear();
                let _ = conn.outbox.send(Outbound::Error { message, receipt });
            }
        }
    }

    fn apply(&mut self, request: Request) -> Result<(), Refused> {
        match request {
            Request::Open {
                conn,
                client_id,
                peer,
                outbox,
                verdict,
            } => {
                // ActiveMQ refuses a second connection with a client-id already connected
                // (InvalidClientIDException): a durable subscription has one reader.
                let holder = client_id
                    .as_ref()
                    .and_then(|id| self.client_ids.get(id))
                    .and_then(|holder| self.connections.get(holder));
                if let (Some(id), Some(holder)) = (&client_id, holder) {
                    debug!(conn, client_id = %id, "refusing a client: client-id already connected");
                    let _ = verdict.send(Err(format!(
                        "Broker: {} - Client: {id} already connected from tcp://{}",
                        self.settings.node, holder.peer
                    )));
                    return Ok(());
                }
                if verdict.send(Ok(())).is_err() {
                    // The session is gone already; it sends no Close for a refused Open.
                    return Ok(());
                }
                if let Some(id) = &client_id {
                    self.client_ids.insert(id.clone(), conn);
                }
                self.connections.insert(
                    conn,
                    Connection {
                        outbox,
                        client_id,
                        peer,
                        subscriptions: HashMap::new(),
                        transactions: HashMap::new(),
                        standing: standing::Standing::Good,
                    },
                );
                Ok(())
            }
            Request::Send {
                conn,
                mut published,
                body,
                transaction,
                receipt,
            } => {
                if self.draining {
                    // Going passive: not taken, and no receipt, so a failover client resends it
                    // to the next node (a SEND without a receipt was best effort anyway). Not an
                    // ERROR now: it would close the session before the receipts still owed for
                    // the SENDs stored just before it, and those would be resent: duplicates.
                    // The goodbye ERROR follows once every owed receipt is written. No later
                    // receipt may go out on this connection: it would say this SEND was kept.
                    if let Some(c) = self.connections.get_mut(&conn) {
                        if c.standing == standing::Standing::Good {
                            debug!(
                                conn,
                                "draining: dropped a SEND; no more receipts on this connection"
                            );
                            c.standing = standing::Standing::SendDropped;
                        }
                    }
                    return Ok(());
                }
                if scheduler::manage::is_management(&published.destination) {
                    return self.manage(conn, &published.headers, receipt);
                }
                if matches!(message::kind_of(&published.destination), Ok(Kind::Queue)) {
                    // A SEND to a topic without subscribers creates nothing.
                    self.room_for(&published.destination)?;
                }
                let schedule = published.schedule.take();
                let msg = self.new_message(published, body);
                if let Some(schedule) = schedule {
                    return self.schedule(conn, msg, schedule, transaction, receipt);
                }
                match transaction {
                    Some(tx) => {
                        let charge = Charge::new(&msg, &self.memory);
                        self.transaction(conn, &tx)?.push(TxOp::Send(msg, charge));
                        self.receipt_now(conn, receipt);
                    }
                    None => {
                        let on_durable = self.receipt_later(conn, receipt);
                        self.publish(msg, on_durable, true);
                    }
                }
                Ok(())
            }
            Request::Subscribe {
                conn,
                spec,
                receipt,
            } => {
                let durable = spec.durable_name.is_some();
                self.subscribe(conn, spec)?;
                if durable {
                    // The registry entry must be durable before the client is told it exists.
                    self.receipt_after_barrier(conn, receipt);
                } else {
                    self.receipt_now(conn, receipt);
                }
                Ok(())
            }
            Request::Unsubscribe {
                conn,
                id,
                durable_name,
                receipt,
            } => {
                let key = self
                    .connections
                    .get_mut(&conn)
                    .and_then(|c| c.subscriptions.remove(&id));
                match (key, &durable_name) {
                    (Some(key), _) => self.end_subscription(key),
                    (None, None) => {
                        return Err(Refused(format!(
                            "UNSUBSCRIBE of unknown subscription id {id:?}"
                        )))
                    }
                    (None, Some(_)) => {}
                }
                match durable_name {
                    Some(name) => {
                        self.delete_durable(conn, name)?;
                        // The deletion must be durable before it is confirmed.
                        self.receipt_after_barrier(conn, receipt);
                    }
                    None => self.receipt_now(conn, receipt),
                }
                Ok(())
            }
            Request::Ack {
                conn,
                which,
                nack,
                transaction,
                receipt,
            } => {
                // An ack id from an earlier epoch names a delivery by the broker this one took
                // over from: that delivery comes again (flagged) under a new id, so the late ACK
                // is answered, and changes nothing.
                let stale = matches!(&which, AckRef::Ack(id)
                    if !id.starts_with(&*self.ack_prefix));
                if !stale {
                    // Resolve now, so an unknown id is refused at once, even inside a
                    // transaction.
                    self.find_delivery(conn, &which)?;
                    match transaction {
                        Some(tx) => self.transaction(conn, &tx)?.push(TxOp::Ack { which, nack }),
                        None => self.acknowledge(conn, &which, nack)?,
                    }
                }
                // The receipt waits until the removal is durable: an acknowledged message must
                // not come back after a crash.
                self.receipt_after_barrier(conn, receipt);
                Ok(())
            }
            Request::Begin {
                conn,
                transaction,
                receipt,
            } => {
                let c = self.connection(conn)?;
                if c.transactions.contains_key(&transaction) {
                    return Err(Refused(format!(
                        "transaction {transaction:?} is already open"
                    )));
                }
                if c.transactions.len() >= MAX_TRANSACTIONS {
                    return Err(Refused(format!(
                        "a connection may have at most {MAX_TRANSACTIONS} open transactions; COMMIT or ABORT one first"
                    )));
                }
                c.transactions.insert(transaction, Vec::new());
                self.receipt_now(conn, receipt);
                Ok(())
            }
            Request::Commit {
                conn,
                transaction,
                receipt,
            } => {
                // One task applies every operation before it looks at anything else, so other
                // clients see all of the transaction or none of it; its writes go to the store
                // as one atomic group, and the receipt waits for it.
                if self.draining {
                    // The drain aborted it (or dropped its SENDs): refuse it whole. The ERROR
                    // waits for the receipts already owed, so they are not lost with the
                    // session it closes.
                    if let Some(c) = self.connections.get_mut(&conn) {
                        c.transactions.remove(&transaction);
                        let outbox = c.outbox.clone();
                        let message = drain::commit_refused(&transaction);
                        self.store.barrier(Box::new(move || {
                            let _ = outbox.send(Outbound::Error { message, receipt });
                        }));
                    }
                    return Ok(());
                }
                let ops = self.end_transaction(conn, &transaction)?;
                self.store.begin_group();
                for op in ops {
                    match op {
                        // Its charge goes once the message is where it waits.
                        TxOp::Send(msg, _charge) => self.publish(msg, None, false),
                        TxOp::Ack { which, nack } => {
                            // A message acknowledged twice in one transaction is simply gone.
                            let _ = self.acknowledge(conn, &which, nack);
                        }
                        TxOp::Schedule(job, _charge) => {
                            // ActiveMQ schedules a transaction's jobs when it commits.
                            let now = self.scheduler.as_ref().map(|link| link.clock.now());
                            if let Some(job) = now.and_then(|now| job.restarted(now)) {
                                self.add_job(job, None);
                            }
                        }
                    }
                }
                let done = self.receipt_later(conn, receipt);
                self.store.commit_group(done);
                Ok(())
            }
            Request::Abort {
                conn,
                transaction,
                receipt,
            } => {
                self.end_transaction(conn, &transaction)?;
                self.receipt_now(conn, receipt);
                Ok(())
            }
            Request::Written { conn, sub, count } => {
                // A subscription that ended meanwhile already returned its unwritten messages;
                // a new one under the same client id has other keys.
                let live = self.subscriptions.get_mut(&sub).filter(|s| s.conn == conn);
                if let Some(sub) = live {
                    let n = (count as usize).min(sub.unwritten.len());
                    let written: Vec<Unwritten> = sub.unwritten.drain(..n).collect();
                    let source = sub.source.clone();
                    // Sent is acknowledged, in auto mode.
                    for delivery in written {
                        match delivery.unstored_receipt {
                            Some(receipt) => receipt(),
                            None => self.forget(&source, &delivery.msg),
                        }
                    }
                    self.dispatch(&source);
                }
                Ok(())
            }
            Request::Fire {
                batch,
                deliveries,
                done,
            } => {
                if self.draining {
                    return Ok(());
                }
                self.store.begin_group();
                for mut msg in deliveries {
                    msg.seq = self.next_seq();
                    self.publish(msg, None, false);
                }
                self.store.put(
                    scheduler::store::FIRED.into(),
                    scheduler::store::batch_key(batch),
                    Bytes::new(),
                    None,
                );
                self.store.commit_group(Some(done));
                Ok(())
            }
            Request::Publish { mut msg } => {
                msg.seq = self.next_seq();
                msg.id = self.id_of(msg.seq);
                self.publish(msg, None, false);
                Ok(())
            }
            Request::Receipt { conn, receipt } => {
                self.receipt_after_barrier(conn, Some(receipt));
                Ok(())
            }
            Request::Close { conn } => {
                if let Some(c) = self.connections.remove(&conn) {
                    if let Some(id) = &c.client_id {
                        self.client_ids.remove(id);
                    }
                    for key in c.subscriptions.into_values() {
                        self.end_subscription(key);
                    }
                }
                Ok(())
            }
            Request::Stats(reply) => {
                let _ = reply.send(self.counts());
                Ok(())
            }
            Request::Ping(reply) => {
                let _ = reply.send(());
                Ok(())
            }
            Request::Drain(reply) => {
                // From now on nothing new is dispatched, and the answer waits until every
                // delivered message is acknowledged: an ACK that arrived after the goodbye
                // would be lost, and the next node would deliver the message again.
                self.draining = true;
                self.drained = Some(reply);
                // Open transactions are aborted: their COMMIT is refused (see [`drain`]).
                let mut aborted = 0;
                for c in self.connections.values_mut() {
                    aborted += c.transactions.len();
                    c.transactions.clear();
                }
                if aborted > 0 {
                    debug!(aborted, "draining: aborted open transactions");
                }
                Ok(())
            }
            Request::Page { ticket, result } => {
                self.paged_in(ticket, result);
                Ok(())
            }
            Request::Counted { ticket, result } => {
                self.counted(ticket, result);
                Ok(())
            }
        }
    }

    /// Handles the answer to a count of what a takeover found stored, and asks for the next.
    fn counted(&mut self, ticket: u64, result: Result<paging::Counted, Arc<StoreError>>) {
        if !matches!(self.tickets.get(&ticket), Some(Ticket::Count { .. })) {
            return;
        }
        let Some(Ticket::Count { source }) = self.tickets.remove(&ticket) else {
            return;
        };
        let Some(paged) = self.paged_mut(&source) else {
            return;
        };
        if paged.reading != Some(ticket) {
            // The durable subscription was deleted (and maybe re-created) meanwhile.
            return;
        }
        paged.reading = None;
        let Some(counting) = &mut paged.counting else {
            return;
        };
        counting.in_flight = false;
        match result {
            Err(err) => {
                // Counting is only for `ctl status`: give up rather than retry in a loop.
                warn!(error = %err, "counting stored messages failed; status counts will be low");
                paged.counting = None;
            }
            Ok(_) if std::mem::take(&mut counting.dirty) => {
                // A message was paged out into the range while it was counted: count again.
            }
            Ok((n, last)) => {
                paged.out += n as u64;
                let last = last.and_then(|k| <[u8; 8]>::try_from(k.as_ref()).ok());
                match last.map(u64::from_be_bytes) {
                    Some(last) if n >= paging::COUNT_CHUNK => counting.next = last + 1,
                    _ => paged.counting = None,
                }
            }
        }
        // The next count, or a page if one is due meanwhile.
        self.refill(&source);
    }

    /// Asks for the next page of `source` if it has paged-out messages, has drained to its
    /// low-water mark, and has no read in flight; otherwise, if what a takeover found stored is
    /// still being counted, for the next count (pages first: consumers may be waiting).
    fn refill(&mut self, source: &Source) {
        let Some(paging) = &self.paging else {
            return;
        };
        if self.draining {
            // Going passive: nothing more is delivered here, so nothing needs reading.
            return;
        }
        // Called on every dispatch: nothing is allocated unless a read is asked for.
        let (pending, paged, space) = match source {
            Source::Queue(q) => match self.queues.get_mut(q) {
                Some(queue) => (&queue.pending, &mut queue.paged, &queue.space),
                None => return,
            },
            Source::Durable(d) => match self.durables.get_mut(d) {
                Some(d) => (&d.pending, &mut d.paged, &d.space),
                None => return,
            },
            Source::Topic(_) => return,
        };
        if paged.reading.is_some() {
            return;
        }
        let Some(cursor) = paged.cursor else {
            return;
        };
        if paged
            .counting
            .is_some_and(|c| c.next.max(cursor) >= c.below)
        {
            // The cursor has passed everything there was to count.
            paged.counting = None;
        }
        let page_due = pending.len() <= paging.low_water();
        let count_turn = paged.counting.is_some_and(|c| !page_due || c.paged_last);
        let (purpose, from, limit, count_below) = if page_due && !count_turn {
            if let Some(counting) = &mut paged.counting {
                counting.paged_last = true;
            }
            let limit = paging.page - pending.len();
            let purpose = Ticket::Refill {
                source: source.clone(),
                limit,
            };
            (purpose, cursor, limit, None)
        } else if let Some(counting) = &mut paged.counting {
            counting.paged_last = false;
            let from = counting.next.max(cursor);
            counting.in_flight = true;
            counting.dirty = false;
            let purpose = Ticket::Count {
                source: source.clone(),
            };
            (purpose, from, paging::COUNT_CHUNK, Some(counting.below))
        } else {
            return;
        };
        let space = Arc::clone(space);
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        paged.reading = Some(ticket);
        self.tickets.insert(ticket, purpose);
        self.read_after_barrier(PageRead {
            ticket,
            space,
            from: Bytes::copy_from_slice(&from.to_be_bytes()),
            limit,
            count_below: count_below.map(|below: u64| Bytes::copy_from_slice(&below.to_be_bytes())),
        });
    }

    /// Sends `read` once every write submitted so far is applied (a barrier), so the read
    /// sees every message paged out before it was asked for.
    fn read_after_barrier(&self, read: PageRead) {
        let Some(paging) = &self.paging else {
            return;
        };
        let reads = paging.reads.clone();
        self.store.barrier(Box::new(move || {
            // A closed channel means the broker is gone; nobody waits for the answer.
            let _ = reads.send(read);
        }));
    }

    /// A number never used before, for a durable subscription's space: the next message seq.
    fn incarnation(&mut self) -> u64 {
        self.next_seq()
    }

    /// Removes a deleted durable subscription's paged-out messages from the store, a page at a
    /// time, off the router.
    fn purge(&mut self, space: Arc<str>, paged: &Paged) {
        if let Some(cursor) = paged.cursor {
            // Every message of the deleted subscription is older than the next one published.
            let upto = (self.settings.epoch << 40) | self.counter;
            self.purge_from(space, cursor, upto);
        }
    }

    /// Asks for the next page of a purge: keys from `from`, removing those up to `upto`.
    fn purge_from(&mut self, space: Arc<str>, from: u64, upto: u64) {
        let Some(page) = self.paging.as_ref().map(|p| p.page) else {
            return;
        };
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.tickets.insert(
            ticket,
            Ticket::Purge {
                space: Arc::clone(&space),
                upto,
                limit: page,
            },
        );
        self.read_after_barrier(PageRead {
            ticket,
            space,
            from: Bytes::copy_from_slice(&from.to_be_bytes()),
            limit: page,
            count_below: None,
        });
    }

    /// Handles the answer to a page read.
    fn paged_in(&mut self, ticket: u64, result: Result<paging::Entries, Arc<StoreError>>) {
        let Some(purpose) = self.tickets.remove(&ticket) else {
            return;
        };
        let entries = match result {
            Ok(entries) => entries,
            Err(err) => {
                // The space keeps its cursor: the next dispatch asks again.
                warn!(error = %err, "reading paged-out messages failed");
                if let Ticket::Refill { source, .. } = &purpose {
                    if let Some(paged) = self.paged_mut(source) {
                        if paged.reading == Some(ticket) {
                            paged.reading = None;
                        }
                    }
                }
                return;
            }
        };
        match purpose {
            Ticket::Refill { source, limit } => {
                let epoch = self.settings.epoch;
                let (pending, paged) = match &source {
                    Source::Queue(q) => match self.queues.get_mut(q) {
                        Some(queue) => (&mut queue.pending, &mut queue.paged),
                        None => return,
                    },
                    Source::Durable(d) => match self.durables.get_mut(d) {
                        Some(d) => (&mut d.pending, &mut d.paged),
                        None => return,
                    },
                    Source::Topic(_) => return,
                };
                if paged.reading != Some(ticket) {
                    // The durable subscription was deleted (and maybe re-created) meanwhile.
                    return;
                }
                paged.reading = None;
                let loaded = paged.load(pending, entries, limit, epoch);
                debug!(loaded, cursor = ?paged.cursor, "paged messages in");
                self.dispatch(&source);
            }
            Ticket::Purge { space, upto, limit } => {
                let full = entries.len() >= limit;
                let mut last = None;
                for (key, _) in entries {
                    last = Some(key.clone());
                    if key.as_ref() <= upto.to_be_bytes().as_slice() {
                        self.store.remove(Arc::clone(&space), key);
                    }
                }
                let next = last
                    .and_then(|k| <[u8; 8]>::try_from(k.as_ref()).ok())
                    .map(u64::from_be_bytes)
                    .filter(|last| full && *last < upto);
                if let Some(last) = next {
                    self.purge_from(space, last + 1, upto);
                }
            }
            // Counts are answered with Request::Counted.
            Ticket::Count { .. } => {}
        }
    }

    fn paged_mut(&mut self, source: &Source) -> Option<&mut Paged> {
        match source {
            Source::Queue(q) => self.queues.get_mut(q).map(|q| &mut q.paged),
            Source::Durable(d) => self.durables.get_mut(d).map(|d| &mut d.paged),
            Source::Topic(_) => None,
        }
    }

    fn connection(&mut self, conn: ConnId) -> Result<&mut Connection, Refused> {
        self.connections
            .get_mut(&conn)
            .ok_or_else(|| Refused("session is not connected".into()))
    }

    /// The open transaction `tx`, with room for one more operation.
    fn transaction(&mut self, conn: ConnId, tx: &str) -> Result<&mut Vec<TxOp>, Refused> {
        let ops = self
            .connection(conn)?
            .transactions
            .get_mut(tx)
            .ok_or_else(|| Refused(format!("transaction {tx:?} is not open (BEGIN it first)")))?;
        if ops.len() >= MAX_TRANSACTION_OPS {
            return Err(Refused(format!(
                "transaction {tx:?} reached the limit of {MAX_TRANSACTION_OPS} SENDs and ACKs; COMMIT it in smaller parts"
            )));
        }
        Ok(ops)
    }

    fn end_transaction(&mut self, conn: ConnId, tx: &str) -> Result<Vec<TxOp>, Refused> {
        self.connection(conn)?
            .transactions
            .remove(tx)
            .ok_or_else(|| Refused(format!("transaction {tx:?} is not open (BEGIN it first)")))
    }

    fn receipt_now(&self, conn: ConnId, receipt: Option<String>) {
        if let Some(done) = self.receipt_later(conn, receipt) {
            done();
        }
    }

    /// The receipt to send once it may go out; `None` when the frame asked for none, or when
    /// an earlier frame of the connection was not taken (see [`standing`]).
    fn receipt_later(&self, conn: ConnId, receipt: Option<String>) -> Option<OnDurable> {
        let receipt = receipt?;
        let c = self.connections.get(&conn)?;
        if !c.standing.receipts() {
            debug!(conn, receipt, standing = ?c.standing, "withholding a receipt after a frame not taken");
            return None;
        }
        let outbox = c.outbox.clone();
        Some(Box::new(move || {
            let _ = outbox.send(Outbound::Receipt(receipt));
        }))
    }

    fn receipt_after_barrier(&self, conn: ConnId, receipt: Option<String>) {
        if let Some(done) = self.receipt_later(conn, receipt) {
            self.store.barrier(done);
        }
    }

    /// A scheduled SEND: a job, stored in the message store like a message (so that its
    /// RECEIPT, or its COMMIT's, means it is durable), and handed to the scheduler.
    fn schedule(
        &mut self,
        conn: ConnId,
        msg: Message,
        schedule: scheduler::spec::Schedule,
        transaction: Option<String>,
        receipt: Option<String>,
    ) -> Result<(), Refused> {
        let Some(link) = &self.scheduler else {
            return Err(Refused(
                "this broker runs without a scheduler: scheduled SENDs are refused".into(),
            ));
        };
        let cron = schedule.cron.as_ref().map(ToString::to_string);
        let Some(job) = Job::new(msg, schedule, link.clock.now()) else {
            return Err(Refused(format!(
                "{} {:?} never matches: nothing was scheduled",
                scheduler::spec::CRON,
                cron.unwrap_or_default()
            )));
        };
        match transaction {
            Some(tx) => {
                let charge = Charge::new(&job.template, &self.memory);
                self.transaction(conn, &tx)?
                    .push(TxOp::Schedule(job, charge));
                self.receipt_now(conn, receipt);
            }
            None => {
                let on_durable = self.receipt_later(conn, receipt);
                self.add_job(job, on_durable);
            }
        }
        Ok(())
    }

    /// A SEND to the scheduler's management topic: handed to the scheduler, whose answer to
    /// it is its receipt.
    fn manage(
        &mut self,
        conn: ConnId,
        headers: &[(String, String)],
        receipt: Option<String>,
    ) -> Result<(), Refused> {
        let action =
            scheduler::manage::Action::from_headers(headers).map_err(|e| Refused(e.to_string()))?;
        let Some(link) = &self.scheduler else {
            return Err(Refused(
                "this broker runs without a scheduler: nothing to manage".into(),
            ));
        };
        let done = self.receipt_later(conn, receipt);
        let _ = link
            .commands
            .send(scheduler::task::Command::Manage { action, done });
        Ok(())
    }

    /// Stores a new job where a takeover finds it, and hands it to the scheduler. It counts
    /// against the producers' memory limit until it is in the scheduler's store (the scheduler
    /// releases it), so that producers wait rather than grow a backlog of jobs to move.
    fn add_job(&mut self, job: Job, on_durable: Option<OnDurable>) {
        let Some(link) = &self.scheduler else {
            return;
        };
        self.scheduling.add(job.template.footprint());
        self.store.put(
            scheduler::store::NEW.into(),
            Bytes::copy_from_slice(job.id.as_bytes()),
            job.encode(),
            on_durable,
        );
        let _ = link.commands.send(scheduler::task::Command::Add(job));
    }

    /// The next message seq: `(epoch << 40) | counter`, growing across failovers.
    fn next_seq(&mut self) -> u64 {
        self.counter += 1;
        (self.settings.epoch << 40) | self.counter
    }

    /// The `message-id` of this broker's message `seq`: node, epoch and counter.
    fn id_of(&self, seq: u64) -> Arc<str> {
        let counter = seq & ((1 << 40) - 1);
        format!(
            "ID:{}-{}-{counter}",
            self.settings.node, self.settings.epoch
        )
        .into()
    }

    fn new_message(&mut self, published: Published, body: Bytes) -> Message {
        let seq = self.next_seq();
        Message {
            id: self.id_of(seq),
            seq,
            destination: published.destination.into(),
            headers: published.headers,
            body,
            persistent: published.persistent,
            priority: published.priority,
            expires: published.expires,
            redeliveries: 0,
        }
    }

    /// Routes a new message to its destination; `on_durable` runs once it is safe to receipt.
    /// With `held_receipt`, `on_durable` is the only promise made about the message (a SEND
    /// outside a transaction), so one an auto-mode consumer takes on the spot need not be
    /// stored: the receipt waits for it to be written. Without it, a promise already made or
    /// made for a whole group (a COMMIT's receipt, a dead-letter copy whose original is removed)
    /// rests on the store, so the message is always stored.
    fn publish(&mut self, msg: Message, on_durable: Option<OnDurable>, held_receipt: bool) {
        let msg = Arc::new(msg);
        match message::kind_of(&msg.destination) {
            Ok(Kind::Queue) => {
                let destination = Arc::clone(&msg.destination);
                self.queue(&destination);
                let paging = self.paging.as_ref();
                let queue = self.queues.get_mut(&destination).expect("created above");
                let space = Arc::clone(&queue.space);
                if msg.persistent && queue.paged.pages_out(paging, &queue.pending, msg.seq) {
                    // Paged out: behind the queue's other paged-out messages, in the store only.
                    self.store
                        .put(space, key_of(&msg), msg.encode(), on_durable);
                    return;
                }
                if msg.persistent {
                    queue.paged.loaded(msg.seq);
                }
                // Dispatch before storing: a consumer online gets the message now, not after
                // the disk, and one that takes it in auto mode right here has consumed and
                // acknowledged it before it ever needed storing (if only its receipt waits).
                self.unstored.set(Some(msg.seq));
                queue.pending.push(Arc::clone(&msg));
                self.dispatch(&Source::Queue(Arc::clone(&destination)));
                let expired = self.unstored.take().is_none();
                let taken = self.taken_unstored.take().filter(|_| held_receipt);
                if !msg.persistent || expired {
                    if let Some(done) = on_durable {
                        done();
                    }
                } else if let Some(sub) = taken.and_then(|k| self.subscriptions.get_mut(&k)) {
                    // Taken in auto mode on the spot: no need to store it at all. The receipt
                    // waits until it is written to the consumer (or stored, if that fails).
                    if let Some(delivery) = sub
                        .unwritten
                        .iter_mut()
                        .rev()
                        .find(|d| d.msg.seq == msg.seq)
                    {
                        delivery.unstored_receipt =
                            Some(on_durable.unwrap_or_else(|| Box::new(|| {})));
                    }
                } else {
                    self.store
                        .put(space, key_of(&msg), msg.encode(), on_durable);
                }
            }
            Ok(Kind::Topic) => {
                let mut on_durable = on_durable;
                let durables: Vec<DurableKey> = self
                    .durables
                    .iter()
                    .filter(|(_, d)| d.topic == msg.destination)
                    .map(|(k, _)| k.clone())
                    .collect();
                for key in durables {
                    let paging = self.paging.as_ref();
                    let durable = self.durables.get_mut(&key).expect("key just listed");
                    if msg.persistent && durable.paged.pages_out(paging, &durable.pending, msg.seq)
                    {
                        // Paged out: in the store only, behind the subscription's others.
                        self.store.put(
                            Arc::clone(&durable.space),
                            key_of(&msg),
                            msg.encode(),
                            None,
                        );
                        continue;
                    }
                    if msg.persistent {
                        durable.paged.loaded(msg.seq);
                        // Each durable subscription keeps its own copy; the last write carries
                        // the receipt, since the journal writes in order.
                        self.store.put(
                            Arc::clone(&durable.space),
                            key_of(&msg),
                            msg.encode(),
                            None,
                        );
                    }
                    durable.pending.push(Arc::clone(&msg));
                    self.dispatch(&Source::Durable(key));
                }
                match on_durable.take() {
                    Some(done) if msg.persistent => self.store.barrier(done),
                    Some(done) => done(),
                    None => {}
                }
                let subscribers = self
                    .topics
                    .get(&msg.destination)
                    .cloned()
                    .unwrap_or_default();
                // Counted once, when the first slow subscriber has to keep it.
                let mut held: Option<Arc<Backlogged>> = None;
                let limit = self.settings.topic_backlog;
                for key in subscribers {
                    let Some(sub) = self.subscriptions.get_mut(&key) else {
                        continue;
                    };
                    if sub.backlog.is_empty() && sub.has_credit() && !self.draining {
                        // A subscriber keeping up gets it at once; nothing waits.
                        if !expired_now(&msg) {
                            self.deliver(key, Arc::clone(&msg));
                        }
                        continue;
                    }
                    let entry =
                        held.get_or_insert_with(|| Backlogged::new(Arc::clone(&msg), &self.memory));
                    sub.backlog.push_back(Arc::clone(entry));
                    if sub.backlog.len() > limit {
                        sub.backlog.pop_front();
                        debug!(subscription = %sub.id, limit, "slow topic subscriber: dropped its oldest message");
                    }
                    self.dispatch_backlog(key);
                }
            }
            Err(err) => warn!(error = %err, "unroutable message dropped"),
        }
    }

    fn subscribe(&mut self, conn: ConnId, spec: SubscribeSpec) -> Result<(), Refused> {
        let kind = message::kind_of(&spec.destination).map_err(|e| Refused(e.to_string()))?;
        let caps = self.settings.caps;
        if spec.durable_name.is_none() {
            // A durable subscription feeds from its own space, not from a topic entry.
            self.room_for(&spec.destination)?;
        }
        let c = self.connection(conn)?;
        if c.subscriptions.contains_key(&spec.id) {
            return Err(Refused(format!(
                "subscription id {:?} is already in use on this connection",
                spec.id
            )));
        }
        if c.subscriptions.len() >= caps.subscriptions_per_connection {
            return Err(Refused(caps.too_many_subscriptions()));
        }
        let client_id = c.client_id.clone();
        let destination: Arc<str> = spec.destination.as_str().into();
        let source = match (kind, &spec.durable_name) {
            (Kind::Queue, _) => Source::Queue(Arc::clone(&destination)),
            (Kind::Topic, None) => Source::Topic(Arc::clone(&destination)),
            (Kind::Topic, Some(name)) => {
                let Some(client_id) = client_id else {
                    return Err(Refused(
                        "a durable subscription (activemq.subscriptionName) needs a client-id header on CONNECT"
                            .into(),
                    ));
                };
                Source::Durable((client_id, name.clone()))
            }
        };
        if let Source::Durable(durable_key) = &source {
            // Checked before anything changes: a refused SUBSCRIBE must leave the active
            // subscription's messages alone, even one naming another topic.
            if let Some(active) = self.durables.get(durable_key).and_then(|d| d.active) {
                return Err(Refused(format!(
                    "durable subscription {:?} of client-id {:?} is already active (subscription {active})",
                    durable_key.1, durable_key.0
                )));
            }
        }
        let key = self.next_sub;
        self.next_sub += 1;
        self.connection(conn)?
            .subscriptions
            .insert(spec.id.clone(), key);
        let fresh = self.new_pending();
        match &source {
            Source::Queue(q) => self.queue(q).consumers.push(key),
            Source::Topic(t) => self.topics.entry(Arc::clone(t)).or_default().push(key),
            Source::Durable(durable_key) => {
                let mut purge = None;
                // A new subscription, or one moved to another topic, gets a space never used
                // before: a crash before the old one's purge finished cannot mix the two.
                let new_space = match self.durables.get(durable_key) {
                    Some(durable) if durable.topic == destination => None,
                    _ => Some(registry::space(self.incarnation())),
                };
                let durable = match self.durables.entry(durable_key.clone()) {
                    std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
                    std::collections::hash_map::Entry::Vacant(entry) => {
                        let space = new_space.clone().expect("a new subscription's space");
                        self.store.put(
                            registry::REGISTRY.into(),
                            registry_key(durable_key),
                            registry::value(&space, &destination),
                            None,
                        );
                        entry.insert(Durable {
                            topic: Arc::clone(&destination),
                            space,
                            pending: fresh,
                            paged: Paged::default(),
                            active: None,
                        })
                    }
                };
                if durable.topic != destination {
                    // ActiveMQ re-creates a durable subscription moved to another topic.
                    let old = durable.pending.drain();
                    for msg in old {
                        self.store.remove(Arc::clone(&durable.space), key_of(&msg));
                    }
                    let space = new_space.expect("a moved subscription's space");
                    purge = Some((
                        std::mem::replace(&mut durable.space, space),
                        std::mem::take(&mut durable.paged),
                    ));
                    durable.topic = Arc::clone(&destination);
                    self.store.put(
                        registry::REGISTRY.into(),
                        registry_key(durable_key),
                        registry::value(&durable.space, &destination),
                        None,
                    );
                }
                durable.active = Some(key);
                if let Some((space, paged)) = purge {
                    self.purge(space, &paged);
                }
            }
        }
        self.subscriptions.insert(
            key,
            Subscription {
                conn,
                id: spec.id.into(),
                source: source.clone(),
                ack: spec.ack,
                prefetch: spec.prefetch.max(1),
                next_tag: 0,
                in_flight: VecDeque::new(),
                unwritten: VecDeque::new(),
                backlog: VecDeque::new(),
            },
        );
        self.dispatch(&source);
        Ok(())
    }

    /// Ends a subscription: its unacknowledged deliveries go back, flagged redelivered.
    fn end_subscription(&mut self, key: SubKey) {
        let Some(sub) = self.subscriptions.remove(&key) else {
            return;
        };
        match &sub.source {
            Source::Queue(q) => {
                if let Some(queue) = self.queues.get_mut(q) {
                    queue.consumers.retain(|k| *k != key);
                }
            }
            Source::Topic(t) => {
                if let Some(subs) = self.topics.get_mut(t) {
                    subs.retain(|k| *k != key);
                    if subs.is_empty() {
                        self.topics.remove(t);
                    }
                }
            }
            Source::Durable(d) => {
                if let Some(durable) = self.durables.get_mut(d) {
                    durable.active = None;
                }
            }
        }
        // Auto-mode messages the session never wrote were never acknowledged: they go back
        // (flagged, as some may have reached the socket). One taken before it was stored is
        // stored now, and its producer's receipt waits for that.
        for delivery in sub.unwritten {
            if let Some(receipt) = delivery.unstored_receipt {
                let msg = &delivery.msg;
                match self.space_of(&sub.source) {
                    Some(space) => self
                        .store
                        .put(space, key_of(msg), msg.encode(), Some(receipt)),
                    None => receipt(),
                }
            }
            self.redeliver(&sub.source, delivery.msg);
        }
        for delivery in sub.in_flight {
            self.redeliver(&sub.source, delivery.msg);
        }
        self.dispatch(&sub.source);
        if let Source::Queue(q) = &sub.source {
            // Unique reply-queue names must not pile up: an idle queue is removed, and comes
            // back as new if used again.
            if self.queues.get(q).is_some_and(idle) {
                self.queues.remove(q);
                debug!(queue = %q, "removed an empty, unused queue");
            }
        }
    }

    fn delete_durable(&mut self, conn: ConnId, name: String) -> Result<(), Refused> {
        let client_id = self.connection(conn)?.client_id.clone().ok_or_else(|| {
            Refused("deleting a durable subscription needs a client-id header on CONNECT".into())
        })?;
        let key = (client_id, name);
        if let Some(mut durable) = self.durables.remove(&key) {
            if let Some(active) = durable.active {
                self.durables.insert(key.clone(), durable);
                return Err(Refused(format!(
                    "durable subscription {:?} is still active (subscription {active}); UNSUBSCRIBE it first",
                    key.1
                )));
            }
            // The registry entry goes first: it is the deletion's durable marker. A crash
            // before the purge below is done leaves a space no entry names, which recovery
            // purges and no subscription ever reads (see `registry`).
            self.store
                .remove(registry::REGISTRY.into(), registry_key(&key));
            for msg in durable.pending.drain() {
                self.store.remove(Arc::clone(&durable.space), key_of(&msg));
            }
            self.purge(Arc::clone(&durable.space), &durable.paged);
        }
        Ok(())
    }

    /// Returns a message to where it came from for another delivery, or to the dead-letter
    /// queue once it has been redelivered too often: NACKed, or its consumer gone without an
    /// ACK (a message that crashes every consumer must not loop forever).
    fn redeliver(&mut self, source: &Source, msg: Arc<Message>) {
        if let Source::Topic(_) = source {
            // A non-durable topic subscriber that leaves loses its messages, as in ActiveMQ.
            return;
        }
        let mut msg = Arc::unwrap_or_clone(msg);
        msg.redeliveries += 1;
        if msg.redeliveries > self.settings.max_redeliveries {
            let space = self.space_of(source);
            // The dead-letter copy is written before the original is removed: the journal
            // writes in order, so a crash in between leaves a duplicate, never a loss.
            let key = key_of(&msg);
            let persistent = msg.persistent;
            self.dead_letter(msg);
            if let (Some(space), true) = (space, persistent) {
                self.store.remove(space, key);
            }
            return;
        }
        let msg = Arc::new(msg);
        match source {
            Source::Queue(q) => self.queue(q).pending.put_back(msg),
            Source::Durable(d) => {
                if let Some(durable) = self.durables.get_mut(d) {
                    durable.pending.put_back(msg);
                }
            }
            Source::Topic(_) => {}
        }
    }

    /// Moves a message that kept failing to the dead-letter queue, naming where it came from.
    fn dead_letter(&mut self, mut msg: Message) {
        warn!(message_id = %msg.id, destination = %msg.destination, redeliveries = msg.redeliveries, dlq = %self.settings.dead_letter_queue, "moving a message to the dead-letter queue");
        msg.headers
            .retain(|(name, _)| name != "original-destination");
        msg.headers
            .push(("original-destination".into(), msg.destination.to_string()));
        msg.destination = self.settings.dead_letter_queue.as_str().into();
        msg.redeliveries = 0;
        self.publish(msg, None, false);
    }

    /// Which subscription and delivery an ACK/NACK names.
    fn find_delivery(&self, conn: ConnId, which: &AckRef) -> Result<(SubKey, u64), Refused> {
        let c = self
            .connections
            .get(&conn)
            .ok_or_else(|| Refused("session is not connected".into()))?;
        let found = match which {
            AckRef::Ack(ack) => c.subscriptions.values().find_map(|key| {
                let sub = self.subscriptions.get(key)?;
                sub.in_flight
                    .iter()
                    .find(|d| *d.ack == **ack)
                    .map(|d| (*key, d.tag))
            }),
            AckRef::MessageId {
                message_id,
                subscription,
            } => c
                .subscriptions
                .iter()
                .filter(|(id, _)| subscription.as_ref().is_none_or(|s| s == *id))
                .find_map(|(_, key)| {
                    let sub = self.subscriptions.get(key)?;
                    sub.in_flight
                        .iter()
                        .find(|d| *d.msg.id == **message_id)
                        .map(|d| (*key, d.tag))
                }),
        };
        found.ok_or_else(|| {
            Refused(match which {
                AckRef::Ack(ack) => format!("no unacknowledged message has ack id {ack:?}"),
                AckRef::MessageId { message_id, .. } => {
                    format!("no unacknowledged message has message-id {message_id:?}")
                }
            })
        })
    }

    /// Applies an ACK or NACK: cumulative in client mode, one message otherwise.
    fn acknowledge(&mut self, conn: ConnId, which: &AckRef, nack: bool) -> Result<(), Refused> {
        let (key, tag) = self.find_delivery(conn, which)?;
        let sub = self.subscriptions.get_mut(&key).expect("found above");
        let taken: Vec<InFlight> = if sub.ack == AckMode::Client {
            let upto = sub
                .in_flight
                .iter()
                .position(|d| d.tag == tag)
                .map_or(0, |i| i + 1);
            sub.in_flight.drain(..upto).collect()
        } else {
            let at = sub
                .in_flight
                .iter()
                .position(|d| d.tag == tag)
                .expect("found above");
            sub.in_flight.remove(at).into_iter().collect()
        };
        let source = sub.source.clone();
        for delivery in taken {
            if nack {
                self.redeliver(&source, delivery.msg);
            } else {
                self.forget(&source, &delivery.msg);
            }
        }
        self.dispatch(&source);
        Ok(())
    }

    /// A message is done with: remove it from the store.
    fn forget(&self, source: &Source, msg: &Message) {
        if self.unstored.get() == Some(msg.seq) {
            // Dropped (expired) while being published: it was never stored, nothing to remove.
            self.unstored.set(None);
            return;
        }
        if !msg.persistent {
            return;
        }
        if let Some(space) = self.space_of(source) {
            self.store.remove(space, key_of(msg));
        }
    }

    /// The store space of a queue or durable subscription that exists; `None` for a topic.
    fn space_of(&self, source: &Source) -> Option<Arc<str>> {
        let space = match source {
            Source::Queue(q) => &self.queues.get(q)?.space,
            Source::Durable(d) => &self.durables.get(d)?.space,
            Source::Topic(_) => return None,
        };
        Some(Arc::clone(space))
    }

    /// Delivers what is waiting at `source` to subscribers with credit.
    fn dispatch(&mut self, source: &Source) {
        match source {
            Source::Queue(q) => {
                self.dispatch_queue(q);
                self.refill(source);
            }
            Source::Durable(d) => {
                self.dispatch_durable(d);
                self.refill(source);
            }
            Source::Topic(t) => {
                let subscribers = self.topics.get(t).cloned().unwrap_or_default();
                for key in subscribers {
                    self.dispatch_backlog(key);
                }
            }
        }
    }

    fn dispatch_queue(&mut self, destination: &Arc<str>) {
        if self.draining {
            // Going passive: what is not delivered yet stays for the next node.
            return;
        }
        let now = now_ms();
        loop {
            let Some(queue) = self.queues.get_mut(destination) else {
                return;
            };
            if queue.pending.is_empty() || queue.consumers.is_empty() {
                return;
            }
            let n = queue.consumers.len();
            let chosen = (0..n).find_map(|i| {
                let key = queue.consumers[(queue.next + i) % n];
                self.subscriptions
                    .get(&key)
                    .filter(|s| s.has_credit())
                    .map(|_| (i, key))
            });
            let Some((i, key)) = chosen else {
                return;
            };
            queue.next = (queue.next + i + 1) % n;
            let msg = queue.pending.pop().expect("checked non-empty");
            let source = Source::Queue(Arc::clone(destination));
            if msg.expired(now) {
                self.forget(&source, &msg);
                continue;
            }
            self.deliver(key, msg);
        }
    }

    fn dispatch_durable(&mut self, key: &DurableKey) {
        if self.draining {
            // Going passive: what is not delivered yet stays for the next node.
            return;
        }
        let now = now_ms();
        loop {
            let Some(durable) = self.durables.get_mut(key) else {
                return;
            };
            let Some(sub_key) = durable.active else {
                return;
            };
            if !self
                .subscriptions
                .get(&sub_key)
                .is_some_and(Subscription::has_credit)
            {
                return;
            }
            let Some(msg) = durable.pending.pop() else {
                return;
            };
            let source = Source::Durable(key.clone());
            if msg.expired(now) {
                self.forget(&source, &msg);
                continue;
            }
            self.deliver(sub_key, msg);
        }
    }

    fn dispatch_backlog(&mut self, key: SubKey) {
        if self.draining {
            // Going passive: what is not delivered yet stays for the next node.
            return;
        }
        let now = now_ms();
        loop {
            let Some(sub) = self.subscriptions.get_mut(&key) else {
                return;
            };
            if !sub.has_credit() {
                return;
            }
            let Some(entry) = sub.backlog.pop_front() else {
                return;
            };
            // Dropping the entry uncounts the message once no other backlog holds it; from now
            // on it is a delivery, bounded by the prefetch.
            let msg = Arc::clone(entry.message());
            drop(entry);
            if msg.expired(now) {
                continue;
            }
            self.deliver(key, msg);
        }
    }

    /// Sends one message to a subscription's session.
    fn deliver(&mut self, key: SubKey, msg: Arc<Message>) {
        let sub = self
            .subscriptions
            .get_mut(&key)
            .expect("deliver to a live subscription");
        let ack = match sub.ack {
            AckMode::Auto => {
                sub.unwritten.push_back(Unwritten {
                    msg: Arc::clone(&msg),
                    unstored_receipt: None,
                    _charge: Charge::new(&msg, &self.memory),
                });
                if self.unstored.get() == Some(msg.seq) {
                    self.taken_unstored.set(Some(key));
                }
                None
            }
            AckMode::Client | AckMode::ClientIndividual => {
                sub.next_tag += 1;
                // The epoch makes ack ids unique across failovers: a late ACK of a delivery by
                // the previous broker can never acknowledge a different message here.
                let ack: Arc<str> = format!("{}{key}-{}", self.ack_prefix, sub.next_tag).into();
                sub.in_flight.push_back(InFlight {
                    tag: sub.next_tag,
                    ack: Arc::clone(&ack),
                    msg: Arc::clone(&msg),
                    _charge: Charge::new(&msg, &self.memory),
                });
                Some(ack)
            }
        };
        let subscription = Arc::clone(&sub.id);
        if let Some(c) = self.connections.get(&sub.conn) {
            let _ = c.outbox.send(Outbound::Message {
                subscription,
                sub: key,
                ack,
                msg: Arc::clone(&msg),
            });
        }
    }

    fn counts(&self) -> Counts {
        let pending: usize = self.queues.values().map(|q| q.pending.len()).sum::<usize>()
            + self
                .durables
                .values()
                .map(|d| d.pending.len())
                .sum::<usize>();
        let in_flight: usize = self
            .subscriptions
            .values()
            .map(|s| s.in_flight.len() + s.unwritten.len() + s.backlog.len())
            .sum();
        // Paged out: in the store only.
        let stored: u64 = self.queues.values().map(|q| q.paged.out).sum::<u64>()
            + self.durables.values().map(|d| d.paged.out).sum::<u64>();
        Counts {
            destinations: (self.queues.len() + self.topics.len()) as u64,
            messages: (pending + in_flight) as u64 + stored,
            consumers: self.subscriptions.len() as u64,
            // What the memory limit counts of the broker's own (waiting messages, transaction
            // contents, deliveries in flight), not a second tally of it.
            memory_bytes: self.memory.bytes() as u64,
        }
    }
}

/// A message's key in its space: its sequence, big-endian, so keys sort in FIFO order.
fn key_of(msg: &Message) -> Bytes {
    Bytes::copy_from_slice(&msg.seq.to_be_bytes())
}

#[cfg(test)]
mod tests;
