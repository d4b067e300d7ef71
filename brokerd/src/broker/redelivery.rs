//! Redelivery and dead letters, as ActiveMQ's policies have them: a message that comes back (a
//! NACK, or its consumer gone without an ACK) is delivered again after a delay that may back
//! off, and past the redelivery limit goes to a dead-letter queue, as does a persistent message
//! that expired. The dead-letter queue is one for all (`ActiveMQ.DLQ`) or one per destination
//! (ActiveMQ's individual strategy); non-persistent messages are dropped instead unless the
//! policy says otherwise.
//!
//! A delayed message stays in the store where it was: a takeover brings it back at once,
//! flagged redelivered, like any other message it finds.

use super::*;
use std::collections::BTreeMap;

/// ActiveMQ's individual dead-letter strategy names a queue's DLQ with this prefix.
const QUEUE_DLQ_PREFIX: &str = "/queue/ActiveMQ.DLQ.Queue.";
/// ...and a topic's (its durable subscriptions' messages) with this one.
const TOPIC_DLQ_PREFIX: &str = "/queue/ActiveMQ.DLQ.Topic.";

/// Why a message goes to a dead-letter queue: the `dlqDeliveryFailureCause` header it gets.
enum Cause {
    Redelivered(u32),
    Expired,
}

/// What happens to messages that are not consumed: `--max-redeliveries`, `--redelivery-*` and
/// `--dead-letter-*`.
#[derive(Debug, Clone, PartialEq)]
pub struct RedeliveryPolicy {
    /// Deliveries without an ACK after which a message goes to the dead-letter queue.
    pub max_redeliveries: u32,
    /// Before the first redelivery, in milliseconds; 0: at once.
    pub initial_delay_ms: u64,
    /// Each further redelivery waits this many times longer (1: the same delay each time).
    pub backoff: f64,
    /// The longest wait, in milliseconds.
    pub max_delay_ms: u64,
    /// The shared dead-letter queue (ActiveMQ's `ActiveMQ.DLQ`).
    pub dead_letter_queue: String,
    /// One dead-letter queue per destination instead: `ActiveMQ.DLQ.Queue.NAME` and
    /// `ActiveMQ.DLQ.Topic.NAME`, as ActiveMQ's individual strategy names them.
    pub individual: bool,
    /// Non-persistent messages go to the dead-letter queue too (ActiveMQ's
    /// `processNonPersistent`); by default they are dropped.
    pub non_persistent: bool,
    /// Expired messages go to the dead-letter queue (ActiveMQ's `processExpired`).
    pub expired: bool,
}

impl Default for RedeliveryPolicy {
    /// ActiveMQ's defaults: six redeliveries, at once, then `ActiveMQ.DLQ`, for persistent
    /// messages, expired ones included.
    fn default() -> Self {
        RedeliveryPolicy {
            max_redeliveries: 6,
            initial_delay_ms: 0,
            backoff: 1.0,
            max_delay_ms: 3_600_000,
            dead_letter_queue: "/queue/ActiveMQ.DLQ".into(),
            individual: false,
            non_persistent: false,
            expired: true,
        }
    }
}

impl RedeliveryPolicy {
    /// How long the `n`th redelivery (from 1) waits, in milliseconds.
    pub fn delay_ms(&self, n: u32) -> u64 {
        if self.initial_delay_ms == 0 {
            return 0;
        }
        let factor = self
            .backoff
            .max(1.0)
            .powi(n.saturating_sub(1).min(64) as i32);
        ((self.initial_delay_ms as f64 * factor) as u64).min(self.max_delay_ms)
    }

    /// The dead-letter queue of a message from `destination`.
    fn dead_letter_queue(&self, destination: &str) -> Arc<str> {
        if !self.individual {
            return self.dead_letter_queue.as_str().into();
        }
        let (prefix, name) = match (destination.strip_prefix("/queue/"))
            .or_else(|| destination.strip_prefix("/remote-temp-queue/"))
        {
            Some(name) => (QUEUE_DLQ_PREFIX, name),
            None => {
                let name = (destination.strip_prefix("/topic/"))
                    .or_else(|| destination.strip_prefix("/remote-temp-topic/"))
                    .unwrap_or(destination);
                (TOPIC_DLQ_PREFIX, name)
            }
        };
        format!("{prefix}{name}").into()
    }
}

