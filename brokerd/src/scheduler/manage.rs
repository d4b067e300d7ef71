//! ActiveMQ's scheduler management over STOMP: a SEND to [`DESTINATION`] whose
//! `AMQ_SCHEDULER_ACTION` says what to do with the pending jobs.
//!
//! - `BROWSE` (needs `reply-to`): a non-persistent copy of every pending job goes to `reply-to`,
//!   as ActiveMQ sends it: the job's headers, its body, `scheduledJobId`, `type:Advisory`, the
//!   `original-destination`, and the scheduling headers the job was sent with;
//! - `REMOVE` with `scheduledJobId`: that job;
//! - `REMOVEALL`: every job.
//!
//! With `ACTION_START_TIME` and `ACTION_END_TIME` (ms since the Unix epoch, both), `BROWSE` and
//! `REMOVEALL` take only the jobs whose next delivery is due within that range (inclusive).
//! ActiveMQ ignores an action it does not know; here it is refused with an ERROR, as is a value
//! that cannot be used.

use super::spec::{ScheduleError, JOB_ID};
use crate::broker::message::header;

/// The management destination (ActiveMQ matches its name as a prefix, ignoring case).
pub const DESTINATION: &str = "/topic/ActiveMQ.Scheduler.Management";
/// The header naming the action.
pub const ACTION: &str = "AMQ_SCHEDULER_ACTION";
/// The start of the time range, ms since the Unix epoch.
pub const START_TIME: &str = "ACTION_START_TIME";
/// The end of the time range, ms since the Unix epoch.
pub const END_TIME: &str = "ACTION_END_TIME";

/// Whether a SEND to `destination` is a management request.
pub fn is_management(destination: &str) -> bool {
    destination
        .get(..DESTINATION.len())
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case(DESTINATION))
}

/// Jobs whose next delivery is due from `.0` to `.1`, inclusive (ms since the Unix epoch).
pub type Range = (u64, u64);

/// What a management SEND asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Copies of the jobs to `reply_to`.
    Browse {
        reply_to: String,
        range: Option<Range>,
    },
    /// One job.
    Remove(String),
    /// Every job, or those due within the range.
    RemoveAll(Option<Range>),
}

impl Action {
    /// Reads a management SEND's headers (first occurrence wins).
    pub fn from_headers(headers: &[(String, String)]) -> Result<Action, ScheduleError> {
        let get = |name: &str| header(headers, name);
        let refuse = |header: &'static str, value: &str, reason: &str| ScheduleError {
            header,
            value: value.into(),
            reason: reason.into(),
        };
        let time = |header: &'static str| -> Result<Option<u64>, ScheduleError> {
            get(header)
                .map(|v| {
                    v.trim()
                        .parse()
                        .map_err(|_| refuse(header, v, "not a time in ms since the Unix epoch"))
                })
                .transpose()
        };
        let range = match (time(START_TIME)?, time(END_TIME)?) {
            (Some(start), Some(end)) => Some((start, end)),
            _ => None,
        };
        match get(ACTION) {
            Some("BROWSE") => match get("reply-to") {
                Some(reply_to) => Ok(Action::Browse {
                    reply_to: reply_to.into(),
                    range,
                }),
                None => Err(refuse(
                    ACTION,
                    "BROWSE",
                    "needs a reply-to header naming where the copies go",
                )),
            },
            Some("REMOVE") => match get(JOB_ID) {
                Some(id) => Ok(Action::Remove(id.into())),
                None => Err(refuse(
                    ACTION,
                    "REMOVE",
                    "needs a scheduledJobId header naming the job",
                )),
            },
            Some("REMOVEALL") => Ok(Action::RemoveAll(range)),
            Some(other) => Err(refuse(
                ACTION,
                other,
                "not one of BROWSE, REMOVE, REMOVEALL",
            )),
            None => Err(refuse(
                ACTION,
                "",
                "missing: a SEND to the scheduler's management topic needs an action",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::message::headers;

    #[test]
    fn actions_are_read_as_activemq_names_them() {
        assert!(is_management("/topic/activemq.scheduler.management"));
        assert!(!is_management("/queue/ActiveMQ.Scheduler"));
        assert_eq!(
            Action::from_headers(&headers(&[
                (ACTION, "BROWSE"),
                ("reply-to", "/queue/r"),
                (START_TIME, "10"),
                (END_TIME, "20"),
            ])),
            Ok(Action::Browse {
                reply_to: "/queue/r".into(),
                range: Some((10, 20))
            })
        );
        assert_eq!(
            Action::from_headers(&headers(&[(ACTION, "REMOVE"), (JOB_ID, "ID:a-1-2")])),
            Ok(Action::Remove("ID:a-1-2".into()))
        );
        assert_eq!(
            Action::from_headers(&headers(&[(ACTION, "REMOVEALL"), (START_TIME, "10")])),
            Ok(Action::RemoveAll(None))
        );
    }

    #[test]
    fn what_cannot_be_done_is_refused_by_name() {
        for (sent, says) in [
            (
                vec![(ACTION, "LIST")],
                "AMQ_SCHEDULER_ACTION \"LIST\": not one of",
            ),
            (vec![(ACTION, "BROWSE")], "needs a reply-to"),
            (vec![(ACTION, "REMOVE")], "needs a scheduledJobId"),
            (
                vec![(ACTION, "REMOVEALL"), (END_TIME, "x")],
                "ACTION_END_TIME \"x\"",
            ),
            (vec![], "missing"),
        ] {
            let err = Action::from_headers(&headers(&sent)).unwrap_err();
            assert!(err.to_string().contains(says), "{err}");
        }
    }
}
