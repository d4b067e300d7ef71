//! The ctl socket: who may ask what, and the request/response loop of one connection.
//!
//! Anyone who can connect (the socket's mode decides) may read status and list schedules.
//! Changing anything (failover, cancelling schedules) needs
//! root, lockd's own user or the admin group, checked from the kernel's SO_PEERCRED, never
//! from anything the peer says.
//!
//! Connections are bounded per uid and in total, with slots only admins may take, so a client
//! that holds connections open cannot lock an operator out of `failover`. The socket appears at
//! its path already carrying `socket_mode` and the admin group: it is bound in a private
//! directory and renamed into place, never connectable with wider permissions in between.

use shared_proto::admin::{ErrorCode, Request, Response, Status};
use shared_proto::destinations::DestinationCall;
use shared_proto::schedules::Cancel;
use shared_proto::wire::{self, WireError};
use shared_proto::PROTOCOL_VERSION;
use std::collections::HashMap;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::BufReader;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

/// Connections served at once; more are refused with an error naming the limit.
const MAX_CONNECTIONS: usize = 32;

/// Of [`MAX_CONNECTIONS`], slots only admins may take: however many readers connect, an operator
/// can still run `ctl failover`.
const ADMIN_SLOTS: usize = 4;

/// Connections one uid may hold at once, admins included, so no one client takes every slot.
const PER_UID: usize = 8;

/// How long a refused client gets to take its error message before the connection is closed.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a scheduler request may wait for the broker's answer: longer than brokerd's own
/// bound (brokerd's `schedules::ANSWER_TIMEOUT`, 10 s), so its explanation normally arrives first.
const BROKER_CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// A connection that sends no request for this long is closed, so idle clients cannot take
/// every slot and lock operators out.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Pause after a failed accept (e.g. out of descriptors), so the loop does not spin on the
/// thread that also runs the fence timer.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A request that needs the state machine, with where to send the answer.
#[derive(Debug)]
pub enum Call {
    Status(oneshot::Sender<Status>),
    Failover {
        /// uid of the admin who asked, for the log.
        by_uid: u32,
        reply: oneshot::Sender<Response>,
    },
    /// A request the active node's broker answers (`ctl schedules`, `ctl destinations`); the
    /// reply is dropped if the broker goes away first.
    Broker {
        request: BrokerCall,
        reply: oneshot::Sender<Response>,
    },
}

/// What ctl asks of the active broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerCall {
    /// Up to `limit` pending scheduled jobs.
    List { limit: u32 },
    /// Cancel scheduled jobs; `by_uid` is the admin who asked, for the log.
    Cancel { which: Cancel, by_uid: u32 },
    /// List, purge or delete destinations; `by_uid` is who asked, for the log.
    Destinations { call: DestinationCall, by_uid: u32 },
}

/// The kernel's word on who is at the other end of a connection, as of its connect.
#[derive(Debug, Clone)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// Who this node is and who may change things through its socket: root, lockd's user, and
/// members of the admin group.
#[derive(Debug, Clone)]
pub struct Access {
    pub node: String,
    pub lockd_uid: u32,
    pub admin_group: Option<(String, u32)>,
}

impl Access {
    fn check_admin(&self, peer: &Peer) -> Result<(), String> {
        if peer.uid == 0 || peer.uid == self.lockd_uid {
            return Ok(());
        }
        if let Some((_, gid)) = &self.admin_group {
            if peer.gid == *gid || peer.groups.contains(gid) {
                return Ok(());
            }
        }
        let group = match &self.admin_group {
            Some((name, _)) => format!(", or membership in group {name:?}"),
            None => String::new(),
        };
        Err(format!(
            "uid {} may only read status; this needs root, uid {} (lockd's user){group}",
            peer.uid, self.lockd_uid
        ))
    }
}

