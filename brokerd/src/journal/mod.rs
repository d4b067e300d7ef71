//! Durable writes with group commit: the only path by which the broker changes its stores.
//!
//! The module owns one writer thread per store. Every put, remove, atomic group and barrier goes
//! to it through an unbounded channel, so submitting never blocks an async task; the writer
//! drains whatever has queued (up to [`JournalConfig`]'s caps), writes it to the store's
//! [`Backend`] and makes it durable once (for sled, the message store: sled's flush plus the
//! fsyncs it leaves out, through the store's [`Flusher`](crate::store::Flusher); for redb, the scheduler's store: one
//! commit), and only then runs the batch's `on_durable` callbacks in submission order. While it flushes, new
//! submissions queue up and form the next batch, so one flush covers every frame that arrived
//! during the previous one.
//!
//! Invariants:
//! - An `on_durable` callback runs only after a flush that covers its write returned Ok, or when
//!   its put was cancelled by a remove of the same key before either was written (the message was
//!   consumed and acknowledged first). So a RECEIPT sent from a callback means "durable, or
//!   already consumed".
//! - Callbacks run in submission order, each after every earlier submission is durable.
//! - A failed write or flush, a batch the epoch fence cannot verify (`Fence::check`), or a
//!   failure elsewhere in the store ([`Journal::fail`]: the pager could not read) stops the
//!   writer for good: no later callback ever runs, and the failure is published
//!   ([`Journal::failure`], [`Journal::failed`]) for the broker to stop.
//! - Only this thread flushes the journal's writes: concurrent `flush_async` calls can hang
//!   (sled bug #1308), and a single flusher is what makes group commit work.
//!
//! Key layout: all spaces share one sled tree, [`JOURNAL_TREE`], with keys
//! `u32 BE length of space ++ space ++ key`. Each [`Journal::apply`] group, whatever spaces it
//! touches, is then one `Tree::apply_batch`, which sled recovers atomically (its log "peg"
//! seals the batch). Trees per space would need sled's multi-tree transactions, which cost more
//! per commit and keep every destination as a separate tree in sled's metadata; the length
//! prefix keeps each space's keys contiguous and in key order, so [`recover`] and
//! [`Recovered::scan`] read a space as one range. Lone puts and removes are plain inserts:
//! they need no atomicity (nothing is receipted before the flush), and a one-entry batch costs
//! four times as much.
//!
//! Within a batch only the last write of a key is written where that cannot split a group:
//! a put followed by a remove of its key (the message was consumed before it was written)
//! writes nothing, is never encoded ([`Value::Later`] is encoded only as it is written), and
//! still runs the put's callback.

mod backend;
mod read;

use backend::SledBackend;
pub use backend::{Backend, Encode, Value};
pub(crate) use read::{encode_key, Page};
pub use read::{recover, Entry, Recovered};

use crate::fence::Fence;
use crate::memory::Room;
use crate::store::{Store, StoreError};
use bytes::Bytes;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tracing::{debug, error};

/// How long one batch of the writer (its writes and flush) may take before the store counts as
/// failed ([`Journal::watch_stalls`]): far beyond a healthy flush, and past lockd's 10 s fence
/// timeout, so a stalled filesystem is lockd's to handle first.
pub const STALL_LIMIT: Duration = Duration::from_secs(15);

/// The sled tree that holds every space.
pub const JOURNAL_TREE: &str = "journal";

/// Runs on the writer thread once everything it covers is durable (or was cancelled). It must
/// be quick and must not block: typically it sends on a channel or completes a oneshot.
pub type Durable = Box<dyn FnOnce() + Send + 'static>;

/// One write. `space` names a key space (`q/<destination>`, `d/<client-id>/<subscription>`,
/// `subs`, ...); the journal treats spaces, keys and values as opaque bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Store `value` under `key` in `space`, replacing any earlier value.
    Put {
        /// The key space, e.g. "q/orders".
        space: Arc<str>,
        /// The key within the space; spaces are read back in byte order of their keys.
        key: Bytes,
        /// The stored bytes, or what the writer encodes into them.
        value: Value,
    },
    /// Delete `key` from `space`, if present.
    Remove {
        /// The key space.
        space: Arc<str>,
        /// The key within the space.
        key: Bytes,
    },
}

