//! lockd's HTTP pages with real processes (issue 12 items 4 and 5): its `/metrics` scraped
//! through a failover, what it answers to requests it does not serve, and the console page a
//! node that is not active shows on `console_listen`.

use ha_tests::*;
use shared_proto::admin::Role;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

/// Two nodes with metrics and console pages; returns them with the active node's index.
fn two_nodes() -> (Cluster, usize) {
    let mut cluster = Cluster::new(2, "");
    cluster.with_http_pages(CONSOLE_USERS);
    cluster.start_all();
    let active = cluster.wait_for_one_active();
    (cluster, active)
}

/// One scrape of `node`'s lockd metrics, parsed.
fn scrape(node: &Node) -> BTreeMap<String, f64> {
    let answer = http::get(node.metrics.unwrap(), "/metrics")
        .unwrap_or_else(|e| panic!("scraping {}: {e:#}", node.name));
    assert_eq!(answer.status, 200, "{}", answer.body);
    http::metrics(&answer.body)
}

/// The role whose `lockd_role` series is 1, checking that exactly one is.
fn role_of(metrics: &BTreeMap<String, f64>) -> String {
    let on: Vec<&String> = metrics
        .iter()
        .filter(|(k, v)| k.starts_with("lockd_role{") && **v == 1.0)
        .map(|(k, _)| k)
        .collect();
    assert_eq!(on.len(), 1, "not exactly one role: {metrics:?}");
    on[0]
        .trim_start_matches("lockd_role{role=\"")
        .trim_end_matches("\"}")
        .to_string()
}

#[test]
fn lockd_metrics_follow_a_failover_scraped_all_along() {
    let (mut cluster, active) = two_nodes();
    let passive = 1 - active;
    let before = scrape(&cluster.nodes[passive]);
    assert_eq!(role_of(&before), "passive");
    let held = scrape(&cluster.nodes[active]);
    assert_eq!(role_of(&held), "active");
    let epoch = held["lockd_epoch"];
    assert!(epoch >= 1.0, "{held:?}");
    assert_eq!(held["lockd_failovers_total"], 1.0, "{held:?}");
    assert!(held.contains_key("lockd_lock_acquire_seconds"), "{held:?}");
    assert_eq!(held["lockd_broken_locks"], 0.0);
    // The active keeps its lock alive every 100 ms: the histogram fills.
    wait_until("keepalives counted", || {
        (scrape(&cluster.nodes[active])["lockd_keepalive_duration_seconds_count"] > 0.0)
            .then_some(())
    });

    // Scrape the passive all through the takeover: every scrape answers, and the role it
    // reports only moves forward, passive to starting to active.
    cluster.nodes[active].kill(libc::SIGKILL);
    let order = ["passive", "starting", "active"];
    let mut seen = vec![];
    let after = wait_until("the passive's metrics to say active", || {
        let metrics = scrape(&cluster.nodes[passive]);
        let role = role_of(&metrics);
        let rank = order
            .iter()
            .position(|r| *r == role)
            .unwrap_or_else(|| panic!("role {role} during a takeover: {seen:?}"));
        assert!(
            seen.last().is_none_or(|last| *last <= rank),
            "the role went back to {role}: {seen:?}"
        );
        seen.push(rank);
        (role == "active").then_some(metrics)
    });
    assert!(
        after["lockd_epoch"] > epoch,
        "{after:?} (old epoch {epoch})"
    );
    assert_eq!(
        after["lockd_failovers_total"],
        before["lockd_failovers_total"] + 1.0,
        "{after:?}"
    );
    assert!(after["lockd_lock_acquire_seconds"] >= 0.0, "{after:?}");
    assert_eq!(cluster.nodes[passive].status().unwrap().role, Role::Active);
    for reason in [
        "lock_lost",
        "keepalive_failed",
        "keepalive_timeout",
        "unexpected_acquisition",
    ] {
        assert_eq!(
            after[&format!("lockd_fences_total{{reason=\"{reason}\"}}")],
            0.0
        );
    }
    assert_eq!(after["lockd_broker_restarts_total"], 0.0);

    // The killed node comes back passive, and says so, with its counters from zero.
    cluster.nodes[active].start();
    cluster.nodes[active].wait_for_role(Role::Passive);
    let back = scrape(&cluster.nodes[active]);
    assert_eq!(role_of(&back), "passive");
    assert_eq!(back["lockd_failovers_total"], 0.0);
}

