//! The HA core end to end: three real nodes on one temporary shared directory.

use ha_tests::*;
use shared_proto::admin::Role;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;

/// Three nodes, started, with one active. Returns the cluster and the active index.
fn three_nodes(extra: &str) -> (Cluster, usize) {
    let mut cluster = Cluster::new(3, extra);
    cluster.start_all();
    let active = cluster.wait_for_one_active();
    (cluster, active)
}

#[test]
fn exactly_one_node_is_active_and_only_it_opens_a_client_port() {
    let (cluster, active) = three_nodes("");
    assert!(answers_stomp(cluster.nodes[active].addr()));
    for (i, node) in cluster.nodes.iter().enumerate() {
        let status = node.status().unwrap();
        let holder = status.holder.expect("every node sees the holder");
        assert_eq!(holder.node, cluster.nodes[active].name);
        if i == active {
            assert_eq!(status.listeners, vec![node.addr().to_string()]);
            assert_eq!(status.epoch, Some(holder.epoch));
            let broker = status.broker_pid.unwrap();
            let environ = std::fs::read(format!("/proc/{broker}/environ")).unwrap();
            let environ = String::from_utf8_lossy(&environ);
            assert!(environ.contains("LOCKD_CONTROL_FD=3"), "{environ}");
            assert!(
                !environ.contains("NOTIFY_SOCKET"),
                "brokerd got lockd's NOTIFY_SOCKET"
            );
        } else {
            assert_eq!(status.role, Role::Passive);
            assert_eq!(status.broker_pid, None);
            assert!(status.listeners.is_empty());
            assert!(
                std::net::TcpStream::connect(node.addr()).is_err(),
                "passive {} has its client port open",
                node.name
            );
        }
    }
}

#[test]
fn sigkill_of_the_active_lockd_leaves_no_broker_and_a_passive_takes_over() {
    let (mut cluster, active) = three_nodes("");
    let before = cluster.nodes[active].status().unwrap();
    let broker = before.broker_pid.unwrap();
    cluster.nodes[active].kill(libc::SIGKILL);
    wait_until("the old brokerd to die with its lockd", || {
        process_gone(broker).then_some(())
    });
    let next = cluster.wait_for_active_other_than(active);
    let after = cluster.nodes[next].status().unwrap();
    assert!(after.epoch > before.epoch, "{after:?} vs {before:?}");
    assert!(answers_stomp(cluster.nodes[next].addr()));
    assert!(std::net::TcpStream::connect(cluster.nodes[active].addr()).is_err());
}

/// Regression guard for invariant 2's note: PDEATHSIG follows the *thread* that forked, and
/// tokio's blocking pool lets an idle thread go after 10 s, so a broker forked from one would be
/// killed (and restarted, under a new pid) while its lockd runs on.
#[test]
fn the_broker_outlives_lockds_short_lived_threads() {
    let mut cluster = Cluster::new(1, "");
    cluster.start_all();
    let before = cluster.nodes[0].wait_for_role(Role::Active);
    let broker = before.broker_pid.unwrap();
    let ppid = std::fs::read_to_string(format!("/proc/{broker}/status")).unwrap();
    assert!(
        ppid.lines()
            .any(|l| l == format!("PPid:\t{}", before.lockd_pid)),
        "brokerd is not lockd's child:\n{ppid}"
    );
    std::thread::sleep(std::time::Duration::from_secs(12));
    let after = cluster.nodes[0].status().unwrap();
    assert_eq!(
        (after.role, after.broker_pid, after.restarts, after.epoch),
        (Role::Active, Some(broker), 0, before.epoch),
        "{}",
        cluster.logs()
    );
    assert!(!process_gone(broker));
}

#[test]
fn sigkill_of_lockd_and_brokerd_together_hands_over() {
    let (mut cluster, active) = three_nodes("");
    let broker = cluster.nodes[active].status().unwrap().broker_pid.unwrap();
    // SAFETY: kill(2) of a broker process this test's cluster started.
    unsafe { libc::kill(broker as i32, libc::SIGKILL) };
    cluster.nodes[active].kill(libc::SIGKILL);
    let next = cluster.wait_for_active_other_than(active);
    assert!(answers_stomp(cluster.nodes[next].addr()));
}

