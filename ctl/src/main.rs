//! ctl: the operator's tool. Prepares shared directories, shows a node's status, asks the
//! active node for a controlled failover, lists and cancels scheduled jobs, and talks STOMP through a failover URL (send,
//! receive, bench) with the project's failover client. Hashes passwords for the users file.
//!
//! Tests a shared directory's locks (`check-lock`).
//!
//! Exit codes: 0 success, 1 the request failed or timed out (or the lock check failed), 2 usage
//! or connection errors.

mod bench;
mod browse;
mod client;
mod destinations;
mod passwd;
mod progress;
mod receive;
mod schedules;
mod send;
mod status;
mod table;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use client::Client;
use shared_proto::admin::{ErrorCode, Request, Response, Role};
use shared_proto::holder::HolderState;
use shared_proto::layout::Layout;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Operator tool for the lockd/brokerd cluster.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// lockd's control socket.
    #[arg(long, global = true, env = shared_proto::admin::SOCKET_ENV)]
    socket: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Prepare a shared directory once: layout, lock and epoch files, cluster marker.
    Init {
        dir: PathBuf,
        /// The user brokerd runs as; it gets data/ and scheduler/ (needs root).
        #[arg(long)]
        broker_user: Option<String>,
    },
    /// Show this node's role, epoch, broker and the lock holder.
    Status {
        /// One JSON object (a stable interface for scripts); with --watch, one per line.
        #[arg(long)]
        json: bool,
        /// Show the status again every --interval-ms until Ctrl-C: redrawn in place on a
        /// terminal, otherwise printed again as a new block (a JSON line with --json).
        #[arg(long)]
        watch: bool,
        /// How often --watch refreshes, in milliseconds.
        #[arg(long, default_value_t = 1000, requires = "watch", value_parser = clap::value_parser!(u64).range(50..))]
        interval_ms: u64,
        /// With --watch: stop after this many refreshes (0: until Ctrl-C).
        #[arg(long, default_value_t = 0, requires = "watch")]
        count: u64,
    },
    /// Controlled handover: the active node stops its broker gracefully and releases the lock.
    Failover {
        /// Return only once another node is active, and say which and how long it took.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits.
        #[arg(long, default_value_t = 30_000)]
        timeout_ms: u64,
    },
    /// List the active node's pending scheduled jobs (id, destination, next due time, remaining
    /// repeats, cron), or cancel them (`schedules cancel ID`, `schedules cancel --all`).
    Schedules(schedules::Args),
    /// The active node's queues and topics: depth, consumers, enqueued, dequeued, oldest
    /// message, paged out (like ActiveMQ's `activemq dstat`).
    Destinations {
        /// One JSON document (a stable interface for scripts): {"node", "destinations", "cut"}.
        #[arg(long)]
        json: bool,
    },
    /// Show a queue's messages, headers and bodies, without consuming them.
    Browse(browse::Args),
    /// Remove every message waiting on a queue (not those delivered and unacknowledged).
    /// Admins only.
    Purge {
        /// The queue, e.g. /queue/orders.
        queue: String,
    },
    /// Remove a queue or topic that has no consumers, and its messages. Admins only.
    Delete {
        /// The destination, e.g. /queue/orders or /topic/prices.
        destination: String,
    },
    /// Send messages through a failover URL (like ActiveMQ's producer command).
    Send(send::Args),
    /// Receive messages through a failover URL (like ActiveMQ's consumer command).
    Receive(receive::Args),
    /// Measure throughput and latency: producers and consumers, each on its own connection.
    Bench(bench::Args),
    /// Hash a password for brokerd's users file: prints the argon2id PHC string.
    Passwd(passwd::Args),
    /// Self-test of a shared directory's locks: can two processes hold lockd's lock at once?
    /// Exits 1 when the lock is not exclusive (or a known trap makes it unsafe).
    CheckLock {
        dir: PathBuf,
        /// A second mount path of the same directory (as another node mounts it), to test the
        /// lock, the epoch claim and the data across the two.
        #[arg(long)]
        other_path: Option<PathBuf>,
        /// The full report as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// Where and as whom to connect, for the STOMP subcommands.
#[derive(Debug, Clone, clap::Args)]
struct StompArgs {
    /// Broker: failover:(tcp://h1:61613,tcp://h2:61613)?options (ActiveMQ's syntax and
    /// defaults, so randomize=true unless given), tcp://host:port, host:port or a comma list;
    /// ssl://host:port for STOMP over TLS (with --tls-ca-file), mixed with tcp:// as needed.
    #[arg(
        long,
        env = "STOMP_URL",
        default_value = "failover:(tcp://127.0.0.1:61613)"
    )]
    url: String,
    #[arg(long, env = "STOMP_LOGIN")]
    login: Option<String>,
    #[arg(long, env = "STOMP_PASSCODE", hide_env_values = true)]
    passcode: Option<String>,
    /// PEM CA certificates that ssl:// brokers' certificates must chain to.
    #[arg(long, env = "STOMP_TLS_CA_FILE")]
    tls_ca_file: Option<PathBuf>,
    /// PEM client certificate, for ssl:// brokers that require one.
    #[arg(long, env = "STOMP_TLS_CERT_FILE", requires = "tls_key_file")]
    tls_cert_file: Option<PathBuf>,
    /// PEM private key of --tls-cert-file.
    #[arg(long, env = "STOMP_TLS_KEY_FILE", requires = "tls_cert_file")]
    tls_key_file: Option<PathBuf>,
}

