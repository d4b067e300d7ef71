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
//!
//! This module holds the broker's state and routes each [`Request`] (the requests and answers
//! themselves are in `requests`); the work is split by concept, each an `impl Broker` of its
//! own: `connections` (open and close), `publishing` (SEND), `names` (destination names and
//! wildcards), `destinations` (queues, temporary destinations, caps, recovery, and the
//! destinations created, whose store layout is `created`), `subscriptions`, `consumers`
//! (consumer options, choosing among consumers), `dispatch`,
//! `acks` (acknowledgement), `redelivery` (delays and dead letters), `browsing`,
//! `virtual_topics`, `transactions`, `reading` (paged-out messages read back), `scheduling`
//! (the scheduler's side), `admin` (destination management) and `drain` (going passive).

mod acks;
mod admin;
mod browsing;
mod connections;
pub mod consumers;
mod created;
mod destinations;
mod dispatch;
mod drain;
mod durables;
pub mod limits;
pub mod message;
pub mod names;
pub mod paging;
pub mod pending;
mod publishing;
mod reading;
pub mod redelivery;
pub mod registry;
mod requests;
mod scheduling;
mod standing;
mod subscriptions;
mod transactions;
pub mod virtual_topics;

use crate::journal::{Op, Value};
use crate::memory::{Gauge, Meter};
use crate::scheduler::{self, job::Job};
use crate::store::StoreError;
use bytes::Bytes;
use durables::Durables;
use message::{Message, Published};
use names::{Kind, Pattern};
use paging::{PageRead, PageStore, Paged, Paging};
use pending::{Backlogged, Charge, Pending};
pub use requests::*;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

/// A session's identity within the broker.
pub type ConnId = u64;

/// Runs once its write is durable (or cancelled because the message was consumed first).
pub type OnDurable = Box<dyn FnOnce() + Send + 'static>;

/// Where the broker keeps persistent messages. The store's journal implements it; tests use
/// [`Volatile`].
pub trait Durability: Send {
    /// Stores `value` under `key` in `space`; `on_durable` runs once it is durable.
    fn put(&self, space: Arc<str>, key: Bytes, value: Value, on_durable: Option<OnDurable>);
    /// Removes `key`; a put still waiting to be written is cancelled, and its `on_durable` runs.
    fn remove(&self, space: Arc<str>, key: Bytes);
    /// Runs `on_durable` once everything submitted before is durable.
    fn barrier(&self, on_durable: OnDurable);
    /// Applies several writes atomically (a COMMIT): after a crash, all or none of them.
    fn apply(&self, ops: Vec<Op>, on_durable: Option<OnDurable>);
}

