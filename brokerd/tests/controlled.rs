//! brokerd under a (simulated) lockd: the control protocol, epoch fencing, the STOMP probe
//! surface, graceful stop, and refusing garbage without changing anything.

mod harness;

use harness::{Broker, Client, Dirs};
use shared_proto::control::{BrokerStats, FromBroker, ToBroker};
use std::net::{TcpListener, TcpStream};

/// A local address nothing listens on now, for a broker to bind later.
fn free_addr() -> String {
    let probe = TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap().to_string()
}

/// Asserts nothing accepts connections on `addr` (invariant 5: a broker lockd has not activated,
/// or has refused, opens no client port).
fn assert_not_listening(addr: &str, when: &str) {
    let err = TcpStream::connect(addr).expect_err(when);
    assert_eq!(
        err.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "{when}: {err}"
    );
}

#[test]
fn activates_serves_stomp_reports_stats_and_stops() {
    let dirs = Dirs::new();
    let mut broker = Broker::spawn(&dirs.data, &[]);
    let addr = broker.activate(1);
    assert!(dirs.store_exists());

    let mut client = Client::connect(&addr);
    client.send(b"CONNECT\naccept-version:1.0,1.1,1.2\nhost:test\n\n\0");
    let connected = client.read_frame();
    assert_eq!(connected.command, "CONNECTED");
    assert_eq!(connected.get("version"), Some("1.2"));
    // The client asked for no heart-beats; the broker still says what it offers.
    assert_eq!(connected.get("heart-beat"), Some("10000,10000"));
    assert!(connected.get("server").unwrap().starts_with("brokerd/"));
    assert!(connected.get("session").is_some());

    broker.send(&ToBroker::Stats);
    match broker.recv() {
        FromBroker::Stats { stats } => {
            assert_eq!(stats.connections, 1);
            assert_eq!(stats.connections_total, 1);
            assert_eq!(stats.frames_received, 1);
            assert!(stats.store_bytes > 0);
        }
        other => panic!("expected Stats, got {other:?}"),
    }

    // Heart-beat EOLs before the frame are fine.
    client.send(b"\n\r\nDISCONNECT\nreceipt:bye-1\n\n\0");
    let receipt = client.read_frame();
    assert_eq!(receipt.command, "RECEIPT");
    assert_eq!(receipt.get("receipt-id"), Some("bye-1"));
    client.expect_eof();

    broker.stop("test is over");
}

#[test]
fn sessions_get_distinct_ids_and_1_0_clients_are_served() {
    let dirs = Dirs::new();
    let mut broker = Broker::spawn(&dirs.data, &[]);
    let addr = broker.activate(1);
    let mut old = Client::connect(&addr);
    old.send(b"CONNECT\n\n\0");
    let first = old.read_frame();
    assert_eq!(first.get("version"), Some("1.0"));
    let mut new = Client::connect(&addr);
    new.send(b"STOMP\naccept-version:1.1\n\n\0");
    let second = new.read_frame();
    assert_eq!(second.get("version"), Some("1.1"));
    assert_ne!(first.get("session"), second.get("session"));
    broker.stop("done");
}

