//! lockd's side of one running brokerd: start it, talk to it, watch it die.
//!
//! Each broker gets a generation number; every event it produces carries it, so the state
//! machine can ignore late events from a broker it has already replaced.

use crate::sys::spawn::{self, BrokerCommand};
use shared_proto::control::{FromBroker, ToBroker};
use shared_proto::wire::{self, WireError};
use shared_proto::PROTOCOL_VERSION;
use tokio::io::BufReader;
use tokio::net::UnixStream;
use tokio::sync::mpsc;

/// Messages to a broker waiting to be written; a broker that stops reading loses stats
/// requests rather than stalling lockd.
const OUTBOX: usize = 16;

/// What a broker's tasks report to the state machine.
#[derive(Debug)]
pub enum BrokerEvent {
    Message(FromBroker),
    /// The control channel ended: EOF, an I/O error, or a message we refuse (`error`).
    ChannelClosed {
        error: Option<String>,
    },
    /// The process exited; `status` is printable.
    Exited {
        status: String,
    },
}

/// A running broker as the state machine holds it.
#[derive(Debug)]
pub struct Broker {
    pub pid: u32,
    pub generation: u64,
    outbox: mpsc::Sender<ToBroker>,
}

impl Broker {
    /// Starts brokerd, greets it and tells it to activate under `epoch`. Its messages, the end of
    /// its channel and its exit arrive on `events` tagged with `generation`.
    ///
    /// Must run on the runtime's main thread: see [`spawn::spawn`].
    pub fn start(
        command: &BrokerCommand,
        epoch: u64,
        generation: u64,
        events: mpsc::Sender<(u64, BrokerEvent)>,
    ) -> std::io::Result<Broker> {
        let spawned = spawn::spawn(command)?;
        let mut child = spawned.child;
        let pid = child.id().unwrap_or(0);
        spawned.control.set_nonblocking(true)?;
        let control = UnixStream::from_std(spawned.control)?;
        let (read_half, mut write_half) = control.into_split();

        let (outbox, mut outbox_rx) = mpsc::channel::<ToBroker>(OUTBOX);
        outbox
            .try_send(ToBroker::Hello {
                version: PROTOCOL_VERSION,
            })
            .expect("fresh outbox has room");
        outbox
            .try_send(ToBroker::Activate { epoch })
            .expect("fresh outbox has room");
        tokio::spawn(async move {
            while let Some(message) = outbox_rx.recv().await {
                if wire::write_message(&mut write_half, &message)
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });

        let channel_events = events.clone();
        tokio::spawn(async move {
            let error = read_messages(read_half, generation, &channel_events)
                .await
                .err()
                .map(|e| e.to_string());
            let _ = channel_events
                .send((generation, BrokerEvent::ChannelClosed { error }))
                .await;
        });

        tokio::spawn(async move {
            let status = match child.wait().await {
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
            outbox,
        })
    }

    /// Queues a message; dropped (with a debug line) if the broker is not reading.
    pub fn send(&self, message: ToBroker) {
        if let Err(e) = self.outbox.try_send(message) {
            tracing::debug!(pid = self.pid, error = %e, "control message to brokerd dropped");
        }
    }

    /// SIGKILLs the broker's process group. Safe to repeat.
    pub fn kill(&self) {
        if self.pid != 0 {
            spawn::kill_group(self.pid);
        }
    }
}

/// Reads the broker's Hello, then forwards every message until the channel ends.
async fn read_messages(
    read_half: tokio::net::unix::OwnedReadHalf,
    generation: u64,
    events: &mpsc::Sender<(u64, BrokerEvent)>,
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
