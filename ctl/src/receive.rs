//! `ctl receive`: take messages off a destination through a failover URL, like ActiveMQ's
//! consumer command, printing each one's headers and body (`--quiet`: the summary alone). In
//! client ack modes every message is acked after it is printed, and DISCONNECT waits for its
//! receipt, so acked means processed by the broker.

use crate::{Refused, StompArgs};
use anyhow::Context;
use std::io::Write;
use std::time::{Duration, Instant};
use stomp_client::AckMode;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    stomp: StompArgs,
    /// Destination, e.g. /queue/orders or /topic/prices.
    #[arg(long)]
    dest: String,
    /// Messages to receive; 0 = until --timeout-ms passes without a message.
    #[arg(long, default_value_t = 1)]
    count: u64,
    /// auto, client or client-individual. The default acknowledges each message only once it is
    /// counted, so receiving a few messages takes exactly those off the queue, no more.
    #[arg(long, default_value = "client-individual")]
    ack: AckMode,
    /// Give up when no message arrived for this long.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// Print only the summary, not each message's headers and body.
    #[arg(long)]
    quiet: bool,
    /// Print each message (the default; kept for scripts written when it was not).
    #[arg(long, hide = true, conflicts_with = "quiet")]
    print: bool,
    /// `activemq.prefetchSize` for the subscription (default: --count, at most 1000; 1000 when
    /// --count is 0).
    #[arg(long)]
    prefetch: Option<u32>,
    /// Extra SUBSCRIBE header `name:value` (repeatable), e.g. `selector:...`.
    #[arg(long = "header", value_name = "NAME:VALUE", value_parser = crate::send::parse_header)]
    headers: Vec<(String, String)>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let client = args.stomp.connect(args.stomp.options()).await?;
    // Never ask for more than will be taken: what is prefetched and not acked goes back to the
    // queue flagged redelivered when we leave.
    let prefetch = args
        .prefetch
        .unwrap_or(match args.count {
            0 => 1000,
            n => n.min(1000) as u32,
        })
        .to_string();
    let mut headers = crate::header_refs(&args.headers);
    headers.push(("activemq.prefetchSize", &prefetch));
    let mut sub = client
        .subscribe(&args.dest, args.ack, &headers)
        .await
        .with_context(|| format!("subscribing to {}", args.dest))?;
    let idle = Duration::from_millis(args.timeout_ms);
    let started = Instant::now();
    let mut received = 0u64;
    let mut redelivered = 0u64;
    let stdout = std::io::stdout();
    let progress = crate::progress::bar(
        (args.count > 0).then_some(args.count),
        &format!("receive {}", args.dest),
    );
    while args.count == 0 || received < args.count {
        let message = match tokio::time::timeout(idle, sub.next()).await {
            Ok(Some(message)) => message,
            Ok(None) => anyhow::bail!("the client closed: {:?}", client.stats()),
            Err(_) => break,
        };
        received += 1;
        redelivered += u64::from(message.redelivered());
        if !args.quiet {
            // Above the bar, which is drawn again below it.
            progress.suspend(|| print_message(&mut stdout.lock(), &message))?;
        }
        client.ack(&message).await.context("acking")?;
        progress.inc(1);
    }
    progress.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let stats = client.stats();
    drop(sub);
    crate::close(client).await?;
    let summary = format!(
        "received {received} messages from {} in {secs:.3} s ({:.0} msg/s), {redelivered} redelivered; broker {}, {} reconnects",
        args.dest,
        received as f64 / secs.max(1e-9),
        stats.address.as_deref().unwrap_or("-"),
        stats.reconnects
    );
    if args.quiet {
        println!("{summary}");
    } else {
        eprintln!("{summary}");
    }
    if args.count > 0 && received < args.count {
        return Err(Refused(format!(
            "only {received} of {} messages arrived (nothing for {} ms)",
            args.count, args.timeout_ms
        ))
        .into());
    }
    Ok(())
}

/// One message as ctl prints it: its headers, a blank line, its body, a blank line.
pub fn print_message(out: &mut impl Write, message: &stomp_client::Message) -> std::io::Result<()> {
    for (k, v) in &message.headers {
        writeln!(out, "{k}:{v}")?;
    }
    writeln!(out)?;
    out.write_all(&message.body)?;
    writeln!(out)?;
    writeln!(out)
}