impl Op {
    /// The bytes this op holds in the queue, for [`Journal::pending_bytes`].
    fn weight(&self) -> u64 {
        let len = match self {
            Op::Put { space, key, value } => space.len() + key.len() + value.size(),
            Op::Remove { space, key } => space.len() + key.len(),
        };
        len as u64
    }
}

/// Limits on one group-commit batch, and the epoch fence every batch passes.
#[derive(Debug, Clone)]
pub struct JournalConfig {
    /// Under lockd: checked before every batch that writes, so that even if the fence thread
    /// is starved, this thread writes nothing once it can see a newer epoch.
    pub fence: Option<Fence>,
    /// The writer stops draining the queue once a batch holds this many bytes (one submission
    /// may exceed it: groups are never split).
    pub max_batch_bytes: u64,
    /// The writer stops draining the queue once a batch holds this many ops.
    pub max_batch_ops: usize,
    /// Where each sync of a batch that wrote is timed (`brokerd_store_flush_seconds`), when the
    /// console serves `/metrics`: one observation per batch, off the broker core.
    pub flush_seconds: Option<prometheus_client::metrics::histogram::Histogram>,
}

impl Default for JournalConfig {
    fn default() -> Self {
        // Large enough that the flush, not the cap, bounds a batch at the measured rates
        // (about 50k msgs/s with ~2 ms flushes), small enough that one apply_batch (which
        // holds sled's global write lock, stalling reads) stays in the low milliseconds.
        JournalConfig {
            fence: None,
            max_batch_bytes: 8 * 1024 * 1024,
            max_batch_ops: 8192,
            flush_seconds: None,
        }
    }
}

/// Counters since the journal started, for stats and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JournalStats {
    /// Batches the writer processed (including ones that needed no write).
    pub batches: u64,
    /// `db.flush()` calls.
    pub flushes: u64,
    /// Puts and removes written to sled.
    pub ops_written: u64,
    /// Puts cancelled by a remove before they were written.
    pub puts_cancelled: u64,
    /// Time spent applying batches to sled.
    pub apply_time: Duration,
    /// Time spent in `db.flush()`.
    pub flush_time: Duration,
}

/// A handle on the journal: cheap to clone, `Send + Sync`, and never blocks except in
/// [`Journal::close`].
#[derive(Clone)]
pub struct Journal {
    shared: Arc<Shared>,
}

/// What every handle and the writer thread share.
struct Shared {
    tx: mpsc::UnboundedSender<Command>,
    /// `SeqCst` throughout: producers waiting for memory read it (see [`crate::memory`]).
    pending: AtomicU64,
    /// Told each time `pending` goes down.
    room: OnceLock<Arc<Room>>,
    counters: Counters,
    failure: watch::Sender<Option<Arc<StoreError>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    path: PathBuf,
    /// When the writer started its current batch (ms on [`Shared::clock`]), 0 while it waits
    /// for work: how long a write or flush has been stuck ([`Journal::watch_stalls`]).
    busy_since: AtomicU64,
    clock: Instant,
}

impl Shared {
    fn now_ms(&self) -> u64 {
        // Never 0 (0 means idle).
        self.clock.elapsed().as_millis() as u64 + 1
    }
}

#[derive(Default)]
struct Counters {
    batches: AtomicU64,
    flushes: AtomicU64,
    ops_written: AtomicU64,
    puts_cancelled: AtomicU64,
    apply_nanos: AtomicU64,
    flush_nanos: AtomicU64,
}

