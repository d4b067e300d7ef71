//! Authorisation from the users file against the real brokerd binary (issue 11 item 2): users
//! in groups, entries granting read, write and admin on queues, topics, wildcards and temporary
//! destinations, each denial an ERROR naming user, operation and destination, with nothing
//! delivered or stored; `admin` asked for creating a destination only, not for using one again
//! once idle, without subscribers or after a restart; and the file read again on SIGHUP.

mod harness;

use harness::node::*;
use harness::{Broker, Client, Dirs, PATIENCE};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Clear-text passwords keep the table readable; `protocol.rs` logs in with an argon2id hash.
const USERS: &str = r#"
allow_anonymous = true
allow_clear_text_passwords = true

[users.alice]
password = "a"
groups = ["apps"]

[users.bob]
password = "b"
groups = ["readers"]

[users.root]
password = "r"
groups = ["admins"]

[[authorization]]
destination = "/queue/>"
read = ["admins"]
write = ["admins"]
admin = ["admins", "apps"]

[[authorization]]
destination = "/queue/orders.>"
read = ["apps", "readers"]
write = ["apps"]
admin = ["apps"]

[[authorization]]
destination = "/topic/prices.*"
read = ["apps", "readers"]
write = ["apps"]
admin = ["apps", "readers"]

[[authorization]]
destination = "/temp-queue/>"
read = ["apps"]
write = ["apps", "readers"]
admin = ["apps"]

[[authorization]]
destination = "/queue/public"
read = ["anonymous"]
write = ["anonymous"]
admin = ["anonymous"]
"#;

/// A broker with `users` as its users file, which the test may rewrite.
struct Secured {
    node: Node,
    users: PathBuf,
}

impl Secured {
    fn start(users: &str) -> Secured {
        let dirs = Dirs::new();
        let path = dirs.data.with_extension("users.toml");
        std::fs::write(&path, users).unwrap();
        let mut broker = spawn(&dirs.data, &path);
        let addr = broker.activate(1);
        Secured {
            node: Node {
                broker,
                addr,
                _dirs: dirs,
            },
            users: path,
        }
    }

    /// SIGKILLs the broker and starts another on the same store and users file under `epoch`:
    /// what the next broker finds after a crash or a failover.
    fn restart(&mut self, epoch: u64) {
        self.node.broker.kill();
        let mut broker = spawn(&self.node._dirs.data, &self.users);
        self.node.addr = broker.activate(epoch);
        self.node.broker = broker;
    }