#[test]
fn lockd_metrics_refuse_what_they_do_not_serve_and_never_hang() {
    let (cluster, active) = two_nodes();
    let addr = cluster.nodes[active].metrics.unwrap();
    for (request, status) in [
        (&b"BLAH\r\n\r\n"[..], 400),
        (b"GET /metrics SPDY/3\r\n\r\n", 400),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),
        (b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405),
        (b"GET /admin HTTP/1.1\r\n\r\n", 404),
    ] {
        let answer = http::raw(addr, request).unwrap();
        assert_eq!(answer.status, status, "{request:?}: {}", answer.body);
    }
    let mut huge = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
    huge.resize(9000, b'a');
    assert_eq!(http::raw(addr, &huge).unwrap().status, 431);

    // Connections that never send a request hold a slot each, at most 8: a ninth is told 503
    // at once, and none of them delays the node.
    let silent: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(addr).unwrap()).collect();
    wait_until("a ninth connection refused with 503", || {
        http::get(addr, "/metrics")
            .ok()
            .filter(|answer| answer.status == 503)
    });
    assert_eq!(cluster.nodes[active].status().unwrap().role, Role::Active);
    // Each silent one is cut off at the read deadline with 408, not left open.
    for mut conn in silent {
        conn.set_read_timeout(Some(WAIT)).unwrap();
        let mut answer = Vec::new();
        conn.read_to_end(&mut answer).unwrap();
        assert!(
            answer.starts_with(b"HTTP/1.1 408 "),
            "{}",
            String::from_utf8_lossy(&answer)
        );
    }
    // Then scrapes are served again.
    assert_eq!(http::get(addr, "/metrics").unwrap().status, 200);
    // A client that sends half a request and goes away is no harm either.
    let mut gone = TcpStream::connect(addr).unwrap();
    gone.write_all(b"GET /met").unwrap();
    drop(gone);
    assert_eq!(http::get(addr, "/metrics").unwrap().status, 200);
}

/// What `addr` answers as a console, if anything: `Some(body)` for lockd's passive page.
fn passive_page(addr: SocketAddr) -> Option<String> {
    http::get(addr, "/any/path?x=1").ok().and_then(|answer| {
        (answer.status == 503
            && (answer.body).contains("the web console is served by the active node"))
        .then_some(answer.body)
    })
}

#[test]
fn a_passive_console_page_names_the_active_node_and_the_roles_swap_on_failover() {
    let (cluster, active) = two_nodes();
    let passive = 1 - active;
    let (a, p) = (&cluster.nodes[active], &cluster.nodes[passive]);
    let host = shared_proto::hostname();
    let page = wait_until("the passive's page to name the active node", || {
        passive_page(p.console.unwrap())
            .filter(|body| body.contains(&format!("The active node is {} on", a.name)))
    });
    assert!(page.contains(&format!("This is {}", p.name)), "{page}");
    assert!(page.contains(&host), "{page}");
    assert!(page.contains("http-equiv=\"refresh\""), "{page}");
    // The active node's lockd has closed its page for brokerd.
    assert_eq!(passive_page(a.console.unwrap()), None);

    let out = a.ctl(&["failover", "--wait"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The old active, holding off then passive, shows the page again, naming the new one; the
    // new active has closed its own.
    let page = wait_until("the old active's page to name the new active node", || {
        passive_page(a.console.unwrap())
            .filter(|body| body.contains(&format!("The active node is {} on", p.name)))
    });
    assert!(page.contains(&format!("This is {}", a.name)), "{page}");
    wait_until("the new active's lockd to close its page", || {
        passive_page(p.console.unwrap()).is_none().then_some(())
    });
    assert_eq!(p.status().unwrap().role, Role::Active);
    // The new active's brokerd was told where the console is.
    let pid = p.status().unwrap().broker_pid.unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let at = args.iter().position(|a| a == "--console-listen");
    assert_eq!(
        at.map(|i| args[i + 1].clone()),
        Some(p.console.unwrap().to_string()),
        "{args:?}"
    );
}
