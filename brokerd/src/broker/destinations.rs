//! Destinations: queues made on first use within the destinations cap, the destinations
//! created so far ([`created`]: using one again needs no `admin`, in memory or not), and the
//! state a takeover recovers from the store (each queue's and durable subscription's first
//! page).

use super::*;
use crate::auth::Operation;

/// A queue is idle when nothing would be lost by forgetting it: no consumer, no message in
/// memory, none paged out or being read or counted.
pub(super) fn idle(queue: &Queue) -> bool {
    let paged = &queue.paged;
    queue.consumers.is_empty()
        && queue.pending.is_empty()
        && paged.cursor.is_none()
        && paged.reading.is_none()
        && paged.counting.is_none()
}

impl Broker {
    /// The destinations a client's header names, canonical ([`names`]): a temporary one it
    /// names as `/temp-queue/NAME` is created; one of another connection must still exist.
    pub(super) fn resolve(&mut self, conn: ConnId, header: &str) -> Result<Vec<Arc<str>>, Refused> {
        let c = self.connection(conn)?;
        let prefix = Arc::clone(&c.temporary);
        let resolved = names::resolve(header, &prefix).map_err(|e| Refused(e.to_string()))?;
        for name in resolved.iter().filter(|n| names::is_temporary(n)) {
            if self.temporaries.contains_key(name) {
                continue;
            }
            if !names::created_by(name, &prefix) {
                return Err(Refused(format!(
                    "temporary destination {name} does not exist: the connection that created it has ended"
                )));
            }
            self.room_for(conn, name)?;
            self.temporaries.insert(Arc::clone(name), conn);
            self.connection(conn)?.temporaries.push(Arc::clone(name));
            debug!(conn, destination = %name, "temporary destination created");
        }
        Ok(resolved)
    }

    /// A temporary destination goes with the connection that created it (after its
    /// subscriptions, the only ones it had), and its messages with it: they were never stored.
    pub(super) fn delete_temporary(&mut self, name: &Arc<str>) {
        self.temporaries.remove(name);
        self.queues.remove(name);
        self.topics.remove(name);
        self.topic_counters.remove(name);
        debug!(destination = %name, "temporary destination deleted");
    }

    /// Whether `destination` is held in memory.
    fn held(&self, destination: &str) -> bool {
        match names::kind(destination) {
            Kind::Queue => self.queues.contains_key(destination),
            Kind::Topic => self.topics.contains_key(destination),
        }
    }

    /// Whether `destination` exists: held in memory, or created and not deleted since.
    pub(super) fn exists(&self, destination: &str) -> bool {
        self.held(destination) || self.created.contains(destination)
    }

    /// Refuses a client's request that would bring `destination` into memory past the
    /// destinations cap, or create it ([`Broker::creatable`]) where it may not. Only clients
    /// are refused: the broker's own routing (the dead-letter queue) is not.
    pub(super) fn room_for(&self, conn: ConnId, destination: &str) -> Result<(), Refused> {
        if self.held(destination) {
            return Ok(());
        }
        self.creatable(conn, destination)?;
        let caps = self.settings.caps;
        if self.queues.len() + self.topics.len() < caps.destinations {
            return Ok(());
        }
        Err(Refused(caps.too_many_destinations(destination)))
    }

    /// Refuses a client's request that would create `destination`, one not created before,
    /// without `admin` on it where the users file says who may create what (as ActiveMQ's
    /// authorisation does). One created before (idle and gone from memory, without topic
    /// subscribers, or before a restart or failover) exists still.
    pub(super) fn creatable(&self, conn: ConnId, destination: &str) -> Result<(), Refused> {
        if self.created.contains(destination) {
            return Ok(());
        }
        self.authorised(conn, Operation::Admin, destination)
            .map_err(|Refused(denied)| Refused(format!("{denied} (create it)")))
    }

    /// Remembers `destination` as created, in memory and in the store, the first time it is
    /// made: once per destination, never on the SEND path of one that exists. A temporary
    /// destination is never remembered (it ends with its connection). Past
    /// `--max-created-destinations` a new one is not remembered either (logged once), so
    /// unique names cannot grow the registry, nor the time a takeover reads it, without bound;
    /// it then only needs `admin` again once it is gone from memory. Nothing is refused: a
    /// virtual topic's consumer queue, which must be fed while no one reads it, is remembered
    /// regardless, and is all that is remembered without a users file (`remember_created`).
    pub(super) fn register(&mut self, destination: &Arc<str>) {
        if names::is_temporary(destination) || self.created.contains(destination) {
            return;
        }
        let consumer_queue = virtual_topics::virtual_topic_of(destination).is_some();
        if !self.settings.remember_created && !consumer_queue {
            return;
        }
        let cap = self.settings.caps.created_destinations;
        if self.created.len() >= cap && !consumer_queue {
            if !self.created_full_logged {
                self.created_full_logged = true;
                warn!(%destination, cap, "not remembering more created destinations (--max-created-destinations): once out of memory, each new one needs admin again to be used");
            }
            return;
        }
        self.created.insert(Arc::clone(destination));
        // Durability: no callback, so nothing waits for this write; it is durable
        // with the journal's next flush. A crash before that only makes the destination new
        // again (its next user needs `admin`); no message is lost (see `created`).
        self.store.put(
            created::SPACE.into(),
            created::key(destination),
            Value::Bytes(Bytes::new()),
            None,
        );
        debug!(%destination, "destination created");
    }

