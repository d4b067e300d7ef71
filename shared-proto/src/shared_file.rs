//! The only ways lockd and ctl open files in the shared directory (DESIGN invariant 8).
//!
//! Others may be able to create entries there (a broker user, a careless operator), so nothing
//! here follows a symbolic link (O_NOFOLLOW on every open), nothing reads anything but a regular
//! file (checked with fstat on the opened descriptor; opened with O_NONBLOCK so a FIFO cannot
//! block the open itself, then made blocking again), and no read takes more than a stated number
//! of bytes. A FIFO, a device or a link where a record should be is an error that names the path
//! and what is wrong, never a stuck keepalive.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Up to `limit` bytes of a regular file, and whether it held more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefix {
    pub bytes: Vec<u8>,
    /// The file is longer than the limit; `bytes` holds only its first `limit` bytes.
    pub truncated: bool,
}

/// Reads a whole regular file of at most `limit` bytes; a larger file is an error naming the
/// limit, so a huge file cannot grow lockd's memory or the time a read takes.
pub fn read_regular(path: &Path, limit: usize) -> io::Result<Vec<u8>> {
    let prefix = read_prefix(path, limit)?;
    if prefix.truncated {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is larger than the {limit} bytes such a file may hold; it was not written by \
                 this product: remove it",
                path.display()
            ),
        ));
    }
    Ok(prefix.bytes)
}

/// Reads at most `limit` bytes of a regular file, for records worth showing even when too long.
pub fn read_prefix(path: &Path, limit: usize) -> io::Result<Prefix> {
    let file = open_regular(path, OpenOptions::new().read(true))?;
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| named(path, e))?;
    let truncated = bytes.len() > limit;
    bytes.truncate(limit);
    Ok(Prefix { bytes, truncated })
}

/// Opens an existing regular file (or creates one, as `options` says) without following a link
/// and without blocking on a FIFO; anything but a regular file is refused by name.
pub fn open_regular(path: &Path, options: &mut OpenOptions) -> io::Result<File> {
    let file = options
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| opening(path, e))?;
    let kind = file.metadata().map_err(|e| named(path, e))?.file_type();
    if !kind.is_file() {
        let what = if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_dir() {
            "a directory"
        } else if kind.is_socket() {
            "a socket"
        } else if kind.is_char_device() || kind.is_block_device() {
            "a device"
        } else {
            "not a file"
        };
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is {what}, not a regular file: nothing in the shared directory may be one; \
                 remove it",
                path.display()
            ),
        ));
    }
    // O_NONBLOCK only kept the open from waiting for a FIFO's writer; a regular file's I/O
    // ignores it, but clear it so the descriptor behaves as any other.
    let flags = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags) - nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_SETFL(flags))
        .map_err(|e| named(path, io::Error::from(e)))?;
    Ok(file)
}

/// Replaces `path` atomically: a temporary file created afresh (O_EXCL, so never an existing
/// file or link planted under its name), written, fsynced, renamed over `path` (rename replaces
/// a link rather than following it), then the directory fsynced so the rename survives a crash.
/// `tag` (the writing node's name, unique in the cluster) names the temporary file, so two nodes
/// never write through the same one, even when both believe they hold the lock.
pub fn write_atomically(path: &Path, tag: &str, contents: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.{tag}.tmp"));
    // 0644 whatever lockd's umask: brokerd (another user) reads the epoch file. A leftover (a crash mid-write, or something planted) is removed and the create tried once
    // more; the common case costs no extra metadata round trip (one per keepalive on NFS).
    let mut file = match create_new(&tmp) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            fs::remove_file(&tmp).map_err(|e| named(&tmp, e))?;
            create_new(&tmp)?
        }
        other => other?,
    };
    file.write_all(contents).map_err(|e| named(&tmp, e))?;
    file.sync_all().map_err(|e| named(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| named(path, e))?;
    sync_dir(dir)
}

/// The mode of every file created in the shared directory: brokerd, another user, reads them.
const FILE_MODE: u32 = 0o644;

/// Creates a new regular file (mode 0644, whatever the umask) that did not exist, link or not:
/// how epochs are claimed and temporary files made.
pub fn create_new(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| opening(path, e))?;
    // The umask cuts the mode given to open(2); only then is a chmod needed (on NFS, one more
    // round trip on every keepalive).
    if umask_cuts(FILE_MODE) {
        file.set_permissions(fs::Permissions::from_mode(FILE_MODE))
            .map_err(|e| named(path, e))?;
    }
    Ok(file)
}

/// Whether the process's umask removes bits of `mode`. Read once from /proc/self/status (the
/// umask cannot be read without setting it, which would race other threads); unknown counts as
/// cutting everything.
fn umask_cuts(mode: u32) -> bool {
    static UMASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let umask = *UMASK.get_or_init(|| {
        fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| {
                let line = status.lines().find(|l| l.starts_with("Umask:"))?;
                u32::from_str_radix(line["Umask:".len()..].trim(), 8).ok()
            })
            .unwrap_or(0o777)
    });
    umask & mode != 0
}

/// fsyncs a directory, so the entries created or renamed in it survive a crash; a link where the
/// directory should be is refused.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| opening(dir, e))
}

/// An open error with the path, and what ELOOP means here.
fn opening(path: &Path, e: io::Error) -> io::Error {
    if e.raw_os_error() == Some(libc::ELOOP) {
        return io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is a symbolic link: lockd follows none in the shared directory; remove it",
                path.display()
            ),
        );
    }
    named(path, e)
}

/// `e` with the path it is about, keeping its kind (callers tell NotFound apart).
fn named(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_a_link_and_an_oversized_file_are_refused_by_name_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("zz.json");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        let err = read_regular(&fifo, 100).unwrap_err().to_string();
        assert!(err.contains("zz.json is a FIFO"), "{err}");

        let target = dir.path().join("target");
        fs::write(&target, "7\n").unwrap();
        let link = dir.path().join("epoch");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = read_regular(&link, 100).unwrap_err().to_string();
        assert!(err.contains("epoch is a symbolic link"), "{err}");

        let big = dir.path().join("big");
        fs::write(&big, vec![b'x'; 101]).unwrap();
        let err = read_regular(&big, 100).unwrap_err().to_string();
        assert!(err.contains("larger than the 100 bytes"), "{err}");
        let prefix = read_prefix(&big, 100).unwrap();
        assert_eq!((prefix.bytes.len(), prefix.truncated), (100, true));
        assert_eq!(read_regular(&target, 100).unwrap(), b"7\n");

        let missing = read_regular(&dir.path().join("none"), 100).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound, "NotFound is kept");
    }

    #[test]
    fn an_atomic_write_replaces_a_planted_link_and_never_writes_through_one() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "untouched").unwrap();
        let path = dir.path().join("holder.json");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join(".holder.json.n1.tmp")).unwrap();
        write_atomically(&path, "n1", b"new").unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "untouched");
        assert_eq!(read_regular(&path, 10).unwrap(), b"new");
    }
}
