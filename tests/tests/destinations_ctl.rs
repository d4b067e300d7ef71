//! ActiveMQ's destination tools against real nodes (issue 10 item 8): `ctl destinations`
//! (table and `--json`), `ctl browse` (headers and bodies, nothing consumed), `ctl purge`,
//! `ctl delete`, `ctl receive` printing each message unless `--quiet`, and a passive node
//! naming the active one.

use ha_tests::*;
use serde_json::Value;
use stomp_client::AckMode;

/// `ctl destinations --json` on `node`, parsed; panics with ctl's words if it failed.
fn listing(node: &Node) -> Value {
    let out = node.ctl(&["destinations", "--json"]);
    assert!(out.status.success(), "ctl destinations: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("ctl destinations --json is one JSON document")
}

/// The entry for `name` in a listing.
fn entry<'a>(listed: &'a Value, name: &str) -> &'a Value {
    listed["destinations"]
        .as_array()
        .expect("destinations is a list")
        .iter()
        .find(|d| d["name"] == name)
        .unwrap_or_else(|| panic!("{name} is listed: {listed}"))
}

/// `ctl ARGS` with the failover URL for the STOMP subcommands.
fn ctl_stomp(node: &Node, url: &str, args: &[&str]) -> std::process::Output {
    let mut cmd = node.ctl_command(args);
    cmd.env("STOMP_URL", url);
    cmd.output().expect("run ctl")
}

