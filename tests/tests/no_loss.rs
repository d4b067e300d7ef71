//! No-loss across failover: persistent messages sent with receipts through the failover client
//! (`stomp-client`, and `ctl send`/`ctl receive`) while the active node is SIGKILLed or handed
//! over with `ctl failover`, against three real nodes.
//!
//! What is checked, per the broker's promises:
//! - every receipted message is received at least once;
//! - a message is received twice only if the producer may have sent it twice (its receipt was
//!   outstanding across a reconnect, so the client resent it) or if the broker delivered it
//!   before a failover and it was not acked, in which case the later delivery carries
//!   `redelivered:true`; the same `message-id` is never delivered twice without that flag;
//! - a graceful handover (`ctl failover`) loses nothing and duplicates nothing, and the
//!   clients are told with an ERROR that the node is going passive.
//!
//! Every wait is bounded; nothing here measures speed.

use ha_tests::*;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use stomp_client::{AckMode, Client, Event, Message, Options, Stats};

/// Bound on a whole producer or consumer run.
const RUN_TIMEOUT: Duration = Duration::from_secs(180);
/// Once every receipted message arrived, the consumer goes on until it heard nothing for this
/// long, so that late duplicates are seen too (not an assertion on time).
const QUIET: Duration = Duration::from_millis(500);
/// SENDs awaiting their receipt at once.
const WINDOW: usize = 20;
/// How far past a failover point the producer may run before the test made the failover
/// happen, so that it is still producing when the node goes.
const SLACK: u64 = 5 * WINDOW as u64;

/// What the test thread and the clients share while they run.
struct Progress {
    sent: AtomicU64,
    receipted: AtomicU64,
    consumed: AtomicU64,
    /// The producer sends only messages numbered below this.
    gate: AtomicU64,
    /// The numbers the producer got a receipt for, once it finished.
    done: Mutex<Option<BTreeSet<u64>>>,
}

impl Progress {
    fn new(gate: u64) -> Arc<Progress> {
        Arc::new(Progress {
            sent: AtomicU64::new(0),
            receipted: AtomicU64::new(0),
            consumed: AtomicU64::new(0),
            gate: AtomicU64::new(gate),
            done: Mutex::new(None),
        })
    }

    fn line(&self) -> String {
        format!(
            "{} sent, {} receipted, {} consumed",
            self.sent.load(SeqCst),
            self.receipted.load(SeqCst),
            self.consumed.load(SeqCst)
        )
    }
}

/// What the producer saw.
#[derive(Default)]
struct Produced {
    sent: u64,
    receipted: BTreeSet<u64>,
    failed: Vec<(u64, String)>,
    /// Numbers whose receipt was outstanding across a reconnect: the client may have resent
    /// them, so the broker may hold two copies.
    maybe_resent: BTreeSet<u64>,
    stats: Option<Stats>,
    events: Vec<String>,
}

/// One MESSAGE the consumer got.
#[derive(Debug)]
struct Delivery {
    seq: u64,
    redelivered: bool,
    message_id: String,
}

impl Delivery {
    fn of(message: &Message) -> Delivery {
        let seq = message
            .header("seq")
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("a message without a seq header: {:?}", message.headers));
        Delivery {
            seq,
            redelivered: message.redelivered(),
            message_id: message.message_id().unwrap_or_default().to_string(),
        }
    }
}

/// What the consumer saw.
struct Consumed {
    deliveries: Vec<Delivery>,
    stats: Stats,
    events: Vec<String>,
}

fn options() -> Options {
    Options {
        receipt_window: WINDOW,
        ..Options::default()
    }
}

/// Records the client's connection events (as text) until the client is gone.
fn record_events(client: &Client) -> (Arc<Mutex<Vec<String>>>, tokio::task::JoinHandle<()>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let mut rx = client.events();
    let sink = Arc::clone(&events);
    let task = tokio::spawn(async move {
        while let Ok(event) = rx.recv().await {
            let text = match event {
                Event::Lost { address, error } => format!("lost {address}: {error}"),
                Event::Connected {
                    address,
                    reconnect,
                    resent,
                    ..
                } => format!("connected to {address} (reconnect {reconnect}, resent {resent})"),
                Event::GaveUp { error } => format!("gave up: {error}"),
            };
            sink.lock().unwrap().push(text);
        }
    });
    (events, task)
}

