//! `ctl schedules` against real nodes (issue 9 item 3): what was scheduled through the failover
//! client is listed (table and `--json`), `cancel ID` removes exactly that job (its delivery
//! never comes, while its neighbour's does), `cancel --all` empties the scheduler, a passive
//! node names the active one, and a non-admin may list but not cancel.
//!
//! Every wait is bounded; "never comes" is a wait past the cancelled job's due time.

use ha_tests::*;
use serde_json::Value;
use std::time::Duration;
use stomp_client::AckMode;

/// Every message that reaches `destination` within `quiet` of the last one (or of subscribing):
/// the scheduledJobId of each.
fn drain(url: &str, destination: &str, quiet: Duration) -> Vec<String> {
    with_client(url, async |client| {
        let mut sub = client
            .subscribe(destination, AckMode::Auto, &[])
            .await
            .unwrap();
        let mut ids = Vec::new();
        while let Ok(Some(message)) = tokio::time::timeout(quiet, sub.next()).await {
            ids.push(message.header("scheduledJobId").unwrap_or("").to_owned());
        }
        ids
    })
}

/// `ctl schedules --json [more]`, parsed; panics with ctl's words if it failed.
fn listing(node: &Node, more: &[&str]) -> Value {
    let mut args = vec!["schedules", "--json"];
    args.extend_from_slice(more);
    let out = node.ctl(&args);
    assert!(out.status.success(), "ctl schedules: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("ctl schedules --json is one JSON document")
}

fn jobs(listing: &Value) -> &Vec<Value> {
    listing["jobs"].as_array().expect("jobs is a list")
}

#[test]
fn ctl_lists_the_schedules_cancels_one_then_all_and_a_passive_node_names_the_active() {
    let mut cluster = Cluster::new(2, "");
    cluster.start_all();
    let active = cluster.wait_for_one_active();
    let passive = 1 - active;
    let node = &cluster.nodes[active];
    let url = failover_url(&cluster);

    let before = shared_proto::unix_ms();
    send_receipted(&url, "/queue/ctl-a", &[("AMQ_SCHEDULED_DELAY", "8000")]);
    send_receipted(&url, "/queue/ctl-a", &[("AMQ_SCHEDULED_DELAY", "9000")]);
    send_receipted(
        &url,
        "/queue/ctl-periodic",
        &[
            ("AMQ_SCHEDULED_DELAY", "600000"),
            ("AMQ_SCHEDULED_PERIOD", "1000"),
            ("AMQ_SCHEDULED_REPEAT", "5"),
        ],
    );
    send_receipted(
        &url,
        "/topic/ctl-cron",
        &[("AMQ_SCHEDULED_CRON", "0 0 1 1 *")],
    );
    let after = shared_proto::unix_ms();

    // --json: every job, in due order, with what was asked of it.
    let listed = listing(node, &[]);
    assert_eq!(listed["node"], node.name.as_str(), "{listed}");
    assert!(listed["cut"].is_null(), "{listed}");
    let all = jobs(&listed);
    let destinations: Vec<&str> = all
        .iter()
        .map(|j| j["destination"].as_str().unwrap())
        .collect();
    assert_eq!(
        destinations,
        [
            "/queue/ctl-a",
            "/queue/ctl-a",
            "/queue/ctl-periodic",
            "/topic/ctl-cron"
        ],
        "{listed}"
    );
    let due = |j: &Value| j["next_due_unix_ms"].as_u64().unwrap();
    assert!(
        (before + 8000..=after + 8000).contains(&due(&all[0])),
        "due 8 s after the SEND: {listed}"
    );
    assert!(
        (before + 600_000..=after + 600_000).contains(&due(&all[2])),
        "{listed}"
    );
    assert_eq!(all[2]["remaining"], 5, "{listed}");
    assert!(all[2]["cron"].is_null(), "{listed}");
    assert_eq!(all[3]["cron"], "0 0 1 1 *", "{listed}");
    let cancelled = all[0]["id"].as_str().unwrap().to_owned();
    let kept = all[1]["id"].as_str().unwrap().to_owned();
    assert_ne!(cancelled, kept);

    // The table: a header, a row per job with its due time in UTC and as a countdown.
    let out = node.ctl(&["schedules"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(table.starts_with("ID "), "{table}");
    assert!(
        table.contains("NEXT DUE (UTC)") && table.contains("CRON"),
        "{table}"
    );
    assert!(
        table.contains(&cancelled) && table.contains("0 0 1 1 *"),
        "{table}"
    );
    assert!(table.contains("Z (in "), "{table}");
    assert_eq!(table.lines().count(), 5, "{table}");

    // --limit: the first jobs only, and the cut said.
    let first = listing(node, &["--limit", "1"]);
    assert_eq!(jobs(&first).len(), 1, "{first}");
    assert_eq!(first["cut"], "limit", "{first}");
    let out = node.ctl(&["schedules", "--limit", "2"]);
    assert!(
        stdout(&out).contains("more are pending"),
        "{}",
        stdout(&out)
    );

    // A passive node cannot answer, and says who can.
    let out = cluster.nodes[passive].ctl(&["schedules"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let said = stderr(&out);
    let expected = format!(
        "{} is passive; the active node is {}",
        cluster.nodes[passive].name, node.name
    );
    assert!(said.contains(&expected), "{said}");

    // cancel ID: that job only.
    let out = node.ctl(&["schedules", "cancel", &cancelled]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("cancelled 1 "), "{}", stdout(&out));
    let left: Vec<String> = jobs(&listing(node, &[]))
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(left.len(), 3, "{left:?}");
    assert!(!left.contains(&cancelled), "{left:?}");
    // Cancelling it again finds nothing: exit 1, saying so.
    let out = node.ctl(&["schedules", "cancel", &cancelled]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("no pending job has id"),
        "{}",
        stderr(&out)
    );

    // Past both due times the kept job's delivery has come, and the cancelled one's never.
    let settle = (before + 9000 + 2000).saturating_sub(shared_proto::unix_ms());
    std::thread::sleep(Duration::from_millis(settle));
    let delivered = drain(&url, "/queue/ctl-a", Duration::from_secs(3));
    assert_eq!(delivered, [kept], "{}", cluster.logs());

    // cancel --all: the rest.
    let out = node.ctl(&["schedules", "cancel", "--all"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("cancelled 2 "), "{}", stdout(&out));
    assert!(jobs(&listing(node, &[])).is_empty());
    let out = node.ctl(&["schedules"]);
    assert_eq!(stdout(&out), "no pending scheduled jobs\n");
}

#[test]
#[ignore = "needs root to run ctl as another uid; tests/run-all.sh runs it as root"]
fn a_non_admin_may_list_schedules_but_not_cancel_them() {
    require_root("to run ctl as another uid");
    let mut cluster = Cluster::new(1, "socket_mode = \"0666\"\n");
    cluster.start_all();
    let node = &cluster.nodes[cluster.wait_for_one_active()];
    let url = failover_url(&cluster);
    send_receipted(
        &url,
        "/queue/ctl-admin",
        &[("AMQ_SCHEDULED_DELAY", "600000")],
    );
    let as_nobody = |args: &[&str]| {
        as_user(node.ctl_command(args), NOBODY, NOBODY, &[])
            .output()
            .unwrap()
    };
    let out = as_nobody(&["schedules", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = jobs(&listed)[0]["id"].as_str().unwrap().to_owned();
    for args in [
        &["schedules", "cancel", "--all"][..],
        &["schedules", "cancel", &id][..],
    ] {
        let out = as_nobody(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stdout(&out));
        let said = stderr(&out);
        assert!(
            said.contains("refused") && said.contains("uid 65534"),
            "{said}"
        );
    }
    assert_eq!(jobs(&listing(node, &[])).len(), 1, "nothing was cancelled");
}
