//! A tiny HTTP/1.1 responder for lockd's two read-only pages: `/metrics` on `metrics_listen`
//! and the passive console page on `console_listen`.
//!
//! lockd trusts nothing from the network, so everything here is bounded: one request per
//! connection (`Connection: close`), a request head of at most [`MAX_HEAD`] bytes read within
//! [`READ_DEADLINE`], the answer written within [`WRITE_DEADLINE`], and at most
//! [`MAX_CONNECTIONS`] connections per listener at once (one more is told 503 without waiting
//! and closed). Only GET and HEAD are answered; the body is whatever the handler renders from a
//! snapshot, never something that waits on the state machine or the keeper.

use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Longest request head (request line and headers) read; a longer one is answered 431.
pub const MAX_HEAD: usize = 8 * 1024;

/// A request head must arrive within this, or the connection is answered 408 and closed.
pub const READ_DEADLINE: Duration = Duration::from_secs(5);

/// The answer must be taken by the client within this, or the connection is dropped.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(5);

/// Connections served at once per listener; more are answered 503 at once and closed.
pub const MAX_CONNECTIONS: usize = 8;

/// After a failed accept (e.g. no descriptors left), wait this long before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What a handler answers for a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// `Content-Type` of the body.
    pub content_type: &'static str,
    /// The body (not sent for HEAD).
    pub body: String,
}

impl Reply {
    /// A plain-text answer with `status`.
    pub fn text(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }
}

/// Renders the answer to a GET or HEAD of a path (the query string already cut off).
pub type Handler = Arc<dyn Fn(&str) -> Reply + Send + Sync>;

/// Accepts connections on `listener` for ever, each answered once by `handler` on a task of
/// its own, at most [`MAX_CONNECTIONS`] at once.
pub async fn serve(listener: TcpListener, handler: Handler) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        match listener.accept().await {
            Ok((stream, _)) => admit(stream, &slots, &handler),
            Err(e) => {
                tracing::warn!(error = %e, "http accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Serves one accepted connection on a task of its own if a slot is free; otherwise tells it
/// 503 without waiting (whatever the socket buffer takes) and closes it.
pub fn admit(stream: TcpStream, slots: &Arc<Semaphore>, handler: &Handler) {
    match Arc::clone(slots).try_acquire_owned() {
        Ok(permit) => {
            let handler = Arc::clone(handler);
            tokio::spawn(async move {
                answer(stream, |path| handler(path)).await;
                drop(permit);
            });
        }
        Err(_) => {
            let reply = Reply::text(
                503,
                format!("too many connections (at most {MAX_CONNECTIONS})\n"),
            );
            let _ = stream.try_write(&encode(&reply, false));
        }
    }
}

/// Reads one request from `stream` and writes the answer, all within the deadlines.
pub async fn answer(mut stream: TcpStream, handler: impl FnOnce(&str) -> Reply) {
    let reply = match tokio::time::timeout(READ_DEADLINE, read_head(&mut stream)).await {
        Err(_) => Some((
            Reply::text(
                408,
                format!("no complete request within {} s\n", READ_DEADLINE.as_secs()),
            ),
            false,
        )),
        Ok(Err(Head::Closed)) => None,
        Ok(Err(Head::TooLarge)) => Some((
            Reply::text(431, format!("request head longer than {MAX_HEAD} bytes\n")),
            false,
        )),
        Ok(Ok(head)) => Some(match parse(&head) {
            Ok(Request { head_only, path }) => (handler(path), head_only),
            Err(reply) => (reply, false),
        }),
    };
    if let Some((reply, head_only)) = reply {
        let bytes = encode(&reply, head_only);
        let _ = tokio::time::timeout(WRITE_DEADLINE, async {
            stream.write_all(&bytes).await?;
            stream.shutdown().await
        })
        .await;
    }
}

/// Why no request head could be read.
#[derive(Debug, PartialEq, Eq)]
enum Head {
    /// The client closed (or reset) before sending a whole head.
    Closed,
    /// Longer than [`MAX_HEAD`] without its end.
    TooLarge,
}

/// Reads up to the blank line ending the request head; the head, without a body (none is
/// expected of GET or HEAD, and none is read).
async fn read_head(stream: &mut TcpStream) -> Result<Vec<u8>, Head> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.map_err(|_| Head::Closed)?;
        if n == 0 {
            return Err(Head::Closed);
        }
        head.extend_from_slice(&chunk[..n]);
        if let Some(end) = head_end(&head) {
            head.truncate(end);
            return Ok(head);
        }
        if head.len() > MAX_HEAD {
            return Err(Head::TooLarge);
        }
    }
}

/// Where the head ends (after its blank line, CRLF or bare LF), if it does.
fn head_end(bytes: &[u8]) -> Option<usize> {
    let crlf = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4);
    let lf = bytes.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
    .filter(|end| *end <= MAX_HEAD)
}

