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
            // ActiveMQ's default maxDataLength: clients written against it send frames this big.
            max_frame_bytes: 100 * 1024 * 1024,
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

/// How every frame ends: its NUL, then an end of line, as ActiveMQ writes them. STOMP allows
/// end-of-lines between frames (every decoder skips them as heart-beats), and PECL's stomp
/// extension expects one after each NUL: without it, it drops a byte of the next frame.
pub const FRAME_END: &[u8] = b"\0\n";

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
    out.put_slice(FRAME_END);
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
    let last = text.len() - 1;
    for (i, &b) in text.as_bytes().iter().enumerate() {
        // Only ASCII bytes are rewritten, so multi-byte UTF-8 sequences pass through whole.
        match (b, escaping) {
            (b'\r' | b'\n', Escaping::None) => out.put_u8(b' '),
            // 1.1 cannot escape CR, and one that ends the text would be read as part of the
            // line end (by this decoder and most others): it goes as a space, as in 1.0.
            (b'\r', Escaping::V1_1) if i == last => out.put_u8(b' '),
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
mod tests;

#[cfg(test)]
mod properties;
