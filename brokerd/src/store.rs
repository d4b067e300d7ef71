//! The broker's durable store (sled) and the epoch fence kept inside it.
//!
//! The store is opened only once lockd has activated this broker. sled holds its own flock on
//! `<dir>/db`, a second guard behind lockd's lock: a broker that was just SIGKILLed may still
//! hold it for a moment, so opening retries for a bounded time. The epoch recorded in the store
//! only ever grows, and it is flushed before any client is served, so a broker started under an
//! older epoch (a node that lost the lock without noticing) refuses to touch the data.
//!
//! Durability: sled 0.34.7's `flush()` is not enough on its own. On Linux it makes its log
//! stable with `sync_file_range(2)` only, never fsync or fdatasync (`pagecache/iobuf.rs`), which
//! writes neither the appended file's size and block allocation nor the device's write cache,
//! and it writes blob files (values or pages over a quarter of a segment) with no sync at all;
//! the power-cut test (tests/tests/power_loss.rs) lost every receipted message through it. So
//! every flush goes through [`Flusher`], which adds the missing fdatasync and fsyncs, and opening
//! the store fsyncs its files and directories once, so that what sled created is durable too.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tracing::debug;

/// Tree holding the store's own metadata.
const META_TREE: &str = "meta";

/// Key of the fencing epoch in [`META_TREE`], a big-endian u64.
const EPOCH_KEY: &str = "epoch";

/// Why the store could not be used; callers pick the exit code and whether lockd may retry.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the store's lock even after retrying: the previous broker is
    /// still alive, or another one runs on this directory.
    #[error("store {path:?} is still locked by another process after {attempts} attempts over {waited:?}; is another brokerd running on it?")]
    Locked {
        path: PathBuf,
        attempts: u32,
        waited: Duration,
    },
    /// This broker was activated under an older epoch than one that already used the store.
    #[error("epoch {ours} is older than the store's epoch {stored}; another node took over")]
    StaleEpoch { ours: u64, stored: u64 },
    /// The stored epoch is not the 8 bytes we write.
    #[error("the store's epoch record is {len} bytes instead of 8; refusing to guess it")]
    CorruptEpoch { len: usize },
    /// A file or directory of the store could not be opened or synced to disk.
    #[error("store {path:?}: {action} failed; the disk or its filesystem failed, so nothing after this is durable")]
    Sync {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// sled failed.
    #[error("store {path:?}: {action} failed")]
    Sled {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: sled::Error,
    },
    /// redb (the scheduler's store) failed.
    #[error("store {path:?}: {action} failed: {source}")]
    Redb {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: redb::Error,
    },
    /// `scheduler_dir` holds the sled store of a brokerd from before the scheduler kept its
    /// jobs in redb: its jobs would be silently left behind.
    #[error("{dir:?} holds the scheduled jobs of an older brokerd (a sled store: its 'db' file), which this brokerd does not read; so that none is lost, it refuses to start. Run the older brokerd until its jobs are delivered, or move the old files out of the directory to drop them")]
    OldScheduler { dir: PathBuf },
    /// The stored journal holds a key that is not in the journal's layout.
    #[error("store {path:?}: a journal key of {len} bytes does not start with a space name; refusing to guess its space")]
    CorruptKey { path: PathBuf, len: usize },
    /// A durable-subscription registry entry is not in the registry's layout.
    #[error("the store's durable-subscription registry holds an entry (key {key:?}) not in its layout; refusing to guess which subscription it is (restore the store from a backup, or start an empty one)")]
    CorruptRegistry { key: String },
    /// A scheduler record is not in the scheduler's layout.
    #[error("the scheduler's {space:?} records hold an entry (key {key:?}) not in their layout; refusing to guess which job it is (restore the scheduler directory from a backup, or remove the job with `ctl schedules cancel`)")]
    CorruptScheduler { space: String, key: String },
    /// A durable subscription is in both the registry and an older brokerd's registry.
    #[error("durable subscription {name:?} of client-id {client_id:?} is in both the durable-subscription registry and an older brokerd's ('subs'): an older brokerd ran on this store after a newer one. Refusing to guess which holds its messages; run the older brokerd to deliver and UNSUBSCRIBE it there, then start this one")]
    RegistryConflict { client_id: String, name: String },
    /// The epoch fence cannot read the shared directory's epoch (see `crate::fence`).
    #[error("the epoch fence cannot read {path:?}: {source}; brokerd's user needs read access to SHARED/epoch and SHARED/epochs/ (check their modes, and the directory's)")]
    FenceUnreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Before a write, the epoch fence could not read the shared directory's epoch, so it cannot
    /// tell whether another node took over: nothing more is written.
    #[error("the epoch fence could not read {path:?} in {attempts} attempts, so it cannot tell whether another node took over; the store takes no more writes and the broker stops (check the shared filesystem; lockd restarts or fences this broker)")]
    FenceUncertain {
        path: PathBuf,
        attempts: u32,
        #[source]
        source: std::io::Error,
    },
    /// Reading a space's stored messages failed again and again: they cannot be delivered from
    /// this store.
    #[error("reading the stored messages of {space:?} failed {attempts} times, so they cannot be delivered; the broker stops (lockd restarts it or hands over; check the disk and the store)")]
    PageRead {
        space: String,
        attempts: u32,
        #[source]
        cause: std::sync::Arc<StoreError>,
    },
    /// The journal's writer thread (or the epoch fence's thread) could not be started.
    #[error("store {path:?}: cannot start a thread")]
    Spawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The journal's writer thread panicked.
    #[error("store {path:?}: the journal's writer thread panicked")]
    WriterPanicked { path: PathBuf },
    /// A write or flush of the journal's writer did not return for too long (sled stuck).
    #[error("store {path:?}: a write or flush has not returned for {stuck:?}; the broker stops (lockd restarts it or hands over)")]
    Stalled { path: PathBuf, stuck: Duration },
    /// The journal's writer stopped after a failed write or flush; nothing after it is durable.
    #[error("store {path:?}: the journal's writer stopped after an error")]
    WriterFailed {
        path: PathBuf,
        #[source]
        cause: std::sync::Arc<StoreError>,
    },
    /// A blocking store operation could not run to completion.
    #[error("store {path:?}: {action} was interrupted")]
    Interrupted {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
}

/// How long and how often to retry opening a store that is locked.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Total time to keep trying.
    pub total: Duration,
    /// Wait after the first failed attempt; doubles up to `max_delay`.
    pub first_delay: Duration,
    /// Longest wait between attempts.
    pub max_delay: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            total: Duration::from_secs(10),
            first_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(500),
        }
    }
}

