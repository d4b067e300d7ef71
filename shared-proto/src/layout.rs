//! The shared directory's layout, its marker, and its one-time preparation.
//!
//! lockd refuses a directory without the marker: a node whose cluster filesystem is not mounted
//! would otherwise lock the empty local directory underneath the mount point and become a second
//! active. The marker is written once, by `ctl init` (or `lockd --init`), never by a running node.

use crate::shared_file;
use serde::{Deserialize, Serialize};
use std::fs::{self, DirBuilder};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The most `SHARED/epoch` may hold: a number and a newline.
const EPOCH_LIMIT: usize = 32;

/// The most the marker may hold; ours is about a hundred bytes.
const MARKER_LIMIT: usize = 4096;

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
    #[error("{dir} has no {MARKER} marker: is the shared filesystem mounted there? Prepare a new shared directory once with `ctl init {dir}` (or set init = \"if-mounted\" in lockd's config where it is the cluster filesystem's mount, or start lockd with --init)")]
    NoMarker { dir: String },
    #[error("marker {path} is unreadable: {source}")]
    BadMarker { path: String, source: io::Error },
    #[error("{path} was prepared for layout version {found}, this release reads version {LAYOUT_VERSION}")]
    LayoutVersion { path: String, found: u32 },
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    /// A control path the broker (or anyone) could change: it could replace `lock` or plant
    /// files that steer lockd, which runs as root.
    #[error("{path} {problem}: only lockd may change the shared directory's control files (DESIGN invariant 8); fix it with `{fix}`")]
    Unsafe {
        path: String,
        problem: String,
        fix: String,
    },
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

    /// Reads the latest claimed epoch from `SHARED/epoch` (a regular file of a few bytes, never
    /// a link).
    pub fn read_epoch(&self) -> io::Result<u64> {
        let path = self.epoch();
        let bytes = shared_file::read_regular(&path, EPOCH_LIMIT)?;
        let text = String::from_utf8_lossy(&bytes);
        text.trim().parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} holds {:?}, not a number", path.display(), text.trim()),
            )
        })
    }

    /// Whether an epoch other than `ours` has been claimed since we claimed ours: the `epoch`
    /// file names another (a newer one, or an older one if someone rewound it, which is just
    /// as fatal), or the next claim file exists (a node that claimed but has not yet updated
    /// `epoch`). lockd's keepalive and brokerd's fence poll both ask this. Any entry named for
    /// the next epoch counts as a claim; an error looking for it is an error ("cannot tell"),
    /// never "no newer claim".
    pub fn newer_epoch(&self, ours: u64) -> io::Result<Option<u64>> {
        let recorded = self.read_epoch()?;
        if recorded != ours {
            return Ok(Some(recorded));
        }
        let next = self.epochs().join((ours + 1).to_string());
        match fs::symlink_metadata(&next) {
            Ok(_) => Ok(Some(ours + 1)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io::Error::new(e.kind(), format!("{}: {e}", next.display()))),
        }
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

    /// The paths only lockd may change: the directory itself, `lock`, `epoch`, `epochs/`,
    /// `nodes/`, `holder.json`, the marker and `broken-locks`.
    pub fn control_paths(&self) -> [PathBuf; 8] {
        [
            self.root.clone(),
            self.lock(),
            self.epoch(),
            self.epochs(),
            self.nodes(),
            self.holder(),
            self.marker(),
            self.broken_locks(),
        ]
    }

    /// Refuses control paths that `broker` could change (DESIGN: "the broker user can write
    /// `data/` and `scheduler/` but nothing else"): owned by the broker user (an owner can
    /// chmod), writable by the broker's group or by others, or a symbolic link below the
    /// directory. Paths that do not exist yet are skipped (lockd creates them).
    ///
    /// `broker` is `None` when brokerd runs as lockd's own user (the README's single-user
    /// setup): that user owns everything and there is no second principal to keep out, so only
    /// group- and other-writable paths are refused. The check protects against an unprivileged
    /// broker user different from lockd's user, and against everybody else.
    pub fn check_control_paths(
        &self,
        lockd_uid: u32,
        broker: Option<(u32, u32)>,
    ) -> Result<(), LayoutError> {
        for path in self.control_paths() {
            let meta = match fs::symlink_metadata(&path) {
                Ok(meta) => meta,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(LayoutError::Io {
                        path: path.display().to_string(),
                        source,
                    })
                }
            };
            let shown = path.display().to_string();
            let unsafe_path = |problem: String, fix: String| LayoutError::Unsafe {
                path: shown.clone(),
                problem,
                fix,
            };
            if path != self.root && meta.file_type().is_symlink() {
                return Err(unsafe_path(
                    "is a symbolic link".into(),
                    format!("rm {shown} && ctl init {}", self.root.display()),
                ));
            }
            let mode = meta.mode() & 0o7777;
            let tight = if meta.is_dir() { "0755" } else { "0644" };
            if let Some((uid, _)) = broker.filter(|(uid, _)| *uid != lockd_uid) {
                if meta.uid() == uid {
                    return Err(unsafe_path(
                        format!("is owned by the broker user (uid {uid})"),
                        format!("chown {lockd_uid} {shown} && chmod {tight} {shown}"),
                    ));
                }
            }
            let group_can_write =
                mode & 0o020 != 0 && broker.is_none_or(|(_, gid)| gid == meta.gid());
            if group_can_write || mode & 0o002 != 0 {
                let who = if mode & 0o002 != 0 {
                    "others".to_owned()
                } else {
                    format!("its group (gid {})", meta.gid())
                };
                return Err(unsafe_path(
                    format!("has mode {mode:04o}: writable by {who}"),
                    format!("chmod go-w {shown}"),
                ));
            }
        }
        Ok(())
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
        let text = match shared_file::read_regular(&path, MARKER_LIMIT) {
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
            // Through a descriptor opened without following links: a link planted under this
            // name must not have root hand its target (/etc, say) to the broker user.
            let handle = fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&dir)
                .map_err(|e| LayoutError::Unsafe {
                    path: dir.display().to_string(),
                    problem: format!("is not a directory of its own, but a link or a file ({e})"),
                    fix: format!("rm {}", dir.display()),
                })?;
            handle
                .set_permissions(fs::Permissions::from_mode(0o750))
                .map_err(io_err(&dir))?;
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::fchown(&handle, Some(uid), Some(gid)).map_err(io_err(&dir))?;
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

/// Creates `path` with `contents` unless it exists, so that it is never seen empty or half
/// written: two nodes preparing one directory at once (their packages started together) must
/// both read the one marker whole. The contents go to a temporary file of a random name, fsynced,
/// then hard-linked to `path` (link(2) fails where `path` exists, on NFS too) and the directory
/// fsynced so the creation survives a crash of the node that prepared it.
fn create_if_missing(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.{}{TEMPORARY_SUFFIX}", random_id()));
    let mut file = shared_file::create_new(&tmp)?;
    let linked = file
        .write_all(contents)
        .and_then(|()| file.sync_all())
        .and_then(|()| fs::hard_link(&tmp, path));
    let removed = fs::remove_file(&tmp);
    match linked {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        other => other?,
    }
    removed?;
    shared_file::sync_dir(dir)
}

/// Whether `name`, an entry of a shared directory, is one [`Layout::init`] makes (or one of its
/// temporary files): all a directory another node is still preparing may hold besides what its
/// filesystem puts there.
pub fn made_by_init(name: &str) -> bool {
    matches!(
        name,
        MARKER | "lock" | "epoch" | "epochs" | "nodes" | "data" | "scheduler"
    ) || (name.starts_with('.') && name.ends_with(TEMPORARY_SUFFIX))
}

/// How the temporary files of [`Layout::init`] end: a directory being prepared by another node
/// holds such names for a moment.
pub const TEMPORARY_SUFFIX: &str = ".tmp";

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
    fn a_link_planted_as_data_is_refused_and_its_target_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        fs::create_dir(&target).unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o755)).unwrap();
        let root = dir.path().join("shared");
        fs::create_dir(&root).unwrap();
        std::os::unix::fs::symlink(&target, root.join("data")).unwrap();
        let err = Layout::new(&root).init(None).unwrap_err().to_string();
        assert!(err.contains("is not a directory of its own"), "{err}");
        let mode = fs::metadata(&target).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o755, "the link's target was not touched");
        assert!(!root.join(MARKER).exists());
    }

    #[test]
    fn nodes_preparing_one_directory_at_once_all_read_one_whole_marker() {
        let dir = tempfile::tempdir().unwrap();
        for round in 0..20 {
            let root = dir.path().join(format!("shared-{round}"));
            let markers: Vec<Marker> = std::thread::scope(|scope| {
                let preparing: Vec<_> = (0..8)
                    .map(|_| scope.spawn(|| Layout::new(&root).init(None)))
                    .collect();
                preparing
                    .into_iter()
                    .map(|p| p.join().unwrap().expect("every node reads the marker"))
                    .collect()
            });
            assert!(markers.iter().all(|m| m == &markers[0]), "{markers:?}");
            let left: Vec<String> = fs::read_dir(&root)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|name| !made_by_init(name) || name.starts_with('.'))
                .collect();
            assert!(left.is_empty(), "no temporary file is left: {left:?}");
        }
    }

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

    #[test]
    fn control_paths_the_broker_could_change_are_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path().join("shared"));
        layout.init(None).unwrap();
        // A broker uid that is not the test's own (which owns the files), whoever runs it.
        let broker_uid = if nix::unistd::geteuid().as_raw() == 4242 {
            4243
        } else {
            4242
        };
        let (lockd, broker) = (0, Some((broker_uid, broker_uid)));
        layout.check_control_paths(lockd, broker).unwrap();
        layout.check_control_paths(lockd, None).unwrap();

        let nodes = layout.nodes();
        fs::set_permissions(&nodes, fs::Permissions::from_mode(0o777)).unwrap();
        let err = layout
            .check_control_paths(lockd, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("nodes has mode 0777: writable by others"),
            "{err}"
        );
        assert!(
            err.contains(&format!("chmod go-w {}", nodes.display())),
            "{err}"
        );
        fs::set_permissions(&nodes, fs::Permissions::from_mode(0o755)).unwrap();

        let epoch = layout.epoch();
        let group = fs::metadata(&epoch).unwrap().gid();
        fs::set_permissions(&epoch, fs::Permissions::from_mode(0o664)).unwrap();
        let err = layout
            .check_control_paths(lockd, Some((broker_uid, group)))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("writable by its group (gid {group})")),
            "{err}"
        );
        layout
            .check_control_paths(lockd, Some((broker_uid, group + 1)))
            .unwrap();
        fs::set_permissions(&epoch, fs::Permissions::from_mode(0o644)).unwrap();

        let owner = fs::metadata(layout.lock()).unwrap().uid();
        // The files' owner named as the broker, lockd as another uid.
        let err = layout
            .check_control_paths(owner + 1, Some((owner, 65534)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("is owned by the broker user"), "{err}");
        assert!(err.contains(&format!("chown {}", owner + 1)), "{err}");

        std::os::unix::fs::symlink(layout.epoch(), layout.broken_locks()).unwrap();
        let err = layout
            .check_control_paths(owner, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("broken-locks is a symbolic link"), "{err}");
    }
}
