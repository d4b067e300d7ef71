//! Everything two processes of the product must agree on, in one place.
//!
//! - [`control`]: lockd <-> brokerd over the inherited socketpair.
//! - [`admin`]: ctl <-> lockd over the control Unix socket.
//! - [`holder`]: the `holder.json` file the active lockd keeps in the shared directory.
//! - [`nodes`]: `nodes/NODE.json`, each node's own account of itself.
//! - [`layout`]: the shared directory's paths, marker and one-time preparation.
//! - [`lockfile`]: the lock every node takes on `SHARED/lock`, and [`lock_check`], the self-test
//!   that it is exclusive on a given filesystem, with [`mounts`] naming the filesystem's traps.
//! - [`placement`]: whether a store directory (the scheduler's) is on the shared directory's
//!   filesystem, which lockd and brokerd both check at start.
//! - [`shared_file`]: the one safe way to read and atomically write files there (no links
//!   followed, regular files only, bounded reads).
//! - [`schedules`]: pending scheduled jobs as `ctl schedules` lists and cancels them.
//! - [`destinations`]: destinations as `ctl destinations` lists them, purges and deletes them.
//! - [`wire`]: the newline-delimited JSON framing both protocols use, bounded in length so a
//!   peer that sends garbage gets a clear error instead of growing our memory.
//!
//! Both protocols open with a `Hello` carrying [`PROTOCOL_VERSION`]; a peer that speaks another
//! version is refused before anything else is read.

pub mod admin;
pub mod control;
pub mod destinations;
pub mod endpoint;
pub mod holder;
pub mod html;
pub mod layout;
pub mod lock_check;
pub mod lockfile;
pub mod mounts;
pub mod nodes;
pub mod placement;
pub mod records;
pub mod schedules;
pub mod shared_file;
pub mod wire;

/// Version of both control protocols; bumped on any incompatible change so mixed binaries after a
/// partial upgrade refuse each other loudly instead of misreading messages.
pub const PROTOCOL_VERSION: u32 = 5;

/// Milliseconds since the Unix epoch, for timestamps that humans and other nodes read.
/// Never used for fencing decisions: those use monotonic time and shared counters.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// This host's name as the kernel knows it (`/proc/sys/kernel/hostname`, trimmed), or `unknown`
/// when it cannot be read. It names this host in what nodes leave in the shared directory (lockd's
/// records, the lock self-test's probe files), so an operator can tell which host left what.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}
