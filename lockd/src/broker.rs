//! lockd's side of one running brokerd: start it, talk to it, check it still serves, watch it
//! die.
//!
//! Each broker gets a generation number; every event it produces carries it, so the state
//! machine can ignore late events from a broker it has already replaced.
//!
//! Liveness (DESIGN invariant 7): from the broker's `Ready` until lockd asks it to `Stop`, a
//! `Ping` is kept in flight; brokerd answers it only after its broker core handled it. A ping
//! unanswered for the liveness timeout means the broker is alive but not serving (stopped,
//! deadlocked): it is reported as [`BrokerEvent::Unresponsive`] and SIGKILLed, and its exit then
//! flows like a crash's. A broker still opening its store is not pinged: the ready timeout
//! bounds its start, however large the store.

use crate::sys::spawn::{self, BrokerCommand};
use shared_proto::control::{FromBroker, ToBroker};
use shared_proto::wire::{self, WireError};
use shared_proto::PROTOCOL_VERSION;
use std::time::Duration;
use tokio::io::BufReader;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// What a broker's tasks report to the state machine.
#[derive(Debug)]
pub enum BrokerEvent {
    Message(FromBroker),
    /// The control channel ended: EOF, an I/O error, or a message we refuse (`error`).
    ChannelClosed {
        error: Option<String>,
    },
    /// A liveness ping went unanswered for `silent`: the broker is alive but not serving. Its
    /// process group has been SIGKILLed; `Exited` follows.
    Unresponsive {
        silent: Duration,
    },
    /// The process exited; `status` is printable.
    Exited {
        status: String,
    },
}

/// Where a broker is in its life, as far as liveness checks care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Opening its store and listeners: not pinged (the ready timeout bounds this).
    Starting,
    /// Ready: pinged.
    Serving,
    /// Asked to stop: no longer pinged (the stop deadline bounds this).
    Stopping,
}

/// Messages on their way to brokerd. Everything but `Stats` must arrive and is queued without
/// bound, which stays small by construction: Hello and Activate once, Stop once per stop asked,
/// one ping in flight, and at most one scheduler request per ctl connection (`ctl schedules`). Stats requests are coalesced: one waiting is enough, and a broker that
/// stops reading loses them rather than stalling lockd.
#[derive(Debug)]
struct Outbox {
    must_arrive: mpsc::UnboundedSender<ToBroker>,
    stats: mpsc::Sender<()>,
    phase: watch::Sender<Phase>,
}

/// A running broker as the state machine holds it.
#[derive(Debug)]
pub struct Broker {
    pub pid: u32,
    pub generation: u64,
    outbox: Outbox,
}

