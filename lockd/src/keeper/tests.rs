//! The keeper against a real temporary shared directory, one thread per node.

use super::*;
use crate::shared_dir;
use shared_proto::records;

struct Running {
    commands: std::sync::mpsc::Sender<Command>,
    /// The roster thread beside it, as lockd runs one.
    roster: std::sync::mpsc::Sender<shared_proto::nodes::NodeRecord>,
    events: mpsc::Receiver<Event>,
    holder: watch::Receiver<Option<Holder>>,
}

/// A prepared shared directory, removed when the first value is dropped.
fn prepared() -> (tempfile::TempDir, Layout) {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path().join("shared"));
    layout.init(None).unwrap();
    (dir, layout)
}

fn start(layout: &Layout, node: &str) -> Running {
    start_with(layout, node, Duration::from_millis(200))
}

fn start_with(layout: &Layout, node: &str, fence_timeout: Duration) -> Running {
    start_graced(
        layout,
        node,
        fence_timeout,
        shared_proto::lock_check::TAKEOVER_GRACE,
    )
}

fn start_graced(
    layout: &Layout,
    node: &str,
    fence_timeout: Duration,
    takeover_grace: Duration,
) -> Running {
    let (commands, command_rx) = std::sync::mpsc::channel();
    let (event_tx, events) = mpsc::channel(64);
    let (holder_tx, holder) = watch::channel(None);
    let (nodes_tx, _) = watch::channel(Vec::new());
    let roster = roster::spawn(layout.clone(), Duration::from_millis(20), nodes_tx).unwrap();
    let config = KeeperConfig {
        node: node.into(),
        lock_poll: Duration::from_millis(5),
        keepalive: Duration::from_millis(20),
        fence_timeout,
        takeover_grace,
        keepalive_durations: Default::default(),
    };
    let layout = layout.clone();
    std::thread::spawn(move || run(layout, config, command_rx, event_tx, holder_tx));
    Running {
        commands,
        roster,
        events,
        holder,
    }
}

/// A keeper that polls for the lock and reports only every 20 ms keepalive.
fn competing(layout: &Layout, node: &str) -> Running {
    let running = start(layout, node);
    running.commands.send(Command::Compete).unwrap();
    running
}

/// The epoch of an `Acquired`, or None for any other event.
fn acquired(event: Event) -> Option<u64> {
    match event {
        Event::Acquired { epoch, .. } => Some(epoch),
        _ => None,
    }
}

fn next(running: &mut Running) -> Event {
    loop {
        let event = running.events.blocking_recv().expect("keeper thread ended");
        if !matches!(event, Event::Heartbeat { .. }) {
            return event;
        }
    }
}

#[test]
fn one_of_two_keepers_holds_and_the_other_takes_over_on_release() {
    let (_dir, layout) = prepared();
    let mut a = start(&layout, "a");
    a.commands.send(Command::Compete).unwrap();
    assert_eq!(acquired(next(&mut a)), Some(1));
    let mut b = start(&layout, "b");
    b.commands.send(Command::Compete).unwrap();
    a.commands
        .send(Command::SetState(HolderState::Active))
        .unwrap();
    a.commands.send(Command::Release).unwrap();
    assert_eq!(next(&mut a), Event::Released);
    assert_eq!(acquired(next(&mut b)), Some(2));
    let seen = b.holder.borrow().clone().unwrap();
    assert_eq!((seen.node.as_str(), seen.epoch), ("b", 2));
    b.commands.send(Command::Renew).unwrap();
    assert_eq!(acquired(next(&mut b)), Some(3));
}

/// Regression: a failing first keepalive used to leave the keeper idle for good.
#[test]
fn a_failed_first_keepalive_keeps_competing() {
    let (_dir, layout) = prepared();
    std::fs::create_dir(layout.holder()).unwrap();
    let mut a = start(&layout, "a");
    a.commands.send(Command::Compete).unwrap();
    // Each attempt claims an epoch, then fails to write holder.json (a directory is there).
    let deadline = Instant::now() + Duration::from_secs(30);
    while layout.read_epoch().unwrap() < 3 {
        assert!(Instant::now() < deadline, "the keeper stopped trying");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        a.events.try_recv().is_err(),
        "no acquisition while holder.json is unwritable"
    );
    std::fs::remove_dir(layout.holder()).unwrap();
    match next(&mut a) {
        Event::Acquired { epoch, .. } => assert!(epoch >= 3),
        other => panic!("expected Acquired, got {other:?}"),
    }
}

