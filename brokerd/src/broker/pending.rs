//! Messages waiting for a consumer, highest priority first, FIFO (by sequence) within a priority.
//!
//! Invariant: the shared [`Gauge`] holds exactly the bytes of the messages that cannot be paged
//! out (non-persistent ones, or every one when the broker does not page), so the producers' memory
//! limit counts only what paging cannot bound (see [`crate::memory`]).

use super::message::Message;
use crate::memory::Gauge;
use std::collections::VecDeque;
use std::sync::Arc;

/// Priorities are 0-9.
const LEVELS: usize = 10;

/// A destination's (or a durable subscription's) undelivered messages.
#[derive(Debug, Default)]
pub struct Pending {
    levels: [VecDeque<Arc<Message>>; LEVELS],
    len: usize,
    bytes: usize,
    gauge: Gauge,
    /// The part of `bytes` counted in the gauge.
    unpageable: usize,
    /// Whether persistent messages can be paged out to the store: then they stay out of the
    /// gauge, since the broker bounds how many of them it holds per space.
    pageable: bool,
}

impl Pending {
    /// An empty list whose bytes count towards `gauge`; with `pageable`, only its
    /// non-persistent messages do.
    pub fn new(gauge: &Gauge, pageable: bool) -> Pending {
        Pending {
            gauge: Arc::clone(gauge),
            pageable,
            ..Pending::default()
        }
    }

    fn grow(&mut self, msg: &Message) {
        let bytes = msg.footprint();
        self.bytes += bytes;
        if !(self.pageable && msg.persistent) {
            self.unpageable += bytes;
            self.gauge.add(bytes);
        }
    }

    fn shrink(&mut self, msg: &Message) {
        let bytes = msg.footprint();
        self.bytes -= bytes;
        if !(self.pageable && msg.persistent) {
            self.unpageable -= bytes;
            self.gauge.sub(bytes);
        }
    }

    /// Adds a new message behind the others of its priority.
    pub fn push(&mut self, msg: Arc<Message>) {
        self.grow(&msg);
        self.len += 1;
        self.levels[level(&msg)].push_back(msg);
    }

    /// Puts a message back for redelivery (or brings a paged-out one in): before every newer
    /// message of its priority, so a message keeps its place in the order.
    pub fn put_back(&mut self, msg: Arc<Message>) {
        self.grow(&msg);
        self.len += 1;
        let queue = &mut self.levels[level(&msg)];
        let at = queue.partition_point(|m| m.seq < msg.seq);
        queue.insert(at, msg);
    }

    /// Takes the next message to deliver.
    pub fn pop(&mut self) -> Option<Arc<Message>> {
        let msg = self.levels.iter_mut().rev().find_map(VecDeque::pop_front)?;
        self.len -= 1;
        self.shrink(&msg);
        Some(msg)
    }

    /// The waiting messages in the order they would be delivered (a browser's snapshot).
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Message>> {
        self.levels.iter().rev().flatten()
    }

    /// The next message to deliver, left in place.
    pub fn peek(&self) -> Option<&Arc<Message>> {
        self.levels.iter().rev().find_map(VecDeque::front)
    }

    /// Takes `msg` out, wherever it waits (a consumer chose it over those before it).
    pub fn remove(&mut self, msg: &Arc<Message>) -> bool {
        let queue = &mut self.levels[level(msg)];
        // From the front: a chosen message is seldom far behind the next one.
        let Some(at) = queue.iter().position(|m| Arc::ptr_eq(m, msg)) else {
            return false;
        };
        queue.remove(at);
        self.len -= 1;
        self.shrink(msg);
        true
    }

    /// Whether a message is waiting.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Memory held, for the broker's memory limit.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Takes every message out (a durable subscription being deleted).
    pub fn drain(&mut self) -> Vec<Arc<Message>> {
        self.len = 0;
        self.bytes = 0;
        self.gauge.sub(self.unpageable);
        self.unpageable = 0;
        self.levels.iter_mut().flat_map(|q| q.drain(..)).collect()
    }
}

/// A message's bytes counted in the producers' gauge for as long as this value lives: a
/// message held in memory outside the waiting lists (a transaction's SEND until COMMIT, a
/// delivery until its ACK or its write, a topic message in slow subscribers' backlogs).
#[derive(Debug)]
pub struct Charge {
    bytes: usize,
    gauge: Gauge,
}

impl Charge {
    /// Counts `msg` in `gauge` until the returned value is dropped.
    pub fn new(msg: &Message, gauge: &Gauge) -> Charge {
        let bytes = msg.footprint();
        gauge.add(bytes);
        Charge {
            bytes,
            gauge: Arc::clone(gauge),
        }
    }

