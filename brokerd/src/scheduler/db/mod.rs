//! The scheduler's store: one redb database, [`FILE`] in `scheduler_dir`.
//!
//! Why redb, when messages are kept in sled: sled holds an entry in memory for every page of its
//! tree, so its memory grows with the number of pending jobs (about 70 bytes each: 1M pending
//! jobs cost 70 MiB more), and it takes one process-wide lock while it applies a group in any of
//! its trees, which every read waits for. redb's memory is its cache ([`CACHE_BYTES`]) whatever
//! the number of jobs, its readers never wait for its writer, and with quick repair (the
//! allocator state saved by each commit) a crash costs no rebuild at the next open (measured:
//! 0.4 ms to open 300k jobs after an abort, against 0.7 s without).
//!
//! Layout: the journal's ([`crate::journal`]), in one table, `ENTRIES`: keys `u32 BE length of
//! space ++ space ++ key`, written through a [`Journal`] whose `Backend` commits each batch
//! as one write transaction (atomic and durable: immediate durability, two-phase commit). The
//! epoch of the last broker that opened it is in `META`: a broker of an older epoch refuses it,
//! as the message store does ([`crate::store::Store::fence`]). So is the number of pending jobs,
//! stored by each commit that changes it ([`super::pending`]).

use super::pending::{PendingJobs, Tally};
use crate::journal::{self, encode_key, Journal, JournalConfig, Page};
use crate::store::{open_retrying, Retry, StoreError};
use bytes::Bytes;
use redb::{
    Database, DatabaseError, Durability, ReadableDatabase, ReadableTable, TableDefinition,
    WriteTransaction,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// The database's file in `scheduler_dir`.
pub const FILE: &str = "jobs.redb";
/// Where a new database is made before it is renamed to [`FILE`].
const FRESH: &str = "jobs.redb.new";
/// Every space's entries.
const ENTRIES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("entries");
/// The epoch of the last broker that opened the store, and the number of pending jobs.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const EPOCH: &str = "epoch";
/// The number of pending jobs: [`COUNTED`]'s entries.
const JOB_COUNT: &str = "jobs";
/// The space with one entry per pending job.
const COUNTED: &str = super::store::JOBS;
/// Bytes of pages redb keeps cached (its default is 1 GiB, far beyond brokerd's budget).
pub const CACHE_BYTES: usize = 16 << 20;

/// The open store.
pub struct JobsDb {
    db: Arc<Database>,
    path: PathBuf,
    /// Its pending jobs, kept by its journal's commits.
    tally: Arc<Tally>,
}

impl JobsDb {
    /// Opens (or creates) the store in `dir`, retrying per `retry` while another process holds
    /// it, then checks `epoch` against the stored one and records it, durably. Its number of
    /// pending jobs is published to `pending` from now on (counted in the background first if
    /// an older brokerd wrote the store without it).
    pub async fn open(
        dir: &Path,
        retry: Retry,
        epoch: u64,
        pending: PendingJobs,
    ) -> Result<JobsDb, StoreError> {
        let open = move |dir: PathBuf| JobsDb::open_blocking(&dir, epoch, pending.clone());
        let db = open_retrying(dir, retry, open).await?;
        if db.tally.counting() {
            db.count_jobs();
        }
        Ok(db)
    }

    fn open_blocking(dir: &Path, epoch: u64, pending: PendingJobs) -> Result<JobsDb, StoreError> {
        if dir.join("db").exists() {
            return Err(StoreError::OldScheduler {
                dir: dir.to_path_buf(),
            });
        }
        let path = dir.join(FILE);
        if !path.exists() {
            create(dir, &path)?;
        }
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .open(&path)
            .map_err(|err| match err {
                DatabaseError::DatabaseAlreadyOpen => StoreError::Locked {
                    path: path.clone(),
                    attempts: 1,
                    waited: Duration::ZERO,
                },
                other => failed(&path, "opening", other),
            })?;
        let db = Arc::new(db);
        let jobs = fence(&db, &path, epoch)?;
        Ok(JobsDb {
            db,
            path,
            tally: Arc::new(Tally::new(jobs, pending)),
        })
    }

    /// Counts the jobs of a store that does not say how many it holds, off the async threads
    /// and beside its writer (a read transaction never waits for it).
    fn count_jobs(&self) {
        let (db, tally, path) = (
            Arc::clone(&self.db),
            Arc::clone(&self.tally),
            self.path.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let Some((snapshot, mark)) = tally.begin_count(|| db.begin_read()) else {
                return;
            };
            let counted = snapshot.map_err(redb::Error::from).and_then(|read| {
                let entries = read.open_table(ENTRIES)?;
                count(&entries)
            });
            match counted {
                Ok(jobs) => {
                    tally.finish_count(jobs, mark);
                    info!(
                        jobs,
                        "scheduler: pending jobs counted (a store from an older brokerd)"
                    );
                }
                Err(err) => warn!(
                    error = %failed(&path, "counting the pending jobs", err),
                    "brokerd_scheduler_pending_jobs stays unknown until the next start"
                ),
            }
        });
    }

    /// Starts the store's journal: its only writer.
    pub fn journal(&self, config: JournalConfig) -> Result<Journal, StoreError> {
        let backend = Backend {
            db: Arc::clone(&self.db),
            txn: None,
            path: self.path.clone(),
            tally: Arc::clone(&self.tally),
            added: 0,
            counted_prefix: encode_key(COUNTED, &[]),
        };
        Journal::start_on(Box::new(backend), self.path.clone(), config)
    }

    /// A read view (cheap to clone; each read is its own read transaction).
    pub fn view(&self) -> View {
        View {
            db: Arc::clone(&self.db),
            path: self.path.clone(),
        }
    }
}

