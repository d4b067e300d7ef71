//! How many jobs are pending: the entries of [`JOBS`](super::store::JOBS) in the scheduler's
//! store, one per job added and not yet delivered for the last time or removed. Kept by the
//! store's writer as it commits ([`Tally`]), so that `/metrics` reads one atomic
//! ([`PendingJobs`]): no scan of the jobs, no wait for the journal, no call into the
//! scheduler's task.
//!
//! The writer counts the keys each transaction adds to and removes from that space, and stores
//! the total in the same transaction, so the figure survives a crash or a takeover exactly with
//! the jobs it counts, and opening the store reads it back instead of counting. A store written
//! by a brokerd that did not keep it is counted once, off the writer, after it opens
//! ([`Tally::begin_count`], [`Tally::finish_count`]); until then the figure is unknown.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Stands for "unknown" in [`PendingJobs`]: no store holds 2^64 - 1 jobs.
const UNKNOWN: u64 = u64::MAX;

/// The number of pending jobs as last committed, or unknown (the store is not open yet, or is
/// being counted for the first time). Cheap to clone; every clone reads the same figure.
#[derive(Debug, Clone)]
pub struct PendingJobs(Arc<AtomicU64>);

impl Default for PendingJobs {
    fn default() -> PendingJobs {
        PendingJobs(Arc::new(AtomicU64::new(UNKNOWN)))
    }
}

impl PendingJobs {
    /// The figure; `None` while unknown.
    pub fn get(&self) -> Option<u64> {
        Some(self.0.load(Ordering::Relaxed)).filter(|n| *n != UNKNOWN)
    }

    fn set(&self, jobs: Option<u64>) {
        self.0.store(jobs.unwrap_or(UNKNOWN), Ordering::Relaxed);
    }
}

/// What the writer knows of the count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The store holds `jobs` jobs as of its last commit; `stored`: that figure is in the store.
    Known { jobs: u64, stored: bool },
    /// A first count runs; the net change of the commits since the store opened.
    Counting { committed: i64 },
}

/// The writer's count of pending jobs, published to a [`PendingJobs`].
///
/// Its lock is held across each commit and while a first count takes its read snapshot, so
/// that the snapshot falls between two commits and the count knows exactly which it saw.
#[derive(Debug)]
pub struct Tally {
    state: Mutex<State>,
    published: PendingJobs,
}

impl Tally {
    /// A tally of a store that holds `stored` jobs (`None`: it does not say; count it), published
    /// to `published`.
    pub fn new(stored: Option<u64>, published: PendingJobs) -> Tally {
        published.set(stored);
        let state = match stored {
            Some(jobs) => State::Known { jobs, stored: true },
            None => State::Counting { committed: 0 },
        };
        Tally {
            state: Mutex::new(state),
            published,
        }
    }

    /// Whether a first count is needed ([`Tally::begin_count`]).
    pub fn counting(&self) -> bool {
        matches!(*self.lock(), State::Counting { .. })
    }

    /// Commits a transaction that adds `delta` jobs (negative: removes). `commit` is given the
    /// new total to store in the transaction when there is one to store; the tally follows
    /// only once `commit` succeeded.
    pub fn commit<E>(
        &self,
        delta: i64,
        commit: impl FnOnce(Option<u64>) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut state = self.lock();
        match *state {
            State::Known { jobs, stored } => {
                let jobs = add(jobs, delta);
                let store = delta != 0 || !stored;
                commit(store.then_some(jobs))?;
                *state = State::Known { jobs, stored: true };
                self.published.set(Some(jobs));
            }
            State::Counting { committed } => {
                commit(None)?;
                *state = State::Counting {
                    committed: committed + delta,
                };
            }
        }
        Ok(())
    }

    /// Takes a first count's read snapshot with `snapshot`, between two commits; with it, the
    /// mark to give [`Tally::finish_count`]. `None` if the count is known already.
    pub fn begin_count<T>(&self, snapshot: impl FnOnce() -> T) -> Option<(T, i64)> {
        let state = self.lock();
        match *state {
            State::Counting { committed } => Some((snapshot(), committed)),
            State::Known { .. } => None,
        }
    }

    /// The snapshot marked `mark` held `counted` jobs: the count is known from now on, with
    /// every commit since the snapshot, and stored by the next commit.
    pub fn finish_count(&self, counted: u64, mark: i64) {
        let mut state = self.lock();
        if let State::Counting { committed } = *state {
            let jobs = add(counted, committed - mark);
            *state = State::Known {
                jobs,
                stored: false,
            };
            self.published.set(Some(jobs));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `jobs` changed by `delta`; a store never holds fewer than none.
fn add(jobs: u64, delta: i64) -> u64 {
    jobs.saturating_add_signed(delta)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(delta: i64, tally: &Tally) -> Option<u64> {
        let mut stored = None;
        tally
            .commit(delta, |total| {
                stored = total;
                Ok::<_, ()>(())
            })
            .unwrap();
        stored
    }

    #[test]
    fn commits_move_the_figure_and_store_it_only_when_it_changed() {
        let published = PendingJobs::default();
        assert_eq!(published.get(), None);
        let tally = Tally::new(Some(5), published.clone());
        assert_eq!(published.get(), Some(5));
        assert_eq!(ok(3, &tally), Some(8));
        assert_eq!(ok(0, &tally), None);
        assert_eq!(ok(-2, &tally), Some(6));
        assert_eq!(published.get(), Some(6));
        let failed = tally.commit(4, |_| Err("the commit failed"));
        assert_eq!(failed, Err("the commit failed"));
        assert_eq!(published.get(), Some(6));
        assert!(!tally.counting());
    }

    #[test]
    fn a_first_count_adds_the_commits_after_its_snapshot_and_is_stored_next() {
        let published = PendingJobs::default();
        let tally = Tally::new(None, published.clone());
        assert!(tally.counting());
        // Committed before the snapshot: the count sees these itself.
        assert_eq!(ok(2, &tally), None);
        let (counted_at_snapshot, mark) = tally.begin_count(|| 10).unwrap();
        // Committed while the count runs.
        assert_eq!(ok(3, &tally), None);
        assert_eq!(ok(-1, &tally), None);
        assert_eq!(published.get(), None);
        tally.finish_count(counted_at_snapshot, mark);
        assert_eq!(published.get(), Some(12));
        assert!(tally.begin_count(|| ()).is_none());
        // Stored by the next commit, even one that adds nothing.
        assert_eq!(ok(0, &tally), Some(12));
        assert_eq!(ok(0, &tally), None);
    }
}
