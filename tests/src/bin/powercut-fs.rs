//! `powercut-fs DISK MOUNTPOINT`: mounts DISK on MOUNTPOINT through a FUSE filesystem that keeps
//! every unsynced write in memory (see `ha_tests::powercut::fs` for what it models and what it
//! does not). SIGUSR1 cuts the power: unsynced writes are dropped and every later request fails
//! with EIO. It prints `mounted` once mounted and `cut ...` once a cut is done, one line each, for
//! the test that drives it; it runs until unmounted.
//!
//! Mounted with `allow_other` and `default_permissions` (the kernel checks the processes'
//! permissions against the disk's owners and modes), so it needs root, and `fusermount3`.

use anyhow::{bail, Context};
use ha_tests::powercut::fs::PowercutFs;
use nix::sys::signal::{SigSet, Signal};
use std::io::Write;
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [disk, mountpoint] = args.as_slice() else {
        bail!("usage: powercut-fs DISK MOUNTPOINT");
    };
    // Blocked here, before fuser starts its threads, so only the switch thread takes it.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGUSR1);
    signals
        .thread_block()
        .context("block SIGUSR1 for the power switch")?;
    let fs = PowercutFs::new(disk).with_context(|| format!("open the disk {}", disk.display()))?;
    let switch = fs.switch();
    std::thread::Builder::new()
        .name("switch".into())
        .spawn(move || loop {
            if signals.wait() == Ok(Signal::SIGUSR1) {
                let lost = switch.cut();
                println!(
                    "cut: dropped {} unsynced pages of {} files",
                    lost.pages, lost.files
                );
                let _ = std::io::stdout().flush();
            }
        })
        .context("start the power switch thread")?;
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName("powercut".into()),
        fuser::MountOption::DefaultPermissions,
    ];
    config.acl = fuser::SessionACL::All;
    let session = fuser::Session::new(fs, mountpoint, &config)
        .with_context(|| format!("mount {}", mountpoint.display()))?;
    println!("mounted {} on {}", disk.display(), mountpoint.display());
    std::io::stdout().flush()?;
    session.run().context("serve the mount")
}
