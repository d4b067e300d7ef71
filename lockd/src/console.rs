//! The web console's address while this node does not serve it: a small page naming the active
//! node (from `holder.json`) and every node's role (from `nodes/`), the same for any path, so a
//! browser or a load balancer pointed at a passive node learns where to go.
//!
//! The active node's brokerd serves the real console on `console_listen`, so the listener here
//! exists only while no broker of ours may: the state machine owns it ([`Console`]), closes it
//! synchronously before it starts brokerd (which must be able to bind the address) and opens it
//! again once the broker is gone and the lock released (DESIGN invariant 5 is about client ports;
//! this page carries no broker function and reveals only what `ctl status` shows anyone).

use crate::http::{self, Handler, Reply};
use crate::metrics::Snapshot;
use shared_proto::holder::{Holder, HolderState};
use shared_proto::html::escape;
use shared_proto::nodes::NodeRecord;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

/// How often the page asks the browser to load it again.
const REFRESH_SECS: u32 = 2;

/// After a failed bind (the port still taken), the next try waits this long.
const BIND_RETRY: Duration = Duration::from_secs(1);

/// What the page is rendered from, all of it published by others (never waited on).
#[derive(Clone)]
pub struct Page {
    /// This node's name.
    pub node: String,
    /// The state machine's last snapshot (this node's role and epoch).
    pub snapshot: watch::Receiver<Snapshot>,
    /// `holder.json` as the keeper last read it.
    pub holder: watch::Receiver<Option<Holder>>,
    /// `nodes/` as the roster last read it.
    pub nodes: watch::Receiver<Vec<NodeRecord>>,
}

impl Page {
    /// The handler: the page for any path, 503 (this node does not serve the console).
    pub fn handler(self) -> Handler {
        Arc::new(move |_path| {
            let snapshot = self.snapshot.borrow().clone();
            let holder = self.holder.borrow().clone();
            let nodes = self.nodes.borrow().clone();
            Reply {
                status: 503,
                content_type: "text/html; charset=utf-8",
                body: render(
                    &self.node,
                    &snapshot,
                    holder.as_ref(),
                    &nodes,
                    shared_proto::unix_ms(),
                ),
            }
        })
    }
}

/// The console listener while passive, owned by the state machine so that closing it is
/// immediate (the descriptor is closed when [`Console::close`] returns).
pub struct Console {
    addr: SocketAddr,
    listener: Option<TcpListener>,
    handler: Handler,
    slots: Arc<Semaphore>,
    /// No bind before this (after a failure), so a taken port is retried, not spun on.
    next_try: Instant,
    /// The last bind error, logged once until a bind succeeds.
    last_error: Option<String>,
}

impl Console {
    /// A console page for `addr`, not yet listening.
    pub fn new(addr: SocketAddr, page: Page) -> Console {
        Console {
            addr,
            listener: None,
            handler: page.handler(),
            slots: Arc::new(Semaphore::new(http::MAX_CONNECTIONS)),
            next_try: Instant::now(),
            last_error: None,
        }
    }

    /// Opens the listener unless it is open, or a failed bind was tried less than
    /// [`BIND_RETRY`] ago. A failure is logged (once per kind) and retried later.
    pub fn open(&mut self, node: &str) {
        if self.listener.is_some() || Instant::now() < self.next_try {
            return;
        }
        let bound = std::net::TcpListener::bind(self.addr).and_then(|l| {
            l.set_nonblocking(true)?;
            TcpListener::from_std(l)
        });
        match bound {
            Ok(listener) => {
                tracing::info!(%node, addr = %self.addr, "console page listening (this node does not serve the console now)");
                self.listener = Some(listener);
                self.last_error = None;
            }
            Err(e) => {
                let error = e.to_string();
                if self.last_error.as_ref() != Some(&error) {
                    tracing::warn!(%node, addr = %self.addr, %error, "cannot listen on console_listen for the passive page; retrying every second");
                    self.last_error = Some(error);
                }
                self.next_try = Instant::now() + BIND_RETRY;
            }
        }
    }

    /// Closes the listener now, so brokerd can bind the address.
    pub fn close(&mut self, node: &str) {
        if self.listener.take().is_some() {
            tracing::info!(%node, addr = %self.addr, "console page closed for brokerd");
        }
        self.next_try = Instant::now();
    }

