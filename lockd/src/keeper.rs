//! The keeper thread: the only place lockd does I/O on the shared directory.
//!
//! It polls the lock while competing, claims the epoch and writes `holder.json` on acquiring,
//! and runs the keepalive while holding. Every one of those calls can hang on a stalled cluster
//! filesystem, so they run here, on a plain thread, and report to the state machine through a
//! channel. The state machine's fence timer measures the time since the last good keepalive
//! without doing any I/O itself, so a hung keeper cannot delay the fence.
//!
//! By concern: this module competes for the lock and dispatches commands; [`hold`] holds it
//! (claim, keepalive, release); [`broken_locks`] decides whom we may take it from once the
//! filesystem's locks proved not exclusive; [`roster`] keeps `nodes/` on a thread of its own.

mod broken_locks;
mod hold;
pub mod roster;
#[cfg(test)]
mod tests;

use broken_locks::HolderBeat;
use hold::Held;
use shared_proto::holder::{Holder, HolderState};
use shared_proto::layout::Layout;
use shared_proto::lockfile::LockFile;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// What the state machine asks of the keeper.
#[derive(Debug)]
pub enum Command {
    /// Start (or keep) polling for the lock.
    Compete,
    /// While holding: claim a fresh epoch for a restarted broker, answered by `Acquired`.
    Renew,
    /// While holding: publish the broker's state in `holder.json` now.
    SetState(HolderState),
    /// Close the lock file (releasing the lock) and stop competing.
    Release,
}

/// What the keeper reports. Each carries the epoch it concerns, so the state machine can drop
/// reports about an epoch it has already given up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// We hold the lock under this freshly claimed epoch; `holder.json` names us. `started` is
    /// when the claim's first keepalive began its heartbeat write: the fence deadline counts
    /// from it, not from this report's arrival (after `holder.json`'s I/O and the takeover
    /// grace).
    Acquired { epoch: u64, started: Instant },
    /// A keepalive found the lock, its file and the epoch intact. `started` is when its
    /// heartbeat write through the locked descriptor began: the lock was known held then, not
    /// when this report arrives after `holder.json`'s reads, writes and fsyncs, so the fence
    /// deadline counts from it.
    Heartbeat { epoch: u64, started: Instant },
    /// The lock is certainly gone already (its file deleted or replaced, an I/O error on the
    /// locked descriptor): the keeper has closed the lock file. Fence the broker.
    Lost { epoch: u64, reason: String },
    /// The keepalive failed in a way that does not prove the lock gone (an epoch or
    /// `holder.json` read error, a full disk, a newer epoch on broken locks). The keeper keeps
    /// the lock file open, and so the lock, until `Release`: kill the broker, and release only
    /// once it has exited (DESIGN invariant 6).
    MustFence { epoch: u64, reason: String },
    /// The lock was released on request.
    Released,
    /// Another node claimed the lock while ours still looked held: the shared filesystem's
    /// locks are not exclusive between nodes. Reported once.
    BrokenLocks { evidence: String },
}

/// Timing and identity the keeper needs.
#[derive(Debug, Clone)]
pub struct KeeperConfig {
    pub node: String,
    pub lock_poll: Duration,
    pub keepalive: Duration,
    /// Once this node has seen that the filesystem's locks are not exclusive, it takes the lock
    /// only from a holder whose heartbeat has been still this long: by then that holder has
    /// fenced its own broker, even if its filesystem hung.
    pub fence_timeout: Duration,
    /// After claiming an epoch from another node's hands, how long to wait before the new
    /// broker may open the store: on broken locks the previous holder's brokerd may still run
    /// until its epoch poll sees our claim. `lock_check::TAKEOVER_GRACE`, or longer when the
    /// start-up lock check measured a slower visibility lag.
    pub takeover_grace: Duration,
    /// Where each keepalive's duration is counted (atomics: the keeper never waits on a
    /// scrape).
    pub keepalive_durations: std::sync::Arc<crate::metrics::KeepaliveHistogram>,
}

enum Mode {
    Idle,
    Competing,
    Holding(Held),
    /// A keepalive failed without proving the lock gone: the lock file stays open (so the lock
    /// stays ours, if it still is) and no more keepalives run, until the node has killed its
    /// broker and sends `Release`.
    Fencing(Held),
}

