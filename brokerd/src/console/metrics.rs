//! `/metrics`: the broker's figures in the Prometheus (OpenMetrics) text format, names prefixed
//! `brokerd_`, units in the names, counters ending `_total`.
//!
//! Each scrape asks the core once ([`Request::Figures`](crate::broker::Request::Figures)) and
//! encodes a registry built for that scrape; figures kept between scrapes are the journal's
//! flush histogram, which its writer thread observes, and the scheduler's pending jobs, which
//! its store's writer keeps ([`crate::scheduler::pending`]): a scrape never asks the scheduler.
//! Counters count since this broker became active: a takeover starts them again at zero
//! (Prometheus' `rate()` and `increase()` handle the reset), while gauges such as a
//! destination's depth are recovered from the store.

use super::{core_calls, Shared};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use shared_proto::destinations::Kind;

/// The content type of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels of a destination's figures.
type Labels = Vec<(&'static str, String)>;

/// A new flush-latency histogram for the journal to observe: 0.25 ms to about 4 s.
pub fn flush_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 15))
}

/// The text of one scrape; an error when the core does not answer (it is stopping).
pub(super) async fn scrape(shared: &Shared) -> Result<String, String> {
    let figures = core_calls::figures(shared)
        .await
        .ok_or("the broker core did not answer: this node is stopping")?;
    let parts = &shared.parts;
    let store = parts.store.clone();
    let store_bytes = tokio::task::spawn_blocking(move || store.size_on_disk().unwrap_or(0))
        .await
        .unwrap_or(0);

    let mut registry = Registry::with_prefix("brokerd");
    let gauge = |registry: &mut Registry, name: &str, help: &str, value: u64| {
        let metric = Gauge::<i64>::default();
        metric.set(i64::try_from(value).unwrap_or(i64::MAX));
        registry.register(name, help, metric);
    };
    let counter = |registry: &mut Registry, name: &str, help: &str, value: u64| {
        let metric = Counter::<u64>::default();
        metric.inc_by(value);
        // Registered without `_total`: the encoder adds it to a counter's sample.
        registry.register(name, help, metric);
    };
    let stats = parts.stats.snapshot(store_bytes, figures.counts);
    gauge(
        &mut registry,
        "connections",
        "Client connections open now",
        stats.connections,
    );
    counter(
        &mut registry,
        "connections_accepted",
        "Client connections accepted since this broker became active",
        stats.connections_total,
    );
    let depth = Family::<Labels, Gauge<i64>>::default();
    let enqueued = Family::<Labels, Counter<u64>>::default();
    let dequeued = Family::<Labels, Counter<u64>>::default();
    for d in &figures.destinations {
        let kind = match d.kind {
            Kind::Queue => "queue",
            Kind::Topic => "topic",
        };
        let labels = vec![("destination", d.name.clone()), ("kind", kind.to_owned())];
        depth
            .get_or_create(&labels)
            .set(i64::try_from(d.depth).unwrap_or(i64::MAX));
        enqueued.get_or_create(&labels).inc_by(d.enqueued);
        dequeued.get_or_create(&labels).inc_by(d.dequeued);
    }
    registry.register(
        "destination_messages",
        "Messages waiting on a destination (in memory, paged out, or delivered and unacknowledged)",
        depth,
    );
    registry.register(
        "destination_enqueued",
        "Messages sent to a destination since this broker became active",
        enqueued,
    );
    registry.register(
        "destination_dequeued",
        "Messages done with on a destination (acknowledged, purged, expired, dead-lettered) since this broker became active",
        dequeued,
    );
    counter(
        &mut registry,
        "redelivered",
        "Messages that came back for another delivery (NACK, consumer gone)",
        figures.redelivered,
    );
    counter(
        &mut registry,
        "dead_lettered",
        "Messages moved to a dead-letter queue",
        figures.dead_lettered,
    );
    gauge(
        &mut registry,
        "store_bytes",
        "Bytes the message store occupies on disk",
        store_bytes,
    );
    registry.register(
        "store_flush_seconds",
        "Time of each journal flush (the sync that makes a batch of writes durable)",
        parts.flush_seconds.clone(),
    );
    gauge(
        &mut registry,
        "memory_bytes",
        "Bytes of waiting messages held in memory, counted against the memory limit",
        stats.memory_bytes,
    );
    gauge(
        &mut registry,
        "memory_limit_bytes",
        "The memory limit (--memory-limit-mb) past which producers wait",
        parts.memory_limit,
    );
    // Absent until the scheduler's store has opened (it opens once the broker serves), or while
    // a store an older brokerd wrote is counted for the first time.
    if let Some(jobs) = parts.pending_jobs.get() {
        gauge(
            &mut registry,
            "scheduler_pending_jobs",
            "Scheduled jobs not yet delivered for the last time or removed, as the scheduler's store last committed",
            jobs,
        );
    }
    let mut text = String::new();
    encode(&mut text, &registry).map_err(|e| format!("encoding the metrics: {e}"))?;
    Ok(text)
}
