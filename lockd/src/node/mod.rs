//! The node's state machine: DESIGN.md's lifecycle, driven by events.
//!
//! One task owns all of a node's state. The keeper thread (lock and shared-directory I/O), the
//! broker's tasks (control channel, process exit), the ctl socket and the signal thread only send
//! it events. Its own timers (fence, ready, stop, hold-off) do no I/O, so a stalled filesystem
//! cannot delay a fence.
//!
//! The state is one [`State`] enum whose variants own what exists in them (the lock's lease, the
//! broker, its deadline), so a broker without a lock, or a hold-off with a broker, cannot be
//! written. Invariants kept here:
//! - a broker starts only under a lease the keeper reported, with the epoch it claimed;
//! - a lost lock, a newer epoch or a keepalive silent for `fence_timeout` SIGKILLs the broker at
//!   once, before anything else happens;
//! - the lock is released, and competed for again, only once the previous broker is known dead
//!   (DESIGN invariant 6).

use crate::admin::{BrokerCall, Call};
use crate::broker::{Broker, BrokerEvent};
use crate::config::Settings;
use crate::console::Console;
use crate::keeper::{Command, Event as KeeperEvent};
use crate::metrics::{FenceReason, Snapshot};
use crate::notify;
use crate::sys::spawn::BrokerCommand;
use shared_proto::admin::{ErrorCode, Response, Role, Status};
use shared_proto::control::{BrokerStats, Confinement, FromBroker, ToBroker};
use shared_proto::holder::{Holder, HolderState};
use shared_proto::nodes::NodeRecord;
use std::collections::{HashMap, VecDeque};
use tokio::sync::oneshot;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

mod calls;
#[cfg(test)]
mod tests;

/// Why the node is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// SIGTERM or SIGINT: stop the broker gracefully, release, exit 0.
    Graceful,
    /// A second signal while stopping: kill the broker and exit now.
    Immediate,
}

/// Channels the state machine listens on.
pub struct Inputs {
    pub keeper_events: mpsc::Receiver<KeeperEvent>,
    pub holder: watch::Receiver<Option<Holder>>,
    pub calls: mpsc::Receiver<Call>,
    pub shutdown: mpsc::Receiver<Shutdown>,
    /// SIGHUP: the broker reads its users file and certificates again.
    pub reload: mpsc::Receiver<()>,
}

/// The lock as the keeper reported it held.
#[derive(Debug, Clone, Copy)]
struct Lease {
    epoch: u64,
    /// When the last confirming keepalive began; the fence deadline counts from it.
    last_keepalive: Instant,
}

/// A broker process with what it has told us.
#[derive(Debug)]
struct Child {
    broker: Broker,
    stats: Option<BrokerStats>,
    /// Why it stops, as it said (or as we decided, killing it).
    reason: Option<String>,
    /// It said a restart cannot cure its reason to stop.
    fatal: bool,
    /// Scheduler requests sent to it, by id, with where their answer goes; dropped (and so
    /// answered "went away") with the broker.
    pending: HashMap<u64, oneshot::Sender<Response>>,
}

/// What a graceful stop leads to once the broker has exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterStop {
    /// Planned failover: release the lock and hold off.
    HoldOff,
    /// lockd is exiting.
    Exit,
}

/// What a fence leads to once the killed broker has exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterFence {
    /// Release the lock (the keeper may have kept it) and compete again.
    Compete,
    /// lockd is exiting.
    Exit,
}

/// The node's state; each variant owns what exists in it.
#[derive(Debug)]
enum State {
    /// Competing for the lock: no lease, no broker.
    Passive,
    /// Released after a failover; competing again at `until` or once a peer is active.
    HoldOff { until: Instant },
    /// Holding the lock, the broker dead, waiting for the keeper's fresh epoch (Renew).
    Renewing { lease: Lease },
    /// A broker started under the lease; it must say Ready by `ready_by` (None once killed
    /// for missing it).
    Starting {
        lease: Lease,
        child: Child,
        ready_by: Option<Instant>,
    },
    /// The broker serves clients on `listeners`, confined as it said in `Ready`.
    Active {
        lease: Lease,
        child: Child,
        listeners: Vec<String>,
        confinement: Confinement,
    },
    /// The broker was asked to stop; it is killed at `kill_at` (None once killed).
    Stopping {
        lease: Lease,
        child: Child,
        kill_at: Option<Instant>,
        then: AfterStop,
    },
    /// The lock can no longer be trusted: the broker was killed, and the lock is released once
    /// it has exited.
    Fencing { child: Child, then: AfterFence },
    /// lockd exits: no broker runs; the lock is released and the node stops.
    Exiting,
    /// Only inside a transition, between taking the old state and setting the next (see
    /// [`Node::take_state`]): never the terminal `Exiting`, which releases the lock, so a
    /// transition that forgot to set a state cannot release it under a running broker.
    Moved,
}

