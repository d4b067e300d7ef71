//! The scheduler's task: it owns the scheduler's store and a bounded cache of the jobs due
//! next, and has the broker enqueue each delivery when it falls due.
//!
//! Deliveries due together are fired as one batch (up to `FIRE_BATCH`), which goes through
//! four writes, two in each store, so that each delivery is enqueued exactly once whatever is
//! killed when (the stores cannot be written together):
//! 1. scheduler store: [`FIRING`] `batch -> [(id, n)]` (the deliveries are being enqueued);
//! 2. message store, one atomic group: every delivery of the batch, and [`FIRED`] `batch`;
//! 3. scheduler store, one group: each job moved on to its next delivery (or removed), its
//!    [`DUE`] entry moved, and [`FIRING`] `batch` removed;
//! 4. message store: [`FIRED`] `batch` removed.
//!
//! A takeover ([`store::in_flight`]) finishes what was under way: a batch in [`FIRING`] with
//! its [`FIRED`] marker (step 2 happened) only has its jobs move on; one without is enqueued
//! again, flagged redelivered (the broker may have handed a delivery to a consumer before its
//! write was durable). A marker left over after step 3 is removed. Scheduled SENDs
//! reach the scheduler the same way: the broker stores them in [`NEW`] (their RECEIPT, and a
//! COMMIT's, waits for that), the scheduler moves them into its store and then removes them.
//!
//! Memory: the jobs due next are held in a bounded [`Cache`]; the rest are read from the store a
//! page at a time, off the task. Removing a job (ActiveMQ's management topic, `ctl schedules
//! cancel`) that is being added or fired marks it, and the step that would keep it removes it.

use super::cache::{Cache, PAGE_JOBS};
use super::clock::Clock;
use super::db::View;
use super::job::Job;
use super::manage::{Action, Range};
use super::store::{self, batch_key, put, remove, Batch, DUE, FIRED, FIRING, NEW};
use crate::broker::message::Message;
use crate::broker::{OnDurable, Request};
use crate::journal::{Journal, Op, Recovered};
use crate::memory::Gauge;
use crate::store::{off_async, StoreError};
use bytes::Bytes;
use shared_proto::schedules::ScheduledJob;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info};

/// Deliveries fired together (one write of step 1, one group of step 2).
const FIRE_BATCH: usize = 1024;
/// Batches in flight (steps 1 to 3) at most: enough to keep both stores writing, few enough
/// that each group stays small (a large one holds up every read of either store while sled
/// writes it; measured: 8 or 16, or counting only steps 1 and 2, make a burst slower).
const BATCHES_IN_FLIGHT: usize = 4;
/// Jobs read from the store at once by a listing, a browse or a removal.
const PAGE: usize = 1000;

/// Which jobs to remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    /// The job with this id.
    Job(String),
    /// Every job, or those due within the range.
    All(Option<Range>),
}

/// What the scheduler is told.
pub enum Command {
    /// A scheduled SEND, durable in the message store's [`NEW`], counted in the backlog gauge
    /// until it is in the scheduler's store.
    Add(Job),
    /// A SEND to the management topic; `done` (its receipt) runs once it took effect.
    Manage {
        action: Action,
        done: Option<OnDurable>,
    },
    /// Up to `limit` pending jobs, in due order.
    List {
        limit: usize,
        reply: oneshot::Sender<Result<Vec<ScheduledJob>, Arc<StoreError>>>,
    },
    /// Removes jobs; answers how many once that is durable.
    Remove {
        which: Removal,
        reply: oneshot::Sender<Result<usize, Arc<StoreError>>>,
    },
    /// A new job is durable in the scheduler's store.
    Added(Job),
    /// Step 1 of this batch is durable: have the broker enqueue its deliveries.
    Intended(u64),
    /// Step 2 of this batch is durable.
    Fired(u64),
    /// Step 3 of this batch is durable: each of its jobs, and where it goes on (`None`: done).
    Moved {
        batch: u64,
        jobs: Vec<(Arc<str>, Option<Job>)>,
    },
    /// A page of jobs read from the store for the cache; `true` if the store holds no more.
    Loaded(Result<(Vec<Job>, bool), Arc<StoreError>>),
}

/// A job whose delivery is being enqueued (in one batch).
struct Firing {
    job: Job,
    /// A takeover found the delivery possibly handed out already.
    redelivered: bool,
    /// Removed meanwhile: step 3 removes it instead of moving it on.
    cancelled: bool,
}

/// A job being moved into the scheduler's store.
struct Adding {
    due: u64,
    /// Removed meanwhile: it is removed again once stored.
    cancelled: bool,
    /// Counted in the backlog gauge (a job the broker handed over; not one a takeover found).
    counted: bool,
}