impl StompArgs {
    fn options(&self) -> stomp_client::Options {
        stomp_client::Options {
            login: self.login.clone(),
            passcode: self.passcode.clone(),
            tls: stomp_client::TlsOptions {
                ca_file: self.tls_ca_file.clone(),
                cert_file: self.tls_cert_file.clone(),
                key_file: self.tls_key_file.clone(),
            },
            ..stomp_client::Options::default()
        }
    }

    /// Connects, with the URL in the error.
    async fn connect(
        &self,
        options: stomp_client::Options,
    ) -> anyhow::Result<stomp_client::Client> {
        stomp_client::Client::connect(&self.url, options)
            .await
            .with_context(|| format!("cannot connect to {}", self.url))
    }
}

/// How long a STOMP subcommand's final DISCONNECT may wait for its receipt.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);

/// Disconnects and waits (at most [`CLOSE_TIMEOUT`]) for the DISCONNECT receipt, which proves
/// the broker processed every frame sent before it.
async fn close(client: stomp_client::Client) -> anyhow::Result<()> {
    tokio::time::timeout(CLOSE_TIMEOUT, client.disconnect())
        .await
        .map_err(|_| anyhow::anyhow!("no DISCONNECT receipt within {CLOSE_TIMEOUT:?}"))?
        .context("disconnecting")
}

/// `--header NAME:VALUE` pairs as the client takes headers.
fn header_refs(headers: &[(String, String)]) -> Vec<(&str, &str)> {
    headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// A failure with its own exit code.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refused(String);

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("ctl: cannot start: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ctl: {e:#}");
            if e.downcast_ref::<Refused>().is_some() {
                ExitCode::from(1)
            } else {
                ExitCode::from(2)
            }
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Cmd::Init { dir, broker_user } => init(dir, broker_user),
        Cmd::Status {
            json,
            watch: true,
            interval_ms,
            count,
        } => {
            let socket = client::socket_path(args.socket)?;
            status::watch(&socket, json, Duration::from_millis(interval_ms), count).await
        }
        Cmd::Status { json, .. } => {
            let mut client = Client::connect(&client::socket_path(args.socket)?).await?;
            let status = client.status().await?;
            if json {
                println!("{}", serde_json::to_string(&status)?);
            } else {
                print!("{}", status::render(&status, shared_proto::unix_ms()));
            }
            Ok(())
        }
        Cmd::Failover { wait, timeout_ms } => {
            let socket = client::socket_path(args.socket)?;
            failover(&socket, wait, Duration::from_millis(timeout_ms)).await
        }
        Cmd::Schedules(schedules) => {
            let client = Client::connect(&client::socket_path(args.socket)?).await?;
            schedules::run(client, schedules).await
        }
        Cmd::Destinations { json } => {
            let client = Client::connect(&client::socket_path(args.socket)?).await?;
            destinations::list(client, json).await
        }
        Cmd::Purge { queue } => {
            let client = Client::connect(&client::socket_path(args.socket)?).await?;
            destinations::purge(client, queue).await
        }
        Cmd::Delete { destination } => {
            let client = Client::connect(&client::socket_path(args.socket)?).await?;
            destinations::delete(client, destination).await
        }
        Cmd::Browse(args) => browse::run(args).await,
        Cmd::Send(args) => send::run(args).await,
        Cmd::Receive(args) => receive::run(args).await,
        Cmd::Bench(args) => bench::run(args).await,
        Cmd::Passwd(args) => passwd::run(args),
        Cmd::CheckLock {
            dir,
            other_path,
            json,
        } => check_lock(&dir, other_path.as_deref(), json),
    }
}

