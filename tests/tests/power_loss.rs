//! No loss across a power cut: a node's shared directory (with its store) on the power-cut filesystem
//! (`ha_tests::powercut`), where every write not yet fsynced is lost when the power goes. A
//! producer sends persistent messages with receipts, many awaiting their receipt at once (so the
//! broker's group commit is under way at the cut); the power is cut mid-stream, the node killed,
//! the filesystem mounted again from what reached its disk, and the node restarted: every
//! receipted message must be there. Several cuts in a row, each on its own queue, so the later
//! rounds also recover what earlier cuts left.
//!
//! The whole shared directory is on the power-cut filesystem: the store, and lockd's files
//! (lock, epoch, epochs/, holder.json), so a cut also checks that a node finds a usable epoch
//! and lock afterwards. Locks on it are the kernel's local ones, which is all one node needs.
//!
//! Needs root, /dev/fuse and fusermount3: ignored otherwise (see the attribute), and it fails,
//! rather than passes, when run without them.

use ha_tests::powercut::{self, Mount};
use ha_tests::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use stomp_client::{AckMode, Client, Options};

/// One power cut per round, each on its own queue: (body bytes, receipts the producer must have
/// had before the power is cut). Kilobyte bodies as in the benchmarks, cut at different points
/// of the store's life; then bodies large enough that sled writes them (and the tree pages
/// holding them) to separate blob files, which it never syncs itself.
const ROUNDS: [(usize, usize); 3] = [(1000, 150), (1000, 300), (200_000, 40)];
/// SENDs awaiting their receipt at once: the cut finds a group commit under way.
const WINDOW: usize = 64;

