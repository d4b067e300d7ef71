//! The lock self-test behind `ctl check-lock` and lockd's start-up check: can two processes hold
//! the lock on this directory at once?
//!
//! It takes each kind of lock lockd uses (see [`crate::lockfile`]) on a probe file and has a
//! second process try for it, through the same path and, when given, through a second mount path
//! of the same directory (the closest a single host gets to a second node). It also checks that
//! an O_EXCL create, which claims epochs, is exclusive across the paths, and that a write through
//! one path is read through the other. The probe files live in the directory itself and are
//! removed afterwards; the real lock file is never touched, so the test is safe beside running
//! nodes.

use crate::lockfile::{try_lock_kind, try_lock_raw, LockKind};
use crate::mounts::{Filesystem, Severity, Trap};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult};
use serde::Serialize;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long the second process may take to answer before the filesystem is called hung.
const CONTENDER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a write through one path may take to show through the other (attribute caches,
/// FUSE's default is 1 s) before the paths are called incoherent.
const COHERENCE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the self-test could not run at all (as opposed to running and finding the lock unsafe).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("cannot examine {path}: {source}")]
    Filesystem { path: PathBuf, source: io::Error },
    #[error("cannot create the probe file {path}: {source}; run the check as a user who can write in that directory (lockd's user)")]
    Probe { path: PathBuf, source: io::Error },
    #[error("cannot start the second process for the lock test: {0}")]
    Fork(io::Error),
}

/// One attempt by a second process to take a lock of one kind that we hold.
#[derive(Debug, Clone, Serialize)]
pub struct LockProbe {
    pub kind: &'static str,
    /// Path through which we held the lock.
    pub holder: PathBuf,
    /// Path through which the second process tried.
    pub contender: PathBuf,
    /// The second process was refused while we held it.
    pub exclusive: bool,
    /// The second process got it once we had closed our descriptor.
    pub released: bool,
    /// Why the kind could not be tested (the filesystem refused the lock call itself, or hung).
    pub error: Option<String>,
}

/// Whether an O_EXCL create through `second` fails when `first` already created the file.
#[derive(Debug, Clone, Serialize)]
pub struct ClaimProbe {
    pub first: PathBuf,
    pub second: PathBuf,
    pub exclusive: bool,
}

/// Whether a synced write through `writer` is read back through `reader`, and how soon.
#[derive(Debug, Clone, Serialize)]
pub struct CoherenceProbe {
    pub writer: PathBuf,
    pub reader: PathBuf,
    pub coherent: bool,
    /// How long after the write the reader first saw it (0: at once; caches can delay it).
    pub lag_ms: u64,
    pub error: Option<String>,
}

