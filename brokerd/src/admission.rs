//! Connections per client address: one address (a misbehaving client, a connection flood)
//! cannot take every connection slot of the node. The total is capped separately
//! (`--max-connections`, counted in [`crate::stats`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Open connections per client address, and how many one address may hold.
#[derive(Debug)]
pub struct Sources {
    limit: u32,
    open: Mutex<HashMap<IpAddr, u32>>,
}

/// One admitted connection's place in its address's count, given back when dropped (when the
/// session ends, however it ends).
#[derive(Debug)]
pub struct SourceSlot {
    sources: Arc<Sources>,
    ip: IpAddr,
}

impl Sources {
    pub fn new(limit: u32) -> Arc<Sources> {
        Arc::new(Sources {
            limit,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// The most connections one address may hold.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// A slot for one more connection from `ip`, unless it already holds the limit.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<SourceSlot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(ip).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(SourceSlot {
            sources: Arc::clone(self),
            ip,
        })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut open = (self.sources.open.lock()).unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_holds_at_most_the_limit_until_a_slot_is_given_back() {
        let sources = Sources::new(2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let first = sources.admit(a).unwrap();
        let _second = sources.admit(a).unwrap();
        assert!(sources.admit(a).is_none());
        let _other = sources.admit(b).unwrap();
        drop(first);
        assert!(sources.admit(a).is_some());
        assert_eq!(sources.open.lock().unwrap().len(), 2);
    }
}
