//! The scheduler against real stores, at each point a broker can be killed in the four steps of
//! a delivery ([`super::task`]): the stores are written as that broker left them, and a new
//! scheduler must enqueue every delivery exactly once.

use super::clock::Clock;
use super::job::Job;
use super::spec::Schedule;
use super::store::{number, put, FIRED, FIRING, JOBS, NEW};
use super::task::{Command, Parts, Scheduler};
use crate::broker::message::Message;
use crate::broker::Request;
use crate::journal::{self, Journal, JournalConfig, Op, Recovered};
use crate::store::{Retry, Store};
use bytes::Bytes;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// A message store and a scheduler store in a temporary directory.
struct Stores {
    _dir: tempfile::TempDir,
    messages: (Store, Journal),
    scheduler: (Store, Journal),
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
        let scheduler = open("scheduler").await;
        Stores {
            _dir: dir,
            messages,
            scheduler,
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
        let (broker, requests) = mpsc::channel(64);
        let (me, commands) = mpsc::unbounded_channel::<Command>();
        let scheduler = Scheduler::start(Parts {
            journal: self.scheduler.1.clone(),
            view: Stores::view(&self.scheduler.0),
            messages: self.messages.1.clone(),
            messages_view: Stores::view(&self.messages.0),
            broker,
            commands,
            me,
            clock,
        })
        .await
        .unwrap();
        tokio::spawn(scheduler.run());
        requests
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

/// The next delivery the scheduler asks for: (message-id, redelivered); completes it as the
/// broker would (the marker is the test's to write: the broker's own write is not under test).
async fn next_fire(requests: &mut mpsc::Receiver<Request>, stores: &Stores) -> (String, bool) {
    let request = tokio::time::timeout(Duration::from_secs(10), requests.recv())
        .await
        .expect("a delivery within 10 s")
        .expect("the scheduler runs");
    let Request::Fire { job, n, msg, done } = request else {
        panic!("not a Fire request");
    };
    Stores::write(
        &stores.messages.1,
        vec![put(FIRED, job.as_bytes(), number(n))],
    )
    .await;
    done();
    (msg.id.to_string(), msg.redeliveries > 0)
}

async fn no_fire_within(requests: &mut mpsc::Receiver<Request>, wait: Duration) {
    if let Ok(Some(Request::Fire { msg, .. })) = tokio::time::timeout(wait, requests.recv()).await {
        panic!("an unexpected delivery: {}", msg.id);
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
    ops.push(put(FIRING, job.id.as_bytes(), number(0)));
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
    ops.push(put(FIRING, job.id.as_bytes(), number(0)));
    Stores::write(&stores.scheduler.1, ops).await;
    Stores::write(
        &stores.messages.1,
        vec![put(FIRED, job.id.as_bytes(), number(0))],
    )
    .await;
    let mut requests = stores.start(clock).await;
    // Delivery 0 is in the message store already: the job only moves on, to delivery 1.
    assert_eq!(
        next_fire(&mut requests, &stores).await,
        ("ID:old-1-1:1".into(), false)
    );
    no_fire_within(&mut requests, Duration::from_millis(300)).await;
    let (scheduler, messages) = (
        Stores::view(&stores.scheduler.0),
        Stores::view(&stores.messages.0),
    );
    eventually("the job done and every trace of it gone", || {
        scheduler.get(JOBS, job.id.as_bytes()).unwrap().is_none()
            && scheduler.get(FIRING, job.id.as_bytes()).unwrap().is_none()
            && messages.get(FIRED, job.id.as_bytes()).unwrap().is_none()
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
        vec![put(FIRED, job.id.as_bytes(), number(0))],
    )
    .await;
    let mut requests = stores.start(clock).await;
    assert_eq!(
        next_fire(&mut requests, &stores).await,
        ("ID:old-1-1:1".into(), false)
    );
    no_fire_within(&mut requests, Duration::from_millis(300)).await;
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
    for _ in 0..total {
        let (id, redelivered) = next_fire(&mut requests, &stores).await;
        assert!(!redelivered);
        assert!(last.as_ref().is_none_or(|l| *l < id), "{last:?} then {id}");
        last = Some(id);
    }
    no_fire_within(&mut requests, Duration::from_millis(300)).await;
}
