//! Reading the shared directory's records: `holder.json`, every `nodes/NODE.json` and
//! `broken-locks`, bounded and as regular files only (no link followed, no FIFO waited on), so
//! that a hostile or broken file costs an error, never a hang or a flood. lockd's keeper, its
//! status, and the web console all read them here.

use crate::holder::{self, Holder};
use crate::layout::Layout;
use crate::nodes::{self, NodeRecord};
use crate::shared_file;
use std::fs;
use std::io;

/// How much of `SHARED/broken-locks` is read and shown (`ctl status`, the log, the console): a
/// record is one line of evidence; whatever else the file holds is cut off and said to be.
pub const BROKEN_LOCKS_SHOWN: usize = 1024;

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
            break;
        }
        let read = shared_file::read_regular(&layout.nodes().join(&name), nodes::RECORD_LIMIT);
        if let Ok(Ok(record)) = read.map(|text| serde_json::from_slice::<NodeRecord>(&text)) {
            records.push(record);
        }
    }
    records.sort_by(|a, b| a.node.cmp(&b.node));
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prepared() -> (tempfile::TempDir, Layout) {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path().join("shared"));
        layout.init(None).unwrap();
        (dir, layout)
    }

    #[test]
    fn a_fifo_a_link_or_a_huge_file_in_nodes_is_skipped_without_blocking() {
        let (dir, layout) = prepared();
        let record = NodeRecord {
            node: "n1".into(),
            host: "h".into(),
            lockd_pid: 1,
            role: crate::admin::Role::Passive,
            epoch: None,
            since_unix_ms: 1,
            reason: "started".into(),
            heartbeat_unix_ms: 2,
        };
        crate::shared_file::write_atomically(
            &layout.nodes().join("n1.json"),
            "n1",
            &serde_json::to_vec(&record).unwrap(),
        )
        .unwrap();
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
