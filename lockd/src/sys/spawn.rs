//! Starting brokerd as an unprivileged child that cannot outlive lockd.
//!
//! The child gets exactly one inherited descriptor besides stdio: its end of the control
//! socketpair, as fd 3. Everything else lockd opens is O_CLOEXEC (std and tokio open descriptors
//! that way, and the lock file explicitly), so in particular the lock file never reaches brokerd.
//!
//! Between fork and exec the child may only make async-signal-safe calls, and must not allocate
//! (another thread may have held the allocator's lock at the fork). std builds argv and envp
//! before forking; our hook uses raw libc calls only (nix's `getgroups` returns a Vec, so it is
//! not used here), and reports a failure as an errno tagged with its [`Step`], which the parent
//! turns into a message.

use super::users::{self, CAP_SETPCAP};
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
    let credentials = command.credentials;
    // Worked out before the fork: the child may not read files or allocate.
    let bounding = droppable_bounding_set();
    // SAFETY: the closure runs in the child between fork and exec, where only async-signal-safe
    // calls are allowed: it makes raw syscalls (dup2, fcntl, setgroups, setgid, setuid,
    // getgroups, prctl, sigaction, getppid) on values copied in before the fork, and allocates nothing
    // (its errors are plain errnos, see `Step`).
    unsafe {
        cmd.pre_exec(move || {
            move_to_control_fd(their_fd)?;
            close_other_descriptors_on_exec();
            // Before setuid, which takes away the CAP_SETPCAP this needs.
            drop_capabilities_for_good(bounding)?;
            if let Some((uid, gid)) = credentials {
                drop_privileges(uid, gid)?;
            }
            // After setuid: a change of credentials clears both settings.
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(Step::NoNewPrivs.failed());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(Step::DeathSignal.failed());
            }
            // A reload lockd passes on (SIGHUP) must not end brokerd with the signal's default
            // action before brokerd handles it: ignored here, it stays ignored across exec
            // until brokerd installs its handler.
            if libc::signal(libc::SIGHUP, libc::SIG_IGN) == libc::SIG_ERR {
                return Err(Step::IgnoreHangup.failed());
            }
            // lockd may have died before PDEATHSIG was armed; then nothing would ever kill us.
            if libc::getppid() != parent {
                return Err(Step::ParentGone.error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(Step::describe)?;
    drop(theirs);
    Ok(Spawned {
        child,
        control: ours,
    })
}

/// The last capability of the bounding set brokerd should drop, if lockd may drop it: only with
/// CAP_SETPCAP (root has it; a lockd given only CAP_SETUID, CAP_SETGID and CAP_KILL has not,
/// and then no_new_privs alone keeps brokerd from gaining a capability at exec). Read before the
/// fork; a kernel that does not say how many it has gets every bit a capability set holds.
fn droppable_bounding_set() -> Option<libc::c_ulong> {
    let may = users::capabilities().is_ok_and(|caps| caps[0].effective & (1 << CAP_SETPCAP) != 0);
    may.then(|| {
        std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|last| last.trim().parse().ok())
            .unwrap_or(63)
    })
}

/// Issue 11's "no capabilities": brokerd runs as broker_user, so its effective and permitted
/// sets are empty; this also empties its bounding set (up to `bounding`, when lockd may) and its
/// ambient set, so nothing it executes could ever bring a capability back. Runs in the child.
fn drop_capabilities_for_good(bounding: Option<libc::c_ulong>) -> io::Result<()> {
    // An errno read without allocating: safe in the forked child.
    let errno = || io::Error::last_os_error().raw_os_error();
    // SAFETY: prctl on this (single-threaded, forked) process; async-signal-safe, no memory.
    unsafe {
        if let Some(last) = bounding {
            for cap in 0..=last {
                // EINVAL: a capability this kernel does not have (cap_last_cap was unreadable).
                if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0
                    && errno() != Some(libc::EINVAL)
                {
                    return Err(Step::BoundingSet.failed());
                }
            }
        }
        // EINVAL: a kernel before 4.3, which has no ambient capabilities to clear.
        let clear = libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong;
        if libc::prctl(libc::PR_CAP_AMBIENT, clear, 0, 0, 0) != 0 && errno() != Some(libc::EINVAL) {
            return Err(Step::AmbientCapabilities.failed());
        }
    }
    Ok(())
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

/// A step of the child's set-up between fork and exec. The child cannot allocate a message, and
/// std hands only an errno back to the parent, so a failure travels as the errno with the step
/// in its upper bits ([`Step::error`]) and the parent spells it out ([`Step::describe`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    ControlFd = 1,
    BoundingSet,
    AmbientCapabilities,
    SetGroups,
    SetGid,
    SetUid,
    /// getgroups() after setgroups(0): the child still held supplementary groups.
    KeptGroups,
    NoNewPrivs,
    DeathSignal,
    ParentGone,
    /// Ignoring SIGHUP until brokerd handles it.
    IgnoreHangup,
}

/// Where the step sits in a tagged errno; errnos are far below it.
const STEP_SHIFT: u32 = 16;

impl Step {
    const ALL: [Step; 11] = [
        Step::ControlFd,
        Step::BoundingSet,
        Step::AmbientCapabilities,
        Step::SetGroups,
        Step::SetGid,
        Step::SetUid,
        Step::KeptGroups,
        Step::NoNewPrivs,
        Step::DeathSignal,
        Step::ParentGone,
        Step::IgnoreHangup,
    ];

    /// `errno` tagged with this step. Allocates nothing: safe in the forked child.
    fn error(self, errno: i32) -> io::Error {
        io::Error::from_raw_os_error(((self as i32) << STEP_SHIFT) | (errno & 0xffff))
    }

    /// The calling thread's errno, tagged with this step. Safe in the forked child.
    fn failed(self) -> io::Error {
        let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
        self.error(errno)
    }

    /// In the parent: a spawn error spelt out, if the child's set-up tagged it.
    fn describe(err: io::Error) -> io::Error {
        let Some(code) = err.raw_os_error() else {
            return err;
        };
        let Some(step) = Step::ALL
            .into_iter()
            .find(|s| *s as i32 == code >> STEP_SHIFT)
        else {
            return err;
        };
        let cause = io::Error::from_raw_os_error(code & 0xffff);
        let what = match step {
            Step::ControlFd => format!("putting the control socket on fd 3 failed: {cause}"),
            Step::BoundingSet => format!(
                "emptying its capability bounding set (PR_CAPBSET_DROP) failed: {cause}; refusing to start a brokerd that could regain capabilities"
            ),
            Step::AmbientCapabilities => format!(
                "clearing its ambient capabilities failed: {cause}; refusing to start a brokerd that would keep them"
            ),
            Step::SetGroups => format!(
                "dropping its supplementary groups (setgroups) failed: {cause}; lockd needs root or CAP_SETGID to run brokerd as broker_user"
            ),
            Step::SetGid => format!(
                "setting broker_group (setgid) failed: {cause}; lockd needs root or CAP_SETGID"
            ),
            Step::SetUid => format!(
                "setting broker_user (setuid) failed: {cause}; lockd needs root or CAP_SETUID"
            ),
            Step::KeptGroups => "it still held supplementary groups after dropping them, so it would have run with groups it was not meant to have; refusing to start it".into(),
            Step::NoNewPrivs => format!("setting no_new_privs failed: {cause}"),
            Step::IgnoreHangup => format!("ignoring SIGHUP failed: {cause}"),
            Step::DeathSignal => format!("arming the parent-death signal failed: {cause}"),
            Step::ParentGone => "lockd exited while starting brokerd".into(),
        };
        io::Error::new(
            cause.kind(),
            format!("brokerd's set-up before exec: {what}"),
        )
    }
}

/// Puts the child's control socket on fd 3 without close-on-exec. Runs in the forked child.
fn move_to_control_fd(fd: i32) -> io::Result<()> {
    // SAFETY: plain descriptor syscalls on descriptors this process owns; async-signal-safe.
    unsafe {
        if fd == CHILD_CONTROL_FD {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                return Err(Step::ControlFd.failed());
            }
        } else if libc::dup2(fd, CHILD_CONTROL_FD) < 0 {
            return Err(Step::ControlFd.failed());
        }
    }
    Ok(())
}

/// Becomes `uid`:`gid` with no supplementary group at all, and checks that none is left. Runs in
/// the forked child.
///
/// Done here rather than with `Command::uid`/`gid`: std drops the groups only when the *real*
/// uid is 0 and ignores EPERM, so a lockd running with CAP_SETUID/CAP_SETGID under another uid
/// would hand brokerd its own supplementary groups.
fn drop_privileges(uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: credential syscalls on this (single-threaded, forked) process; async-signal-safe,
    // and the null list with length 0 is what setgroups and getgroups document for "none".
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0 {
            return Err(Step::SetGroups.failed());
        }
        if libc::setgid(gid) != 0 {
            return Err(Step::SetGid.failed());
        }
        if libc::setuid(uid) != 0 {
            return Err(Step::SetUid.failed());
        }
        if libc::getgroups(0, std::ptr::null_mut()) != 0 {
            return Err(Step::KeptGroups.error(libc::EPERM));
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

/// Sends SIGHUP to the broker process alone: brokerd reloads on it.
pub fn hang_up(pid: u32) {
    // SAFETY: kill(2) on one pid; no memory is involved.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGHUP);
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
            "(exec ls /proc/self/fd > {0}.fds); ps -o pgid= -p $$ > {0}.pgid; echo $PPID > {0}.ppid; cat /proc/self/status | grep -E '^NoNewPrivs' > {0}.nnp; cat /proc/self/status | grep -E '^SigIgn' > {0}.sigign; env > {0}.env",
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
        // SIGHUP (bit 0 of the mask) stays ignored until brokerd handles it.
        let ignored = read("sigign");
        let mask = u64::from_str_radix(ignored.trim_start_matches("SigIgn:").trim(), 16).unwrap();
        assert_eq!(mask & 1, 1, "SIGHUP ignored: {ignored}");
        let env = read("env");
        assert!(env.contains("LOCKD_CONTROL_FD=3"), "{env}");
    }

    #[test]
    fn a_failed_step_in_the_child_is_spelt_out_in_the_parent() {
        let err = Step::describe(Step::SetGroups.error(libc::EPERM));
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        let text = err.to_string();
        assert!(
            text.contains("setgroups") && text.contains("CAP_SETGID"),
            "{text}"
        );
        let err = Step::describe(Step::KeptGroups.error(libc::EPERM));
        assert!(err.to_string().contains("supplementary groups"), "{err}");
        // Errors std makes itself (e.g. exec's ENOENT) pass through unchanged.
        let err = Step::describe(io::Error::from_raw_os_error(libc::ENOENT));
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    }

    /// Issue 11: brokerd holds no capability and can never regain one. As broker_user its
    /// effective and permitted sets are empty; lockd also empties its bounding and ambient sets,
    /// so not even a program it executes (here grep, run by the shell) gets one back.
    #[tokio::test]
    #[ignore = "needs root (it starts the child as nobody); run as root with --ignored"]
    async fn the_child_holds_no_capability_and_can_never_regain_one() {
        assert_eq!(users::effective_uid(), 0, "run as root");
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        let report = dir.path().join("status");
        let script = format!(
            "grep -E '^(Cap(Eff|Prm|Bnd|Amb)|NoNewPrivs):' /proc/self/status > {}",
            report.display()
        );
        let command = BrokerCommand {
            program: PathBuf::from("/bin/sh"),
            args: vec!["-c".into(), script],
            credentials: Some((65534, 65534)),
            opened: None,
        };
        let mut spawned = spawn(&command).unwrap();
        assert!(spawned.child.wait().await.unwrap().success());
        let status = std::fs::read_to_string(&report).unwrap();
        let fields: Vec<(&str, &str)> = status
            .lines()
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name, value.trim()))
            .collect();
        assert_eq!(
            fields,
            [
                ("CapPrm", "0000000000000000"),
                ("CapEff", "0000000000000000"),
                ("CapBnd", "0000000000000000"),
                ("CapAmb", "0000000000000000"),
                ("NoNewPrivs", "1"),
            ],
            "{status}"
        );
    }

    /// Set in the copy of this test binary that plays a lockd without CAP_SETGID: where it
    /// writes what became of its brokerd.
    const AS_LOCKD_ENV: &str = "LOCKD_SPAWN_TEST_REPORT";

    /// Regression: std's `Command::uid` ignores an EPERM from setgroups, so a lockd that may
    /// change its uid but not its groups (CAP_SETUID without CAP_SETGID, broker_group its own
    /// gid) started brokerd with lockd's own supplementary groups. Now it refuses, saying why.
    #[test]
    #[ignore = "needs root (it reruns itself with changed credentials); run as root with --ignored"]
    fn a_lockd_that_cannot_drop_groups_refuses_to_start_brokerd_with_its_own() {
        if let Some(report) = std::env::var_os(AS_LOCKD_ENV) {
            return spawn_without_cap_setgid(PathBuf::from(report));
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        let report = dir.path().join("outcome");
        let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "--exact",
            "sys::spawn::tests::a_lockd_that_cannot_drop_groups_refuses_to_start_brokerd_with_its_own",
            "--ignored",
            "--nocapture",
        ])
        .env(AS_LOCKD_ENV, &report);
        // SAFETY: async-signal-safe credential calls between fork and exec; nothing allocated.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                let groups = [4242 as libc::gid_t];
                // Group nobody with a supplementary group; real uid nobody, effective root.
                if libc::setgroups(1, groups.as_ptr()) != 0
                    || libc::setresgid(65534, 65534, 65534) != 0
                    || libc::setresuid(65534, 0, 0) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "the lockd stand-in failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let outcome = std::fs::read_to_string(&report).unwrap();
        assert!(
            outcome.starts_with("refused: ")
                && outcome.contains("setgroups")
                && outcome.contains("CAP_SETGID"),
            "{outcome}"
        );
    }

    /// The lockd stand-in's part: drop CAP_SETGID from this thread (the one that forks), start a
    /// "brokerd" as nobody that would report its groups, and write down what happened.
    fn spawn_without_cap_setgid(report: PathBuf) {
        use crate::sys::users::{capabilities, set_capabilities, CAP_SETGID};
        let mut data = capabilities().unwrap();
        data[0].effective &= !(1 << CAP_SETGID);
        data[0].permitted &= !(1 << CAP_SETGID);
        set_capabilities(&data).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let outcome = runtime.block_on(async {
            let script = "grep -E '^(Uid|Gid|Groups):' /proc/self/status".to_string();
            let command = BrokerCommand {
                program: PathBuf::from("/bin/sh"),
                args: vec!["-c".into(), script],
                credentials: Some((65534, 65534)),
                opened: None,
            };
            match spawn(&command) {
                Err(e) => format!("refused: {e}"),
                Ok(spawned) => {
                    let out = spawned.child.wait_with_output().await.unwrap();
                    format!("started: {}", String::from_utf8_lossy(&out.stdout))
                }
            }
        });
        std::fs::write(report, outcome).unwrap();
    }
}
