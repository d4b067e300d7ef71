//! The self-test on this host's filesystem, its verdicts and report, and its bounds with a
//! contender that hangs.

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