/// Everything the self-test saw.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub filesystems: Vec<Filesystem>,
    pub traps: Vec<(PathBuf, Trap)>,
    pub locks: Vec<LockProbe>,
    pub claims: Vec<ClaimProbe>,
    pub coherence: Vec<CoherenceProbe>,
    /// Every reason the lock is not safe here; empty when the check passed.
    pub failures: Vec<String>,
    /// What the operator should know although the check passed.
    pub warnings: Vec<String>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// The report as an operator reads it, ending with the verdict.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for fs in &self.filesystems {
            out.push_str(&format!(
                "filesystem  {}: {}\n",
                fs.path.display(),
                fs.describe()
            ));
        }
        for probe in &self.locks {
            let route = route(&probe.holder, &probe.contender);
            let verdict = match (&probe.error, probe.exclusive, probe.released) {
                (Some(e), _, _) => format!("cannot test: {e}"),
                (None, false, _) => "NOT exclusive: a second process got it too".to_owned(),
                (None, true, true) => "exclusive, released on close".to_owned(),
                (None, true, false) => "exclusive, but NOT released on close".to_owned(),
            };
            out.push_str(&format!(
                "lock        {:<12} {route}: {verdict}\n",
                probe.kind
            ));
        }
        for claim in &self.claims {
            out.push_str(&format!(
                "epoch claim O_EXCL create {}: {}\n",
                route(&claim.first, &claim.second),
                if claim.exclusive {
                    "exclusive"
                } else {
                    "NOT exclusive"
                }
            ));
        }
        for probe in &self.coherence {
            let verdict = match (&probe.error, probe.coherent) {
                (Some(e), _) => format!("cannot test: {e}"),
                (None, true) if probe.lag_ms == 0 => "read back at once".to_owned(),
                (None, true) => format!("read back after {} ms", probe.lag_ms),
                (None, false) => format!(
                    "NOT seen within {} ms: the paths do not share data",
                    COHERENCE_TIMEOUT.as_millis()
                ),
            };
            out.push_str(&format!(
                "coherence   written through {}, read through {}: {verdict}\n",
                probe.writer.display(),
                probe.reader.display()
            ));
        }
        for (path, trap) in &self.traps {
            let label = match trap.severity {
                Severity::Note => "note",
                Severity::Warning => "WARNING",
                Severity::Fail => "FAIL",
            };
            out.push_str(&format!(
                "{label:<11} {}: {}\n",
                path.display(),
                trap.message
            ));
        }
        for warning in &self.warnings {
            out.push_str(&format!("WARNING     {warning}\n"));
        }
        if self.passed() {
            out.push_str("verdict     PASS: two processes cannot hold the lock at once through the paths tested\n");
        } else {
            for failure in &self.failures {
                out.push_str(&format!("FAIL        {failure}\n"));
            }
            out.push_str(
                "verdict     FAIL: the lock is not exclusive here; two nodes could both run a broker\n",
            );
        }
        out
    }
}

fn route(first: &Path, second: &Path) -> String {
    if first == second {
        "same path".to_owned()
    } else {
        format!("{} -> {}", first.display(), second.display())
    }
}

/// Runs the self-test on `dir`, and across `dir` and `other` when `other` is another mount path
/// of the same directory.
pub fn run(dir: &Path, other: Option<&Path>) -> Result<Report, CheckError> {
    let mut paths = vec![dir.to_owned()];
    paths.extend(other.map(Path::to_owned));
    let mut filesystems = Vec::new();
    for path in &paths {
        filesystems.push(
            Filesystem::probe(path).map_err(|source| CheckError::Filesystem {
                path: path.clone(),
                source,
            })?,
        );
    }
    let name = probe_name();
    let probe = Probe::create(dir, &name)?;
    let pairs: Vec<(&Path, &Path)> = match other {
        None => vec![(dir, dir)],
        Some(other) => vec![(dir, dir), (dir, other), (other, dir)],
    };
    let mut locks = Vec::new();
    for &(holder, contender) in &pairs {
        for kind in LockKind::ALL {
            locks.push(probe_lock(
                &holder.join(&name),
                &contender.join(&name),
                kind,
            )?);
        }
    }
    let claims = pairs
        .iter()
        .take(if other.is_some() { 2 } else { 1 })
        .map(|&(first, second)| probe_claim(first, second, &format!("{name}.claim")))
        .collect::<Result<Vec<_>, _>>()?;
    let coherence = match other {
        None => Vec::new(),
        Some(other) => vec![
            probe_coherence(&dir.join(&name), &other.join(&name)),
            probe_coherence(&other.join(&name), &dir.join(&name)),
        ],
    };
    drop(probe);
    let traps: Vec<(PathBuf, Trap)> = filesystems
        .iter()
        .flat_map(|fs| fs.traps().into_iter().map(|t| (fs.path.clone(), t)))
        .collect();
    let (failures, warnings) = judge(&locks, &claims, &coherence, &traps);
    Ok(Report {
        filesystems,
        traps,
        locks,
        claims,
        coherence,
        failures,
        warnings,
    })
}

