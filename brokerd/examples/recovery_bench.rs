//! Measures the journal: group-commit throughput, and the store's open + recovery time after a
//! crash with a large backlog (issue 3, "Failover behaviour").
//!
//! ```text
//! cargo run --release -p brokerd --example recovery_bench -- --messages 100000
//! ```
//!
//! Throughput: 1 and then 100 concurrent producers (tokio tasks) each put a 1 KiB message and
//! wait for its `on_durable` before the next, like producers with a receipt window of 1.
//! Recovery: the bench runs itself as a child that fills a fresh store with `--messages` 1 KiB
//! messages through the journal, waits until they are durable, says so, and is SIGKILLed; the
//! parent then times opening the store (sled replays its log) and reading every message back,
//! and a second open (sled wrote a snapshot during the first). Figures go to stdout as text and
//! as one JSON line. Data lives under `--dir` (default: a temp dir under /tmp), deleted at the end.
//!
//! The stored values are broker messages (`Message::encode`, 10 queues), so a real brokerd can
//! take the store over: with `--brokerd PATH` (repeatable, e.g. a build before and after a
//! change), each binary is started standalone on its own copy of the crashed store and timed
//! from spawn to its "ready" log line (open + recovery + listeners), and its resident memory is
//! read from /proc right then.

use anyhow::{bail, Context, Result};
use brokerd::broker::message::Message;
use brokerd::journal::{self, Journal, JournalConfig};
use brokerd::store;
use bytes::Bytes;
use clap::Parser;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use store::{Retry, Store, Tuning};

#[derive(Debug, Parser)]
struct Args {
    /// Messages in the store whose recovery is measured (0 skips recovery).
    #[arg(long, default_value_t = 100_000)]
    messages: u64,
    /// Seconds each throughput run lasts (0 skips throughput).
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Message body size in bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// sled cache capacity in MiB (default: the store's tuning).
    #[arg(long)]
    cache_mb: Option<u64>,
    /// sled segment size in KiB, a power of two (default: the store's tuning).
    #[arg(long)]
    segment_kb: Option<usize>,
    /// sled mode: "high-throughput" or "low-space" (default: the store's tuning).
    #[arg(long)]
    mode: Option<String>,
    /// sled's background flush period in ms; 0 turns it off (default: the store's tuning).
    #[arg(long)]
    background_flush_ms: Option<u64>,
    /// Parent directory for the test stores.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// brokerd binaries whose takeover of the crashed store is timed.
    #[arg(long)]
    brokerd: Vec<PathBuf>,
    /// Internal: fill the store in this directory, report, and wait to be killed.
    #[arg(long, hide = true)]
    fill: Option<PathBuf>,
}

impl Args {
    fn tuning(&self) -> Result<Tuning> {
        let mut tuning = Tuning::default();
        if let Some(mb) = self.cache_mb {
            tuning.cache_capacity = mb * 1024 * 1024;
        }
        if let Some(kb) = self.segment_kb {
            if !kb.is_power_of_two() {
                bail!("--segment-kb must be a power of two, not {kb}");
            }
            tuning.segment_size = kb * 1024;
        }
        match self.mode.as_deref() {
            None => {}
            Some("high-throughput") => tuning.mode = sled::Mode::HighThroughput,
            Some("low-space") => tuning.mode = sled::Mode::LowSpace,
            Some(other) => bail!("unknown --mode {other:?}"),
        }
        if let Some(ms) = self.background_flush_ms {
            tuning.flush_every_ms = (ms > 0).then_some(ms);
        }
        Ok(tuning)
    }

