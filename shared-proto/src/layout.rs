//! The shared directory's layout, its marker, and its one-time preparation.
//!
//! lockd refuses a directory without the marker: a node whose cluster filesystem is not mounted
//! would otherwise lock the empty local directory underneath the mount point and become a second
//! active. The marker is written once, by `ctl init` (or `lockd --init`), never by a running node.

use serde::{Deserialize, Serialize};
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Marker file name: proves the shared filesystem is mounted here.
pub const MARKER: &str = "cluster.json";

/// Contents of the marker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    /// Random id, shown by `ctl status` so an operator can tell two clusters' directories apart.
    pub cluster_id: String,
    pub created_unix_ms: u64,
    /// Layout version, bumped if the directory's structure ever changes incompatibly.
    pub layout: u32,
}

/// Layout version this release reads and writes.
pub const LAYOUT_VERSION: u32 = 1;

/// What is wrong with a shared directory, each with what the operator should do.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("shared directory {0} does not exist; create it (or mount the shared filesystem there), then run `ctl init {0}`")]
    Missing(String),
    #[error("{0} is not a directory")]
    NotADirectory(String),
    #[error("{dir} has no {MARKER} marker: is the shared filesystem mounted there? Prepare a new shared directory once with `ctl init {dir}` (or start lockd with --init)")]
    NoMarker { dir: String },
    #[error("marker {path} is unreadable: {source}")]
    BadMarker { path: String, source: io::Error },
    #[error("{path} was prepared for layout version {found}, this release reads version {LAYOUT_VERSION}")]
    LayoutVersion { path: String, found: u32 },
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
}

