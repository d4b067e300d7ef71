//! The registry of created destinations: every queue and topic a client created (with `admin`
//! where the users file asks for it), the broker's own routing created (a dead-letter queue, a
//! virtual topic's consumer queue fed while no one reads it) or a takeover found in the store.
//! ActiveMQ keeps a destination for the broker's lifetime once created and lists its queues
//! from its store at start; so here a created destination still exists, for the `admin` rule,
//! once it is idle and gone from memory, after its last topic subscriber left, and after a
//! restart or failover, until an operator deletes it (`ctl delete`). Temporary destinations are
//! never in it: they end with their connection. Clients cannot grow it past
//! `--max-created-destinations` (see [`super::limits`]).
//!
//! Layout: one entry per destination in the journal's space [`SPACE`], key the canonical name
//! (`/queue/NAME`, `/topic/NAME`), no value. The queues a store holds messages for (`q/NAME`
//! spaces) and the topics of its durable subscriptions are created too: recovery adds any the
//! registry misses (a store of an older brokerd, or a registration a crash lost).
//!
//! Durability: a registration is written once, when the destination is created (never by a
//! later SEND), with no callback: it rides the journal's next group commit, and no receipt
//! waits for it. Losing one in a crash loses no message: the destination is new again, and its
//! next user needs `admin` as its first did. An empty consumer queue no one reads would also
//! go unfed until its group subscribes again: the record older brokerd kept of consumer queues
//! was written the same way.
//!
//! Older brokerd recorded virtual topics' consumer queues alone, in the space `virtual-queues`
//! (same layout). Recovery moves them into [`SPACE`], putting and removing in one atomic write.

use super::paging::PageStore;
use crate::journal::{Op, Value};
use crate::store::StoreError;
use bytes::Bytes;
use std::sync::Arc;
use tracing::{info, warn};

/// The registry's space in the journal.
pub const SPACE: &str = "destinations";

/// The space where older brokerd recorded virtual topics' consumer queues.
pub const LEGACY_CONSUMER_QUEUES: &str = "virtual-queues";

/// The registry's key of the canonical destination `name`.
pub fn key(name: &str) -> Bytes {
    Bytes::copy_from_slice(name.as_bytes())
}

/// What recovery read from the registry.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Every created destination the store names, older brokerd's consumer queues included.
    pub names: Vec<Arc<str>>,
    /// Writes that move older brokerd's consumer queues into the registry, to apply as one
    /// group before anything else is written; empty when there were none.
    pub migration: Vec<Op>,
}

/// Reads the registry from `store`, whose spaces are `spaces`. An entry whose name is not
/// UTF-8 (never written by brokerd) is skipped with a warning: that destination is new again.
pub fn recover(store: &dyn PageStore, spaces: &[Arc<str>]) -> Result<Recovered, StoreError> {
    let mut recovered = Recovered::default();
    let holds = |space: &str| spaces.iter().any(|s| &**s == space);
    for space in [SPACE, LEGACY_CONSUMER_QUEUES] {
        if !holds(space) {
            continue;
        }
        for (key, _) in store.read(space, &[], usize::MAX)? {
            let Ok(name) = std::str::from_utf8(&key).map(Arc::<str>::from) else {
                warn!(
                    space,
                    "skipping a created destination whose name is not UTF-8"
                );
                continue;
            };
            if space == LEGACY_CONSUMER_QUEUES {
                recovered.migration.push(Op::Put {
                    space: SPACE.into(),
                    key: self::key(&name),
                    value: Value::Bytes(Bytes::new()),
                });
                recovered.migration.push(Op::Remove {
                    space: LEGACY_CONSUMER_QUEUES.into(),
                    key,
                });
            }
            recovered.names.push(name);
        }
    }
    if !recovered.migration.is_empty() {
        info!(
            queues = recovered.migration.len() / 2,
            "moving an older brokerd's virtual-topic consumer queues into the registry of created destinations"
        );
    }
    Ok(recovered)
}
