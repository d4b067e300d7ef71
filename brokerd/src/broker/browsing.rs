//! Queue browsers (`browser:true` on SUBSCRIBE): a snapshot of a queue's waiting messages,
//! delivered without consuming them as the browser's credit allows, then ActiveMQ's end-of-
//! browse marker. Messages paged out to the store are read back a page at a time, off the
//! router, only once those in memory are delivered, so a browse holds at most a page more.

use super::*;

/// A browser's snapshot still to deliver.
#[derive(Debug)]
pub(super) struct Browse {
    pub(super) queue: Arc<str>,
    /// Snapshot messages in memory, in delivery order.
    waiting: VecDeque<Arc<Message>>,
    /// The paged-out part still to read: store keys from `.0` up to, not including, `.1`.
    stored: Option<(u64, u64)>,
    /// A read of the paged-out part is in flight.
    reading: bool,
    /// The end marker was sent: nothing more comes.
    ended: bool,
}

impl Broker {
    /// The snapshot a browser of `queue` delivers: what waits in memory now, then what was
    /// paged out before now.
    pub(super) fn browse(&mut self, queue: Arc<str>) -> Browse {
        let upto = self.next_seq();
        let (waiting, stored) = match self.queues.get(&queue) {
            Some(q) => (
                q.pending.iter().cloned().collect(),
                q.paged.cursor.map(|cursor| (cursor, upto)),
            ),
            None => (VecDeque::new(), None),
        };
        Browse {
            queue,
            waiting,
            stored,
            reading: false,
            ended: false,
        }
    }

    /// Delivers a browser's snapshot as its credit allows; asks for the next stored page when
    /// memory's part is done; sends the end marker once everything is.
    pub(super) fn dispatch_browse(&mut self, key: SubKey) {
        let now = now_ms();
        loop {
            let Some(sub) = self.subscriptions.get_mut(&key) else {
                return;
            };
            let credit = sub.has_credit();
            let Feed::Browse(browse) = &mut sub.feed else {
                return;
            };
            if browse.ended || browse.reading || !credit {
                return;
            }
            if let Some(msg) = browse.waiting.pop_front() {
                if !msg.expired(now) && sub.accepts(&msg) {
                    self.deliver(key, msg);
                }
                continue;
            }
            if let Some((from, upto)) = browse.stored {
                let queue = Arc::clone(&browse.queue);
                self.read_for_browser(key, &queue, from, upto);
                return;
            }
            browse.ended = true;
            let (subscription, destination) = (Arc::clone(&sub.id), Arc::clone(&browse.queue));
            if let Some(c) = self.connections.get(&sub.conn) {
                let _ = c.outbox.send(Outbound::BrowseEnd {
                    subscription,
                    destination,
                });
            }
            return;
        }
    }

    fn read_for_browser(&mut self, key: SubKey, queue: &Arc<str>, from: u64, upto: u64) {
        let (Some(paging), Some(queue)) = (&self.paging, self.queues.get(queue)) else {
            // Nothing is paged out without paging, and a queue gone has nothing stored.
            return self.browsed_page(key, Ok(Vec::new()), upto, 1);
        };
        let (limit, space) = (paging.page, Arc::clone(&queue.space));
        if let Some(Feed::Browse(browse)) = self.subscriptions.get_mut(&key).map(|s| &mut s.feed) {
            browse.reading = true;
        }
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.tickets.insert(
            ticket,
            Ticket::Browse {
                sub: key,
                upto,
                limit,
            },
        );
        self.read_after_barrier(PageRead {
            ticket,
            space,
            from: Bytes::copy_from_slice(&from.to_be_bytes()),
            limit,
            count_below: None,
        });
    }

    /// A page of the snapshot's stored part came back (`limit` asked for): what is below
    /// `upto` is delivered, and the rest read next. A read that failed ends the stored part
    /// (the browser still gets its end marker; the failure is logged).
    pub(super) fn browsed_page(
        &mut self,
        key: SubKey,
        result: Result<paging::Entries, Arc<StoreError>>,
        upto: u64,
        limit: usize,
    ) {
        let Some(Feed::Browse(browse)) = self.subscriptions.get_mut(&key).map(|s| &mut s.feed)
        else {
            return;
        };
        browse.reading = false;
        let entries = result.unwrap_or_else(|err| {
            warn!(error = %err, queue = %browse.queue, "a browser could not read paged-out messages");
            Vec::new()
        });
        let full = entries.len() >= limit;
        let mut last = None;
        for (key, value) in entries {
            let Some(seq) = paging::seq_of(&key) else {
                continue;
            };
            last = Some(seq);
            if seq >= upto {
                break;
            }
            if let Some(msg) = Message::decode(&value) {
                browse.waiting.push_back(Arc::new(msg));
            }
        }
        browse.stored = match last {
            Some(last) if full && last + 1 < upto => Some((last + 1, upto)),
            _ => None,
        };
        self.dispatch_browse(key);
    }
}
