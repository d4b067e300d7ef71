//! lockd: holds the exclusive lock on the shared directory and runs brokerd while it does.
//!
//! Exit codes: 0 after a graceful shutdown (SIGTERM/SIGINT), 1 when it failed while running,
//! 2 when it refused to start (configuration, shared directory, socket).
//!
//! Threads: the main thread runs a current-thread tokio runtime with the state machine, the ctl
//! socket and brokerd's control channel, and is the only thread that forks brokerd (so
//! PR_SET_PDEATHSIG, which follows the forking thread, fires exactly when lockd dies). The keeper
//! thread does all shared-directory I/O. The signal thread turns SIGTERM/SIGINT into a shutdown,
//! and SIGHUP into a reload that brokerd is told of. The optional HTTP pages (`/metrics` on
//! `metrics_listen`, the passive console page on `console_listen`) run on the same runtime and
//! read only what the state machine and the keeper publish.

mod admin;
mod auto_init;
mod broker;
mod cli;
mod config;
mod console;
mod http;
mod keeper;
mod metrics;
mod node;
mod notify;
mod shared_dir;
mod sys;

use anyhow::Context;
use cli::Args;
use config::{Config, Overrides, Settings};
use shared_proto::layout::Layout;
use shared_proto::lock_check::TAKEOVER_GRACE;
use std::process::ExitCode;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

