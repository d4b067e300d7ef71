//! `ctl status`: one node's view of itself and of the lock holder; `--watch` shows it again
//! every interval, redrawn in place on a terminal.

use crate::client::Client;
use shared_proto::admin::Status;
use std::fmt::Write;
use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

/// How long a refresh waits for lockd's answer at least.
const ANSWER_WAIT: Duration = Duration::from_secs(2);

/// `ctl status --watch`: the status every `interval` until Ctrl-C (or `count` refreshes, when
/// not 0). On a terminal (and without `--json`) the screen is redrawn in place; otherwise each
/// refresh is printed after the last, a block of text with its time, or a JSON line, so it can
/// be logged or piped. The first connection must succeed (a wrong socket, or a lockd that does
/// not answer, is an error at once);
/// later failures, such as lockd restarting, are shown and retried at the next refresh.
pub async fn watch(
    socket: &Path,
    json: bool,
    interval: Duration,
    count: u64,
) -> anyhow::Result<()> {
    let first = tokio::time::timeout(ANSWER_WAIT, Client::connect(socket)).await;
    let mut connection = Some(first.unwrap_or_else(|_| {
        Err(anyhow::anyhow!(
            "lockd at {} did not answer within {} ms",
            socket.display(),
            ANSWER_WAIT.as_millis()
        ))
    })?);
    let in_place = !json && std::io::stdout().is_terminal();
    let mut screen = Screen::new(in_place);
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shown = 0u64;
    // One handler for the whole watch, so a Ctrl-C during a refresh is not missed.
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = interrupt.recv() => break,
        }
        let now = shared_proto::unix_ms();
        let fetch = async {
            let mut c = match connection.take() {
                Some(c) => c,
                None => Client::connect(socket).await?,
            };
            c.status().await.map(|s| (s, c))
        };
        // A lockd that accepts but never answers is shown as such at the next refresh, and
        // Ctrl-C ends the watch whatever it waits for.
        let wait = interval.max(ANSWER_WAIT);
        let status = tokio::select! {
            status = tokio::time::timeout(wait, fetch) => status.unwrap_or_else(|_| {
                Err(anyhow::anyhow!("lockd did not answer within {} ms", wait.as_millis()))
            }),
            _ = interrupt.recv() => break,
        };
        let frame = match status {
            Ok((status, c)) => {
                connection = Some(c);
                if json {
                    serde_json::to_string(&status)? + "\n"
                } else {
                    render(&status, now)
                }
            }
            Err(e) if json => {
                eprintln!("ctl: {e:#}");
                String::new()
            }
            Err(e) => format!("ctl: {e:#} (retrying every {} ms)\n", interval.as_millis()),
        };
        let header = (!json).then(|| {
            format!(
                "ctl status of {} at {} (every {} ms{})",
                socket.display(),
                format_utc(now),
                interval.as_millis(),
                if in_place { "; Ctrl-C to stop" } else { "" }
            )
        });
        screen.show(header.as_deref(), &frame)?;
        shown += 1;
        if count > 0 && shown >= count {
            break;
        }
    }
    Ok(())
}

/// Where `--watch` shows its refreshes.
struct Screen {
    /// Redraw in place (a terminal): cursor home, each line cleared to its end, the rest of
    /// the screen cleared below the frame.
    in_place: bool,
    /// Whether anything was drawn yet (the first frame clears the screen).
    drawn: bool,
}

impl Screen {
    fn new(in_place: bool) -> Screen {
        Screen {
            in_place,
            drawn: false,
        }
    }

    fn show(&mut self, header: Option<&str>, frame: &str) -> std::io::Result<()> {
        use std::io::Write as _;
        let mut out = String::new();
        if self.in_place {
            // Hide the cursor while watching; clear once, then overwrite line by line, so the
            // screen never flickers blank between two refreshes.
            out.push_str(if self.drawn {
                "\x1b[H"
            } else {
                "\x1b[?25l\x1b[2J\x1b[H"
            });
            for line in header.into_iter().chain(frame.lines()) {
                out.push_str(line);
                out.push_str("\x1b[K\n");
            }
            out.push_str("\x1b[J");
        } else {
            if let Some(header) = header {
                out.push_str(&format!("# {header}\n"));
            }
            out.push_str(frame);
            if header.is_some() {
                out.push('\n');
            }
        }
        self.drawn = true;
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(out.as_bytes())?;
        stdout.flush()
    }
}

