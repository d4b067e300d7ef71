//! The scheduler beside a broker: its store opened and its task run once the broker serves, so
//! that a takeover does not wait for it (scheduled SENDs are stored and queue up meanwhile).

use super::clock::Clock;
use super::db::JobsDb;
use super::pending::PendingJobs;
use super::task::{self, Command, Scheduler};
use super::Link;
use crate::broker::Request;
use crate::fence::Fence;
use crate::journal::{self, Journal, JournalConfig, Recovered};
use crate::memory::Gauge;
use crate::store::{Retry, StoreError};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::mpsc;
use tracing::{error, info, Instrument};

/// The scheduler's end of its command channel, until its task starts.
pub struct Parts {
    commands: mpsc::UnboundedReceiver<Command>,
    me: mpsc::UnboundedSender<Command>,
    clock: Clock,
    backlog: Gauge,
}

/// The broker core's end ([`Link`], to attach before the core starts) and the scheduler's;
/// `backlog` is the core's [`crate::broker::Broker::scheduling`] gauge, which new jobs count in
/// until they are in the scheduler's store.
pub fn channel(clock: Clock, backlog: Gauge) -> (Link, Parts) {
    let (me, commands) = mpsc::unbounded_channel();
    let link = Link {
        commands: me.clone(),
        clock,
    };
    (
        link,
        Parts {
            commands,
            me,
            clock,
            backlog,
        },
    )
}

/// What the scheduler needs of the broker it runs beside.
pub struct Beside {
    /// The scheduler's store directory.
    pub dir: PathBuf,
    pub epoch: u64,
    pub fence: Option<Fence>,
    /// The message store's journal and a read view of it.
    pub messages: Journal,
    pub messages_view: Recovered,
    pub broker: mpsc::Sender<Request>,
    /// Where the store's number of pending jobs is published once it opens.
    pub pending: PendingJobs,
}

/// Opens the scheduler's store and runs the scheduler until the broker is gone. A scheduler
/// whose store cannot be opened, written or read stops the broker, as its own store would: the
/// failure goes to the message journal.
pub fn spawn(beside: Beside, parts: Parts) {
    let messages = beside.messages.clone();
    tokio::spawn(
        async move {
            if let Err(err) = open_and_run(beside, parts).await {
                error!(error = %err, "the scheduler failed; the broker stops");
                messages.fail(err);
            }
        }
        .in_current_span(),
    );
}

async fn open_and_run(beside: Beside, parts: Parts) -> Result<(), StoreError> {
    let started = std::time::Instant::now();
    let store = JobsDb::open(&beside.dir, Retry::default(), beside.epoch, beside.pending).await?;
    let journal = store.journal(JournalConfig {
        fence: beside.fence,
        ..JournalConfig::default()
    })?;
    tokio::spawn(journal.clone().watch_stalls(journal::STALL_LIMIT));
    let scheduler = Scheduler::start(task::Parts {
        journal: journal.clone(),
        view: store.view(),
        messages: beside.messages,
        messages_view: beside.messages_view,
        broker: beside.broker,
        commands: parts.commands,
        me: parts.me,
        clock: parts.clock,
        backlog: parts.backlog,
    })
    .await?;
    info!(
        dir = ?beside.dir,
        ms = started.elapsed().as_millis() as u64,
        "scheduler serving"
    );
    tokio::select! {
        () = scheduler.run() => Ok(()),
        err = journal.failed() => Err(StoreError::WriterFailed {
            path: beside.dir.join(super::db::FILE),
            cause: Arc::clone(&err),
        }),
    }
}
