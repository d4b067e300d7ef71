//! Reading paged-out messages back: refilling a space from its cursor, counting what a takeover
//! found, purging a deleted durable subscription's pages (see [`super::paging`]).

use super::*;

impl Broker {
    /// Handles the answer to a count of what a takeover found stored, and asks for the next.
    pub(super) fn counted(
        &mut self,
        ticket: u64,
        result: Result<paging::Counted, Arc<StoreError>>,
    ) {
        if !matches!(self.tickets.get(&ticket), Some(Ticket::Count { .. })) {
            return;
        }
        let Some(Ticket::Count { source }) = self.tickets.remove(&ticket) else {
            return;
        };
        let Some(paged) = self.paged_mut(&source) else {
            return;
        };
        if paged.reading != Some(ticket) {
            // The durable subscription was deleted (and maybe re-created) meanwhile.
            return;
        }
        paged.reading = None;
        let Some(counting) = &mut paged.counting else {
            return;
        };
        counting.in_flight = false;
        match result {
            Err(err) => {
                // Counting is only for `ctl status`: give up rather than retry in a loop.
                warn!(error = %err, "counting stored messages failed; status counts will be low");
                paged.counting = None;
            }
            Ok(_) if std::mem::take(&mut counting.dirty) => {
                // A message was paged out into the range while it was counted: count again.
            }
            Ok((n, last)) => {
                paged.out += n as u64;
                match last.and_then(|k| paging::seq_of(&k)) {
                    Some(last) if n >= paging::COUNT_CHUNK => counting.next = last + 1,
                    _ => paged.counting = None,
                }
            }
        }
        // The next count, or a page if one is due meanwhile.
        self.refill(&source);
    }

    /// Asks for the next page of `source` if it has paged-out messages, has drained to its
    /// low-water mark, and has no read in flight; otherwise, if what a takeover found stored is
    /// still being counted, for the next count (pages first: consumers may be waiting).
    pub(super) fn refill(&mut self, source: &Source) {
        let Some(paging) = &self.paging else {
            return;
        };
        if self.draining {
            // Going passive: nothing more is delivered here, so nothing needs reading.
            return;
        }
        // Called on every dispatch: nothing is allocated unless a read is asked for.
        let (pending, paged, space) = match source {
            Source::Queue(q) => match self.queues.get_mut(q) {
                Some(queue) => (&queue.pending, &mut queue.paged, &queue.space),
                None => return,
            },
            Source::Durable(d) => match self.durables.get_mut(d) {
                Some(d) => (&d.pending, &mut d.paged, &d.space),
                None => return,
            },
            Source::Topic(_) => return,
        };
        if paged.reading.is_some() {
            return;
        }
        let Some(cursor) = paged.cursor else {
            return;
        };
        if paged
            .counting
            .is_some_and(|c| c.next.max(cursor) >= c.below)
        {
            // The cursor has passed everything there was to count.
            paged.counting = None;
        }
        let page_due = pending.len() <= paging.low_water();
        let count_turn = paged.counting.is_some_and(|c| !page_due || c.paged_last);
        let (purpose, from, limit, count_below) = if page_due && !count_turn {
            if let Some(counting) = &mut paged.counting {
                counting.paged_last = true;
            }
            let limit = paging.page - pending.len();
            let purpose = Ticket::Refill {
                source: source.clone(),
                limit,
            };
            (purpose, cursor, limit, None)
        } else if let Some(counting) = &mut paged.counting {
            counting.paged_last = false;
            let from = counting.next.max(cursor);
            counting.in_flight = true;
            counting.dirty = false;
            let purpose = Ticket::Count {
                source: source.clone(),
            };
            (purpose, from, paging::COUNT_CHUNK, Some(counting.below))
        } else {
            return;
        };
        let space = Arc::clone(space);
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        paged.reading = Some(ticket);
        self.tickets.insert(ticket, purpose);
        self.read_after_barrier(PageRead {
            ticket,
            space,
            from: Bytes::copy_from_slice(&from.to_be_bytes()),
            limit,
            count_below: count_below.map(|below: u64| Bytes::copy_from_slice(&below.to_be_bytes())),
        });
    }

    /// Sends `read` once every write submitted so far is applied (a barrier), so the read
    /// sees every message paged out before it was asked for.
    pub(super) fn read_after_barrier(&self, read: PageRead) {
        let Some(paging) = &self.paging else {
            return;
        };
        let reads = paging.reads.clone();
        self.store.barrier(Box::new(move || {
            // A closed channel means the broker is gone; nobody waits for the answer.
            let _ = reads.send(read);
        }));
    }