    /// Forgets `destination` as created (an operator deleted it): its next user needs `admin`.
    pub(super) fn unregister(&mut self, destination: &str) {
        if self.created.remove(destination) {
            self.store
                .remove(created::SPACE.into(), created::key(destination));
        }
    }

    /// Refuses `op` on the canonical `destination` where the users file does not grant it to
    /// the connection; the checks the core makes itself (creating a destination, where the
    /// scheduler puts BROWSE copies), beside the session's of each SEND and SUBSCRIBE.
    pub(super) fn authorised(
        &self,
        conn: ConnId,
        op: Operation,
        destination: &str,
    ) -> Result<(), Refused> {
        let Some(c) = self.connections.get(&conn) else {
            return Ok(());
        };
        match &c.access {
            Some(access) if !access.permits(op, destination) => {
                let denied = access.denied(op, &names::shown(destination, &c.temporary));
                debug!(conn, reason = %denied, "refused");
                Err(Refused(denied.to_string()))
            }
            _ => Ok(()),
        }
    }

    pub(super) fn queue(&mut self, destination: &Arc<str>) -> &mut Queue {
        if !self.queues.contains_key(destination) {
            let pending = self.new_pending();
            self.queues.insert(
                Arc::clone(destination),
                Queue {
                    space: queue_space(destination),
                    pending,
                    paged: Paged::default(),
                    consumers: Vec::new(),
                    next: 0,
                    choosy_consumers: 0,
                    exclusive_consumers: 0,
                    groups: HashMap::new(),
                    counters: admin::Counters::default(),
                },
            );
            self.attach_filters(destination);
            self.note_queue(destination);
            self.register(destination);
        }
        self.queues.get_mut(destination).expect("inserted above")
    }

    /// A new queue feeds every subscription whose filter matches it.
    fn attach_filters(&mut self, destination: &Arc<str>) {
        let Some(queue) = self.queues.get_mut(destination) else {
            return;
        };
        for key in &self.queue_filters {
            if let Some(Subscription {
                feed: Feed::Queues { filter, queues },
                options,
                ..
            }) = self.subscriptions.get_mut(key)
            {
                if filter.matches(destination) {
                    queues.push(Arc::clone(destination));
                    queue.attach(*key, options);
                }
            }
        }
    }

    /// Restores what the store holds: durable subscriptions, and the first page of every
    /// queue's and durable subscription's messages (all of them with paging off). The rest
    /// stays in the store until consumers make room, so a takeover costs about the store's open
    /// time whatever the backlog. Blocking reads: run it before the router task starts, off
    /// the async threads. Returns how many messages it brought into memory.
    ///
    /// Everything recovered may have been delivered before the takeover, so it is flagged
    /// redelivered when delivered again (the JMS reading of the flag: "possibly delivered").
    pub fn recover(&mut self, store: &dyn PageStore) -> Result<usize, StoreError> {
        let page = self.paging.as_ref().map_or(usize::MAX, |p| p.page);
        let mut restored = 0;
        let spaces = store.spaces()?;
        let registry = registry::recover(store, &spaces)?;
        if !registry.migration.is_empty() {
            self.store.store.apply(registry.migration, None);
        }
        for space in registry.orphans {
            // A deleted subscription's purge, cut short by a crash: finish it.
            self.purge_from(space, 0, u64::MAX, None);
        }
        let created = created::recover(store, &spaces)?;
        if !created.migration.is_empty() {
            self.store.store.apply(created.migration, None);
        }
        self.created.extend(created.names);
        self.recover_consumer_queues();
        for space in &spaces {
            let Some(destination) = space.strip_prefix("q/") else {
                continue;
            };
            let entries = store.read(space, &[], page)?;
            let epoch = self.settings.epoch;
            let queue = self.queue(&destination.into());
            queue.paged.cursor = Some(0);
            // Everything stored so far is to be counted: the first page comes in uncounted.
            queue.paged.count_from_cursor(epoch << 40);
            restored += queue.paged.load(&mut queue.pending, entries, page, epoch);
        }
        for entry in registry.entries {
            let key: DurableKey = (entry.client_id, entry.name);
            let space = entry.space;
            let topic: Arc<str> = entry.topic.into();
            if Pattern::new(&topic).is_none() {
                // Its topic was created with it (or by a store older than the registry).
                self.register(&topic);
            }
            let mut durable = Durable {
                topic,
                pending: self.new_pending(),
                paged: Paged {
                    cursor: Some(0),
                    ..Paged::default()
                },
                active: None,
                space,
            };
            if spaces.contains(&durable.space) {
                let entries = store.read(&durable.space, &[], page)?;
                let (paged, pending) = (&mut durable.paged, &mut durable.pending);
                paged.count_from_cursor(self.settings.epoch << 40);
                restored += paged.load(pending, entries, page, self.settings.epoch);
            } else {
                durable.paged.cursor = None;
            }
            self.durables.insert(key, durable);
        }
        // Count what stays stored beyond the first pages, in the background: the requests
        // queue up for the page reader, which starts with the router.
        let sources: Vec<Source> = (self.queues.keys().cloned().map(Source::Queue))
            .chain(self.durables.keys().cloned().map(Source::Durable))
            .collect();
        for source in sources {
            self.refill(&source);
        }
        Ok(restored)
    }
}
