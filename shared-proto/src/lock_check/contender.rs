//! The second process of the lock self-test: forked, it tries for the lock the way another lockd
//! would, answers through a pipe with async-signal-safe calls only, and is killed and reaped
//! within bounds (or named in the report if a hung filesystem call keeps it).

use super::*;

/// Holds `lock` through `holder` while a second process tries for it through `contender`, then
/// closes ours and has a second process try again.
pub(super) fn probe_lock(
    holder: &Path,
    contender: &Path,
    lock: ProbedLock,
    limits: &Limits,
) -> Result<LockProbe, CheckError> {
    let mut probe = LockProbe {
        kind: lock,
        name: lock.name(),
        holder: parent(holder),
        contender: parent(contender),
        held: false,
        exclusive: false,
        released: false,
        error: None,
    };
    let ours = match Held::take(holder, lock) {
        Ok(Some(ours)) => ours,
        Ok(None) => return Ok(probe),
        Err(e) => {
            probe.error = Some(e);
            return Ok(probe);
        }
    };
    probe.held = true;
    match contend(contender, lock, limits)? {
        Contention::Refused => probe.exclusive = true,
        Contention::Locked => {}
        Contention::Failed(e) => {
            probe.error = Some(e);
            return Ok(probe);
        }
    }
    ours.release();
    match contend(contender, lock, limits)? {
        Contention::Locked => probe.released = true,
        Contention::Refused => {}
        Contention::Failed(e) => probe.error = Some(e),
    }
    Ok(probe)
}

/// A lock we hold on a probe file, until [`Held::release`].
enum Held {
    /// One kind, on a plain descriptor.
    Kind(File),
    /// lockd's lock, taken by lockd's own code.
    Lockd(LockFile),
}

impl Held {
    /// Takes `lock` on `path`; `Ok(None)` when refused, `Err` when a call failed.
    fn take(path: &Path, lock: ProbedLock) -> Result<Option<Held>, String> {
        let failed = |e: io::Error| format!("the filesystem refused the lock call: {e}");
        let opened = |e: io::Error| format!("cannot open {}: {e}", path.display());
        let kind = match lock {
            ProbedLock::Fcntl => LockKind::Fcntl,
            ProbedLock::Flock => LockKind::Flock,
            ProbedLock::Both => {
                let file = LockFile::open(path).map_err(opened)?;
                return Ok(file
                    .try_lock()
                    .map_err(failed)?
                    .then_some(Held::Lockd(file)));
            }
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(opened)?;
        Ok(try_lock_kind(&file, kind)
            .map_err(failed)?
            .then_some(Held::Kind(file)))
    }

    /// Closes our descriptor, which releases the lock as a dying lockd's would.
    fn release(self) {
        match self {
            Held::Kind(file) => drop(file),
            Held::Lockd(file) => drop(file),
        }
    }
}

/// The directory a probe path is in, for the report.
fn parent(path: &Path) -> PathBuf {
    path.parent().unwrap_or(path).to_owned()
}

/// What the second process saw.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Contention {
    Locked,
    Refused,
    Failed(String),
}

/// How many bytes the second process answers with: a tag and an errno.
pub(super) const ANSWER_LEN: usize = 5;

/// What the forked second process does: try for a lock on a path and answer. Runs in a child of
/// a possibly multi-threaded process, so it may make async-signal-safe calls only.
type Attempt = fn(&CStr, ProbedLock) -> [u8; ANSWER_LEN];

/// Opens `path` and tries for `lock` as another lockd would: `L` got it, `R` refused, `o` and
/// `e` with an errno for a failed open or lock call. Whatever it took is released when the
/// process exits.
///
/// It leaves the descriptors it inherited alone: closing one of the probe file on a bindfs mount
/// with lock forwarding would make the daemon drop the fcntl locks it forwarded (its flush closes
/// a duplicate of the underlying file, and POSIX locks go with any close), ours included.
fn attempt(path: &CStr, lock: ProbedLock) -> [u8; ANSWER_LEN] {
    // SAFETY: path is a valid NUL-terminated string that outlives the call.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return errno_answer(b'o');
    }
    let result = match lock {
        ProbedLock::Fcntl => try_lock_raw(fd, LockKind::Fcntl),
        ProbedLock::Flock => try_lock_raw(fd, LockKind::Flock),
        ProbedLock::Both => try_lock_both_raw(fd),
    };
    match result {
        Ok(true) => [b'L', 0, 0, 0, 0],
        Ok(false) => [b'R', 0, 0, 0, 0],
        Err(_) => errno_answer(b'e'),
    }
}

/// `tag` and errno, in the child, without allocating.
fn errno_answer(tag: u8) -> [u8; ANSWER_LEN] {
    let errno = Errno::last_raw().to_ne_bytes();
    [tag, errno[0], errno[1], errno[2], errno[3]]
}

/// Forks a process that tries for `lock` through `path` and reports. A separate process,
/// because that is what a second node is; a bounded wait, because a hung filesystem must not
/// hang the check on the second process too.
fn contend(path: &Path, lock: ProbedLock, limits: &Limits) -> Result<Contention, CheckError> {
    contend_with(path, lock, limits, attempt)
}

