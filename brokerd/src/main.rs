//! brokerd: the STOMP broker of a shared-directory active/passive pair.
//!
//! Under lockd (`LOCKD_CONTROL_FD` set) it opens its store and client listeners only once lockd
//! says this node is active, refuses an epoch older than the store's, and exits at once when
//! lockd goes away. Without lockd it runs standalone for development. `main` owns the process:
//! the runtime, logging, and the exit code; everything below returns values.
//!
//! Exit codes: 0 stopped as asked; 1 failure, including a lost or misbehaving control channel;
//! 2 bad command line, a listen or console address that cannot be bound, --console-listen
//! without --users-file, unusable TLS certificate or key
//! files, or a scheduler directory off the shared filesystem; 3 refused a stale epoch (another node took over); 4 the store could not be
//! opened or flushed.

use brokerd::broker::limits::Caps;
use brokerd::broker::pending::BacklogLimit;
use brokerd::broker::redelivery::RedeliveryPolicy;
use brokerd::lifecycle::{self, Config, Outcome};
use brokerd::{auth, confine, control, reload, server, stomp, store, tls};
use clap::Parser;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use stomp::frame::Limits;
use tracing::{error, info_span, Instrument};
use tracing_subscriber::EnvFilter;

/// How long a graceful exit waits for leftover blocking work before leaving it behind.
const RUNTIME_SHUTDOWN: Duration = Duration::from_secs(1);

