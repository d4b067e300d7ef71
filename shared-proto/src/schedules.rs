//! Pending scheduled jobs as `ctl schedules` shows them, and what it may cancel: the one shape
//! both protocols carry (brokerd -> lockd -> ctl).
//!
//! A listing must fit one protocol line ([`crate::wire::MAX_LINE`]), so it is cut to
//! [`LISTING_BUDGET`] bytes however many jobs were asked for, and says that (and why) it was
//! cut, never silently.

use serde::{Deserialize, Serialize};

/// Bytes a listing's jobs may take on the wire: a line's limit less room for the message around
/// them (its type, id and `cut`, which take well under a hundred bytes).
pub const LISTING_BUDGET: usize = crate::wire::MAX_LINE - 1024;

/// Most jobs one listing asks the scheduler for, whatever the limit given: past a few hundred the
/// line budget cuts them anyway, and reading more would only cost the broker.
pub const MAX_LIMIT: u32 = 10_000;

/// One pending job. Field names are a stable interface for scripts (`ctl schedules --json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduledJob {
    /// The `scheduledJobId` its deliveries carry, and what `ctl schedules cancel` takes.
    pub id: String,
    pub destination: String,
    /// When its next delivery is due, in Unix milliseconds.
    pub next_due_unix_ms: u64,
    /// Deliveries left in the current series after the next one.
    pub remaining: u32,
    /// Its `AMQ_SCHEDULED_CRON` expression, if it has one.
    pub cron: Option<String>,
}

/// Why a listing holds fewer jobs than are pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cut {
    /// More jobs are pending than the limit asked for.
    Limit,
    /// The jobs asked for did not fit one protocol line ([`LISTING_BUDGET`]).
    LineLength,
}

/// Pending jobs in due order, the first ones only when `cut` says so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listing {
    pub jobs: Vec<ScheduledJob>,
    /// Present when more jobs are pending than `jobs` holds.
    pub cut: Option<Cut>,
}

impl Listing {
    /// The first of `jobs` (in due order) that fit [`LISTING_BUDGET`]; `more` says whether
    /// further jobs are pending beyond them.
    pub fn fit(jobs: Vec<ScheduledJob>, more: bool) -> Listing {
        let mut used = 0;
        let mut fitting = Vec::with_capacity(jobs.len());
        let total = jobs.len();
        for job in jobs {
            // Its JSON form plus the comma between two of them.
            let size = serde_json::to_vec(&job).map_or(usize::MAX, |json| json.len() + 1);
            if used + size > LISTING_BUDGET {
                break;
            }
            used += size;
            fitting.push(job);
        }
        let cut = if fitting.len() < total {
            Some(Cut::LineLength)
        } else if more {
            Some(Cut::Limit)
        } else {
            None
        };
        Listing { jobs: fitting, cut }
    }
}

/// Which jobs to cancel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "which", rename_all = "snake_case", deny_unknown_fields)]
pub enum Cancel {
    /// The job with this id (its `scheduledJobId`).
    Job { id: String },
    /// Every pending job.
    All,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{decode, encode, MAX_LINE};

    fn job(n: usize, destination: &str) -> ScheduledJob {
        ScheduledJob {
            id: format!("ID:node1-3-1:1:1:1:{n}"),
            destination: destination.into(),
            next_due_unix_ms: 1_800_000_000_000 + n as u64,
            remaining: 10,
            cron: Some("*/5 * * * *".into()),
        }
    }

    #[test]
    fn a_listing_that_fits_is_whole_or_cut_at_the_limit() {
        let jobs: Vec<_> = (0..3).map(|n| job(n, "/queue/a")).collect();
        assert_eq!(Listing::fit(jobs.clone(), false).cut, None);
        let cut = Listing::fit(jobs.clone(), true);
        assert_eq!((cut.jobs, cut.cut), (jobs, Some(Cut::Limit)));
    }

    /// A thousand jobs with long destinations do not fit a line: the listing keeps the first
    /// ones, says it was cut, and still travels inside a protocol message.
    #[test]
    fn a_listing_too_long_for_a_line_is_cut_and_says_so() {
        let long = format!("/queue/{}", "d".repeat(1000));
        let jobs: Vec<_> = (0..1000).map(|n| job(n, &long)).collect();
        let listing = Listing::fit(jobs.clone(), false);
        assert_eq!(listing.cut, Some(Cut::LineLength));
        assert!(!listing.jobs.is_empty() && listing.jobs.len() < 100);
        assert_eq!(listing.jobs[..], jobs[..listing.jobs.len()]);
        let message = crate::control::FromBroker::Schedules {
            id: u64::MAX,
            listing: listing.clone(),
        };
        let line = encode(&message);
        assert!(line.len() <= MAX_LINE, "{} bytes", line.len());
        assert_eq!(
            decode::<crate::control::FromBroker>(&line[..line.len() - 1]).unwrap(),
            message
        );
    }

    #[test]
    fn cancel_names_its_target() {
        let one = Cancel::Job { id: "ID:x".into() };
        assert_eq!(
            serde_json::to_string(&one).unwrap(),
            r#"{"which":"job","id":"ID:x"}"#
        );
        assert_eq!(
            serde_json::to_string(&Cancel::All).unwrap(),
            r#"{"which":"all"}"#
        );
    }
}
