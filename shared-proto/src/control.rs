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
//! answered out of order with the rest. `Ready` says how the broker is confined (v5,
//! [`Confinement`]).

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
    /// The store is open under `epoch` and clients can connect to `listeners` ("host:port");
    /// `confinement` says which writes the kernel refuses this broker (v5), for `ctl status`.
    Ready {
        epoch: u64,
        listeners: Vec<String>,
        confinement: Confinement,
    },
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

/// How far the kernel confines brokerd's writes beyond no_new_privs (issue 11): a broker that
/// could write anywhere its user can could, once compromised, damage the shared directory's lock
/// or another service's files. brokerd confines itself with Landlock before it opens its store,
/// says so in its log and in `Ready`, and `ctl status` shows it (a warning when not enforced).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "landlock", rename_all = "snake_case", deny_unknown_fields)]
pub enum Confinement {
    /// Landlock refuses every kind of write outside the `writable` directories (the message
    /// and scheduler stores), under the kernel's Landlock ABI `abi`.
    Enforced { abi: u32, writable: Vec<String> },
    /// The kernel's Landlock (ABI `abi`) is too old to restrict the kinds of write named in
    /// `unrestricted` (e.g. `truncate`): those are still allowed wherever brokerd's user may;
    /// every other kind is refused outside `writable`.
    Partial {
        abi: u32,
        writable: Vec<String>,
        unrestricted: Vec<String>,
    },
    /// No Landlock: brokerd can write wherever its user can; `reason` says why (the kernel
    /// lacks Landlock, or does not enable it).
    Unavailable { reason: String },
}

impl Confinement {
    /// What an operator should do about a broker that is not fully confined; `None` when it is.
    /// lockd repeats it among `ctl status`'s warnings.
    pub fn warning(&self) -> Option<String> {
        match self {
            Confinement::Enforced { .. } => None,
            Confinement::Partial { .. } | Confinement::Unavailable { .. } => Some(format!(
                "brokerd is not fully confined ({self}); run a kernel with Landlock ABI {FULL_LANDLOCK_ABI} \
                 (Linux 6.10 or later) and Landlock enabled (CONFIG_SECURITY_LANDLOCK=y, `landlock` \
                 in the lsm= boot parameter) so that it can write only to its stores"
            )),
        }
    }
}

/// The Landlock ABI that restricts every kind of write brokerd confines (device ioctls came
/// last, in ABI 5 of Linux 6.10); an older one confines it only partly.
pub const FULL_LANDLOCK_ABI: u32 = 5;

/// The line `ctl status` shows after `confinement`, and brokerd logs at start.
impl std::fmt::Display for Confinement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Confinement::Enforced { abi, writable } => write!(
                f,
                "landlock ABI {abi} (writes only under {})",
                writable.join(" and ")
            ),
            Confinement::Partial {
                abi,
                writable,
                unrestricted,
            } => write!(
                f,
                "landlock ABI {abi}, partly: writes only under {}, except {} (allowed wherever \
                 brokerd's user may: the kernel's Landlock cannot restrict them)",
                writable.join(" and "),
                unrestricted.join(", ")
            ),
            Confinement::Unavailable { reason } => {
                write!(f, "none: {reason}; brokerd can write wherever its user can")
            }
        }
    }
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
    /// Queues and topics held in memory: in use, or holding messages. Created ones that are idle
    /// are not counted (`ctl destinations` lists them too).
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
            confinement: Confinement::Enforced {
                abi: 7,
                writable: vec!["/s/data".into(), "/s/scheduler".into()],
            },
        };
        let line = encode(&ready);
        assert_eq!(
            std::str::from_utf8(&line).unwrap(),
            "{\"type\":\"ready\",\"epoch\":3,\"listeners\":[\"127.0.0.1:61613\"],\
             \"confinement\":{\"landlock\":\"enforced\",\"abi\":7,\"writable\":[\"/s/data\",\"/s/scheduler\"]}}\n"
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
    fn confinement_reads_as_a_status_line_with_a_warning_unless_enforced() {
        let writable = vec!["/s/data".to_owned(), "/s/scheduler".to_owned()];
        let enforced = Confinement::Enforced {
            abi: 7,
            writable: writable.clone(),
        };
        assert_eq!(
            enforced.to_string(),
            "landlock ABI 7 (writes only under /s/data and /s/scheduler)"
        );
        assert_eq!(enforced.warning(), None);
        let partial = Confinement::Partial {
            abi: 2,
            writable,
            unrestricted: vec!["truncate".into(), "ioctl on devices".into()],
        };
        assert!(
            partial
                .to_string()
                .contains("except truncate, ioctl on devices"),
            "{partial}"
        );
        let none = Confinement::Unavailable {
            reason: "the kernel has no Landlock".into(),
        };
        assert_eq!(
            none.to_string(),
            "none: the kernel has no Landlock; brokerd can write wherever its user can"
        );
        for confinement in [partial, none] {
            let warning = confinement.warning().unwrap();
            assert!(
                warning.contains(&confinement.to_string()) && warning.contains("Linux 6.10"),
                "{warning}"
            );
        }
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
