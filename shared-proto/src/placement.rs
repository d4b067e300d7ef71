//! Whether a store directory sits on the shared directory's filesystem: the guard that keeps the
//! scheduler's store (`scheduler_dir`) off a node's local disk, where a failover would silently
//! lose every pending schedule (DESIGN: "Shared directory").
//!
//! lockd checks at start against the shared directory; brokerd checks again at its own start,
//! against `--shared-dir` under lockd or its data directory when standalone. Both refuse with the
//! message of [`Mismatch::scheduler_refusal`] unless the operator opted out with
//! `scheduler_allow_local`, and then warn with [`Mismatch::scheduler_warning`].

use crate::mounts::Filesystem;
use std::io;
use std::path::{Path, PathBuf};

/// What the scheduler's store must share a filesystem with; names it and the fix in messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    /// The shared directory every node mounts (lockd, and brokerd under lockd).
    SharedDir,
    /// brokerd's message store, when it runs standalone without a shared directory: the
    /// scheduled messages must at least live (and move) with the messages.
    DataDir,
}

/// Whether two paths are on one filesystem, and why.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// The same device number: one mounted filesystem (the same mount, or bind mounts of it).
    SameDevice,
    /// Two mounts of one network export: both a network filesystem of the same type and statfs
    /// type, mounted from the same source (`server:/export`).
    SameExport,
    /// Anything else, with both filesystems as probed.
    Different(Box<Mismatch>),
}

/// Two filesystems that [`compare`] could not prove to be one.
#[derive(Debug, Clone)]
pub struct Mismatch {
    /// Where the store is.
    pub store: Filesystem,
    /// Where it should be.
    pub anchor: Filesystem,
}

/// A path whose filesystem could not be read (missing, unreadable).
#[derive(Debug, thiserror::Error)]
#[error("cannot tell which filesystem {} is on: {source}", path.display())]
pub struct ProbeError {
    /// The path as given.
    pub path: PathBuf,
    /// What stat, statfs or canonicalize said.
    #[source]
    pub source: io::Error,
}

/// Probes both paths (stat, statfs, `/proc/self/mountinfo`) and [`compare`]s them. Both must
/// exist. Blocks as long as either filesystem does.
pub fn probe(store: &Path, anchor: &Path) -> Result<Verdict, ProbeError> {
    let probe_one = |path: &Path| {
        Filesystem::probe(path).map_err(|source| ProbeError {
            path: path.to_owned(),
            source,
        })
    };
    Ok(compare(probe_one(store)?, probe_one(anchor)?))
}

/// Whether `store` is on the same filesystem as `anchor`. The rule:
///
/// 1. The same device number (`st_dev`) is the same filesystem: the kernel gives each mounted
///    superblock its own, and bind mounts share it.
/// 2. Otherwise, on a network filesystem (NFS, CIFS/SMB, CephFS, GlusterFS, Lustre, GPFS,
///    BeeGFS, 9P, AFS), two mounts of one export get different device numbers (NFS with
///    `nosharecache`, a second CephFS mount), yet every node sees the same files through either.
///    So two paths also count as one filesystem when both are on a network filesystem with the
///    same mountinfo type and statfs type, mounted from the same source (`server:/export`,
///    compared as text without trailing slashes).
/// 3. Anything else is different, including: a local filesystem on another device (tmpfs, a
///    node's own disk), another export or a subdirectory of the export mounted on its own
///    (`server:/export/sub` is a different source: the server could have another filesystem
///    there), the same server under another name or address (names are not resolved), and a
///    path with no mountinfo entry (nothing to compare). A false "different" costs the operator
///    an explicit opt-out; a false "same" would lose schedules at failover.
pub fn compare(store: Filesystem, anchor: Filesystem) -> Verdict {
    if store.dev == anchor.dev {
        return Verdict::SameDevice;
    }
    let export = |fs: &Filesystem| {
        fs.source
            .as_deref()
            .filter(|_| crate::mounts::is_network(&fs.fs_type))
            .map(|source| source.trim_end_matches('/').to_owned())
    };
    let same_export = matches!((export(&store), export(&anchor)), (Some(a), Some(b)) if a == b)
        && store.fs_type == anchor.fs_type
        && store.magic == anchor.magic;
    if same_export {
        return Verdict::SameExport;
    }
    Verdict::Different(Box::new(Mismatch { store, anchor }))
}

