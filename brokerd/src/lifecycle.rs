//! A broker's life from start to exit, in the two modes.
//!
//! Controlled (under lockd): handshake, wait for `Activate`, open the store, fence the epoch,
//! bind the listeners, say `Ready`, serve until `Stop`, then stop gracefully and say `Stopping`.
//! The order is the point: the store is opened only after lockd activated this broker, and no
//! client port opens before the epoch is durably fenced. Standalone (development): the same
//! without lockd, with a signal as the stop request.
//!
//! Both return an [`Outcome`] (or an error) to `main`, which decides how the process exits, with
//! one exception: the epoch fence ([`crate::fence`]) ends a superseded broker on the spot.

use crate::auth::Security;
use crate::broker::paging::Pager;
use crate::broker::{self, Broker, Counts, Request as BrokerRequest};
use crate::console;
use crate::control::{Activation, Control, Deferred, Lost, Replies, Request, Requests};
use crate::destination_calls;
use crate::fence;
use crate::journal::{self, Journal, JournalConfig};
use crate::memory::Usage;
use crate::reload::Current;
use crate::scheduler::{clock::Clock, pending::PendingJobs, service};
use crate::schedules::{self, Schedules};
use crate::server::{self, Settings, Shutdown};
use crate::stats::Stats;
use crate::stomp::frame::Limits;
use crate::store::{off_async, Retry, Store, StoreError};
use anyhow::{Context, Result};
use shared_proto::control::{BrokerStats, Confinement, FromBroker};
use shared_proto::layout::Layout;
use std::future::Future;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn, Instrument};

/// Requests from sessions waiting for the broker core; a full inbox slows the sessions down.
const BROKER_INBOX: usize = 4096;

/// How long clients get to be told goodbye after SIGINT/SIGTERM in standalone mode.
const STANDALONE_DRAIN: Duration = Duration::from_secs(10);

/// What the broker was started with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Directory of the sled store.
    pub data_dir: PathBuf,
    /// Under lockd, the shared directory whose epoch the fence polls ([`crate::fence`]).
    pub shared_dir: Option<PathBuf>,
    /// Directory of the scheduled-message store; `main` has checked that it is on the shared
    /// directory's filesystem (or that the operator accepted otherwise).
    pub scheduler_dir: PathBuf,
    /// The operator accepted a `scheduler_dir` off the shared filesystem (already warned).
    pub scheduler_allow_local: bool,
    /// Client listeners: plain and `ssl://`.
    pub listen: Vec<server::Endpoint>,
    /// The TLS configuration of the `ssl://` listeners, reloaded on SIGHUP; `None` without any.
    pub tls: Option<crate::reload::Current<rustls::ServerConfig>>,
    /// This node's name, for logs and session ids.
    pub node: String,
    /// Bounds on client frames.
    pub limits: Limits,
    /// Open client connections beyond which new ones are refused.
    pub max_connections: u64,
    /// Open connections one client address may hold.
    pub max_connections_per_source: u32,
    /// How long one client frame may take from its first byte to its last.
    pub frame_timeout: Duration,
    /// How long a new connection may take to send CONNECT.
    pub connect_timeout: Duration,
    /// Heart-beat interval offered to and asked of clients.
    pub heartbeat: Duration,
    /// Redelivery delays and dead-letter queues.
    pub redelivery: crate::broker::redelivery::RedeliveryPolicy,
    /// What a slow non-durable topic subscriber may have waiting.
    pub topic_backlog: crate::broker::pending::BacklogLimit,
    /// Who may connect and what they may do (the users file); `None`: anyone, anything.
    pub security: Option<Current<Security>>,
    /// Waiting messages' bytes past which SENDs wait, then are refused.
    pub memory_limit: usize,
    /// How long a SEND waits for memory.
    pub send_wait: Duration,
    /// Waiting messages per queue (or durable subscription) kept in memory; persistent ones
    /// beyond it are paged out to the store.
    pub page_size: usize,
    /// Subscriptions per connection and destinations in total at most.
    pub caps: broker::limits::Caps,
    /// Test hook for the scheduler tests: its clock runs this many times as fast.
    pub test_scheduler_clock_rate: u32,
    /// Test hook for the liveness tests (DESIGN invariant 7): on SIGUSR1 the broker core is
    /// never polled again, as if deadlocked, while the control channel and everything else run
    /// on. Hidden on the command line; never set in production.
    pub test_wedge_core_on_sigusr1: bool,
    /// The web console and `/metrics`; `None`: off.
    pub console: Option<ConsoleConfig>,
}

