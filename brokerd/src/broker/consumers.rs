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
        self.exclusive_consumers += usize::from(options.exclusive);
    }

    /// Removes a consumer, with its options; its groups go to whoever takes their next message.
    pub(super) fn detach(&mut self, key: SubKey, options: &ConsumerOptions) {
        let before = self.consumers.len();
        self.consumers.retain(|k| *k != key);
        if self.consumers.len() < before {
            self.choosy_consumers -= usize::from(options.choosy());
            self.exclusive_consumers -= usize::from(options.exclusive);
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
    /// Delivers from a queue whose consumers or messages need choosing, in one pass over the
    /// waiting messages (priority and FIFO order): each goes to the consumer the options prefer
    /// among those with room that take it (the exclusive one if there is one, else the highest
    /// priority, round robin among equals); one no consumer with room takes stays. Each
    /// consumer is looked up once per pass, not once per message.
    pub(super) fn dispatch_chosen(&mut self, destination: &Arc<str>) {
        let now = now_ms();
        let subscriptions = &self.subscriptions;
        let Some(queue) = self.queues.get_mut(destination) else {
            return;
        };
        let n = queue.consumers.len();
        // (priority, key, room, subscription), round robin from the last one served.
        let mut ready: Vec<(u8, SubKey, usize, &Subscription)> = (0..n)
            .map(|i| queue.consumers[(queue.next + i) % n])
            .filter_map(|k| subscriptions.get(&k).map(|s| (k, s)))
            .map(|(k, s)| (s.options.priority, k, s.room(), s))
            .collect();
        if queue.exclusive_consumers > 0 {
            let owner = (ready.iter())
                .filter(|(.., s)| s.options.exclusive)
                .max_by_key(|(p, k, ..)| (*p, std::cmp::Reverse(*k)))
                .map(|(_, k, ..)| *k);
            ready.retain(|(_, k, ..)| Some(*k) == owner);
        }
        ready.retain(|(_, _, room, _)| *room > 0);
        if ready.windows(2).any(|w| w[0].0 != w[1].0) {
            // Stable: equals keep their round-robin order.
            ready.sort_by_key(|(p, ..)| std::cmp::Reverse(*p));
        }
        let mut chosen: Vec<(Arc<Message>, Option<SubKey>)> = Vec::new();
        let mut open = ready.len();
        for msg in queue.pending.iter() {
            if open == 0 {
                break;
            }
            if msg.expired(now) {
                chosen.push((Arc::clone(msg), None));
                continue;
            }
            let group = group_of(msg);
            let owner = group.and_then(|g| queue.groups.get(g)).copied();
            let at = ready.iter().position(|(_, k, room, s)| {
                // A group's messages wait for its consumer.
                *room > 0 && owner.is_none_or(|o| o == *k) && s.accepts(msg)
            });
            let Some(at) = at else {
                continue;
            };
            let key = ready[at].1;
            ready[at].2 -= 1;
            if ready[at].2 == 0 {
                open -= 1;
            }
            // Round robin: the one served goes behind the others of its priority.
            let end = (at..ready.len())
                .find(|&j| ready[j].0 != ready[at].0)
                .unwrap_or(ready.len());
            ready[at..end].rotate_left(1);
            if let Some(group) = group {
                if message::header(&msg.headers, GROUP_SEQ) == Some("-1") {
                    queue.groups.remove(group);
                } else if owner.is_none() {
                    queue.groups.insert(group.into(), key);
                }
            }
            chosen.push((Arc::clone(msg), Some(key)));
        }
        if let Some(last) = chosen.iter().rev().find_map(|(_, k)| *k) {
            if let Some(at) = queue.consumers.iter().position(|k| *k == last) {
                queue.next = (at + 1) % n;
            }
        }
        for (msg, _) in &chosen {
            queue.pending.remove(msg);
        }
        let source = Source::Queue(Arc::clone(destination));
        for (msg, key) in chosen {
            match key {
                Some(key) => self.deliver(key, msg),
                None => self.expire(&source, &msg),
            }
        }
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
            sub.backlog.push(
                Backlogged::new(msg, &self.memory),
                self.settings.topic_backlog,
            );
        }
        self.dispatch_backlog(key);
    }
}
