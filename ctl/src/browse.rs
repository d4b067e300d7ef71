//! `ctl browse QUEUE`: a queue's messages, headers and bodies, without consuming them, through
//! a STOMP browser subscription (`browser:true`), like ActiveMQ's `activemq browse`.

use crate::StompArgs;
use anyhow::Context;
use std::time::Duration;
use stomp_client::AckMode;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    stomp: StompArgs,
    /// The queue, e.g. /queue/orders.
    queue: String,
    /// Messages shown at most (the first ones).
    #[arg(long, default_value_t = 100)]
    count: u64,
    /// Give up when nothing arrived for this long.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
}

/// Prints each browsed message (headers, blank line, body, blank line) on stdout, and how many
/// on stderr.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let client = args.stomp.connect(args.stomp.options()).await?;
    let prefetch = args.count.clamp(1, 1000).to_string();
    let headers = [
        ("browser", "true"),
        ("activemq.prefetchSize", prefetch.as_str()),
    ];
    let mut sub = client
        .subscribe(&args.queue, AckMode::Auto, &headers)
        .await
        .with_context(|| format!("browsing {}", args.queue))?;
    let idle = Duration::from_millis(args.timeout_ms);
    let mut shown = 0u64;
    let mut complete = false;
    let stdout = std::io::stdout();
    while shown < args.count {
        let message = match tokio::time::timeout(idle, sub.next()).await {
            Ok(Some(message)) => message,
            Ok(None) => anyhow::bail!("the client closed: {:?}", client.stats()),
            Err(_) => anyhow::bail!("nothing arrived for {} ms while browsing", args.timeout_ms),
        };
        if message.header("browser") == Some("end") {
            complete = true;
            break;
        }
        shown += 1;
        let mut out = stdout.lock();
        crate::receive::print_message(&mut out, &message)?;
    }
    drop(sub);
    crate::close(client).await?;
    let more = if complete {
        ""
    } else {
        " (the first ones; --count shows more)"
    };
    eprintln!("browsed {shown} messages on {}{more}", args.queue);
    Ok(())
}
