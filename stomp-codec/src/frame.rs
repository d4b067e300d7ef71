//! The STOMP frame codec: pure functions between bytes and [`Frame`]s, with no I/O.
//!
//! [`Decoder::decode`] reads at most one frame from the front of a buffer and says how many bytes
//! it used, or that the frame is still incomplete; called again with more bytes, it goes on from
//! where it stopped ([`parse`] is the same, starting over each time). It keeps every [`Limits`]
//! bound even on incomplete input, so a client can never make the broker buffer more than
//! `max_frame_bytes` for one frame.
//! Header escaping follows the negotiated [`Version`]; repeated headers are all kept in order, and
//! lookups return the first, as the specification requires.

use crate::{excerpt, Escaping, Version};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::ops::Range;

/// Bounds on what a client may send in one frame; each error names the bound it hit so an
/// operator knows which option to raise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame, command line to NUL, in bytes (`--max-frame-bytes`).
    pub max_frame_bytes: usize,
    /// Most headers in one frame (`--max-headers`).
    pub max_headers: usize,
    /// Longest command or header line in bytes, end of line excluded (`--max-header-bytes`).
    pub max_header_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: 1024 * 1024,
            max_headers: 64,
            max_header_bytes: 8192,
        }
    }
}

/// One STOMP frame, as received from or sent to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The command, e.g. `CONNECT` or `ERROR`.
    pub command: String,
    /// Headers in wire order, unescaped; a name may repeat.
    pub headers: Vec<(String, String)>,
    /// The body; may contain NUL octets when the frame has a `content-length`.
    pub body: Bytes,
}

/// What made a frame unacceptable. Once this happens the stream is out of step and the
/// connection must be closed after telling the client why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame exceeds the max-frame-bytes limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("frame has more than the max-headers limit of {limit} headers")]
    TooManyHeaders { limit: usize },
    #[error("a command or header line exceeds the max-header-bytes limit of {limit} bytes")]
    LineTooLong { limit: usize },
    #[error("{excerpt:?} is not a STOMP command")]
    InvalidCommand { excerpt: String },
    #[error("header line {excerpt:?} has no ':' between name and value")]
    MissingColon { excerpt: String },
    #[error("header line {excerpt:?} uses an undefined escape sequence (defined: {})", escaping.defined())]
    InvalidEscape { excerpt: String, escaping: Escaping },
    #[error("the {what} is not valid UTF-8")]
    InvalidUtf8 { what: &'static str },
    #[error("content-length {value:?} is not a byte count")]
    InvalidContentLength { value: String },
    #[error(
        "frame body is not terminated by a NUL octet after its content-length of {length} bytes"
    )]
    MissingNul { length: usize },
}

/// A [`FrameError`] together with the frame's `receipt` header when it was read before the error,
/// so the ERROR frame can carry `receipt-id`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}")]
pub struct ParseError {
    /// What was wrong.
    pub error: FrameError,
    /// The frame's `receipt` header, if the parser got that far.
    pub receipt: Option<String>,
}

