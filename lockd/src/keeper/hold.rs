//! Holding the lock: claiming an epoch under it, the keepalive that proves it still ours, and
//! giving it back. A keepalive failure says whether the lock is certainly gone (close the file)
//! or only in doubt (keep it until the node's broker is dead: DESIGN invariant 6).

use super::{Event, Keeper, Mode};
use crate::shared_dir;
use shared_proto::holder::{Holder, HolderState};
use shared_proto::lockfile::LockFile;
use shared_proto::records;
use std::time::Instant;

/// Why a keepalive failed, and whether that proves the lock already gone.
#[derive(Debug)]
struct Failure {
    reason: String,
    /// The lock file was deleted or replaced, or the locked descriptor gave an I/O error:
    /// holding the file open any longer protects nothing.
    certain: bool,
}

impl Failure {
    /// A failure that leaves the lock possibly ours: it must be kept until the broker is dead.
    fn doubtful(reason: String) -> Failure {
        Failure {
            reason,
            certain: false,
        }
    }
}

/// The lock while we hold it, with what `holder.json` says about us.
pub(super) struct Held {
    pub(super) lock: LockFile,
    pub(super) epoch: u64,
    pub(super) since_unix_ms: u64,
    pub(super) state: HolderState,
    pub(super) beats: u64,
    /// When the last keepalive began its heartbeat write through the locked descriptor.
    pub(super) beat_started: Instant,
}

impl Keeper {
    /// Claims a fresh epoch for a restarted broker under the lock we hold.
    pub(super) fn renew(&mut self, mut held: Held) -> Mode {
        let epoch = held.epoch;
        // A broker that exited on its own may have seen a newer epoch before our
        // keepalive did (its fence poll is faster): check before claiming another, or a
        // superseded node on broken locks would take the lock back.
        if let Err(failure) = self.beat(&mut held) {
            return self.failed(held, failure);
        }
        // No broker runs (Renew comes only after it exited), so a failed claim may close
        // the lock file at once.
        match self.claim(held.lock, held.since_unix_ms) {
            Ok(held) => {
                self.report(Event::Acquired {
                    epoch: held.epoch,
                    started: held.beat_started,
                });
                Mode::Holding(held)
            }
            Err(reason) => {
                self.report(Event::Lost { epoch, reason });
                Mode::Idle
            }
        }
    }

    /// Claims a new epoch under a held lock and checks it with a first keepalive. On failure
    /// the lock file is closed, which releases the lock.
    pub(super) fn claim(&mut self, lock: LockFile, since_unix_ms: u64) -> Result<Held, String> {
        let previous = records::read_holder(&self.layout);
        let epoch = shared_dir::claim_epoch(&self.layout, &self.config.node)
            .map_err(|e| format!("cannot claim an epoch: {e}"))?;
        // No grace only when we are certain no other broker can be running: we held the epoch
        // just before ours. Anything else (another holder, none yet, an unreadable file, an
        // epoch claimed between) may be a stale broker on broken locks.
        let successor_of_ours = matches!(
            &previous,
            Ok(Some(h)) if h.node == self.config.node && h.epoch + 1 == epoch
        );
        let mut held = Held {
            lock,
            epoch,
            since_unix_ms,
            state: HolderState::Starting,
            beats: 0,
            beat_started: Instant::now(),
        };
        self.beat(&mut held).map_err(|failure| failure.reason)?;
        if !successor_of_ours {
            tracing::debug!(node = %self.config.node, epoch, "takeover grace before the broker starts");
            std::thread::sleep(self.config.takeover_grace);
        }
        Ok(held)
    }

    /// Before giving the lock back on purpose: if another node claimed an epoch while our lock
    /// still took a heartbeat write, the locks are broken, which must be recorded before we
    /// forget it (a broker that exited on a newer epoch leads here when its restarts are used
    /// up). Otherwise marks `holder.json` released, so a node that distrusts the locks need not
    /// wait for our heartbeat to go still.
    pub(super) fn release(&mut self, held: &Held) {
        let line = format!("{} {} released\n", self.config.node, held.epoch);
        if held.lock.check_identity().is_err() || held.lock.heartbeat(&line).is_err() {
            return;
        }
        if let Ok(Some(newer)) = self.layout.newer_epoch(held.epoch) {
            if newer > held.epoch {
                self.saw_broken_locks(&format!(
                    "epoch {newer} was claimed while we held {}",
                    held.epoch
                ));
            }
            return;
        }
        match records::read_holder(&self.layout) {
            Ok(Some(mut holder))
                if holder.node == self.config.node && holder.epoch == held.epoch =>
            {
                holder.state = HolderState::Released;
                holder.heartbeat_unix_ms = shared_proto::unix_ms();
                if let Err(e) = shared_dir::write_holder(&self.layout, &self.config.node, &holder) {
                    tracing::debug!(error = %e, "cannot mark holder.json released");
                }
                self.holder.send_replace(Some(holder));
            }
            _ => {}
        }
    }

