//! The Grafana dashboard in systemd/ (issue 12 item 4): valid dashboard JSON with a Prometheus
//! data source variable, whose queries use only metric names lockd and brokerd export, and
//! every one of them.

use std::collections::BTreeSet;

/// lockd's metrics (lockd/src/metrics.rs), as a query names them.
const LOCKD: [&str; 8] = [
    "lockd_role",
    "lockd_epoch",
    "lockd_failovers_total",
    "lockd_lock_acquire_seconds",
    "lockd_keepalive_duration_seconds",
    "lockd_fences_total",
    "lockd_broker_restarts_total",
    "lockd_broken_locks",
];

/// brokerd's metrics (served on console_listen at /metrics while active).
const BROKERD: [&str; 12] = [
    "brokerd_connections",
    "brokerd_connections_accepted_total",
    "brokerd_destination_messages",
    "brokerd_destination_enqueued_total",
    "brokerd_destination_dequeued_total",
    "brokerd_redelivered_total",
    "brokerd_dead_lettered_total",
    "brokerd_store_bytes",
    "brokerd_store_flush_seconds",
    "brokerd_memory_bytes",
    "brokerd_memory_limit_bytes",
    "brokerd_scheduler_pending_jobs",
];

/// Histograms, whose series a query names with `_bucket`, `_sum` or `_count`.
const HISTOGRAMS: [&str; 2] = [
    "lockd_keepalive_duration_seconds",
    "brokerd_store_flush_seconds",
];

/// Every `lockd_*` or `brokerd_*` identifier in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut word = String::new();
    for c in expr.chars().chain([' ']) {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
            continue;
        }
        // A word right after `$` is a dashboard variable, not a metric.
        if (word.starts_with("lockd_") || word.starts_with("brokerd_")) && c != '"' {
            names.push(std::mem::take(&mut word));
        }
        word.clear();
        if c == '$' {
            word.push('$');
        }
    }
    names
}

/// The metric a series name belongs to (a histogram's `_bucket` and kin to the histogram).
fn metric_of(series: &str) -> &str {
    for h in HISTOGRAMS {
        for suffix in ["_bucket", "_sum", "_count"] {
            if series.strip_suffix(suffix) == Some(h) {
                return h;
            }
        }
    }
    series
}

/// Every `expr` under `value`, with where it is.
fn exprs(value: &serde_json::Value, at: &str, out: &mut Vec<(String, String)>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(e)) => out.push((at.to_string(), e.clone())),
                    _ => exprs(v, &format!("{at}.{k}"), out),
                }
            }
        }
        serde_json::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                exprs(v, &format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn the_dashboard_queries_only_known_metrics_and_all_of_them() {
    let text = include_str!("../../systemd/grafana-lockd-brokerd.json");
    let dashboard: serde_json::Value = serde_json::from_str(text).expect("valid JSON");
    assert!(
        dashboard["schemaVersion"].as_u64().unwrap() >= 36,
        "Grafana 10 schema"
    );
    assert!(dashboard["title"].is_string() && dashboard["uid"].is_string());
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    assert!(
        variables.iter().any(|v| v["type"] == "datasource"
            && v["query"] == "prometheus"
            && v["name"] == "datasource"),
        "no Prometheus data source variable"
    );
    let panels = dashboard["panels"].as_array().unwrap();
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "panel {} does not use the data source variable",
            panel["title"]
        );
        assert!(
            panel["targets"].as_array().is_some_and(|t| !t.is_empty()),
            "panel {} has no query",
            panel["title"]
        );
    }

    let known: BTreeSet<&str> = LOCKD.iter().chain(BROKERD.iter()).copied().collect();
    let mut found = Vec::new();
    exprs(&dashboard, "", &mut found);
    let mut used = BTreeSet::new();
    for (at, expr) in &found {
        for name in metric_names(expr) {
            let metric = metric_of(&name);
            assert!(
                known.contains(metric),
                "{at}: {name} is not a metric lockd or brokerd exports: {expr}"
            );
            used.insert(metric.to_string());
        }
    }
    let unused: Vec<&&str> = known.iter().filter(|m| !used.contains(**m)).collect();
    assert!(
        unused.is_empty(),
        "metrics the dashboard never shows: {unused:?}"
    );
}

#[test]
fn names_are_found_in_expressions_and_variables_are_not() {
    assert_eq!(
        metric_names(r#"rate(lockd_fences_total{job=~"$lockd_job"}[$__rate_interval])"#),
        ["lockd_fences_total"]
    );
    assert_eq!(
        metric_of("brokerd_store_flush_seconds_bucket"),
        "brokerd_store_flush_seconds"
    );
    assert_eq!(
        metric_of("brokerd_connections_accepted_total"),
        "brokerd_connections_accepted_total"
    );
}
