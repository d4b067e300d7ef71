//! Paging persistent messages out and back, and a takeover's first page.

use super::*;

#[test]
fn paged_out_messages_come_back_in_order_once_each_across_refills() {
    let store = MapStore::default();
    let (mut b, mut reads) = paged_broker(&store, 7, 4);
    let producer = open(&mut b, 1, None);
    persistent_sends(&mut b, &producer, "/queue/q", 0..20);
    // Only the budget is in memory; everything is in the store, and counted.
    assert_eq!(b.counts().messages, 20);
    assert_eq!(store.count("q//queue/q"), 20);
    assert_eq!(b.memory().bytes(), 0);

    let mut consumer = open(&mut b, 2, None);
    subscribe(
        &mut b,
        &consumer,
        "s",
        "/queue/q",
        AckMode::ClientIndividual,
        3,
    );
    let first = received(&mut consumer);
    assert_eq!(
        first.iter().map(|(m, _, _)| m.as_str()).collect::<Vec<_>>(),
        ["0", "1", "2"]
    );
    // Below the low-water mark: a read is asked for. Before it is answered, a message is
    // acknowledged and a new one is paged out behind the others.
    ack_now(&mut b, &consumer, first[0].1.as_deref().unwrap());
    persistent_sends(&mut b, &producer, "/queue/q", 20..21);
    assert_eq!(b.counts().messages, 20);
    let mut got: Vec<(String, bool)> = first.into_iter().map(|(m, _, r)| (m, r)).collect();
    // The other two by message-id (STOMP 1.1 style); the page is still unanswered.
    for id in ["ID:n1-7-2", "ID:n1-7-3"] {
        b.handle(Request::Ack {
            conn: consumer.conn,
            which: AckRef::MessageId {
                message_id: id.into(),
                subscription: None,
            },
            nack: false,
            transaction: None,
            receipt: None,
        });
    }
    got.extend(drain_acking(&mut b, &mut reads, &store, &mut consumer));
    let bodies: Vec<String> = got.iter().map(|(m, _)| m.clone()).collect();
    assert_eq!(bodies, numbers(0..21));
    assert!(got.iter().all(|(_, redelivered)| !redelivered));
    assert_eq!(store.count("q//queue/q"), 0);
    assert_eq!(b.counts().messages, 0);
}

#[test]
fn a_stale_or_repeated_page_never_delivers_a_message_twice() {
    let store = MapStore::default();
    let (mut b, mut reads) = paged_broker(&store, 7, 4);
    let producer = open(&mut b, 1, None);
    persistent_sends(&mut b, &producer, "/queue/q", 0..12);
    let mut consumer = open(&mut b, 2, None);
    subscribe(
        &mut b,
        &consumer,
        "s",
        "/queue/q",
        AckMode::ClientIndividual,
        2,
    );
    // The read asked for after the first deliveries, widened to start at the very first key
    // (as a read racing a moving cursor might): what memory has held is skipped, not
    // delivered again. Answered twice: the second answer's ticket is spent, so it is ignored.
    let mut read = reads.try_recv().expect("a refill below the low-water mark");
    read.from = Bytes::copy_from_slice(&0u64.to_be_bytes());
    read.limit += 4;
    b.handle(read.clone().serve(&store));
    b.handle(read.serve(&store));
    let got = drain_acking(&mut b, &mut reads, &store, &mut consumer);
    let bodies: Vec<String> = got.iter().map(|(m, _)| m.clone()).collect();
    assert_eq!(bodies, numbers(0..12));
}

#[test]
fn unacked_paged_messages_are_redelivered_in_place_and_the_rest_follow() {
    let store = MapStore::default();
    let (mut b, mut reads) = paged_broker(&store, 7, 4);
    let producer = open(&mut b, 1, None);
    persistent_sends(&mut b, &producer, "/queue/q", 0..10);
    let mut quitter = open(&mut b, 2, None);
    subscribe(
        &mut b,
        &quitter,
        "s",
        "/queue/q",
        AckMode::ClientIndividual,
        3,
    );
    assert_eq!(bodies(&mut quitter), ["0", "1", "2"]);
    serve(&mut b, &mut reads, &store);
    b.handle(Request::Close { conn: quitter.conn });
    let mut consumer = open(&mut b, 3, None);
    subscribe(
        &mut b,
        &consumer,
        "s",
        "/queue/q",
        AckMode::ClientIndividual,
        2,
    );
    let got = drain_acking(&mut b, &mut reads, &store, &mut consumer);
    let expected: Vec<(String, bool)> = (0..10).map(|i| (i.to_string(), i < 3)).collect();
    assert_eq!(got, expected);
    assert_eq!(store.count("q//queue/q"), 0);
}

