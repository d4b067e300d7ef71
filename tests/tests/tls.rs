//! STOMP over TLS (`ssl://` listeners), end to end: real lockd and brokerd processes, a test PKI
//! made with openssl, stomp.py (`tests/python/tls.py`) and our own failover client (`ctl`) as
//! the clients.
//!
//! Each node listens on its plain port (which the cluster's one-active oracle probes) and on an
//! `ssl://` port next to it.

use ha_tests::tls::{Pki, FIRST_SERVER_SERIAL};
use ha_tests::*;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

/// One active node serving `ssl://127.0.0.1:PORT` with `pki`'s server certificate, and with
/// `extra` config lines; returns the cluster and the TLS address.
fn tls_node(pki: &Pki, extra: &str) -> (Cluster, SocketAddr) {
    let keys = format!(
        "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n{extra}",
        pki.server_cert.display(),
        pki.server_key.display()
    );
    let mut cluster = Cluster::new(1, &keys);
    let tls = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let node = &cluster.nodes[0];
    let plain = format!("listen = [\"127.0.0.1:{}\"]", node.port);
    let config = std::fs::read_to_string(&node.config).unwrap();
    assert!(config.contains(&plain), "{config}");
    let both = format!("listen = [\"127.0.0.1:{}\", \"ssl://{tls}\"]", node.port);
    std::fs::write(&node.config, config.replace(&plain, &both)).unwrap();
    cluster.start_all();
    cluster.wait_for_one_active();
    (cluster, tls)
}

/// `python3 -u tests/python/tls.py --check CHECK ARGS... HOST:PORT`.
fn tls_py(check: &str, args: &[&str], addr: SocketAddr) -> ClientProcess {
    let args: Vec<&str> = ["--check", check]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    stomp_py("tls.py", &args, [addr])
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

/// `ctl SUBCOMMAND ARGS...` with a URL of `addr` over ssl://, giving up after one pass.
fn ctl_over_tls(cluster: &Cluster, addr: SocketAddr, args: &[&str]) -> std::process::Output {
    let url = format!("failover:(ssl://{addr})?maxReconnectAttempts=0");
    let mut all = vec![args[0], "--url", url.as_str()];
    all.extend_from_slice(&args[1..]);
    cluster.nodes[0].ctl(&all)
}

#[test]
fn stomp_py_and_the_failover_client_work_over_tls_and_a_wrong_ca_is_refused() {
    let pki = Pki::new();
    let (cluster, tls) = tls_node(&pki, "");
    // A client that never starts its handshake holds up nobody: it runs in its own task.
    let stalled = std::net::TcpStream::connect(tls).unwrap();
    tls_py("sendrecv", &["--ca", path(&pki.ca)], tls).assert_passes();
    tls_py("refused", &["--ca", path(&pki.wrong_ca)], tls).assert_passes();
    drop(stalled);

    let ca = path(&pki.ca);
    let sent = ctl_over_tls(
        &cluster,
        tls,
        &[
            "send",
            "--tls-ca-file",
            ca,
            "--dest",
            "/queue/ctl-tls",
            "--body",
            "over tls",
        ],
    );
    assert!(sent.status.success(), "ctl send: {}", stderr(&sent));
    let received = ctl_over_tls(
        &cluster,
        tls,
        &["receive", "--tls-ca-file", ca, "--dest", "/queue/ctl-tls"],
    );
    assert!(
        received.status.success(),
        "ctl receive: {}",
        stderr(&received)
    );
    assert!(
        stdout(&received).contains("over tls"),
        "{}",
        stdout(&received)
    );

    let wrong = ctl_over_tls(
        &cluster,
        tls,
        &[
            "send",
            "--tls-ca-file",
            path(&pki.wrong_ca),
            "--dest",
            "/queue/ctl-tls",
            "--body",
            "x",
        ],
    );
    assert!(!wrong.status.success(), "a wrong CA was accepted");
    assert!(
        stderr(&wrong).contains("UnknownIssuer"),
        "{}",
        stderr(&wrong)
    );
}

#[test]
fn with_a_client_ca_a_client_certificate_is_required_and_one_signed_by_it_is_accepted() {
    let pki = Pki::new();
    let extra = format!("tls_client_ca_file = \"{}\"\n", pki.ca.display());
    let (cluster, tls) = tls_node(&pki, &extra);
    let ca = path(&pki.ca);
    let (cert, key) = (path(&pki.client_cert), path(&pki.client_key));
    tls_py("refused", &["--ca", ca], tls).assert_passes();
    tls_py("sendrecv", &["--ca", ca, "--cert", cert, "--key", key], tls).assert_passes();

    let without = ctl_over_tls(
        &cluster,
        tls,
        &[
            "send",
            "--tls-ca-file",
            ca,
            "--dest",
            "/queue/mtls",
            "--body",
            "x",
        ],
    );
    assert!(
        !without.status.success(),
        "no client certificate, yet accepted"
    );
    let with = ctl_over_tls(
        &cluster,
        tls,
        &[
            "send",
            "--tls-ca-file",
            ca,
            "--tls-cert-file",
            cert,
            "--tls-key-file",
            key,
            "--dest",
            "/queue/mtls",
            "--body",
            "x",
        ],
    );
    assert!(
        with.status.success(),
        "ctl send with a client certificate: {}",
        stderr(&with)
    );
}

#[test]
fn reload_on_sighup_keeps_an_open_connection_and_serves_the_new_certificate_to_the_next() {
    let pki = Pki::new();
    let (cluster, tls) = tls_node(&pki, "");
    let go = pki.dir.join("reloaded");
    let new_serial = 0x2002;
    let mut client = tls_py(
        "reload",
        &[
            "--ca",
            path(&pki.ca),
            "--serial",
            &format!("{FIRST_SERVER_SERIAL:x}"),
            "--new-serial",
            &format!("{new_serial:x}"),
            "--go",
            path(&go),
        ],
        tls,
    );
    client.wait_for_line("connected");
    pki.reissue_server(new_serial);
    // As `systemctl reload lockd@NODE` does: SIGHUP to lockd, which passes it on to brokerd.
    let lockd = cluster.nodes[0].child.as_ref().expect("lockd running").id();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(lockd as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    std::fs::write(&go, "").unwrap();
    client.assert_passes();
    assert!(
        cluster.logs().contains("reloaded on SIGHUP"),
        "no reload in the log:\n{}",
        cluster.logs()
    );
}

#[test]
fn brokerd_with_a_key_that_does_not_match_its_certificate_exits_2_naming_the_file() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(&bins().brokerd)
        .arg("--data-dir")
        .arg(data.path().join("data"))
        .args(["--listen", "ssl://127.0.0.1:0", "--tls-cert-file"])
        .arg(&pki.server_cert)
        .arg("--tls-key-file")
        .arg(pki.mismatched_key())
        .env_remove(shared_proto::control::CONTROL_FD_ENV)
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("does not belong to the certificate") && err.contains("ca.key"),
        "{err}"
    );
}

