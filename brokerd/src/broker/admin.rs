//! Destination management for operators (`ctl destinations`, `ctl purge`, `ctl delete`): the
//! figures of every queue and topic, like ActiveMQ's `activemq dstat`, and removing a queue's
//! waiting messages or a destination no one uses.

use super::*;
use shared_proto::destinations::{
    Destination, DestinationAnswer, DestinationCall, Kind as ListedKind, Listing,
};
use std::cell::Cell;

/// A destination's traffic since this broker started (ActiveMQ's enqueue and dequeue counts).
#[derive(Debug, Default)]
pub(super) struct Counters {
    enqueued: Cell<u64>,
    dequeued: Cell<u64>,
}

impl Counters {
    pub(super) fn enqueued(&self) {
        self.enqueued.set(self.enqueued.get() + 1);
    }

    pub(super) fn dequeued(&self) {
        self.dequeued.set(self.dequeued.get() + 1);
    }
}

/// Where the answer to a destination call goes.
pub type Reply = oneshot::Sender<DestinationAnswer>;

impl Broker {
    /// Counts a message done with at `source`.
    pub(super) fn count_dequeued(&self, source: &Source) {
        let counters = match source {
            Source::Queue(q) => self.queues.get(q).map(|q| &q.counters),
            Source::Topic(t) => self.topic_counters.get(t),
            Source::Durable(_) => None,
        };
        if let Some(counters) = counters {
            counters.dequeued();
        }
    }

    /// Answers a destination call, now or (purge, delete) once its removals are durable.
    pub(super) fn destinations(&mut self, call: DestinationCall, reply: Reply) {
        match call {
            DestinationCall::List => {
                let _ = reply.send(DestinationAnswer::Listed(Listing::fit(self.listing())));
            }
            DestinationCall::Purge { queue } => match self.named_queue(&queue) {
                Ok(queue) => {
                    self.purge_queue(&queue, move |removed| {
                        let _ = reply.send(DestinationAnswer::Purged { removed });
                    });
                }
                Err(message) => {
                    let _ = reply.send(DestinationAnswer::Refused { message });
                }
            },
            DestinationCall::Delete { destination } => {
                if let Err(message) = self.delete(&destination, reply) {
                    // The reply went back with the refusal.
                    debug!(%destination, %message, "delete refused");
                }
            }
        }
    }

    /// The one existing queue `name` names: in memory, or created and idle.
    fn named_queue(&self, name: &str) -> Result<Arc<str>, String> {
        let resolved = names::resolve(name, "").map_err(|e| e.to_string())?;
        match &resolved[..] {
            [queue] if names::kind(queue) == Kind::Queue && self.exists(queue) => {
                Ok(Arc::clone(queue))
            }
            [queue] if names::kind(queue) == Kind::Queue => Err(format!(
                "no queue {queue} on this broker: `ctl destinations` lists them"
            )),
            _ => Err(format!("{name:?} names no single queue")),
        }
    }

    /// Removes every message waiting on `queue` (in memory, paged out, or waiting out a
    /// redelivery delay; not those delivered and unacknowledged); `done` gets how many, once
    /// their removal is durable.
    fn purge_queue(&mut self, queue: &Arc<str>, done: impl FnOnce(u64) + Send + 'static) {
        let source = Source::Queue(Arc::clone(queue));
        let delayed: Vec<(u64, u64)> = (self.delayed.iter())
            .filter(|(_, d)| d.source() == &source)
            .map(|(k, _)| *k)
            .collect();
        let Some(q) = self.queues.get_mut(queue) else {
            // Nothing to remove; the answer still follows what was written before it (a
            // deletion's unregistration).
            return self.store.barrier(Box::new(move || done(0)));
        };
        let space = Arc::clone(&q.space);
        let waiting = q.pending.drain();
        let paged = std::mem::take(&mut q.paged);
        // Paged-out messages a takeover is still counting are removed too, but not counted.
        let removed = waiting.len() as u64 + paged.out + delayed.len() as u64;
        for msg in waiting {
            q.counters.dequeued();
            if msg.persistent {
                self.store.remove(Arc::clone(&space), key_of(&msg));
            }
        }
        for key in delayed {
            if let Some(d) = self.delayed.remove(&key) {
                if d.msg().persistent {
                    self.store.remove(Arc::clone(&space), key_of(d.msg()));
                }
            }
        }
        info!(%queue, removed, "queue purged");
        self.purge(space, &paged, Some(Box::new(move || done(removed))));
    }