impl Broker {
    /// Starts brokerd, greets it and tells it to activate under `epoch`. Its messages, the end of
    /// its channel, its silence past `liveness_timeout` once ready, and its exit arrive on
    /// `events` tagged with `generation`.
    ///
    /// Must run on the runtime's main thread: see [`spawn::spawn`].
    pub fn start(
        command: &BrokerCommand,
        epoch: u64,
        generation: u64,
        liveness_timeout: Duration,
        events: mpsc::Sender<(u64, BrokerEvent)>,
    ) -> std::io::Result<Broker> {
        let spawned = spawn::spawn(command)?;
        let mut child = spawned.child;
        let pid = child.id().unwrap_or(0);
        spawned.control.set_nonblocking(true)?;
        let control = UnixStream::from_std(spawned.control)?;
        let (read_half, mut write_half) = control.into_split();

        let (must_arrive, mut must_arrive_rx) = mpsc::unbounded_channel::<ToBroker>();
        let (stats, mut stats_rx) = mpsc::channel::<()>(1);
        let (phase, phase_rx) = watch::channel(Phase::Starting);
        let (answered, answered_rx) = watch::channel(0u64);
        for message in [
            ToBroker::Hello {
                version: PROTOCOL_VERSION,
            },
            ToBroker::Activate { epoch },
        ] {
            must_arrive
                .send(message)
                .expect("the receiver is still in this function");
        }
        let pings = must_arrive.clone();
        tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    biased;
                    message = must_arrive_rx.recv() => match message {
                        Some(message) => message,
                        None => break,
                    },
                    Some(()) = stats_rx.recv() => ToBroker::Stats,
                };
                if wire::write_message(&mut write_half, &message)
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });

        let channel_events = events.clone();
        let reader_phase = phase.clone();
        tokio::spawn(async move {
            let error = read_messages(
                read_half,
                generation,
                &channel_events,
                &reader_phase,
                &answered,
            )
            .await
            .err()
            .map(|e| e.to_string());
            let _ = channel_events
                .send((generation, BrokerEvent::ChannelClosed { error }))
                .await;
        });

        // This task owns the child, so the pid it kills cannot have been reaped and reused.
        tokio::spawn(async move {
            let waited = tokio::select! {
                waited = child.wait() => waited,
                silent = unresponsive(liveness_timeout, &pings, phase_rx, answered_rx) => {
                    // Reported before the kill, so the reason reaches the state machine before
                    // the exit it causes.
                    let _ = events
                        .send((generation, BrokerEvent::Unresponsive { silent }))
                        .await;
                    spawn::kill_group(pid);
                    child.wait().await
                }
            };
            let status = match waited {
                Ok(status) => status.to_string(),
                Err(e) => format!("unknown ({e})"),
            };
            let _ = events
                .send((generation, BrokerEvent::Exited { status }))
                .await;
        });

        Ok(Broker {
            pid,
            generation,
            outbox: Outbox {
                must_arrive,
                stats,
                phase,
            },
        })
    }

    /// Queues a message. Only `Stats` can be dropped (with a debug line), when one is already
    /// waiting for a broker that is not reading; `Stop` always reaches a broker that reads again,
    /// and ends the liveness pings (the stop deadline takes over).
    pub fn send(&self, message: ToBroker) {
        let queued = match message {
            ToBroker::Stats => self.outbox.stats.try_send(()).map_err(|e| e.to_string()),
            message => {
                if matches!(message, ToBroker::Stop { .. }) {
                    self.outbox.phase.send_replace(Phase::Stopping);
                }
                self.outbox
                    .must_arrive
                    .send(message)
                    .map_err(|e| e.to_string())
            }
        };
        if let Err(error) = queued {
            tracing::debug!(pid = self.pid, %error, "control message to brokerd not queued");
        }
    }

    /// Sends the broker SIGHUP: it reads its users file and certificates again.
    pub fn hang_up(&self) {
        if self.pid != 0 {
            spawn::hang_up(self.pid);
        }
    }

    /// SIGKILLs the broker's process group. Safe to repeat.
    pub fn kill(&self) {
        if self.pid != 0 {
            spawn::kill_group(self.pid);
        }
    }
}

/// Reads the broker's Hello, then forwards every message until the channel ends. `Pong`s are
/// consumed here (they feed `answered`); `Ready` starts the liveness pings.
async fn read_messages(
    read_half: tokio::net::unix::OwnedReadHalf,
    generation: u64,
    events: &mpsc::Sender<(u64, BrokerEvent)>,
    phase: &watch::Sender<Phase>,
    answered: &watch::Sender<u64>,
) -> Result<(), WireError> {
    let mut reader = BufReader::new(read_half);
    let mut buf = Vec::new();
    match wire::read_message::<FromBroker, _>(&mut reader, &mut buf).await? {
        Some(FromBroker::Hello { version, .. }) => wire::check_version(version)?,
        Some(other) => {
            return Err(WireError::Unexpected {
                expected: "hello",
                got: format!("{other:?}"),
            })
        }
        None => return Ok(()),
    }
    while let Some(message) = wire::read_message(&mut reader, &mut buf).await? {
        match message {
            FromBroker::Pong { seq } => {
                answered.send_if_modified(|last| {
                    let newer = seq > *last;
                    *last = (*last).max(seq);
                    newer
                });
                continue;
            }
            FromBroker::Ready { .. } => {
                phase.send_if_modified(|phase| {
                    let starting = *phase == Phase::Starting;
                    if starting {
                        *phase = Phase::Serving;
                    }
                    starting
                });
            }
            _ => {}
        }
        if events
            .send((generation, BrokerEvent::Message(message)))
            .await
            .is_err()
        {
            break;
        }
    }
    Ok(())
}

