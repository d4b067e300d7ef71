//! Transactions: BEGIN, the operations a transaction holds, COMMIT (one atomic group) and ABORT.

use super::*;

impl Broker {
    /// The open transaction `tx`, with room for one more operation.
    pub(super) fn transaction(
        &mut self,
        conn: ConnId,
        tx: &str,
    ) -> Result<&mut Vec<TxOp>, Refused> {
        let ops = self
            .connection(conn)?
            .transactions
            .get_mut(tx)
            .ok_or_else(|| Refused(format!("transaction {tx:?} is not open (BEGIN it first)")))?;
        if ops.len() >= MAX_TRANSACTION_OPS {
            return Err(Refused(format!(
                "transaction {tx:?} reached the limit of {MAX_TRANSACTION_OPS} SENDs and ACKs; COMMIT it in smaller parts"
            )));
        }
        Ok(ops)
    }

    pub(super) fn end_transaction(&mut self, conn: ConnId, tx: &str) -> Result<Vec<TxOp>, Refused> {
        self.connection(conn)?
            .transactions
            .remove(tx)
            .ok_or_else(|| Refused(format!("transaction {tx:?} is not open (BEGIN it first)")))
    }

    /// BEGIN: a new transaction, within the cap per connection.
    pub(super) fn begin(
        &mut self,
        conn: ConnId,
        transaction: String,
        receipt: Option<String>,
    ) -> Result<(), Refused> {
        let c = self.connection(conn)?;
        if c.transactions.contains_key(&transaction) {
            return Err(Refused(format!(
                "transaction {transaction:?} is already open"
            )));
        }
        if c.transactions.len() >= MAX_TRANSACTIONS {
            return Err(Refused(format!(
                "a connection may have at most {MAX_TRANSACTIONS} open transactions; COMMIT or ABORT one first"
            )));
        }
        c.transactions.insert(transaction, Vec::new());
        self.receipt_now(conn, receipt);
        Ok(())
    }

    /// COMMIT: every operation applied at once, its writes one atomic group.
    pub(super) fn commit(
        &mut self,
        conn: ConnId,
        transaction: String,
        receipt: Option<String>,
    ) -> Result<(), Refused> {
        // One task applies every operation before it looks at anything else, so other
        // clients see all of the transaction or none of it; its writes go to the store
        // as one atomic group, and the receipt waits for it.
        if self.draining {
            // The drain aborted it (or dropped its SENDs): refuse it whole. The ERROR
            // waits for the receipts already owed, so they are not lost with the
            // session it closes.
            if let Some(c) = self.connections.get_mut(&conn) {
                c.transactions.remove(&transaction);
                let outbox = c.outbox.clone();
                let message = drain::commit_refused(&transaction);
                self.store.barrier(Box::new(move || {
                    let _ = outbox.send(Outbound::Error { message, receipt });
                }));
            }
            return Ok(());
        }
        let ops = self.end_transaction(conn, &transaction)?;
        self.store.begin_group();
        for op in ops {
            match op {
                // Its charge goes once the message is where it waits.
                TxOp::Send(msg, _charge) => self.publish(msg, None, false),
                TxOp::Ack { which, nack } => {
                    // A message acknowledged twice in one transaction is simply gone.
                    let _ = self.acknowledge(conn, &which, nack);
                }
                TxOp::Schedule(job, _charge) => {
                    // ActiveMQ schedules a transaction's jobs when it commits.
                    let now = self.scheduler.as_ref().map(|link| link.clock.now());
                    if let Some(job) = now.and_then(|now| job.restarted(now)) {
                        self.add_job(job, None);
                    }
                }
            }
        }
        let done = self.receipt_later(conn, receipt);
        self.store.commit_group(done);
        Ok(())
    }
}
