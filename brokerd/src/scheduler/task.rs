//! The scheduler's task: it owns the scheduler's store and a bounded cache of the jobs due
//! next, and has the broker enqueue each delivery when it falls due.
//!
//! A delivery goes through four writes, two in each store, so that it is enqueued exactly once
//! whatever is killed when (the stores cannot be written together):
//! 1. scheduler store: [`FIRING`] `id -> n` (the delivery is being enqueued);
//! 2. message store, one atomic group: the message, and [`FIRED`] `id -> n`;
//! 3. scheduler store, one group: the job moved on to its next delivery (or removed), its
//!    [`DUE`] entry moved, [`FIRING`] removed;
//! 4. message store: [`FIRED`] removed.
//!
//! A takeover ([`store::in_flight`]) finishes what was under way: a delivery in [`FIRING`] whose
//! [`FIRED`] marker says `n` was enqueued (step 2 happened) and its job only moves on; one
//! without is enqueued again, flagged redelivered (the broker may have handed it to a consumer
//! before its write was durable). A marker left over after step 3 is removed. Scheduled SENDs
//! reach the scheduler the same way: the broker stores them in [`NEW`] (their RECEIPT, and a
//! COMMIT's, waits for that), the scheduler moves them into its store and then removes them.
//!
//! Memory: the jobs due next are held in a bounded [`Cache`]; the rest are read from the store a
//! page at a time, off the task. Removing a job (ActiveMQ's management topic, `ctl schedules
//! cancel`) that is being added or fired marks it, and the step that would keep it removes it.

use super::cache::{Cache, PAGE_JOBS};
use super::clock::Clock;
use super::job::Job;
use super::manage::{Action, Range};
use super::store::{self, number, put, remove, DUE, FIRED, FIRING, NEW};
use crate::broker::{OnDurable, Request};
use crate::journal::{Journal, Op, Recovered};
use crate::store::{off_async, StoreError};
use bytes::Bytes;
use shared_proto::schedules::ScheduledJob;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info};

/// Deliveries fired together (one write of step 1).
const FIRE_BATCH: usize = 1024;
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
    /// A scheduled SEND, durable in the message store's [`NEW`].
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
    /// Step 2 of delivery `n` of job `id` is durable.
    Fired { id: Arc<str>, n: u64 },
    /// Step 1 is durable for these jobs: have the broker enqueue their deliveries.
    Intended(Vec<Arc<str>>),
    /// Step 3 is durable (or a new job is in the scheduler's store): the job, if it goes on.
    Stored {
        id: Arc<str>,
        job: Option<Job>,
        was_new: bool,
    },
    /// A page of jobs read from the store for the cache; `true` if the store holds no more.
    Loaded(Result<(Vec<Job>, bool), Arc<StoreError>>),
}

/// A job whose delivery is being enqueued.
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
}

/// What the scheduler needs to run.
pub struct Parts {
    /// The scheduler's store and a read view of it.
    pub journal: Journal,
    pub view: Recovered,
    /// The message store and a read view of it.
    pub messages: Journal,
    pub messages_view: Recovered,
    pub broker: mpsc::Sender<Request>,
    pub commands: mpsc::UnboundedReceiver<Command>,
    pub me: mpsc::UnboundedSender<Command>,
    pub clock: Clock,
}

