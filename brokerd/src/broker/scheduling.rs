//! The broker's side of scheduled delivery: storing new jobs where a takeover finds them and handing
//! them to the scheduler, the management topic, and enqueueing what the scheduler fires.

use super::*;
use crate::auth::Operation;

impl Broker {
    /// A scheduled SEND: a job, stored in the message store like a message (so that its
    /// RECEIPT, or its COMMIT's, means it is durable), and handed to the scheduler.
    pub(super) fn schedule(
        &mut self,
        conn: ConnId,
        msg: Message,
        schedule: scheduler::spec::Schedule,
        transaction: Option<String>,
        receipt: Option<String>,
    ) -> Result<(), Refused> {
        let Some(link) = &self.scheduler else {
            return Err(Refused(
                "this broker runs without a scheduler: scheduled SENDs are refused".into(),
            ));
        };
        let cron = schedule.cron.as_ref().map(ToString::to_string);
        let Some(job) = Job::new(msg, schedule, link.clock.now()) else {
            return Err(Refused(format!(
                "{} {:?} never matches: nothing was scheduled",
                scheduler::spec::CRON,
                cron.unwrap_or_default()
            )));
        };
        match transaction {
            Some(tx) => {
                let charge = Charge::new(&job.template, &self.memory);
                self.transaction(conn, &tx)?
                    .push(TxOp::Schedule(job, charge));
                self.receipt_now(conn, receipt);
            }
            None => {
                let on_durable = self.receipt_later(conn, receipt);
                self.add_job(job, on_durable);
            }
        }
        Ok(())
    }

    /// A SEND to the scheduler's management topic: handed to the scheduler, whose answer to
    /// it is its receipt.
    pub(super) fn manage(
        &mut self,
        conn: ConnId,
        headers: &[(String, String)],
        receipt: Option<String>,
    ) -> Result<(), Refused> {
        use scheduler::manage::{Action, DESTINATION};
        let mut action = Action::from_headers(headers).map_err(|e| Refused(e.to_string()))?;
        // The session checked the header as written; the topic matches case-insensitively.
        self.authorised(conn, Operation::Write, DESTINATION)?;
        if let Action::Browse { reply_to, .. } = &mut action {
            // The copies go where the client could send them itself, and nowhere else.
            let targets = self.resolve(conn, reply_to)?;
            let [target] = &targets[..] else {
                return Err(Refused(format!(
                    "reply-to {reply_to:?} names {} destinations; BROWSE copies go to one",
                    targets.len()
                )));
            };
            self.authorised(conn, Operation::Write, target)?;
            if names::kind(target) == Kind::Queue {
                self.room_for(conn, target)?;
            }
            *reply_to = target.to_string();
        }
        let Some(link) = &self.scheduler else {
            return Err(Refused(
                "this broker runs without a scheduler: nothing to manage".into(),
            ));
        };
        let done = self.receipt_later(conn, receipt);
        let _ = link
            .commands
            .send(scheduler::task::Command::Manage { action, done });
        Ok(())
    }

    /// Stores a new job where a takeover finds it, and hands it to the scheduler. It counts
    /// against the producers' memory limit until it is in the scheduler's store (the scheduler
    /// releases it), so that producers wait rather than grow a backlog of jobs to move.
    pub(super) fn add_job(&mut self, job: Job, on_durable: Option<OnDurable>) {
        let Some(link) = &self.scheduler else {
            return;
        };
        self.scheduling.add(job.template.footprint());
        self.store.put(
            scheduler::store::NEW.into(),
            Bytes::copy_from_slice(job.id.as_bytes()),
            job.encode(),
            on_durable,
        );
        let _ = link.commands.send(scheduler::task::Command::Add(job));
    }

    /// The scheduler's batch of deliveries, enqueued with its fired marker in one atomic group.
    pub(super) fn fire(
        &mut self,
        batch: u64,
        deliveries: Vec<Message>,
        done: OnDurable,
    ) -> Result<(), Refused> {
        if self.draining {
            return Ok(());
        }
        self.store.begin_group();
        for mut msg in deliveries {
            msg.seq = self.next_seq();
            self.publish(msg, None, false);
        }
        self.store.put(
            scheduler::store::FIRED.into(),
            scheduler::store::batch_key(batch),
            Bytes::new(),
            None,
        );
        self.store.commit_group(Some(done));
        Ok(())
    }
}
