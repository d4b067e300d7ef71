//! What the node answers to ctl: its status, `ctl failover`, and the broker requests it passes
//! to the serving brokerd (or answers itself, naming the active node).

use super::*;

impl Node {
    /// Answers one ctl call; broker requests are passed on and answered when the broker replies.
    pub(super) fn on_call(&mut self, call: Call) {
        match call {
            Call::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Call::Failover { by_uid, reply } => {
                let _ = reply.send(self.failover(by_uid));
            }
            Call::Broker { request, reply } => self.ask_broker(request, reply),
        }
    }

    /// Passes a scheduler request to the serving broker, whose answer (by the same id) goes to
    /// `reply`; on any other role, answers at once naming the active node.
    fn ask_broker(&mut self, request: BrokerCall, reply: oneshot::Sender<Response>) {
        let State::Active { child, .. } = &mut self.state else {
            let message = self.not_active();
            let _ = reply.send(Response::Error {
                code: ErrorCode::WrongRole,
                message,
            });
            return;
        };
        self.broker_requests += 1;
        let id = self.broker_requests;
        // Answers that timed out in the ctl connection are not waited for any longer.
        child.pending.retain(|_, waiting| !waiting.is_closed());
        child.pending.insert(id, reply);
        let message = match request {
            BrokerCall::List { limit } => ToBroker::ListSchedules { id, limit },
            BrokerCall::Cancel { which, by_uid } => {
                tracing::info!(node = %self.settings.node, epoch = self.epoch.unwrap_or_default(), by_uid, ?which, "cancelling scheduled jobs");
                ToBroker::CancelSchedules { id, which }
            }
            BrokerCall::Destinations { call, by_uid } => {
                if call.changes_something() {
                    tracing::info!(node = %self.settings.node, epoch = self.epoch.unwrap_or_default(), by_uid, ?call, "destination call");
                }
                ToBroker::Destinations { id, call }
            }
        };
        child.broker.send(message);
    }

    /// Why this node cannot answer for the broker, naming the node that can (from holder.json).
    fn not_active(&self) -> String {
        let me = &self.settings.node;
        let role = self.state.role();
        let holder = self.holder.borrow();
        match holder
            .as_ref()
            .filter(|h| h.node != *me && h.state != HolderState::Released)
        {
            Some(h) => format!(
                "{me} is {role}; the active node is {} (host {}, epoch {}, {}): run this against \
                 {}'s lockd (ctl --socket with its socket)",
                h.node, h.host, h.epoch, h.state, h.node
            ),
            None if self.state.lease().is_some() => format!(
                "{me} is {role}, not active: its broker does not serve now; retry shortly \
                 (ctl status says more)"
            ),
            None => format!(
                "{me} is {role}, and holder.json names no other active node: no broker serves \
                 now; see `ctl status`"
            ),
        }
    }

    fn failover(&mut self, by_uid: u32) -> Response {
        let (lease, child) = match self.take_state() {
            State::Active { lease, child, .. } => (lease, child),
            other => {
                let role = other.role();
                self.state = other;
                return Response::Error {
                    code: ErrorCode::WrongRole,
                    message: format!(
                        "node {} is {role}, not active: run `ctl failover` on the active node",
                        self.settings.node
                    ),
                };
            }
        };
        let deadline = self.settings.broker_stop_timeout;
        child.broker.send(ToBroker::Stop {
            deadline_ms: deadline.as_millis() as u64,
            reason: "failover requested".into(),
        });
        let epoch = lease.epoch;
        self.enter(
            State::Stopping {
                lease,
                child,
                kill_at: Some(Instant::now() + deadline),
                then: AfterStop::HoldOff,
            },
            format!("failover requested by uid {by_uid}"),
        );
        Response::FailoverStarted {
            epoch,
            hold_off_ms: self.settings.failover_hold_off.as_millis() as u64,
        }
    }

    /// Why the holder looks dead, if it does: its heartbeat is older than `stale_holder` (by our
    /// clock; clocks only decide what is reported, never what is fenced).
    fn stale_holder(&self) -> Option<String> {
        let holder = self.holder.borrow();
        let holder = holder
            .as_ref()
            .filter(|h| h.state != HolderState::Released)?;
        let age = shared_proto::unix_ms().saturating_sub(holder.heartbeat_unix_ms);
        (age > self.settings.stale_holder.as_millis() as u64).then(|| {
            format!(
                "the lock holder {node} (host {host}, lockd pid {pid}, epoch {epoch}) has not heartbeaten for {age} s \
                 (threshold {limit} s): its lockd may be stopped or dead while its lock lingers, as with NFSv3 \
                 locks of a crashed client. Check {node}: is lockd running (`ctl status` there)? If that node is \
                 gone for good and no node takes over, release its lock on the file server (NFSv3: restart the \
                 lock manager or reboot the dead client) rather than deleting SHARED/lock",
                node = holder.node,
                host = holder.host,
                pid = holder.pid,
                epoch = holder.epoch,
                age = age / 1000,
                limit = self.settings.stale_holder.as_secs(),
            )
        })
    }

    /// Logs a stale holder once, when it becomes stale.
    pub(super) fn log_stale_holder(&mut self) {
        let key = self
            .holder
            .borrow()
            .as_ref()
            .map(|h| (h.node.clone(), h.epoch));
        match self.stale_holder() {
            Some(warning) if self.stale_warned != key => {
                tracing::warn!(node = %self.settings.node, epoch = self.epoch.unwrap_or_default(), reason = %warning, "stale lock holder");
                self.stale_warned = key;
            }
            Some(_) => {}
            None => self.stale_warned = None,
        }
    }

    /// This node's status, with the holder and the other nodes as the keeper last read them.
    pub fn status(&self) -> Status {
        let now = shared_proto::unix_ms();
        let nodes = self.nodes.borrow().iter().map(|r| r.view(now)).collect();
        let mut warnings: Vec<String> = self.start_warnings.clone();
        warnings.extend(self.stale_holder());
        if let Some(evidence) = &self.broken_locks {
            warnings.push(format!(
                "the shared filesystem's locks did not keep another node out ({evidence}); this \
                 node now takes the lock only from a holder whose heartbeat has stopped for \
                 fence_timeout_ms. Run `ctl check-lock` on every node's mount, fix the \
                 filesystem, then restart lockd"
            ));
        }
        let confinement = match &self.state {
            State::Active { confinement, .. } => Some(confinement.clone()),
            _ => None,
        };
        warnings.extend(confinement.as_ref().and_then(Confinement::warning));
        let holder = self.holder.borrow();
        Status {
            node: self.settings.node.clone(),
            role: self.state.role(),
            epoch: self.epoch,
            since_unix_ms: self.since_unix_ms,
            reason: self.reason.clone(),
            lockd_pid: std::process::id(),
            broker_pid: self.state.child().map(|c| c.broker.pid),
            listeners: match &self.state {
                State::Active { listeners, .. } => listeners.clone(),
                _ => Vec::new(),
            },
            restarts: self.restarts.len() as u32,
            shared_dir: self.settings.shared_dir.display().to_string(),
            holder: holder.as_ref().map(|h| h.view(now)),
            broker: self.state.child().and_then(|c| c.stats.clone()),
            confinement,
            nodes,
            warnings,
        }
    }
}
