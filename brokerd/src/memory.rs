//! The producers' memory limit: what counts against it, and how a producer held back at the
//! limit waits for room.
//!
//! What counts ([`Usage::bytes`]): the bytes in the broker's [`Gauge`] (waiting messages that
//! paging cannot bound: non-persistent ones in queues and durable subscriptions, and every
//! message held in a slow topic subscriber's backlog; the SENDs of open transactions; and
//! deliveries not yet acknowledged, or in auto mode not yet written), the scheduled SENDs not
//! yet in the scheduler's store, and the store writes queued and not yet written (the
//! journal's pending bytes). Persistent queue messages beyond a
//! page are bounded by paging instead.
//!
//! A session over the limit waits on the gauge's [`Room`] ([`Usage::wait_for_room`]) until
//! memory is released or its wait (`--send-wait-ms`) is over. Whatever releases memory (the
//! broker task as messages leave, the journal's writer thread after a flush) calls
//! [`Room::released`], which wakes one waiting producer; a producer that finds room passes the
//! wakeup on, so one large release lets every producer it has room for through, while small
//! releases at a consumer's pace wake one producer each, not all of them.
//!
//! No lost wakeup: a waiter registers (a `SeqCst` increment of `waiters`) before it looks at the
//! counters, and a releaser lowers its counter before it looks at `waiters`, all `SeqCst`. So
//! either the waiter's look sees the release, or the releaser sees the waiter and notifies;
//! `Notify::notify_one` keeps the notification as a permit if the waiter is between its look and
//! its wait. When nobody waits, a release costs one atomic load.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Bytes the broker holds in waiting messages that paging cannot bound; shared by the broker
/// task (which adds and subtracts) and the sessions (which read it at the memory limit).
pub type Gauge = Arc<Meter>;

/// A byte counter whose decreases wake producers waiting for memory.
#[derive(Debug, Default)]
pub struct Meter {
    bytes: AtomicUsize,
    room: Arc<Room>,
}

impl Meter {
    /// A counter whose decreases wake the producers waiting in `room` (another meter's).
    pub fn sharing(room: Arc<Room>) -> Meter {
        Meter {
            bytes: AtomicUsize::new(0),
            room,
        }
    }

    /// Counts `n` more bytes.
    pub fn add(&self, n: usize) {
        self.bytes.fetch_add(n, SeqCst);
    }

    /// Counts `n` bytes fewer, and wakes a producer waiting for memory, if any.
    pub fn sub(&self, n: usize) {
        self.bytes.fetch_sub(n, SeqCst);
        self.room.released();
    }

    /// Bytes counted now.
    pub fn bytes(&self) -> usize {
        self.bytes.load(SeqCst)
    }

    /// Where producers wait for this counter (and whatever else shares the room) to go down.
    pub fn room(&self) -> &Arc<Room> {
        &self.room
    }
}

/// Producers waiting for memory, and the means to wake them.
#[derive(Debug, Default)]
pub struct Room {
    notify: Notify,
    /// Producers in [`Room::wait`]: releases notify only when there is one.
    waiters: AtomicUsize,
}

/// A producer's registration in [`Room::waiters`], undone however its wait ends (the session
/// task may be aborted while it waits).
struct Registered<'a>(&'a Room);

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.0.waiters.fetch_sub(1, SeqCst);
    }
}

impl Room {
    /// Memory counted against the limit went down: wake one waiting producer, if there is one.
    /// Call it after lowering the counter (see the module's ordering argument).
    pub fn released(&self) {
        if self.waiters.load(SeqCst) != 0 {
            self.notify.notify_one();
        }
    }

    /// Waits until `fits()` holds, looking again each time memory is released, or until
    /// `deadline`. Returns whether it fits. `fits` must read the counters with `SeqCst`.
    pub async fn wait(&self, deadline: Instant, fits: impl Fn() -> bool) -> bool {
        self.waiters.fetch_add(1, SeqCst);
        let registered = Registered(self);
        let fits_now = loop {
            if fits() {
                break true;
            }
            tokio::select! {
                // A notification that arrives as the deadline passes is not lost: a dropped
                // `Notified` that was notified hands the notification to another waiter.
                () = self.notify.notified() => {}
                () = tokio::time::sleep_until(deadline) => break fits(),
            }
        };
        drop(registered);
        if fits_now {
            // There may be room for more than this producer: pass the wakeup on.
            self.released();
        }
        fits_now
    }
}

/// Bytes of new jobs on their way into the scheduler's store past which a scheduled SEND waits
/// (like a SEND at the memory limit): about half a second of the scheduler store's writes.
pub const SCHEDULING_BACKLOG: usize = 16 << 20;

/// What the producers' memory limit looks at (see the module documentation).
#[derive(Clone, Default)]
pub struct Usage {
    /// The broker's [`Gauge`].
    pub waiting: Gauge,
    /// New jobs not yet in the scheduler's store (sharing the waiting gauge's room): they
    /// count against the limit, and a scheduled SEND also waits while they are over
    /// [`SCHEDULING_BACKLOG`].
    pub scheduling: Gauge,
    /// The journal whose queued bytes count too; its releases must reach the gauge's room
    /// ([`crate::journal::Journal::wake_on_release`]).
    pub queued: Option<crate::journal::Journal>,
}

