//! A job: what a scheduled SEND asked for, the message each delivery copies, and where its
//! series stands. Its encoding is the record in both stores.

use super::cron::Cron;
use super::spec::Schedule;
use crate::broker::message::{get_str, put_str, Message};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::sync::Arc;

/// Where a job's next delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Occurrence {
    /// Deliveries the job made before this one, over all its series: names this delivery (its
    /// message-id and its fired marker), so that it is enqueued once however often it is fired.
    pub n: u64,
    /// When the series it belongs to started (ms since the Unix epoch).
    pub series: u64,
    /// Its place in the series: 0 for the first delivery.
    pub index: u32,
    /// When it is due (ms since the Unix epoch).
    pub due: u64,
}

/// A scheduled SEND.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The SEND's message-id: the job's `scheduledJobId` and its key in both stores.
    pub id: Arc<str>,
    pub schedule: Schedule,
    /// What every delivery carries: the SEND's destination, headers (without the scheduling
    /// ones), body, persistence, priority and expiry.
    pub template: Message,
    /// When the SEND arrived (a transaction's: its COMMIT), ms since the Unix epoch: an expiry
    /// counts from it, and is moved with each delivery (see [`Job::delivery`]).
    pub sent_ms: u64,
    /// The next delivery.
    pub next: Occurrence,
}

/// The key that orders jobs by due time: (due, id).
pub type DueKey = (u64, Arc<str>);

impl Job {
    /// A job for a SEND received at `now`; `None` when its cron expression never matches.
    pub fn new(template: Message, schedule: Schedule, now: u64) -> Option<Job> {
        let series = match &schedule.cron {
            Some(cron) => cron.next_after(now)?,
            None => now,
        };
        Some(Job {
            id: Arc::clone(&template.id),
            sent_ms: now,
            next: Occurrence {
                n: 0,
                series,
                index: 0,
                due: schedule.due(series, 0),
            },
            schedule,
            template,
        })
    }

    /// The same job sent at `now` instead (a transaction's, at its COMMIT).
    pub fn restarted(self, now: u64) -> Option<Job> {
        Job::new(self.template, self.schedule, now)
    }

    /// Its place in the due-time order.
    pub fn due_key(&self) -> DueKey {
        (self.next.due, Arc::clone(&self.id))
    }

    /// The delivery after [`Job::next`], once that one was delivered at `now`; `None` when the
    /// job is done. Cron matches missed while no broker ran are not made up one by one (nor are
    /// they in ActiveMQ): the next series starts at the first match after `now`. Repeats within
    /// a series are all made, so that a series keeps its count across failovers.
    pub fn after(&self, now: u64) -> Option<Occurrence> {
        let o = self.next;
        if o.index < self.schedule.repeat {
            return Some(Occurrence {
                n: o.n + 1,
                series: o.series,
                index: o.index + 1,
                due: self.schedule.due(o.series, o.index + 1),
            });
        }
        let series = self.schedule.cron.as_ref()?.next_after(o.series.max(now))?;
        Some(Occurrence {
            n: o.n + 1,
            series,
            index: 0,
            due: self.schedule.due(series, 0),
        })
    }

    /// The delivery `n`, made at `now`, as a message (its seq is the broker's to give). A job
    /// that delivers once keeps the SEND's message-id, as ActiveMQ's does; the deliveries of a
    /// repeating or cron job are `<job id>:<n>`, the same whichever broker enqueues them. An
    /// `expires` keeps its time to live from the delivery on (ActiveMQ's rule), so that a
    /// message scheduled past its expiry is not dropped the moment it is delivered.
    pub fn delivery(&self, n: u64, redelivered: bool, now: u64) -> Message {
        let mut msg = self.template.clone();
        if msg.expires != 0 {
            let ttl = msg.expires.saturating_sub(self.sent_ms);
            msg.expires = msg.expires.max(now.saturating_add(ttl));
        }
        if !self.schedule.single() {
            msg.id = format!("{}:{n}", self.id).into();
        }
        msg.headers
            .push((super::spec::JOB_ID.to_owned(), self.id.to_string()));
        msg.redeliveries = u32::from(redelivered);
        msg
    }

    /// A copy for ActiveMQ's BROWSE (the broker gives it an id and a seq): non-persistent,
    /// to `reply_to`, with the job's headers, the scheduling headers it was sent with, its
    /// `scheduledJobId`, `type:Advisory` and the `original-destination`.
    pub fn browse_copy(&self, reply_to: &str) -> Message {
        let mut msg = self.template.clone();
        msg.destination = reply_to.into();
        msg.persistent = false;
        let s = &self.schedule;
        let mut add = |name: &str, value: String| msg.headers.push((name.to_owned(), value));
        add(super::spec::JOB_ID, self.id.to_string());
        add("type", "Advisory".into());
        add(
            "original-destination",
            self.template.destination.to_string(),
        );
        if s.delay_ms > 0 {
            add(super::spec::DELAY, s.delay_ms.to_string());
        }
        if s.period_ms > 0 {
            add(super::spec::PERIOD, s.period_ms.to_string());
        }
        if s.repeat > 0 {
            add(super::spec::REPEAT, s.repeat.to_string());
        }
        if let Some(cron) = &s.cron {
            add(super::spec::CRON, cron.to_string());
        }
        msg
    }

