//! The codec's tests: decoding in pieces, limits on incomplete input, escaping per version,
//! encoding.

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
    let (limits, mut decoder, mut buf) = (Limits::default(), Decoder::default(), BytesMut::new());
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
    assert_eq!(&out[..], b"SEND\na:x\\cy\ncontent-length:3\n\na\0b\0\n");
    let mut out = BytesMut::new();
    encode(
        &mut out,
        "SEND",
        [("content-length", "0")],
        b"",
        Version::V1_2,
    );
    assert_eq!(&out[..], b"SEND\n\n\0\n", "no body: no content-length");
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
        &b"ERROR\nmessage:bad\\c a\\nb\\\\c\\r\ncontent-length:6\n\ndetail\0\n"[..]
    );
    // 1.1 has no \r: a CR is sent as it is (1.1 lines end with LF only).
    let frame = Frame::new("ERROR").with_header("message", "a\rb: c\nd\\");
    assert_eq!(
        &frame.encode(Version::V1_1)[..],
        &b"ERROR\nmessage:a\rb\\c c\\nd\\\\\n\n\0\n"[..]
    );
    let frame = Frame::new("ERROR")
        .with_header("message", "bad: a\nb\\c\r")
        .with_body("detail");
    assert_eq!(
        &frame.encode(Version::V1_0)[..],
        &b"ERROR\nmessage:bad: a b\\c \ncontent-length:6\n\ndetail\0\n"[..]
    );
    let connected = Frame::new("CONNECTED").with_header("server", "brokerd/0.1:x");
    assert_eq!(
        &connected.encode(Version::V1_2)[..],
        &b"CONNECTED\nserver:brokerd/0.1:x\n\n\0\n"[..]
    );
}

#[test]
fn encode_keeps_an_explicit_content_length() {
    let frame = Frame::new("MESSAGE")
        .with_header("content-length", "3")
        .with_body(&b"a\0b"[..]);
    assert_eq!(
        &frame.encode(Version::V1_2)[..],
        &b"MESSAGE\ncontent-length:3\n\na\0b\0\n"[..]
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
        // The end-of-line after the NUL is the next read's heart-beat.
        assert_eq!(&wire[used..], b"\n");
        assert_eq!(parsed.command, frame.command);
        assert_eq!(parsed.get("destination"), Some("/queue/a:b"));
        assert_eq!(parsed.get("weird"), Some("line\nbreak\\and\rcr, ünïcødé"));
        assert_eq!(parsed.body, frame.body);
    }
}

#[test]
fn a_cr_ending_header_text_goes_to_a_1_1_peer_as_a_space() {
    // Found by the stomp_decoder fuzz target: sent raw, it read back as part of the line end.
    let frame = Frame::new("MESSAGE")
        .with_header("x", "v\r")
        .with_header("y", "a\rb");
    let wire = frame.encode(Version::V1_1);
    assert_eq!(&wire[..], b"MESSAGE\nx:v \ny:a\rb\n\n\0\n");
    let (back, _) = parse_one(&wire, Version::V1_1);
    assert_eq!((back.get("x"), back.get("y")), (Some("v "), Some("a\rb")));
}
