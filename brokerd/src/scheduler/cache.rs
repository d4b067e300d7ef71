//! The scheduler's bounded cache of the jobs due next.
//!
//! It holds at most [`CACHE_JOBS`] jobs and [`CACHE_BYTES`] of them. Every job whose key is at or
//! before `horizon` is held (or is being fired or added, which the task tracks); later ones are
//! only in the store, and come in a page at a time, read off the task, as the cache runs low or
//! as they come within reading-ahead distance of their due time.
//! While a page is being read, jobs placed beyond the old horizon and jobs removed are noted,
//! and settled when the page arrives: the page may have missed the first and still hold the
//! second.

use super::job::{DueKey, Job};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// Jobs the cache holds at most.
pub const CACHE_JOBS: usize = 50_000;
/// Bytes of jobs the cache holds at most.
pub const CACHE_BYTES: usize = 64 << 20;
/// Jobs read from the store at once (a takeover reads one page before it fires anything).
pub const PAGE_JOBS: usize = 10_000;
/// The store's next jobs are read ahead, while there is room, once they are due this soon:
/// a burst due at one time is then in memory when it falls due.
const READ_AHEAD_MS: u64 = 10_000;

/// What changed while a page was being read.
#[derive(Default)]
struct Refill {
    placed: Vec<Job>,
    removed: HashSet<Arc<str>>,
}

/// The jobs due next.
#[derive(Default)]
pub struct Cache {
    jobs: BTreeMap<DueKey, Job>,
    /// Each held job's key, by id (a removal names only the id).
    keys: HashMap<Arc<str>, DueKey>,
    bytes: usize,
    /// `None`: every job is held. `Some(k)`: jobs after `k` may be only in the store.
    horizon: Option<DueKey>,
    refill: Option<Refill>,
}

impl Cache {
    /// A cache holding the first jobs due; `complete` if the store has no others.
    pub fn new(first: Vec<Job>, complete: bool) -> Cache {
        let mut cache = Cache {
            horizon: first.last().map(Job::due_key).filter(|_| !complete),
            ..Cache::default()
        };
        for job in first {
            cache.hold(job);
        }
        cache
    }

    /// When the next held job is due.
    pub fn next_due(&self) -> Option<u64> {
        self.jobs.keys().next().map(|(due, _)| *due)
    }

    /// Takes out the jobs due at `now`, `limit` at most, in due order.
    pub fn take_due(&mut self, now: u64, limit: usize) -> Vec<Job> {
        let mut due = Vec::new();
        while due.len() < limit {
            let Some(entry) = self.jobs.first_entry() else {
                break;
            };
            if entry.key().0 > now {
                break;
            }
            let job = entry.remove();
            self.keys.remove(&job.id);
            self.bytes -= job.template.footprint();
            due.push(job);
        }
        due
    }

    /// A job whose stored state is durable: held if it falls within the horizon.
    pub fn place(&mut self, job: Job, now: u64) {
        let beyond = self.horizon.as_ref().is_some_and(|h| job.due_key() > *h);
        match &mut self.refill {
            Some(refill) if beyond => refill.placed.push(job),
            _ if beyond => {}
            _ => {
                self.hold(job);
                self.trim(now);
            }
        }
    }

    /// Takes job `id` out, if held; a page being read will not bring it back.
    pub fn remove(&mut self, id: &str) -> Option<Job> {
        if let Some(refill) = &mut self.refill {
            refill.removed.insert(id.into());
        }
        let key = self.keys.remove(id)?;
        let job = self.jobs.remove(&key)?;
        self.bytes -= job.template.footprint();
        Some(job)
    }

    /// When to look at the cache again: when its first job falls due (if `firing`: the caller
    /// may fire more now), or when the store's next jobs come within reading-ahead distance
    /// (and there is room for them).
    pub fn next_wake(&self, firing: bool) -> Option<u64> {
        let ahead = self
            .horizon
            .as_ref()
            .filter(|_| self.refill.is_none() && self.has_room())
            .map(|(due, _)| due.saturating_sub(READ_AHEAD_MS));
        match (self.next_due().filter(|_| firing), ahead) {
            (Some(due), Some(ahead)) => Some(due.min(ahead)),
            (due, ahead) => due.or(ahead),
        }
    }

    /// When the store holds more and the cache runs low, or the store's next jobs are due
    /// within reading-ahead distance of `now` and there is room: the key to read the next page
    /// after (the caller reads it and hands it to [`Cache::loaded`]). `None` if no page is
    /// needed or one is already being read.
    pub fn wants_page(&mut self, now: u64) -> Option<DueKey> {
        let after = self.horizon.clone().filter(|_| self.refill.is_none())?;
        let low = self.jobs.len() < PAGE_JOBS / 2;
        let soon = after.0 <= now.saturating_add(READ_AHEAD_MS) && self.has_room();
        if !low && !soon {
            return None;
        }
        self.refill = Some(Refill::default());
        Some(after)
    }

    /// Whether another page fits.
    fn has_room(&self) -> bool {
        self.jobs.len() + PAGE_JOBS <= CACHE_JOBS && self.bytes < CACHE_BYTES / 2
    }

    /// A page arrived (`complete` if the store has nothing after it): holds it, except jobs
    /// `busy` says the task has in hand, and settles what changed meanwhile.
    pub fn loaded(
        &mut self,
        jobs: Vec<Job>,
        complete: bool,
        busy: impl Fn(&str) -> bool,
        now: u64,
    ) {
        let refill = self.refill.take().unwrap_or_default();
        self.horizon = match complete {
            true => None,
            false => jobs.last().map(Job::due_key).or(self.horizon.take()),
        };
        for job in jobs {
            if !busy(&job.id) && !refill.removed.contains(&job.id) {
                self.hold(job);
            }
        }
        self.trim(now);
        for job in refill.placed {
            self.place(job, now);
        }
    }

    /// Puts a job in (the caller trims).
    fn hold(&mut self, job: Job) {
        self.bytes += job.template.footprint();
        let key = job.due_key();
        if let Some(stale) = self.keys.insert(Arc::clone(&job.id), key.clone()) {
            if let Some(old) = self.jobs.remove(&stale) {
                self.bytes -= old.template.footprint();
            }
        }
        self.jobs.insert(key, job);
    }

    /// Drops the latest jobs past the bounds (the horizon moves back): more than
    /// [`CACHE_JOBS`] or [`CACHE_BYTES`], or more than a page of jobs not due soon, which need
    /// not be in memory yet.
    fn trim(&mut self, now: u64) {
        let later = now.saturating_add(READ_AHEAD_MS);
        while let Some(((due, _), _)) = self.jobs.last_key_value() {
            let over = self.jobs.len() > CACHE_JOBS || self.bytes > CACHE_BYTES;
            let early = self.jobs.len() > PAGE_JOBS && *due > later;
            if self.jobs.len() <= 1 || !(over || early) {
                return;
            }
            let (_, dropped) = self.jobs.pop_last().expect("not empty");
            self.keys.remove(&dropped.id);
            self.bytes -= dropped.template.footprint();
            self.horizon = self.jobs.keys().next_back().cloned();
        }
    }
}