/// sled settings. sled 0.34.7 ignores `snapshot_after_ops` (a deprecated no-op): it writes a
/// snapshot of its page table only while opening, after replaying the log written since the
/// previous snapshot. So the replay after a crash covers the live log since the last open, and
/// no setting shortens it much (measured by `examples/recovery_bench.rs`: about 50 ms at 100k
/// queued 1 KiB messages and 350 ms at 1M, whatever the segment size). What tuning does decide
/// is memory: reading a large backlog back fills the page cache up to `cache_capacity`.
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    /// Bytes of pages sled keeps cached. sled's default is 1 GiB, far beyond brokerd's memory
    /// budget; messages are paged back in from the store when needed.
    pub cache_capacity: u64,
    /// sled's log segment size in bytes (a power of two).
    pub segment_size: usize,
    /// sled's space/speed trade-off. sled 0.34.7 stores it but never reads it (checked in its
    /// source); kept so that a sled upgrade does not silently change the mode.
    pub mode: sled::Mode,
    /// sled's background flush period; `None` leaves every flush to the journal's writer.
    pub flush_every_ms: Option<u64>,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            // Measured: 8, 32 and 1024 MiB give the same write throughput and open time; the
            // peak while reading a 1M backlog was 187, 203 and 870 MiB. brokerd aims at 64 MiB.
            cache_capacity: 16 * 1024 * 1024,
            segment_size: 512 * 1024,
            mode: sled::Mode::HighThroughput,
            // SAFETY (fsync): no background flusher. Durability before a receipt never
            // relied on it (it runs every 500 ms); the journal's writer flushes after each
            // batch and the epoch fence flushes itself, and a single flusher avoids sled
            // bug #1308 (concurrent flushes hanging).
            flush_every_ms: None,
        }
    }
}

/// An open store.
#[derive(Debug)]
pub struct Store {
    db: sled::Db,
    meta: sled::Tree,
    flusher: Arc<Flusher>,
    path: PathBuf,
}

/// sled's log file inside the store's directory.
const LOG_FILE: &str = "db";

/// sled's directory of blob files inside the store's directory.
const BLOB_DIR: &str = "blobs";

