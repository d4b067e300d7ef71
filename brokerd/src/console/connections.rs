//! The console's connections, bounded as lockd bounds its own pages (`lockd/src/http.rs`):
//! at most [`Limits::connections`] served at once, one more told 503 without waiting and
//! closed (nothing queues behind a full console), every request head read within
//! [`Limits::head_deadline`], every request answered within [`Limits::request_deadline`] (408
//! otherwise), and every answer taken by the client with no stall longer than
//! [`Limits::write_deadline`]. So a client sending a head or a body a byte at a time, never
//! finishing one, keeping a connection idle between requests, or never reading its answers
//! gives its slot back.
//!
//! axum's own `serve` takes neither limit, so connections are accepted here and each is served
//! by hyper's HTTP/1 connection with its header read timeout (which runs from the moment the
//! connection waits for a request head, so it also ends a kept-alive connection left idle).

use super::write_deadline::WriteDeadline;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, warn, Instrument};

/// After a failed accept (e.g. no descriptors left), wait this long before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How many console connections are served at once, and how long a request head may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once (`--console-max-connections`); one more is answered 503 and
    /// closed. A browser keeps a few open, a Prometheus server one.
    pub connections: usize,
    /// A request head (request line and headers) must arrive within this, counted from when the
    /// connection starts waiting for it, or the connection is closed.
    pub head_deadline: Duration,
    /// A request must be answered within this once its head is read (its body read, the
    /// broker asked), or it is answered 408 and its connection closed: longer than any wait
    /// of the console's own (for the broker core, for the scheduler).
    pub request_deadline: Duration,
    /// Writing an answer may make no progress for this long (the client reads nothing), or
    /// the connection is closed.
    pub write_deadline: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            connections: 64,
            head_deadline: Duration::from_secs(10),
            request_deadline: Duration::from_secs(30),
            write_deadline: Duration::from_secs(10),
        }
    }
}

/// Serves `app` on `listener` within `limits` until `stop` resolves; then accepts no more, and
/// each open connection closes once its current request is answered.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    stop: impl Future<Output = ()>,
) {
    let app = app.layer(middleware::from_fn_with_state(
        limits.request_deadline,
        within_deadline,
    ));
    let slots = Arc::new(Semaphore::new(limits.connections));
    // Dropped on return: every connection then shuts down gracefully.
    let (_closing, closed) = watch::channel(());
    tokio::pin!(stop);
    loop {
        let stream = tokio::select! {
            () = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    warn!(error = %err, "console accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => {
                let connection = serve_one(stream, app.clone(), limits, closed.clone(), slot);
                tokio::spawn(connection.in_current_span());
            }
            Err(_) => refuse(&stream, limits.connections),
        }
    }
}

/// Serves one connection while it holds `_slot`, until it closes, breaks a limit, or the
/// console closes (`closed` changes or its sender is gone).
async fn serve_one(
    stream: TcpStream,
    app: Router,
    limits: Limits,
    mut closed: watch::Receiver<()>,
    _slot: OwnedSemaphorePermit,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.head_deadline);
    let stream = TokioIo::new(WriteDeadline::new(stream, limits.write_deadline));
    let connection = builder.serve_connection(stream, TowerToHyperService::new(app));
    tokio::pin!(connection);
    let ended = tokio::select! {
        ended = connection.as_mut() => ended,
        _ = closed.changed() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(err) = ended {
        // A client that went away or broke a limit: its business, not the operator's.
        debug!(error = %err, "console connection ended");
    }
}

/// Answers `request` with what `next` does within `deadline`, or with 408; a request cut off
/// (its body unread) also ends its connection.
async fn within_deadline(
    State(deadline): State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    match tokio::time::timeout(deadline, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            let why = format!(
                "the request was not complete and answered within {} s\n",
                deadline.as_secs_f64()
            );
            let close = [(header::CONNECTION, "close")];
            (StatusCode::REQUEST_TIMEOUT, close, why).into_response()
        }
    }
}

