//! ActiveMQ's order on one connection: the RECEIPT of a SEND (or COMMIT) is written before any
//! MESSAGE that SEND causes on the same connection, a consumer of its own messages. Clients
//! depend on it: PHP's PECL stomp, waiting for a RECEIPT, keeps no MESSAGE that comes first.
//!
//! The broker core decides deliveries before the store makes a SEND durable, so a MESSAGE can
//! be ready before its RECEIPT may go. The session holds such a MESSAGE until every receipt asked
//! for before it is written, and everything behind a held MESSAGE with it, so no subscription's
//! order changes. Held MESSAGEs are not yet written, so they still count against the
//! subscription's prefetch: what is held is bounded. (The core never makes such a receipt wait
//! for the MESSAGE to be written, which would wait forever.)

use crate::broker::{ConnId, Outbound};
use std::collections::VecDeque;

/// The receipts a connection's SENDs and COMMITs asked for, and the frames held behind them.
#[derive(Debug, Default)]
pub struct ReceiptOrder {
    /// Receipts owed, each with its number, in the order asked.
    owed: VecDeque<(u64, String)>,
    /// Receipts asked for so far.
    asked: u64,
    /// Frames held, each with the number of receipts asked before it (0: held for order only).
    held: VecDeque<(u64, Outbound)>,
}

impl ReceiptOrder {
    /// A SEND or COMMIT asked for `receipt`.
    pub fn asked(&mut self, receipt: &str) {
        self.asked += 1;
        self.owed.push_back((self.asked, receipt.to_owned()));
    }

    /// `out`, if it may be written now; otherwise it is held. `conn` is this connection.
    pub fn pass(&mut self, conn: ConnId, out: Outbound) -> Option<Outbound> {
        let own = match &out {
            Outbound::Message { msg, .. } => msg.from == conn,
            Outbound::BrowseEnd { .. } => false,
            // Never held: a receipt is what releases, an ERROR ends the session.
            Outbound::Receipt(_) | Outbound::Error { .. } | Outbound::Warning { .. } => {
                return Some(out)
            }
        };
        if own && !self.owed.is_empty() {
            self.held.push_back((self.asked, out));
            return None;
        }
        if !self.held.is_empty() {
            self.held.push_back((0, out));
            return None;
        }
        Some(out)
    }

    /// `receipt` is being written: the frames it releases, in order.
    pub fn written(&mut self, receipt: &str) -> Vec<Outbound> {
        if let Some(at) = self.owed.iter().position(|(_, r)| r == receipt) {
            self.owed.remove(at);
        }
        let first_owed = self.owed.front().map_or(u64::MAX, |(n, _)| *n);
        let mut released = Vec::new();
        while self
            .held
            .front()
            .is_some_and(|(asked_before, _)| *asked_before < first_owed)
        {
            released.extend(self.held.pop_front().map(|(_, out)| out));
        }
        released
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::message::Message;
    use std::sync::Arc;

    fn message(from: ConnId, body: &str) -> Outbound {
        Outbound::Message {
            subscription: "s".into(),
            sub: 1,
            ack: None,
            msg: Arc::new(Message {
                id: "ID:x".into(),
                seq: 1,
                destination: "/queue/q".into(),
                headers: Vec::new(),
                body: bytes::Bytes::copy_from_slice(body.as_bytes()),
                persistent: true,
                priority: 4,
                expires: 0,
                redeliveries: 0,
                timestamp: 0,
                sized: true,
                from,
            }),
        }
    }

    fn body(out: &Outbound) -> String {
        match out {
            Outbound::Message { msg, .. } => String::from_utf8_lossy(&msg.body).into_owned(),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn an_own_message_waits_for_the_receipts_asked_before_it_and_keeps_the_order() {
        let mut order = ReceiptOrder::default();
        // Nothing owed: everything passes.
        assert!(order.pass(7, message(7, "early")).is_some());
        order.asked("r1");
        assert!(order.pass(7, message(8, "foreign")).is_some(), "not ours");
        assert!(order.pass(7, message(7, "own")).is_none());
        order.asked("r2");
        // Behind a held one: held too, whoever sent it.
        assert!(order.pass(7, message(8, "behind")).is_none());
        assert!(order.pass(7, message(7, "own after r2")).is_none());
        assert!(order.pass(7, Outbound::Receipt("r1".into())).is_some());
        let released: Vec<String> = order.written("r1").iter().map(body).collect();
        assert_eq!(
            released,
            ["own", "behind"],
            "r2 still owed for the last one"
        );
        assert!(order.written("unknown").is_empty());
        let released: Vec<String> = order.written("r2").iter().map(body).collect();
        assert_eq!(released, ["own after r2"]);
        assert!(order.pass(7, message(7, "free again")).is_some());
    }
}