/// What makes the lock unsafe, and what only deserves a warning. lockd's lock is exclusive on a
/// route when either kind is (it needs both), so one kind failing alone is a warning.
fn judge(
    locks: &[LockProbe],
    claims: &[ClaimProbe],
    coherence: &[CoherenceProbe],
    traps: &[(PathBuf, Trap)],
) -> (Vec<String>, Vec<String>) {
    let mut failures = Vec::new();
    let mut warnings = Vec::new();
    for probe in locks {
        if let Some(e) = &probe.error {
            failures.push(format!("{} lock: {e}", probe.kind));
        } else if probe.exclusive && !probe.released {
            failures.push(format!(
                "{} lock {}: a closed holder's lock was not released, so a dead node would block \
                 every other",
                probe.kind,
                route(&probe.holder, &probe.contender)
            ));
        }
    }
    let mut routes: Vec<(&Path, &Path)> = Vec::new();
    for probe in locks {
        let key = (probe.holder.as_path(), probe.contender.as_path());
        if !routes.contains(&key) {
            routes.push(key);
        }
    }
    for (holder, contender) in routes {
        let on_route: Vec<&LockProbe> = locks
            .iter()
            .filter(|p| p.holder == holder && p.contender == contender && p.error.is_none())
            .collect();
        let shared: Vec<&str> = on_route
            .iter()
            .filter(|p| p.exclusive)
            .map(|p| p.kind)
            .collect();
        let unshared: Vec<&str> = on_route
            .iter()
            .filter(|p| !p.exclusive)
            .map(|p| p.kind)
            .collect();
        if shared.is_empty() && !unshared.is_empty() {
            failures.push(format!(
                "{}: a second process took every kind of lock while we held it",
                route(holder, contender)
            ));
        } else if !unshared.is_empty() {
            warnings.push(format!(
                "{}: {} locks are not exclusive; lockd's lock still is, through {}",
                route(holder, contender),
                unshared.join(" and "),
                shared.join(" and ")
            ));
        }
    }
    for claim in claims.iter().filter(|c| !c.exclusive) {
        failures.push(format!(
            "O_EXCL create {} succeeded twice: two nodes could claim the same epoch",
            route(&claim.first, &claim.second)
        ));
    }
    for probe in coherence {
        match &probe.error {
            Some(e) => failures.push(format!(
                "reading through {} what was written through {}: {e}",
                probe.reader.display(),
                probe.writer.display()
            )),
            None if !probe.coherent => failures.push(format!(
                "a synced write through {} was not read through {} within {} ms",
                probe.writer.display(),
                probe.reader.display(),
                COHERENCE_TIMEOUT.as_millis()
            )),
            None if probe.lag_ms > 0 => warnings.push(format!(
                "a write through {} showed through {} only after {} ms (attribute caching): \
                 nodes read holder.json and the epoch file that late",
                probe.writer.display(),
                probe.reader.display(),
                probe.lag_ms
            )),
            None => {}
        }
    }
    for (path, trap) in traps {
        if trap.severity == Severity::Fail {
            failures.push(format!("{}: {}", path.display(), trap.message));
        }
    }
    (failures, warnings)
}

/// A name no other check, on this host or another, uses at the same time.
fn probe_name() -> String {
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(".lock-check.{}.{}.{nanos}", host.trim(), std::process::id())
}

/// The probe file, removed when dropped.
struct Probe {
    path: PathBuf,
}