#[test]
fn a_killed_brokerd_restarts_in_place_then_the_lock_goes_to_a_peer() {
    let (cluster, active) = three_nodes("max_restarts = 2\nrestart_window_ms = 600000\n");
    let node = &cluster.nodes[active];
    let mut epoch = node.status().unwrap().epoch.unwrap();
    for restart in 1..=2 {
        let pid = node.status().unwrap().broker_pid.unwrap();
        // SAFETY: kill(2) of a broker process this test's cluster started.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        let status = wait_until(&format!("restart {restart} in place"), || {
            node.status()
                .ok()
                .filter(|s| s.role == Role::Active && s.broker_pid.is_some_and(|p| p != pid))
        });
        assert_eq!(status.restarts, restart);
        assert!(status.epoch > Some(epoch), "a restart claims a fresh epoch");
        epoch = status.epoch.unwrap();
        assert!(answers_stomp(node.addr()));
    }
    let pid = node.status().unwrap().broker_pid.unwrap();
    // SAFETY: as above.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let next = cluster.wait_for_active_other_than(active);
    let status = node.status().unwrap();
    assert!(
        matches!(status.role, Role::HoldOff | Role::Passive),
        "{status:?}"
    );
    assert!(answers_stomp(cluster.nodes[next].addr()));
}