    /// Waits until the broker holds no destination in memory: those the test used are idle
    /// (consumed to empty, without consumers or subscribers), and durably so.
    fn wait_until_idle(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        while self.node.broker.stats().destinations > 0 {
            assert!(
                Instant::now() < deadline,
                "the broker still holds destinations"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // A DISCONNECT's receipt comes once everything before it is durable: no consumed
        // message comes back after a crash to make its queue exist again.
        disconnect(&mut self.login(ANONYMOUS));
    }

    /// Connected as `login`/`passcode`, or anonymously with `None`.
    fn login(&self, user: Credentials) -> Session {
        let credentials = user
            .map(|(login, passcode)| [format!("login:{login}"), format!("passcode:{passcode}")]);
        let mut headers = vec!["accept-version:1.2"];
        if let Some(lines) = &credentials {
            headers.extend(lines.iter().map(String::as_str));
        }
        self.node.client_with(&headers, "1.2")
    }
}

/// brokerd on the store in `data` with the users file `users`.
fn spawn(data: &Path, users: &Path) -> Broker {
    Broker::spawn(data, &["--users-file", users.to_str().unwrap()])
}

/// A login and passcode, or `None` for an anonymous client.
type Credentials = Option<(&'static str, &'static str)>;

const ALICE: Credentials = Some(("alice", "a"));
const BOB: Credentials = Some(("bob", "b"));
const ROOT: Credentials = Some(("root", "r"));
const ANONYMOUS: Credentials = None;

/// A row of the table: who, what, where, and `None` if allowed or else the operation and
/// destination the ERROR names.
type Row = (
    Credentials,
    Op,
    &'static str,
    Option<(&'static str, &'static str)>,
);

/// What a row of the table does.
#[derive(Debug, Clone, Copy)]
enum Op {
    Send,
    Subscribe,
}

/// Runs `op` on `destination` as `user` on a fresh connection: `Ok` when the broker accepted
/// it (its RECEIPT came), or the ERROR's message when it refused.
fn attempt(secured: &Secured, user: Credentials, op: Op, destination: &str) -> Result<(), String> {
    let mut client = secured.login(user);
    let (command, headers) = match op {
        Op::Send => (
            "SEND",
            vec![format!("destination:{destination}"), "receipt:r".into()],
        ),
        Op::Subscribe => (
            "SUBSCRIBE",
            vec![
                format!("destination:{destination}"),
                "id:s".into(),
                "ack:client".into(),
                "receipt:r".into(),
            ],
        ),
    };
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    client.send_frame(command, &headers, b"row");
    let answer = client.read_raw();
    match answer.command.as_str() {
        "RECEIPT" => {
            // What a subscription was given goes back unacknowledged (client mode).
            client.send_frame("DISCONNECT", &["receipt:bye"], b"");
            while client.client.read_raw().command != "RECEIPT" {}
            client.client.expect_eof();
            Ok(())
        }
        "ERROR" => {
            let message = answer.unescaped("message").expect("ERROR with a message");
            assert_eq!(answer.get("receipt-id"), Some("r"), "{answer:?}");
            client.expect_eof();
            Err(message)
        }
        other => panic!("unexpected {other}: {answer:?}"),
    }
}

#[test]
fn users_groups_and_entries_decide_every_send_and_subscribe() {
    let mut secured = Secured::start(USERS);
    // Destinations the rows read were created by someone with admin, except where a row is
    // about creating one: root made the queue and left it, so it exists, idle.
    let mut root = secured.login(ROOT);
    subscribe(&mut root, "o", "/queue/orders.eu", "auto");
    disconnect(&mut root);
    secured.wait_until_idle();
    let mut prices = secured.login(ALICE);
    subscribe(&mut prices, "p", "/topic/prices.eu", "auto");

    let table: &[Row] = &[
        // Queues by name and by wildcard.
        (ALICE, Op::Send, "/queue/orders.eu", None),
        (ALICE, Op::Subscribe, "/queue/orders.eu", None),
        (ALICE, Op::Subscribe, "/queue/orders.>", None),
        (ALICE, Op::Subscribe, "/queue/orders.*", None),
        (
            ALICE,
            Op::Send,
            "/queue/payments",
            Some(("write", "/queue/payments")),
        ),
        (ALICE, Op::Subscribe, "/queue/>", Some(("read", "/queue/>"))),
        (BOB, Op::Subscribe, "/queue/orders.eu", None),
        (
            BOB,
            Op::Send,
            "/queue/orders.eu",
            Some(("write", "/queue/orders.eu")),
        ),
        // bob may read orders but not create them.
        (
            BOB,
            Op::Subscribe,
            "/queue/orders.new",
            Some(("admin", "/queue/orders.new")),
        ),
        (ROOT, Op::Send, "/queue/payments", None),
        (ROOT, Op::Subscribe, "/queue/>", None),
        // A composite is allowed only as a whole.
        (
            ALICE,
            Op::Send,
            "/queue/orders.eu,/queue/payments",
            Some(("write", "/queue/payments")),
        ),
        // Topics: `*` covers one segment.
        (BOB, Op::Subscribe, "/topic/prices.eu", None),
        (BOB, Op::Subscribe, "/topic/prices.*", None),
        (
            BOB,
            Op::Subscribe,
            "/topic/prices.>",
            Some(("read", "/topic/prices.>")),
        ),
        (
            BOB,
            Op::Subscribe,
            "/topic/prices.eu.paris",
            Some(("read", "/topic/prices.eu.paris")),
        ),
        (
            BOB,
            Op::Send,
            "/topic/prices.eu",
            Some(("write", "/topic/prices.eu")),
        ),
        (ALICE, Op::Send, "/topic/prices.eu", None),
        (
            ROOT,
            Op::Subscribe,
            "/topic/prices.eu",
            Some(("read", "/topic/prices.eu")),
        ),
        // Temporary destinations: creating one takes admin on /temp-queue/>.
        (ALICE, Op::Subscribe, "/temp-queue/replies", None),
        (
            BOB,
            Op::Send,
            "/temp-queue/mine",
            Some(("admin", "/temp-queue/mine")),
        ),
        // Anonymous clients are group "anonymous".
        (ANONYMOUS, Op::Send, "/queue/public", None),
        (ANONYMOUS, Op::Subscribe, "/queue/public", None),
        (
            ANONYMOUS,
            Op::Subscribe,
            "/queue/orders.eu",
            Some(("read", "/queue/orders.eu")),
        ),
        (
            ANONYMOUS,
            Op::Send,
            "/topic/prices.eu",
            Some(("write", "/topic/prices.eu")),
        ),
    ];
    let mut wrong = Vec::new();
    for &(user, op, destination, refused) in table {
        let name = user.map_or("anonymous", |(login, _)| login);
        let got = attempt(&secured, user, op, destination);
        let ok = match (&got, refused) {
            (Ok(()), None) => true,
            (Err(message), Some((operation, named))) => {
                let who = if name == "anonymous" {
                    name.to_owned()
                } else {
                    format!("\"{name}\"")
                };
                message.starts_with(&format!(
                    "user {who} is not authorised to {operation} {named}"
                ))
            }
            _ => false,
        };
        if !ok {
            wrong.push(format!(
                "{name} {op:?} {destination}: expected {refused:?}, got {got:?}"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "rows that went wrong:\n{}",
        wrong.join("\n")
    );

    // Nothing refused was delivered or stored: the queue holds alice's row alone (each reader
    // of a row gave it back unacknowledged), and the topic subscriber saw alice's price alone.
    // Only the subscriber is still connected: every row's connection has given back its own.
    wait_for_connections(&mut secured.node, 1);
    let mut orders = secured.login(ROOT);
    subscribe(&mut orders, "o", "/queue/orders.eu", "client");
    assert_eq!(next_message(&mut orders).text(), "row");
    assert_nothing_delivered(&mut orders, "orders");
    disconnect(&mut orders);
    assert_eq!(next_message(&mut prices).text(), "row");
    assert_nothing_delivered(&mut prices, "prices");
    let mut payments = secured.login(ROOT);
    subscribe(&mut payments, "pay", "/queue/payments", "auto");
    assert_eq!(next_message(&mut payments).text(), "row", "root's payment");
    assert_nothing_delivered(&mut payments, "payments");
}

/// carol reads and writes the ledger queues and reads the news topics, but may create none of
/// them: root creates ledger queues (its `/queue/>` entry) and news topics.
const CLERKS: &str = r#"
[users.carol]
password = "c"
groups = ["clerks"]

[[authorization]]
destination = "/queue/ledger.>"
read = ["clerks"]
write = ["clerks"]

[[authorization]]
destination = "/topic/news.>"
read = ["clerks", "admins"]
admin = ["admins"]
"#;

const CAROL: Credentials = Some(("carol", "c"));

/// carol sends to the ledger and consumes what she sent, leaving it idle again.
fn keep_the_ledger(secured: &Secured) {
    let mut carol = secured.login(CAROL);
    send_with(
        &mut carol,
        "/queue/ledger.eu",
        &["persistent:true"],
        "entry",
    );
    subscribe(&mut carol, "l", "/queue/ledger.eu", "auto");
    assert_eq!(next_message(&mut carol).text(), "entry");
    disconnect(&mut carol);
}

#[test]
fn a_queue_an_admin_created_is_used_without_admin_once_idle_and_after_a_restart() {
    let mut secured = Secured::start(&format!("{USERS}{CLERKS}"));
    let mut root = secured.login(ROOT);
    send_with(
        &mut root,
        "/queue/ledger.eu",
        &["persistent:true"],
        "opening",
    );
    subscribe(&mut root, "l", "/queue/ledger.eu", "auto");
    assert_eq!(next_message(&mut root).text(), "opening");
    disconnect(&mut root);
    // Consumed to empty and without consumers, the queue is gone from memory, not forgotten.
    secured.wait_until_idle();
    keep_the_ledger(&secured);
    secured.wait_until_idle();
    // The next broker recovers no message for it, so holds nothing: it remembers it created.
    secured.restart(2);
    assert_eq!(secured.node.broker.stats().destinations, 0);
    keep_the_ledger(&secured);
    // A queue nobody created still needs admin.
    assert_eq!(
        attempt(&secured, CAROL, Op::Send, "/queue/ledger.us"),
        Err("user \"carol\" is not authorised to admin /queue/ledger.us (create it)".into())
    );
}

#[test]
fn a_topic_an_admin_created_is_subscribed_without_admin_once_unsubscribed_and_after_a_restart() {
    let mut secured = Secured::start(&format!("{USERS}{CLERKS}"));
    let mut root = secured.login(ROOT);
    subscribe(&mut root, "n", "/topic/news.eu", "auto");
    root.send_frame("UNSUBSCRIBE", &["id:n", "receipt:off"], b"");
    root.expect_receipt("off");
    disconnect(&mut root);
    // Without subscribers, the topic is gone from memory, not forgotten.
    secured.wait_until_idle();
    assert_eq!(
        attempt(&secured, CAROL, Op::Subscribe, "/topic/news.eu"),
        Ok(())
    );
    secured.restart(2);
    assert_eq!(secured.node.broker.stats().destinations, 0);
    assert_eq!(
        attempt(&secured, CAROL, Op::Subscribe, "/topic/news.eu"),
        Ok(())
    );
    // A topic nobody created still needs admin.
    assert_eq!(
        attempt(&secured, CAROL, Op::Subscribe, "/topic/news.us"),
        Err("user \"carol\" is not authorised to admin /topic/news.us (create it)".into())
    );
}

#[test]
fn a_reply_goes_to_a_temporary_queue_with_write_on_temporary_queues() {
    let secured = Secured::start(USERS);
    let mut requester = secured.login(ALICE);
    subscribe(&mut requester, "replies", "/temp-queue/replies", "auto");
    send_with(
        &mut requester,
        "/queue/orders.requests",
        &["reply-to:/temp-queue/replies"],
        "ask",
    );
    // bob may read the requests and write to temporary queues, though not create one.
    let mut responder = secured.login(BOB);
    subscribe(&mut responder, "requests", "/queue/orders.requests", "auto");
    let request = next_message(&mut responder);
    let reply_to = request.header("reply-to").to_owned();
    assert!(reply_to.starts_with("/remote-temp-queue/"), "{reply_to}");
    send(&mut responder, &reply_to, "answer");
    assert_eq!(next_message(&mut requester).text(), "answer");
}

#[test]
fn changes_to_the_users_file_apply_on_sighup_to_open_connections_too() {
    let secured = Secured::start(USERS);
    let mut alice = secured.login(ALICE);
    send(&mut alice, "/queue/orders.eu", "before");
    // alice loses write on orders and gains it on payments.
    let changed = USERS.replacen("write = [\"apps\"]", "write = []", 1)
        + "[[authorization]]\ndestination = \"/queue/payments\"\nwrite = [\"apps\"]\n";
    std::fs::write(&secured.users, changed).unwrap();
    let pid = secured.node.broker.pid();
    hang_up(pid);
    // A new connection sees the change once the broker has read the file.
    let deadline = Instant::now() + PATIENCE;
    while attempt(&secured, ALICE, Op::Send, "/queue/payments").is_err() {
        assert!(Instant::now() < deadline, "the reload never applied");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The open connection too, from its next frame; and the broker still runs.
    send(&mut alice, "/queue/payments", "after");
    alice.send_frame(
        "SEND",
        &["destination:/queue/orders.eu", "receipt:no"],
        b"denied",
    );
    let error = alice.expect_refusal("user \"alice\" is not authorised to write /queue/orders.eu");
    assert_eq!(error.get("receipt-id"), Some("no"));
    // A broken file on a later reload keeps what was read before.
    std::fs::write(&secured.users, "[users]\nbroken = ").unwrap();
    hang_up(pid);
    secured
        .node
        .broker
        .wait_for_log("reload on SIGHUP failed; keeping the previous settings");
    assert_eq!(
        attempt(&secured, ALICE, Op::Send, "/queue/payments"),
        Ok(())
    );
}

#[test]
fn a_users_file_with_clear_text_passwords_is_refused_unless_allowed() {
    let dirs = Dirs::new();
    let users = dirs.data.with_extension("users.toml");
    std::fs::write(&users, "[users]\nalice = \"s3cret\"\n").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_brokerd"))
        .args([
            "--data-dir",
            dirs.data.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--users-file", users.to_str().unwrap()])
        .output()
        .expect("run brokerd");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(users.to_str().unwrap())
            && stderr.contains("users alice have clear-text passwords")
            && stderr.contains("ctl passwd"),
        "{stderr}"
    );
}

#[test]
fn a_client_without_login_is_refused_unless_anonymous_access_is_allowed() {
    let secured = Secured::start(&USERS.replace("allow_anonymous = true", ""));
    let mut client = Client::connect(&secured.node.addr);
    client.send_frame("CONNECT", &["accept-version:1.2"], b"");
    client.expect_refusal("authentication failed");
}

/// SIGHUP to brokerd, as lockd passes on `systemctl reload`.
fn hang_up(pid: u32) {
    // SAFETY: kill(2) on the broker this test started; no memory is involved.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGHUP) }, 0);
}

#[test]
fn scheduler_browse_copies_go_only_where_the_client_may_write() {
    let secured = Secured::start(&format!(
        "{USERS}\n[[authorization]]\ndestination = \"/topic/ActiveMQ.Scheduler.Management\"\nwrite = [\"apps\"]\n"
    ));
    let mut alice = secured.login(ALICE);
    send_with(
        &mut alice,
        "/queue/orders.later",
        &["AMQ_SCHEDULED_DELAY:600000"],
        "scheduled",
    );
    // A queue alice may not write: no copy of her job lands there.
    alice.send_frame(
        "SEND",
        &[
            "destination:/topic/ActiveMQ.Scheduler.Management",
            "AMQ_SCHEDULER_ACTION:BROWSE",
            "reply-to:/queue/payments",
            "receipt:browse",
        ],
        b"",
    );
    let error = alice.expect_refusal("user \"alice\" is not authorised to write /queue/payments");
    assert_eq!(error.get("receipt-id"), Some("browse"));
    let mut root = secured.login(ROOT);
    subscribe(&mut root, "pay", "/queue/payments", "auto");
    assert_nothing_delivered(&mut root, "payments");
    // One she may write: the copy arrives.
    let mut alice = secured.login(ALICE);
    subscribe(&mut alice, "replies", "/queue/orders.replies", "auto");
    send_with(
        &mut alice,
        "/topic/ActiveMQ.Scheduler.Management",
        &[
            "AMQ_SCHEDULER_ACTION:BROWSE",
            "reply-to:/queue/orders.replies",
        ],
        "browse",
    );
    assert_eq!(next_message(&mut alice).text(), "scheduled");
}

#[test]
fn another_application_s_durable_subscription_is_neither_deleted_nor_moved() {
    let secured = Secured::start(&format!(
        "{USERS}\n[[authorization]]\ndestination = \"/topic/public\"\nread = [\"anonymous\"]\nadmin = [\"anonymous\"]\n"
    ));
    let durable = |user: Credentials| {
        let credentials = user
            .map(|(login, passcode)| [format!("login:{login}"), format!("passcode:{passcode}")]);
        let mut headers = vec!["accept-version:1.2", "client-id:audit-app"];
        if let Some(lines) = &credentials {
            headers.extend(lines.iter().map(String::as_str));
        }
        secured.node.client_with(&headers, "1.2")
    };
    let mut alice = durable(ALICE);
    subscribe_with(
        &mut alice,
        "d",
        "/topic/prices.eu",
        "auto",
        &["activemq.subscriptionName:audit"],
    );
    alice.send_frame("UNSUBSCRIBE", &["id:d", "receipt:off"], b"");
    alice.expect_receipt("off");
    disconnect(&mut alice);
    let mut publisher = secured.login(ALICE);
    send(&mut publisher, "/topic/prices.eu", "kept");

    // Anonymous, with alice's client-id, may not delete it...
    let mut intruder = durable(ANONYMOUS);
    intruder.send_frame(
        "UNSUBSCRIBE",
        &["id:d", "activemq.subscriptionName:audit", "receipt:delete"],
        b"",
    );
    intruder.expect_refusal("user anonymous is not authorised to read /topic/prices.eu");
    // ...nor move it to a topic it may read, which would drop what it kept.
    let mut intruder = durable(ANONYMOUS);
    intruder.send_frame(
        "SUBSCRIBE",
        &[
            "id:d",
            "destination:/topic/public",
            "activemq.subscriptionName:audit",
            "receipt:move",
        ],
        b"",
    );
    intruder.expect_refusal("user anonymous is not authorised to read /topic/prices.eu");
    // alice finds her subscription and what it kept.
    let mut alice = durable(ALICE);
    subscribe_with(
        &mut alice,
        "d",
        "/topic/prices.eu",
        "auto",
        &["activemq.subscriptionName:audit"],
    );
    assert_eq!(next_message(&mut alice).text(), "kept");
}
