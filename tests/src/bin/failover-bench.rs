//! Failover benchmark: three real nodes on a temporary shared directory; each round takes the
//! active node down and measures until another node answers a STOMP CONNECT.
//!
//! - `kill`: SIGKILL of the active node's lockd (unplanned failover).
//! - `failover`: `ctl failover` on the active node (planned failover).
//!
//! Prints each round, then min/median/max in ms per mode, and one JSON line. Also prints the
//! active lockd's resident memory, with its metrics and console page on (`metrics_listen`,
//! `console_listen`) and every node's `/metrics` scraped each round, as in production.
//! Build first: `cargo build --release --workspace --bins`.

use ha_tests::{
    answers_stomp, http, status_kib, summarize, wait_until_every, BenchOptions, Cluster,
};
use shared_proto::admin::Role;
use std::time::{Duration, Instant};

/// Polls every node but `down` until one answers CONNECT; returns the time since `t0`.
fn time_to_connect(cluster: &Cluster, down: usize, t0: Instant) -> Duration {
    wait_until_every("another node to answer", Duration::from_millis(1), || {
        let up = (cluster.nodes.iter().enumerate())
            .any(|(i, node)| i != down && answers_stomp(node.addr()));
        up.then(|| t0.elapsed())
    })
}

fn main() {
    let options = BenchOptions::parse_or_exit("failover-bench", 10, ["kill", "failover"]);
    let mut cluster = Cluster::new(3, "");
    cluster.with_http_pages(ha_tests::CONSOLE_USERS);
    cluster.start_all();
    let mut results = serde_json::Map::new();
    let mut rss = Vec::new();
    for mode in &options.modes {
        let mut samples = Vec::new();
        for round in 1..=options.rounds {
            let active = cluster.wait_for_one_active();
            // Every lockd answers a scrape and its console address before it is measured.
            for node in &cluster.nodes {
                let status = http::get(node.metrics.unwrap(), "/metrics")
                    .expect("scrape")
                    .status;
                assert_eq!(status, 200, "{}'s /metrics", node.name);
                let _ = http::get(node.console.unwrap(), "/");
            }
            if let Some(kib) = cluster.nodes[active]
                .child
                .as_ref()
                .and_then(|c| status_kib(c.id(), "VmRSS"))
            {
                rss.push(kib);
            }
            let t0 = Instant::now();
            if *mode == "kill" {
                cluster.nodes[active].kill(libc::SIGKILL);
            } else {
                let out = cluster.nodes[active].ctl(&["failover"]);
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let took = time_to_connect(&cluster, active, t0);
            let ms = took.as_secs_f64() * 1000.0;
            println!("{mode:8} round {round:3}: {ms:7.1} ms");
            samples.push(ms);
            if *mode == "kill" {
                cluster.nodes[active].start();
            }
            cluster.nodes[active].wait_for_role(Role::Passive);
        }
        results.insert(mode.to_string(), summarize(mode, &mut samples, None));
    }
    if let Some(max) = rss.iter().max() {
        println!(
            "active lockd resident memory: max {max} KiB over {} samples",
            rss.len()
        );
        results.insert("lockd_rss_kib_max".into(), (*max).into());
    }
    println!("{}", serde_json::Value::Object(results));
}
