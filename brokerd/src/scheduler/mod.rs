//! The scheduler: ActiveMQ's scheduled delivery (`AMQ_SCHEDULED_DELAY`, `_PERIOD`, `_REPEAT`,
//! `_CRON`), kept in its own store in `scheduler_dir` beside the message store, so that a
//! failover neither loses nor doubles a delivery ([`task`] says how).
//!
//! - [`spec`]: the SEND headers, checked.
//! - [`cron`]: five-field cron expressions.
//! - [`job`]: a job and its next delivery; its encoding.
//! - [`store`]: where jobs are kept in the two stores, and what a takeover reads; [`db`]: the
//!   scheduler's own store (redb); [`pending`]: how many jobs it holds, kept as it commits.
//! - [`task`]: the task that fires deliveries, with its [`cache`] of the jobs due next;
//!   [`service`]: running it beside a broker.
//! - [`manage`]: ActiveMQ's management topic (BROWSE, REMOVE, REMOVEALL).
//! - [`clock`]: wall-clock time, faster in tests.

pub mod cache;
pub mod clock;
pub mod cron;
pub mod db;
pub mod job;
pub mod manage;
pub mod pending;
pub mod service;
pub mod spec;
pub mod store;
pub mod task;

/// What the broker core holds of the scheduler: where to send new jobs, and its clock.
#[derive(Debug, Clone)]
pub struct Link {
    pub commands: tokio::sync::mpsc::UnboundedSender<task::Command>,
    pub clock: clock::Clock,
}

#[cfg(test)]
mod tests;
