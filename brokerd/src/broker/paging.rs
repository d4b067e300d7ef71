//! Paging: a queue's (or durable subscription's) persistent messages beyond an in-memory
//! budget live only in the store, and come back a page at a time as consumers drain the rest.
//!
//! The router never touches the disk for this. It asks for a page with a [`PageRead`] on an
//! unbounded channel; a reader (the [`Pager`] thread in the daemon, the test itself in unit
//! tests) reads the store and answers with [`super::Request::Page`], which the router handles
//! like any other request.
//!
//! Per space the router keeps a [`Paged`] record. Invariants:
//! - every persistent message of the space with `seq >= cursor` is in the store and has never
//!   been in memory; every one with `seq <= high` has been (it is waiting, in flight, or gone),
//!   and `high < cursor`. So a page read from `cursor` holds no message already delivered, and
//!   a refill skips any entry at or below `high`: nothing is delivered twice;
//! - at most one read is in flight per space (`reading` holds its ticket); an answer whose
//!   ticket is not the space's current one (the durable subscription was deleted meanwhile) is
//!   dropped;
//! - a read is issued behind a journal barrier, so it sees every message paged out before it
//!   was asked for. One paged out after the barrier has a higher seq than anything the read
//!   returns, and `stored` (the highest seq paged out) keeps the cursor when a read comes back
//!   short while such messages exist.
//!
//! Counting: `ctl status` counts paged-out messages without reading the store. Each space keeps
//! `out`, the number of its messages in the store only: one more for each message paged out,
//! fewer by each one a page brings in. What a takeover found stored beyond its first page is
//! counted once, in the background: the router asks for counts of [`COUNT_CHUNK`] keys at a time
//! through the same reader and the same one-read-in-flight slot as pages, so a count never
//! overlaps a read of its space, runs behind a journal barrier, and starts at the cursor, where
//! the keys are exactly the stored, never-loaded messages. Pages go first, but while both are due
//! pages and counts take turns. Until the count is done the region
//! `[max(counting.next, cursor), counting.below)` is not in `out`: a page that brings messages
//! in from there does not subtract them, and a message paged out into it (one moved to the
//! dead-letter queue keeps its old seq) is left for the count to find, or, if a count of it may
//! already be under way, makes that count be done again.
//!
//! Order: a space's paged-out messages come back in seq order, which is FIFO. Priority orders
//! only what is in memory: once a space pages out, a new high-priority persistent message waits
//! behind the paged-out ones. Non-persistent messages
//! cannot be paged: they always stay in memory, bounded by the producers' memory limit, and a
//! page brought in takes its place among them by seq.

use super::message::Message;
use super::pending::Pending;
use super::Request;
use crate::journal::Recovered;
use crate::store::StoreError;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{error, warn};

/// Times the [`Pager`] tries a read before the store counts as failed: a read error is a disk or
/// a corrupt store, which a retry or two rides out only if it was transient.
pub const READ_ATTEMPTS: u32 = 3;

/// Wait between two attempts at a read.
const READ_RETRY_DELAY: Duration = Duration::from_millis(50);

/// Stored entries as (key, value), in key order.
pub type Entries = Vec<(Bytes, Bytes)>;

/// Keys counted per count request: small enough that a consumer waiting for a page behind it
/// waits milliseconds, large enough that a million stored messages take a few hundred requests.
pub const COUNT_CHUNK: usize = 8192;

/// The answer to a count: how many keys, and the last one (to go on from when the count
/// reached its limit).
pub type Counted = (usize, Option<Bytes>);

/// The read side of the store that paging needs. Reads block: call them off the router.
pub trait PageStore: Send + Sync + 'static {
    /// Every space that holds at least one entry.
    fn spaces(&self) -> Result<Vec<Arc<str>>, StoreError>;
    /// Up to `limit` entries of `space` whose keys are `from` or after, in key order.
    fn read(&self, space: &str, from: &[u8], limit: usize) -> Result<Entries, StoreError>;
    /// How many keys of `space` are `from` or after and before `below`, counting at most
    /// `limit`, and the last one counted.
    fn count(
        &self,
        space: &str,
        from: &[u8],
        below: &[u8],
        limit: usize,
    ) -> Result<Counted, StoreError> {
        let entries = self.read(space, from, limit)?;
        let mut keys = entries
            .into_iter()
            .map(|(k, _)| k)
            .take_while(|k| &k[..] < below);
        let mut counted = (0, None);
        for key in keys.by_ref() {
            counted = (counted.0 + 1, Some(key));
        }
        Ok(counted)
    }
}

