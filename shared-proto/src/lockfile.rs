//! The lock on `SHARED/lock`: an OFD fcntl lock and a flock(2) lock, both on one descriptor.
//!
//! Both kinds belong to the open file description, not the process: they are not dropped when an
//! unrelated descriptor of the same file is closed (the POSIX-lock trap), and are released when
//! our one descriptor closes, including when lockd dies. The file is opened with O_CLOEXEC and
//! never handed to brokerd: a child holding a duplicate would keep the lock alive after lockd.
//!
//! Why two kinds: cluster filesystems share them differently. OCFS2 with the o2cb stack shares
//! flock but not fcntl locks between nodes; FUSE daemons such as bindfs with lock forwarding
//! share both between mounts but fcntl locks not between two processes of one mount. Requiring
//! both makes the lock exclusive wherever either kind is. They are always taken in the same
//! order (fcntl, then flock) and a half-taken pair is dropped at once, so two nodes can never each
//! hold one half and wait for the other. `ctl check-lock` tests the pair as lockd takes it
//! ([`try_lock_both_raw`]) and each kind on its own.

use nix::errno::Errno;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// (device, inode) of a file: how we notice that the lock file was deleted or replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
}

/// An open lock file, locked or not.
#[derive(Debug)]
pub struct LockFile {
    file: File,
    path: PathBuf,
    identity: Identity,
}

impl LockFile {
    /// Opens the lock file read-write, creating it if missing (the marker, checked before, proves
    /// we are on the shared filesystem, so a missing file was deleted, not never made). A link or
    /// anything but a regular file there is refused by name (DESIGN invariant 8).
    pub fn open(path: &Path) -> io::Result<LockFile> {
        let file = crate::shared_file::open_regular(
            path,
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o644),
        )?;
        let meta = file.metadata()?;
        Ok(LockFile {
            file,
            path: path.to_owned(),
            identity: Identity {
                dev: meta.dev(),
                ino: meta.ino(),
            },
        })
    }

    /// Tries to take both locks without waiting. `Ok(false)`: another holder has one of them
    /// (and we hold neither).
    ///
    /// Non-blocking on purpose: on NFSv4 the kernel polls a blocking wait with a backoff of up to
    /// 30 s, so a passive that blocked would notice a free lock late.
    pub fn try_lock(&self) -> io::Result<bool> {
        Ok(try_lock_both_raw(self.file.as_raw_fd())?)
    }

    /// Checks that `path` still names the file we hold open: a deleted or replaced lock file
    /// means another node can lock the new one while we believe we hold "the" lock.
    pub fn check_identity(&self) -> Result<(), String> {
        let held = self
            .file
            .metadata()
            .map_err(|e| format!("fstat of lock file failed: {e}"))?;
        if held.nlink() == 0 {
            return Err(format!("lock file {} was deleted", self.path.display()));
        }
        match std::fs::symlink_metadata(&self.path) {
            Ok(now) if now.dev() == self.identity.dev && now.ino() == self.identity.ino => Ok(()),
            Ok(_) => Err(format!(
                "lock file {} was replaced by another file",
                self.path.display()
            )),
            Err(e) => Err(format!("lock file {}: {e}", self.path.display())),
        }
    }

    /// Writes a heartbeat through the locked descriptor and syncs it. On NFS a lock the server
    /// dropped shows up only as an I/O error on this descriptor, so this write is how we learn
    /// of it.
    pub fn heartbeat(&self, line: &str) -> io::Result<()> {
        self.file.write_all_at(line.as_bytes(), 0)?;
        self.file.set_len(line.len() as u64)?;
        self.file.sync_data()
    }
}

/// One of the two kinds of lock that make up the lock on `SHARED/lock`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    /// An exclusive OFD fcntl lock on the whole file (F_OFD_SETLK).
    Fcntl,
    /// An exclusive flock(2) lock.
    Flock,
}