/// The scheduler task's state.
pub struct Scheduler {
    journal: Journal,
    view: Recovered,
    /// The message store, for removing [`NEW`] entries and [`FIRED`] markers.
    messages: Journal,
    broker: mpsc::Sender<Request>,
    commands: mpsc::UnboundedReceiver<Command>,
    me: mpsc::UnboundedSender<Command>,
    clock: Clock,
    cache: Cache,
    firing: HashMap<Arc<str>, Firing>,
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
                .map(|(j, _)| Arc::clone(&j.id))
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
            cache: Cache::new(first, complete),
            firing: HashMap::new(),
            adding: HashMap::new(),
            recovered_new: HashSet::new(),
        };
        for id in found.moved {
            scheduler.messages.remove(NEW.into(), id_key(&id), None);
        }
        for id in found.stale_markers {
            scheduler.messages.remove(FIRED.into(), id_key(&id), None);
        }
        for job in found.new {
            scheduler.recovered_new.insert(Arc::clone(&job.id));
            scheduler.add(job);
        }
        let mut again = Vec::new();
        for (job, enqueued) in found.firing {
            let (id, n) = (Arc::clone(&job.id), job.next.n);
            let firing = Firing {
                job,
                redelivered: !enqueued,
                cancelled: false,
            };
            scheduler.firing.insert(Arc::clone(&id), firing);
            if enqueued {
                scheduler.fired(id, n);
            } else {
                again.push(id);
            }
        }
        if !again.is_empty() {
            scheduler.enqueue(again).await;
        }
        Ok(scheduler)
    }

    /// Serves until the broker is gone or the store fails.
    pub async fn run(mut self) {
        loop {
            let next = self.cache.next_wake();
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
                if !self.recovered_new.remove(&job.id) {
                    self.add(job);
                }
            }
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
            Command::Fired { id, n } => self.fired(id, n),
            Command::Intended(ids) => return self.enqueue(ids).await,
            Command::Stored { id, job, was_new } => self.stored(id, job, was_new),
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
    fn add(&mut self, job: Job) {
        let ops = store::inserted(&job);
        let adding = Adding {
            due: job.next.due,
            cancelled: false,
        };
        self.adding.insert(Arc::clone(&job.id), adding);
        self.apply(
            ops,
            Command::Stored {
                id: Arc::clone(&job.id),
                job: Some(job),
                was_new: true,
            },
        );
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

    /// A job's stored state is durable (a new job, or one whose delivery was enqueued).
    fn stored(&mut self, id: Arc<str>, job: Option<Job>, was_new: bool) {
        let cancelled = if was_new {
            self.messages.remove(NEW.into(), id_key(&id), None);
            self.adding.remove(&id).is_some_and(|a| a.cancelled)
        } else {
            self.messages.remove(FIRED.into(), id_key(&id), None);
            self.firing.remove(&id).is_some_and(|f| f.cancelled)
        };
        match job {
            Some(job) if cancelled => self.journal.apply(store::removed(&job.due_key()), None),
            Some(job) => self.cache.place(job, self.clock.now()),
            None => {}
        }
    }

    /// Step 1 for every job due now (a batch at most).
    fn fire_due(&mut self) {
        let due = self.cache.take_due(self.clock.now(), FIRE_BATCH);
        if due.is_empty() {
            return;
        }
        let mut ops = Vec::with_capacity(due.len());
        let mut ids = Vec::with_capacity(due.len());
        for job in due {
            ops.push(put(FIRING, job.id.as_bytes(), number(job.next.n)));
            ids.push(Arc::clone(&job.id));
            let firing = Firing {
                job,
                redelivered: false,
                cancelled: false,
            };
            self.firing
                .insert(Arc::clone(ids.last().expect("pushed")), firing);
        }
        self.apply(ops, Command::Intended(ids));
    }

    /// Step 2: has the broker enqueue each delivery with its marker. False once the broker is
    /// gone.
    async fn enqueue(&mut self, ids: Vec<Arc<str>>) -> bool {
        for id in ids {
            let Some(firing) = self.firing.get(&id) else {
                continue;
            };
            let n = firing.job.next.n;
            if firing.cancelled {
                self.fired(id, n);
                continue;
            }
            let msg = firing.job.delivery(n, firing.redelivered, self.clock.now());
            let me = self.me.clone();
            let fired = Arc::clone(&id);
            let request = Request::Fire {
                job: id,
                n,
                msg,
                done: Box::new(move || {
                    let _ = me.send(Command::Fired { id: fired, n });
                }),
            };
            if self.broker.send(request).await.is_err() {
                debug!("the broker is gone; the scheduler stops");
                return false;
            }
        }
        true
    }

    /// Step 3: the job moves on to its next delivery, or is done (or was removed).
    fn fired(&mut self, id: Arc<str>, n: u64) {
        let Some(firing) = self.firing.get(&id) else {
            return;
        };
        let mut job = firing.job.clone();
        debug_assert_eq!(job.next.n, n);
        let next = job.after(self.clock.now()).filter(|_| !firing.cancelled);
        let old = job.due_key();
        let mut ops = vec![remove(FIRING, id.as_bytes())];
        let next = match next {
            Some(next) => {
                job.next = next;
                ops.extend(store::moved(&old, &job));
                Some(job)
            }
            None => {
                ops.extend(store::removed(&old));
                None
            }
        };
        self.apply(
            ops,
            Command::Stored {
                id,
                job: next,
                was_new: false,
            },
        );
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
