//! Connections: a session's opening (one client-id at a time, as ActiveMQ) and its end.

use super::*;

impl Broker {
    /// A session opened: refused if its client-id is connected already (ActiveMQ's rule).
    pub(super) fn open(&mut self, opening: Opening) -> Result<(), Refused> {
        let Opening {
            conn,
            session,
            client_id,
            peer,
            access,
            outbox,
            verdict,
        } = opening;
        // ActiveMQ refuses a second connection with a client-id already connected
        // (InvalidClientIDException): a durable subscription has one reader.
        let holder = client_id
            .as_ref()
            .and_then(|id| self.client_ids.get(id))
            .and_then(|holder| self.connections.get(holder));
        if let (Some(id), Some(holder)) = (&client_id, holder) {
            debug!(conn, client_id = %id, "refusing a client: client-id already connected");
            let _ = verdict.send(Err(format!(
                "Broker: {} - Client: {id} already connected from tcp://{}",
                self.settings.node, holder.peer
            )));
            return Ok(());
        }
        if verdict.send(Ok(())).is_err() {
            // The session is gone already; it sends no Close for a refused Open.
            return Ok(());
        }
        if let Some(id) = &client_id {
            self.client_ids.insert(id.clone(), conn);
        }
        self.connections.insert(
            conn,
            Connection {
                outbox,
                temporary: names::temporary_prefix(&session),
                temporaries: Vec::new(),
                client_id,
                peer,
                access,
                subscriptions: HashMap::new(),
                transactions: HashMap::new(),
                standing: standing::Standing::Good,
            },
        );
        Ok(())
    }

    /// A session ended: its subscriptions end (their deliveries return), its transactions go.
    pub(super) fn close(&mut self, conn: ConnId) -> Result<(), Refused> {
        if let Some(c) = self.connections.remove(&conn) {
            if let Some(id) = &c.client_id {
                self.client_ids.remove(id);
            }
            for key in c.subscriptions.into_values() {
                self.end_subscription(key);
            }
            for name in c.temporaries {
                self.delete_temporary(&name);
            }
        }
        Ok(())
    }
}