impl State {
    /// The role `ctl status` and systemd see.
    fn role(&self) -> Role {
        match self {
            State::Passive | State::Fencing { .. } | State::Exiting | State::Moved => Role::Passive,
            State::HoldOff { .. } => Role::HoldOff,
            State::Renewing { .. } | State::Starting { .. } => Role::Starting,
            State::Active { .. } => Role::Active,
            State::Stopping { .. } => Role::Stopping,
        }
    }

    fn lease(&self) -> Option<&Lease> {
        match self {
            State::Renewing { lease }
            | State::Starting { lease, .. }
            | State::Active { lease, .. }
            | State::Stopping { lease, .. } => Some(lease),
            _ => None,
        }
    }

    fn lease_mut(&mut self) -> Option<&mut Lease> {
        match self {
            State::Renewing { lease }
            | State::Starting { lease, .. }
            | State::Active { lease, .. }
            | State::Stopping { lease, .. } => Some(lease),
            _ => None,
        }
    }

    fn child(&self) -> Option<&Child> {
        match self {
            State::Starting { child, .. }
            | State::Active { child, .. }
            | State::Stopping { child, .. }
            | State::Fencing { child, .. } => Some(child),
            _ => None,
        }
    }

    fn child_mut(&mut self) -> Option<&mut Child> {
        match self {
            State::Starting { child, .. }
            | State::Active { child, .. }
            | State::Stopping { child, .. }
            | State::Fencing { child, .. } => Some(child),
            _ => None,
        }
    }

    /// When the state's own timer fires (the fence timer aside).
    fn deadline(&self) -> Option<Instant> {
        match self {
            State::HoldOff { until } => Some(*until),
            State::Starting { ready_by, .. } => *ready_by,
            State::Stopping { kill_at, .. } => *kill_at,
            _ => None,
        }
    }

    /// lockd is shutting down (a signal came).
    fn exiting(&self) -> bool {
        matches!(
            self,
            State::Exiting
                | State::Stopping {
                    then: AfterStop::Exit,
                    ..
                }
                | State::Fencing {
                    then: AfterFence::Exit,
                    ..
                }
        )
    }
}

/// The node's state machine; owned by [`Node::run`].
pub struct Node {
    settings: Settings,
    broker_command: BrokerCommand,
    keeper: std::sync::mpsc::Sender<Command>,
    /// The roster thread, which publishes this node's record in `nodes/`: told directly, so a
    /// keeper stuck on a stalled filesystem does not hold up the cluster's view of our role.
    roster: std::sync::mpsc::Sender<NodeRecord>,
    /// This host's name, for our record.
    host: String,
    state: State,
    since_unix_ms: u64,
    reason: String,
    /// The epoch we hold or last held, for status and the hold-off's "newer holder" test.
    epoch: Option<u64>,
    generation: u64,
    /// Scheduler requests sent to brokers so far: the next one's id.
    broker_requests: u64,
    /// Why this node believes the shared filesystem's locks are broken, once the keeper saw it.
    broken_locks: Option<String>,
    /// Release commands the keeper has not yet confirmed. Until it has, an `Acquired` or
    /// `Heartbeat` may come from a call that was stuck before the release and is stale.
    releases_pending: u32,
    restarts: VecDeque<Instant>,
    broker_events: mpsc::Sender<(u64, BrokerEvent)>,
    /// The lock holder as the keeper last read or wrote it.
    holder: watch::Receiver<Option<Holder>>,
    /// Every node's record, as the roster last read `nodes/`.
    nodes: watch::Receiver<Vec<NodeRecord>>,
    /// The stale holder last warned about, so the log says it once per holder and epoch.
    stale_warned: Option<(String, u64)>,
    /// What the start-up checks accepted only because the operator opted out (a local
    /// `scheduler_dir`): repeated in every status, so it cannot scroll out of sight.
    start_warnings: Vec<String>,
    /// The figures lockd's metrics report; role, epoch and broken locks are filled in when
    /// published.
    figures: Snapshot,
    /// Where [`Node::publish`] puts them after every event, for scrapes and the console page.
    published: watch::Sender<Snapshot>,
    /// When this node last began competing for the lock (for `lockd_lock_acquire_seconds`).
    competing_since: Option<Instant>,
    /// The passive console page on `console_listen`, open only while no broker of ours runs.
    console: Option<Console>,
}

