//! The journal on a real store: callbacks in order, cancellations, barriers, applied groups,
//! what a crash leaves, lazy values, the epoch fence, a stalled writer, failures elsewhere.

use super::*;
use crate::store::Retry;
use std::sync::mpsc::{channel, Receiver, Sender};

/// Upper bound on any wait in these tests; they normally take milliseconds.
const WAIT: Duration = Duration::from_secs(20);

fn open(dir: &Path) -> Store {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime
        .block_on(Store::open(dir, Retry::default()))
        .unwrap()
}

fn space(name: &str) -> Arc<str> {
    Arc::from(name)
}

/// A journal on a fresh store in a temporary directory.
fn started() -> (tempfile::TempDir, Store, Journal) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let journal = Journal::start(&store, JournalConfig::default()).unwrap();
    (dir, store, journal)
}

/// A value the writer encodes, counting how often it does.
struct Counted(std::sync::atomic::AtomicUsize);

impl Encode for Counted {
    fn encode(&self) -> Bytes {
        self.0.fetch_add(1, Ordering::SeqCst);
        Bytes::from_static(b"encoded")
    }

    fn size(&self) -> usize {
        7
    }
}

#[test]
fn a_later_value_is_encoded_once_as_it_is_written_and_never_if_its_put_is_cancelled() {
    let (_dir, store, journal) = started();
    let (tx, rx) = channel();
    let later = Arc::new(Counted(Default::default()));
    let put = |n| Op::Put {
        space: space("q/a"),
        key: key(n),
        value: Value::Later(Arc::clone(&later) as Arc<dyn Encode>),
    };
    let removed = Op::Remove {
        space: space("q/a"),
        key: key(1),
    };
    // Put and removed in one group: the put is dropped within the batch.
    journal.apply(vec![put(1), removed], report(&tx, 1));
    journal.apply(vec![put(2)], report(&tx, 2));
    assert_eq!(wait_for(&rx, 2), [1, 2]);
    assert_eq!(later.0.load(Ordering::SeqCst), 1, "encoded for key 2 only");
    assert_eq!(
        entries(&store, "q/a"),
        [(key(2).to_vec(), b"encoded".to_vec())]
    );
}

#[test]
fn a_writer_stuck_past_the_limit_fails_the_store_and_an_idle_one_never_does() {
    let (_dir, _store, journal) = started();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // A callback runs on the writer inside its batch: one that does not return holds the
    // writer as a write stuck inside sled would.
    let (release, stuck) = channel::<()>();
    put_static(
        &journal,
        "q",
        1,
        b"stuck",
        Some(Box::new(move || {
            let _ = stuck.recv();
        })),
    );
    let limit = Duration::from_millis(200);
    let failure = runtime.block_on(async {
        tokio::spawn(journal.clone().watch_stalls(limit));
        tokio::time::timeout(WAIT, journal.failed()).await
    });
    let failure = failure.expect("the stuck writer failed the store within WAIT");
    assert!(matches!(*failure, StoreError::Stalled { .. }), "{failure}");
    drop(release);

    let (_dir, _store, idle) = started();
    let (done, durable) = channel();
    put_static(
        &idle,
        "q",
        1,
        b"quick",
        Some(Box::new(move || done.send(()).unwrap())),
    );
    durable.recv_timeout(WAIT).unwrap();
    runtime.block_on(async {
        let watching = tokio::spawn(idle.clone().watch_stalls(limit));
        tokio::time::sleep(limit * 3).await;
        assert!(
            !watching.is_finished(),
            "an idle writer was taken for a stuck one"
        );
    });
    assert!(idle.failure().is_none());
}

/// Queues a put of a static value under `key(n)` in `name`.
fn put_static(
    journal: &Journal,
    name: &str,
    n: u32,
    value: &'static [u8],
    on_durable: Option<Durable>,
) {
    journal.put(space(name), key(n), Bytes::from_static(value), on_durable);
}

fn key(n: u32) -> Bytes {
    Bytes::copy_from_slice(&n.to_be_bytes())
}