    /// One keepalive while holding: reports a heartbeat, or the failure.
    pub(super) fn keepalive(&mut self, mut held: Held) -> Mode {
        let began = Instant::now();
        let beat = self.beat(&mut held);
        self.config.keepalive_durations.observe(began.elapsed());
        match beat {
            Ok(()) => {
                self.report(Event::Heartbeat {
                    epoch: held.epoch,
                    started: held.beat_started,
                });
                Mode::Holding(held)
            }
            Err(failure) => self.failed(held, failure),
        }
    }

    /// Reports a failed keepalive. A certain loss closes the lock file (nothing is left to
    /// protect); any other failure keeps it open until the node, having killed its broker,
    /// sends `Release`.
    fn failed(&mut self, held: Held, failure: Failure) -> Mode {
        let epoch = held.epoch;
        let reason = failure.reason;
        if failure.certain {
            drop(held);
            tracing::warn!(node = %self.config.node, epoch, %reason, "lock lost; lock file closed");
            self.report(Event::Lost { epoch, reason });
            Mode::Idle
        } else {
            tracing::warn!(node = %self.config.node, epoch, %reason, "keepalive failed; keeping the lock until the broker is dead");
            self.report(Event::MustFence { epoch, reason });
            Mode::Fencing(held)
        }
    }

    /// Checks that we still hold the lock (file identity, a synced write through the locked
    /// descriptor, no newer epoch, no other holder in `holder.json`) and publishes our heartbeat
    /// in `holder.json`.
    fn beat(&mut self, held: &mut Held) -> Result<(), Failure> {
        held.beats += 1;
        held.beat_started = Instant::now();
        let now = shared_proto::unix_ms();
        let holder = Holder {
            node: self.config.node.clone(),
            host: self.host.clone(),
            pid: std::process::id(),
            epoch: held.epoch,
            state: held.state,
            since_unix_ms: held.since_unix_ms,
            heartbeat_unix_ms: now,
        };
        let line = format!(
            "{} {} {} {}\n",
            self.config.node, held.epoch, held.beats, now
        );
        held.lock.check_identity().map_err(|reason| Failure {
            reason,
            certain: true,
        })?;
        held.lock.heartbeat(&line).map_err(|e| Failure {
            reason: format!("heartbeat write to the lock file failed: {e}"),
            // NFSv4 reports a lock the server dropped as EIO on the locked descriptor; any
            // other error (a full disk) says nothing about the lock.
            certain: e.raw_os_error() == Some(libc::EIO),
        })?;
        match self.layout.newer_epoch(held.epoch) {
            Ok(None) => {}
            Ok(Some(newer)) => {
                let reason = format!(
                    "the epoch file says {newer}, we hold {}: another node has taken over",
                    held.epoch
                );
                if newer > held.epoch {
                    // Claimed while our lock, just written through, still looked held.
                    self.saw_broken_locks(&reason);
                }
                return Err(Failure::doubtful(reason));
            }
            Err(e) => {
                return Err(Failure::doubtful(format!(
                    "cannot read the epoch file: {e}"
                )))
            }
        }
        // Another node naming itself holder under our epoch or a newer one believes it holds the
        // lock too (broken cluster locks): the newer epoch wins, so we step down. One with an
        // older epoch is the previous holder (on our claim) or a stale node that fences itself.
        match records::read_holder(&self.layout) {
            Ok(Some(other)) if other.node != self.config.node && other.epoch >= held.epoch => {
                let reason = format!(
                    "holder.json names {} with epoch {}, we hold {}: another node believes it holds the lock",
                    other.node, other.epoch, held.epoch
                );
                self.saw_broken_locks(&reason);
                return Err(Failure::doubtful(reason));
            }
            Ok(_) => {}
            Err(e) => return Err(Failure::doubtful(format!("cannot read holder.json: {e}"))),
        }
        shared_dir::write_holder(&self.layout, &self.config.node, &holder)
            .map_err(|e| Failure::doubtful(format!("cannot write holder.json: {e}")))?;
        self.holder.send_replace(Some(holder));
        Ok(())
    }
}
