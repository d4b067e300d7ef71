//! Users, groups and peer credentials.

use nix::unistd::{Gid, Group, Uid, User};

/// lockd's effective uid: whether we may drop privileges, and who counts as "lockd's user".
pub fn effective_uid() -> u32 {
    Uid::effective().as_raw()
}

/// Resolves a user name to (uid, primary gid).
pub fn lookup_user(name: &str) -> Result<(u32, u32), String> {
    match User::from_name(name) {
        Ok(Some(user)) => Ok((user.uid.as_raw(), user.gid.as_raw())),
        Ok(None) => Err(format!("no such user {name:?}")),
        Err(e) => Err(format!("looking up user {name:?}: {e}")),
    }
}

/// Resolves a group name to its gid.
pub fn lookup_group(name: &str) -> Result<u32, String> {
    match Group::from_name(name) {
        Ok(Some(group)) => Ok(group.gid.as_raw()),
        Ok(None) => Err(format!("no such group {name:?}")),
        Err(e) => Err(format!("looking up group {name:?}: {e}")),
    }
}

/// The supplementary groups of a Unix-socket peer, as the kernel recorded them when it
/// connected (SO_PEERGROUPS): unlike reading /proc/PID later, immune to pid reuse.
pub fn peer_groups(socket: &impl std::os::fd::AsRawFd) -> std::io::Result<Vec<u32>> {
    const MAX_GROUPS: usize = 65_536;
    let width = std::mem::size_of::<libc::gid_t>();
    let mut groups: Vec<libc::gid_t> = vec![0; 32];
    loop {
        let mut len = (groups.len() * width) as libc::socklen_t;
        // SAFETY: the buffer is valid for `len` bytes and outlives the call; the kernel writes
        // at most `len` bytes and stores the size it used (or needs) back into `len`.
        let rc = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let needed = len as usize / width;
        if rc == 0 {
            groups.truncate(needed);
            return Ok(groups);
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ERANGE) || needed > MAX_GROUPS || needed <= groups.len()
        {
            return Err(err);
        }
        groups.resize(needed, 0);
    }
}

/// Changes the group of a path (the ctl socket) to `gid`.
pub fn chown_group(path: &std::path::Path, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::chown(path, None, Some(Gid::from_raw(gid).as_raw()))
}

/// Whether `uid`/`gid` (with no supplementary groups) may execute `path`, every directory on the
/// way included: a checkout under a root-only home (/root) is not, though the binary itself is
/// mode 0755. Must run while lockd is still single-threaded and root: it switches the effective
/// ids of the process and back (root, or CAP_SETUID/CAP_SETGID).
pub fn can_execute_as(path: &std::path::Path, uid: u32, gid: u32) -> std::io::Result<bool> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    let groups = nix::unistd::getgroups()?;
    let (euid, egid) = (nix::unistd::geteuid(), nix::unistd::getegid());
    // SAFETY: credential syscalls on this (single-threaded) process; each is undone below before
    // anything else runs, and a failure to undo aborts rather than run on with the wrong ids.
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0 || libc::setegid(gid) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::seteuid(uid) != 0 {
            let error = std::io::Error::last_os_error();
            restore_back(euid, egid, &groups);
            return Err(error);
        }
        let allowed =
            libc::faccessat(libc::AT_FDCWD, path.as_ptr(), libc::X_OK, libc::AT_EACCESS) == 0;
        restore_back(euid, egid, &groups);
        Ok(allowed)
    }
}

/// Undoes `can_execute_as`'s switch of effective ids.
unsafe fn restore_back(euid: Uid, egid: Gid, groups: &[Gid]) {
    let raw: Vec<libc::gid_t> = groups.iter().map(|g| g.as_raw()).collect();
    if libc::seteuid(euid.as_raw()) != 0
        || libc::setegid(egid.as_raw()) != 0
        || libc::setgroups(raw.len(), raw.as_ptr()) != 0
    {
        std::process::abort();
    }
}

/// The capability sets of the calling thread, as capget(2) version 3 reports them: two words
/// of each set (capabilities 0-31, then 32-63).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct CapData {
    pub effective: u32,
    pub permitted: u32,
    pub inheritable: u32,
}

/// capget(2)/capset(2)'s header.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Bit numbers from linux/capability.h (the libc crate does not name them).
pub const CAP_KILL: u32 = 5;
pub const CAP_SETGID: u32 = 6;
pub const CAP_SETUID: u32 = 7;
/// Needed to drop capabilities from a bounding set (brokerd's, before its exec).
pub const CAP_SETPCAP: u32 = 8;

/// This thread's capabilities (capget).
pub fn capabilities() -> std::io::Result<[CapData; 2]> {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget(2) with a version-3 header (pid 0: this thread) writes two CapData structs,
    // which `data` provides; both outlive the call.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(data)
}

/// Sets this thread's capabilities (capset); tests use it to take one away.
#[cfg(test)]
pub fn set_capabilities(data: &[CapData; 2]) -> std::io::Result<()> {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    // SAFETY: capset(2) with a version-3 header and the two CapData structs it reads; both
    // outlive the call. It changes this thread's capabilities only.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The capabilities a lockd that is not root needs to run brokerd as another user and to kill
/// it (DESIGN: root, or a user with CAP_SETUID/CAP_SETGID/CAP_KILL): the names of those missing
/// from our effective set, as the kernel reports it (capget), not guessed from the uid.
pub fn missing_broker_capabilities() -> std::io::Result<Vec<&'static str>> {
    let data = capabilities()?;
    let needed = [
        (CAP_SETUID, "CAP_SETUID"),
        (CAP_SETGID, "CAP_SETGID"),
        (CAP_KILL, "CAP_KILL"),
    ];
    Ok(needed
        .into_iter()
        .filter(|(cap, _)| data[0].effective & (1 << cap) == 0)
        .map(|(_, name)| name)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_come_from_the_kernel() {
        let missing = missing_broker_capabilities().unwrap();
        if effective_uid() == 0 {
            assert!(
                missing.is_empty(),
                "root holds every capability: {missing:?}"
            );
        }
        assert!(missing.len() <= 3);
    }
}
