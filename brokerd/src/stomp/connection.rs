//! One client's stream (TCP or TLS, [`Stream`]) and its read buffer: whole frames in, whole
//! frames out.
//!
//! The buffer never holds more than one frame's limit plus one read, because the
//! [`Decoder`] refuses an incomplete frame as soon as it is over the limit; the decoder
//! keeps its place in a frame between reads, so a large frame costs time in proportion to its
//! size however small the reads. Closing lingers briefly so the client receives our last frame
//! (an ERROR) instead of a connection reset.

use super::frame::{Decoder, Frame, Limits, ParseError};
use super::stream::Stream;
use super::Version;
use bytes::BytesMut;
use std::io;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Room made in the read buffer before each read, at least.
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
    /// A frame did not arrive whole in time: a client sending a byte at a time, or one that
    /// never finishes its frame, must not hold a connection slot and its buffer forever.
    #[error("frame not complete within {} ms of its first byte", .0.as_millis())]
    FrameTimeout(Duration),
    #[error("i/o error on client connection: {0}")]
    Io(#[from] io::Error),
}

/// A client stream speaking STOMP.
#[derive(Debug)]
pub struct Connection {
    stream: Stream,
    buffer: BytesMut,
    /// The frame at the front of `buffer`, parsed as far as it has arrived.
    decoder: Decoder,
    limits: Limits,
    version: Version,
    /// When the client last sent anything, heart-beat EOLs included.
    last_read: tokio::time::Instant,
    /// When [`Connection::read_frame`] first found the frame it is reading incomplete;
    /// `None` between frames. Time the session spends not reading (a held SEND) starts after
    /// a frame was returned, so it never counts against the next one.
    frame_started: Option<tokio::time::Instant>,
    /// How long one frame may take from then.
    frame_timeout: Duration,
}

impl Connection {
    /// Wraps an accepted stream (its TLS handshake done). Until [`Connection::set_version`] is
    /// called the connection speaks 1.0 framing, which is also how every CONNECT frame is read.
    /// A frame must arrive whole within `frame_timeout` of the first read that found it
    /// incomplete.
    pub fn new(stream: Stream, limits: Limits, frame_timeout: Duration) -> Self {
        Connection {
            stream,
            buffer: BytesMut::with_capacity(READ_CHUNK),
            decoder: Decoder::default(),
            limits,
            version: Version::V1_0,
            last_read: tokio::time::Instant::now(),
            frame_started: None,
            frame_timeout,
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
    /// Cancel-safe: bytes already read stay in the buffer, and the decoder's progress through
    /// them stays valid, for the next call (the buffer is only appended to until a frame is
    /// taken off it).
    pub async fn read_frame(&mut self) -> Result<Option<Frame>, ConnectionError> {
        loop {
            let decoded =
                (self.decoder).next_frame(&mut self.buffer, &self.limits, self.version)?;
            if let Some(frame) = decoded {
                self.frame_started = None;
                return Ok(Some(frame));
            }
            // Heart-beats between frames are gone from the buffer: what is left is the start
            // of a frame.
            let deadline = (!self.buffer.is_empty()).then(|| {
                let started = *self
                    .frame_started
                    .get_or_insert_with(tokio::time::Instant::now);
                started.checked_add(self.frame_timeout)
            });
            if self.buffer.is_empty() && self.stream.read_ready_now().await == Some(false) {
                // Idle between frames: wait for bytes holding no read buffer, so that idle
                // connections cost none; a busy one, whose next bytes are there, keeps it.
                self.buffer = BytesMut::new();
                self.stream.readable().await?;
            }
            // Reads straight into the buffer; reserving reuses the space of frames already
            // taken off its front when it can.
            self.buffer.reserve(READ_CHUNK);
            let read = self.stream.read_buf(&mut self.buffer);
            let n = match deadline.flatten() {
                None => read.await?,
                Some(at) => tokio::time::timeout_at(at, read)
                    .await
                    .map_err(|_| ConnectionError::FrameTimeout(self.frame_timeout))??,
            };
            self.last_read = tokio::time::Instant::now();
            if n == 0 {
                return if self.buffer.is_empty() {
                    Ok(None)
                } else {
                    Err(ConnectionError::Truncated)
                };
            }
        }
    }

    /// Writes one frame in the negotiated version, within [`WRITE_TIMEOUT`].
    pub async fn write_frame(&mut self, frame: &Frame) -> io::Result<()> {
        self.write_raw(&frame.encode(self.version)).await
    }

    /// Writes bytes that are already whole frames (or heart-beats), within [`WRITE_TIMEOUT`].
    /// The flush sends what TLS still holds when the socket was full (a no-op on TCP), so a
    /// frame never waits in a buffer for the next one.
    pub async fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        let write = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout(WRITE_TIMEOUT, write).await {
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

    /// Closes the connection after everything written so far: half-closes our side (over TLS,
    /// after a close_notify), then reads
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
