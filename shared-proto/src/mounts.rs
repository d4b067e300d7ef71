//! What filesystem a shared directory is on, how it is mounted, and which of the known traps of
//! shared-filesystem locking that implies.
//!
//! Shared-filesystem failover is only as good as the filesystem's locks, and the worst traps are
//! visible in the mount options: NFS `nolock`, GFS2 `localflocks`, CIFS `nobrl` each make locks
//! local to one host, so every node would believe it holds the lock. `ctl check-lock` and lockd's
//! start-up check report these next to what the lock test itself saw.

use serde::Serialize;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The filesystem under one path: the statfs type and the `/proc/self/mountinfo` entry.
#[derive(Debug, Clone, Serialize)]
pub struct Filesystem {
    /// The path as the caller gave it (not canonicalised), so the report names what the
    /// operator typed.
    pub path: PathBuf,
    /// stat(2) `st_dev` of the path: one number per mounted filesystem (superblock), shared
    /// by bind mounts of it; [`crate::placement`] compares it first.
    pub dev: u64,
    /// statfs(2) `f_type`, the kernel's own word on the filesystem.
    pub magic: u64,
    /// The type mountinfo names (`nfs4`, `fuse.bindfs`, ...), or the magic's name when no
    /// mountinfo entry was found.
    pub fs_type: String,
    /// Where the filesystem is mounted; `None` when mountinfo had no entry containing the path.
    pub mount_point: Option<PathBuf>,
    /// What is mounted there (`server:/export`, a device, a FUSE daemon's source directory):
    /// which server or device the nodes must agree on. `None` as for `mount_point`.
    pub source: Option<String>,
    /// Per-mount and superblock options, in mountinfo's order.
    pub options: Vec<String>,
}

/// How much a trap matters to the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; the lock can still be exclusive.
    Note,
    /// A known way for the lock to misbehave between hosts, which no test from one host can see.
    Warning,
    /// The lock cannot be exclusive between hosts on this mount.
    Fail,
}

/// One known trap that applies to a filesystem, with what to do about it.
#[derive(Debug, Clone, Serialize)]
pub struct Trap {
    /// Whether the trap fails the check, warns, or is only worth knowing.
    pub severity: Severity,
    /// What goes wrong and what to do about it, as one sentence for the operator.
    pub message: String,
}

impl Filesystem {
    /// Reads statfs and mountinfo for `path`. Blocks as long as the filesystem does: statfs on
    /// a hung network or FUSE mount waits for it.
    pub fn probe(path: &Path) -> io::Result<Filesystem> {
        let stat = nix::sys::statfs::statfs(path).map_err(io::Error::from)?;
        let magic = stat.filesystem_type().0 as u64;
        let dev = std::fs::metadata(path)?.dev();
        let canonical = std::fs::canonicalize(path)?;
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let entry = find_mount(&mountinfo, &canonical, dev);
        Ok(match entry {
            Some(m) => Filesystem {
                path: path.to_owned(),
                dev,
                magic,
                fs_type: m.fs_type,
                mount_point: Some(m.mount_point),
                source: Some(m.source),
                options: m.options,
            },
            None => Filesystem {
                path: path.to_owned(),
                dev,
                magic,
                fs_type: magic_name(magic).unwrap_or("unknown").to_owned(),
                mount_point: None,
                source: None,
                options: Vec::new(),
            },
        })
    }

    /// The known traps this filesystem and its options fall into.
    pub fn traps(&self) -> Vec<Trap> {
        traps(&self.fs_type, &self.options)
    }

    /// A one-line description for reports.
    pub fn describe(&self) -> String {
        let mut text = format!("{} (statfs magic {:#x})", self.fs_type, self.magic);
        if let Some(point) = &self.mount_point {
            text.push_str(&format!(" mounted on {}", point.display()));
        }
        if let Some(source) = &self.source {
            text.push_str(&format!(" from {source}"));
        }
        if !self.options.is_empty() {
            text.push_str(&format!(", options {}", self.options.join(",")));
        }
        text
    }
}