/// Tells a connection over the limit so, with whatever its socket buffer takes now (never
/// waiting on the client), and closes it.
fn refuse(stream: &TcpStream, limit: usize) {
    let body = format!("too many console connections (at most {limit}); retry shortly\n");
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nRetry-After: 1\r\nCache-Control: no-store\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.try_write(answer.as_bytes());
    debug!(limit, "console connection refused: too many open");
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::{get, post};
    use std::net::SocketAddr;
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Far beyond anything these tests wait for when all is well.
    const BOUND: Duration = Duration::from_secs(10);

    /// A console of one page within `limits`; its address, and what stops it when dropped.
    async fn start(limits: Limits) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/", get(|| async { "ok" }))
            .route("/big", get(|| async { vec![b'x'; 32 << 20] }))
            .route("/echo", post(|body: String| async move { body }));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let stopped = async move {
            let _ = stopped.await;
        };
        tokio::spawn(serve(listener, app, limits, stopped));
        (addr, stop)
    }

    /// Sends a GET of `/` on `stream` (kept alive) and reads its answer: the text up to its
    /// body, or whatever came before the server closed.
    async fn ask(stream: &mut TcpStream) -> String {
        let _ = stream.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
        let mut got = Vec::new();
        let mut chunk = [0u8; 1024];
        let read = async {
            while !got.ends_with(b"\r\n\r\nok") {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&chunk[..n]),
                }
            }
        };
        tokio::time::timeout(BOUND, read).await.expect("an answer");
        String::from_utf8_lossy(&got).into_owned()
    }

    /// Waits (bounded) until the server closes `stream`.
    async fn closed(stream: &mut TcpStream) {
        let mut rest = Vec::new();
        let read = stream.read_to_end(&mut rest);
        let _ = tokio::time::timeout(BOUND, read)
            .await
            .expect("the server closes the connection");
    }

    /// Connects until a connection is served rather than refused (a closed connection's slot
    /// comes back once its task sees the close).
    async fn served(addr: SocketAddr) -> TcpStream {
        let started = Instant::now();
        loop {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let answer = ask(&mut stream).await;
            if answer.starts_with("HTTP/1.1 200 ") {
                return stream;
            }
            // Refused: the 503, or nothing if the close reset the connection first (the
            // request was left unread).
            assert!(
                answer.is_empty() || answer.starts_with("HTTP/1.1 503 "),
                "{answer}"
            );
            assert!(started.elapsed() < BOUND, "no slot came back");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn connections_past_the_cap_are_refused_at_once_and_a_freed_slot_is_used_again() {
        let limits = Limits {
            connections: 2,
            ..Limits::default()
        };
        let (addr, _stop) = start(limits).await;
        let mut first = served(addr).await;
        let _second = served(addr).await;
        for _ in 0..3 {
            let mut extra = TcpStream::connect(addr).await.unwrap();
            let mut answer = String::new();
            let read = extra.read_to_string(&mut answer);
            tokio::time::timeout(BOUND, read).await.unwrap().unwrap();
            assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
            assert!(answer.contains("at most 2"), "{answer}");
        }
        // The two admitted connections are still served.
        assert!(ask(&mut first).await.starts_with("HTTP/1.1 200 "));
        drop(first);
        let _third = served(addr).await;
    }

    #[tokio::test]
    async fn a_head_not_finished_in_time_or_an_idle_connection_is_closed_and_frees_its_slot() {
        let limits = Limits {
            connections: 1,
            head_deadline: Duration::from_millis(200),
            ..Limits::default()
        };
        let (addr, _stop) = start(limits).await;
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n")
            .await
            .unwrap();
        let started = Instant::now();
        closed(&mut slow).await;
        // Timers never fire early: the client had its whole deadline.
        assert!(started.elapsed() >= limits.head_deadline);

        let mut idle = served(addr).await;
        closed(&mut idle).await;
        served(addr).await;
    }

    #[tokio::test]
    async fn a_body_not_finished_in_time_is_answered_408_and_its_connection_closed() {
        let limits = Limits {
            request_deadline: Duration::from_millis(200),
            ..Limits::default()
        };
        let (addr, _stop) = start(limits).await;
        let mut slow = TcpStream::connect(addr).await.unwrap();
        let head = "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n";
        slow.write_all(head.as_bytes()).await.unwrap();
        slow.write_all(b"a tenth").await.unwrap();
        let mut answer = String::new();
        let read = slow.read_to_string(&mut answer);
        tokio::time::timeout(BOUND, read).await.unwrap().unwrap();
        assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");

        // A whole request is answered as before.
        let mut quick = TcpStream::connect(addr).await.unwrap();
        let request = "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nok";
        quick.write_all(request.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        let mut chunk = [0u8; 1024];
        while !got.ends_with(b"\r\n\r\nok") {
            let n = tokio::time::timeout(BOUND, quick.read(&mut chunk))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&chunk[..n]);
        }
        assert!(got.starts_with(b"HTTP/1.1 200 "));
    }

    #[tokio::test]
    async fn a_client_that_reads_none_of_its_answer_is_cut_off_and_frees_its_slot() {
        let limits = Limits {
            connections: 1,
            write_deadline: Duration::from_millis(200),
            ..Limits::default()
        };
        let (addr, _stop) = start(limits).await;
        let mut stuck = TcpStream::connect(addr).await.unwrap();
        // Far more than the socket buffers of both ends hold; never read.
        stuck
            .write_all(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        served(addr).await;
    }

    #[tokio::test]
    async fn a_stopped_console_accepts_no_more_and_closes_its_idle_connections() {
        let (addr, stop) = start(Limits::default()).await;
        let mut open = served(addr).await;
        drop(stop);
        closed(&mut open).await;
        let refused = async {
            while TcpStream::connect(addr).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(BOUND, refused)
            .await
            .expect("the listener is closed");
    }
}