impl Mismatch {
    /// Why lockd or brokerd refuses a `scheduler_dir` off its anchor: both paths with their
    /// filesystems, what goes wrong, and the two ways out.
    pub fn scheduler_refusal(&self, anchor: Anchor) -> String {
        let fix = match anchor {
            Anchor::SharedDir => {
                "Put it under the shared directory (the default, SHARED/scheduler), or set \
                 scheduler_allow_local = true in lockd's config (brokerd: \
                 --scheduler-allow-local) to accept that"
            }
            Anchor::DataDir => {
                "Put it beside the data directory (the default, DATA/../scheduler), or pass \
                 --scheduler-allow-local to accept that"
            }
        };
        format!("{}. {fix}", self.scheduler_problem(anchor))
    }

    /// The warning when the operator accepted the same (`scheduler_allow_local`), for the log
    /// and `ctl status`.
    pub fn scheduler_warning(&self, anchor: Anchor) -> String {
        format!(
            "{}. Accepted because scheduler_allow_local is set; move it to make schedules \
             survive failover",
            self.scheduler_problem(anchor)
        )
    }

    /// The paths, their filesystems and the consequence, in one sentence.
    fn scheduler_problem(&self, anchor: Anchor) -> String {
        let (what, consequence) = match anchor {
            Anchor::SharedDir => (
                "the shared directory",
                "scheduled messages kept there would be lost at failover",
            ),
            Anchor::DataDir => (
                "the data directory",
                "scheduled messages kept there would not move with the message store",
            ),
        };
        format!(
            "scheduler_dir {} ({}) is not on the filesystem of {what} {} ({}): {consequence}",
            self.store.path.display(),
            brief(&self.store),
            self.anchor.path.display(),
            brief(&self.anchor),
        )
    }
}