impl PageStore for Recovered {
    fn spaces(&self) -> Result<Vec<Arc<str>>, StoreError> {
        Recovered::spaces(self)
    }
    fn read(&self, space: &str, from: &[u8], limit: usize) -> Result<Entries, StoreError> {
        self.read_page(space, from, limit)
    }
    fn count(
        &self,
        space: &str,
        from: &[u8],
        below: &[u8],
        limit: usize,
    ) -> Result<Counted, StoreError> {
        self.count_keys(space, from, below, limit)
    }
}

/// A read the router asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRead {
    /// Names the answer ([`super::Request::Page`] or [`super::Request::Counted`]).
    pub ticket: u64,
    pub space: Arc<str>,
    /// The first key to read.
    pub from: Bytes,
    pub limit: usize,
    /// Count the keys from `from` up to this one (excluded) instead of reading entries.
    pub count_below: Option<Bytes>,
}

impl PageRead {
    /// Serves the read from `store` (blocking).
    pub fn serve(self, store: &dyn PageStore) -> Request {
        let ticket = self.ticket;
        match &self.count_below {
            None => Request::Page {
                ticket,
                result: store
                    .read(&self.space, &self.from, self.limit)
                    .map_err(Arc::new),
            },
            Some(below) => Request::Counted {
                ticket,
                result: store
                    .count(&self.space, &self.from, below, self.limit)
                    .map_err(Arc::new),
            },
        }
    }
}

/// Told once, by the [`Pager`], that the store cannot be read.
pub type OnReadFailure = Box<dyn FnOnce(StoreError) + Send + 'static>;

/// The daemon's reader: one thread serving the router's reads in order, so disk reads never
/// run on the router task and never more than one at a time.
///
/// A read that fails [`READ_ATTEMPTS`] times is the store failing: `fail` is told (the daemon
/// stops the broker, saying why: lockd restarts it or hands over) and the thread ends, instead
/// of leaving a space whose stored messages can no longer come back silently stuck.
pub struct Pager {
    pub store: Arc<dyn PageStore>,
    pub reads: mpsc::UnboundedReceiver<PageRead>,
    pub fail: OnReadFailure,
}

/// Serves `read`, trying a failed read again up to [`READ_ATTEMPTS`] times in all.
fn serve_patiently(read: PageRead, store: &dyn PageStore) -> Result<Request, StoreError> {
    let mut attempt = 1;
    loop {
        let answer = read.clone().serve(store);
        let cause = match &answer {
            Request::Page { result: Err(e), .. } | Request::Counted { result: Err(e), .. } => {
                Arc::clone(e)
            }
            _ => return Ok(answer),
        };
        if attempt >= READ_ATTEMPTS {
            return Err(StoreError::PageRead {
                space: read.space.to_string(),
                attempts: attempt,
                cause,
            });
        }
        warn!(space = %read.space, attempt, error = %cause, "reading stored messages failed; retrying");
        attempt += 1;
        std::thread::sleep(READ_RETRY_DELAY);
    }
}

impl Pager {
    /// Starts the reader thread. It holds the router's inbox only weakly, so the router still
    /// ends once every session has let go of it; the thread ends with the router (whose
    /// dropping closes `reads`), or after a read failed for good.
    pub fn start(self, inbox: mpsc::WeakSender<Request>) -> std::io::Result<()> {
        let Pager {
            store,
            mut reads,
            fail,
        } = self;
        std::thread::Builder::new()
            .name("pager".into())
            .spawn(move || {
                // A plain thread, not a runtime worker, so blocking here is fine.
                while let Some(read) = reads.blocking_recv() {
                    let answer = match serve_patiently(read, &*store) {
                        Ok(answer) => answer,
                        Err(err) => {
                            error!(error = %err, "the store cannot be read; stopping the broker");
                            return fail(err);
                        }
                    };
                    let Some(inbox) = inbox.upgrade() else {
                        return;
                    };
                    if inbox.blocking_send(answer).is_err() {
                        return;
                    }
                }
            })
            .map(drop)
    }
}

