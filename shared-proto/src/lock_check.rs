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

/// Holds `lock` through `holder` while a second process tries for it through `contender`, then
/// closes ours and has a second process try again.
fn probe_lock(
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
enum Contention {
    Locked,
    Refused,
    Failed(String),
}

/// How many bytes the second process answers with: a tag and an errno.
const ANSWER_LEN: usize = 5;

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

fn contend_with(
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

/// Creates `name` with O_EXCL through `first`, then tries again through `second`.
fn probe_claim(first: &Path, second: &Path, name: &str) -> Result<ClaimProbe, CheckError> {
    let claimed = Removal::create_new(&first.join(name))?;
    let again = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(second.join(name));
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

/// Creates `name` with O_EXCL through `writer` as lockd claims an epoch (file and directory
/// synced), and measures how soon it exists through `reader`. The reader looks first, so that a
/// cached "no such file" is in the way, as it is for a node that looked before the claim.
fn probe_created(writer: &Path, reader: &Path, name: &str, limits: &Limits) -> CoherenceProbe {
    let mut probe = CoherenceProbe {
        method: Publication::Create,
        writer: writer.to_owned(),
        reader: reader.to_owned(),
        coherent: false,
        lag_ms: 0,
        error: None,
    };
    let target = reader.join(name);
    let exists = || match fs::symlink_metadata(&target) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    };
    if let Err(e) = exists() {
        probe.error = Some(format!("looking for {}: {e}", target.display()));
        return probe;
    }
    let created = writer.join(name);
    let removal = match Removal::create_new(&created) {
        Ok(removal) => removal,
        Err(e) => {
            probe.error = Some(e.to_string());
            return probe;
        }
    };
    if let Err(e) = File::open(&created)
        .and_then(|f| f.sync_all())
        .and_then(|()| File::open(writer)?.sync_all())
    {
        probe.error = Some(format!("syncing {}: {e}", created.display()));
        return probe;
    }
    seen(&mut probe, limits.coherence, exists, &target);
    drop(removal);
    probe
}

/// Replaces `name` through `writer` as lockd replaces the epoch file (temporary file, sync,
/// rename, directory sync), twice, and measures how soon the second content is read through
/// `reader`. The reader reads the first content before the second is written, so that it is
/// cached, as it is for a broker polling the epoch.
fn probe_renamed(writer: &Path, reader: &Path, name: &str, limits: &Limits) -> CoherenceProbe {
    let mut probe = CoherenceProbe {
        method: Publication::Rename,
        writer: writer.to_owned(),
        reader: reader.to_owned(),
        coherent: false,
        lag_ms: 0,
        error: None,
    };
    let target = writer.join(name);
    let temporary = writer.join(format!("{name}.tmp"));
    let read_through = reader.join(name);
    // First content: read through the reader, so that its caches hold it.
    if let Err(e) = replace(&temporary, &target, b"first\n") {
        let _ = fs::remove_file(&temporary);
        probe.error = Some(format!("replacing {}: {e}", target.display()));
        return probe;
    }
    let removal = Removal { path: target };
    seen(
        &mut probe,
        limits.coherence,
        reads(&read_through, b"first\n"),
        &read_through,
    );
    if !probe.coherent || probe.error.is_some() {
        return probe;
    }
    // The replacement, measured: what a broker polling the epoch would see of a new claim.
    probe.coherent = false;
    if let Err(e) = replace(&temporary, &removal.path, b"second\n") {
        let _ = fs::remove_file(&temporary);
        probe.error = Some(format!("replacing {}: {e}", removal.path.display()));
        return probe;
    }
    seen(
        &mut probe,
        limits.coherence,
        reads(&read_through, b"second\n"),
        &read_through,
    );
    probe
}

/// Whether `path` reads as `content` (not there yet counts as no).
fn reads<'a>(path: &'a Path, content: &'a [u8]) -> impl FnMut() -> io::Result<bool> + 'a {
    move || match fs::read(path) {
        Ok(text) => Ok(text == content),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// lockd's atomic write: temporary file, sync, rename over `target`, sync of the directory.
fn replace(temporary: &Path, target: &Path, content: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(temporary)?;
    file.write_all(content)?;
    file.sync_all()?;
    fs::rename(temporary, target)?;
    File::open(target.parent().unwrap_or(Path::new(".")))?.sync_all()
}

/// Polls `check` until it says yes, fails, or `timeout` passes, and records that in `probe`.
fn seen(
    probe: &mut CoherenceProbe,
    timeout: Duration,
    mut check: impl FnMut() -> io::Result<bool>,
    through: &Path,
) {
    let started = Instant::now();
    loop {
        match check() {
            Ok(true) => {
                probe.coherent = true;
                probe.lag_ms = started.elapsed().as_millis() as u64;
                return;
            }
            Ok(false) if started.elapsed() < timeout => std::thread::sleep(POLL_INTERVAL),
            Ok(false) => return,
            Err(e) => {
                probe.error = Some(format!("reading {}: {e}", through.display()));
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use crate::lockfile::test_turn;

    /// Short waits, so that tests of what happens when they run out are quick.
    const QUICK: Limits = Limits {
        answer: Duration::from_millis(300),
        reap: Duration::from_millis(200),
        coherence: Duration::from_millis(200),
        stop: Signal::SIGKILL,
    };

    /// A directory and a symlink to it: two paths to one directory.
    fn two_paths() -> (tempfile::TempDir, tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let link = tempfile::tempdir().unwrap();
        let other = link.path().join("same");
        std::os::unix::fs::symlink(dir.path(), &other).unwrap();
        (dir, link, other)
    }

    #[test]
    fn a_local_directory_passes_and_leaves_no_probe_behind() {
        let _turn = test_turn();
        let dir = tempfile::tempdir().unwrap();
        let report = run(dir.path(), None).unwrap();
        assert!(report.passed(), "{}", report.render());
        assert_eq!(report.verdict(), "is exclusive");
        let kinds: Vec<ProbedLock> = report.locks.iter().map(|p| p.kind).collect();
        assert_eq!(kinds, ProbedLock::ALL);
        assert!(report
            .locks
            .iter()
            .all(|p| p.held && p.exclusive && p.released));
        assert!(report.claims.iter().all(|c| c.exclusive));
        let text = report.render();
        assert!(text.contains("verdict     PASS"), "{text}");
        assert!(
            text.contains(
                "lock        lockd's lock (fcntl+flock on one descriptor) same path: exclusive, \
                 released on close"
            ),
            "{text}"
        );
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_second_path_to_the_same_directory_is_tested_both_ways() {
        let _turn = test_turn();
        let (dir, _link, other) = two_paths();
        let report = run(dir.path(), Some(&other)).unwrap();
        assert!(report.passed(), "{}", report.render());
        assert_eq!(report.locks.len(), 9);
        let routes: Vec<(&Path, &Path)> = report
            .claims
            .iter()
            .map(|c| (c.first.as_path(), c.second.as_path()))
            .collect();
        assert_eq!(
            routes,
            [
                (dir.path(), dir.path()),
                (dir.path(), other.as_path()),
                (other.as_path(), dir.path())
            ]
        );
        assert!(report.claims.iter().all(|c| c.exclusive));
        let coherence: Vec<(Publication, &Path)> = report
            .coherence
            .iter()
            .map(|c| (c.method, c.writer.as_path()))
            .collect();
        assert_eq!(
            coherence,
            [
                (Publication::Create, dir.path()),
                (Publication::Rename, dir.path()),
                (Publication::Create, other.as_path()),
                (Publication::Rename, other.as_path())
            ]
        );
        assert!(report
            .coherence
            .iter()
            .all(|c| c.coherent && c.error.is_none()));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn another_directory_as_the_second_path_fails_without_testing_across() {
        let _turn = test_turn();
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let report = run_with(dir.path(), Some(elsewhere.path()), &QUICK).unwrap();
        assert!(!report.passed());
        assert_eq!(report.verdict(), "could not be verified");
        assert!(report.locks.iter().all(|p| p.holder == p.contender));
        assert_eq!(report.claims.len(), 1);
        let text = report.render();
        assert!(text.contains("do not share data"), "{text}");
        assert!(
            text.contains("nothing else was tested across the two paths"),
            "{text}"
        );
        assert!(text.contains("verdict     FAIL"), "{text}");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        assert_eq!(fs::read_dir(elsewhere.path()).unwrap().count(), 0);
    }

    #[test]
    fn an_unwritable_directory_says_who_needs_write_permission() {
        let _turn = test_turn();
        let err = run(Path::new("/proc"), None).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("cannot create the probe file"), "{text}");
        assert!(text.contains("needs write permission"), "{text}");
        let err = run(Path::new("/no/such/dir"), None).unwrap_err();
        assert!(err.to_string().contains("does the path exist"), "{err}");
        // The cause is in the message, not also a `source` a printed chain would repeat.
        assert!(std::error::Error::source(&err).is_none());
    }

    #[test]
    fn a_claim_name_that_exists_is_an_error_and_is_not_removed() {
        let dir = tempfile::tempdir().unwrap();
        let theirs = dir.path().join("taken");
        fs::write(&theirs, "not ours").unwrap();
        let err = probe_claim(dir.path(), dir.path(), "taken").unwrap_err();
        assert!(matches!(err, CheckError::Probe { .. }), "{err}");
        assert_eq!(fs::read_to_string(&theirs).unwrap(), "not ours");
    }

    #[test]
    fn claims_are_tested_each_way_and_cleaned_up() {
        let (dir, _link, other) = two_paths();
        for (first, second) in [(dir.path(), other.as_path()), (other.as_path(), dir.path())] {
            let claim = probe_claim(first, second, "claim").unwrap();
            assert_eq!(
                (claim.first.as_path(), claim.second.as_path()),
                (first, second)
            );
            assert!(claim.exclusive);
            assert!(!dir.path().join("claim").exists());
        }
        let elsewhere = tempfile::tempdir().unwrap();
        let claim = probe_claim(dir.path(), elsewhere.path(), "claim").unwrap();
        assert!(!claim.exclusive);
        assert_eq!(fs::read_dir(elsewhere.path()).unwrap().count(), 0);
    }

    #[test]
    fn renames_and_creates_are_measured_through_the_other_path() {
        let (dir, _link, other) = two_paths();
        let renamed = probe_renamed(dir.path(), &other, "renamed", &QUICK);
        assert!(renamed.coherent && renamed.error.is_none(), "{renamed:?}");
        assert_eq!(renamed.method, Publication::Rename);
        let created = probe_created(&other, dir.path(), "created", &QUICK);
        assert!(created.coherent && created.error.is_none(), "{created:?}");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        let elsewhere = tempfile::tempdir().unwrap();
        for probe in [
            probe_renamed(dir.path(), elsewhere.path(), "renamed", &QUICK),
            probe_created(dir.path(), elsewhere.path(), "created", &QUICK),
        ] {
            assert!(!probe.coherent && probe.error.is_none(), "{probe:?}");
        }
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    fn lock(kind: ProbedLock, exclusive: bool) -> LockProbe {
        LockProbe {
            kind,
            name: kind.name(),
            holder: "/a".into(),
            contender: "/b".into(),
            held: true,
            exclusive,
            released: true,
            error: None,
        }
    }

    fn judged(locks: Vec<LockProbe>, coherence: Vec<CoherenceProbe>) -> Report {
        let (failures, warnings) = judge(&locks, &[], &coherence, &[]);
        Report {
            filesystems: Vec::new(),
            traps: Vec::new(),
            locks,
            claims: Vec::new(),
            coherence,
            failures,
            warnings,
        }
    }

    #[test]
    fn one_kind_unshared_is_a_warning_while_lockds_lock_is_exclusive() {
        let report = judged(
            vec![
                lock(ProbedLock::Fcntl, false),
                lock(ProbedLock::Flock, true),
                lock(ProbedLock::Both, true),
            ],
            Vec::new(),
        );
        assert!(report.passed(), "{:?}", report.failures);
        assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
        assert!(report.warnings[0].contains("fcntl (OFD) locks alone"));
        // A kind that cannot be tested on its own does not fail the check either.
        let mut broken = lock(ProbedLock::Flock, false);
        broken.error = Some("ENOLCK".into());
        let report = judged(
            vec![
                lock(ProbedLock::Fcntl, true),
                broken,
                lock(ProbedLock::Both, true),
            ],
            Vec::new(),
        );
        assert!(report.passed(), "{:?}", report.failures);
        assert!(
            report.warnings[0].contains("ENOLCK"),
            "{:?}",
            report.warnings
        );
    }

    #[test]
    fn lockds_lock_shared_fails_and_names_every_kind_when_all_were_shared() {
        let report = judged(
            vec![
                lock(ProbedLock::Fcntl, false),
                lock(ProbedLock::Flock, false),
                lock(ProbedLock::Both, false),
            ],
            Vec::new(),
        );
        assert_eq!(report.failures.len(), 1, "{:?}", report.failures);
        assert!(report.failures[0].contains("took every kind of lock"));
        assert_eq!(report.verdict(), "is not exclusive");
        assert!(report
            .render()
            .contains("verdict     FAIL: the lock is not exclusive"));
        // The verdict follows lockd's lock even where a kind alone was refused.
        let report = judged(
            vec![
                lock(ProbedLock::Fcntl, true),
                lock(ProbedLock::Flock, false),
                lock(ProbedLock::Both, false),
            ],
            Vec::new(),
        );
        assert!(report.failures[0].contains("although fcntl (OFD) alone was refused"));
        assert_eq!(report.verdict(), "is not exclusive");
    }

    #[test]
    fn both_kinds_refused_on_one_descriptor_is_a_failure_of_its_own() {
        let mut both = lock(ProbedLock::Both, false);
        both.held = false;
        let report = judged(
            vec![
                lock(ProbedLock::Fcntl, true),
                lock(ProbedLock::Flock, true),
                both,
            ],
            Vec::new(),
        );
        assert_eq!(report.failures.len(), 1, "{:?}", report.failures);
        assert!(report.failures[0].contains("one descriptor"));
        assert!(report.failures[0].contains("emulated with byte-range locks"));
        assert_eq!(report.verdict(), "cannot be taken");
        let text = report.render();
        assert!(
            text.contains("one process cannot take both kinds"),
            "{text}"
        );
        assert!(
            text.contains("verdict     FAIL: lockd's lock cannot be taken"),
            "{text}"
        );
    }

    #[test]
    fn a_lock_call_that_fails_means_the_lock_could_not_be_verified() {
        let mut both = lock(ProbedLock::Both, false);
        both.error = Some("the filesystem refused the lock call: ENOLCK".into());
        let report = judged(vec![both], Vec::new());
        assert!(!report.passed());
        assert_eq!(report.verdict(), "could not be verified");
        assert!(report
            .render()
            .contains("verdict     FAIL: the lock could not be verified"));
    }

    fn visible(method: Publication, coherent: bool, lag_ms: u64) -> CoherenceProbe {
        CoherenceProbe {
            method,
            writer: "/a".into(),
            reader: "/b".into(),
            coherent,
            lag_ms,
            error: None,
        }
    }

    #[test]
    fn a_change_seen_later_than_the_takeover_grace_warns_and_one_never_seen_fails() {
        let exclusive = || vec![lock(ProbedLock::Both, true)];
        let report = judged(
            exclusive(),
            vec![
                visible(Publication::Create, true, 0),
                visible(Publication::Rename, true, 20),
            ],
        );
        assert!(report.passed() && report.warnings.is_empty(), "{report:?}");
        let report = judged(
            exclusive(),
            vec![
                visible(Publication::Create, true, 21),
                visible(Publication::Rename, true, 1000),
            ],
        );
        assert!(report.passed(), "{:?}", report.failures);
        assert_eq!(report.warnings.len(), 2, "{:?}", report.warnings);
        assert!(report.warnings[0].contains("created with O_EXCL"));
        assert!(report.warnings[1].contains("replaced by rename"));
        assert!(report.warnings[1].contains("may see the newer epoch late"));
        let report = judged(exclusive(), vec![visible(Publication::Rename, false, 0)]);
        assert!(report.failures[0].contains("did not show"), "{report:?}");
        assert_eq!(report.verdict(), "could not be verified");
    }

    /// Issue 8 item 10: a visibility lag above the takeover grace lengthens lockd's grace by
    /// that lag; one within it leaves the grace alone; a probe that never saw the change (or
    /// failed) measures nothing.
    #[test]
    fn a_lag_above_the_takeover_grace_lengthens_it() {
        let exclusive = || vec![lock(ProbedLock::Both, true)];
        let report = judged(
            exclusive(),
            vec![
                visible(Publication::Create, true, 3),
                visible(Publication::Rename, true, 120),
                visible(Publication::Rename, false, 5000),
            ],
        );
        let lag = report.max_lag().unwrap();
        assert_eq!(lag, Duration::from_millis(120));
        assert_eq!(
            takeover_grace_for(lag),
            Duration::from_millis(120) + TAKEOVER_GRACE
        );
        assert_eq!(takeover_grace_for(Duration::from_millis(3)), TAKEOVER_GRACE);
        assert_eq!(takeover_grace_for(TAKEOVER_GRACE), TAKEOVER_GRACE);
        assert_eq!(judged(exclusive(), Vec::new()).max_lag(), None);
    }

    #[test]
    fn the_json_report_has_passed_stable_lock_keys_and_trap_objects() {
        let mut report = judged(
            vec![
                lock(ProbedLock::Fcntl, true),
                lock(ProbedLock::Flock, true),
                lock(ProbedLock::Both, true),
            ],
            Vec::new(),
        );
        report.traps.push((
            "/a".into(),
            Trap {
                severity: Severity::Warning,
                message: "mind the gap".into(),
            },
        ));
        let json: serde_json::Value = serde_json::to_value(&report).unwrap();
        assert_eq!(json["passed"], true);
        assert_eq!(json["verdict"], "is exclusive");
        let keys: Vec<&str> = json["locks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["kind"].as_str().unwrap())
            .collect();
        assert_eq!(keys, ["fcntl", "flock", "both"]);
        assert_eq!(json["locks"][2]["name"], ProbedLock::Both.name());
        assert_eq!(
            json["traps"][0],
            serde_json::json!({"path": "/a", "severity": "warning", "message": "mind the gap"})
        );
    }

    /// A child that answers "locked" after `ms` milliseconds, sleeping through signals.
    fn answer_after(ms: u64) -> [u8; ANSWER_LEN] {
        let until = Instant::now() + Duration::from_millis(ms);
        while Instant::now() < until {
            std::thread::sleep(until - Instant::now());
        }
        [b'L', 0, 0, 0, 0]
    }

    extern "C" fn ignore(_: libc::c_int) {}

    #[test]
    fn signals_do_not_cut_the_wait_for_an_answer_short() {
        let _turn = test_turn();
        let action = nix::sys::signal::SigAction::new(
            nix::sys::signal::SigHandler::Handler(ignore),
            nix::sys::signal::SaFlags::empty(),
            nix::sys::signal::SigSet::empty(),
        );
        // SAFETY: the handler does nothing, so it is async-signal-safe; SIGUSR2 is used by no
        // other test in this binary.
        unsafe { nix::sys::signal::sigaction(Signal::SIGUSR2, &action) }.unwrap();
        // SAFETY: pthread_self has no preconditions.
        let waiter = unsafe { libc::pthread_self() };
        let done = Arc::new(AtomicBool::new(false));
        let interrupter = {
            let done = done.clone();
            std::thread::spawn(move || {
                while !done.load(Ordering::SeqCst) {
                    // SAFETY: the waiting thread outlives this loop: it sets `done` and joins
                    // this thread before it returns.
                    unsafe { libc::pthread_kill(waiter, libc::SIGUSR2) };
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        let limits = Limits {
            answer: Duration::from_secs(5),
            ..QUICK
        };
        let got = contend_with(Path::new("/"), ProbedLock::Both, &limits, |_, _| {
            answer_after(200)
        });
        done.store(true, Ordering::SeqCst);
        interrupter.join().unwrap();
        assert_eq!(got.unwrap(), Contention::Locked);
    }

    #[test]
    fn a_child_that_does_not_answer_is_killed_and_reaped_in_bounded_time() {
        let _turn = test_turn();
        let started = Instant::now();
        let got = contend_with(Path::new("/x"), ProbedLock::Both, &QUICK, |_, _| {
            answer_after(60_000)
        })
        .unwrap();
        let Contention::Failed(message) = got else {
            panic!("{got:?}")
        };
        assert!(message.contains("did not answer within"), "{message}");
        assert!(message.contains("is the filesystem hung?"), "{message}");
        assert!(started.elapsed() < QUICK.answer + QUICK.reap + Duration::from_secs(1));
    }

    #[test]
    fn a_child_that_exits_without_answering_is_reported_with_its_status() {
        let _turn = test_turn();
        let got = contend_with(Path::new("/x"), ProbedLock::Fcntl, &QUICK, |_, _| {
            // SAFETY: _exit(2) is async-signal-safe.
            unsafe { libc::_exit(3) }
        })
        .unwrap();
        let Contention::Failed(message) = got else {
            panic!("{got:?}")
        };
        assert!(message.contains("ended without answering"), "{message}");
        assert!(message.contains("exited with status 3"), "{message}");
    }

    #[test]
    fn a_child_that_will_not_die_is_left_behind_without_blocking() {
        let _turn = test_turn();
        // SIGURG is ignored by default: the child goes on as one asleep in a hung filesystem
        // call goes on after SIGKILL.
        let limits = Limits {
            stop: Signal::SIGURG,
            ..QUICK
        };
        let started = Instant::now();
        let got = contend_with(Path::new("/hung"), ProbedLock::Flock, &limits, |_, _| {
            answer_after(60_000)
        })
        .unwrap();
        assert!(started.elapsed() < limits.answer + limits.reap + Duration::from_secs(1));
        let Contention::Failed(message) = got else {
            panic!("{got:?}")
        };
        assert!(
            message.contains("is stuck in the kernel on /hung: is the filesystem hung?"),
            "{message}"
        );
        let pid: i32 = message
            .split("(pid ")
            .nth(1)
            .and_then(|rest| rest.split(')').next())
            .and_then(|pid| pid.parse().ok())
            .unwrap_or_else(|| panic!("no pid in {message}"));
        kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
        waitpid(Pid::from_raw(pid), None).unwrap();
    }
}
