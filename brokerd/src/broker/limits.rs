//! Caps on what clients can make the broker hold besides messages: subscriptions per
//! connection and destinations in total. Each is a brokerd flag with a default here; a request
//! past one is refused with an ERROR naming the limit and its flag.

/// The caps, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Subscriptions one connection may hold (`--max-subscriptions-per-connection`): each holds
    /// its prefetch of deliveries.
    pub subscriptions_per_connection: usize,
    /// Queues and subscribed topics the broker holds at once (`--max-destinations`); empty,
    /// unused queues are removed, so unique reply-queue names do not use them up.
    pub destinations: usize,
}

impl Default for Caps {
    fn default() -> Caps {
        Caps {
            subscriptions_per_connection: 1_000,
            destinations: 10_000,
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
