//! Property tests (issue 11): encoded frames decode back to themselves however the bytes are
//! split, the decoder never panics on arbitrary input, and what it returns keeps its limits.
//! They run on stable in CI; the fuzz targets (`fuzz/`) search further on nightly.

use super::*;
use proptest::prelude::*;

/// Feeds `wire` to one decoder in pieces ending at `cuts` (taken modulo its length), as a
/// connection's reads would; every frame it returns, or the error that stopped it.
fn decode_in_pieces(
    wire: &[u8],
    cuts: &[usize],
    limits: &Limits,
    version: Version,
) -> (Vec<Frame>, Option<ParseError>) {
    let mut ends: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
    ends.push(wire.len());
    ends.sort_unstable();
    let (mut decoder, mut buf, mut frames, mut fed) =
        (Decoder::default(), BytesMut::new(), Vec::new(), 0);
    for end in ends {
        buf.extend_from_slice(&wire[fed..end]);
        fed = end;
        loop {
            match decoder.next_frame(&mut buf, limits, version) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(err) => return (frames, Some(err)),
            }
        }
    }
    (frames, None)
}

fn version() -> impl Strategy<Value = Version> {
    prop_oneof![Just(Version::V1_1), Just(Version::V1_2)]
}

/// A frame a client or broker could send: escaped headers (anything but CR in 1.1, which has
/// no escape for it), any body bytes.
fn frame(version: Version) -> impl Strategy<Value = Frame> {
    let text = match version {
        Version::V1_1 => "[^\r]{0,24}",
        _ => "\\PC{0,24}|[:\\\\\n\r]{0,4}",
    };
    let command = prop::sample::select(vec!["SEND", "MESSAGE", "SUBSCRIBE", "ACK", "ERROR"]);
    let header = ("[a-z][a-z0-9-]{0,12}", text)
        .prop_filter("content-length is the codec's", |(n, _)| {
            n != "content-length"
        });
    (
        command,
        prop::collection::vec(header, 0..8),
        prop::collection::vec(any::<u8>(), 0..512),
    )
        .prop_map(|(command, headers, body)| Frame {
            command: command.into(),
            headers,
            body: body.into(),
        })
}

proptest! {
    #[test]
    fn encoded_frames_decode_to_themselves_however_split(
        (version, frames) in version().prop_flat_map(|v| (Just(v), prop::collection::vec(frame(v), 1..4))),
        cuts in prop::collection::vec(any::<usize>(), 0..16),
    ) {
        let mut wire = BytesMut::new();
        for frame in &frames {
            frame.encode_into(&mut wire, version);
        }
        let (decoded, error) = decode_in_pieces(&wire, &cuts, &Limits::default(), version);
        prop_assert!(error.is_none(), "{error:?}");
        prop_assert_eq!(decoded.len(), frames.len());
        for (got, sent) in decoded.iter().zip(&frames) {
            // The encoder writes the body's length; nothing else is added.
            let headers: Vec<_> =
                got.headers.iter().filter(|(n, _)| n != "content-length").cloned().collect();
            prop_assert_eq!(&got.command, &sent.command);
            prop_assert_eq!(&headers, &sent.headers);
            prop_assert_eq!(&got.body, &sent.body);
        }
    }

    #[test]
    fn arbitrary_input_gives_the_same_answer_in_pieces_or_whole_and_keeps_the_limits(
        wire in prop::collection::vec(
            prop_oneof![any::<u8>(), Just(b'\n'), Just(b':'), Just(0u8), Just(b'\\')],
            0..600,
        ),
        cuts in prop::collection::vec(any::<usize>(), 0..16),
        v in 0..3usize,
    ) {
        let version = [Version::V1_0, Version::V1_1, Version::V1_2][v];
        let limits = Limits { max_frame_bytes: 200, max_headers: 4, max_header_bytes: 40 };
        let whole = decode_in_pieces(&wire, &[], &limits, version);
        let pieces = decode_in_pieces(&wire, &cuts, &limits, version);
        prop_assert_eq!(&whole.0, &pieces.0);
        prop_assert_eq!(whole.1.map(|e| e.error), pieces.1.map(|e| e.error));
        for frame in &whole.0 {
            prop_assert!(frame.headers.len() <= limits.max_headers);
            prop_assert!(frame.body.len() <= limits.max_frame_bytes);
            for (name, value) in &frame.headers {
                prop_assert!(name.len() + value.len() < limits.max_header_bytes);
            }
        }
    }
}
