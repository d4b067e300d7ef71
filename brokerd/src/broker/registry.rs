//! The durable-subscription registry's layout in the store, and its recovery.
//!
//! One entry per durable subscription, in the space [`REGISTRY`]:
//! - key: `u32 BE length of the client-id ++ client-id ++ subscription name`. Both come from
//!   clients and may hold any character a STOMP header can, so no separator could keep two
//!   (client-id, name) pairs apart; the length prefix does;
//! - value: `u32 BE length of the space ++ space ++ topic`;
//! - space: `s/` and 16 hex digits of the subscription's incarnation, a number never used before
//!   (taken from the broker's message sequence when the subscription is created or moved to
//!   another topic). Nothing a client sends is in it, and a subscription deleted and created
//!   again under the same names gets a new space.
//!
//! Deletion: removing the entry is the durable marker; its space's messages are purged after,
//! in the background. A crash mid-purge leaves a space no entry names: recovery purges it again
//! ([`Registry::orphans`]), and no subscription, even one re-created under the same names, ever
//! reads it.
//!
//! Older brokerd wrote the space `subs` (key `client-id U+0001 name`, value the topic) and
//! spaces `d/` ++ key, where a U+0001 inside a client-id or name made two subscriptions one.
//! Recovery migrates such entries in place: each becomes an entry of the new layout naming its
//! old space (no message is moved), all in one atomic write. A key with more than one U+0001 is
//! split at the first, as the older brokerd itself read it back; one with none was never
//! readable and is left alone with a warning. A subscription in both layouts (an older brokerd
//! ran on the store after a newer one migrated it) refuses the start: which of its two spaces
//! holds the messages to keep cannot be told, and the other would be purged.

use super::paging::PageStore;
use crate::journal::Op;
use crate::store::StoreError;
use bytes::{BufMut, Bytes, BytesMut};
use std::collections::HashSet;
use std::sync::Arc;
use tracing::{info, warn};

/// The registry's space.
pub const REGISTRY: &str = "durables";

/// The registry's space as older brokerd wrote it.
const LEGACY_REGISTRY: &str = "subs";

/// Prefix of the spaces of durable subscriptions.
const SPACE_PREFIX: &str = "s/";

/// Prefix of the spaces older brokerd gave durable subscriptions.
const LEGACY_SPACE_PREFIX: &str = "d/";

/// The separator older brokerd put between client-id and name.
const LEGACY_SEPARATOR: char = '\u{1}';

/// The registry key of `(client_id, name)`.
pub fn key(client_id: &str, name: &str) -> Bytes {
    let mut key = BytesMut::with_capacity(4 + client_id.len() + name.len());
    key.put_u32(client_id.len() as u32);
    key.put_slice(client_id.as_bytes());
    key.put_slice(name.as_bytes());
    key.freeze()
}

/// The space of the subscription incarnation `incarnation`.
pub fn space(incarnation: u64) -> Arc<str> {
    format!("{SPACE_PREFIX}{incarnation:016x}").into()
}

/// The registry value of a subscription stored in `space`, subscribed to `topic`.
pub fn value(space: &str, topic: &str) -> Bytes {
    let mut value = BytesMut::with_capacity(4 + space.len() + topic.len());
    value.put_u32(space.len() as u32);
    value.put_slice(space.as_bytes());
    value.put_slice(topic.as_bytes());
    value.freeze()
}

/// One durable subscription as the registry holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub client_id: String,
    pub name: String,
    pub space: Arc<str>,
    pub topic: String,
}

/// Splits `u32 BE length ++ first ++ rest` into UTF-8 `first` and `rest`.
fn split_prefixed(bytes: &[u8]) -> Option<(&str, &str)> {
    let len = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let first = bytes.get(4..4 + len)?;
    let rest = &bytes[4 + len..];
    Some((
        std::str::from_utf8(first).ok()?,
        std::str::from_utf8(rest).ok()?,
    ))
}

fn decode(key: &[u8], value: &[u8]) -> Option<Entry> {
    let (client_id, name) = split_prefixed(key)?;
    let (space, topic) = split_prefixed(value)?;
    Some(Entry {
        client_id: client_id.into(),
        name: name.into(),
        space: space.into(),
        topic: topic.into(),
    })
}

