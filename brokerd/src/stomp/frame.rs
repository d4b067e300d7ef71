//! The STOMP frame codec: pure functions between bytes and [`Frame`]s, with no I/O.
//!
//! [`parse`] reads at most one frame from the front of a buffer and says how many bytes it used,
//! or that the frame is still incomplete. It keeps every [`Limits`] bound even on incomplete
//! input, so a client can never make the broker buffer more than `max_frame_bytes` for one frame.
//! Header escaping follows the negotiated [`Version`]; repeated headers are all kept in order, and
//! lookups return the first, as the specification requires.

use super::{Escaping, Version};
use bytes::{BufMut, Bytes, BytesMut};

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

    /// Serialises the frame for a client speaking `version`. A non-empty body gets a
    /// `content-length` header unless the frame has one, so bodies may contain NUL. Where the
    /// version has no escaping (1.0, CONNECTED), CR and LF in headers cannot be represented and
    /// are sent as spaces rather than breaking the frame.
    pub fn encode(&self, version: Version) -> Bytes {
        let escaped = version.escaping(&self.command);
        let mut out = BytesMut::with_capacity(64 + self.body.len());
        out.put_slice(self.command.as_bytes());
        out.put_u8(b'\n');
        for (name, value) in &self.headers {
            put_header_text(&mut out, name, escaped);
            out.put_u8(b':');
            put_header_text(&mut out, value, escaped);
            out.put_u8(b'\n');
        }
        if !self.body.is_empty() && self.get("content-length").is_none() {
            out.put_slice(format!("content-length:{}\n", self.body.len()).as_bytes());
        }
        out.put_u8(b'\n');
        out.put_slice(&self.body);
        out.put_u8(0);
        out.freeze()
    }
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
/// needed, or the reason the input can never become a valid frame.
pub fn parse(
    buf: &[u8],
    limits: &Limits,
    version: Version,
) -> Result<Option<(Frame, usize)>, ParseError> {
    let start = heartbeat_len(buf);
    let mut receipt = None;
    match parse_frame(&buf[start..], limits, version, &mut receipt) {
        Ok(Some((frame, used))) => Ok(Some((frame, start + used))),
        Ok(None) => Ok(None),
        Err(error) => Err(ParseError { error, receipt }),
    }
}

/// [`parse`] for a buffer that starts at the command line; records the `receipt` header as soon
/// as it is read so that later errors can still be answered with `receipt-id`.
fn parse_frame(
    input: &[u8],
    limits: &Limits,
    version: Version,
    receipt: &mut Option<String>,
) -> Result<Option<(Frame, usize)>, FrameError> {
    // Everything in `input` belongs to this frame while it is incomplete, so this check bounds
    // what a client can make us buffer.
    let incomplete = || {
        if input.len() > limits.max_frame_bytes {
            Err(FrameError::TooLarge {
                limit: limits.max_frame_bytes,
            })
        } else {
            Ok(None)
        }
    };
    let Some((line, mut pos)) = next_line(input, 0, limits)? else {
        return incomplete();
    };
    let command = parse_command(line)?;
    let escaped = version.escaping(command);
    let mut headers: Vec<(String, String)> = Vec::new();
    loop {
        let Some((line, next)) = next_line(input, pos, limits)? else {
            return incomplete();
        };
        pos = next;
        if line.is_empty() {
            break;
        }
        if headers.len() == limits.max_headers {
            return Err(FrameError::TooManyHeaders {
                limit: limits.max_headers,
            });
        }
        let (name, value) = parse_header(line, escaped)?;
        if name == "receipt" && receipt.is_none() {
            *receipt = Some(value.clone());
        }
        headers.push((name, value));
    }
    let body_start = pos;
    let content_length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map(|(_, v)| v.as_str());
    let (body_end, frame_end) = match content_length {
        Some(value) => {
            let length = parse_content_length(value)?;
            let too_large = FrameError::TooLarge {
                limit: limits.max_frame_bytes,
            };
            let frame_end = body_start
                .checked_add(length)
                .and_then(|end| end.checked_add(1))
                .ok_or(too_large.clone())?;
            if frame_end > limits.max_frame_bytes {
                return Err(too_large);
            }
            if input.len() < frame_end {
                return incomplete();
            }
            if input[body_start + length] != 0 {
                return Err(FrameError::MissingNul { length });
            }
            (body_start + length, frame_end)
        }
        None => match input[body_start..].iter().position(|&b| b == 0) {
            Some(nul) => (body_start + nul, body_start + nul + 1),
            None => return incomplete(),
        },
    };
    if frame_end > limits.max_frame_bytes {
        return Err(FrameError::TooLarge {
            limit: limits.max_frame_bytes,
        });
    }
    let frame = Frame {
        command: command.to_owned(),
        headers,
        body: Bytes::copy_from_slice(&input[body_start..body_end]),
    };
    Ok(Some((frame, frame_end)))
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
            excerpt: shared_proto::wire::excerpt(line),
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
            excerpt: shared_proto::wire::excerpt(line),
        });
    };
    if escaping == Escaping::None {
        return Ok((name.to_owned(), value.to_owned()));
    }
    let invalid = || FrameError::InvalidEscape {
        excerpt: shared_proto::wire::excerpt(line),
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
