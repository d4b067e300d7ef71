//! The lock self-test behind `ctl check-lock` and lockd's start-up check: can two processes hold
//! the lock on this directory at once?
//!
//! It takes lockd's own lock ([`LockFile::try_lock`]: both kinds on one descriptor) on a probe
//! file and has a forked second process try for it the way another lockd would, through the same
//! path and, when given, both ways across a second mount path of the same directory (the closest
//! a single host gets to a second node). The verdict rests on that lock. Each kind is also tried
//! on its own, as a diagnostic: it shows which kind the filesystem shares. Then it checks that an
//! O_EXCL create, which claims epochs, is exclusive across the paths both ways, and measures how
//! soon what lockd writes through one path shows through the other: a file replaced by rename
//! (`epoch`, `holder.json`) and a file created with O_EXCL (`epochs/N`). The probe files live in
//! the directory itself, named after the host and process, and are removed afterwards; the real
//! lock file is never touched, so the test is safe beside running nodes.
//!
//! What is bounded and what is not: the second process gets [`CONTENDER_TIMEOUT`] to answer, is
//! then killed, and is left behind (named in the report, not waited for) if it has not died
//! [`REAP_TIMEOUT`] later, as happens to a process stuck inside a hung filesystem call. The
//! check's own calls on the directory (statfs, creating, opening, reading and removing the probe
//! files) are not bounded: on a hung filesystem they block as any process's would, so `ctl
//! check-lock` hangs until interrupted, and lockd, which runs the check at start after opening
//! the lock file the same way, does not start. A check that hangs is itself the diagnosis.
//!
//! The check forks. The child only makes async-signal-safe calls, so a multi-threaded caller is
//! sound, but the child inherits every descriptor the caller has open until it exits; lockd runs
//! the check before it starts any thread or opens anything it must close.

use crate::lockfile::{try_lock_both_raw, try_lock_kind, try_lock_raw, LockFile, LockKind};
use crate::mounts::{Filesystem, Severity, Trap};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use serde::{Serialize, Serializer};
use std::ffi::{CStr, CString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod coherence;
mod contender;
#[cfg(test)]
mod tests;

use coherence::*;
use contender::*;

/// How long the second process may take to answer before the filesystem is called hung. Long,
/// because a lock call on a network filesystem waits for the server.
pub const CONTENDER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a killed second process may take to die before it is reported as stuck in the
/// kernel and left behind: SIGKILL ends a process at once unless it sleeps uninterruptibly.
pub const REAP_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a write through one path may take to show through the other (attribute caches;
/// FUSE's default is 1 s) before the paths are called incoherent.
pub const COHERENCE_TIMEOUT: Duration = Duration::from_secs(5);

/// How often brokerd's fence looks for a newer epoch claim (brokerd's `fence::POLL`). Here, beside
/// [`TAKEOVER_GRACE`], because the grace is only safe while it covers several of these polls.
pub const EPOCH_POLL: Duration = Duration::from_millis(5);

/// How long a new holder waits after claiming an epoch from another node's hands before its
/// broker opens the store: on broken locks the previous holder's broker may still run, and stops
/// writing once its [`EPOCH_POLL`] sees the claim. lockd lengthens it at start when the lock check
/// measures a slower visibility lag ([`takeover_grace_for`]).
pub const TAKEOVER_GRACE: Duration = Duration::from_millis(20);

// The grace must cover several epoch polls, or a stale broker could still be writing when the new
// one opens the store; change one constant without the other and the build fails here.
const _: () = assert!(
    TAKEOVER_GRACE.as_micros() >= 4 * EPOCH_POLL.as_micros(),
    "TAKEOVER_GRACE must cover at least four of brokerd's EPOCH_POLL periods"
);

/// A change that shows through the other path later than this earns a warning: it is the
/// takeover grace, which counts on a stale broker seeing the new epoch within it.
pub const LAG_WARNING: Duration = TAKEOVER_GRACE;

/// The takeover grace for a filesystem whose changes showed through another path `lag` late:
/// [`TAKEOVER_GRACE`] while the lag is within it, else the lag plus the grace, so a stale broker
/// still gets its several epoch polls after the claim becomes visible to it.
pub fn takeover_grace_for(lag: Duration) -> Duration {
    if lag <= TAKEOVER_GRACE {
        TAKEOVER_GRACE
    } else {
        lag + TAKEOVER_GRACE
    }
}

/// How often a change is looked for through the other path: fine enough to measure lags against
/// [`LAG_WARNING`].
const POLL_INTERVAL: Duration = Duration::from_millis(1);

/// Why the self-test could not run at all (as opposed to running and finding the lock unsafe).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// statfs or stat of a path failed: usually a mistyped path or a filesystem not mounted.
    #[error("cannot examine {path}: {error}; does the path exist, and is the filesystem mounted?")]
    Filesystem {
        /// The path as given.
        path: PathBuf,
        /// What statfs, stat or canonicalize said (in the message, so not a `source`: a
        /// printed chain would say it twice).
        error: io::Error,
    },
    /// A probe file could not be created: the check writes in the directory it tests.
    #[error(
        "cannot create the probe file {path}: {error}; the user running the check needs write \
         permission to that directory (for lockd's start-up check, lockd's user)"
    )]
    Probe {
        /// The probe file.
        path: PathBuf,
        /// What the create said (in the message, as for `Filesystem`).
        error: io::Error,
    },
    /// The second process could not be started: this process ran out of processes or
    /// descriptors.
    #[error(
        "cannot start the second process for the lock test: {0}; is a process or open-file limit \
         reached (ulimit -u, ulimit -n, systemd's TasksMax)?"
    )]
    Fork(io::Error),
}

