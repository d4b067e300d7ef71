//! Scheduler benchmark (issue 9): a standalone release brokerd on a fresh temporary directory
//! per part, driven through the workspace's STOMP client (`stomp_client`, one thread for the
//! producers and one for the consumer; the client's CPU time is printed beside each rate).
//!
//! Figures in the README's "Scheduler figures"; the JSON line at the end has them all.
//!
//! 1. `scheduling`: `--schedules N` (default 100k) persistent SENDs with `AMQ_SCHEDULED_DELAY`
//!    an hour ahead, 4 producers, receipt window 100 each: receipted SENDs per second, and
//!    brokerd's resident memory before, right after the last receipt and once it is idle.
//! 2. `due`: N SENDs whose delays make them all fall due at one wall-clock time T, set a few
//!    seconds after the last should be receipted; one auto-ack consumer (prefetch 65536) records
//!    each arrival. Printed: lateness (arrival - T) p50/p99/max, when the last came, and the due
//!    deliveries per second (the burst is bound to come late: it measures throughput). Then
//!    the lateness once the broker has caught up: when brokerd is idle again, 2000 more SENDs
//!    one at a time (each receipt awaited), each due 1 s after it is sent, so that they fall
//!    due one by one while the next are sent; lateness is arrival minus that due time.
//! 3. `takeover`: a store with `--takeover-jobs N` (default 1M) pending schedules built through
//!    STOMP as in part 1 (its rate and memory printed too); brokerd SIGKILLed once idle, then
//!    `--rounds` times (default 5): a new brokerd spawned on the same directories, timed to its
//!    port answering CONNECT and to its "scheduler serving" log line, and SIGKILLed again. The
//!    same on a store with an empty scheduler, for comparison.
//!
//! Delays are computed after the producer's window has room, just before the SEND is queued,
//! so a job's due time (the broker's clock at the SEND plus the delay) is at most the SEND's
//! receipt time late; that bound is printed. Lateness is measured against the intended time.
//!
//! `--quick`: 10k schedules, 50k takeover jobs, 3 rounds. `--takeover-jobs 0` skips part 3.
//! Build first: `cargo build --release -p brokerd -p ha-tests --bins`; `tests/bench/scheduler.sh`
//! builds and runs it.

use ha_tests::{answers_stomp, free_port, min_median_max, status_kib, wait_until_every, WAIT};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use stomp_client::{AckMode, Bytes, Client, Options};
use tokio::sync::Semaphore;

const PRODUCERS: usize = 4;
const WINDOW: usize = 100;
const BODY_BYTES: usize = 1024;
/// Caught-up deliveries measured after the burst, each scheduled this far ahead of its SEND.
const TRICKLE: usize = 2000;
const TRICKLE_DELAY_MS: u64 = 1000;
/// A gap between deliveries of a burst worth printing, in ms.
const PAUSE_MS: f64 = 100.0;
/// Far enough ahead that nothing falls due during a run.
const FAR_MS: u64 = 3_600_000;

struct Args {
    schedules: usize,
    takeover_jobs: usize,
    rounds: usize,
}

impl Args {
    fn parse() -> Result<Args, String> {
        let usage =
            "usage: scheduler-bench [--schedules N] [--takeover-jobs N] [--rounds N] [--quick]";
        let mut args = Args {
            schedules: 100_000,
            takeover_jobs: 1_000_000,
            rounds: 5,
        };
        let mut given = std::env::args().skip(1);
        while let Some(arg) = given.next() {
            let mut number = |name: &str| {
                given
                    .next()
                    .and_then(|n| n.parse::<usize>().ok())
                    .ok_or(format!("{name} needs a number; {usage}"))
            };
            match arg.as_str() {
                "--schedules" => args.schedules = number("--schedules")?.max(1),
                "--takeover-jobs" => args.takeover_jobs = number("--takeover-jobs")?,
                "--rounds" => args.rounds = number("--rounds")?.max(1),
                "--quick" => {
                    args.schedules = 10_000;
                    args.takeover_jobs = 50_000;
                    args.rounds = 3;
                }
                "-h" | "--help" => return Err(usage.into()),
                other => return Err(format!("unknown argument {other:?}; {usage}")),
            }
        }
        Ok(args)
    }
}