impl Node {
    /// A passive node that has not yet asked for the lock.
    pub fn new(
        settings: Settings,
        broker_command: BrokerCommand,
        keeper: std::sync::mpsc::Sender<Command>,
        roster: std::sync::mpsc::Sender<NodeRecord>,
        broker_events: mpsc::Sender<(u64, BrokerEvent)>,
        holder: watch::Receiver<Option<Holder>>,
        nodes: watch::Receiver<Vec<NodeRecord>>,
    ) -> Node {
        Node {
            settings,
            broker_command,
            keeper,
            roster,
            host: shared_proto::hostname(),
            state: State::Passive,
            since_unix_ms: shared_proto::unix_ms(),
            reason: "started".into(),
            epoch: None,
            generation: 0,
            broker_requests: 0,
            broken_locks: None,
            releases_pending: 0,
            restarts: VecDeque::new(),
            broker_events,
            holder,
            nodes,
            stale_warned: None,
            start_warnings: Vec::new(),
            figures: Snapshot::default(),
            published: watch::channel(Snapshot::default()).0,
            competing_since: None,
            console: None,
        }
    }

    /// The figures this node publishes after every event (lockd's metrics, the console page).
    pub fn snapshots(&self) -> watch::Receiver<Snapshot> {
        self.published.subscribe()
    }

    /// Serves the passive console page on `console` while no broker of ours runs.
    pub fn with_console(mut self, console: Console) -> Node {
        self.console = Some(console);
        self
    }

    /// Adds warnings from the start-up checks to every status this node gives.
    pub fn with_start_warnings(mut self, warnings: Vec<String>) -> Node {
        self.start_warnings = warnings;
        self
    }

    /// Runs the node until it has shut down; returns once the broker is gone and the lock
    /// released. An error means the node cannot go on (its keeper thread died): the broker has
    /// been killed, and lockd should exit non-zero so systemd restarts it.
    pub async fn run(
        mut self,
        mut inputs: Inputs,
        mut broker_events: mpsc::Receiver<(u64, BrokerEvent)>,
    ) -> Result<(), String> {
        self.record();
        self.keeper_command(Command::Compete);
        self.sync_console();
        self.publish();
        let mut watchdog = tokio::time::interval(self.settings.keepalive);
        loop {
            let fence_at = self
                .state
                .lease()
                .map(|lease| lease.last_keepalive + self.settings.fence_timeout);
            let deadline = self.state.deadline();
            tokio::select! {
                event = inputs.keeper_events.recv() => match event {
                    Some(event) => self.on_keeper(event),
                    None => {
                        if let Some(child) = self.state.child() {
                            child.broker.kill();
                        }
                        return Err("the keeper thread died; the lock can no longer be watched".into());
                    }
                },
                Some((generation, event)) = broker_events.recv() => self.on_broker(generation, event),
                Some(call) = inputs.calls.recv() => self.on_call(call),
                Some(shutdown) = inputs.shutdown.recv() => self.on_shutdown(shutdown),
                Some(()) = inputs.reload.recv() => self.on_reload(),
                Ok(()) = inputs.holder.changed() => {
                    let holder = inputs.holder.borrow_and_update().clone();
                    self.on_holder(holder);
                }
                stream = accept_console(self.console.as_ref()) => {
                    if let Some(console) = &self.console {
                        console.serve(stream);
                    }
                }
                () = sleep_until(fence_at) => {
                    // No Release yet: the lock is given back only once the broker is dead
                    // (`on_exit`), and the keeper handles it whenever its stuck call returns.
                    let silent = self
                        .state
                        .lease()
                        .map(|lease| lease.last_keepalive.elapsed())
                        .unwrap_or_default();
                    self.fence(FenceReason::KeepaliveTimeout, format!(
                        "keepalive has not completed for {} ms (limit {} ms): the shared filesystem may be stalled",
                        silent.as_millis(),
                        self.settings.fence_timeout.as_millis()
                    ));
                }
                () = sleep_until(deadline) => self.on_timer(),
                _ = watchdog.tick() => {
                    notify::watchdog();
                    self.log_stale_holder();
                }
            }
            // Dies (and its broker with it, PDEATHSIG) rather than go on without a state.
            assert!(
                !matches!(self.state, State::Moved),
                "a state transition left the node without a state"
            );
            self.sync_console();
            self.publish();
            if matches!(self.state, State::Exiting) {
                self.keeper_command(Command::Release);
                self.await_release(&mut inputs.keeper_events).await;
                tracing::info!(node = %self.settings.node, epoch = self.epoch.unwrap_or_default(), "lockd stopped");
                return Ok(());
            }
        }
    }

