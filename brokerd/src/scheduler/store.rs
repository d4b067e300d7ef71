//! Where jobs are kept, in the scheduler's own store and in the message store, and the reads a
//! takeover makes of them.
//!
//! The scheduler's store (in `scheduler_dir`) holds [`JOBS`] (each job by id), [`DUE`] (an index
//! of the jobs by due time, so that the next ones due are found without reading the rest) and
//! [`FIRING`] (the deliveries being enqueued). The message store holds [`NEW`] (scheduled SENDs
//! not yet moved into the scheduler's store) and [`FIRED`] (deliveries enqueued whose job has
//! not yet moved on). Both of those are small: an entry leaves them as soon as the scheduler's
//! store has caught up, so a takeover reads them whole, and of [`DUE`] only the first page.

use super::job::{DueKey, Job};
use crate::journal::{Op, Recovered};
use crate::store::StoreError;
use bytes::{BufMut, Bytes, BytesMut};
use std::collections::HashSet;
use std::sync::Arc;

/// Scheduler store: id -> its [`DUE`] key (to find a job by id).
pub const JOBS: &str = "jobs";
/// Scheduler store: due time (u64 BE) ++ id -> [`Job`]: the jobs in due order, so that the
/// next ones due are one range read.
pub const DUE: &str = "due";
/// Scheduler store: id -> delivery number (u64 BE) being enqueued.
pub const FIRING: &str = "firing";
/// Message store: id -> [`Job`], scheduled and not yet in the scheduler's store.
pub const NEW: &str = "scheduler/new";
/// Message store: id -> delivery number (u64 BE) enqueued, written with the delivery itself.
pub const FIRED: &str = "scheduler/fired";

/// A [`DUE`] key.
pub fn due_key((due, id): &DueKey) -> Bytes {
    let mut key = BytesMut::with_capacity(8 + id.len());
    key.put_u64(*due);
    key.put_slice(id.as_bytes());
    key.freeze()
}

/// A delivery number as stored.
pub fn number(n: u64) -> Bytes {
    Bytes::copy_from_slice(&n.to_be_bytes())
}

fn read_number(value: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(value.try_into().ok()?))
}

fn corrupt(space: &str, key: &[u8]) -> StoreError {
    StoreError::CorruptScheduler {
        space: space.into(),
        key: String::from_utf8_lossy(key).into_owned(),
    }
}

/// Reads job `id` from the scheduler's store.
pub fn job(view: &Recovered, id: &[u8]) -> Result<Option<Job>, StoreError> {
    let Some(key) = view.get(JOBS, id)? else {
        return Ok(None);
    };
    match view.get(DUE, &key)? {
        Some(value) => Job::decode(&value)
            .map(Some)
            .ok_or_else(|| corrupt(DUE, &key)),
        // The two entries are written and removed together, in one group.
        None => Err(corrupt(JOBS, id)),
    }
}

/// The writes that store a new job.
pub fn inserted(job: &Job) -> Vec<Op> {
    let key = due_key(&job.due_key());
    vec![
        put(JOBS, job.id.as_bytes(), key.clone()),
        put(DUE, &key, job.encode()),
    ]
}

/// The writes that move a job from its due-time entry `old` to its next delivery.
pub fn moved(old: &DueKey, job: &Job) -> Vec<Op> {
    let mut ops = vec![remove(DUE, due_key(old))];
    ops.extend(inserted(job));
    ops
}

/// The writes that remove a job whose next delivery is due at `key`.
pub fn removed(key: &DueKey) -> Vec<Op> {
    vec![remove(JOBS, key.1.as_bytes()), remove(DUE, due_key(key))]
}

/// A put of `value` under `key` in `space`.
pub fn put(space: &str, key: impl AsRef<[u8]>, value: Bytes) -> Op {
    Op::Put {
        space: space.into(),
        key: Bytes::copy_from_slice(key.as_ref()),
        value,
    }
}

/// A removal of `key` from `space`.
pub fn remove(space: &str, key: impl AsRef<[u8]>) -> Op {
    Op::Remove {
        space: space.into(),
        key: Bytes::copy_from_slice(key.as_ref()),
    }
}

/// Up to `limit` jobs in due order whose keys come after `after` (from the first with `None`)
/// and that are due by `until`, except those in `skip`; and whether the store holds no more
/// within that.
pub fn jobs_due(
    view: &Recovered,
    after: Option<&DueKey>,
    until: u64,
    limit: usize,
    skip: &HashSet<Arc<str>>,
) -> Result<(Vec<Job>, bool), StoreError> {
    let from = after.map(due_key).unwrap_or_default();
    let entries = view.read_page(DUE, &from, limit + 1)?;
    let read = entries.len();
    let mut jobs = Vec::with_capacity(read);
    for (key, value) in entries {
        if after.is_some() && key == from {
            continue;
        }
        let due = key
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
            .ok_or_else(|| corrupt(DUE, &key))?;
        if due > until {
            return Ok((jobs, true));
        }
        let job = Job::decode(&value).ok_or_else(|| corrupt(DUE, &key))?;
        if skip.contains(&job.id) {
            continue;
        }
        jobs.push(job);
        if jobs.len() == limit {
            return Ok((jobs, false));
        }
    }
    Ok((jobs, read <= limit))
}

/// What a takeover finds in flight between the two stores.
#[derive(Debug, Default)]
pub struct InFlight {
    /// Scheduled SENDs not yet in the scheduler's store.
    pub new: Vec<Job>,
    /// Scheduled SENDs already moved, whose [`NEW`] entry is left to remove.
    pub moved: Vec<Arc<str>>,
    /// Jobs whose delivery was being enqueued: the job, and whether the delivery is enqueued.
    pub firing: Vec<(Job, bool)>,
    /// [`FIRED`] markers of jobs no longer firing, left to remove.
    pub stale_markers: Vec<Arc<str>>,
}

/// Reads what was in flight when the last broker stopped (blocking).
pub fn in_flight(view: &Recovered, messages: &Recovered) -> Result<InFlight, StoreError> {
    let mut found = InFlight::default();
    for entry in messages.scan(NEW) {
        let entry = entry?;
        let job = Job::decode(&entry.value).ok_or_else(|| corrupt(NEW, &entry.key))?;
        if view.get(JOBS, &entry.key)?.is_some() {
            found.moved.push(job.id);
        } else {
            found.new.push(job);
        }
    }
    let mut firing = HashSet::new();
    for entry in view.scan(FIRING) {
        let entry = entry?;
        let n = read_number(&entry.value).ok_or_else(|| corrupt(FIRING, &entry.key))?;
        let job = job(view, &entry.key)?.ok_or_else(|| corrupt(FIRING, &entry.key))?;
        let marker = messages.get(FIRED, &entry.key)?;
        let enqueued = marker.as_deref().and_then(read_number) == Some(n);
        firing.insert(Arc::clone(&job.id));
        found.firing.push((job, enqueued));
    }
    for entry in messages.scan(FIRED) {
        let entry = entry?;
        let id = std::str::from_utf8(&entry.key).map_err(|_| corrupt(FIRED, &entry.key))?;
        if !firing.contains(id) {
            found.stale_markers.push(id.into());
        }
    }
    Ok(found)
}
