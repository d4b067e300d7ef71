//! A graceful stop's drain, as one connection sees it.
//!
//! Once the node starts draining it takes no more SENDs: they are dropped without a receipt so
//! a failover client resends them to the next node, and the connection's standing becomes
//! [`super::standing::Standing::SendDropped`]: no later receipt may go out on it. Open
//! transactions are aborted when the drain starts, and a COMMIT during the drain is refused
//! with an ERROR.

use super::{Broker, Refused};
use tokio::sync::oneshot;
use tracing::debug;

/// The ERROR that refuses a COMMIT during the drain; its transaction is aborted.
pub(super) fn commit_refused(transaction: &str) -> String {
    format!(
        "transaction {transaction:?} aborted: the node is going passive; reconnect to another \
         node and run the transaction again"
    )
}

impl Broker {
    /// The node goes passive: nothing new is dispatched, open transactions are aborted, and the
    /// answer waits until every delivered message is acknowledged.
    pub(super) fn drain(&mut self, reply: oneshot::Sender<()>) -> Result<(), Refused> {
        // From now on nothing new is dispatched, and the answer waits until every
        // delivered message is acknowledged: an ACK that arrived after the goodbye
        // would be lost, and the next node would deliver the message again.
        self.draining = true;
        self.drained = Some(reply);
        // Open transactions are aborted: their COMMIT is refused (see [`drain`]).
        let mut aborted = 0;
        for c in self.connections.values_mut() {
            aborted += c.transactions.len();
            c.transactions.clear();
        }
        if aborted > 0 {
            debug!(aborted, "draining: aborted open transactions");
        }
        Ok(())
    }
}
