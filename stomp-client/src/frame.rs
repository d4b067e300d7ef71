//! The STOMP frame codec: pure functions over byte buffers, no I/O.
//!
//! [`encode`] writes any frame (the client writes CONNECT, SEND, SUBSCRIBE, UNSUBSCRIBE, ACK,
//! NACK, BEGIN, COMMIT, ABORT, DISCONNECT); [`read_frame`] takes one complete frame off the front
//! of a buffer (the client reads CONNECTED, MESSAGE, RECEIPT, ERROR), skipping heart-beat EOLs.
//! Invariants: a frame is never returned before all of it (body included) is buffered; a buffer
//! that grows past [`Limits::max_frame_bytes`] without holding a whole frame is an error, so a
//! misbehaving peer cannot make the reader buffer without bound.
//!
//! Header escaping follows the session's version (1.2: `\\`, `\c`, `\n`, `\r`; 1.1 the same
//! without `\r`, a CR going as it is) and is applied to every frame except CONNECT and
//! CONNECTED, and not at all when the session speaks STOMP 1.0. Reading is lenient: `\r` is
//! accepted from a 1.1 broker too.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::fmt::Write;

/// Size limits the reader enforces; each error names the limit it hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame (headers and body) accepted from the peer.
    pub max_frame_bytes: usize,
    /// Most header lines in one frame.
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: 16 * 1024 * 1024,
            max_headers: 1000,
        }
    }
}

/// Why bytes from the peer are not a STOMP frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame larger than max_frame_bytes ({limit} bytes)")]
    TooLarge { limit: usize },
    #[error("{command} frame has more than max_headers ({limit}) headers")]
    TooManyHeaders { command: String, limit: usize },
    #[error("malformed {command} frame: {reason}")]
    Malformed { command: String, reason: String },
}

fn malformed(command: &str, reason: impl Into<String>) -> FrameError {
    FrameError::Malformed {
        command: command.to_string(),
        reason: reason.into(),
    }
}

/// One decoded frame. Header names and values are unescaped and kept in order, repeated ones
/// included; [`Frame::header`] returns the first, as the specification requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub command: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Frame {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A one-line description of an ERROR frame: its `message` header and the body's first line.
    pub fn error_text(&self) -> String {
        let message = self.header("message").unwrap_or("");
        let body = String::from_utf8_lossy(&self.body);
        let detail = body.lines().next().unwrap_or("").trim();
        match (message.is_empty(), detail.is_empty() || detail == message) {
            (true, true) => "ERROR frame without a message".to_string(),
            (false, true) => message.to_string(),
            (true, false) => detail.to_string(),
            (false, false) => format!("{message}: {detail}"),
        }
    }
}

/// Whether header names and values are escaped on this connection.
fn escapes(command: &str, escape: bool) -> bool {
    escape && command != "CONNECT" && command != "CONNECTED" && command != "STOMP"
}

/// The header escapes a session writes, by its negotiated version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escapes {
    /// STOMP 1.0: none.
    None,
    /// STOMP 1.1: `\\`, `\c` and `\n`. 1.1 has no `\r`: its lines end with LF alone, so a CR
    /// is sent as it is.
    V1_1,
    /// STOMP 1.2: 1.1's and `\r`.
    V1_2,
}

/// Appends one encoded frame to `out` with STOMP 1.2 escaping (`escape`), or none (`!escape`,
/// STOMP 1.0); see [`encode_with`].
pub fn encode<K, V>(
    out: &mut BytesMut,
    command: &str,
    headers: impl IntoIterator<Item = (K, V)>,
    body: &[u8],
    escape: bool,
) where
    K: AsRef<str>,
    V: AsRef<str>,
{
    let escapes = if escape { Escapes::V1_2 } else { Escapes::None };
    encode_with(out, command, headers, body, escapes);
}