/// Paths inside one shared directory.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// A layout rooted at `root`; touches nothing on disk.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Layout { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn marker(&self) -> PathBuf {
        self.root.join(MARKER)
    }
    /// The lock file: locked by the active lockd, never deleted or replaced.
    pub fn lock(&self) -> PathBuf {
        self.root.join("lock")
    }
    pub fn holder(&self) -> PathBuf {
        self.root.join(crate::holder::FILE)
    }
    /// The latest claimed epoch, for quick reading; the claim itself is `epochs/N`.
    pub fn epoch(&self) -> PathBuf {
        self.root.join("epoch")
    }
    /// One file per claimed epoch, created with O_EXCL so two nodes cannot claim the same one
    /// even where fcntl locks are not shared between them.
    pub fn epochs(&self) -> PathBuf {
        self.root.join("epochs")
    }

    /// Present once any node has seen another claim the lock while its own still looked held:
    /// every node then distrusts the filesystem's locks until an operator removes it.
    pub fn broken_locks(&self) -> PathBuf {
        self.root.join("broken-locks")
    }

    /// Reads the latest claimed epoch from `SHARED/epoch`.
    pub fn read_epoch(&self) -> io::Result<u64> {
        let text = fs::read_to_string(self.epoch())?;
        text.trim().parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} holds {:?}, not a number",
                    self.epoch().display(),
                    text.trim()
                ),
            )
        })
    }

    /// Whether an epoch other than `ours` has been claimed since we claimed ours: the `epoch`
    /// file names another (a newer one, or an older one if someone rewound it, which is just
    /// as fatal), or the next claim file exists (a node that claimed but has not yet updated
    /// `epoch`). lockd's keepalive and brokerd's fence poll both ask this.
    pub fn newer_epoch(&self, ours: u64) -> io::Result<Option<u64>> {
        let recorded = self.read_epoch()?;
        if recorded != ours {
            return Ok(Some(recorded));
        }
        // try_exists: a lookup that fails is an error, not "no newer claim" (the fence must not
        // take a read error for a pass).
        if self.epochs().join((ours + 1).to_string()).try_exists()? {
            return Ok(Some(ours + 1));
        }
        Ok(None)
    }
    pub fn nodes(&self) -> PathBuf {
        self.root.join("nodes")
    }
    /// The broker's sled store; the only place besides `scheduler/` the broker user may write.
    pub fn data(&self) -> PathBuf {
        self.root.join("data")
    }
    pub fn scheduler(&self) -> PathBuf {
        self.root.join("scheduler")
    }

    /// Checks that the directory exists and carries a marker of this layout version.
    pub fn check(&self) -> Result<Marker, LayoutError> {
        let shown = self.root.display().to_string();
        match fs::metadata(&self.root) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(LayoutError::Missing(shown))
            }
            Err(source) => {
                return Err(LayoutError::Io {
                    path: shown,
                    source,
                })
            }
            Ok(meta) if !meta.is_dir() => return Err(LayoutError::NotADirectory(shown)),
            Ok(_) => {}
        }
        let path = self.marker();
        let text = match fs::read(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(LayoutError::NoMarker { dir: shown })
            }
            Err(source) => {
                return Err(LayoutError::BadMarker {
                    path: path.display().to_string(),
                    source,
                })
            }
            Ok(text) => text,
        };
        let marker: Marker = serde_json::from_slice(&text).map_err(|e| LayoutError::BadMarker {
            path: path.display().to_string(),
            source: e.into(),
        })?;
        if marker.layout != LAYOUT_VERSION {
            return Err(LayoutError::LayoutVersion {
                path: path.display().to_string(),
                found: marker.layout,
            });
        }
        Ok(marker)
    }

    /// Prepares the directory: creates it and its subdirectories, the lock and epoch files, hands
    /// `data/` and `scheduler/` to the broker user (`owner`, when given), and writes the marker
    /// last, so a half-prepared directory is never taken for a ready one. Idempotent: an existing
    /// marker and existing files are kept.
    pub fn init(&self, owner: Option<(u32, u32)>) -> Result<Marker, LayoutError> {
        let io_err = |path: &Path| {
            let path = path.display().to_string();
            move |source| LayoutError::Io { path, source }
        };
        let mut dirs = DirBuilder::new();
        dirs.recursive(true).mode(0o755);
        dirs.create(&self.root).map_err(io_err(&self.root))?;
        for dir in [self.epochs(), self.nodes()] {
            dirs.create(&dir).map_err(io_err(&dir))?;
        }
        for dir in [self.data(), self.scheduler()] {
            dirs.create(&dir).map_err(io_err(&dir))?;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o750)).map_err(io_err(&dir))?;
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).map_err(io_err(&dir))?;
            }
        }
        for (file, initial) in [(self.lock(), ""), (self.epoch(), "0\n")] {
            create_if_missing(&file, initial.as_bytes()).map_err(io_err(&file))?;
        }
        match self.check() {
            Ok(marker) => return Ok(marker),
            Err(LayoutError::NoMarker { .. }) => {}
            Err(other) => return Err(other),
        }
        let marker = Marker {
            cluster_id: random_id(),
            created_unix_ms: crate::unix_ms(),
            layout: LAYOUT_VERSION,
        };
        let mut text = serde_json::to_vec_pretty(&marker).expect("marker serialises");
        text.push(b'\n');
        let path = self.marker();
        create_if_missing(&path, &text).map_err(io_err(&path))?;
        self.check()
    }
}

/// Creates `path` with `contents` unless it exists, fsyncing the file and its directory so the
/// creation survives a crash of the node that prepared it.
fn create_if_missing(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut file = match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
    {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        other => other?,
    };
    file.write_all(contents)?;
    file.sync_all()?;
    if let Some(parent) = path.parent() {
        fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// 128 random bits from the kernel, hex-encoded.
fn random_id() -> String {
    let mut bytes = [0u8; 16];
    if let Ok(mut urandom) = fs::File::open("/dev/urandom") {
        let _ = io::Read::read_exact(&mut urandom, &mut bytes);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_prepares_once_and_check_accepts_it() {
        let dir = std::env::temp_dir().join(format!("layout-test-{}", std::process::id()));
        let layout = Layout::new(dir.join("shared"));
        assert!(matches!(layout.check(), Err(LayoutError::Missing(_))));
        let first = layout.init(None).unwrap();
        assert_eq!(layout.check().unwrap(), first);
        assert_eq!(layout.init(None).unwrap(), first, "init is idempotent");
        assert!(layout.lock().is_file() && layout.data().is_dir() && layout.epochs().is_dir());
        assert_eq!(fs::read_to_string(layout.epoch()).unwrap(), "0\n");
        fs::remove_file(layout.marker()).unwrap();
        let err = layout.check().unwrap_err();
        assert!(
            err.to_string().contains("is the shared filesystem mounted"),
            "{err}"
        );
        fs::remove_dir_all(dir).unwrap();
    }
}