#[test]
fn bad_clients_get_an_error_and_are_closed_without_affecting_others() {
    let dirs = Dirs::new();
    let mut broker = Broker::spawn(&dirs.data, &["--max-frame-bytes", "4096"]);
    let addr = broker.activate(1);
    let mut good = Client::stomp(&addr);

    let mut not_connect = Client::connect(&addr);
    not_connect.send(b"SEND\ndestination:/queue/a\n\nhi\0");
    let error = not_connect.read_frame();
    assert_eq!(error.command, "ERROR");
    assert_eq!(
        error.message(),
        "expected CONNECT or STOMP as the first frame, got SEND"
    );
    assert_eq!(error.get("content-type"), Some("text/plain"));
    assert!(!error.body.is_empty());
    not_connect.expect_eof();

    let mut garbage = Client::connect(&addr);
    garbage.send(b"\x00\x01\x02 garbage\r\n\r\n");
    let error = garbage.read_frame();
    assert_eq!(error.command, "ERROR");
    assert!(error.message().contains("malformed frame"), "{error:?}");
    garbage.expect_eof();

    let mut http = Client::connect(&addr);
    http.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let error = http.read_frame();
    assert!(error.message().contains("GET / HTTP/1.1"), "{error:?}");
    http.expect_eof();

    let mut oversized = Client::stomp(&addr);
    let mut frame = b"SEND\ndestination:/queue/a\nreceipt:big-1\n\n".to_vec();
    frame.extend(vec![b'x'; 10 * 1024]);
    frame.push(0);
    oversized.send(&frame);
    let error = oversized.read_frame();
    assert_eq!(error.command, "ERROR");
    assert!(
        error.message().contains("max-frame-bytes limit of 4096"),
        "{error:?}"
    );
    assert_eq!(error.get("receipt-id"), Some("big-1"));
    oversized.expect_eof();

    let mut incomplete = Client::stomp(&addr);
    incomplete.send(b"SUBSCRIBE\nid:0\nreceipt:sub-1\n\n\0");
    let error = incomplete.read_frame();
    assert_eq!(error.message(), "SUBSCRIBE needs a destination header");
    assert_eq!(error.get("receipt-id"), Some("sub-1"));
    incomplete.expect_eof();

    let mut unknown = Client::stomp(&addr);
    unknown.send(b"FOO\n\n\0");
    assert_eq!(unknown.read_frame().message(), "unknown command FOO");
    unknown.expect_eof();

    let mut future = Client::connect(&addr);
    future.send(b"CONNECT\naccept-version:2.0,3.1\n\n\0");
    let error = future.read_frame();
    assert_eq!(error.command, "ERROR");
    assert_eq!(error.get("version"), Some("1.0,1.1,1.2"));
    assert!(error.message().contains("1.0,1.1,1.2"), "{error:?}");
    future.expect_eof();

    let mut escaped = Client::stomp(&addr);
    escaped.send(b"DISCONNECT\nreceipt:a\\tb\n\n\0");
    let error = escaped.read_frame();
    assert!(error.message().contains("escape"), "{error:?}");
    escaped.expect_eof();

    // The well-behaved client never noticed.
    good.send(b"DISCONNECT\nreceipt:still-here\n\n\0");
    assert_eq!(good.read_frame().get("receipt-id"), Some("still-here"));
    good.expect_eof();
    broker.stop("done");
}

#[test]
fn connections_over_the_limit_are_refused_by_name() {
    let dirs = Dirs::new();
    let mut broker = Broker::spawn(&dirs.data, &["--max-connections", "1"]);
    let addr = broker.activate(1);
    let _first = Client::stomp(&addr);
    let mut second = Client::connect(&addr);
    let error = second.read_frame();
    assert_eq!(error.command, "ERROR");
    assert_eq!(error.message(), "connection limit 1 reached");
    second.expect_eof();
    broker.stop("done");
}

#[test]
fn graceful_stop_tells_clients_to_reconnect_elsewhere() {
    let dirs = Dirs::new();
    let mut broker = Broker::spawn(&dirs.data, &[]);
    let addr = broker.activate(1);
    let mut client = Client::stomp(&addr);
    broker.stop("failover requested");
    let error = client.read_frame();
    assert_eq!(error.command, "ERROR");
    assert_eq!(
        error.message(),
        "node going passive (failover requested); reconnect to another node"
    );
    client.expect_eof();
}

#[test]
fn a_newer_epoch_claimed_in_the_shared_directory_ends_the_broker_at_once() {
    let dirs = Dirs::new();
    let shared = dirs.data.parent().unwrap().to_owned();
    let layout = shared_proto::layout::Layout::new(&shared);
    layout.init(None).unwrap();
    std::fs::write(layout.epoch(), "5\n").unwrap();
    let mut broker = Broker::spawn(&dirs.data, &["--shared-dir", shared.to_str().unwrap()]);
    let addr = broker.activate(5);
    let mut client = Client::stomp(&addr);
    // Another node claims epoch 6, as it can where the cluster's locks are broken: this broker
    // must stop serving and writing before lockd's next keepalive would notice.
    std::fs::write(layout.epochs().join("6"), "").unwrap();
    assert_eq!(broker.wait_exit().code(), Some(3));
    client.expect_eof();
}

#[test]
fn a_stale_epoch_is_refused_before_any_listener_opens() {
    let dirs = Dirs::new();
    let mut first = Broker::spawn(&dirs.data, &[]);
    first.activate(5);
    first.stop("handing over");

    let addr = free_addr();
    let mut stale = Broker::spawn(&dirs.data, &["--listen", &addr]);
    stale.handshake();
    stale.send(&ToBroker::Activate { epoch: 4 });
    assert_eq!(
        stale.recv(),
        // Not fatal: lockd renews, finds the newer claim in the shared directory and fences.
        FromBroker::Stopping {
            reason: "epoch 4 is older than the store's epoch 5; another node took over".into(),
            fatal: false,
        }
    );
    assert_not_listening(&addr, "a broker that refused a stale epoch");
    assert_eq!(stale.wait_exit().code(), Some(3));

    // The same epoch again is fine: lockd restarts a broker in place under its epoch.
    let mut again = Broker::spawn(&dirs.data, &[]);
    again.activate(5);
    again.stop("done");
}

