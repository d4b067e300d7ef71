//! lockd's scheduler requests (`ctl schedules`, `ctl schedules cancel`), answered from the
//! scheduler task's own `List` and `Remove` commands.
//!
//! Each answer waits in a [`crate::control::Deferred`] task, so a scheduler that is slow (still
//! opening its store after a takeover) delays only its answer; past [`ANSWER_TIMEOUT`] lockd is
//! told so in words, and a scheduler that failed (its task gone) is named as the cause.

use crate::scheduler::task::{Command, Removal};
use shared_proto::control::FromBroker;
use shared_proto::schedules::{Cancel, Listing, MAX_LIMIT};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How long an answer may take; under lockd's own timeout for the ctl request, so the operator
/// reads this broker's explanation rather than a bare timeout.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Where scheduler requests go: the scheduler task's command channel (commands queue there until
/// its task runs).
#[derive(Debug, Clone)]
pub struct Schedules(pub mpsc::UnboundedSender<Command>);

/// The answer to a scheduler request `id` that came while the broker was still opening its store
/// (before its scheduler exists).
pub fn not_started(id: u64) -> FromBroker {
    FromBroker::CallFailed {
        id,
        message: "the broker is still opening its store; its scheduler starts once it serves: \
                  retry shortly"
            .into(),
    }
}

impl Schedules {
    /// The answer to `ListSchedules { id, limit }`.
    pub async fn list(self, id: u64, limit: u32) -> FromBroker {
        let limit = limit.min(MAX_LIMIT) as usize;
        // One more than asked, to tell whether more are pending.
        let asked = self.ask(|reply| Command::List {
            limit: limit + 1,
            reply,
        });
        match asked.await {
            Ok(mut summaries) => {
                let more = summaries.len() > limit;
                summaries.truncate(limit);
                FromBroker::Schedules {
                    id,
                    listing: Listing::fit(summaries, more),
                }
            }
            Err(message) => FromBroker::CallFailed { id, message },
        }
    }

    /// The answer to `CancelSchedules { id, which }`, once the removal is durable.
    pub async fn cancel(self, id: u64, which: Cancel) -> FromBroker {
        let which = match which {
            Cancel::Job { id } => Removal::Job(id),
            Cancel::All => Removal::All(None),
        };
        match self.ask(|reply| Command::Remove { which, reply }).await {
            Ok(removed) => FromBroker::SchedulesCancelled {
                id,
                removed: removed as u64,
            },
            Err(message) => FromBroker::CallFailed { id, message },
        }
    }

    /// Sends the command `make` builds and waits (bounded) for its reply; the error says why
    /// there is none, in an operator's words.
    async fn ask<T, E: std::fmt::Display>(
        self,
        make: impl FnOnce(oneshot::Sender<Result<T, E>>) -> Command,
    ) -> Result<T, String> {
        let Schedules(commands) = self;
        let gone = || {
            "the scheduler has stopped (its store failed: see brokerd's log); the broker stops \
             with it and lockd restarts or hands over"
                .to_owned()
        };
        let (reply, answer) = oneshot::channel();
        commands.send(make(reply)).map_err(|_| gone())?;
        match tokio::time::timeout(ANSWER_TIMEOUT, answer).await {
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err(err))) => Err(format!("the scheduler's store failed: {err}")),
            Ok(Err(_)) => Err(gone()),
            Err(_) => Err(format!(
                "the scheduler did not answer within {} s: it may still be opening its store \
                 after a takeover (see brokerd's log); retry shortly",
                ANSWER_TIMEOUT.as_secs()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_proto::schedules::ScheduledJob;

    #[tokio::test]
    async fn a_scheduler_that_is_gone_is_named_as_failed() {
        let (tx, rx) = mpsc::unbounded_channel();
        drop(rx);
        match Schedules(tx).cancel(5, Cancel::All).await {
            FromBroker::CallFailed { id: 5, message } => {
                assert!(message.contains("scheduler has stopped"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }

    /// The scheduler is asked for one more job than the limit, so a listing cut at the limit
    /// says so.
    #[tokio::test]
    async fn a_listing_past_the_limit_says_it_was_cut() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let answering = tokio::spawn(async move {
            let Some(Command::List { limit, reply }) = rx.recv().await else {
                panic!("expected a listing");
            };
            let jobs = (0..limit)
                .map(|n| ScheduledJob {
                    id: format!("job-{n}"),
                    destination: "/queue/a".into(),
                    next_due_unix_ms: n as u64,
                    remaining: 0,
                    cron: None,
                })
                .collect();
            let _ = reply.send(Ok(jobs));
        });
        let answer = Schedules(tx).list(1, 2).await;
        answering.await.unwrap();
        match answer {
            FromBroker::Schedules { id: 1, listing } => {
                assert_eq!(listing.jobs.len(), 2);
                assert_eq!(listing.cut, Some(shared_proto::schedules::Cut::Limit));
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_scheduler_times_out_with_a_reason() {
        let (tx, _rx) = mpsc::unbounded_channel();
        match Schedules(tx).list(2, 10).await {
            FromBroker::CallFailed { message, .. } => {
                assert!(message.contains("did not answer within 10 s"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }
}