fn main() -> ExitCode {
    // `Targets` rather than `EnvFilter`: the same RUST_LOG syntax for levels and targets,
    // without a regex engine, which would cost a third of lockd's resident memory.
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|spec| spec.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::INFO));
    tracing_subscriber::fmt()
        .with_max_level(LevelFilter::TRACE)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .finish()
        .with(filter)
        .init();
    let args = match cli::parse(
        std::env::args_os().skip(1),
        std::env::var_os(shared_proto::admin::SOCKET_ENV),
    ) {
        Ok(cli::Command::Run(args)) => args,
        Ok(cli::Command::Help) => {
            print!("{}", cli::HELP);
            return ExitCode::SUCCESS;
        }
        Ok(cli::Command::Version) => {
            println!("lockd {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("lockd: {e} (see lockd --help)");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(failure)) => {
            tracing::error!(%failure, "lockd failed");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("lockd: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// `Err`: lockd refused to start (exit 2). `Ok(Err)`: it ran and then failed (exit 1).
fn run(args: Args) -> anyhow::Result<Result<(), String>> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    config.apply(Overrides {
        node: args.node,
        shared_dir: args.shared_dir,
        socket: args.socket,
        listen: args.listen,
        broker_user: args.broker_user,
        broker_liveness_timeout_ms: args.broker_liveness_timeout_ms,
        init: args.init,
    });
    let settings = config
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    let (layout, takeover_grace, start_warnings) = prepare_shared_dir(&settings)?;
    // Before any thread starts: it may switch the process's effective ids for a moment.
    let broker_command = broker_command(&settings, &layout)?;

    let (keeper_tx, keeper_rx) = std::sync::mpsc::channel();
    let (keeper_events_tx, keeper_events) = mpsc::channel(64);
    let (holder_tx, holder) = watch::channel(None);
    let (nodes_tx, nodes) = watch::channel(Vec::new());
    let (shutdown_tx, shutdown) = mpsc::channel(4);
    let (reload_tx, reload) = mpsc::channel(1);
    let (calls_tx, calls) = mpsc::channel(32);
    let (broker_events_tx, broker_events) = mpsc::channel(64);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let listener = {
        let _guard = runtime.enter();
        admin::bind(
            &settings.socket,
            settings.socket_mode,
            settings.admin_group.as_ref().map(|(_, gid)| *gid),
        )?
    };
    // Bound now, so a taken address refuses the start (exit 2) instead of failing unseen.
    let metrics_listener = match settings.metrics_listen {
        Some(addr) => {
            let _guard = runtime.enter();
            let listener = std::net::TcpListener::bind(addr)
                .and_then(|l| {
                    l.set_nonblocking(true)?;
                    tokio::net::TcpListener::from_std(l)
                })
                .with_context(|| format!("cannot listen on metrics_listen {addr}"))?;
            Some(listener)
        }
        None => None,
    };
    let keepalive_durations = std::sync::Arc::new(metrics::KeepaliveHistogram::default());
    spawn_signal_thread(shutdown_tx, reload_tx)?;
    let keeper_config = keeper::KeeperConfig {
        node: settings.node.clone(),
        lock_poll: settings.lock_poll,
        keepalive: settings.keepalive,
        fence_timeout: settings.fence_timeout,
        takeover_grace,
        keepalive_durations: keepalive_durations.clone(),
    };
    let roster = keeper::roster::spawn(layout.clone(), settings.keepalive, nodes_tx)
        .context("cannot start the roster thread")?;
    let keeper_layout = layout.clone();
    std::thread::Builder::new()
        .name("keeper".into())
        .spawn(move || {
            keeper::run(
                keeper_layout,
                keeper_config,
                keeper_rx,
                keeper_events_tx,
                holder_tx,
            )
        })
        .context("cannot start the keeper thread")?;

    let access = admin::Access {
        node: settings.node.clone(),
        lockd_uid: sys::users::effective_uid(),
        admin_group: settings.admin_group.clone(),
    };
    tracing::info!(
        node = %settings.node,
        shared_dir = %settings.shared_dir.display(),
        socket = %settings.socket.display(),
        listen = ?settings.listen,
        metrics_listen = ?settings.metrics_listen,
        console_listen = ?settings.console_listen,
        "lockd started; passive, competing for the lock"
    );
    let node_name = settings.node.clone();
    let console_listen = settings.console_listen;
    let page_holder = holder.clone();
    let page_nodes = nodes.clone();
    let mut node = node::Node::new(
        settings,
        broker_command,
        keeper_tx,
        roster,
        broker_events_tx,
        holder.clone(),
        nodes,
    )
    .with_start_warnings(start_warnings);
    let snapshots = node.snapshots();
    if let Some(addr) = console_listen {
        let page = console::Page {
            node: node_name,
            snapshot: snapshots.clone(),
            holder: page_holder,
            nodes: page_nodes,
        };
        node = node.with_console(console::Console::new(addr, page));
    }
    let outcome = runtime.block_on(async move {
        tokio::spawn(admin::serve(listener, access, calls_tx));
        if let Some(listener) = metrics_listener {
            let registry = std::sync::Arc::new(metrics::registry(metrics::Source {
                snapshot: snapshots,
                keepalive: keepalive_durations,
            }));
            tokio::spawn(http::serve(listener, metrics::handler(registry)));
        }
        notify::ready();
        node.run(
            node::Inputs {
                keeper_events,
                holder,
                calls,
                shutdown,
                reload,
            },
            broker_events,
        )
        .await
    });
    // The keeper may be stuck on a stalled filesystem; exiting closes the lock file regardless.
    runtime.shutdown_background();
    Ok(outcome)
}

/// Checks the shared directory (or prepares it, as the config's `init` allows) and that lockd
/// can write it; returns it with the takeover grace its lock check calls for and the warnings
/// `ctl status` repeats.
fn prepare_shared_dir(settings: &Settings) -> anyhow::Result<(Layout, Duration, Vec<String>)> {
    let layout = Layout::new(&settings.shared_dir);
    let marker = auto_init::marker(
        &layout,
        settings.init,
        settings.broker_credentials,
        &settings.node,
    )?;
    layout.check_control_paths(sys::users::effective_uid(), settings.broker_credentials)?;
    let warnings: Vec<String> = check_scheduler_dir(settings)?.into_iter().collect();
    if let Some((uid, gid)) = settings.broker_credentials {
        for store in [layout.data(), settings.scheduler_dir.clone()] {
            check_broker_can_write(&store, uid, gid)?;
        }
    }
    shared_proto::lockfile::LockFile::open(&layout.lock()).map_err(|e| {
        anyhow::anyhow!(
            "cannot open {} for writing ({e}): the shared directory must be writable by lockd (uid {}); is it mounted read-only?",
            layout.lock().display(),
            sys::users::effective_uid()
        )
    })?;
    let takeover_grace = check_lock(settings)?;
    tracing::info!(cluster = %marker.cluster_id, "shared directory checked");
    Ok((layout, takeover_grace, warnings))
}

/// The scheduler's store must be on the shared directory's filesystem, or a failover loses every
/// pending schedule: refuses to start otherwise, unless `scheduler_allow_local`, which turns the
/// refusal into a warning (logged, and returned for `ctl status`). brokerd checks again at its
/// start, in case a mount changed since.
fn check_scheduler_dir(settings: &Settings) -> anyhow::Result<Option<String>> {
    use shared_proto::placement::{self, Anchor, Verdict};
    let dir = &settings.scheduler_dir;
    if !dir.is_dir() {
        anyhow::bail!(
            "scheduler_dir {} does not exist or is not a directory: create it on the shared \
             filesystem, writable by the broker user, or remove scheduler_dir to use {} (which \
             `ctl init` makes)",
            dir.display(),
            Layout::new(&settings.shared_dir).scheduler().display()
        );
    }
    let matched = match placement::probe(dir, &settings.shared_dir)? {
        Verdict::SameDevice => "the same device",
        Verdict::SameExport => "the same network export",
        Verdict::Different(mismatch) if settings.scheduler_allow_local => {
            let warning = mismatch.scheduler_warning(Anchor::SharedDir);
            tracing::warn!(node = %settings.node, reason = %warning, "scheduler_dir is not on the shared filesystem; starting anyway because scheduler_allow_local = true");
            return Ok(Some(warning));
        }
        Verdict::Different(mismatch) => {
            anyhow::bail!(mismatch.scheduler_refusal(Anchor::SharedDir))
        }
    };
    tracing::info!(node = %settings.node, scheduler_dir = %dir.display(), matched, "scheduler store on the shared filesystem");
    Ok(None)
}

/// The self-test of `ctl check-lock` on the shared directory, before any thread starts (it
/// forks). A lock that two processes can hold at once would let two nodes run a broker, so it
/// refuses to start unless `lock_check = "warn"`. Returns the takeover grace: longer than
/// `TAKEOVER_GRACE` when a change showed through `lock_check_other_path` later than it, so a stale broker
/// on broken locks still sees a new epoch within the grace.
fn check_lock(settings: &Settings) -> anyhow::Result<Duration> {
    let node = &settings.node;
    let other = settings.lock_check_other_path.as_deref();
    let report = shared_proto::lock_check::run(&settings.shared_dir, other)?;
    for fs in &report.filesystems {
        tracing::info!(%node, filesystem = %fs.describe(), "shared filesystem");
    }
    for (_, trap) in &report.traps {
        match trap.severity {
            shared_proto::mounts::Severity::Note => {
                tracing::info!(%node, note = %trap.message, "lock check")
            }
            shared_proto::mounts::Severity::Warning => {
                tracing::warn!(%node, warning = %trap.message, "lock check")
            }
            shared_proto::mounts::Severity::Fail => {}
        }
    }
    for warning in &report.warnings {
        tracing::warn!(%node, %warning, "lock check");
    }
    let grace = report
        .max_lag()
        .map_or(TAKEOVER_GRACE, shared_proto::lock_check::takeover_grace_for);
    if let (Some(other), Some(lag)) = (other, report.max_lag()) {
        tracing::info!(
            %node,
            other_path = %other.display(),
            lag_ms = lag.as_millis() as u64,
            grace_ms = grace.as_millis() as u64,
            "visibility lag across the two paths measured"
        );
    }
    if grace != TAKEOVER_GRACE {
        tracing::warn!(
            %node,
            lag_ms = report.max_lag().unwrap_or_default().as_millis() as u64,
            grace_ms = grace.as_millis() as u64,
            default_ms = TAKEOVER_GRACE.as_millis() as u64,
            "takeover grace lengthened: the lock check saw a change show through another path later than the default grace"
        );
    }
    if report.passed() {
        return Ok(grace);
    }
    let failures = report.failures.join("; ");
    match settings.lock_check {
        config::LockCheck::Refuse => anyhow::bail!(
            "the lock on {dir} {verdict}: {failures}. Fix the mount (`ctl check-lock {dir}` \
             prints the whole report), or set lock_check = \"warn\" to start anyway",
            dir = settings.shared_dir.display(),
            verdict = report.verdict()
        ),
        config::LockCheck::Warn => {
            tracing::error!(%node, %failures, "lock check failed; starting anyway because lock_check = \"warn\"");
            Ok(grace)
        }
    }
}

/// brokerd runs as (uid, gid) and must be able to write its store; finding out at the first
/// takeover, on every node in turn, would be too late.
fn check_broker_can_write(data: &std::path::Path, uid: u32, gid: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(data)
        .with_context(|| format!("the broker's store directory {}", data.display()))?;
    let mode = meta.mode();
    let writable = (meta.uid() == uid && mode & 0o300 == 0o300)
        || (meta.gid() == gid && mode & 0o030 == 0o030)
        || mode & 0o003 == 0o003;
    if !writable {
        anyhow::bail!(
            "{} (owner uid {}, group {}, mode {:o}) is not writable by the broker user (uid {uid}, gid {gid}); \
             run `ctl init SHARED --broker-user USER` or chown it to the broker user",
            data.display(),
            meta.uid(),
            meta.gid(),
            mode & 0o7777
        );
    }
    Ok(())
}

/// brokerd's command line: everything it needs besides the epoch, which comes over the socket.
fn broker_command(
    settings: &Settings,
    layout: &Layout,
) -> anyhow::Result<sys::spawn::BrokerCommand> {
    let mut args = vec![
        "--node".to_string(),
        settings.node.clone(),
        "--data-dir".to_string(),
        layout.data().display().to_string(),
        "--shared-dir".to_string(),
        layout.root().display().to_string(),
        "--scheduler-dir".to_string(),
        settings.scheduler_dir.display().to_string(),
    ];
    if settings.scheduler_allow_local {
        args.push("--scheduler-allow-local".into());
    }
    for addr in &settings.listen {
        args.push("--listen".into());
        args.push(addr.clone());
    }
    if let Some(addr) = settings.console_listen {
        args.push("--console-listen".into());
        args.push(addr.to_string());
    }
    args.extend(settings.tls_args.iter().cloned());
    args.extend(settings.broker_args.iter().cloned());
    let program = settings.broker_binary.clone();
    let opened = match settings.broker_credentials {
        Some((uid, gid)) if !sys::users::can_execute_as(&program, uid, gid)? => {
            let fd = sys::spawn::open_program(&program)
                .with_context(|| format!("cannot open broker_binary {}", program.display()))?;
            tracing::info!(
                node = %settings.node,
                binary = %program.display(),
                uid,
                "the broker user cannot reach broker_binary's path (a directory on the way is closed to it); lockd executes it through a descriptor it opened"
            );
            Some(std::sync::Arc::new(fd))
        }
        _ => None,
    };
    Ok(sys::spawn::BrokerCommand {
        program,
        args,
        credentials: settings.broker_credentials,
        opened,
    })
}

/// SIGTERM/SIGINT become shutdown requests: the first graceful, a second one immediate. SIGHUP
/// (`systemctl reload`) becomes a reload request, passed on to the broker; requests arriving
/// while one waits are one request.
fn spawn_signal_thread(
    shutdown: mpsc::Sender<node::Shutdown>,
    reload: mpsc::Sender<()>,
) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .context("cannot install signal handlers")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut seen = 0;
            for signal in signals.forever() {
                if signal == SIGHUP {
                    // Full: a reload is already waiting, and it will read the files anew.
                    let _ = reload.try_send(());
                    continue;
                }
                seen += 1;
                tracing::info!(signal, "shutdown requested");
                let kind = if seen == 1 {
                    node::Shutdown::Graceful
                } else {
                    node::Shutdown::Immediate
                };
                if shutdown.blocking_send(kind).is_err() {
                    return;
                }
            }
        })
        .context("cannot start the signal thread")?;
    Ok(())
}