/// What a handle asks of the writer.
enum Command {
    /// One op with the bytes it adds to `pending`.
    One(Op, u64, Option<Durable>),
    /// Ops applied together, with their total weight.
    Group(Vec<Op>, u64, Option<Durable>),
    /// Runs once everything before it is durable.
    Barrier(Durable),
    /// Write what came before, then stop.
    Close,
}

impl Journal {
    /// Starts the single writer thread on an open sled store.
    pub fn start(store: &Store, config: JournalConfig) -> Result<Journal, StoreError> {
        let path = store.path().to_path_buf();
        let backend = SledBackend {
            tree: open_tree(store.db(), &path)?,
            flusher: store.flusher(),
            path: path.clone(),
        };
        Journal::start_on(Box::new(backend), path, config)
    }

    /// Starts the single writer thread on `backend`, the store at `path`.
    pub fn start_on(
        backend: Box<dyn Backend>,
        path: PathBuf,
        config: JournalConfig,
    ) -> Result<Journal, StoreError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (failure, _) = watch::channel(None);
        let shared = Arc::new(Shared {
            tx,
            pending: AtomicU64::new(0),
            room: OnceLock::new(),
            counters: Counters::default(),
            failure,
            writer: Mutex::new(None),
            path: path.clone(),
            busy_since: AtomicU64::new(0),
            clock: Instant::now(),
        });
        let writer = Writer {
            backend,
            rx,
            config,
            shared: Arc::downgrade(&shared),
            path: path.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("journal".into())
            .spawn(move || writer.run())
            .map_err(|source| StoreError::Spawn { path, source })?;
        *shared.writer.lock().unwrap_or_else(PoisonError::into_inner) = Some(handle);
        Ok(Journal { shared })
    }

    /// Queues a put; `on_durable` runs after a flush covering it, or when a later remove
    /// cancelled it.
    pub fn put(
        &self,
        space: Arc<str>,
        key: Bytes,
        value: impl Into<Value>,
        on_durable: Option<Durable>,
    ) {
        let value = value.into();
        let op = Op::Put { space, key, value };
        let weight = op.weight();
        self.submit(Command::One(op, weight, on_durable), weight);
    }

    /// Queues a remove. A remove of a key whose put is still queued cancels the put: nothing
    /// is written (unless an older value of the key is already stored, which is then removed),
    /// and the put's `on_durable` still runs.
    pub fn remove(&self, space: Arc<str>, key: Bytes, on_durable: Option<Durable>) {
        let op = Op::Remove { space, key };
        let weight = op.weight();
        self.submit(Command::One(op, weight, on_durable), weight);
    }

    /// Queues ops that take effect atomically: after a crash, either all of them or none are
    /// in the store. `on_durable` runs once they are durable.
    pub fn apply(&self, ops: Vec<Op>, on_durable: Option<Durable>) {
        let weight = ops.iter().map(Op::weight).sum();
        self.submit(Command::Group(ops, weight, on_durable), weight);
    }

    /// Runs `on_durable` once everything queued before it is durable.
    pub fn barrier(&self, on_durable: Durable) {
        self.submit(Command::Barrier(on_durable), 0);
    }

    /// Bytes queued but not yet durable (space, key and value lengths): the broker's flow
    /// control slows producers when this grows.
    pub fn pending_bytes(&self) -> u64 {
        self.shared.pending.load(Ordering::SeqCst)
    }

    /// From now on, wake producers waiting in `room` whenever queued bytes are written (the
    /// broker's memory limit counts them). Only the first room given is kept.
    pub fn wake_on_release(&self, room: Arc<Room>) {
        // A second room would be a wiring mistake; the first keeps working either way.
        let _ = self.shared.room.set(room);
    }

    /// Counters since the journal started.
    pub fn stats(&self) -> JournalStats {
        let c = &self.shared.counters;
        JournalStats {
            batches: c.batches.load(Ordering::Relaxed),
            flushes: c.flushes.load(Ordering::Relaxed),
            ops_written: c.ops_written.load(Ordering::Relaxed),
            puts_cancelled: c.puts_cancelled.load(Ordering::Relaxed),
            apply_time: Duration::from_nanos(c.apply_nanos.load(Ordering::Relaxed)),
            flush_time: Duration::from_nanos(c.flush_nanos.load(Ordering::Relaxed)),
        }
    }

