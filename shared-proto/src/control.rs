//! lockd <-> brokerd, over the socketpair lockd hands its child as an inherited descriptor.
//!
//! Order of a broker's life: both sides send `Hello`; lockd sends `Activate` with the fencing
//! epoch it claimed; brokerd opens the store, then its listeners, and answers `Ready`. lockd may
//! ask for `Stats` at any time and ends with `Stop`; brokerd says `Stopping` with its reason before
//! it exits. EOF in either direction means the other side is gone: brokerd exits at once.
//!
//! Liveness (DESIGN invariant 7): once the broker is `Ready`, lockd sends `Ping`s until it sends
//! `Stop`. brokerd answers each with a `Pong` of the same `seq` only after its broker core, the
//! task that owns the broker's state, has handled the ping, so a broker whose control channel
//! still reads but whose core is stuck stays silent, and lockd replaces it like a crashed one.
//!
//! Scheduler requests (v3, for `ctl schedules`) and destination calls (v4, for `ctl
//! destinations`, `purge` and `delete`) carry an `id` that their answer repeats, since they are
//! answered out of order with the rest.

use crate::destinations::{DestinationAnswer, DestinationCall};
use crate::schedules::{Cancel, Listing};
use serde::{Deserialize, Serialize};

/// Environment variable through which lockd tells brokerd which descriptor is the control socket.
pub const CONTROL_FD_ENV: &str = "LOCKD_CONTROL_FD";

/// Messages lockd sends to its brokerd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ToBroker {
    /// First message; brokerd refuses another protocol version.
    Hello { version: u32 },
    /// lockd holds the lock under this epoch: open the store (refusing an older epoch than the
    /// stored one), then the listeners, then answer `Ready`.
    Activate { epoch: u64 },
    /// Report [`BrokerStats`] now.
    Stats,
    /// Stop gracefully: refuse new work, finish what was accepted, flush the store, close, exit 0,
    /// all within `deadline_ms`, after which lockd kills the process.
    Stop { deadline_ms: u64, reason: String },
    /// Answer `Pong { seq }` once the broker core has handled this ping: proof that the broker
    /// still serves, not only that its control socket is read.
    Ping { seq: u64 },
    /// Up to `limit` pending scheduled jobs (`ctl schedules`); answered by `Schedules` or
    /// `CallFailed` with the same `id`.
    ListSchedules { id: u64, limit: u32 },
    /// Cancel scheduled jobs (`ctl schedules cancel`); answered by `SchedulesCancelled` once the
    /// removal is durable, or `CallFailed`, with the same `id`.
    CancelSchedules { id: u64, which: Cancel },
    /// A destination call (`ctl destinations`, `purge`, `delete`); answered by `Destinations`
    /// or `CallFailed` with the same `id`.
    Destinations { id: u64, call: DestinationCall },
}

/// Messages brokerd sends to lockd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum FromBroker {
    /// First message, with brokerd's pid as it sees it.
    Hello { version: u32, pid: u32 },
    /// The store is open under `epoch` and clients can connect to `listeners` ("host:port").
    Ready { epoch: u64, listeners: Vec<String> },
    /// Answer to [`ToBroker::Stats`].
    Stats { stats: BrokerStats },
    /// brokerd is about to exit; `reason` says why (a graceful stop, a refused epoch, a store
    /// that would not open) so lockd can log it and decide whether a restart can help.
    Stopping { reason: String, fatal: bool },
    /// Answer to [`ToBroker::Ping`] with the same `seq`, sent after the broker core handled it.
    Pong { seq: u64 },
    /// Answer to [`ToBroker::ListSchedules`].
    Schedules { id: u64, listing: Listing },
    /// Answer to [`ToBroker::CancelSchedules`]: `removed` jobs are durably gone.
    SchedulesCancelled { id: u64, removed: u64 },
    /// Answer to [`ToBroker::Destinations`].
    Destinations { id: u64, answer: DestinationAnswer },
    /// A request `id` (scheduler or destinations) could not be answered; `message` says why (the
    /// scheduler or the broker core has not started yet, or failed) and what to do.
    CallFailed { id: u64, message: String },
}

/// What the broker holds, for `ctl status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerStats {
    /// Client connections open now.
    pub connections: u64,
    /// Client connections accepted since the broker started.
    pub connections_total: u64,
    /// STOMP frames received since the broker started.
    pub frames_received: u64,
    /// Bytes the store occupies on disk.
    pub store_bytes: u64,
    /// Milliseconds since the broker reported Ready.
    pub uptime_ms: u64,
    /// Queues and topics the broker knows.
    pub destinations: u64,
    /// Messages held: waiting for a consumer, or delivered and not yet acknowledged.
    pub messages: u64,
    /// Subscriptions open now.
    pub consumers: u64,
    /// Memory held by waiting messages, bytes.
    pub memory_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{decode, encode};

    #[test]
    fn messages_round_trip_as_tagged_json_lines() {
        let ready = FromBroker::Ready {
            epoch: 3,
            listeners: vec!["127.0.0.1:61613".into()],
        };
        let line = encode(&ready);
        assert_eq!(
            std::str::from_utf8(&line).unwrap(),
            "{\"type\":\"ready\",\"epoch\":3,\"listeners\":[\"127.0.0.1:61613\"]}\n"
        );
        assert_eq!(
            decode::<FromBroker>(&line[..line.len() - 1]).unwrap(),
            ready
        );
        let stats = FromBroker::Stats {
            stats: BrokerStats {
                connections: 2,
                ..Default::default()
            },
        };
        let line = encode(&stats);
        assert_eq!(
            decode::<FromBroker>(&line[..line.len() - 1]).unwrap(),
            stats
        );
    }

    #[test]
    fn ping_and_pong_carry_their_sequence_number() {
        let ping = encode(&ToBroker::Ping { seq: 9 });
        assert_eq!(
            std::str::from_utf8(&ping).unwrap(),
            "{\"type\":\"ping\",\"seq\":9}\n"
        );
        assert_eq!(
            decode::<FromBroker>(br#"{"type":"pong","seq":9}"#).unwrap(),
            FromBroker::Pong { seq: 9 }
        );
    }
}