impl Probe {
    fn create(dir: &Path, name: &str) -> Result<Probe, CheckError> {
        let path = dir.join(name);
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|source| CheckError::Probe {
                path: path.clone(),
                source,
            })?;
        Ok(Probe { path })
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Holds a `kind` lock through `holder` while a second process tries for it through
/// `contender`, then closes ours and has a second process try again.
fn probe_lock(holder: &Path, contender: &Path, kind: LockKind) -> Result<LockProbe, CheckError> {
    let mut probe = LockProbe {
        kind: kind.name(),
        holder: parent(holder),
        contender: parent(contender),
        exclusive: false,
        released: false,
        error: None,
    };
    let ours = match OpenOptions::new().read(true).write(true).open(holder) {
        Ok(file) => file,
        Err(e) => {
            probe.error = Some(format!("cannot open {}: {e}", holder.display()));
            return Ok(probe);
        }
    };
    match try_lock_kind(&ours, kind) {
        Ok(true) => {}
        Ok(false) => {
            probe.error = Some("refused to a single process: something else holds it".into());
            return Ok(probe);
        }
        Err(e) => {
            probe.error = Some(format!("the filesystem refused the lock call: {e}"));
            return Ok(probe);
        }
    }
    match contend(contender, kind)? {
        Contention::Refused => probe.exclusive = true,
        Contention::Locked => {}
        Contention::Failed(e) => {
            probe.error = Some(e);
            return Ok(probe);
        }
    }
    drop(ours);
    match contend(contender, kind)? {
        Contention::Locked => probe.released = true,
        Contention::Refused => {}
        Contention::Failed(e) => probe.error = Some(e),
    }
    Ok(probe)
}

/// The directory a probe path is in, for the report.
fn parent(path: &Path) -> PathBuf {
    path.parent().unwrap_or(path).to_owned()
}

/// What the second process saw.
enum Contention {
    Locked,
    Refused,
    Failed(String),
}

/// Forks a process that opens `path`, tries a `kind` lock on it, reports and exits (releasing
/// whatever it took). A separate process, because that is what a second node is; a bounded
/// wait, because a hung filesystem must not hang the check.
fn contend(path: &Path, kind: LockKind) -> Result<Contention, CheckError> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| CheckError::Fork(io::Error::other(e)))?;
    let (read_end, write_end) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| CheckError::Fork(e.into()))?;
    // SAFETY: the child calls only async-signal-safe functions (open, fcntl/flock, write,
    // _exit) on memory prepared before the fork, so forking a multi-threaded process is sound.
    match unsafe { fork() }.map_err(|e| CheckError::Fork(e.into()))? {
        ForkResult::Child => {
            // SAFETY: c_path is a valid NUL-terminated string owned by this frame.
            let fd = unsafe { libc::open(c_path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
            let answer: [u8; 5] = if fd < 0 {
                errno_answer(b'o')
            } else {
                match try_lock_raw(fd, kind) {
                    Ok(true) => [b'L', 0, 0, 0, 0],
                    Ok(false) => [b'R', 0, 0, 0, 0],
                    Err(_) => errno_answer(b'e'),
                }
            };
            // SAFETY: write(2) and _exit(2) are async-signal-safe; answer outlives the call.
            unsafe {
                libc::write(write_end.as_raw_fd(), answer.as_ptr().cast(), answer.len());
                libc::_exit(0);
            }
        }
        ForkResult::Parent { child } => {
            drop(write_end);
            let ready = {
                let mut fds = [PollFd::new(read_end.as_fd(), PollFlags::POLLIN)];
                let timeout = PollTimeout::try_from(CONTENDER_TIMEOUT).unwrap_or(PollTimeout::MAX);
                nix::poll::poll(&mut fds, timeout)
            };
            let mut answer = [0u8; 5];
            let got = match ready {
                Ok(n) if n > 0 => File::from(read_end).read_exact(&mut answer).is_ok(),
                _ => false,
            };
            if !got {
                let _ = kill(child, Signal::SIGKILL);
            }
            let _ = waitpid(child, None);
            if !got {
                return Ok(Contention::Failed(format!(
                    "a second process trying {} did not answer within {CONTENDER_TIMEOUT:?}: is the filesystem hung?",
                    path.display()
                )));
            }
            let errno = Errno::from_raw(i32::from_ne_bytes([
                answer[1], answer[2], answer[3], answer[4],
            ]));
            Ok(match answer[0] {
                b'L' => Contention::Locked,
                b'R' => Contention::Refused,
                b'o' => Contention::Failed(format!(
                    "a second process cannot open {}: {errno} (is it another path to the same directory?)",
                    path.display()
                )),
                _ => Contention::Failed(format!(
                    "the filesystem refused a second process's lock call: {errno}"
                )),
            })
        }
    }
}

/// `tag` and errno, in the child, without allocating.
fn errno_answer(tag: u8) -> [u8; 5] {
    let errno = Errno::last_raw().to_ne_bytes();
    [tag, errno[0], errno[1], errno[2], errno[3]]
}

/// Creates `name` with O_EXCL through `first`, then tries again through `second`.
fn probe_claim(first: &Path, second: &Path, name: &str) -> Result<ClaimProbe, CheckError> {
    let create = |dir: &Path| {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dir.join(name))
    };
    let claimed = Probe {
        path: first.join(name),
    };
    create(first).map_err(|source| CheckError::Probe {
        path: claimed.path.clone(),
        source,
    })?;
    let again = create(second);
    let exclusive = matches!(&again, Err(e) if e.kind() == io::ErrorKind::AlreadyExists);
    if again.is_ok() && first != second {
        // A second directory after all: remove the file we made there too.
        let _ = fs::remove_file(second.join(name));
    }
    drop(claimed);
    Ok(ClaimProbe {
        first: first.to_owned(),
        second: second.to_owned(),
        exclusive,
    })
}

