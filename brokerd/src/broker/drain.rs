//! A graceful stop's drain, as one connection sees it.
//!
//! Once the node starts draining it takes no more SENDs: they are dropped without a receipt so
//! a failover client resends them to the next node, and the connection's standing becomes
//! [`super::standing::Standing::SendDropped`]: no later receipt may go out on it. Open
//! transactions are aborted when the drain starts, and a COMMIT during the drain is refused
//! with an ERROR.

/// The ERROR that refuses a COMMIT during the drain; its transaction is aborted.
pub(super) fn commit_refused(transaction: &str) -> String {
    format!(
        "transaction {transaction:?} aborted: the node is going passive; reconnect to another \
         node and run the transaction again"
    )
}