impl Frame {
    /// A frame with no headers and no body, to be filled in with the `with_*` builders.
    pub fn new(command: impl Into<String>) -> Self {
        Frame {
            command: command.into(),
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// Appends a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    pub fn with_body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// The value of the first header called `name`: STOMP says the first of repeated headers wins.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Serialises the frame for a peer speaking `version` ([`encode`]).
    pub fn encode(&self, version: Version) -> Bytes {
        let mut out = BytesMut::with_capacity(64 + self.body.len());
        self.encode_into(&mut out, version);
        out.freeze()
    }

    /// [`Frame::encode`], appending to `out`: a writer batching several frames into one write
    /// encodes each in place instead of copying it from a buffer of its own.
    pub fn encode_into(&self, out: &mut BytesMut, version: Version) {
        let headers = self.headers.iter().map(|(n, v)| (n.as_str(), v.as_str()));
        encode(out, &self.command, headers, &self.body, version);
    }
}

/// Appends one frame to `out`, for a peer speaking `version`, without building a [`Frame`].
/// Headers are escaped as the version and command say ([`Version::escaping`]); where there is
/// no escaping (1.0, CONNECT, CONNECTED), CR and LF cannot be represented and go as spaces
/// rather than breaking the frame. A `content-length` in `headers` is dropped and the body's
/// true length written when it is not empty, so a body may hold NUL octets.
pub fn encode<K, V>(
    out: &mut BytesMut,
    command: &str,
    headers: impl IntoIterator<Item = (K, V)>,
    body: &[u8],
    version: Version,
) where
    K: AsRef<str>,
    V: AsRef<str>,
{
    use std::fmt::Write;
    let escaped = version.escaping(command);
    out.reserve(command.len() + body.len() + 64);
    out.put_slice(command.as_bytes());
    out.put_u8(b'\n');
    for (name, value) in headers {
        let (name, value) = (name.as_ref(), value.as_ref());
        if name == "content-length" {
            continue;
        }
        put_header_text(out, name, escaped);
        out.put_u8(b':');
        put_header_text(out, value, escaped);
        out.put_u8(b'\n');
    }
    if !body.is_empty() {
        // Formatting into a BytesMut cannot fail.
        let _ = writeln!(out, "content-length:{}", body.len());
    }
    out.put_u8(b'\n');
    out.put_slice(body);
    out.put_u8(0);
}

/// How many bytes at the front of `buf` are heart-beat end-of-lines (`\n` or `\r\n`) that
/// precede the next frame; the caller discards them so they never count against a limit.
pub fn heartbeat_len(buf: &[u8]) -> usize {
    let mut pos = 0;
    loop {
        match &buf[pos..] {
            [b'\n', ..] => pos += 1,
            [b'\r', b'\n', ..] => pos += 2,
            _ => return pos,
        }
    }
}

/// Parses the frame at the front of `buf` (after any heart-beat EOLs), as sent by a client
/// speaking `version`. Returns the frame and the bytes it used, `Ok(None)` when more bytes are
/// needed, or the reason the input can never become a valid frame. Each call starts over; a
/// reader that feeds a frame in pieces keeps a [`Decoder`] instead.
pub fn parse(
    buf: &[u8],
    limits: &Limits,
    version: Version,
) -> Result<Option<(Frame, usize)>, ParseError> {
    let start = heartbeat_len(buf);
    let parsed = Decoder::default().decode(&buf[start..], limits, version)?;
    Ok(parsed.map(|(frame, used)| (frame, start + used)))
}

/// Bodies this large are handed out sharing the read buffer's memory instead of copied. A
/// smaller one is copied: sharing would keep the whole buffer it arrived in alive for as long as
/// the message waits, many times the message's size.
pub const SHARED_BODY_BYTES: usize = 64 * 1024;

/// A frame being received, parsed as far as its bytes have arrived, so that more bytes resume
/// the parse instead of starting it over: header lines already read are not read again, and the
/// search for the NUL that ends a body without `content-length` goes on from where it stopped.
/// Every byte is examined once (a header line still incomplete is looked at again, but lines
/// are bounded by `max_header_bytes`), so a large frame arriving in many small reads costs time
/// in proportion to its size, not to its size squared.
///
/// Contract: between two calls of [`Decoder::decode`] the caller only appends to its buffer;
/// the buffer starts where the frame starts (heart-beat EOLs already dropped, see
/// [`Decoder::is_idle`]). Once `decode` returns a frame or an error, the decoder is idle again.
#[derive(Debug, Default)]
pub struct Decoder {
    /// Set once the command line is complete.
    head: Option<Head>,
}

/// What a frame in progress has shown of itself.
#[derive(Debug)]
struct Head {
    command: String,
    escaping: Escaping,
    headers: Vec<(String, String)>,
    /// The `receipt` header, as soon as it is read, so that a later error can still answer it.
    receipt: Option<String>,
    /// Where the next header line starts; the body's start once `body` is set.
    pos: usize,
    /// Set once the blank line that ends the headers is read.
    body: Option<Body>,
}

/// Where a frame's body is, as far as is known.
#[derive(Debug, Clone, Copy)]
enum Body {
    /// `content-length` said how long it is; a NUL must follow it.
    Length { start: usize, length: usize },
    /// No `content-length`: the body ends at the first NUL, and there is none before `scanned`.
    Scan { start: usize, scanned: usize },
}

impl Decoder {
    /// Whether no frame is in progress: the next byte starts a frame (or a heart-beat EOL).
    pub fn is_idle(&self) -> bool {
        self.head.is_none()
    }

    /// Goes on parsing the frame at the front of `input`: the frame and the bytes it used,
    /// `Ok(None)` when more bytes are needed, or why the input can never become a valid frame.
    /// Every [`Limits`] bound holds on incomplete input too.
    pub fn decode(
        &mut self,
        input: &[u8],
        limits: &Limits,
        version: Version,
    ) -> Result<Option<(Frame, usize)>, ParseError> {
        let complete = self.complete(input, limits, version)?;
        Ok(complete.map(|c| {
            let frame = Frame {
                command: c.command,
                headers: c.headers,
                body: Bytes::copy_from_slice(&input[c.body]),
            };
            (frame, c.used)
        }))
    }

    /// Takes the next frame off the front of `buf`, heart-beat EOLs before it dropped, going
    /// on from where the last call left the parse: the one read loop of the broker's
    /// connections and of the client. The caller only appends to `buf` between calls. A body
    /// of [`SHARED_BODY_BYTES`] or more is not copied: it shares the buffer's memory.
    pub fn next_frame(
        &mut self,
        buf: &mut BytesMut,
        limits: &Limits,
        version: Version,
    ) -> Result<Option<Frame>, ParseError> {
        if self.is_idle() {
            // Dropped here so that heart-beats never count against the frame limit.
            buf.advance(heartbeat_len(buf));
        }
        let Some(c) = self.complete(buf, limits, version)? else {
            return Ok(None);
        };
        let body = if c.body.len() >= SHARED_BODY_BYTES {
            let mut taken = buf.split_to(c.used);
            taken.truncate(c.body.end);
            taken.split_off(c.body.start).freeze()
        } else {
            let body = Bytes::copy_from_slice(&buf[c.body]);
            buf.advance(c.used);
            body
        };
        Ok(Some(Frame {
            command: c.command,
            headers: c.headers,
            body,
        }))
    }

    /// Reads as much of the frame as `input` holds: the whole frame, if it is there.
    fn complete(
        &mut self,
        input: &[u8],
        limits: &Limits,
        version: Version,
    ) -> Result<Option<Complete>, ParseError> {
        let result = match self.advance(input, limits, version) {
            // Everything in `input` belongs to this frame while it is incomplete, so this check
            // bounds what a client can make us buffer.
            Ok(None) if input.len() > limits.max_frame_bytes => Err(FrameError::TooLarge {
                limit: limits.max_frame_bytes,
            }),
            other => other,
        };
        result.map_err(|error| ParseError {
            error,
            receipt: self.head.take().and_then(|head| head.receipt),
        })
    }

    /// [`Decoder::decode`] without the size check of incomplete input.
    fn advance(
        &mut self,
        input: &[u8],
        limits: &Limits,
        version: Version,
    ) -> Result<Option<Complete>, FrameError> {
        let head = match &mut self.head {
            Some(head) => head,
            None => {
                let Some((line, pos)) = next_line(input, 0, limits)? else {
                    return Ok(None);
                };
                let command = parse_command(line)?;
                self.head.insert(Head {
                    command: command.to_owned(),
                    escaping: version.escaping(command),
                    headers: Vec::new(),
                    receipt: None,
                    pos,
                    body: None,
                })
            }
        };
        let body = match head.body {
            Some(body) => body,
            None => {
                head.read_headers(input, limits)?;
                match head.body {
                    Some(body) => body,
                    None => return Ok(None),
                }
            }
        };
        let (start, end) = match body {
            Body::Length { start, length } => {
                // start + length + 1 was checked against the frame limit when it was read.
                if input.len() <= start + length {
                    return Ok(None);
                }
                if input[start + length] != 0 {
                    return Err(FrameError::MissingNul { length });
                }
                (start, start + length)
            }
            Body::Scan { start, scanned } => match input[scanned..].iter().position(|&b| b == 0) {
                Some(nul) => (start, scanned + nul),
                None => {
                    head.body = Some(Body::Scan {
                        start,
                        scanned: input.len(),
                    });
                    return Ok(None);
                }
            },
        };
        let frame_end = end + 1;
        if frame_end > limits.max_frame_bytes {
            return Err(FrameError::TooLarge {
                limit: limits.max_frame_bytes,
            });
        }
        let head = self.head.take().expect("a frame in progress");
        Ok(Some(Complete {
            command: head.command,
            headers: head.headers,
            body: start..end,
            used: frame_end,
        }))
    }
}

/// A frame read whole, its body still where it is in the input.
struct Complete {
    command: String,
    headers: Vec<(String, String)>,
    body: Range<usize>,
    /// The bytes the frame took, its NUL included.
    used: usize,
}

impl Head {
    /// Reads the header lines that have arrived; sets `body` once the blank line after them
    /// is read.
    fn read_headers(&mut self, input: &[u8], limits: &Limits) -> Result<(), FrameError> {
        loop {
            let Some((line, next)) = next_line(input, self.pos, limits)? else {
                return Ok(());
            };
            self.pos = next;
            if line.is_empty() {
                break;
            }
            if self.headers.len() == limits.max_headers {
                return Err(FrameError::TooManyHeaders {
                    limit: limits.max_headers,
                });
            }
            let (name, value) = parse_header(line, self.escaping)?;
            if name == "receipt" && self.receipt.is_none() {
                self.receipt = Some(value.clone());
            }
            self.headers.push((name, value));
        }
        let start = self.pos;
        let content_length = self
            .headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map(|(_, v)| v.as_str());
        self.body = Some(match content_length {
            Some(value) => {
                let length = parse_content_length(value)?;
                // The declared size is refused before the body arrives.
                let fits = start
                    .checked_add(length)
                    .and_then(|end| end.checked_add(1))
                    .is_some_and(|end| end <= limits.max_frame_bytes);
                if !fits {
                    return Err(FrameError::TooLarge {
                        limit: limits.max_frame_bytes,
                    });
                }
                Body::Length { start, length }
            }
            None => Body::Scan {
                start,
                scanned: start,
            },
        });
        Ok(())
    }
}

/// The line starting at `start` without its `\n` or `\r\n`, and where the next line starts;
/// `None` if the line is not complete yet. Lines longer than `max_header_bytes` are refused
/// without waiting for their end.
fn next_line<'a>(
    input: &'a [u8],
    start: usize,
    limits: &Limits,
) -> Result<Option<(&'a [u8], usize)>, FrameError> {
    let too_long = FrameError::LineTooLong {
        limit: limits.max_header_bytes,
    };
    let rest = &input[start..];
    let Some(newline) = rest.iter().position(|&b| b == b'\n') else {
        // One more byte than the limit may be the `\r` of a `\r\n` still on its way.
        return if rest.len() > limits.max_header_bytes + 1 {
            Err(too_long)
        } else {
            Ok(None)
        };
    };
    let line = &rest[..newline];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > limits.max_header_bytes {
        return Err(too_long);
    }
    Ok(Some((line, start + newline + 1)))
}

/// A command must be printable ASCII without spaces, so that binary garbage or another protocol
/// (an HTTP request line) is refused at once rather than buffered to the frame limit.
fn parse_command(line: &[u8]) -> Result<&str, FrameError> {
    if line.is_empty() || !line.iter().all(|b| b.is_ascii_graphic()) {
        return Err(FrameError::InvalidCommand {
            excerpt: excerpt(line),
        });
    }
    std::str::from_utf8(line).map_err(|_| FrameError::InvalidUtf8 { what: "command" })
}

/// Splits a header line at its first `:` and unescapes both halves as `escaping` says.
fn parse_header(line: &[u8], escaping: Escaping) -> Result<(String, String), FrameError> {
    let text = std::str::from_utf8(line).map_err(|_| FrameError::InvalidUtf8 {
        what: "header line",
    })?;
    let Some((name, value)) = text.split_once(':') else {
        return Err(FrameError::MissingColon {
            excerpt: excerpt(line),
        });
    };
    if escaping == Escaping::None {
        return Ok((name.to_owned(), value.to_owned()));
    }
    let invalid = || FrameError::InvalidEscape {
        excerpt: excerpt(line),
        escaping,
    };
    Ok((
        unescape(name, escaping).ok_or_else(invalid)?,
        unescape(value, escaping).ok_or_else(invalid)?,
    ))
}

/// Undoes STOMP 1.1/1.2 header escaping; `None` on an escape the version does not define
/// (`\r` in 1.1) or an unfinished one.
fn unescape(text: &str, escaping: Escaping) -> Option<String> {
    if !text.contains('\\') {
        return Some(text.to_owned());
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        out.push(match chars.next()? {
            'r' if escaping == Escaping::V1_2 => '\r',
            'n' => '\n',
            'c' => ':',
            '\\' => '\\',
            _ => return None,
        });
    }
    Some(out)
}

/// Writes a header name or value, escaped as the frame's version requires. STOMP 1.1 has no
/// escape for CR, and needs none: its lines end with LF only, so CR goes as it is. Where there
/// is no escaping (1.0, CONNECTED), CR and LF cannot be represented and are sent as spaces
/// rather than breaking the frame.
pub fn put_header_text(out: &mut BytesMut, text: &str, escaping: Escaping) {
    let special = |b: u8| matches!(b, b'\\' | b'\r' | b'\n' | b':');
    if !text.bytes().any(special) {
        // The common case: nothing to escape, one copy.
        out.put_slice(text.as_bytes());
        return;
    }
    for &b in text.as_bytes() {
        // Only ASCII bytes are rewritten, so multi-byte UTF-8 sequences pass through whole.
        match (b, escaping) {
            (b'\r' | b'\n', Escaping::None) => out.put_u8(b' '),
            (_, Escaping::None) => out.put_u8(b),
            (b'\\', _) => out.put_slice(b"\\\\"),
            (b'\n', _) => out.put_slice(b"\\n"),
            (b':', _) => out.put_slice(b"\\c"),
            (b'\r', Escaping::V1_2) => out.put_slice(b"\\r"),
            _ => out.put_u8(b),
        }
    }
}

/// `content-length` is a plain decimal count: no sign, no spaces.
fn parse_content_length(value: &str) -> Result<usize, FrameError> {
    let invalid = || FrameError::InvalidContentLength {
        value: value.to_owned(),
    };
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    value.parse().map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::default()
    }

