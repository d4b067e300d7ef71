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

/// Whether process `pid` (a ctl peer) has `gid` as primary or supplementary group.
/// SO_PEERCRED carries only the primary gid; the supplementary ones come from /proc.
pub fn process_in_group(pid: Option<i32>, primary_gid: u32, gid: u32) -> bool {
    if primary_gid == gid {
        return true;
    }
    let Some(pid) = pid else { return false };
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("Groups:"))
        .is_some_and(|groups| {
            groups
                .split_whitespace()
                .any(|g| g.parse::<u32>() == Ok(gid))
        })
}

/// Changes the group of a path (the ctl socket) to `gid`.
pub fn chown_group(path: &std::path::Path, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::chown(path, None, Some(Gid::from_raw(gid).as_raw()))
}