impl Durability for crate::journal::Journal {
    fn put(&self, space: Arc<str>, key: Bytes, value: Value, on_durable: Option<OnDurable>) {
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
    fn put(&self, _: Arc<str>, _: Bytes, _: Value, on_durable: Option<OnDurable>) {
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

/// Unix milliseconds now.
fn now_ms() -> u64 {
    shared_proto::unix_ms()
}

/// Sleeps until the Unix time `at_ms` (not at all if it has passed).
async fn sleep_until_unix_ms(at_ms: u64) {
    let wait = at_ms.saturating_sub(now_ms());
    tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
}

/// Whether `msg` has expired, reading the clock only for messages that can expire.
fn expired_now(msg: &Message) -> bool {
    msg.expires != 0 && msg.expired(now_ms())
}

/// One delivery awaiting its ACK.
#[derive(Debug)]
struct InFlight {
    /// Its place in the subscription's deliveries (they are kept in tag order).
    tag: u64,
    msg: Arc<Message>,
    /// Held in memory until acknowledged: counted against the producers' memory limit.
    _charge: Charge,
}

/// Where a message waits for a subscription: where it returns to when not acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Queue(Arc<str>),
    Topic(Arc<str>),
    Durable(DurableKey),
}

/// Where a subscription's messages come from.
#[derive(Debug)]
enum Feed {
    /// One queue, topic or durable subscription.
    One(Source),
    /// Every queue the filter matches, those there are and those to come (wildcards, or a
    /// composite list): the queues it consumes from now.
    Queues {
        filter: Arc<Filter>,
        queues: Vec<Arc<str>>,
    },
    /// Every topic the filter matches.
    Topics(Arc<Filter>),
    /// A queue browser's snapshot: copies, never consumed.
    Browse(Box<browsing::Browse>),
}

/// Names and wildcard patterns of one kind: a subscription's composite destination.
#[derive(Debug, Default)]
struct Filter {
    names: Vec<Arc<str>>,
    patterns: Vec<Pattern>,
}

impl Filter {
    fn matches(&self, name: &str) -> bool {
        self.names.iter().any(|n| **n == *name) || self.patterns.iter().any(|p| p.matches(name))
    }
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
    feed: Feed,
    options: consumers::ConsumerOptions,
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
    backlog: pending::TopicBacklog,
}

impl Subscription {
    /// Where a message delivered to this subscription came from.
    fn origin(&self, msg: &Message) -> Source {
        match &self.feed {
            Feed::One(source) => source.clone(),
            Feed::Queues { .. } => Source::Queue(Arc::clone(&msg.destination)),
            // A copy, like a topic subscriber's: it returns nowhere, and is removed from
            // nowhere when acknowledged.
            Feed::Topics(_) | Feed::Browse(_) => Source::Topic(Arc::clone(&msg.destination)),
        }
    }

    /// Where delivery `tag` is among those awaiting their ACK (a binary search: they are
    /// kept in tag order).
    fn position(&self, tag: u64) -> Option<usize> {
        self.in_flight.binary_search_by_key(&tag, |d| d.tag).ok()
    }

    fn has_credit(&self) -> bool {
        self.room() > 0
    }

    /// Deliveries it may take now, within its prefetch.
    fn room(&self) -> usize {
        let used = match self.ack {
            AckMode::Auto => self.unwritten.len(),
            _ => self.in_flight.len(),
        };
        (self.prefetch as usize).saturating_sub(used)
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

#[derive(Debug)]
struct Queue {
    /// Its store space, made once: every store write and removal of the queue names it.
    space: Arc<str>,
    pending: Pending,
    paged: Paged,
    /// Changed only through [`Queue::attach`] and [`Queue::detach`].
    consumers: Vec<SubKey>,
    next: usize,
    /// Consumers with options ([`consumers`]): while there are any, every delivery chooses.
    choosy_consumers: usize,
    /// Of those, exclusive ones.
    exclusive_consumers: usize,
    /// Each message group's consumer.
    groups: HashMap<Arc<str>, SubKey>,
    counters: admin::Counters,
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
        /// Runs once the purge's last removal is durable (a purged queue's answer).
        done: Option<OnDurable>,
    },
    /// Reading a page of what a browser's snapshot found paged out: keys below `upto`.
    Browse {
        sub: SubKey,
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
    /// The prefix of its temporary destinations' names.
    temporary: Arc<str>,
    /// The temporary destinations it created: deleted when it ends.
    temporaries: Vec<Arc<str>>,
    client_id: Option<String>,
    peer: String,
    /// What the users file lets it do; `None`: anything.
    access: Option<crate::auth::Access>,
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
    /// Every destination created and not deleted, in memory or not ([`created`]): using one
    /// again needs no `admin`.
    created: HashSet<Arc<str>>,
    /// Whether the registry's cap was logged as reached (once per broker).
    created_full_logged: bool,
    /// The traffic of each topic in `topics`, kept as long as it has subscribers.
    topic_counters: HashMap<Arc<str>, admin::Counters>,
    /// Subscriptions fed by every queue a filter matches: each new queue is matched.
    queue_filters: Vec<SubKey>,
    /// Each virtual topic's consumer queues ([`virtual_topics`]).
    virtual_queues: HashMap<Arc<str>, Vec<Arc<str>>>,
    /// Each topic's retained message, for retroactive subscribers ([`consumers`]).
    retained: HashMap<Arc<str>, Arc<Message>>,
    /// The temporary destinations there are, and the connection that created each.
    temporaries: HashMap<Arc<str>, ConnId>,
    /// Subscriptions fed by every topic a filter matches: each publish is matched.
    topic_filters: Vec<SubKey>,
    durables: Durables,
    draining: bool,
    /// Bytes of every waiting message, shared with the sessions for flow control.
    memory: Gauge,
    /// Bytes of new jobs not yet in the scheduler's store (the scheduler releases them).
    scheduling: Gauge,
    /// The answer to a Drain, owed once every delivered message is acknowledged.
    drained: Option<oneshot::Sender<()>>,
    /// While a queue message is being published: its sequence, until it is consumed.
    unstored: std::cell::Cell<Option<u64>>,
    /// The auto-mode subscription that took the message being published, if one did.
    taken_unstored: std::cell::Cell<Option<SubKey>>,
    /// Paging persistent messages out to the store; `None`: every message stays in memory.
    paging: Option<Paging>,
    next_ticket: u64,
    /// Page reads asked for and not answered yet.
    tickets: HashMap<u64, Ticket>,
    /// Messages waiting out their redelivery delay.
    delayed: redelivery::DelayedSet,
    next_delayed: u64,
    /// Where scheduled SENDs go; `None` until one is attached.
    scheduler: Option<scheduler::Link>,
    /// Messages that came back for another delivery, since this broker started.
    redelivered: u64,
    /// Messages moved to a dead-letter queue, since this broker started.
    dead_lettered: u64,
}

/// The store as the broker writes it: straight through, or, while a COMMIT is being applied,
/// collected into one atomic group.
struct Persist {
    store: Box<dyn Durability>,
    batch: RefCell<Option<Vec<Op>>>,
}

impl Persist {
    fn put(
        &self,
        space: Arc<str>,
        key: Bytes,
        value: impl Into<Value>,
        on_durable: Option<OnDurable>,
    ) {
        let value = value.into();
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
            created: HashSet::new(),
            created_full_logged: false,
            topic_counters: HashMap::new(),
            queue_filters: Vec::new(),
            temporaries: HashMap::new(),
            retained: HashMap::new(),
            virtual_queues: HashMap::new(),
            topic_filters: Vec::new(),
            durables: Durables::default(),
            draining: false,
            memory: Arc::clone(&memory),
            scheduling: Arc::new(Meter::sharing(Arc::clone(memory.room()))),
            drained: None,
            unstored: std::cell::Cell::new(None),
            taken_unstored: std::cell::Cell::new(None),
            paging: None,
            next_ticket: 1,
            tickets: HashMap::new(),
            scheduler: None,
            delayed: redelivery::DelayedSet::new(),
            next_delayed: 0,
            redelivered: 0,
            dead_lettered: 0,
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

    /// Serves requests until every sender is gone.
    pub async fn run(mut self, mut requests: mpsc::Receiver<Request>) {
        loop {
            let due = self.next_due();
            let request = tokio::select! {
                request = requests.recv() => request,
                () = sleep_until_unix_ms(due.unwrap_or(0)), if due.is_some() => {
                    self.release_delayed();
                    continue;
                }
            };
            let Some(request) = request else {
                return;
            };
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
            Request::Open(opening) => self.open(opening),
            Request::Send {
                conn,
                published,
                body,
                transaction,
                receipt,
            } => self.send(conn, published, body, transaction, receipt),
            Request::Subscribe {
                conn,
                spec,
                receipt,
            } => {
                let durable = spec.durable_name.is_some();
                let key = self.subscribe(conn, spec)?;
                if durable {
                    // The registry entry must be durable before the client is told it exists.
                    self.receipt_after_barrier(conn, receipt);
                } else {
                    // As ActiveMQ: the RECEIPT before anything the subscription finds waiting.
                    self.receipt_now(conn, receipt);
                }
                self.start_feed(key);
                Ok(())
            }
            Request::Unsubscribe {
                conn,
                id,
                durable_name,
                receipt,
            } => self.unsubscribe(conn, id, durable_name, receipt),
            Request::Ack {
                conn,
                which,
                nack,
                transaction,
                receipt,
            } => self.ack(conn, which, nack, transaction, receipt),
            Request::Begin {
                conn,
                transaction,
                receipt,
            } => self.begin(conn, transaction, receipt),
            Request::Commit {
                conn,
                transaction,
                receipt,
            } => self.commit(conn, transaction, receipt),
            Request::Abort {
                conn,
                transaction,
                receipt,
            } => {
                self.end_transaction(conn, &transaction)?;
                self.receipt_now(conn, receipt);
                Ok(())
            }
            Request::Written { conn, sub, count } => self.written(conn, sub, count),
            Request::Fire {
                batch,
                deliveries,
                done,
            } => self.fire(batch, deliveries, done),
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
            Request::Close { conn } => self.close(conn),
            Request::Stats(reply) => {
                let _ = reply.send(self.counts());
                Ok(())
            }
            Request::Figures(reply) => {
                let _ = reply.send(self.figures());
                Ok(())
            }
            Request::Destinations { call, reply } => {
                self.destinations(call, reply);
                Ok(())
            }
            Request::Ping(reply) => {
                let _ = reply.send(());
                Ok(())
            }
            Request::Drain(reply) => self.drain(reply),
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

    fn connection(&mut self, conn: ConnId) -> Result<&mut Connection, Refused> {
        self.connections
            .get_mut(&conn)
            .ok_or_else(|| Refused("session is not connected".into()))
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
            messages: (pending + in_flight + self.delayed.len()) as u64 + stored,
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

/// A message as the store keeps it: encoded by the journal's writer, off the broker's task.
/// SAFETY (what is stored): a published message is never changed in place while the journal
/// holds it (a redelivery takes it with `Arc::unwrap_or_clone`, which copies a shared one), so
/// the writer encodes the message as it was published.
fn stored(msg: &Arc<Message>) -> Value {
    Value::Later(Arc::clone(msg) as Arc<dyn crate::journal::Encode>)
}

#[cfg(test)]
mod tests;
