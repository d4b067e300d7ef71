//! Real STOMP client test suites written elsewhere, against a real node: issue 3's "real STOMP
//! client test suites pass at least as well as they do against ActiveMQ Classic".
//!
//! Two client libraries whose sdists on PyPI ship tests their authors ran against ActiveMQ
//! Classic: stomp.py 4.1.24 (the last stomp.py release that ships its tests) and stompest
//! 2.3.0 (its sync client's integration tests). `tests/clients/activemq-baseline.sh` runs them
//! against ActiveMQ 5.17.2 from Debian and writes
//! `tests/clients/SUITE-VERSION-activemq-baseline.txt`, the tests that passed there in every
//! run. These tests run those tests against one brokerd node each and assert that every one
//! passes. `tests/clients/client_suite.py` does the running: it fetches the sdist from PyPI with
//! pip into the target directory (once), points the suite at the node, and runs each test in
//! its own process with a time limit.
//!
//! Needs python3 with pip, network access to PyPI the first time, and docopt (stomp.py's
//! command-line client imports it; the stomp.py that `tests/run-all.sh` installs pulls it in).

use ha_tests::*;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Bound on a whole suite run (each takes about 50 s here: stompest's heart-beat test runs for
/// 2.5 heart-beat periods and then waits for the broker to give up on it, and brokerd asks for
/// one every 10 s); each test is bounded by `TEST_TIMEOUT_S`.
const SUITE_TIMEOUT: Duration = Duration::from_secs(300);

/// Bound on one test of a suite, in seconds: the longest, stompest's heart-beat test, takes
/// about 50 s against brokerd (its own bounds add up to 55 s), stomp.py's threading_test 20 s.
const TEST_TIMEOUT_S: &str = "120";

/// The suites' user: stomp.py's setup.ini logs in as admin/password, and its
/// TestConnectionErrors logs in as someone else and expects to be refused, as ActiveMQ does in
/// the baseline runs (it lets in only this user there too; `client_suite.py` logs stompest in
/// as this user as well). Its password is hashed by `ctl passwd --password password`.
const USERS_FILE: &str = "[users.admin]\npassword = \"$argon2id$v=19$m=19456,t=2,p=1$m/tq9pPX9fc6jlcYHpqG+Q$L3fSgC3jpAJqH+qKy/uo8frfqe7gBCmFTFmePDJmkls\"\n";

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients")
}

/// `python3 tests/clients/client_suite.py ARGS...`, writing no bytecode into the source tree.
fn suite_command(args: &[&str]) -> Command {
    let mut cmd = Command::new("python3");
    // CLIENT_SUITE_LOG: a failing test's output shows the frames it sent and received.
    cmd.env("PYTHONDONTWRITEBYTECODE", "1")
        .env("CLIENT_SUITE_LOG", "1")
        .arg(clients_dir().join("client_suite.py"))
        .args(args);
    cmd
}