    /// The error that stopped the writer, if one did.
    pub fn failure(&self) -> Option<Arc<StoreError>> {
        self.shared.failure.borrow().clone()
    }

    /// Stops the journal because another part of the store failed (the pager could not read):
    /// from the next batch on nothing is written and no callback runs, and [`Journal::failed`]
    /// resolves with `err`, so the broker stops saying why. The first failure is kept.
    pub fn fail(&self, err: StoreError) {
        let err = Arc::new(err);
        self.shared.failure.send_if_modified(|failure| {
            let first = failure.is_none();
            if first {
                *failure = Some(err);
            }
            first
        });
    }

    /// Resolves once the writer has failed (never, if it does not): the broker selects on this
    /// and stops, since no receipt can be sent any more.
    pub async fn failed(&self) -> Arc<StoreError> {
        let mut failure = self.shared.failure.subscribe();
        loop {
            if let Some(err) = failure.borrow_and_update().clone() {
                return err;
            }
            // The sender lives in `shared`, which `self` keeps alive, so this cannot end early;
            // if it ever did, waiting forever is still the right answer.
            if failure.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// How long the writer has been in its current batch (writing or flushing); `None` while
    /// it waits for work.
    pub fn busy_for(&self) -> Option<Duration> {
        match self.shared.busy_since.load(Ordering::SeqCst) {
            0 => None,
            since => Some(Duration::from_millis(
                self.shared.now_ms().saturating_sub(since),
            )),
        }
    }

    /// Fails the store once a batch has been stuck for longer than `limit`, and returns. A
    /// writer stuck inside sled (a deadlock like sled's issue 1412, seen under the scheduler
    /// benchmark) would otherwise leave a broker that answers lockd's pings but never receipts
    /// again; failing the store stops it, and lockd restarts it or hands over. A stalled
    /// filesystem is lockd's to catch first (its keepalive fence is shorter).
    pub async fn watch_stalls(self, limit: Duration) {
        let mut every = tokio::time::interval(limit / 10);
        loop {
            every.tick().await;
            if self.failure().is_some() {
                return;
            }
            if let Some(stuck) = self.busy_for().filter(|stuck| *stuck > limit) {
                error!(path = ?self.shared.path, ?stuck, "the journal's writer is stuck; failing the store");
                self.fail(StoreError::Stalled {
                    path: self.shared.path.clone(),
                    stuck,
                });
                return;
            }
        }
    }

    /// Stops accepting, writes and flushes everything queued before this call, and joins the
    /// writer thread. Blocks for that long: from async code, call it in `spawn_blocking`.
    /// Submissions from other handles after this call are dropped without their callbacks.
    pub fn close(self) -> Result<(), StoreError> {
        // A send error means the writer has already stopped; its failure, if any, is below.
        let _ = self.shared.tx.send(Command::Close);
        let handle = self
            .shared
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            handle.join().map_err(|_| StoreError::WriterPanicked {
                path: self.shared.path.clone(),
            })?;
        }
        match self.failure() {
            Some(cause) => Err(StoreError::WriterFailed {
                path: self.shared.path.clone(),
                cause,
            }),
            None => Ok(()),
        }
    }

    fn submit(&self, command: Command, weight: u64) {
        // SAFETY (ordering): the counter goes up before the writer can see the command, so the
        // writer's subtraction after the flush can never underflow it.
        self.shared.pending.fetch_add(weight, Ordering::SeqCst);
        if self.shared.tx.send(command).is_err() {
            // The writer has stopped (closed or failed; a failure is published): the command
            // and its callback are dropped, so no receipt claims durability.
            self.shared.pending.fetch_sub(weight, Ordering::SeqCst);
            if let Some(room) = self.shared.room.get() {
                room.released();
            }
            debug!("journal is closed; dropping a submission");
        }
    }
}

/// The writer thread's state.
struct Writer {
    backend: Box<dyn Backend>,
    rx: mpsc::UnboundedReceiver<Command>,
    config: JournalConfig,
    /// Weak, so that dropping every handle closes the channel and ends the thread.
    shared: std::sync::Weak<Shared>,
    path: PathBuf,
}

/// One group-commit batch being assembled.
#[derive(Default)]
struct Batch {
    writes: Vec<Write>,
    /// Encoded key -> index in `writes` of the last live write of that key.
    last: HashMap<Vec<u8>, usize>,
    callbacks: Vec<Durable>,
    /// Weight of the commands drained, to subtract from `pending` once durable.
    weight: u64,
    ops: usize,
    /// Submissions added so far, numbering [`Write::command`].
    commands: u64,
    cancelled: u64,
    close: bool,
}

/// One write of a batch; dead writes were overwritten or cancelled within the batch.
pub struct Write {
    /// The backend's key: the space's prefix and the caller's key (`encode_key`).
    pub key: Vec<u8>,
    /// `None`: a removal.
    pub value: Option<Value>,
    live: bool,
    /// The submission it came from: the live writes of one `apply` are written as one unit.
    command: u64,
    /// Whether it is its submission's only op (a put, a remove, or a one-op group).
    lone: bool,
    /// Whether a live write of the same key comes before it in the batch.
    follows_live: bool,
}

impl Writer {
    fn run(mut self) {
        loop {
            // Blocking here is the point of the thread; this is not an async context.
            let Some(first) = self.rx.blocking_recv() else {
                return; // every handle is gone and the queue is empty
            };
            self.mark_busy(true);
            let mut batch = Batch::default();
            let mut next = Some(first);
            while let Some(command) = next.take() {
                if let Err(err) = self.add(&mut batch, command) {
                    return self.fail(err);
                }
                if batch.close
                    || batch.weight >= self.config.max_batch_bytes
                    || batch.ops >= self.config.max_batch_ops
                {
                    break;
                }
                next = self.rx.try_recv().ok();
            }
            let close = batch.close;
            if self
                .shared
                .upgrade()
                .is_some_and(|shared| shared.failure.borrow().is_some())
            {
                // The store failed elsewhere (`Journal::fail`): nothing more is receipted.
                error!(path = ?self.path, "the store failed; the journal writes nothing more");
                return;
            }
            if let Err(err) = self.commit(batch) {
                return self.fail(err);
            }
            self.mark_busy(false);
            if close {
                return;
            }
        }
    }

