//! brokerd's `/metrics` on the console address (issue 12 item 4) scraped across a failover: the
//! destination counters match what was sent and consumed, the new active serves the recovered
//! depth and the pending scheduled job once it took over, and the old active's address serves
//! nothing any more.

use ha_tests::*;
use std::net::SocketAddr;
use stomp_client::AckMode;

const QUEUE: &str = "/queue/metrics";
const SENT: u64 = 7;
const CONSUMED: u64 = 3;
/// Where a job is scheduled for an hour later: pending throughout the test.
const LATER: &str = "/queue/metrics-later";

/// One scrape's text, if `addr` serves brokerd's metrics now.
fn scrape(addr: SocketAddr) -> Option<String> {
    let response = http::get(addr, "/metrics").ok()?;
    (response.status == 200 && response.body.contains("brokerd_")).then_some(response.body)
}

/// The value of the sample `series` (name with its labels, as the text writes it).
fn sample(text: &str, series: &str) -> Option<f64> {
    http::metrics(text).get(series).copied()
}

fn labelled(name: &str) -> String {
    format!("{name}{{destination=\"{QUEUE}\",kind=\"queue\"}}")
}

/// Scrapes `addr` until the queue's depth, enqueued and dequeued are as expected and so is the
/// scheduler's count of pending jobs (known once its store has opened, which a takeover does
/// after the broker serves); the last scrape.
fn wait_for_queue(addr: SocketAddr, depth: u64, enqueued: u64, dequeued: u64) -> String {
    let want = (depth as f64, enqueued as f64, dequeued as f64, 1.0);
    wait_until(
        &format!(
            "{addr} to report depth {depth}, enqueued {enqueued}, dequeued {dequeued}, one \
             pending job"
        ),
        || {
            let text = scrape(addr)?;
            let got = (
                sample(&text, &labelled("brokerd_destination_messages"))?,
                sample(&text, &labelled("brokerd_destination_enqueued_total"))?,
                sample(&text, &labelled("brokerd_destination_dequeued_total"))?,
                sample(&text, "brokerd_scheduler_pending_jobs")?,
            );
            (got == want).then_some(text)
        },
    )
}

/// Every metric the dashboard reads is there.
fn assert_complete(text: &str) {
    for series in [
        "brokerd_connections",
        "brokerd_connections_accepted_total",
        "brokerd_redelivered_total",
        "brokerd_dead_lettered_total",
        "brokerd_store_bytes",
        "brokerd_store_flush_seconds_count",
        "brokerd_memory_bytes",
        "brokerd_memory_limit_bytes",
        "brokerd_scheduler_pending_jobs",
    ] {
        assert!(sample(text, series).is_some(), "no {series} in:\n{text}");
    }
}

#[test]
fn metrics_follow_the_active_node_and_count_what_was_sent() {
    let mut cluster = Cluster::new(2, "");
    cluster.with_http_pages(CONSOLE_USERS);
    let consoles: Vec<_> = cluster.nodes.iter().map(|n| n.console.unwrap()).collect();
    cluster.start_all();
    let active = cluster.wait_for_one_active();
    let passive = 1 - active;
    assert!(
        scrape(consoles[passive]).is_none(),
        "the passive node serves metrics"
    );

    let url = failover_url(&cluster);
    with_client(&url, async |client| {
        for n in 0..SENT {
            let receipt = client
                .send(
                    QUEUE,
                    &[("persistent", "true")],
                    format!("m{n}").into_bytes(),
                )
                .await
                .unwrap();
            receipt.await.unwrap();
        }
        let headers = [("activemq.prefetchSize", "1")];
        let mut sub = client
            .subscribe(QUEUE, AckMode::ClientIndividual, &headers)
            .await
            .unwrap();
        for _ in 0..CONSUMED {
            let msg = tokio::time::timeout(WAIT, sub.next())
                .await
                .expect("a message within WAIT")
                .expect("the subscription is open");
            client.ack(&msg).await.unwrap();
        }
        // Unacknowledged deliveries (the prefetched next one) go back to the queue.
        sub.unsubscribe().await.unwrap();
        let later = [("AMQ_SCHEDULED_DELAY", "3600000"), ("persistent", "true")];
        let receipt = client.send(LATER, &later, b"later".to_vec()).await.unwrap();
        receipt.await.unwrap();
    });
    let text = wait_for_queue(consoles[active], SENT - CONSUMED, SENT, CONSUMED);
    assert_complete(&text);
    assert!(
        sample(&text, "brokerd_connections_accepted_total").unwrap() >= 1.0,
        "{text}"
    );
    assert!(
        sample(&text, "brokerd_store_flush_seconds_count").unwrap() >= 1.0,
        "persistent messages were flushed: {text}"
    );

    cluster.nodes[active].kill(libc::SIGKILL);
    let next = cluster.wait_for_active_other_than(active);
    assert_eq!(next, passive);
    // The new active recovered the queue and the scheduled job from the stores; its counters
    // start at its takeover.
    let text = wait_for_queue(consoles[next], SENT - CONSUMED, 0, 0);
    assert_complete(&text);
    wait_until("the old active's console address to serve nothing", || {
        http::get(consoles[active], "/metrics")
            .is_err()
            .then_some(())
    });
}