/// A callback that reports `id` on `tx`.
fn report(tx: &Sender<u32>, id: u32) -> Option<Durable> {
    let tx = tx.clone();
    Some(Box::new(move || {
        let _ = tx.send(id);
    }))
}

/// Blocks the writer thread inside a barrier callback until the returned sender is
/// dropped or sent to, so that everything submitted meanwhile forms one batch.
fn hold(journal: &Journal) -> Sender<()> {
    let (release_tx, release_rx) = channel::<()>();
    let (held_tx, held_rx) = channel::<()>();
    journal.barrier(Box::new(move || {
        let _ = held_tx.send(());
        let _ = release_rx.recv_timeout(WAIT);
    }));
    held_rx.recv_timeout(WAIT).expect("writer reached the hold");
    release_tx
}

fn wait_for(rx: &Receiver<u32>, count: usize) -> Vec<u32> {
    (0..count)
        .map(|_| rx.recv_timeout(WAIT).expect("a callback ran"))
        .collect()
}

fn entries(store: &Store, name: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    recover(store)
        .unwrap()
        .scan(name)
        .map(|entry| {
            let entry = entry.unwrap();
            (entry.key.to_vec(), entry.value.to_vec())
        })
        .collect()
}

/// Copies a store's files as they are now, like the disk after a SIGKILL: the writes sled
/// has not flushed may or may not be there, the flushed ones must be.
fn crash_copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for file in std::fs::read_dir(from).unwrap() {
        let file = file.unwrap();
        if file.file_type().unwrap().is_dir() {
            crash_copy(&file.path(), &to.join(file.file_name()));
        } else {
            std::fs::copy(file.path(), to.join(file.file_name())).unwrap();
        }
    }
}

#[test]
fn callbacks_run_in_order_after_their_writes_and_pending_returns_to_zero() {
    let (_dir, store, journal) = started();
    let (tx, rx) = channel();
    let release = hold(&journal);
    for n in 0..1000 {
        journal.put(
            space("q/a"),
            key(n),
            Bytes::from(vec![7u8; 100]),
            report(&tx, n),
        );
    }
    assert_eq!(journal.pending_bytes(), 1000 * (3 + 4 + 100));
    drop(release);
    assert_eq!(wait_for(&rx, 1000), (0..1000).collect::<Vec<_>>());
    assert_eq!(journal.pending_bytes(), 0);
    let stats = journal.stats();
    assert_eq!(stats.ops_written, 1000);
    // The thousand puts queued behind the hold form one batch and one flush.
    assert_eq!(stats.flushes, 1, "{stats:?}");
    assert_eq!(entries(&store, "q/a").len(), 1000);
    journal.close().unwrap();
}

#[test]
fn a_remove_cancels_a_queued_put_and_both_callbacks_run() {
    let (_dir, store, journal) = started();
    let (tx, rx) = channel();
    let release = hold(&journal);
    put_static(&journal, "q/a", 1, b"one", report(&tx, 1));
    put_static(&journal, "q/a", 2, b"two", report(&tx, 2));
    journal.remove(space("q/a"), key(1), report(&tx, 3));
    drop(release);
    assert_eq!(wait_for(&rx, 3), vec![1, 2, 3]);
    let stats = journal.stats();
    assert_eq!(
        (stats.ops_written, stats.puts_cancelled),
        (1, 1),
        "{stats:?}"
    );
    assert_eq!(
        entries(&store, "q/a"),
        vec![(key(2).to_vec(), b"two".to_vec())]
    );
    assert_eq!(journal.pending_bytes(), 0);
    journal.close().unwrap();
}

#[test]
fn cancelling_a_rewrite_still_removes_the_stored_value() {
    let (_dir, store, journal) = started();
    let (tx, rx) = channel();
    put_static(&journal, "subs", 1, b"old", report(&tx, 1));
    wait_for(&rx, 1);
    let release = hold(&journal);
    put_static(&journal, "subs", 1, b"new", report(&tx, 2));
    journal.remove(space("subs"), key(1), report(&tx, 3));
    drop(release);
    assert_eq!(wait_for(&rx, 2), vec![2, 3]);
    let stats = journal.stats();
    assert_eq!(
        (stats.ops_written, stats.puts_cancelled),
        (2, 1),
        "{stats:?}"
    );
    assert!(entries(&store, "subs").is_empty());
    journal.close().unwrap();
}