/// Where the console listens and who may log in to it.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// `HOST:PORT`, bound while active only.
    pub listen: String,
    /// Users of the users file in this group may log in.
    pub group: String,
    /// How many connections it serves at once, and how long a request head may take.
    pub limits: console::Limits,
}

/// How the broker's life ended, for `main` to turn into an exit.
#[derive(Debug)]
pub enum Outcome {
    /// Stopped as asked (or told to stop before it ever served): exit 0.
    Stopped,
    /// lockd is gone: exit at once, without flushing or saying goodbye.
    ControlLost(Lost),
}

/// Runs under lockd, on the control socket `fd`; `confinement` is reported in `Ready`.
pub async fn run_controlled(
    config: Config,
    fd: RawFd,
    confinement: Confinement,
) -> Result<Outcome> {
    let mut control = Control::adopt(fd).context("taking over lockd's control socket")?;
    control
        .handshake()
        .await
        .context("control handshake with lockd")?;
    let epoch = match control
        .wait_for_activate()
        .await
        .context("waiting for lockd to activate this broker")?
    {
        Activation::Activate { epoch } => epoch,
        Activation::Stop { reason } => {
            info!(%reason, "lockd stopped this broker before activating it");
            let stopping = FromBroker::Stopping {
                reason,
                fatal: false,
            };
            control
                .send(&stopping)
                .await
                .context("telling lockd we stop")?;
            return Ok(Outcome::Stopped);
        }
    };
    tracing::Span::current().record("epoch", epoch);
    info!(data_dir = ?config.data_dir, "activated by lockd; opening the store");
    let (mut requests, mut replies) = control.listen();
    let flush_seconds = console::metrics::flush_histogram();

    let opening = async {
        let fence = match &config.shared_dir {
            Some(shared) => Some(fence::watch(Layout::new(shared), epoch)?),
            None => None,
        };
        let store = Store::open(&config.data_dir, Retry::default()).await?;
        store.fence(epoch).await?;
        let opened = open_broker(&config, epoch, &store, fence, &flush_seconds).await?;
        Ok::<_, StoreError>((store, opened))
    };
    let (store, (journal, core, pager, scheduler)) =
        match answer_while(opening, &mut requests, &mut replies).await {
            Phase::Done(Ok(opened)) => opened,
            Phase::Done(Err(err)) => {
                // A lock still held may clear up by itself, and on a stale epoch lockd's renewal
                // finds the newer claim and fences (a hold-off would forget that the cluster's
                // locks are broken); a restart cannot fix the rest.
                let fatal = !matches!(
                    err,
                    StoreError::Locked { .. } | StoreError::StaleEpoch { .. }
                );
                return Err(refuse(&mut replies, err.into(), fatal).await);
            }
            Phase::Stop(reason) => {
                info!(%reason, "lockd stopped this broker while its store was opening");
                return Ok(say_stopping(&mut replies, reason).await);
            }
            Phase::Lost(lost) => return Ok(Outcome::ControlLost(lost)),
        };
    let listeners = match server::bind(&config.listen, config.tls.as_ref()).await {
        Ok(listeners) => listeners,
        Err(err) => return Err(refuse(&mut replies, err.into(), true).await),
    };
    let console = match bind_console(&config).await {
        Ok(console) => console,
        Err(err) => return Err(refuse(&mut replies, err, true).await),
    };
    let addrs = local_addrs(&listeners)?;
    let stats = Arc::new(Stats::start());
    let ready = FromBroker::Ready {
        epoch,
        listeners: addrs.clone(),
        confinement,
    };
    if let Err(lost) = replies.send(&ready).await {
        store.abandon();
        return Ok(Outcome::ControlLost(lost));
    }
    info!(listeners = ?addrs, "ready");

    let opened = (&journal, core, pager, scheduler);
    let Running {
        broker,
        memory,
        schedules,
        mut console,
    } = match start_running(
        &config,
        epoch,
        opened,
        &store,
        &stats,
        flush_seconds,
        console,
    ) {
        Ok(running) => running,
        Err(err) => return Err(refuse(&mut replies, err, true).await),
    };
    let (stop_tx, stop_rx) = oneshot::channel();
    let mut stop_tx = Some(stop_tx);
    let mut stop_reason = None;
    let serving = server::run(
        listeners,
        settings(&config, epoch),
        Arc::clone(&stats),
        broker.clone(),
        memory,
        async move {
            // The sender lives in this function until the server has returned, so the
            // fallback only documents intent.
            stop_rx.await.unwrap_or_else(|_| Shutdown {
                reason: "the broker is exiting".into(),
                drain: Duration::ZERO,
            })
        },
    );
    tokio::pin!(serving);
    let failed = journal.clone();
    let failed = failed.failed();
    tokio::pin!(failed);
    let mut deferred = Deferred::new();
    loop {
        tokio::select! {
            () = &mut serving => break,
            reply = deferred.next() => {
                if let Err(lost) = replies.send(&reply).await {
                    store.abandon();
                    return Ok(Outcome::ControlLost(lost));
                }
            }
            err = &mut failed => {
                // Nothing more can be made durable: stop serving at once. lockd restarts the
                // broker (or hands over); what was receipted is on disk.
                error!(error = %err, "the store failed; stopping");
                store.abandon();
                let err = anyhow::anyhow!("the store failed: {err}");
                return Err(refuse(&mut replies, err, false).await);
            }
            request = requests.next() => match request {
                Ok(Request::Stats) => {
                    let (broker, stats, size) = (broker.clone(), Arc::clone(&stats), store.size_on_disk());
                    deferred.defer(async move {
                        let counts = broker_counts(&broker).await?;
                        Some(FromBroker::Stats { stats: stats.snapshot(size, counts) })
                    });
                }
                Ok(Request::Ping { seq }) => {
                    let broker = broker.clone();
                    deferred.defer(async move { ping_core(broker).await.then_some(FromBroker::Pong { seq }) });
                }
                Ok(Request::ListSchedules { id, limit }) => {
                    let schedules = schedules.clone();
                    deferred.defer(async move { Some(schedules.list(id, limit).await) });
                }
                Ok(Request::CancelSchedules { id, which }) => {
                    let schedules = schedules.clone();
                    deferred.defer(async move { Some(schedules.cancel(id, which).await) });
                }
                Ok(Request::Destinations { id, call }) => {
                    let broker = broker.clone();
                    deferred.defer(async move { Some(destination_calls::answer(&broker, id, call).await) });
                }
                Ok(Request::Stop { deadline, reason }) => {
                    if let Some(stop) = stop_tx.take() {
                        info!(%reason, ?deadline, "lockd asked for a graceful stop");
                        // The console closes with the listeners: this node stops serving.
                        drop(console.take());
                        // Half the deadline for clients, the rest for flushing and exiting.
                        let shutdown = Shutdown { reason: reason.clone(), drain: deadline / 2 };
                        // The receiver lives inside `serving`, which has not returned yet.
                        let _ = stop.send(shutdown);
                        stop_reason = Some(reason);
                    }
                }
                Err(lost) => {
                    store.abandon();
                    return Ok(Outcome::ControlLost(lost));
                }
            },
        }
    }
    if let Err(err) = close(journal, store).await {
        return Err(refuse(&mut replies, err.into(), true).await);
    }
    let reason = stop_reason.unwrap_or_else(|| "the server stopped".into());
    info!(%reason, "stopped gracefully");
    Ok(say_stopping(&mut replies, reason).await)
}

