//! What the soak's clients did, and the checks on it (see tests/SOAK.md): no receipted message
//! lost, no acknowledged message delivered again, every duplicate explained, per-producer
//! order, every receipted COMMIT applied whole.

use std::collections::{BTreeMap, BTreeSet};

/// A message's identity: (producer, sequence number within the producer).
pub type Key = (usize, u64);

/// One delivery to a consumer.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub key: Key,
    pub redelivered: bool,
    pub message_id: String,
    /// The epoch of the broker that delivered it (the prefix of its STOMP 1.2 `ack` header).
    pub broker_epoch: Option<u64>,
    /// What the consumer knows of its acknowledgement.
    pub ack: Ack,
}

/// What a consumer knows of its acknowledgement of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// Not acknowledged.
    None,
    /// ACK sent without a receipt (or in a transaction that failed): it may never have
    /// reached the broker, which then delivers the message again.
    Unconfirmed,
    /// Acked in a transaction whose COMMIT was receipted: the message must never come again.
    Committed,
}

/// Everything the clients recorded.
#[derive(Debug, Default)]
pub struct History {
    /// Every SEND (or transactional SEND) attempted.
    pub sent: BTreeSet<Key>,
    /// SENDs the broker receipted, and SENDs of receipted COMMITs.
    pub receipted: BTreeSet<Key>,
    /// SENDs whose receipt was outstanding across a reconnect: the client may have resent them.
    pub maybe_resent: BTreeSet<Key>,
    /// Receipted COMMITs, with their SENDs.
    pub commits: Vec<Vec<Key>>,
    /// Transactions the broker rolled back (connection lost) or did not confirm.
    pub lost_transactions: usize,
    /// Every delivery, per consumer (one consumer per producer's queue), in arrival order.
    pub deliveries: BTreeMap<usize, Vec<Delivery>>,
}

/// The verdict on a history.
#[derive(Debug, Default)]
pub struct Verdict {
    pub sent: usize,
    pub receipted: usize,
    pub received: usize,
    /// Deliveries whose ack was committed (the ones the acked-then-redelivered check covers).
    pub acks_committed: usize,
    /// Receipted, never delivered.
    pub lost: Vec<Key>,
    /// Deliveries of a key already delivered.
    pub duplicated: usize,
    /// Duplicates neither flagged redelivered nor resent by the client.
    pub unexplained: Vec<Key>,
    /// A message (by message-id) delivered again after an ack of it was committed: an
    /// acknowledged message came back.
    pub acked_then_redelivered: Vec<Key>,
    /// First deliveries out of their producer's order (not redeliveries, not resends).
    pub out_of_order: Vec<Key>,
    /// Receipted COMMITs with a SEND never delivered.
    pub partial_commits: usize,
    /// Every delivery of each key named in a violation above (the first ten), for the report.
    pub evidence: Vec<String>,
}

impl Verdict {
    /// Whether every check held.
    pub fn passed(&self) -> bool {
        self.lost.is_empty()
            && self.unexplained.is_empty()
            && self.acked_then_redelivered.is_empty()
            && self.out_of_order.is_empty()
            && self.partial_commits == 0
    }
}