/// Issue 8 item 7: a keepalive failure that does not prove the lock gone (holder.json
/// unreadable: here a directory stands in its place) keeps the lock until the node, its
/// broker dead, releases it; only then can another node take it.
#[test]
fn a_doubtful_keepalive_failure_keeps_the_lock_until_released() {
    let (_dir, layout) = prepared();
    let mut a = competing(&layout, "a");
    assert_eq!(acquired(next(&mut a)), Some(1));
    // The keepalive may rewrite holder.json between the two steps: retry until the
    // directory stands.
    while std::fs::create_dir(layout.holder()).is_err() {
        let _ = std::fs::remove_file(layout.holder());
    }
    match next(&mut a) {
        Event::MustFence { epoch: 1, reason } => {
            assert!(reason.contains("holder.json"), "{reason}")
        }
        other => panic!("expected MustFence, got {other:?}"),
    }
    let mut b = competing(&layout, "b");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        b.events.try_recv().is_err(),
        "another node took the lock while ours was fencing its broker"
    );
    assert_eq!(
        layout.read_epoch().unwrap(),
        1,
        "another node claimed an epoch"
    );
    std::fs::remove_dir(layout.holder()).unwrap();
    a.commands.send(Command::Release).unwrap();
    assert_eq!(next(&mut a), Event::Released);
    assert_eq!(acquired(next(&mut b)), Some(2));
}

/// Issue 8 item 10: the takeover grace is the configured one (lengthened at start when the
/// lock check measured a slow visibility lag), not a fixed constant.
#[test]
fn a_takeover_waits_the_configured_grace() {
    let (_dir, layout) = prepared();
    let mut a = competing(&layout, "a");
    assert_eq!(acquired(next(&mut a)), Some(1));
    let grace = Duration::from_millis(400);
    let mut b = start_graced(&layout, "b", Duration::from_millis(200), grace);
    b.commands.send(Command::Compete).unwrap();
    a.commands.send(Command::Release).unwrap();
    assert_eq!(next(&mut a), Event::Released);
    let released = Instant::now();
    assert_eq!(acquired(next(&mut b)), Some(2));
    assert!(
        released.elapsed() >= grace,
        "took over {:?} after the release, within the {grace:?} grace",
        released.elapsed()
    );
}

