//! The scheduler's store against real files: writes read back, epochs fenced, a half-made or
//! older store, and the count of pending jobs kept through commits and reopens.

use super::*;
use crate::journal::Op;
use crate::scheduler::pending::PendingJobs;

/// Far beyond what any wait here takes when all is well.
const WAIT: Duration = Duration::from_secs(10);

fn put(space: &str, key: &str, value: &str) -> Op {
    Op::Put {
        space: space.into(),
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::copy_from_slice(value.as_bytes()).into(),
    }
}

async fn durable(journal: &Journal, ops: Vec<Op>) {
    let (done, durable) = tokio::sync::oneshot::channel();
    journal.apply(
        ops,
        Some(Box::new(move || {
            let _ = done.send(());
        })),
    );
    durable.await.expect("written");
}

#[tokio::test]
async fn writes_come_back_by_key_by_space_and_in_pages_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = JobsDb::open(dir.path(), Retry::default(), 1, PendingJobs::default())
            .await
            .unwrap();
        let journal = db.journal(JournalConfig::default()).unwrap();
        let mut ops: Vec<Op> = (0..5).map(|i| put("due", &format!("k{i}"), "v")).collect();
        ops.push(put("jobs", "a", "1"));
        ops.push(put("duf", "k0", "next space"));
        durable(&journal, ops).await;
        let remove = Op::Remove {
            space: "due".into(),
            key: Bytes::from_static(b"k1"),
        };
        durable(&journal, vec![remove]).await;
    }
    let db = JobsDb::open(dir.path(), Retry::default(), 2, PendingJobs::default())
        .await
        .unwrap();
    let view = db.view();
    assert_eq!(view.get("jobs", b"a").unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(view.get("due", b"k1").unwrap(), None);
    let keys = |page: Vec<(Bytes, Bytes)>| -> Vec<String> {
        page.iter()
            .map(|(k, _)| String::from_utf8(k.to_vec()).unwrap())
            .collect()
    };
    assert_eq!(keys(view.scan("due").unwrap()), ["k0", "k2", "k3", "k4"]);
    assert_eq!(keys(view.read_page("due", b"k2", 2).unwrap()), ["k2", "k3"]);
}

fn remove(space: &str, key: &str) -> Op {
    Op::Remove {
        space: space.into(),
        key: Bytes::copy_from_slice(key.as_bytes()),
    }
}

#[tokio::test]
async fn the_job_count_follows_each_commit_and_is_read_back_at_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let pending = PendingJobs::default();
    let db = JobsDb::open(dir.path(), Retry::default(), 1, pending.clone())
        .await
        .unwrap();
    assert_eq!(pending.get(), Some(0));
    let journal = db.journal(JournalConfig::default()).unwrap();
    let ops = vec![
        put(COUNTED, "a", "1"),
        put(COUNTED, "b", "1"),
        put("due", "a", "j"),
    ];
    durable(&journal, ops).await;
    assert_eq!(pending.get(), Some(2));
    // A job moved on (its entry replaced) and a removal of one long gone change nothing.
    durable(&journal, vec![put(COUNTED, "a", "2"), remove(COUNTED, "z")]).await;
    assert_eq!(pending.get(), Some(2));
    let ops = vec![
        remove(COUNTED, "b"),
        put(COUNTED, "c", "1"),
        put(COUNTED, "d", "1"),
    ];
    durable(&journal, ops).await;
    assert_eq!(pending.get(), Some(3));
    drop((journal, db));

    let reopened = PendingJobs::default();
    let _db = JobsDb::open(dir.path(), Retry::default(), 2, reopened.clone())
        .await
        .unwrap();
    assert_eq!(reopened.get(), Some(3), "read back, not counted");
}