/// Creates the database at `path` so that a crash never leaves half of one there: redb writes
/// a new file's header in place, and a broker killed meanwhile left a file no later broker
/// could open ("not a redb database"). It is made under [`FRESH`], synced, and renamed into
/// place; a [`FRESH`] file found here is such a leftover, which never held a job.
fn create(dir: &Path, path: &Path) -> Result<(), StoreError> {
    let fresh = dir.join(FRESH);
    let io = |action: &'static str| {
        let fresh = fresh.clone();
        move |source| StoreError::Sync {
            path: fresh,
            action,
            source,
        }
    };
    if let Err(e) = std::fs::remove_file(&fresh) {
        if e.kind() != std::io::ErrorKind::NotFound {
            return Err(io("removing a leftover")(e));
        }
    }
    let db = Database::builder()
        .create(&fresh)
        .map_err(|err| failed(&fresh, "creating", err))?;
    drop(db);
    std::fs::File::open(&fresh)
        .and_then(|file| file.sync_all())
        .map_err(io("syncing the new database"))?;
    std::fs::rename(&fresh, path).map_err(io("renaming the new database into place"))?;
    shared_proto::shared_file::sync_dir(dir).map_err(io("syncing the scheduler directory"))
}

/// Refuses a store a newer epoch has used; records `epoch` (an equal one is accepted). Returns
/// how many jobs the store holds, if it says (a new or empty store says 0 from now on).
fn fence(db: &Database, path: &Path, epoch: u64) -> Result<Option<u64>, StoreError> {
    let failed = |err: redb::Error| failed(path, "recording the epoch", err);
    let txn = begin_write(db).map_err(failed)?;
    let jobs = {
        let mut meta = txn.open_table(META).map_err(|e| failed(e.into()))?;
        let stored = meta.get(EPOCH).map_err(|e| failed(e.into()))?;
        if let Some(stored) = stored.map(|v| v.value()).filter(|s| *s > epoch) {
            return Err(StoreError::StaleEpoch {
                ours: epoch,
                stored,
            });
        }
        meta.insert(EPOCH, epoch).map_err(|e| failed(e.into()))?;
        // Created here, so that a reader never finds it missing.
        let entries = txn.open_table(ENTRIES).map_err(|e| failed(e.into()))?;
        let jobs = meta.get(JOB_COUNT).map_err(|e| failed(e.into()))?;
        match jobs.map(|v| v.value()) {
            Some(jobs) => Some(jobs),
            // One key read: an empty store holds no jobs, whoever wrote it.
            None if !holds_jobs(&entries).map_err(failed)? => {
                meta.insert(JOB_COUNT, 0).map_err(|e| failed(e.into()))?;
                Some(0)
            }
            None => None,
        }
    };
    txn.commit().map_err(|e| failed(e.into()))?;
    Ok(jobs)
}

/// The range of [`COUNTED`]'s keys in `entries`.
fn counted<'t, T: ReadableTable<&'static [u8], &'static [u8]>>(
    entries: &'t T,
) -> Result<redb::Range<'t, &'static [u8], &'static [u8]>, redb::Error> {
    let Page { start, end, .. } = Page::of(COUNTED, &[]);
    let range = match &end {
        None => entries.range(&start[..]..)?,
        Some(end) => entries.range(&start[..]..&end[..])?,
    };
    Ok(range)
}

/// Whether [`COUNTED`] holds a key (one key read).
fn holds_jobs(
    entries: &impl ReadableTable<&'static [u8], &'static [u8]>,
) -> Result<bool, redb::Error> {
    Ok(counted(entries)?.next().transpose()?.is_some())
}

/// How many keys [`COUNTED`] holds (keys only: no value is copied).
fn count(entries: &impl ReadableTable<&'static [u8], &'static [u8]>) -> Result<u64, redb::Error> {
    let mut jobs = 0;
    for entry in counted(entries)? {
        entry?;
        jobs += 1;
    }
    Ok(jobs)
}

