//! The chaos soak (tests/SOAK.md): three nodes on one shared directory, producers and
//! consumers through the failover client, and a seeded schedule of faults on the active node.
//! At the end the clients' [`history::History`] and the [`crate::accept::AcceptProber`]'s
//! accept windows are checked; [`Report`] holds the figures and the verdict.

pub mod clients;
pub mod fault;
pub mod history;
pub mod rng;

use crate::accept::AcceptProber;
use crate::bindfs::{self, BindMount};
use crate::{failover_url, Cluster};
use fault::Fault;
use rng::Rng;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Seeds the fault schedule: the same seed replays the same faults in the same order.
    pub seed: u64,
    /// Faults are injected until this much time has passed (or `max_faults` were injected).
    pub duration: Duration,
    /// Stop after this many faults.
    pub max_faults: usize,
    /// The faults to draw from.
    pub faults: Vec<Fault>,
    /// Plain producers (one more sends in transactions).
    pub producers: usize,
}

/// The figures and the verdict of one run.
#[derive(Debug)]
pub struct Report {
    pub seed: u64,
    pub faults: BTreeMap<Fault, usize>,
    pub verdict: history::Verdict,
    pub lost_transactions: usize,
    /// Pairs of overlapping accept windows (two brokers serving at once).
    pub overlaps: Vec<(crate::accept::AcceptWindow, crate::accept::AcceptWindow)>,
    /// Stretches with no broker accepting, longer than 100 ms, sorted.
    pub outages: Vec<Duration>,
    /// Why a requested fault was not injected (e.g. StallFs without root).
    pub notes: Vec<String>,
}

impl Report {
    /// Whether the run kept every promise.
    pub fn passed(&self) -> bool {
        self.verdict.passed() && self.overlaps.is_empty()
    }

    /// The p-th percentile (0-100) of the outages, or zero without any.
    pub fn outage_percentile(&self, p: usize) -> Duration {
        if self.outages.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.outages.len() - 1) * p).div_ceil(100);
        self.outages[i]
    }

    /// The report as printed: figures, every violation found, and the seed to replay it.
    pub fn summary(&self) -> String {
        let v = &self.verdict;
        let total: usize = self.faults.values().sum();
        let mut text = format!(
            "soak seed {seed}: {verdict}\n\
             faults injected: {total} {faults:?}\n\
             messages: sent {sent}, receipted {receipted}, received {received}, lost {lost}, \
             duplicated {dup} (unexplained {unexplained}), acks committed {committed}, \
             acked-then-redelivered {acked}, \
             out of order {order}, partial commits {partial}, transactions lost {txlost}\n\
             overlapping accept windows: {overlaps}\n\
             unavailability ({n} outages over 100 ms): p50 {p50:?}, p99 {p99:?}, max {max:?}\n",
            seed = self.seed,
            verdict = if self.passed() { "PASSED" } else { "FAILED" },
            faults = self.faults,
            sent = v.sent,
            receipted = v.receipted,
            received = v.received,
            lost = v.lost.len(),
            dup = v.duplicated,
            unexplained = v.unexplained.len(),
            committed = v.acks_committed,
            acked = v.acked_then_redelivered.len(),
            order = v.out_of_order.len(),
            partial = v.partial_commits,
            txlost = self.lost_transactions,
            overlaps = self.overlaps.len(),
            n = self.outages.len(),
            p50 = self.outage_percentile(50),
            p99 = self.outage_percentile(99),
            max = self.outages.last().copied().unwrap_or_default(),
        );
        for note in &self.notes {
            text.push_str(&format!("note: {note}\n"));
        }
        let first = |keys: &[history::Key]| keys[..keys.len().min(10)].to_vec();
        if !v.lost.is_empty() {
            text.push_str(&format!("lost (producer, seq): {:?}\n", first(&v.lost)));
        }
        if !v.unexplained.is_empty() {
            text.push_str(&format!(
                "unexplained duplicates: {:?}\n",
                first(&v.unexplained)
            ));
        }
        if !v.acked_then_redelivered.is_empty() {
            text.push_str(&format!(
                "acked then redelivered: {:?}\n",
                first(&v.acked_then_redelivered)
            ));
        }
        if !v.out_of_order.is_empty() {
            text.push_str(&format!("out of order: {:?}\n", first(&v.out_of_order)));
        }
        for line in &v.evidence {
            text.push_str(&format!("deliveries of {line}\n"));
        }
        if !self.overlaps.is_empty() {
            text.push_str(&format!("overlapping windows: {:#?}\n", self.overlaps));
        }
        if !self.passed() {
            text.push_str(&format!(
                "replay: soak --seed {} (with the same fault set)\n",
                self.seed
            ));
        }
        text
    }
}