pub(super) fn contend_with(
    path: &Path,
    lock: ProbedLock,
    limits: &Limits,
    attempt: Attempt,
) -> Result<Contention, CheckError> {
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|e| CheckError::Filesystem {
        path: path.to_owned(),
        error: io::Error::new(io::ErrorKind::InvalidInput, e),
    })?;
    let (read_end, write_end) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| CheckError::Fork(e.into()))?;
    // SAFETY: the child makes only async-signal-safe calls (open, fcntl/flock, write, _exit) on
    // memory prepared before the fork, so forking a multi-threaded process is sound.
    match unsafe { fork() }.map_err(|e| CheckError::Fork(e.into()))? {
        ForkResult::Child => {
            let answer = attempt(&c_path, lock);
            // SAFETY: write(2) and _exit(2) are async-signal-safe; answer outlives the call. A
            // 5-byte write to a pipe is atomic: the parent reads all of it or nothing.
            unsafe {
                libc::write(write_end.as_raw_fd(), answer.as_ptr().cast(), answer.len());
                libc::_exit(0);
            }
        }
        ForkResult::Parent { child } => {
            drop(write_end);
            let deadline = Instant::now() + limits.answer;
            let heard = hear(read_end, deadline);
            let exit = match heard {
                // It answered or closed the pipe, so it is exiting: it may take the time left.
                Heard::Answer(_) | Heard::Hangup | Heard::Broken(_) => {
                    finish(child, deadline, limits)
                }
                Heard::Silence => finish(child, Instant::now(), limits),
            };
            let Exit::Ended(status) = exit else {
                return Ok(Contention::Failed(format!(
                    "a second process (pid {child}) is stuck in the kernel on {}: is the \
                     filesystem hung?",
                    path.display()
                )));
            };
            Ok(match heard {
                Heard::Answer(answer) => decode(answer, path),
                Heard::Hangup => Contention::Failed(format!(
                    "a second process trying {} ended without answering: {}",
                    path.display(),
                    describe(status)
                )),
                Heard::Broken(e) => Contention::Failed(format!(
                    "cannot hear the second process trying {}: {e}",
                    path.display()
                )),
                Heard::Silence => Contention::Failed(format!(
                    "a second process trying {} did not answer within {:?}: is the filesystem \
                     hung?",
                    path.display(),
                    limits.answer
                )),
            })
        }
    }
}

/// What came down the pipe from the second process.
#[derive(Debug)]
enum Heard {
    Answer([u8; ANSWER_LEN]),
    /// End of file without an answer: the child exited (or is exiting) without writing.
    Hangup,
    /// Nothing before the deadline.
    Silence,
    /// poll or read failed other than by EINTR.
    Broken(Errno),
}

/// Waits for the answer until `deadline`. A signal (EINTR) does not end the wait early: poll is
/// called again with the time left.
fn hear(read_end: OwnedFd, deadline: Instant) -> Heard {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        // Rounded up, so a wait with less than a millisecond left does not spin.
        let timeout =
            PollTimeout::try_from(left.as_micros().div_ceil(1000)).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(read_end.as_fd(), PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, timeout) {
            Ok(0) if left.is_zero() => return Heard::Silence,
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => break,
            Err(e) => return Heard::Broken(e),
        }
    }
    // Readable: an answer, or end of file (POLLHUP) if the child exited without one.
    let mut answer = [0u8; ANSWER_LEN];
    let mut got = 0;
    while got < ANSWER_LEN {
        match nix::unistd::read(&read_end, &mut answer[got..]) {
            Ok(0) => return Heard::Hangup,
            Ok(n) => got += n,
            Err(Errno::EINTR) => continue,
            Err(e) => return Heard::Broken(e),
        }
    }
    Heard::Answer(answer)
}

/// How the second process ended.
#[derive(Debug)]
enum Exit {
    /// Reaped; `None` when something else collected its status (ECHILD).
    Ended(Option<WaitStatus>),
    /// Still there after `stop` and [`Limits::reap`]: asleep in the kernel, left behind.
    Stuck,
}

/// Reaps `child`, letting it run until `deadline`, then sending `limits.stop` and waiting at most
/// `limits.reap` more. Never blocks beyond that: a process asleep in a hung filesystem call does
/// not die even of SIGKILL until the call returns, and the check must still end.
fn finish(child: Pid, deadline: Instant, limits: &Limits) -> Exit {
    if let Some(exit) = reap_by(child, deadline) {
        return exit;
    }
    let _ = kill(child, limits.stop);
    reap_by(child, Instant::now() + limits.reap).unwrap_or(Exit::Stuck)
}

/// Polls waitpid(WNOHANG) until the child is reaped or `deadline` passes (`None`).
fn reap_by(child: Pid, deadline: Instant) -> Option<Exit> {
    loop {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => {}
            Ok(status) => return Some(Exit::Ended(Some(status))),
            Err(_) => return Some(Exit::Ended(None)),
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// A wait status in words: "it exited with status 3", "it was killed by SIGSEGV".
fn describe(status: Option<WaitStatus>) -> String {
    match status {
        Some(WaitStatus::Exited(_, code)) => format!("it exited with status {code}"),
        Some(WaitStatus::Signaled(_, signal, _)) => format!("it was killed by {signal}"),
        Some(other) => format!("its wait status was {other:?}"),
        None => "its exit status was collected elsewhere".to_owned(),
    }
}

/// The second process's answer, as a [`Contention`].
fn decode(answer: [u8; ANSWER_LEN], path: &Path) -> Contention {
    let errno = Errno::from_raw(i32::from_ne_bytes([
        answer[1], answer[2], answer[3], answer[4],
    ]));
    match answer[0] {
        b'L' => Contention::Locked,
        b'R' => Contention::Refused,
        b'o' => Contention::Failed(format!(
            "a second process cannot open {}: {errno} (is it another path to the same directory?)",
            path.display()
        )),
        b'e' => Contention::Failed(format!(
            "the filesystem refused a second process's lock call: {errno}"
        )),
        tag => Contention::Failed(format!(
            "the second process answered {tag:#x}, which is not an answer"
        )),
    }
}
