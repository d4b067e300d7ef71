//! Scheduled delivery across failovers, against real nodes (lockd, brokerd, ctl) and the
//! failover client: a delivery due while no node serves, and a periodic schedule cut by two
//! SIGKILLs of the active node and a `ctl failover`, each occurrence enqueued exactly once.
//!
//! Every wait is bounded. How late a delivery came across a failover is printed (a figure,
//! not an assertion: the README's benchmark carries it); that it never comes early, and comes
//! exactly once, is asserted.

use ha_tests::*;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use stomp_client::{AckMode, Client, Options};

/// One delivery: (message-id, redelivered, when it arrived).
type Seen = Arc<Mutex<Vec<(String, bool, Instant)>>>;

/// Subscribes through the failover URL (client-individual acks, each acked at once) on a
/// runtime of its own, recording every delivery into the returned list.
fn consume(url: String, destination: &'static str) -> (Seen, std::thread::JoinHandle<()>) {
    let seen: Seen = Arc::default();
    let record = Arc::clone(&seen);
    let (subscribed, ready) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let client = Client::connect(&url, Options::default()).await.unwrap();
            let mut sub = client
                .subscribe(destination, AckMode::ClientIndividual, &[])
                .await
                .unwrap();
            subscribed.send(()).unwrap();
            // Until the test is done with it: the test's last wait ends the process anyway.
            while let Ok(Some(message)) = tokio::time::timeout(WAIT * 4, sub.next()).await {
                let id = message.message_id().unwrap_or_default().to_owned();
                record
                    .lock()
                    .unwrap()
                    .push((id, message.redelivered(), Instant::now()));
                let _ = client.ack(&message).await;
            }
        });
    });
    ready.recv_timeout(WAIT).expect("the consumer subscribed");
    (seen, thread)
}

fn count(seen: &Seen) -> usize {
    seen.lock().unwrap().len()
}

/// Every id delivered, with how often, after the deliveries settled; a repeat must be flagged.
fn settled(seen: &Seen) -> BTreeMap<String, usize> {
    std::thread::sleep(Duration::from_secs(1));
    let seen = seen.lock().unwrap();
    let mut ids = BTreeMap::new();
    for (id, redelivered, _) in seen.iter() {
        let times = ids.entry(id.clone()).or_insert(0);
        *times += 1;
        assert!(
            *times == 1 || *redelivered,
            "{id} delivered again without redelivered:true: {seen:?}"
        );
    }
    ids
}

#[test]
fn a_delivery_due_while_the_active_node_is_dead_comes_once_from_the_next() {
    let mut cluster = Cluster::new(2, "");
    cluster.start_all();
    let active = cluster.wait_for_one_active();
    let url = failover_url(&cluster);
    let (seen, _consumer) = consume(url.clone(), "/queue/sched-kill");
    let sent = send_receipted(
        &url,
        "/queue/sched-kill",
        &[("AMQ_SCHEDULED_DELAY", "2000"), ("persistent", "true")],
    );
    std::thread::sleep(Duration::from_secs(1));
    cluster.nodes[active].kill(libc::SIGKILL);
    let next = cluster.wait_for_active_other_than(active);
    eprintln!("{} took over", cluster.nodes[next].name);
    wait_until("the scheduled delivery", || {
        (count(&seen) > 0).then_some(())
    });
    let ids = settled(&seen);
    assert_eq!(ids.len(), 1, "{ids:?}");
    let arrived = seen.lock().unwrap()[0].2;
    let after = arrived - sent;
    assert!(
        after >= Duration::from_secs(2),
        "delivered early: {after:?}"
    );
    eprintln!(
        "due 2000 ms after the SEND, arrived after {} ms ({} ms late) across a SIGKILL",
        after.as_millis(),
        after.as_millis() - 2000
    );
}

#[test]
fn a_periodic_schedule_keeps_its_count_across_two_sigkills_and_a_ctl_failover() {
    let mut cluster = Cluster::new(3, "");
    cluster.start_all();
    let mut active = cluster.wait_for_one_active();
    let url = failover_url(&cluster);
    let (seen, _consumer) = consume(url.clone(), "/queue/sched-period");
    send_receipted(
        &url,
        "/queue/sched-period",
        &[
            ("AMQ_SCHEDULED_PERIOD", "300"),
            ("AMQ_SCHEDULED_REPEAT", "10"),
            ("persistent", "true"),
        ],
    );
    for after in [2, 5] {
        wait_until(&format!("{after} deliveries"), || {
            (count(&seen) >= after).then_some(())
        });
        active = kill_active_and_restart(&mut cluster, active);
    }
    wait_until("8 deliveries", || (count(&seen) >= 8).then_some(()));
    let failover = cluster.nodes[active].ctl(&["failover", "--wait", "--timeout-ms", "30000"]);
    assert!(failover.status.success(), "{failover:?}");
    wait_until("11 deliveries", || (count(&seen) >= 11).then_some(()));
    let ids = settled(&seen);
    let job = ids
        .keys()
        .next()
        .unwrap()
        .rsplit_once(':')
        .unwrap()
        .0
        .to_owned();
    let expected: Vec<String> = (0..=10).map(|n| format!("{job}:{n}")).collect();
    let mut got: Vec<String> = ids.keys().cloned().collect();
    got.sort_by_key(|id| id.rsplit_once(':').unwrap().1.parse::<u32>().unwrap());
    assert_eq!(got, expected, "{:?}", seen.lock().unwrap());
}
