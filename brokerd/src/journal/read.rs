//! The journal's key layout and its read view of a sled store ([`Recovered`]): what a takeover
//! rebuilds its state from, and where paged-out messages are read back.

use super::open_tree;
use crate::store::{Store, StoreError};
use bytes::Bytes;
use std::path::PathBuf;
use std::sync::Arc;

/// The sled key of `key` in `space`: `u32 BE length of space ++ space ++ key`.
pub(crate) fn encode_key(space: &str, key: &[u8]) -> Vec<u8> {
    let mut encoded = space_prefix(space);
    encoded.extend_from_slice(key);
    encoded
}

/// The common prefix of every key in `space`.
fn space_prefix(space: &str) -> Vec<u8> {
    let len = u32::try_from(space.len()).unwrap_or(u32::MAX);
    let mut prefix = Vec::with_capacity(4 + space.len());
    prefix.extend_from_slice(&len.to_be_bytes());
    prefix.extend_from_slice(space.as_bytes());
    prefix
}

/// Splits a sled key into its space and the caller's key.
fn decode_key(encoded: &[u8]) -> Option<(&str, usize)> {
    let len = u32::from_be_bytes(encoded.get(..4)?.try_into().ok()?);
    let end = 4usize.checked_add(usize::try_from(len).ok()?)?;
    let space = std::str::from_utf8(encoded.get(4..end)?).ok()?;
    Some((space, end))
}

/// One stored entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its space.
    pub space: Arc<str>,
    /// Its key within the space.
    pub key: sled::IVec,
    /// Its value.
    pub value: sled::IVec,
}

/// A read view of everything the journal stored, for rebuilding state after a takeover and for
/// reading paged-out messages back later. Reads are lazy: iterating holds one sled leaf at a
/// time, not every value, so a million queued messages need not fit in RAM. Reads see what the
/// writer has applied, which may be slightly ahead of what is durable.
#[derive(Clone)]
pub struct Recovered {
    tree: sled::Tree,
    path: PathBuf,
}

/// Opens the read view of the journal's data in `store` (sled has already replayed its log
/// while the store opened).
pub fn recover(store: &Store) -> Result<Recovered, StoreError> {
    Ok(Recovered {
        tree: open_tree(store.db(), store.path())?,
        path: store.path().to_path_buf(),
    })
}

impl Recovered {
    /// The names of all spaces that hold at least one entry, without reading their values
    /// beyond each space's first entry.
    pub fn spaces(&self) -> Result<Vec<Arc<str>>, StoreError> {
        let mut spaces = Vec::new();
        let mut from: Vec<u8> = Vec::new();
        loop {
            let Some(first) = self.tree.range(from.as_slice()..).next() else {
                return Ok(spaces);
            };
            let (key, _) = first.map_err(|source| self.sled_error("listing spaces", source))?;
            let (space, _) = decode_key(&key).ok_or_else(|| self.corrupt(&key))?;
            // The next space starts after every key with this prefix: the prefix plus 0xff...
            // is not a bound, so seek to the prefix's successor instead.
            from = prefix_successor(space_prefix(space));
            spaces.push(Arc::from(space));
            if from.is_empty() {
                return Ok(spaces);
            }
        }
    }