#[test]
fn ctl_lists_browses_purges_and_deletes_destinations() {
    let mut cluster = Cluster::new(2, "");
    cluster.start_all();
    let active = cluster.wait_for_one_active();
    let node = &cluster.nodes[active];
    let passive = &cluster.nodes[1 - active];
    let url = failover_url(&cluster);
    for n in 0..3 {
        let body = format!("order {n}");
        with_client(&url, async |client| {
            let headers = [("persistent", "true"), ("x-n", "kept")];
            let receipt = client.send("/queue/orders", &headers, body.clone().into_bytes());
            receipt.await.unwrap().await.unwrap();
        });
    }
    let subscriber = std::thread::spawn({
        let url = url.clone();
        move || {
            with_client(&url, async |client| {
                let mut sub = client
                    .subscribe("/topic/prices", AckMode::Auto, &[])
                    .await
                    .unwrap();
                // Held until the listing below has seen it.
                let _ = tokio::time::timeout(WAIT, sub.next()).await;
            })
        }
    });

    // The listing: depth, enqueued, an age for the oldest message.
    let listed = wait_until("the topic's subscriber listed", || {
        let listed = listing(node);
        let has_topic = listed["destinations"]
            .as_array()
            .is_some_and(|d| d.iter().any(|d| d["name"] == "/topic/prices"));
        has_topic.then_some(listed)
    });
    assert_eq!(listed["node"], node.name.as_str(), "{listed}");
    let orders = entry(&listed, "/queue/orders");
    assert_eq!(
        (
            &orders["kind"],
            &orders["depth"],
            &orders["enqueued"],
            &orders["consumers"]
        ),
        (
            &Value::from("queue"),
            &Value::from(3),
            &Value::from(3),
            &Value::from(0)
        ),
        "{listed}"
    );
    assert!(orders["oldest_age_ms"].as_u64().is_some(), "{listed}");
    assert_eq!(entry(&listed, "/topic/prices")["consumers"], 1, "{listed}");
    let table = stdout(&node.ctl(&["destinations"]));
    assert!(
        table.starts_with("NAME ") && table.contains("PAGED-OUT"),
        "{table}"
    );
    assert!(table.contains("/queue/orders"), "{table}");
    with_client(&url, async |client| {
        client
            .send("/topic/prices", &[], &b"tick"[..])
            .await
            .unwrap()
            .await
            .unwrap();
    });
    subscriber.join().unwrap();

    // Browse: headers and bodies, nothing consumed.
    let out = ctl_stomp(node, &url, &["browse", "/queue/orders", "--count", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let browsed = stdout(&out);
    assert!(
        browsed.contains("x-n:kept") && browsed.contains("\n\norder 0\n"),
        "{browsed}"
    );
    assert!(
        browsed.contains("order 1") && !browsed.contains("order 2"),
        "{browsed}"
    );
    assert!(
        stderr(&out).contains("browsed 2 messages"),
        "{}",
        stderr(&out)
    );
    assert_eq!(entry(&listing(node), "/queue/orders")["depth"], 3);

    // Receive prints each message by default; --quiet the summary alone.
    let out = ctl_stomp(node, &url, &["receive", "--dest", "/queue/orders"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("\n\norder 0\n"), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("destination:/queue/orders"),
        "{}",
        stdout(&out)
    );
    let out = ctl_stomp(
        node,
        &url,
        &["receive", "--dest", "/queue/orders", "--quiet"],
    );
    assert!(
        stdout(&out).starts_with("received 1 messages"),
        "{}",
        stdout(&out)
    );

    // A passive node names the active one.
    let out = passive.ctl(&["destinations"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains(&format!("the active node is {}", node.name)),
        "{}",
        stderr(&out)
    );

    // Purge: the waiting message goes; the queue stays.
    let out = node.ctl(&["purge", "/queue/orders"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("purged 1 message(s)"),
        "{}",
        stdout(&out)
    );
    let orders = entry(&listing(node), "/queue/orders").clone();
    assert_eq!(
        (orders["depth"].as_u64(), orders["dequeued"].as_u64()),
        (Some(0), Some(3))
    );
    let out = node.ctl(&["purge", "/queue/nothing"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no queue /queue/nothing"),
        "{}",
        stderr(&out)
    );

    // Delete: refused while a consumer is there, done once it is gone, with what waited.
    send_receipted(&url, "/queue/orders", &[("persistent", "true")]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = stomp_client::Client::connect(&url, stomp_client::Options::default())
            .await
            .unwrap();
        let matches_nothing = [("selector", "x = 'never'")];
        let sub = (client
            .subscribe("/queue/orders", AckMode::Auto, &matches_nothing)
            .await)
            .unwrap();
        let out = node.ctl(&["delete", "/queue/orders"]);
        assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
        assert!(stderr(&out).contains("has 1 consumers"), "{}", stderr(&out));
        drop(sub);
        let _ = tokio::time::timeout(WAIT, client.disconnect()).await;
    });
    let out = wait_until("the queue deleted once its consumer left", || {
        let out = node.ctl(&["delete", "/queue/orders"]);
        out.status.success().then_some(out)
    });
    assert!(
        stdout(&out).contains("deleted /queue/orders and its 1 message(s)"),
        "{}",
        stdout(&out)
    );
    let listed = listing(node);
    let names: Vec<&str> = (listed["destinations"].as_array().unwrap().iter())
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert!(!names.contains(&"/queue/orders"), "{listed}");
}

#[test]
#[ignore = "needs root to run ctl as another uid; tests/run-all.sh runs it as root"]
fn a_non_admin_may_list_destinations_but_not_purge_or_delete_them() {
    require_root("to run ctl as another uid");
    let mut cluster = Cluster::new(1, "socket_mode = \"0666\"\n");
    cluster.start_all();
    let node = &cluster.nodes[cluster.wait_for_one_active()];
    send_receipted(
        &failover_url(&cluster),
        "/queue/kept",
        &[("persistent", "true")],
    );
    let as_nobody = |args: &[&str]| {
        as_user(node.ctl_command(args), NOBODY, NOBODY, &[])
            .output()
            .unwrap()
    };
    let out = as_nobody(&["destinations", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for args in [&["purge", "/queue/kept"], &["delete", "/queue/kept"]] {
        let out = as_nobody(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stdout(&out));
        let said = stderr(&out);
        assert!(
            said.contains("refused") && said.contains("uid 65534"),
            "{said}"
        );
    }
    assert_eq!(
        entry(&listing(node), "/queue/kept")["depth"],
        1,
        "nothing was removed"
    );
}
