//! The keeper thread: the only place lockd does I/O on the shared directory.
//!
//! It polls the lock while competing, claims the epoch and writes `holder.json` on acquiring,
//! and runs the keepalive while holding. Every one of those calls can hang on a stalled cluster
//! filesystem, so they run here, on a plain thread, and report to the state machine through a
//! channel. The state machine's fence timer measures the time since the last good keepalive
//! without doing any I/O itself, so a hung keeper cannot delay the fence.

pub mod roster;

use crate::shared_dir;
use shared_proto::admin::Role;
use shared_proto::holder::{Holder, HolderState};
use shared_proto::layout::Layout;
use shared_proto::lockfile::LockFile;
use shared_proto::nodes::NodeRecord;
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
    /// The node's role changed: have the roster rewrite `nodes/NODE.json` now (and at every
    /// keepalive period).
    Record {
        role: Role,
        epoch: Option<u64>,
        since_unix_ms: u64,
        reason: String,
    },
}

/// What the keeper reports. Each carries the epoch it concerns, so the state machine can drop
/// reports about an epoch it has already given up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// We hold the lock under this freshly claimed epoch; `holder.json` names us.
    Acquired { epoch: u64 },
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

struct Held {
    lock: LockFile,
    epoch: u64,
    since_unix_ms: u64,
    state: HolderState,
    beats: u64,
}

/// Runs the keeper until the command channel closes (lockd is exiting).
pub fn run(
    layout: Layout,
    config: KeeperConfig,
    commands: Receiver<Command>,
    events: mpsc::Sender<Event>,
    holder: watch::Sender<Option<Holder>>,
    roster: std::sync::mpsc::Sender<NodeRecord>,
) {
    let mut keeper = Keeper {
        roster,
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
    /// The roster thread, which keeps this node's record in `nodes/` (never the keeper: a
    /// file there must not stall the keepalive).
    roster: std::sync::mpsc::Sender<NodeRecord>,
    /// Why we believe the filesystem's locks are not exclusive between nodes (another node
    /// claimed an epoch while our lock still looked held), once we have seen it.
    broken_locks: Option<String>,
    /// The holder's heartbeat as last read, and when (our monotonic clock) it last changed.
    holder_seen: Option<(HolderBeat, Instant)>,
}

/// What identifies one heartbeat of one holder.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HolderBeat {
    node: String,
    epoch: u64,
    heartbeat_unix_ms: u64,
    released: bool,
}

impl Keeper {
    fn handle(&mut self, mode: Mode, command: Command) -> Mode {
        match (mode, command) {
            (
                mode,
                Command::Record {
                    role,
                    epoch,
                    since_unix_ms,
                    reason,
                },
            ) => {
                // The roster ends only when this sender drops; nothing to do if it died.
                let _ = self.roster.send(NodeRecord {
                    node: self.config.node.clone(),
                    host: self.host.clone(),
                    lockd_pid: std::process::id(),
                    role,
                    epoch,
                    since_unix_ms,
                    reason,
                    heartbeat_unix_ms: 0,
                });
                mode
            }
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
            (Mode::Holding(mut held), Command::Renew) => {
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
                        self.report(Event::Acquired { epoch: held.epoch });
                        Mode::Holding(held)
                    }
                    Err(reason) => {
                        self.report(Event::Lost { epoch, reason });
                        Mode::Idle
                    }
                }
            }
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
                self.report(Event::Acquired { epoch: held.epoch });
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