/// The unpacked sdist of `suite`, downloaded with pip into the target directory the first
/// time.
fn suite_source(suite: &str) -> PathBuf {
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("client-suites");
    let out = suite_command(&[
        "fetch",
        suite,
        cache.to_str().expect("UTF-8 target directory"),
    ])
    .output()
    .expect("run python3 (the client suites need python3 with pip)");
    assert!(
        out.status.success(),
        "could not fetch {suite}'s sdist from PyPI with pip:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// The tests the baseline file lists as passing against ActiveMQ, in its order.
fn baseline_passes(baseline: &Path) -> Vec<String> {
    let text =
        fs::read_to_string(baseline).unwrap_or_else(|e| panic!("read {}: {e}", baseline.display()));
    text.lines()
        .filter_map(|line| line.split('#').next())
        .filter_map(
            |line| match line.split_whitespace().collect::<Vec<_>>()[..] {
                ["pass", test] => Some(test.to_string()),
                _ => None,
            },
        )
        .collect()
}

/// One node, active, whose brokerd lets in only the suite's user and listens on ::1 too (for
/// local_test, the suite's IPv6 test) on the same port.
fn suite_node() -> Cluster {
    assert!(
        std::net::TcpListener::bind("[::1]:0").is_ok(),
        "the stomp.py suite's IPv6 test needs the ::1 loopback address"
    );
    let mut cluster = Cluster::new(1, "");
    let node = &cluster.nodes[0];
    let config = fs::read_to_string(&node.config).unwrap();
    let listen = format!("listen = [\"127.0.0.1:{}\"]", node.port);
    assert!(
        config.contains(&listen),
        "unexpected node config:\n{config}"
    );
    let config = config.replace(
        &listen,
        &format!("listen = [\"127.0.0.1:{0}\", \"[::1]:{0}\"]", node.port),
    );
    fs::write(&node.config, config).unwrap();
    cluster.users_file(USERS_FILE);
    cluster.start_all();
    cluster.wait_for_one_active();
    cluster
}

/// Runs `suite`'s tests that `baseline` lists as passing against ActiveMQ 5.17.2 against a
/// fresh node, `jobs` groups side by side, and asserts that every one passes.
fn assert_suite_passes_its_activemq_baseline(suite: &str, baseline: &str, jobs: &str) {
    let baseline = clients_dir().join(baseline);
    let expected = baseline_passes(&baseline);
    assert!(
        !expected.is_empty(),
        "{} lists no passing test",
        baseline.display()
    );
    let src = suite_source(suite);
    let cluster = suite_node();
    let node = &cluster.nodes[0];
    let results = cluster.root.join(format!("{suite}-results.json"));
    let port = node.port.to_string();
    // Ports nobody listens on: stomp.py's fake server takes the first, stompest expects both
    // to refuse connections. The harness never hands them to a node.
    let spare_ports = format!("{},{}", free_port(), free_port());
    let cmd = suite_command(&[
        "run",
        suite,
        src.to_str().unwrap(),
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--ipv6-port",
        &port,
        "--spare-ports",
        &spare_ports,
        "--only",
        baseline.to_str().unwrap(),
        "--out",
        results.to_str().unwrap(),
        "--timeout",
        TEST_TIMEOUT_S,
        "--jobs",
        jobs,
    ]);
    let started = Instant::now();
    let mut client = ClientProcess::spawn(&format!("{suite}'s test suite"), cmd);
    let status = client.finish(SUITE_TIMEOUT);
    let transcript = client.transcript();
    print!("{transcript}");
    eprintln!("{suite}'s suite took {:.0?}", started.elapsed());
    assert!(
        status.is_some_and(|s| s.success()),
        "the {suite} suite runner failed ({status:?}); its output:\n{transcript}"
    );

    let json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&results).expect("the runner's results"))
            .expect("parse the runner's results");
    let tests: BTreeMap<String, serde_json::Value> =
        serde_json::from_value(json["tests"].clone()).expect("results.tests");
    let mut failures = Vec::new();
    for test in &expected {
        let Some(result) = tests.get(test) else {
            failures.push(format!("{test}: not run"));
            continue;
        };
        let outcome = result["outcome"].as_str().unwrap_or("?");
        if outcome != "pass" {
            failures.push(format!(
                "{test}: {outcome} against brokerd, passes against ActiveMQ 5.17.2\n{}\n\
                 --- what it printed (end):\n{}",
                result["detail"].as_str().unwrap_or_default(),
                result["output"].as_str().unwrap_or_default()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} {suite} tests that pass against ActiveMQ fail against brokerd:\n\n{}",
        failures.len(),
        expected.len(),
        failures.join("\n\n")
    );
}

/// Every stomp.py 4.1.24 test that passes against ActiveMQ 5.17.2 passes against brokerd.
#[test]
fn stomp_py_4_1_24_own_suite_passes_every_test_that_passes_against_activemq() {
    assert_suite_passes_its_activemq_baseline(
        "stomppy",
        "stomppy-4.1.24-activemq-baseline.txt",
        "3",
    );
}

/// Every stompest 2.3.0 integration test that passes against ActiveMQ 5.17.2 passes against
/// brokerd.
#[test]
fn stompest_2_3_0_integration_tests_pass_every_test_that_passes_against_activemq() {
    assert_suite_passes_its_activemq_baseline(
        "stompest",
        "stompest-2.3.0-activemq-baseline.txt",
        "1",
    );
}
