//! `ctl bench`: P producers and C consumers, each a failover client on its own connection.
//!
//! Consumers subscribe first (each SUBSCRIBE is receipted), then every producer starts at the
//! same instant t0. Every SEND carries `bench-run` (this run's id, so leftovers of earlier
//! runs are counted as `stale`, not measured) and `bench-ts` (wall-clock µs), and latency is
//! receive time minus `bench-ts`. With a receipt window W > 0 a message counts as sent when
//! its RECEIPT arrives; with W = 0 when written, and the producer's time ends at its
//! DISCONNECT receipt. The JSON field names follow stompbench's so the two can be compared.
//!
//! The bench runs on ctl's single-threaded runtime on purpose: against a broker sharing the
//! same two cores, one client thread measured less CPU per message (about 3 us with a receipt
//! window, 25 us at window 1, against 3.5 and 38 us with two worker threads) and still
//! generates 150k-300k msg/s, far above issue 3's targets.
//!
//! `--preset issue3` runs issue 3's five configurations one after another, each on a fresh
//! queue, and prints them beside ActiveMQ Classic's figures and the 3x target.
//!
//! Selectors: with `--shards N` every SEND also carries `shard` (0, 1, .. N-1 in turn over all
//! messages, so the shards are even), and with `--selectors` consumer i subscribes with the
//! selector `shard = 'i mod N'` and counts an error for any message of another shard, so a
//! broker that ignored selectors could not look fast. `--preset selectors` runs issue 10's
//! check: one queue, 10 consumers, without selectors and then with a different one each, and
//! prints the ratio of the two rates.