/// Makes everything sled was given durable: `db.flush()` (sled writes its buffers and calls
/// `sync_file_range`), then what sled 0.34.7 leaves out (see the module's header): an fsync of
/// each blob file written since the last flush and of the blob directory, then an fdatasync of
/// the log. The log is synced last, so a flush that returned covers every blob its entries point
/// at. A window remains that only sled could close: its own `sync_file_range` may put a log
/// entry on disk before we fsync the blob it points at, so a power cut in between can leave an
/// entry whose blob is incomplete, which sled reports as corruption when it reads it (loudly,
/// and only for values or pages over a quarter of a segment, 128 KiB by default).
#[derive(Debug)]
pub struct Flusher {
    db: sled::Db,
    /// Our own descriptor of sled's log file: fdatasync syncs the file, whichever descriptor
    /// wrote to it.
    log: File,
    /// Blob files already synced, by name, with the length synced. sled never rewrites a blob
    /// (it writes a new one), but one may still be being written while we list it (a page
    /// rewritten by another sled thread): a longer file is synced again.
    synced_blobs: Mutex<HashMap<OsString, u64>>,
    path: PathBuf,
}

impl Flusher {
    /// Opens sled's files in `path`, and fsyncs every file and directory of the store once.
    fn open(db: sled::Db, path: &Path) -> Result<Flusher, StoreError> {
        let sync_err = |action, at: &Path| {
            let at = at.to_path_buf();
            move |source| StoreError::Sync {
                path: at,
                action,
                source,
            }
        };
        let log_path = path.join(LOG_FILE);
        let log = File::open(&log_path).map_err(sync_err("opening sled's log", &log_path))?;
        let mut synced_blobs = HashMap::new();
        for dir in [path.to_path_buf(), path.join(BLOB_DIR)] {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(sync_err("listing the store", &dir)(e)),
            };
            for entry in entries {
                let entry = entry.map_err(sync_err("listing the store", &dir))?;
                let file_path = entry.path();
                if entry
                    .file_type()
                    .map_err(sync_err("listing the store", &file_path))?
                    .is_file()
                {
                    let synced = fsync_file(&file_path)?;
                    if let (Some(len), true) = (synced, dir != path) {
                        synced_blobs.insert(entry.file_name(), len);
                    }
                }
            }
            // SAFETY (fsync): sled creates its files and renames its snapshot without syncing
            // their directory; this makes those entries durable.
            fsync(&dir)?;
        }
        Ok(Flusher {
            db,
            log,
            synced_blobs: Mutex::new(synced_blobs),
            path: path.to_path_buf(),
        })
    }

    /// Makes every write sled was given before this call durable. Blocks: call it from the
    /// journal's writer thread or a blocking task.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map_err(|source| StoreError::Sled {
            path: self.path.clone(),
            action: "flushing",
            source,
        })?;
        self.sync_new_blobs()?;
        // SAFETY (fsync): sled's flush returned, so its writes are in the file; this makes
        // them, and the file's new size, durable. A receipt waits for this.
        self.log.sync_data().map_err(|source| StoreError::Sync {
            path: self.path.join(LOG_FILE),
            action: "fdatasync of sled's log",
            source,
        })
    }

    /// Fsyncs the blob files not synced yet, then their directory if there were any.
    fn sync_new_blobs(&self) -> Result<(), StoreError> {
        let dir = self.path.join(BLOB_DIR);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(StoreError::Sync {
                    path: dir,
                    action: "listing sled's blobs",
                    source,
                })
            }
        };
        let mut synced = self
            .synced_blobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut present = HashMap::new();
        let mut new = false;
        for entry in entries {
            let name = entry
                .map_err(|source| StoreError::Sync {
                    path: dir.clone(),
                    action: "listing sled's blobs",
                    source,
                })?
                .file_name();
            let known = synced.get(&name).copied();
            let path = dir.join(&name);
            let len = match known {
                Some(len) if blob_len(&path)? == Some(len) => Some(len),
                _ => {
                    new = true;
                    fsync_file(&path)?
                }
            };
            // None: sled removed it meanwhile (garbage collection), nothing to keep.
            if let Some(len) = len {
                present.insert(name, len);
            }
        }
        if new {
            fsync(&dir)?;
        }
        // Forget the blobs sled collected, so the set stays as small as the directory.
        *synced = present;
        Ok(())
    }
}

/// Fsyncs the file at `path` and returns the length it had before the sync (all of which the
/// sync covers); `None` if it is gone.
fn fsync_file(path: &Path) -> Result<Option<u64>, StoreError> {
    let sync_err = |source| StoreError::Sync {
        path: path.to_path_buf(),
        action: "fsync",
        source,
    };
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(sync_err(e)),
    };
    let len = file.metadata().map_err(sync_err)?.len();
    file.sync_all().map_err(sync_err)?;
    Ok(Some(len))
}

/// The length of the blob at `path`; `None` if it is gone.
fn blob_len(path: &Path) -> Result<Option<u64>, StoreError> {
    match std::fs::metadata(path) {
        Ok(md) => Ok(Some(md.len())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StoreError::Sync {
            path: path.to_path_buf(),
            action: "stat of a blob",
            source,
        }),
    }
}