/// Which lock a [`LockProbe`] tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbedLock {
    /// An OFD fcntl lock on its own: a diagnostic, showing whether the filesystem shares it.
    Fcntl,
    /// A flock lock on its own: a diagnostic, like [`ProbedLock::Fcntl`].
    Flock,
    /// lockd's lock: fcntl, then flock, on one descriptor ([`LockFile::try_lock`]). The verdict
    /// rests on this one.
    Both,
}

impl ProbedLock {
    /// Every lock the check tries on each route, lockd's last (after the kinds it is made of).
    pub const ALL: [ProbedLock; 3] = [ProbedLock::Fcntl, ProbedLock::Flock, ProbedLock::Both];

    /// A stable name for scripts (`ctl check-lock --json`): `fcntl`, `flock` or `both`.
    pub fn key(self) -> &'static str {
        match self {
            ProbedLock::Fcntl => LockKind::Fcntl.key(),
            ProbedLock::Flock => LockKind::Flock.key(),
            ProbedLock::Both => "both",
        }
    }

    /// How the operator knows it, in the report.
    pub fn name(self) -> &'static str {
        match self {
            ProbedLock::Fcntl => LockKind::Fcntl.name(),
            ProbedLock::Flock => LockKind::Flock.name(),
            ProbedLock::Both => "lockd's lock (fcntl+flock on one descriptor)",
        }
    }
}

/// One attempt by a second process to take a lock that we hold, then to take it once we let go.
#[derive(Debug, Clone, Serialize)]
pub struct LockProbe {
    /// Which lock (its stable key in JSON).
    pub kind: ProbedLock,
    /// How the operator knows it ([`ProbedLock::name`]).
    pub name: &'static str,
    /// The path through which we held the lock.
    pub holder: PathBuf,
    /// The path through which the second process tried.
    pub contender: PathBuf,
    /// We took the lock on a file nothing else holds. `false` means the filesystem refused a
    /// single process the lock (for lockd's lock: the two kinds on one descriptor conflict), so
    /// nothing further was tried.
    pub held: bool,
    /// The second process was refused while we held it.
    pub exclusive: bool,
    /// The second process got it once we had closed our descriptor.
    pub released: bool,
    /// Why the lock could not be tested: the filesystem failed a lock call (e.g. ENOLCK), the
    /// second process could not open the file, or it did not answer.
    pub error: Option<String>,
}