impl LockKind {
    /// Both kinds, in the order lockd takes them (fcntl first): the self-test reports them in
    /// this order too.
    pub const ALL: [LockKind; 2] = [LockKind::Fcntl, LockKind::Flock];

    /// How the operator knows it, e.g. in `ctl check-lock`'s report.
    pub fn name(self) -> &'static str {
        match self {
            LockKind::Fcntl => "fcntl (OFD)",
            LockKind::Flock => "flock",
        }
    }

    /// A stable name for scripts (`ctl check-lock --json`): `fcntl` or `flock`.
    pub fn key(self) -> &'static str {
        match self {
            LockKind::Fcntl => "fcntl",
            LockKind::Flock => "flock",
        }
    }
}

/// Tries to take an exclusive lock of one kind on `file` without waiting; `Ok(false)` when
/// another open file description holds it.
pub fn try_lock_kind(file: &File, kind: LockKind) -> io::Result<bool> {
    Ok(try_lock_raw(file.as_raw_fd(), kind)?)
}

/// [`try_lock_kind`] on a raw descriptor, without allocating: the lock self-test calls it in a
/// forked child, where only async-signal-safe work is allowed.
pub fn try_lock_raw(fd: RawFd, kind: LockKind) -> Result<bool, Errno> {
    let rc = match kind {
        LockKind::Fcntl => {
            let mut flock = whole_file(libc::F_WRLCK);
            // SAFETY: the caller passes an open descriptor; flock is a fully initialised
            // libc::flock that outlives the call; F_OFD_SETLK only reads it.
            unsafe { libc::fcntl(fd, libc::F_OFD_SETLK, &mut flock) }
        }
        // SAFETY: flock(2) on a descriptor has no memory-safety preconditions.
        LockKind::Flock => unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) },
    };
    if rc == 0 {
        return Ok(true);
    }
    match Errno::last() {
        Errno::EAGAIN | Errno::EACCES => Ok(false),
        errno => Err(errno),
    }
}

/// Both kinds on one descriptor, exactly as [`LockFile::try_lock`] takes them: fcntl first,
/// then flock, and a half-taken pair is dropped before returning, so `Ok(false)` or an error
/// leaves this descriptor holding neither. Raw and allocation-free because the lock self-test's
/// forked contender calls it too: the test must try the very lock lockd takes.
pub fn try_lock_both_raw(fd: RawFd) -> Result<bool, Errno> {
    if !try_lock_raw(fd, LockKind::Fcntl)? {
        return Ok(false);
    }
    match try_lock_raw(fd, LockKind::Flock) {
        Ok(true) => Ok(true),
        held_elsewhere_or_failed => {
            unlock_raw(fd, LockKind::Fcntl)?;
            held_elsewhere_or_failed
        }
    }
}

/// Drops a lock of one kind taken through `fd`; async-signal-safe, like [`try_lock_raw`].
fn unlock_raw(fd: RawFd, kind: LockKind) -> Result<(), Errno> {
    let rc = match kind {
        LockKind::Fcntl => {
            let mut flock = whole_file(libc::F_UNLCK);
            // SAFETY: the caller passes an open descriptor; flock is a fully initialised
            // libc::flock that outlives the call; F_OFD_SETLK only reads it.
            unsafe { libc::fcntl(fd, libc::F_OFD_SETLK, &mut flock) }
        }
        // SAFETY: flock(2) on a descriptor has no memory-safety preconditions.
        LockKind::Flock => unsafe { libc::flock(fd, libc::LOCK_UN) },
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(Errno::last())
    }
}

/// A `flock` covering the whole file. `l_pid` must be 0 for OFD locks.
fn whole_file(kind: libc::c_int) -> libc::flock {
    // SAFETY: libc::flock is a plain C struct for which all-zero bytes are a valid value.
    let mut flock: libc::flock = unsafe { std::mem::zeroed() };
    flock.l_type = kind as libc::c_short;
    flock.l_whence = libc::SEEK_SET as libc::c_short;
    flock.l_start = 0;
    flock.l_len = 0;
    flock.l_pid = 0;
    flock
}

