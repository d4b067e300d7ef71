//! Caps on what clients can make the broker hold besides messages: subscriptions per
//! connection, destinations in memory, and destinations remembered as created. Each is a
//! brokerd flag with a default here; a request past one of the first two is refused with an
//! ERROR naming the limit and its flag.

/// The caps, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Subscriptions one connection may hold (`--max-subscriptions-per-connection`): each holds
    /// its prefetch of deliveries.
    pub subscriptions_per_connection: usize,
    /// Queues and subscribed topics the broker holds in memory at once, temporary ones
    /// included (`--max-destinations`); empty, unused queues are removed, so unique
    /// reply-queue names do not use them up. It counts what is in memory, not what the
    /// registry of created destinations remembers, because it bounds what destinations cost
    /// in memory (consumers, waiting messages, counters): a remembered name costs its bytes.
    pub destinations: usize,
    /// Destinations the broker remembers as created, in memory and in its store
    /// (`--max-created-destinations`): new names cannot grow the registry, nor what a takeover
    /// reads, without bound. Past it, new names are not remembered (nothing is refused);
    /// virtual topics' consumer queues and what a takeover finds in the store are remembered
    /// regardless.
    pub created_destinations: usize,
}

impl Default for Caps {
    fn default() -> Caps {
        Caps {
            subscriptions_per_connection: 1_000,
            destinations: 10_000,
            // Read back whole at each takeover: measured, 10,000 add about 12 ms to it (100,000
            // about 120 ms, too much for a takeover of tens of milliseconds). About 100 bytes of
            // memory each, with a short name.
            created_destinations: 10_000,
        }
    }
}

impl Caps {
    /// The refusal of a SUBSCRIBE past the per-connection cap.
    pub(super) fn too_many_subscriptions(&self) -> String {
        format!(
            "a connection may hold at most {} subscriptions (--max-subscriptions-per-connection); UNSUBSCRIBE one first",
            self.subscriptions_per_connection
        )
    }

    /// The refusal of a new destination past the broker-wide cap.
    pub(super) fn too_many_destinations(&self, destination: &str) -> String {
        format!(
            "cannot create {destination:?}: the broker holds its limit of {} destinations \
             (--max-destinations); consume and unsubscribe from unused ones",
            self.destinations
        )
    }
}