/// Writes a fresh token through `writer` (synced, closed) and reads through `reader` until it
/// shows, for at most [`COHERENCE_TIMEOUT`].
fn probe_coherence(writer: &Path, reader: &Path) -> CoherenceProbe {
    let token = format!("{} {:?}\n", writer.display(), std::time::Instant::now());
    let mut probe = CoherenceProbe {
        writer: parent(writer),
        reader: parent(reader),
        coherent: false,
        lag_ms: 0,
        error: None,
    };
    let written = (|| -> io::Result<std::time::Instant> {
        let mut file = OpenOptions::new().write(true).truncate(true).open(writer)?;
        file.write_all(token.as_bytes())?;
        file.sync_all()?;
        Ok(std::time::Instant::now())
    })();
    let written = match written {
        Ok(at) => at,
        Err(e) => {
            probe.error = Some(format!("writing {}: {e}", writer.display()));
            return probe;
        }
    };
    loop {
        match fs::read_to_string(reader) {
            Ok(text) if text == token => {
                probe.coherent = true;
                probe.lag_ms = written.elapsed().as_millis() as u64;
                return probe;
            }
            Ok(_) if written.elapsed() < COHERENCE_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Ok(_) => return probe,
            Err(e) => {
                probe.error = Some(format!("reading {}: {e}", reader.display()));
                return probe;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_directory_passes_and_leaves_no_probe_behind() {
        let dir = tempfile::tempdir().unwrap();
        let report = run(dir.path(), None).unwrap();
        assert!(report.passed(), "{}", report.render());
        assert_eq!(report.locks.len(), 2);
        assert!(report.locks.iter().all(|p| p.exclusive && p.released));
        assert!(report.claims.iter().all(|c| c.exclusive));
        assert!(report.render().contains("verdict     PASS"));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_second_path_to_the_same_directory_is_tested_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let link = tempfile::tempdir().unwrap();
        let other = link.path().join("same");
        std::os::unix::fs::symlink(dir.path(), &other).unwrap();
        let report = run(dir.path(), Some(&other)).unwrap();
        assert!(report.passed(), "{}", report.render());
        assert_eq!(report.locks.len(), 6);
        assert_eq!(report.claims.len(), 2);
        assert!(report.coherence.iter().all(|c| c.coherent));
    }

    #[test]
    fn another_directory_as_the_second_path_fails() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let report = run(dir.path(), Some(elsewhere.path())).unwrap();
        assert!(!report.passed());
        let text = report.render();
        assert!(text.contains("verdict     FAIL"), "{text}");
        assert!(text.contains("cannot open"), "{text}");
    }

    #[test]
    fn an_unwritable_directory_is_a_clear_error() {
        let err = run(Path::new("/proc"), None).unwrap_err();
        assert!(
            err.to_string().contains("cannot create the probe file"),
            "{err}"
        );
    }

    #[test]
    fn one_kind_unshared_warns_and_both_unshared_fail() {
        let probe = |kind: LockKind, exclusive| LockProbe {
            kind: kind.name(),
            holder: "/a".into(),
            contender: "/b".into(),
            exclusive,
            released: true,
            error: None,
        };
        let (failures, warnings) = judge(
            &[probe(LockKind::Fcntl, false), probe(LockKind::Flock, true)],
            &[],
            &[],
            &[],
        );
        assert!(failures.is_empty(), "{failures:?}");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        let (failures, _) = judge(
            &[probe(LockKind::Fcntl, false), probe(LockKind::Flock, false)],
            &[],
            &[],
            &[],
        );
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(failures[0].contains("every kind"), "{failures:?}");
    }
}
