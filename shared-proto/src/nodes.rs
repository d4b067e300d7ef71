//! `SHARED/nodes/NODE.json`: every node's own account of itself, active or passive.
//!
//! Each lockd rewrites its file atomically on every role change and every keepalive period, so
//! any node can show the whole cluster, and an operator can tell a node that is down (old
//! heartbeat) from one that is merely passive.

use crate::admin::Role;
use serde::{Deserialize, Serialize};

/// The directory inside the shared directory.
pub const DIR: &str = "nodes";

/// The most one node's file may hold; a real one is a few hundred bytes.
pub const RECORD_LIMIT: usize = 2048;

/// At most this many records are read (the first by file name): with [`RECORD_LIMIT`] this
/// keeps `ctl status` below the admin protocol's 64 KiB line limit whatever `nodes/` holds.
pub const MAX_RECORDS: usize = 16;

/// At most this many entries of `nodes/` are looked at, so a directory filled with junk costs a
/// bounded listing.
pub const MAX_ENTRIES: usize = 1024;

/// Contents of one node's file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub node: String,
    pub host: String,
    pub lockd_pid: u32,
    pub role: Role,
    pub epoch: Option<u64>,
    /// When the node entered its role, Unix milliseconds (its own clock).
    pub since_unix_ms: u64,
    /// Why it is in that role.
    pub reason: String,
    /// Last time the node's lockd wrote this file, Unix milliseconds (its own clock).
    pub heartbeat_unix_ms: u64,
}

/// A node as another node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    pub node: String,
    pub host: String,
    pub lockd_pid: u32,
    pub role: Role,
    pub epoch: Option<u64>,
    pub since_unix_ms: u64,
    pub reason: String,
    /// Milliseconds since the node's last heartbeat, by the reader's clock.
    pub heartbeat_age_ms: u64,
}

impl NodeRecord {
    /// The record as seen at `now_unix_ms` by a reader.
    pub fn view(&self, now_unix_ms: u64) -> NodeView {
        NodeView {
            node: self.node.clone(),
            host: self.host.clone(),
            lockd_pid: self.lockd_pid,
            role: self.role,
            epoch: self.epoch,
            since_unix_ms: self.since_unix_ms,
            reason: self.reason.clone(),
            heartbeat_age_ms: now_unix_ms.saturating_sub(self.heartbeat_unix_ms),
        }
    }
}