#[tokio::test]
async fn a_store_that_does_not_say_how_many_jobs_it_holds_is_counted_once_after_it_opens() {
    let dir = tempfile::tempdir().unwrap();
    let db = JobsDb::open(dir.path(), Retry::default(), 1, PendingJobs::default())
        .await
        .unwrap();
    let journal = db.journal(JournalConfig::default()).unwrap();
    let ops = (0..5)
        .map(|i| put(COUNTED, &format!("j{i}"), "1"))
        .collect();
    durable(&journal, ops).await;
    drop((journal, db));
    // As a brokerd that did not keep the count left its store (once the journal's writer
    // thread has let go of it).
    let started = std::time::Instant::now();
    let db = loop {
        match Database::open(dir.path().join(FILE)) {
            Ok(db) => break db,
            Err(DatabaseError::DatabaseAlreadyOpen) if started.elapsed() < WAIT => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            Err(err) => panic!("{err}"),
        }
    };
    let txn = db.begin_write().unwrap();
    txn.open_table(META).unwrap().remove(JOB_COUNT).unwrap();
    txn.commit().unwrap();
    drop(db);

    let pending = PendingJobs::default();
    let db = JobsDb::open(dir.path(), Retry::default(), 2, pending.clone())
        .await
        .unwrap();
    let started = std::time::Instant::now();
    while pending.get() != Some(5) {
        assert!(started.elapsed() < WAIT, "not counted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The next commit stores it: the open after reads it back.
    let journal = db.journal(JournalConfig::default()).unwrap();
    durable(&journal, vec![put(COUNTED, "j9", "1")]).await;
    assert_eq!(pending.get(), Some(6));
    drop((journal, db));
    let reopened = PendingJobs::default();
    let _db = JobsDb::open(dir.path(), Retry::default(), 3, reopened.clone())
        .await
        .unwrap();
    assert_eq!(reopened.get(), Some(6));
}

#[tokio::test]
async fn an_older_epoch_is_refused_and_a_held_store_is_reported_locked() {
    let dir = tempfile::tempdir().unwrap();
    let held = JobsDb::open(dir.path(), Retry::default(), 5, PendingJobs::default())
        .await
        .unwrap();
    let brief = Retry {
        total: Duration::from_millis(200),
        first_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(50),
    };
    let locked = JobsDb::open(dir.path(), brief, 6, PendingJobs::default())
        .await
        .err()
        .unwrap();
    assert!(
        matches!(locked, StoreError::Locked { attempts, .. } if attempts > 1),
        "{locked}"
    );
    drop(held);
    let stale = JobsDb::open(dir.path(), brief, 4, PendingJobs::default())
        .await
        .err()
        .unwrap();
    assert!(
        matches!(stale, StoreError::StaleEpoch { ours: 4, stored: 5 }),
        "{stale}"
    );
    JobsDb::open(dir.path(), brief, 5, PendingJobs::default())
        .await
        .expect("the same epoch again");
}

#[tokio::test]
async fn a_database_half_made_by_a_killed_broker_is_made_again() {
    let dir = tempfile::tempdir().unwrap();
    // What a broker killed while redb wrote the new file's header leaves.
    std::fs::write(dir.path().join(FRESH), b"redb\0").unwrap();
    let db = JobsDb::open(dir.path(), Retry::default(), 1, PendingJobs::default())
        .await
        .unwrap();
    let journal = db.journal(JournalConfig::default()).unwrap();
    durable(&journal, vec![put("jobs", "a", "1")]).await;
    assert!(!dir.path().join(FRESH).exists());
    drop((journal, db));
    let db = JobsDb::open(dir.path(), Retry::default(), 2, PendingJobs::default())
        .await
        .unwrap();
    assert_eq!(
        db.view().get("jobs", b"a").unwrap().as_deref(),
        Some(&b"1"[..])
    );
}

#[tokio::test]
async fn an_older_brokerds_sled_store_is_refused_not_left_behind() {
    let dir = tempfile::tempdir().unwrap();
    crate::store::Store::open(dir.path(), Retry::default())
        .await
        .unwrap();
    let refused = JobsDb::open(dir.path(), Retry::default(), 1, PendingJobs::default())
        .await
        .err()
        .unwrap();
    assert!(
        matches!(refused, StoreError::OldScheduler { .. }),
        "{refused}"
    );
    assert!(
        refused.to_string().contains("move the old files out"),
        "{refused}"
    );
    assert!(!dir.path().join(FILE).exists());
}
