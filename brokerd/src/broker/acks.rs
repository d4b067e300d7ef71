//! Acknowledgements: finding the delivery an ACK or NACK names, forgetting what was
//! acknowledged, returning what was not (see [`super::redelivery`]).

use super::*;

impl Broker {
    /// Which subscription and delivery an ACK/NACK names.
    pub(super) fn find_delivery(
        &self,
        conn: ConnId,
        which: &AckRef,
    ) -> Result<(SubKey, u64), Refused> {
        let c = self
            .connections
            .get(&conn)
            .ok_or_else(|| Refused("session is not connected".into()))?;
        let found = match which {
            AckRef::Ack(ack) => AckId::parse(ack)
                .filter(|id| id.epoch == self.settings.epoch)
                .filter(|id| {
                    let sub = self.subscriptions.get(&id.sub);
                    sub.is_some_and(|sub| sub.conn == conn && sub.position(id.tag).is_some())
                })
                .map(|id| (id.sub, id.tag)),
            AckRef::MessageId {
                message_id,
                subscription,
            } => c
                .subscriptions
                .iter()
                .filter(|(id, _)| subscription.as_ref().is_none_or(|s| s == *id))
                .find_map(|(_, key)| {
                    let sub = self.subscriptions.get(key)?;
                    sub.in_flight
                        .iter()
                        .find(|d| *d.msg.id == **message_id)
                        .map(|d| (*key, d.tag))
                }),
        };
        found.ok_or_else(|| {
            Refused(match which {
                AckRef::Ack(ack) => format!("no unacknowledged message has ack id {ack:?}"),
                AckRef::MessageId { message_id, .. } => {
                    format!("no unacknowledged message has message-id {message_id:?}")
                }
            })
        })
    }

    /// Applies an ACK or NACK: cumulative in client mode, one message otherwise.
    pub(super) fn acknowledge(
        &mut self,
        conn: ConnId,
        which: &AckRef,
        nack: bool,
    ) -> Result<(), Refused> {
        let (key, tag) = self.find_delivery(conn, which)?;
        let sub = self.subscriptions.get_mut(&key).expect("found above");
        let at = sub.position(tag).expect("found above");
        let taken: Vec<InFlight> = if sub.ack == AckMode::Client {
            sub.in_flight.drain(..=at).collect()
        } else {
            sub.in_flight.remove(at).into_iter().collect()
        };
        let sources: Vec<Source> = taken.iter().map(|d| sub.origin(&d.msg)).collect();
        for (delivery, source) in taken.into_iter().zip(&sources) {
            if nack {
                self.redeliver(source, delivery.msg);
            } else {
                self.forget(source, &delivery.msg);
            }
        }
        self.dispatch_feed(key);
        Ok(())
    }

    /// A message is done with: counted, and removed from the store.
    pub(super) fn forget(&self, source: &Source, msg: &Message) {
        // One lookup for both: this runs for every message consumed.
        let (counters, space) = match source {
            Source::Queue(q) => match self.queues.get(q) {
                Some(q) => (Some(&q.counters), Some(&q.space)),
                None => (None, None),
            },
            Source::Topic(t) => (self.topic_counters.get(t), None),
            Source::Durable(d) => (None, self.durables.get(d).map(|d| &d.space)),
        };
        if let Some(counters) = counters {
            counters.dequeued();
        }
        if self.unstored.get() == Some(msg.seq) {
            // Dropped (expired) while being published: it was never stored, nothing to remove.
            self.unstored.set(None);
            return;
        }
        if let (Some(space), true) = (space, msg.persistent) {
            self.store.remove(Arc::clone(space), key_of(msg));
        }
    }

    /// An ACK or NACK, now or in its transaction; its receipt once the removal is durable.
    pub(super) fn ack(
        &mut self,
        conn: ConnId,
        which: AckRef,
        nack: bool,
        transaction: Option<String>,
        receipt: Option<String>,
    ) -> Result<(), Refused> {
        // An ack id from an earlier epoch names a delivery by the broker this one took
        // over from: that delivery comes again (flagged) under a new id, so the late ACK
        // is answered, and changes nothing.
        let stale = matches!(&which, AckRef::Ack(id)
            if AckId::parse(id).is_none_or(|id| id.epoch != self.settings.epoch));
        if !stale {
            // Resolve now, so an unknown id is answered at once, even inside a transaction:
            // with an ERROR that leaves the connection open, as ActiveMQ's.
            if let Err(Refused(message)) = self.find_delivery(conn, &which) {
                debug!(conn, %message, "an ACK or NACK of nothing awaiting one");
                if let Some(c) = self.connections.get(&conn) {
                    let _ = c.outbox.send(Outbound::Warning { message, receipt });
                }
                return Ok(());
            }
            match transaction {
                Some(tx) => self.transaction(conn, &tx)?.push(TxOp::Ack { which, nack }),
                None => self.acknowledge(conn, &which, nack)?,
            }
        }
        // The receipt waits until the removal is durable: an acknowledged message must
        // not come back after a crash.
        self.receipt_after_barrier(conn, receipt);
        Ok(())
    }

    /// Auto mode: `count` deliveries of `sub` were written to the socket, which acknowledges them.
    pub(super) fn written(&mut self, conn: ConnId, sub: SubKey, count: u32) -> Result<(), Refused> {
        // A subscription that ended meanwhile already returned its unwritten messages;
        // a new one under the same client id has other keys.
        let Some(live) = self.subscriptions.get_mut(&sub).filter(|s| s.conn == conn) else {
            return Ok(());
        };
        let n = (count as usize).min(live.unwritten.len());
        let written: Vec<Unwritten> = live.unwritten.drain(..n).collect();
        let live = &self.subscriptions[&sub];
        // Sent is acknowledged, in auto mode.
        for delivery in written {
            match delivery.unstored_receipt {
                Some(receipt) => receipt(),
                None => self.forget(&live.origin(&delivery.msg), &delivery.msg),
            }
        }
        self.dispatch_feed(sub);
        Ok(())
    }
}
