//! A console connection's socket whose writes may stall only so long: a client that stops
//! reading its answers (its receive window closed, the socket buffers full) would otherwise
//! hold its connection, and its slot, for ever. hyper has a deadline for reading a request
//! head, none for writing an answer.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// `S` whose writes (and flushes, and shutdown) fail with [`io::ErrorKind::TimedOut`] once
/// they have made no progress for the deadline; reads pass through.
pub struct WriteDeadline<S> {
    inner: S,
    deadline: Duration,
    /// Armed when a write first waits, disarmed by any progress.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> WriteDeadline<S> {
    /// `inner`, whose writes may wait at most `deadline` without progress.
    pub fn new(inner: S, deadline: Duration) -> WriteDeadline<S> {
        WriteDeadline {
            inner,
            deadline,
            stalled: None,
        }
    }

    /// Polls a write with `poll`, failing it once it has waited the whole deadline.
    fn within<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: impl FnOnce(&mut S, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if let Poll::Ready(done) = poll(&mut self.inner, cx) {
            self.stalled = None;
            return Poll::Ready(done);
        }
        let deadline = self.deadline;
        let stalled = (self.stalled).get_or_insert_with(|| Box::pin(tokio::time::sleep(deadline)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the client took nothing of its answer for {} s",
                    deadline.as_secs_f64()
                ),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .within(cx, |inner, cx| Pin::new(inner).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().within(cx, |inner, cx| {
            Pin::new(inner).poll_write_vectored(cx, bufs)
        })
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut()
            .within(cx, |inner, cx| Pin::new(inner).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut()
            .within(cx, |inner, cx| Pin::new(inner).poll_shutdown(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_write_nobody_takes_fails_at_the_deadline_and_progress_resets_it() {
        let (near, mut far) = tokio::io::duplex(16);
        let mut writer = WriteDeadline::new(near, Duration::from_secs(5));
        // Taken a little at a time, slower than the deadline in all: progress is enough.
        let taking = tokio::spawn(async move {
            let mut got = [0u8; 8];
            for _ in 0..4 {
                tokio::time::sleep(Duration::from_secs(3)).await;
                far.read_exact(&mut got).await.unwrap();
            }
            far
        });
        writer.write_all(&[7u8; 48]).await.unwrap();
        let _far = taking.await.unwrap();
        // Nobody reads any more: the buffer fills, then the write fails.
        let failed = writer.write_all(&[7u8; 64]).await.unwrap_err();
        assert_eq!(failed.kind(), io::ErrorKind::TimedOut, "{failed}");
    }
}
