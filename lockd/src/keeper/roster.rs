//! The `nodes/` roster: this node's own record and every node's, on a thread of its own.
//!
//! Any node (or anyone who can write `SHARED/nodes/`) may leave a file there that blocks a read:
//! a FIFO, a huge file, a file on a stalled mount. The keepalive must never wait on that
//! (DESIGN invariant 8), so the roster runs here, apart from the keeper thread, and reports
//! through the `nodes` watch channel. A roster stuck on one file only leaves `ctl status`'s view
//! of the cluster stale.

use crate::shared_dir;
use shared_proto::layout::Layout;
use shared_proto::nodes::NodeRecord;
use shared_proto::records;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Starts the roster thread. Send it this node's record at each role change; it rewrites it
/// with a fresh heartbeat every `period` and re-reads everyone's. It ends when the returned
/// sender is dropped.
pub fn spawn(
    layout: Layout,
    period: Duration,
    nodes: watch::Sender<Vec<NodeRecord>>,
) -> std::io::Result<Sender<NodeRecord>> {
    let (updates, update_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("roster".into())
        .spawn(move || run(&layout, period, &update_rx, &nodes))?;
    Ok(updates)
}

fn run(
    layout: &Layout,
    period: Duration,
    updates: &Receiver<NodeRecord>,
    nodes: &watch::Sender<Vec<NodeRecord>>,
) {
    let mut me: Option<NodeRecord> = None;
    let mut next = Instant::now();
    loop {
        match updates.recv_timeout(next.saturating_duration_since(Instant::now())) {
            // A role change is published at once, not at the next period.
            Ok(record) => me = Some(record),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        next = Instant::now() + period;
        if let Some(me) = me.as_mut() {
            me.heartbeat_unix_ms = shared_proto::unix_ms();
            if let Err(e) = shared_dir::write_node(layout, me) {
                tracing::debug!(error = %e, "cannot write this node's record in nodes/");
            }
        }
        match records::read_nodes(layout) {
            Ok(records) => {
                nodes.send_replace(records);
            }
            Err(e) => tracing::debug!(error = %e, "cannot read nodes/"),
        }
    }
}
