//! lockd's writes to the shared directory: the epoch claim and `holder.json`.
//!
//! Only the lock holder writes here, and only from the keeper thread, so that a filesystem that
//! hangs can stall nothing but that thread.

use shared_proto::holder::Holder;
use shared_proto::layout::Layout;
use shared_proto::nodes::NodeRecord;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

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
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(layout.epochs().join(candidate.to_string()))
        {
            Ok(file) => {
                file.sync_all()?;
                sync_dir(&layout.epochs())?;
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

/// Reads `holder.json`; `None` if no node ever held the lock.
pub fn read_holder(layout: &Layout) -> io::Result<Option<Holder>> {
    match fs::read(layout.holder()) {
        Ok(text) => serde_json::from_slice(&text)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Records, for every node, that the filesystem's locks let another node in (`evidence`).
pub fn record_broken_locks(layout: &Layout, node: &str, evidence: &str) -> io::Result<()> {
    let text = format!("{node}: {evidence}\n");
    write_atomically(&layout.broken_locks(), node, text.as_bytes())
}

/// What `SHARED/broken-locks` says, if any node recorded broken locks.
pub fn read_broken_locks(layout: &Layout) -> io::Result<Option<String>> {
    match fs::read_to_string(layout.broken_locks()) {
        Ok(text) => Ok(Some(text.trim().to_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes this node's `nodes/NODE.json` atomically.
pub fn write_node(layout: &Layout, record: &NodeRecord) -> io::Result<()> {
    let mut text = serde_json::to_vec(record).expect("node record serialises");
    text.push(b'\n');
    let path = layout.nodes().join(format!("{}.json", record.node));
    write_atomically(&path, &record.node, &text)
}

/// Reads every node's file, sorted by node name. A file that does not parse (a node of another
/// release, a stray file) is skipped: one bad file must not hide the rest of the cluster.
pub fn read_nodes(layout: &Layout) -> io::Result<Vec<NodeRecord>> {
    let mut records = Vec::new();
    for entry in fs::read_dir(layout.nodes())? {
        let path = entry?.path();
        let is_record = path.extension().is_some_and(|e| e == "json")
            && !path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if !is_record {
            continue;
        }
        match fs::read(&path).map(|text| serde_json::from_slice::<NodeRecord>(&text)) {
            Ok(Ok(record)) => records.push(record),
            Ok(Err(e)) => {
                tracing::debug!(path = %path.display(), error = %e, "skipping a node file")
            }
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "cannot read a node file")
            }
        }
    }
    records.sort_by(|a, b| a.node.cmp(&b.node));
    Ok(records)
}

/// temp file, fsync, rename, fsync of the directory: the rename is atomic, the syncs make it
/// survive a crash of this node. The temp name carries the node's name (unique in the cluster),
/// so two nodes never write through the same temp file, even when both believe they hold the
/// lock.
fn write_atomically(path: &Path, node: &str, contents: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.{node}.tmp"));
    // An explicit mode, whatever lockd's umask: brokerd (another user) reads the epoch file.
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_proto::holder::HolderState;

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
        assert_eq!(read_holder(&layout).unwrap(), None);
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
        assert_eq!(read_holder(&layout).unwrap(), Some(holder));
    }
}
