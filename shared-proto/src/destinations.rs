//! Destination management as `ctl destinations`, `ctl purge` and `ctl delete` ask the active
//! broker for it (ActiveMQ's `activemq dstat`, `purge` and its console's delete): the one
//! shape both protocols carry (brokerd -> lockd -> ctl). Browsing needs no call of its own:
//! `ctl browse` is a STOMP browser subscription.
//!
//! A listing must fit one protocol line ([`crate::wire::MAX_LINE`]), so it is cut to
//! [`LISTING_BUDGET`] bytes, and says so, never silently.

use serde::{Deserialize, Serialize};

/// Bytes a listing's destinations may take on the wire (room is left for the message around
/// them).
pub const LISTING_BUDGET: usize = crate::wire::MAX_LINE - 1024;

/// What ctl asks of the broker about its destinations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "snake_case", deny_unknown_fields)]
pub enum DestinationCall {
    /// Every queue and topic, with its figures.
    List,
    /// Remove every message waiting on a queue (not those delivered and not yet acknowledged).
    Purge { queue: String },
    /// Remove a destination that has no consumers, and its messages.
    Delete { destination: String },
}

impl DestinationCall {
    /// Whether the call changes anything (then only admins may make it).
    pub fn changes_something(&self) -> bool {
        !matches!(self, DestinationCall::List)
    }
}

/// The broker's answer to a [`DestinationCall`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case", deny_unknown_fields)]
pub enum DestinationAnswer {
    /// Answer to `List`.
    Listed(Listing),
    /// Answer to `Purge` once the removal is durable: this many messages are gone.
    Purged { removed: u64 },
    /// Answer to `Delete` once the removal is durable.
    Deleted { removed: u64 },
    /// The call was refused; `message` says why and what to do.
    Refused { message: String },
}

/// What a destination is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Queue,
    Topic,
}

/// One destination's figures. Field names are a stable interface for scripts
/// (`ctl destinations --json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    /// Its STOMP name, e.g. `/queue/orders`.
    pub name: String,
    pub kind: Kind,
    /// Messages not yet consumed: waiting, paged out, being redelivered, or delivered and not
    /// yet acknowledged (ActiveMQ's queue size). Topics: waiting in slow subscribers' backlogs.
    pub depth: u64,
    pub consumers: u64,
    /// Messages that arrived since this broker started (ActiveMQ's enqueue count).
    pub enqueued: u64,
    /// Messages consumed or otherwise removed since this broker started.
    pub dequeued: u64,
    /// Age of the oldest message in memory, in milliseconds, if any waits there.
    pub oldest_age_ms: Option<u64>,
    /// Of `depth`, those only in the store (paged out).
    pub paged_out: u64,
}

/// Every destination, by name, the first ones only when `cut` is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listing {
    pub destinations: Vec<Destination>,
    /// More destinations exist than fitted one protocol line.
    pub cut: bool,
}

impl Listing {
    /// The first of `destinations` (sorted by name) that fit [`LISTING_BUDGET`].
    pub fn fit(mut destinations: Vec<Destination>) -> Listing {
        destinations.sort_by(|a, b| a.name.cmp(&b.name));
        let total = destinations.len();
        let mut used = 0;
        let fitting: Vec<Destination> = destinations
            .into_iter()
            .take_while(|d| {
                used += serde_json::to_string(d).map_or(usize::MAX, |j| j.len() + 1);
                used <= LISTING_BUDGET
            })
            .collect();
        Listing {
            cut: fitting.len() < total,
            destinations: fitting,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn destination(n: usize) -> Destination {
        Destination {
            name: format!("/queue/q{n:05}"),
            kind: Kind::Queue,
            depth: 1,
            consumers: 0,
            enqueued: 1,
            dequeued: 0,
            oldest_age_ms: Some(5),
            paged_out: 0,
        }
    }

    #[test]
    fn a_listing_fits_one_line_and_says_when_it_was_cut() {
        let few = Listing::fit((0..3).rev().map(destination).collect());
        assert!(!few.cut);
        assert_eq!(few.destinations[0].name, "/queue/q00000", "sorted by name");
        let many = Listing::fit((0..5000).map(destination).collect());
        assert!(many.cut && !many.destinations.is_empty());
        let message = crate::control::FromBroker::Destinations {
            id: u64::MAX,
            answer: DestinationAnswer::Listed(many),
        };
        let line = serde_json::to_string(&message).unwrap();
        assert!(line.len() < crate::wire::MAX_LINE, "{}", line.len());
    }
}
