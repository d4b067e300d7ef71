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