/// What recovery found in the registry.
#[derive(Debug, Default)]
pub struct Registry {
    /// Every durable subscription, older brokerd's included.
    pub entries: Vec<Entry>,
    /// Writes that move older brokerd's entries to the new layout, to apply as one group
    /// before anything else is written; empty when there were none.
    pub migration: Vec<Op>,
    /// Spaces of durable subscriptions that no entry names: deleted ones whose purge a crash
    /// cut short. Their messages are to be purged, never read.
    pub orphans: Vec<Arc<str>>,
}

/// Reads the registry from `store`, whose spaces are `spaces`. A registry entry that cannot be
/// decoded is an error: skipping it would silently drop a subscription and its messages.
pub fn recover(store: &dyn PageStore, spaces: &[Arc<str>]) -> Result<Registry, StoreError> {
    let mut registry = Registry::default();
    // Spaces of old entries that cannot be migrated: left alone, so never purged as orphans.
    let mut kept: Vec<Arc<str>> = Vec::new();
    if spaces.iter().any(|s| &**s == REGISTRY) {
        for (key, value) in store.read(REGISTRY, &[], usize::MAX)? {
            let entry = decode(&key, &value).ok_or(StoreError::CorruptRegistry {
                key: String::from_utf8_lossy(&key).into_owned(),
            })?;
            registry.entries.push(entry);
        }
    }
    if spaces.iter().any(|s| &**s == LEGACY_REGISTRY) {
        for (key, topic) in store.read(LEGACY_REGISTRY, &[], usize::MAX)? {
            let raw = String::from_utf8_lossy(&key).into_owned();
            let Some((client_id, name)) = raw.split_once(LEGACY_SEPARATOR) else {
                warn!(key = ?raw, "an older brokerd's durable subscription without a client-id; it was never readable, leaving it alone");
                kept.push(format!("{LEGACY_SPACE_PREFIX}{raw}").into());
                continue;
            };
            if registry
                .entries
                .iter()
                .any(|e| e.client_id == client_id && e.name == name)
            {
                // Both layouts hold it: an older brokerd ran on this store after a newer one.
                // Which holds the messages to keep cannot be told; refuse rather than purge one.
                return Err(StoreError::RegistryConflict {
                    client_id: client_id.into(),
                    name: name.into(),
                });
            }
            if name.contains(LEGACY_SEPARATOR) {
                warn!(key = ?raw, client_id, name, "an older brokerd's durable subscription whose names hold U+0001: read back as that brokerd did");
            }
            let entry = Entry {
                client_id: client_id.into(),
                name: name.into(),
                space: format!("{LEGACY_SPACE_PREFIX}{raw}").into(),
                topic: String::from_utf8_lossy(&topic).into_owned(),
            };
            registry.migration.push(Op::Put {
                space: REGISTRY.into(),
                key: self::key(&entry.client_id, &entry.name),
                value: value(&entry.space, &entry.topic).into(),
            });
            registry.migration.push(Op::Remove {
                space: LEGACY_REGISTRY.into(),
                key,
            });
            registry.entries.push(entry);
        }
        if !registry.migration.is_empty() {
            info!(
                subscriptions = registry.migration.len() / 2,
                "migrating an older brokerd's durable subscriptions to the length-prefixed registry"
            );
        }
    }
    let named: HashSet<&str> = registry
        .entries
        .iter()
        .map(|e| &*e.space)
        .chain(kept.iter().map(|s| &**s))
        .collect();
    registry.orphans = spaces
        .iter()
        .filter(|s| s.starts_with(SPACE_PREFIX) || s.starts_with(LEGACY_SPACE_PREFIX))
        .filter(|s| !named.contains(&***s))
        .cloned()
        .collect();
    Ok(registry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_client_id_and_name_share_a_key_whatever_they_hold() {
        assert_ne!(key("a\u{1}b", "c"), key("a", "b\u{1}c"));
        assert_ne!(key("ab", "c"), key("a", "bc"));
        let entry = decode(&key("a\u{1}b", "c"), &value("s/01", "/topic/t")).unwrap();
        assert_eq!(
            (entry.client_id.as_str(), entry.name.as_str()),
            ("a\u{1}b", "c")
        );
        assert_eq!((&*entry.space, entry.topic.as_str()), ("s/01", "/topic/t"));
        assert_eq!(decode(b"\0\0\0\x09ab", b""), None);
    }
}