#[test]
fn lockd_refuses_to_start_with_an_ssl_listener_and_no_certificate() {
    let cluster = Cluster::new(1, "");
    let node = &cluster.nodes[0];
    let config = std::fs::read_to_string(&node.config).unwrap();
    let ssl = format!("listen = [\"ssl://127.0.0.1:{}\"]", node.port);
    let plain = format!("listen = [\"127.0.0.1:{}\"]", node.port);
    std::fs::write(&node.config, config.replace(&plain, &ssl)).unwrap();
    let (code, err) = node.refused_start();
    assert_ne!(code, Some(0), "{err}");
    assert!(
        err.contains("needs tls_cert_file and tls_key_file"),
        "{err}"
    );
}

#[test]
fn past_the_connection_limit_at_most_64_refusals_wait_for_a_tls_handshake() {
    // brokerd/src/server.rs's REFUSALS_IN_FLIGHT: refused clients told why at once, each over
    // TLS waiting for its handshake until the CONNECT deadline; the rest are closed unexplained.
    const EXPLAINED_AT_ONCE: usize = 64;
    const FLOOD: usize = EXPLAINED_AT_ONCE + 40;
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let (plain, tls) = (free_port(), free_port());
    let mut broker = Command::new(&bins().brokerd)
        .arg("--data-dir")
        .arg(data.path().join("data"))
        .args(["--listen", &format!("127.0.0.1:{plain}")])
        .args(["--listen", &format!("ssl://127.0.0.1:{tls}")])
        .arg("--tls-cert-file")
        .arg(&pki.server_cert)
        .arg("--tls-key-file")
        .arg(&pki.server_key)
        .args(["--max-connections", "1", "--connect-timeout-ms", "120000"])
        .env_remove(shared_proto::control::CONTROL_FD_ENV)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let plain = SocketAddr::from(([127, 0, 0, 1], plain));
    wait_until("brokerd to serve", || answers_stomp(plain).then_some(()));

    // The one connection allowed, held by a STOMP session: every later one is refused. Until
    // brokerd has seen the probe above go, it refuses this one too: try again until it is in.
    let _holder = wait_until("a STOMP session holding the one connection allowed", || {
        let mut holder = std::net::TcpStream::connect(plain).ok()?;
        holder.set_read_timeout(Some(WAIT)).ok()?;
        let connect = b"CONNECT\naccept-version:1.2\nhost:localhost\n\n\0";
        std::io::Write::write_all(&mut holder, connect).ok()?;
        let connected = read_frame(&mut holder).ok()?;
        connected.starts_with("CONNECTED").then_some(holder)
    });

    // Clients of the ssl:// port that never start a handshake.
    let flood: Vec<std::net::TcpStream> = (0..FLOOD)
        .map(|_| {
            let stream =
                std::net::TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], tls))).unwrap();
            stream.set_nonblocking(true).unwrap();
            stream
        })
        .collect();
    let closed = |stream: &std::net::TcpStream| {
        let mut byte = [0u8; 1];
        match std::io::Read::read(&mut &*stream, &mut byte) {
            Ok(0) => true,
            Ok(_) => panic!("a refused TLS client was sent bytes before its ClientHello"),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => true,
            Err(e) => panic!("{e}"),
        }
    };
    let unexplained = wait_until("the refusals past 64 to be closed", || {
        let n = flood.iter().filter(|s| closed(s)).count();
        (n >= FLOOD - EXPLAINED_AT_ONCE).then_some(n)
    });
    assert_eq!(
        unexplained,
        FLOOD - EXPLAINED_AT_ONCE,
        "exactly 64 refusals wait for their handshake (their deadline is 120 s away)"
    );
    drop(flood);
    let _ = broker.kill();
    let _ = broker.wait();
}
