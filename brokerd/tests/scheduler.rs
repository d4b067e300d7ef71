//! Scheduled delivery against the real brokerd (controlled mode, the test playing lockd): the
//! scheduling headers, their refusals, and a delivery that survives a SIGKILLed broker once.

mod harness;

use harness::{Broker, Client, Dirs, RawFrame, PATIENCE};
use std::time::{Duration, Instant};

/// A subscriber on `destination` (auto ack).
fn subscriber(addr: &str, destination: &str) -> Client {
    let mut client = Client::stomp(addr);
    client.send_frame(
        "SUBSCRIBE",
        &[&format!("destination:{destination}"), "id:s", "receipt:sub"],
        b"",
    );
    client.expect_receipt("sub");
    client
}

/// Sends a receipted SEND with `headers` and waits for its receipt.
fn schedule(addr: &str, headers: &[&str], body: &[u8]) -> Instant {
    let mut producer = Client::stomp(addr);
    let mut all = vec!["receipt:scheduled"];
    all.extend_from_slice(headers);
    let sent = Instant::now();
    producer.send_frame("SEND", &all, body);
    producer.expect_receipt("scheduled");
    sent
}

fn message(client: &mut Client) -> RawFrame {
    let frame = client.read_raw();
    assert_eq!(frame.command, "MESSAGE", "{frame:?}");
    frame
}

/// Nothing arrives for `quiet` (a bounded check that no extra delivery comes).
fn nothing_within(client: &mut Client, quiet: Duration) {
    client.set_read_timeout(quiet);
    if let Some(frame) = client.try_read_raw() {
        panic!("unexpected frame: {frame:?}");
    }
    client.set_read_timeout(PATIENCE);
}

#[test]
fn a_delayed_message_comes_once_after_its_delay_without_the_scheduling_headers() {
    let dirs = Dirs::new();
    let mut broker = Broker::spawn(&dirs.data, &[]);
    let addr = broker.activate(1);
    let mut consumer = subscriber(&addr, "/queue/later");
    let sent = schedule(
        &addr,
        &[
            "destination:/queue/later",
            "AMQ_SCHEDULED_DELAY:1000",
            "custom:kept",
            "persistent:true",
        ],
        b"in a second",
    );
    let frame = message(&mut consumer);
    assert!(
        sent.elapsed() >= Duration::from_millis(1000),
        "{:?}",
        sent.elapsed()
    );
    assert_eq!(frame.body, b"in a second");
    assert_eq!(frame.get("custom"), Some("kept"));
    assert_eq!(frame.get("persistent"), Some("true"));
    assert_eq!(frame.get("scheduledJobId"), frame.get("message-id"));
    assert!(frame.get("AMQ_SCHEDULED_DELAY").is_none(), "{frame:?}");
    assert!(frame.get("redelivered").is_none(), "{frame:?}");
    nothing_within(&mut consumer, Duration::from_millis(500));
    broker.stop("done");
}

#[test]
fn a_period_and_repeat_deliver_repeat_plus_one_messages_with_their_own_ids() {
    let dirs = Dirs::new();
    let mut broker = Broker::spawn(&dirs.data, &[]);
    let addr = broker.activate(1);
    let mut consumer = subscriber(&addr, "/topic/ticks");
    schedule(
        &addr,
        &[
            "destination:/topic/ticks",
            "AMQ_SCHEDULED_PERIOD:100",
            "AMQ_SCHEDULED_REPEAT:4",
        ],
        b"tick",
    );
    let frames: Vec<RawFrame> = (0..5).map(|_| message(&mut consumer)).collect();
    let job = frames[0].unescaped("scheduledJobId").unwrap();
    let ids: Vec<String> = frames
        .iter()
        .map(|f| f.unescaped("message-id").unwrap())
        .collect();
    let expected: Vec<String> = (0..5).map(|n| format!("{job}:{n}")).collect();
    assert_eq!(ids, expected);
    nothing_within(&mut consumer, Duration::from_millis(500));
    broker.stop("done");
}

