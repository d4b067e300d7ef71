//! bindfs mounts for the hostile-storage tests and the fencing benchmark: two mount paths of
//! one directory that share its data but, without `--enable-lock-forwarding`, not its locks
//! (the OCFS2 trap, on one host), and a FUSE daemon that can be SIGSTOPped to hang every
//! syscall on its mount (a stalled cluster filesystem).
//!
//! FUSE needs root here (/dev/fuse is root-only), so the tests that mount bindfs are
//! `#[ignore]`d (an ignored test counts as skipped, never as passed); `tests/run-all.sh` installs Debian's bindfs and runs them as
//! root.

use crate::{wait_until, Cluster};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Why bindfs mounts cannot be made here, if they cannot. A test asked to run anyway
/// (`--ignored`) fails with this reason rather than passing unrun.
pub fn unavailable() -> Option<String> {
    crate::fuse::unavailable("bindfs", "bindfs")
}

/// Panics with what is missing unless bindfs mounts can be made: the first line of every
/// (ignored) bindfs test.
pub fn require() {
    crate::fuse::require(unavailable());
}

/// A bindfs mount of `source` on `target`, run in the foreground so its daemon's pid is known;
/// unmounted (and resumed first, if stopped) when dropped.
pub struct BindMount {
    pub path: PathBuf,
    daemon: Child,
}

impl BindMount {
    /// Mounts `source` on `target` (created if missing). With `forward_locks`, bindfs passes
    /// fcntl and flock locks to the underlying directory, so they are shared with every other
    /// path to it; without, each mount keeps its own.
    pub fn new(source: &Path, target: &Path, forward_locks: bool) -> BindMount {
        std::fs::create_dir_all(target).unwrap();
        let mut cmd = Command::new("bindfs");
        cmd.arg("-f");
        if forward_locks {
            // Lock forwarding needs the multithreaded daemon.
            cmd.args(["--multithreaded", "--enable-lock-forwarding"]);
        }
        let daemon = cmd
            .arg(source)
            .arg(target)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("run bindfs");
        let mut mount = BindMount {
            path: target.to_owned(),
            daemon,
        };
        wait_until(&format!("bindfs to mount {}", target.display()), || {
            if let Ok(Some(status)) = mount.daemon.try_wait() {
                panic!(
                    "bindfs exited ({status}) instead of mounting {}",
                    target.display()
                );
            }
            is_mounted(target).then_some(())
        });
        mount
    }

    /// The bindfs daemon's pid: SIGSTOP it and every syscall on the mount hangs.
    pub fn daemon_pid(&self) -> i32 {
        self.daemon.id() as i32
    }

    /// Stops (`true`) or resumes the daemon.
    pub fn stall(&self, stalled: bool) {
        let signal = if stalled {
            libc::SIGSTOP
        } else {
            libc::SIGCONT
        };
        // SAFETY: kill(2) on our own child's pid; no memory involved.
        unsafe { libc::kill(self.daemon_pid(), signal) };
    }
}

impl Drop for BindMount {
    fn drop(&mut self) {
        self.stall(false);
        crate::fuse::unmount(&self.path, &mut self.daemon);
    }
}

/// Whether `path` is a mount point, by /proc/self/mountinfo.
fn is_mounted(path: &Path) -> bool {
    let path = path.to_string_lossy().replace(' ', "\\040");
    std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|info| {
        info.lines()
            .any(|line| line.split(' ').nth(4) == Some(path.as_str()))
    })
}

/// Two nodes (not started), each on its own bindfs mount of the cluster's shared directory. The
/// mounts may be dropped before the cluster: lazily unmounted, the nodes' I/O on them fails
/// until the cluster kills the nodes.
pub fn two_nodes_on_two_mounts(forward_locks: bool, extra: &str) -> (Cluster, [BindMount; 2]) {
    let mut cluster = Cluster::new(2, extra);
    let mounts = [1, 2].map(|i| {
        BindMount::new(
            &cluster.shared,
            &cluster.root.join(format!("mount{i}")),
            forward_locks,
        )
    });
    for (node, mount) in cluster.nodes.iter_mut().zip(&mounts) {
        node.set_shared_dir(&mount.path);
    }
    (cluster, mounts)
}