/// Binds the socket with the configured mode and group, refusing to steal the socket of a
/// lockd that is still running. The socket is bound inside a fresh directory only lockd can
/// enter (mode 0700), given its mode and group there, and only then renamed to `path`: nobody can
/// connect while its permissions are still the umask's.
pub fn bind(path: &Path, mode: u32, group: Option<u32>) -> anyhow::Result<UnixListener> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            anyhow::bail!(
                "{} exists and is not a socket; remove it or choose another --socket",
                path.display()
            );
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!(
                "another lockd is already listening on {}; stop it or choose another --socket",
                path.display()
            );
        }
        std::fs::remove_file(path)?;
    }
    let name = path
        .file_name()
        .ok_or_else(|| anyhow::anyhow!("socket {} has no file name", path.display()))?;
    let private = path.with_file_name(format!(
        ".{}.{}.bind",
        name.to_string_lossy(),
        std::process::id()
    ));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot create {} to prepare the ctl socket in: {e}; remove it if a crashed lockd left it",
                private.display()
            )
        })?;
    let staged = private.join("socket");
    let listener = stage_socket(&staged, mode, group).and_then(|listener| {
        std::fs::rename(&staged, path).map_err(|e| {
            anyhow::anyhow!(
                "cannot move the ctl socket into place at {}: {e}",
                path.display()
            )
        })?;
        Ok(listener)
    });
    let _ = std::fs::remove_file(&staged);
    let _ = std::fs::remove_dir(&private);
    listener
}

/// Binds at `staged` (in the private directory) and gives the socket its final mode and group.
fn stage_socket(staged: &Path, mode: u32, group: Option<u32>) -> anyhow::Result<UnixListener> {
    let listener = UnixListener::bind(staged)
        .map_err(|e| anyhow::anyhow!("cannot bind the ctl socket {}: {e}", staged.display()))?;
    std::fs::set_permissions(staged, std::fs::Permissions::from_mode(mode))?;
    if let Some(gid) = group {
        crate::sys::users::chown_group(staged, gid).map_err(|e| {
            anyhow::anyhow!(
                "cannot give the ctl socket to the admin group (gid {gid}): {e}; check admin_group"
            )
        })?;
    }
    Ok(listener)
}

/// Who holds how many connections; decides whether one more may be served.
#[derive(Debug, Default)]
struct Slots {
    total: usize,
    per_uid: HashMap<u32, usize>,
}

impl Slots {
    /// Takes a slot for `uid`, or says which limit refuses it and what to do.
    fn admit(&mut self, uid: u32, admin: bool) -> Result<(), String> {
        let held = self.per_uid.get(&uid).copied().unwrap_or(0);
        if held >= PER_UID {
            return Err(format!(
                "uid {uid} already holds {held} connections to this socket, the most one user may; close some and retry"
            ));
        }
        let open_to_peer = if admin {
            MAX_CONNECTIONS
        } else {
            MAX_CONNECTIONS - ADMIN_SLOTS
        };
        if self.total >= open_to_peer {
            return Err(format!(
                "all {open_to_peer} connections this socket serves{} are in use; retry shortly",
                if admin { "" } else { " to non-admins" }
            ));
        }
        self.total += 1;
        *self.per_uid.entry(uid).or_default() += 1;
        Ok(())
    }

    fn release(&mut self, uid: u32) {
        self.total -= 1;
        if let Some(held) = self.per_uid.get_mut(&uid) {
            *held -= 1;
            if *held == 0 {
                self.per_uid.remove(&uid);
            }
        }
    }
}

/// A taken slot, given back when the connection ends.
struct Slot {
    slots: Arc<Mutex<Slots>>,
    uid: u32,
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.slots).release(self.uid);
    }
}

fn lock(slots: &Mutex<Slots>) -> std::sync::MutexGuard<'_, Slots> {
    slots
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Serves connections until the process exits.
pub async fn serve(listener: UnixListener, access: Access, calls: mpsc::Sender<Call>) {
    let access = Arc::new(access);
    let slots = Arc::new(Mutex::new(Slots::default()));
    // Descriptors and tasks spent on ctl connections stay bounded (lockd's own I/O needs
    // descriptors too): a connection holds a permit from accept to close. Refusals close at
    // once, so twice the admitted maximum leaves room for them; past it, connections wait in
    // the kernel's backlog.
    let accepting = Arc::new(tokio::sync::Semaphore::new(2 * MAX_CONNECTIONS));
    loop {
        let permit = Arc::clone(&accepting)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a ctl connection failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let access = access.clone();
        let calls = calls.clone();
        let slots = slots.clone();
        tokio::spawn(async move {
            if let Err(e) = admit_and_serve(stream, &access, &calls, slots).await {
                tracing::warn!(error = %e, "ctl connection refused");
            }
            drop(permit);
        });
    }
}