impl History {
    /// Checks the history.
    pub fn check(&self) -> Verdict {
        let mut verdict = Verdict {
            sent: self.sent.len(),
            receipted: self.receipted.len(),
            ..Verdict::default()
        };
        let mut delivered = BTreeSet::new();
        for deliveries in self.deliveries.values() {
            let mut seen: BTreeMap<Key, usize> = BTreeMap::new();
            // Messages (by message-id: a producer's resend is another message) whose ack
            // was committed.
            let mut acked: BTreeSet<&str> = BTreeSet::new();
            let mut last_first: Option<u64> = None;
            for d in deliveries {
                verdict.received += 1;
                delivered.insert(d.key);
                let count = seen.entry(d.key).or_default();
                *count += 1;
                if *count > 1 {
                    verdict.duplicated += 1;
                    if !d.redelivered && !self.maybe_resent.contains(&d.key) {
                        verdict.unexplained.push(d.key);
                    }
                } else if !d.redelivered && !self.maybe_resent.contains(&d.key) {
                    if last_first.is_some_and(|last| d.key.1 < last) {
                        verdict.out_of_order.push(d.key);
                    }
                    last_first = Some(d.key.1);
                }
                // A COMMIT is receipted only once its acks are durable: whichever broker
                // serves next, the message is gone.
                if acked.contains(d.message_id.as_str()) {
                    verdict.acked_then_redelivered.push(d.key);
                }
                if d.ack == Ack::Committed {
                    verdict.acks_committed += 1;
                    acked.insert(d.message_id.as_str());
                }
            }
        }
        verdict.lost = self.receipted.difference(&delivered).copied().collect();
        let named = verdict
            .unexplained
            .iter()
            .chain(&verdict.acked_then_redelivered)
            .chain(&verdict.out_of_order)
            .take(10);
        for key in named {
            let of_key: Vec<String> = self
                .deliveries
                .values()
                .flatten()
                .filter(|d| d.key == *key)
                .map(|d| {
                    format!(
                        "{} by epoch {:?}{}{}",
                        d.message_id,
                        d.broker_epoch,
                        if d.redelivered { ", redelivered" } else { "" },
                        match d.ack {
                            Ack::None => "",
                            Ack::Unconfirmed => ", acked (unconfirmed)",
                            Ack::Committed => ", acked (committed)",
                        }
                    )
                })
                .collect();
            verdict.evidence.push(format!("{key:?}: {of_key:?}"));
        }
        verdict.partial_commits = self
            .commits
            .iter()
            .filter(|keys| keys.iter().any(|k| !delivered.contains(k)))
            .count();
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(key: Key, redelivered: bool, epoch: u64) -> Delivery {
        Delivery {
            key,
            redelivered,
            message_id: format!("{key:?}"),
            broker_epoch: Some(epoch),
            ack: Ack::Committed,
        }
    }

    #[test]
    fn a_clean_history_passes_and_each_violation_is_named() {
        let mut h = History::default();
        h.sent.extend([(0, 0), (0, 1), (0, 2)]);
        h.receipted.extend([(0, 0), (0, 1), (0, 2)]);
        h.deliveries.insert(
            0,
            vec![
                delivery((0, 0), false, 0),
                delivery((0, 1), false, 0),
                delivery((0, 1), true, 0),
                delivery((0, 2), false, 1),
            ],
        );
        // An unconfirmed ack may never have reached the broker: the same broker may deliver
        // the message again.
        h.deliveries.get_mut(&0).unwrap()[1].ack = Ack::Unconfirmed;
        assert!(h.check().passed(), "{:?}", h.check());

        // The producer's resend of (0, 2) is another message: delivered after the ack, fine.
        h.maybe_resent.insert((0, 2));
        let mut resend = delivery((0, 2), false, 1);
        resend.message_id = "resent".into();
        h.deliveries.get_mut(&0).unwrap().push(resend);
        assert!(h.check().passed(), "{:?}", h.check());

        h.receipted.insert((0, 3));
        h.deliveries
            .get_mut(&0)
            .unwrap()
            .push(delivery((0, 0), true, 0));
        let v = h.check();
        assert_eq!(v.lost, vec![(0, 3)]);
        assert_eq!(v.acked_then_redelivered, vec![(0, 0)]);
        assert!(!v.passed());
    }

    #[test]
    fn order_and_unflagged_duplicates_are_caught() {
        let mut h = History::default();
        h.deliveries.insert(
            0,
            vec![
                delivery((0, 2), false, 0),
                delivery((0, 1), false, 0),
                delivery((0, 2), false, 0),
            ],
        );
        let v = h.check();
        assert_eq!(v.out_of_order, vec![(0, 1)]);
        assert_eq!(v.unexplained, vec![(0, 2)]);
    }
}
