//! A graceful stop's drain, as one connection sees it.
//!
//! Once the node starts draining it takes no more SENDs: they are dropped without a receipt so
//! a failover client resends them to the next node. Receipts in STOMP are read in order (a
//! RECEIPT for a frame says every frame before it was handled), so once a connection had a
//! SEND dropped, no later receipt may go out on it: a COMMIT's or DISCONNECT's receipt would
//! tell the client the dropped SEND was kept. Open transactions are aborted when the drain
//! starts, and a COMMIT during the drain is refused with an ERROR.

/// Whether every SEND a connection made was taken, or one was dropped by the drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum Sends {
    /// Every SEND so far was taken: receipts may go out.
    #[default]
    Taken,
    /// A SEND was dropped by the drain: no receipt may follow it on this connection.
    Dropped,
}

/// The ERROR that refuses a COMMIT during the drain; its transaction is aborted.
pub(super) fn commit_refused(transaction: &str) -> String {
    format!(
        "transaction {transaction:?} aborted: the node is going passive; reconnect to another \
         node and run the transaction again"
    )
}