#[test]
fn a_remove_after_the_put_was_written_is_written_too() {
    let (_dir, store, journal) = started();
    let (tx, rx) = channel();
    put_static(&journal, "q/a", 1, b"one", report(&tx, 1));
    wait_for(&rx, 1);
    journal.remove(space("q/a"), key(1), report(&tx, 2));
    wait_for(&rx, 1);
    let stats = journal.stats();
    assert_eq!(
        (stats.ops_written, stats.puts_cancelled),
        (2, 0),
        "{stats:?}"
    );
    assert!(entries(&store, "q/a").is_empty());
    journal.close().unwrap();
}

#[test]
fn a_barrier_runs_after_everything_before_it() {
    let (_dir, store, journal) = started();
    let (tx, rx) = channel();
    journal.barrier(Box::new({
        let tx = tx.clone();
        move || {
            let _ = tx.send(0);
        }
    }));
    assert_eq!(wait_for(&rx, 1), vec![0]);
    for n in 1..=50 {
        put_static(&journal, "q/b", n, b"x", report(&tx, n));
    }
    let view = recover(&store).unwrap();
    journal.barrier(Box::new({
        let tx = tx.clone();
        move || {
            // Everything before the barrier is already in the tree when it runs.
            let _ = tx.send(100 + view.scan("q/b").count() as u32);
        }
    }));
    let seen = wait_for(&rx, 51);
    assert_eq!(seen.last(), Some(&150));
    assert_eq!(seen[..50], (1..=50).collect::<Vec<_>>()[..]);
    journal.close().unwrap();
}

#[test]
fn an_applied_group_lands_whole_across_spaces() {
    let (dir, store, journal) = started();
    let (tx, rx) = channel();
    put_static(&journal, "q/in", 1, b"acked", report(&tx, 1));
    wait_for(&rx, 1);
    journal.apply(
        vec![
            Op::Put {
                space: space("q/out"),
                key: key(1),
                value: Bytes::from_static(b"sent").into(),
            },
            Op::Put {
                space: space("d/client/sub"),
                key: key(1),
                value: Bytes::from_static(b"copy").into(),
            },
            Op::Remove {
                space: space("q/in"),
                key: key(1),
            },
        ],
        report(&tx, 2),
    );
    assert_eq!(wait_for(&rx, 1), vec![2]);
    journal.close().unwrap();
    drop(store);

    let store = open(dir.path());
    let view = recover(&store).unwrap();
    let spaces: Vec<String> = view
        .spaces()
        .unwrap()
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(spaces, vec!["q/out", "d/client/sub"]);
    let all: Vec<(String, Vec<u8>)> = view
        .iter()
        .map(|e| {
            let e = e.unwrap();
            (e.space.to_string(), e.value.to_vec())
        })
        .collect();
    assert_eq!(
        all,
        vec![
            ("q/out".to_string(), b"sent".to_vec()),
            ("d/client/sub".to_string(), b"copy".to_vec())
        ]
    );
    assert_eq!(
        view.get("q/out", &key(1)).unwrap().as_deref(),
        Some(&b"sent"[..])
    );
    assert_eq!(view.get("q/in", &key(1)).unwrap(), None);
}

#[test]
fn a_remove_does_not_split_an_applied_group_but_cancels_a_lone_put() {
    let (_dir, store, journal) = started();
    let (tx, rx) = channel();
    let release = hold(&journal);
    put_static(&journal, "q/in", 1, b"lone", report(&tx, 1));
    let put = |name: &str, n, value: &'static [u8]| Op::Put {
        space: space(name),
        key: key(n),
        value: Bytes::from_static(value).into(),
    };
    // A transaction: a SEND to q/out and the ACK of q/in's message, then q/out's message is
    // consumed before any of it was written.
    journal.apply(
        vec![
            put("q/out", 1, b"sent"),
            Op::Remove {
                space: space("q/in"),
                key: key(1),
            },
            put("q/out", 2, b"kept"),
        ],
        report(&tx, 2),
    );
    journal.remove(space("q/out"), key(1), report(&tx, 3));
    drop(release);
    assert_eq!(wait_for(&rx, 3), vec![1, 2, 3]);
    let stats = journal.stats();
    // q/in's lone put and the group's remove of it cancel out; the group's put of q/out/1
    // is written with the group, then removed.
    assert_eq!(
        (stats.ops_written, stats.puts_cancelled),
        (3, 1),
        "{stats:?}"
    );
    assert!(entries(&store, "q/in").is_empty());
    assert_eq!(
        entries(&store, "q/out"),
        vec![(key(2).to_vec(), b"kept".to_vec())]
    );
    journal.close().unwrap();
}