/// Wall-clock µs since the Unix epoch: due times are wall-clock times.
fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as u64
}

/// This process's CPU seconds (user + system), to show the client is not the bottleneck.
fn own_cpu_s() -> f64 {
    use nix::sys::resource::{getrusage, UsageWho};
    let usage = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage");
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    secs(usage.user_time()) + secs(usage.system_time())
}

/// Nearest-rank percentile of an ascending slice.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Bytes under `path`, as `du` counts them.
fn disk_mib(path: &Path) -> f64 {
    let out = Command::new("du").arg("-sk").arg(path).output();
    let kib = out
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    mib(kib)
}

/// The brokerd built beside this binary (`ha_tests::bins` also wants lockd, which this
/// benchmark does not need).
fn brokerd() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let path = exe.with_file_name("brokerd");
    if !path.is_file() {
        eprintln!(
            "scheduler-bench: {} not found: build it first with `cargo build --release -p brokerd -p ha-tests --bins`",
            path.display()
        );
        std::process::exit(2);
    }
    path
}

/// A standalone release brokerd on `dir` (store `dir/data`, scheduler store `dir/scheduler`),
/// on a fixed port so that a successor can be polled from the moment it is spawned.
struct Broker {
    child: Child,
    log: PathBuf,
    addr: SocketAddr,
    spawned: Instant,
}

