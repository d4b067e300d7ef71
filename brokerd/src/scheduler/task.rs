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
//! Memory: at most [`CACHE_JOBS`] jobs (and [`CACHE_BYTES`] of them) are held; every job with a
//! key at or before `horizon` is held (or firing), later ones are only in the store and are read
//! a page at a time, off the task, as the cache runs low.

use super::clock::Clock;
use super::job::{DueKey, Job};
use super::store::{self, due_key, number, DUE, FIRED, FIRING, JOBS, NEW};
use crate::broker::Request;
use crate::journal::{Journal, Op, Recovered};
use crate::store::StoreError;
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::mpsc;
use tracing::{debug, error, info};

/// Jobs the cache holds at most.
pub const CACHE_JOBS: usize = 10_000;
/// Bytes of jobs the cache holds at most.
pub const CACHE_BYTES: usize = 64 << 20;
/// Deliveries fired together (one write of step 1).
const FIRE_BATCH: usize = 1024;

/// What the scheduler is told.
pub enum Command {
    /// A scheduled SEND, durable in the message store's [`NEW`].
    Add(Job),
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
    /// A page of jobs read from the store, after `after`; `true` if the store holds no more.
    Loaded(Result<(Vec<Job>, bool), Arc<StoreError>>),
}

/// A job whose delivery is being enqueued.
struct Firing {
    job: Job,
    /// A takeover found the delivery possibly handed out already.
    redelivered: bool,
}

/// Jobs added or removed while a page is being read, to settle once it arrives.
#[derive(Default)]
struct Refill {
    added: Vec<Job>,
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
    cache: BTreeMap<DueKey, Job>,
    cached_bytes: usize,
    /// `None`: every job is in the cache (or firing). `Some(k)`: jobs after `k` may be only in
    /// the store.
    horizon: Option<DueKey>,
    refill: Option<Refill>,
    firing: HashMap<Arc<str>, Firing>,
    /// Jobs a takeover moved from [`NEW`]: the broker may have queued them again.
    recovered_new: HashSet<Arc<str>>,
}