#[test]
fn a_cancelled_put_after_a_group_write_of_its_key_still_removes_it() {
    let (_dir, store, journal) = started();
    let (tx, rx) = channel();
    let release = hold(&journal);
    let put = |n, value: &'static [u8]| Op::Put {
        space: space("subs"),
        key: key(n),
        value: Bytes::from_static(value).into(),
    };
    journal.apply(vec![put(1, b"group"), put(2, b"other")], report(&tx, 1));
    put_static(&journal, "subs", 1, b"lone", report(&tx, 2));
    journal.remove(space("subs"), key(1), report(&tx, 3));
    drop(release);
    assert_eq!(wait_for(&rx, 3), vec![1, 2, 3]);
    assert_eq!(
        entries(&store, "subs"),
        vec![(key(2).to_vec(), b"other".to_vec())]
    );
    assert_eq!(journal.stats().puts_cancelled, 1);
    journal.close().unwrap();
}

#[test]
fn durable_writes_survive_a_crash_without_close() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live");
    let crashed = dir.path().join("crashed");
    let store = open(&live);
    let journal = Journal::start(&store, JournalConfig::default()).unwrap();
    let (tx, rx) = channel();
    for n in 0..500 {
        journal.put(
            space("q/c"),
            key(n),
            Bytes::from(vec![1u8; 1024]),
            report(&tx, n),
        );
    }
    for n in 0..100 {
        journal.remove(space("q/c"), key(n), None);
    }
    journal.barrier(Box::new(move || {
        let _ = tx.send(u32::MAX);
    }));
    assert_eq!(wait_for(&rx, 501).last(), Some(&u32::MAX));
    // The disk as a SIGKILL would leave it now: no close, no flush on drop.
    crash_copy(&live, &crashed);

    let reopened = open(&crashed);
    let keys: Vec<Vec<u8>> = entries(&reopened, "q/c")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        keys,
        (100..500).map(|n| key(n).to_vec()).collect::<Vec<_>>()
    );
    journal.close().unwrap();
}

#[test]
fn close_writes_what_was_queued_and_later_submissions_are_dropped() {
    let (_dir, store, journal) = started();
    let other = journal.clone();
    let (tx, rx) = channel();
    for n in 0..10 {
        put_static(&journal, "q/d", n, b"v", report(&tx, n));
    }
    journal.close().unwrap();
    assert_eq!(rx.try_iter().count(), 10);
    other.put(
        space("q/d"),
        key(99),
        Bytes::from_static(b"late"),
        report(&tx, 99),
    );
    assert_eq!(other.pending_bytes(), 0);
    assert!(other.failure().is_none());
    assert_eq!(entries(&store, "q/d").len(), 10);
    assert!(
        rx.try_recv().is_err(),
        "a dropped submission's callback must not run"
    );
}

#[tokio::test]
async fn a_published_failure_wakes_the_waiter_and_fails_close() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Retry::default()).await.unwrap();
    let journal = Journal::start(&store, JournalConfig::default()).unwrap();
    let waiter = tokio::spawn({
        let journal = journal.clone();
        async move { journal.failed().await }
    });
    // What the writer publishes when a write or flush fails.
    let cause = Arc::new(StoreError::WriterPanicked {
        path: dir.path().to_path_buf(),
    });
    journal
        .shared
        .failure
        .send_replace(Some(Arc::clone(&cause)));
    let seen = tokio::time::timeout(WAIT, waiter).await.unwrap().unwrap();
    assert!(Arc::ptr_eq(&seen, &cause));
    let err = tokio::task::spawn_blocking(move || journal.close())
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, StoreError::WriterFailed { .. }), "{err}");
}