/// The STOMP broker; normally started by lockd, standalone for development.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Directory of the message store (sled).
    #[arg(long)]
    data_dir: PathBuf,
    /// The shared directory (lockd passes it): while active, its epoch is polled every 5 ms and
    /// brokerd exits at once (status 3) when another node claims a newer one, which only
    /// happens on cluster filesystems whose locks are broken.
    #[arg(long)]
    shared_dir: Option<PathBuf>,
    /// Directory of the scheduled-message store; default: `scheduler` beside --data-dir. It
    /// must be on the filesystem of --shared-dir (standalone: of --data-dir), or brokerd
    /// refuses to start (status 2): a failover would lose every pending schedule.
    #[arg(long)]
    scheduler_dir: Option<PathBuf>,
    /// Start anyway with --scheduler-dir on another filesystem, with a warning in the log
    /// (lockd passes it for `scheduler_allow_local = true`).
    #[arg(long)]
    scheduler_allow_local: bool,
    /// Client listen address: HOST:PORT or tcp://HOST:PORT for plain STOMP, ssl://HOST:PORT for
    /// STOMP over TLS (needs --tls-cert-file and --tls-key-file); repeat for several. Port 0
    /// picks a free port.
    #[arg(long = "listen", required = true)]
    listen: Vec<server::Endpoint>,
    /// PEM certificate chain (leaf first) served on ssl:// listeners; read again on SIGHUP.
    #[arg(long, requires = "tls_key_file")]
    tls_cert_file: Option<PathBuf>,
    /// PEM private key of --tls-cert-file; read again on SIGHUP.
    #[arg(long, requires = "tls_cert_file")]
    tls_key_file: Option<PathBuf>,
    /// PEM CA certificates: when given, ssl:// clients must present a certificate signed by one
    /// of them; read again on SIGHUP.
    #[arg(long, requires = "tls_cert_file")]
    tls_client_ca_file: Option<PathBuf>,
    /// This node's name, for logs and session ids.
    #[arg(long, default_value = "local")]
    node: String,
    /// Largest STOMP frame a client may send, in bytes (ActiveMQ's default maxDataLength);
    /// never more than --memory-limit-mb.
    #[arg(long, default_value_t = Limits::default().max_frame_bytes)]
    max_frame_bytes: usize,
    /// Most headers in one client frame.
    #[arg(long, default_value_t = Limits::default().max_headers)]
    max_headers: usize,
    /// Longest command or header line in a client frame, in bytes.
    #[arg(long, default_value_t = Limits::default().max_header_bytes)]
    max_header_bytes: usize,
    /// Most open client connections; more are refused with an ERROR frame.
    #[arg(long, default_value_t = 10_000)]
    max_connections: u64,
    /// Most open connections from one client address; more from it are refused with an ERROR
    /// frame, so that one client (or a flood from one host) cannot take every slot.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections_per_source: u32,
    /// How long one client frame may take to arrive, from its first byte to its last, in ms:
    /// a client that sends a frame a byte at a time, or never finishes one, is cut off with an
    /// ERROR. Raise it for very large messages over slow links.
    #[arg(long, default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(1..))]
    frame_timeout_ms: u64,
    /// How long a new connection may take to send its CONNECT frame before it is closed with
    /// an ERROR, in ms (ActiveMQ's default is the same 30 s).
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    connect_timeout_ms: u64,
    /// Heart-beat interval offered to and asked of clients, in ms; 0 disables heart-beating.
    #[arg(long, default_value_t = 10_000)]
    heartbeat_ms: u64,
    /// Deliveries without an ACK (NACK, consumer gone) after which a message goes to the
    /// dead-letter queue (ActiveMQ's default is 6; 0 sends a NACKed message there at once, as
    /// ActiveMQ does without its redelivery plugin).
    #[arg(long, default_value_t = RedeliveryPolicy::default().max_redeliveries)]
    max_redeliveries: u32,
    /// Wait before a message that came back is delivered again, in ms (0: at once).
    #[arg(long, default_value_t = RedeliveryPolicy::default().initial_delay_ms)]
    redelivery_delay_ms: u64,
    /// Each further redelivery of a message waits this many times longer (ActiveMQ's
    /// backOffMultiplier; 1: the same delay each time).
    #[arg(long, default_value_t = RedeliveryPolicy::default().backoff)]
    redelivery_backoff: f64,
    /// The longest redelivery wait, in ms.
    #[arg(long, default_value_t = RedeliveryPolicy::default().max_delay_ms)]
    max_redelivery_delay_ms: u64,
    /// Where messages that kept failing or expired go (ActiveMQ's ActiveMQ.DLQ).
    #[arg(long, default_value_t = RedeliveryPolicy::default().dead_letter_queue)]
    dead_letter_queue: String,
    /// One dead-letter queue per destination, named as ActiveMQ's individual strategy names
    /// them (/queue/ActiveMQ.DLQ.Queue.NAME, /queue/ActiveMQ.DLQ.Topic.NAME).
    #[arg(long)]
    dead_letter_per_destination: bool,
    /// Non-persistent messages go to the dead-letter queue too, instead of being dropped
    /// (ActiveMQ's processNonPersistent).
    #[arg(long)]
    dead_letter_non_persistent: bool,
    /// Expired messages are dropped instead of going to the dead-letter queue (ActiveMQ's
    /// processExpired=false).
    #[arg(long)]
    drop_expired: bool,
    /// Messages a slow non-durable topic subscriber may have waiting before the oldest are
    /// dropped; their bytes count towards --memory-limit-mb.
    #[arg(long, default_value_t = 10_000)]
    topic_backlog: usize,
    /// Bytes (MiB) a slow non-durable topic subscriber may have waiting before the oldest are
    /// dropped; default: a sixteenth of --memory-limit-mb, so that one slow subscriber never
    /// holds the producers (or the topic's other subscribers) at the memory limit.
    #[arg(long)]
    topic_backlog_mb: Option<usize>,
    /// TOML file of users (argon2id passwords from `ctl passwd`, groups) and authorisation
    /// entries (README: Security); when given, only its users connect, unless it allows
    /// anonymous clients. Read again on SIGHUP.
    #[arg(long)]
    users_file: Option<PathBuf>,
    /// Address of the web console and of `/metrics` (HOST:PORT; lockd passes its
    /// console_listen), opened only while this node is active, after the STOMP listeners; off
    /// when not given. Needs --users-file: only its
    /// users in --console-group may log in (`/metrics` is open to anyone who can reach it).
    #[arg(long)]
    console_listen: Option<String>,
    /// The users-file group whose users may log in to the console.
    #[arg(long, default_value = brokerd::console::DEFAULT_GROUP)]
    console_group: String,
    /// Most console connections served at once (browsers, scrapers); one more is answered 503
    /// and closed. A connection that sends no whole request head for 10 s, takes over 30 s to
    /// send a request or takes nothing of its answer for 10 s is closed, giving its slot back.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    console_max_connections: u32,
    /// Memory for waiting messages, in MiB, past which producers are slowed down, then refused.
    #[arg(long, default_value_t = 1024)]
    memory_limit_mb: usize,
    /// How long a SEND waits for memory at the limit before it is refused, in ms.
    #[arg(long, default_value_t = 30_000)]
    send_wait_ms: u64,
    /// Waiting messages per queue or durable subscription kept in memory; persistent ones
    /// beyond it stay only in the store until consumers make room (non-persistent ones cannot
    /// be paged and count towards --memory-limit-mb instead).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(2..))]
    page_size: u64,
    /// Subscriptions one connection may hold; a SUBSCRIBE past it is refused.
    #[arg(long, default_value_t = Caps::default().subscriptions_per_connection)]
    max_subscriptions_per_connection: usize,
    /// Queues and subscribed topics the broker holds in memory at once; a SEND or SUBSCRIBE
    /// that would make one more is refused. Empty, unused queues are removed and do not count.
    #[arg(long, default_value_t = Caps::default().destinations)]
    max_destinations: usize,
    /// Destinations the broker remembers as created, in its store, across restarts and
    /// failovers (so that using one again needs no `admin`); past it, new ones are used but
    /// not remembered, until `ctl delete` removes some.
    #[arg(long, default_value_t = Caps::default().created_destinations)]
    max_created_destinations: usize,
    /// Test hook for the scheduler tests: its clock runs this many times as fast.
    #[arg(long, hide = true, default_value_t = 1)]
    test_scheduler_clock_rate: u32,
    /// Test hook for the liveness tests: SIGUSR1 wedges the broker core.
    #[arg(long, hide = true)]
    test_wedge_core_on_sigusr1: bool,
    /// Test hook for the confinement tests: once confined, try to create this file and log
    /// whether the kernel refused.
    #[arg(long, hide = true)]
    test_try_write: Option<PathBuf>,
}