    /// The tuning flags, to hand to the child.
    fn tuning_flags(&self) -> Vec<String> {
        let mut flags = vec!["--size".to_string(), self.size.to_string()];
        let mut add = |name: &str, value: Option<String>| {
            if let Some(value) = value {
                flags.push(name.to_string());
                flags.push(value);
            }
        };
        add("--cache-mb", self.cache_mb.map(|v| v.to_string()));
        add("--segment-kb", self.segment_kb.map(|v| v.to_string()));
        add("--mode", self.mode.clone());
        add(
            "--background-flush-ms",
            self.background_flush_ms.map(|v| v.to_string()),
        );
        flags
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let tuning = args.tuning()?;
    if let Some(dir) = &args.fill {
        return runtime.block_on(fill(dir, args.messages, args.size, tuning));
    }
    let parent = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let root = tempfile::Builder::new()
        .prefix("recovery-bench-")
        .tempdir_in(&parent)
        .with_context(|| format!("creating a directory under {parent:?}"))?;
    println!("tuning: {tuning:?}");
    let mut json = vec![
        format!("\"messages\":{}", args.messages),
        format!("\"size\":{}", args.size),
        format!("\"tuning\":{:?}", format!("{tuning:?}")),
    ];
    // Recovery first, so that its peak RSS is its own.
    if args.messages > 0 {
        let run = recovery(&runtime, &root.path().join("recovery"), &args, tuning)?;
        println!(
            "recovery: {} messages: fill {:.1} s ({:.0} msgs/s), {:.0} MiB on disk; after SIGKILL: open {:.0} ms; takeover (open + spaces + first {HEAD} of each) {:.0} ms, peak RSS {} MiB; read all {:.0} ms, open+read all {:.0} ms, peak RSS {} MiB; second open {:.0} ms",
            run.count,
            run.fill.as_secs_f64(),
            args.messages as f64 / run.fill.as_secs_f64(),
            run.disk_bytes as f64 / 1048576.0,
            ms(run.open),
            ms(run.open + run.head),
            run.head_rss_kib / 1024,
            ms(run.read),
            ms(run.open + run.head + run.read),
            run.peak_rss_kib / 1024,
            ms(run.reopen),
        );
        json.push(format!(
            "\"recovery\":{{\"count\":{},\"fill_s\":{:.2},\"disk_mib\":{:.0},\"open_ms\":{:.0},\"takeover_ms\":{:.0},\"takeover_rss_mib\":{},\"read_ms\":{:.0},\"open_read_ms\":{:.0},\"second_open_ms\":{:.0},\"peak_rss_mib\":{}}}",
            run.count,
            run.fill.as_secs_f64(),
            run.disk_bytes as f64 / 1048576.0,
            ms(run.open),
            ms(run.open + run.head),
            run.head_rss_kib / 1024,
            ms(run.read),
            ms(run.open + run.head + run.read),
            ms(run.reopen),
            run.peak_rss_kib / 1024
        ));
        let mut takeovers = Vec::new();
        for takeover in &run.brokerd {
            println!(
                "brokerd takeover: {:?}: spawn to ready {:.0} ms, RSS {} MiB (peak {} MiB)",
                takeover.binary,
                ms(takeover.ready),
                takeover.rss_kib / 1024,
                takeover.peak_rss_kib / 1024,
            );
            takeovers.push(format!(
                "{{\"binary\":{:?},\"ready_ms\":{:.0},\"rss_mib\":{},\"peak_rss_mib\":{}}}",
                takeover.binary.display().to_string(),
                ms(takeover.ready),
                takeover.rss_kib / 1024,
                takeover.peak_rss_kib / 1024
            ));
        }
        json.push(format!("\"brokerd_takeover\":[{}]", takeovers.join(",")));
    }
    if args.seconds > 0 {
        for producers in [1usize, 100] {
            let run = runtime.block_on(throughput(
                &root.path().join(format!("throughput-{producers}")),
                producers,
                Duration::from_secs(args.seconds),
                args.size,
                tuning,
            ))?;
            println!(
                "throughput: {producers:>3} producers: {:>8.0} msgs/s, {:>6.0} flushes/s, {:.1} msgs/flush, apply {:.0} us + flush {:.0} us per batch",
                run.msgs_per_s,
                run.flushes_per_s,
                run.msgs_per_s / run.flushes_per_s.max(1.0),
                run.apply_us,
                run.flush_us,
            );
            json.push(format!(
                "\"throughput_{producers}\":{{\"msgs_per_s\":{:.0},\"flushes_per_s\":{:.0},\"apply_us\":{:.0},\"flush_us\":{:.0}}}",
                run.msgs_per_s, run.flushes_per_s, run.apply_us, run.flush_us
            ));
        }
    }
    println!("{{{}}}", json.join(","));
    root.close().context("deleting the test stores")?;
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct Throughput {
    msgs_per_s: f64,
    flushes_per_s: f64,
    /// Mean time of one apply and one flush, in µs.
    apply_us: f64,
    flush_us: f64,
}

/// `producers` tasks, each putting one message and awaiting its durability before the next.
async fn throughput(
    dir: &Path,
    producers: usize,
    length: Duration,
    size: usize,
    tuning: Tuning,
) -> Result<Throughput> {
    let store = Store::open_tuned(dir, Retry::default(), tuning).await?;
    let journal = Journal::start(&store, JournalConfig::default())?;
    let body = Bytes::from(vec![b'x'; size]);
    let started = Instant::now();
    let deadline = started + length;
    let tasks: Vec<_> = (0..producers)
        .map(|p| {
            let (journal, body) = (journal.clone(), body.clone());
            let space: Arc<str> = Arc::from(format!("q/bench-{}", p % 10));
            tokio::spawn(async move {
                let mut sent = 0u64;
                while Instant::now() < deadline {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    let key = Bytes::from([(p as u64).to_be_bytes(), sent.to_be_bytes()].concat());
                    journal.put(
                        Arc::clone(&space),
                        key,
                        body.clone(),
                        Some(Box::new(move || {
                            let _ = tx.send(());
                        })),
                    );
                    if rx.await.is_err() {
                        break; // the writer failed; reported below
                    }
                    sent += 1;
                }
                sent
            })
        })
        .collect();
    let mut sent = 0;
    for task in tasks {
        sent += task.await.context("a producer task")?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let stats = journal.stats();
    tokio::task::spawn_blocking(move || journal.close())
        .await
        .context("closing the journal")??;
    Ok(Throughput {
        msgs_per_s: sent as f64 / elapsed,
        flushes_per_s: stats.flushes as f64 / elapsed,
        apply_us: stats.apply_time.as_secs_f64() * 1e6 / stats.flushes.max(1) as f64,
        flush_us: stats.flush_time.as_secs_f64() * 1e6 / stats.flushes.max(1) as f64,
    })
}

struct Recovery {
    count: u64,
    fill: Duration,
    disk_bytes: u64,
    open: Duration,
    read: Duration,
    reopen: Duration,
    head: Duration,
    head_rss_kib: u64,
    peak_rss_kib: u64,
    brokerd: Vec<Takeover>,
}

/// One brokerd's takeover of the crashed store.
struct Takeover {
    binary: PathBuf,
    /// From spawn to the "ready" log line.
    ready: Duration,
    rss_kib: u64,
    peak_rss_kib: u64,
}

/// Entries of each space read by the "takeover" measurement, like a broker's first page.
const HEAD: usize = 1000;

/// Fills a store in a child, SIGKILLs it, and times the takeover.
fn recovery(
    runtime: &tokio::runtime::Runtime,
    dir: &Path,
    args: &Args,
    tuning: Tuning,
) -> Result<Recovery> {
    let started = Instant::now();
    let mut child = Command::new(std::env::current_exe().context("finding this program")?)
        .arg("--fill")
        .arg(dir)
        .args(["--messages", &args.messages.to_string()])
        .args(args.tuning_flags())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the filling child")?;
    let stdout = child.stdout.take().context("the child's stdout")?;
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .context("reading the child's report")?;
    let fill = started.elapsed();
    // SIGKILL: no close, no flush on drop, sled's lock released only by the kernel.
    child.kill().context("killing the child")?;
    child.wait().context("reaping the child")?;
    if line.trim() != "filled" {
        bail!("the child did not fill the store (it said {line:?})");
    }
    let disk_bytes = disk_use(dir)?;
    let mut brokerd = Vec::new();
    for binary in &args.brokerd {
        brokerd.push(takeover(binary, dir)?);
    }

    let began = Instant::now();
    let store = runtime.block_on(Store::open_tuned(dir, Retry::default(), tuning))?;
    let open = began.elapsed();
    // What a broker that pages messages in needs before it serves: the spaces and the head
    // of each (the first window of every queue).
    let began = Instant::now();
    let view = journal::recover(&store)?;
    let spaces = view.spaces()?;
    for space in &spaces {
        for entry in view.scan(space).take(HEAD) {
            entry?;
        }
    }
    let head = began.elapsed();
    let head_rss_kib = peak_rss_kib();
    // Everything, as a broker that keeps all messages in memory would need.
    let began = Instant::now();
    let mut count = 0u64;
    for space in &spaces {
        for entry in view.scan(space) {
            let entry = entry?;
            let body = Message::decode(&entry.value).map(|m| m.body.len());
            if body != Some(args.size) {
                bail!("a recovered message has a body of {body:?} bytes");
            }
            count += 1;
        }
    }
    let read = began.elapsed();
    if count != args.messages {
        bail!(
            "recovered {count} messages of {} reported durable",
            args.messages
        );
    }
    drop(view);
    drop(store);
    let began = Instant::now();
    let store = runtime.block_on(Store::open_tuned(dir, Retry::default(), tuning))?;
    let reopen = began.elapsed();
    drop(store);
    Ok(Recovery {
        count,
        fill,
        disk_bytes,
        open,
        read,
        reopen,
        head,
        head_rss_kib,
        peak_rss_kib: peak_rss_kib(),
        brokerd,
    })
}

/// Starts `binary` standalone on a copy of the crashed store in `dir` (so every binary takes
/// over the same state), times it to "ready", reads its memory, and kills it.
fn takeover(binary: &Path, dir: &Path) -> Result<Takeover> {
    let copy = dir.with_extension("takeover");
    let status = Command::new("cp")
        .arg("-a")
        .arg(dir)
        .arg(&copy)
        .status()
        .context("copying the store")?;
    if !status.success() {
        bail!("copying {dir:?} failed: {status}");
    }
    // Write the copy out first: brokerd's first flush (the epoch claim) would otherwise wait
    // for gigabytes of dirty pages, which a real takeover on a store at rest does not.
    let status = Command::new("sync").status().context("syncing the copy")?;
    if !status.success() {
        bail!("sync failed: {status}");
    }
    let started = Instant::now();
    let mut child = Command::new(binary)
        .arg("--data-dir")
        .arg(&copy)
        .args(["--listen", "127.0.0.1:0", "--node", "bench"])
        .env_remove(shared_proto::control::CONTROL_FD_ENV)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {binary:?}"))?;
    let stderr = child.stderr.take().context("brokerd's stderr")?;
    let mut ready = None;
    for line in BufReader::new(stderr).lines() {
        let line = line.context("reading brokerd's log")?;
        if line.contains("recovered") {
            println!("brokerd: {line}");
        }
        if line.contains(" ready ") {
            ready = Some(started.elapsed());
            break;
        }
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()))
        .context("reading brokerd's memory")?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    let (rss_kib, peak_rss_kib) = (field("VmRSS:"), field("VmHWM:"));
    child.kill().context("killing brokerd")?;
    child.wait().context("reaping brokerd")?;
    std::fs::remove_dir_all(&copy).with_context(|| format!("deleting {copy:?}"))?;
    let ready = ready.with_context(|| format!("{binary:?} never said ready"))?;
    Ok(Takeover {
        binary: binary.to_path_buf(),
        ready,
        rss_kib,
        peak_rss_kib,
    })
}

/// The child: fills the store through the journal, waits until all of it is durable, reports
/// "filled", and waits to be killed.
async fn fill(dir: &Path, messages: u64, size: usize, tuning: Tuning) -> Result<()> {
    let store = Store::open_tuned(dir, Retry::default(), tuning).await?;
    // Fenced like a broker of epoch 1, so a brokerd taking over claims a later epoch.
    store.fence(1).await?;
    let journal = Journal::start(&store, JournalConfig::default())?;
    let body = Bytes::from(vec![b'm'; size]);
    let destinations: Vec<Arc<str>> = (0..10)
        .map(|q| Arc::from(format!("/queue/backlog-{q}")))
        .collect();
    for n in 0..messages {
        let destination = Arc::clone(&destinations[(n % 10) as usize]);
        // As a broker of epoch 1 would store it.
        let seq = (1 << 40) | (n + 1);
        let message = Message {
            id: format!("ID:fill-1-{}", n + 1).into(),
            seq,
            destination: Arc::clone(&destination),
            headers: Vec::new(),
            body: body.clone(),
            persistent: true,
            priority: 4,
            expires: 0,
            redeliveries: 0,
            timestamp: n,
            sized: true,
            from: 0,
        };
        journal.put(
            Arc::from(format!("q/{destination}")),
            Bytes::copy_from_slice(&seq.to_be_bytes()),
            message.encode(),
            None,
        );
        // Bound what is queued, as the broker's flow control would.
        if journal.pending_bytes() > 32 * 1024 * 1024 {
            durable(&journal).await?;
        }
    }
    durable(&journal).await?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "filled").context("reporting")?;
    stdout.flush().context("reporting")?;
    std::future::pending::<()>().await;
    Ok(())
}

/// Waits until everything submitted so far is durable.
async fn durable(journal: &Journal) -> Result<()> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    journal.barrier(Box::new(move || {
        let _ = tx.send(());
    }));
    if rx.await.is_err() {
        bail!("the journal failed: {:?}", journal.failure());
    }
    Ok(())
}

fn disk_use(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {dir:?}"))? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            disk_use(&entry.path())?
        } else {
            std::os::unix::fs::MetadataExt::blocks(&meta) * 512
        };
    }
    Ok(total)
}

/// This process's peak resident memory (VmHWM), 0 if unknown.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
