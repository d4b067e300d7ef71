//! `ctl send`: put messages on a destination through a failover URL, like ActiveMQ's producer
//! command. Every message asks for a RECEIPT (unless `--receipt-window 0`), so the count it
//! prints is what the broker confirmed; across a failover the client resends what was not
//! confirmed, so a message may arrive twice but a confirmed one is never lost.

use crate::{Refused, StompArgs};
use anyhow::{bail, Context};
use std::time::Instant;
use stomp_client::{Bytes, Receipt};
use tokio::sync::mpsc;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    stomp: StompArgs,
    /// Destination, e.g. /queue/orders or /topic/prices.
    #[arg(long)]
    dest: String,
    /// Messages to send.
    #[arg(long, default_value_t = 1)]
    count: u64,
    /// Body of this many bytes (filler text); default: "message N" per message.
    #[arg(long, conflicts_with = "body")]
    size: Option<usize>,
    /// Body text, the same for every message.
    #[arg(long)]
    body: Option<String>,
    /// Add `persistent:true` (the broker stores the message before its receipt).
    #[arg(long)]
    persistent: bool,
    /// SENDs awaiting their RECEIPT at once; 1 = synchronous, 0 = no receipts (the
    /// DISCONNECT receipt then proves the broker read everything).
    #[arg(long, default_value_t = 100)]
    receipt_window: usize,
    /// Extra header `name:value` (repeatable).
    #[arg(long = "header", value_name = "NAME:VALUE", value_parser = parse_header)]
    headers: Vec<(String, String)>,
}

/// `name:value` → (name, value); the value may contain colons.
pub fn parse_header(s: &str) -> Result<(String, String), String> {
    match s.split_once(':') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => Err(format!("expected NAME:VALUE, got {s:?}")),
    }
}

/// Counts what a producer's receipts said.
#[derive(Debug, Default)]
struct Tally {
    receipted: u64,
    failed: u64,
    first_error: Option<String>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut options = args.stomp.options();
    options.receipt_window = args.receipt_window.max(1);
    let client = args.stomp.connect(options).await?;
    let mut headers = crate::header_refs(&args.headers);
    if args.persistent {
        headers.push(("persistent", "true"));
    }
    let fixed: Option<Bytes> = match (&args.body, args.size) {
        (Some(text), _) => Some(Bytes::from(text.clone())),
        (None, Some(size)) => Some(filler(size)),
        (None, None) => None,
    };
    let started = Instant::now();
    let progress = crate::progress::bar(Some(args.count), &format!("send {}", args.dest));
    // Receipts are awaited in order on their own task while sending goes on; the client's
    // window bounds how many are outstanding.
    let (receipts, mut pending) = mpsc::channel::<Receipt>(args.receipt_window.max(1));
    let receipted = progress.clone();
    let collector = tokio::spawn(async move {
        let mut tally = Tally::default();
        while let Some(receipt) = pending.recv().await {
            match receipt.await {
                Ok(()) => {
                    tally.receipted += 1;
                    receipted.inc(1);
                }
                Err(e) => {
                    tally.failed += 1;
                    tally.first_error.get_or_insert_with(|| e.to_string());
                }
            }
        }
        tally
    });
    let mut written = 0u64;
    for i in 0..args.count {
        let body = fixed
            .clone()
            .unwrap_or_else(|| Bytes::from(format!("message {i}")));
        if args.receipt_window == 0 {
            client
                .send_unreceipted(&args.dest, &headers, body)
                .await
                .context("sending")?;
            progress.inc(1);
        } else {
            let receipt = client
                .send(&args.dest, &headers, body)
                .await
                .context("sending")?;
            if receipts.send(receipt).await.is_err() {
                bail!("receipt collector stopped");
            }
        }
        written += 1;
    }
    drop(receipts);
    let mut tally = collector.await.context("receipt collector")?;
    let stats = client.stats();
    crate::close(client).await?;
    progress.finish_and_clear();
    if args.receipt_window == 0 {
        // The DISCONNECT receipt covers every SEND before it.
        tally.receipted = written;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "sent {} messages to {}: {} receipted in {:.3} s ({:.0} msg/s); broker {}, {} reconnects, {} resent",
        written,
        args.dest,
        tally.receipted,
        secs,
        tally.receipted as f64 / secs.max(1e-9),
        stats.address.as_deref().unwrap_or("-"),
        stats.reconnects,
        stats.resent
    );
    if tally.failed > 0 {
        return Err(Refused(format!(
            "{} of {written} messages were not receipted; first error: {}",
            tally.failed,
            tally.first_error.unwrap_or_default()
        ))
        .into());
    }
    Ok(())
}

/// A readable filler body of exactly `size` bytes.
pub fn filler(size: usize) -> Bytes {
    const TEXT: &[u8] = b"ctl bench filler 0123456789 abcdefghijklmnopqrstuvwxyz ";
    Bytes::from(TEXT.iter().copied().cycle().take(size).collect::<Vec<u8>>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_split_at_the_first_colon() {
        assert_eq!(
            parse_header("reply-to:/queue/a:b").unwrap(),
            ("reply-to".to_string(), "/queue/a:b".to_string())
        );
        assert!(parse_header("novalue").is_err());
        assert!(parse_header(":x").is_err());
    }

    #[test]
    fn filler_has_the_exact_size() {
        assert_eq!(filler(0).len(), 0);
        assert_eq!(filler(1024).len(), 1024);
    }
}
