//! The cluster as the shared directory shows it: `holder.json`, every `nodes/NODE.json`, and
//! `broken-locks`, read with shared-proto's bounded readers of regular files (never following a
//! link, never blocking on a FIFO), off the async threads: a stalled shared filesystem delays
//! only the console's answer, never the broker.

use serde::Serialize;
use shared_proto::admin::HolderView;
use shared_proto::holder::{self, Holder, HolderState};
use shared_proto::layout::Layout;
use shared_proto::nodes::{self, NodeRecord, NodeView};
use shared_proto::shared_file;
use std::io;

/// A holder whose heartbeat is older than this is warned about: lockd's default
/// `stale_holder_ms` (brokerd does not know the configured one).
pub const STALE_HOLDER_MS: u64 = 15_000;

/// Bytes of `broken-locks` shown, at most.
const BROKEN_LOCKS_SHOWN: usize = 1024;

/// What the console shows of the cluster.
#[derive(Debug, Default, Serialize)]
pub struct Cluster {
    pub holder: Option<HolderView>,
    pub nodes: Vec<NodeView>,
    /// What an operator should look at, in words.
    pub warnings: Vec<String>,
}

/// Reads the cluster from `layout`, off the async threads.
pub async fn read(layout: Layout) -> Cluster {
    tokio::task::spawn_blocking(move || read_blocking(&layout))
        .await
        .unwrap_or_else(|err| Cluster {
            warnings: vec![format!("reading the shared directory failed: {err}")],
            ..Cluster::default()
        })
}

fn read_blocking(layout: &Layout) -> Cluster {
    let now = shared_proto::unix_ms();
    let mut cluster = Cluster::default();
    match read_holder(layout) {
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
    match read_nodes(layout) {
        Ok(records) => cluster.nodes = records.iter().map(|r| r.view(now)).collect(),
        Err(err) => cluster
            .warnings
            .push(format!("{}: {err}", layout.nodes().display())),
    }
    match shared_file::read_prefix(&layout.broken_locks(), BROKEN_LOCKS_SHOWN) {
        Ok(prefix) => cluster.warnings.push(format!(
            "broken locks: the shared filesystem's locks did not keep another node out ({}); \
             run `ctl check-lock` on every node's mount",
            String::from_utf8_lossy(&prefix.bytes).trim()
        )),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        // Present in any form, it still means the locks are broken.
        Err(err) => cluster.warnings.push(format!("broken locks: {err}")),
    }
    cluster
}

fn read_holder(layout: &Layout) -> io::Result<Option<Holder>> {
    let path = layout.holder();
    match shared_file::read_regular(&path, holder::LIMIT) {
        Ok(text) => serde_json::from_slice(&text).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: not a holder record: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// At most [`nodes::MAX_RECORDS`] node files among the first [`nodes::MAX_ENTRIES`] entries,
/// by name; one that cannot be read or parsed is skipped, as `ctl status` does.
fn read_nodes(layout: &Layout) -> io::Result<Vec<NodeRecord>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(layout.nodes())?.take(nodes::MAX_ENTRIES) {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.ends_with(".json") && !name.starts_with('.') {
            names.push(name);
        }
    }
    names.sort();
    let records = names
        .iter()
        .filter_map(|name| {
            let text = shared_file::read_regular(&layout.nodes().join(name), nodes::RECORD_LIMIT);
            serde_json::from_slice::<NodeRecord>(&text.ok()?).ok()
        })
        .take(nodes::MAX_RECORDS)
        .collect();
    Ok(records)
}