/// Appends one encoded frame to `out`. A `content-length` header is added for a non-empty body
/// (and any `content-length` in `headers` is dropped), so bodies may contain NUL bytes.
/// Headers are escaped as `escapes` says, except in CONNECT and CONNECTED.
pub fn encode_with<K, V>(
    out: &mut BytesMut,
    command: &str,
    headers: impl IntoIterator<Item = (K, V)>,
    body: &[u8],
    escapes: Escapes,
) where
    K: AsRef<str>,
    V: AsRef<str>,
{
    let escape = match escapes {
        Escapes::None => None,
        _ if !self::escapes(command, true) => None,
        other => Some(other),
    };
    out.reserve(command.len() + body.len() + 128);
    out.put_slice(command.as_bytes());
    out.put_u8(b'\n');
    for (k, v) in headers {
        let (k, v) = (k.as_ref(), v.as_ref());
        if k == "content-length" {
            continue;
        }
        put_escaped(out, k, escape);
        out.put_u8(b':');
        put_escaped(out, v, escape);
        out.put_u8(b'\n');
    }
    if !body.is_empty() {
        // Formatting into BytesMut cannot fail.
        let _ = writeln!(out, "content-length:{}", body.len());
    }
    out.put_u8(b'\n');
    out.put_slice(body);
    out.put_u8(0);
}

fn put_escaped(out: &mut BytesMut, s: &str, escape: Option<Escapes>) {
    let Some(escapes) = escape else {
        out.put_slice(s.as_bytes());
        return;
    };
    if !s.bytes().any(|b| matches!(b, b'\\' | b':' | b'\n' | b'\r')) {
        out.put_slice(s.as_bytes());
        return;
    }
    for b in s.bytes() {
        match b {
            b'\\' => out.put_slice(b"\\\\"),
            b':' => out.put_slice(b"\\c"),
            b'\n' => out.put_slice(b"\\n"),
            b'\r' if escapes == Escapes::V1_2 => out.put_slice(b"\\r"),
            _ => out.put_u8(b),
        }
    }
}

fn unescape(command: &str, raw: &[u8], escape: bool) -> Result<String, FrameError> {
    if !escape || !raw.contains(&b'\\') {
        return String::from_utf8(raw.to_vec())
            .map_err(|_| malformed(command, "header is not UTF-8"));
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut it = raw.iter();
    while let Some(&b) = it.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        out.push(match it.next() {
            Some(b'\\') => b'\\',
            Some(b'c') => b':',
            Some(b'n') => b'\n',
            Some(b'r') => b'\r',
            Some(&other) => {
                return Err(malformed(
                    command,
                    format!("undefined header escape \\{}", other as char),
                ))
            }
            None => return Err(malformed(command, "header ends in a lone backslash")),
        });
    }
    String::from_utf8(out).map_err(|_| malformed(command, "header is not UTF-8"))
}

/// Takes one complete frame off the front of `buf` (with any heart-beat EOLs before it).
///
/// Returns `Ok(None)` when `buf` holds only part of a frame (heart-beats alone are consumed);
/// the caller reads more and calls again. `escape` is false only on a STOMP 1.0 session.
pub fn read_frame(
    buf: &mut BytesMut,
    limits: &Limits,
    escape: bool,
) -> Result<Option<Frame>, FrameError> {
    let eols = buf
        .iter()
        .position(|&b| b != b'\n' && b != b'\r')
        .unwrap_or(buf.len());
    buf.advance(eols);
    if buf.is_empty() {
        return Ok(None);
    }
    let Some(head) = check_head(buf, limits)? else {
        return Ok(None);
    };
    let command = std::str::from_utf8(&buf[..head.command_end])
        .map_err(|_| malformed("?", "command is not UTF-8"))?
        .to_string();
    if command.is_empty() || !command.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(malformed(&command, "bad command line"));
    }
    let escape = escapes(&command, escape);
    let mut headers = Vec::with_capacity(head.lines.len());
    let mut content_length = None;
    for &(start, end) in &head.lines {
        if headers.len() == limits.max_headers {
            return Err(FrameError::TooManyHeaders {
                command,
                limit: limits.max_headers,
            });
        }
        let line = &buf[start..end];
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or_else(|| malformed(&command, "header line without a colon"))?;
        let name = unescape(&command, &line[..colon], escape)?;
        let value = unescape(&command, &line[colon + 1..], escape)?;
        if name == "content-length" && content_length.is_none() {
            content_length = Some(value.trim().parse::<usize>().map_err(|_| {
                malformed(
                    &command,
                    format!("content-length {value:?} is not a number"),
                )
            })?);
        }
        headers.push((name, value));
    }
    let body_start = head.body_start;
    let body_end = match content_length {
        Some(n) => {
            let end = body_start
                .checked_add(n)
                .filter(|&e| e < limits.max_frame_bytes);
            let Some(end) = end else {
                return Err(FrameError::TooLarge {
                    limit: limits.max_frame_bytes,
                });
            };
            if buf.len() <= end {
                buf.reserve(end + 1 - buf.len());
                return Ok(None);
            }
            if buf[end] != 0 {
                return Err(malformed(&command, "body is not followed by NUL"));
            }
            end
        }
        None => match buf[body_start..].iter().position(|&b| b == 0) {
            Some(i) => body_start + i,
            None => {
                check_size(buf.len(), limits)?;
                return Ok(None);
            }
        },
    };
    let mut chunk = buf.split_to(body_end + 1);
    chunk.truncate(body_end);
    chunk.advance(body_start);
    Ok(Some(Frame {
        command,
        headers,
        body: chunk.freeze(),
    }))
}

