//! Real STOMP clients nobody on this project wrote, against real nodes: the stomp.py scenarios
//! in `tests/python`, each run as a subprocess with the nodes' addresses as arguments.
//!
//! Needs python3 with stomp.py 8 or later (`tests/run-all.sh` installs it when missing). A
//! scenario exits 0 when every check held; otherwise the test fails with everything it printed,
//! and the cluster's logs.

use ha_tests::*;
use std::process::Command;

/// `python3 -u tests/python/SCRIPT ARGS... HOST:PORT...` for every node of `cluster`.
fn scenario(script: &str, args: &[&str], cluster: &Cluster) -> ClientProcess {
    stomp_py(script, args, cluster.nodes.iter().map(|n| n.addr()))
}

/// One node, active, with `extra` config lines.
fn one_node(extra: &str) -> Cluster {
    let mut cluster = Cluster::new(1, extra);
    cluster.start_all();
    cluster.wait_for_one_active();
    cluster
}

/// Runs `script` against a fresh single node to the end.
fn run_on_one_node(script: &str, args: &[&str], extra: &str) {
    let cluster = one_node(extra);
    scenario(script, args, &cluster).assert_passes();
}

#[test]
fn stomp_py_sends_and_receives_with_receipts_over_stomp_1_2_1_1_and_1_0() {
    run_on_one_node("send_receive.py", &[], "");
}

#[test]
fn stomp_py_client_individual_and_client_acks_and_nack_to_the_dead_letter_queue() {
    // Fewer redeliveries than the default 6 keep the NACK loop short; the script checks the
    // count it is given.
    run_on_one_node(
        "acks.py",
        &["--max-redeliveries", "2"],
        "broker_args = [\"--max-redeliveries\", \"2\"]\n",
    );
}

#[test]
fn stomp_py_transactions_commit_abort_and_ack() {
    run_on_one_node("transactions.py", &[], "");
}

#[test]
fn stomp_py_schedules_browses_removes_and_is_refused_bad_scheduling_headers() {
    run_on_one_node("scheduler.py", &[], "");
}

#[test]
fn stomp_py_durable_subscription_keeps_messages_published_while_away() {
    run_on_one_node("durable.py", &[], "");
}

// The six below are the Ruby and PHP scenarios of `other_clients.rs`, written for stomp.py;
// each also passes against ActiveMQ 5.17 (Debian's activemq).

#[test]
fn stomp_py_subscribes_with_wildcards_and_gets_the_concrete_destinations() {
    run_on_one_node("wildcards.py", &[], "");
}

#[test]
fn stomp_py_subscribes_with_a_selector_and_leaves_the_rest_on_the_queue() {
    run_on_one_node("selector.py", &[], "");
}

#[test]
fn stomp_py_does_request_reply_over_a_temporary_queue() {
    run_on_one_node("request_reply.py", &[], "");
}

#[test]
fn stomp_py_browses_a_queue_without_consuming_it() {
    run_on_one_node("browse.py", &[], "");
}

#[test]
fn stomp_py_sends_and_receives_a_16_mib_message_intact() {
    run_on_one_node("big_message.py", &[], "");
}

#[test]
fn stomp_py_gets_every_receipt_sending_to_a_queue_it_is_subscribed_to() {
    run_on_one_node("receipt_while_subscribed.py", &[], "");
}

#[test]
fn stomp_py_host_list_fails_over_across_a_sigkill_without_losing_receipted_messages() {
    let mut cluster = Cluster::new(3, "");
    cluster.start_all();
    let active = cluster.wait_for_one_active();
    let mut client = scenario("failover.py", &[], &cluster);
    // The producer is mid-stream, with receipts outstanding, when it prints KILL.
    client.wait_for_line("KILL");
    cluster.nodes[active].kill(libc::SIGKILL);
    let next = cluster.wait_for_active_other_than(active);
    eprintln!(
        "killed {}; {} took over",
        cluster.nodes[active].name, cluster.nodes[next].name
    );
    client.assert_passes();
}

/// The PHC string `ctl passwd --password PASSWORD` prints as its last line.
fn hashed(password: &str) -> String {
    let out = Command::new(&bins().ctl)
        .args(["passwd", "--password", password])
        .output()
        .expect("run ctl passwd");
    assert!(out.status.success(), "ctl passwd: {}", stderr(&out));
    let printed = stdout(&out);
    let last = printed.lines().last().expect("ctl passwd printed nothing");
    assert!(last.starts_with("$argon2id$v=19$"), "{printed}");
    last.to_owned()
}

#[test]
fn stomp_py_logs_in_with_passwords_from_ctl_passwd_and_is_authorised_per_destination() {
    let users = format!(
        "[users.alice]\npassword = \"{}\"\ngroups = [\"apps\"]\n\
         [users.bob]\npassword = \"{}\"\ngroups = [\"readers\"]\n\
         [[authorization]]\ndestination = \"/queue/orders.>\"\n\
         read = [\"apps\", \"readers\"]\nwrite = [\"apps\"]\nadmin = [\"apps\", \"readers\"]\n",
        hashed("alice-pw"),
        hashed("bob-pw")
    );
    let mut cluster = Cluster::new(1, "");
    cluster.users_file(&users);
    cluster.start_all();
    cluster.wait_for_one_active();
    scenario("authorisation.py", &[], &cluster).assert_passes();
}