fn taken(events: &Mutex<Vec<String>>) -> Vec<String> {
    std::mem::take(&mut *events.lock().unwrap())
}

/// Sends `n` persistent messages numbered 0.. in a `seq` header, at most [`WINDOW`] awaiting
/// their receipt, never past `progress.gate`.
async fn produce(url: String, queue: &'static str, n: u64, progress: Arc<Progress>) -> Produced {
    let client = Client::connect(&url, options())
        .await
        .expect("the producer connects");
    let (events, recorder) = record_events(&client);
    let state = Arc::new(Mutex::new(Produced::default()));
    let mut receipts = Vec::with_capacity(n as usize);
    let run = async {
        for seq in 0..n {
            let deadline = Instant::now() + WAIT;
            while seq >= progress.gate.load(SeqCst) {
                assert!(
                    Instant::now() < deadline,
                    "the test did not let the producer go on past {seq}"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let before = client.stats().reconnects;
            let number = seq.to_string();
            let receipt = client
                .send(
                    queue,
                    &[("persistent", "true"), ("seq", &number)],
                    format!("message {seq}"),
                )
                .await
                .unwrap_or_else(|e| panic!("send {seq}: {e}"));
            progress.sent.fetch_add(1, SeqCst);
            let (client, state, progress) = (client.clone(), state.clone(), progress.clone());
            receipts.push(tokio::spawn(async move {
                let result = receipt.await;
                let after = client.stats().reconnects;
                let mut state = state.lock().unwrap();
                if after != before {
                    state.maybe_resent.insert(seq);
                }
                match result {
                    Ok(()) => {
                        state.receipted.insert(seq);
                        progress.receipted.fetch_add(1, SeqCst);
                    }
                    Err(e) => state.failed.push((seq, e.to_string())),
                }
            }));
        }
        for receipt in receipts.drain(..) {
            receipt.await.expect("a receipt task");
        }
    };
    tokio::time::timeout(RUN_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| panic!("the producer did not finish within {RUN_TIMEOUT:?}"));
    let stats = client.stats();
    tokio::time::timeout(WAIT, client.disconnect())
        .await
        .expect("the producer's DISCONNECT within WAIT")
        .expect("the producer disconnects");
    recorder.abort();
    let mut produced = std::mem::take(&mut *state.lock().unwrap());
    produced.sent = n;
    produced.stats = Some(stats);
    produced.events = taken(&events);
    *progress.done.lock().unwrap() = Some(produced.receipted.clone());
    produced
}

/// How a consumer takes its messages.
#[derive(Clone, Copy)]
struct Style {
    /// `activemq.prefetchSize`, or the broker's default.
    prefetch: Option<u32>,
    /// Time spent on each message before acking it.
    work: Duration,
}

/// Acks every message as soon as it arrives, with the broker's default prefetch.
const FAST: Style = Style {
    prefetch: None,
    work: Duration::ZERO,
};

/// Receives from `queue` (client-individual, acking every message) until the producer finished
/// and every receipted number arrived, then until [`QUIET`] passes without a message.
async fn consume(
    url: String,
    queue: &'static str,
    style: Style,
    progress: Arc<Progress>,
) -> Consumed {
    let client = Client::connect(&url, options())
        .await
        .expect("the consumer connects");
    let (events, recorder) = record_events(&client);
    let prefetch = style.prefetch.map(|p| p.to_string());
    let headers: Vec<(&str, &str)> = prefetch
        .iter()
        .map(|p| ("activemq.prefetchSize", p.as_str()))
        .collect();
    let mut sub = client
        .subscribe(queue, AckMode::ClientIndividual, &headers)
        .await
        .expect("the consumer subscribes");
    let mut deliveries = Vec::new();
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + RUN_TIMEOUT;
    while Instant::now() < deadline {
        let complete = progress
            .done
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|receipted| receipted.is_subset(&seen));
        let wait = if complete {
            QUIET
        } else {
            Duration::from_millis(200)
        };
        match tokio::time::timeout(wait, sub.next()).await {
            Ok(Some(message)) => {
                let delivery = Delivery::of(&message);
                seen.insert(delivery.seq);
                deliveries.push(delivery);
                progress.consumed.fetch_add(1, SeqCst);
                if !style.work.is_zero() {
                    tokio::time::sleep(style.work).await;
                }
                client.ack(&message).await.expect("the consumer acks");
            }
            Ok(None) => panic!("the consumer's client closed: {:?}", client.stats()),
            Err(_) if complete => break,
            Err(_) => {}
        }
    }
    let stats = client.stats();
    drop(sub);
    tokio::time::timeout(WAIT, client.disconnect())
        .await
        .expect("the consumer's DISCONNECT within WAIT")
        .expect("the consumer disconnects");
    recorder.abort();
    Consumed {
        deliveries,
        stats,
        events: taken(&events),
    }
}

/// A producer of `n` messages and a consumer, concurrently, on their own thread and runtime.
fn start_clients(
    url: &str,
    queue: &'static str,
    n: u64,
    style: Style,
    progress: &Arc<Progress>,
) -> std::thread::JoinHandle<(Produced, Consumed)> {
    let (url, progress) = (url.to_string(), Arc::clone(progress));
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        runtime.block_on(async move {
            let producer = tokio::spawn(produce(url.clone(), queue, n, progress.clone()));
            let consumer = tokio::spawn(consume(url, queue, style, progress));
            let produced = producer.await.expect("the producer task");
            let consumed = consumer.await.expect("the consumer task");
            (produced, consumed)
        })
    })
}