/// The ids of the jobs fired in each batch in flight.
type Batches = HashMap<u64, Vec<Arc<str>>>;

/// What the scheduler needs to run.
pub struct Parts {
    /// The scheduler's store and a read view of it.
    pub journal: Journal,
    pub view: View,
    /// The message store and a read view of it.
    pub messages: Journal,
    pub messages_view: Recovered,
    pub broker: mpsc::Sender<Request>,
    pub commands: mpsc::UnboundedReceiver<Command>,
    pub me: mpsc::UnboundedSender<Command>,
    pub clock: Clock,
    /// The broker's [`crate::broker::Broker::scheduling`] gauge: new jobs count in it until
    /// they are in the scheduler's store.
    pub backlog: Gauge,
}

/// The scheduler task's state.
pub struct Scheduler {
    journal: Journal,
    view: View,
    /// The message store, for removing [`NEW`] entries and [`FIRED`] markers.
    messages: Journal,
    broker: mpsc::Sender<Request>,
    commands: mpsc::UnboundedReceiver<Command>,
    me: mpsc::UnboundedSender<Command>,
    clock: Clock,
    backlog: Gauge,
    cache: Cache,
    firing: HashMap<Arc<str>, Firing>,
    batches: Batches,
    /// The last batch number given out.
    last_batch: u64,
    /// Jobs being moved into the scheduler's store.
    adding: HashMap<Arc<str>, Adding>,
    /// Jobs a takeover moved from [`NEW`]: the broker may have queued them again.
    recovered_new: HashSet<Arc<str>>,
}

impl Scheduler {
    /// Reads what a takeover must finish and the first jobs due (blocking reads, off the async
    /// threads), and returns the scheduler ready to run.
    pub async fn start(parts: Parts) -> Result<Scheduler, StoreError> {
        let (reader, messages_view) = (parts.view.clone(), parts.messages_view);
        let (found, (first, complete)) = off_async(move || {
            let found = store::in_flight(&reader, &messages_view)?;
            let skip = found
                .firing
                .iter()
                .flat_map(|b| b.jobs.iter().map(|job| Arc::clone(&job.id)))
                .collect();
            let first = store::jobs_due(&reader, None, u64::MAX, PAGE_JOBS, &skip)?;
            Ok::<_, StoreError>((found, first))
        })
        .await?;
        info!(
            new = found.new.len(),
            firing = found.firing.len(),
            cached = first.len(),
            complete,
            "scheduler recovered"
        );
        let mut scheduler = Scheduler {
            journal: parts.journal,
            view: parts.view,
            messages: parts.messages,
            broker: parts.broker,
            commands: parts.commands,
            me: parts.me,
            clock: parts.clock,
            backlog: parts.backlog,
            cache: Cache::new(first, complete),
            firing: HashMap::new(),
            batches: HashMap::new(),
            last_batch: found.last_batch,
            adding: HashMap::new(),
            recovered_new: HashSet::new(),
        };
        for id in found.moved {
            scheduler.messages.remove(NEW.into(), id_key(&id), None);
        }
        for batch in found.stale_markers {
            scheduler
                .messages
                .remove(FIRED.into(), batch_key(batch), None);
        }
        for job in found.new {
            scheduler.recovered_new.insert(Arc::clone(&job.id));
            scheduler.add(job, false);
        }
        for found in found.firing {
            let batch = found.batch;
            scheduler.hand(batch, found.jobs, !found.enqueued);
            if found.enqueued {
                scheduler.enqueued(batch);
            } else if !scheduler.enqueue(batch).await {
                break;
            }
        }
        Ok(scheduler)
    }