/// Runs without lockd, for development: the epoch is the stored one plus one, and SIGINT or
/// SIGTERM stops the broker gracefully.
pub async fn run_standalone(config: Config) -> Result<Outcome> {
    let shutdown = on_signal().context("installing signal handlers")?;
    info!(data_dir = ?config.data_dir, "standalone mode (no lockd); opening the store");
    let store = Store::open(&config.data_dir, Retry::default()).await?;
    let epoch = store.claim_next_epoch().await?;
    tracing::Span::current().record("epoch", epoch);
    let flush_seconds = console::metrics::flush_histogram();
    let (journal, core, pager, scheduler) =
        open_broker(&config, epoch, &store, None, &flush_seconds).await?;
    let listeners = server::bind(&config.listen, config.tls.as_ref()).await?;
    let console = bind_console(&config).await?;
    let addrs = local_addrs(&listeners)?;
    info!(listeners = ?addrs, "ready");
    let stats = Arc::new(Stats::start());
    let opened = (&journal, core, pager, scheduler);
    let Running {
        broker,
        memory,
        // Held while the broker serves: the scheduler's command channel stays open.
        schedules: _schedules,
        console,
    } = start_running(
        &config,
        epoch,
        opened,
        &store,
        &stats,
        flush_seconds,
        console,
    )?;
    // A store that fails (a write, a flush, a page read) stops the broker at once, as under
    // lockd; closing the journal below then returns that failure, and brokerd exits with it.
    let failing = journal.clone();
    let shutdown = async move {
        // The console closes as the listeners do, when the stop begins.
        let _console = console;
        tokio::select! {
            shutdown = shutdown => shutdown,
            err = failing.failed() => {
                error!(error = %err, "the store failed; stopping");
                Shutdown {
                    reason: format!("the store failed: {err}"),
                    drain: Duration::ZERO,
                }
            }
        }
    };
    server::run(
        listeners,
        settings(&config, epoch),
        stats,
        broker,
        memory,
        shutdown,
    )
    .await;
    close(journal, store).await?;
    info!("stopped gracefully");
    Ok(Outcome::Stopped)
}