#[test]
fn a_cron_job_delivers_at_each_matching_minute() {
    let dirs = Dirs::new();
    // A minute every second.
    let mut broker = Broker::spawn(&dirs.data, &["--test-scheduler-clock-rate", "60"]);
    let addr = broker.activate(1);
    let mut consumer = subscriber(&addr, "/queue/cron");
    schedule(
        &addr,
        &["destination:/queue/cron", "AMQ_SCHEDULED_CRON:* * * * *"],
        b"every minute",
    );
    let first = message(&mut consumer);
    let second = message(&mut consumer);
    let job = first.unescaped("scheduledJobId").unwrap();
    assert_eq!(first.unescaped("message-id").unwrap(), format!("{job}:0"));
    assert_eq!(second.unescaped("message-id").unwrap(), format!("{job}:1"));
    broker.stop("done");
}

#[test]
fn each_bad_scheduling_header_is_refused_by_name_and_nothing_is_scheduled() {
    let dirs = Dirs::new();
    let mut broker = Broker::spawn(&dirs.data, &[]);
    let addr = broker.activate(1);
    let mut consumer = subscriber(&addr, "/queue/bad");
    for (header, value) in [
        ("AMQ_SCHEDULED_DELAY", "-5"),
        ("AMQ_SCHEDULED_PERIOD", "soon"),
        ("AMQ_SCHEDULED_REPEAT", "-1"),
        ("AMQ_SCHEDULED_CRON", "61 * * * *"),
        ("AMQ_SCHEDULED_CRON", "* *"),
    ] {
        let mut producer = Client::stomp(&addr);
        let bad = format!("{header}:{value}");
        let mut headers = vec!["destination:/queue/bad", "receipt:r", bad.as_str()];
        if header == "AMQ_SCHEDULED_REPEAT" {
            // A repeat alone schedules nothing (ActiveMQ's rule).
            headers.push("AMQ_SCHEDULED_PERIOD:10");
        }
        producer.send_frame("SEND", &headers, b"never");
        producer.expect_refusal(&format!("{header} {value:?}"));
    }
    nothing_within(&mut consumer, Duration::from_millis(500));
    broker.stop("done");
}

#[test]
fn a_delivery_due_after_its_broker_was_killed_comes_once_from_the_next() {
    let dirs = Dirs::new();
    let mut first = Broker::spawn(&dirs.data, &[]);
    let addr = first.activate(1);
    let sent = schedule(
        &addr,
        &[
            "destination:/queue/survives",
            "AMQ_SCHEDULED_DELAY:1500",
            "persistent:true",
        ],
        b"after the failover",
    );
    first.kill();
    let mut second = Broker::spawn(&dirs.data, &[]);
    let addr = second.activate(2);
    let mut consumer = subscriber(&addr, "/queue/survives");
    let frame = message(&mut consumer);
    assert!(sent.elapsed() >= Duration::from_millis(1500));
    assert_eq!(frame.body, b"after the failover");
    nothing_within(&mut consumer, Duration::from_millis(500));
    second.stop("done");
}

/// BROWSE's copies on `reply_to`: (scheduledJobId, the frame), until none comes for a while.
fn browse(addr: &str, range: Option<(u64, u64)>) -> Vec<RawFrame> {
    let mut consumer = subscriber(addr, "/queue/browsed");
    let mut admin = Client::stomp(addr);
    let mut headers = vec![
        "destination:/topic/ActiveMQ.Scheduler.Management".to_owned(),
        "AMQ_SCHEDULER_ACTION:BROWSE".to_owned(),
        "reply-to:/queue/browsed".to_owned(),
        "receipt:browse".to_owned(),
    ];
    if let Some((start, end)) = range {
        headers.push(format!("ACTION_START_TIME:{start}"));
        headers.push(format!("ACTION_END_TIME:{end}"));
    }
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    admin.send_frame("SEND", &headers, b"");
    admin.expect_receipt("browse");
    let mut copies = Vec::new();
    consumer.set_read_timeout(Duration::from_millis(500));
    while let Some(frame) = consumer.try_read_raw() {
        copies.push(frame);
    }
    copies
}

fn manage(addr: &str, headers: &[&str]) {
    let mut admin = Client::stomp(addr);
    let mut all = vec![
        "destination:/topic/ActiveMQ.Scheduler.Management",
        "receipt:managed",
    ];
    all.extend_from_slice(headers);
    admin.send_frame("SEND", &all, b"");
    admin.expect_receipt("managed");
}