#[test]
fn an_unbindable_address_is_reported_to_lockd() {
    let dirs = Dirs::new();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut broker = Broker::spawn(&dirs.data, &["--listen", &addr]);
    broker.handshake();
    broker.send(&ToBroker::Activate { epoch: 1 });
    match broker.recv() {
        FromBroker::Stopping { reason, fatal } => {
            assert!(fatal);
            assert!(reason.contains(&addr), "{reason}");
            assert!(reason.contains("in use"), "{reason}");
        }
        other => panic!("expected Stopping, got {other:?}"),
    }
    assert_eq!(broker.wait_exit().code(), Some(2));
}

#[test]
fn a_broker_opens_its_client_port_only_once_activated() {
    let dirs = Dirs::new();
    let addr = free_addr();
    let mut broker = Broker::spawn(&dirs.data, &["--listen", &addr]);
    broker.handshake();
    // Answering Stats proves the broker is past start-up and waiting for Activate.
    broker.send(&ToBroker::Stats);
    assert_eq!(
        broker.recv(),
        FromBroker::Stats {
            stats: BrokerStats::default()
        }
    );
    assert_not_listening(&addr, "a broker waiting for Activate");
    assert!(!dirs.store_exists());
    broker.send(&ToBroker::Activate { epoch: 1 });
    match broker.recv() {
        FromBroker::Ready {
            epoch,
            listeners,
            confinement,
        } => {
            assert_eq!(epoch, 1);
            assert!(listeners.contains(&addr), "{listeners:?}");
            let scheduler = dirs.data.with_file_name("scheduler");
            harness::assert_confinement_fits_the_kernel(&confinement, &[&dirs.data, &scheduler]);
        }
        other => panic!("expected Ready, got {other:?}"),
    }
    assert!(dirs.store_exists());
    let _client = Client::stomp(&addr);
    broker.stop("done");
}

#[test]
fn stats_and_stop_before_activation_open_nothing() {
    let dirs = Dirs::new();
    let mut broker = Broker::spawn(&dirs.data, &[]);
    broker.handshake();
    broker.send(&ToBroker::Stats);
    assert_eq!(
        broker.recv(),
        FromBroker::Stats {
            stats: BrokerStats::default()
        }
    );
    broker.stop("not needed after all");
    assert!(!dirs.store_exists());
}

#[test]
fn losing_lockd_makes_the_broker_exit_at_once() {
    let dirs = Dirs::new();
    let mut broker = Broker::spawn(&dirs.data, &[]);
    let addr = broker.activate(1);
    let mut client = Client::stomp(&addr);
    broker.close_control();
    let status = broker.wait_exit();
    assert_eq!(status.code(), Some(1), "{status}");
    // At once: no goodbye ERROR, the connection just ends with the process.
    client.expect_eof();
}

#[test]
fn losing_lockd_before_activation_makes_the_broker_exit() {
    let dirs = Dirs::new();
    let mut broker = Broker::spawn(&dirs.data, &[]);
    broker.handshake();
    broker.close_control();
    assert!(!broker.wait_exit().success());
    assert!(!dirs.store_exists());
}

#[test]
fn garbage_on_the_control_socket_is_refused_and_changes_nothing() {
    let garbage: [(&str, Vec<u8>); 4] = [
        ("a text line", b"hello\n".to_vec()),
        ("an endless line", vec![b'x'; 100 * 1024]),
        ("binary", b"\x00\x01\x02\xff\n".to_vec()),
        (
            "another protocol version",
            br#"{"type":"hello","version":99}"#.iter().chain(b"\n").copied().collect(),
        ),
    ];
    for (what, bytes) in garbage {
        let dirs = Dirs::new();
        let mut broker = Broker::spawn(&dirs.data, &[]);
        assert!(matches!(broker.recv(), FromBroker::Hello { .. }), "{what}");
        broker.send_raw(&bytes);
        let status = broker.wait_exit();
        assert!(!status.success(), "{what}: {status}");
        assert!(!dirs.store_exists(), "{what}: the store was created");
    }
}

#[test]
fn an_out_of_order_message_before_activation_is_refused() {
    let dirs = Dirs::new();
    let mut broker = Broker::spawn(&dirs.data, &[]);
    broker.handshake();
    broker.send(&ToBroker::Hello {
        version: shared_proto::PROTOCOL_VERSION,
    });
    assert!(!broker.wait_exit().success());
    assert!(!dirs.store_exists());
}
