//! The scheduler against real stores, at each point a broker can be killed in the four steps of
//! a delivery ([`super::task`]): the stores are written as that broker left them, and a new
//! scheduler must enqueue every delivery exactly once.

use super::clock::Clock;
use super::db::JobsDb;
use super::job::Job;
use super::pending::PendingJobs;
use super::spec::Schedule;
use super::store::{batch_key, put, Batch, FIRED, FIRING, JOBS, NEW};
use super::task::{Command, Parts, Removal, Scheduler};
use crate::broker::message::Message;
use crate::broker::Request;
use crate::journal::{self, Journal, JournalConfig, Op, Recovered};
use crate::memory::Gauge;
use crate::store::{Retry, Store};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// A message store and a scheduler store in a temporary directory.
struct Stores {
    _dir: tempfile::TempDir,
    messages: (Store, Journal),
    scheduler: (JobsDb, Journal),
    /// The scheduler store's number of pending jobs.
    pending: PendingJobs,
}

impl Stores {
    async fn new() -> Stores {
        let dir = tempfile::tempdir().unwrap();
        let open = |name: &str| {
            let path = dir.path().join(name);
            async move {
                let store = Store::open(&path, Retry::default()).await.unwrap();
                let journal = Journal::start(&store, JournalConfig::default()).unwrap();
                (store, journal)
            }
        };
        let messages = open("data").await;
        let path = dir.path().join("scheduler");
        std::fs::create_dir(&path).unwrap();
        let pending = PendingJobs::default();
        let db = JobsDb::open(&path, Retry::default(), 1, pending.clone())
            .await
            .unwrap();
        let journal = db.journal(JournalConfig::default()).unwrap();
        let scheduler = (db, journal);
        Stores {
            _dir: dir,
            messages,
            scheduler,
            pending,
        }
    }

    fn view(store: &Store) -> Recovered {
        journal::recover(store).unwrap()
    }

    /// Writes `ops` to one store and waits until they are durable.
    async fn write(journal: &Journal, ops: Vec<Op>) {
        let (done, durable) = oneshot::channel();
        journal.apply(
            ops,
            Some(Box::new(move || {
                let _ = done.send(());
            })),
        );
        durable.await.unwrap();
    }

    /// Starts a scheduler on the stores; returns what it asks of the broker.
    async fn start(&self, clock: Clock) -> mpsc::Receiver<Request> {
        self.start_commanded(clock).await.0
    }

    /// [`Stores::start`]; also returns the scheduler's commands, and the broker's backlog gauge
    /// that a new job ([`Command::Add`]) is counted in until it is stored.
    async fn start_commanded(
        &self,
        clock: Clock,
    ) -> (
        mpsc::Receiver<Request>,
        mpsc::UnboundedSender<Command>,
        Gauge,
    ) {
        let (broker, requests) = mpsc::channel(64);
        let (me, commands) = mpsc::unbounded_channel::<Command>();
        let backlog = Gauge::default();
        let scheduler = Scheduler::start(Parts {
            journal: self.scheduler.1.clone(),
            view: self.scheduler.0.view(),
            messages: self.messages.1.clone(),
            messages_view: Stores::view(&self.messages.0),
            broker,
            commands,
            me: me.clone(),
            clock,
            backlog: Arc::clone(&backlog),
        })
        .await
        .unwrap();
        tokio::spawn(scheduler.run());
        (requests, me, backlog)
    }
}

/// A job of `repeat + 1` deliveries 100 ms apart, the first due at once.
fn job(now: u64, repeat: u32) -> Job {
    let template = Message {
        id: "ID:old-1-1".into(),
        seq: 0,
        destination: "/queue/q".into(),
        headers: Vec::new(),
        body: Bytes::from_static(b"scheduled"),
        persistent: true,
        priority: 4,
        expires: 0,
        redeliveries: 0,
        timestamp: 0,
        sized: true,
        from: 0,
    };
    let schedule = Schedule {
        delay_ms: 1,
        period_ms: 100,
        repeat,
        cron: None,
    };
    Job::new(template, schedule, now - 10).unwrap()
}