/// Opens the directory at `path` and fsyncs it.
fn fsync(path: &Path) -> Result<(), StoreError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|source| StoreError::Sync {
            path: path.to_path_buf(),
            action: "fsync",
            source,
        })
}

impl Store {
    /// Opens (or creates) the store in `dir`, retrying per `retry` while another process holds
    /// sled's lock and failing at once on any other error.
    pub async fn open(dir: &Path, retry: Retry) -> Result<Store, StoreError> {
        Store::open_tuned(dir, retry, Tuning::default()).await
    }

    /// [`Store::open`] with explicit sled settings (benchmarks compare them).
    pub async fn open_tuned(dir: &Path, retry: Retry, tuning: Tuning) -> Result<Store, StoreError> {
        open_retrying(dir, retry, move |path| open_blocking(path, tuning)).await
    }

    /// Checks `epoch` against the stored one and records it, durably, before the caller serves
    /// anyone. An equal epoch is accepted, so recording is idempotent; lockd claims a fresh
    /// epoch for every broker it starts, including restarts in place.
    pub async fn fence(&self, epoch: u64) -> Result<(), StoreError> {
        let (meta, flusher, path) = (self.meta.clone(), self.flusher(), self.path.clone());
        self.blocking("recording the epoch", move || {
            if let Some(stored) = read_epoch(&meta, &path)? {
                if stored > epoch {
                    return Err(StoreError::StaleEpoch {
                        ours: epoch,
                        stored,
                    });
                }
            }
            write_epoch(&meta, &flusher, &path, epoch)?;
            Ok(())
        })
        .await
    }

    /// For standalone mode, where no lockd hands out epochs: claims the stored epoch plus one,
    /// durably, and returns it.
    pub async fn claim_next_epoch(&self) -> Result<u64, StoreError> {
        let (meta, flusher, path) = (self.meta.clone(), self.flusher(), self.path.clone());
        self.blocking("claiming the next epoch", move || {
            let epoch = read_epoch(&meta, &path)?.unwrap_or(0) + 1;
            write_epoch(&meta, &flusher, &path, epoch)?;
            Ok(epoch)
        })
        .await
    }

    /// Makes everything written so far durable.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let flusher = self.flusher();
        self.blocking("flushing", move || flusher.flush()).await
    }

    /// The sled database, for the journal (its only writer once the broker serves).
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// What makes the store's writes durable, for the journal's writer.
    pub fn flusher(&self) -> Arc<Flusher> {
        Arc::clone(&self.flusher)
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes the store occupies on disk, for stats; 0 if sled cannot tell.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or_else(|err| {
            debug!(error = %err, "could not measure the store");
            0
        })
    }

    /// Gives the store up without flushing, for when lockd is gone and the process must exit at
    /// once: sled would otherwise flush while its handles drop. Exiting releases sled's lock.
    pub fn abandon(self) {
        std::mem::forget(self);
    }

    /// Runs a blocking sled operation off the async workers.
    async fn blocking<T: Send + 'static>(
        &self,
        action: &'static str,
        op: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        tokio::task::spawn_blocking(op)
            .await
            .map_err(|source| StoreError::Interrupted {
                path: self.path.clone(),
                action,
                source,
            })?
    }
}

/// Opens a store in `dir` with `open` (blocking, off the async threads), retrying per `retry`
/// while it fails with [`StoreError::Locked`] (another process holds the store's lock: the
/// previous broker may still be exiting) and failing at once on any other error.
pub async fn open_retrying<T: Send + 'static>(
    dir: &Path,
    retry: Retry,
    open: impl Fn(PathBuf) -> Result<T, StoreError> + Clone + Send + 'static,
) -> Result<T, StoreError> {
    let started = Instant::now();
    let mut delay = retry.first_delay;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let (path, open) = (dir.to_path_buf(), open.clone());
        let opened = tokio::task::spawn_blocking(move || open(path))
            .await
            .map_err(|source| StoreError::Interrupted {
                path: dir.to_path_buf(),
                action: "opening",
                source,
            })?;
        match opened {
            Ok(store) => return Ok(store),
            Err(StoreError::Locked { .. }) if started.elapsed() + delay <= retry.total => {
                debug!(attempt = attempts, ?delay, path = ?dir, "store is locked by another process; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(retry.max_delay);
            }
            Err(StoreError::Locked { .. }) => {
                return Err(StoreError::Locked {
                    path: dir.to_path_buf(),
                    attempts,
                    waited: started.elapsed(),
                })
            }
            Err(err) => return Err(err),
        }
    }
}