    /// A number never used before, for a durable subscription's space: the next message seq.
    pub(super) fn incarnation(&mut self) -> u64 {
        self.next_seq()
    }

    /// Removes a deleted durable subscription's (or a purged queue's) paged-out messages from
    /// the store, a page at a time, off the router; `done` runs once every removal is durable.
    pub(super) fn purge(&mut self, space: Arc<str>, paged: &Paged, done: Option<OnDurable>) {
        match paged.cursor {
            Some(cursor) => {
                // Every message paged out so far is older than the next one published.
                let upto = (self.settings.epoch << 40) | self.counter;
                self.purge_from(space, cursor, upto, done);
            }
            None => {
                if let Some(done) = done {
                    self.store.barrier(done);
                }
            }
        }
    }

    /// Asks for the next page of a purge: keys from `from`, removing those up to `upto`.
    pub(super) fn purge_from(
        &mut self,
        space: Arc<str>,
        from: u64,
        upto: u64,
        done: Option<OnDurable>,
    ) {
        let Some(page) = self.paging.as_ref().map(|p| p.page) else {
            if let Some(done) = done {
                self.store.barrier(done);
            }
            return;
        };
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.tickets.insert(
            ticket,
            Ticket::Purge {
                space: Arc::clone(&space),
                upto,
                limit: page,
                done,
            },
        );
        self.read_after_barrier(PageRead {
            ticket,
            space,
            from: Bytes::copy_from_slice(&from.to_be_bytes()),
            limit: page,
            count_below: None,
        });
    }

    /// Handles the answer to a page read.
    pub(super) fn paged_in(
        &mut self,
        ticket: u64,
        result: Result<paging::Entries, Arc<StoreError>>,
    ) {
        let Some(purpose) = self.tickets.remove(&ticket) else {
            return;
        };
        if let Ticket::Browse { sub, upto, limit } = purpose {
            return self.browsed_page(sub, result, upto, limit);
        }
        let entries = match result {
            Ok(entries) => entries,
            Err(err) => {
                // The space keeps its cursor: the next dispatch asks again.
                warn!(error = %err, "reading paged-out messages failed");
                if let Ticket::Refill { source, .. } = &purpose {
                    if let Some(paged) = self.paged_mut(source) {
                        if paged.reading == Some(ticket) {
                            paged.reading = None;
                        }
                    }
                }
                return;
            }
        };
        match purpose {
            Ticket::Refill { source, limit } => {
                let epoch = self.settings.epoch;
                let (pending, paged) = match &source {
                    Source::Queue(q) => match self.queues.get_mut(q) {
                        Some(queue) => (&mut queue.pending, &mut queue.paged),
                        None => return,
                    },
                    Source::Durable(d) => match self.durables.get_mut(d) {
                        Some(d) => (&mut d.pending, &mut d.paged),
                        None => return,
                    },
                    Source::Topic(_) => return,
                };
                if paged.reading != Some(ticket) {
                    // The durable subscription was deleted (and maybe re-created) meanwhile.
                    return;
                }
                paged.reading = None;
                let loaded = paged.load(pending, entries, limit, epoch);
                debug!(loaded, cursor = ?paged.cursor, "paged messages in");
                self.dispatch(&source);
            }
            Ticket::Purge {
                space,
                upto,
                limit,
                done,
            } => {
                let full = entries.len() >= limit;
                let mut last = None;
                for (key, _) in entries {
                    last = Some(key.clone());
                    if key.as_ref() <= upto.to_be_bytes().as_slice() {
                        self.store.remove(Arc::clone(&space), key);
                    }
                }
                let next = last
                    .and_then(|k| paging::seq_of(&k))
                    .filter(|last| full && *last < upto);
                match (next, done) {
                    (Some(last), done) => self.purge_from(space, last + 1, upto, done),
                    (None, Some(done)) => self.store.barrier(done),
                    (None, None) => {}
                }
            }
            // Counts are answered with Request::Counted.
            Ticket::Count { .. } | Ticket::Browse { .. } => {}
        }
    }

    pub(super) fn paged_mut(&mut self, source: &Source) -> Option<&mut Paged> {
        match source {
            Source::Queue(q) => self.queues.get_mut(q).map(|q| &mut q.paged),
            Source::Durable(d) => self.durables.get_mut(d).map(|d| &mut d.paged),
            Source::Topic(_) => None,
        }
    }
}