impl Scheduler {
    /// Reads what a takeover must finish and the first jobs due (blocking reads, off the async
    /// threads), and returns the scheduler ready to run.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        journal: Journal,
        view: Recovered,
        messages: Journal,
        messages_view: Recovered,
        broker: mpsc::Sender<Request>,
        commands: mpsc::UnboundedReceiver<Command>,
        me: mpsc::UnboundedSender<Command>,
        clock: Clock,
    ) -> Result<Scheduler, StoreError> {
        let reader = view.clone();
        let read = tokio::task::spawn_blocking(move || {
            let found = store::in_flight(&reader, &messages_view)?;
            let skip = found
                .firing
                .iter()
                .map(|(j, _)| Arc::clone(&j.id))
                .collect();
            let first = store::jobs_due(&reader, None, CACHE_JOBS, &skip)?;
            Ok::<_, StoreError>((found, first))
        })
        .await;
        let (found, (first, complete)) = match read {
            Ok(result) => result?,
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        };
        info!(
            new = found.new.len(),
            firing = found.firing.len(),
            cached = first.len(),
            complete,
            "scheduler recovered"
        );
        let mut scheduler = Scheduler {
            journal,
            view,
            messages,
            broker,
            commands,
            me,
            clock,
            cache: BTreeMap::new(),
            cached_bytes: 0,
            horizon: None,
            refill: None,
            firing: HashMap::new(),
            recovered_new: HashSet::new(),
        };
        scheduler.horizon = first.last().map(Job::due_key).filter(|_| !complete);
        for job in first {
            scheduler.hold(job);
        }
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
            scheduler.firing.insert(
                Arc::clone(&id),
                Firing {
                    job,
                    redelivered: !enqueued,
                },
            );
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

    /// Serves until the broker is gone.
    pub async fn run(mut self) {
        loop {
            let next = self.cache.keys().next().map(|(due, _)| *due);
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
            Command::Fired { id, n } => self.fired(id, n),
            Command::Intended(ids) => return self.enqueue(ids).await,
            Command::Stored { id, job, was_new } => {
                let table = if was_new { NEW } else { FIRED };
                self.messages.remove(table.into(), id_key(&id), None);
                if !was_new {
                    self.firing.remove(&id);
                }
                if let Some(job) = job {
                    self.place(job);
                }
            }
            Command::Loaded(result) => match result {
                Ok((jobs, complete)) => self.loaded(jobs, complete),
                Err(err) => {
                    error!(error = %err, "reading the scheduler's store failed; the broker stops");
                    self.journal.fail(StoreError::PageRead {
                        space: DUE.into(),
                        attempts: 1,
                        cause: err,
                    });
                    return false;
                }
            },
        }
        true
    }

    /// Moves a new job into the scheduler's store; it is placed once that is durable.
    fn add(&mut self, job: Job) {
        let ops = vec![
            Op::Put {
                space: JOBS.into(),
                key: id_key(&job.id),
                value: job.encode(),
            },
            Op::Put {
                space: DUE.into(),
                key: due_key(&job.due_key()),
                value: Bytes::new(),
            },
        ];
        let me = self.me.clone();
        let stored = Command::Stored {
            id: Arc::clone(&job.id),
            job: Some(job),
            was_new: true,
        };
        self.journal.apply(
            ops,
            Some(Box::new(move || {
                let _ = me.send(stored);
            })),
        );
    }

    /// Step 1 for every job due now (a batch at most).
    fn fire_due(&mut self) {
        let now = self.clock.now();
        let mut ops = Vec::new();
        let mut ids = Vec::new();
        while ids.len() < FIRE_BATCH {
            let Some(entry) = self.cache.first_entry() else {
                break;
            };
            if entry.key().0 > now {
                break;
            }
            let job = entry.remove();
            self.cached_bytes -= job.template.footprint();
            ops.push(Op::Put {
                space: FIRING.into(),
                key: id_key(&job.id),
                value: number(job.next.n),
            });
            ids.push(Arc::clone(&job.id));
            let id = Arc::clone(&job.id);
            self.firing.insert(
                id,
                Firing {
                    job,
                    redelivered: false,
                },
            );
        }
        if ids.is_empty() {
            return;
        }
        let me = self.me.clone();
        self.journal.apply(
            ops,
            Some(Box::new(move || {
                let _ = me.send(Command::Intended(ids));
            })),
        );
    }

    /// Step 2: has the broker enqueue each delivery with its marker. False once the broker is
    /// gone.
    async fn enqueue(&mut self, ids: Vec<Arc<str>>) -> bool {
        for id in ids {
            let Some(firing) = self.firing.get(&id) else {
                continue;
            };
            let n = firing.job.next.n;
            let msg = firing.job.delivery(n, firing.redelivered);
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

    /// Step 3: the job moves on to its next delivery, or is done.
    fn fired(&mut self, id: Arc<str>, n: u64) {
        let Some(firing) = self.firing.get(&id) else {
            return;
        };
        let mut job = firing.job.clone();
        debug_assert_eq!(job.next.n, n);
        let mut ops = vec![
            Op::Remove {
                space: DUE.into(),
                key: due_key(&job.due_key()),
            },
            Op::Remove {
                space: FIRING.into(),
                key: id_key(&id),
            },
        ];
        let next = match job.after(self.clock.now()) {
            Some(next) => {
                job.next = next;
                ops.push(Op::Put {
                    space: JOBS.into(),
                    key: id_key(&id),
                    value: job.encode(),
                });
                ops.push(Op::Put {
                    space: DUE.into(),
                    key: due_key(&job.due_key()),
                    value: Bytes::new(),
                });
                Some(job)
            }
            None => {
                ops.push(Op::Remove {
                    space: JOBS.into(),
                    key: id_key(&id),
                });
                None
            }
        };
        let me = self.me.clone();
        let stored = Command::Stored {
            id,
            job: next,
            was_new: false,
        };
        self.journal.apply(
            ops,
            Some(Box::new(move || {
                let _ = me.send(stored);
            })),
        );
    }

    /// A job whose stored state is durable: held if it falls within the horizon.
    fn place(&mut self, job: Job) {
        if let Some(refill) = &mut self.refill {
            if self.horizon.as_ref().is_some_and(|h| job.due_key() > *h) {
                refill.added.push(job);
                return;
            }
        }
        match &self.horizon {
            Some(horizon) if job.due_key() > *horizon => {}
            _ => self.hold(job),
        }
    }

    /// Puts a job in the cache, and drops the latest ones past the cache's bounds.
    fn hold(&mut self, job: Job) {
        self.cached_bytes += job.template.footprint();
        if let Some(old) = self.cache.insert(job.due_key(), job) {
            self.cached_bytes -= old.template.footprint();
        }
        while self.cache.len() > 1
            && (self.cache.len() > CACHE_JOBS || self.cached_bytes > CACHE_BYTES)
        {
            let (_, dropped) = self.cache.pop_last().expect("more than one");
            self.cached_bytes -= dropped.template.footprint();
            self.horizon = self.cache.keys().next_back().cloned();
        }
    }

    /// Reads the next page of jobs when the cache runs low and the store holds more.
    fn read_ahead(&mut self) {
        if self.refill.is_some() || self.cache.len() > CACHE_JOBS / 4 {
            return;
        }
        let Some(after) = self.horizon.clone() else {
            return;
        };
        self.refill = Some(Refill::default());
        let (view, me) = (self.view.clone(), self.me.clone());
        tokio::task::spawn_blocking(move || {
            let page = store::jobs_due(&view, Some(&after), CACHE_JOBS / 2, &HashSet::new());
            let _ = me.send(Command::Loaded(page.map_err(Arc::new)));
        });
    }

    /// A page arrived: hold it, move the horizon, and settle what was added meanwhile.
    fn loaded(&mut self, jobs: Vec<Job>, complete: bool) {
        let refill = self.refill.take().unwrap_or_default();
        self.horizon = match complete {
            true => None,
            false => jobs.last().map(Job::due_key).or(self.horizon.take()),
        };
        for job in jobs {
            if !self.firing.contains_key(&job.id) {
                self.hold(job);
            }
        }
        for job in refill.added {
            self.place(job);
        }
    }
}

/// A job id as a store key.
fn id_key(id: &str) -> Bytes {
    Bytes::copy_from_slice(id.as_bytes())
}
