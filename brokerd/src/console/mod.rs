//! The web console and `/metrics` (`--console-listen`), served by the active broker only.
//!
//! Like ActiveMQ's console on its port 8161: the cluster as the shared directory shows it, the
//! destinations as `ctl destinations` lists them, a queue's messages, purging a queue, sending a
//! test message, and the scheduler's pending jobs, kept live by a small script that polls JSON.
//! `/metrics` is open (numbers only, as RabbitMQ's); everything else needs the login of a user of
//! the users file in the console group.
//!
//! Invariants kept here:
//! - the listener is bound only after the STOMP listeners (the store opened, the epoch fenced),
//!   and closed as soon as the broker is asked to stop ([`Console`] drops);
//! - the console asks the broker core through its inbox, as a session does, one request per
//!   page refresh or scrape, with a bounded wait; it never blocks the core;
//! - one task reads the shared directory, once a second, off the async threads ([`cluster`]);
//!   requests show its latest reading, marked stale when a read timed out or failed;
//! - at most [`Limits::connections`] connections at once, each request head read, each request
//!   answered and each answer taken within its deadline ([`connections`]);
//! - every value rendered into HTML is escaped ([`shared_proto::html::escape`]), message bodies are cut to
//!   [`core_calls::PREVIEW_BYTES`], and the script writes text, never markup.

mod api;
mod cluster;
mod connections;
mod core_calls;
pub mod metrics;
mod pages;
mod server;
mod session;
mod write_deadline;

pub use connections::Limits;
pub use server::{bind, Bound, Console};

use crate::auth::Security;
use crate::broker::Request;
use crate::reload::Current;
use crate::scheduler::pending::PendingJobs;
use crate::schedules::Schedules;
use crate::stats::Stats;
use shared_proto::layout::Layout;
use std::sync::Arc;
use tokio::sync::mpsc;

/// The group whose users may log in to the console, unless `--console-group` names another.
pub const DEFAULT_GROUP: &str = "admins";

/// What the console serves from, once the broker core runs.
pub struct Parts {
    /// This node's name and epoch, shown on every page.
    pub node: String,
    pub epoch: u64,
    /// The broker core's inbox.
    pub broker: mpsc::Sender<Request>,
    /// Connection counters.
    pub stats: Arc<Stats>,
    /// The message store, measured for `brokerd_store_bytes`.
    pub store: sled::Db,
    /// The scheduler's requests (`ctl schedules` uses the same).
    pub schedules: Schedules,
    /// The scheduler's number of pending jobs, for `brokerd_scheduler_pending_jobs`.
    pub pending_jobs: PendingJobs,
    /// `--memory-limit-mb`, in bytes.
    pub memory_limit: u64,
    /// The journal's flush latency, observed by its writer.
    pub flush_seconds: prometheus_client::metrics::histogram::Histogram,
    /// The shared directory, for the cluster view; `None` standalone.
    pub shared: Option<Layout>,
    /// The users file, as reloaded on SIGHUP.
    pub security: Current<Security>,
    /// Users of this group may log in.
    pub group: String,
}

/// What every request handler shares.
struct Shared {
    parts: Parts,
    sessions: session::Sessions,
    /// The cluster as last read from the shared directory; `None` standalone.
    cluster: Option<cluster::View>,
    /// Console connections to the core are numbered from here ([`core_calls`]).
    next_conn: std::sync::atomic::AtomicU64,
}