/// Whether an O_EXCL create through `second` fails when `first` already created the file, as two
/// nodes claiming the same epoch would.
#[derive(Debug, Clone, Serialize)]
pub struct ClaimProbe {
    /// The path through which the file was created first.
    pub first: PathBuf,
    /// The path through which the same name was created again.
    pub second: PathBuf,
    /// The second create failed with "file exists".
    pub exclusive: bool,
}

/// How lockd makes a change to the shared directory visible, and so what a [`CoherenceProbe`]
/// measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Publication {
    /// Write a temporary file, sync, rename it over the old one (`epoch`, `holder.json`): the
    /// reader must see the new content.
    Rename,
    /// Create a new file with O_EXCL (`epochs/N`): the reader must see that it exists.
    Create,
}

/// How soon a change made through `writer` shows through `reader`.
#[derive(Debug, Clone, Serialize)]
pub struct CoherenceProbe {
    /// How the change was made.
    pub method: Publication,
    /// The path the change was made through.
    pub writer: PathBuf,
    /// The path it was looked for through.
    pub reader: PathBuf,
    /// The reader saw it within [`COHERENCE_TIMEOUT`].
    pub coherent: bool,
    /// How long after the write the reader first saw it; over [`LAG_WARNING`] earns a warning.
    pub lag_ms: u64,
    /// Why the probe could not run (a write or read failed other than by "not there yet").
    pub error: Option<String>,
}

/// Everything the self-test saw, and what it makes of it.
#[derive(Debug, Clone)]
pub struct Report {
    /// The filesystem under each path tested, first path first.
    pub filesystems: Vec<Filesystem>,
    /// The known traps the filesystems fall into, with the path each applies to.
    pub traps: Vec<(PathBuf, Trap)>,
    /// For each route (same path; first -> second; second -> first), each kind on its own, then
    /// lockd's lock.
    pub locks: Vec<LockProbe>,
    /// O_EXCL creates: same path, then each way across the paths.
    pub claims: Vec<ClaimProbe>,
    /// Changes made through one path and read through the other, each way (none for one path).
    pub coherence: Vec<CoherenceProbe>,
    /// Every reason the lock is not safe here; empty when the check passed.
    pub failures: Vec<String>,
    /// What the operator should know although the check passed (or besides why it failed).
    pub warnings: Vec<String>,
}

impl Report {
    /// The slowest visibility lag the coherence probes measured (none with one path).
    pub fn max_lag(&self) -> Option<Duration> {
        self.coherence
            .iter()
            .filter(|p| p.coherent && p.error.is_none())
            .map(|p| Duration::from_millis(p.lag_ms))
            .max()
    }