use crate::{Refused, StompArgs};
use anyhow::{anyhow, bail, Context};
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use stomp_client::{AckMode, Bytes, Client, Receipt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

mod report;
#[cfg(test)]
mod tests;

use report::{render, render_selector_table, render_table};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    stomp: StompArgs,
    #[arg(long, default_value_t = 1)]
    producers: usize,
    #[arg(long, default_value_t = 1)]
    consumers: usize,
    /// Messages in total, split across producers (per configuration with --preset).
    #[arg(long, default_value_t = 10_000)]
    messages: u64,
    /// Body size in bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Add `persistent:true` to every SEND.
    #[arg(long)]
    persistent: bool,
    /// SENDs each producer keeps awaiting their RECEIPT; 1 = synchronous; 0 = no receipts.
    #[arg(long, default_value_t = 100)]
    receipt_window: usize,
    /// auto, client or client-individual; in client modes every message is acked.
    #[arg(long, default_value = "auto")]
    ack: AckMode,
    /// `activemq.prefetchSize` on SUBSCRIBE (broker default when absent).
    #[arg(long)]
    prefetch: Option<u32>,
    /// Destination; default a fresh /queue/bench-<run id>. With /topic/... every consumer
    /// expects every message.
    #[arg(long)]
    dest: Option<String>,
    /// One JSON object on stdout instead of text.
    #[arg(long)]
    json: bool,
    /// Stamp every SEND with a `shard` header, 0..N-1 in turn over all messages (0: none).
    #[arg(long, default_value_t = 0)]
    shards: usize,
    /// Consumer i subscribes with the selector `shard = 'i mod N'` (needs --shards N and at
    /// least N consumers on a queue).
    #[arg(long, requires = "shards")]
    selectors: bool,
    /// Run a named set of configurations instead (ignores the load options above except
    /// --messages, --ack, --prefetch).
    #[arg(long, value_enum)]
    preset: Option<Preset>,
    /// Stop a run after this many seconds and report what was done.
    #[arg(long, default_value_t = 300)]
    timeout_s: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Preset {
    /// Issue 3's table: 1 KiB bodies, five configurations, with ActiveMQ's figures. The
    /// client's CPU per message is shown too: it shares the cores with the broker.
    Issue3,
    /// Issue 10's selector check: 1 KiB bodies spread over 10 shards, 4 producers and 10
    /// consumers on one queue, first without selectors, then each consumer selecting its own
    /// shard; persistent and non-persistent, with the ratio of the rates (the issue asks for
    /// selectors to cost at most 2x).
    Selectors,
}

/// One load configuration.
#[derive(Debug, Clone)]
struct Config {
    producers: usize,
    consumers: usize,
    messages: u64,
    size: usize,
    persistent: bool,
    receipt_window: usize,
    ack: AckMode,
    prefetch: Option<u32>,
    dest: String,
    timeout: Duration,
    /// Messages carry `shard` 0..shards-1 in turn (0: no such header).
    shards: usize,
    /// Consumer i selects shard i mod `shards`.
    selectors: bool,
}

/// One row of issue 3's table.
struct Row {
    label: &'static str,
    persistent: bool,
    window: usize,
    clients: usize,
    activemq: u64,
    target: u64,
}

const ISSUE3: [Row; 5] = [
    Row {
        label: "persistent, window 100, 1+1",
        persistent: true,
        window: 100,
        clients: 1,
        activemq: 3_222,
        target: 9_700,
    },
    Row {
        label: "persistent, window 100, 4+4",
        persistent: true,
        window: 100,
        clients: 4,
        activemq: 12_983,
        target: 39_000,
    },
    Row {
        label: "non-persistent, window 100, 1+1",
        persistent: false,
        window: 100,
        clients: 1,
        activemq: 19_380,
        target: 58_000,
    },
    Row {
        label: "non-persistent, window 100, 4+4",
        persistent: false,
        window: 100,
        clients: 4,
        activemq: 45_326,
        target: 136_000,
    },
    Row {
        label: "persistent, window 1, 1+1",
        persistent: true,
        window: 1,
        clients: 1,
        activemq: 2_753,
        target: 8_300,
    },
];

/// `--preset selectors`: clients and shards (10 consumers, each with its own shard).
const SELECTOR_PRODUCERS: usize = 4;
const SELECTOR_CONSUMERS: usize = 10;

/// One row of the selector comparison; a run with selectors follows the same run without.
struct SelectorRow {
    label: &'static str,
    persistent: bool,
    selectors: bool,
}

const SELECTOR_ROWS: [SelectorRow; 4] = [
    SelectorRow {
        label: "persistent, no selectors",
        persistent: true,
        selectors: false,
    },
    SelectorRow {
        label: "persistent, a selector each",
        persistent: true,
        selectors: true,
    },
    SelectorRow {
        label: "non-persistent, no selectors",
        persistent: false,
        selectors: false,
    },
    SelectorRow {
        label: "non-persistent, a selector each",
        persistent: false,
        selectors: true,
    },
];

/// The slowdown issue 10 allows selectors: their rate at least half the rate without.
const SELECTOR_MIN_RATIO: f64 = 0.5;

/// The header the producers stamp and the selectors read.
const SHARD: &str = "shard";

#[derive(Debug, Serialize)]
struct Latency {
    p50: Option<f64>,
    p99: Option<f64>,
    max: Option<f64>,
    mean: Option<f64>,
    samples: usize,
}

/// One run's result; field names as in stompbench's JSON line.
#[derive(Debug, Serialize)]
struct Report {
    tool: &'static str,
    url: String,
    dest: String,
    messages: u64,
    size: usize,
    producers: usize,
    consumers: usize,
    persistent: bool,
    receipt_window: usize,
    ack: &'static str,
    prefetch: Option<u32>,
    shards: usize,
    selectors: bool,
    t0_unix_ms: u64,
    sent: u64,
    received: u64,
    stale: u64,
    errors: u64,
    first_error: Option<String>,
    timed_out: bool,
    send_s: f64,
    recv_s: f64,
    sent_per_s: f64,
    received_per_s: f64,
    latency_ms: Latency,
    client_cpu_s: f64,
    reconnects: u64,
    resent: u64,
}

impl Report {
    /// The rate a configuration sustained end to end.
    fn rate(&self) -> f64 {
        match (self.producers, self.consumers) {
            (_, 0) => self.sent_per_s,
            (0, _) => self.received_per_s,
            _ => self.sent_per_s.min(self.received_per_s),
        }
    }

    fn clean(&self) -> bool {
        self.errors == 0 && !self.timed_out
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let run_id = run_id();
    match args.preset {
        None => single(&args, &run_id).await,
        Some(Preset::Issue3) => issue3(&args, &run_id).await,
        Some(Preset::Selectors) => selectors(&args, &run_id).await,
    }
}

/// One run of the configuration the options describe.
async fn single(args: &Args, run_id: &str) -> anyhow::Result<()> {
    let config = Config {
        producers: args.producers,
        consumers: args.consumers,
        messages: args.messages,
        size: args.size,
        persistent: args.persistent,
        receipt_window: args.receipt_window,
        ack: args.ack,
        prefetch: args.prefetch,
        dest: args
            .dest
            .clone()
            .unwrap_or_else(|| format!("/queue/bench-{run_id}")),
        timeout: Duration::from_secs(args.timeout_s),
        shards: args.shards,
        selectors: args.selectors,
    };
    let report = measure(&args.stomp, &config, run_id).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", render(&report));
    }
    verdict(&[&report])
}

/// `--preset issue3`: issue 3's table.
async fn issue3(args: &Args, run_id: &str) -> anyhow::Result<()> {
    let mut reports = Vec::new();
    for (i, row) in ISSUE3.iter().enumerate() {
        let config = Config {
            producers: row.clients,
            consumers: row.clients,
            messages: args.messages,
            size: 1024,
            persistent: row.persistent,
            receipt_window: row.window,
            ack: args.ack,
            prefetch: args.prefetch,
            dest: format!("/queue/bench-{run_id}-{}", i + 1),
            timeout: Duration::from_secs(args.timeout_s),
            shards: 0,
            selectors: false,
        };
        if !args.json {
            eprintln!("ctl bench: {} ...", row.label);
        }
        let report = measure(&args.stomp, &config, run_id)
            .await
            .with_context(|| row.label)?;
        reports.push(report);
    }
    if args.json {
        let runs: Vec<serde_json::Value> = ISSUE3
            .iter()
            .zip(&reports)
            .map(|(row, report)| {
                let mut value = serde_json::to_value(report).unwrap_or_default();
                value["label"] = row.label.into();
                value["activemq_per_s"] = row.activemq.into();
                value["target_per_s"] = row.target.into();
                value["meets_target"] = (report.rate() >= row.target as f64).into();
                value
            })
            .collect();
        let out = serde_json::json!({"tool": "ctl bench", "preset": "issue3", "url": args.stomp.url, "runs": runs});
        println!("{out}");
    } else {
        print!("{}", render_table(&reports));
    }
    verdict(&reports.iter().collect::<Vec<_>>())
}

/// `--preset selectors`: the same queue load without and with a selector per consumer.
async fn selectors(args: &Args, run_id: &str) -> anyhow::Result<()> {
    let mut reports = Vec::new();
    for (i, row) in SELECTOR_ROWS.iter().enumerate() {
        let config = Config {
            producers: SELECTOR_PRODUCERS,
            consumers: SELECTOR_CONSUMERS,
            messages: args.messages,
            size: 1024,
            persistent: row.persistent,
            receipt_window: 100,
            ack: args.ack,
            prefetch: args.prefetch,
            dest: format!("/queue/bench-{run_id}-{}", i + 1),
            timeout: Duration::from_secs(args.timeout_s),
            shards: SELECTOR_CONSUMERS,
            selectors: row.selectors,
        };
        if !args.json {
            eprintln!("ctl bench: {} ...", row.label);
        }
        let report = measure(&args.stomp, &config, run_id)
            .await
            .with_context(|| row.label)?;
        reports.push(report);
    }
    let ratios = selector_ratios(&reports);
    if args.json {
        let runs: Vec<serde_json::Value> = SELECTOR_ROWS
            .iter()
            .zip(&reports)
            .map(|(row, report)| {
                let mut value = serde_json::to_value(report).unwrap_or_default();
                value["label"] = row.label.into();
                value
            })
            .collect();
        let ratios: serde_json::Map<String, serde_json::Value> = ratios
            .iter()
            .map(|(persistence, ratio)| (persistence.replace('-', "_"), (*ratio).into()))
            .collect();
        let out = serde_json::json!({
            "tool": "ctl bench",
            "preset": "selectors",
            "url": args.stomp.url,
            "runs": runs,
            "ratios": ratios,
            "min_ratio": SELECTOR_MIN_RATIO,
        });
        println!("{out}");
    } else {
        print!("{}", render_selector_table(&reports, &ratios));
    }
    verdict(&reports.iter().collect::<Vec<_>>())
}

/// Per persistence, the rate with selectors over the rate without (rows come in such pairs).
fn selector_ratios(reports: &[Report]) -> Vec<(&'static str, f64)> {
    reports
        .chunks(2)
        .filter_map(|pair| match pair {
            [without, with] if !without.selectors && with.selectors => Some((
                if with.persistent {
                    "persistent"
                } else {
                    "non-persistent"
                },
                r3(with.rate() / without.rate()),
            )),
            _ => None,
        })
        .collect()
}

fn verdict(reports: &[&Report]) -> anyhow::Result<()> {
    match reports.iter().find(|r| !r.clean()) {
        None => Ok(()),
        Some(r) if r.timed_out => Err(Refused(format!("{}: timed out", r.dest)).into()),
        Some(r) => Err(Refused(format!(
            "{}: {} errors, first: {}",
            r.dest,
            r.errors,
            r.first_error.as_deref().unwrap_or("?")
        ))
        .into()),
    }
}

/// Counters every task updates; times are µs since `base`.
struct Shared {
    base: Instant,
    run_id: String,
    expected: u64,
    sent: AtomicU64,
    received: AtomicU64,
    stale: AtomicU64,
    errors: AtomicU64,
    last_sent_us: AtomicU64,
    last_recv_us: AtomicU64,
    first_error: Mutex<Option<String>>,
    latencies_us: Mutex<Vec<u32>>,
    stop: watch::Sender<bool>,
}

impl Shared {
    fn now_us(&self) -> u64 {
        self.base.elapsed().as_micros() as u64
    }

    fn error(&self, e: &anyhow::Error) {
        self.errors.fetch_add(1, Relaxed);
        let mut first = self.first_error.lock().unwrap();
        if first.is_none() {
            eprintln!("ctl bench: {e:#}");
            *first = Some(format!("{e:#}"));
        }
    }
}

async fn measure(stomp: &StompArgs, config: &Config, run_id: &str) -> anyhow::Result<Report> {
    if config.producers == 0 && config.consumers == 0 {
        bail!("nothing to do: --producers and --consumers are both 0");
    }
    let topic = config.dest.starts_with("/topic/");
    if config.selectors && config.shards == 0 {
        bail!("--selectors needs --shards");
    }
    if config.selectors && !topic && config.consumers < config.shards {
        bail!(
            "--selectors with {} shards needs at least {} consumers, or some shards are never \
             consumed",
            config.shards,
            config.shards
        );
    }
    // The shard consumer i selects, if it selects one.
    let selected = |i: usize| config.selectors.then(|| i % config.shards);
    let expected = match (config.producers, config.consumers) {
        (_, 0) => 0,
        (_, c) if topic => (0..c)
            .map(|i| {
                selected(i).map_or(config.messages, |k| {
                    in_shard(config.messages, config.shards, k)
                })
            })
            .sum(),
        _ => config.messages,
    };
    let deadline = tokio::time::Instant::now() + config.timeout;
    let shared = Arc::new(Shared {
        base: Instant::now(),
        run_id: run_id.to_string(),
        expected,
        sent: AtomicU64::new(0),
        received: AtomicU64::new(0),
        stale: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        last_sent_us: AtomicU64::new(0),
        last_recv_us: AtomicU64::new(0),
        first_error: Mutex::new(None),
        latencies_us: Mutex::new(Vec::new()),
        stop: watch::channel(false).0,
    });
    let cpu0 = cpu_seconds();
    let mut options = stomp.options();
    options.receipt_window = config.receipt_window.max(1);
    let mut clients = Vec::new();

    let prefetch = config.prefetch.map(|p| p.to_string());
    let mut consumers = Vec::new();
    for i in 0..config.consumers {
        let client = stomp.connect(options.clone()).await?;
        let mut headers = Vec::new();
        if let Some(p) = &prefetch {
            headers.push(("activemq.prefetchSize", p.as_str()));
        }
        let shard = selected(i);
        let expression = shard.map(selector);
        if let Some(expression) = &expression {
            headers.push(("selector", expression.as_str()));
        }
        let sub = client
            .subscribe(&config.dest, config.ack, &headers)
            .await
            .with_context(|| format!("consumer {i}: subscribing to {}", config.dest))?;
        clients.push(client.clone());
        consumers.push(tokio::spawn(consume(client, sub, shard, shared.clone())));
    }
    let (go, go_rx) = watch::channel(false);
    let mut producers = Vec::new();
    let body = crate::send::filler(config.size);
    // Producer i sends messages first..first+share of the run (they number the shards).
    let mut first = 0;
    for i in 0..config.producers {
        let client = stomp.connect(options.clone()).await?;
        let share = config.messages / config.producers as u64
            + u64::from((i as u64) < config.messages % config.producers as u64);
        clients.push(client.clone());
        producers.push(tokio::spawn(produce(
            client,
            first..first + share,
            config.clone(),
            body.clone(),
            shared.clone(),
            go_rx.clone(),
        )));
        first += share;
    }
    let t0_us = shared.now_us();
    let t0_unix_ms = wall_us() / 1000;
    go.send_replace(true);
    let progress = show_progress(&shared, config);

    let mut timed_out = !join_until(&mut producers, deadline, &shared).await;
    if config.producers == 0 {
        shared.stop.send_replace(true);
    }
    let consumer_deadline = if shared.errors.load(Relaxed) > 0 {
        deadline.min(tokio::time::Instant::now() + Duration::from_secs(5))
    } else {
        deadline
    };
    if !timed_out && !join_until(&mut consumers, consumer_deadline, &shared).await {
        timed_out = consumer_deadline == deadline;
        shared.stop.send_replace(true);
        let grace = tokio::time::Instant::now() + Duration::from_secs(3);
        join_until(&mut consumers, grace, &shared).await;
    }
    for handle in producers.iter().chain(consumers.iter()) {
        handle.abort();
    }
    progress.abort();
    let _ = progress.await;
    let (mut reconnects, mut resent) = (0, 0);
    for client in &clients {
        let stats = client.stats();
        reconnects += stats.reconnects;
        resent += stats.resent;
    }
    drop(clients);

    let (sent, received) = (shared.sent.load(Relaxed), shared.received.load(Relaxed));
    let span = |last: u64| last.saturating_sub(t0_us) as f64 / 1e6;
    let (send_s, recv_s) = (
        span(shared.last_sent_us.load(Relaxed)),
        span(shared.last_recv_us.load(Relaxed)),
    );
    let rate = |n: u64, s: f64| if s > 0.0 { r3(n as f64 / s) } else { 0.0 };
    let mut lat = std::mem::take(&mut *shared.latencies_us.lock().unwrap());
    lat.sort_unstable();
    let ms = |p: f64| percentile(&lat, p).map(|us| r3(us as f64 / 1000.0));
    let mean = (!lat.is_empty())
        .then(|| r3(lat.iter().map(|&v| v as f64).sum::<f64>() / lat.len() as f64 / 1000.0));
    let first_error = shared.first_error.lock().unwrap().clone();
    Ok(Report {
        tool: "ctl bench",
        url: stomp.url.clone(),
        dest: config.dest.clone(),
        messages: config.messages,
        size: config.size,
        producers: config.producers,
        consumers: config.consumers,
        persistent: config.persistent,
        receipt_window: config.receipt_window,
        ack: config.ack.as_str(),
        prefetch: config.prefetch,
        shards: config.shards,
        selectors: config.selectors,
        t0_unix_ms,
        sent,
        received,
        stale: shared.stale.load(Relaxed),
        errors: shared.errors.load(Relaxed),
        first_error,
        timed_out,
        send_s: r3(send_s),
        recv_s: r3(recv_s),
        sent_per_s: rate(sent, send_s),
        received_per_s: rate(received, recv_s),
        latency_ms: Latency {
            p50: ms(50.0),
            p99: ms(99.0),
            max: ms(100.0),
            mean,
            samples: lat.len(),
        },
        client_cpu_s: r3(cpu_seconds() - cpu0),
        reconnects,
        resent,
    })
}

/// A progress bar (on a terminal) following the run's counters until the returned task is
/// aborted, which clears it: received of expected, or receipted of sent when nothing consumes.
fn show_progress(shared: &Arc<Shared>, config: &Config) -> JoinHandle<()> {
    let consuming = shared.expected > 0;
    let total = if consuming {
        shared.expected
    } else {
        config.messages
    };
    let bar = crate::progress::bar(Some(total), &format!("bench {}", config.dest));
    let shared = shared.clone();
    tokio::spawn(async move {
        // Cleared however the task ends (aborted at the end of the run).
        struct Clear(indicatif::ProgressBar);
        impl Drop for Clear {
            fn drop(&mut self) {
                self.0.finish_and_clear();
            }
        }
        let bar = Clear(bar);
        loop {
            let (sent, received) = (shared.sent.load(Relaxed), shared.received.load(Relaxed));
            bar.0.set_position(if consuming { received } else { sent });
            bar.0
                .set_message(format!("sent {sent}, received {received}"));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

async fn produce(
    client: Client,
    numbers: std::ops::Range<u64>,
    config: Config,
    body: Bytes,
    shared: Arc<Shared>,
    mut go: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    go.wait_for(|g| *g).await?;
    let window = config.receipt_window;
    // Receipts are awaited in order on a second task; the client's window bounds them.
    let (receipts, mut pending) = mpsc::channel::<Receipt>(window.max(1));
    let collector = {
        let shared = shared.clone();
        tokio::spawn(async move {
            while let Some(receipt) = pending.recv().await {
                receipt.await?;
                shared.sent.fetch_add(1, Relaxed);
                shared.last_sent_us.fetch_max(shared.now_us(), Relaxed);
            }
            anyhow::Ok(())
        })
    };
    for number in numbers {
        let ts = wall_us().to_string();
        let shard = (config.shards > 0).then(|| (number % config.shards as u64).to_string());
        let mut headers = vec![("bench-run", shared.run_id.as_str()), ("bench-ts", &ts)];
        if config.persistent {
            headers.push(("persistent", "true"));
        }
        if let Some(shard) = &shard {
            headers.push((SHARD, shard));
        }
        if window == 0 {
            client
                .send_unreceipted(&config.dest, &headers, body.clone())
                .await?;
            shared.sent.fetch_add(1, Relaxed);
        } else {
            let receipt = client.send(&config.dest, &headers, body.clone()).await?;
            if receipts.send(receipt).await.is_err() {
                break; // the collector failed; its error is reported below
            }
        }
    }
    drop(receipts);
    collector.await.context("receipt collector")??;
    // The DISCONNECT receipt proves the broker processed every SEND before it.
    crate::close(client).await?;
    if window == 0 {
        shared.last_sent_us.fetch_max(shared.now_us(), Relaxed);
    }
    Ok(())
}

/// Receives (and acks) until the run has everything; with `shard`, a message of another shard
/// is an error: the broker did not honour the consumer's selector.
async fn consume(
    client: Client,
    mut sub: stomp_client::Subscription,
    shard: Option<usize>,
    shared: Arc<Shared>,
) -> anyhow::Result<()> {
    let mut stop = shared.stop.subscribe();
    let mut lat = Vec::with_capacity(4096);
    let shard = shard.map(|k| k.to_string());
    let result: anyhow::Result<()> = async {
        loop {
            let message = tokio::select! {
                m = sub.next() => m.ok_or_else(|| anyhow!("consumer's client closed"))?,
                _ = stop.wait_for(|s| *s) => return Ok(()),
            };
            client.ack(&message).await?;
            if message.header("bench-run") != Some(shared.run_id.as_str()) {
                shared.stale.fetch_add(1, Relaxed);
                continue;
            }
            if let Some(want) = &shard {
                let got = message.header(SHARD);
                if got != Some(want.as_str()) {
                    shared.error(&anyhow!(
                        "a consumer selecting shard {want} got shard {}",
                        got.unwrap_or("(none)")
                    ));
                }
            }
            if let Some(ts) = message
                .header("bench-ts")
                .and_then(|t| t.parse::<u64>().ok())
            {
                lat.push(wall_us().saturating_sub(ts).min(u32::MAX as u64) as u32);
            }
            shared.last_recv_us.fetch_max(shared.now_us(), Relaxed);
            if shared.received.fetch_add(1, Relaxed) + 1 == shared.expected {
                shared.stop.send_replace(true);
            }
            if lat.len() >= 4096 {
                shared.latencies_us.lock().unwrap().append(&mut lat);
            }
        }
    }
    .await;
    shared.latencies_us.lock().unwrap().append(&mut lat);
    result?;
    drop(sub);
    crate::close(client).await?;
    Ok(())
}

/// The selector of the consumer that takes shard `k`.
fn selector(k: usize) -> String {
    format!("{SHARD} = '{k}'")
}

/// How many of `messages` (stamped 0, 1, .. shards-1 in turn) carry shard `k`.
fn in_shard(messages: u64, shards: usize, k: usize) -> u64 {
    let shards = shards as u64;
    messages / shards + u64::from((k as u64) < messages % shards)
}

/// Joins the tasks until `deadline`; false if it passed first.
async fn join_until(
    handles: &mut Vec<JoinHandle<anyhow::Result<()>>>,
    deadline: tokio::time::Instant,
    shared: &Shared,
) -> bool {
    for handle in handles.iter_mut() {
        match tokio::time::timeout_at(deadline, handle).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => shared.error(&e),
            Ok(Err(e)) => shared.error(&anyhow!("task failed: {e}")),
            Err(_) => return false,
        }
    }
    handles.clear();
    true
}

fn run_id() -> String {
    format!("{:x}-{}", wall_us(), std::process::id())
}

/// Wall-clock µs since the epoch: producer and consumer stamps compare across processes.
fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// CPU seconds (user + system) this process used: what the tool took from the broker's cores.
fn cpu_seconds() -> f64 {
    use nix::sys::resource::{getrusage, UsageWho};
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(usage) => {
            let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
            secs(usage.user_time()) + secs(usage.system_time())
        }
        Err(_) => f64::NAN,
    }
}

/// Nearest-rank percentile of an ascending slice.
fn percentile(sorted: &[u32], p: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
