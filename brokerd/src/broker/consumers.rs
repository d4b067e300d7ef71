//! What ActiveMQ's consumers ask for per subscription, and how a queue honours it: an exclusive
//! consumer gets every message while it is there, consumers of a higher `activemq.priority` are
//! served first, all messages of a group (`JMSXGroupID`) go to one consumer until it leaves,
//! and a consumer never gets what it declines (its `selector`, `activemq.noLocal`). A message
//! no consumer with credit takes waits for one, without holding up the messages behind it.
//!
//! Topics keep ActiveMQ's default retained message: the last one published with
//! `ActiveMQ.Retain:true` (an empty one clears it), given first to a retroactive subscriber
//! (`activemq.retroactive:true`) flagged `ActiveMQ.Retained:true`.

use super::*;

/// The message group header, and the sequence header whose value -1 closes a group.
const GROUP: &str = "JMSXGroupID";
const GROUP_SEQ: &str = "JMSXGroupSeq";
/// ActiveMQ's retained-message headers.
const RETAIN: &str = "ActiveMQ.Retain";
const RETAINED: &str = "ActiveMQ.Retained";

/// A consumer's options beyond where and how it acknowledges (ActiveMQ's `activemq.*`
/// SUBSCRIBE headers, and `selector`). The default is a plain consumer.
#[derive(Debug, Clone, Default)]
pub struct ConsumerOptions {
    /// `activemq.exclusive`: on a queue, the one consumer that gets every message while it is
    /// there (the first of the highest priority, if several ask).
    pub exclusive: bool,
    /// `activemq.priority` (0-127): on a queue, consumers of a higher priority get messages
    /// first; lower ones get what the higher ones have no room for.
    pub priority: u8,
    /// `activemq.noLocal`: never gets a message its own connection sent.
    pub no_local: bool,
    /// `activemq.retroactive`: on a topic, first gets the topic's retained message.
    pub retroactive: bool,
    /// `selector`: only the messages it matches ([`MessageFields`] are what it reads).
    pub selector: Option<Arc<selector::Selector>>,
}

impl ConsumerOptions {
    /// Whether a queue must choose among its consumers message by message.
    fn choosy(&self) -> bool {
        self.exclusive || self.priority != 0 || self.no_local || self.selector.is_some()
    }
}

/// A message as a selector reads it: ActiveMQ's JMS header names, typed as ActiveMQ types them,
/// and every other header as a string property.
pub struct MessageFields<'a>(pub &'a Message);

impl selector::Fields for MessageFields<'_> {
    fn field(&self, name: &str) -> Option<selector::Value<'_>> {
        use selector::Value::{Bool, Long, Str};
        let msg = self.0;
        let header = |name: &str| message::header(&msg.headers, name);
        Some(match name {
            "JMSPriority" => Long(i64::from(msg.priority)),
            "JMSTimestamp" => Long(i64::try_from(msg.timestamp).unwrap_or(i64::MAX)),
            "JMSExpiration" => Long(i64::try_from(msg.expires).unwrap_or(i64::MAX)),
            "JMSDeliveryMode" => Str(if msg.persistent {
                "PERSISTENT"
            } else {
                "NON_PERSISTENT"
            }),
            "JMSMessageID" => Str(&msg.id),
            "JMSRedelivered" => Bool(msg.redeliveries > 0),
            "JMSXDeliveryCount" => Long(i64::from(msg.redeliveries) + 1),
            "JMSCorrelationID" => Str(header("correlation-id")?),
            "JMSType" => Str(header("type")?),
            "JMSReplyTo" => Str(header("reply-to")?),
            "JMSXGroupSeq" => {
                let seq = header(GROUP_SEQ)?;
                seq.parse().map_or(Str(seq), Long)
            }
            _ => Str(header(name)?),
        })
    }
}

/// The message's group, if it belongs to one.
fn group_of(msg: &Message) -> Option<&str> {
    message::header(&msg.headers, GROUP)
}

impl Subscription {
    /// Whether this consumer takes `msg` at all.
    pub(super) fn accepts(&self, msg: &Message) -> bool {
        !(self.options.no_local && msg.from == self.conn)
            && (self.options.selector.as_ref()).is_none_or(|s| s.matches(&MessageFields(msg)))
    }
}

impl Queue {
    /// Adds a consumer, with its options.
    pub(super) fn attach(&mut self, key: SubKey, options: &ConsumerOptions) {
        self.consumers.push(key);
        self.choosy_consumers += usize::from(options.choosy());
    }

    /// Removes a consumer, with its options; its groups go to whoever takes their next message.
    pub(super) fn detach(&mut self, key: SubKey, options: &ConsumerOptions) {
        let before = self.consumers.len();
        self.consumers.retain(|k| *k != key);
        if self.consumers.len() < before {
            self.choosy_consumers -= usize::from(options.choosy());
        }
        self.groups.retain(|_, owner| *owner != key);
    }

