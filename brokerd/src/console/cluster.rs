//! The cluster as the shared directory shows it: `holder.json`, every `nodes/NODE.json`, and
//! `broken-locks`, read with shared-proto's bounded readers of regular files (never following a
//! link, never blocking on a FIFO), off the async threads: a stalled shared filesystem delays
//! only the console's answer, never the broker.

use serde::Serialize;
use shared_proto::admin::HolderView;
use shared_proto::holder::HolderState;
use shared_proto::layout::Layout;
use shared_proto::nodes::NodeView;
use shared_proto::records;

/// A holder whose heartbeat is older than this is warned about: lockd's default
/// `stale_holder_ms` (brokerd does not know the configured one).
pub const STALE_HOLDER_MS: u64 = 15_000;

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