    fn parse_one(input: &[u8], version: Version) -> (Frame, usize) {
        parse(input, &limits(), version)
            .expect("valid frame")
            .expect("complete frame")
    }

    fn parse_err(input: &[u8], limits: &Limits, version: Version) -> ParseError {
        parse(input, limits, version).expect_err("invalid frame")
    }

    #[test]
    fn next_frame_takes_frames_fed_in_pieces_and_shares_only_large_bodies() {
        let large = vec![b'x'; SHARED_BODY_BYTES];
        let mut wire = b"\r\n\n".to_vec();
        for body in [&b"small"[..], &large[..]] {
            let mut out = BytesMut::new();
            encode(
                &mut out,
                "SEND",
                [("destination", "/queue/a")],
                body,
                Version::V1_2,
            );
            wire.extend_from_slice(&out);
            wire.push(b'\n');
        }
        let (limits, mut decoder, mut buf) =
            (Limits::default(), Decoder::default(), BytesMut::new());
        let mut frames = Vec::new();
        for piece in wire.chunks(4096) {
            buf.extend_from_slice(piece);
            while let Some(frame) = decoder
                .next_frame(&mut buf, &limits, Version::V1_2)
                .unwrap()
            {
                frames.push((frame, buf.as_ptr()));
            }
        }
        assert_eq!(frames.len(), 2);
        assert_eq!(&frames[0].0.body[..], b"small");
        assert_eq!(frames[1].0.body.len(), SHARED_BODY_BYTES);
        assert_eq!(frames[1].0.get("destination"), Some("/queue/a"));
        // The large body is the buffer's own bytes, just before what the buffer holds now.
        let (body, rest) = (frames[1].0.body.as_ptr(), frames[1].1);
        assert_eq!(
            body as usize + SHARED_BODY_BYTES + 1,
            rest as usize,
            "shared, not copied"
        );
        assert!(buf.is_empty(), "the heart-beats are dropped: {buf:?}");
    }