#[test]
fn ctl_failover_wait_moves_the_role_and_the_old_active_holds_off() {
    let (cluster, active) = three_nodes("");
    let old = &cluster.nodes[active];
    let out = old.ctl(&["failover", "--wait", "--timeout-ms", "30000"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let next = (0..3)
        .find(|&i| i != active && cluster.nodes[i].status().unwrap().role == Role::Active)
        .expect("another node is active once failover --wait returns");
    assert!(
        stdout.contains(&format!("{} is active", cluster.nodes[next].name)),
        "{stdout}"
    );
    assert!(stdout.contains("handover from"), "{stdout}");
    assert!(answers_stomp(cluster.nodes[next].addr()));
    assert!(std::net::TcpStream::connect(old.addr()).is_err());
    // The hold-off ends as soon as the peer took over; the old active competes again.
    old.wait_for_role(Role::Passive);
}

#[test]
fn failover_on_a_passive_node_is_refused_and_changes_nothing() {
    let (cluster, active) = three_nodes("");
    let passive = (active + 1) % 3;
    let out = cluster.nodes[passive].ctl(&["failover"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not active"), "{stderr}");
    assert_eq!(cluster.wait_for_one_active(), active);
}

#[test]
fn a_restarted_old_active_joins_as_passive() {
    let (mut cluster, active) = three_nodes("");
    cluster.nodes[active].kill(libc::SIGKILL);
    let next = cluster.wait_for_active_other_than(active);
    cluster.nodes[active].start();
    let status = cluster.nodes[active].wait_for_role(Role::Passive);
    assert_eq!(status.holder.unwrap().node, cluster.nodes[next].name);
    assert_eq!(cluster.wait_for_one_active(), next);
    assert!(std::net::TcpStream::connect(cluster.nodes[active].addr()).is_err());
}

#[test]
fn sigterm_stops_the_broker_releases_the_lock_and_exits_zero() {
    let (mut cluster, active) = three_nodes("");
    let broker = cluster.nodes[active].status().unwrap().broker_pid.unwrap();
    cluster.nodes[active].kill(libc::SIGTERM);
    assert_eq!(cluster.nodes[active].wait_exit(), Some(0));
    assert!(process_gone(broker));
    let next = cluster.wait_for_active_other_than(active);
    assert!(answers_stomp(cluster.nodes[next].addr()));
}

/// Tampers with the shared directory and checks that the active's keepalive fences its broker
/// for that `reason` (a fragment of the logged reason).
fn fenced_within_keepalive(reason: &str, tamper: impl FnOnce(&Cluster)) {
    // keepalive_ms is 100 in tests; fence_timeout_ms is its default, 10 s.
    let (cluster, active) = three_nodes("");
    let node = &cluster.nodes[active];
    let before = node.status().unwrap();
    let tampered = std::time::Instant::now();
    tamper(&cluster);
    let broker = before.broker_pid.unwrap();
    wait_until("the fenced broker to die", || {
        process_gone(broker).then_some(())
    });
    // Not a speed test: a generous bound that still proves the keepalive caught it, not the
    // 10 s stall fence.
    let took = tampered.elapsed();
    assert!(
        took < std::time::Duration::from_secs(5),
        "fenced only after {took:?}"
    );
    // When another node claimed an epoch, brokerd's own 5 ms epoch poll may end the broker
    // before lockd's keepalive runs; lockd logs its fence (with the reason) right after.
    let fence = wait_until("lockd to log the fence", || {
        std::fs::read_to_string(&node.log)
            .unwrap()
            .lines()
            .find(|l| l.contains("fencing: killing brokerd"))
            .map(str::to_owned)
    });
    assert!(fence.contains(reason), "fenced for another reason: {fence}");
    // Exactly one node ends up active again, under a newer epoch.
    let now = cluster.wait_for_one_active();
    let status = cluster.nodes[now].status().unwrap();
    assert!(status.epoch > before.epoch);
    assert!(answers_stomp(cluster.nodes[now].addr()));
}

#[test]
fn a_deleted_lock_file_fences_the_active() {
    fenced_within_keepalive("lock file", |cluster| {
        std::fs::remove_file(cluster.shared.join("lock")).unwrap();
    });
}

#[test]
fn a_replaced_lock_file_fences_the_active() {
    fenced_within_keepalive("lock file", |cluster| {
        let tmp = cluster.shared.join("lock.new");
        std::fs::write(&tmp, "").unwrap();
        std::fs::rename(&tmp, cluster.shared.join("lock")).unwrap();
    });
}

#[test]
fn an_epoch_file_moved_backwards_fences_the_active() {
    fenced_within_keepalive("the epoch file says 0", |cluster| {
        std::fs::write(cluster.shared.join("epoch"), "0\n").unwrap();
    });
}

#[test]
fn a_holder_json_naming_another_node_fences_the_active() {
    fenced_within_keepalive("holder.json names intruder", |cluster| {
        let path = cluster.shared.join("holder.json");
        let mut holder: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let epoch = holder["epoch"].as_u64().unwrap();
        holder["node"] = "intruder".into();
        holder["epoch"] = epoch.into();
        let tmp = cluster.shared.join("holder.json.intruder");
        std::fs::write(&tmp, serde_json::to_vec(&holder).unwrap()).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    });
}

#[test]
#[ignore = "needs root to run ctl as another uid; tests/run-all.sh runs it as root"]
fn a_non_admin_may_read_status_but_not_fail_over() {
    require_root("to run ctl as another uid");
    // Debian's `users` group (gid 100) stands for the admin group.
    let (cluster, active) = three_nodes("socket_mode = \"0666\"\nadmin_group = \"users\"\n");
    let node = &cluster.nodes[active];
    let out = as_user(node.ctl_command(&["status", "--json"]), NOBODY, NOBODY, &[])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = as_user(node.ctl_command(&["failover"]), NOBODY, NOBODY, &[])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("failover refused") && stderr.contains("uid 65534"),
        "{stderr}"
    );
    assert!(
        stderr.contains("\"users\""),
        "names the admin group: {stderr}"
    );
    assert_eq!(cluster.wait_for_one_active(), active);
    assert_eq!(node.status().unwrap().role, Role::Active);
    // The same uid with the admin group as a supplementary group may.
    let out = as_user(
        node.ctl_command(&["failover", "--wait"]),
        NOBODY,
        NOBODY,
        &[100],
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    cluster.wait_for_active_other_than(active);
}

#[test]
fn garbage_on_the_ctl_socket_is_refused_and_changes_nothing() {
    let (cluster, active) = three_nodes("");
    let node = &cluster.nodes[active];
    let before = node.status().unwrap();
    for garbage in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        &b"{\"type\":\"failover\"}\n"[..],
        &b"{\"type\":\"hello\",\"version\":99}\n"[..],
        &[0xff; 100_000][..],
    ] {
        let mut stream = UnixStream::connect(&node.socket).unwrap();
        stream.write_all(garbage).unwrap();
        stream.write_all(b"\n").unwrap_or(());
        let mut reply = String::new();
        BufReader::new(&stream).read_line(&mut reply).unwrap();
        assert!(reply.contains("\"type\":\"error\""), "{reply}");
    }
    let after = node.status().unwrap();
    assert_eq!(
        (after.role, after.epoch, after.broker_pid),
        (before.role, before.epoch, before.broker_pid)
    );
}

#[test]
fn garbage_from_a_broker_is_refused_and_the_node_never_goes_active() {
    let mut cluster = Cluster::new(1, "");
    let fake = cluster.root.join("fake-brokerd");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'this is not the protocol' >&3\nsleep 60\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let config = std::fs::read_to_string(&cluster.nodes[0].config).unwrap();
    let config = config
        .lines()
        .filter(|l| !l.starts_with("broker_binary"))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(
        &cluster.nodes[0].config,
        format!(
            "{config}\nbroker_binary = \"{}\"\nmax_restarts = 1\n",
            fake.display()
        ),
    )
    .unwrap();
    cluster.nodes[0].start();
    let node = &cluster.nodes[0];
    wait_until("the node to give up on the bad broker", || {
        std::fs::read_to_string(&node.log)
            .ok()
            .filter(|log| log.matches("broke the control protocol").count() >= 2)
    });
    let status = node.status().unwrap();
    assert_ne!(status.role, Role::Active);
    assert!(std::net::TcpStream::connect(node.addr()).is_err());
}

#[test]
fn broken_settings_are_refused_with_what_to_fix() {
    let mut cluster = Cluster::new(1, "");
    let lockd = |args: &[&str]| {
        let mut cmd = std::process::Command::new(&bins().lockd);
        if is_root() {
            cmd.args(["--broker-user", "nobody"]);
        }
        let out = cmd.args(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let socket = cluster.root.join("x.sock");
    // lockd as node `node` on `shared` with control socket `socket`, then `extra`.
    let lockd_on =
        |shared: &std::path::Path, node: &str, socket: &std::path::Path, extra: &[&str]| {
            let (shared, socket) = (shared.to_str().unwrap(), socket.to_str().unwrap());
            let mut args = vec!["--shared-dir", shared, "--node", node, "--socket", socket];
            args.extend_from_slice(extra);
            lockd(&args)
        };
    let missing = cluster.root.join("missing");
    let (code, err) = lockd_on(&missing, "n", &socket, &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("does not exist"), "{err}");
    let unmarked = cluster.root.join("unmarked");
    std::fs::create_dir(&unmarked).unwrap();
    let (code, err) = lockd_on(&unmarked, "n", &socket, &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("is the shared filesystem mounted"), "{err}");
    assert!(
        !unmarked.join("lock").exists(),
        "an unmarked directory is never locked"
    );
    let (code, err) = lockd_on(&cluster.shared, "n", &socket, &["--listen", "nowhere"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("not HOST:PORT"), "{err}");
    if is_root() {
        // Prepared without --broker-user: data/ belongs to root, brokerd (nobody) cannot write it.
        let rootonly = cluster.root.join("rootonly");
        let out = std::process::Command::new(&bins().ctl)
            .arg("init")
            .arg(&rootonly)
            .output()
            .unwrap();
        assert!(out.status.success());
        let (code, err) = lockd_on(&rootonly, "n", &socket, &[]);
        assert_eq!(code, Some(2));
        assert!(
            err.contains("not writable by the broker user") && err.contains("--broker-user"),
            "{err}"
        );
    }
    let bad = cluster.root.join("bad.toml");
    std::fs::write(&bad, "node = \"n\"\nkeepalive = 3\n").unwrap();
    let (code, err) = lockd(&["--config", bad.to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert!(err.contains("unknown field `keepalive`"), "{err}");
    // A second lockd on a running node's socket is refused, not allowed to steal it.
    cluster.nodes[0].start();
    let (code, err) = lockd_on(&cluster.shared, "n2", &cluster.nodes[0].socket, &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("already listening"), "{err}");
}

#[test]
#[ignore = "needs root for a read-only bind mount; tests/run-all.sh runs it as root"]
fn a_read_only_shared_directory_is_refused_with_what_to_fix() {
    require_root("for a read-only bind mount");
    let cluster = Cluster::new(1, "");
    let ro = cluster.root.join("ro");
    std::fs::create_dir(&ro).unwrap();
    // A private mount namespace: the read-only mount vanishes with the process.
    let script = format!(
        "mount --bind {shared} {ro} && mount -o remount,bind,ro {ro} && exec {lockd} --shared-dir {ro} --node n1 --socket {socket} --broker-user nobody",
        shared = cluster.shared.display(),
        ro = ro.display(),
        lockd = bins().lockd.display(),
        socket = cluster.root.join("ro.sock").display(),
    );
    let out = std::process::Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("Read-only file system") && stderr.contains("mounted read-only"),
        "{stderr}"
    );
}

#[test]
fn every_node_lists_the_whole_cluster() {
    let (cluster, active) = three_nodes("");
    let expected: Vec<(String, Role)> = cluster
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let role = if i == active {
                Role::Active
            } else {
                Role::Passive
            };
            (n.name.clone(), role)
        })
        .collect();
    for node in &cluster.nodes {
        // Records are rewritten and re-read every keepalive period: wait for them to settle.
        let status = wait_until(&format!("{} to see every node's role", node.name), || {
            node.status().ok().filter(|s| {
                s.nodes
                    .iter()
                    .map(|n| (n.node.clone(), n.role))
                    .collect::<Vec<_>>()
                    == expected
            })
        });
        assert!(status.warnings.is_empty(), "{:?}", status.warnings);
        assert!(status.nodes.iter().all(|n| n.heartbeat_age_ms < 30_000));
    }
    let text = String::from_utf8(cluster.nodes[active].ctl(&["status"]).stdout).unwrap();
    assert!(text.contains("nodes\n") && text.contains("node2"), "{text}");
}

#[test]
fn a_passive_reports_a_holder_whose_heartbeat_stopped() {
    // SIGSTOP freezes the active lockd: its lock stays held (as an NFSv3 lock of a dead client
    // would), its heartbeat stops, and its brokerd keeps running.
    // stale_holder_ms must exceed fence_timeout_ms (lockd refuses it otherwise).
    let (mut cluster, active) = three_nodes("stale_holder_ms = 1000\nfence_timeout_ms = 900\n");
    cluster.nodes[active].kill(libc::SIGSTOP);
    let passive = &cluster.nodes[(active + 1) % 3];
    let status = wait_until("the passive to call the holder stale", || {
        passive.status().ok().filter(|s| !s.warnings.is_empty())
    });
    let warning = &status.warnings[0];
    assert!(warning.contains(&cluster.nodes[active].name), "{warning}");
    assert!(
        warning.contains("has not heartbeaten") && warning.contains("NFSv3"),
        "{warning}"
    );
    let text = String::from_utf8(passive.ctl(&["status"]).stdout).unwrap();
    assert!(text.contains("WARNING"), "{text}");
    assert_eq!(
        status.role,
        Role::Passive,
        "a stale holder is reported, never overruled"
    );
    cluster.nodes[active].kill(libc::SIGCONT);
}

/// Issue 8 item 11: a SIGTERMed lockd exits only once holder.json says released, so a node that
/// distrusts the locks takes over at once instead of waiting for the heartbeat to go still.
/// (lockd used to exit right after queueing the release, before the keeper had written it.)
#[test]
fn sigterm_exits_only_once_holder_json_says_released() {
    let mut cluster = Cluster::new(1, "");
    cluster.start_all();
    let active = cluster.nodes[0].wait_for_role(Role::Active);
    cluster.nodes[0].kill(libc::SIGTERM);
    assert_eq!(cluster.nodes[0].wait_exit(), Some(0));
    let text = std::fs::read(cluster.shared.join("holder.json")).unwrap();
    let holder: shared_proto::holder::Holder = serde_json::from_slice(&text).unwrap();
    assert_eq!(
        (holder.node.as_str(), Some(holder.epoch), holder.state),
        (
            cluster.nodes[0].name.as_str(),
            active.epoch,
            shared_proto::holder::HolderState::Released
        )
    );
}
