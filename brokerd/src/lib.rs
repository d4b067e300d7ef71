//! brokerd's parts, as a library: the binary (`main.rs`) runs them, and the recovery benchmark
//! (`examples/recovery_bench.rs`) measures the store through the same code.
//!
//! - [`lifecycle`]: a broker's life under lockd or standalone: activate, serve, stop.
//! - [`control`]: the control channel to lockd.
//! - [`confine`]: Landlock, so that brokerd can write only to its store directories.
//! - [`store`] and [`journal`]: the sled store, the epoch fence, durable writes with group commit.
//! - [`fence`]: under lockd, a fast poll of the shared directory's epoch that ends a broker
//!   superseded on broken cluster locks.
//! - [`broker`]: the broker core, one task owning every destination and subscription.
//! - [`scheduler`]: scheduled delivery (ActiveMQ's `AMQ_SCHEDULED_*`), with its own store;
//!   [`schedules`]: lockd's requests to list and cancel its jobs (`ctl schedules`).
//! - [`destination_calls`]: lockd's calls to list, purge and delete destinations.
//! - [`server`] and [`stomp`]: listeners, sessions and the STOMP codec; [`tls`]: certificates
//!   for `ssl://` listeners, reloaded on SIGHUP ([`reload`]).
//! - [`memory`]: the producers' memory limit, and producers waiting at it.
//! - [`stats`]: counters for `ctl status`.
//! - [`console`]: the web console and `/metrics` on `--console-listen`, while active.

pub mod admission;
pub mod auth;
pub mod broker;
pub mod confine;
pub mod console;
pub mod control;
pub mod destination_calls;
pub mod fence;
pub mod journal;
pub mod lifecycle;
pub mod memory;
pub mod reload;
pub mod scheduler;
pub mod schedules;
pub mod server;
pub mod stats;
pub mod stomp;
pub mod store;
pub mod tls;