    #[test]
    fn encode_writes_the_bodys_true_length_whatever_content_length_it_was_given() {
        let mut out = BytesMut::new();
        let headers = [("content-length", "999"), ("a", "x:y")];
        encode(&mut out, "SEND", headers, b"a\0b", Version::V1_2);
        assert_eq!(&out[..], b"SEND\na:x\\cy\ncontent-length:3\n\na\0b\0");
        let mut out = BytesMut::new();
        encode(
            &mut out,
            "SEND",
            [("content-length", "0")],
            b"",
            Version::V1_2,
        );
        assert_eq!(&out[..], b"SEND\n\n\0", "no body: no content-length");
        let (frame, used) = parse(b"MESSAGE\na:\\r\n\n\0", &Limits::default(), Version::V1_2)
            .unwrap()
            .unwrap();
        assert_eq!((frame.get("a"), used), (Some("\r"), 15), "1.2 reads \\r");
    }

    #[test]
    fn parses_a_connect_frame_and_reports_bytes_used() {
        let input = b"CONNECT\naccept-version:1.2\nhost:example\n\n\0rest";
        let (frame, used) = parse_one(input, Version::V1_0);
        assert_eq!(frame.command, "CONNECT");
        assert_eq!(frame.get("accept-version"), Some("1.2"));
        assert_eq!(frame.get("host"), Some("example"));
        assert!(frame.body.is_empty());
        assert_eq!(&input[used..], b"rest");
    }