    /// Waits, at most `fence_timeout` (past it a stalled filesystem would have fenced anyway),
    /// until the keeper has handled every release, and so marked `holder.json` released: a node
    /// that distrusts the locks then takes over at once instead of waiting for our heartbeat to
    /// go still. Exiting earlier would close the lock file with `holder.json` still naming us.
    async fn await_release(&mut self, events: &mut mpsc::Receiver<KeeperEvent>) {
        let deadline = Instant::now() + self.settings.fence_timeout;
        // systemd's watchdog runs on while a service stops: keep feeding it while we wait.
        let mut watchdog = tokio::time::interval(self.settings.keepalive);
        while self.releases_pending > 0 {
            tokio::select! {
                _ = watchdog.tick() => notify::watchdog(),
                event = events.recv() => match event {
                    Some(KeeperEvent::Released) => self.releases_pending -= 1,
                    Some(other) => tracing::debug!(node = %self.settings.node, ?other, "keeper report while exiting"),
                    None => break,
                },
                () = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(node = %self.settings.node, epoch = self.epoch.unwrap_or_default(), limit_ms = self.settings.fence_timeout.as_millis() as u64, "the keeper did not confirm the release in time; exiting with holder.json possibly still naming this node");
                    return;
                }
            }
        }
        let released = self
            .holder
            .borrow()
            .as_ref()
            .is_some_and(|h| h.node == self.settings.node && h.state == HolderState::Released);
        tracing::info!(node = %self.settings.node, epoch = self.epoch.unwrap_or_default(), holder_released = released, "lock released");
    }

    fn on_keeper(&mut self, event: KeeperEvent) {
        let certain_loss = matches!(event, KeeperEvent::Lost { .. });
        match event {
            KeeperEvent::Acquired { epoch, started } => {
                if self.releases_pending > 0 {
                    tracing::warn!(node = %self.settings.node, epoch, "ignoring a lock acquisition reported before a pending release");
                    return;
                }
                let lease = Lease {
                    epoch,
                    last_keepalive: Instant::from_std(started),
                };
                // We ask for the lock only while passive (Compete) or restarting (Renew), and
                // never while a broker runs; anything else is a bug or a stale report. Never
                // start a second broker. A broker still running holds an older epoch than the
                // one just claimed: fence it, and release only once it is dead. With none
                // running, give the lock back at once.
                match self.state {
                    State::Passive | State::Renewing { .. } => {
                        if matches!(self.state, State::Passive) {
                            self.figures.failovers += 1;
                            self.figures.lock_acquire_seconds = self
                                .competing_since
                                .take()
                                .map(|since| since.elapsed().as_secs_f64());
                        }
                        self.epoch = Some(epoch);
                        self.start_broker(lease);
                    }
                    State::Starting { .. } | State::Active { .. } | State::Stopping { .. } => {
                        self.fence(
                            FenceReason::UnexpectedAcquisition,
                            format!(
                                "the keeper reported epoch {epoch} claimed while brokerd ran as {}",
                                self.state.role()
                            ),
                        );
                    }
                    State::Fencing { .. } => {
                        tracing::warn!(node = %self.settings.node, epoch, "lock acquisition while fencing; released once brokerd has exited");
                    }
                    State::HoldOff { .. } | State::Exiting | State::Moved => {
                        tracing::warn!(node = %self.settings.node, epoch, role = %self.state.role(), "unexpected lock acquisition; releasing");
                        self.keeper_command(Command::Release);
                    }
                }
            }
            KeeperEvent::Heartbeat { epoch, started } => {
                if self.releases_pending > 0 {
                    return;
                }
                if let Some(lease) = self.state.lease_mut().filter(|l| l.epoch == epoch) {
                    // The lock was known held when the heartbeat write began, not when the
                    // report, delayed by holder.json's I/O, arrived.
                    lease.last_keepalive = Instant::from_std(started);
                    if let Some(child) = self.state.child() {
                        child.broker.send(ToBroker::Stats);
                    }
                }
            }
            KeeperEvent::Lost { epoch, reason } | KeeperEvent::MustFence { epoch, reason } => {
                let kind = if certain_loss {
                    FenceReason::LockLost
                } else {
                    FenceReason::KeepaliveFailed
                };
                // Either way the broker dies now; the lock is released (a no-op after a
                // certain loss, where the keeper already closed it) once it is dead.
                if self.state.lease().is_some() && self.releases_pending == 0 {
                    self.fence(kind, reason);
                } else {
                    tracing::debug!(node = %self.settings.node, epoch, %reason, "loss of a lock already given up");
                }
            }
            KeeperEvent::Released => {
                self.releases_pending = self.releases_pending.saturating_sub(1)
            }
            KeeperEvent::BrokenLocks { evidence } => self.broken_locks = Some(evidence),
        }
    }

    fn start_broker(&mut self, lease: Lease) {
        // Before the fork: brokerd binds console_listen as soon as it is active, and the
        // listener must be closed by then (it is, when `close` returns).
        if let Some(console) = &mut self.console {
            console.close(&self.settings.node);
        }
        self.generation += 1;
        match Broker::start(
            &self.broker_command,
            lease.epoch,
            self.generation,
            self.settings.broker_liveness_timeout,
            self.broker_events.clone(),
        ) {
            Ok(broker) => {
                tracing::info!(node = %self.settings.node, epoch = lease.epoch, pid = broker.pid, "brokerd started");
                let child = Child {
                    broker,
                    stats: None,
                    reason: None,
                    fatal: false,
                    pending: HashMap::new(),
                };
                let ready_by = Some(Instant::now() + self.settings.broker_ready_timeout);
                self.enter(
                    State::Starting {
                        lease,
                        child,
                        ready_by,
                    },
                    format!("lock acquired with epoch {}", lease.epoch),
                );
            }
            Err(e) => {
                let why = format!(
                    "cannot start {}: {e}",
                    self.broker_command.program.display()
                );
                self.recover(lease, why, false);
            }
        }
    }

    fn on_broker(&mut self, generation: u64, event: BrokerEvent) {
        let Some(child) = self
            .state
            .child_mut()
            .filter(|c| c.broker.generation == generation)
        else {
            return;
        };
        match event {
            BrokerEvent::Message(FromBroker::Ready {
                epoch,
                listeners,
                confinement,
            }) => {
                let state = self.take_state();
                match state {
                    State::Starting { lease, child, .. } if lease.epoch == epoch => {
                        child.broker.send(ToBroker::Stats);
                        self.keeper_command(Command::SetState(HolderState::Active));
                        match confinement.warning() {
                            None => {
                                tracing::info!(node = %self.settings.node, epoch, %confinement, "brokerd confined")
                            }
                            Some(warning) => {
                                tracing::warn!(node = %self.settings.node, epoch, %confinement, "{warning}")
                            }
                        }
                        let reason = format!("brokerd ready on {}", listeners.join(", "));
                        self.enter(
                            State::Active {
                                lease,
                                child,
                                listeners,
                                confinement,
                            },
                            reason,
                        );
                    }
                    other => self.state = other,
                }
            }
            BrokerEvent::Message(FromBroker::Stats { stats }) => child.stats = Some(stats),
            BrokerEvent::Message(FromBroker::Schedules { id, listing }) => {
                if let Some(reply) = child.pending.remove(&id) {
                    let _ = reply.send(Response::Schedules { listing });
                }
            }
            BrokerEvent::Message(FromBroker::SchedulesCancelled { id, removed }) => {
                tracing::info!(node = %self.settings.node, epoch = self.epoch.unwrap_or_default(), removed, "scheduled jobs cancelled");
                if let Some(reply) = child.pending.remove(&id) {
                    let _ = reply.send(Response::SchedulesCancelled { removed });
                }
            }
            BrokerEvent::Message(FromBroker::Destinations { id, answer }) => {
                if let Some(reply) = child.pending.remove(&id) {
                    let _ = reply.send(Response::Destinations { answer });
                }
            }
            BrokerEvent::Message(FromBroker::CallFailed { id, message }) => {
                if let Some(reply) = child.pending.remove(&id) {
                    let _ = reply.send(Response::Error {
                        code: ErrorCode::Unavailable,
                        message: format!("{}'s broker: {message}", self.settings.node),
                    });
                }
            }
            BrokerEvent::Message(FromBroker::Stopping { reason, fatal }) => {
                tracing::info!(node = %self.settings.node, epoch = self.epoch.unwrap_or_default(), %reason, fatal, "brokerd stopping");
                child.reason = Some(reason);
                child.fatal = fatal;
            }
            // Consumed by the liveness check in broker.rs; never forwarded.
            BrokerEvent::Message(FromBroker::Pong { .. }) => {}
            BrokerEvent::Message(FromBroker::Hello { .. }) => {
                child.broker.kill();
                child.reason = Some("brokerd sent a second hello".into());
            }
            BrokerEvent::ChannelClosed { error } => {
                if let Some(error) = error {
                    tracing::error!(node = %self.settings.node, pid = child.broker.pid, %error, "brokerd broke the control protocol; killing it");
                    child.reason = Some(format!("control protocol error: {error}"));
                }
                // A broker without its control channel cannot be stopped gracefully or asked
                // anything; it also exits by itself on EOF. Make sure.
                child.broker.kill();
            }
            BrokerEvent::Unresponsive { silent } => {
                // Already SIGKILLed; its exit follows and is handled like a crash.
                let reason = format!(
                    "unresponsive for {} ms: a liveness ping went unanswered",
                    silent.as_millis()
                );
                tracing::error!(node = %self.settings.node, epoch = self.epoch.unwrap_or_default(), pid = child.broker.pid, %reason, "brokerd killed");
                child.reason = Some(reason);
            }
            BrokerEvent::Exited { status } => {
                let reason = child.reason.take().unwrap_or_default();
                tracing::info!(node = %self.settings.node, epoch = self.epoch.unwrap_or_default(), pid = child.broker.pid, %status, %reason, "brokerd exited");
                let why = if reason.is_empty() {
                    format!("brokerd exited ({status})")
                } else {
                    format!("brokerd exited ({status}): {reason}")
                };
                self.on_exit(why);
            }
        }
    }

    /// The state, for a transition that sets the next one; [`State::Moved`] meanwhile.
    fn take_state(&mut self) -> State {
        std::mem::replace(&mut self.state, State::Moved)
    }

    /// The broker is dead: go on as the state it ran in says.
    fn on_exit(&mut self, why: String) {
        match self.take_state() {
            State::Starting { lease, child, .. } | State::Active { lease, child, .. } => {
                self.recover(lease, why, child.fatal)
            }
            State::Stopping {
                then: AfterStop::HoldOff,
                ..
            } => self.hold_off(format!("failover: {why}")),
            State::Fencing {
                then: AfterFence::Compete,
                ..
            } => {
                // The broker is dead: only now may a lock the keeper kept through a doubtful
                // keepalive go (DESIGN invariant 6).
                self.state = State::Passive;
                self.keeper_command(Command::Release);
                self.keeper_command(Command::Compete);
            }
            State::Stopping {
                then: AfterStop::Exit,
                ..
            }
            | State::Fencing {
                then: AfterFence::Exit,
                ..
            }
            | State::Exiting => self.state = State::Exiting,
            other @ (State::Passive
            | State::HoldOff { .. }
            | State::Renewing { .. }
            | State::Moved) => self.state = other,
        }
    }

    /// An unplanned end of the broker while we hold the lock: restart in place under a fresh
    /// epoch if the policy allows, else hand the lock to a peer.
    fn recover(&mut self, lease: Lease, why: String, fatal: bool) {
        if fatal {
            self.hold_off(format!(
                "{why}; a restart cannot cure that, handing the lock to a peer"
            ));
            return;
        }
        let now = Instant::now();
        while self
            .restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.settings.restart_window)
        {
            self.restarts.pop_front();
        }
        if self.restarts.len() < self.settings.max_restarts as usize {
            self.restarts.push_back(now);
            self.figures.broker_restarts += 1;
            let reason = format!(
                "{why}; restart {} of {} within {} s",
                self.restarts.len(),
                self.settings.max_restarts,
                self.settings.restart_window.as_secs()
            );
            self.enter(State::Renewing { lease }, reason);
            // A fresh epoch: the restarted broker's ids must not repeat the old one's.
            self.keeper_command(Command::Renew);
        } else {
            self.restarts.clear();
            self.hold_off(format!(
                "{why}; {} restarts within {} s, handing the lock to a peer",
                self.settings.max_restarts,
                self.settings.restart_window.as_secs()
            ));
        }
    }

    /// Releases the lock (no broker runs) and stays out of the competition for the hold-off.
    fn hold_off(&mut self, reason: String) {
        self.keeper_command(Command::Release);
        let until = Instant::now() + self.settings.failover_hold_off;
        self.enter(State::HoldOff { until }, reason);
    }

    /// Kills the broker at once because the lock can no longer be trusted. The lock is released
    /// only once the broker has exited (`on_exit`).
    fn fence(&mut self, kind: FenceReason, reason: String) {
        tracing::error!(node = %self.settings.node, epoch = self.epoch.unwrap_or_default(), reason_kind = kind.label(), %reason, "fencing: killing brokerd");
        let next = match self.take_state() {
            State::Starting { child, .. } | State::Active { child, .. } => {
                child.broker.kill();
                State::Fencing {
                    child,
                    then: AfterFence::Compete,
                }
            }
            State::Stopping { child, then, .. } => {
                child.broker.kill();
                let then = match then {
                    AfterStop::Exit => AfterFence::Exit,
                    AfterStop::HoldOff => AfterFence::Compete,
                };
                State::Fencing { child, then }
            }
            State::Renewing { .. } => {
                self.keeper_command(Command::Release);
                self.keeper_command(Command::Compete);
                State::Passive
            }
            other => {
                self.state = other;
                return;
            }
        };
        self.figures.count_fence(kind);
        self.enter(next, format!("fenced: {reason}"));
    }

    fn on_timer(&mut self) {
        match &mut self.state {
            State::Starting {
                child, ready_by, ..
            } => {
                *ready_by = None;
                child.reason = Some(format!(
                    "not ready within {} ms",
                    self.settings.broker_ready_timeout.as_millis()
                ));
                child.broker.kill();
            }
            State::Stopping { child, kill_at, .. } => {
                *kill_at = None;
                tracing::warn!(node = %self.settings.node, pid = child.broker.pid, "brokerd did not stop within its deadline; killing it");
                child.broker.kill();
            }
            State::HoldOff { .. } => {
                self.enter(State::Passive, "hold-off over".into());
                self.keeper_command(Command::Compete);
            }
            _ => {}
        }
    }

    fn on_holder(&mut self, holder: Option<Holder>) {
        // A hold-off ends early once another node is active under a newer epoch: the handover
        // is done. (Until then the idle keeper re-reads holder.json every lock_poll, so this
        // node, and `ctl failover --wait` asking it, see the new holder promptly.)
        if !matches!(self.state, State::HoldOff { .. }) {
            return;
        }
        if let Some(holder) = holder {
            if holder.node != self.settings.node
                && Some(holder.epoch) > self.epoch
                && holder.state == HolderState::Active
            {
                let reason = format!("{} took over with epoch {}", holder.node, holder.epoch);
                self.enter(State::Passive, reason);
                self.keeper_command(Command::Compete);
            }
        }
    }

    /// Passes SIGHUP on to a running broker, which reads its users file and certificates
    /// again; a passive node has nothing to reload (its next broker reads them at start).
    fn on_reload(&self) {
        match self.state.child() {
            Some(child) => {
                tracing::info!(node = %self.settings.node, epoch = self.epoch.unwrap_or_default(), pid = child.broker.pid, "reload requested; passing SIGHUP to brokerd");
                child.broker.hang_up();
            }
            None => {
                tracing::info!(node = %self.settings.node, "reload requested; no broker running, nothing to reload")
            }
        }
    }

    fn on_shutdown(&mut self, shutdown: Shutdown) {
        let immediate = shutdown == Shutdown::Immediate || self.state.exiting();
        let deadline = self.settings.broker_stop_timeout;
        match self.take_state() {
            State::Starting { lease, child, .. }
            | State::Active { lease, child, .. }
            | State::Stopping { lease, child, .. } => {
                let kill_at = if immediate {
                    child.broker.kill();
                    None
                } else {
                    child.broker.send(ToBroker::Stop {
                        deadline_ms: deadline.as_millis() as u64,
                        reason: "lockd is shutting down".into(),
                    });
                    Some(Instant::now() + deadline)
                };
                self.enter(
                    State::Stopping {
                        lease,
                        child,
                        kill_at,
                        then: AfterStop::Exit,
                    },
                    "lockd is shutting down".into(),
                );
            }
            State::Fencing { child, .. } => {
                self.state = State::Fencing {
                    child,
                    then: AfterFence::Exit,
                }
            }
            // No broker runs: lockd exits at once.
            State::Passive
            | State::HoldOff { .. }
            | State::Renewing { .. }
            | State::Exiting
            | State::Moved => self.state = State::Exiting,
        }
    }

    /// Moves to `state` for `reason`: logs the role change and publishes it (systemd, nodes/).
    fn enter(&mut self, state: State, reason: String) {
        let from = self.state.role();
        self.state = state;
        let role = self.state.role();
        tracing::info!(node = %self.settings.node, epoch = self.epoch.unwrap_or_default(), %from, to = %role, %reason, "role change");
        self.reason = reason;
        self.since_unix_ms = shared_proto::unix_ms();
        notify::status(role, self.epoch, &self.reason);
        self.record();
    }

    /// Has the roster publish this node's role in `nodes/`.
    fn record(&mut self) {
        // The roster ends only with lockd; nothing to do if it died.
        let _ = self.roster.send(NodeRecord {
            node: self.settings.node.clone(),
            host: self.host.clone(),
            lockd_pid: std::process::id(),
            role: self.state.role(),
            epoch: self.epoch,
            since_unix_ms: self.since_unix_ms,
            reason: self.reason.clone(),
            heartbeat_unix_ms: 0,
        });
    }

    /// Publishes the figures for scrapes and the console page (only when they changed).
    fn publish(&mut self) {
        let mut figures = self.figures.clone();
        figures.role = self.state.role();
        figures.epoch = self.epoch.unwrap_or_default();
        figures.broken_locks = self.broken_locks.is_some();
        self.published.send_if_modified(|old| {
            let changed = *old != figures;
            if changed {
                *old = figures;
            }
            changed
        });
    }

    /// Opens the console page while no broker of ours may run (passive, holding off) and lockd
    /// is not exiting; it is closed in [`Node::start_broker`], right before the fork.
    fn sync_console(&mut self) {
        let serve = matches!(self.state, State::Passive | State::HoldOff { .. });
        if let Some(console) = &mut self.console {
            if serve {
                console.open(&self.settings.node);
            }
        }
    }

    fn keeper_command(&mut self, command: Command) {
        match command {
            Command::Release => self.releases_pending += 1,
            Command::Compete => self.competing_since = Some(Instant::now()),
            _ => {}
        }
        // A send fails only if the keeper thread died; its event channel closing tells `run`.
        let _ = self.keeper.send(command);
    }
}

/// The next connection to the console page, or never without one (or while it is closed).
async fn accept_console(console: Option<&Console>) -> tokio::net::TcpStream {
    match console {
        Some(console) => console.accept().await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