/// Paging settings of a broker.
#[derive(Debug)]
pub(super) struct Paging {
    /// Messages of one space kept in memory at most before new persistent ones go to the store
    /// only; also the size of a read.
    pub page: usize,
    pub reads: mpsc::UnboundedSender<PageRead>,
}

impl Paging {
    /// At or below this many waiting messages, a space with paged-out messages is refilled.
    pub fn low_water(&self) -> usize {
        self.page / 2
    }
}

/// One space's paging state (see the module's invariants).
#[derive(Debug, Default)]
pub(super) struct Paged {
    /// The seq of the first stored message not in memory; `None`: all of them are in memory.
    pub cursor: Option<u64>,
    /// The highest seq of a persistent message ever brought into memory.
    pub high: u64,
    /// The highest seq paged out (written to the store only) since the broker started.
    pub stored: u64,
    /// The ticket of the read (or count) in flight.
    pub reading: Option<u64>,
    /// Messages of the space in the store only, as far as counted (see the module's
    /// "Counting").
    pub out: u64,
    /// Set while what a takeover found stored beyond its first page is being counted.
    pub counting: Option<Counting>,
}

/// The background count of the messages a takeover found stored beyond its first page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Counting {
    /// The first key not counted yet (the count also starts no lower than the cursor).
    pub next: u64,
    /// The first seq of this broker's epoch: keys from here on were all paged out by this
    /// broker, so `out` has them already.
    pub below: u64,
    /// A count request is in flight.
    pub in_flight: bool,
    /// A message was paged out into the uncounted region while a count was in flight, which
    /// may or may not have seen it: that count's answer is dropped and the count asked again.
    pub dirty: bool,
    /// The last request for the space was a page: if a page is due again, a count goes first,
    /// so that a consumer that keeps up does not hold the count off for its whole backlog.
    pub paged_last: bool,
}

impl Paged {
    /// Whether a new persistent message `seq` goes to the store only: the space already has
    /// paged-out messages (FIFO: it goes behind them), or its memory budget is used up. A
    /// message older than what memory has held (one moved to the dead-letter queue keeps its
    /// seq) stays in memory, so the cursor never moves back over a delivered message.
    pub fn pages_out(&mut self, paging: Option<&Paging>, pending: &Pending, seq: u64) -> bool {
        let Some(paging) = paging else {
            return false;
        };
        match self.cursor {
            Some(cursor) if seq >= cursor => {}
            Some(_) => return false,
            None if pending.len() >= paging.page && seq > self.high => self.cursor = Some(seq),
            None => return false,
        }
        self.stored = self.stored.max(seq);
        if self.uncounted(seq) {
            // The count will find it (it runs behind a barrier, after this write); one already
            // under way may have missed it.
            if let Some(counting) = &mut self.counting {
                counting.dirty |= counting.in_flight;
            }
        } else {
            self.out += 1;
        }
        true
    }

    /// Whether a stored message `seq` lies where the background count has yet to go.
    pub fn uncounted(&self, seq: u64) -> bool {
        match (self.counting, self.cursor) {
            (Some(counting), Some(cursor)) => {
                seq >= counting.next.max(cursor) && seq < counting.below
            }
            _ => false,
        }
    }

    /// Starts counting what is stored from the cursor on, below `below` (a takeover's first
    /// seq), if anything is.
    pub fn count_from_cursor(&mut self, below: u64) {
        self.counting = self
            .cursor
            .filter(|cursor| *cursor < below)
            .map(|next| Counting {
                next,
                below,
                in_flight: false,
                dirty: false,
                paged_last: false,
            });
    }

    /// Notes a persistent message brought into memory.
    pub fn loaded(&mut self, seq: u64) {
        self.high = self.high.max(seq);
    }

