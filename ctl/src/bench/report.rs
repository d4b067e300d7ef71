//! How a bench run is shown: one run's lines, and the preset tables beside ActiveMQ's figures.

use super::*;

/// One run: rates, latency percentiles, CPU per message and errors, a line each.
pub(super) fn render(r: &Report) -> String {
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3} ms"));
    let per_msg = |n: u64| {
        if n == 0 {
            "-".to_string()
        } else {
            format!("{:.1} us/message", r.client_cpu_s * 1e6 / n as f64)
        }
    };
    let mut out =
        format!(
        "bench     {} x {} B, {} producer(s) + {} consumer(s), {}, receipt window {}, ack {}, {}\n",
        r.messages,
        r.size,
        r.producers,
        r.consumers,
        if r.persistent { "persistent" } else { "non-persistent" },
        r.receipt_window,
        r.ack,
        r.dest
    );
    if r.shards > 0 {
        out += &format!(
            "shards    {} ({} header){}\n",
            r.shards,
            SHARD,
            if r.selectors {
                format!(", consumer i selects {SHARD} = 'i mod {}'", r.shards)
            } else {
                ", no selectors".to_string()
            }
        );
    }
    out += &format!(
        "sent      {} in {:.3} s: {:.0} msg/s\n",
        r.sent, r.send_s, r.sent_per_s
    );
    out += &format!(
        "received  {} in {:.3} s: {:.0} msg/s{}\n",
        r.received,
        r.recv_s,
        r.received_per_s,
        if r.stale > 0 {
            format!(" ({} stale)", r.stale)
        } else {
            String::new()
        }
    );
    out += &format!(
        "latency   p50 {}, p99 {}, max {} ({} samples)\n",
        ms(r.latency_ms.p50),
        ms(r.latency_ms.p99),
        ms(r.latency_ms.max),
        r.latency_ms.samples
    );
    out += &format!(
        "client    {:.3} CPU s ({}); {} reconnects, {} resent\n",
        r.client_cpu_s,
        per_msg(r.sent.max(r.received)),
        r.reconnects,
        r.resent
    );
    if r.errors > 0 || r.timed_out {
        out += &format!(
            "errors    {}{}: {}\n",
            r.errors,
            if r.timed_out { ", timed out" } else { "" },
            r.first_error.as_deref().unwrap_or("-")
        );
    }
    out
}

/// `--preset issue3`: each configuration beside ActiveMQ Classic's figure and the 3x target.
pub(super) fn render_table(reports: &[Report]) -> String {
    let mut out = format!(
        "{:<34} {:>10} {:>10} {:>9} {:>9} {:>11} {:>10} {:>11}  {}\n",
        "configuration (1 KiB)",
        "sent/s",
        "recv/s",
        "p50 ms",
        "p99 ms",
        "client us/m",
        "ActiveMQ",
        "target 3x",
        "verdict"
    );
    for (row, r) in ISSUE3.iter().zip(reports) {
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
        let verdict = if !r.clean() {
            "errors"
        } else if r.rate() >= row.target as f64 {
            "meets"
        } else {
            "below"
        };
        out += &format!(
            "{:<34} {:>10.0} {:>10.0} {:>9} {:>9} {:>11.1} {:>10} {:>11}  {} ({:.1}x ActiveMQ)\n",
            row.label,
            r.sent_per_s,
            r.received_per_s,
            ms(r.latency_ms.p50),
            ms(r.latency_ms.p99),
            r.client_cpu_s * 1e6 / r.sent.max(r.received).max(1) as f64,
            row.activemq,
            row.target,
            verdict,
            r.rate() / row.activemq as f64
        );
    }
    out
}

/// `--preset selectors`: the rates without and with selectors, and their ratio.
pub(super) fn render_selector_table(reports: &[Report], ratios: &[(&str, f64)]) -> String {
    let mut out = format!(
        "{:<44} {:>10} {:>10} {:>9} {:>9} {:>11}\n",
        format!("1 KiB, {SELECTOR_PRODUCERS} producers, {SELECTOR_CONSUMERS} consumers, one queue"),
        "sent/s",
        "recv/s",
        "p50 ms",
        "p99 ms",
        "client us/m",
    );
    for (row, r) in SELECTOR_ROWS.iter().zip(reports) {
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
        out += &format!(
            "{:<44} {:>10.0} {:>10.0} {:>9} {:>9} {:>11.1}{}\n",
            row.label,
            r.sent_per_s,
            r.received_per_s,
            ms(r.latency_ms.p50),
            ms(r.latency_ms.p99),
            r.client_cpu_s * 1e6 / r.sent.max(r.received).max(1) as f64,
            if r.clean() { "" } else { "  errors" }
        );
    }
    for (persistence, ratio) in ratios {
        out += &format!(
            "{persistence}: with selectors {ratio:.2}x the rate without ({})\n",
            if *ratio >= SELECTOR_MIN_RATIO {
                "within 2x"
            } else {
                "more than 2x slower"
            }
        );
    }
    out
}
