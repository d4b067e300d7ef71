//! Persistence across a restart of the real brokerd binary on the same store: receipted
//! persistent messages, paged-out counts, and a backlog beyond one page drained in order,
//! exactly once.

mod harness;

use harness::node::*;
use harness::{Broker, Dirs, PATIENCE};
use std::time::{Duration, Instant};

#[test]
fn a_receipted_persistent_message_survives_a_graceful_restart() {
    let dirs = Dirs::new();
    let mut first = Broker::spawn(&dirs.data, &[]);
    let addr = first.activate(1);
    let mut producer = Session::connect(&addr, "1.2");
    send_with(
        &mut producer,
        "/queue/durable",
        &["persistent:true"],
        "kept",
    );
    first.stop("restart");
    drop(producer);

    let mut second = Broker::spawn(&dirs.data, &[]);
    let addr = second.activate(2);
    let mut consumer = Session::connect(&addr, "1.2");
    subscribe(&mut consumer, "s", "/queue/durable", "client-individual");
    let message = next_message(&mut consumer);
    assert_eq!(message.text(), "kept");
    assert_eq!(message.get("persistent"), Some("true"));
    assert_eq!(message.get("redelivered"), Some("true"));
    second.stop("done");
}

#[test]
fn status_counts_paged_out_messages_before_and_after_a_restart() {
    let page = ["--page-size", "4"];
    let dirs = Dirs::new();
    let mut first = Broker::spawn(&dirs.data, &page);
    let addr = first.activate(1);
    let mut producer = Session::connect(&addr, "1.2");
    for i in 0..50 {
        send_with(
            &mut producer,
            "/queue/counted",
            &["persistent:true"],
            &format!("m{i:02}"),
        );
    }
    // 4 in memory, 46 in the store only: all 50 are counted.
    assert_eq!(first.stats().messages, 50);
    first.stop("restart");
    drop(producer);

    let mut second = Broker::spawn(&dirs.data, &page);
    let addr = second.activate(2);
    // The first page at once, the rest as the background count gets to it.
    let deadline = Instant::now() + PATIENCE;
    while second.stats().messages != 50 {
        assert!(Instant::now() < deadline, "{:?}", second.stats());
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut consumer = Session::connect(&addr, "1.2");
    subscribe_with(
        &mut consumer,
        "s",
        "/queue/counted",
        "client-individual",
        &["activemq.prefetchSize:1"],
    );
    let taken = take_acking(&mut consumer, 10);
    assert_eq!(taken[9].0, "m09");
    consumer.send_frame("UNSUBSCRIBE", &["id:s", "receipt:gone"], b"");
    consumer.expect_receipt("gone");
    // The ACKs and the UNSUBSCRIBE are processed: 40 left, whichever of them are in memory
    // (the one delivered within the prefetch went back).
    assert_eq!(second.stats().messages, 40);
    consumer.early.clear();
    disconnect(&mut consumer);
    second.stop("done");
}

#[test]
fn a_backlog_beyond_the_page_survives_a_restart_and_drains_in_order_exactly_once() {
    // A page of 8 messages: the 60 queued below live mostly in the store only, and the second
    // broker starts with just the first page of them in memory.
    let page = ["--page-size", "8"];
    let dirs = Dirs::new();
    let mut first = Broker::spawn(&dirs.data, &page);
    let addr = first.activate(1);
    let mut producer = Session::connect(&addr, "1.2");
    let name = |i: usize| format!("m{i:03}");
    for i in 0..60 {
        send_with(
            &mut producer,
            "/queue/backlog",
            &["persistent:true"],
            &name(i),
        );
    }
    // Some are consumed across several refills before the restart.
    let mut consumer = Session::connect(&addr, "1.2");
    subscribe_with(
        &mut consumer,
        "s",
        "/queue/backlog",
        "client-individual",
        &["activemq.prefetchSize:2"],
    );
    let before = take_acking(&mut consumer, 20);
    let expected: Vec<(String, Option<String>)> = (0..20).map(|i| (name(i), None)).collect();
    assert_eq!(before, expected);
    consumer.send_frame("UNSUBSCRIBE", &["id:s", "receipt:gone"], b"");
    consumer.expect_receipt("gone");
    // Within its prefetch it may have been sent up to two more (how many depends on whether the
    // next page was in memory yet); they went back unacknowledged.
    assert!(
        consumer.early.len() <= 2,
        "prefetch 2 exceeded: {:?}",
        consumer.early.len()
    );
    consumer.early.clear();
    disconnect(&mut consumer);
    first.stop("restart");
    drop(producer);

    let mut second = Broker::spawn(&dirs.data, &page);
    let addr = second.activate(2);
    let mut producer = Session::connect(&addr, "1.2");
    // New messages go behind the backlog.
    for i in 60..70 {
        send_with(
            &mut producer,
            "/queue/backlog",
            &["persistent:true"],
            &name(i),
        );
    }
    let mut consumer = Session::connect(&addr, "1.2");
    subscribe_with(
        &mut consumer,
        "s",
        "/queue/backlog",
        "client-individual",
        &["activemq.prefetchSize:3"],
    );
    let after = take_acking(&mut consumer, 50);
    let expected: Vec<(String, Option<String>)> = (20..70)
        .map(|i| (name(i), (i < 60).then(|| "true".to_owned())))
        .collect();
    assert_eq!(after, expected);
    assert_nothing_delivered(&mut consumer, "drained");
    disconnect(&mut consumer);
    second.stop("done");
}
