//! ctl on a terminal and off it (issue 12 item 6): `ctl status --watch` redraws in place on a
//! pseudo-terminal and prints plain blocks (or JSON lines) otherwise; `ctl send`, `receive` and
//! `bench` draw progress bars only on a terminal, and print exactly what they printed before
//! when stdout is a pipe.

use ha_tests::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// One active node.
fn one_node() -> Cluster {
    let mut cluster = Cluster::new(1, "");
    cluster.start_all();
    cluster.wait_for_one_active();
    cluster
}

/// `ctl ARGS` against `node`, as a terminal would run it.
fn on_terminal(node: &Node, args: &[&str]) -> String {
    let mut cmd = node.ctl_command(args);
    cmd.env("TERM", "xterm-256color");
    let (status, output) = run_in_pty(cmd, WAIT);
    assert!(
        status.is_some_and(|s| s.success()),
        "ctl {args:?} on a terminal: {status:?}\n{output}"
    );
    output
}

#[test]
fn status_watch_redraws_in_place_on_a_terminal_and_prints_blocks_otherwise() {
    let cluster = one_node();
    let node = &cluster.nodes[0];
    let watch = ["status", "--watch", "--interval-ms", "100", "--count", "3"];

    let screen = on_terminal(node, &watch);
    // Cleared once, then redrawn from the top three times, the cursor given back at the end.
    assert_eq!(screen.matches("\x1b[2J").count(), 1, "{screen:?}");
    assert_eq!(screen.matches("\x1b[H").count(), 3, "{screen:?}");
    assert_eq!(screen.matches("role      active").count(), 3, "{screen:?}");
    assert!(screen.contains("Ctrl-C to stop"), "{screen:?}");
    assert!(screen.ends_with("\x1b[?25h"), "{screen:?}");

    let out = node.ctl(&watch);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        !text.contains('\x1b'),
        "escape codes off a terminal: {text:?}"
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("# ctl status of "))
            .count(),
        3,
        "{text}"
    );
    assert_eq!(text.matches("role      active").count(), 3, "{text}");

    let out = node.ctl(&[
        "status",
        "--json",
        "--watch",
        "--interval-ms",
        "100",
        "--count",
        "2",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<String> = stdout(&out).lines().map(String::from).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    for line in lines {
        let status: shared_proto::admin::Status = serde_json::from_str(&line).unwrap();
        assert_eq!(status.node, node.name);
    }
}

#[test]
fn status_watch_runs_until_ctrl_c_and_then_exits_zero() {
    let cluster = one_node();
    let mut child = cluster.nodes[0]
        .ctl_command(&["status", "--watch", "--interval-ms", "100"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Two blocks, so it is refreshing, not done.
    let mut blocks = 0;
    while blocks < 2 {
        let line = lines.next().expect("ctl ended early").unwrap();
        blocks += usize::from(line.starts_with("# ctl status of "));
    }
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    for _ in lines.by_ref() {}
    let status = wait_until("ctl to exit after SIGINT", || child.try_wait().unwrap());
    assert!(status.success(), "{status:?}");
}

#[test]
fn send_receive_and_bench_draw_progress_only_on_a_terminal() {
    let cluster = one_node();
    let node = &cluster.nodes[0];
    let url = format!("tcp://{}", node.addr());
    let send = [
        "send", "--url", &url, "--dest", "/queue/p", "--count", "300",
    ];
    let receive = [
        "receive", "--url", &url, "--dest", "/queue/p", "--count", "300", "--quiet",
    ];
    let bench = ["bench", "--url", &url, "--messages", "300"];

    let screen = on_terminal(node, &send);
    assert!(screen.contains("send /queue/p ["), "no bar: {screen:?}");
    assert!(
        screen.contains("sent 300 messages to /queue/p"),
        "{screen:?}"
    );
    let screen = on_terminal(node, &receive);
    assert!(screen.contains("receive /queue/p ["), "no bar: {screen:?}");
    assert!(screen.contains("received 300 messages"), "{screen:?}");
    let screen = on_terminal(node, &bench);
    assert!(screen.contains("bench /queue/bench-"), "no bar: {screen:?}");

    // Off a terminal: the same one summary line as ever, and nothing drawn.
    for (args, summary) in [
        (&send[..], "sent 300 messages to /queue/p: 300 receipted"),
        (&receive[..], "received 300 messages from /queue/p"),
    ] {
        let out = node.ctl(args);
        assert!(out.status.success(), "{}", stderr(&out));
        let text = stdout(&out);
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.starts_with(summary), "{text}");
        assert!(!stderr(&out).contains('\x1b'), "{}", stderr(&out));
    }
    let out = node.ctl(&bench);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stdout(&out).contains('\x1b') && !stderr(&out).contains('\x1b'));
    assert!(!stderr(&out).contains("bench /queue/"), "{}", stderr(&out));
}

#[test]
fn a_watch_of_a_socket_nobody_serves_fails_at_once() {
    let out = Command::new(&bins().ctl)
        .args(["--socket", "/nonexistent/lockd.sock", "status", "--watch"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot reach lockd"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_watch_of_a_lockd_that_never_answers_gives_up_at_once() {
    // Accepts every connection and never answers, as a wedged lockd would.
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("silent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    std::thread::spawn(move || {
        let held: Vec<_> = listener.incoming().take(8).collect();
        std::thread::sleep(WAIT);
        drop(held);
    });
    let mut ctl = Command::new(&bins().ctl);
    ctl.arg("--socket")
        .arg(&socket)
        .args(["status", "--watch", "--interval-ms", "100"]);
    let mut ctl = ClientProcess::spawn("ctl status --watch", ctl);
    let status = ctl.finish(WAIT).expect("ctl gave up");
    assert_eq!(status.code(), Some(2), "{}", ctl.transcript());
    assert!(
        ctl.transcript().contains("did not answer within 2000 ms"),
        "{}",
        ctl.transcript()
    );
}
