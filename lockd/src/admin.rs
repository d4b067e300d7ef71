//! The ctl socket: who may ask what, and the request/response loop of one connection.
//!
//! Anyone who can connect (the socket's mode decides) may read status. Changing anything needs
//! root, lockd's own user or the admin group, checked from the kernel's SO_PEERCRED, never
//! from anything the peer says.

use shared_proto::admin::{ErrorCode, Request, Response, Status};
use shared_proto::wire::{self, WireError};
use shared_proto::PROTOCOL_VERSION;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::BufReader;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 32;

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
/// lockd that is still running.
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
    let listener = UnixListener::bind(path)
        .map_err(|e| anyhow::anyhow!("cannot bind the ctl socket {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    if let Some(gid) = group {
        crate::sys::users::chown_group(path, gid).map_err(|e| {
            anyhow::anyhow!(
                "cannot give the ctl socket {} to the admin group: {e}",
                path.display()
            )
        })?;
    }
    Ok(listener)
}

/// Serves connections until the process exits.
pub async fn serve(listener: UnixListener, access: Access, calls: mpsc::Sender<Call>) {
    let access = Arc::new(access);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
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
        tokio::spawn(async move {
            if let Err(e) = serve_connection(stream, &access, &calls).await {
                tracing::warn!(error = %e, "ctl connection refused");
            }
            drop(permit);
        });
    }
}

async fn serve_connection(
    stream: UnixStream,
    access: &Access,
    calls: &mpsc::Sender<Call>,
) -> Result<(), WireError> {
    let cred = stream.peer_cred()?;
    let peer = Peer {
        uid: cred.uid(),
        gid: cred.gid(),
        groups: crate::sys::users::peer_groups(&stream)?,
    };
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

fn error(code: ErrorCode, message: String) -> Response {
    Response::Error { code, message }
}