/// Reads the users file, warning about clear-text passwords the file allows.
fn load_users(path: &std::path::Path) -> anyhow::Result<auth::Security> {
    let security = auth::users_file::load(path)?;
    if !security.clear_text_users().is_empty() {
        tracing::warn!(
            users_file = %path.display(),
            users = ?security.clear_text_users(),
            "users with clear-text passwords (allow_clear_text_passwords = true): hash them with `ctl passwd`"
        );
    }
    Ok(security)
}

/// The TLS configuration of the ssl:// listeners, checked now so that unusable files stop the
/// broker at start (status 2) rather than when it turns active; `main` watches the files for
/// SIGHUP once the runtime runs. `None` when no listener is ssl://.
fn tls_config(
    listen: &[server::Endpoint],
    files: Option<tls::Files>,
) -> anyhow::Result<Option<(tls::Files, rustls::ServerConfig)>> {
    let secure = listen
        .iter()
        .find(|e| e.transport == server::Transport::Ssl);
    match (secure, files) {
        (None, None) => Ok(None),
        (None, Some(files)) => {
            tracing::warn!(
                cert = %files.cert.display(),
                "--tls-cert-file is given but no --listen is ssl://HOST:PORT; it is not used"
            );
            Ok(None)
        }
        (Some(endpoint), None) => anyhow::bail!(
            "--listen ssl://{} needs a certificate: give --tls-cert-file and --tls-key-file \
             (lockd: tls_cert_file and tls_key_file)",
            endpoint.addr
        ),
        (Some(_), Some(files)) => {
            let initial = tls::load(&files)?;
            Ok(Some((files, initial)))
        }
    }
}

/// `scheduler` beside the data directory: under lockd the shared directory's `scheduler/`.
fn default_scheduler_dir(data_dir: &std::path::Path) -> PathBuf {
    data_dir.parent().unwrap_or(data_dir).join("scheduler")
}