    /// Whether the next dispatch must choose message by message: a consumer with options, or
    /// a message of a group next in line.
    pub(super) fn choosy(&self) -> bool {
        self.choosy_consumers > 0 || self.pending.peek().is_some_and(|m| group_of(m).is_some())
    }
}

impl Broker {
    /// One delivery from a queue whose consumers or messages need choosing: the first waiting
    /// message (in priority and FIFO order) that a consumer with credit takes, to the consumer
    /// the options prefer. Returns whether one was delivered.
    pub(super) fn dispatch_one_chosen(&mut self, destination: &Arc<str>) -> bool {
        let subscriptions = &self.subscriptions;
        let Some(queue) = self.queues.get_mut(destination) else {
            return false;
        };
        let n = queue.consumers.len();
        let live = |k: &SubKey| subscriptions.get(k);
        // Round robin among equals: start after the last one served.
        let mut ready: Vec<SubKey> = (0..n)
            .map(|i| queue.consumers[(queue.next + i) % n])
            .filter(|k| live(k).is_some_and(Subscription::has_credit))
            .collect();
        let exclusive = (queue.consumers.iter())
            .filter(|k| live(k).is_some_and(|s| s.options.exclusive))
            .max_by_key(|k| (live(k).map(|s| s.options.priority), std::cmp::Reverse(**k)))
            .copied();
        if let Some(owner) = exclusive {
            ready.retain(|k| *k == owner);
        }
        // Stable: equals keep their round-robin order.
        ready.sort_by_key(|k| std::cmp::Reverse(live(k).map_or(0, |s| s.options.priority)));
        if ready.is_empty() {
            return false;
        }
        let owners = &queue.groups;
        let chosen = queue.pending.iter().find_map(|msg| {
            let takes = |k: &SubKey| live(k).is_some_and(|s| s.accepts(msg));
            let key = match group_of(msg).and_then(|g| owners.get(g)) {
                // A group's messages wait for its consumer.
                Some(owner) => ready.iter().find(|k| *k == owner && takes(k)),
                None => ready.iter().find(|k| takes(k)),
            };
            key.map(|k| (Arc::clone(msg), *k))
        });
        let Some((msg, key)) = chosen else {
            return false;
        };
        if !queue.pending.remove(&msg) {
            return false;
        }
        if let Some(at) = queue.consumers.iter().position(|k| *k == key) {
            queue.next = (at + 1) % n;
        }
        if let Some(group) = group_of(&msg) {
            if message::header(&msg.headers, GROUP_SEQ) == Some("-1") {
                queue.groups.remove(group);
            } else if !queue.groups.contains_key(group) {
                queue.groups.insert(group.into(), key);
            }
        }
        if msg.expired(now_ms()) {
            self.expire(&Source::Queue(Arc::clone(destination)), &msg);
        } else {
            self.deliver(key, msg);
        }
        true
    }

    /// Keeps a topic message published with `ActiveMQ.Retain:true` as the topic's retained
    /// message (an empty one clears it); the header is not passed on.
    pub(super) fn retain(&mut self, msg: &mut Message) {
        let Some(at) = msg.headers.iter().position(|(n, _)| n == RETAIN) else {
            return;
        };
        let (_, value) = msg.headers.remove(at);
        if !value.eq_ignore_ascii_case("true") {
            return;
        }
        if msg.body.is_empty() {
            self.retained.remove(&msg.destination);
            return;
        }
        let mut kept = msg.clone();
        kept.headers.push((RETAINED.into(), "true".into()));
        self.retained
            .insert(Arc::clone(&msg.destination), Arc::new(kept));
    }

    /// A new retroactive topic subscription gets the retained messages of the topics it reads.
    pub(super) fn recover_retained(&mut self, key: SubKey) {
        let Some(sub) = self.subscriptions.get(&key) else {
            return;
        };
        if !sub.options.retroactive {
            return;
        }
        let mut recovered: Vec<Arc<Message>> = match &sub.feed {
            Feed::One(Source::Topic(topic)) => {
                self.retained.get(topic).cloned().into_iter().collect()
            }
            Feed::Topics(filter) => (self.retained.iter())
                .filter(|(topic, _)| filter.matches(topic))
                .map(|(_, msg)| Arc::clone(msg))
                .collect(),
            _ => Vec::new(),
        };
        recovered.retain(|msg| sub.accepts(msg) && !expired_now(msg));
        recovered.sort_by_key(|msg| msg.seq);
        let Some(sub) = self.subscriptions.get_mut(&key) else {
            return;
        };
        for msg in recovered {
            sub.backlog.push_back(Backlogged::new(msg, &self.memory));
        }
        self.dispatch_backlog(key);
    }
}