/// Network filesystems: mounts on several hosts show the same files, served from one
/// `server:/export` (the rule [`crate::placement::compare`] uses for two paths on them).
pub fn is_network(fs_type: &str) -> bool {
    matches!(
        fs_type,
        "nfs"
            | "nfs4"
            | "cifs"
            | "smb3"
            | "smbfs"
            | "ceph"
            | "fuse.ceph-fuse"
            | "glusterfs"
            | "fuse.glusterfs"
            | "lustre"
            | "gpfs"
            | "beegfs"
            | "9p"
            | "afs"
    )
}

/// Filesystems made to be shared between hosts: network ones and the shared-disk cluster
/// filesystems (GFS2, OCFS2). A directory on one is a cluster's, not one host's local disk.
pub fn is_shared(fs_type: &str) -> bool {
    is_network(fs_type) || matches!(fs_type, "gfs2" | "ocfs2")
}

/// One line of `/proc/self/mountinfo`, the parts we use.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MountEntry {
    dev: (u64, u64),
    mount_point: PathBuf,
    fs_type: String,
    source: String,
    options: Vec<String>,
}

/// The mount `path` lives on: among the entries with the path's device, the one with the
/// longest mount point that contains the path (the last one if stacked); by prefix alone if no
/// device matches (some FUSE and overlay mounts report another device in stat).
fn find_mount(mountinfo: &str, path: &Path, dev: u64) -> Option<MountEntry> {
    let dev = (
        nix::sys::stat::major(dev) as u64,
        nix::sys::stat::minor(dev) as u64,
    );
    let entries: Vec<MountEntry> = mountinfo.lines().filter_map(parse_mountinfo_line).collect();
    let best = |same_dev: bool| {
        entries
            .iter()
            .filter(|m| path.starts_with(&m.mount_point) && (!same_dev || m.dev == dev))
            .max_by_key(|m| m.mount_point.as_os_str().len())
            .map(|longest| {
                // Stacked mounts on one point: the last mounted is the one in effect.
                let point = &longest.mount_point;
                entries
                    .iter()
                    .rev()
                    .find(|m| &m.mount_point == point && (!same_dev || m.dev == dev))
                    .unwrap_or(longest)
                    .clone()
            })
    };
    best(true).or_else(|| best(false))
}

/// Parses `36 35 98:0 /root /mnt/point rw,noatime master:1 - ext4 /dev/sda1 rw,errors=continue`.
fn parse_mountinfo_line(line: &str) -> Option<MountEntry> {
    let (left, right) = line.split_once(" - ")?;
    let left: Vec<&str> = left.split(' ').collect();
    let mut right = right.split(' ');
    let (major, minor) = left.get(2)?.split_once(':')?;
    let mount_point = PathBuf::from(unescape_octal(left.get(4)?));
    let mount_options = left.get(5)?.split(',');
    let fs_type = right.next()?.to_owned();
    let source = unescape_octal(right.next()?);
    let super_options = right.next().unwrap_or("").split(',');
    let mut options: Vec<String> = Vec::new();
    for option in mount_options.chain(super_options) {
        if !option.is_empty() && !options.iter().any(|o| o == option) {
            options.push(option.to_owned());
        }
    }
    Some(MountEntry {
        dev: (major.parse().ok()?, minor.parse().ok()?),
        mount_point,
        fs_type,
        source,
        options,
    })
}

/// mountinfo writes space, tab, newline and backslash as `\040`-style octal escapes.
fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let digits = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("");
            if let Ok(value) = u8::from_str_radix(digits, 8) {
                out.push(value);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Names of the statfs magics an operator is likely to meet.
fn magic_name(magic: u64) -> Option<&'static str> {
    Some(match magic {
        0x6969 => "nfs",
        0x6573_5546 => "fuse",
        0x7461_636f => "ocfs2",
        0x0116_1970 => "gfs2",
        0x00c3_6400 => "ceph",
        0xff53_4d42 => "cifs",
        0xfe53_4d42 => "smb2",
        0x0bd0_0bd0 => "lustre",
        0x4750_4653 => "gpfs",
        0xef53 => "ext4",
        0x5846_5342 => "xfs",
        0x9123_683e => "btrfs",
        0x0102_1994 => "tmpfs",
        0x794c_7630 => "overlay",
        0x2fc1_2fc1 => "zfs",
        _ => return None,
    })
}

