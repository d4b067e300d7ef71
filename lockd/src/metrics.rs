//! lockd's own metrics in the Prometheus text format (version 0.0.4), served on
//! `metrics_listen` at `/metrics` when that key is set.
//!
//! Nothing here may slow the state machine or the keeper: the state machine publishes a
//! [`Snapshot`] on a watch channel after each event it handles (a copy of a few numbers), and the
//! keeper counts each keepalive's duration in a [`KeepaliveHistogram`] of atomics, which it never
//! waits on. A scrape reads both and encodes them with the Prometheus org's `prometheus-client`
//! crate; a slow or hostile scraper holds up only its own connection (see [`crate::http`]).

use crate::http::{self, Reply};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use shared_proto::admin::Role;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Every role a node can be in, as `ctl status` names them: each is one `lockd_role` series.
const ROLES: [Role; 5] = [
    Role::Passive,
    Role::Starting,
    Role::Active,
    Role::Stopping,
    Role::HoldOff,
];

/// Why a node fenced its broker (killed it because the lock could no longer be trusted): the
/// `reason` label of `lockd_fences_total`, a closed set so the series stay few.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FenceReason {
    /// The lock is certainly gone: its file deleted or replaced, EIO on the locked descriptor.
    LockLost,
    /// A keepalive failed without proving the lock gone (a newer epoch, holder.json naming
    /// another node, an unreadable file, a full disk).
    KeepaliveFailed,
    /// No keepalive completed for `fence_timeout_ms` (a stalled filesystem).
    KeepaliveTimeout,
    /// The keeper reported a new epoch claimed while a broker ran.
    UnexpectedAcquisition,
}

impl FenceReason {
    /// Every reason, in the order of [`Snapshot::fences`].
    pub const ALL: [FenceReason; 4] = [
        FenceReason::LockLost,
        FenceReason::KeepaliveFailed,
        FenceReason::KeepaliveTimeout,
        FenceReason::UnexpectedAcquisition,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            FenceReason::LockLost => "lock_lost",
            FenceReason::KeepaliveFailed => "keepalive_failed",
            FenceReason::KeepaliveTimeout => "keepalive_timeout",
            FenceReason::UnexpectedAcquisition => "unexpected_acquisition",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What the state machine publishes after every event: the figures a scrape reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The role `ctl status` shows.
    pub role: Role,
    /// The epoch held or last held (0 before the first).
    pub epoch: u64,
    /// Times this node took the lock over as a passive (restarts in place not counted).
    pub failovers: u64,
    /// Seconds from starting to compete to holding the lock, at the last takeover.
    pub lock_acquire_seconds: Option<f64>,
    /// Fences by [`FenceReason`], indexed as [`FenceReason::ALL`].
    pub fences: [u64; 4],
    /// Restarts in place of a brokerd that died while this node held the lock.
    pub broker_restarts: u64,
    /// This node has seen the shared filesystem's locks fail to keep another node out.
    pub broken_locks: bool,
}

impl Default for Snapshot {
    fn default() -> Snapshot {
        Snapshot {
            role: Role::Passive,
            epoch: 0,
            failovers: 0,
            lock_acquire_seconds: None,
            fences: [0; 4],
            broker_restarts: 0,
            broken_locks: false,
        }
    }
}

impl Snapshot {
    /// Counts one fence for `reason`.
    pub fn count_fence(&mut self, reason: FenceReason) {
        self.fences[reason.index()] += 1;
    }
}

/// Upper bounds (seconds) of the keepalive histogram's buckets: a local disk's fsync takes well
/// under a millisecond to a few; NFS tens; a stalling server seconds, up to the fence timeout.
pub const KEEPALIVE_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How long each keepalive took (lock file checks, the synced heartbeat write, the epoch and
/// holder.json reads and write), in atomics: the keeper adds to it without ever waiting.
#[derive(Debug, Default)]
pub struct KeepaliveHistogram {
    /// Observations per bucket (not cumulative); the last one counts those above every bound.
    buckets: [AtomicU64; KEEPALIVE_BUCKETS.len() + 1],
    /// Sum of all observations, nanoseconds.
    sum_nanos: AtomicU64,
}

impl KeepaliveHistogram {
    /// Counts one keepalive that took `took`.
    pub fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let bucket = KEEPALIVE_BUCKETS
            .iter()
            .position(|bound| secs <= *bound)
            .unwrap_or(KEEPALIVE_BUCKETS.len());
        // Relaxed: each atomic is a counter of its own; a scrape racing an observation may see
        // the sum without the count or the other way round, by one keepalive.
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
    }

    /// (sum in seconds, count, buckets) with each bucket's own count (the encoder makes them
    /// cumulative), `+Inf` last.
    fn read(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let buckets: Vec<(f64, u64)> = KEEPALIVE_BUCKETS
            .iter()
            .chain([&f64::INFINITY])
            .zip(&self.buckets)
            .map(|(bound, n)| (*bound, n.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        (sum, count, buckets)
    }
}

/// The metrics a scrape reads: the state machine's last snapshot and the keeper's histogram.
#[derive(Debug)]
pub struct Source {
    /// The state machine's figures.
    pub snapshot: watch::Receiver<Snapshot>,
    /// The keeper's keepalive durations.
    pub keepalive: Arc<KeepaliveHistogram>,
}

impl Collector for Source {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // A copy, so the watch's lock is held only for the copy, never while encoding.
        let s = self.snapshot.borrow().clone();
        {
            let mut role = encoder.encode_descriptor(
                "lockd_role",
                "1 for the role this node is in (as ctl status names it), 0 for the others",
                None,
                MetricType::Gauge,
            )?;
            for r in ROLES {
                let label = [("role", r.to_string())];
                role.encode_family(&label)?
                    .encode_gauge(&u64::from(s.role == r))?;
            }
        }
        encoder
            .encode_descriptor(
                "lockd_epoch",
                "The fencing epoch this node holds or last held (0: none yet)",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&s.epoch)?;
        encoder
            .encode_descriptor(
                "lockd_failovers",
                "Times this node took the lock over as a passive",
                None,
                MetricType::Counter,
            )?
            .encode_counter::<NoLabelSet, _, f64>(&s.failovers, None)?;
        if let Some(seconds) = s.lock_acquire_seconds {
            encoder
                .encode_descriptor(
                    "lockd_lock_acquire_seconds",
                    "At the last takeover, seconds from starting to compete for the lock to holding it",
                    None,
                    MetricType::Gauge,
                )?
                .encode_gauge(&seconds)?;
        }
        let (sum, count, buckets) = self.keepalive.read();
        encoder
            .encode_descriptor(
                "lockd_keepalive_duration_seconds",
                "How long each keepalive of the held lock took (lock file checks, synced heartbeat write, epoch and holder.json)",
                None,
                MetricType::Histogram,
            )?
            .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        {
            let mut fences = encoder.encode_descriptor(
                "lockd_fences",
                "Times this node killed its broker because the lock could no longer be trusted, by reason",
                None,
                MetricType::Counter,
            )?;
            for reason in FenceReason::ALL {
                let label = [("reason", reason.label())];
                fences
                    .encode_family(&label)?
                    .encode_counter::<NoLabelSet, _, f64>(&s.fences[reason.index()], None)?;
            }
        }
        encoder
            .encode_descriptor(
                "lockd_broker_restarts",
                "Restarts in place of a brokerd that died while this node held the lock",
                None,
                MetricType::Counter,
            )?
            .encode_counter::<NoLabelSet, _, f64>(&s.broker_restarts, None)?;
        encoder
            .encode_descriptor(
                "lockd_broken_locks",
                "1 once this node saw the shared filesystem's locks fail to keep another node out",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&u64::from(s.broken_locks))?;
        Ok(())
    }
}

/// The registry holding `source`, ready to encode on each scrape.
pub fn registry(source: Source) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(source));
    registry
}

