//! Where a journal's batches go: the [`Backend`] a store writes through (sled's here, redb's in
//! `crate::scheduler::db`), and the values it stores ([`Value`], encoded by the writer).

use super::Write;
use crate::store::{Flusher, StoreError};
use bytes::Bytes;
use std::path::PathBuf;
use std::sync::Arc;

/// Something the journal's writer turns into the bytes it stores: a message is encoded on the
/// writer's thread, not on the broker's task.
pub trait Encode: Send + Sync {
    /// The bytes to store.
    fn encode(&self) -> Bytes;
    /// About how many bytes that is, for [`Journal::pending_bytes`](super::Journal::pending_bytes).
    fn size(&self) -> usize;
}

/// A value to store: its bytes, or what the writer encodes into them.
#[derive(Clone)]
pub enum Value {
    Bytes(Bytes),
    Later(Arc<dyn Encode>),
}

impl Value {
    pub(super) fn size(&self) -> usize {
        match self {
            Value::Bytes(bytes) => bytes.len(),
            Value::Later(later) => later.size(),
        }
    }

    /// The bytes to store, encoding them if they are not yet: a backend asks once per write
    /// it makes, so a put cancelled within its batch is never encoded.
    pub fn to_bytes(&self) -> Bytes {
        match self {
            Value::Bytes(bytes) => bytes.clone(),
            Value::Later(later) => later.encode(),
        }
    }
}

impl From<Bytes> for Value {
    fn from(bytes: Bytes) -> Value {
        Value::Bytes(bytes)
    }
}

impl std::fmt::Debug for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Bytes(bytes) => bytes.fmt(f),
            Value::Later(later) => write!(f, "Later({} bytes)", later.size()),
        }
    }
}

/// Equal bytes, or the same thing to encode.
impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Bytes(a), Value::Bytes(b)) => a == b,
            (Value::Later(a), Value::Later(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for Value {}

/// Where a journal's batches are written and made durable: sled for the message store
/// ([`Journal::start`](super::Journal::start)), redb for the scheduler's (`crate::scheduler::db`).
pub trait Backend: Send + 'static {
    /// Whether `key` is stored now (a batch asks before it drops a put a remove cancelled).
    fn contains(&self, key: &[u8]) -> Result<bool, StoreError>;
    /// Writes one submission's writes, in order after every earlier unit. Atomic: a crash
    /// keeps all of a unit or none of it.
    fn write_unit(&mut self, unit: &[Write]) -> Result<(), StoreError>;
    /// Makes every unit written so far durable; callbacks (and so receipts) wait for it.
    fn sync(&mut self) -> Result<(), StoreError>;
}

/// The message store's backend: one sled tree, flushed through the store's [`Flusher`].
pub(super) struct SledBackend {
    pub(super) tree: sled::Tree,
    pub(super) flusher: Arc<Flusher>,
    pub(super) path: PathBuf,
}

impl SledBackend {
    fn sled_error(&self, action: &'static str, source: sled::Error) -> StoreError {
        StoreError::Sled {
            path: self.path.clone(),
            action,
            source,
        }
    }
}

impl Backend for SledBackend {
    fn contains(&self, key: &[u8]) -> Result<bool, StoreError> {
        (self.tree.contains_key(key))
            .map_err(|source| self.sled_error("checking a key before cancelling its put", source))
    }

    fn write_unit(&mut self, unit: &[Write]) -> Result<(), StoreError> {
        let failed = |source| self.sled_error("writing", source);
        match unit {
            // A lone put or remove needs no atomicity, and a plain insert costs about a quarter
            // of a one-entry apply_batch (measured: 10 us against 40 us). sled recovers its log
            // in order, so a crash keeps a prefix of the writes; none of them was receipted
            // yet, since the flush comes after.
            [write] => match &write.value {
                Some(value) => self
                    .tree
                    .insert(&write.key[..], &value.to_bytes()[..])
                    .map(drop),
                None => self.tree.remove(&write.key[..]).map(drop),
            }
            .map_err(failed),
            writes => {
                let mut sled_batch = sled::Batch::default();
                for write in writes {
                    match &write.value {
                        Some(value) => sled_batch.insert(&write.key[..], &value.to_bytes()[..]),
                        None => sled_batch.remove(&write.key[..]),
                    }
                }
                // SAFETY (atomicity): sled seals an apply_batch in its log so that recovery
                // replays all of it or none: this is what makes `Journal::apply` atomic.
                self.tree.apply_batch(sled_batch).map_err(failed)
            }
        }
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        // SAFETY (durability): sled's background flush is off (see store.rs), so this thread
        // is the only one flushing journal writes. The flusher syncs what sled's own flush
        // does not (see store.rs): without it a power cut loses receipted messages.
        self.flusher.flush()
    }
}
