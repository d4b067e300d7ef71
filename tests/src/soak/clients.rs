//! The soak's clients, through the project's failover client (`stomp-client`): producers
//! sending persistent messages with receipts (one in transactions), and one client-ack
//! consumer per producer's queue (the first acking plainly, the others in transactions). Everything they see goes into the shared [`History`].

use super::history::{Ack, Delivery, History, Key};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use stomp_client::{AckMode, Client, Message, Options};

/// SENDs awaiting their receipt at once, per producer.
const WINDOW: usize = 20;
/// SENDs per transaction.
const TX_SIZE: u64 = 5;

/// The queue of producer `p`; its consumer is the only one on it.
pub fn queue(p: usize) -> String {
    format!("/queue/soak-{p}")
}

fn options() -> Options {
    Options {
        receipt_window: WINDOW,
        ..Options::default()
    }
}

fn lock(h: &Mutex<History>) -> std::sync::MutexGuard<'_, History> {
    h.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sends numbered persistent messages to its queue until `stop`, then waits for every
/// outstanding receipt and disconnects.
pub async fn produce(url: String, p: usize, history: Arc<Mutex<History>>, stop: Arc<AtomicBool>) {
    let client = Client::connect(&url, options())
        .await
        .expect("a producer connects");
    let queue = queue(p);
    let mut receipts = Vec::new();
    let mut seq = 0u64;
    while !stop.load(SeqCst) {
        let before = client.stats().reconnects;
        let number = seq.to_string();
        let producer = p.to_string();
        let receipt = match client
            .send(
                &queue,
                &[
                    ("persistent", "true"),
                    ("producer", &producer),
                    ("seq", &number),
                ],
                format!("message {p}/{seq}"),
            )
            .await
        {
            Ok(receipt) => receipt,
            Err(e) => panic!("producer {p}: send {seq}: {e}"),
        };
        let key: Key = (p, seq);
        lock(&history).sent.insert(key);
        let (client, history) = (client.clone(), Arc::clone(&history));
        receipts.push(tokio::spawn(async move {
            let result = receipt.await;
            let mut h = lock(&history);
            if client.stats().reconnects != before {
                h.maybe_resent.insert(key);
            }
            if result.is_ok() {
                h.receipted.insert(key);
            }
        }));
        seq += 1;
        // Only the receipts still awaited are kept (a long soak sends millions).
        receipts.retain(|r| !r.is_finished());
        // A steady trickle, not a benchmark: faults, not load, are the point.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Bounded, all together: a receipt still missing after WAIT leaves its message unreceipted.
    let deadline = tokio::time::Instant::now() + crate::WAIT;
    for receipt in receipts {
        let _ = tokio::time::timeout_at(deadline, receipt).await;
    }
    let _ = tokio::time::timeout(crate::WAIT, client.disconnect()).await;
}

/// Sends numbered persistent messages in transactions of [`TX_SIZE`] until `stop`; a receipted
/// COMMIT makes its SENDs receipted; a lost transaction is counted and its numbers not reused.
pub async fn produce_in_transactions(
    url: String,
    p: usize,
    history: Arc<Mutex<History>>,
    stop: Arc<AtomicBool>,
) {
    let client = Client::connect(&url, options())
        .await
        .expect("a transactional producer connects");
    let queue = queue(p);
    let producer = p.to_string();
    let mut seq = 0u64;
    while !stop.load(SeqCst) {
        let Ok(tx) = client.begin().await else {
            // Not connected right now: try again shortly, not in a busy loop.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let mut keys = Vec::new();
        for _ in 0..TX_SIZE {
            let number = seq.to_string();
            let sent = tx
                .send(
                    &queue,
                    &[
                        ("persistent", "true"),
                        ("producer", &producer),
                        ("seq", &number),
                    ],
                    format!("message {p}/{seq}"),
                )
                .await;
            lock(&history).sent.insert((p, seq));
            keys.push((p, seq));
            seq += 1;
            if sent.is_err() {
                break;
            }
        }
        let committed = tokio::time::timeout(crate::WAIT, tx.commit()).await;
        {
            let mut h = lock(&history);
            if matches!(committed, Ok(Ok(()))) {
                h.receipted.extend(keys.iter().copied());
                h.commits.push(keys);
            } else {
                h.lost_transactions += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = tokio::time::timeout(crate::WAIT, client.disconnect()).await;
}

/// How long a consumer goes on, once every producer finished, for receipted messages it has
/// not received yet (a failover may still be under way); those it never gets are lost.
const DRAIN: Duration = Duration::from_secs(60);

/// How a consumer acknowledges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acking {
    /// One ACK per message, without a receipt: whether it reached the broker is unknown.
    Plain,
    /// Everything received so far (up to [`ACK_BATCH`]) acked in one transaction whose COMMIT
    /// is receipted: those acks are known to have been applied.
    Transactional,
}

/// Messages acknowledged in one transaction at most.
const ACK_BATCH: usize = 50;

/// Receives from producer `p`'s queue (client-individual acks), recording each delivery before
/// acking it, until every producer finished (`produced`) and every receipted message of the
/// queue arrived, or [`DRAIN`] passed since.
pub async fn consume(
    url: String,
    p: usize,
    acking: Acking,
    history: Arc<Mutex<History>>,
    produced: Arc<AtomicBool>,
) {
    let client = Client::connect(&url, options())
        .await
        .expect("a consumer connects");
    let mut sub = client
        .subscribe(&queue(p), AckMode::ClientIndividual, &[])
        .await
        .expect("a consumer subscribes");
    let mut drain_until = None;
    loop {
        let wait = Duration::from_millis(200);
        match tokio::time::timeout(wait, sub.next()).await {
            Ok(Some(message)) => {
                let mut batch = vec![message];
                while batch.len() < ACK_BATCH {
                    // What has already arrived, without waiting for more.
                    match tokio::time::timeout(Duration::ZERO, sub.next()).await {
                        Ok(Some(message)) => batch.push(message),
                        _ => break,
                    }
                }
                let first = record(&history, p, &batch);
                if acking == Acking::Transactional && ack_in_transaction(&client, &batch).await {
                    let mut h = lock(&history);
                    let deliveries = h.deliveries.get_mut(&p).expect("recorded");
                    for d in &mut deliveries[first..first + batch.len()] {
                        d.ack = Ack::Committed;
                    }
                    continue;
                }
                // Plain acks, or a transaction that failed (a reconnect rolled it back): ack
                // each message of the current connection, so none stays in flight for good.
                for message in &batch {
                    let _ = client.ack(message).await;
                }
                let mut h = lock(&history);
                let deliveries = h.deliveries.get_mut(&p).expect("recorded");
                for d in &mut deliveries[first..first + batch.len()] {
                    d.ack = Ack::Unconfirmed;
                }
            }
            Ok(None) => panic!("consumer {p}: the client closed: {:?}", client.stats()),
            Err(_) if produced.load(SeqCst) => {
                let until = *drain_until.get_or_insert_with(|| std::time::Instant::now() + DRAIN);
                if all_received(&lock(&history), p) || std::time::Instant::now() > until {
                    break;
                }
            }
            Err(_) => {}
        }
    }
    drop(sub);
    let _ = tokio::time::timeout(crate::WAIT, client.disconnect()).await;
}

/// Records `batch`'s deliveries to consumer `p`, unacknowledged; returns the first's index.
fn record(history: &Mutex<History>, p: usize, batch: &[Message]) -> usize {
    let mut h = lock(history);
    let deliveries = h.deliveries.entry(p).or_default();
    let first = deliveries.len();
    for message in batch {
        let number = |name: &str| -> u64 {
            message
                .header(name)
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("a message without {name}: {:?}", message.headers))
        };
        deliveries.push(Delivery {
            key: (number("producer") as usize, number("seq")),
            redelivered: message.redelivered(),
            message_id: message.message_id().unwrap_or_default().to_string(),
            broker_epoch: message
                .header("ack")
                .and_then(|ack| ack.split('-').next())
                .and_then(|epoch| epoch.parse().ok()),
            ack: Ack::None,
        });
    }
    first
}

/// Acks `batch` in one transaction; whether its COMMIT was receipted.
async fn ack_in_transaction(client: &Client, batch: &[Message]) -> bool {
    let Ok(tx) = client.begin().await else {
        return false;
    };
    for message in batch {
        if tx.ack(message).await.is_err() {
            return false;
        }
    }
    matches!(
        tokio::time::timeout(crate::WAIT, tx.commit()).await,
        Ok(Ok(()))
    )
}

/// Whether every receipted message of producer `p` was delivered to its consumer.
fn all_received(h: &History, p: usize) -> bool {
    let delivered: std::collections::BTreeSet<Key> = h
        .deliveries
        .get(&p)
        .map(|d| d.iter().map(|d| d.key).collect())
        .unwrap_or_default();
    h.receipted
        .iter()
        .filter(|k| k.0 == p)
        .all(|k| delivered.contains(k))
}