/// The handler of `metrics_listen`: `/metrics` in the Prometheus text format, 404 elsewhere.
pub fn handler(registry: Arc<Registry>) -> http::Handler {
    Arc::new(move |path| match path {
        "/metrics" => {
            let mut body = String::with_capacity(4096);
            match prometheus_client::encoding::prometheus_text::encode(&mut body, &registry) {
                Ok(()) => Reply {
                    status: 200,
                    content_type: prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                    body,
                },
                Err(_) => Reply::text(500, "cannot encode the metrics\n"),
            }
        }
        _ => Reply::text(404, "not found: lockd serves /metrics here\n"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(snapshot: Snapshot, keepalive: Arc<KeepaliveHistogram>) -> String {
        let (_tx, rx) = watch::channel(snapshot);
        let registry = Arc::new(registry(Source {
            snapshot: rx,
            keepalive,
        }));
        let reply = handler(registry)("/metrics");
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.content_type,
            "text/plain; version=0.0.4; charset=utf-8"
        );
        reply.body
    }

    #[test]
    fn a_scrape_names_every_metric_with_units_and_total_suffixes() {
        let mut snapshot = Snapshot {
            role: Role::Active,
            epoch: 7,
            failovers: 2,
            lock_acquire_seconds: Some(0.25),
            broker_restarts: 1,
            broken_locks: true,
            ..Snapshot::default()
        };
        snapshot.count_fence(FenceReason::KeepaliveTimeout);
        let keepalive = Arc::new(KeepaliveHistogram::default());
        keepalive.observe(Duration::from_micros(300));
        keepalive.observe(Duration::from_millis(3));
        keepalive.observe(Duration::from_secs(60));
        let text = scrape(snapshot, keepalive);
        for line in [
            "lockd_role{role=\"active\"} 1",
            "lockd_role{role=\"passive\"} 0",
            "lockd_role{role=\"hold-off\"} 0",
            "lockd_epoch 7",
            "# TYPE lockd_failovers_total counter",
            "lockd_failovers_total 2",
            "lockd_lock_acquire_seconds 0.25",
            "lockd_keepalive_duration_seconds_bucket{le=\"0.0005\"} 1",
            "lockd_keepalive_duration_seconds_bucket{le=\"0.005\"} 2",
            "lockd_keepalive_duration_seconds_bucket{le=\"10\"} 2",
            "lockd_keepalive_duration_seconds_bucket{le=\"+Inf\"} 3",
            "lockd_keepalive_duration_seconds_count 3",
            "lockd_fences_total{reason=\"keepalive_timeout\"} 1",
            "lockd_fences_total{reason=\"lock_lost\"} 0",
            "lockd_broker_restarts_total 1",
            "lockd_broken_locks 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }

    #[test]
    fn before_any_takeover_there_is_no_acquire_time_and_other_paths_are_404() {
        let text = scrape(Snapshot::default(), Arc::default());
        assert!(!text.contains("lockd_lock_acquire_seconds"), "{text}");
        assert!(text.contains("lockd_role{role=\"passive\"} 1"), "{text}");
        let (_tx, rx) = watch::channel(Snapshot::default());
        let registry = Arc::new(registry(Source {
            snapshot: rx,
            keepalive: Arc::default(),
        }));
        assert_eq!(handler(registry)("/").status, 404);
    }
}
