//! What every FUSE mount of the tests shares (bindfs for hostile storage, `powercut-fs` for power
//! cuts): whether one can be made here, and how it is taken down.

use crate::is_root;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Why a FUSE mount served by `program` (from Debian's `package`) cannot be made here, if it
/// cannot: it needs root (/dev/fuse is root-only here), /dev/fuse and the program.
pub fn unavailable(program: &str, package: &str) -> Option<String> {
    if !is_root() {
        return Some(format!("{program} mounts need root (/dev/fuse)"));
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("this machine has no /dev/fuse (no FUSE in its kernel)".into());
    }
    let found = Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    (!found).then(|| format!("{program} is not installed: apt-get install {package}"))
}

/// Panics with what is missing unless `unavailable` says the mount can be made: the first line
/// of every (ignored) FUSE test, so that running it where it cannot run is a failure.
pub fn require(unavailable: Option<String>) {
    if let Some(why) = unavailable {
        panic!("this test cannot run here: {why}");
    }
}

/// Unmounts `path` lazily (processes killed a moment ago may still hold files open on it) and
/// ends its daemon.
pub fn unmount(path: &Path, daemon: &mut Child) {
    let _ = Command::new("umount")
        .arg("-l")
        .arg(path)
        .stderr(Stdio::null())
        .status();
    let _ = daemon.kill();
    let _ = daemon.wait();
}
