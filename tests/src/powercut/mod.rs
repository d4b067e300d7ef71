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

use crate::{bins, WAIT};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};

/// Why the power-cut tests cannot run here, if they cannot.
pub fn unavailable() -> Option<String> {
    crate::fuse::unavailable("fusermount3", "fuse3")
}

/// A `powercut-fs` mount of a backing directory (the disk); unmounted when dropped.
pub struct Mount {
    /// Where it is mounted.
    pub path: PathBuf,
    disk: PathBuf,
    daemon: Child,
    /// The daemon's stdout, line by line, from a thread (so that every wait is bounded).
    lines: Receiver<String>,
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
        let stdout = BufReader::new(daemon.stdout.take().expect("piped stdout"));
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
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

    /// Waits (at most [`WAIT`]) for the daemon's next line, which must start with `word`.
    fn expect_line(&mut self, word: &str) -> String {
        let line = self.lines.recv_timeout(WAIT);
        assert!(
            line.as_ref().is_ok_and(|l| l.starts_with(word)),
            "powercut-fs on {} said {line:?} instead of {word:?} (within {WAIT:?})",
            self.path.display()
        );
        line.expect("checked above")
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        crate::fuse::unmount(&self.path, &mut self.daemon);
    }
}