    /// The stores' encoding: a version byte, the schedule, the next delivery, the template.
    pub fn encode(&self) -> Bytes {
        let template = self.template.encode();
        let mut out = BytesMut::with_capacity(template.len() + 64);
        out.put_u8(1);
        out.put_u64(self.schedule.delay_ms);
        out.put_u64(self.schedule.period_ms);
        out.put_u32(self.schedule.repeat);
        let cron = self
            .schedule
            .cron
            .as_ref()
            .map(Cron::to_string)
            .unwrap_or_default();
        put_str(&mut out, &cron);
        out.put_u64(self.next.n);
        out.put_u64(self.next.series);
        out.put_u32(self.next.index);
        out.put_u64(self.next.due);
        out.put_u64(self.sent_ms);
        out.put_slice(&template);
        out.freeze()
    }

    /// Reads [`Job::encode`]'s output; `None` if it is not a job of this version.
    pub fn decode(mut buf: &[u8]) -> Option<Job> {
        if buf.remaining() < 1 + 8 + 8 + 4 || buf.get_u8() != 1 {
            return None;
        }
        let (delay_ms, period_ms, repeat) = (buf.get_u64(), buf.get_u64(), buf.get_u32());
        let cron = match get_str(&mut buf)? {
            text if text.is_empty() => None,
            text => Some(Cron::parse(&text).ok()?),
        };
        if buf.remaining() < 8 + 8 + 4 + 8 + 8 {
            return None;
        }
        let next = Occurrence {
            n: buf.get_u64(),
            series: buf.get_u64(),
            index: buf.get_u32(),
            due: buf.get_u64(),
        };
        let sent_ms = buf.get_u64();
        let template = Message::decode(buf)?;
        Some(Job {
            id: Arc::clone(&template.id),
            schedule: Schedule {
                delay_ms,
                period_ms,
                repeat,
                cron,
            },
            template,
            sent_ms,
            next,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(schedule: Schedule) -> Job {
        let template = Message {
            id: "ID:n1-2-3".into(),
            seq: 0,
            destination: "/queue/q".into(),
            headers: vec![("k".into(), "v".into())],
            body: Bytes::from_static(b"body"),
            persistent: true,
            priority: 4,
            expires: 0,
            redeliveries: 0,
            timestamp: 0,
            sized: true,
            from: 0,
        };
        Job::new(template, schedule, 10_000).unwrap()
    }

    fn schedule(delay_ms: u64, period_ms: u64, repeat: u32) -> Schedule {
        Schedule {
            delay_ms,
            period_ms,
            repeat,
            cron: None,
        }
    }

    #[test]
    fn a_series_delivers_repeat_plus_one_times_then_ends() {
        let mut job = job(schedule(0, 300, 10));
        let mut dues = vec![job.next.due];
        while let Some(next) = job.after(job.next.due) {
            job.next = next;
            dues.push(next.due);
        }
        assert_eq!(dues.len(), 11);
        assert_eq!(dues[0], 10_300);
        assert_eq!(dues[10], 13_300);
        assert_eq!(job.next.n, 10);
    }

    #[test]
    fn deliveries_of_a_repeating_job_have_their_own_ids_and_name_the_job() {
        let once = job(schedule(2000, 0, 0));
        assert_eq!(once.next.due, 12_000);
        assert_eq!(&*once.delivery(0, false, 12_000).id, "ID:n1-2-3");
        let repeating = job(schedule(0, 100, 2));
        let delivery = repeating.delivery(2, true, 10_300);
        assert_eq!(&*delivery.id, "ID:n1-2-3:2");
        assert_eq!(delivery.redeliveries, 1);
        assert!(delivery
            .headers
            .contains(&("scheduledJobId".into(), "ID:n1-2-3".into())));
    }

    #[test]
    fn an_expiry_keeps_its_time_to_live_from_the_delivery_on() {
        let mut j = job(schedule(60_000, 0, 0));
        // Sent at 10 s to expire at 15 s: a 5 s time to live, counted from the delivery.
        j.template.expires = 15_000;
        assert_eq!(j.delivery(0, false, 70_000).expires, 75_000);
        j.template.expires = 0;
        assert_eq!(j.delivery(0, false, 70_000).expires, 0);
    }

    #[test]
    fn a_cron_job_starts_a_series_at_each_match_and_never_ends() {
        let mut job = job(Schedule {
            cron: Some(Cron::parse("* * * * *").unwrap()),
            ..schedule(1000, 100, 1)
        });
        // The next whole minute after 10 s, plus the delay; then one repeat a period later.
        assert_eq!(job.next.due, 61_000);
        job.next = job.after(61_000).unwrap();
        assert_eq!((job.next.index, job.next.due), (1, 61_100));
        job.next = job.after(61_100).unwrap();
        assert_eq!((job.next.index, job.next.due, job.next.n), (0, 121_000, 2));
        // Missed matches are not made up: the next series starts after `now`.
        job.next = job.after(1_000_000).unwrap();
        assert_eq!(job.next.index, 1);
        job.next = job.after(1_000_000).unwrap();
        assert_eq!(job.next.series, 1_020_000);
    }

    #[test]
    fn jobs_round_trip_through_the_stores_encoding() {
        let mut j = job(Schedule {
            cron: Some(Cron::parse("*/5 * * * *").unwrap()),
            ..schedule(1, 2, 3)
        });
        j.next.n = 7;
        assert_eq!(Job::decode(&j.encode()), Some(j.clone()));
        let encoded = j.encode();
        assert_eq!(Job::decode(&encoded[..encoded.len() - 1]), None);
        assert_eq!(Job::decode(b"\x02"), None);
    }
}