#[test]
fn the_management_topic_browses_removes_one_and_removes_all_as_activemq_does() {
    let dirs = Dirs::new();
    let mut broker = Broker::spawn(&dirs.data, &[]);
    let addr = broker.activate(1);
    let now = shared_proto::unix_ms();
    for (delay, body) in [
        ("60000", "in a minute"),
        ("120000", "in two"),
        ("180000", "in three"),
    ] {
        schedule(
            &addr,
            &[
                "destination:/queue/later",
                &format!("AMQ_SCHEDULED_DELAY:{delay}"),
            ],
            body.as_bytes(),
        );
    }
    let copies = browse(&addr, None);
    let bodies: Vec<&[u8]> = copies.iter().map(|f| f.body.as_slice()).collect();
    assert_eq!(bodies, [&b"in a minute"[..], b"in two", b"in three"]);
    for copy in &copies {
        assert_eq!(copy.get("type"), Some("Advisory"), "{copy:?}");
        assert_eq!(copy.get("original-destination"), Some("/queue/later"));
        assert!(copy.get("AMQ_SCHEDULED_DELAY").is_some(), "{copy:?}");
        assert!(copy.get("persistent").is_none(), "{copy:?}");
    }
    let in_range = browse(&addr, Some((now + 90_000, now + 150_000)));
    assert_eq!(in_range.len(), 1);
    assert_eq!(in_range[0].body, b"in two");

    let first = copies[0].header("scheduledJobId").to_owned();
    manage(
        &addr,
        &[
            "AMQ_SCHEDULER_ACTION:REMOVE",
            &format!("scheduledJobId:{first}"),
        ],
    );
    assert_eq!(browse(&addr, None).len(), 2);
    manage(
        &addr,
        &[
            "AMQ_SCHEDULER_ACTION:REMOVEALL",
            &format!("ACTION_START_TIME:{}", now + 90_000),
            &format!("ACTION_END_TIME:{}", now + 150_000),
        ],
    );
    let left = browse(&addr, None);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].body, b"in three");
    manage(&addr, &["AMQ_SCHEDULER_ACTION:REMOVEALL"]);
    assert!(browse(&addr, None).is_empty());

    // A removed job stays removed across a restart of the broker.
    broker.stop("restart");
    let mut broker = Broker::spawn(&dirs.data, &[]);
    let addr = broker.activate(2);
    assert!(browse(&addr, None).is_empty());
    let mut admin = Client::stomp(&addr);
    admin.send_frame(
        "SEND",
        &[
            "destination:/topic/ActiveMQ.Scheduler.Management",
            "AMQ_SCHEDULER_ACTION:LIST",
        ],
        b"",
    );
    admin.expect_refusal("AMQ_SCHEDULER_ACTION \"LIST\"\\c not one of BROWSE, REMOVE, REMOVEALL");
    broker.stop("done");
}

#[test]
fn a_scheduled_send_in_a_transaction_is_scheduled_at_commit_and_never_after_abort() {
    let dirs = Dirs::new();
    let mut broker = Broker::spawn(&dirs.data, &[]);
    let addr = broker.activate(1);
    let mut consumer = subscriber(&addr, "/queue/tx-later");
    let mut producer = Client::stomp(&addr);
    let send = |producer: &mut Client, tx: &str, body: &[u8]| {
        producer.send_frame(
            "SEND",
            &[
                "destination:/queue/tx-later",
                &format!("transaction:{tx}"),
                "AMQ_SCHEDULED_DELAY:200",
            ],
            body,
        );
    };
    producer.send_frame("BEGIN", &["transaction:a"], b"");
    send(&mut producer, "a", b"aborted");
    producer.send_frame("ABORT", &["transaction:a", "receipt:aborted"], b"");
    producer.expect_receipt("aborted");
    producer.send_frame("BEGIN", &["transaction:c"], b"");
    send(&mut producer, "c", b"committed");
    nothing_within(&mut consumer, Duration::from_millis(500));
    let committed = Instant::now();
    producer.send_frame("COMMIT", &["transaction:c", "receipt:committed"], b"");
    producer.expect_receipt("committed");
    let frame = message(&mut consumer);
    assert_eq!(frame.body, b"committed");
    assert!(committed.elapsed() >= Duration::from_millis(200));
    nothing_within(&mut consumer, Duration::from_millis(500));
    broker.stop("done");
}