/// Checks the peer against the connection limits, then serves it.
async fn admit_and_serve(
    stream: UnixStream,
    access: &Access,
    calls: &mpsc::Sender<Call>,
    slots: Arc<Mutex<Slots>>,
) -> Result<(), WireError> {
    let cred = stream.peer_cred()?;
    let peer = Peer {
        uid: cred.uid(),
        gid: cred.gid(),
        groups: crate::sys::users::peer_groups(&stream)?,
    };
    let admitted = lock(&slots).admit(peer.uid, access.check_admin(&peer).is_ok());
    if let Err(message) = admitted {
        tracing::warn!(uid = peer.uid, %message, "ctl connection refused");
        let (_, mut writer) = stream.into_split();
        let reply = error(ErrorCode::Denied, message);
        let _ =
            tokio::time::timeout(REFUSAL_TIMEOUT, wire::write_message(&mut writer, &reply)).await;
        return Ok(());
    }
    let _slot = Slot {
        slots,
        uid: peer.uid,
    };
    serve_connection(stream, peer, access, calls).await
}

async fn serve_connection(
    stream: UnixStream,
    peer: Peer,
    access: &Access,
    calls: &mpsc::Sender<Call>,
) -> Result<(), WireError> {
    let (read_half, mut writer) = stream.into_split();
    let mut reader = BufReader::new(read_half);
    let mut buf = Vec::new();
    let mut greeted = false;
    loop {
        let read = wire::read_message::<Request, _>(&mut reader, &mut buf);
        let Ok(read) = tokio::time::timeout(IDLE_TIMEOUT, read).await else {
            return Ok(());
        };
        let request = match read {
            Ok(Some(request)) => request,
            Ok(None) => return Ok(()),
            Err(e @ WireError::Io(_)) => return Err(e),
            Err(e) => {
                let reply = error(ErrorCode::BadRequest, format!("{e}"));
                let _ = wire::write_message(&mut writer, &reply).await;
                return Err(e);
            }
        };
        let reply = match request {
            Request::Hello { version } => match wire::check_version(version) {
                Ok(()) => {
                    greeted = true;
                    Response::Hello {
                        version: PROTOCOL_VERSION,
                        node: access.node.clone(),
                    }
                }
                Err(e) => {
                    let reply = error(ErrorCode::Version, e.to_string());
                    wire::write_message(&mut writer, &reply).await?;
                    return Err(e);
                }
            },
            _ if !greeted => {
                let reply = error(ErrorCode::BadRequest, "send hello first".into());
                wire::write_message(&mut writer, &reply).await?;
                return Ok(());
            }
            Request::Status => {
                let (tx, rx) = oneshot::channel();
                match calls.send(Call::Status(tx)).await {
                    Ok(()) => match rx.await {
                        Ok(status) => Response::Status {
                            status: Box::new(status),
                        },
                        Err(_) => return Ok(()),
                    },
                    Err(_) => return Ok(()),
                }
            }
            Request::Schedules { limit } => {
                match ask_broker(calls, BrokerCall::List { limit }, &access.node).await {
                    Some(response) => response,
                    None => return Ok(()),
                }
            }
            Request::CancelSchedules { which } => match access.check_admin(&peer) {
                Err(message) => {
                    tracing::warn!(uid = peer.uid, "cancelling schedules refused: not an admin");
                    error(ErrorCode::Denied, message)
                }
                Ok(()) => {
                    let call = BrokerCall::Cancel {
                        which,
                        by_uid: peer.uid,
                    };
                    match ask_broker(calls, call, &access.node).await {
                        Some(response) => response,
                        None => return Ok(()),
                    }
                }
            },
            Request::Destinations { call } => {
                let allowed = match call.changes_something() {
                    true => access.check_admin(&peer),
                    false => Ok(()),
                };
                match allowed {
                    Err(message) => {
                        tracing::warn!(
                            uid = peer.uid,
                            ?call,
                            "destination call refused: not an admin"
                        );
                        error(ErrorCode::Denied, message)
                    }
                    Ok(()) => {
                        let call = BrokerCall::Destinations {
                            call,
                            by_uid: peer.uid,
                        };
                        match ask_broker(calls, call, &access.node).await {
                            Some(response) => response,
                            None => return Ok(()),
                        }
                    }
                }
            }
            Request::Failover => match access.check_admin(&peer) {
                Err(message) => {
                    tracing::warn!(uid = peer.uid, "failover refused: not an admin");
                    error(ErrorCode::Denied, message)
                }
                Ok(()) => {
                    let (reply, rx) = oneshot::channel();
                    if calls
                        .send(Call::Failover {
                            by_uid: peer.uid,
                            reply,
                        })
                        .await
                        .is_err()
                    {
                        return Ok(());
                    }
                    match rx.await {
                        Ok(response) => response,
                        Err(_) => return Ok(()),
                    }
                }
            },
        };
        wire::write_message(&mut writer, &reply).await?;
    }
}