/// The job as stored in the scheduler's store.
fn stored(job: &Job) -> Vec<Op> {
    super::store::inserted(job)
}

/// The next batch of deliveries the scheduler asks for: (message-id, redelivered) of each;
/// completes it as the broker would (the marker is the test's to write: the broker's own write
/// is not under test).
async fn next_batch(
    requests: &mut mpsc::Receiver<Request>,
    stores: &Stores,
) -> Vec<(String, bool)> {
    let request = tokio::time::timeout(Duration::from_secs(10), requests.recv())
        .await
        .expect("a delivery within 10 s")
        .expect("the scheduler runs");
    let Request::Fire {
        batch,
        deliveries,
        done,
    } = request
    else {
        panic!("not a Fire request");
    };
    Stores::write(
        &stores.messages.1,
        vec![put(FIRED, batch_key(batch), Bytes::new())],
    )
    .await;
    done();
    deliveries
        .iter()
        .map(|msg| (msg.id.to_string(), msg.redeliveries > 0))
        .collect()
}

/// The next delivery, alone in its batch.
async fn next_fire(requests: &mut mpsc::Receiver<Request>, stores: &Stores) -> (String, bool) {
    let mut batch = next_batch(requests, stores).await;
    assert_eq!(batch.len(), 1, "one delivery: {batch:?}");
    batch.remove(0)
}

/// A batch record in the scheduler's store, as step 1 writes it.
fn firing(batch: u64, job: &Job) -> Op {
    let record = Batch(vec![(std::sync::Arc::clone(&job.id), job.next.n)]);
    put(FIRING, batch_key(batch), record.encode())
}

async fn no_fire_within(requests: &mut mpsc::Receiver<Request>, wait: Duration) {
    if let Ok(Some(Request::Fire { deliveries, .. })) =
        tokio::time::timeout(wait, requests.recv()).await
    {
        panic!("an unexpected delivery: {deliveries:?}");
    }
}

/// Polls until `check` holds (bounded).
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..500 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("not within 5 s: {what}");
}

