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
//! as the message store does ([`crate::store::Store::fence`]).

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

/// The database's file in `scheduler_dir`.
pub const FILE: &str = "jobs.redb";
/// Where a new database is made before it is renamed to [`FILE`].
const FRESH: &str = "jobs.redb.new";
/// Every space's entries.
const ENTRIES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("entries");
/// The epoch of the last broker that opened the store.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const EPOCH: &str = "epoch";
/// Bytes of pages redb keeps cached (its default is 1 GiB, far beyond brokerd's budget).
pub const CACHE_BYTES: usize = 16 << 20;

/// The open store.
pub struct JobsDb {
    db: Arc<Database>,
    path: PathBuf,
}

impl JobsDb {
    /// Opens (or creates) the store in `dir`, retrying per `retry` while another process holds
    /// it, then checks `epoch` against the stored one and records it, durably.
    pub async fn open(dir: &Path, retry: Retry, epoch: u64) -> Result<JobsDb, StoreError> {
        open_retrying(dir, retry, move |dir| JobsDb::open_blocking(&dir, epoch)).await
    }

    fn open_blocking(dir: &Path, epoch: u64) -> Result<JobsDb, StoreError> {
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
        let db = JobsDb {
            db: Arc::new(db),
            path,
        };
        db.fence(epoch)?;
        Ok(db)
    }

    /// Refuses a store a newer epoch has used; records `epoch` (an equal one is accepted).
    fn fence(&self, epoch: u64) -> Result<(), StoreError> {
        let failed = |err: redb::Error| failed(&self.path, "recording the epoch", err);
        let txn = begin_write(&self.db).map_err(failed)?;
        {
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
            txn.open_table(ENTRIES).map_err(|e| failed(e.into()))?;
        }
        txn.commit().map_err(|e| failed(e.into()))
    }

    /// Starts the store's journal: its only writer.
    pub fn journal(&self, config: JournalConfig) -> Result<Journal, StoreError> {
        let backend = Backend {
            db: Arc::clone(&self.db),
            txn: None,
            path: self.path.clone(),
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
                match &w.value {
                    Some(value) => drop(table.insert(&w.key[..], &value.to_bytes()[..])?),
                    None => drop(table.remove(&w.key[..])?),
                }
            }
            Ok(())
        };
        write().map_err(|err| failed(&self.path, "writing", err))
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        // SAFETY (atomicity, durability): the whole batch commits at once, with immediate
        // durability: every unit of it is in the store, or (after a crash) none is.
        match self.txn.take() {
            Some(txn) => txn
                .commit()
                .map_err(|err| failed(&self.path, "committing", err)),
            None => Ok(()),
        }
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

    /// How many entries `space` holds (keys only: no value is copied).
    pub fn count(&self, space: &str) -> Result<u64, StoreError> {
        let Page { start, end, .. } = Page::of(space, &[]);
        let read = || -> Result<u64, redb::Error> {
            let table = self.db.begin_read()?.open_table(ENTRIES)?;
            let range = match &end {
                None => table.range(&start[..]..)?,
                Some(end) => table.range(&start[..]..&end[..])?,
            };
            let mut count = 0;
            for entry in range {
                entry?;
                count += 1;
            }
            Ok(count)
        };
        read().map_err(|err| failed(&self.path, "counting entries", err))
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
mod tests {
    use super::*;
    use crate::journal::Op;

    fn put(space: &str, key: &str, value: &str) -> Op {
        Op::Put {
            space: space.into(),
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()).into(),
        }
    }

    async fn durable(journal: &Journal, ops: Vec<Op>) {
        let (done, durable) = tokio::sync::oneshot::channel();
        journal.apply(
            ops,
            Some(Box::new(move || {
                let _ = done.send(());
            })),
        );
        durable.await.expect("written");
    }

    #[tokio::test]
    async fn writes_come_back_by_key_by_space_and_in_pages_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = JobsDb::open(dir.path(), Retry::default(), 1).await.unwrap();
            let journal = db.journal(JournalConfig::default()).unwrap();
            let mut ops: Vec<Op> = (0..5).map(|i| put("due", &format!("k{i}"), "v")).collect();
            ops.push(put("jobs", "a", "1"));
            ops.push(put("duf", "k0", "next space"));
            durable(&journal, ops).await;
            let remove = Op::Remove {
                space: "due".into(),
                key: Bytes::from_static(b"k1"),
            };
            durable(&journal, vec![remove]).await;
        }
        let db = JobsDb::open(dir.path(), Retry::default(), 2).await.unwrap();
        let view = db.view();
        assert_eq!(view.get("jobs", b"a").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(view.get("due", b"k1").unwrap(), None);
        let keys = |page: Vec<(Bytes, Bytes)>| -> Vec<String> {
            page.iter()
                .map(|(k, _)| String::from_utf8(k.to_vec()).unwrap())
                .collect()
        };
        assert_eq!(keys(view.scan("due").unwrap()), ["k0", "k2", "k3", "k4"]);
        assert_eq!(keys(view.read_page("due", b"k2", 2).unwrap()), ["k2", "k3"]);
    }

    #[tokio::test]
    async fn an_older_epoch_is_refused_and_a_held_store_is_reported_locked() {
        let dir = tempfile::tempdir().unwrap();
        let held = JobsDb::open(dir.path(), Retry::default(), 5).await.unwrap();
        let brief = Retry {
            total: Duration::from_millis(200),
            first_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(50),
        };
        let locked = JobsDb::open(dir.path(), brief, 6).await.err().unwrap();
        assert!(
            matches!(locked, StoreError::Locked { attempts, .. } if attempts > 1),
            "{locked}"
        );
        drop(held);
        let stale = JobsDb::open(dir.path(), brief, 4).await.err().unwrap();
        assert!(
            matches!(stale, StoreError::StaleEpoch { ours: 4, stored: 5 }),
            "{stale}"
        );
        JobsDb::open(dir.path(), brief, 5)
            .await
            .expect("the same epoch again");
    }

    #[tokio::test]
    async fn a_database_half_made_by_a_killed_broker_is_made_again() {
        let dir = tempfile::tempdir().unwrap();
        // What a broker killed while redb wrote the new file's header leaves.
        std::fs::write(dir.path().join(FRESH), b"redb\0").unwrap();
        let db = JobsDb::open(dir.path(), Retry::default(), 1).await.unwrap();
        let journal = db.journal(JournalConfig::default()).unwrap();
        durable(&journal, vec![put("jobs", "a", "1")]).await;
        assert!(!dir.path().join(FRESH).exists());
        drop((journal, db));
        let db = JobsDb::open(dir.path(), Retry::default(), 2).await.unwrap();
        assert_eq!(
            db.view().get("jobs", b"a").unwrap().as_deref(),
            Some(&b"1"[..])
        );
    }

    #[tokio::test]
    async fn an_older_brokerds_sled_store_is_refused_not_left_behind() {
        let dir = tempfile::tempdir().unwrap();
        crate::store::Store::open(dir.path(), Retry::default())
            .await
            .unwrap();
        let refused = JobsDb::open(dir.path(), Retry::default(), 1)
            .await
            .err()
            .unwrap();
        assert!(
            matches!(refused, StoreError::OldScheduler { .. }),
            "{refused}"
        );
        assert!(
            refused.to_string().contains("move the old files out"),
            "{refused}"
        );
        assert!(!dir.path().join(FILE).exists());
    }
}