/// Runs blocking work (sled reads and writes) on tokio's blocking threads and returns its result;
/// a panic there goes on in the caller.
pub async fn off_async<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(join) => std::panic::resume_unwind(join.into_panic()),
    }
}

/// One attempt at opening the store.
fn open_blocking(path: PathBuf, tuning: Tuning) -> Result<Store, StoreError> {
    let db = sled::Config::new()
        .path(&path)
        .mode(tuning.mode)
        .cache_capacity(tuning.cache_capacity)
        .segment_size(tuning.segment_size)
        .flush_every_ms(tuning.flush_every_ms)
        .open()
        .map_err(|source| {
            if is_lock_conflict(&source) {
                StoreError::Locked {
                    path: path.clone(),
                    attempts: 1,
                    waited: Duration::ZERO,
                }
            } else {
                StoreError::Sled {
                    path: path.clone(),
                    action: "opening",
                    source,
                }
            }
        })?;
    let meta = db.open_tree(META_TREE).map_err(|source| StoreError::Sled {
        path: path.clone(),
        action: "opening the meta tree",
        source,
    })?;
    let flusher = Arc::new(Flusher::open(db.clone(), &path)?);
    Ok(Store {
        db,
        meta,
        flusher,
        path,
    })
}

/// sled 0.34 reports a held flock only as an `Io` error of kind `Other` with this text (see
/// `Config::try_lock`); a unit test below keeps this in step with the sled version in use.
fn is_lock_conflict(err: &sled::Error) -> bool {
    matches!(err, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

fn read_epoch(meta: &sled::Tree, path: &Path) -> Result<Option<u64>, StoreError> {
    let stored = meta.get(EPOCH_KEY).map_err(|source| StoreError::Sled {
        path: path.to_path_buf(),
        action: "reading the epoch",
        source,
    })?;
    stored
        .map(|bytes| {
            <[u8; 8]>::try_from(bytes.as_ref())
                .map(u64::from_be_bytes)
                .map_err(|_| StoreError::CorruptEpoch { len: bytes.len() })
        })
        .transpose()
}

/// Writes the epoch and flushes: the fence only works if a later broker is sure to see it.
fn write_epoch(
    meta: &sled::Tree,
    flusher: &Flusher,
    path: &Path,
    epoch: u64,
) -> Result<(), StoreError> {
    meta.insert(EPOCH_KEY, &epoch.to_be_bytes())
        .map_err(|source| StoreError::Sled {
            path: path.to_path_buf(),
            action: "recording the epoch",
            source,
        })?;
    flusher.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quick_retry() -> Retry {
        Retry {
            total: Duration::from_millis(300),
            first_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
        }
    }

    #[tokio::test]
    async fn epochs_only_grow() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), quick_retry()).await.unwrap();
        store.fence(5).await.unwrap();
        store.fence(5).await.unwrap();
        let err = store.fence(4).await.unwrap_err();
        assert!(
            matches!(err, StoreError::StaleEpoch { ours: 4, stored: 5 }),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "epoch 4 is older than the store's epoch 5; another node took over"
        );
        store.fence(7).await.unwrap();
        assert_eq!(store.claim_next_epoch().await.unwrap(), 8);
    }

    #[tokio::test]
    async fn the_epoch_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), quick_retry()).await.unwrap();
        assert_eq!(store.claim_next_epoch().await.unwrap(), 1);
        store.fence(9).await.unwrap();
        drop(store);
        let store = Store::open(dir.path(), quick_retry()).await.unwrap();
        assert!(matches!(
            store.fence(8).await,
            Err(StoreError::StaleEpoch { ours: 8, stored: 9 })
        ));
        assert!(store.size_on_disk() > 0);
    }

    #[tokio::test]
    async fn a_locked_store_is_retried_then_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let _holder = Store::open(dir.path(), quick_retry()).await.unwrap();
        let err = Store::open(dir.path(), quick_retry()).await.unwrap_err();
        match &err {
            StoreError::Locked { attempts, .. } => assert!(*attempts > 1, "{err}"),
            other => panic!("expected Locked, got {other:?}"),
        }
        assert!(err.to_string().contains("still locked"), "{err}");
    }

    #[tokio::test]
    async fn a_locked_store_opens_once_released() {
        let dir = tempfile::tempdir().unwrap();
        let holder = Store::open(dir.path(), quick_retry()).await.unwrap();
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(holder);
        });
        let patient = Retry {
            total: Duration::from_secs(30),
            ..quick_retry()
        };
        Store::open(dir.path(), patient).await.unwrap();
        release.await.unwrap();
    }
}