    /// Claims a new epoch under a held lock and checks it with a first keepalive. On failure
    /// the lock file is closed, which releases the lock.
    fn claim(&mut self, lock: LockFile, since_unix_ms: u64) -> Result<Held, String> {
        let previous = shared_dir::read_holder(&self.layout);
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
    fn release(&mut self, held: &Held) {
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
        match shared_dir::read_holder(&self.layout) {
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

    /// Another node named in `holder.json`, not released, whose heartbeat changed (or could not
    /// be read) less than fence_timeout + keepalive + the takeover grace ago, by our own clock
    /// (never by comparing clocks between nodes): by then a live holder whose filesystem hung
    /// has fenced its own broker, counting from its last keepalive, which precedes our reading.
    /// A claim newer than the epoch `holder.json` names counts as live too: its node has
    /// claimed and not yet published itself there (in that window `holder.json` may still name
    /// us, the node it just superseded).
    fn live_holder(&mut self) -> Option<String> {
        self.next_keepalive = Instant::now();
        self.refresh_view();
        let published = self.holder_seen.as_ref().map_or(0, |(beat, _)| beat.epoch);
        match self.layout.read_epoch() {
            Ok(claimed) if claimed <= published => {}
            Ok(claimed) => {
                if let Some((_, changed)) = self.holder_seen.as_mut() {
                    *changed = Instant::now();
                }
                return Some(format!("the node that claimed epoch {claimed}"));
            }
            Err(_) => return Some("the epoch file's owner (unreadable)".into()),
        }
        let quiet = self.config.fence_timeout + self.config.keepalive + self.config.takeover_grace;
        let (beat, changed) = self.holder_seen.as_ref()?;
        (beat.node != self.config.node && !beat.released && changed.elapsed() < quiet)
            .then(|| beat.node.clone())
    }

    /// Takes in another node's record of broken locks (`SHARED/broken-locks`), once.
    fn learn_broken_locks(&mut self) {
        if self.broken_locks.is_some() {
            return;
        }
        if let Ok(Some(record)) = shared_dir::read_broken_locks(&self.layout) {
            let evidence = format!(
                "recorded in {}: {record}",
                self.layout.broken_locks().display()
            );
            tracing::error!(
                node = %self.config.node,
                %evidence,
                "the shared filesystem's locks are not exclusive between nodes: this node takes the lock only from a holder whose heartbeat has stopped"
            );
            self.broken_locks = Some(evidence.clone());
            self.report(Event::BrokenLocks { evidence });
        }
    }

    /// Records that another node claimed the lock while ours still looked held.
    fn saw_broken_locks(&mut self, evidence: &str) {
        if self.broken_locks.is_none() {
            tracing::error!(
                node = %self.config.node,
                %evidence,
                "the shared filesystem's locks are not exclusive between nodes: from now on this node takes the lock only from a holder whose heartbeat has stopped; run `ctl check-lock` on every node's mount"
            );
            self.broken_locks = Some(evidence.to_owned());
            // Every node must distrust the locks, not only the one pushed out: the node that
            // took over never sees a conflict itself.
            if let Err(e) =
                shared_dir::record_broken_locks(&self.layout, &self.config.node, evidence)
            {
                tracing::warn!(node = %self.config.node, error = %e, "cannot record the broken locks in the shared directory");
            }
            self.report(Event::BrokenLocks {
                evidence: evidence.to_owned(),
            });
        }
    }

    /// One keepalive while holding: reports a heartbeat, or the failure.
    fn keepalive(&mut self, mut held: Held) -> Mode {
        let started = Instant::now();
        match self.beat(&mut held) {
            Ok(()) => {
                self.report(Event::Heartbeat {
                    epoch: held.epoch,
                    started,
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
        match shared_dir::read_holder(&self.layout) {
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

    /// How long until the next tick in `mode`.
    fn period(&self, mode: &Mode) -> std::time::Duration {
        match mode {
            Mode::Holding(_) | Mode::Fencing(_) => self.config.keepalive,
            Mode::Competing | Mode::Idle => self.config.lock_poll,
        }
    }

    /// Re-reads `holder.json` for status and hold-off, at most once per keepalive period.
    fn refresh_view(&mut self) {
        if Instant::now() < self.next_keepalive {
            return;
        }
        self.next_keepalive = Instant::now() + self.config.keepalive;
        match shared_dir::read_holder(&self.layout) {
            Ok(holder) => {
                let beat = holder.as_ref().map(|h| HolderBeat {
                    node: h.node.clone(),
                    epoch: h.epoch,
                    heartbeat_unix_ms: h.heartbeat_unix_ms,
                    released: h.state == HolderState::Released,
                });
                match (&beat, &self.holder_seen) {
                    (Some(beat), Some((seen, _))) if beat == seen => {}
                    (Some(beat), _) => self.holder_seen = Some((beat.clone(), Instant::now())),
                    (None, _) => self.holder_seen = None,
                }
                self.holder.send_if_modified(|current| {
                    let changed = *current != holder;
                    *current = holder;
                    changed
                });
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot read holder.json");
                // Unreadable is not still: a holder may be beating behind the error.
                let now = Instant::now();
                match self.holder_seen.as_mut() {
                    Some((_, changed)) => *changed = now,
                    None => {
                        let unknown = HolderBeat {
                            node: "(holder.json unreadable)".into(),
                            epoch: 0,
                            heartbeat_unix_ms: 0,
                            released: false,
                        };
                        self.holder_seen = Some((unknown, now));
                    }
                }
            }
        }
        self.learn_broken_locks();
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

#[cfg(test)]
mod tests {
    use super::*;

    struct Running {
        commands: std::sync::mpsc::Sender<Command>,
        events: mpsc::Receiver<Event>,
        holder: watch::Receiver<Option<Holder>>,
    }

    /// A prepared shared directory, removed when the first value is dropped.
    fn prepared() -> (tempfile::TempDir, Layout) {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path().join("shared"));
        layout.init(None).unwrap();
        (dir, layout)
    }

    fn start(layout: &Layout, node: &str) -> Running {
        start_with(layout, node, Duration::from_millis(200))
    }

    fn start_with(layout: &Layout, node: &str, fence_timeout: Duration) -> Running {
        start_graced(
            layout,
            node,
            fence_timeout,
            shared_proto::lock_check::TAKEOVER_GRACE,
        )
    }

    fn start_graced(
        layout: &Layout,
        node: &str,
        fence_timeout: Duration,
        takeover_grace: Duration,
    ) -> Running {
        let (commands, command_rx) = std::sync::mpsc::channel();
        let (event_tx, events) = mpsc::channel(64);
        let (holder_tx, holder) = watch::channel(None);
        let (nodes_tx, _) = watch::channel(Vec::new());
        let roster = roster::spawn(layout.clone(), Duration::from_millis(20), nodes_tx).unwrap();
        let config = KeeperConfig {
            node: node.into(),
            lock_poll: Duration::from_millis(5),
            keepalive: Duration::from_millis(20),
            fence_timeout,
            takeover_grace,
        };
        let layout = layout.clone();
        std::thread::spawn(move || run(layout, config, command_rx, event_tx, holder_tx, roster));
        Running {
            commands,
            events,
            holder,
        }
    }

    /// A keeper that polls for the lock and reports only every 20 ms keepalive.
    fn competing(layout: &Layout, node: &str) -> Running {
        let running = start(layout, node);
        running.commands.send(Command::Compete).unwrap();
        running
    }

    fn next(running: &mut Running) -> Event {
        loop {
            let event = running.events.blocking_recv().expect("keeper thread ended");
            if !matches!(event, Event::Heartbeat { .. }) {
                return event;
            }
        }
    }

    #[test]
    fn one_of_two_keepers_holds_and_the_other_takes_over_on_release() {
        let (_dir, layout) = prepared();
        let mut a = start(&layout, "a");
        a.commands.send(Command::Compete).unwrap();
        assert_eq!(next(&mut a), Event::Acquired { epoch: 1 });
        let mut b = start(&layout, "b");
        b.commands.send(Command::Compete).unwrap();
        a.commands
            .send(Command::SetState(HolderState::Active))
            .unwrap();
        a.commands.send(Command::Release).unwrap();
        assert_eq!(next(&mut a), Event::Released);
        assert_eq!(next(&mut b), Event::Acquired { epoch: 2 });
        let seen = b.holder.borrow().clone().unwrap();
        assert_eq!((seen.node.as_str(), seen.epoch), ("b", 2));
        b.commands.send(Command::Renew).unwrap();
        assert_eq!(next(&mut b), Event::Acquired { epoch: 3 });
    }

    /// Regression: a failing first keepalive used to leave the keeper idle for good.
    #[test]
    fn a_failed_first_keepalive_keeps_competing() {
        let (_dir, layout) = prepared();
        std::fs::create_dir(layout.holder()).unwrap();
        let mut a = start(&layout, "a");
        a.commands.send(Command::Compete).unwrap();
        // Each attempt claims an epoch, then fails to write holder.json (a directory is there).
        let deadline = Instant::now() + Duration::from_secs(30);
        while layout.read_epoch().unwrap() < 3 {
            assert!(Instant::now() < deadline, "the keeper stopped trying");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            a.events.try_recv().is_err(),
            "no acquisition while holder.json is unwritable"
        );
        std::fs::remove_dir(layout.holder()).unwrap();
        match next(&mut a) {
            Event::Acquired { epoch } => assert!(epoch >= 3),
            other => panic!("expected Acquired, got {other:?}"),
        }
    }

    /// Issue 8 item 7: a keepalive failure that does not prove the lock gone (holder.json
    /// unreadable: here a directory stands in its place) keeps the lock until the node, its
    /// broker dead, releases it; only then can another node take it.
    #[test]
    fn a_doubtful_keepalive_failure_keeps_the_lock_until_released() {
        let (_dir, layout) = prepared();
        let mut a = competing(&layout, "a");
        assert_eq!(next(&mut a), Event::Acquired { epoch: 1 });
        // The keepalive may rewrite holder.json between the two steps: retry until the
        // directory stands.
        while std::fs::create_dir(layout.holder()).is_err() {
            let _ = std::fs::remove_file(layout.holder());
        }
        match next(&mut a) {
            Event::MustFence { epoch: 1, reason } => {
                assert!(reason.contains("holder.json"), "{reason}")
            }
            other => panic!("expected MustFence, got {other:?}"),
        }
        let mut b = competing(&layout, "b");
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            b.events.try_recv().is_err(),
            "another node took the lock while ours was fencing its broker"
        );
        assert_eq!(
            layout.read_epoch().unwrap(),
            1,
            "another node claimed an epoch"
        );
        std::fs::remove_dir(layout.holder()).unwrap();
        a.commands.send(Command::Release).unwrap();
        assert_eq!(next(&mut a), Event::Released);
        assert_eq!(next(&mut b), Event::Acquired { epoch: 2 });
    }

    /// Issue 8 item 10: the takeover grace is the configured one (lengthened at start when the
    /// lock check measured a slow visibility lag), not a fixed constant.
    #[test]
    fn a_takeover_waits_the_configured_grace() {
        let (_dir, layout) = prepared();
        let mut a = competing(&layout, "a");
        assert_eq!(next(&mut a), Event::Acquired { epoch: 1 });
        let grace = Duration::from_millis(400);
        let mut b = start_graced(&layout, "b", Duration::from_millis(200), grace);
        b.commands.send(Command::Compete).unwrap();
        a.commands.send(Command::Release).unwrap();
        assert_eq!(next(&mut a), Event::Released);
        let released = Instant::now();
        assert_eq!(next(&mut b), Event::Acquired { epoch: 2 });
        assert!(
            released.elapsed() >= grace,
            "took over {:?} after the release, within the {grace:?} grace",
            released.elapsed()
        );
    }

    /// How many heartbeats come within `wait`, or the first other event.
    fn heartbeats_within(running: &mut Running, wait: Duration) -> Result<usize, Event> {
        let deadline = Instant::now() + wait;
        let mut beats = 0;
        while Instant::now() < deadline {
            match running.events.try_recv() {
                Ok(Event::Heartbeat { .. }) => beats += 1,
                Ok(other) => return Err(other),
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        Ok(beats)
    }

    /// Issue 8 item 9: a FIFO in nodes/ (whose open blocks until a writer comes) must not stall
    /// the keepalive: the roster reads nodes/ on its own thread. It used to fence a healthy
    /// active node after fence_timeout.
    #[test]
    fn a_fifo_in_nodes_does_not_stall_the_keepalive() {
        let (_dir, layout) = prepared();
        nix::unistd::mkfifo(
            &layout.nodes().join("zz.json"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let mut a = competing(&layout, "a");
        a.commands
            .send(Command::Record {
                role: Role::Passive,
                epoch: None,
                since_unix_ms: 0,
                reason: "started".into(),
            })
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let acquired = loop {
            assert!(Instant::now() < deadline, "never acquired the lock");
            match a.events.try_recv() {
                Ok(event) => break event,
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        };
        assert_eq!(acquired, Event::Acquired { epoch: 1 });
        // Keepalives every 20 ms: a stalled keeper would send none.
        let beats = heartbeats_within(&mut a, Duration::from_millis(500)).unwrap();
        assert!(beats >= 3, "only {beats} heartbeats in 500 ms");
    }

    /// The heartbeat's start precedes the report: the node's fence deadline counts from it.
    #[test]
    fn a_heartbeat_reports_when_its_write_started() {
        let (_dir, layout) = prepared();
        let mut a = competing(&layout, "a");
        assert_eq!(next(&mut a), Event::Acquired { epoch: 1 });
        let asked = Instant::now();
        match a.events.blocking_recv().unwrap() {
            Event::Heartbeat { epoch: 1, started } => {
                assert!(started >= asked && started <= Instant::now(), "{started:?}")
            }
            other => panic!("expected a Heartbeat, got {other:?}"),
        }
    }

    #[test]
    fn a_replaced_lock_file_is_noticed_by_the_keepalive() {
        let (_dir, layout) = prepared();
        let mut a = start(&layout, "a");
        a.commands.send(Command::Compete).unwrap();
        assert_eq!(next(&mut a), Event::Acquired { epoch: 1 });
        std::fs::remove_file(layout.lock()).unwrap();
        std::fs::write(layout.lock(), "").unwrap();
        match next(&mut a) {
            Event::Lost { epoch: 1, reason } => assert!(reason.contains("deleted"), "{reason}"),
            other => panic!("expected Lost, got {other:?}"),
        }
    }

    fn holder(node: &str, epoch: u64, state: HolderState) -> Holder {
        Holder {
            node: node.into(),
            host: "elsewhere".into(),
            pid: 1,
            epoch,
            state,
            since_unix_ms: 0,
            heartbeat_unix_ms: shared_proto::unix_ms(),
        }
    }

    /// Broken locks, simulated on a local directory: node b claims an epoch and names itself
    /// holder while a holds the lock.
    #[test]
    fn a_claim_under_our_lock_is_recorded_for_all_and_then_only_a_released_holder_is_replaced() {
        let (_dir, layout) = prepared();
        // A long fence timeout: a live-looking holder is waited for far beyond this test.
        let mut a = start_with(&layout, "a", Duration::from_secs(60));
        a.commands.send(Command::Compete).unwrap();
        assert_eq!(next(&mut a), Event::Acquired { epoch: 1 });
        assert_eq!(shared_dir::claim_epoch(&layout, "b").unwrap(), 2);
        shared_dir::write_holder(&layout, "b", &holder("b", 2, HolderState::Active)).unwrap();
        match next(&mut a) {
            Event::BrokenLocks { evidence } => assert!(evidence.contains("says 2"), "{evidence}"),
            other => panic!("expected BrokenLocks, got {other:?}"),
        }
        // A newer epoch does not prove our lock gone: a keeps it until its broker is dead.
        assert!(matches!(next(&mut a), Event::MustFence { epoch: 1, .. }));
        let record = shared_dir::read_broken_locks(&layout).unwrap().unwrap();
        assert!(record.starts_with("a: "), "{record}");
        a.commands.send(Command::Release).unwrap();
        assert_eq!(next(&mut a), Event::Released);

        // The lock is free again (a released it), but b is a holder a has just seen: a must not
        // take over, however often it polls.
        a.commands.send(Command::Compete).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            a.events.try_recv().is_err(),
            "took the lock from a live-looking holder"
        );
        // A node that starts later learns it from the shared record.
        let mut c = start(&layout, "c");
        c.commands.send(Command::Compete).unwrap();
        match next(&mut c) {
            Event::BrokenLocks { evidence } => {
                assert!(evidence.contains("broken-locks"), "{evidence}")
            }
            other => panic!("expected BrokenLocks, got {other:?}"),
        }
        c.commands.send(Command::Release).unwrap();
        assert_eq!(next(&mut c), Event::Released);
        // b gives the lock back on purpose: a takes over at once, under a newer epoch.
        shared_dir::write_holder(&layout, "b", &holder("b", 2, HolderState::Released)).unwrap();
        assert_eq!(next(&mut a), Event::Acquired { epoch: 3 });
    }

    #[test]
    fn a_release_marks_holder_json_released() {
        let (_dir, layout) = prepared();
        let mut a = start(&layout, "a");
        a.commands.send(Command::Compete).unwrap();
        assert_eq!(next(&mut a), Event::Acquired { epoch: 1 });
        a.commands.send(Command::Release).unwrap();
        assert_eq!(next(&mut a), Event::Released);
        let seen = shared_dir::read_holder(&layout).unwrap().unwrap();
        assert_eq!(
            (seen.node.as_str(), seen.epoch, seen.state),
            ("a", 1, HolderState::Released)
        );
        assert!(shared_dir::read_broken_locks(&layout).unwrap().is_none());
    }

    /// Regression: between another node's claim and its `holder.json`, the file still names
    /// the node it superseded; a distrusting node that reads it then must not take the lock.
    #[test]
    fn a_claim_not_yet_in_holder_json_counts_as_a_live_holder() {
        let (_dir, layout) = prepared();
        shared_dir::record_broken_locks(&layout, "a", "seen earlier").unwrap();
        shared_dir::write_holder(&layout, "a", &holder("a", 1, HolderState::Active)).unwrap();
        assert_eq!(shared_dir::claim_epoch(&layout, "b").unwrap(), 1);
        assert_eq!(shared_dir::claim_epoch(&layout, "b").unwrap(), 2);
        let mut a = start_with(&layout, "a", Duration::from_secs(60));
        a.commands.send(Command::Compete).unwrap();
        assert!(matches!(next(&mut a), Event::BrokenLocks { .. }));
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            a.events.try_recv().is_err(),
            "took the lock while epoch 2's claimer had not yet published itself"
        );
        shared_dir::write_holder(&layout, "b", &holder("b", 2, HolderState::Released)).unwrap();
        assert_eq!(next(&mut a), Event::Acquired { epoch: 3 });
    }
}