    /// Records that a batch started (or ended), for the stall watchdog.
    fn mark_busy(&self, busy: bool) {
        if let Some(shared) = self.shared.upgrade() {
            let since = if busy { shared.now_ms() } else { 0 };
            shared.busy_since.store(since, Ordering::SeqCst);
        }
    }

    /// Adds one command to the batch, folding a remove into a queued put of the same key.
    fn add(&self, batch: &mut Batch, command: Command) -> Result<(), StoreError> {
        let (ops, weight, on_durable) = match command {
            Command::One(op, weight, on_durable) => (vec![op], weight, on_durable),
            Command::Group(ops, weight, on_durable) => (ops, weight, on_durable),
            Command::Barrier(on_durable) => (Vec::new(), 0, Some(on_durable)),
            Command::Close => {
                batch.close = true;
                return Ok(());
            }
        };
        batch.weight += weight;
        batch.ops += ops.len();
        batch.commands += 1;
        let command = batch.commands;
        let lone = ops.len() == 1;
        for op in ops {
            let (key, value) = match op {
                Op::Put { space, key, value } => (encode_key(&space, &key), Some(value)),
                Op::Remove { space, key } => (encode_key(&space, &key), None),
            };
            let mut live = true;
            let mut follows_live = false;
            if let Some(earlier) = batch.last.remove(&key) {
                let earlier = &mut batch.writes[earlier];
                // Only the last write of a key matters, but skipping an earlier one must not
                // split an `apply` group: a crash could otherwise keep part of the group. So
                // only a lone op, or one of this same group, gives way.
                if earlier.lone || earlier.command == command {
                    earlier.live = false;
                    follows_live = earlier.follows_live;
                    if value.is_none() && earlier.value.is_some() {
                        batch.cancelled += 1;
                        // The put never reaches sled; the remove must still be written if the
                        // key will be there without it: written by a live write earlier in
                        // this batch, or already stored (with no live write of the key before
                        // it in this batch, sled holds the key's state at this point).
                        live = follows_live || self.backend.contains(&key)?;
                    }
                } else {
                    follows_live = true;
                }
            }
            if live {
                batch.last.insert(key.clone(), batch.writes.len());
            }
            batch.writes.push(Write {
                key,
                value,
                live,
                command,
                lone,
                follows_live,
            });
        }
        batch.callbacks.extend(on_durable);
        Ok(())
    }