fn failed(path: &Path, action: &'static str, source: impl Into<redb::Error>) -> StoreError {
    StoreError::Redb {
        path: path.to_path_buf(),
        action,
        source: source.into(),
    }
}

fn begin_write(db: &Database) -> Result<WriteTransaction, redb::Error> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    // SAFETY (recovery time): saves the allocator state with each commit, so that opening the
    // store after a crash does not rebuild it by reading every page (seconds for 1M jobs).
    txn.set_quick_repair(true);
    Ok(txn)
}

/// The journal's backend: each batch is one write transaction.
struct Backend {
    db: Arc<Database>,
    /// The batch's transaction, begun by its first unit and committed by [`Backend::sync`].
    txn: Option<WriteTransaction>,
    path: PathBuf,
    /// The store's pending jobs, moved by each commit.
    tally: Arc<Tally>,
    /// Jobs the batch's transaction adds (negative: removes) so far.
    added: i64,
    /// The prefix of [`COUNTED`]'s keys.
    counted_prefix: Vec<u8>,
}

impl journal::Backend for Backend {
    fn contains(&self, key: &[u8]) -> Result<bool, StoreError> {
        let read = || -> Result<bool, redb::Error> {
            let table = self.db.begin_read()?.open_table(ENTRIES)?;
            let found = table.get(key)?.is_some();
            Ok(found)
        };
        read().map_err(|err| failed(&self.path, "checking a key", err))
    }

    fn write_unit(&mut self, unit: &[journal::Write]) -> Result<(), StoreError> {
        let mut write = || -> Result<(), redb::Error> {
            if self.txn.is_none() {
                self.txn = Some(begin_write(&self.db)?);
            }
            let txn = self.txn.as_ref().expect("begun above");
            let mut table = txn.open_table(ENTRIES)?;
            for w in unit {
                // What was there before tells whether a job came or went: a put may replace,
                // a remove may find nothing.
                let (was, now) = match &w.value {
                    Some(value) => (
                        table.insert(&w.key[..], &value.to_bytes()[..])?.is_some(),
                        true,
                    ),
                    None => (table.remove(&w.key[..])?.is_some(), false),
                };
                if w.key.starts_with(&self.counted_prefix) {
                    self.added += i64::from(now) - i64::from(was);
                }
            }
            Ok(())
        };
        write().map_err(|err| failed(&self.path, "writing", err))
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        // SAFETY (atomicity, durability): the whole batch commits at once, with immediate
        // durability: every unit of it is in the store, or (after a crash) none is.
        // The count of pending jobs commits with the jobs it counts.
        let Some(txn) = self.txn.take() else {
            return Ok(());
        };
        let added = std::mem::take(&mut self.added);
        let commit = |jobs: Option<u64>| -> Result<(), redb::Error> {
            if let Some(jobs) = jobs {
                txn.open_table(META)?.insert(JOB_COUNT, jobs)?;
            }
            txn.commit()?;
            Ok(())
        };
        (self.tally)
            .commit(added, commit)
            .map_err(|err| failed(&self.path, "committing", err))
    }
}

/// A read view of the store. Reads see what the journal's writer has committed.
#[derive(Clone)]
pub struct View {
    db: Arc<Database>,
    path: PathBuf,
}

impl View {
    /// The value of `key` in `space`.
    pub fn get(&self, space: &str, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
        let read = || -> Result<Option<Bytes>, redb::Error> {
            let table = self.db.begin_read()?.open_table(ENTRIES)?;
            let value = table.get(&encode_key(space, key)[..])?;
            Ok(value.map(|v| Bytes::copy_from_slice(v.value())))
        };
        read().map_err(|err| failed(&self.path, "reading a value", err))
    }

    /// Every entry of `space` (keys without the space), in key order: for the small spaces a
    /// takeover reads whole.
    pub fn scan(&self, space: &str) -> Result<Vec<(Bytes, Bytes)>, StoreError> {
        self.read_page(space, &[], usize::MAX)
    }

    /// Up to `limit` entries of `space` (keys without the space) from key `from` on, in key
    /// order.
    pub fn read_page(
        &self,
        space: &str,
        from: &[u8],
        limit: usize,
    ) -> Result<Vec<(Bytes, Bytes)>, StoreError> {
        let Page { start, end, skip } = Page::of(space, from);
        let read = || -> Result<Vec<(Bytes, Bytes)>, redb::Error> {
            let table = self.db.begin_read()?.open_table(ENTRIES)?;
            let range = match &end {
                None => table.range(&start[..]..)?,
                Some(end) => table.range(&start[..]..&end[..])?,
            };
            let mut page = Vec::new();
            for entry in range.take(limit) {
                let (key, value) = entry?;
                page.push((
                    Bytes::copy_from_slice(&key.value()[skip..]),
                    Bytes::copy_from_slice(value.value()),
                ));
            }
            Ok(page)
        };
        read().map_err(|err| failed(&self.path, "reading a page", err))
    }
}

#[cfg(test)]
mod tests;
