//! A client's byte stream: a TCP socket, or TLS over one. Everything above it (frames,
//! sessions) is the same code for both; the plain case costs one `match` per call and nothing
//! else.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// An accepted client connection, after its TLS handshake if it came in on an `ssl://` listener.
#[derive(Debug)]
pub enum Stream {
    /// `tcp://` (or a bare `HOST:PORT`) listener.
    Plain(TcpStream),
    /// `ssl://` listener, handshake done. Boxed: the TLS state is large and this enum is moved
    /// around by value.
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(tcp) => tcp.is_write_vectored(),
            Stream::Tls(tls) => tls.is_write_vectored(),
        }
    }

    /// TLS buffers records inside rustls when the socket is full: a flush pushes them out.
    /// A no-op on TCP.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    /// TCP: half-closes our side. TLS: sends close_notify first, then half-closes.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}

impl Stream {
    /// On plain TCP, whether bytes are waiting to be read right now; `None` on TLS, where
    /// decrypted bytes held inside rustls do not show in the socket's readiness.
    pub async fn read_ready_now(&self) -> Option<bool> {
        let Stream::Plain(tcp) = self else {
            return None;
        };
        Some(std::future::poll_fn(|cx| Poll::Ready(tcp.poll_read_ready(cx).is_ready())).await)
    }

    /// Waits until plain TCP has bytes to read (without reading them); returns at once on TLS.
    pub async fn readable(&self) -> io::Result<()> {
        match self {
            Stream::Plain(tcp) => tcp.readable().await,
            Stream::Tls(_) => Ok(()),
        }
    }
}