/// The end of some work the broker does while lockd may still talk to it.
enum Phase<T> {
    /// The work finished.
    Done(T),
    /// lockd asked to stop first.
    Stop(String),
    /// lockd went away first.
    Lost(Lost),
}

/// Runs `work` while answering lockd: `Stats` with zeros (nothing serves yet), scheduler
/// requests with "not started", and `Stop` or a lost channel cut the work short.
async fn answer_while<T>(
    work: impl Future<Output = T>,
    requests: &mut Requests,
    replies: &mut Replies,
) -> Phase<T> {
    tokio::pin!(work);
    loop {
        tokio::select! {
            done = &mut work => return Phase::Done(done),
            request = requests.next() => match request {
                Ok(Request::Stats) => {
                    let stats = FromBroker::Stats { stats: BrokerStats::default() };
                    if let Err(lost) = replies.send(&stats).await {
                        return Phase::Lost(lost);
                    }
                }
                // lockd pings only once the broker is Ready; before that the broker
                // ready timeout covers a slow or stuck start, so this answer is only politeness.
                Ok(Request::Ping { seq }) => {
                    if let Err(lost) = replies.send(&FromBroker::Pong { seq }).await {
                        return Phase::Lost(lost);
                    }
                }
                // lockd asks only once the broker is Ready; answered all the same.
                Ok(Request::ListSchedules { id, .. } | Request::CancelSchedules { id, .. }) => {
                    if let Err(lost) = replies.send(&schedules::not_started(id)).await {
                        return Phase::Lost(lost);
                    }
                }
                Ok(Request::Destinations { id, .. }) => {
                    if let Err(lost) = replies.send(&destination_calls::not_started(id)).await {
                        return Phase::Lost(lost);
                    }
                }
                Ok(Request::Stop { reason, .. }) => return Phase::Stop(reason),
                Err(lost) => return Phase::Lost(lost),
            },
        }
    }
}

/// Tells lockd why the broker will not serve, and hands the error back for `main` to report.
async fn refuse(replies: &mut Replies, err: anyhow::Error, fatal: bool) -> anyhow::Error {
    let stopping = FromBroker::Stopping {
        reason: format!("{err:#}"),
        fatal,
    };
    if let Err(lost) = replies.send(&stopping).await {
        warn!(error = %lost, "could not tell lockd why this broker stops");
    }
    err
}

/// Says the final, non-fatal `Stopping`.
async fn say_stopping(replies: &mut Replies, reason: String) -> Outcome {
    let stopping = FromBroker::Stopping {
        reason,
        fatal: false,
    };
    match replies.send(&stopping).await {
        Ok(()) => Outcome::Stopped,
        Err(lost) => Outcome::ControlLost(lost),
    }
}

fn settings(config: &Config, epoch: u64) -> Settings {
    Settings {
        limits: config.limits,
        max_connections: config.max_connections,
        max_connections_per_source: config.max_connections_per_source,
        frame_timeout: config.frame_timeout,
        session_prefix: format!("{}-{epoch}", config.node),
        connect_timeout: config.connect_timeout,
        heartbeat: config.heartbeat,
        security: config.security.clone(),
        memory_limit: config.memory_limit,
        send_wait: config.send_wait,
    }
}