/// Passes a broker request to the state machine and waits, bounded, for the broker's answer;
/// `None` once the state machine is gone (lockd is exiting).
async fn ask_broker(
    calls: &mpsc::Sender<Call>,
    request: BrokerCall,
    node: &str,
) -> Option<Response> {
    let (reply, rx) = oneshot::channel();
    calls.send(Call::Broker { request, reply }).await.ok()?;
    Some(match tokio::time::timeout(BROKER_CALL_TIMEOUT, rx).await {
        Ok(Ok(response)) => response,
        Ok(Err(_)) => error(
            ErrorCode::Unavailable,
            format!(
                "{node}'s broker went away before answering (it stopped or was replaced): \
                 retry, and see `ctl status`"
            ),
        ),
        Err(_) => error(
            ErrorCode::Unavailable,
            format!(
                "{node}'s broker did not answer within {} s: see `ctl status` and brokerd's log",
                BROKER_CALL_TIMEOUT.as_secs()
            ),
        ),
    })
}

fn error(code: ErrorCode, message: String) -> Response {
    Response::Error { code, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_cannot_take_the_admin_slots_nor_one_uid_every_slot() {
        let mut slots = Slots::default();
        for _ in 0..PER_UID {
            slots.admit(1000, false).unwrap();
        }
        let err = slots.admit(1000, false).unwrap_err();
        assert!(
            err.contains("uid 1000 already holds 8 connections"),
            "{err}"
        );
        let mut uid = 1001;
        while slots.total < MAX_CONNECTIONS - ADMIN_SLOTS {
            slots.admit(uid, false).unwrap();
            uid += 1;
        }
        let err = slots.admit(uid, false).unwrap_err();
        assert!(err.contains("to non-admins are in use"), "{err}");
        for _ in 0..ADMIN_SLOTS {
            slots.admit(0, true).unwrap();
        }
        assert!(
            slots.admit(0, true).is_err(),
            "the total bound holds for admins too"
        );
        slots.release(1000);
        assert_eq!(slots.per_uid[&1000], PER_UID - 1);
        assert!(
            slots.admit(1000, false).is_err(),
            "a freed slot is an admin's while readers hold all theirs"
        );
        slots.admit(0, true).unwrap();
    }

    /// The socket's name must never exist in the directory before it has its final mode: it
    /// appears by rename (IN_MOVED_TO), never by bind (IN_CREATE), which under the old code made
    /// it connectable with the umask's permissions until the chmod.
    #[tokio::test]
    async fn the_socket_appears_only_by_rename_with_its_final_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lockd.sock");
        // SAFETY: plain syscalls on a descriptor we own; the buffer outlives the read.
        let events = unsafe {
            let fd = libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC);
            assert!(fd >= 0);
            let dir_c = std::ffi::CString::new(dir.path().as_os_str().as_encoded_bytes()).unwrap();
            assert!(
                libc::inotify_add_watch(fd, dir_c.as_ptr(), libc::IN_CREATE | libc::IN_MOVED_TO)
                    >= 0
            );
            let listener = bind(&path, 0o600, None).unwrap();
            let mut buf = [0u8; 4096];
            let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
            libc::close(fd);
            drop(listener);
            parse_events(&buf[..n.max(0) as usize])
        };
        let on_socket: Vec<u32> = events
            .iter()
            .filter(|(_, name)| name == "lockd.sock")
            .map(|(mask, _)| *mask)
            .collect();
        assert_eq!(on_socket, vec![libc::IN_MOVED_TO], "{events:?}");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "only the socket is left: {leftovers:?}");
    }

    /// (mask, name) of each inotify event in `buf`.
    fn parse_events(mut buf: &[u8]) -> Vec<(u32, String)> {
        let header = std::mem::size_of::<libc::inotify_event>();
        let mut events = Vec::new();
        while buf.len() >= header {
            let mask = u32::from_ne_bytes(buf[4..8].try_into().unwrap());
            let len = u32::from_ne_bytes(buf[12..16].try_into().unwrap()) as usize;
            let name = &buf[header..header + len];
            let name = String::from_utf8_lossy(name)
                .trim_end_matches('\0')
                .to_owned();
            events.push((mask, name));
            buf = &buf[header + len..];
        }
        events
    }
}