#[tokio::test]
async fn a_job_only_in_the_message_store_is_moved_and_delivered() {
    let stores = Stores::new().await;
    let clock = Clock::new(1);
    let job = job(clock.now(), 0);
    Stores::write(
        &stores.messages.1,
        vec![put(NEW, job.id.as_bytes(), job.encode())],
    )
    .await;
    let mut requests = stores.start(clock).await;
    assert_eq!(
        next_fire(&mut requests, &stores).await,
        ("ID:old-1-1".into(), false)
    );
    let messages = Stores::view(&stores.messages.0);
    eventually("the NEW entry removed", || {
        messages.get(NEW, job.id.as_bytes()).unwrap().is_none()
    })
    .await;
    no_fire_within(&mut requests, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_delivery_being_enqueued_without_its_marker_is_enqueued_again_flagged() {
    let stores = Stores::new().await;
    let clock = Clock::new(1);
    let job = job(clock.now(), 1);
    let mut ops = stored(&job);
    ops.push(firing(7, &job));
    Stores::write(&stores.scheduler.1, ops).await;
    let mut requests = stores.start(clock).await;
    assert_eq!(
        next_fire(&mut requests, &stores).await,
        ("ID:old-1-1:0".into(), true)
    );
    assert_eq!(
        next_fire(&mut requests, &stores).await,
        ("ID:old-1-1:1".into(), false)
    );
    no_fire_within(&mut requests, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_delivery_enqueued_before_the_kill_is_not_enqueued_again() {
    let stores = Stores::new().await;
    let clock = Clock::new(1);
    let job = job(clock.now(), 1);
    let mut ops = stored(&job);
    ops.push(firing(7, &job));
    Stores::write(&stores.scheduler.1, ops).await;
    Stores::write(
        &stores.messages.1,
        vec![put(FIRED, batch_key(7), Bytes::new())],
    )
    .await;
    let mut requests = stores.start(clock).await;
    // Delivery 0 is in the message store already: the job only moves on, to delivery 1.
    assert_eq!(
        next_fire(&mut requests, &stores).await,
        ("ID:old-1-1:1".into(), false)
    );
    no_fire_within(&mut requests, Duration::from_millis(300)).await;
    let (scheduler, messages) = (stores.scheduler.0.view(), Stores::view(&stores.messages.0));
    eventually("the job done and every trace of it gone", || {
        scheduler.get(JOBS, job.id.as_bytes()).unwrap().is_none()
            && scheduler.get(FIRING, &batch_key(7)).unwrap().is_none()
            && messages.get(FIRED, &batch_key(7)).unwrap().is_none()
    })
    .await;
}

#[tokio::test]
async fn a_marker_left_after_its_job_moved_on_is_removed_and_changes_nothing() {
    let stores = Stores::new().await;
    let clock = Clock::new(1);
    let mut job = job(clock.now(), 1);
    job.next = job.after(clock.now()).unwrap();
    Stores::write(&stores.scheduler.1, stored(&job)).await;
    Stores::write(
        &stores.messages.1,
        vec![put(FIRED, batch_key(3), Bytes::new())],
    )
    .await;
    let mut requests = stores.start(clock).await;
    assert_eq!(
        next_fire(&mut requests, &stores).await,
        ("ID:old-1-1:1".into(), false)
    );
    no_fire_within(&mut requests, Duration::from_millis(300)).await;
    let messages = Stores::view(&stores.messages.0);
    eventually("the stale marker removed", || {
        messages.get(FIRED, &batch_key(3)).unwrap().is_none()
    })
    .await;
}

#[tokio::test]
async fn a_batch_without_its_marker_is_enqueued_again_whole_and_flagged() {
    let stores = Stores::new().await;
    let clock = Clock::new(1);
    let jobs: Vec<Job> = (0..3)
        .map(|i| {
            let mut j = job(clock.now(), 0);
            j.id = format!("ID:batch-{i}").into();
            j.template.id = std::sync::Arc::clone(&j.id);
            j
        })
        .collect();
    let mut ops: Vec<Op> = jobs.iter().flat_map(stored).collect();
    let record = Batch(
        jobs.iter()
            .map(|j| (std::sync::Arc::clone(&j.id), 0))
            .collect(),
    );
    ops.push(put(FIRING, batch_key(9), record.encode()));
    Stores::write(&stores.scheduler.1, ops).await;
    let mut requests = stores.start(clock).await;
    let mut batch = next_batch(&mut requests, &stores).await;
    batch.sort();
    let expected: Vec<(String, bool)> = (0..3).map(|i| (format!("ID:batch-{i}"), true)).collect();
    assert_eq!(batch, expected);
    no_fire_within(&mut requests, Duration::from_millis(300)).await;
    let scheduler = stores.scheduler.0.view();
    eventually("the jobs done and the batch record gone", || {
        scheduler.get(FIRING, &batch_key(9)).unwrap().is_none()
            && jobs
                .iter()
                .all(|j| scheduler.get(JOBS, j.id.as_bytes()).unwrap().is_none())
    })
    .await;
}

/// `brokerd_scheduler_pending_jobs` as the scheduler's own writes move it: a job counts from
/// its add until its last delivery or its removal, and the figure is known without asking the
/// scheduler.
#[tokio::test]
async fn the_pending_count_follows_adds_last_deliveries_and_removals() {
    let stores = Stores::new().await;
    let clock = Clock::new(1);
    let (mut requests, commands, backlog) = stores.start_commanded(clock).await;
    assert_eq!(stores.pending.get(), Some(0));
    // As the broker core hands a scheduled SEND over.
    let add = |job: Job| {
        backlog.add(job.template.footprint());
        commands.send(Command::Add(job)).unwrap();
    };
    let later = |name: &str| {
        let mut j = job(clock.now(), 0);
        j.id = format!("ID:{name}").into();
        j.template.id = Arc::clone(&j.id);
        j.next.due = clock.now() + 3_600_000;
        j
    };
    for name in ["b", "c", "d"] {
        add(later(name));
    }
    eventually("three jobs counted", || stores.pending.get() == Some(3)).await;

    // Two deliveries: counted until the last one.
    add(job(clock.now(), 1));
    next_fire(&mut requests, &stores).await;
    assert_eq!(stores.pending.get(), Some(4));
    next_fire(&mut requests, &stores).await;
    eventually("the delivered job gone", || stores.pending.get() == Some(3)).await;

    let remove = |which: Removal| {
        let (reply, removed) = oneshot::channel();
        commands.send(Command::Remove { which, reply }).unwrap();
        removed
    };
    // Answered once durable: counted by then.
    remove(Removal::Job("ID:b".into())).await.unwrap().unwrap();
    assert_eq!(stores.pending.get(), Some(2));
    remove(Removal::All(None)).await.unwrap().unwrap();
    assert_eq!(stores.pending.get(), Some(0));
}

#[tokio::test]
async fn jobs_beyond_the_cache_are_read_in_pages_and_all_delivered_in_due_order() {
    let stores = Stores::new().await;
    let clock = Clock::new(1);
    let now = clock.now();
    let total = 2 * super::cache::PAGE_JOBS + 500;
    let mut ops = Vec::new();
    for i in 0..total {
        let mut j = job(now, 0);
        j.id = format!("ID:many-{i:06}").into();
        j.template.id = std::sync::Arc::clone(&j.id);
        j.next.due = now + 200 + (i as u64) / 50;
        ops.extend(stored(&j));
    }
    Stores::write(&stores.scheduler.1, ops).await;
    let mut requests = stores.start(clock).await;
    let mut last = None;
    let mut delivered = 0;
    while delivered < total {
        for (id, redelivered) in next_batch(&mut requests, &stores).await {
            assert!(!redelivered);
            assert!(last.as_ref().is_none_or(|l| *l < id), "{last:?} then {id}");
            last = Some(id);
            delivered += 1;
        }
    }
    assert_eq!(delivered, total);
    no_fire_within(&mut requests, Duration::from_millis(300)).await;
}

/// Invariant 1 for the scheduler's store: its journal passes the epoch fence like the message
/// store's, so a write the fence cannot verify (here the shared epoch becomes unreadable) is not
/// made, and the failure stops the broker (it reaches the message journal).
#[tokio::test]
async fn the_schedulers_store_takes_no_write_the_epoch_fence_cannot_verify() {
    let shared = tempfile::tempdir().unwrap();
    let layout = shared_proto::layout::Layout::new(shared.path());
    layout.init(None).unwrap();
    std::fs::write(layout.epoch(), "2\n").unwrap();
    let fence = crate::fence::watch(layout.clone(), 2).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("data"), Retry::default())
        .await
        .unwrap();
    let messages = Journal::start(&store, JournalConfig::default()).unwrap();
    let scheduler_dir = dir.path().join("scheduler");
    std::fs::create_dir(&scheduler_dir).unwrap();
    let clock = Clock::new(1);
    let (link, parts) = super::service::channel(clock, Default::default());
    let (broker, _requests) = mpsc::channel(64);
    // The scheduler's start writes nothing when nothing was in flight: its first write is the
    // job below, made once the epoch can no longer be read.
    std::fs::remove_file(layout.epoch()).unwrap();
    std::fs::create_dir(layout.epoch()).unwrap();
    let beside = super::service::Beside {
        dir: scheduler_dir.clone(),
        epoch: 2,
        fence: Some(fence),
        messages: messages.clone(),
        messages_view: journal::recover(&store).unwrap(),
        broker,
        pending: PendingJobs::default(),
    };
    super::service::spawn(beside, parts);
    let job = job(clock.now(), 0);
    link.commands.send(Command::Add(job.clone())).unwrap();
    let failure = tokio::time::timeout(Duration::from_secs(10), messages.failed())
        .await
        .expect("the broker is stopped within 10 s");
    assert!(
        matches!(&*failure, crate::store::StoreError::WriterFailed { cause, .. }
            if matches!(**cause, crate::store::StoreError::FenceUncertain { .. })),
        "{failure}"
    );
    let db = JobsDb::open(&scheduler_dir, Retry::default(), 2, PendingJobs::default())
        .await
        .unwrap();
    assert_eq!(db.view().get(JOBS, job.id.as_bytes()).unwrap(), None);
}