#[test]
fn a_takeover_loads_one_page_and_pages_the_rest_in_flagged_redelivered() {
    let store = MapStore::default();
    {
        let (mut b, _reads) = paged_broker(&store, 7, 4);
        let producer = open(&mut b, 1, None);
        persistent_sends(&mut b, &producer, "/queue/q", 0..10);
        send(&mut b, &producer, "/queue/q", "gone", &[]);
    }
    let (mut b, mut reads) = paged_broker(&store, 8, 4);
    assert_eq!(b.recover(&store).unwrap(), 4);
    assert_eq!(b.counts().messages, 4);
    let producer = open(&mut b, 1, None);
    // New messages go behind the paged-out backlog.
    persistent_sends(&mut b, &producer, "/queue/q", 10..12);
    let mut consumer = open(&mut b, 2, None);
    subscribe(
        &mut b,
        &consumer,
        "s",
        "/queue/q",
        AckMode::ClientIndividual,
        3,
    );
    let got = drain_acking(&mut b, &mut reads, &store, &mut consumer);
    let expected: Vec<(String, bool)> = (0..12).map(|i| (i.to_string(), i < 10)).collect();
    assert_eq!(got, expected);
    assert_eq!(store.count("q//queue/q"), 0);
}

#[test]
fn a_takeover_counts_what_is_stored_beyond_its_first_page_in_the_background() {
    let store = MapStore::default();
    let stored = 2 * paging::COUNT_CHUNK + 5;
    {
        let (mut b, _reads) = paged_broker(&store, 7, 4);
        let producer = open(&mut b, 1, None);
        persistent_sends(&mut b, &producer, "/queue/q", 0..stored as u32);
    }
    let (mut b, mut reads) = paged_broker(&store, 8, 4);
    assert_eq!(b.recover(&store).unwrap(), 4);
    // Only the first page so far; the count is asked for, not yet answered.
    assert_eq!(b.counts().messages, 4);
    let producer = open(&mut b, 1, None);
    persistent_sends(&mut b, &producer, "/queue/q", 0..2);
    assert_eq!(b.counts().messages, 4 + 2, "new page-outs count at once");
    // A consumer drains below the low-water mark while the count goes on: pages are read
    // between counts, and nothing is counted twice or missed.
    let mut consumer = open(&mut b, 2, None);
    subscribe(
        &mut b,
        &consumer,
        "s",
        "/queue/q",
        AckMode::ClientIndividual,
        3,
    );
    let mut taken = 0;
    let mut served = 0;
    while let Ok(read) = reads.try_recv() {
        let counting = read.count_below.is_some();
        b.handle(read.serve(&store));
        served += usize::from(counting);
        for (_, ack, _) in received(&mut consumer) {
            ack_now(&mut b, &consumer, &ack.unwrap());
            taken += 1;
        }
        if counting {
            assert!(b.counts().messages <= (stored + 2 - taken) as u64);
        }
    }
    assert_eq!(served, 3, "in chunks of {}", paging::COUNT_CHUNK);
    assert!(taken > 0);
    assert_eq!(b.counts().messages, (stored + 2 - taken) as u64);
    let rest = drain_acking(&mut b, &mut reads, &store, &mut consumer);
    assert_eq!(taken + rest.len(), stored + 2);
    assert_eq!(b.counts().messages, 0);
    assert_eq!(store.count("q//queue/q"), 0);
}

#[test]
fn a_message_paged_out_where_a_count_is_under_way_is_counted_once() {
    // Before the takeover: six messages on the DLQ (seqs 1-6), two on /queue/work (7, 8).
    let store = MapStore::default();
    {
        let (mut b, _reads) = paged_broker(&store, 7, 4);
        let producer = open(&mut b, 1, None);
        persistent_sends(&mut b, &producer, "/queue/DLQ", 0..6);
        persistent_sends(&mut b, &producer, "/queue/work", 6..8);
    }
    let (mut b, mut reads) = paged_broker(&store, 8, 4);
    b.recover(&store).unwrap();
    // The DLQ's count (from seq 5) is read now, but its answer arrives late.
    let count = reads.try_recv().expect("the DLQ's count");
    assert!(count.count_below.is_some());
    let answer = count.serve(&store);
    // Meanwhile seq 7 is dead-lettered (NACKed past max-redeliveries) and, keeping its seq,
    // paged out into the DLQ's range still being counted; the count above did not see it.
    let mut consumer = open(&mut b, 2, None);
    subscribe(
        &mut b,
        &consumer,
        "s",
        "/queue/work",
        AckMode::ClientIndividual,
        1,
    );
    while let Some((body, ack, _)) = received(&mut consumer).into_iter().next() {
        if body != "6" {
            ack_now(&mut b, &consumer, &ack.unwrap());
            continue;
        }
        ack_nack(&mut b, &consumer, &ack.unwrap());
    }
    assert_eq!(store.count("q//queue/DLQ"), 7);
    b.handle(answer);
    serve(&mut b, &mut reads, &store);
    // 4 DLQ messages in memory and 3 in the store only, nothing else.
    assert_eq!(b.counts().messages, 7);
}
