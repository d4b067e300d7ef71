//! Subscriptions: SUBSCRIBE (queues, topics, durable topic subscriptions) and their end.

use super::destinations::idle;
use super::*;
use crate::auth::Operation;

impl Broker {
    /// Registers a SUBSCRIBE; nothing is delivered to it yet ([`Broker::start_feed`]).
    pub(super) fn subscribe(
        &mut self,
        conn: ConnId,
        spec: SubscribeSpec,
    ) -> Result<SubKey, Refused> {
        let resolved = self.resolve(conn, &spec.destination)?;
        let first = Arc::clone(&resolved[0]);
        let feed = self.feed(conn, &spec, resolved)?;
        let caps = self.settings.caps;
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
        if let Feed::One(Source::Durable(durable_key)) = &feed {
            // Checked before anything changes: a refused SUBSCRIBE must leave the active
            // subscription's messages alone, even one naming another topic.
            if let Some(active) = self.durables.get(durable_key).and_then(|d| d.active) {
                return Err(Refused(format!(
                    "durable subscription {:?} of client-id {:?} is already active (subscription {active})",
                    durable_key.1, durable_key.0
                )));
            }
            // Moving it to another topic drops what it kept: only for who may read that. A
            // client-id is not a login, so anyone could name another application's.
            if let Some(durable) = self.durables.get(durable_key) {
                self.authorised(conn, Operation::Read, &durable.topic)?;
            }
        }
        let key = self.next_sub;
        self.next_sub += 1;
        self.connection(conn)?
            .subscriptions
            .insert(spec.id.clone(), key);
        let fresh = self.new_pending();
        match &feed {
            Feed::One(Source::Queue(q)) => self.queue(q).attach(key, &spec.options),
            Feed::One(Source::Topic(t)) => {
                self.topics.entry(Arc::clone(t)).or_default().push(key);
                self.topic_counters.entry(Arc::clone(t)).or_default();
                self.register(t);
            }
            Feed::Queues { filter, .. } => {
                // Named ones are made now; the rest are matched as they come.
                for name in &filter.names {
                    self.queue(name);
                }
                self.queue_filters.push(key);
            }
            Feed::Topics(_) => self.topic_filters.push(key),
            Feed::Browse(_) => {}
            Feed::One(Source::Durable(durable_key)) => {
                let destination = first;
                if Pattern::new(&destination).is_none() {
                    // A durable subscription creates its topic, as a subscriber does.
                    self.register(&destination);
                }
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
                    self.purge(space, &paged, None);
                }
            }
        }
        self.subscriptions.insert(
            key,
            Subscription {
                conn,
                id: spec.id.into(),
                feed,
                // A browser's deliveries are copies: nothing to acknowledge.
                ack: if spec.browser {
                    AckMode::Auto
                } else {
                    spec.ack
                },
                options: spec.options,
                prefetch: spec.prefetch.max(1),
                next_tag: 0,
                in_flight: VecDeque::new(),
                unwritten: VecDeque::new(),
                backlog: pending::TopicBacklog::default(),
            },
        );
        self.attach_queues(key);
        Ok(key)
    }

    /// Starts delivering to a new subscription what it finds: a retroactive one's retained
    /// messages, then what waits.
    pub(super) fn start_feed(&mut self, key: SubKey) {
        self.recover_retained(key);
        self.dispatch_feed(key);
    }

    /// Where a SUBSCRIBE's messages come from, checked before anything changes.
    fn feed(
        &mut self,
        conn: ConnId,
        spec: &SubscribeSpec,
        resolved: Vec<Arc<str>>,
    ) -> Result<Feed, Refused> {
        let kind = names::kind(&resolved[0]);
        if resolved.iter().any(|n| names::kind(n) != kind) {
            return Err(Refused(format!(
                "destination {:?} lists both queues and topics: a subscription reads one kind",
                spec.destination
            )));
        }
        let c = self.connection(conn)?;
        let (client_id, prefix) = (c.client_id.clone(), Arc::clone(&c.temporary));
        if let Some(name) = resolved
            .iter()
            .find(|n| names::is_temporary(n) && !names::created_by(n, &prefix))
        {
            return Err(Refused(format!(
                "temporary destination {name} belongs to another connection: only the one that created it may subscribe"
            )));
        }
        let mut filter = Filter::default();
        for name in resolved {
            match Pattern::new(&name) {
                Some(pattern) => filter.patterns.push(pattern),
                None => filter.names.push(name),
            }
        }
        let single = filter.patterns.is_empty() && filter.names.len() == 1;
        if spec.browser {
            // ActiveMQ browses queues only, one at a time.
            return match (kind, single) {
                (Kind::Queue, true) => {
                    Ok(Feed::Browse(Box::new(self.browse(filter.names.remove(0)))))
                }
                _ => Err(Refused(format!(
                    "browser:true browses one queue, not {:?}",
                    spec.destination
                ))),
            };
        }
        for name in &filter.names {
            match spec.durable_name {
                None => self.room_for(conn, name)?,
                // A durable subscription feeds from its own space, not from a topic held in
                // memory, so only creating its topic is checked.
                Some(_) => self.creatable(conn, name)?,
            }
        }
        Ok(match (kind, &spec.durable_name, single) {
            (Kind::Queue, Some(_), _) => {
                return Err(Refused(format!(
                    "activemq.subscriptionName on queue {:?}: durable subscriptions are for topics (a queue keeps its messages anyway)",
                    spec.destination
                )))
            }
            (Kind::Topic, Some(_), false) if !(filter.names.is_empty() && filter.patterns.len() == 1) => {
                return Err(Refused(format!(
                    "a durable subscription names one topic or one wildcard pattern, not the list {:?}",
                    spec.destination
                )))
            }
            (Kind::Queue, None, true) => Feed::One(Source::Queue(filter.names.remove(0))),
            (Kind::Topic, None, true) => Feed::One(Source::Topic(filter.names.remove(0))),
            (Kind::Topic, Some(name), _) => {
                let Some(client_id) = client_id else {
                    return Err(Refused(
                        "a durable subscription (activemq.subscriptionName) needs a client-id header on CONNECT"
                            .into(),
                    ));
                };
                Feed::One(Source::Durable((client_id, name.clone())))
            }
            (Kind::Queue, None, false) => Feed::Queues {
                filter: Arc::new(filter),
                queues: Vec::new(),
            },
            (Kind::Topic, None, false) => Feed::Topics(Arc::new(filter)),
        })
    }

    /// A new filtered queue subscription consumes from every queue its filter matches.
    fn attach_queues(&mut self, key: SubKey) {
        let Some(Subscription {
            feed: Feed::Queues { filter, queues },
            options,
            ..
        }) = self.subscriptions.get_mut(&key)
        else {
            return;
        };
        for (name, queue) in self.queues.iter_mut() {
            if filter.matches(name) {
                queue.attach(key, options);
                queues.push(Arc::clone(name));
            }
        }
    }

    /// Ends a subscription: its unacknowledged deliveries go back, flagged redelivered.
    pub(super) fn end_subscription(&mut self, key: SubKey) {
        let Some(mut sub) = self.subscriptions.remove(&key) else {
            return;
        };
        let mut left: Vec<Arc<str>> = Vec::new();
        match &sub.feed {
            Feed::One(Source::Queue(q)) => left.push(Arc::clone(q)),
            Feed::Queues { queues, .. } => {
                self.queue_filters.retain(|k| *k != key);
                left.extend(queues.iter().cloned());
            }
            Feed::Topics(_) => self.topic_filters.retain(|k| *k != key),
            Feed::Browse(_) => {}
            Feed::One(Source::Topic(t)) => {
                if let Some(subs) = self.topics.get_mut(t) {
                    subs.retain(|k| *k != key);
                    if subs.is_empty() {
                        self.topics.remove(t);
                        self.topic_counters.remove(t);
                    }
                }
            }
            Feed::One(Source::Durable(d)) => {
                if let Some(durable) = self.durables.get_mut(d) {
                    durable.active = None;
                }
            }
        }
        for q in &left {
            if let Some(queue) = self.queues.get_mut(q) {
                queue.detach(key, &sub.options);
            }
        }
        // Auto-mode messages the session never wrote were never acknowledged: they go back
        // (flagged, as some may have reached the socket). One taken before it was stored is
        // stored now, and its producer's receipt waits for that.
        let mut sources: Vec<Source> = Vec::new();
        for delivery in std::mem::take(&mut sub.unwritten) {
            let source = sub.origin(&delivery.msg);
            if let Some(receipt) = delivery.unstored_receipt {
                let msg = &delivery.msg;
                match self.space_of(&source) {
                    Some(space) => self
                        .store
                        .put(space, key_of(msg), stored(msg), Some(receipt)),
                    None => receipt(),
                }
            }
            self.redeliver(&source, delivery.msg);
            if !sources.contains(&source) {
                sources.push(source);
            }
        }
        for delivery in std::mem::take(&mut sub.in_flight) {
            let source = sub.origin(&delivery.msg);
            self.redeliver(&source, delivery.msg);
            if !sources.contains(&source) {
                sources.push(source);
            }
        }
        if let Feed::One(source) = &sub.feed {
            if !sources.contains(source) {
                sources.push(source.clone());
            }
        }
        for source in &sources {
            self.dispatch(source);
        }
        for q in left {
            // Unique reply-queue names must not pile up: an idle queue is removed, and comes
            // back as new if used again.
            let kept = names::is_temporary(&q) || self.is_consumer_queue(&q);
            if self.queues.get(&q).is_some_and(idle) && !kept {
                self.queues.remove(&q);
                debug!(queue = %q, "removed an empty, unused queue");
            }
        }
    }

    pub(super) fn delete_durable(&mut self, conn: ConnId, name: String) -> Result<(), Refused> {
        let client_id = self.connection(conn)?.client_id.clone().ok_or_else(|| {
            Refused("deleting a durable subscription needs a client-id header on CONNECT".into())
        })?;
        let key = (client_id, name);
        if let Some(durable) = self.durables.get(&key) {
            // A client-id is not a login: only who may read its topic deletes it.
            self.authorised(conn, Operation::Read, &durable.topic)?;
        }
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
            self.purge(Arc::clone(&durable.space), &durable.paged, None);
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