/// Tests that take locks and tests that fork take turns: a forked child holds every descriptor
/// open in the test process until it exits, so a child that outlived another test's close would
/// keep that test's lock held.
#[cfg(test)]
pub(crate) fn test_turn() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_descriptions_exclude_each_other_and_closing_releases() {
        let _turn = test_turn();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let a = LockFile::open(&path).unwrap();
        let b = LockFile::open(&path).unwrap();
        assert!(a.try_lock().unwrap());
        assert!(
            a.try_lock().unwrap(),
            "re-locking our own description succeeds"
        );
        assert!(
            !b.try_lock().unwrap(),
            "a second description must not get the lock"
        );
        drop(a);
        assert!(
            b.try_lock().unwrap(),
            "closing the holder releases the lock"
        );
    }

    #[test]
    fn either_kind_held_elsewhere_refuses_and_leaves_nothing_half_taken() {
        let _turn = test_turn();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        for kind in LockKind::ALL {
            let other = File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .unwrap();
            assert!(try_lock_kind(&other, kind).unwrap());
            let ours = LockFile::open(&path).unwrap();
            assert!(!ours.try_lock().unwrap(), "{} held elsewhere", kind.name());
            // The refused attempt must not keep the other kind: a third description gets both
            // kinds once `other` is closed.
            drop(other);
            let third = LockFile::open(&path).unwrap();
            assert!(
                third.try_lock().unwrap(),
                "after {} was released",
                kind.name()
            );
            assert!(!ours.try_lock().unwrap());
        }
    }

    #[test]
    fn the_raw_pair_is_refused_beside_lockds_lock_and_never_left_half_taken() {
        let _turn = test_turn();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let held = LockFile::open(&path).unwrap();
        assert!(held.try_lock().unwrap());
        let other = LockFile::open(&path).unwrap();
        assert_eq!(try_lock_both_raw(other.file.as_raw_fd()), Ok(false));
        drop(held);
        // Only flock held elsewhere: the pair is refused and the fcntl half it took is dropped,
        // so a third description can take fcntl.
        let flock_holder = LockFile::open(&path).unwrap();
        assert!(try_lock_kind(&flock_holder.file, LockKind::Flock).unwrap());
        assert_eq!(try_lock_both_raw(other.file.as_raw_fd()), Ok(false));
        let third = LockFile::open(&path).unwrap();
        assert!(try_lock_kind(&third.file, LockKind::Fcntl).unwrap());
        assert_eq!(
            LockKind::ALL.map(LockKind::key),
            ["fcntl", "flock"],
            "stable keys for scripts"
        );
    }

    #[test]
    fn identity_check_notices_deletion_and_replacement() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let held = LockFile::open(&path).unwrap();
        held.check_identity().unwrap();
        held.heartbeat("node1 1 1\n").unwrap();
        std::fs::rename(&path, dir.path().join("old")).unwrap();
        std::fs::write(&path, "").unwrap();
        let err = held.check_identity().unwrap_err();
        assert!(err.contains("replaced"), "{err}");
        std::fs::remove_file(dir.path().join("old")).unwrap();
        let err = held.check_identity().unwrap_err();
        assert!(err.contains("deleted"), "{err}");
    }

    #[test]
    fn a_link_or_a_fifo_in_place_of_the_lock_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "").unwrap();
        let path = dir.path().join("lock");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let err = LockFile::open(&path).unwrap_err().to_string();
        assert!(err.contains("lock is a symbolic link"), "{err}");
        std::fs::remove_file(&path).unwrap();
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        let err = LockFile::open(&path).unwrap_err().to_string();
        assert!(err.contains("lock is a FIFO"), "{err}");
    }
}