    /// Brings a page into `pending`, skipping anything memory has held, and moves the cursor:
    /// past the page, or to `None` once the store has nothing more. A message stored before
    /// `epoch` may have been delivered by an earlier broker, so it is flagged redelivered.
    /// Returns how many messages came in; `out` loses those it had counted.
    pub fn load(
        &mut self,
        pending: &mut Pending,
        entries: Entries,
        limit: usize,
        epoch: u64,
    ) -> usize {
        let Some(cursor) = self.cursor else {
            return 0;
        };
        let full = entries.len() >= limit;
        let mut last = None;
        let mut loaded = 0;
        for (key, value) in entries {
            let Some(seq) = seq_of(&key) else {
                warn!("skipping a stored entry whose key is not a message sequence");
                continue;
            };
            last = Some(seq);
            if seq < cursor || seq <= self.high {
                continue;
            }
            let Some(mut msg) = Message::decode(&value) else {
                warn!(
                    seq,
                    "skipping a stored entry that is not a message of this version"
                );
                continue;
            };
            if seq >> 40 < epoch {
                msg.redeliveries = msg.redeliveries.max(1);
            }
            if !self.uncounted(seq) {
                debug_assert!(self.out > 0, "paged-out count out of step");
                self.out = self.out.saturating_sub(1);
            }
            self.high = seq;
            pending.put_back(Arc::new(msg));
            loaded += 1;
        }
        self.cursor = match last {
            Some(last) if full || self.stored > last => Some(last + 1),
            Some(_) => None,
            None if self.stored != 0 && self.stored >= cursor => Some(cursor),
            None => None,
        };
        if self.cursor.is_none() {
            // Everything stored has been in memory: nothing is left to count.
            debug_assert_eq!(self.out, 0, "paged-out count out of step");
            self.out = 0;
            self.counting = None;
        }
        loaded
    }
}

/// A store key's message sequence (big-endian, see `key_of`).
/// The message sequence a store key holds (keys are big-endian sequences).
pub(super) fn seq_of(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::mpsc::channel;

    /// Bound on any wait here; these tests take milliseconds.
    const WAIT: Duration = Duration::from_secs(20);

    /// A store whose first `failures` reads fail.
    struct Flaky {
        failures: u32,
        reads: AtomicU32,
    }

    impl PageStore for Flaky {
        fn spaces(&self) -> Result<Vec<Arc<str>>, StoreError> {
            Ok(Vec::new())
        }
        fn read(&self, _: &str, _: &[u8], _: usize) -> Result<Entries, StoreError> {
            if self.reads.fetch_add(1, Ordering::SeqCst) < self.failures {
                return Err(StoreError::CorruptKey {
                    path: "store".into(),
                    len: 1,
                });
            }
            Ok(vec![(
                Bytes::from_static(&[0; 8]),
                Bytes::from_static(b"m"),
            )])
        }
    }

    /// Starts a pager on `store`, asks for one page, and returns what the router got and what
    /// the failure callback got.
    fn one_read(store: Flaky) -> (Option<Request>, Option<StoreError>) {
        let (inbox, mut router) = mpsc::channel(4);
        let (reads_tx, reads) = mpsc::unbounded_channel();
        let (failed_tx, failed) = channel();
        let pager = Pager {
            store: Arc::new(store),
            reads,
            fail: Box::new(move |err| {
                let _ = failed_tx.send(err);
            }),
        };
        pager.start(inbox.downgrade()).unwrap();
        reads_tx
            .send(PageRead {
                ticket: 7,
                space: Arc::from("q/a"),
                from: Bytes::from_static(&[0; 8]),
                limit: 10,
                count_below: None,
            })
            .unwrap();
        // The answer, or the failure: whichever the pager gives.
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Ok(request) = router.try_recv() {
                return (Some(request), failed.try_recv().ok());
            }
            if let Ok(err) = failed.try_recv() {
                return (router.try_recv().ok(), Some(err));
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the pager answered nothing"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_read_that_keeps_failing_stops_the_broker_loudly_instead_of_stalling_the_space() {
        let (answer, failure) = one_read(Flaky {
            failures: u32::MAX,
            reads: AtomicU32::new(0),
        });
        assert!(answer.is_none(), "the router is not left to shrug it off");
        let err = failure.expect("the failure is reported");
        assert!(
            matches!(
                err,
                StoreError::PageRead {
                    attempts: READ_ATTEMPTS,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("\"q/a\""), "{err}");
    }

    #[test]
    fn a_read_that_fails_once_is_tried_again() {
        let (answer, failure) = one_read(Flaky {
            failures: 1,
            reads: AtomicU32::new(0),
        });
        assert!(failure.is_none(), "{failure:?}");
        match answer {
            Some(Request::Page {
                ticket: 7,
                result: Ok(entries),
            }) => assert_eq!(entries.len(), 1),
            _ => panic!("expected the page after one retry"),
        }
    }
}