/// Runs the keeper until the command channel closes (lockd is exiting).
pub fn run(
    layout: Layout,
    config: KeeperConfig,
    commands: Receiver<Command>,
    events: mpsc::Sender<Event>,
    holder: watch::Sender<Option<Holder>>,
) {
    let mut keeper = Keeper {
        layout,
        host: shared_proto::hostname(),
        config,
        events,
        holder,
        candidate: None,
        last_error: None,
        next_keepalive: Instant::now(),
        broken_locks: None,
        holder_seen: None,
    };
    let mut mode = Mode::Idle;
    let mut next_tick = Instant::now();
    loop {
        let wait = next_tick.saturating_duration_since(Instant::now());
        match commands.recv_timeout(wait) {
            Ok(command) => {
                let before = std::mem::discriminant(&mode);
                mode = keeper.handle(mode, command);
                if std::mem::discriminant(&mode) != before {
                    // A new mode starts its own schedule: a competing or idle keeper acts now,
                    // not at the tick of the mode it left.
                    next_tick = match mode {
                        Mode::Holding(_) | Mode::Fencing(_) => {
                            Instant::now() + keeper.config.keepalive
                        }
                        Mode::Competing | Mode::Idle => Instant::now(),
                    };
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                mode = keeper.tick(mode);
                next_tick = Instant::now() + keeper.period(&mode);
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

struct Keeper {
    layout: Layout,
    host: String,
    config: KeeperConfig,
    events: mpsc::Sender<Event>,
    holder: watch::Sender<Option<Holder>>,
    /// The lock file a competing node keeps open between polls.
    candidate: Option<LockFile>,
    /// Last error reported while competing, so a persistent one is logged once, not 50 times a
    /// second.
    last_error: Option<String>,
    /// When a non-holding keeper next re-reads `holder.json` and re-checks its open lock file.
    next_keepalive: Instant,
    /// Why we believe the filesystem's locks are not exclusive between nodes (another node
    /// claimed an epoch while our lock still looked held), once we have seen it.
    broken_locks: Option<String>,
    /// The holder's heartbeat as last read, and when (our monotonic clock) it last changed.
    holder_seen: Option<(HolderBeat, Instant)>,
}

impl Keeper {
    fn handle(&mut self, mode: Mode, command: Command) -> Mode {
        match (mode, command) {
            (Mode::Holding(held) | Mode::Fencing(held), Command::Release) => {
                let epoch = held.epoch;
                self.release(&held);
                drop(held);
                tracing::info!(node = %self.config.node, epoch, "lock released");
                self.report(Event::Released);
                Mode::Idle
            }
            (_, Command::Release) => {
                self.candidate = None;
                self.report(Event::Released);
                Mode::Idle
            }
            (Mode::Holding(held), Command::Compete) => Mode::Holding(held),
            (Mode::Fencing(held), Command::Compete) => {
                tracing::warn!(node = %self.config.node, epoch = held.epoch, "asked to compete while fencing; the lock is kept until released");
                Mode::Fencing(held)
            }
            (_, Command::Compete) => Mode::Competing,
            (Mode::Holding(held), Command::Renew) => self.renew(held),
            (Mode::Holding(mut held), Command::SetState(state)) => {
                held.state = state;
                self.keepalive(held)
            }
            (mode, command) => {
                tracing::debug!(?command, "keeper command ignored: lock not held");
                mode
            }
        }
    }

    fn tick(&mut self, mode: Mode) -> Mode {
        match mode {
            Mode::Holding(held) => self.keepalive(held),
            Mode::Fencing(held) => Mode::Fencing(held),
            Mode::Competing => self.poll(),
            Mode::Idle => {
                // Idle means holding off after a failover: notice the new holder promptly, so
                // the hold-off (and `ctl failover --wait`) ends as soon as the peer is active.
                self.next_keepalive = Instant::now();
                self.refresh_view();
                Mode::Idle
            }
        }
    }

    /// One attempt at the lock.
    fn poll(&mut self) -> Mode {
        self.refresh_view();
        let lock = match self.candidate.take() {
            Some(lock) => lock,
            None => match LockFile::open(&self.layout.lock()) {
                Ok(lock) => lock,
                Err(e) => {
                    self.competing_error(format!(
                        "cannot open lock file {}: {e}",
                        self.layout.lock().display()
                    ));
                    return Mode::Competing;
                }
            },
        };
        match lock.try_lock() {
            Ok(true) => {}
            Ok(false) => {
                // Someone holds it. Keep the file open for the next poll, unless it was deleted
                // or replaced: then we would be waiting on a file nobody else locks any more.
                if lock.check_identity().is_ok() {
                    self.candidate = Some(lock);
                }
                return Mode::Competing;
            }
            Err(e) => {
                self.competing_error(format!(
                    "locking {} failed: {e}",
                    self.layout.lock().display()
                ));
                return Mode::Competing;
            }
        }
        // We hold a lock on the file we opened; make sure it is still the file at the path.
        if let Err(reason) = lock.check_identity() {
            tracing::warn!(node = %self.config.node, %reason, "locked a stale lock file; reopening");
            return Mode::Competing;
        }
        self.learn_broken_locks();
        if let Some(evidence) = self.broken_locks.clone() {
            if let Some(live) = self.live_holder() {
                // Dropping `lock` gives the (meaningless) lock back; try again at the next poll.
                self.competing_error(format!(
                    "the lock was free, but {live}'s heartbeat in holder.json is live: this \
                     filesystem's locks are not exclusive ({evidence}); waiting until it has been \
                     still for {} ms or released",
                    (self.config.fence_timeout
                        + self.config.keepalive
                        + self.config.takeover_grace)
                        .as_millis()
                ));
                return Mode::Competing;
            }
        }
        match self.claim(lock, shared_proto::unix_ms()) {
            Ok(held) => {
                self.last_error = None;
                self.report(Event::Acquired {
                    epoch: held.epoch,
                    started: held.beat_started,
                });
                Mode::Holding(held)
            }
            Err(reason) => {
                // The lock was dropped with the file: a node with a healthier view may try,
                // and so do we at the next poll.
                self.competing_error(reason);
                Mode::Competing
            }
        }
    }

    /// How long until the next tick in `mode`.
    fn period(&self, mode: &Mode) -> std::time::Duration {
        match mode {
            Mode::Holding(_) | Mode::Fencing(_) => self.config.keepalive,
            Mode::Competing | Mode::Idle => self.config.lock_poll,
        }
    }

    fn competing_error(&mut self, message: String) {
        if self.last_error.as_ref() != Some(&message) {
            tracing::warn!(node = %self.config.node, error = %message, "cannot compete for the lock");
            self.last_error = Some(message);
        }
    }

    fn report(&self, event: Event) {
        // The receiver is gone only while lockd exits; nothing is left to tell then.
        let _ = self.events.blocking_send(event);
    }
}