/// Before any store is opened: the scheduler's store must be on the shared directory's
/// filesystem (standalone: the data directory's), or a failover loses every pending schedule.
/// lockd checked at its start; this catches a mount changed since, and a standalone broker.
/// Creates the scheduler and data directories if missing (their stores would anyway), so that
/// there is a filesystem to compare; the shared directory must exist.
fn check_scheduler_dir(config: &Config) -> anyhow::Result<()> {
    use shared_proto::placement::{self, Anchor, Verdict};
    let dir = &config.scheduler_dir;
    if dir == &config.data_dir {
        anyhow::bail!(
            "--scheduler-dir {} is the data directory: the scheduler needs a store of its own \
             (the default is {})",
            dir.display(),
            default_scheduler_dir(&config.data_dir).display()
        );
    }
    let (anchor, anchor_dir) = match &config.shared_dir {
        Some(shared) => (Anchor::SharedDir, shared),
        None => (Anchor::DataDir, &config.data_dir),
    };
    for create in [Some(dir), (anchor == Anchor::DataDir).then_some(anchor_dir)]
        .into_iter()
        .flatten()
    {
        std::fs::create_dir_all(create)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", create.display()))?;
    }
    match placement::probe(dir, anchor_dir)? {
        Verdict::SameDevice | Verdict::SameExport => Ok(()),
        Verdict::Different(mismatch) if config.scheduler_allow_local => {
            tracing::warn!(
                reason = %mismatch.scheduler_warning(anchor),
                "scheduler_dir is not on the shared filesystem; starting anyway because of --scheduler-allow-local"
            );
            Ok(())
        }
        Verdict::Different(mismatch) => anyhow::bail!(mismatch.scheduler_refusal(anchor)),
    }
}