/// `tmpfs on /dev/shm from tmpfs, device 0:27`: what the comparison looked at, in a few words.
fn brief(fs: &Filesystem) -> String {
    let device = format!(
        "device {}:{}",
        nix::sys::stat::major(fs.dev),
        nix::sys::stat::minor(fs.dev)
    );
    match (&fs.mount_point, &fs.source) {
        (Some(point), Some(source)) => format!(
            "{} on {} from {source}, {device}",
            fs.fs_type,
            point.display()
        ),
        _ => format!("{}, {device}, no mount entry found", fs.fs_type),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fs(path: &str, dev: (u64, u64), fs_type: &str, magic: u64, source: &str) -> Filesystem {
        Filesystem {
            path: PathBuf::from(path),
            dev: nix::sys::stat::makedev(dev.0, dev.1),
            magic,
            fs_type: fs_type.into(),
            mount_point: Some(PathBuf::from("/mnt")),
            source: Some(source.into()),
            options: Vec::new(),
        }
    }

    const NFS: u64 = 0x6969;
    const EXT4: u64 = 0xef53;
    const TMPFS: u64 = 0x0102_1994;

    fn verdict(store: Filesystem, anchor: Filesystem) -> &'static str {
        match compare(store, anchor) {
            Verdict::SameDevice => "device",
            Verdict::SameExport => "export",
            Verdict::Different(_) => "different",
        }
    }

    #[test]
    fn the_same_device_is_the_same_filesystem_whatever_else_differs() {
        let store = fs("/a", (8, 1), "ext4", EXT4, "/dev/sda1");
        let mut anchor = fs("/b", (8, 1), "ext4", EXT4, "/dev/sda1");
        assert_eq!(verdict(store.clone(), anchor.clone()), "device");
        anchor.mount_point = None;
        anchor.source = None;
        assert_eq!(verdict(store, anchor), "device");
    }

    #[test]
    fn local_filesystems_on_other_devices_differ_even_from_the_same_source() {
        assert_eq!(
            verdict(
                fs("/dev/shm/s", (0, 27), "tmpfs", TMPFS, "tmpfs"),
                fs("/srv/shared", (254, 0), "ext4", EXT4, "/dev/vda"),
            ),
            "different"
        );
        // Two tmpfs mounts are both "from tmpfs" but hold different files.
        assert_eq!(
            verdict(
                fs("/a", (0, 27), "tmpfs", TMPFS, "tmpfs"),
                fs("/b", (0, 28), "tmpfs", TMPFS, "tmpfs"),
            ),
            "different"
        );
    }

    #[test]
    fn two_mounts_of_one_network_export_are_one_filesystem() {
        let store = fs("/mnt/a/scheduler", (0, 50), "nfs4", NFS, "srv:/export/");
        let anchor = fs("/mnt/b", (0, 51), "nfs4", NFS, "srv:/export");
        assert_eq!(verdict(store.clone(), anchor.clone()), "export");

        let other_export = fs("/mnt/c", (0, 52), "nfs4", NFS, "srv:/other");
        assert_eq!(verdict(store.clone(), other_export), "different");
        let subdirectory = fs("/mnt/d", (0, 53), "nfs4", NFS, "srv:/export/sub");
        assert_eq!(verdict(store.clone(), subdirectory), "different");
        let other_version = fs("/mnt/e", (0, 54), "nfs", NFS, "srv:/export");
        assert_eq!(verdict(store.clone(), other_version), "different");
        let mut unmounted = anchor.clone();
        unmounted.source = None;
        assert_eq!(verdict(store, unmounted), "different");
    }

    #[test]
    fn the_message_quotes_both_paths_their_filesystems_and_the_fix() {
        let Verdict::Different(mismatch) = compare(
            fs("/dev/shm/x", (0, 27), "tmpfs", TMPFS, "tmpfs"),
            fs("/srv/shared", (254, 0), "ext4", EXT4, "/dev/vda"),
        ) else {
            panic!("tmpfs and ext4 compared equal");
        };
        let text = mismatch.scheduler_refusal(Anchor::SharedDir);
        assert_eq!(
            text,
            "scheduler_dir /dev/shm/x (tmpfs on /mnt from tmpfs, device 0:27) is not on the \
             filesystem of the shared directory /srv/shared (ext4 on /mnt from /dev/vda, device \
             254:0): scheduled messages kept there would be lost at failover. Put it under the \
             shared directory (the default, SHARED/scheduler), or set scheduler_allow_local = \
             true in lockd's config (brokerd: --scheduler-allow-local) to accept that"
        );
        let text = mismatch.scheduler_refusal(Anchor::DataDir);
        assert!(
            text.contains("of the data directory /srv/shared")
                && text.contains("--scheduler-allow-local"),
            "{text}"
        );
        let text = mismatch.scheduler_warning(Anchor::SharedDir);
        assert!(
            text.starts_with("scheduler_dir /dev/shm/x (tmpfs")
                && text.contains(
                    "would be lost at failover. Accepted because scheduler_allow_local is set"
                ),
            "{text}"
        );
    }

    #[test]
    fn real_paths_are_probed_and_compared() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("scheduler");
        std::fs::create_dir(&sub).unwrap();
        assert!(matches!(
            probe(&sub, dir.path()).unwrap(),
            Verdict::SameDevice
        ));
        // procfs is never the temporary directory's filesystem.
        let Verdict::Different(mismatch) = probe(Path::new("/proc"), dir.path()).unwrap() else {
            panic!("/proc and {} compared equal", dir.path().display());
        };
        assert_eq!(mismatch.store.fs_type, "proc");
        let err = probe(&dir.path().join("missing"), dir.path()).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
