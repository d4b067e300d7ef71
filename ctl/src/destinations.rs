//! `ctl destinations`, `ctl purge`, `ctl delete`: the active node's queues and topics with their
//! figures (like ActiveMQ's `activemq dstat`), and removing what operators no longer want.
//!
//! Only the active node's broker has destinations; a passive node answers with the active
//! node's name, which is printed as is. Listing is allowed to whoever may read status; purging
//! and deleting need an admin, like `failover`.

use crate::client::Client;
use crate::Refused;
use anyhow::bail;
use shared_proto::admin::{Request, Response};
use shared_proto::destinations::{DestinationAnswer, DestinationCall, Kind, Listing};

/// What `ctl destinations --json` prints: the node that answered, then the listing's fields.
#[derive(serde::Serialize)]
struct Document<'a> {
    node: &'a str,
    #[serde(flatten)]
    listing: &'a Listing,
}

/// Makes `call` on the node at `client`; a refusal becomes a [`Refused`] (exit 1).
async fn call(client: &mut Client, call: DestinationCall) -> anyhow::Result<DestinationAnswer> {
    match client.ask(Request::Destinations { call }).await? {
        Response::Destinations {
            answer: DestinationAnswer::Refused { message },
        } => Err(Refused(format!("{}: {message}", client.node)).into()),
        Response::Destinations { answer } => Ok(answer),
        other => bail!("unexpected answer to a destination call: {other:?}"),
    }
}

/// `ctl destinations [--json]`.
pub async fn list(mut client: Client, json: bool) -> anyhow::Result<()> {
    let DestinationAnswer::Listed(listing) = call(&mut client, DestinationCall::List).await? else {
        bail!("unexpected answer to destinations");
    };
    if json {
        let document = Document {
            node: &client.node,
            listing: &listing,
        };
        println!("{}", serde_json::to_string(&document)?);
    } else {
        print!("{}", render(&listing));
    }
    Ok(())
}

/// `ctl purge QUEUE`.
pub async fn purge(mut client: Client, queue: String) -> anyhow::Result<()> {
    match call(
        &mut client,
        DestinationCall::Purge {
            queue: queue.clone(),
        },
    )
    .await?
    {
        DestinationAnswer::Purged { removed } => {
            println!("{}: purged {removed} message(s) from {queue}", client.node);
            Ok(())
        }
        other => bail!("unexpected answer to purge: {other:?}"),
    }
}

/// `ctl delete DESTINATION`.
pub async fn delete(mut client: Client, destination: String) -> anyhow::Result<()> {
    let call_ = DestinationCall::Delete {
        destination: destination.clone(),
    };
    match call(&mut client, call_).await? {
        DestinationAnswer::Deleted { removed } => {
            println!(
                "{}: deleted {destination} and its {removed} message(s)",
                client.node
            );
            Ok(())
        }
        other => bail!("unexpected answer to delete: {other:?}"),
    }
}

/// The human form: one row per destination, then a line if the list was cut.
fn render(listing: &Listing) -> String {
    if listing.destinations.is_empty() {
        return "no destinations\n".into();
    }
    let rows: Vec<[String; 8]> = (listing.destinations.iter())
        .map(|d| {
            [
                d.name.clone(),
                match d.kind {
                    Kind::Queue => "queue".into(),
                    Kind::Topic => "topic".into(),
                },
                d.depth.to_string(),
                d.consumers.to_string(),
                d.enqueued.to_string(),
                d.dequeued.to_string(),
                d.oldest_age_ms
                    .map_or_else(|| "-".into(), |ms| format!("{:.1}s", ms as f64 / 1000.0)),
                d.paged_out.to_string(),
            ]
        })
        .collect();
    let header = [
        "NAME",
        "TYPE",
        "DEPTH",
        "CONSUMERS",
        "ENQUEUED",
        "DEQUEUED",
        "OLDEST",
        "PAGED-OUT",
    ];
    let mut out = crate::table::render(header, &rows);
    if listing.cut {
        out.push_str(&format!(
            "(the first {} destinations only: the reply is bounded to one 64 KiB protocol line; \
             --json gives the same)\n",
            listing.destinations.len()
        ));
    }
    out
}