/// Runs the soak and checks it. Panics only on harness failures (a node that cannot start, a
/// client that cannot connect); broken promises are in the [`Report`].
pub fn run(config: &Config) -> Report {
    let mut rng = Rng::new(config.seed);
    let mut notes = Vec::new();
    let mut faults = config.faults.clone();
    // Node configs: a fence timer short enough for a stalled filesystem to be fenced quickly.
    let mut cluster = Cluster::new(3, "fence_timeout_ms = 2000\n");
    let mounts: Vec<BindMount> = if faults.contains(&Fault::StallFs) {
        match bindfs::unavailable() {
            None => {
                let mounts: Vec<BindMount> = (1..=3)
                    .map(|i| {
                        BindMount::new(
                            &cluster.shared,
                            &cluster.root.join(format!("mount{i}")),
                            true,
                        )
                    })
                    .collect();
                for (node, mount) in cluster.nodes.iter_mut().zip(&mounts) {
                    node.set_shared_dir(&mount.path);
                }
                mounts
            }
            Some(why) => {
                faults.retain(|f| *f != Fault::StallFs);
                notes.push(format!("StallFs left out: {why}"));
                Vec::new()
            }
        }
    } else {
        Vec::new()
    };
    assert!(!faults.is_empty(), "no fault to inject");
    cluster.start_all();
    cluster.wait_for_one_active();

    let history = Arc::new(Mutex::new(history::History::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let url = failover_url(&cluster);
    let clients = {
        let (history, stop, producers) =
            (Arc::clone(&history), Arc::clone(&stop), config.producers);
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime");
            runtime.block_on(async move {
                let produced = Arc::new(AtomicBool::new(false));
                let (mut producing, mut consuming) = (Vec::new(), Vec::new());
                for p in 0..=producers {
                    let (u, h) = (url.clone(), Arc::clone(&history));
                    // The first consumer acks plainly, the others in transactions.
                    let acking = match p {
                        0 => clients::Acking::Plain,
                        _ => clients::Acking::Transactional,
                    };
                    consuming.push(tokio::spawn(clients::consume(
                        u,
                        p,
                        acking,
                        h,
                        Arc::clone(&produced),
                    )));
                    let (u, h, s) = (url.clone(), Arc::clone(&history), Arc::clone(&stop));
                    producing.push(if p == producers {
                        tokio::spawn(clients::produce_in_transactions(u, p, h, s))
                    } else {
                        tokio::spawn(clients::produce(u, p, h, s))
                    });
                }
                for task in producing {
                    task.await.expect("a producer task");
                }
                produced.store(true, SeqCst);
                for task in consuming {
                    task.await.expect("a consumer task");
                }
            })
        })
    };

    let started = Instant::now();
    let mut injected: BTreeMap<Fault, usize> = BTreeMap::new();
    while started.elapsed() < config.duration
        && injected.values().sum::<usize>() < config.max_faults
    {
        std::thread::sleep(Duration::from_millis(rng.range(300, 1500)));
        let active = cluster.wait_for_one_active();
        let fault = *rng.pick(&faults);
        let Some(what) = fault::inject(&mut cluster, &mounts, active, fault, &mut rng) else {
            continue;
        };
        eprintln!("soak: {:>6.1} s: {what}", started.elapsed().as_secs_f64());
        *injected.entry(fault).or_default() += 1;
    }
    cluster.wait_for_one_active();
    stop.store(true, SeqCst);
    clients.join().expect("the clients");
    let history = history.lock().unwrap_or_else(|e| e.into_inner());
    let mut outages = cluster.accepts.outages(Duration::from_millis(100));
    outages.sort();
    // The report carries any overlap; the cluster's own check on drop would only panic.
    let accepts = std::mem::replace(&mut cluster.accepts, AcceptProber::start(&[]));
    let overlaps = accepts.overlaps();
    if !overlaps.is_empty() {
        eprintln!("{}", cluster.logs());
    }
    Report {
        seed: config.seed,
        faults: injected,
        verdict: history.check(),
        lost_transactions: history.lost_transactions,
        overlaps,
        outages,
        notes,
    }
}