    #[test]
    fn accepts_crlf_line_endings() {
        let input = b"SEND\r\ndestination:/queue/a\r\n\r\nhello\0";
        let (frame, used) = parse_one(input, Version::V1_2);
        assert_eq!(frame.command, "SEND");
        assert_eq!(frame.get("destination"), Some("/queue/a"));
        assert_eq!(&frame.body[..], b"hello");
        assert_eq!(used, input.len());
    }

    #[test]
    fn skips_heartbeat_eols_between_frames() {
        let input = b"\n\r\n\nDISCONNECT\n\n\0\r\n\n";
        assert_eq!(heartbeat_len(input), 4);
        let (frame, used) = parse_one(input, Version::V1_2);
        assert_eq!(frame.command, "DISCONNECT");
        assert_eq!(heartbeat_len(&input[used..]), input.len() - used);
    }

    #[test]
    fn a_lone_cr_is_not_a_heartbeat() {
        assert_eq!(heartbeat_len(b"\r"), 0);
        assert_eq!(heartbeat_len(b"\n\r"), 1);
    }

    #[test]
    fn content_length_bodies_may_contain_nul() {
        let input = b"SEND\ncontent-length:5\n\na\0b\0c\0";
        let (frame, used) = parse_one(input, Version::V1_2);
        assert_eq!(&frame.body[..], b"a\0b\0c");
        assert_eq!(used, input.len());
    }

    #[test]
    fn without_content_length_the_body_ends_at_the_first_nul() {
        let input = b"SEND\n\nab\0cd\0";
        let (frame, used) = parse_one(input, Version::V1_2);
        assert_eq!(&frame.body[..], b"ab");
        assert_eq!(&input[used..], b"cd\0");
    }

    #[test]
    fn content_length_body_must_end_with_nul() {
        let err = parse_err(
            b"SEND\ncontent-length:2\nreceipt:r1\n\nabc\0",
            &limits(),
            Version::V1_2,
        );
        assert_eq!(err.error, FrameError::MissingNul { length: 2 });
        assert_eq!(err.receipt.as_deref(), Some("r1"));
        assert!(err.to_string().contains("content-length of 2"), "{err}");
    }

    #[test]
    fn bad_content_length_is_refused() {
        for value in ["abc", "-1", "", " 3", "99999999999999999999999999"] {
            let input = format!("SEND\ncontent-length:{value}\n\n\0");
            let err = parse_err(input.as_bytes(), &limits(), Version::V1_2);
            assert_eq!(
                err.error,
                FrameError::InvalidContentLength {
                    value: value.to_owned()
                }
            );
        }
    }

    #[test]
    fn incomplete_frames_ask_for_more_at_every_stage() {
        let full = b"SEND\ndestination:/q\ncontent-length:3\n\nabc\0";
        for end in 0..full.len() {
            assert_eq!(
                parse(&full[..end], &limits(), Version::V1_2),
                Ok(None),
                "prefix of {end} bytes"
            );
        }
        assert!(parse(full, &limits(), Version::V1_2).unwrap().is_some());
        assert_eq!(
            parse(b"SEND\n\nno nul yet", &limits(), Version::V1_2),
            Ok(None)
        );
        assert_eq!(parse(b"\n\r\n", &limits(), Version::V1_2), Ok(None));
    }

    #[test]
    fn repeated_headers_are_kept_and_the_first_wins() {
        let (frame, _) = parse_one(b"SEND\nfoo:first\nfoo:second\n\n\0", Version::V1_2);
        assert_eq!(frame.get("foo"), Some("first"));
        assert_eq!(frame.headers.len(), 2);
        assert_eq!(frame.get("missing"), None);
    }