/// Starts the journal on the open store and rebuilds the broker core from what it holds, before
/// any listener opens: recovery is part of the takeover. Only the first page of each queue is
/// read now (paging brings in the rest as it drains), so this costs about the same with a
/// backlog of a million messages as with none.
async fn open_broker(
    config: &Config,
    epoch: u64,
    store: &Store,
    fence: Option<fence::Fence>,
    flush_seconds: &prometheus_client::metrics::histogram::Histogram,
) -> Result<(Journal, Broker, Pager, SchedulerToStart), StoreError> {
    let journal = Journal::start(
        store,
        JournalConfig {
            fence: fence.clone(),
            flush_seconds: Some(flush_seconds.clone()),
            ..JournalConfig::default()
        },
    )?;
    tokio::spawn(journal.clone().watch_stalls(journal::STALL_LIMIT));
    let recovered = journal::recover(store)?;
    let view: Arc<dyn broker::paging::PageStore> = Arc::new(recovered.clone());
    let settings = broker::Settings {
        node: config.node.clone(),
        epoch,
        redelivery: config.redelivery.clone(),
        topic_backlog: config.topic_backlog,
        caps: config.caps,
        remember_created: config.security.is_some(),
    };
    let mut core = Broker::new(settings, Box::new(journal.clone()));
    let reads = core.page_out(config.page_size);
    let clock = Clock::new(config.test_scheduler_clock_rate);
    let (link, parts) = service::channel(clock, core.scheduling());
    let commands = link.commands.clone();
    core.attach_scheduler(link);
    let scheduler = SchedulerToStart {
        parts,
        commands,
        fence,
        messages_view: recovered,
    };
    let started = std::time::Instant::now();
    // Reading the store is blocking sled I/O: keep it off the async threads.
    let reader = Arc::clone(&view);
    let (core, restored) = off_async(move || {
        let restored = core.recover(&*reader)?;
        Ok::<_, StoreError>((core, restored))
    })
    .await?;
    info!(
        restored,
        page = config.page_size,
        ms = started.elapsed().as_millis() as u64,
        "recovered the broker's state from the store (the first page of each queue)"
    );
    // A store that cannot be read fails like one that cannot be written: the broker stops.
    let failing = journal.clone();
    let pager = Pager {
        store: view,
        reads,
        fail: Box::new(move |err| failing.fail(err)),
    };
    Ok((journal, core, pager, scheduler))
}

/// Binds the console's address, after the STOMP listeners, with the users file it logs in
/// against; `None` when the console is off. A bind failure is a configuration error.
async fn bind_console(config: &Config) -> Result<Option<ConsoleToServe>> {
    let Some(wanted) = &config.console else {
        return Ok(None);
    };
    let security = (config.security.clone())
        .context("--console-listen needs --users-file: nobody could log in to the console")?;
    let bound = console::bind(&wanted.listen).await?;
    let addr = bound
        .local_addr()
        .context("reading the console's bound address")?;
    info!(console = %addr, group = %wanted.group, "console listener bound");
    Ok(Some(ConsoleToServe {
        bound,
        security,
        group: wanted.group.clone(),
        limits: wanted.limits,
    }))
}

/// The console's listener, bound, with who may log in to it.
struct ConsoleToServe {
    bound: console::Bound,
    security: Current<Security>,
    group: String,
    limits: console::Limits,
}

/// The broker as it serves, in either mode: its core, the memory its messages use, the
/// scheduler beside it, and the console when one is bound (served until dropped).
struct Running {
    broker: mpsc::Sender<BrokerRequest>,
    memory: Usage,
    schedules: Schedules,
    console: Option<console::Console>,
}

/// Starts what serves once the store is open and the listeners are bound, in both modes: the
/// broker core, the scheduler beside it, then the console, which reads from both.
fn start_running(
    config: &Config,
    epoch: u64,
    (journal, core, pager, scheduler): (&Journal, Broker, Pager, SchedulerToStart),
    store: &Store,
    stats: &Arc<Stats>,
    flush_seconds: prometheus_client::metrics::histogram::Histogram,
    console: Option<ConsoleToServe>,
) -> Result<Running> {
    let (broker, memory) = start_broker(core, pager, journal, config.test_wedge_core_on_sigusr1)?;
    let (schedules, pending_jobs) = scheduler.spawn(config, epoch, journal, &broker);
    let console = console.map(|console| {
        console.bound.serve(
            console::Parts {
                node: config.node.clone(),
                epoch,
                broker: broker.clone(),
                stats: Arc::clone(stats),
                store: store.db().clone(),
                schedules: schedules.clone(),
                pending_jobs,
                memory_limit: config.memory_limit as u64,
                flush_seconds,
                shared: config.shared_dir.as_ref().map(Layout::new),
                security: console.security,
                group: console.group,
            },
            console.limits,
        )
    });
    Ok(Running {
        broker,
        memory,
        schedules,
        console,
    })
}

