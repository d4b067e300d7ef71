//! One client's TCP socket and its read buffer: whole frames in, whole frames out.
//!
//! The buffer never holds more than one frame's limit plus one read, because [`frame::parse`]
//! refuses an incomplete frame as soon as it is over the limit. Closing lingers briefly so the
//! client receives our last frame (an ERROR) instead of a connection reset.

use super::frame::{self, Frame, Limits, ParseError};
use super::Version;
use bytes::{Buf, BytesMut};
use std::io;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 8 * 1024;

/// How long one frame may take to write: a client that stops reading must not hold its
/// connection slot forever.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long [`Connection::close`] keeps reading after our last frame. If we closed a socket that
/// still had unread input, the kernel would answer with a reset, and the client could lose the
/// ERROR frame that explains why it was disconnected.
const LINGER: Duration = Duration::from_secs(1);

/// Why no frame could be read; every case ends the connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// The client sent something that is not an acceptable frame; tell it why.
    #[error(transparent)]
    Frame(#[from] ParseError),
    /// The client hung up in the middle of a frame; there is nobody left to tell.
    #[error("client closed the connection in the middle of a frame")]
    Truncated,
    #[error("i/o error on client connection: {0}")]
    Io(#[from] io::Error),
}

/// A client socket speaking STOMP.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    buffer: BytesMut,
    limits: Limits,
    version: Version,
    /// When the client last sent anything, heart-beat EOLs included.
    last_read: tokio::time::Instant,
}

impl Connection {
    /// Wraps an accepted socket. Until [`Connection::set_version`] is called the connection
    /// speaks 1.0 framing, which is also how every CONNECT frame is read.
    pub fn new(stream: TcpStream, limits: Limits) -> Self {
        Connection {
            stream,
            buffer: BytesMut::with_capacity(READ_CHUNK),
            limits,
            version: Version::V1_0,
            last_read: tokio::time::Instant::now(),
        }
    }

    /// When the client last sent anything, heart-beat EOLs included: what a heart-beat
    /// deadline is measured from.
    pub fn last_read(&self) -> tokio::time::Instant {
        self.last_read
    }

    /// The version negotiated by CONNECT, which decides header escaping from now on.
    pub fn set_version(&mut self, version: Version) {
        self.version = version;
    }

    /// Reads the next frame; `Ok(None)` when the client closed the connection between frames.
    /// Cancel-safe: bytes already read stay in the buffer for the next call.
    pub async fn read_frame(&mut self) -> Result<Option<Frame>, ConnectionError> {
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            // Heart-beat EOLs are dropped here so they never count against the frame limit.
            let beats = frame::heartbeat_len(&self.buffer);
            self.buffer.advance(beats);
            if let Some((frame, used)) = frame::parse(&self.buffer, &self.limits, self.version)? {
                self.buffer.advance(used);
                return Ok(Some(frame));
            }
            let n = self.stream.read(&mut chunk).await?;
            self.last_read = tokio::time::Instant::now();
            if n == 0 {
                return if self.buffer.is_empty() {
                    Ok(None)
                } else {
                    Err(ConnectionError::Truncated)
                };
            }
            self.buffer.extend_from_slice(&chunk[..n]);
        }
    }

    /// Writes one frame in the negotiated version, within [`WRITE_TIMEOUT`].
    pub async fn write_frame(&mut self, frame: &Frame) -> io::Result<()> {
        self.write_raw(&frame.encode(self.version)).await
    }

    /// Writes bytes that are already whole frames (or heart-beats), within [`WRITE_TIMEOUT`].
    pub async fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        match tokio::time::timeout(WRITE_TIMEOUT, self.stream.write_all(bytes)).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "client did not read {} bytes within {WRITE_TIMEOUT:?}",
                    bytes.len()
                ),
            )),
        }
    }

    /// Closes the connection after everything written so far: half-closes our side, then reads
    /// and discards the client's input until it closes too or [`LINGER`] passes.
    pub async fn close(mut self) {
        // A failed shutdown means the peer is already gone; dropping the socket is all that is
        // left to do, so the error carries no information worth acting on.
        if self.stream.shutdown().await.is_err() {
            return;
        }
        let mut scratch = [0u8; READ_CHUNK];
        let drain = async {
            while let Ok(n) = self.stream.read(&mut scratch).await {
                if n == 0 {
                    break;
                }
            }
        };
        // Timing out only ends the linger early; the socket is dropped either way.
        let _ = tokio::time::timeout(LINGER, drain).await;
    }
}
