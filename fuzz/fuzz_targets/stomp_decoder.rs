//! Arbitrary bytes through the STOMP decoder the broker and the client read with
//! ([`Decoder::next_frame`]), delivered in pieces split where the input says, for each [`Version`]
//! and under either the default [`Limits`] or small ones that the input soon hits.
//!
//! Checks, besides the absence of panics:
//! - the frames read piece by piece are the frames read from the whole input at once, and one
//!   read fails exactly when the other does (the error may differ: a frame that is too large can
//!   be refused before the line that would also be refused has arrived);
//! - every frame read re-encodes ([`Frame::encode`]) and decodes back to itself, up to what the
//!   encoder documents it changes: `content-length` is rewritten from the body, where there is
//!   no escaping (1.0, CONNECT, CONNECTED) CR and LF in header text go as spaces, and in 1.1 a
//!   CR that ends header text goes as a space (it would read as part of the line end).
//!
//! Input layout: byte 0 picks the version and the limits, byte 1 the number of cuts (0..8), the
//! next bytes each a piece's length; the rest is the byte stream.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use stomp_codec::frame::{Decoder, Frame, Limits};
use stomp_codec::{Escaping, Version};

/// Small enough that fuzzed input reaches every bound.
const SMALL: Limits = Limits {
    max_frame_bytes: 256,
    max_headers: 4,
    max_header_bytes: 32,
};

/// Large enough for any re-encoded frame: escaping at most doubles header text, and the encoder
/// may add a `content-length` header.
const ROOMY: Limits = Limits {
    max_frame_bytes: 1 << 30,
    max_headers: 1 << 16,
    max_header_bytes: 1 << 20,
};

fuzz_target!(|data: &[u8]| {
    let [setup, cuts, rest @ ..] = data else {
        return;
    };
    let version = Version::SUPPORTED[usize::from(setup % 3)];
    let limits = if setup / 3 % 2 == 0 { SMALL } else { Limits::default() };
    let cuts = usize::from(cuts % 8).min(rest.len());
    let (lengths, stream) = rest.split_at(cuts);

    let mut pieces = Vec::new();
    let mut remaining = stream;
    for &length in lengths {
        let (piece, after) = remaining.split_at(usize::from(length).min(remaining.len()));
        pieces.push(piece);
        remaining = after;
    }
    pieces.push(remaining);

    let in_pieces = read_all(&pieces, &limits, version);
    let at_once = read_all(&[stream], &limits, version);
    assert_eq!(in_pieces.0, at_once.0, "frames differ when read in pieces");
    assert_eq!(in_pieces.1, at_once.1, "one read failed and the other did not");

    for frame in &in_pieces.0 {
        round_trip(frame, version);
    }
});

/// Feeds `pieces` one after the other to one decoder, taking every frame each completes; stops
/// at the first error. Returns the frames and whether it stopped on an error.
fn read_all(pieces: &[&[u8]], limits: &Limits, version: Version) -> (Vec<Frame>, bool) {
    let mut decoder = Decoder::default();
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            match decoder.next_frame(&mut buf, limits, version) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(_) => return (frames, true),
            }
        }
    }
    (frames, false)
}

fn round_trip(frame: &Frame, version: Version) {
    let encoded = frame.encode(version);
    let mut buf = BytesMut::from(&encoded[..]);
    let decoded = Decoder::default()
        .next_frame(&mut buf, &ROOMY, version)
        .unwrap_or_else(|e| panic!("re-encoded {frame:?} does not decode: {e}\n{encoded:?}"))
        .unwrap_or_else(|| panic!("re-encoded {frame:?} is incomplete\n{encoded:?}"));
    assert_eq!(&buf[..], b"\n", "bytes left after the re-encoded frame");
    assert_eq!(
        comparable(frame, version),
        comparable(&decoded, version),
        "frame changed in a round trip through {encoded:?}"
    );
}

/// The frame as the encoder promises to carry it.
fn comparable(frame: &Frame, version: Version) -> Frame {
    let escaping = version.escaping(&frame.command);
    let text = |s: &str| match escaping {
        Escaping::None => s.replace(['\r', '\n'], " "),
        Escaping::V1_1 => match s.strip_suffix('\r') {
            Some(rest) => format!("{rest} "),
            None => s.to_owned(),
        },
        Escaping::V1_2 => s.to_owned(),
    };
    Frame {
        command: frame.command.clone(),
        headers: frame
            .headers
            .iter()
            .filter(|(name, _)| name != "content-length")
            .map(|(name, value)| (text(name), text(value)))
            .collect(),
        body: frame.body.clone(),
    }
}