    /// Writes the batch (each `apply` group atomically), flushes once, then runs its callbacks
    /// in order.
    fn commit(&mut self, batch: Batch) -> Result<(), StoreError> {
        let started = Instant::now();
        let live: Vec<Write> = batch.writes.into_iter().filter(|w| w.live).collect();
        let written = live.len() as u64;
        let (mut applied, mut flushed) = (Duration::ZERO, Duration::ZERO);
        if written > 0 {
            if let Some(fence) = &self.config.fence {
                // Nothing of the batch is written, and none of its callbacks runs, unless the
                // fence could tell that no other epoch was claimed.
                fence.check()?;
            }
            for unit in live.chunk_by(|a, b| a.command == b.command) {
                self.backend.write_unit(unit)?;
            }
            applied = started.elapsed();
            // SAFETY (durability): callbacks (and so receipts) run only after this sync
            // returned Ok, and it started after every write of the batch was applied. A batch
            // with nothing to write needs no sync: every earlier batch was synced before its
            // callbacks ran.
            self.backend.sync()?;
            flushed = started.elapsed() - applied;
            if let Some(histogram) = &self.config.flush_seconds {
                histogram.observe(flushed.as_secs_f64());
            }
        }
        if let Some(shared) = self.shared.upgrade() {
            let c = &shared.counters;
            c.batches.fetch_add(1, Ordering::Relaxed);
            c.flushes
                .fetch_add(u64::from(written > 0), Ordering::Relaxed);
            c.ops_written.fetch_add(written, Ordering::Relaxed);
            c.puts_cancelled
                .fetch_add(batch.cancelled, Ordering::Relaxed);
            c.apply_nanos.fetch_add(nanos(applied), Ordering::Relaxed);
            c.flush_nanos.fetch_add(nanos(flushed), Ordering::Relaxed);
            // SAFETY (ordering): the counter drops before the callbacks run, so a caller woken
            // by its callback sees its bytes gone.
            shared.pending.fetch_sub(batch.weight, Ordering::SeqCst);
            if let Some(room) = shared.room.get() {
                room.released();
            }
        }
        for on_durable in batch.callbacks {
            on_durable();
        }
        Ok(())
    }

    /// Publishes the failure; dropping `self` then closes the queue, so later submissions and
    /// every callback not yet run are dropped.
    fn fail(self, err: StoreError) {
        error!(error = %err, path = ?self.path, "journal writer failed; no further write will be receipted");
        if let Some(shared) = self.shared.upgrade() {
            shared.failure.send_replace(Some(Arc::new(err)));
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn open_tree(db: &sled::Db, path: &Path) -> Result<sled::Tree, StoreError> {
    db.open_tree(JOURNAL_TREE)
        .map_err(|source| StoreError::Sled {
            path: path.to_path_buf(),
            action: "opening the journal tree",
            source,
        })
}

#[cfg(test)]
mod tests;
