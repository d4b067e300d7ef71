//! The faults the soak injects, and how each is injected into a running cluster and undone.

use super::rng::Rng;
use crate::{bindfs::BindMount, Cluster};
use shared_proto::admin::Role;
use std::time::Duration;

/// One fault, injected on the active node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    /// SIGKILL of lockd (its brokerd dies with it); the node is restarted later.
    KillLockd,
    /// SIGKILL of brokerd alone: lockd restarts it in place or hands the lock on.
    KillBrokerd,
    /// SIGKILL of lockd and brokerd together.
    KillBoth,
    /// SIGSTOP of brokerd, SIGCONT a little later: a paused broker must never serve again
    /// after another node took over.
    StopBrokerd,
    /// SIGSTOP of lockd, SIGCONT a little later.
    StopLockd,
    /// `ctl failover`: a graceful handover.
    Failover,
    /// SIGSTOP of the bindfs daemon under the active node (every syscall on its shared
    /// directory hangs), SIGCONT a little later. Needs root and bindfs.
    StallFs,
}

impl Fault {
    /// Every fault.
    pub const ALL: [Fault; 7] = [
        Fault::KillLockd,
        Fault::KillBrokerd,
        Fault::KillBoth,
        Fault::StopBrokerd,
        Fault::StopLockd,
        Fault::Failover,
        Fault::StallFs,
    ];
}

/// Injects `fault` on node `active` and undoes what must be undone (SIGCONT, restart of killed
/// nodes) after a pause drawn from `rng`. `mounts` are the nodes' bindfs mounts (empty without
/// root). Returns what was done, for the log, or `None` when nothing could be (no broker to
/// signal, a refused failover, no mount to stall): such a fault is not counted.
pub fn inject(
    cluster: &mut Cluster,
    mounts: &[BindMount],
    active: usize,
    fault: Fault,
    rng: &mut Rng,
) -> Option<String> {
    let node = &cluster.nodes[active];
    let status = node.status().ok();
    let broker = status.as_ref().and_then(|s| s.broker_pid);
    let lockd = node.child.as_ref().map(|c| c.id() as i32);
    let pause = Duration::from_millis(rng.range(500, 4000));
    let name = node.name.clone();
    match fault {
        Fault::KillLockd => {
            cluster.nodes[active].kill(libc::SIGKILL);
            std::thread::sleep(pause);
            cluster.nodes[active].start();
        }
        Fault::KillBrokerd => signal(broker?, libc::SIGKILL),
        Fault::KillBoth => {
            if let Some(broker) = broker {
                signal(broker, libc::SIGKILL);
            }
            cluster.nodes[active].kill(libc::SIGKILL);
            std::thread::sleep(pause);
            cluster.nodes[active].start();
        }
        Fault::StopBrokerd => {
            let broker = broker?;
            signal(broker, libc::SIGSTOP);
            std::thread::sleep(pause);
            signal(broker, libc::SIGCONT);
        }
        Fault::StopLockd => {
            let lockd = lockd?;
            signal(lockd, libc::SIGSTOP);
            std::thread::sleep(pause);
            signal(lockd, libc::SIGCONT);
        }
        Fault::Failover => {
            if !cluster.nodes[active].ctl(&["failover"]).status.success() {
                return None;
            }
        }
        Fault::StallFs => {
            let mount = mounts.get(active)?;
            mount.stall(true);
            std::thread::sleep(pause);
            mount.stall(false);
        }
    }
    let paused = match fault {
        Fault::KillBrokerd | Fault::Failover => String::new(),
        _ => format!(", {} ms until undone", pause.as_millis()),
    };
    Some(format!(
        "{fault:?} on {name} (broker {broker:?}, lockd {lockd:?}, role was {:?}{paused})",
        status.map(|s| s.role).unwrap_or(Role::Passive)
    ))
}

/// Sends `sig` to `pid`.
fn signal(pid: impl TryInto<i32>, sig: i32) {
    if let Ok(pid) = pid.try_into() {
        // SAFETY: kill(2) on a pid of a process this soak started; no memory involved.
        unsafe { libc::kill(pid, sig) };
    }
}
