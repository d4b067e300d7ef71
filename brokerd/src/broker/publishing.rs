//! Publishing: a SEND becomes a message with its id and sequence, stored if persistent and
//! routed to its queue, topic subscribers and durable subscriptions.

use super::*;

impl Broker {
    /// The next message seq: `(epoch << 40) | counter`, growing across failovers.
    pub(super) fn next_seq(&mut self) -> u64 {
        self.counter += 1;
        (self.settings.epoch << 40) | self.counter
    }

    /// The `message-id` of this broker's message `seq`: node, epoch and counter.
    pub(super) fn id_of(&self, seq: u64) -> Arc<str> {
        let counter = seq & ((1 << 40) - 1);
        format!(
            "ID:{}-{}-{counter}",
            self.settings.node, self.settings.epoch
        )
        .into()
    }

    pub(super) fn new_message(
        &mut self,
        from: ConnId,
        published: Published,
        body: Bytes,
    ) -> Message {
        let seq = self.next_seq();
        Message {
            id: self.id_of(seq),
            seq,
            destination: published.destination.into(),
            headers: published.headers,
            body,
            persistent: published.persistent,
            priority: published.priority,
            expires: published.expires,
            redeliveries: 0,
            timestamp: published.timestamp.unwrap_or_else(now_ms),
            sized: published.sized,
            from,
        }
    }

    /// A `reply-to` naming one of the connection's temporary destinations is rewritten to the
    /// name every other connection knows it by (creating it), as ActiveMQ does; any other value
    /// is passed on as it came.
    fn rewrite_reply_to(
        &mut self,
        conn: ConnId,
        headers: &mut [(String, String)],
    ) -> Result<(), Refused> {
        let Some((_, value)) = headers.iter_mut().find(|(n, _)| n == "reply-to") else {
            return Ok(());
        };
        if value.starts_with("/temp-queue/") || value.starts_with("/temp-topic/") {
            if let [name] = &self.resolve(conn, value)?[..] {
                *value = name.to_string();
            }
        }
        Ok(())
    }

    /// Routes a new message to its destination; `on_durable` runs once it is safe to receipt.
    /// With `held_receipt`, `on_durable` is the only promise made about the message (a SEND
    /// outside a transaction), so one an auto-mode consumer takes on the spot need not be
    /// stored: the receipt waits for it to be written. Without it, a promise already made or
    /// made for a whole group (a COMMIT's receipt, a dead-letter copy whose original is removed)
    /// rests on the store, so the message is always stored.
    pub(super) fn publish(
        &mut self,
        mut msg: Message,
        on_durable: Option<OnDurable>,
        held_receipt: bool,
    ) {
        let kind = names::kind(&msg.destination);
        if kind == Kind::Topic {
            self.retain(&mut msg);
        }
        let msg = Arc::new(msg);
        match kind {
            Kind::Queue => {
                let destination = Arc::clone(&msg.destination);
                self.queue(&destination).counters.enqueued();
                let paging = self.paging.as_ref();
                let queue = self.queues.get_mut(&destination).expect("created above");
                let space = Arc::clone(&queue.space);
                if msg.persistent && queue.paged.pages_out(paging, &queue.pending, msg.seq) {
                    // Paged out: behind the queue's other paged-out messages, in the store only.
                    self.store
                        .put(space, key_of(&msg), stored(&msg), on_durable);
                    return;
                }
                if msg.persistent {
                    queue.paged.loaded(msg.seq);
                }
                // Dispatch before storing: a consumer online gets the message now, not after
                // the disk, and one that takes it in auto mode right here has consumed and
                // acknowledged it before it ever needed storing (if only its receipt waits).
                self.unstored.set(Some(msg.seq));
                queue.pending.push(Arc::clone(&msg));
                self.dispatch(&Source::Queue(Arc::clone(&destination)));
                let expired = self.unstored.take().is_none();
                let taken = self.taken_unstored.take().filter(|key| {
                    // The producer's own connection writes the receipt before the message
                    // (ActiveMQ's order): there the receipt cannot wait for the message.
                    held_receipt
                        && self
                            .subscriptions
                            .get(key)
                            .is_some_and(|s| s.conn != msg.from)
                });
                if !msg.persistent || expired {
                    if let Some(done) = on_durable {
                        done();
                    }
                } else if let Some(sub) = taken.and_then(|k| self.subscriptions.get_mut(&k)) {
                    // Taken in auto mode on the spot: no need to store it at all. The receipt
                    // waits until it is written to the consumer (or stored, if that fails).
                    if let Some(delivery) = sub
                        .unwritten
                        .iter_mut()
                        .rev()
                        .find(|d| d.msg.seq == msg.seq)
                    {
                        delivery.unstored_receipt =
                            Some(on_durable.unwrap_or_else(|| Box::new(|| {})));
                    }
                } else {
                    self.store
                        .put(space, key_of(&msg), stored(&msg), on_durable);
                }
            }
            Kind::Topic => {
                if let Some(counters) = self.topic_counters.get(&msg.destination) {
                    counters.enqueued();
                }
                let mut on_durable = on_durable;
                let durables = self.durables.of_topic(&msg.destination);
                for key in durables {
                    let paging = self.paging.as_ref();
                    let durable = self.durables.get_mut(&key).expect("key just listed");
                    if msg.persistent && durable.paged.pages_out(paging, &durable.pending, msg.seq)
                    {
                        // Paged out: in the store only, behind the subscription's others.
                        self.store.put(
                            Arc::clone(&durable.space),
                            key_of(&msg),
                            stored(&msg),
                            None,
                        );
                        continue;
                    }
                    if msg.persistent {
                        durable.paged.loaded(msg.seq);
                        // Each durable subscription keeps its own copy; the last write carries
                        // the receipt, since the journal writes in order.
                        self.store.put(
                            Arc::clone(&durable.space),
                            key_of(&msg),
                            stored(&msg),
                            None,
                        );
                    }
                    durable.pending.push(Arc::clone(&msg));
                    self.dispatch(&Source::Durable(key));
                }
                // Before the receipt's barrier, which then follows the copies' writes too.
                self.fan_out(&msg);
                match on_durable.take() {
                    Some(done) if msg.persistent => self.store.barrier(done),
                    Some(done) => done(),
                    None => {}
                }
                let mut subscribers = self
                    .topics
                    .get(&msg.destination)
                    .cloned()
                    .unwrap_or_default();
                subscribers.extend(self.topic_filters.iter().copied().filter(|key| {
                    matches!(self.subscriptions.get(key).map(|s| &s.feed),
                        Some(Feed::Topics(filter)) if filter.matches(&msg.destination))
                }));
                // Counted once, when the first slow subscriber has to keep it.
                let mut held: Option<Arc<Backlogged>> = None;
                let limit = self.settings.topic_backlog;
                for key in subscribers {
                    let Some(sub) = self.subscriptions.get_mut(&key) else {
                        continue;
                    };
                    if !sub.accepts(&msg) {
                        continue;
                    }
                    if sub.backlog.is_empty() && sub.has_credit() && !self.draining {
                        // A subscriber keeping up gets it at once; nothing waits.
                        if !expired_now(&msg) {
                            self.deliver(key, Arc::clone(&msg));
                        }
                        continue;
                    }
                    let entry =
                        held.get_or_insert_with(|| Backlogged::new(Arc::clone(&msg), &self.memory));
                    let dropped = sub.backlog.push(Arc::clone(entry), limit);
                    if dropped > 0 {
                        debug!(subscription = %sub.id, dropped, messages = limit.messages, bytes = limit.bytes, "slow topic subscriber: dropped its oldest messages");
                    }
                    self.dispatch_backlog(key);
                }
            }
        }
    }

