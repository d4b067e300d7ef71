//! The cluster as the shared directory shows it: `holder.json`, every `nodes/NODE.json`, and
//! `broken-locks`, read with shared-proto's bounded readers of regular files (never following a
//! link, never blocking on a FIFO).
//!
//! One refresher task ([`refresh`]) owns those reads: every [`Timing::every`] it reads the
//! directory once, on the blocking pool, and publishes the result with the time it was read;
//! requests only look at the latest [`Reading`] ([`View::shown`]). So however many browsers poll,
//! the directory is read once a second, and a stalled shared filesystem (a hung NFS server)
//! delays no request: past [`Timing::timeout`] the last reading is shown marked stale ("cluster
//! view from N s ago: ..."), and no second read starts while the first hangs, so a stall holds
//! one blocking thread, not one per second.

use serde::Serialize;
use shared_proto::admin::HolderView;
use shared_proto::holder::HolderState;
use shared_proto::layout::Layout;
use shared_proto::nodes::NodeView;
use shared_proto::records;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{warn, Instrument};

/// A holder whose heartbeat is older than this is warned about: lockd's default
/// `stale_holder_ms` (brokerd does not know the configured one).
pub const STALE_HOLDER_MS: u64 = 15_000;

/// What the console shows of the cluster.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Cluster {
    pub holder: Option<HolderView>,
    pub nodes: Vec<NodeView>,
    /// What an operator should look at, in words.
    pub warnings: Vec<String>,
}

/// How often the refresher reads, and how long it waits for one read.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// From the end of one read to the start of the next.
    pub every: Duration,
    /// A read not done by then is reported as timed out (and still awaited).
    pub timeout: Duration,
}

impl Default for Timing {
    fn default() -> Timing {
        // The page polls every 1.5 s; a healthy read of three small files takes milliseconds.
        Timing {
            every: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
        }
    }
}

/// The latest reading of the shared directory, as the refresher publishes it.
#[derive(Debug, Clone, Default)]
pub struct Reading {
    /// What the last read that finished found; `None` before one finished.
    pub cluster: Option<Cluster>,
    /// When that read began (Unix ms; the time its ages are counted at).
    pub read_unix_ms: u64,
    /// Why `cluster` is not current: the read since timed out or failed.
    pub problem: Option<String>,
}

/// The cluster as `/api/overview` shows it.
#[derive(Debug, Serialize)]
pub struct Shown {
    /// What the last read found (nothing before one did).
    #[serde(flatten)]
    pub cluster: Cluster,
    /// When it was read; `None`: not yet.
    pub read_unix_ms: Option<u64>,
    /// Why it is not current, with its age, in words; `None` when it is.
    pub stale: Option<String>,
}

/// The refresher's latest reading; cheap to clone. The refresher stops once every clone is
/// dropped.
#[derive(Debug, Clone)]
pub struct View(watch::Receiver<Reading>);

impl View {
    /// The latest reading, as it should be shown at `now_unix_ms`. Never reads the directory.
    pub fn shown(&self, now_unix_ms: u64) -> Shown {
        let reading = self.0.borrow().clone();
        let stale = match (&reading.cluster, reading.problem) {
            (Some(_), None) => None,
            (Some(_), Some(problem)) => Some(format!(
                "cluster view from {} s ago: {problem}",
                now_unix_ms.saturating_sub(reading.read_unix_ms) / 1000
            )),
            (None, Some(problem)) => Some(format!("no cluster view yet: {problem}")),
            (None, None) => Some("no cluster view yet: the shared directory is being read".into()),
        };
        Shown {
            read_unix_ms: reading.cluster.is_some().then_some(reading.read_unix_ms),
            cluster: reading.cluster.unwrap_or_default(),
            stale,
        }
    }
}

/// Starts the refresher of the cluster in `layout`, on [`Timing::default`].
pub fn follow(layout: Layout) -> View {
    refresh(move || read_blocking(&layout), Timing::default())
}

/// Starts a refresher that reads with `read` (blocking; run on the blocking pool) as `timing`
/// says, until every [`View`] is dropped.
pub fn refresh(read: impl Fn() -> Cluster + Send + Sync + 'static, timing: Timing) -> View {
    let (readings, view) = watch::channel(Reading::default());
    tokio::spawn(run(Arc::new(read), readings, timing).in_current_span());
    View(view)
}

/// The refresher: one read at a time, each published as it ends.
async fn run(
    read: Arc<dyn Fn() -> Cluster + Send + Sync>,
    readings: watch::Sender<Reading>,
    timing: Timing,
) {
    loop {
        let began = shared_proto::unix_ms();
        let reader = Arc::clone(&read);
        let mut reading = tokio::task::spawn_blocking(move || reader());
        let timed = tokio::select! {
            () = readings.closed() => return,
            timed = tokio::time::timeout(timing.timeout, &mut reading) => timed,
        };
        let ended = match timed {
            Ok(ended) => ended,
            Err(_) => {
                let problem = format!(
                    "reading the shared directory timed out (no answer within {} s; is its \
                     filesystem stalled?)",
                    timing.timeout.as_secs_f64()
                );
                warn!(%problem, "console cluster view");
                readings.send_modify(|r| r.problem = Some(problem));
                // The same read, however long it takes: a new one would hang as well.
                tokio::select! {
                    () = readings.closed() => return,
                    ended = &mut reading => ended,
                }
            }
        };
        match ended {
            Ok(cluster) => {
                readings.send_replace(Reading {
                    cluster: Some(cluster),
                    read_unix_ms: began,
                    problem: None,
                });
            }
            Err(err) => {
                let problem = format!("reading the shared directory failed: {err}");
                readings.send_modify(|r| r.problem = Some(problem));
            }
        }
        tokio::select! {
            () = readings.closed() => return,
            () = tokio::time::sleep(timing.every) => {}
        }
    }
}