/// Filesystems one host mounts on its own: their locks are shared between this host's processes
/// only (unless marked `_netdev`, which says someone set them up as network storage).
fn is_local_type(fs_type: &str) -> bool {
    matches!(
        fs_type,
        "ext2" | "ext3" | "ext4" | "xfs" | "btrfs" | "tmpfs" | "overlay" | "zfs" | "f2fs" | "ramfs"
    )
}

/// The known traps for a filesystem type and its mount options.
fn traps(fs_type: &str, options: &[String]) -> Vec<Trap> {
    let has = |o: &str| options.iter().any(|x| x == o);
    let value = |key: &str| {
        options
            .iter()
            .find_map(|o| o.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
    };
    let trap = |severity, message: &str| Trap {
        severity,
        message: message.to_owned(),
    };
    let mut found = Vec::new();
    if fs_type.starts_with("nfs") {
        let version = value("vers").or_else(|| value("nfsvers"));
        if fs_type == "nfs" && (version.is_none_or(|v| v.starts_with('3')) || has("v3")) {
            found.push(trap(
                Severity::Warning,
                "NFSv3: locks go through NLM and statd; a holder that dies while its host \
                 stays up, or is cut off, can leave an orphaned lock no other node can take until \
                 that host reboots (ctl status names the stale holder). Mount with vers=4.1 or \
                 later, where the server drops a dead client's locks when its lease expires",
            ));
        }
        if has("nolock") || value("local_lock") == Some("all") {
            found.push(trap(
                Severity::Fail,
                "NFS mounted with nolock or local_lock=all: locks are local to this host, so \
                 every node would hold the lock. Remount without them",
            ));
        } else if let Some(kind @ ("posix" | "flock")) = value("local_lock") {
            found.push(trap(
                Severity::Warning,
                &format!(
                    "NFS mounted with local_lock={kind}: {} locks are local to this host and \
                     only the other kind is shared. Remount without local_lock",
                    if kind == "posix" { "fcntl" } else { "flock" }
                ),
            ));
        }
    }
    if fs_type == "ocfs2" {
        if has("localflocks") && value("cluster_stack").is_none() {
            found.push(trap(
                Severity::Fail,
                "OCFS2 with localflocks and the o2cb stack: neither flock nor fcntl locks are \
                 shared between nodes, so every node would hold the lock. Remount without \
                 localflocks",
            ));
        } else if value("cluster_stack").is_none() {
            found.push(trap(
                Severity::Warning,
                "OCFS2 with the o2cb stack shares flock locks between nodes but not fcntl locks \
                 (both nodes believed they held ActiveMQ's lock); lockd needs both, so flock \
                 protects it. Do not mount with localflocks",
            ));
        }
    }
    if fs_type == "gfs2" && (has("localflocks") || value("lockproto") == Some("lock_nolock")) {
        found.push(trap(
            Severity::Fail,
            "GFS2 with localflocks or lockproto=lock_nolock: locks are local to this host, so \
             every node would hold the lock. Remount without them",
        ));
    }
    if matches!(fs_type, "cifs" | "smb3") && has("nobrl") {
        found.push(trap(
            Severity::Fail,
            "CIFS mounted with nobrl: byte-range locks are not sent to the server, so every \
             node would hold the lock. Remount without nobrl",
        ));
    }
    if fs_type == "fuse" || fs_type.starts_with("fuse.") {
        found.push(trap(
            Severity::Warning,
            "FUSE filesystem: locks reach other mounts only if the daemon forwards them (bindfs \
             needs --enable-lock-forwarding). Test each node's mount path with --other-path. \
             bindfs forwards fcntl locks as its own POSIX locks, so any close of the lock file \
             through the same mount (a process reading it, a child's exec) drops them; lockd's \
             flock still holds",
        ));
    }
    if is_local_type(fs_type) && !has("_netdev") {
        found.push(trap(
            Severity::Note,
            "a local filesystem: the lock is shared by the nodes on this host only (fine for \
             one host or for testing; a cluster needs a cluster filesystem)",
        ));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
40 22 0:35 / /mnt/shared rw,relatime shared:20 - nfs4 srv:/export rw,vers=4.2,hard,proto=tcp
41 22 0:36 / /mnt/old rw,relatime shared:21 - nfs srv:/old rw,vers=3,nolock
42 22 0:37 / /mnt/with\\040space rw - fuse.bindfs /src rw,user_id=0
43 22 0:38 / /mnt/shared/sub rw - tmpfs tmpfs rw";

    fn entry(path: &str, dev: (u64, u64)) -> Option<MountEntry> {
        let dev = nix::sys::stat::makedev(dev.0, dev.1);
        find_mount(MOUNTINFO, Path::new(path), dev)
    }

    #[test]
    fn the_longest_mount_point_with_the_paths_device_wins() {
        let m = entry("/mnt/shared/dir", (0, 35)).unwrap();
        assert_eq!(m.fs_type, "nfs4");
        assert_eq!(m.source, "srv:/export");
        assert!(m.options.contains(&"vers=4.2".to_owned()));
        assert_eq!(
            entry("/mnt/shared/sub/x", (0, 38)).unwrap().fs_type,
            "tmpfs"
        );
        assert_eq!(entry("/etc", (8, 1)).unwrap().fs_type, "ext4");
        // An unknown device falls back to the longest prefix.
        assert_eq!(entry("/mnt/old/x", (9, 9)).unwrap().fs_type, "nfs");
    }

    #[test]
    fn escaped_mount_points_are_decoded() {
        let m = entry("/mnt/with space/d", (0, 37)).unwrap();
        assert_eq!(m.mount_point, PathBuf::from("/mnt/with space"));
        assert_eq!(m.fs_type, "fuse.bindfs");
    }

    fn severities(fs_type: &str, options: &str) -> Vec<Severity> {
        let options: Vec<String> = options.split(',').map(str::to_owned).collect();
        traps(fs_type, &options)
            .iter()
            .map(|t| t.severity)
            .collect()
    }

    #[test]
    fn local_only_lock_options_fail_and_lingering_locks_warn() {
        assert_eq!(severities("nfs4", "rw,vers=4.2"), vec![]);
        assert_eq!(severities("nfs", "rw,vers=3"), vec![Severity::Warning]);
        assert_eq!(
            severities("nfs", "rw,vers=3,nolock"),
            vec![Severity::Warning, Severity::Fail]
        );
        assert_eq!(
            severities("nfs4", "rw,local_lock=all"),
            vec![Severity::Fail]
        );
        assert_eq!(
            severities("nfs4", "rw,local_lock=posix"),
            vec![Severity::Warning]
        );
        assert_eq!(severities("gfs2", "rw,localflocks"), vec![Severity::Fail]);
        assert_eq!(severities("ocfs2", "rw,localflocks"), vec![Severity::Fail]);
        assert_eq!(severities("ocfs2", "rw"), vec![Severity::Warning]);
        assert_eq!(severities("ocfs2", "rw,cluster_stack=pcmk"), vec![]);
        assert_eq!(severities("cifs", "rw,nobrl"), vec![Severity::Fail]);
        assert_eq!(severities("fuse.bindfs", "rw"), vec![Severity::Warning]);
        assert_eq!(severities("ext4", "rw"), vec![Severity::Note]);
        assert_eq!(severities("ext4", "rw,_netdev"), vec![]);
    }

    #[test]
    fn a_real_directory_is_probed() {
        let dir = tempfile::tempdir().unwrap();
        let fs = Filesystem::probe(dir.path()).unwrap();
        assert!(fs.mount_point.is_some(), "{fs:?}");
        assert!(!fs.fs_type.is_empty());
    }
}
