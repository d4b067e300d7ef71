//! The ctl side of lockd's control socket.

use anyhow::{bail, Context};
use shared_proto::admin::{ErrorCode, Request, Response, Status};
use shared_proto::wire;
use shared_proto::PROTOCOL_VERSION;
use std::path::{Path, PathBuf};
use tokio::io::BufReader;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

/// A greeted connection to one lockd.
pub struct Client {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    buf: Vec<u8>,
    /// The node that answered.
    pub node: String,
}

impl Client {
    /// Connects and exchanges Hello.
    pub async fn connect(socket: &Path) -> anyhow::Result<Client> {
        let stream = UnixStream::connect(socket).await.with_context(|| {
            format!(
                "cannot reach lockd at {}: is it running, and may you open its socket?",
                socket.display()
            )
        })?;
        let (read_half, writer) = stream.into_split();
        let mut client = Client {
            reader: BufReader::new(read_half),
            writer,
            buf: Vec::new(),
            node: String::new(),
        };
        match client
            .request(&Request::Hello {
                version: PROTOCOL_VERSION,
            })
            .await?
        {
            Response::Hello { version, node } => {
                wire::check_version(version)?;
                client.node = node;
                Ok(client)
            }
            other => bail!("lockd answered hello with {other:?}"),
        }
    }

    /// Sends one request and reads its response; an `Error` response is returned as is.
    pub async fn request(&mut self, request: &Request) -> anyhow::Result<Response> {
        wire::write_message(&mut self.writer, request).await?;
        match wire::read_message(&mut self.reader, &mut self.buf).await? {
            Some(response) => Ok(response),
            None => bail!("lockd closed the connection without answering"),
        }
    }

    /// Sends `request`; an error answer becomes a [`crate::Refused`] (exit 1) with lockd's
    /// words (a passive node names the active one).
    pub async fn ask(&mut self, request: Request) -> anyhow::Result<Response> {
        match self.request(&request).await? {
            Response::Error {
                code: ErrorCode::Denied,
                message,
            } => Err(crate::Refused(format!("refused: {message}")).into()),
            Response::Error { message, .. } => Err(crate::Refused(message).into()),
            response => Ok(response),
        }
    }

    /// This node's status.
    pub async fn status(&mut self) -> anyhow::Result<Status> {
        match self.request(&Request::Status).await? {
            Response::Status { status } => Ok(*status),
            Response::Error { message, .. } => bail!("{message}"),
            other => bail!("unexpected answer to status: {other:?}"),
        }
    }
}

/// The socket path from `--socket` or `LOCKD_SOCKET`.
pub fn socket_path(flag: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    flag.context(
        "no lockd socket given: pass --socket PATH or set LOCKD_SOCKET (the `socket` of lockd's config)",
    )
}