/// A message waiting out its redelivery delay.
#[derive(Debug)]
pub(super) struct Delayed {
    source: Source,
    msg: Arc<Message>,
    /// Where it is stored, should its source be gone when it is due.
    space: Option<Arc<str>>,
    /// Held in memory: counted against the producers' memory limit.
    _charge: Charge,
}

impl Delayed {
    /// Where it returns to.
    pub(super) fn source(&self) -> &Source {
        &self.source
    }

    pub(super) fn msg(&self) -> &Arc<Message> {
        &self.msg
    }
}

/// Messages waiting out their redelivery delays, by due time (Unix ms) and arrival.
pub(super) type DelayedSet = BTreeMap<(u64, u64), Delayed>;

impl Broker {
    /// Returns a message to where it came from for another delivery, now or after the
    /// policy's delay, or to the dead-letter queue once it has been redelivered too often: a
    /// message that crashes every consumer must not loop forever.
    pub(super) fn redeliver(&mut self, source: &Source, msg: Arc<Message>) {
        if let Source::Topic(_) = source {
            // A non-durable topic subscriber that leaves loses its messages, as in ActiveMQ.
            return;
        }
        self.redelivered += 1;
        let mut msg = Arc::unwrap_or_clone(msg);
        msg.redeliveries += 1;
        let policy = &self.settings.redelivery;
        if msg.redeliveries > policy.max_redeliveries {
            self.retire(source, msg, Cause::Redelivered(policy.max_redeliveries));
            return;
        }
        let delay = policy.delay_ms(msg.redeliveries);
        let msg = Arc::new(msg);
        if delay > 0 {
            let due = now_ms().saturating_add(delay);
            self.next_delayed += 1;
            let delayed = Delayed {
                space: self.space_of(source),
                source: source.clone(),
                _charge: Charge::new(&msg, &self.memory),
                msg,
            };
            self.delayed.insert((due, self.next_delayed), delayed);
            return;
        }
        self.put_back(source, msg);
    }

    fn put_back(&mut self, source: &Source, msg: Arc<Message>) {
        match source {
            Source::Queue(q) => self.queue(q).pending.put_back(msg),
            Source::Durable(d) => {
                if let Some(durable) = self.durables.get_mut(d) {
                    durable.pending.put_back(msg);
                }
            }
            Source::Topic(_) => {}
        }
    }

    /// When the next delayed message is due (Unix ms), if any waits.
    pub(super) fn next_due(&self) -> Option<u64> {
        self.delayed.keys().next().map(|(due, _)| *due)
    }