    /// Whether lockd may rely on this directory's lock: nothing in [`Report::failures`].
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// What the check found, as words that follow "the lock on DIR" in a refusal message:
    /// - `is exclusive`: passed;
    /// - `is not exclusive`: two processes held lockd's lock at once, an O_EXCL create succeeded
    ///   twice, or a mount option makes locks local to one host;
    /// - `cannot be taken`: one process could not take both kinds on one descriptor, or a closed
    ///   holder's lock was not released, so no node could take (or take over) the lock;
    /// - `could not be verified`: a probe could not run (a lock call failed, e.g. ENOLCK; the
    ///   second process could not open the file or did not answer; the paths do not share data).
    pub fn verdict(&self) -> &'static str {
        if self.passed() {
            return "is exclusive";
        }
        let usable = |p: &&LockProbe| p.kind == ProbedLock::Both && p.error.is_none();
        let lockd_shared = self
            .locks
            .iter()
            .filter(usable)
            .any(|p| p.held && !p.exclusive);
        let claim_shared = self.claims.iter().any(|c| !c.exclusive);
        let local_only = self.traps.iter().any(|(_, t)| t.severity == Severity::Fail);
        if lockd_shared || claim_shared || local_only {
            "is not exclusive"
        } else if self
            .locks
            .iter()
            .filter(usable)
            .any(|p| !p.held || (p.exclusive && !p.released))
        {
            "cannot be taken"
        } else {
            "could not be verified"
        }
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
            let verdict = match probe {
                LockProbe { error: Some(e), .. } => format!("cannot test: {e}"),
                LockProbe { held: false, .. } if probe.kind == ProbedLock::Both => {
                    "one process cannot take both kinds on one descriptor".to_owned()
                }
                LockProbe { held: false, .. } => {
                    "refused to a single process with nothing else holding it".to_owned()
                }
                LockProbe {
                    exclusive: false, ..
                } => "NOT exclusive: a second process got it too".to_owned(),
                LockProbe { released: true, .. } => "exclusive, released on close".to_owned(),
                LockProbe { .. } => "exclusive, but NOT released on close".to_owned(),
            };
            out.push_str(&format!(
                "lock        {:<12} {route}: {verdict}\n",
                probe.name
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
                (None, true) if probe.lag_ms == 0 => "at once".to_owned(),
                (None, true) => format!("after {} ms", probe.lag_ms),
                (None, false) => format!(
                    "NOT within {} ms: the paths do not share data",
                    COHERENCE_TIMEOUT.as_millis()
                ),
            };
            out.push_str(&format!(
                "coherence   {} through {}, seen through {}: {verdict}\n",
                match probe.method {
                    Publication::Rename => "replaced by rename",
                    Publication::Create => "created with O_EXCL",
                },
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
        for failure in &self.failures {
            out.push_str(&format!("FAIL        {failure}\n"));
        }
        out.push_str(match self.verdict() {
            "is exclusive" => {
                "verdict     PASS: two processes cannot hold the lock at once through the paths \
                 tested\n"
            }
            "is not exclusive" => {
                "verdict     FAIL: the lock is not exclusive here; two nodes could both run a \
                 broker\n"
            }
            "cannot be taken" => {
                "verdict     FAIL: lockd's lock cannot be taken (or taken over) here; no node \
                 could become active\n"
            }
            _ => {
                "verdict     FAIL: the lock could not be verified here; lockd refuses such a \
                 directory unless lock_check = \"warn\"\n"
            }
        });
        out
    }
}

/// The JSON form (`ctl check-lock --json`), a stable interface for scripts: the report's fields,
/// with `passed` and `verdict` on top and each trap as `{path, severity, message}`.
impl Serialize for Report {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct TrapAt<'a> {
            path: &'a Path,
            severity: Severity,
            message: &'a str,
        }
        #[derive(Serialize)]
        struct Json<'a> {
            passed: bool,
            verdict: &'static str,
            filesystems: &'a [Filesystem],
            traps: Vec<TrapAt<'a>>,
            locks: &'a [LockProbe],
            claims: &'a [ClaimProbe],
            coherence: &'a [CoherenceProbe],
            failures: &'a [String],
            warnings: &'a [String],
        }
        Json {
            passed: self.passed(),
            verdict: self.verdict(),
            filesystems: &self.filesystems,
            traps: self
                .traps
                .iter()
                .map(|(path, trap)| TrapAt {
                    path,
                    severity: trap.severity,
                    message: &trap.message,
                })
                .collect(),
            locks: &self.locks,
            claims: &self.claims,
            coherence: &self.coherence,
            failures: &self.failures,
            warnings: &self.warnings,
        }
        .serialize(serializer)
    }
}

fn route(first: &Path, second: &Path) -> String {
    if first == second {
        "same path".to_owned()
    } else {
        format!("{} -> {}", first.display(), second.display())
    }
}

/// How long the check waits, and how it ends a second process that does not answer: the
/// constants above in production; tests shorten the waits, and stand in for a process SIGKILL
/// cannot end with one that ignores `stop`.
#[derive(Debug, Clone, Copy)]
struct Limits {
    answer: Duration,
    reap: Duration,
    coherence: Duration,
    stop: Signal,
}

const LIMITS: Limits = Limits {
    answer: CONTENDER_TIMEOUT,
    reap: REAP_TIMEOUT,
    coherence: COHERENCE_TIMEOUT,
    stop: Signal::SIGKILL,
};

/// Runs the self-test on `dir`, and across `dir` and `other` when `other` is another mount path
/// of the same directory. Blocks while the filesystem does (see the module documentation).
pub fn run(dir: &Path, other: Option<&Path>) -> Result<Report, CheckError> {
    run_with(dir, other, &LIMITS)
}

