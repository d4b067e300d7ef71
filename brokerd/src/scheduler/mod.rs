//! The scheduler: ActiveMQ's scheduled delivery.

pub mod cron;
