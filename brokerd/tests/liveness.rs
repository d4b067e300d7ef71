//! brokerd's half of the liveness check (DESIGN invariant 7): a `Pong` proves the broker core
//! handled the `Ping`, not merely that the control socket is read.

mod harness;

use harness::{Broker, Dirs};
use shared_proto::control::{FromBroker, ToBroker};
use std::time::Duration;

/// How long a pong from a wedged core is waited for; it must never come, so this only bounds
/// the test's length.
const SILENCE: Duration = Duration::from_secs(3);

#[test]
fn a_ready_broker_answers_pings_with_their_sequence_number() {
    let dirs = Dirs::new();
    let mut broker = Broker::spawn(&dirs.data, &[]);
    broker.activate(1);
    for seq in [1, 2, 7] {
        broker.send(&ToBroker::Ping { seq });
        assert_eq!(broker.recv(), FromBroker::Pong { seq });
    }
    broker.stop("test over");
}

/// With the broker core stuck (the hidden test hook), pings go unanswered although the control
/// reader still works: garbage on the channel still ends the broker at once, even after a
/// `Stats` request, which waits for the core too.
#[test]
fn a_stuck_broker_core_leaves_pings_unanswered_while_the_control_reader_lives() {
    let dirs = Dirs::new();
    let mut broker = Broker::spawn(&dirs.data, &["--test-wedge-core-on-sigusr1"]);
    broker.activate(1);
    broker.send(&ToBroker::Ping { seq: 1 });
    assert_eq!(broker.recv(), FromBroker::Pong { seq: 1 });

    // SAFETY: kill(2) on the test's own brokerd; no memory involved.
    assert_eq!(unsafe { libc::kill(broker.pid() as i32, libc::SIGUSR1) }, 0);
    // The hook takes effect once the core's task is polled again: a ping sent before that may
    // still be answered, so keep pinging until one is not.
    let mut unanswered = None;
    for seq in 2..20 {
        broker.send(&ToBroker::Ping { seq });
        match broker.recv_within(SILENCE) {
            Some(FromBroker::Pong { seq: got }) => assert_eq!(got, seq),
            Some(other) => panic!("expected a pong or nothing, got {other:?}"),
            None => {
                unanswered = Some(seq);
                break;
            }
        }
    }
    assert!(
        unanswered.is_some(),
        "every ping was answered with the core wedged"
    );

    // A stats request waits for the core in its own task, not in the control loop.
    broker.send(&ToBroker::Stats);
    broker.send_raw(b"not json\n");
    let status = broker.wait_exit();
    assert_eq!(status.code(), Some(1), "{status:?}");
}