/// A producer running on its own thread until told to stop; what it got receipts for.
struct Producer {
    receipted: Arc<Mutex<BTreeSet<u64>>>,
    /// SENDs the broker refused (the test's setup is wrong); checked by `finish`.
    refused: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Producer {
    /// Sends numbered persistent messages to `queue` with receipts, [`WINDOW`] at a time, until
    /// stopped or the connection is gone; each scheduled `delay_ms(seq)` ahead, if given.
    fn start(
        url: String,
        queue: String,
        body: usize,
        delay_ms: Option<fn(u64) -> u64>,
    ) -> Producer {
        let receipted = Arc::new(Mutex::new(BTreeSet::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let refused = Arc::new(Mutex::new(Vec::new()));
        let (sink, stopped, refusals) = (
            Arc::clone(&receipted),
            Arc::clone(&stop),
            Arc::clone(&refused),
        );
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime");
            runtime.block_on(async move {
                let options = Options {
                    receipt_window: WINDOW,
                    ..Options::default()
                };
                let client = tokio::time::timeout(WAIT, Client::connect(&url, options))
                    .await
                    .expect("the producer connects within WAIT")
                    .expect("the producer connects");
                let body = "x".repeat(body);
                let run = async {
                    for seq in 0u64.. {
                        let (number, delay) =
                            (seq.to_string(), delay_ms.map(|d| d(seq).to_string()));
                        let mut headers = vec![("persistent", "true"), ("seq", &number)];
                        headers.extend(delay.as_deref().map(|d| ("AMQ_SCHEDULED_DELAY", d)));
                        let Ok(receipt) = client.send(&queue, &headers, body.clone()).await else {
                            return;
                        };
                        let (sink, refusals) = (Arc::clone(&sink), Arc::clone(&refusals));
                        tokio::spawn(async move {
                            match receipt.await {
                                Ok(()) => {
                                    sink.lock().unwrap().insert(seq);
                                }
                                // The broker said no: the test's setup is wrong. (A panic here,
                                // in a spawned task, would fail nothing.)
                                Err(stomp_client::Error::Rejected(why)) => {
                                    refusals.lock().unwrap().push(format!("SEND {seq}: {why}"));
                                }
                                // The connection went with the power.
                                Err(_) => {}
                            }
                        });
                    }
                };
                let stop = async {
                    while !stopped.load(SeqCst) {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                };
                tokio::select! {
                    () = run => {}
                    () = stop => {}
                }
                // Dropping the runtime ends the receipt tasks still waiting: the node is dead
                // by now, so none of them can be confirmed any more.
            });
        });
        Producer {
            receipted,
            refused,
            stop,
            thread,
        }
    }

    fn receipted(&self) -> usize {
        self.receipted.lock().unwrap().len()
    }

    /// Stops the producer and returns the numbers it got a receipt for.
    fn finish(self) -> BTreeSet<u64> {
        self.stop.store(true, SeqCst);
        self.thread.join().expect("the producer thread");
        let refused = self.refused.lock().unwrap();
        assert!(refused.is_empty(), "the broker refused: {refused:?}");
        std::mem::take(&mut *self.receipted.lock().unwrap())
    }
}

/// What a consumer read of the numbers expected.
struct Consumed {
    /// Numbers that never came.
    missing: BTreeSet<u64>,
    /// Numbers that came again without the `redelivered` flag.
    repeated: Vec<u64>,
}

/// Reads `queue` until every number in `expected` arrived, or nothing came for a while.
fn consume(url: &str, queue: &str, expected: &BTreeSet<u64>) -> Consumed {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        let client = tokio::time::timeout(WAIT, Client::connect(url, Options::default()))
            .await
            .expect("the consumer connects within WAIT")
            .expect("the consumer connects");
        let mut sub = tokio::time::timeout(WAIT, client.subscribe(queue, AckMode::Auto, &[]))
            .await
            .expect("the consumer subscribes within WAIT")
            .expect("the consumer subscribes");
        let mut missing = expected.clone();
        let (mut seen, mut repeated) = (BTreeSet::new(), Vec::new());
        while !missing.is_empty() {
            match tokio::time::timeout(WAIT, sub.next()).await {
                Ok(Some(message)) => {
                    let seq = message.header("seq").and_then(|s| s.parse().ok());
                    let seq = seq.expect("a message with a seq header");
                    missing.remove(&seq);
                    if !seen.insert(seq) && message.header("redelivered") != Some("true") {
                        repeated.push(seq);
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        drop(sub);
        let _ = tokio::time::timeout(WAIT, client.disconnect()).await;
        Consumed { missing, repeated }
    })
}

/// Compact ranges of numbers, for a readable failure.
fn ranges(numbers: &BTreeSet<u64>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut iter = numbers.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end = iter.next().unwrap();
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    out.join(",")
}

/// One power cut: a producer sends to `queue` until it has `target` receipts, then the power
/// goes and the node is SIGKILLed.
struct Round {
    queue: String,
    body: usize,
    target: usize,
    delay_ms: Option<fn(u64) -> u64>,
}

/// A one-node cluster whose shared directory is on the power-cut filesystem, taken through
/// `rounds` and started again: the cluster, its failover URL, the mount (kept until the end)
/// and what each round's producer got a receipt for.
fn after_power_cuts(
    rounds: Vec<Round>,
) -> (Cluster, String, Mount, BTreeMap<String, BTreeSet<u64>>) {
    ha_tests::fuse::require(powercut::unavailable());
    let mut cluster = Cluster::new(1, "");
    // The shared directory becomes the disk; an empty directory in its place is the mount
    // point, and the mount shows the disk's owners and modes.
    let shared = cluster.shared.clone();
    let disk = cluster.root.join("disk");
    std::fs::rename(&shared, &disk).unwrap();
    std::fs::create_dir(&shared).unwrap();
    let mut mount = Mount::new(&disk, &shared);
    let url = failover_url(&cluster);
    let mut receipted = BTreeMap::new();
    for (n, round) in rounds.into_iter().enumerate() {
        cluster.nodes[0].start();
        cluster.wait_for_one_active();
        let producer =
            Producer::start(url.clone(), round.queue.clone(), round.body, round.delay_ms);
        let deadline = Instant::now() + WAIT;
        while producer.receipted() < round.target {
            assert!(
                Instant::now() < deadline,
                "only {} receipts within {WAIT:?}",
                producer.receipted()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let lost = mount.cut();
        cluster.nodes[0].kill(libc::SIGKILL);
        let got = producer.finish();
        eprintln!(
            "round {n}: {} receipted on {}; power {lost}",
            got.len(),
            round.queue
        );
        receipted.insert(round.queue, got);
        mount = mount.power_on();
    }
    cluster.nodes[0].start();
    cluster.wait_for_one_active();
    (cluster, url, mount, receipted)
}

#[test]
#[ignore = "needs root, /dev/fuse and fusermount3 (Debian fuse3); tests/run-all.sh runs it as root"]
fn receipted_messages_survive_power_cuts() {
    let rounds = ROUNDS.iter().enumerate().map(|(n, &(body, target))| Round {
        queue: format!("/queue/power-{n}"),
        body,
        target,
        delay_ms: None,
    });
    let (cluster, url, _mount, receipted) = after_power_cuts(rounds.collect());
    let mut lost = BTreeMap::new();
    for (queue, expected) in &receipted {
        let missing = consume(&url, queue, expected).missing;
        if !missing.is_empty() {
            lost.insert(queue.clone(), ranges(&missing));
        }
    }
    let total: usize = receipted.values().map(BTreeSet::len).sum();
    assert!(
        lost.is_empty(),
        "receipted messages lost across {} power cuts (of {total} receipted): {lost:?}\n{}",
        ROUNDS.len(),
        cluster.logs()
    );
    eprintln!(
        "{total} receipted messages over {} power cuts: none lost",
        ROUNDS.len()
    );
}

/// Scheduled SENDs across power cuts: the scheduler's store (redb, in SHARED/scheduler) and the
/// message store on the power-cut filesystem. Half of the jobs fall due 300 ms after their SEND,
/// so deliveries are being fired when the power goes; the others 3 s after, so they are pending
/// in the scheduler's store. Every receipted job must be delivered once after the node comes
/// back (a repeat only flagged redelivered), the late ones included.
#[test]
#[ignore = "needs root, /dev/fuse and fusermount3 (Debian fuse3); tests/run-all.sh runs it as root"]
fn receipted_schedules_survive_power_cuts_and_are_delivered_once() {
    let delay_ms = |seq: u64| if seq.is_multiple_of(2) { 300 } else { 3000 };
    let rounds = [150, 400].into_iter().enumerate().map(|(n, target)| Round {
        queue: format!("/queue/power-scheduled-{n}"),
        body: 1000,
        target,
        delay_ms: Some(delay_ms),
    });
    let (cluster, url, _mount, receipted) = after_power_cuts(rounds.collect());
    let mut wrong = BTreeMap::new();
    for (queue, expected) in &receipted {
        let Consumed { missing, repeated } = consume(&url, queue, expected);
        if !missing.is_empty() || !repeated.is_empty() {
            wrong.insert(queue.clone(), (ranges(&missing), repeated));
        }
    }
    let total: usize = receipted.values().map(BTreeSet::len).sum();
    assert!(
        wrong.is_empty(),
        "scheduled SENDs lost or repeated unflagged across power cuts (of {total}): {wrong:?}\n{}",
        cluster.logs()
    );
    eprintln!("{total} receipted scheduled SENDs over 2 power cuts: each delivered once");
}

#[test]
#[ignore = "needs root, /dev/fuse and fusermount3 (Debian fuse3); tests/run-all.sh runs it as root"]
fn the_power_cut_filesystem_keeps_exactly_what_was_fsynced() {
    use std::io::Write;
    use std::os::unix::fs::FileExt;
    ha_tests::fuse::require(powercut::unavailable());
    let dir = tempfile::tempdir().unwrap();
    let (disk, target) = (dir.path().join("disk"), dir.path().join("mnt"));
    std::fs::create_dir(&disk).unwrap();
    std::fs::create_dir(&target).unwrap();
    let mut mount = Mount::new(&disk, &target);
    let path = |name: &str| target.join(name);
    // Written and fsynced, then overwritten in part and extended without a sync.
    let mut kept = std::fs::File::create(path("kept")).unwrap();
    kept.write_all(b"synced data").unwrap();
    kept.sync_data().unwrap();
    kept.write_all_at(b"SYNCED", 0).unwrap();
    kept.write_all(b" and more").unwrap();
    // The processes see their unsynced writes.
    assert_eq!(
        std::fs::read(path("kept")).unwrap(),
        b"SYNCED data and more"
    );
    // Truncated and synced: the truncation is durable.
    let mut cut = std::fs::File::create(path("truncated")).unwrap();
    cut.write_all(b"0123456789").unwrap();
    cut.set_len(4).unwrap();
    cut.sync_all().unwrap();
    // Never synced: the name survives (metadata is synchronous), the data does not.
    std::fs::write(path("unsynced"), b"gone").unwrap();
    std::fs::create_dir(path("dir")).unwrap();
    let lost = mount.cut();
    assert!(lost.contains("of 2 files"), "{lost}");
    let err = std::fs::read(path("kept")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    drop(kept);
    drop(cut);
    let _mount = mount.power_on();
    assert_eq!(std::fs::read(path("kept")).unwrap(), b"synced data");
    assert_eq!(std::fs::read(path("truncated")).unwrap(), b"0123");
    assert_eq!(std::fs::read(path("unsynced")).unwrap(), b"");
    assert!(path("dir").is_dir());
}