    /// Every entry of `space`, in key order.
    pub fn scan(&self, space: &str) -> impl Iterator<Item = Result<Entry, StoreError>> + '_ {
        let space: Arc<str> = Arc::from(space);
        let prefix = space_prefix(&space);
        let skip = prefix.len();
        self.tree.scan_prefix(prefix).map(move |item| {
            let (key, value) = item.map_err(|source| self.sled_error("reading a space", source))?;
            Ok(Entry {
                space: Arc::clone(&space),
                key: key.subslice(skip, key.len() - skip),
                value,
            })
        })
    }

    /// Every entry of every space, grouped by space, each space in key order.
    pub fn iter(&self) -> impl Iterator<Item = Result<Entry, StoreError>> + '_ {
        let mut last: Option<Arc<str>> = None;
        self.tree.iter().map(move |item| {
            let (key, value) =
                item.map_err(|source| self.sled_error("reading the store", source))?;
            let (space, skip) = decode_key(&key).ok_or_else(|| self.corrupt(&key))?;
            let space = match &last {
                Some(same) if **same == *space => Arc::clone(same),
                _ => {
                    let fresh: Arc<str> = Arc::from(space);
                    last = Some(Arc::clone(&fresh));
                    fresh
                }
            };
            Ok(Entry {
                space,
                key: key.subslice(skip, key.len() - skip),
                value,
            })
        })
    }

    /// Up to `limit` entries of `space` whose keys are `from` or after, in key order: one page
    /// of a paged-out queue. Reads only those entries (a range, not a scan from the start).
    pub fn read_page(
        &self,
        space: &str,
        from: &[u8],
        limit: usize,
    ) -> Result<Vec<(Bytes, Bytes)>, StoreError> {
        let Page { start, end, skip } = Page::of(space, from);
        let range = match end {
            None => self.tree.range(start..),
            Some(end) => self.tree.range(start..end),
        };
        range
            .take(limit)
            .map(|item| {
                let (key, value) =
                    item.map_err(|source| self.sled_error("reading a page", source))?;
                Ok((
                    Bytes::copy_from_slice(&key[skip..]),
                    Bytes::copy_from_slice(&value),
                ))
            })
            .collect()
    }

    /// How many keys of `space` are `from` or after and before `below`, counting at most
    /// `limit`, and the last one counted: the paged-out messages a takeover found, counted a
    /// chunk at a time. Reads keys in a range, like [`Recovered::read_page`], copying nothing.
    pub fn count_keys(
        &self,
        space: &str,
        from: &[u8],
        below: &[u8],
        limit: usize,
    ) -> Result<(usize, Option<Bytes>), StoreError> {
        let skip = space_prefix(space).len();
        let range = self
            .tree
            .range(encode_key(space, from)..encode_key(space, below));
        let mut counted = 0;
        let mut last = None;
        for item in range.take(limit) {
            let (key, _) = item.map_err(|source| self.sled_error("counting a space", source))?;
            counted += 1;
            last = Some(key);
        }
        Ok((
            counted,
            last.map(|key| Bytes::copy_from_slice(&key[skip..])),
        ))
    }

    /// The value of `key` in `space`, if stored.
    pub fn get(&self, space: &str, key: &[u8]) -> Result<Option<sled::IVec>, StoreError> {
        self.tree
            .get(encode_key(space, key))
            .map_err(|source| self.sled_error("reading a value", source))
    }

    fn sled_error(&self, action: &'static str, source: sled::Error) -> StoreError {
        StoreError::Sled {
            path: self.path.clone(),
            action,
            source,
        }
    }

    fn corrupt(&self, key: &[u8]) -> StoreError {
        StoreError::CorruptKey {
            path: self.path.clone(),
            len: key.len(),
        }
    }
}

/// The keys of a page of `space` from the caller's key `from` on ([`Recovered::read_page`]).
pub(crate) struct Page {
    /// The first key, encoded.
    pub start: Vec<u8>,
    /// The first key after the space, if there is one.
    pub end: Option<Vec<u8>>,
    /// The length of the space's prefix, to strip from each key read.
    pub skip: usize,
}

impl Page {
    pub(crate) fn of(space: &str, from: &[u8]) -> Page {
        let prefix = space_prefix(space);
        let skip = prefix.len();
        let end = Some(prefix_successor(prefix)).filter(|end| !end.is_empty());
        Page {
            start: encode_key(space, from),
            end,
            skip,
        }
    }
}

/// The smallest byte string greater than every string starting with `prefix`; empty if there
/// is none (the prefix is all 0xff).
fn prefix_successor(mut prefix: Vec<u8>) -> Vec<u8> {
    while let Some(last) = prefix.pop() {
        if last < u8::MAX {
            prefix.push(last + 1);
            return prefix;
        }
    }
    prefix
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_the_layout() {
        let encoded = encode_key("q/é", b"\x00\xff");
        assert_eq!(decode_key(&encoded), Some(("q/é", 4 + "q/é".len())));
        assert_eq!(decode_key(b"\x00\x00"), None);
        assert_eq!(decode_key(b"\x00\x00\x00\x09short"), None);
        assert_eq!(prefix_successor(vec![1, 0xff]), vec![2]);
        assert!(prefix_successor(vec![0xff]).is_empty());
    }
}