    /// Puts back every delayed message that is due, and delivers them.
    pub(super) fn release_delayed(&mut self) {
        let now = now_ms();
        let mut sources: Vec<Source> = Vec::new();
        while let Some(entry) = self.delayed.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let Delayed {
                source, msg, space, ..
            } = entry.remove();
            let gone = match &source {
                Source::Durable(d) => self.durables.get(d).is_none(),
                // A temporary queue goes with its connection, and its messages with it.
                Source::Queue(q) => names::is_temporary(q) && !self.temporaries.contains_key(q),
                Source::Topic(_) => true,
            };
            if gone {
                if let (Some(space), true) = (space, msg.persistent) {
                    self.store.remove(space, key_of(&msg));
                }
                continue;
            }
            self.put_back(&source, msg);
            if !sources.contains(&source) {
                sources.push(source);
            }
        }
        for source in sources {
            self.dispatch(&source);
        }
    }

    /// An expired message is done with: removed, and moved to the dead-letter queue if the
    /// policy says so.
    pub(super) fn expire(&mut self, source: &Source, msg: &Arc<Message>) {
        if !self.settings.redelivery.expired {
            return self.forget(source, msg);
        }
        self.retire(source, Message::clone(msg), Cause::Expired);
    }

    /// Takes a message out of `source` for good: to its dead-letter queue when the policy
    /// keeps messages like it, else dropped. The dead-letter copy is written before the
    /// original is removed: the journal writes in order, so a crash in between leaves a
    /// duplicate, never a loss. One already in its dead-letter queue stays there.
    fn retire(&mut self, source: &Source, mut msg: Message, cause: Cause) {
        let policy = &self.settings.redelivery;
        if *msg.destination == *policy.dead_letter_queue(&msg.destination) {
            msg.redeliveries = 0;
            return self.put_back(source, Arc::new(msg));
        }
        // One being published was never stored: nothing to remove, and its publisher learns
        // that it is gone.
        let never_stored = self.unstored.get() == Some(msg.seq);
        if never_stored {
            self.unstored.set(None);
        }
        let (key, persistent, space) = (key_of(&msg), msg.persistent, self.space_of(source));
        if msg.persistent || policy.non_persistent {
            self.dead_letter(msg, cause);
        } else {
            debug!(message_id = %msg.id, destination = %msg.destination, "dropping a non-persistent message the dead-letter policy does not keep");
        }
        self.count_dequeued(source);
        if let (Some(space), true, false) = (space, persistent, never_stored) {
            self.store.remove(space, key);
        }
    }

    /// Publishes a copy of a message on its dead-letter queue, naming where it came from and
    /// why, without an expiry (ActiveMQ's).
    fn dead_letter(&mut self, mut msg: Message, cause: Cause) {
        self.dead_lettered += 1;
        let dlq = self.settings.redelivery.dead_letter_queue(&msg.destination);
        let cause = match cause {
            Cause::Redelivered(limit) => {
                format!(
                    "redelivered {} times, more than the limit of {limit}",
                    msg.redeliveries - 1
                )
            }
            Cause::Expired => "expired".to_owned(),
        };
        warn!(message_id = %msg.id, destination = %msg.destination, %dlq, %cause, "moving a message to the dead-letter queue");
        msg.headers
            .retain(|(name, _)| name != "original-destination" && name != FAILURE_CAUSE);
        msg.headers
            .push(("original-destination".into(), msg.destination.to_string()));
        msg.headers.push((FAILURE_CAUSE.into(), cause));
        msg.destination = dlq;
        msg.redeliveries = 0;
        msg.expires = 0;
        self.publish(msg, None, false);
    }
}

/// The header naming why a message is in a dead-letter queue (ActiveMQ's property).
const FAILURE_CAUSE: &str = "dlqDeliveryFailureCause";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_back_off_up_to_the_most() {
        let policy = RedeliveryPolicy {
            initial_delay_ms: 100,
            backoff: 2.0,
            max_delay_ms: 500,
            ..RedeliveryPolicy::default()
        };
        let delays: Vec<u64> = (1..=5).map(|n| policy.delay_ms(n)).collect();
        assert_eq!(delays, [100, 200, 400, 500, 500]);
        assert_eq!(
            RedeliveryPolicy::default().delay_ms(3),
            0,
            "at once by default"
        );
        let constant = RedeliveryPolicy {
            initial_delay_ms: 50,
            ..RedeliveryPolicy::default()
        };
        assert_eq!(constant.delay_ms(10), 50);
    }

    #[test]
    fn dead_letter_queues_are_shared_or_named_per_destination_as_activemq_names_them() {
        let shared = RedeliveryPolicy::default();
        assert_eq!(
            &*shared.dead_letter_queue("/queue/orders"),
            "/queue/ActiveMQ.DLQ"
        );
        let individual = RedeliveryPolicy {
            individual: true,
            ..RedeliveryPolicy::default()
        };
        assert_eq!(
            &*individual.dead_letter_queue("/queue/orders"),
            "/queue/ActiveMQ.DLQ.Queue.orders"
        );
        assert_eq!(
            &*individual.dead_letter_queue("/topic/prices"),
            "/queue/ActiveMQ.DLQ.Topic.prices"
        );
    }
}
