//! Power cuts for the crash tests: [`fs`] is the filesystem (run by the `powercut-fs` binary),
//! and [`Mount`] runs it under a test, cuts its power and mounts it again.
//!
//! A SIGKILLed process leaves its writes in the kernel's page cache, where the next process
//! reads them, so a SIGKILL cannot show a receipt sent before its data reached the disk. Over
//! this filesystem every write not yet fsynced is gone after a cut: what a restarted broker
//! finds is what a machine finds after its power came back.
//!
//! Needs root (/dev/fuse is root-only here) and `fusermount3` (Debian's fuse3, which
//! `tests/run-all.sh` installs as root).

pub mod fs;

use crate::{bins, is_root};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};

/// Why the power-cut tests cannot run here, if they cannot: they need root, /dev/fuse and
/// fusermount3.
pub fn unavailable() -> Option<String> {
    if !is_root() {
        return Some("FUSE mounts need root (/dev/fuse)".into());
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("this machine has no /dev/fuse (no FUSE in its kernel)".into());
    }
    let found = Command::new("fusermount3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    (!found).then(|| "fusermount3 is not installed: apt-get install fuse3".into())
}

/// A `powercut-fs` mount of a backing directory (the disk); unmounted when dropped.
pub struct Mount {
    /// Where it is mounted.
    pub path: PathBuf,
    disk: PathBuf,
    daemon: Child,
    lines: BufReader<ChildStdout>,
}

impl Mount {
    /// Mounts `disk` on `target` (which must exist), powered on.
    pub fn new(disk: &Path, target: &Path) -> Mount {
        let binary = bins().lockd.with_file_name("powercut-fs");
        let mut daemon = Command::new(&binary)
            .arg(disk)
            .arg(target)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("run {}: {e}", binary.display()));
        let lines = BufReader::new(daemon.stdout.take().expect("piped stdout"));
        let mut mount = Mount {
            path: target.to_owned(),
            disk: disk.to_owned(),
            daemon,
            lines,
        };
        mount.expect_line("mounted");
        mount
    }

    /// Cuts the power: every write not yet fsynced is lost and every later I/O on the mount
    /// fails. Returns the daemon's account of what was lost.
    pub fn cut(&mut self) -> String {
        // SAFETY: kill(2) on our own child's pid; no memory involved.
        unsafe { libc::kill(self.daemon.id() as i32, libc::SIGUSR1) };
        self.expect_line("cut")
    }

    /// Unmounts, then mounts the disk again in the same place with an empty cache: the power is
    /// back.
    pub fn power_on(self) -> Mount {
        let (disk, path) = (self.disk.clone(), self.path.clone());
        drop(self);
        Mount::new(&disk, &path)
    }

    /// Reads the daemon's next line, which must start with `word`.
    fn expect_line(&mut self, word: &str) -> String {
        let mut line = String::new();
        let read = self.lines.read_line(&mut line);
        assert!(
            matches!(read, Ok(n) if n > 0) && line.starts_with(word),
            "powercut-fs on {} said {line:?} ({read:?}) instead of {word:?}",
            self.path.display()
        );
        line.trim_end().to_owned()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        // Lazily: processes killed a moment ago may still hold files open on it.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .stderr(Stdio::null())
            .status();
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}
