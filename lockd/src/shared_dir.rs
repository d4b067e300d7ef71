//! lockd's writes to the shared directory: the epoch claim and `holder.json`.
//!
//! Only the lock holder writes here, and only from the keeper thread, so that a filesystem that
//! hangs can stall nothing but that thread.

use shared_proto::holder::{self, Holder};
use shared_proto::layout::Layout;
use shared_proto::nodes::{self, NodeRecord};
use shared_proto::shared_file::{self, write_atomically};
use std::fs;
use std::io;

/// How far a claim walks past a taken epoch before giving up (each step is one O_EXCL create).
const CLAIM_ATTEMPTS: u64 = 1000;

/// Claimed epochs older than this many below ours are pruned, one per claim, so `epochs/` stays
/// small without ever listing it.
const EPOCHS_KEPT: u64 = 64;

/// How much of `SHARED/broken-locks` is read and shown (`ctl status`, the log): a record is one
/// line of evidence; whatever else the file holds is cut off and said to be.
pub const BROKEN_LOCKS_SHOWN: usize = 1024;

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

/// Reads `holder.json`; `None` if no node ever held the lock. Anything but a regular file of at
/// most [`holder::LIMIT`] bytes is an error naming the path.
pub fn read_holder(layout: &Layout) -> io::Result<Option<Holder>> {
    let path = layout.holder();
    match shared_file::read_regular(&path, holder::LIMIT) {
        Ok(text) => serde_json::from_slice(&text).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: not a holder record: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Records, for every node, that the filesystem's locks let another node in (`evidence`).
pub fn record_broken_locks(layout: &Layout, node: &str, evidence: &str) -> io::Result<()> {
    let text = format!("{node}: {evidence}\n");
    write_atomically(&layout.broken_locks(), node, text.as_bytes())
}

/// What `SHARED/broken-locks` says, if any node recorded broken locks: at most
/// [`BROKEN_LOCKS_SHOWN`] bytes of it. Present in any form (too long, not a regular file, a
/// link) it still means "the locks are broken": only its absence is good news.
pub fn read_broken_locks(layout: &Layout) -> io::Result<Option<String>> {
    let path = layout.broken_locks();
    match shared_file::read_prefix(&path, BROKEN_LOCKS_SHOWN) {
        Ok(prefix) => {
            let text = String::from_utf8_lossy(&prefix.bytes);
            let mut shown = text.trim().to_owned();
            if prefix.truncated {
                shown.push_str(" [cut off: the record is longer than this]");
            }
            Ok(Some(shown))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => Ok(Some(e.to_string())),
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

/// Reads the node files, sorted by node name: at most [`nodes::MAX_RECORDS`] of them (the
/// first by file name among the first [`nodes::MAX_ENTRIES`] entries), each a regular file of at
/// most [`nodes::RECORD_LIMIT`] bytes. A file that is not one, or does not parse (a node of
/// another release, a stray file), is skipped: one bad file must not hide the rest of the
/// cluster, nor block this thread (a FIFO is refused without waiting for a writer).
pub fn read_nodes(layout: &Layout) -> io::Result<Vec<NodeRecord>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(layout.nodes())?.take(nodes::MAX_ENTRIES) {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".json") && !name.starts_with('.') {
            names.push(name.into_owned());
        }
    }
    names.sort();
    let mut records = Vec::new();
    for name in names {
        if records.len() == nodes::MAX_RECORDS {
            tracing::debug!(limit = nodes::MAX_RECORDS, "more node files than are shown");
            break;
        }
        let path = layout.nodes().join(&name);
        match shared_file::read_regular(&path, nodes::RECORD_LIMIT)
            .map(|text| serde_json::from_slice::<NodeRecord>(&text))
        {
            Ok(Ok(record)) => records.push(record),
            Ok(Err(e)) => {
                tracing::debug!(path = %path.display(), error = %e, "skipping a node file")
            }
            Err(e) => tracing::debug!(error = %e, "cannot read a node file"),
        }
    }
    records.sort_by(|a, b| a.node.cmp(&b.node));
    Ok(records)
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

    #[test]
    fn a_fifo_a_link_or_a_huge_file_in_nodes_is_skipped_without_blocking() {
        let (dir, layout) = prepared();
        let record = NodeRecord {
            node: "n1".into(),
            host: "h".into(),
            lockd_pid: 1,
            role: shared_proto::admin::Role::Passive,
            epoch: None,
            since_unix_ms: 1,
            reason: "started".into(),
            heartbeat_unix_ms: 2,
        };
        write_node(&layout, &record).unwrap();
        let nodes = layout.nodes();
        nix::unistd::mkfifo(
            &nodes.join("zz.json"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        fs::write(dir.path().join("secret"), "{}").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), nodes.join("link.json")).unwrap();
        fs::write(nodes.join("huge.json"), vec![b' '; nodes::RECORD_LIMIT + 1]).unwrap();
        // Before the fix this read blocked for ever on the FIFO.
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = layout.clone();
        std::thread::spawn(move || tx.send(read_nodes(&reader).unwrap()).unwrap());
        let records = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("read_nodes blocked");
        assert_eq!(records, vec![record]);
    }

    #[test]
    fn the_broken_locks_record_is_read_bounded_and_still_counts_when_odd() {
        let (_dir, layout) = prepared();
        assert_eq!(read_broken_locks(&layout).unwrap(), None);
        fs::write(layout.broken_locks(), vec![b'x'; 10 << 20]).unwrap();
        let shown = read_broken_locks(&layout).unwrap().unwrap();
        assert!(shown.len() < BROKEN_LOCKS_SHOWN + 100, "{}", shown.len());
        assert!(shown.ends_with("[cut off: the record is longer than this]"));
        fs::remove_file(layout.broken_locks()).unwrap();
        nix::unistd::mkfifo(
            &layout.broken_locks(),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let shown = read_broken_locks(&layout).unwrap().unwrap();
        assert!(shown.contains("is a FIFO"), "{shown}");
    }

    #[test]
    fn a_fifo_as_holder_json_is_an_error_not_a_hang() {
        let (_dir, layout) = prepared();
        nix::unistd::mkfifo(
            &layout.holder(),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let err = read_holder(&layout).unwrap_err().to_string();
        assert!(err.contains("holder.json is a FIFO"), "{err}");
    }
}
