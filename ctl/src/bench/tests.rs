//! `measure` end to end against a tiny in-test broker, and the reports' rendering.

use super::*;
use crate::StompArgs;

/// A tiny in-test broker: queues go round-robin to subscribers, every frame with a receipt
/// gets its RECEIPT, acks are ignored. Enough to run `measure` end to end. The only
/// selector it knows is the bench's own, `shard = 'k'`.
mod sink {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    use stomp_client::{Bytes, BytesMut};
    use stomp_codec::frame::{encode, parse, Limits};
    use stomp_codec::Version;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::mpsc;

    /// Per destination: the round-robin counter and the subscribers (connection, id, the
    /// shard a selector asks for, where its frames go).
    type Subs = HashMap<String, (usize, Vec<Sub>)>;
    type Sub = (u64, String, Option<String>, mpsc::UnboundedSender<Bytes>);

    pub async fn start() -> String {
        listen(true).await
    }

    /// A sink that takes selectors and then ignores them.
    pub async fn start_ignoring_selectors() -> String {
        listen(false).await
    }

    async fn listen(selectors: bool) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let subs = Arc::new(Mutex::new(Subs::new()));
        tokio::spawn(async move {
            for conn in 0.. {
                let (stream, _) = listener.accept().await.unwrap();
                tokio::spawn(serve(conn, stream, selectors, subs.clone()));
            }
        });
        addr
    }

    fn frame(command: &str, headers: &[(&str, &str)], body: &[u8]) -> Bytes {
        let mut out = bytes_mut();
        encode(
            &mut out,
            command,
            headers.iter().copied(),
            body,
            Version::V1_2,
        );
        out.freeze()
    }

    fn bytes_mut() -> BytesMut {
        BytesMut::new()
    }

    async fn serve(conn: u64, stream: TcpStream, selectors: bool, subs: Arc<Mutex<Subs>>) {
        let (mut read, mut write) = stream.into_split();
        let (tx, mut rx) = mpsc::unbounded_channel::<Bytes>();
        tokio::spawn(async move {
            while let Some(bytes) = rx.recv().await {
                if write.write_all(&bytes).await.is_err() {
                    return;
                }
            }
        });
        let mut buf = bytes_mut();
        let mut ids = 0u64;
        'conn: loop {
            while let Some((f, used)) = parse(&buf, &Limits::default(), Version::V1_2).unwrap() {
                let _ = buf.split_to(used);
                let dest = f.get("destination").unwrap_or("").to_string();
                match f.command.as_str() {
                    "CONNECT" => {
                        let _ = tx.send(frame("CONNECTED", &[("version", "1.2")], b""));
                    }
                    "SUBSCRIBE" => {
                        let id = f.get("id").unwrap().to_string();
                        let shard = f.get("selector").filter(|_| selectors).map(|s| {
                            let k = s
                                .strip_prefix("shard = '")
                                .and_then(|k| k.strip_suffix('\''));
                            k.expect("the bench's selector").to_string()
                        });
                        let mut subs = subs.lock().unwrap();
                        subs.entry(dest)
                            .or_default()
                            .1
                            .push((conn, id, shard, tx.clone()));
                    }
                    "SEND" => {
                        let mut subs = subs.lock().unwrap();
                        let (next, list) = subs.entry(dest.clone()).or_default();
                        let shard = f.get("shard");
                        let takers: Vec<&Sub> = (list.iter())
                            .filter(|(_, _, want, _)| want.is_none() || want.as_deref() == shard)
                            .collect();
                        *next = (*next + 1) % takers.len().max(1);
                        if let Some((_, id, _, to)) = takers.get(*next) {
                            ids += 1;
                            let mid = format!("{conn}-{ids}");
                            let mut headers = vec![
                                ("subscription", id.as_str()),
                                ("message-id", mid.as_str()),
                                ("ack", mid.as_str()),
                                ("destination", dest.as_str()),
                            ];
                            headers.extend(
                                f.headers
                                    .iter()
                                    .filter(|(k, _)| k.starts_with("bench-") || k == "shard")
                                    .map(|(k, v)| (k.as_str(), v.as_str())),
                            );
                            let _ = to.send(frame("MESSAGE", &headers, &f.body));
                        }
                    }
                    _ => {}
                }
                if let Some(receipt) = f.get("receipt") {
                    let _ = tx.send(frame("RECEIPT", &[("receipt-id", receipt)], b""));
                }
                if f.command == "DISCONNECT" {
                    break 'conn;
                }
            }
            if read.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                break;
            }
        }
        for (_, list) in subs.lock().unwrap().values_mut() {
            list.retain(|(c, _, _, _)| *c != conn);
        }
    }
}

