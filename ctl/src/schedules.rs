//! `ctl schedules`: the active node's pending scheduled jobs, and cancelling them.
//!
//! Only the active node's broker holds the scheduler; a passive node answers with the active
//! node's name, which is printed as is. Listing is allowed to whoever may read status;
//! cancelling needs an admin, like `failover`.

use crate::client::Client;
use crate::status::format_utc;
use crate::Refused;
use anyhow::bail;
use shared_proto::admin::{Request, Response};
use shared_proto::schedules::{Cancel, Cut, Listing};
use std::fmt::Write;

/// `ctl schedules` and its subcommand.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    action: Option<Action>,
    /// One JSON document (a stable interface for scripts): {"node", "jobs", "cut"}.
    #[arg(long)]
    json: bool,
    /// Jobs listed at most, the next due first. A reply is also bounded to one 64 KiB protocol
    /// line; either cut is said in the output.
    #[arg(long, default_value_t = 1000)]
    limit: u32,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Cancel one pending job by its id (its scheduledJobId), or every one (--all). Admins only.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["id", "all"])))]
    Cancel {
        /// The job's id, as `ctl schedules` lists it.
        id: Option<String>,
        /// Cancel every pending job.
        #[arg(long)]
        all: bool,
    },
}

/// What `ctl schedules --json` prints: the node that answered, then the listing's fields.
#[derive(serde::Serialize)]
struct Document<'a> {
    node: &'a str,
    #[serde(flatten)]
    listing: &'a Listing,
}

/// Runs `ctl schedules ...` against the node at `client`.
pub async fn run(mut client: Client, args: Args) -> anyhow::Result<()> {
    match args.action {
        None => {
            let listing = match client.ask(Request::Schedules { limit: args.limit }).await? {
                Response::Schedules { listing } => listing,
                other => bail!("unexpected answer to schedules: {other:?}"),
            };
            if args.json {
                let document = Document {
                    node: &client.node,
                    listing: &listing,
                };
                println!("{}", serde_json::to_string(&document)?);
            } else {
                print!("{}", render(&listing, args.limit, shared_proto::unix_ms()));
            }
            Ok(())
        }
        Some(Action::Cancel { id, all: _ }) => {
            // The argument group makes ID and --all exclusive, and one of them required.
            let which = match id {
                Some(id) => Cancel::Job { id },
                None => Cancel::All,
            };
            let one = match &which {
                Cancel::Job { id } => Some(id.clone()),
                Cancel::All => None,
            };
            match client.ask(Request::CancelSchedules { which }).await? {
                Response::SchedulesCancelled { removed } => {
                    println!("{}: cancelled {removed} scheduled job(s)", client.node);
                    match one {
                        Some(id) if removed == 0 => Err(Refused(format!(
                            "no pending job has id {id:?} (it was delivered for the last time, \
                             or cancelled already): see `ctl schedules`"
                        ))
                        .into()),
                        _ => Ok(()),
                    }
                }
                other => bail!("unexpected answer to schedules cancel: {other:?}"),
            }
        }
    }
}

/// The human form: one row per job, then a line saying whether and why the list was cut.
fn render(listing: &Listing, limit: u32, now_unix_ms: u64) -> String {
    let mut out = String::new();
    if listing.jobs.is_empty() {
        out.push_str("no pending scheduled jobs\n");
        return out;
    }
    let rows: Vec<[String; 5]> = listing
        .jobs
        .iter()
        .map(|job| {
            [
                job.id.clone(),
                job.destination.clone(),
                format!(
                    "{} ({})",
                    format_utc(job.next_due_unix_ms),
                    format_until(job.next_due_unix_ms, now_unix_ms)
                ),
                job.remaining.to_string(),
                job.cron.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let header = ["ID", "DESTINATION", "NEXT DUE (UTC)", "REMAINING", "CRON"];
    out.push_str(&crate::table::render(header, &rows));
    let shown = listing.jobs.len();
    match listing.cut {
        None => {}
        Some(Cut::Limit) => {
            let _ = writeln!(
                out,
                "(the first {shown} jobs only: more are pending; --limit {} shows more)",
                limit.saturating_mul(2)
            );
        }
        Some(Cut::LineLength) => {
            let _ = writeln!(
                out,
                "(the first {shown} jobs only: the reply is bounded to one 64 KiB protocol line, \
                 and more are pending)"
            );
        }
    }
    out
}

/// "in 5m 3s", "in 2h 0m", "in 3d 4h", or "overdue 2s" for a due time already past (the
/// delivery is being made, or waits for a broker catching up).
fn format_until(due_unix_ms: u64, now_unix_ms: u64) -> String {
    let (word, ms) = if due_unix_ms >= now_unix_ms {
        ("in", due_unix_ms - now_unix_ms)
    } else {
        ("overdue", now_unix_ms - due_unix_ms)
    };
    let secs = ms / 1000;
    let span = match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m {}s", secs / 60, secs % 60),
        3600..=86_399 => format!("{}h {}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d {}h", secs / 86_400, secs % 86_400 / 3600),
    };
    format!("{word} {span}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_proto::schedules::ScheduledJob;

    #[test]
    fn due_times_read_as_a_countdown() {
        assert_eq!(format_until(303_000, 0), "in 5m 3s");
        assert_eq!(format_until(7_260_000, 0), "in 2h 1m");
        assert_eq!(format_until(1_000, 3_500), "overdue 2s");
        assert_eq!(format_until(90_000_000, 0), "in 1d 1h");
    }

    #[test]
    fn a_table_row_per_job_and_the_cut_is_said() {
        let listing = Listing {
            jobs: vec![
                ScheduledJob {
                    id: "ID:n1-2-1:1:1:1:1".into(),
                    destination: "/queue/a".into(),
                    next_due_unix_ms: 303_000,
                    remaining: 0,
                    cron: None,
                },
                ScheduledJob {
                    id: "ID:n1-2-1:1:1:1:2".into(),
                    destination: "/topic/b".into(),
                    next_due_unix_ms: 60_000,
                    remaining: 4,
                    cron: Some("*/5 * * * *".into()),
                },
            ],
            cut: Some(Cut::Limit),
        };
        let out = render(&listing, 2, 0);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "ID                 DESTINATION  NEXT DUE (UTC)                   REMAINING  CRON"
        );
        assert_eq!(
            lines[1],
            "ID:n1-2-1:1:1:1:1  /queue/a     1970-01-01T00:05:03Z (in 5m 3s)  0          -"
        );
        assert!(lines[2].ends_with("4          */5 * * * *"), "{}", lines[2]);
        assert!(lines[3].contains("more are pending; --limit 4"), "{out}");
    }
}