/// Exit codes, as documented at the top of this file.
mod exit {
    pub const FAILURE: u8 = 1;
    pub const CONFIG: u8 = 2;
    pub const STALE_EPOCH: u8 = brokerd::fence::STALE_EPOCH_EXIT;
    pub const STORE: u8 = 4;
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal, never in lockd's or journald's logs.
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let span = info_span!("brokerd", node = %args.node, epoch = tracing::field::Empty);
    let _entered = span.enter();
    // Read now, watched for SIGHUP once the runtime runs.
    let users = match args
        .users_file
        .map(|path| load_users(&path).map(|users| (path, users)))
    {
        None => None,
        Some(Ok(users)) => Some(users),
        Some(Err(err)) => {
            error!("{err:#}");
            return ExitCode::from(exit::CONFIG);
        }
    };
    if let (Some(addr), None) = (&args.console_listen, &users) {
        // Without users there is nobody to log in as, and a console that anyone reaching the
        // port could use to purge queues is not one to start by accident.
        error!(
            "--console-listen {addr} needs --users-file (lockd: broker_args): only users of \
             the users file in group {:?} may log in to the console",
            args.console_group
        );
        return ExitCode::from(exit::CONFIG);
    }
    let tls_files = args
        .tls_cert_file
        .zip(args.tls_key_file)
        .map(|(cert, key)| tls::Files {
            cert,
            key,
            client_ca: args.tls_client_ca_file,
        });
    let tls = match tls_config(&args.listen, tls_files) {
        Ok(tls) => tls,
        Err(err) => {
            error!("{err:#}");
            return ExitCode::from(exit::CONFIG);
        }
    };
    let scheduler_dir = args
        .scheduler_dir
        .unwrap_or_else(|| default_scheduler_dir(&args.data_dir));
    let mut config = Config {
        scheduler_dir,
        scheduler_allow_local: args.scheduler_allow_local,
        test_scheduler_clock_rate: args.test_scheduler_clock_rate,
        data_dir: args.data_dir,
        shared_dir: args.shared_dir,
        listen: args.listen,
        tls: None,
        node: args.node,
        limits: Limits {
            // A frame is held whole before its SEND is taken: one larger than the memory limit
            // could never fit.
            max_frame_bytes: args.max_frame_bytes.min(args.memory_limit_mb << 20),
            max_headers: args.max_headers,
            max_header_bytes: args.max_header_bytes,
        },
        max_connections: args.max_connections,
        max_connections_per_source: args.max_connections_per_source,
        frame_timeout: Duration::from_millis(args.frame_timeout_ms),
        connect_timeout: Duration::from_millis(args.connect_timeout_ms),
        heartbeat: Duration::from_millis(args.heartbeat_ms),
        redelivery: RedeliveryPolicy {
            max_redeliveries: args.max_redeliveries,
            initial_delay_ms: args.redelivery_delay_ms,
            backoff: args.redelivery_backoff,
            max_delay_ms: args.max_redelivery_delay_ms,
            dead_letter_queue: args.dead_letter_queue,
            individual: args.dead_letter_per_destination,
            non_persistent: args.dead_letter_non_persistent,
            expired: !args.drop_expired,
        },
        topic_backlog: BacklogLimit {
            messages: args.topic_backlog,
            bytes: args
                .topic_backlog_mb
                .map_or(args.memory_limit_mb << 20 >> 4, |mb| mb << 20),
        },
        security: None,
        memory_limit: args.memory_limit_mb << 20,
        send_wait: Duration::from_millis(args.send_wait_ms),
        page_size: usize::try_from(args.page_size).unwrap_or(usize::MAX),
        caps: Caps {
            subscriptions_per_connection: args.max_subscriptions_per_connection,
            destinations: args.max_destinations,
            created_destinations: args.max_created_destinations,
        },
        test_wedge_core_on_sigusr1: args.test_wedge_core_on_sigusr1,
        console: args.console_listen.map(|listen| lifecycle::ConsoleConfig {
            listen,
            group: args.console_group,
            limits: brokerd::console::Limits {
                connections: args.console_max_connections as usize,
                ..brokerd::console::Limits::default()
            },
        }),
    };
    if let Err(err) = check_scheduler_dir(&config) {
        error!("{err:#}");
        return ExitCode::from(exit::CONFIG);
    }
    // Before the runtime starts any thread: Landlock binds only threads started after it.
    let confinement = match confine::confine(&[&config.data_dir, &config.scheduler_dir]) {
        Ok(confinement) => confinement,
        Err(err) => {
            error!("{err:#}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            error!("cannot start the async runtime: {err}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    let _runtime_entered = runtime.enter();
    // SIGHUP from now on reads the users file and the certificates again, and never ends the
    // process.
    let watched = (|| -> std::io::Result<()> {
        reload::absorb_sighup()?;
        if let Some((path, users)) = users {
            let load = move || load_users(&path);
            config.security = Some(reload::on_sighup("users file", users, load)?);
        }
        if let Some((files, initial)) = tls {
            let load = move || tls::load(&files);
            config.tls = Some(reload::on_sighup("TLS certificates", initial, load)?);
        }
        Ok(())
    })();
    if let Err(err) = watched {
        error!("cannot install the SIGHUP handler: {err}");
        return ExitCode::from(exit::FAILURE);
    }
    if let Some(path) = args.test_try_write {
        runtime.block_on(confine::try_write(path).instrument(span.clone()));
    }
    let fd = match control::fd_from_env() {
        Ok(fd) => fd,
        Err(err) => {
            error!("{err:#}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    let outcome = runtime.block_on(
        async {
            match fd {
                Some(fd) => lifecycle::run_controlled(config, fd, confinement).await,
                None => lifecycle::run_standalone(config).await,
            }
        }
        .instrument(span.clone()),
    );
    match outcome {
        Ok(Outcome::Stopped) => {
            runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
            ExitCode::SUCCESS
        }
        Ok(Outcome::ControlLost(lost)) => {
            error!(reason = %lost, "lockd is gone; exiting at once");
            // Nothing may run after this: no flush, no goodbye to clients.
            runtime.shutdown_background();
            ExitCode::from(exit::FAILURE)
        }
        Err(err) => {
            error!("{err:#}");
            runtime.shutdown_background();
            ExitCode::from(exit_code(&err))
        }
    }
}

/// The documented exit code for an error, by the layer it came from.
fn exit_code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(store) = cause.downcast_ref::<store::StoreError>() {
            return match store {
                store::StoreError::StaleEpoch { .. } => exit::STALE_EPOCH,
                _ => exit::STORE,
            };
        }
        if cause.is::<server::BindError>() {
            return exit::CONFIG;
        }
    }
    exit::FAILURE
}