    /// The next connection, whenever the listener is open (never while it is closed).
    pub async fn accept(&self) -> TcpStream {
        loop {
            match &self.listener {
                Some(listener) => match listener.accept().await {
                    Ok((stream, _)) => return stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "console accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                None => std::future::pending::<()>().await,
            }
        }
    }

    /// Answers `stream` on a task of its own (or 503s it when all slots are taken).
    pub fn serve(&self, stream: TcpStream) {
        http::admit(stream, &self.slots, &self.handler);
    }
}

/// The page: this node's role, the active node and its host, every node's record.
pub fn render(
    me: &str,
    snapshot: &Snapshot,
    holder: Option<&Holder>,
    nodes: &[NodeRecord],
    now_unix_ms: u64,
) -> String {
    let mut out = String::new();
    let active = holder.filter(|h| h.state == HolderState::Active && h.node != me);
    let headline = match active {
        Some(h) => format!(
            "The active node is {} on {} (epoch {})",
            escape(&h.node),
            escape(&h.host),
            h.epoch
        ),
        None => match holder.filter(|h| h.node != me && h.state != HolderState::Released) {
            Some(h) => format!(
                "{} on {} holds the lock ({}, epoch {}); its console opens once it is active",
                escape(&h.node),
                escape(&h.host),
                h.state,
                h.epoch
            ),
            None => "No node is active right now".to_string(),
        },
    };
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">\
         <title>{me} is {role}</title></head>\n<body>\n\
         <h1>{headline}</h1>\n\
         <p>This is {me}, which is <b>{role}</b>: the web console is served by the active node's \
         broker. This page reloads every {REFRESH_SECS} s.</p>\n",
        me = escape(me),
        role = snapshot.role,
    );
    if let Some(h) = holder {
        let _ = writeln!(
            out,
            "<p id=\"holder\">holder.json: <span class=\"node\">{}</span> on <span class=\"host\">{}</span> \
             (lockd pid {}), epoch {}, {}, heartbeat {} ms ago</p>",
            escape(&h.node),
            escape(&h.host),
            h.pid,
            h.epoch,
            h.state,
            now_unix_ms.saturating_sub(h.heartbeat_unix_ms)
        );
    }
    if !nodes.is_empty() {
        out.push_str("<table>\n<tr><th>node</th><th>role</th><th>epoch</th><th>host</th><th>heartbeat</th><th>reason</th></tr>\n");
        for n in nodes {
            let v = n.view(now_unix_ms);
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} ms ago</td><td>{}</td></tr>",
                escape(&v.node),
                v.role,
                v.epoch.map(|e| e.to_string()).unwrap_or_default(),
                escape(&v.host),
                v.heartbeat_age_ms,
                escape(&v.reason)
            );
        }
        out.push_str("</table>\n");
    }
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_proto::admin::Role;

    fn holder(node: &str, state: HolderState) -> Holder {
        Holder {
            node: node.into(),
            host: "<h2>".into(),
            pid: 7,
            epoch: 4,
            state,
            since_unix_ms: 0,
            heartbeat_unix_ms: 900,
        }
    }

    #[test]
    fn the_page_names_the_active_node_and_its_host_escaped() {
        let page = render(
            "n1",
            &Snapshot::default(),
            Some(&holder("n2", HolderState::Active)),
            &[],
            1000,
        );
        assert!(
            page.contains("<h1>The active node is n2 on &lt;h2&gt; (epoch 4)</h1>"),
            "{page}"
        );
        assert!(page.contains("which is <b>passive</b>"), "{page}");
        assert!(page.contains("http-equiv=\"refresh\""), "{page}");
        assert!(page.contains("heartbeat 100 ms ago"), "{page}");
    }

    #[test]
    fn without_an_active_peer_the_page_says_so() {
        let snapshot = Snapshot {
            role: Role::HoldOff,
            ..Snapshot::default()
        };
        let page = render(
            "n1",
            &snapshot,
            Some(&holder("n1", HolderState::Released)),
            &[],
            0,
        );
        assert!(
            page.contains("<h1>No node is active right now</h1>"),
            "{page}"
        );
        assert!(page.contains("<b>hold-off</b>"), "{page}");
        let page = render(
            "n1",
            &snapshot,
            Some(&holder("n2", HolderState::Starting)),
            &[],
            0,
        );
        assert!(
            page.contains("n2 on &lt;h2&gt; holds the lock (starting"),
            "{page}"
        );
    }
}