fn run_with(dir: &Path, other: Option<&Path>, limits: &Limits) -> Result<Report, CheckError> {
    let mut filesystems = vec![examine(dir)?];
    if let Some(other) = other {
        filesystems.push(examine(other)?);
    }
    let name = probe_name();
    let mut routes = vec![(dir, dir)];
    let mut coherence = Vec::new();
    // Before anything else across the paths: does the second path show the first one's files at
    // all? If not, it is not the same directory, and every probe across would only say so again.
    let shared_paths = match other {
        None => false,
        Some(other) => {
            let created = probe_created(dir, other, &format!("{name}.created.1"), limits);
            let shared = created.coherent;
            coherence.push(created);
            if shared {
                routes.extend([(dir, other), (other, dir)]);
            }
            shared
        }
    };
    let probe_file = Removal::create_new(&dir.join(&name))?;
    let mut locks = Vec::new();
    for &(holder, contender) in &routes {
        for lock in ProbedLock::ALL {
            locks.push(probe_lock(
                &holder.join(&name),
                &contender.join(&name),
                lock,
                limits,
            )?);
        }
    }
    drop(probe_file);
    // One name per claim: a path that has just seen a name exist may cache that for a while
    // (FUSE's entry timeout), and would then refuse the next create through it.
    let mut claims = vec![probe_claim(dir, dir, &format!("{name}.claim.0"))?];
    if let (Some(other), true) = (other, shared_paths) {
        claims.push(probe_claim(dir, other, &format!("{name}.claim.1"))?);
        claims.push(probe_claim(other, dir, &format!("{name}.claim.2"))?);
        coherence.push(probe_renamed(
            dir,
            other,
            &format!("{name}.renamed.1"),
            limits,
        ));
        coherence.push(probe_created(
            other,
            dir,
            &format!("{name}.created.2"),
            limits,
        ));
        coherence.push(probe_renamed(
            other,
            dir,
            &format!("{name}.renamed.2"),
            limits,
        ));
    }
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

fn examine(path: &Path) -> Result<Filesystem, CheckError> {
    Filesystem::probe(path).map_err(|error| CheckError::Filesystem {
        path: path.to_owned(),
        error,
    })
}

/// What makes the lock unsafe, and what only deserves a warning. The verdict rests on lockd's
/// lock (both kinds on one descriptor): a kind that is not exclusive on its own is a warning
/// while lockd's lock is.
fn judge(
    locks: &[LockProbe],
    claims: &[ClaimProbe],
    coherence: &[CoherenceProbe],
    traps: &[(PathBuf, Trap)],
) -> (Vec<String>, Vec<String>) {
    let mut failures = Vec::new();
    let mut warnings = Vec::new();
    let mut routes: Vec<(&Path, &Path)> = Vec::new();
    for probe in locks {
        let key = (probe.holder.as_path(), probe.contender.as_path());
        if !routes.contains(&key) {
            routes.push(key);
        }
    }
    for (holder, contender) in routes {
        let route = route(holder, contender);
        let on_route = |kind| {
            locks
                .iter()
                .find(|p| p.holder == holder && p.contender == contender && p.kind == kind)
        };
        let kinds: Vec<&LockProbe> = [ProbedLock::Fcntl, ProbedLock::Flock]
            .into_iter()
            .filter_map(on_route)
            .collect();
        let Some(lockd) = on_route(ProbedLock::Both) else {
            continue;
        };
        let tested = |p: &&&LockProbe| p.error.is_none() && p.held;
        match lockd {
            LockProbe { error: Some(e), .. } => {
                failures.push(format!("{route}: lockd's lock could not be tested: {e}"));
                continue;
            }
            LockProbe { held: false, .. } => {
                failures.push(format!(
                    "{route}: one process could not take lockd's lock (fcntl, then flock, on one \
                     descriptor) on a file nothing else holds, so lockd could never take it here. \
                     Where flock is emulated with byte-range locks (NFS, CIFS), the flock can \
                     conflict with the same descriptor's fcntl lock; use a filesystem that keeps \
                     the two kinds apart"
                ));
                continue;
            }
            LockProbe {
                exclusive: false, ..
            } => {
                let shared: Vec<&str> = kinds
                    .iter()
                    .filter(tested)
                    .filter(|p| p.exclusive)
                    .map(|p| p.name)
                    .collect();
                failures.push(if shared.is_empty() {
                    format!(
                        "{route}: a second process took every kind of lock while we held it, \
                         lockd's fcntl+flock pair included"
                    )
                } else {
                    format!(
                        "{route}: a second process took lockd's lock (fcntl+flock on one \
                         descriptor) while we held it, although {} alone was refused",
                        shared.join(" and ")
                    )
                });
                continue;
            }
            LockProbe {
                released: false, ..
            } => failures.push(format!(
                "{route}: lockd's lock was not released when its holder closed the file, so a \
                 dead node would block every other"
            )),
            LockProbe { .. } => {}
        }
        // lockd's lock is exclusive here: what each kind did on its own is only a diagnostic.
        let unshared: Vec<&str> = kinds
            .iter()
            .filter(tested)
            .filter(|p| !p.exclusive)
            .map(|p| p.name)
            .collect();
        if !unshared.is_empty() {
            warnings.push(format!(
                "{route}: {} locks alone are not exclusive; lockd's lock still is, because it \
                 needs both kinds",
                unshared.join(" and ")
            ));
        }
        for probe in &kinds {
            let trouble = match probe {
                LockProbe { error: Some(e), .. } => e.clone(),
                LockProbe { held: false, .. } => {
                    "refused to a single process with nothing else holding it".to_owned()
                }
                LockProbe {
                    exclusive: true,
                    released: false,
                    ..
                } => "not released when its holder closed the file".to_owned(),
                LockProbe { .. } => continue,
            };
            warnings.push(format!(
                "{route}: {} lock on its own: {trouble}; lockd's lock still works",
                probe.name
            ));
        }
    }
    for claim in claims.iter().filter(|c| !c.exclusive) {
        failures.push(format!(
            "O_EXCL create {} succeeded twice: two nodes could claim the same epoch",
            route(&claim.first, &claim.second)
        ));
    }
    let crossed = locks.iter().any(|p| p.holder != p.contender);
    for probe in coherence {
        let change = match probe.method {
            Publication::Rename => "a file replaced by rename",
            Publication::Create => "a file created with O_EXCL",
        };
        match &probe.error {
            Some(e) => failures.push(format!(
                "{change} through {}, read through {}: {e}",
                probe.writer.display(),
                probe.reader.display()
            )),
            None if !probe.coherent => failures.push(format!(
                "{change} through {} did not show through {} within {} ms: the paths do not \
                 share data (is {} a mount of the same directory?){}",
                probe.writer.display(),
                probe.reader.display(),
                COHERENCE_TIMEOUT.as_millis(),
                probe.reader.display(),
                if crossed {
                    ""
                } else {
                    "; nothing else was tested across the two paths"
                }
            )),
            None if probe.lag_ms > LAG_WARNING.as_millis() as u64 => warnings.push(format!(
                "{change} through {} showed through {} only after {} ms, more than lockd's {} ms \
                 takeover grace (attribute or entry caching): a stale broker on broken locks may \
                 see the newer epoch late",
                probe.writer.display(),
                probe.reader.display(),
                probe.lag_ms,
                LAG_WARNING.as_millis()
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
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        ".lock-check.{}.{}.{nanos}",
        crate::hostname(),
        std::process::id()
    )
}

/// A file this check made, removed (through the path it was made through) when dropped. Made
/// only once the file exists, so the check never removes a file it did not create.
struct Removal {
    path: PathBuf,
}

impl Removal {
    /// Creates `path` with O_EXCL and takes charge of it.
    fn create_new(path: &Path) -> Result<Removal, CheckError> {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|error| CheckError::Probe {
                path: path.to_owned(),
                error,
            })?;
        Ok(Removal {
            path: path.to_owned(),
        })
    }
}

impl Drop for Removal {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}