    /// The bytes counted.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.gauge.sub(self.bytes);
    }
}

/// A topic message waiting in slow non-durable subscribers' backlogs. It is counted in the
/// gauge once, however many backlogs hold it (they share the message), from when the first
/// backlog takes it until the last one lets go; topic messages cannot be paged out, so this is
/// what keeps a slow topic consumer within the producers' memory limit.
#[derive(Debug)]
pub struct Backlogged {
    msg: Arc<Message>,
    charge: Charge,
}

impl Backlogged {
    /// Counts `msg` in `gauge` until the returned value (and every clone of it) is dropped.
    pub fn new(msg: Arc<Message>, gauge: &Gauge) -> Arc<Backlogged> {
        let charge = Charge::new(&msg, gauge);
        Arc::new(Backlogged { msg, charge })
    }

    pub fn message(&self) -> &Arc<Message> {
        &self.msg
    }

    /// The bytes counted for it.
    pub fn bytes(&self) -> usize {
        self.charge.bytes()
    }
}

/// How much one slow non-durable topic subscriber may have waiting.
#[derive(Debug, Clone, Copy)]
pub struct BacklogLimit {
    pub messages: usize,
    pub bytes: usize,
}

/// A slow non-durable topic subscriber's waiting messages, bounded in count and in bytes: past
/// either bound the oldest are dropped (ActiveMQ's pending-message limit for slow topic
/// consumers), so that one slow subscriber can take neither the memory limit nor, through it,
/// the producers and the other subscribers. The newest message always stays.
#[derive(Debug, Default)]
pub struct TopicBacklog {
    entries: VecDeque<Arc<Backlogged>>,
    bytes: usize,
}

impl TopicBacklog {
    /// Appends `entry`; returns how many of the oldest were dropped to stay within `limit`.
    pub fn push(&mut self, entry: Arc<Backlogged>, limit: BacklogLimit) -> usize {
        self.bytes += entry.bytes();
        self.entries.push_back(entry);
        let mut dropped = 0;
        while self.entries.len() > 1
            && (self.entries.len() > limit.messages || self.bytes > limit.bytes)
        {
            self.pop_front();
            dropped += 1;
        }
        dropped
    }

    pub fn pop_front(&mut self) -> Option<Arc<Backlogged>> {
        let entry = self.entries.pop_front()?;
        self.bytes -= entry.bytes();
        Some(entry)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn level(msg: &Message) -> usize {
    usize::from(msg.priority).min(LEVELS - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seq: u64, priority: u8) -> Arc<Message> {
        Arc::new(Message {
            id: format!("ID:{seq}").into(),
            seq,
            destination: "/queue/q".into(),
            headers: Vec::new(),
            body: bytes::Bytes::new(),
            persistent: false,
            priority,
            expires: 0,
            redeliveries: 0,
            timestamp: 0,
            sized: true,
            from: 0,
        })
    }

    #[test]
    fn higher_priority_first_then_fifo_and_put_back_keeps_order() {
        let gauge = Gauge::default();
        let mut pending = Pending::new(&gauge, false);
        for (seq, priority) in [(1, 4), (2, 9), (3, 4), (4, 0), (5, 9)] {
            pending.push(msg(seq, priority));
        }
        let order = |p: &mut Pending| {
            std::iter::from_fn(|| p.pop())
                .map(|m| m.seq)
                .collect::<Vec<_>>()
        };
        let first = pending.pop().unwrap();
        assert_eq!(first.seq, 2);
        let second = pending.pop().unwrap();
        pending.put_back(first);
        assert_eq!(second.seq, 5);
        assert_eq!(order(&mut pending), [2, 1, 3, 4]);
        assert_eq!((pending.len(), pending.bytes()), (0, 0));
        pending.push(msg(6, 4));
        assert_eq!(gauge.bytes(), pending.bytes());
        pending.drain();
        assert_eq!(gauge.bytes(), 0);
    }

    #[test]
    fn only_unpageable_messages_count_towards_the_gauge() {
        let gauge = Gauge::default();
        let mut pending = Pending::new(&gauge, true);
        let mut stored = Arc::unwrap_or_clone(msg(1, 4));
        stored.persistent = true;
        pending.push(Arc::new(stored));
        pending.push(msg(2, 4));
        assert_eq!(gauge.bytes(), msg(2, 4).footprint());
        assert_eq!(pending.pop().unwrap().seq, 1);
        assert_eq!(gauge.bytes(), msg(2, 4).footprint());
        pending.drain();
        assert_eq!((gauge.bytes(), pending.bytes()), (0, 0));
    }
}