impl std::fmt::Debug for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Usage")
            .field("bytes", &self.bytes())
            .finish()
    }
}

impl Usage {
    /// Bytes counted against the limit now.
    pub fn bytes(&self) -> usize {
        let queued = self.queued.as_ref().map_or(0, |j| j.pending_bytes());
        (self.waiting.bytes())
            .saturating_add(self.scheduling.bytes())
            .saturating_add(usize::try_from(queued).unwrap_or(usize::MAX))
    }

    /// Whether a SEND (`scheduled` or not) fits: the bytes counted are within `limit`, and for
    /// a scheduled one the jobs on their way to the scheduler's store within
    /// [`SCHEDULING_BACKLOG`].
    pub fn fits(&self, limit: usize, scheduled: bool) -> bool {
        self.bytes() <= limit && (!scheduled || self.scheduling.bytes() <= SCHEDULING_BACKLOG)
    }

    /// Whether a SEND fits ([`Usage::fits`]), waiting for releases until `deadline` if it
    /// does not.
    pub async fn wait_for_room(&self, limit: usize, scheduled: bool, deadline: Instant) -> bool {
        self.waiting
            .room()
            .wait(deadline, || self.fits(limit, scheduled))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// What the limit looks at with `gauge` and no journal.
    fn usage(gauge: &Gauge) -> Usage {
        Usage {
            waiting: Arc::clone(gauge),
            scheduling: Arc::new(Meter::sharing(Arc::clone(gauge.room()))),
            queued: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_release_wakes_a_waiting_producer_at_once() {
        let gauge = Gauge::default();
        gauge.add(100);
        let usage = usage(&gauge);
        let started = Instant::now();
        let waiter = tokio::spawn(async move {
            usage
                .wait_for_room(50, false, Instant::now() + Duration::from_secs(30))
                .await
        });
        // Let the waiter register and go to sleep; no virtual time passes.
        while gauge.room().waiters.load(SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        gauge.sub(60);
        assert!(waiter.await.unwrap());
        // Woken by the release, not by a poll: the paused clock never had to move.
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(gauge.room().waiters.load(SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_scheduled_send_waits_for_the_scheduling_backlog_and_others_do_not() {
        let gauge = Gauge::default();
        let usage = usage(&gauge);
        usage.scheduling.add(SCHEDULING_BACKLOG + 1);
        let limit = 4 * SCHEDULING_BACKLOG;
        assert!(usage.fits(limit, false), "a plain SEND is under the limit");
        assert!(
            !usage.fits(limit, true),
            "a scheduled SEND waits for the backlog"
        );
        let started = Instant::now();
        let scheduling = Arc::clone(&usage.scheduling);
        let waiter = tokio::spawn(async move {
            usage
                .wait_for_room(limit, true, Instant::now() + Duration::from_secs(30))
                .await
        });
        while gauge.room().waiters.load(SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        // The scheduler stored a job: its release wakes the waiter through the shared room.
        scheduling.sub(2);
        assert!(waiter.await.unwrap());
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn the_wait_is_bounded_and_small_releases_do_not_end_it() {
        let gauge = Gauge::default();
        gauge.add(100);
        let usage = usage(&gauge);
        let started = Instant::now();
        let deadline = started + Duration::from_millis(200);
        let waiter = tokio::spawn(async move { usage.wait_for_room(50, false, deadline).await });
        while gauge.room().waiters.load(SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        gauge.sub(10); // still over: the producer goes back to waiting
        assert!(!waiter.await.unwrap());
        assert_eq!(started.elapsed(), Duration::from_millis(200));
        assert_eq!(gauge.room().waiters.load(SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn one_large_release_lets_every_waiting_producer_through() {
        let gauge = Gauge::default();
        gauge.add(100);
        let deadline = Instant::now() + Duration::from_secs(30);
        let waiters: Vec<_> = (0..5)
            .map(|_| {
                let usage = usage(&gauge);
                tokio::spawn(async move { usage.wait_for_room(50, false, deadline).await })
            })
            .collect();
        while gauge.room().waiters.load(SeqCst) < 5 {
            tokio::task::yield_now().await;
        }
        let started = Instant::now();
        gauge.sub(100);
        for waiter in waiters {
            assert!(waiter.await.unwrap());
        }
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[test]
    fn no_wakeup_is_lost_between_threads() {
        // Each round a producer waits for room while another thread releases it at the same
        // moment. A lost wakeup would leave the producer waiting until its deadline.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            for _ in 0..2000 {
                let gauge = Gauge::default();
                gauge.add(10);
                let usage = usage(&gauge);
                let started = std::time::Instant::now();
                let deadline = Instant::now() + Duration::from_secs(10);
                let waiter =
                    tokio::spawn(async move { usage.wait_for_room(5, false, deadline).await });
                let releaser = std::thread::spawn(move || gauge.sub(10));
                assert!(waiter.await.unwrap());
                releaser.join().unwrap();
                assert!(started.elapsed() < Duration::from_secs(5), "lost wakeup");
            }
        });
    }
}
