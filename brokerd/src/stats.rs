//! Counters that describe the running broker, for lockd's `Stats` request and `ctl status`.
//!
//! Plain atomics: they are written by every connection task and only ever summed up for a
//! report, so no broker state hides behind them and no lock is needed.

use shared_proto::control::BrokerStats;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// The broker's counters since it became ready.
#[derive(Debug)]
pub struct Stats {
    connections: AtomicU64,
    connections_total: AtomicU64,
    frames_received: AtomicU64,
    ready_at: Instant,
}

/// Counts one open connection for as long as it lives, so the count stays right however the
/// connection's task ends (including when it is aborted at the end of a graceful stop).
#[derive(Debug)]
pub struct OpenConnection {
    stats: Arc<Stats>,
}

impl Stats {
    /// Counters starting now, when the broker reports Ready.
    pub fn start() -> Self {
        Stats {
            connections: AtomicU64::new(0),
            connections_total: AtomicU64::new(0),
            frames_received: AtomicU64::new(0),
            ready_at: Instant::now(),
        }
    }

    /// Records an accepted client connection until the returned guard is dropped.
    pub fn open_connection(self: &Arc<Self>) -> OpenConnection {
        self.connections.fetch_add(1, Ordering::Relaxed);
        self.connections_total.fetch_add(1, Ordering::Relaxed);
        OpenConnection {
            stats: Arc::clone(self),
        }
    }

    /// Client connections open now, for the connection limit.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Records one frame read from a client.
    pub fn frame_received(&self) {
        self.frames_received.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters as the control protocol reports them, with the store's size on disk.
    pub fn snapshot(&self, store_bytes: u64, counts: crate::broker::Counts) -> BrokerStats {
        BrokerStats {
            destinations: counts.destinations,
            messages: counts.messages,
            consumers: counts.consumers,
            memory_bytes: counts.memory_bytes,
            connections: self.connections(),
            connections_total: self.connections_total.load(Ordering::Relaxed),
            frames_received: self.frames_received.load(Ordering::Relaxed),
            store_bytes,
            uptime_ms: u64::try_from(self.ready_at.elapsed().as_millis()).unwrap_or(u64::MAX),
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.stats.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_connections_are_counted_until_dropped() {
        let stats = Arc::new(Stats::start());
        let first = stats.open_connection();
        let second = stats.open_connection();
        stats.frame_received();
        assert_eq!(stats.connections(), 2);
        drop(first);
        let snapshot = stats.snapshot(42, Default::default());
        assert_eq!(snapshot.connections, 1);
        assert_eq!(snapshot.connections_total, 2);
        assert_eq!(snapshot.frames_received, 1);
        assert_eq!(snapshot.store_bytes, 42);
        drop(second);
        assert_eq!(stats.connections(), 0);
    }
}
