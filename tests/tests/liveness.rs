//! DESIGN invariant 7 end to end: a brokerd that is alive but not serving (SIGSTOPped, its broker
//! core stuck) is found over the control channel and replaced like a crashed one, so clients get
//! a broker again within a bounded time instead of stalling for as long as it hangs.
//!
//! Each test prints how long it took from the hang to a broker serving again: the liveness
//! timeout (2 s by default) plus a restart.

use ha_tests::*;
use shared_proto::admin::{Role, Status};
use std::time::{Duration, Instant};
use stomp_client::{AckMode, Client, Options};
use tokio::sync::oneshot;

/// Waits until `node` serves STOMP again with a new broker under a newer epoch, replaced once
/// (one restart) because it stopped answering its liveness pings, as its log says; prints how
/// long that took since `since`, labelled `what`.
fn replaced(node: &Node, old_pid: u32, old_epoch: u64, since: Instant, what: &str) -> Status {
    let after = wait_until(&format!("{} to serve with a new broker", node.name), || {
        let status = node.status().ok()?;
        let replaced = status.role == Role::Active
            && status.broker_pid.is_some_and(|pid| pid != old_pid)
            && status.epoch.is_some_and(|epoch| epoch > old_epoch);
        (replaced && answers_stomp(node.addr())).then_some(status)
    });
    eprintln!(
        "liveness: {what} to a broker serving again: {} ms",
        since.elapsed().as_millis()
    );
    assert_eq!(after.restarts, 1, "{after:?}");
    let log = std::fs::read_to_string(&node.log).unwrap();
    assert!(
        log.contains("unresponsive for"),
        "{} does not log the unresponsive broker:\n{log}",
        node.name
    );
    after
}

/// SIGSTOPs `pid`, the active node's brokerd.
fn stop_process(pid: u32) {
    // SAFETY: kill(2) on a brokerd of this test's cluster; no memory involved.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGSTOP) }, 0);
}

#[test]
fn a_stopped_brokerd_is_replaced_and_a_stalled_client_gets_its_receipt() {
    let mut cluster = Cluster::new(3, "");
    cluster.start_all();
    let active = cluster.wait_for_one_active();
    let before = cluster.nodes[active].status().unwrap();
    let (old_pid, old_epoch) = (before.broker_pid.unwrap(), before.epoch.unwrap());

    // A failover client that sends one message, then a second one once the broker hangs.
    let url = failover_url(&cluster);
    let (connected_tx, connected) = std::sync::mpsc::channel();
    let (hung_tx, hung) = oneshot::channel::<()>();
    let client = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        runtime.block_on(async move {
            let client = Client::connect(&url, Options::default())
                .await
                .expect("connect");
            let send = |body: &'static str| {
                let client = client.clone();
                async move {
                    let receipt = client
                        .send("/queue/liveness", &[("persistent", "true")], body)
                        .await
                        .expect("send");
                    tokio::time::timeout(WAIT, receipt)
                        .await
                        .unwrap_or_else(|_| panic!("no receipt for {body:?} within {WAIT:?}"))
                        .expect("receipt");
                }
            };
            send("before the hang").await;
            connected_tx.send(()).unwrap();
            hung.await.unwrap();
            send("during the hang").await;
            let mut sub = client
                .subscribe("/queue/liveness", AckMode::Auto, &[])
                .await
                .expect("subscribe");
            let mut bodies = Vec::new();
            for _ in 0..2 {
                let message = tokio::time::timeout(WAIT, sub.next())
                    .await
                    .expect("a message within WAIT")
                    .expect("the subscription is open");
                bodies.push(String::from_utf8_lossy(&message.body).into_owned());
            }
            bodies
        })
    });
    connected.recv_timeout(WAIT).expect("the client connected");

    stop_process(old_pid);
    let hung_at = Instant::now();
    hung_tx.send(()).unwrap();
    let node = &cluster.nodes[active];
    replaced(node, old_pid, old_epoch, hung_at, "SIGSTOP of brokerd");
    assert!(
        process_gone_or_killed(old_pid),
        "the stopped brokerd lives on"
    );

    let mut bodies = client.join().expect("the client thread");
    bodies.sort();
    assert_eq!(bodies, ["before the hang", "during the hang"]);
    // Still exactly one broker in the cluster.
    assert_eq!(cluster.wait_for_one_active(), active);
}

#[test]
fn a_single_node_recovers_from_a_stopped_brokerd_by_restarting_it() {
    // The default timeout: a shorter one could see a second, legitimate restart on a loaded
    // machine, and this test asserts exactly one.
    let mut cluster = Cluster::new(1, "");
    cluster.start_all();
    let node = &cluster.nodes[0];
    let before = node.wait_for_role(Role::Active);
    let (old_pid, old_epoch) = (before.broker_pid.unwrap(), before.epoch.unwrap());
    stop_process(old_pid);
    let hung_at = Instant::now();
    let after = replaced(
        node,
        old_pid,
        old_epoch,
        hung_at,
        "SIGSTOP of brokerd (one node)",
    );
    assert!(
        process_gone_or_killed(old_pid),
        "the stopped brokerd lives on"
    );
    // The replacement keeps answering its pings: no further restart.
    throughout(Duration::from_secs(3), || {
        let status = node.status().unwrap();
        assert_eq!((status.broker_pid, status.restarts), (after.broker_pid, 1));
    });
}

/// A broker whose control reader still runs but whose broker core is stuck (brokerd's hidden
/// test hook wedges the core on SIGUSR1) answers no ping, and is replaced the same way.
#[test]
fn a_brokerd_with_a_stuck_core_is_replaced() {
    let mut cluster = Cluster::new(3, "broker_args = [\"--test-wedge-core-on-sigusr1\"]\n");
    cluster.start_all();
    let active = cluster.wait_for_one_active();
    let node = &cluster.nodes[active];
    let before = node.status().unwrap();
    let (old_pid, old_epoch) = (before.broker_pid.unwrap(), before.epoch.unwrap());
    // SAFETY: kill(2) on a brokerd of this test's cluster; no memory involved.
    assert_eq!(unsafe { libc::kill(old_pid as i32, libc::SIGUSR1) }, 0);
    let wedged_at = Instant::now();
    replaced(node, old_pid, old_epoch, wedged_at, "wedged broker core");
    wait_until("the wedged brokerd to die", || {
        process_gone(old_pid).then_some(())
    });
    assert_eq!(cluster.wait_for_one_active(), active);
}