#[test]
fn a_page_reads_one_space_from_a_key_in_order() {
    let (_dir, store, journal) = started();
    for n in [3, 1, 2, 5, 4] {
        journal.put(space("q/a"), key(n), Bytes::from(vec![n as u8]), None);
    }
    journal.put(space("q/ab"), key(0), Bytes::new(), None);
    journal.put(space("q/b"), key(9), Bytes::new(), None);
    journal.close().unwrap();
    let view = recover(&store).unwrap();
    let keys = |from: u32, limit| {
        view.read_page("q/a", &key(from), limit)
            .unwrap()
            .into_iter()
            .map(|(k, v)| (u32::from_be_bytes(k[..].try_into().unwrap()), v[0]))
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(2, 2), [(2, 2), (3, 3)]);
    assert_eq!(keys(4, 10), [(4, 4), (5, 5)]);
    assert!(keys(6, 10).is_empty());
    // Counting keys of one space in a range, a chunk at a time.
    let count = |from: u32, below: u32, limit| {
        let (n, last) = view
            .count_keys("q/a", &key(from), &key(below), limit)
            .unwrap();
        (
            n,
            last.map(|k| u32::from_be_bytes(k[..].try_into().unwrap())),
        )
    };
    assert_eq!(count(0, 100, 10), (5, Some(5)));
    assert_eq!(count(2, 5, 10), (3, Some(4)));
    assert_eq!(count(1, 100, 2), (2, Some(2)));
    assert_eq!(count(6, 100, 10), (0, None));
}

#[test]
fn a_batch_the_epoch_fence_cannot_verify_is_not_written_and_stops_the_writer() {
    let shared = tempfile::tempdir().unwrap();
    let layout = shared_proto::layout::Layout::new(shared.path());
    layout.init(None).unwrap();
    std::fs::write(layout.epoch(), "2\n").unwrap();
    let fence = crate::fence::watch(layout.clone(), 2).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let config = JournalConfig {
        fence: Some(fence),
        ..JournalConfig::default()
    };
    let journal = Journal::start(&store, config).unwrap();
    let (tx, rx) = channel();
    put_static(&journal, "q/a", 1, b"verified", report(&tx, 1));
    assert_eq!(wait_for(&rx, 1), [1]);
    // The epoch can no longer be read: the fence cannot tell whether another node took over.
    std::fs::remove_file(layout.epoch()).unwrap();
    std::fs::create_dir(layout.epoch()).unwrap();
    put_static(&journal, "q/a", 2, b"unverified", report(&tx, 2));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let failure = runtime
        .block_on(async { tokio::time::timeout(WAIT, journal.failed()).await })
        .expect("the writer stops");
    assert!(
        matches!(*failure, StoreError::FenceUncertain { .. }),
        "{failure}"
    );
    assert!(
        rx.try_recv().is_err(),
        "no callback (no receipt) for a write the fence could not verify"
    );
    assert_eq!(
        entries(&store, "q/a"),
        [(key(1).to_vec(), b"verified".to_vec())]
    );
}

#[test]
fn a_failure_elsewhere_in_the_store_stops_the_writer_and_every_later_receipt() {
    let (_dir, store, journal) = started();
    let (tx, rx) = channel();
    put_static(&journal, "q/a", 1, b"before", report(&tx, 1));
    assert_eq!(wait_for(&rx, 1), [1]);
    journal.fail(StoreError::CorruptKey {
        path: store.path().to_path_buf(),
        len: 1,
    });
    put_static(&journal, "q/a", 2, b"after", report(&tx, 2));
    journal.barrier(Box::new(move || {
        let _ = tx.send(3);
    }));
    assert!(
        rx.recv_timeout(Duration::from_millis(200)).is_err(),
        "no callback after the failure"
    );
    assert!(matches!(
        journal.failure().as_deref(),
        Some(StoreError::CorruptKey { .. })
    ));
    assert_eq!(
        entries(&store, "q/a"),
        [(key(1).to_vec(), b"before".to_vec())]
    );
}