/// How many heartbeats come within `wait`, or the first other event.
fn heartbeats_within(running: &mut Running, wait: Duration) -> Result<usize, Event> {
    let deadline = Instant::now() + wait;
    let mut beats = 0;
    while Instant::now() < deadline {
        match running.events.try_recv() {
            Ok(Event::Heartbeat { .. }) => beats += 1,
            Ok(other) => return Err(other),
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    Ok(beats)
}

/// Issue 8 item 9: a FIFO in nodes/ (whose open blocks until a writer comes) must not stall
/// the keepalive: the roster reads nodes/ on its own thread. It used to fence a healthy
/// active node after fence_timeout.
#[test]
fn a_fifo_in_nodes_does_not_stall_the_keepalive() {
    let (_dir, layout) = prepared();
    nix::unistd::mkfifo(
        &layout.nodes().join("zz.json"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let mut a = competing(&layout, "a");
    a.roster
        .send(shared_proto::nodes::NodeRecord {
            node: "a".into(),
            host: "test".into(),
            lockd_pid: std::process::id(),
            role: shared_proto::admin::Role::Passive,
            epoch: None,
            since_unix_ms: 0,
            reason: "started".into(),
            heartbeat_unix_ms: 0,
        })
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        assert!(Instant::now() < deadline, "never acquired the lock");
        match a.events.try_recv() {
            Ok(event) => break event,
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    assert_eq!(acquired(first), Some(1));
    // Keepalives every 20 ms: a stalled keeper would send none.
    let beats = heartbeats_within(&mut a, Duration::from_millis(500)).unwrap();
    assert!(beats >= 3, "only {beats} heartbeats in 500 ms");
}

/// Issue 8 item 8, at acquisition: the claim's first heartbeat write began before the report
/// (which follows holder.json's I/O and the takeover grace).
#[test]
fn an_acquisition_reports_when_its_first_heartbeat_write_started() {
    let (_dir, layout) = prepared();
    let asked = Instant::now();
    let mut a = competing(&layout, "a");
    match next(&mut a) {
        Event::Acquired { epoch: 1, started } => {
            let grace = shared_proto::lock_check::TAKEOVER_GRACE;
            assert!(started >= asked, "{started:?} before {asked:?}");
            assert!(
                started + grace <= Instant::now(),
                "the grace came after the report"
            );
        }
        other => panic!("expected Acquired, got {other:?}"),
    }
}

/// The heartbeat's start precedes the report: the node's fence deadline counts from it.
#[test]
fn a_heartbeat_reports_when_its_write_started() {
    let (_dir, layout) = prepared();
    let mut a = competing(&layout, "a");
    assert_eq!(acquired(next(&mut a)), Some(1));
    let asked = Instant::now();
    match a.events.blocking_recv().unwrap() {
        Event::Heartbeat { epoch: 1, started } => {
            assert!(started >= asked && started <= Instant::now(), "{started:?}")
        }
        other => panic!("expected a Heartbeat, got {other:?}"),
    }
}

#[test]
fn a_replaced_lock_file_is_noticed_by_the_keepalive() {
    let (_dir, layout) = prepared();
    let mut a = start(&layout, "a");
    a.commands.send(Command::Compete).unwrap();
    assert_eq!(acquired(next(&mut a)), Some(1));
    std::fs::remove_file(layout.lock()).unwrap();
    std::fs::write(layout.lock(), "").unwrap();
    match next(&mut a) {
        Event::Lost { epoch: 1, reason } => assert!(reason.contains("deleted"), "{reason}"),
        other => panic!("expected Lost, got {other:?}"),
    }
}

fn holder(node: &str, epoch: u64, state: HolderState) -> Holder {
    Holder {
        node: node.into(),
        host: "elsewhere".into(),
        pid: 1,
        epoch,
        state,
        since_unix_ms: 0,
        heartbeat_unix_ms: shared_proto::unix_ms(),
    }
}

/// Broken locks, simulated on a local directory: node b claims an epoch and names itself
/// holder while a holds the lock.
#[test]
fn a_claim_under_our_lock_is_recorded_for_all_and_then_only_a_released_holder_is_replaced() {
    let (_dir, layout) = prepared();
    // A long fence timeout: a live-looking holder is waited for far beyond this test.
    let mut a = start_with(&layout, "a", Duration::from_secs(60));
    a.commands.send(Command::Compete).unwrap();
    assert_eq!(acquired(next(&mut a)), Some(1));
    assert_eq!(shared_dir::claim_epoch(&layout, "b").unwrap(), 2);
    shared_dir::write_holder(&layout, "b", &holder("b", 2, HolderState::Active)).unwrap();
    match next(&mut a) {
        Event::BrokenLocks { evidence } => assert!(evidence.contains("says 2"), "{evidence}"),
        other => panic!("expected BrokenLocks, got {other:?}"),
    }
    // A newer epoch does not prove our lock gone: a keeps it until its broker is dead.
    assert!(matches!(next(&mut a), Event::MustFence { epoch: 1, .. }));
    let record = records::read_broken_locks(&layout).unwrap().unwrap();
    assert!(record.starts_with("a: "), "{record}");
    a.commands.send(Command::Release).unwrap();
    assert_eq!(next(&mut a), Event::Released);

    // The lock is free again (a released it), but b is a holder a has just seen: a must not
    // take over, however often it polls.
    a.commands.send(Command::Compete).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        a.events.try_recv().is_err(),
        "took the lock from a live-looking holder"
    );
    // A node that starts later learns it from the shared record.
    let mut c = start(&layout, "c");
    c.commands.send(Command::Compete).unwrap();
    match next(&mut c) {
        Event::BrokenLocks { evidence } => {
            assert!(evidence.contains("broken-locks"), "{evidence}")
        }
        other => panic!("expected BrokenLocks, got {other:?}"),
    }
    c.commands.send(Command::Release).unwrap();
    assert_eq!(next(&mut c), Event::Released);
    // b gives the lock back on purpose: a takes over at once, under a newer epoch.
    shared_dir::write_holder(&layout, "b", &holder("b", 2, HolderState::Released)).unwrap();
    assert_eq!(acquired(next(&mut a)), Some(3));
}

#[test]
fn a_release_marks_holder_json_released() {
    let (_dir, layout) = prepared();
    let mut a = start(&layout, "a");
    a.commands.send(Command::Compete).unwrap();
    assert_eq!(acquired(next(&mut a)), Some(1));
    a.commands.send(Command::Release).unwrap();
    assert_eq!(next(&mut a), Event::Released);
    let seen = records::read_holder(&layout).unwrap().unwrap();
    assert_eq!(
        (seen.node.as_str(), seen.epoch, seen.state),
        ("a", 1, HolderState::Released)
    );
    assert!(records::read_broken_locks(&layout).unwrap().is_none());
}

/// Regression: between another node's claim and its `holder.json`, the file still names
/// the node it superseded; a distrusting node that reads it then must not take the lock.
#[test]
fn a_claim_not_yet_in_holder_json_counts_as_a_live_holder() {
    let (_dir, layout) = prepared();
    shared_dir::record_broken_locks(&layout, "a", "seen earlier").unwrap();
    shared_dir::write_holder(&layout, "a", &holder("a", 1, HolderState::Active)).unwrap();
    assert_eq!(shared_dir::claim_epoch(&layout, "b").unwrap(), 1);
    assert_eq!(shared_dir::claim_epoch(&layout, "b").unwrap(), 2);
    let mut a = start_with(&layout, "a", Duration::from_secs(60));
    a.commands.send(Command::Compete).unwrap();
    assert!(matches!(next(&mut a), Event::BrokenLocks { .. }));
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        a.events.try_recv().is_err(),
        "took the lock while epoch 2's claimer had not yet published itself"
    );
    shared_dir::write_holder(&layout, "b", &holder("b", 2, HolderState::Released)).unwrap();
    assert_eq!(acquired(next(&mut a)), Some(3));
}