    /// A SEND: published now, held in its transaction, or scheduled.
    pub(super) fn send(
        &mut self,
        conn: ConnId,
        mut published: Published,
        body: Bytes,
        transaction: Option<String>,
        receipt: Option<String>,
    ) -> Result<(), Refused> {
        if self.draining {
            // Going passive: not taken, and no receipt, so a failover client resends it
            // to the next node (a SEND without a receipt was best effort anyway). Not an
            // ERROR now: it would close the session before the receipts still owed for
            // the SENDs stored just before it, and those would be resent: duplicates.
            // The goodbye ERROR follows once every owed receipt is written. No later
            // receipt may go out on this connection: it would say this SEND was kept.
            if let Some(c) = self.connections.get_mut(&conn) {
                if c.standing == standing::Standing::Good {
                    debug!(
                        conn,
                        "draining: dropped a SEND; no more receipts on this connection"
                    );
                    c.standing = standing::Standing::SendDropped;
                }
            }
            return Ok(());
        }
        if scheduler::manage::is_management(&published.destination) {
            return self.manage(conn, &published.headers, receipt);
        }
        let targets = self.resolve(conn, &published.destination)?;
        self.rewrite_reply_to(conn, &mut published.headers)?;
        for target in &targets {
            if names::kind(target) == Kind::Queue {
                // A SEND to a topic without subscribers creates nothing.
                self.room_for(conn, target)?;
            }
        }
        let schedule = published.schedule.take();
        let mut msg = self.new_message(conn, published, body);
        // A composite SEND: one copy per destination, with the same id.
        let others: Vec<Message> = (targets[1..].iter())
            .map(|target| addressed(msg.clone(), target))
            .collect();
        msg = addressed(msg, &targets[0]);
        if let Some(schedule) = schedule {
            if !others.is_empty() {
                return Err(Refused(format!(
                    "a scheduled SEND names one destination, not a composite list: {:?}",
                    targets.iter().map(|t| &**t).collect::<Vec<_>>().join(",")
                )));
            }
            return self.schedule(conn, msg, schedule, transaction, receipt);
        }
        match transaction {
            Some(tx) => {
                for msg in std::iter::once(msg).chain(others) {
                    let charge = Charge::new(&msg, &self.memory);
                    self.transaction(conn, &tx)?.push(TxOp::Send(msg, charge));
                }
                self.receipt_now(conn, receipt);
            }
            None if others.is_empty() => {
                let on_durable = self.receipt_later(conn, receipt);
                self.publish(msg, on_durable, true);
            }
            None => {
                // Its receipt once every copy is safe: the barrier follows their writes.
                for msg in std::iter::once(msg).chain(others) {
                    self.publish(msg, None, false);
                }
                self.receipt_after_barrier(conn, receipt);
            }
        }
        Ok(())
    }
}

/// A new message for one of its SEND's destinations (canonical). One for a temporary
/// destination is never stored: the destination goes with its connection.
fn addressed(mut msg: Message, target: &Arc<str>) -> Message {
    msg.destination = Arc::clone(target);
    msg.persistent &= !names::is_temporary(target);
    msg
}
