//! Dispatch: handing waiting messages to subscriptions with credit, in priority and FIFO order.

use super::*;

impl Broker {
    /// The store space of a queue or durable subscription that exists; `None` for a topic.
    pub(super) fn space_of(&self, source: &Source) -> Option<Arc<str>> {
        let space = match source {
            Source::Queue(q) => &self.queues.get(q)?.space,
            Source::Durable(d) => &self.durables.get(d)?.space,
            Source::Topic(_) => return None,
        };
        Some(Arc::clone(space))
    }

    /// Delivers what is waiting at `source` to subscribers with credit.
    pub(super) fn dispatch(&mut self, source: &Source) {
        match source {
            Source::Queue(q) => {
                self.dispatch_queue(q);
                self.refill(source);
            }
            Source::Durable(d) => {
                self.dispatch_durable(d);
                self.refill(source);
            }
            Source::Topic(t) => {
                let subscribers = self.topics.get(t).cloned().unwrap_or_default();
                for key in subscribers {
                    self.dispatch_backlog(key);
                }
            }
        }
    }

    /// Delivers what waits for subscription `key`, from wherever it reads.
    pub(super) fn dispatch_feed(&mut self, key: SubKey) {
        let queues = match self.subscriptions.get(&key).map(|s| &s.feed) {
            Some(Feed::One(source)) => return self.dispatch(&source.clone()),
            Some(Feed::Topics(_)) => return self.dispatch_backlog(key),
            Some(Feed::Browse(_)) => return self.dispatch_browse(key),
            Some(Feed::Queues { queues, .. }) => queues.clone(),
            None => return,
        };
        for queue in queues {
            self.dispatch(&Source::Queue(queue));
        }
    }

    pub(super) fn dispatch_queue(&mut self, destination: &Arc<str>) {
        if self.draining {
            // Going passive: what is not delivered yet stays for the next node.
            return;
        }
        let now = now_ms();
        loop {
            let Some(queue) = self.queues.get_mut(destination) else {
                return;
            };
            if queue.pending.is_empty() || queue.consumers.is_empty() {
                return;
            }
            if queue.choosy() {
                return self.dispatch_chosen(destination);
            }
            let n = queue.consumers.len();
            let chosen = (0..n).find_map(|i| {
                let key = queue.consumers[(queue.next + i) % n];
                self.subscriptions
                    .get(&key)
                    .filter(|s| s.has_credit())
                    .map(|_| (i, key))
            });
            let Some((i, key)) = chosen else {
                return;
            };
            queue.next = (queue.next + i + 1) % n;
            let msg = queue.pending.pop().expect("checked non-empty");
            if msg.expired(now) {
                self.expire(&Source::Queue(Arc::clone(destination)), &msg);
                continue;
            }
            self.deliver(key, msg);
        }
    }

    pub(super) fn dispatch_durable(&mut self, key: &DurableKey) {
        if self.draining {
            // Going passive: what is not delivered yet stays for the next node.
            return;
        }
        let now = now_ms();
        loop {
            let Some(durable) = self.durables.get_mut(key) else {
                return;
            };
            let Some(sub_key) = durable.active else {
                return;
            };
            if !self
                .subscriptions
                .get(&sub_key)
                .is_some_and(Subscription::has_credit)
            {
                return;
            }
            let Some(msg) = durable.pending.pop() else {
                return;
            };
            let source = Source::Durable(key.clone());
            // A durable subscription keeps every message of its topic while no one reads it;
            // its reader's selector (or noLocal) decides what it gets.
            if msg.expired(now) {
                self.expire(&source, &msg);
                continue;
            }
            if !self.subscriptions[&sub_key].accepts(&msg) {
                self.forget(&source, &msg);
                continue;
            }
            self.deliver(sub_key, msg);
        }
    }

    pub(super) fn dispatch_backlog(&mut self, key: SubKey) {
        if self.draining {
            // Going passive: what is not delivered yet stays for the next node.
            return;
        }
        let now = now_ms();
        loop {
            let Some(sub) = self.subscriptions.get_mut(&key) else {
                return;
            };
            if !sub.has_credit() {
                return;
            }
            let Some(entry) = sub.backlog.pop_front() else {
                return;
            };
            // Dropping the entry uncounts the message once no other backlog holds it; from now
            // on it is a delivery, bounded by the prefetch.
            let msg = Arc::clone(entry.message());
            drop(entry);
            if msg.expired(now) {
                continue;
            }
            self.deliver(key, msg);
        }
    }

    /// Sends one message to a subscription's session.
    pub(super) fn deliver(&mut self, key: SubKey, msg: Arc<Message>) {
        let sub = self
            .subscriptions
            .get_mut(&key)
            .expect("deliver to a live subscription");
        let ack = match sub.ack {
            AckMode::Auto => {
                sub.unwritten.push_back(Unwritten {
                    msg: Arc::clone(&msg),
                    unstored_receipt: None,
                    _charge: Charge::new(&msg, &self.memory),
                });
                if self.unstored.get() == Some(msg.seq) {
                    self.taken_unstored.set(Some(key));
                }
                None
            }
            AckMode::Client | AckMode::ClientIndividual => {
                sub.next_tag += 1;
                sub.in_flight.push_back(InFlight {
                    tag: sub.next_tag,
                    msg: Arc::clone(&msg),
                    _charge: Charge::new(&msg, &self.memory),
                });
                Some(AckId {
                    epoch: self.settings.epoch,
                    sub: key,
                    tag: sub.next_tag,
                })
            }
        };
        let subscription = Arc::clone(&sub.id);
        if let Some(c) = self.connections.get(&sub.conn) {
            let _ = c.outbox.send(Outbound::Message {
                subscription,
                sub: key,
                ack,
                msg: Arc::clone(&msg),
            });
        }
    }
}