/// Reads the cluster from `layout` (blocking).
fn read_blocking(layout: &Layout) -> Cluster {
    let now = shared_proto::unix_ms();
    let mut cluster = Cluster::default();
    match records::read_holder(layout) {
        Ok(Some(holder)) => {
            let age = now.saturating_sub(holder.heartbeat_unix_ms);
            if holder.state != HolderState::Released && age > STALE_HOLDER_MS {
                cluster.warnings.push(format!(
                    "stale holder: {} (epoch {}) has not heartbeaten for {} s; is its lockd \
                     running? (`ctl status` on that node)",
                    holder.node,
                    holder.epoch,
                    age / 1000
                ));
            }
            cluster.holder = Some(holder.view(now));
        }
        Ok(None) => {}
        Err(err) => cluster.warnings.push(err.to_string()),
    }
    match records::read_nodes(layout) {
        Ok(records) => cluster.nodes = records.iter().map(|r| r.view(now)).collect(),
        Err(err) => cluster
            .warnings
            .push(format!("{}: {err}", layout.nodes().display())),
    }
    match records::read_broken_locks(layout) {
        Ok(Some(record)) => cluster.warnings.push(format!(
            "broken locks: the shared filesystem's locks did not keep another node out ({record}); \
             run `ctl check-lock` on every node's mount"
        )),
        Ok(None) => {}
        Err(err) => cluster.warnings.push(format!("broken locks: {err}")),
    }
    cluster
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use std::time::Instant;

    /// Far beyond anything these tests wait for when all is well.
    const BOUND: Duration = Duration::from_secs(10);

    /// A cluster that says which read found it.
    fn found(read: usize) -> Cluster {
        Cluster {
            warnings: vec![format!("read {read}")],
            ..Cluster::default()
        }
    }

    /// Waits (bounded) until `view` shows what `done` accepts.
    async fn until(view: &View, what: &str, done: impl Fn(&Shown) -> bool) -> Shown {
        let started = Instant::now();
        loop {
            let shown = view.shown(shared_proto::unix_ms());
            if done(&shown) {
                return shown;
            }
            assert!(started.elapsed() < BOUND, "no {what}: {shown:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn requests_share_one_reading_and_never_read_the_directory_themselves() {
        let reads = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&reads);
        let timing = Timing {
            every: Duration::from_secs(3600),
            timeout: BOUND,
        };
        let view = refresh(
            move || found(counted.fetch_add(1, Ordering::SeqCst) + 1),
            timing,
        );
        let first = until(&view, "first reading", |s| s.read_unix_ms.is_some()).await;
        let second = view.shown(shared_proto::unix_ms());
        assert_eq!(first.cluster.warnings, ["read 1"]);
        assert_eq!(second.cluster.warnings, ["read 1"]);
        assert_eq!(first.read_unix_ms, second.read_unix_ms);
        assert_eq!((first.stale, second.stale), (None, None));
        assert_eq!(reads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_read_that_hangs_leaves_the_last_reading_shown_as_stale_and_starts_no_other() {
        let reads = Arc::new(AtomicUsize::new(0));
        // Every read after the first waits for this to be dropped, as on a hung mount.
        let (release, hung) = std::sync::mpsc::channel::<()>();
        let hung = Mutex::new(hung);
        let counted = Arc::clone(&reads);
        let timing = Timing {
            every: Duration::from_millis(10),
            timeout: Duration::from_millis(100),
        };
        let view = refresh(
            move || {
                let read = counted.fetch_add(1, Ordering::SeqCst) + 1;
                if read > 1 {
                    let _ = hung.lock().unwrap().recv();
                }
                found(read)
            },
            timing,
        );
        let stale = until(&view, "stale marker", |s| {
            s.stale.is_some() && s.read_unix_ms.is_some()
        })
        .await;
        let note = stale.stale.unwrap();
        assert!(note.starts_with("cluster view from "), "{note}");
        assert!(
            note.contains("reading the shared directory timed out"),
            "{note}"
        );
        assert_eq!(stale.cluster.warnings, ["read 1"]);
        // Many intervals later, still the one hung read.
        tokio::time::sleep(timing.timeout * 3).await;
        assert_eq!(reads.load(Ordering::SeqCst), 2);

        drop(release);
        let fresh = until(&view, "fresh reading", |s| s.stale.is_none()).await;
        assert_ne!(fresh.cluster.warnings, ["read 1"]);
    }

    #[test]
    fn a_view_never_read_says_so() {
        let (_readings, view) = watch::channel(Reading::default());
        let shown = View(view).shown(0);
        assert_eq!(shown.read_unix_ms, None);
        assert!(shown.stale.unwrap().starts_with("no cluster view yet"));
    }
}