impl Broker {
    fn spawn(dir: &Path, port: u16, run: usize) -> Broker {
        let log = dir.join(format!("brokerd-{run}.log"));
        let file = std::fs::File::create(&log).expect("create the broker's log");
        let mut command = Command::new(brokerd());
        command
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file);
        // SAFETY: prctl in the forked child before exec; no memory involved. A benchmark that
        // dies (a panic aborts) takes its broker with it.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let spawned = Instant::now();
        let child = command.spawn().expect("spawn brokerd");
        Broker {
            child,
            log,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            spawned,
        }
    }

    fn url(&self) -> String {
        format!("tcp://{}", self.addr)
    }

    /// Polls CONNECT every ms; the time since the spawn when it was first answered.
    fn wait_connect(&self) -> Duration {
        wait_until_every(
            "brokerd to answer CONNECT",
            Duration::from_millis(1),
            || answers_stomp(self.addr).then(|| self.spawned.elapsed()),
        )
    }

    /// Polls the log every ms for a line containing `needle`; the time since the spawn when it
    /// was first seen, and the line.
    fn wait_log(&self, needle: &str) -> (Duration, String) {
        wait_until_every(needle, Duration::from_millis(1), || {
            let text = std::fs::read_to_string(&self.log).ok()?;
            let line = text.lines().find(|l| l.contains(needle))?.to_owned();
            Some((self.spawned.elapsed(), line))
        })
    }

    fn rss_kib(&self) -> u64 {
        status_kib(self.child.id(), "VmRSS").unwrap_or(0)
    }

    fn peak_kib(&self) -> u64 {
        status_kib(self.child.id(), "VmHWM").unwrap_or(0)
    }

    /// The broker's CPU seconds so far.
    fn cpu_s(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()));
        let ticks: u64 = stat
            .ok()
            .and_then(|s| {
                let rest = s.rsplit_once(')')?.1.to_owned();
                let fields: Vec<&str> = rest.split_whitespace().collect();
                // utime and stime: fields 14 and 15 of stat(5), 12 and 13 after the name.
                Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
            })
            .unwrap_or(0);
        // SAFETY: sysconf reads a constant; no memory involved.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        ticks as f64 / hz
    }

    /// Waits (up to 4 x [`WAIT`]) until the broker used under 2% of a core over half a second:
    /// its scheduler has caught up with what it was sent. Returns how long that took.
    fn wait_idle(&self) -> Duration {
        let start = Instant::now();
        let mut before = self.cpu_s();
        while start.elapsed() < WAIT * 4 {
            std::thread::sleep(Duration::from_millis(500));
            let now = self.cpu_s();
            if now - before < 0.01 {
                return start.elapsed();
            }
            before = now;
        }
        println!("  (brokerd still busy after {:?}; going on)", WAIT * 4);
        start.elapsed()
    }

    /// The `key=value` field of a log line, e.g. `ms` of "scheduler serving".
    fn field(line: &str, key: &str) -> String {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{key}=")))
            .unwrap_or("?")
            .to_owned()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn connect(url: &str) -> Client {
    let options = Options {
        receipt_window: WINDOW,
        subscription_buffer: 65_536,
        ..Options::default()
    };
    Client::connect(url, options).await.expect("connect")
}

/// What a round of scheduled SENDs took.
struct Sent {
    /// From the first SEND to the last receipt.
    took: Duration,
    /// Wall-clock µs of the last receipt.
    last_receipt_us: u64,
    /// Longest time from computing a SEND's delay to its receipt: the most its job's due time
    /// can be later than intended.
    max_skew_us: u64,
    client_cpu_s: f64,
}

/// Sends `count` persistent scheduled SENDs to `destination` from [`PRODUCERS`] clients with
/// a receipt window of `window` each. `due_ms(i)` is SEND i's intended due time (wall-clock
/// ms); its delay is computed once the window has room, just before it is queued. SEND i
/// carries `bench-seq: i` and `bench-due`.
fn schedule(
    url: &str,
    destination: &str,
    count: usize,
    producers: usize,
    window: usize,
    due_ms: impl Fn(usize) -> u64 + Clone + Send + 'static,
) -> Sent {
    let cpu0 = own_cpu_s();
    let rt = runtime();
    let (took, last_receipt_us, max_skew_us) = rt.block_on(async {
        let mut clients = Vec::new();
        for _ in 0..producers {
            clients.push(connect(url).await);
        }
        let body = Bytes::from(vec![b'x'; BODY_BYTES]);
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        for (p, client) in clients.into_iter().enumerate() {
            let (body, due_ms, destination) =
                (body.clone(), due_ms.clone(), destination.to_owned());
            tasks.push(tokio::spawn(async move {
                produce(
                    client,
                    p,
                    producers,
                    count,
                    window,
                    &destination,
                    body,
                    due_ms,
                )
                .await
            }));
        }
        let (mut last, mut skew) = (0, 0);
        for task in tasks {
            let (l, s) = task.await.expect("producer");
            last = last.max(l);
            skew = skew.max(s);
        }
        (t0.elapsed(), last, skew)
    });
    Sent {
        took,
        last_receipt_us,
        max_skew_us,
        client_cpu_s: own_cpu_s() - cpu0,
    }
}

/// One producer: SENDs `p`, `p + producers`, ... below `count`; returns the wall-clock µs of
/// its last receipt and its longest delay-to-receipt time.
#[allow(clippy::too_many_arguments)]
async fn produce(
    client: Client,
    p: usize,
    producers: usize,
    count: usize,
    window: usize,
    destination: &str,
    body: Bytes,
    due_ms: impl Fn(usize) -> u64,
) -> (u64, u64) {
    // Our own window, taken before the delay is computed, so the client's never makes a SEND
    // wait after its delay was fixed.
    let room = Arc::new(Semaphore::new(window));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let collector = tokio::spawn(async move {
        let (mut last, mut skew) = (0, 0);
        while let Some((receipt, permit, at_us)) = rx.recv().await {
            let receipt: stomp_client::Receipt = receipt;
            match tokio::time::timeout(WAIT, receipt).await {
                Ok(result) => result.expect("a receipt for a scheduled SEND"),
                Err(_) => {
                    panic!("no receipt within {WAIT:?}: brokerd stopped answering (see its log)")
                }
            }
            drop(permit);
            last = wall_us();
            skew = u64::max(skew, last.saturating_sub(at_us));
        }
        (last, skew)
    });
    for i in (p..count).step_by(producers) {
        let permit = Arc::clone(&room).acquire_owned().await.expect("window");
        let due = due_ms(i);
        let at_us = wall_us();
        let delay = due.saturating_sub(at_us / 1000);
        let (seq, due_text, delay) = (i.to_string(), due.to_string(), delay.to_string());
        let headers = [
            ("persistent", "true"),
            ("AMQ_SCHEDULED_DELAY", delay.as_str()),
            ("bench-seq", seq.as_str()),
            ("bench-due", due_text.as_str()),
        ];
        let receipt = client
            .send(destination, &headers, body.clone())
            .await
            .expect("send");
        tx.send((receipt, permit, at_us)).expect("collector");
    }
    drop(tx);
    let result = collector.await.expect("collector");
    let _ = tokio::time::timeout(WAIT, client.disconnect()).await;
    result
}

/// One delivery: its `bench-seq`, and arrival minus its `bench-due`, in ms.
type Arrival = (usize, f64);

/// A consumer on its own thread, recording each delivery on `destination` until told to stop.
struct Consumer {
    arrivals: Arc<Mutex<Vec<Arrival>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Consumer {
    fn start(url: String, destination: &'static str) -> Consumer {
        let arrivals: Arc<Mutex<Vec<Arrival>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (record, stopping) = (Arc::clone(&arrivals), Arc::clone(&stop));
        let (subscribed, ready) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            runtime().block_on(async move {
                let client = connect(&url).await;
                let prefetch = [("activemq.prefetchSize", "65536")];
                let mut sub = client
                    .subscribe(destination, AckMode::Auto, &prefetch)
                    .await
                    .expect("subscribe");
                subscribed.send(()).expect("bench waits");
                while !stopping.load(Relaxed) {
                    let Ok(next) =
                        tokio::time::timeout(Duration::from_millis(100), sub.next()).await
                    else {
                        continue;
                    };
                    let message = next.expect("the consumer's connection");
                    let now_us = wall_us();
                    let header = |name| message.header(name).and_then(|v| v.parse::<u64>().ok());
                    let (Some(seq), Some(due)) = (header("bench-seq"), header("bench-due")) else {
                        panic!("a delivery without bench headers: {:?}", message.headers);
                    };
                    let late_ms = (now_us as f64 - (due * 1000) as f64) / 1000.0;
                    record.lock().unwrap().push((seq as usize, late_ms));
                }
                let _ = tokio::time::timeout(WAIT, client.disconnect()).await;
            });
        });
        ready.recv_timeout(WAIT).expect("the consumer subscribed");
        Consumer {
            arrivals,
            stop,
            thread: Some(thread),
        }
    }

    fn count(&self) -> usize {
        self.arrivals.lock().unwrap().len()
    }

    /// Waits (bounded by `within`) until `n` deliveries arrived; takes them.
    fn take(&self, n: usize, within: Duration) -> Vec<Arrival> {
        let start = Instant::now();
        while self.count() < n && start.elapsed() < within {
            std::thread::sleep(Duration::from_millis(10));
        }
        // Anything else that comes (a duplicate) within a moment is counted too.
        std::thread::sleep(Duration::from_millis(500));
        std::mem::take(&mut *self.arrivals.lock().unwrap())
    }

    /// Stops it and waits for its thread.
    fn finish(mut self) {
        self.stop.store(true, Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Lateness percentiles (ms) of `arrivals`, and the count of missing and duplicate seqs out
/// of `expected` (0..expected).
struct Lateness {
    p50: f64,
    p99: f64,
    max: f64,
    min: f64,
    /// p10, p20, ... p90: how the deliveries spread over time.
    deciles: Vec<f64>,
    /// Pauses of over [`PAUSE_MS`] between consecutive deliveries (of a burst due at one
    /// time): how many had come before, and how long the pause was.
    pauses: Vec<(usize, f64)>,
    missing: usize,
    duplicates: usize,
}

fn lateness(arrivals: &[Arrival], expected: usize) -> Lateness {
    let mut seen = vec![0u32; expected];
    let mut late: Vec<f64> = Vec::with_capacity(arrivals.len());
    let mut duplicates = 0;
    for &(seq, ms) in arrivals {
        match seen.get_mut(seq) {
            Some(times) => {
                *times += 1;
                duplicates += usize::from(*times > 1);
            }
            None => duplicates += 1,
        }
        late.push(ms);
    }
    late.sort_by(f64::total_cmp);
    let missing = seen.iter().filter(|t| **t == 0).count();
    if late.is_empty() {
        late.push(f64::NAN);
    }
    Lateness {
        p50: percentile(&late, 50.0),
        p99: percentile(&late, 99.0),
        max: late[late.len() - 1],
        min: late[0],
        deciles: (1..10)
            .map(|d| percentile(&late, d as f64 * 10.0))
            .collect(),
        pauses: (1..late.len())
            .filter(|&i| late[i] - late[i - 1] > PAUSE_MS)
            .map(|i| (i, late[i] - late[i - 1]))
            .collect(),
        missing,
        duplicates,
    }
}

/// Part 1: scheduling throughput and memory. Returns the rate, for part 2's lead time.
fn scheduling(args: &Args, json: &mut serde_json::Map<String, serde_json::Value>) -> f64 {
    let n = args.schedules;
    println!("== 1. scheduling: {n} persistent scheduled SENDs ({BODY_BYTES} B bodies, delay 1 h), {PRODUCERS} producers, receipt window {WINDOW}");
    let dir = tempdir();
    let broker = Broker::spawn(dir.path(), free_port(), 1);
    broker.wait_connect();
    let (sent, rss) = fill(&broker, n, "/queue/sched-far");
    let rate = n as f64 / sent.took.as_secs_f64();
    json.insert(
        "scheduling".into(),
        serde_json::json!({"schedules": n, "per_s": rate.round(), "rss_mib": rss, "client_cpu_s": sent.client_cpu_s}),
    );
    rate
}

/// Schedules `n` far-future jobs on `broker` and prints the rate and memory; returns what the
/// sends took and the resident MiB [idle before, after the last receipt, idle after, peak].
fn fill(broker: &Broker, n: usize, destination: &str) -> (Sent, [f64; 4]) {
    std::thread::sleep(Duration::from_millis(500));
    let idle = broker.rss_kib();
    let cpu0 = broker.cpu_s();
    let far = wall_us() / 1000 + FAR_MS;
    let sent = schedule(&broker.url(), destination, n, PRODUCERS, WINDOW, move |i| {
        far + (i as u64 % 1000)
    });
    let after = broker.rss_kib();
    let settled = broker.wait_idle();
    let (idle_after, peak) = (broker.rss_kib(), broker.peak_kib());
    let broker_cpu = broker.cpu_s() - cpu0;
    let s = sent.took.as_secs_f64();
    println!(
        "  {:.0} scheduled SENDs receipted per second ({n} in {s:.2} s); client CPU {:.2} s, brokerd CPU {broker_cpu:.2} s ({:.0} us per schedule)",
        n as f64 / s,
        sent.client_cpu_s,
        broker_cpu * 1e6 / n as f64
    );
    println!(
        "  brokerd resident: {:.1} MiB idle before, {:.1} MiB at the last receipt, {:.1} MiB idle after ({:.1} s later), peak {:.1} MiB",
        mib(idle),
        mib(after),
        mib(idle_after),
        settled.as_secs_f64(),
        mib(peak)
    );
    (sent, [idle, after, idle_after, peak].map(mib))
}

/// Part 2: a burst falling due at one time, then caught-up deliveries.
fn due(args: &Args, rate: f64, json: &mut serde_json::Map<String, serde_json::Value>) {
    let n = args.schedules;
    // Sending takes about n / rate; T is that plus half again and 3 s.
    let lead_ms = (n as f64 / rate * 1500.0) as u64 + 3000;
    println!("== 2. due: {n} schedules falling due at one time T ({lead_ms} ms after the first SEND), 1 auto-ack consumer");
    let dir = tempdir();
    let broker = Broker::spawn(dir.path(), free_port(), 1);
    broker.wait_connect();
    let consumer = Consumer::start(broker.url(), "/queue/sched-due");
    let t_ms = wall_us() / 1000 + lead_ms;
    let sent = schedule(
        &broker.url(),
        "/queue/sched-due",
        n,
        PRODUCERS,
        WINDOW,
        move |_| t_ms,
    );
    let margin_ms = (t_ms * 1000).saturating_sub(sent.last_receipt_us) as f64 / 1000.0;
    println!(
        "  sent in {:.2} s ({:.0}/s); the last receipt came {margin_ms:.0} ms before T; a job's due time is at most {:.1} ms after T (its SEND's delay-to-receipt time)",
        sent.took.as_secs_f64(),
        n as f64 / sent.took.as_secs_f64(),
        sent.max_skew_us as f64 / 1000.0
    );
    if margin_ms < 1000.0 {
        println!("  WARNING: fewer than 1000 ms between the last receipt and T: the burst overlaps the sending; rerun on a quieter machine");
    }
    let wait_for_t = Duration::from_millis((t_ms * 1000).saturating_sub(wall_us()) / 1000);
    std::thread::sleep(wait_for_t.saturating_sub(Duration::from_millis(200)));
    let (cpu0, own0) = (broker.cpu_s(), own_cpu_s());
    let burst = consumer.take(n, WAIT * 4 + Duration::from_millis(n as u64));
    let (broker_cpu, client_cpu) = (broker.cpu_s() - cpu0, own_cpu_s() - own0);
    let b = lateness(&burst, n);
    let last_ms = b.max;
    let per_s = n as f64 / (last_ms / 1000.0);
    println!(
        "  burst lateness (arrival - T): first {:.1} ms, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {} delivered, {} missing, {} duplicates",
        b.min, b.p50, b.p99, b.max, burst.len(), b.missing, b.duplicates
    );
    let deciles: Vec<String> = b.deciles.iter().map(|d| format!("{d:.0}")).collect();
    println!("  burst lateness p10..p90: {} ms", deciles.join(" "));
    let pauses: Vec<String> = (b.pauses.iter())
        .map(|(before, ms)| format!("{ms:.0} ms after {before}"))
        .collect();
    let paused: f64 = b.pauses.iter().map(|(_, ms)| ms).sum();
    println!(
        "  pauses of over {PAUSE_MS} ms between deliveries: {} ({paused:.0} ms in all){}{}",
        b.pauses.len(),
        if pauses.is_empty() { "" } else { ": " },
        pauses.join(", ")
    );
    println!(
        "  all delivered {last_ms:.0} ms after T: {per_s:.0} due deliveries/s (from the first arrival: {:.0}/s); brokerd CPU {broker_cpu:.2} s ({:.0} us per delivery), client CPU {client_cpu:.2} s",
        n as f64 / ((b.max - b.min) / 1000.0),
        broker_cpu * 1e6 / n as f64
    );

    // Caught up: once the broker is idle again, SENDs one at a time (each receipt awaited),
    // each due TRICKLE_DELAY_MS after it is sent; they fall due while the next are sent.
    let idle = broker.wait_idle();
    let trickle = schedule(&broker.url(), "/queue/sched-due", TRICKLE, 1, 1, |_| {
        wall_us() / 1000 + TRICKLE_DELAY_MS
    });
    let arrivals = consumer.take(TRICKLE, WAIT + Duration::from_millis(TRICKLE_DELAY_MS));
    consumer.finish();
    let t = lateness(&arrivals, TRICKLE);
    println!(
        "  caught up (brokerd idle {:.1} s after the burst; then {TRICKLE} SENDs one at a time over {:.1} s, each due {TRICKLE_DELAY_MS} ms after it was sent, at most {:.1} ms late): lateness min {:.1} ms, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {} missing, {} duplicates",
        idle.as_secs_f64(),
        trickle.took.as_secs_f64(),
        trickle.max_skew_us as f64 / 1000.0,
        t.min, t.p50, t.p99, t.max, t.missing, t.duplicates
    );
    json.insert(
        "due".into(),
        serde_json::json!({
            "schedules": n, "margin_ms": margin_ms, "max_skew_ms": sent.max_skew_us as f64 / 1000.0,
            "lateness_ms": {"first": b.min, "p50": b.p50, "p99": b.p99, "max": b.max},
            "deliveries_per_s": per_s.round(), "missing": b.missing, "duplicates": b.duplicates,
            "pauses": b.pauses.len(), "paused_ms": paused,
            "caught_up_lateness_ms": {"min": t.min, "p50": t.p50, "p99": t.p99, "max": t.max},
        }),
    );
}

/// Part 3: takeover times with many pending schedules and with none.
fn takeover(args: &Args, json: &mut serde_json::Map<String, serde_json::Value>) {
    let jobs = args.takeover_jobs;
    println!("== 3. takeover: {jobs} pending schedules vs none, {} rounds each (SIGKILL, then a new brokerd on the same directories)", args.rounds);
    let full = tempdir();
    let port = free_port();
    {
        let broker = Broker::spawn(full.path(), port, 0);
        broker.wait_connect();
        println!("  building the store through STOMP:");
        let (_, rss) = fill(&broker, jobs, "/queue/sched-pending");
        json.insert(
            "pending_rss_mib".into(),
            serde_json::json!({"jobs": jobs, "idle_before": rss[0], "last_receipt": rss[1], "idle_after": rss[2], "peak": rss[3]}),
        );
    }
    println!(
        "  store on disk: data {:.0} MiB, scheduler {:.0} MiB",
        disk_mib(&full.path().join("data")),
        disk_mib(&full.path().join("scheduler"))
    );
    let empty = tempdir();
    {
        let broker = Broker::spawn(empty.path(), port, 0);
        broker.wait_connect();
        broker.wait_log("scheduler serving");
    }
    let mut results = serde_json::Map::new();
    for (label, dir) in [("pending", &full), ("empty", &empty)] {
        let (mut connect, mut serving, mut serving_ms, mut rss) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for round in 1..=args.rounds {
            let broker = Broker::spawn(dir.path(), port, round);
            let up = broker.wait_connect();
            let (at, line) = broker.wait_log("scheduler serving");
            let (_, recovered) = broker.wait_log("scheduler recovered");
            std::thread::sleep(Duration::from_millis(500));
            let kib = broker.rss_kib();
            let ms = Broker::field(&line, "ms");
            println!(
                "  {label:7} round {round}: CONNECT answered {:6.1} ms after spawn; \"scheduler serving\" at {:6.1} ms (ms={ms}, cached={}); resident {:.1} MiB",
                up.as_secs_f64() * 1000.0,
                at.as_secs_f64() * 1000.0,
                Broker::field(&recovered, "cached"),
                mib(kib)
            );
            connect.push(up.as_secs_f64() * 1000.0);
            serving.push(at.as_secs_f64() * 1000.0);
            serving_ms.push(ms.parse::<f64>().unwrap_or(f64::NAN));
            rss.push(mib(kib));
        }
        let (c, s, m) = (
            min_median_max(&mut connect),
            min_median_max(&mut serving),
            min_median_max(&mut serving_ms),
        );
        println!(
            "  {label:7}: CONNECT after min {:.1} / median {:.1} / max {:.1} ms; scheduler serving after median {:.1} ms (its own ms= median {:.0}); resident max {:.1} MiB",
            c.0, c.1, c.2, s.1, m.1, rss.iter().cloned().fold(0.0, f64::max)
        );
        results.insert(
            label.into(),
            serde_json::json!({
                "connect_ms": {"min": c.0, "median": c.1, "max": c.2},
                "scheduler_serving_ms": {"min": s.0, "median": s.1, "max": s.2},
                "rss_mib_max": rss.iter().cloned().fold(0.0, f64::max),
            }),
        );
    }
    let median = |label: &str| {
        results[label]["connect_ms"]["median"]
            .as_f64()
            .unwrap_or(f64::NAN)
    };
    println!(
        "  {jobs} pending schedules add {:.1} ms to the median takeover (target at most 100 ms)",
        median("pending") - median("empty")
    );
    results.insert("jobs".into(), jobs.into());
    json.insert("takeover".into(), serde_json::Value::Object(results));
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("scheduler-bench-")
        .tempdir()
        .expect("tempdir")
}

fn main() {
    let args = Args::parse().unwrap_or_else(|e| {
        eprintln!("scheduler-bench: {e}");
        std::process::exit(2);
    });
    let mut json = serde_json::Map::new();
    let rate = scheduling(&args, &mut json);
    due(&args, rate, &mut json);
    if args.takeover_jobs > 0 {
        takeover(&args, &mut json);
    }
    println!("{}", serde_json::Value::Object(json));
}
