//! systemd notifications: READY once the node is set up, STATUS on every role change, WATCHDOG
//! from the state machine's loop. All are no-ops when lockd does not run under systemd.

use sd_notify::NotifyState;
use shared_proto::admin::Role;

/// The node checked its config and shared directory and serves ctl.
pub fn ready() {
    let _ = sd_notify::notify(&[NotifyState::Ready]);
}

/// The state machine's loop is alive.
pub fn watchdog() {
    let _ = sd_notify::notify(&[NotifyState::Watchdog]);
}

/// One line for `systemctl status`.
pub fn status(role: Role, epoch: Option<u64>, reason: &str) {
    let line = match epoch {
        Some(epoch) => format!("{role} (epoch {epoch}): {reason}"),
        None => format!("{role}: {reason}"),
    };
    let _ = sd_notify::notify(&[NotifyState::Status(&line)]);
}