/// The scheduler, attached to the broker core, to start once the broker serves.
struct SchedulerToStart {
    parts: service::Parts,
    /// For lockd's requests (`ctl schedules`), which ask the scheduler task directly.
    commands: mpsc::UnboundedSender<crate::scheduler::task::Command>,
    fence: Option<fence::Fence>,
    messages_view: journal::Recovered,
}

impl SchedulerToStart {
    /// Starts the scheduler beside the broker; returns what answers lockd's requests to it, and
    /// its number of pending jobs (unknown until its store opens) for `/metrics`.
    fn spawn(
        self,
        config: &Config,
        epoch: u64,
        journal: &Journal,
        broker: &mpsc::Sender<BrokerRequest>,
    ) -> (Schedules, PendingJobs) {
        let pending = PendingJobs::default();
        let beside = service::Beside {
            dir: config.scheduler_dir.clone(),
            epoch,
            fence: self.fence,
            messages: journal.clone(),
            messages_view: self.messages_view,
            broker: broker.clone(),
            pending: pending.clone(),
        };
        service::spawn(beside, self.parts);
        (Schedules(self.commands), pending)
    }
}

/// Starts the broker core's task and its page reader; the core ends when the server and every
/// session have let go of it, and the reader with it.
fn start_broker(
    core: Broker,
    pager: Pager,
    journal: &Journal,
    wedge_on_sigusr1: bool,
) -> Result<(mpsc::Sender<BrokerRequest>, Usage)> {
    let (requests, inbox) = mpsc::channel(BROKER_INBOX);
    pager
        .start(requests.downgrade())
        .context("starting the page reader thread")?;
    let memory = Usage {
        waiting: core.memory(),
        scheduling: core.scheduling(),
        queued: Some(journal.clone()),
    };
    // The journal's flushes release memory too: producers waiting for it must hear of them.
    journal.wake_on_release(Arc::clone(memory.waiting.room()));
    let core = core.run(inbox);
    if wedge_on_sigusr1 {
        let mut usr1 = signal(SignalKind::user_defined1()).context("installing SIGUSR1")?;
        tokio::spawn(
            async move {
                // Pinned outside the select: on SIGUSR1 the core (its state and its inbox) stays
                // alive but is never polled again, as a deadlocked core would be.
                tokio::pin!(core);
                tokio::select! {
                    () = &mut core => {}
                    _ = usr1.recv() => {
                        warn!("SIGUSR1 (test hook): the broker core stops here, as if deadlocked");
                        std::future::pending::<()>().await;
                    }
                }
            }
            .in_current_span(),
        );
    } else {
        tokio::spawn(core.in_current_span());
    }
    Ok((requests, memory))
}

/// Writes and flushes everything the journal still holds, then flushes the store: the end of a
/// graceful stop. A failed journal is not closed: its writer may be stuck inside sled (the stall
/// watchdog), and joining it, or dropping the store, would wait for it for ever.
async fn close(journal: Journal, store: Store) -> Result<(), StoreError> {
    if let Some(cause) = journal.failure() {
        let path = store.path().to_path_buf();
        store.abandon();
        return Err(StoreError::WriterFailed { path, cause });
    }
    off_async(move || journal.close()).await?;
    store.flush().await
}

/// The broker core's figures; `None` if it does not answer (it is stopping).
async fn broker_counts(broker: &mpsc::Sender<BrokerRequest>) -> Option<Counts> {
    let (tx, rx) = oneshot::channel();
    broker.send(BrokerRequest::Stats(tx)).await.ok()?;
    rx.await.ok()
}

/// Passes a liveness ping through the broker core's inbox; true once the core answered it.
async fn ping_core(broker: mpsc::Sender<BrokerRequest>) -> bool {
    let (tx, rx) = oneshot::channel();
    broker.send(BrokerRequest::Ping(tx)).await.is_ok() && rx.await.is_ok()
}

/// The bound addresses, which differ from the configured ones when a port was 0.
fn local_addrs(listeners: &[server::Listener]) -> Result<Vec<String>> {
    listeners
        .iter()
        .map(|l| l.local_addr().context("reading a listener's bound address"))
        .collect()
}

/// A future that resolves with a graceful shutdown on the first SIGINT or SIGTERM.
fn on_signal() -> std::io::Result<impl Future<Output = Shutdown>> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        let name = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        Shutdown {
            reason: format!("received {name}"),
            drain: STANDALONE_DRAIN,
        }
    })
}