    /// Serves until the broker is gone or the store fails.
    pub async fn run(mut self) {
        loop {
            let next = (self.cache).next_wake(self.batches.len() < BATCHES_IN_FLIGHT);
            let wake = self.clock.instant_of(next.unwrap_or(u64::MAX));
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(command) => {
                        if !self.handle(command).await {
                            return;
                        }
                    }
                    None => return,
                },
                () = tokio::time::sleep_until(wake), if next.is_some() => self.fire_due(),
            }
            self.read_ahead();
        }
    }

    /// Handles one command; false once the scheduler cannot go on.
    async fn handle(&mut self, command: Command) -> bool {
        match command {
            Command::Add(job) => {
                if self.recovered_new.remove(&job.id) {
                    self.backlog.sub(job.template.footprint());
                } else {
                    self.add(job, true);
                }
            }
            Command::Added(job) => self.added(job),
            Command::Manage { action, done } => return self.manage(action, done).await,
            Command::List { limit, reply } => {
                let listed = self.list(limit).await;
                let ok = listed.is_ok();
                let _ = reply.send(listed);
                return ok;
            }
            Command::Remove { which, reply } => {
                let (durable, removed) = oneshot::channel();
                let done = Box::new(move || {
                    let _ = durable.send(());
                });
                match self.remove(which, done).await {
                    Ok(count) => {
                        // Answered once the removals are durable (never, if the store fails).
                        tokio::spawn(async move {
                            if removed.await.is_ok() {
                                let _ = reply.send(Ok(count));
                            }
                        });
                    }
                    Err(err) => {
                        let _ = reply.send(Err(Arc::clone(&err)));
                        return self.failed(err);
                    }
                }
            }
            Command::Intended(batch) => return self.enqueue(batch).await,
            Command::Fired(batch) => self.enqueued(batch),
            Command::Moved { batch, jobs } => self.moved(batch, jobs),
            Command::Loaded(result) => match result {
                Ok((jobs, complete)) => {
                    let (firing, adding) = (&self.firing, &self.adding);
                    let busy = |id: &str| firing.contains_key(id) || adding.contains_key(id);
                    self.cache.loaded(jobs, complete, busy, self.clock.now());
                }
                Err(err) => return self.failed(err),
            },
        }
        true
    }

    /// Stops the broker: the scheduler's store cannot be read.
    fn failed(&self, err: Arc<StoreError>) -> bool {
        error!(error = %err, "reading the scheduler's store failed; the broker stops");
        self.journal.fail(StoreError::PageRead {
            space: DUE.into(),
            attempts: 1,
            cause: err,
        });
        false
    }

    /// Moves a new job into the scheduler's store; it is placed once that is durable.
    fn add(&mut self, job: Job, counted: bool) {
        let ops = store::inserted(&job);
        let adding = Adding {
            due: job.next.due,
            cancelled: false,
            counted,
        };
        self.adding.insert(Arc::clone(&job.id), adding);
        self.apply(ops, Command::Added(job));
    }

    /// Writes `ops` to the scheduler's store; `then` comes back once they are durable.
    fn apply(&self, ops: Vec<Op>, then: Command) {
        let me = self.me.clone();
        self.journal.apply(
            ops,
            Some(Box::new(move || {
                let _ = me.send(then);
            })),
        );
    }

    /// A new job is durable in the scheduler's store: its [`NEW`] entry goes, and it is placed
    /// (or removed again, if it was removed meanwhile).
    fn added(&mut self, job: Job) {
        self.messages.remove(NEW.into(), id_key(&job.id), None);
        let adding = self.adding.remove(&job.id);
        if adding.as_ref().is_some_and(|a| a.counted) {
            self.backlog.sub(job.template.footprint());
        }
        if adding.is_some_and(|a| a.cancelled) {
            self.journal.apply(store::removed(&job.due_key()), None);
        } else {
            self.cache.place(job, self.clock.now());
        }
    }

    /// Takes `jobs` in hand as batch `batch`.
    fn hand(&mut self, batch: u64, jobs: Vec<Job>, redelivered: bool) {
        let mut ids = Vec::with_capacity(jobs.len());
        for job in jobs {
            let id = Arc::clone(&job.id);
            let firing = Firing {
                job,
                redelivered,
                cancelled: false,
            };
            self.firing.insert(Arc::clone(&id), firing);
            ids.push(id);
        }
        self.last_batch = self.last_batch.max(batch);
        self.batches.insert(batch, ids);
    }

    /// Step 1 for the jobs due now (a batch at most), unless enough batches are in flight.
    fn fire_due(&mut self) {
        if self.batches.len() >= BATCHES_IN_FLIGHT {
            return;
        }
        let due = self.cache.take_due(self.clock.now(), FIRE_BATCH);
        if due.is_empty() {
            return;
        }
        let batch = self.last_batch + 1;
        let record = Batch(due.iter().map(|j| (Arc::clone(&j.id), j.next.n)).collect());
        self.hand(batch, due, false);
        let ops = vec![put(FIRING, batch_key(batch), record.encode())];
        self.apply(ops, Command::Intended(batch));
    }

    /// Step 2: has the broker enqueue the batch's deliveries with its marker. False once the
    /// broker is gone.
    async fn enqueue(&mut self, batch: u64) -> bool {
        let now = self.clock.now();
        let deliveries: Vec<Message> = (self.batches.get(&batch).into_iter().flatten())
            .filter_map(|id| self.firing.get(id))
            .filter(|firing| !firing.cancelled)
            .map(|f| f.job.delivery(f.job.next.n, f.redelivered, now))
            .collect();
        if deliveries.is_empty() {
            self.enqueued(batch);
            return true;
        }
        let me = self.me.clone();
        let request = Request::Fire {
            batch,
            deliveries,
            done: Box::new(move || {
                let _ = me.send(Command::Fired(batch));
            }),
        };
        if self.broker.send(request).await.is_err() {
            debug!("the broker is gone; the scheduler stops");
            return false;
        }
        true
    }

    /// Step 2 of a batch is durable (or was not needed): step 3, each of its jobs moves on to
    /// its next delivery, or is done (or removed).
    fn enqueued(&mut self, batch: u64) {
        let Some(ids) = self.batches.get(&batch) else {
            return;
        };
        let now = self.clock.now();
        let mut ops = vec![remove(FIRING, batch_key(batch))];
        let mut jobs = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(firing) = self.firing.get(id) else {
                continue;
            };
            let old = firing.job.due_key();
            match firing.job.after(now).filter(|_| !firing.cancelled) {
                Some(next) => {
                    let mut job = firing.job.clone();
                    job.next = next;
                    ops.extend(store::moved(&old, &job));
                    jobs.push((Arc::clone(id), Some(job)));
                }
                None => {
                    ops.extend(store::removed(&old));
                    jobs.push((Arc::clone(id), None));
                }
            }
        }
        self.apply(ops, Command::Moved { batch, jobs });
    }

    /// Step 3 is durable: step 4, and each job that goes on is placed (or removed, if it was
    /// removed meanwhile).
    fn moved(&mut self, batch: u64, jobs: Vec<(Arc<str>, Option<Job>)>) {
        self.messages.remove(FIRED.into(), batch_key(batch), None);
        self.batches.remove(&batch);
        let now = self.clock.now();
        let mut removals = Vec::new();
        for (id, job) in jobs {
            let cancelled = self.firing.remove(&id).is_some_and(|f| f.cancelled);
            match job {
                Some(job) if cancelled => removals.extend(store::removed(&job.due_key())),
                Some(job) => self.cache.place(job, now),
                None => {}
            }
        }
        if !removals.is_empty() {
            self.journal.apply(removals, None);
        }
    }

    /// Has the cache's next page read, off the task, when it runs low.
    fn read_ahead(&mut self) {
        let Some(after) = self.cache.wants_page(self.clock.now()) else {
            return;
        };
        let (view, me) = (self.view.clone(), self.me.clone());
        tokio::task::spawn_blocking(move || {
            let none = HashSet::new();
            let page = store::jobs_due(&view, Some(&after), u64::MAX, PAGE_JOBS, &none);
            let _ = me.send(Command::Loaded(page.map_err(Arc::new)));
        });
    }

    /// Waits until every write submitted so far is in the store, so that a listing, a browse
    /// or a removal sees every job added before it was asked for.
    async fn settle(&self) {
        let (done, settled) = oneshot::channel();
        self.journal.barrier(Box::new(move || {
            let _ = done.send(());
        }));
        let _ = settled.await;
    }

    /// Reads a page of jobs from the store, off the task.
    async fn page(
        &self,
        after: Option<(u64, Arc<str>)>,
        range: Option<Range>,
    ) -> Result<(Vec<Job>, bool), Arc<StoreError>> {
        let view = self.view.clone();
        let (from, until) = range.unwrap_or((0, u64::MAX));
        let after = after.unwrap_or_else(|| (from, Arc::from("")));
        off_async(move || store::jobs_due(&view, Some(&after), until, PAGE, &HashSet::new()))
            .await
            .map_err(Arc::new)
    }

    /// Up to `limit` jobs, in due order.
    async fn list(&self, limit: usize) -> Result<Vec<ScheduledJob>, Arc<StoreError>> {
        self.settle().await;
        let mut listed = Vec::new();
        let mut after = None;
        while listed.len() < limit {
            let (jobs, complete) = self.page(after.take(), None).await?;
            after = jobs.last().map(Job::due_key);
            listed.extend(
                jobs.iter()
                    .take(limit - listed.len())
                    .map(|job| ScheduledJob {
                        id: job.id.to_string(),
                        destination: job.template.destination.to_string(),
                        next_due_unix_ms: job.next.due,
                        remaining: job.schedule.repeat - job.next.index,
                        cron: job.schedule.cron.as_ref().map(ToString::to_string),
                    }),
            );
            if complete || after.is_none() {
                break;
            }
        }
        Ok(listed)
    }

    /// A management SEND; false once the scheduler cannot go on.
    async fn manage(&mut self, action: Action, done: Option<OnDurable>) -> bool {
        let done = done.unwrap_or_else(|| Box::new(|| {}));
        let result = match action {
            Action::Browse { reply_to, range } => self.browse(&reply_to, range, done).await,
            Action::Remove(id) => self.remove(Removal::Job(id), done).await.map(drop),
            Action::RemoveAll(range) => self.remove(Removal::All(range), done).await.map(drop),
        };
        match result {
            Ok(()) => true,
            Err(err) => self.failed(err),
        }
    }

    /// Sends a copy of each job (due within `range`) to `reply_to`, as ActiveMQ's BROWSE does.
    async fn browse(
        &mut self,
        reply_to: &str,
        range: Option<Range>,
        done: OnDurable,
    ) -> Result<(), Arc<StoreError>> {
        self.settle().await;
        let mut after = None;
        loop {
            let (jobs, complete) = self.page(after.take(), range).await?;
            after = jobs.last().map(Job::due_key);
            for job in jobs {
                let msg = job.browse_copy(reply_to);
                if self.broker.send(Request::Publish { msg }).await.is_err() {
                    return Ok(());
                }
            }
            if complete || after.is_none() {
                break;
            }
        }
        done();
        Ok(())
    }

    /// Removes jobs: from the cache and the store, or, for one being added or fired, by
    /// marking it. `done` runs once the removals are durable. Returns how many were removed.
    async fn remove(&mut self, which: Removal, done: OnDurable) -> Result<usize, Arc<StoreError>> {
        self.settle().await;
        let (removed, ops) = match which {
            Removal::Job(id) => self.remove_job(&id).await?,
            Removal::All(range) => self.remove_all(range).await?,
        };
        if ops.is_empty() {
            self.journal.barrier(done);
        } else {
            self.journal.apply(ops, Some(done));
        }
        info!(removed, "scheduled jobs removed");
        Ok(removed)
    }

    /// Marks `self`'s in-hand job `id` removed, if it is being added or fired: true if it was
    /// in hand (counting it once).
    fn cancel_in_hand(&mut self, id: &str, removed: &mut usize) -> bool {
        let cancelled = match (self.adding.get_mut(id), self.firing.get_mut(id)) {
            (Some(adding), _) => &mut adding.cancelled,
            (None, Some(firing)) => &mut firing.cancelled,
            (None, None) => return false,
        };
        *removed += usize::from(!*cancelled);
        *cancelled = true;
        true
    }

    /// Removes job `id`: how many (0 or 1), and the writes still to submit.
    async fn remove_job(&mut self, id: &str) -> Result<(usize, Vec<Op>), Arc<StoreError>> {
        let mut removed = 0;
        if self.cancel_in_hand(id, &mut removed) {
            return Ok((removed, Vec::new()));
        }
        let (view, key) = (self.view.clone(), id.to_owned());
        let job = off_async(move || store::job(&view, key.as_bytes()))
            .await
            .map_err(Arc::new)?;
        let Some(job) = job else {
            return Ok((0, Vec::new()));
        };
        self.cache.remove(&job.id);
        Ok((1, store::removed(&job.due_key())))
    }

    /// Removes every job, or those due within `range`: how many, and the writes still to
    /// submit (full pages are submitted as they come).
    async fn remove_all(
        &mut self,
        range: Option<Range>,
    ) -> Result<(usize, Vec<Op>), Arc<StoreError>> {
        let within = |due: u64| range.is_none_or(|(from, to)| from <= due && due <= to);
        let mut removed = 0;
        let in_hand: Vec<Arc<str>> = (self.adding.iter().map(|(id, a)| (id, a.due)))
            .chain(self.firing.iter().map(|(id, f)| (id, f.job.next.due)))
            .filter(|(_, due)| within(*due))
            .map(|(id, _)| Arc::clone(id))
            .collect();
        for id in in_hand {
            self.cancel_in_hand(&id, &mut removed);
        }
        let mut ops = Vec::new();
        let mut after = None;
        loop {
            let (jobs, complete) = self.page(after.take(), range).await?;
            after = jobs.last().map(Job::due_key);
            for job in jobs {
                if self.firing.contains_key(&job.id) || self.adding.contains_key(&job.id) {
                    continue;
                }
                self.cache.remove(&job.id);
                ops.extend(store::removed(&job.due_key()));
                removed += 1;
            }
            if ops.len() >= PAGE {
                self.journal.apply(std::mem::take(&mut ops), None);
            }
            if complete || after.is_none() {
                return Ok((removed, ops));
            }
        }
    }
}

/// A job id as a store key.
fn id_key(id: &str) -> Bytes {
    Bytes::copy_from_slice(id.as_bytes())
}