impl Drop for Screen {
    /// Gives the terminal its cursor back, however the watch ends (an error included).
    fn drop(&mut self) {
        if self.in_place && self.drawn {
            use std::io::Write as _;
            let mut stdout = std::io::stdout().lock();
            // Nothing more to do for a terminal that is gone.
            let _ = stdout.write_all(b"\x1b[?25h").and_then(|()| stdout.flush());
        }
    }
}

/// The human form of a status report.
pub fn render(status: &Status, now_unix_ms: u64) -> String {
    let mut out = String::new();
    let ago = |t: u64| format_age(now_unix_ms.saturating_sub(t));
    let _ = writeln!(
        out,
        "node      {} (lockd pid {})",
        status.node, status.lockd_pid
    );
    let _ = writeln!(
        out,
        "role      {} since {} ({} ago): {}",
        status.role,
        format_utc(status.since_unix_ms),
        ago(status.since_unix_ms),
        status.reason
    );
    if let Some(epoch) = status.epoch {
        let _ = writeln!(out, "epoch     {epoch}");
    }
    match status.broker_pid {
        Some(pid) if status.listeners.is_empty() => {
            let _ = writeln!(out, "broker    pid {pid}, not serving yet");
        }
        Some(pid) => {
            let _ = writeln!(
                out,
                "broker    pid {pid}, STOMP on {}",
                status.listeners.join(", ")
            );
        }
        None => {
            let _ = writeln!(out, "broker    not running");
        }
    }
    if let Some(stats) = &status.broker {
        let _ = writeln!(
            out,
            "          {} connections ({} since start), {} frames received, store {}, up {}",
            stats.connections,
            stats.connections_total,
            stats.frames_received,
            format_bytes(stats.store_bytes),
            format_age(stats.uptime_ms)
        );
        let _ = writeln!(
            out,
            "          {} destinations in memory, {} messages held ({} in memory), {} consumers",
            stats.destinations,
            stats.messages,
            format_bytes(stats.memory_bytes),
            stats.consumers
        );
    }
    if let Some(confinement) = &status.confinement {
        let _ = writeln!(out, "confinement {confinement}");
    }
    if status.restarts > 0 {
        let _ = writeln!(out, "restarts  {} in the current window", status.restarts);
    }
    match &status.holder {
        Some(h) => {
            let _ = writeln!(
                out,
                "holder    {} on {} (lockd pid {}), epoch {}, {} since {}, heartbeat {} ago",
                h.node,
                h.host,
                h.pid,
                h.epoch,
                h.state,
                format_utc(h.since_unix_ms),
                format_age(h.heartbeat_age_ms)
            );
        }
        None => {
            let _ = writeln!(out, "holder    none yet");
        }
    }
    let _ = writeln!(out, "shared    {}", status.shared_dir);
    if !status.nodes.is_empty() {
        let _ = writeln!(out, "nodes");
        for n in &status.nodes {
            let epoch = n.epoch.map(|e| format!("epoch {e}")).unwrap_or_default();
            let _ = writeln!(
                out,
                "  {:<12} {:<9} {:<10} on {} (lockd pid {}), heartbeat {} ago: {}",
                n.node,
                n.role.to_string(),
                epoch,
                n.host,
                n.lockd_pid,
                format_age(n.heartbeat_age_ms),
                n.reason
            );
        }
    }
    for warning in &status.warnings {
        let _ = writeln!(out, "WARNING   {warning}");
    }
    out
}

/// "850 ms", "12.3 s", "4 min 2 s", "3 h 5 min".
pub fn format_age(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms} ms"),
        1_000..=59_999 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..=3_599_999 => format!("{} min {} s", ms / 60_000, ms % 60_000 / 1000),
        _ => format!("{} h {} min", ms / 3_600_000, ms % 3_600_000 / 60_000),
    }
}

fn format_bytes(bytes: u64) -> String {
    match bytes {
        0..=1023 => format!("{bytes} B"),
        1024..=1_048_575 => format!("{:.1} KiB", bytes as f64 / 1024.0),
        _ => format!("{:.1} MiB", bytes as f64 / 1_048_576.0),
    }
}

/// Unix milliseconds as `YYYY-MM-DDTHH:MM:SSZ` (UTC), without a date library.
pub fn format_utc(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates_are_right_across_leap_years() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(1_795_996_800_000), "2026-11-30T00:00:00Z");
    }

    #[test]
    fn ages_read_naturally() {
        assert_eq!(format_age(850), "850 ms");
        assert_eq!(format_age(12_345), "12.3 s");
        assert_eq!(format_age(242_000), "4 min 2 s");
    }
}
