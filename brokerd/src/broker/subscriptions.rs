//! Subscriptions: SUBSCRIBE (queues, topics, durable topic subscriptions) and their end.

use super::destinations::idle;
use super::*;

impl Broker {
    pub(super) fn subscribe(&mut self, conn: ConnId, spec: SubscribeSpec) -> Result<(), Refused> {
        let kind = message::kind_of(&spec.destination).map_err(|e| Refused(e.to_string()))?;
        let caps = self.settings.caps;
        if spec.durable_name.is_none() {
            // A durable subscription feeds from its own space, not from a topic entry.
            self.room_for(&spec.destination)?;
        }
        let c = self.connection(conn)?;
        if c.subscriptions.contains_key(&spec.id) {
            return Err(Refused(format!(
                "subscription id {:?} is already in use on this connection",
                spec.id
            )));
        }
        if c.subscriptions.len() >= caps.subscriptions_per_connection {
            return Err(Refused(caps.too_many_subscriptions()));
        }
        let client_id = c.client_id.clone();
        let destination: Arc<str> = spec.destination.as_str().into();
        let source = match (kind, &spec.durable_name) {
            (Kind::Queue, _) => Source::Queue(Arc::clone(&destination)),
            (Kind::Topic, None) => Source::Topic(Arc::clone(&destination)),
            (Kind::Topic, Some(name)) => {
                let Some(client_id) = client_id else {
                    return Err(Refused(
                        "a durable subscription (activemq.subscriptionName) needs a client-id header on CONNECT"
                            .into(),
                    ));
                };
                Source::Durable((client_id, name.clone()))
            }
        };
        if let Source::Durable(durable_key) = &source {
            // Checked before anything changes: a refused SUBSCRIBE must leave the active
            // subscription's messages alone, even one naming another topic.
            if let Some(active) = self.durables.get(durable_key).and_then(|d| d.active) {
                return Err(Refused(format!(
                    "durable subscription {:?} of client-id {:?} is already active (subscription {active})",
                    durable_key.1, durable_key.0
                )));
            }
        }
        let key = self.next_sub;
        self.next_sub += 1;
        self.connection(conn)?
            .subscriptions
            .insert(spec.id.clone(), key);
        let fresh = self.new_pending();
        match &source {
            Source::Queue(q) => self.queue(q).consumers.push(key),
            Source::Topic(t) => self.topics.entry(Arc::clone(t)).or_default().push(key),
            Source::Durable(durable_key) => {
                let mut purge = None;
                // A new subscription, or one moved to another topic, gets a space never used
                // before: a crash before the old one's purge finished cannot mix the two.
                let new_space = match self.durables.get(durable_key) {
                    Some(durable) if durable.topic == destination => None,
                    _ => Some(registry::space(self.incarnation())),
                };
                if self.durables.get(durable_key).is_none() {
                    let space = new_space.clone().expect("a new subscription's space");
                    self.store.put(
                        registry::REGISTRY.into(),
                        registry_key(durable_key),
                        registry::value(&space, &destination),
                        None,
                    );
                    let durable = Durable {
                        topic: Arc::clone(&destination),
                        space,
                        pending: fresh,
                        paged: Paged::default(),
                        active: None,
                    };
                    self.durables.insert(durable_key.clone(), durable);
                }
                let moved = self
                    .durables
                    .get(durable_key)
                    .expect("inserted above")
                    .topic
                    != destination;
                if moved {
                    self.durables.retopic(durable_key, &destination);
                }
                let durable = self.durables.get_mut(durable_key).expect("inserted above");
                if moved {
                    // ActiveMQ re-creates a durable subscription moved to another topic.
                    let old = durable.pending.drain();
                    for msg in old {
                        self.store.remove(Arc::clone(&durable.space), key_of(&msg));
                    }
                    let space = new_space.expect("a moved subscription's space");
                    purge = Some((
                        std::mem::replace(&mut durable.space, space),
                        std::mem::take(&mut durable.paged),
                    ));
                    self.store.put(
                        registry::REGISTRY.into(),
                        registry_key(durable_key),
                        registry::value(&durable.space, &destination),
                        None,
                    );
                }
                durable.active = Some(key);
                if let Some((space, paged)) = purge {
                    self.purge(space, &paged);
                }
            }
        }
        self.subscriptions.insert(
            key,
            Subscription {
                conn,
                id: spec.id.into(),
                source: source.clone(),
                ack: spec.ack,
                prefetch: spec.prefetch.max(1),
                next_tag: 0,
                in_flight: VecDeque::new(),
                unwritten: VecDeque::new(),
                backlog: VecDeque::new(),
            },
        );
        self.dispatch(&source);
        Ok(())
    }

