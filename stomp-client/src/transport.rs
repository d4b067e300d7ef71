//! The byte stream under a STOMP connection: TCP for `tcp://` addresses, TLS over TCP for
//! `ssl://` ones, split into a read and a write half so one task can wait on both.
//!
//! The TLS configuration (the CAs that a broker's certificate must chain to, and a client
//! certificate for brokers that require one) is read from PEM files once, by [`TlsOptions::load`],
//! when the client starts; every connection and reconnection uses it.

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// Where the TLS material for `ssl://` addresses lives (ctl's `--tls-*-file` options).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM CA certificates that a broker's certificate must chain to; required for `ssl://`
    /// (for a public CA, the system bundle, e.g. /etc/ssl/certs/ca-certificates.crt).
    pub ca_file: Option<PathBuf>,
    /// PEM certificate chain presented to brokers that require client certificates.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
}

/// Why the TLS files could not be used; the message names the file and what to do.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

impl TlsOptions {
    /// Reads the files into a client configuration.
    pub fn load(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let Some(ca_file) = &self.ca_file else {
            return Err(TlsError(
                "an ssl:// address needs the CA that signed the broker's certificate: give a \
                 CA file (ctl: --tls-ca-file; for a public CA, \
                 /etc/ssl/certs/ca-certificates.crt)"
                    .into(),
            ));
        };
        let roots = tls_files::roots(ca_file, "CA file").map_err(TlsError)?;
        let builder = ClientConfig::builder_with_provider(tls_files::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError(format!("TLS protocol versions: {e}")))?
            .with_root_certificates(roots);
        let config = match (&self.cert_file, &self.key_file) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let chain =
                    tls_files::certificates(cert, "client certificate file").map_err(TlsError)?;
                let der = tls_files::private_key(key, "client key file").map_err(TlsError)?;
                builder.with_client_auth_cert(chain, der).map_err(|e| {
                    TlsError(format!(
                        "client key file {} with certificate {}: {e}; give the key the \
                         certificate was issued for",
                        key.display(),
                        cert.display()
                    ))
                })?
            }
            _ => {
                return Err(TlsError(
                    "a client certificate needs both its certificate and its key file (ctl: \
                     --tls-cert-file and --tls-key-file)"
                        .into(),
                ))
            }
        };
        Ok(Arc::new(config))
    }
}

/// Connects to `host:port`, with a TLS handshake when `tls` is given (the certificate must name
/// `host`), and splits the stream.
pub(crate) async fn open(
    host: &str,
    port: u16,
    tls: Option<&Arc<ClientConfig>>,
) -> io::Result<(ReadHalf, WriteHalf)> {
    let stream = TcpStream::connect((host, port)).await?;
    // STOMP frames are small and latency matters more than packet count.
    let _ = stream.set_nodelay(true);
    let Some(config) = tls else {
        let (read, write) = stream.into_split();
        return Ok((ReadHalf::Plain(read), WriteHalf::Plain(write)));
    };
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{host:?}: {e}")))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::clone(config))
        .connect(name, stream)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("TLS handshake: {e}")))?;
    let (read, write) = tokio::io::split(tls);
    Ok((
        ReadHalf::Tls(read),
        WriteHalf::Tls {
            half: write,
            unflushed: false,
        },
    ))
}

/// The reading half of a connection.
#[derive(Debug)]
pub(crate) enum ReadHalf {
    Plain(OwnedReadHalf),
    Tls(tokio::io::ReadHalf<TlsStream<TcpStream>>),
}

impl ReadHalf {
    /// Reads what is there without waiting (after a connection was lost).
    pub(crate) fn try_read_buf(&mut self, buf: &mut bytes::BytesMut) -> io::Result<usize> {
        match self {
            ReadHalf::Plain(tcp) => tcp.try_read_buf(buf),
            ReadHalf::Tls(tls) => {
                use tokio::io::AsyncReadExt;
                let mut cx = Context::from_waker(std::task::Waker::noop());
                let read = std::pin::pin!(tls.read_buf(buf));
                match read.poll(&mut cx) {
                    Poll::Ready(result) => result,
                    Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
                }
            }
        }
    }
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadHalf::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            ReadHalf::Tls(tls) => Pin::new(tls).poll_read(cx, buf),
        }
    }
}

/// The writing half of a connection.
#[derive(Debug)]
pub(crate) enum WriteHalf {
    Plain(OwnedWriteHalf),
    Tls {
        half: tokio::io::WriteHalf<TlsStream<TcpStream>>,
        /// TLS records may wait inside rustls after a write the socket could not take whole;
        /// true until a flush pushed them out.
        unflushed: bool,
    },
}

impl WriteHalf {
    /// Whether a flush is owed: bytes written may still wait in the TLS layer. Never on TCP.
    pub(crate) fn unflushed(&self) -> bool {
        matches!(
            self,
            WriteHalf::Tls {
                unflushed: true,
                ..
            }
        )
    }

    /// Writes some of `buf` (`Some(bytes written)`), or, given nothing to write, flushes what
    /// the TLS layer still holds (`None`). Cancel-safe, as both steps are.
    pub(crate) async fn write_or_flush(&mut self, buf: &[u8]) -> io::Result<Option<usize>> {
        use tokio::io::AsyncWriteExt;
        if buf.is_empty() {
            self.flush().await.map(|()| None)
        } else {
            self.write(buf).await.map(Some)
        }
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            WriteHalf::Tls { half, unflushed } => {
                let written = Pin::new(&mut *half).poll_write(cx, buf);
                if let Poll::Ready(Ok(_)) = written {
                    *unflushed = true;
                }
                written
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            WriteHalf::Tls { half, unflushed } => {
                let flushed = Pin::new(half).poll_flush(cx);
                if let Poll::Ready(Ok(())) = flushed {
                    *unflushed = false;
                }
                flushed
            }
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            WriteHalf::Tls { half, .. } => Pin::new(half).poll_shutdown(cx),
        }
    }
}