fn config(dest: &str) -> Config {
    Config {
        producers: 2,
        consumers: 2,
        messages: 2_000,
        size: 100,
        persistent: true,
        receipt_window: 10,
        ack: AckMode::ClientIndividual,
        prefetch: Some(10),
        dest: dest.to_string(),
        timeout: Duration::from_secs(60),
        shards: 0,
        selectors: false,
    }
}

#[tokio::test]
async fn measure_counts_every_message_and_its_latency() {
    let stomp = StompArgs {
        url: format!("failover:(tcp://{})", sink::start().await),
        login: None,
        passcode: None,
        tls_ca_file: None,
        tls_cert_file: None,
        tls_key_file: None,
    };
    let report = measure(&stomp, &config("/queue/a"), "run-a").await.unwrap();
    assert!(report.clean(), "{report:?}");
    assert_eq!((report.sent, report.received), (2_000, 2_000));
    assert_eq!(report.latency_ms.samples, 2_000);
    assert!(report.sent_per_s > 0.0 && report.received_per_s > 0.0);
    // No receipts: counted when written, the DISCONNECT receipt closes the producer.
    let unreceipted = Config {
        receipt_window: 0,
        ack: AckMode::Auto,
        ..config("/queue/b")
    };
    let report = measure(&stomp, &unreceipted, "run-b").await.unwrap();
    assert!(report.clean(), "{report:?}");
    assert_eq!((report.sent, report.received), (2_000, 2_000));
    let json = serde_json::to_value(&report).unwrap();
    for field in [
        "sent_per_s",
        "received_per_s",
        "latency_ms",
        "client_cpu_s",
        "reconnects",
    ] {
        assert!(json.get(field).is_some(), "{field}");
    }
}

#[tokio::test]
async fn selectors_split_the_run_by_shard_and_catch_a_wrong_one() {
    let stomp = StompArgs {
        url: format!("failover:(tcp://{})", sink::start().await),
        login: None,
        passcode: None,
        tls_ca_file: None,
        tls_cert_file: None,
        tls_key_file: None,
    };
    let sharded = Config {
        consumers: 3,
        messages: 2_001,
        shards: 3,
        selectors: true,
        ..config("/queue/s")
    };
    let report = measure(&stomp, &sharded, "run-s").await.unwrap();
    assert!(report.clean(), "{report:?}");
    assert_eq!((report.sent, report.received), (2_001, 2_001));
    // Fewer consumers than shards would leave a shard unread.
    let short = Config {
        consumers: 2,
        ..sharded.clone()
    };
    assert!(measure(&stomp, &short, "run-t").await.is_err());
    // A broker that ignores selectors gives consumers other shards: errors, not a figure.
    let stomp = StompArgs {
        url: format!(
            "failover:(tcp://{})",
            sink::start_ignoring_selectors().await
        ),
        ..stomp
    };
    let report = measure(&stomp, &sharded, "run-w").await.unwrap();
    assert!(!report.clean() && report.errors > 0, "{report:?}");
    let error = report.first_error.unwrap();
    assert!(error.contains("got shard"), "{error}");
}

#[test]
fn shards_are_even_and_selectors_name_them() {
    assert_eq!(in_shard(10, 3, 0), 4);
    assert_eq!(in_shard(10, 3, 1), 3);
    assert_eq!(in_shard(10, 3, 2), 3);
    assert_eq!((0..7).map(|k| in_shard(1_000, 7, k)).sum::<u64>(), 1_000);
    assert_eq!(selector(3), "shard = '3'");
}

#[test]
fn nearest_rank_percentiles() {
    let v: Vec<u32> = (1..=100).collect();
    assert_eq!(percentile(&v, 50.0), Some(50));
    assert_eq!(percentile(&v, 99.0), Some(99));
    assert_eq!(percentile(&v, 100.0), Some(100));
    assert_eq!(percentile(&[7], 1.0), Some(7));
    assert_eq!(percentile(&[], 50.0), None);
}

#[test]
fn the_issue3_targets_are_three_times_activemq_rounded() {
    for row in &ISSUE3 {
        let ratio = row.target as f64 / row.activemq as f64;
        assert!((2.9..=3.1).contains(&ratio), "{}", row.label);
    }
}
