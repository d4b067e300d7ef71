//! Starting brokerd as an unprivileged child that cannot outlive lockd.
//!
//! The child gets exactly one inherited descriptor besides stdio: its end of the control
//! socketpair, as fd 3. Everything else lockd opens is O_CLOEXEC (std and tokio open descriptors
//! that way, and the lock file explicitly), so in particular the lock file never reaches brokerd.

use shared_proto::control::CONTROL_FD_ENV;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use tokio::process::{Child, Command};

/// The descriptor number brokerd finds its control socket on.
const CHILD_CONTROL_FD: i32 = 3;

/// Environment variables that belong to lockd's relationship with systemd; a child that saw
/// them could send READY/WATCHDOG on lockd's behalf.
const PRIVATE_ENV: [&str; 5] = [
    "NOTIFY_SOCKET",
    "WATCHDOG_PID",
    "WATCHDOG_USEC",
    "LISTEN_FDS",
    "LISTEN_PID",
];

/// How to start the broker.
#[derive(Debug, Clone)]
pub struct BrokerCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
    /// (uid, gid) to drop to; `None` runs the child as lockd's own user.
    pub credentials: Option<(u32, u32)>,
    /// `program`, opened by lockd (O_PATH) when the broker user cannot reach its path (a build
    /// under /root): the child executes it through /proc/self/fd, which checks only the file's
    /// own execute bit. A kernel rule lets a process use its own fd links whatever its ids.
    pub opened: Option<Arc<OwnedFd>>,
}

/// A started child and lockd's end of its control socket.
pub struct Spawned {
    pub child: Child,
    pub control: UnixStream,
}

/// Starts the broker.
///
/// Must be called from the thread that lives as long as lockd (the runtime's main thread):
/// PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, so forking from a
/// short-lived thread (tokio's blocking pool) would kill the broker at a random moment.
pub fn spawn(command: &BrokerCommand) -> io::Result<Spawned> {
    let (ours, theirs) = UnixStream::pair()?;
    let theirs = OwnedFd::from(theirs);
    let their_fd = theirs.as_raw_fd();
    let parent = std::process::id() as i32;

    let mut cmd = match &command.opened {
        Some(fd) => {
            let mut cmd = Command::new(format!("/proc/self/fd/{}", fd.as_raw_fd()));
            cmd.arg0(&command.program);
            cmd
        }
        None => Command::new(&command.program),
    };
    cmd.args(&command.args)
        .stdin(Stdio::null())
        .env(CONTROL_FD_ENV, CHILD_CONTROL_FD.to_string())
        .process_group(0)
        .kill_on_drop(false);
    for var in PRIVATE_ENV {
        cmd.env_remove(var);
    }
    if let Some((uid, gid)) = command.credentials {
        // In the child, before our pre_exec hook, std calls setgid, drops all supplementary
        // groups (setgroups(0), as we run as root), then setuid.
        cmd.uid(uid).gid(gid);
    }
    // SAFETY: the closure runs in the child between fork and exec, where only async-signal-safe
    // calls are allowed: it makes raw syscalls (dup2, fcntl, prctl, getppid) and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            move_to_control_fd(their_fd)?;
            close_other_descriptors_on_exec();
            // After setuid: a change of credentials clears both settings.
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // lockd may have died before PDEATHSIG was armed; then nothing would ever kill us.
            if libc::getppid() != parent {
                return Err(io::Error::other("lockd exited while starting brokerd"));
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(theirs);
    Ok(Spawned {
        child,
        control: ours,
    })
}

/// Opens brokerd's binary for [`BrokerCommand::opened`]: O_PATH (no read access needed), and
/// numbered above the control socket's fd 3, which the child's dup2 would otherwise replace.
pub fn open_program(path: &std::path::Path) -> io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(path)?;
    // SAFETY: F_DUPFD_CLOEXEC duplicates a descriptor we own into a new one we then own.
    let fd = unsafe {
        libc::fcntl(
            file.as_raw_fd(),
            libc::F_DUPFD_CLOEXEC,
            CHILD_CONTROL_FD + 1,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by fcntl and nothing else owns it.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// Puts the child's control socket on fd 3 without close-on-exec. Runs in the forked child.
fn move_to_control_fd(fd: i32) -> io::Result<()> {
    // SAFETY: plain descriptor syscalls on descriptors this process owns; async-signal-safe.
    unsafe {
        if fd == CHILD_CONTROL_FD {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                return Err(io::Error::last_os_error());
            }
        } else if libc::dup2(fd, CHILD_CONTROL_FD) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Marks every descriptor above the control socket close-on-exec, so nothing lockd itself
/// inherited without O_CLOEXEC (from systemd, a shell, a test runner) reaches brokerd. Marking
/// rather than closing keeps std's exec-error pipe working until the exec. Runs in the child.
fn close_other_descriptors_on_exec() {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: raw descriptor syscalls in the forked child; async-signal-safe, no allocation.
    unsafe {
        let first = (CHILD_CONTROL_FD + 1) as libc::c_uint;
        if libc::syscall(
            libc::SYS_close_range,
            first,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        ) == 0
        {
            return;
        }
        // Kernels before 5.11: walk the descriptor table up to its limit.
        let limit = libc::sysconf(libc::_SC_OPEN_MAX).clamp(64, 65_536) as i32;
        for fd in first as i32..limit {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
}

/// Sends SIGKILL to the broker's whole process group, so nothing it started survives a fence.
pub fn kill_group(pid: u32) {
    // SAFETY: kill(2) with a negative pid signals a process group; no memory is involved.
    unsafe {
        libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// Whether `pid` is gone: reaped, or a zombie (dead, waiting to be reaped).
    pub fn process_gone(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
    }

    #[tokio::test]
    async fn the_child_gets_only_its_control_socket_and_its_own_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let report = dir.path().join("report");
        let script = format!(
            "(exec ls /proc/self/fd > {0}.fds); ps -o pgid= -p $$ > {0}.pgid; echo $PPID > {0}.ppid; cat /proc/self/status | grep -E '^NoNewPrivs' > {0}.nnp; env > {0}.env",
            report.display()
        );
        let command = BrokerCommand {
            program: PathBuf::from("/bin/sh"),
            args: vec!["-c".into(), script],
            credentials: None,
            opened: None,
        };
        let mut spawned = spawn(&command).unwrap();
        let pid = spawned.child.id().unwrap();
        assert!(spawned.child.wait().await.unwrap().success());
        let read =
            |ext: &str| std::fs::read_to_string(format!("{}.{ext}", report.display())).unwrap();
        let mut fds: Vec<u32> = read("fds")
            .split_whitespace()
            .map(|f| f.parse().unwrap())
            .collect();
        fds.sort();
        // 0-2 are stdio, 3 the control socket, 4 the directory ls is listing.
        assert_eq!(fds, [0, 1, 2, 3, 4], "inherited descriptors");
        assert_eq!(read("pgid").trim(), pid.to_string(), "own process group");
        assert_eq!(read("ppid").trim(), std::process::id().to_string());
        assert!(read("nnp").contains('1'), "no_new_privs set");
        let env = read("env");
        assert!(env.contains("LOCKD_CONTROL_FD=3"), "{env}");
    }
}