/// Where the command line, header lines and body of a buffered frame are.
struct Head {
    command_end: usize,
    /// Header lines as byte ranges, without their EOL.
    lines: Vec<(usize, usize)>,
    body_start: usize,
}

/// Finds the end of the frame's head (the blank line), or `None` if it is not all buffered.
fn check_head(buf: &[u8], limits: &Limits) -> Result<Option<Head>, FrameError> {
    let mut pos = 0;
    let mut command_end = None;
    let mut lines = Vec::with_capacity(8);
    loop {
        let Some(nl) = buf[pos..].iter().position(|&b| b == b'\n') else {
            check_size(buf.len(), limits)?;
            return Ok(None);
        };
        let mut end = pos + nl;
        if end > pos && buf[end - 1] == b'\r' {
            end -= 1;
        }
        let line = (pos, end);
        pos += nl + 1;
        match command_end {
            None => command_end = Some(end),
            Some(_) if line.0 == line.1 => break,
            Some(_) => {
                // One slot over the limit, so the caller reports it with the command's name.
                if lines.len() > limits.max_headers {
                    break;
                }
                lines.push(line);
            }
        }
    }
    Ok(Some(Head {
        command_end: command_end.unwrap_or(0),
        lines,
        body_start: pos,
    }))
}

fn check_size(buffered: usize, limits: &Limits) -> Result<(), FrameError> {
    if buffered > limits.max_frame_bytes {
        Err(FrameError::TooLarge {
            limit: limits.max_frame_bytes,
        })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(command: &str, headers: &[(&str, &str)], body: &[u8]) -> BytesMut {
        let mut out = BytesMut::new();
        encode(&mut out, command, headers.iter().copied(), body, true);
        out
    }

    #[test]
    fn round_trip_with_escapes_nul_body_and_heart_beats() {
        let mut buf = BytesMut::from(&b"\n\r\n"[..]);
        buf.extend_from_slice(&encoded(
            "MESSAGE",
            &[
                ("destination", "/queue/a"),
                ("odd:name", "line\nbreak\\ and\rcr"),
            ],
            b"a\0b",
        ));
        let f = read_frame(&mut buf, &Limits::default(), true)
            .unwrap()
            .unwrap();
        assert!(buf.is_empty());
        assert_eq!(f.command, "MESSAGE");
        assert_eq!(f.header("odd:name"), Some("line\nbreak\\ and\rcr"));
        assert_eq!(f.header("content-length"), Some("3"));
        assert_eq!(&f.body[..], b"a\0b");
    }

    #[test]
    fn stomp_1_1_sends_cr_as_it_is_and_1_2_escapes_it() {
        let headers = [("x", "a\rb:c")];
        let mut v11 = BytesMut::new();
        encode_with(&mut v11, "SEND", headers, b"", Escapes::V1_1);
        assert_eq!(&v11[..], b"SEND\nx:a\rb\\cc\n\n\0");
        let mut v12 = BytesMut::new();
        encode_with(&mut v12, "SEND", headers, b"", Escapes::V1_2);
        assert_eq!(&v12[..], b"SEND\nx:a\\rb\\cc\n\n\0");
        let mut v10 = BytesMut::new();
        encode_with(&mut v10, "SEND", headers, b"", Escapes::None);
        assert_eq!(&v10[..], b"SEND\nx:a\rb:c\n\n\0");
    }

    #[test]
    fn every_client_command_round_trips() {
        for command in [
            "CONNECT",
            "SEND",
            "SUBSCRIBE",
            "UNSUBSCRIBE",
            "ACK",
            "NACK",
            "BEGIN",
            "COMMIT",
            "ABORT",
            "DISCONNECT",
        ] {
            let mut buf = encoded(command, &[("receipt", "r-1"), ("x", "y")], b"");
            let f = read_frame(&mut buf, &Limits::default(), true)
                .unwrap()
                .unwrap();
            assert_eq!(f.command, command);
            assert_eq!(
                f.headers,
                [("receipt".into(), "r-1".into()), ("x".into(), "y".into())]
            );
            assert!(f.body.is_empty());
        }
    }

    #[test]
    fn connect_and_connected_are_not_escaped() {
        let mut buf = encoded("CONNECT", &[("passcode", "a:b\\c")], b"");
        assert!(buf.windows(13).any(|w| w == b"passcode:a:b\\"));
        let f = read_frame(&mut buf, &Limits::default(), true)
            .unwrap()
            .unwrap();
        assert_eq!(f.header("passcode"), Some("a:b\\c"));
        let mut buf = BytesMut::from(&b"CONNECTED\nserver:x\\y\n\n\0"[..]);
        let f = read_frame(&mut buf, &Limits::default(), true)
            .unwrap()
            .unwrap();
        assert_eq!(f.header("server"), Some("x\\y"));
    }

    #[test]
    fn stomp_1_0_sessions_do_not_unescape() {
        let mut buf = BytesMut::from(&b"MESSAGE\nx:a\\cb\n\n\0"[..]);
        let f = read_frame(&mut buf, &Limits::default(), false)
            .unwrap()
            .unwrap();
        assert_eq!(f.header("x"), Some("a\\cb"));
    }

    #[test]
    fn partial_frames_wait_for_more() {
        let whole = encoded("MESSAGE", &[("a", "1")], b"hello\0world");
        for cut in 0..whole.len() {
            let mut buf = BytesMut::from(&whole[..cut]);
            assert_eq!(
                read_frame(&mut buf, &Limits::default(), true),
                Ok(None),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn frames_without_content_length_end_at_nul_and_first_header_wins() {
        let mut buf = BytesMut::from(
            &b"RECEIPT\r\nreceipt-id:7\r\nreceipt-id:8\r\n\r\n\0ERROR\nmessage:m\n\nbody\0"[..],
        );
        let f = read_frame(&mut buf, &Limits::default(), true)
            .unwrap()
            .unwrap();
        assert_eq!(f.header("receipt-id"), Some("7"));
        let g = read_frame(&mut buf, &Limits::default(), true)
            .unwrap()
            .unwrap();
        assert_eq!(g.command, "ERROR");
        assert_eq!(g.error_text(), "m: body");
        assert!(buf.is_empty());
    }

    #[test]
    fn malformed_input_is_an_error() {
        let limits = Limits::default();
        for bad in [
            &b"MESSAGE\nnocolon\n\n\0"[..],
            b"MESSAGE\ncontent-length:1\n\nab\0",
            b"MESSAGE\nx:\\q\n\n\0",
            b"MESSAGE\ncontent-length:z\n\n\0",
            b"message\n\n\0",
        ] {
            let mut buf = BytesMut::from(bad);
            assert!(
                matches!(
                    read_frame(&mut buf, &limits, true),
                    Err(FrameError::Malformed { .. })
                ),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn limits_are_enforced_and_named() {
        let limits = Limits {
            max_frame_bytes: 64,
            max_headers: 2,
        };
        let mut buf = encoded("MESSAGE", &[], &[b'x'; 100]);
        let err = read_frame(&mut buf, &limits, true).unwrap_err();
        assert_eq!(err, FrameError::TooLarge { limit: 64 });
        assert!(err.to_string().contains("max_frame_bytes"));
        // No NUL in sight and already past the limit: refused before the end arrives.
        let mut buf = BytesMut::from(&[b"MESSAGE\n\n".as_slice(), &[b'x'; 80]].concat()[..]);
        assert_eq!(
            read_frame(&mut buf, &limits, true),
            Err(FrameError::TooLarge { limit: 64 })
        );
        let mut buf = encoded("MESSAGE", &[("a", "1"), ("b", "2"), ("c", "3")], b"");
        let err = read_frame(&mut buf, &limits, true).unwrap_err();
        assert!(err.to_string().contains("max_headers (2)"), "{err}");
    }
}