    #[test]
    fn the_first_content_length_wins() {
        let (frame, _) = parse_one(
            b"SEND\ncontent-length:1\ncontent-length:9\n\nx\0",
            Version::V1_2,
        );
        assert_eq!(&frame.body[..], b"x");
    }

    #[test]
    fn values_may_contain_colons_and_be_empty() {
        let (frame, _) = parse_one(b"CONNECT\npasscode:a:b\nlogin:\n\n\0", Version::V1_2);
        assert_eq!(frame.get("passcode"), Some("a:b"));
        assert_eq!(frame.get("login"), Some(""));
    }

    #[test]
    fn headers_are_unescaped_in_1_1_and_1_2() {
        let input = b"SEND\nna\\cme:a\\nb\\\\d\\ce\n\n\0";
        for version in [Version::V1_1, Version::V1_2] {
            let (frame, _) = parse_one(input, version);
            assert_eq!(frame.get("na:me"), Some("a\nb\\d:e"));
        }
        let (frame, _) = parse_one(b"SEND\nk:a\\rb\n\n\0", Version::V1_2);
        assert_eq!(frame.get("k"), Some("a\rb"));
    }

    #[test]
    fn stomp_1_1_defines_no_cr_escape_and_takes_a_raw_cr_as_text() {
        // STOMP 1.1 defines only \n, \c and \\; any other escape is a fatal error.
        let err = parse_err(b"SEND\nreceipt:r1\nk:a\\rb\n\n\0", &limits(), Version::V1_1);
        assert!(
            matches!(
                err.error,
                FrameError::InvalidEscape {
                    escaping: Escaping::V1_1,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(err.receipt.as_deref(), Some("r1"));
        assert!(err.to_string().contains("(STOMP 1.1)"), "{err}");
        // A CR inside a 1.1 header is plain text.
        let (frame, _) = parse_one(b"SEND\nk:a\rb\n\n\0", Version::V1_1);
        assert_eq!(frame.get("k"), Some("a\rb"));
    }

    #[test]
    fn headers_are_not_unescaped_in_1_0_or_in_connect() {
        let (frame, _) = parse_one(b"SEND\nk:a\\nb\\t\n\n\0", Version::V1_0);
        assert_eq!(frame.get("k"), Some("a\\nb\\t"));
        let (frame, _) = parse_one(b"CONNECT\npasscode:a\\tb\n\n\0", Version::V1_2);
        assert_eq!(frame.get("passcode"), Some("a\\tb"));
        let (frame, _) = parse_one(b"STOMP\npasscode:a\\tb\n\n\0", Version::V1_2);
        assert_eq!(frame.get("passcode"), Some("a\\tb"));
    }

    #[test]
    fn undefined_escapes_are_refused() {
        for line in ["k:a\\tb", "k:trailing\\", "k\\x:v"] {
            let input = format!("SEND\nreceipt:r9\n{line}\n\n\0");
            let err = parse_err(input.as_bytes(), &limits(), Version::V1_2);
            assert!(
                matches!(err.error, FrameError::InvalidEscape { .. }),
                "{line}: {err}"
            );
            assert_eq!(err.receipt.as_deref(), Some("r9"));
        }
    }

    #[test]
    fn a_header_without_colon_is_refused() {
        let err = parse_err(b"SEND\nnocolon\n\n\0", &limits(), Version::V1_2);
        assert_eq!(
            err.error,
            FrameError::MissingColon {
                excerpt: "nocolon".into()
            }
        );
        assert_eq!(err.receipt, None);
    }

    #[test]
    fn invalid_utf8_is_refused() {
        let err = parse_err(b"SEND\nk:\xff\xfe\n\n\0", &limits(), Version::V1_2);
        assert_eq!(
            err.error,
            FrameError::InvalidUtf8 {
                what: "header line"
            }
        );
    }

    #[test]
    fn garbage_and_other_protocols_are_refused_at_the_first_line() {
        for input in [&b"GET / HTTP/1.1\r\n"[..], b"\x00\x01\x02\n", b"\r\r\n"] {
            let err = parse_err(input, &limits(), Version::V1_0);
            assert!(
                matches!(err.error, FrameError::InvalidCommand { .. }),
                "{input:?}: {err}"
            );
        }
    }

    #[test]
    fn frame_size_limit_holds_for_complete_and_incomplete_frames() {
        let small = Limits {
            max_frame_bytes: 32,
            ..Limits::default()
        };
        let expected = FrameError::TooLarge { limit: 32 };
        // Complete but too large.
        let body = "x".repeat(40);
        let input = format!("SEND\n\n{body}\0");
        assert_eq!(
            parse_err(input.as_bytes(), &small, Version::V1_2).error,
            expected
        );
        // Incomplete and already over the limit: refused before the NUL arrives.
        let input = format!("SEND\n\n{body}");
        assert_eq!(
            parse_err(input.as_bytes(), &small, Version::V1_2).error,
            expected
        );
        // A declared content-length over the limit is refused before the body arrives.
        let err = parse_err(
            b"SEND\ncontent-length:1000\nreceipt:big\n\n",
            &small,
            Version::V1_2,
        );
        assert_eq!(err.error, expected);
        assert_eq!(err.receipt.as_deref(), Some("big"));
        assert!(err.to_string().contains("max-frame-bytes limit of 32"));
        // Exactly at the limit is fine.
        let input = format!("SEND\n\n{}\0", "x".repeat(25));
        assert_eq!(input.len(), 32);
        assert!(parse(input.as_bytes(), &small, Version::V1_2)
            .unwrap()
            .is_some());
        let input = format!("SEND\n\n{}\0", "x".repeat(26));
        assert_eq!(
            parse_err(input.as_bytes(), &small, Version::V1_2).error,
            expected
        );
    }

    #[test]
    fn heartbeats_do_not_count_against_the_frame_limit() {
        let small = Limits {
            max_frame_bytes: 16,
            ..Limits::default()
        };
        let mut input = vec![b'\n'; 100];
        input.extend_from_slice(b"SEND\n\nabc\0");
        let (frame, used) = parse(&input, &small, Version::V1_2).unwrap().unwrap();
        assert_eq!(&frame.body[..], b"abc");
        assert_eq!(used, input.len());
    }

    #[test]
    fn header_count_limit_is_enforced() {
        let small = Limits {
            max_headers: 2,
            ..Limits::default()
        };
        assert!(parse(b"SEND\na:1\nb:2\n\n\0", &small, Version::V1_2)
            .unwrap()
            .is_some());
        // Refused as soon as the extra header line is complete, before the frame ends.
        let err = parse_err(b"SEND\na:1\nb:2\nc:3\n", &small, Version::V1_2);
        assert_eq!(err.error, FrameError::TooManyHeaders { limit: 2 });
        assert!(err.to_string().contains("max-headers limit of 2"));
    }

    #[test]
    fn header_line_limit_is_enforced_even_before_the_line_ends() {
        let small = Limits {
            max_header_bytes: 8,
            ..Limits::default()
        };
        let expected = FrameError::LineTooLong { limit: 8 };
        assert!(parse(b"SEND\nabc:1234\r\n\n\0", &small, Version::V1_2)
            .unwrap()
            .is_some());
        assert_eq!(
            parse_err(b"SEND\nabc:12345\n\n\0", &small, Version::V1_2).error,
            expected
        );
        assert_eq!(parse(b"SEND\nabc:1234\r", &small, Version::V1_2), Ok(None));
        assert_eq!(
            parse_err(b"SEND\nabc:123456789", &small, Version::V1_2).error,
            expected
        );
        assert_eq!(
            parse_err(b"SUBSCRIBEX\n", &small, Version::V1_2).error,
            expected
        );
        assert!(parse_err(b"SEND\nabc:12345\n", &small, Version::V1_2)
            .to_string()
            .contains("max-header-bytes limit of 8"));
    }

    /// Feeds `input` to one decoder `piece` bytes at a time, as a socket might deliver it,
    /// dropping heart-beat EOLs while it is idle as the connection does; returns each result
    /// with the bytes fed so far.
    fn decode_in_pieces(
        input: &[u8],
        piece: usize,
        limits: &Limits,
        version: Version,
    ) -> Vec<(Result<Frame, ParseError>, usize)> {
        let mut decoder = Decoder::default();
        let mut buffer: Vec<u8> = Vec::new();
        let mut fed = 0;
        let mut out = Vec::new();
        while fed < input.len() {
            let n = piece.min(input.len() - fed);
            buffer.extend_from_slice(&input[fed..fed + n]);
            fed += n;
            loop {
                if decoder.is_idle() {
                    buffer.drain(..heartbeat_len(&buffer));
                }
                match decoder.decode(&buffer, limits, version) {
                    Ok(Some((frame, used))) => {
                        buffer.drain(..used);
                        out.push((Ok(frame), fed));
                    }
                    Ok(None) => break,
                    Err(err) => {
                        out.push((Err(err), fed));
                        return out;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn a_decoder_fed_in_pieces_gives_what_a_whole_parse_gives() {
        let stream: &[u8] = b"\nSEND\r\ndestination:/q\r\nreceipt:r1\r\n\r\nab\0\n\
            SEND\ncontent-length:3\nk:a\\cb\n\nx\0y\0\r\n\
            DISCONNECT\n\n\0";
        let mut whole = Vec::new();
        let mut rest = stream;
        while let Some((frame, used)) = parse(rest, &limits(), Version::V1_2).unwrap() {
            whole.push(frame);
            rest = &rest[used..];
        }
        assert_eq!(whole.len(), 3);
        for piece in [1, 2, 3, 7, 64] {
            let frames: Vec<Frame> = decode_in_pieces(stream, piece, &limits(), Version::V1_2)
                .into_iter()
                .map(|(frame, _)| frame.unwrap())
                .collect();
            assert_eq!(frames, whole, "pieces of {piece}");
        }
        // An error surfaces as soon as its bytes arrive, with the receipt read before it.
        let bad = b"SEND\nreceipt:r9\nk:a\\tb\nmore:headers\n\n\0";
        let results = decode_in_pieces(bad, 1, &limits(), Version::V1_2);
        let (error, fed) = results.last().unwrap();
        let error = error.as_ref().unwrap_err();
        assert!(matches!(error.error, FrameError::InvalidEscape { .. }));
        assert_eq!(error.receipt.as_deref(), Some("r9"));
        assert_eq!(*fed, b"SEND\nreceipt:r9\nk:a\\tb\n".len());
        // So does the frame limit, on a body still without its NUL.
        let small = Limits {
            max_frame_bytes: 64,
            ..Limits::default()
        };
        let results = decode_in_pieces(&[b'x'; 100], 5, &small, Version::V1_2);
        assert_eq!(results.len(), 1);
        let results = decode_in_pieces(
            &[&b"SEND\nreceipt:big\n\n"[..], &[b'x'; 100]].concat(),
            5,
            &small,
            Version::V1_2,
        );
        let (error, fed) = results.last().unwrap();
        let error = error.as_ref().unwrap_err();
        assert_eq!(error.error, FrameError::TooLarge { limit: 64 });
        assert_eq!(error.receipt.as_deref(), Some("big"));
        assert_eq!(*fed, 65);
    }

    #[test]
    fn a_multi_megabyte_frame_in_many_small_pieces_parses_in_linear_time() {
        // 8 MiB in 512-byte pieces: 16,384 calls. Re-scanning the body from its start on every
        // call, as the codec once did, would examine some 70 GB here.
        let size = 8 << 20;
        let limits = Limits {
            max_frame_bytes: 16 << 20,
            ..Limits::default()
        };
        let body: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
        let length = format!("content-length:{size}");
        for headers in [vec!["destination:/queue/big"], vec![length.as_str()]] {
            let mut wire = b"SEND\n".to_vec();
            for header in &headers {
                wire.extend_from_slice(header.as_bytes());
                wire.push(b'\n');
            }
            wire.push(b'\n');
            wire.extend_from_slice(&body);
            wire.push(0);
            let started = std::time::Instant::now();
            let results = decode_in_pieces(&wire, 512, &limits, Version::V1_2);
            let elapsed = started.elapsed();
            assert_eq!(results.len(), 1, "{headers:?}");
            let (frame, fed) = &results[0];
            let frame = frame.as_ref().unwrap();
            assert_eq!(*fed, wire.len());
            assert_eq!(frame.body.len(), size);
            assert!(frame.body[..] == body[..], "{headers:?}: body differs");
            assert!(
                elapsed < std::time::Duration::from_secs(5),
                "{headers:?}: took {elapsed:?}"
            );
        }
    }

    #[test]
    fn encodes_with_escaping_per_version() {
        let frame = Frame::new("ERROR")
            .with_header("message", "bad: a\nb\\c\r")
            .with_body("detail");
        assert_eq!(
            &frame.encode(Version::V1_2)[..],
            &b"ERROR\nmessage:bad\\c a\\nb\\\\c\\r\ncontent-length:6\n\ndetail\0"[..]
        );
        // 1.1 has no \r: a CR is sent as it is (1.1 lines end with LF only).
        let frame = Frame::new("ERROR").with_header("message", "a\rb: c\nd\\");
        assert_eq!(
            &frame.encode(Version::V1_1)[..],
            &b"ERROR\nmessage:a\rb\\c c\\nd\\\\\n\n\0"[..]
        );
        let frame = Frame::new("ERROR")
            .with_header("message", "bad: a\nb\\c\r")
            .with_body("detail");
        assert_eq!(
            &frame.encode(Version::V1_0)[..],
            &b"ERROR\nmessage:bad: a b\\c \ncontent-length:6\n\ndetail\0"[..]
        );
        let connected = Frame::new("CONNECTED").with_header("server", "brokerd/0.1:x");
        assert_eq!(
            &connected.encode(Version::V1_2)[..],
            &b"CONNECTED\nserver:brokerd/0.1:x\n\n\0"[..]
        );
    }

    #[test]
    fn encode_keeps_an_explicit_content_length() {
        let frame = Frame::new("MESSAGE")
            .with_header("content-length", "3")
            .with_body(&b"a\0b"[..]);
        assert_eq!(
            &frame.encode(Version::V1_2)[..],
            &b"MESSAGE\ncontent-length:3\n\na\0b\0"[..]
        );
    }

    #[test]
    fn encoded_frames_parse_back_to_themselves() {
        let frame = Frame::new("MESSAGE")
            .with_header("destination", "/queue/a:b")
            .with_header("weird", "line\nbreak\\and\rcr, ünïcødé")
            .with_body(&b"with\0nul"[..]);
        for version in [Version::V1_1, Version::V1_2] {
            let wire = frame.encode(version);
            let (parsed, used) = parse_one(&wire, version);
            assert_eq!(used, wire.len());
            assert_eq!(parsed.command, frame.command);
            assert_eq!(parsed.get("destination"), Some("/queue/a:b"));
            assert_eq!(parsed.get("weird"), Some("line\nbreak\\and\rcr, ünïcødé"));
            assert_eq!(parsed.body, frame.body);
        }
    }
}