    /// Ends a subscription: its unacknowledged deliveries go back, flagged redelivered.
    pub(super) fn end_subscription(&mut self, key: SubKey) {
        let Some(sub) = self.subscriptions.remove(&key) else {
            return;
        };
        match &sub.source {
            Source::Queue(q) => {
                if let Some(queue) = self.queues.get_mut(q) {
                    queue.consumers.retain(|k| *k != key);
                }
            }
            Source::Topic(t) => {
                if let Some(subs) = self.topics.get_mut(t) {
                    subs.retain(|k| *k != key);
                    if subs.is_empty() {
                        self.topics.remove(t);
                    }
                }
            }
            Source::Durable(d) => {
                if let Some(durable) = self.durables.get_mut(d) {
                    durable.active = None;
                }
            }
        }
        // Auto-mode messages the session never wrote were never acknowledged: they go back
        // (flagged, as some may have reached the socket). One taken before it was stored is
        // stored now, and its producer's receipt waits for that.
        for delivery in sub.unwritten {
            if let Some(receipt) = delivery.unstored_receipt {
                let msg = &delivery.msg;
                match self.space_of(&sub.source) {
                    Some(space) => self
                        .store
                        .put(space, key_of(msg), stored(msg), Some(receipt)),
                    None => receipt(),
                }
            }
            self.redeliver(&sub.source, delivery.msg);
        }
        for delivery in sub.in_flight {
            self.redeliver(&sub.source, delivery.msg);
        }
        self.dispatch(&sub.source);
        if let Source::Queue(q) = &sub.source {
            // Unique reply-queue names must not pile up: an idle queue is removed, and comes
            // back as new if used again.
            if self.queues.get(q).is_some_and(idle) {
                self.queues.remove(q);
                debug!(queue = %q, "removed an empty, unused queue");
            }
        }
    }

    pub(super) fn delete_durable(&mut self, conn: ConnId, name: String) -> Result<(), Refused> {
        let client_id = self.connection(conn)?.client_id.clone().ok_or_else(|| {
            Refused("deleting a durable subscription needs a client-id header on CONNECT".into())
        })?;
        let key = (client_id, name);
        if let Some(mut durable) = self.durables.remove(&key) {
            if let Some(active) = durable.active {
                self.durables.insert(key.clone(), durable);
                return Err(Refused(format!(
                    "durable subscription {:?} is still active (subscription {active}); UNSUBSCRIBE it first",
                    key.1
                )));
            }
            // The registry entry goes first: it is the deletion's durable marker. A crash
            // before the purge below is done leaves a space no entry names, which recovery
            // purges and no subscription ever reads (see `registry`).
            self.store
                .remove(registry::REGISTRY.into(), registry_key(&key));
            for msg in durable.pending.drain() {
                self.store.remove(Arc::clone(&durable.space), key_of(&msg));
            }
            self.purge(Arc::clone(&durable.space), &durable.paged);
        }
        Ok(())
    }

    /// An UNSUBSCRIBE, deleting the durable subscription it names.
    pub(super) fn unsubscribe(
        &mut self,
        conn: ConnId,
        id: String,
        durable_name: Option<String>,
        receipt: Option<String>,
    ) -> Result<(), Refused> {
        let key = self
            .connections
            .get_mut(&conn)
            .and_then(|c| c.subscriptions.remove(&id));
        match (key, &durable_name) {
            (Some(key), _) => self.end_subscription(key),
            (None, None) => {
                return Err(Refused(format!(
                    "UNSUBSCRIBE of unknown subscription id {id:?}"
                )))
            }
            (None, Some(_)) => {}
        }
        match durable_name {
            Some(name) => {
                self.delete_durable(conn, name)?;
                // The deletion must be durable before it is confirmed.
                self.receipt_after_barrier(conn, receipt);
            }
            None => self.receipt_now(conn, receipt),
        }
        Ok(())
    }
}