/// `ctl check-lock`: the report on stdout, then, if the check failed, one line on stderr and
/// exit 1 (the report already lists every failure). A check that cannot run at all exits 2.
fn check_lock(dir: &Path, other_path: Option<&Path>, json: bool) -> anyhow::Result<()> {
    let report = shared_proto::lock_check::run(dir, other_path)?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.render());
    }
    if report.passed() {
        return Ok(());
    }
    Err(Refused(format!(
        "the lock check failed (the lock on {} {}): see {} above",
        dir.display(),
        report.verdict(),
        if json {
            "\"failures\" in the report"
        } else {
            "the FAIL lines"
        }
    ))
    .into())
}

fn init(dir: PathBuf, broker_user: Option<String>) -> anyhow::Result<()> {
    let owner = match broker_user {
        Some(name) => match nix::unistd::User::from_name(&name) {
            Ok(Some(user)) => Some((user.uid.as_raw(), user.gid.as_raw())),
            Ok(None) => bail!("no such user {name:?}"),
            Err(e) => bail!("looking up user {name:?}: {e}"),
        },
        None => None,
    };
    let layout = Layout::new(&dir);
    let marker = layout
        .init(owner)
        .with_context(|| format!("cannot prepare {}", dir.display()))?;
    println!(
        "{} is ready (cluster {}); point every node's shared_dir at it",
        dir.display(),
        marker.cluster_id
    );
    Ok(())
}

async fn failover(socket: &std::path::Path, wait: bool, timeout: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut client = Client::connect(socket).await?;
    let epoch = match client.request(&Request::Failover).await? {
        Response::FailoverStarted { epoch, hold_off_ms } => {
            if !wait {
                println!(
                    "{}: failover started, gave up epoch {epoch}; holding off for up to {hold_off_ms} ms",
                    client.node
                );
                return Ok(());
            }
            epoch
        }
        Response::Error {
            code: ErrorCode::Denied,
            message,
        } => return Err(Refused(format!("failover refused: {message}")).into()),
        Response::Error { message, .. } => return Err(Refused(message).into()),
        other => bail!("unexpected answer to failover: {other:?}"),
    };
    loop {
        let status = client.status().await?;
        if let Some(holder) = &status.holder {
            if holder.node != client.node
                && holder.epoch > epoch
                && holder.state == HolderState::Active
            {
                println!(
                    "{} is active (epoch {}); handover from {} took {} ms",
                    holder.node,
                    holder.epoch,
                    client.node,
                    started.elapsed().as_millis()
                );
                return Ok(());
            }
        }
        if started.elapsed() >= timeout {
            let role = status.role;
            let hint = if role == Role::HoldOff {
                "no other node took the lock; are the other nodes running and passive?"
            } else {
                "this node is competing again"
            };
            return Err(Refused(format!(
                "no other node became active within {} ms ({} is {role}): {hint}",
                timeout.as_millis(),
                client.node
            ))
            .into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