    /// Deletes a destination without consumers, and its messages; answers on `reply`.
    fn delete(&mut self, name: &str, reply: Reply) -> Result<(), String> {
        let refuse = |reply: Reply, message: String| {
            let _ = reply.send(DestinationAnswer::Refused {
                message: message.clone(),
            });
            Err(message)
        };
        let resolved = match names::resolve(name, "") {
            Ok(resolved) if resolved.len() == 1 => resolved,
            Ok(_) => return refuse(reply, format!("{name:?} names more than one destination")),
            Err(e) => return refuse(reply, e.to_string()),
        };
        let destination = Arc::clone(&resolved[0]);
        match names::kind(&destination) {
            Kind::Queue => {
                if !self.exists(&destination) {
                    return refuse(reply, format!("no queue {destination} on this broker"));
                }
                let consumers = self
                    .queues
                    .get(&destination)
                    .map_or(0, |q| q.consumers.len());
                if consumers > 0 {
                    return refuse(
                        reply,
                        format!(
                            "{destination} has {consumers} consumers: they must unsubscribe first"
                        ),
                    );
                }
                self.forget_consumer_queue(&destination);
                // Its next user creates it anew, with `admin` where the users file asks for it.
                self.unregister(&destination);
                let gone = Arc::clone(&destination);
                self.purge_queue(&destination, move |removed| {
                    let _ = reply.send(DestinationAnswer::Deleted { removed });
                });
                self.queues.remove(&gone);
                info!(destination = %gone, "queue deleted");
            }
            Kind::Topic => {
                let durable = self.durables.of_topic(&destination).len();
                if self.topics.contains_key(&destination) || durable > 0 {
                    return refuse(
                        reply,
                        format!(
                            "{destination} has subscribers ({durable} durable): they must \
                             unsubscribe first (durable ones with activemq.subscriptionName)"
                        ),
                    );
                }
                self.retained.remove(&destination);
                self.topic_counters.remove(&destination);
                self.unregister(&destination);
                info!(%destination, "topic deleted");
                self.store.barrier(Box::new(move || {
                    let _ = reply.send(DestinationAnswer::Deleted { removed: 0 });
                }));
            }
        }
        Ok(())
    }

    /// Every figure of `/metrics`: one answer per scrape, built here from what the core keeps
    /// anyway (nothing more is counted on the hot path than two integers).
    pub(super) fn figures(&self) -> Figures {
        Figures {
            counts: self.counts(),
            destinations: self.listing(),
            redelivered: self.redelivered,
            dead_lettered: self.dead_lettered,
        }
    }

    /// Every queue and topic with its figures, the created ones out of memory included.
    fn listing(&self) -> Vec<Destination> {
        let now = now_ms();
        let age =
            |stamps: &mut dyn Iterator<Item = u64>| stamps.min().map(|t| now.saturating_sub(t));
        let mut listed = Vec::new();
        for (name, queue) in &self.queues {
            let delivered: Vec<&Arc<Message>> = (queue.consumers.iter())
                .filter_map(|k| self.subscriptions.get(k))
                .flat_map(|s| {
                    (s.in_flight.iter().map(|d| &d.msg)).chain(s.unwritten.iter().map(|d| &d.msg))
                })
                .filter(|m| m.destination == *name)
                .collect();
            let delayed = (self.delayed.values())
                .filter(|d| matches!(d.source(), Source::Queue(q) if q == name))
                .count();
            let depth = queue.pending.len() + delivered.len() + delayed;
            let mut stamps = (queue.pending.iter().map(|m| m.timestamp))
                .chain(delivered.iter().map(|m| m.timestamp));
            listed.push(Destination {
                name: name.to_string(),
                kind: ListedKind::Queue,
                depth: depth as u64 + queue.paged.out,
                consumers: queue.consumers.len() as u64,
                enqueued: queue.counters.enqueued.get(),
                dequeued: queue.counters.dequeued.get(),
                oldest_age_ms: age(&mut stamps),
                paged_out: queue.paged.out,
            });
        }
        let mut topics: Vec<&Arc<str>> = self.topics.keys().collect();
        topics.extend(self.durables.values().map(|d| &d.topic));
        topics.sort();
        topics.dedup();
        for name in topics {
            let subscribers = self.topics.get(name).map_or(&[][..], |s| &s[..]);
            let backlog: usize = (subscribers.iter())
                .filter_map(|k| self.subscriptions.get(k))
                .map(|s| s.backlog.len() + s.unwritten.len() + s.in_flight.len())
                .sum();
            let durables: Vec<&Durable> = (self.durables.of_topic(name).iter())
                .filter_map(|k| self.durables.get(k))
                .collect();
            let durable_depth: u64 = durables
                .iter()
                .map(|d| d.pending.len() as u64 + d.paged.out)
                .sum();
            let active = durables.iter().filter(|d| d.active.is_some()).count();
            let mut stamps = durables
                .iter()
                .flat_map(|d| d.pending.iter().map(|m| m.timestamp));
            let counters = self.topic_counters.get(name);
            listed.push(Destination {
                name: name.to_string(),
                kind: ListedKind::Topic,
                depth: backlog as u64 + durable_depth,
                consumers: (subscribers.len() + active) as u64,
                enqueued: counters.map_or(0, |c| c.enqueued.get()),
                dequeued: counters.map_or(0, |c| c.dequeued.get()),
                oldest_age_ms: age(&mut stamps),
                paged_out: durables.iter().map(|d| d.paged.out).sum(),
            });
        }
        // Created and out of memory (an idle queue, a topic without subscribers): empty, and
        // listed all the same, as ActiveMQ lists every destination it has.
        let shown: HashSet<&str> = listed.iter().map(|d| d.name.as_str()).collect();
        let idle: Vec<Destination> = (self.created.iter())
            .filter(|name| !shown.contains(&***name))
            .map(|name| Destination {
                name: name.to_string(),
                kind: match names::kind(name) {
                    Kind::Queue => ListedKind::Queue,
                    Kind::Topic => ListedKind::Topic,
                },
                depth: 0,
                consumers: 0,
                enqueued: 0,
                dequeued: 0,
                oldest_age_ms: None,
                paged_out: 0,
            })
            .collect();
        listed.extend(idle);
        listed
    }
}
