//! The state machine driven through its inputs with a fake keeper and broker: fences, releases
//! and ctl calls, on tokio's paused clock.

use super::*;
use std::path::PathBuf;
use std::time::Duration;

struct Harness {
    keeper: std::sync::mpsc::Receiver<Command>,
    keeper_events: mpsc::Sender<KeeperEvent>,
    calls: mpsc::Sender<Call>,
    _holder: watch::Sender<Option<Holder>>,
    shutdown: mpsc::Sender<Shutdown>,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

impl Harness {
    async fn status(&self) -> Status {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.calls.send(Call::Status(tx)).await.unwrap();
        rx.await.unwrap()
    }

    /// Lock commands sent to the keeper so far.
    fn commands(&self) -> Vec<String> {
        self.keeper.try_iter().map(|c| format!("{c:?}")).collect()
    }

    /// The status once it satisfies `ready`, within 60 s of virtual time: events and calls
    /// arrive on different channels, so a status asked for right after an event may predate
    /// it, and timers fire only as virtual time advances.
    async fn status_when(&self, ready: impl Fn(&Status) -> bool) -> Status {
        for _ in 0..60_000 {
            let status = self.status().await;
            if ready(&status) {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("status never became as expected: {:?}", self.status().await);
    }

    /// Reports the lock acquired under `epoch`; returns the pid of the broker started.
    async fn acquire(&self, epoch: u64) -> u32 {
        self.keeper_events
            .send(KeeperEvent::Acquired {
                epoch,
                started: Instant::now().into_std(),
            })
            .await
            .unwrap();
        self.status_when(|s| s.broker_pid.is_some())
            .await
            .broker_pid
            .unwrap()
    }

    /// Waits (in real time, without letting virtual time run: the broker's exit is not a
    /// timer) until the node has sent a Release.
    async fn wait_for_release(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !self.commands().iter().any(|c| c == "Release") {
            assert!(
                std::time::Instant::now() < deadline,
                "no Release within 30 s"
            );
            tokio::task::yield_now().await;
        }
    }

    /// Waits (in real time: a process exit is not a timer) until the broker is reaped.
    async fn wait_broker_gone(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while self.status().await.broker_pid.is_some() {
            assert!(
                std::time::Instant::now() < deadline,
                "broker not reaped within 30 s"
            );
            tokio::task::yield_now().await;
        }
    }
}

fn settings() -> Settings {
    Settings {
        node: "n1".into(),
        shared_dir: PathBuf::from("/nonexistent"),
        socket: PathBuf::from("/nonexistent.sock"),
        socket_mode: 0o660,
        admin_group: None,
        listen: vec!["127.0.0.1:0".into()],
        tls_args: Vec::new(),
        broker_binary: PathBuf::from("/bin/sleep"),
        broker_credentials: None,
        broker_args: Vec::new(),
        lock_poll: Duration::from_millis(20),
        keepalive: Duration::from_millis(500),
        fence_timeout: Duration::from_secs(10),
        failover_hold_off: Duration::from_secs(5),
        broker_ready_timeout: Duration::from_secs(60),
        broker_stop_timeout: Duration::from_secs(10),
        broker_liveness_timeout: Duration::from_secs(2),
        max_restarts: 3,
        restart_window: Duration::from_secs(60),
        stale_holder: Duration::from_secs(15),
        init: crate::config::Init::Never,
        lock_check: crate::config::LockCheck::Refuse,
        lock_check_other_path: None,
        scheduler_dir: PathBuf::from("/nonexistent/scheduler"),
        scheduler_allow_local: false,
        metrics_listen: None,
        console_listen: None,
    }
}

/// A node whose "broker" is `sleep 600`: a real process that never reports Ready.
fn start() -> Harness {
    let (keeper_tx, keeper) = std::sync::mpsc::channel();
    let (keeper_events_tx, keeper_events) = mpsc::channel(8);
    let (holder_tx, holder) = watch::channel(None);
    let (calls_tx, calls) = mpsc::channel(8);
    let (shutdown_tx, shutdown) = mpsc::channel(1);
    let (_, reload) = mpsc::channel(1);
    let (broker_tx, broker_rx) = mpsc::channel(8);
    let command = BrokerCommand {
        program: PathBuf::from("/bin/sleep"),
        args: vec!["600".into()],
        credentials: None,
        opened: None,
    };
    let (_, nodes) = watch::channel(Vec::new());
    // The records go nowhere: the roster's receiver is dropped, and a send to it is ignored.
    let (roster, _) = std::sync::mpsc::channel();
    let node = Node::new(
        settings(),
        command,
        keeper_tx,
        roster,
        broker_tx,
        holder.clone(),
        nodes,
    );
    let inputs = Inputs {
        keeper_events,
        holder,
        calls,
        shutdown,
        reload,
    };
    let task = tokio::spawn(node.run(inputs, broker_rx));
    Harness {
        keeper,
        keeper_events: keeper_events_tx,
        calls: calls_tx,
        _holder: holder_tx,
        shutdown: shutdown_tx,
        task,
    }
}

/// `ctl schedules` on a node whose broker does not serve: refused at once with the role,
/// naming the node that holder.json says is active, if another is.
async fn ask_broker(node: &Harness) -> (ErrorCode, String) {
    let (reply, rx) = oneshot::channel();
    let request = BrokerCall::List { limit: 10 };
    node.calls
        .send(Call::Broker { request, reply })
        .await
        .unwrap();
    match rx.await.unwrap() {
        Response::Error { code, message } => (code, message),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn broker_requests_to_a_node_not_serving_name_the_active_node() {
    let node = start();
    let (code, message) = ask_broker(&node).await;
    assert_eq!(code, ErrorCode::WrongRole);
    assert!(
        message.starts_with("n1 is passive, and holder.json names no other active node"),
        "{message}"
    );
    node._holder.send_replace(Some(Holder {
        node: "n2".into(),
        host: "h2".into(),
        pid: 7,
        epoch: 4,
        state: HolderState::Active,
        since_unix_ms: 0,
        heartbeat_unix_ms: 0,
    }));
    let (_, message) = ask_broker(&node).await;
    assert!(
        message.starts_with("n1 is passive; the active node is n2 (host h2, epoch 4, active)"),
        "{message}"
    );
}

#[tokio::test(start_paused = true)]
async fn broker_requests_to_a_starting_node_say_it_does_not_serve_yet() {
    let node = start();
    node.acquire(1).await;
    let (code, message) = ask_broker(&node).await;
    assert_eq!(code, ErrorCode::WrongRole);
    assert!(
        message.starts_with("n1 is starting, not active: its broker does not serve now"),
        "{message}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_silent_keepalive_fences_the_broker_exactly_at_fence_timeout() {
    let node = start();
    let broker = node.acquire(1).await;
    assert_eq!(node.status().await.role, Role::Starting);
    // Heartbeats keep the broker alive well past one fence_timeout in total.
    let mut last_beat = Instant::now();
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        node.keeper_events
            .send(KeeperEvent::Heartbeat {
                epoch: 1,
                started: Instant::now().into_std(),
            })
            .await
            .unwrap();
        last_beat = Instant::now();
    }
    assert_eq!(node.status().await.broker_pid, Some(broker));
    // Then the keeper hangs: no more events at all.
    let status = node.status_when(|s| s.role == Role::Passive).await;
    let silent = last_beat.elapsed();
    assert!(
        silent >= Duration::from_secs(10) && silent < Duration::from_millis(10_010),
        "fenced after {silent:?} of silence"
    );
    assert!(
        status.reason.contains("keepalive has not completed"),
        "{}",
        status.reason
    );
    assert_eq!(status.listeners, Vec::<String>::new());
    // The broker is killed, the lock released, and the node competes again once the broker
    // is known dead.
    node.wait_broker_gone().await;
    assert_eq!(node.commands(), ["Compete", "Release", "Compete"]);
    assert!(crate::sys::spawn::tests::process_gone(broker));
}

/// Regression: a claim stuck in the keeper past the fence timeout used to come back as an
/// `Acquired` after the node had released the lock, and start a broker without it.
#[tokio::test(start_paused = true)]
async fn a_stale_acquisition_after_a_fence_starts_no_broker() {
    let node = start();
    let broker = node.acquire(1).await;
    // SAFETY: kill(2) of the test's own `sleep` child.
    unsafe { libc::kill(broker as i32, libc::SIGKILL) };
    node.wait_broker_gone().await;
    assert_eq!(node.commands(), ["Compete", "Renew"]);
    // The keeper hangs in the claim; the fence timer gives the lock up.
    let status = node.status_when(|s| s.role == Role::Passive).await;
    assert!(
        status.reason.contains("keepalive has not completed"),
        "{}",
        status.reason
    );
    assert_eq!(node.commands(), ["Release", "Compete"]);
    // The stuck claim returns: too late, it must not start a broker.
    node.keeper_events
        .send(KeeperEvent::Acquired {
            epoch: 2,
            started: Instant::now().into_std(),
        })
        .await
        .unwrap();
    node.keeper_events
        .send(KeeperEvent::Released)
        .await
        .unwrap();
    node.keeper_events
        .send(KeeperEvent::Acquired {
            epoch: 3,
            started: Instant::now().into_std(),
        })
        .await
        .unwrap();
    let status = node.status_when(|s| s.broker_pid.is_some()).await;
    assert_eq!((status.role, status.epoch), (Role::Starting, Some(3)));
}

#[tokio::test(start_paused = true)]
async fn a_lost_lock_kills_the_broker_at_once() {
    let node = start();
    let broker = node.acquire(4).await;
    node.keeper_events
        .send(KeeperEvent::Lost {
            epoch: 4,
            reason: "the epoch file says 5, we hold 4".into(),
        })
        .await
        .unwrap();
    let status = node.status_when(|s| s.role != Role::Starting).await;
    assert_eq!(status.role, Role::Passive);
    assert!(status.reason.contains("we hold 4"), "{}", status.reason);
    node.wait_broker_gone().await;
    assert!(crate::sys::spawn::tests::process_gone(broker));
    assert_eq!(node.commands(), ["Compete", "Release", "Compete"]);
}

/// Asserts that the lock is released, and competed for again, only once `broker` is dead:
/// no lock command while the status still shows a broker (every command read before such a
/// status was sent while it ran), then exactly Release and Compete.
async fn assert_released_only_after_death(node: &Harness, broker: u32) {
    let mut early = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let after = loop {
        let before = node.commands();
        if node.status().await.broker_pid.is_none() {
            let mut after = before;
            after.extend(node.commands());
            break after;
        }
        early.extend(before);
        assert!(
            std::time::Instant::now() < deadline,
            "broker not reaped within 30 s"
        );
        tokio::task::yield_now().await;
    };
    assert_eq!(early, Vec::<String>::new(), "sent while the broker ran");
    assert!(crate::sys::spawn::tests::process_gone(broker));
    assert_eq!(after, ["Release", "Compete"]);
}

/// Issue 8 item 7: a keepalive that failed without proving the lock gone (here, holder.json
/// unreadable) kills the broker, and the lock is released only once the broker is dead.
#[tokio::test(start_paused = true)]
async fn a_doubtful_keepalive_failure_releases_the_lock_only_after_the_broker_died() {
    let node = start();
    let broker = node.acquire(1).await;
    assert_eq!(node.commands(), ["Compete"]);
    node.keeper_events
        .send(KeeperEvent::MustFence {
            epoch: 1,
            reason: "cannot read holder.json: No space left on device".into(),
        })
        .await
        .unwrap();
    let status = node.status_when(|s| s.role == Role::Passive).await;
    assert!(status.reason.contains("holder.json"), "{}", status.reason);
    assert_released_only_after_death(&node, broker).await;
}

/// Issue 8 item 7, the fence-timer path: a keepalive silent for fence_timeout kills the
/// broker, and the Release follows its death, never precedes it.
#[tokio::test(start_paused = true)]
async fn a_silent_keepalive_releases_the_lock_only_after_the_broker_died() {
    let node = start();
    let broker = node.acquire(1).await;
    assert_eq!(node.commands(), ["Compete"]);
    node.status_when(|s| s.role == Role::Passive).await;
    assert_released_only_after_death(&node, broker).await;
}

/// Issue 8 item 11: an acquisition reported while a broker runs fences that broker (its
/// epoch is now stale) and releases the lock only once it is dead, instead of releasing
/// under it.
#[tokio::test(start_paused = true)]
async fn an_unexpected_acquisition_fences_the_running_broker_before_releasing() {
    let node = start();
    let broker = node.acquire(1).await;
    assert_eq!(node.commands(), ["Compete"]);
    node.keeper_events
        .send(KeeperEvent::Acquired {
            epoch: 2,
            started: Instant::now().into_std(),
        })
        .await
        .unwrap();
    assert_released_only_after_death(&node, broker).await;
    let status = node.status().await;
    assert_eq!((status.role, status.broker_pid), (Role::Passive, None));
}

/// Issue 8 item 11: a SIGTERMed lockd exits only once the keeper confirmed the release
/// (holder.json marked released), and no later than fence_timeout without it.
#[tokio::test(start_paused = true)]
async fn a_graceful_shutdown_waits_for_the_release_within_fence_timeout() {
    let mut node = start();
    node.acquire(1).await;
    node.shutdown.send(Shutdown::Graceful).await.unwrap();
    // `sleep` ignores the Stop message: it is killed at broker_stop_timeout (10 s).
    tokio::time::sleep(Duration::from_secs(11)).await;
    node.wait_for_release().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        !node.task.is_finished(),
        "exited before the release was confirmed"
    );
    node.keeper_events
        .send(KeeperEvent::Released)
        .await
        .unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(1), &mut node.task)
        .await
        .expect("still running after the release was confirmed");
    assert_eq!(outcome.unwrap(), Ok(()));

    // Without a confirmation (a stalled keeper), it exits at fence_timeout all the same.
    let mut node = start();
    node.acquire(1).await;
    node.shutdown.send(Shutdown::Immediate).await.unwrap();
    node.wait_for_release().await;
    let gone = Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(60), &mut node.task)
        .await
        .expect("never exited without a release confirmation");
    assert_eq!(outcome.unwrap(), Ok(()));
    assert!(
        gone.elapsed() <= Duration::from_secs(10),
        "{:?}",
        gone.elapsed()
    );
}

/// Issue 8 item 8, at acquisition: the first fence deadline counts from the claim's first
/// heartbeat write, not from the report (which follows holder.json's I/O and the grace).
#[tokio::test(start_paused = true)]
async fn the_first_fence_deadline_counts_from_the_claims_heartbeat_write() {
    let node = start();
    let started = Instant::now() - Duration::from_secs(3);
    node.keeper_events
        .send(KeeperEvent::Acquired {
            epoch: 1,
            started: started.into_std(),
        })
        .await
        .unwrap();
    node.status_when(|s| s.broker_pid.is_some()).await;
    let status = node.status_when(|s| s.role == Role::Passive).await;
    let since_write = started.elapsed();
    assert!(
        since_write >= Duration::from_secs(10) && since_write < Duration::from_millis(10_010),
        "fenced {since_write:?} after the claim's heartbeat write started (fence_timeout 10 s)"
    );
    assert!(
        status.reason.contains("keepalive has not completed"),
        "{}",
        status.reason
    );
}

/// Issue 8 item 8: the fence deadline counts from when the confirming heartbeat write
/// started, not from when the keeper's report arrived (after holder.json's I/O).
#[tokio::test(start_paused = true)]
async fn the_fence_deadline_counts_from_the_start_of_the_heartbeat_write() {
    let node = start();
    node.acquire(1).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    // The write began 3 s ago; holder.json's I/O held the report back until now.
    let started = Instant::now() - Duration::from_secs(3);
    node.keeper_events
        .send(KeeperEvent::Heartbeat {
            epoch: 1,
            started: started.into_std(),
        })
        .await
        .unwrap();
    let status = node.status_when(|s| s.role == Role::Passive).await;
    let since_write = started.elapsed();
    assert!(
        since_write >= Duration::from_secs(10) && since_write < Duration::from_millis(10_010),
        "fenced {since_write:?} after the heartbeat write started (fence_timeout 10 s)"
    );
    assert!(
        status.reason.contains("keepalive has not completed"),
        "{}",
        status.reason
    );
}
