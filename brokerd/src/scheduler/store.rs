//! Where jobs are kept, in the scheduler's own store and in the message store, and the reads a
//! takeover makes of them.
//!
//! The scheduler's store (in `scheduler_dir`) holds [`JOBS`] (each job by id), [`DUE`] (an index
//! of the jobs by due time, so that the next ones due are found without reading the rest) and
//! [`FIRING`] (the batches of deliveries being enqueued). The message store holds [`NEW`]
//! (scheduled SENDs not yet moved into the scheduler's store) and [`FIRED`] (batches enqueued
//! whose jobs have not yet moved on). Both of those are small: an entry leaves them as soon as
//! the scheduler's store has caught up, so a takeover reads them whole, and of [`DUE`] only the
//! first page.

use super::db::View;
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
/// Scheduler store: batch number (u64 BE) -> the [`Batch`] of deliveries being enqueued.
pub const FIRING: &str = "firing";
/// Message store: id -> [`Job`], scheduled and not yet in the scheduler's store.
pub const NEW: &str = "scheduler/new";
/// Message store: batch number (u64 BE) -> nothing: written in one group with the batch's
/// deliveries, so it says that all of them are enqueued.
pub const FIRED: &str = "scheduler/fired";

/// A [`DUE`] key.
pub fn due_key((due, id): &DueKey) -> Bytes {
    let mut key = BytesMut::with_capacity(8 + id.len());
    key.put_u64(*due);
    key.put_slice(id.as_bytes());
    key.freeze()
}

/// A batch number as a key of [`FIRING`] and [`FIRED`].
pub fn batch_key(batch: u64) -> Bytes {
    Bytes::copy_from_slice(&batch.to_be_bytes())
}

fn read_batch_key(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

/// The deliveries fired together, as [`FIRING`] records them: each job's id and the number of
/// its delivery. One record per batch (not per delivery) keeps the writes of a burst few.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch(pub Vec<(Arc<str>, u64)>);

impl Batch {
    /// The record: per delivery, its number (u64 BE), the id's length (u32 BE) and the id.
    pub fn encode(&self) -> Bytes {
        let size = self.0.iter().map(|(id, _)| 12 + id.len()).sum();
        let mut out = BytesMut::with_capacity(size);
        for (id, n) in &self.0 {
            out.put_u64(*n);
            out.put_u32(u32::try_from(id.len()).expect("a job id is far shorter than 4 GiB"));
            out.put_slice(id.as_bytes());
        }
        out.freeze()
    }

    /// The record read back; `None` if it is not one.
    pub fn decode(mut record: &[u8]) -> Option<Batch> {
        let mut deliveries = Vec::new();
        while !record.is_empty() {
            let n = u64::from_be_bytes(record.get(..8)?.try_into().ok()?);
            let len = u32::from_be_bytes(record.get(8..12)?.try_into().ok()?) as usize;
            let id = std::str::from_utf8(record.get(12..12usize.checked_add(len)?)?).ok()?;
            deliveries.push((Arc::from(id), n));
            record = &record[12 + len..];
        }
        Some(Batch(deliveries))
    }
}

/// A record that does not read as what its space holds; a binary key (a batch number) is
/// named in hex.
fn corrupt(space: &str, key: &[u8]) -> StoreError {
    let key = match std::str::from_utf8(key) {
        Ok(text) if !text.chars().any(char::is_control) => text.to_owned(),
        _ => key.iter().map(|b| format!("{b:02x}")).collect(),
    };
    StoreError::CorruptScheduler {
        space: space.into(),
        key,
    }
}

/// Reads job `id` from the scheduler's store.
pub fn job(view: &View, id: &[u8]) -> Result<Option<Job>, StoreError> {
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
        value: value.into(),
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
    view: &View,
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

/// A batch a takeover found being enqueued.
#[derive(Debug)]
pub struct FiringBatch {
    pub batch: u64,
    /// Its jobs, each as stored (at the delivery being enqueued).
    pub jobs: Vec<Job>,
    /// Whether its [`FIRED`] marker says the deliveries are enqueued.
    pub enqueued: bool,
}

/// What a takeover finds in flight between the two stores.
#[derive(Debug, Default)]
pub struct InFlight {
    /// Scheduled SENDs not yet in the scheduler's store.
    pub new: Vec<Job>,
    /// Scheduled SENDs already moved, whose [`NEW`] entry is left to remove.
    pub moved: Vec<Arc<str>>,
    /// Batches whose deliveries were being enqueued.
    pub firing: Vec<FiringBatch>,
    /// [`FIRED`] markers of batches no longer firing, left to remove.
    pub stale_markers: Vec<u64>,
    /// The highest batch number either store holds: a new batch is numbered after it, so that
    /// it never shares a key with a record still in flight.
    pub last_batch: u64,
}

/// Reads what was in flight when the last broker stopped (blocking).
pub fn in_flight(view: &View, messages: &Recovered) -> Result<InFlight, StoreError> {
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
    for (key, value) in view.scan(FIRING)? {
        let bad = || corrupt(FIRING, &key);
        let batch = read_batch_key(&key).ok_or_else(bad)?;
        let Batch(deliveries) = Batch::decode(&value).ok_or_else(bad)?;
        let mut jobs = Vec::with_capacity(deliveries.len());
        for (id, n) in deliveries {
            // A batch's jobs move on in one group with the removal of its record.
            let job = job(view, id.as_bytes())?
                .filter(|job| job.next.n == n)
                .ok_or_else(bad)?;
            jobs.push(job);
        }
        let enqueued = messages.get(FIRED, &key)?.is_some();
        firing.insert(batch);
        found.last_batch = found.last_batch.max(batch);
        found.firing.push(FiringBatch {
            batch,
            jobs,
            enqueued,
        });
    }
    for entry in messages.scan(FIRED) {
        let entry = entry?;
        let batch = read_batch_key(&entry.key).ok_or_else(|| corrupt(FIRED, &entry.key))?;
        found.last_batch = found.last_batch.max(batch);
        if !firing.contains(&batch) {
            found.stale_markers.push(batch);
        }
    }
    Ok(found)
}
