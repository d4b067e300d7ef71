//! `SHARED/holder.json`: who holds the lock, written atomically by the active lockd only.
//!
//! Every node reads it to show the cluster and to end a failover hold-off early. It is
//! information, not a lock: fencing relies on the lock and the epoch, never on this file.

use serde::{Deserialize, Serialize};

/// File name inside the shared directory.
pub const FILE: &str = "holder.json";

/// Whether the holder's broker already serves clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HolderState {
    Starting,
    Active,
    /// The holder gave the lock back on purpose (failover, shutdown): not a live holder, even
    /// though its heartbeat has stopped only just now.
    Released,
}

impl std::fmt::Display for HolderState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HolderState::Starting => "starting",
            HolderState::Active => "active",
            HolderState::Released => "released",
        })
    }
}

/// Contents of `holder.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub node: String,
    pub host: String,
    pub pid: u32,
    pub epoch: u64,
    pub state: HolderState,
    /// When this node took the lock, Unix milliseconds.
    pub since_unix_ms: u64,
    /// Last keepalive that found the lock intact, Unix milliseconds (holder's clock).
    pub heartbeat_unix_ms: u64,
}

impl Holder {
    /// The holder as seen at `now_unix_ms` by a reader.
    pub fn view(&self, now_unix_ms: u64) -> crate::admin::HolderView {
        crate::admin::HolderView {
            node: self.node.clone(),
            host: self.host.clone(),
            pid: self.pid,
            epoch: self.epoch,
            state: self.state,
            since_unix_ms: self.since_unix_ms,
            heartbeat_age_ms: now_unix_ms.saturating_sub(self.heartbeat_unix_ms),
        }
    }
}

/// The most `holder.json` may hold; a real one is about 200 bytes. Bounded so a planted file
/// cannot stall a keepalive or swell `ctl status` past the admin protocol's line limit.
pub const LIMIT: usize = 2048;