/// Keeps one ping in flight to a serving broker, a new one a quarter of `timeout` after the
/// previous was sent (once it is answered). Returns how long a ping went unanswered once that
/// reaches `timeout`; never returns for a broker that answers, has not become ready, was asked
/// to stop, or whose channel is gone (its exit is reported then).
///
/// A deadline that fires more than an interval late measures lockd's own stall (SIGSTOP, an
/// overloaded host), during which the broker's pong may be waiting unread: then the pong gets
/// another interval to be read before the broker is judged.
async fn unresponsive(
    timeout: Duration,
    pings: &mpsc::UnboundedSender<ToBroker>,
    mut phase: watch::Receiver<Phase>,
    mut answered: watch::Receiver<u64>,
) -> Duration {
    let serving = phase
        .wait_for(|p| *p != Phase::Starting)
        .await
        .is_ok_and(|p| *p == Phase::Serving);
    if !serving {
        return std::future::pending().await;
    }
    let interval = timeout / 4;
    let mut stopping = phase.clone();
    let stopping = async move {
        let _ = stopping.wait_for(|p| *p == Phase::Stopping).await;
    };
    tokio::pin!(stopping);
    for seq in 1u64.. {
        let sent = Instant::now();
        if pings.send(ToBroker::Ping { seq }).is_err() {
            break;
        }
        let mut deadline = sent + timeout;
        loop {
            tokio::select! {
                answer = async { answered.wait_for(|&a| a >= seq).await.is_ok() } => {
                    if !answer {
                        return std::future::pending().await;
                    }
                    break;
                }
                () = &mut stopping => return std::future::pending().await,
                () = tokio::time::sleep_until(deadline) => {
                    let now = Instant::now();
                    if now.duration_since(deadline) <= interval {
                        return now.duration_since(sent);
                    }
                    deadline = now + interval;
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep_until(sent + interval) => {}
            () = &mut stopping => break,
        }
    }
    std::future::pending().await
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_millis(2000);

    /// A broker's side of the liveness check: the pings lockd sent, and how to answer them.
    struct Peer {
        pings: mpsc::UnboundedReceiver<ToBroker>,
        phase: watch::Sender<Phase>,
        answered: watch::Sender<u64>,
    }

    /// Starts [`unresponsive`] in a task; its result arrives on the returned oneshot.
    fn start() -> (Peer, tokio::sync::oneshot::Receiver<Duration>) {
        let (pings_tx, pings) = mpsc::unbounded_channel();
        let (phase, phase_rx) = watch::channel(Phase::Starting);
        let (answered, answered_rx) = watch::channel(0);
        let (done_tx, done) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let silent = unresponsive(TIMEOUT, &pings_tx, phase_rx, answered_rx).await;
            let _ = done_tx.send(silent);
        });
        (
            Peer {
                pings,
                phase,
                answered,
            },
            done,
        )
    }

    impl Peer {
        /// The next ping's sequence number, waiting for it in virtual time.
        async fn next_ping(&mut self) -> u64 {
            match self.pings.recv().await {
                Some(ToBroker::Ping { seq }) => seq,
                other => panic!("expected a ping, got {other:?}"),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_broker_that_stops_answering_is_unresponsive_exactly_at_the_timeout() {
        let (mut peer, mut done) = start();
        peer.phase.send_replace(Phase::Serving);
        // Answers within 1.9 s each keep it alive for a minute.
        let started = Instant::now();
        let mut last = 0;
        while started.elapsed() < Duration::from_secs(60) {
            last = peer.next_ping().await;
            tokio::time::sleep(Duration::from_millis(1900)).await;
            peer.answered.send_replace(last);
            assert!(done.try_recv().is_err(), "unresponsive while answering");
        }
        // Then it falls silent.
        let silent_since = Instant::now();
        let seq = peer.next_ping().await;
        assert_eq!(seq, last + 1);
        let silent = (&mut done).await.unwrap();
        assert_eq!(silent, TIMEOUT);
        let waited = silent_since.elapsed();
        assert!(
            waited >= TIMEOUT && waited <= TIMEOUT + TIMEOUT / 4,
            "declared unresponsive after {waited:?}"
        );
    }

    /// A lockd that was itself stopped past the timeout must not kill a broker whose pong
    /// arrived meanwhile and is not read yet.
    #[tokio::test(start_paused = true)]
    async fn lockds_own_stall_is_not_blamed_on_the_broker() {
        let (mut peer, mut done) = start();
        peer.phase.send_replace(Phase::Serving);
        let seq = peer.next_ping().await;
        // lockd stalls for 5 s: when it runs again, its timer is long overdue...
        tokio::time::advance(Duration::from_secs(5)).await;
        tokio::task::yield_now().await;
        // ... and the pong that waited in the socket is read right after.
        peer.answered.send_replace(seq);
        tokio::time::sleep(TIMEOUT / 8).await;
        assert!(
            done.try_recv().is_err(),
            "blamed the broker for lockd's stall"
        );
        assert_eq!(peer.next_ping().await, seq + 1);
        // A broker that stays silent is still caught, within an interval of the late check.
        let silent = (&mut done).await.unwrap();
        assert_eq!(silent, TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_starting_broker_is_not_pinged_however_long_it_takes() {
        let (mut peer, mut done) = start();
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert!(peer.pings.try_recv().is_err(), "pinged before Ready");
        assert!(done.try_recv().is_err());
        peer.phase.send_replace(Phase::Serving);
        assert_eq!(peer.next_ping().await, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stopping_broker_is_no_longer_pinged() {
        let (mut peer, mut done) = start();
        peer.phase.send_replace(Phase::Serving);
        let seq = peer.next_ping().await;
        // Asked to stop with the ping unanswered: the stop deadline takes over.
        peer.phase.send_replace(Phase::Stopping);
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert!(
            done.try_recv().is_err(),
            "a stopping broker was declared unresponsive"
        );
        assert!(peer.pings.try_recv().is_err(), "pinged after Stop");
        assert_eq!(seq, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn pings_are_spaced_a_quarter_of_the_timeout_apart() {
        let (mut peer, _done) = start();
        peer.phase.send_replace(Phase::Serving);
        let first = peer.next_ping().await;
        let sent = Instant::now();
        peer.answered.send_replace(first);
        let second = peer.next_ping().await;
        assert_eq!(second, first + 1);
        assert_eq!(sent.elapsed(), TIMEOUT / 4);
    }

    /// Regression: `Stop` went through the same bounded outbox as `Stats` and was dropped when
    /// the broker had not read its earlier messages.
    #[tokio::test]
    async fn stop_reaches_a_broker_that_was_not_reading_however_many_stats_were_asked() {
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("control");
        let go = dir.path().join("go");
        // A "broker" that reads nothing until told to, then copies its control socket to a file.
        let script = format!(
            "while [ ! -e {go} ]; do sleep 0.01; done; exec cat <&3 > {copy}",
            go = go.display(),
            copy = copy.display()
        );
        let command = BrokerCommand {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script],
            credentials: None,
            opened: None,
        };
        let (events, _events_rx) = mpsc::channel(8);
        let broker = Broker::start(&command, 1, 1, TIMEOUT, events).unwrap();
        for _ in 0..100 {
            broker.send(ToBroker::Stats);
        }
        broker.send(ToBroker::Stop {
            deadline_ms: 1000,
            reason: "failover requested".into(),
        });
        std::fs::write(&go, b"").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&copy).unwrap_or_default();
            if text.contains("\"type\":\"stop\"") {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "Stop never reached the broker; it read:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        broker.kill();
    }
}
