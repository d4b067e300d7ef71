//! Fencing benchmark, on real bindfs mounts (needs root and bindfs):
//!
//! - `broken`: two nodes, each on its own bindfs mount of one shared directory, which share its
//!   data but not its locks. The first is active; the second starts, "gets the lock" too and
//!   claims a newer epoch. Measured: from the newer epoch's claim file appearing to the older
//!   broker's death. Target: at most one keepalive period plus 50 ms.
//! - `stall`: two nodes on lock-forwarding mounts; the active node's bindfs daemon is
//!   SIGSTOPped, so every syscall on its shared directory hangs. Measured: from the stop to its
//!   broker being SIGKILLed (dead, or with SIGKILL pending while the kernel finishes a FUSE
//!   call). Target: fence_timeout_ms plus 100 ms.
//!
//! Observation polls every 0.2 ms. Prints each round, min/median/max, and one JSON line.
//! Build first: `cargo build --release --workspace --bins`.

use ha_tests::bindfs::{self, two_nodes_on_two_mounts};
use ha_tests::{
    process_gone, process_gone_or_killed, summarize, wait_until_every, BenchOptions, WAIT,
};
use shared_proto::admin::Role;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// keepalive_ms in every cluster the harness makes.
const KEEPALIVE_MS: u64 = 100;
/// fence_timeout_ms for the stall rounds: short, so rounds are quick; the target is relative.
const FENCE_TIMEOUT_MS: u64 = 2000;
const OBSERVE_EVERY: Duration = Duration::from_micros(200);

/// Polls until `done` holds, for at most [`ha_tests::WAIT`]; when it first held.
fn observe(what: &str, mut done: impl FnMut() -> bool) -> Instant {
    wait_until_every(what, OBSERVE_EVERY, || done().then(Instant::now))
}

/// One broken-locks round: ms from the newer epoch's claim to the older broker's death.
fn broken_round() -> f64 {
    let (mut cluster, _mounts) = two_nodes_on_two_mounts(false, "");
    cluster.nodes[0].start();
    let first = cluster.nodes[0].wait_for_role(Role::Active);
    let broker = first.broker_pid.expect("active node has a broker");
    let claim: PathBuf = cluster
        .shared
        .join("epochs")
        .join((first.epoch.expect("active node has an epoch") + 1).to_string());
    let (tx, rx) = mpsc::channel();
    let watcher = std::thread::spawn(move || {
        let claimed = observe("newer epoch claim", || claim.exists());
        let dead = observe("death of the older broker", || process_gone(broker));
        tx.send(dead.saturating_duration_since(claimed)).unwrap();
    });
    cluster.nodes[1].start();
    let took = rx
        .recv_timeout(WAIT * 2)
        .expect("broken-locks round finished");
    watcher.join().unwrap();
    cluster.nodes[1].wait_for_role(Role::Active);
    took.as_secs_f64() * 1000.0
}

/// One stall round: ms from SIGSTOP of the active node's bindfs daemon to its broker's fence.
fn stall_round() -> f64 {
    let (mut cluster, mounts) =
        two_nodes_on_two_mounts(true, &format!("fence_timeout_ms = {FENCE_TIMEOUT_MS}\n"));
    cluster.nodes[0].start();
    let first = cluster.nodes[0].wait_for_role(Role::Active);
    let broker = first.broker_pid.expect("active node has a broker");
    cluster.nodes[1].start();
    cluster.nodes[1].wait_for_role(Role::Passive);
    mounts[0].stall(true);
    let stalled = Instant::now();
    let fenced = observe("fence of the stalled broker", || {
        process_gone_or_killed(broker)
    });
    mounts[0].stall(false);
    cluster.wait_for_one_active();
    fenced.duration_since(stalled).as_secs_f64() * 1000.0
}

fn main() {
    let options = BenchOptions::parse_or_exit("fencing-bench", 5, ["broken", "stall"]);
    if let Some(why) = bindfs::unavailable() {
        eprintln!("fencing-bench: cannot run here: {why}");
        std::process::exit(2);
    }
    let mut results = serde_json::Map::new();
    for mode in &options.modes {
        let (label, target_ms) = match *mode {
            "broken" => (
                "newer epoch claimed -> older broker dead",
                KEEPALIVE_MS + 50,
            ),
            _ => (
                "filesystem stalled -> broker fenced",
                FENCE_TIMEOUT_MS + 100,
            ),
        };
        let mut samples = Vec::new();
        for round in 1..=options.rounds {
            let ms = if *mode == "broken" {
                broken_round()
            } else {
                stall_round()
            };
            println!("{mode:8} round {round:3}: {label}: {ms:8.1} ms");
            samples.push(ms);
        }
        results.insert(
            mode.to_string(),
            summarize(mode, &mut samples, Some(target_ms)),
        );
    }
    println!("{}", serde_json::Value::Object(results));
}