/// Polls `probe` every millisecond for at most [`WAIT`].
fn poll_until(what: &str, mut probe: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !probe() {
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Counts of one run, printed and checked.
#[derive(Debug, Default)]
struct Tally {
    received: usize,
    distinct: usize,
    duplicates: usize,
    redelivered_duplicates: usize,
    resent_duplicates: usize,
}

/// Checks a run against the no-loss rules (see the module doc); returns its counts.
fn check(produced: &Produced, consumed: &Consumed) -> Tally {
    let stats = produced.stats.as_ref().expect("producer stats");
    assert!(
        produced.failed.is_empty(),
        "receipts failed (the client reconnects forever, so none should): {:?}",
        &produced.failed[..produced.failed.len().min(10)]
    );
    assert_eq!(produced.receipted.len() as u64, produced.sent);
    let mut by_seq: BTreeMap<u64, Vec<&Delivery>> = BTreeMap::new();
    for delivery in &consumed.deliveries {
        by_seq.entry(delivery.seq).or_default().push(delivery);
    }
    let received: BTreeSet<u64> = by_seq.keys().copied().collect();
    let missing: Vec<u64> = produced.receipted.difference(&received).copied().collect();
    let unknown: Vec<u64> = received.difference(&produced.receipted).copied().collect();
    let mut tally = Tally {
        received: consumed.deliveries.len(),
        distinct: received.len(),
        ..Tally::default()
    };
    let mut unexplained = Vec::new();
    for (seq, deliveries) in &by_seq {
        for later in &deliveries[1..] {
            tally.duplicates += 1;
            if later.redelivered {
                tally.redelivered_duplicates += 1;
            } else if produced.maybe_resent.contains(seq) {
                tally.resent_duplicates += 1;
            } else {
                unexplained.push((*seq, deliveries.clone()));
            }
        }
    }
    let mut by_id: BTreeMap<&str, Vec<&Delivery>> = BTreeMap::new();
    for delivery in &consumed.deliveries {
        by_id
            .entry(delivery.message_id.as_str())
            .or_default()
            .push(delivery);
    }
    let same_id_unflagged: Vec<_> = by_id
        .iter()
        .filter(|(_, d)| d[1..].iter().any(|d| !d.redelivered))
        .take(10)
        .collect();
    eprintln!(
        "sent {}, receipted {}, received {} ({} distinct), duplicates {} ({} flagged redelivered, \
         {} of possibly resent messages), missing {}; producer: {} reconnects, {} resent, {} \
         receipts outstanding across a reconnect; consumer: {} reconnects",
        produced.sent,
        produced.receipted.len(),
        tally.received,
        tally.distinct,
        tally.duplicates,
        tally.redelivered_duplicates,
        tally.resent_duplicates,
        missing.len(),
        stats.reconnects,
        stats.resent,
        produced.maybe_resent.len(),
        consumed.stats.reconnects
    );
    let duplicated: Vec<(u64, Vec<(bool, &str)>)> = by_seq
        .iter()
        .filter(|(_, d)| d.len() > 1)
        .take(20)
        .map(|(seq, d)| {
            let flags = d
                .iter()
                .map(|d| (d.redelivered, d.message_id.as_str()))
                .collect();
            (*seq, flags)
        })
        .collect();
    if !duplicated.is_empty() {
        eprintln!("duplicated (seq, [(redelivered, message-id)]): {duplicated:?}");
    }
    eprintln!("producer events: {:?}", produced.events);
    eprintln!("consumer events: {:?}", consumed.events);
    assert!(
        missing.is_empty(),
        "{} receipted messages never arrived: {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    assert!(unknown.is_empty(), "messages nobody sent: {unknown:?}");
    assert!(
        unexplained.is_empty(),
        "{} duplicates neither flagged redelivered nor possibly resent by the producer: {:?}",
        unexplained.len(),
        &unexplained[..unexplained.len().min(10)]
    );
    assert!(
        same_id_unflagged.is_empty(),
        "the same message-id delivered again without redelivered:true: {same_id_unflagged:?}"
    );
    tally
}

fn three_nodes() -> (Cluster, usize) {
    let mut cluster = Cluster::new(3, "");
    cluster.start_all();
    let active = cluster.wait_for_one_active();
    (cluster, active)
}

#[test]
fn receipted_messages_survive_three_sigkills_of_the_active_node() {
    const N: u64 = 2000;
    const KILL_AT: [u64; 3] = [300, 900, 1500];
    let (mut cluster, mut active) = three_nodes();
    let url = failover_url(&cluster);
    let progress = Progress::new(KILL_AT[0] + SLACK);
    let clients = start_clients(&url, "/queue/no-loss-sigkill", N, FAST, &progress);
    for (i, &at) in KILL_AT.iter().enumerate() {
        poll_until(&format!("{at} receipts ({})", progress.line()), || {
            progress.receipted.load(SeqCst) >= at
        });
        cluster.nodes[active].kill(libc::SIGKILL);
        eprintln!(
            "SIGKILLed {} at {}",
            cluster.nodes[active].name,
            progress.line()
        );
        let gate = KILL_AT.get(i + 1).map_or(u64::MAX, |next| next + SLACK);
        progress.gate.store(gate, SeqCst);
        let next = cluster.wait_for_active_other_than(active);
        cluster.nodes[active].start();
        assert_eq!(cluster.wait_for_one_active(), next);
        eprintln!("{} took over", cluster.nodes[next].name);
        active = next;
    }
    let (produced, consumed) = clients.join().expect("the client thread");
    let tally = check(&produced, &consumed);
    let stats = produced.stats.as_ref().unwrap();
    assert!(
        stats.reconnects >= 3,
        "the producer reconnected only {} times across 3 kills",
        stats.reconnects
    );
    assert!(tally.distinct as u64 >= N);
}

// Fails today: the deliveries the consumer had not acked yet when the node went passive (at
// most its prefetch) come again, flagged redelivered, from the next node. A consumer that acks
// at once (prefetch default, no work) hits it too, in about one run in four: the messages
// dispatched just before the ERROR.
#[test]
fn a_planned_failover_loses_nothing_and_duplicates_nothing() {
    const N: u64 = 2000;
    // A consumer that works 1 ms on each message, 20 prefetched at most: at the handover it
    // holds deliveries it has not acked yet, as real consumers do. A graceful stop lets their
    // ACKs land before it says goodbye, so none of them comes again.
    const SLOW: Style = Style {
        prefetch: Some(20),
        work: Duration::from_millis(1),
    };
    const FAILOVER_AT: u64 = 700;
    let (cluster, active) = three_nodes();
    let url = failover_url(&cluster);
    let progress = Progress::new(FAILOVER_AT + SLACK);
    let clients = start_clients(&url, "/queue/no-loss-planned", N, SLOW, &progress);
    poll_until(
        &format!("{FAILOVER_AT} receipts ({})", progress.line()),
        || progress.receipted.load(SeqCst) >= FAILOVER_AT,
    );
    let mut failover = ClientProcess::spawn(
        "ctl failover --wait",
        cluster.nodes[active].ctl_command(&["failover", "--wait", "--timeout-ms", "30000"]),
    );
    eprintln!(
        "ctl failover on {} at {}",
        cluster.nodes[active].name,
        progress.line()
    );
    progress.gate.store(u64::MAX, SeqCst);
    let status = failover.finish(WAIT + Duration::from_secs(5));
    assert!(
        status.is_some_and(|s| s.success()),
        "ctl failover --wait: {status:?}\n{}",
        failover.transcript()
    );
    let next = cluster.wait_for_active_other_than(active);
    eprintln!("{} took over", cluster.nodes[next].name);
    let (produced, consumed) = clients.join().expect("the client thread");
    let tally = check(&produced, &consumed);
    assert_eq!(
        tally.duplicates, 0,
        "a graceful stop duplicated {} deliveries",
        tally.duplicates
    );
    for (who, stats, events) in [
        (
            "producer",
            produced.stats.as_ref().unwrap(),
            &produced.events,
        ),
        ("consumer", &consumed.stats, &consumed.events),
    ] {
        assert!(
            stats.reconnects >= 1,
            "the {who} did not reconnect: {stats:?}"
        );
        assert!(
            events
                .iter()
                .any(|e| e.contains("ERROR frame") && e.contains("going passive")),
            "the {who} was not told the node is going passive: {events:?}"
        );
    }
}

#[test]
fn messages_delivered_and_not_acked_before_a_sigkill_come_again_flagged_redelivered() {
    const N: u64 = 50;
    const UNACKED: usize = 10;
    const QUEUE: &str = "/queue/no-loss-unacked";
    let (mut cluster, active) = three_nodes();
    let url = failover_url(&cluster);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    // Before the kill: N receipted messages, and a consumer holding the first UNACKED of them
    // (its prefetch) without acking.
    let (client, mut sub, held) = runtime.block_on(async {
        let producer = Client::connect(&url, options()).await.expect("connect");
        for seq in 0..N {
            let number = seq.to_string();
            let receipt = producer
                .send(
                    QUEUE,
                    &[("persistent", "true"), ("seq", &number)],
                    format!("message {seq}"),
                )
                .await
                .expect("send");
            tokio::time::timeout(WAIT, receipt)
                .await
                .expect("a receipt within WAIT")
                .expect("receipted");
        }
        producer.disconnect().await.expect("disconnect");
        let client = Client::connect(&url, options()).await.expect("connect");
        let prefetch = UNACKED.to_string();
        let mut sub = client
            .subscribe(
                QUEUE,
                AckMode::ClientIndividual,
                &[("activemq.prefetchSize", &prefetch)],
            )
            .await
            .expect("subscribe");
        let mut held = Vec::new();
        for _ in 0..UNACKED {
            let message = tokio::time::timeout(WAIT, sub.next())
                .await
                .expect("a message within WAIT")
                .expect("the client is open");
            held.push(Delivery::of(&message));
        }
        (client, sub, held)
    });
    assert!(
        held.iter().all(|d| !d.redelivered),
        "first deliveries flagged redelivered: {held:?}"
    );
    // The runtime is idle here: the client notices the kill when it runs again.
    let next = kill_active_and_restart(&mut cluster, active);
    eprintln!(
        "SIGKILLed {}; {} took over",
        cluster.nodes[active].name, cluster.nodes[next].name
    );
    let (after, stats) = runtime.block_on(async {
        let mut after: Vec<Delivery> = Vec::new();
        let deadline = Instant::now() + RUN_TIMEOUT;
        let mut quiet = false;
        while Instant::now() < deadline {
            let seen: BTreeSet<u64> = after.iter().map(|d| d.seq).collect();
            let complete = (0..N).all(|s| seen.contains(&s));
            let wait = if complete { QUIET } else { WAIT };
            match tokio::time::timeout(wait, sub.next()).await {
                Ok(Some(message)) => {
                    after.push(Delivery::of(&message));
                    client.ack(&message).await.expect("ack");
                }
                Ok(None) => panic!("the client closed: {:?}", client.stats()),
                Err(_) => {
                    quiet = true;
                    break;
                }
            }
        }
        assert!(quiet, "messages kept coming for {RUN_TIMEOUT:?}");
        let stats = client.stats();
        drop(sub);
        tokio::time::timeout(WAIT, client.disconnect())
            .await
            .expect("DISCONNECT within WAIT")
            .expect("disconnect");
        (after, stats)
    });
    let mut count: BTreeMap<u64, Vec<&Delivery>> = BTreeMap::new();
    for d in &after {
        count.entry(d.seq).or_default().push(d);
    }
    eprintln!(
        "held {} unacked ({:?}); after the failover received {} ({} flagged redelivered); \
         consumer {} reconnects",
        held.len(),
        held.iter().map(|d| d.seq).collect::<Vec<_>>(),
        after.len(),
        after.iter().filter(|d| d.redelivered).count(),
        stats.reconnects
    );
    assert_eq!(stats.reconnects, 1, "{stats:?}");
    for d in &held {
        let again = count.get(&d.seq).map(Vec::as_slice).unwrap_or_default();
        assert!(
            !again.is_empty(),
            "message {} (held unacked across the kill) never came again",
            d.seq
        );
        assert!(
            again.iter().all(|a| a.redelivered),
            "message {} delivered again without redelivered:true: {again:?}",
            d.seq
        );
    }
    let missing: Vec<u64> = (0..N).filter(|s| !count.contains_key(s)).collect();
    assert!(missing.is_empty(), "never received: {missing:?}");
    let repeated: Vec<_> = count.iter().filter(|(_, v)| v.len() > 1).collect();
    assert!(
        repeated.is_empty(),
        "delivered more than once after the failover although acked: {repeated:?}"
    );
}

#[test]
fn ctl_send_and_receive_through_the_failover_url_across_a_sigkill() {
    const N: usize = 200;
    let (mut cluster, active) = three_nodes();
    let url = failover_url(&cluster);
    let ctl = |what: &str, args: &[&str]| {
        let mut cmd = Command::new(&bins().ctl);
        cmd.args(args)
            .args(["--url", &url, "--dest", "/queue/no-loss-ctl"]);
        let mut process = ClientProcess::spawn(what, cmd);
        let status = process.finish(RUN_TIMEOUT);
        let transcript = process.transcript();
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(0),
            "{what}: {status:?}\n{transcript}"
        );
        transcript
    };
    let count = N.to_string();
    let sent = ctl(
        "ctl send",
        &[
            "send",
            "--count",
            &count,
            "--persistent",
            "--receipt-window",
            "20",
        ],
    );
    eprint!("{sent}");
    assert!(
        sent.contains(&format!("sent {N} messages")) && sent.contains(&format!("{N} receipted")),
        "{sent}"
    );
    // The receiver starts with the node that took the messages gone.
    let next = kill_active_and_restart(&mut cluster, active);
    eprintln!(
        "SIGKILLed {}; {} took over",
        cluster.nodes[active].name, cluster.nodes[next].name
    );
    let received = ctl(
        "ctl receive",
        &[
            "receive",
            "--count",
            &count,
            "--ack",
            "client-individual",
            "--timeout-ms",
            "20000",
            "--print",
        ],
    );
    let summary: Vec<&str> = received
        .lines()
        .filter(|l| l.starts_with("received "))
        .collect();
    eprintln!("{summary:?}");
    assert!(
        summary
            .iter()
            .any(|l| l.starts_with(&format!("received {N} messages"))),
        "{received}"
    );
    let bodies: BTreeSet<usize> = received
        .lines()
        .filter_map(|l| l.strip_prefix("message "))
        .map(|n| n.trim().parse().expect("a body 'message N'"))
        .collect();
    assert_eq!(bodies, (0..N).collect::<BTreeSet<usize>>(), "{received}");
}