/// A request lockd answers: GET or HEAD of `path`.
#[derive(Debug, PartialEq, Eq)]
struct Request<'a> {
    head_only: bool,
    path: &'a str,
}

/// The request line of `head`; an error reply for anything but `GET|HEAD /path HTTP/1.x`.
fn parse(head: &[u8]) -> Result<Request<'_>, Reply> {
    let bad = |why: &str| Reply::text(400, format!("bad request: {why}\n"));
    let line_end = head
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| bad("no request line"))?;
    let line = std::str::from_utf8(&head[..line_end])
        .map_err(|_| bad("request line is not UTF-8"))?
        .trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("expected METHOD PATH HTTP/1.x"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(bad("only HTTP/1.x is spoken here"));
    }
    if !target.starts_with('/') {
        return Err(bad("the path must start with /"));
    }
    let path = target.split(['?', '#']).next().unwrap_or(target);
    match method {
        "GET" => Ok(Request {
            head_only: false,
            path,
        }),
        "HEAD" => Ok(Request {
            head_only: true,
            path,
        }),
        _ => Err(Reply::text(
            405,
            format!("method {method:?} not allowed: GET or HEAD only\n"),
        )),
    }
}

/// The whole response: status line, headers and (unless `head_only`) the body.
fn encode(reply: &Reply, head_only: bool) -> Vec<u8> {
    let reason = match reply.status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    };
    let allow = if reply.status == 405 {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    let mut out = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n{allow}Connection: close\r\n\r\n",
        reply.status,
        reply.content_type,
        reply.body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(reply.body.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_get_or_head_names_its_path_without_the_query() {
        let head = b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(
            parse(head),
            Ok(Request {
                head_only: false,
                path: "/metrics"
            })
        );
        assert_eq!(
            parse(b"HEAD / HTTP/1.0\n\n"),
            Ok(Request {
                head_only: true,
                path: "/"
            })
        );
    }

    #[test]
    fn anything_else_is_refused_with_a_reason() {
        assert_eq!(
            parse(b"POST /metrics HTTP/1.1\r\n\r\n").unwrap_err().status,
            405
        );
        for bad in [
            &b"GET /metrics\r\n\r\n"[..],
            b"GET metrics HTTP/1.1\r\n\r\n",
            b"GET / SPDY/3\r\n\r\n",
            b"\xff\xfe / HTTP/1.1\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(parse(bad).unwrap_err().status, 400, "{bad:?}");
        }
    }

    #[test]
    fn a_head_ends_at_its_first_blank_line_within_the_limit() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nrest"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n"), None);
        let mut long = vec![b'a'; MAX_HEAD];
        long.extend_from_slice(b"\r\n\r\n");
        assert_eq!(head_end(&long), None);
    }

    #[test]
    fn a_response_says_its_length_and_closes() {
        let reply = Reply::text(404, "no\n");
        let text = String::from_utf8(encode(&reply, false)).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"), "{text}");
        assert!(text.contains("Content-Length: 3\r\n"), "{text}");
        assert!(text.contains("Connection: close\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\nno\n"), "{text}");
        let head = String::from_utf8(encode(&reply, true)).unwrap();
        assert!(head.ends_with("\r\n\r\n"), "{head}");
        let refused = String::from_utf8(encode(&Reply::text(405, ""), false)).unwrap();
        assert!(refused.contains("Allow: GET, HEAD\r\n"), "{refused}");
    }

    #[tokio::test]
    async fn a_silent_client_gets_408_and_a_huge_head_431() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handler: Handler = Arc::new(|_| Reply::text(200, "ok\n"));
        tokio::spawn(serve(listener, handler));

        let mut huge = TcpStream::connect(addr).await.unwrap();
        let _ = huge.write_all(&vec![b'a'; MAX_HEAD + 2048]).await;
        let mut got = Vec::new();
        let _ = huge.read_to_end(&mut got).await;
        assert!(got.starts_with(b"HTTP/1.1 431 "), "{got:?}");

        let mut ok = TcpStream::connect(addr).await.unwrap();
        ok.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut got = Vec::new();
        ok.read_to_end(&mut got).await.unwrap();
        assert!(String::from_utf8_lossy(&got).ends_with("\r\n\r\nok\n"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_request_is_cut_off_at_the_read_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handler: Handler = Arc::new(|_| Reply::text(200, "ok\n"));
        tokio::spawn(serve(listener, handler));
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let mut got = Vec::new();
        slow.read_to_end(&mut got).await.unwrap();
        assert!(got.starts_with(b"HTTP/1.1 408 "), "{got:?}");
    }
}
