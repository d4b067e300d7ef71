//! lockd's writes to the shared directory: the epoch claim and `holder.json`.
//!
//! Only the lock holder writes here, and only from the keeper thread, so that a filesystem that
//! hangs can stall nothing but that thread.

use shared_proto::holder::Holder;
use shared_proto::layout::Layout;
use shared_proto::nodes::NodeRecord;
use shared_proto::shared_file::{self, write_atomically};
use std::fs;
use std::io;

/// How far a claim walks past a taken epoch before giving up (each step is one O_EXCL create).
const CLAIM_ATTEMPTS: u64 = 1000;

/// Claimed epochs older than this many below ours are pruned, one per claim, so `epochs/` stays
/// small without ever listing it.
const EPOCHS_KEPT: u64 = 64;

/// Claims the next epoch: creates `epochs/N` with O_EXCL, which two nodes cannot both do even
/// where the filesystem's fcntl locks are broken, then records N in `epoch` for quick reading.
/// `node` names our temporary files, so two nodes never write through the same one.
pub fn claim_epoch(layout: &Layout, node: &str) -> io::Result<u64> {
    let mut candidate = layout.read_epoch()? + 1;
    for _ in 0..CLAIM_ATTEMPTS {
        match shared_file::create_new(&layout.epochs().join(candidate.to_string())) {
            Ok(file) => {
                file.sync_all()?;
                shared_file::sync_dir(&layout.epochs())?;
                write_atomically(&layout.epoch(), node, format!("{candidate}\n").as_bytes())?;
                if let Some(old) = candidate.checked_sub(EPOCHS_KEPT) {
                    let _ = fs::remove_file(layout.epochs().join(old.to_string()));
                }
                return Ok(candidate);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => candidate += 1,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other(format!(
        "could not claim an epoch after {CLAIM_ATTEMPTS} attempts in {}",
        layout.epochs().display()
    )))
}

/// Writes `holder.json` atomically: a reader sees the old or the new holder, never half of one.
pub fn write_holder(layout: &Layout, node: &str, holder: &Holder) -> io::Result<()> {
    let mut text = serde_json::to_vec(holder).expect("holder serialises");
    text.push(b'\n');
    write_atomically(&layout.holder(), node, &text)
}

/// Records, for every node, that the filesystem's locks let another node in (`evidence`).
pub fn record_broken_locks(layout: &Layout, node: &str, evidence: &str) -> io::Result<()> {
    let text = format!("{node}: {evidence}\n");
    write_atomically(&layout.broken_locks(), node, text.as_bytes())
}

/// Writes this node's `nodes/NODE.json` atomically.
pub fn write_node(layout: &Layout, record: &NodeRecord) -> io::Result<()> {
    let mut text = serde_json::to_vec(record).expect("node record serialises");
    text.push(b'\n');
    let path = layout.nodes().join(format!("{}.json", record.node));
    write_atomically(&path, &record.node, &text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_proto::holder::HolderState;
    use shared_proto::records;

    fn prepared() -> (tempfile::TempDir, Layout) {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path().join("shared"));
        layout.init(None).unwrap();
        (dir, layout)
    }

    #[test]
    fn claims_are_unique_and_skip_epochs_taken_behind_our_back() {
        let (_dir, layout) = prepared();
        assert_eq!(claim_epoch(&layout, "n1").unwrap(), 1);
        assert_eq!(claim_epoch(&layout, "n1").unwrap(), 2);
        // A node whose lock was not really exclusive claimed 3 but has not written `epoch` yet.
        fs::write(layout.epochs().join("3"), "").unwrap();
        assert_eq!(layout.newer_epoch(2).unwrap(), Some(3));
        assert_eq!(claim_epoch(&layout, "n1").unwrap(), 4);
        assert_eq!(layout.read_epoch().unwrap(), 4);
        assert_eq!(layout.newer_epoch(4).unwrap(), None);
        fs::write(layout.epoch(), "2\n").unwrap();
        assert_eq!(
            layout.newer_epoch(4).unwrap(),
            Some(2),
            "a rewound epoch is noticed too"
        );
    }

    #[test]
    fn holder_round_trips() {
        let (_dir, layout) = prepared();
        assert_eq!(records::read_holder(&layout).unwrap(), None);
        let holder = Holder {
            node: "n1".into(),
            host: "h".into(),
            pid: 1,
            epoch: 2,
            state: HolderState::Starting,
            since_unix_ms: 3,
            heartbeat_unix_ms: 4,
        };
        write_holder(&layout, "n1", &holder).unwrap();
        assert_eq!(records::read_holder(&layout).unwrap(), Some(holder));
    }
}
