//! The scheduling headers of a SEND, read as ActiveMQ reads them and checked.
//!
//! ActiveMQ's meaning (its `SchedulerBroker` and `JobSchedulerImpl`): a SEND with any of
//! `AMQ_SCHEDULED_DELAY`, `AMQ_SCHEDULED_PERIOD` or `AMQ_SCHEDULED_CRON` is a job, not a message
//! (`AMQ_SCHEDULED_REPEAT` alone is not). A job delivers a *series*: the first delivery at its
//! start plus the delay (or, without a delay, plus the period), then `repeat` more, one period
//! apart. Without a cron expression the series starts when the SEND arrives; with one, each time
//! the expression matches starts a series.

use super::cron::{Cron, CronError};
use crate::broker::message::header;

/// ms before the first delivery.
pub const DELAY: &str = "AMQ_SCHEDULED_DELAY";
/// ms between deliveries of a series.
pub const PERIOD: &str = "AMQ_SCHEDULED_PERIOD";
/// Deliveries after the first, per series.
pub const REPEAT: &str = "AMQ_SCHEDULED_REPEAT";
/// A five-field cron expression: each match starts a series.
pub const CRON: &str = "AMQ_SCHEDULED_CRON";
/// Every scheduling header: none of them is passed on to the delivered message, so that it
/// does not schedule itself again.
pub const HEADERS: [&str; 4] = [DELAY, PERIOD, REPEAT, CRON];

/// The header a delivered message carries: the job that delivered it.
pub const JOB_ID: &str = "scheduledJobId";

/// What a scheduled SEND asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub delay_ms: u64,
    pub period_ms: u64,
    /// Deliveries after the first, in each series.
    pub repeat: u32,
    pub cron: Option<Cron>,
}

/// A scheduling header whose value cannot be used; the ERROR frame's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{header} {value:?}: {reason}")]
pub struct ScheduleError {
    pub header: &'static str,
    pub value: String,
    pub reason: String,
}

impl Schedule {
    /// Reads the scheduling headers of a SEND (first occurrence wins, as STOMP says); `None`
    /// when it is an ordinary message.
    pub fn from_headers(headers: &[(String, String)]) -> Result<Option<Schedule>, ScheduleError> {
        let get = |name: &str| header(headers, name);
        let (delay, period, cron) = (get(DELAY), get(PERIOD), get(CRON));
        if delay.is_none() && period.is_none() && cron.is_none() {
            return Ok(None);
        }
        let cron = match cron {
            None => None,
            Some(text) => Some(Cron::parse(text).map_err(|e: CronError| ScheduleError {
                header: CRON,
                value: text.into(),
                reason: e.to_string(),
            })?),
        };
        Ok(Some(Schedule {
            delay_ms: millis(DELAY, delay)?,
            period_ms: millis(PERIOD, period)?,
            repeat: match get(REPEAT) {
                None => 0,
                Some(value) => value.trim().parse().map_err(|_| ScheduleError {
                    header: REPEAT,
                    value: value.into(),
                    reason: "not a whole number of repeats from 0 to 4294967295".into(),
                })?,
            },
            cron,
        }))
    }

    /// When the delivery `index` (0 for the first) of a series that started at `start` is due,
    /// in ms since the Unix epoch.
    pub fn due(&self, start: u64, index: u32) -> u64 {
        let first = if self.delay_ms > 0 {
            self.delay_ms
        } else {
            self.period_ms
        };
        start
            .saturating_add(first)
            .saturating_add(self.period_ms.saturating_mul(u64::from(index)))
    }

    /// Whether the job delivers once and is done (no repeat, no cron): its one delivery keeps
    /// the SEND's message-id, as ActiveMQ's does.
    pub fn single(&self) -> bool {
        self.repeat == 0 && self.cron.is_none()
    }
}

/// A header in ms: absent is 0; negative or not a number is an error.
fn millis(header: &'static str, value: Option<&str>) -> Result<u64, ScheduleError> {
    let Some(value) = value else {
        return Ok(0);
    };
    value.trim().parse().map_err(|_| ScheduleError {
        header,
        value: value.into(),
        reason: "not a whole number of milliseconds from 0 up".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::message::headers;

    #[test]
    fn an_ordinary_message_has_no_schedule_and_repeat_alone_makes_none() {
        assert_eq!(Schedule::from_headers(&headers(&[("x", "1")])), Ok(None));
        assert_eq!(Schedule::from_headers(&headers(&[(REPEAT, "3")])), Ok(None));
    }

    #[test]
    fn a_series_starts_after_the_delay_or_else_one_period() {
        let s = Schedule::from_headers(&headers(&[(DELAY, "2000")]))
            .unwrap()
            .unwrap();
        assert!(s.single());
        assert_eq!(s.due(1_000, 0), 3_000);
        let s = Schedule::from_headers(&headers(&[(PERIOD, "300"), (REPEAT, "10")]))
            .unwrap()
            .unwrap();
        assert!(!s.single());
        assert_eq!((s.due(0, 0), s.due(0, 10)), (300, 3_300));
        let s = Schedule::from_headers(&headers(&[(DELAY, "50"), (PERIOD, "300"), (REPEAT, "2")]))
            .unwrap()
            .unwrap();
        assert_eq!((s.due(0, 0), s.due(0, 1), s.due(0, 2)), (50, 350, 650));
    }

    #[test]
    fn each_bad_value_is_refused_naming_the_header_and_the_value() {
        for (header, value) in [
            (DELAY, "-1"),
            (DELAY, "soon"),
            (PERIOD, "1.5"),
            (PERIOD, "-300"),
            (REPEAT, "-1"),
            (REPEAT, "many"),
            (CRON, "* * *"),
        ] {
            let mut sent = vec![(header, value)];
            if header == REPEAT {
                sent.push((PERIOD, "100"));
            }
            let err = Schedule::from_headers(&headers(&sent)).unwrap_err();
            assert_eq!(err.header, header);
            assert!(
                err.to_string()
                    .starts_with(&format!("{header} {value:?}: ")),
                "{err}"
            );
        }
    }
}
