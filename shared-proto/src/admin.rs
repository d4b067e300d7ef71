//! ctl <-> lockd, over lockd's Unix control socket.
//!
//! One connection carries `Hello` each way, then any number of request/response pairs. lockd
//! checks the peer's credentials (SO_PEERCRED) before any request that changes something.

use crate::control::{BrokerStats, Confinement};
use crate::destinations::{DestinationAnswer, DestinationCall};
use crate::schedules::{Cancel, Listing};
use serde::{Deserialize, Serialize};

/// Environment variable that names lockd's control socket for ctl.
pub const SOCKET_ENV: &str = "LOCKD_SOCKET";

/// Requests ctl sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// First message; lockd refuses another protocol version.
    Hello { version: u32 },
    /// Report this node's [`Status`]. Allowed for anyone who can reach the socket.
    Status,
    /// Controlled handover: stop the broker gracefully, release the lock, and hold off so a peer
    /// takes over. Admins only.
    Failover,
    /// Up to `limit` pending scheduled jobs, answered by `Schedules`; only the active node can
    /// answer. Allowed like `Status`.
    Schedules { limit: u32 },
    /// Cancel scheduled jobs, answered by `SchedulesCancelled` once durable. Admins only.
    CancelSchedules { which: Cancel },
    /// A destination call, answered by `Destinations`; only the active node can answer.
    /// Listing is allowed like `Status`; purging and deleting are for admins only.
    Destinations { call: DestinationCall },
}

/// Responses lockd sends, one per request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Response {
    /// Answer to `Hello`, naming the node so ctl can say whom it talks to.
    Hello { version: u32, node: String },
    /// Answer to `Status` (boxed: it dwarfs the other responses).
    Status { status: Box<Status> },
    /// The failover began: this node gave up `epoch` and holds off for `hold_off_ms`.
    FailoverStarted { epoch: u64, hold_off_ms: u64 },
    /// Answer to `Schedules`.
    Schedules { listing: Listing },
    /// Answer to `CancelSchedules`: this many jobs are durably gone.
    SchedulesCancelled { removed: u64 },
    /// Answer to `Destinations`.
    Destinations { answer: DestinationAnswer },
    /// The request was refused or failed; `code` is stable for scripts, `message` says what to do.
    Error { code: ErrorCode, message: String },
}

/// Why a request failed, for scripts that must tell cases apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The peer may not do this (not root, lockd's user or the admin group).
    Denied,
    /// The request does not fit this node's role (e.g. failover on a passive node).
    WrongRole,
    /// The request could not be parsed or came out of order.
    BadRequest,
    /// Another protocol version.
    Version,
    /// The broker could not answer: its scheduler has not started yet or failed, or it did not
    /// answer in time. Retrying later may help.
    Unavailable,
}

/// The role of a node, as DESIGN.md's lifecycle names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Waiting for the lock; no client port open.
    Passive,
    /// Holds the lock; brokerd is opening its store and listeners.
    Starting,
    /// Holds the lock; brokerd serves clients.
    Active,
    /// Stopping brokerd before releasing the lock.
    Stopping,
    /// Released the lock on purpose and does not compete for it yet.
    HoldOff,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Passive => "passive",
            Role::Starting => "starting",
            Role::Active => "active",
            Role::Stopping => "stopping",
            Role::HoldOff => "hold-off",
        })
    }
}

/// One node's view of itself and of the lock holder. Field names are a stable interface for
/// scripts (`ctl status --json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Status {
    pub node: String,
    pub role: Role,
    /// The epoch this node holds, or last held.
    pub epoch: Option<u64>,
    /// When the node entered its current role, in Unix milliseconds.
    pub since_unix_ms: u64,
    /// Why the node entered its current role.
    pub reason: String,
    pub lockd_pid: u32,
    pub broker_pid: Option<u32>,
    /// The broker's bound client listeners, "host:port"; empty unless active.
    pub listeners: Vec<String>,
    /// Broker restarts in place within the current restart window.
    pub restarts: u32,
    pub shared_dir: String,
    /// The lock holder as `holder.json` tells it, seen from this node.
    pub holder: Option<HolderView>,
    /// What the broker holds; present when active.
    pub broker: Option<BrokerStats>,
    /// Which writes the kernel refuses the broker, as it reported when it became ready;
    /// present when active. When not fully enforced, `warnings` says what to do.
    #[serde(default)]
    pub confinement: Option<Confinement>,
    /// Every node's own account, from `nodes/`, this one included.
    #[serde(default)]
    pub nodes: Vec<crate::nodes::NodeView>,
    /// Problems an operator should act on, each saying what to do (e.g. a holder whose
    /// heartbeat stopped while its lock lingers).
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// The lock holder as another node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HolderView {
    pub node: String,
    pub host: String,
    pub pid: u32,
    pub epoch: u64,
    /// `starting` or `active`.
    pub state: crate::holder::HolderState,
    pub since_unix_ms: u64,
    /// Milliseconds since the holder's last heartbeat, by this node's clock.
    pub heartbeat_age_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_serialises_as_the_documented_names() {
        let names: Vec<String> = [
            Role::Passive,
            Role::Starting,
            Role::Active,
            Role::Stopping,
            Role::HoldOff,
        ]
        .iter()
        .map(|r| {
            assert_eq!(serde_json::to_string(r).unwrap(), format!("\"{r}\""));
            r.to_string()
        })
        .collect();
        assert_eq!(
            names,
            ["passive", "starting", "active", "stopping", "hold-off"]
        );
    }
}
