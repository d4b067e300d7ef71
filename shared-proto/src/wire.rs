//! Newline-delimited JSON framing with a hard bound on line length.
//!
//! One message is one JSON object on one line. Reading stops at [`MAX_LINE`] bytes: a peer that
//! sends an endless line or binary garbage gets [`WireError::LineTooLong`] or
//! [`WireError::Malformed`], and the caller drops the connection, since the stream can no longer
//! be trusted to be in step.

use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};

/// Longest accepted line, newline excluded. Real messages are a few hundred bytes.
pub const MAX_LINE: usize = 64 * 1024;

/// Why a message could not be read or written; callers tell a gone peer (`Io`, `Truncated`) from
/// a misbehaving one (the rest).
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("i/o error on control connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("peer closed the connection in the middle of a message")]
    Truncated,
    #[error("message longer than the {limit}-byte limit; is the peer speaking this protocol?")]
    LineTooLong { limit: usize },
    #[error("malformed message {excerpt:?}: {source}")]
    Malformed {
        excerpt: String,
        source: serde_json::Error,
    },
    #[error("protocol version mismatch: we speak {ours}, peer speaks {theirs}; upgrade both to the same release")]
    Version { ours: u32, theirs: u32 },
    #[error("unexpected message: expected {expected}, got {got}")]
    Unexpected { expected: &'static str, got: String },
}

/// Parses one line (without its newline) into a message.
pub fn decode<T: DeserializeOwned>(line: &[u8]) -> Result<T, WireError> {
    if line.len() > MAX_LINE {
        return Err(WireError::LineTooLong { limit: MAX_LINE });
    }
    serde_json::from_slice(line).map_err(|source| WireError::Malformed {
        excerpt: excerpt(line),
        source,
    })
}

/// Serialises one message as a line, newline included.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut line = serde_json::to_vec(msg).expect("protocol messages always serialise");
    line.push(b'\n');
    line
}

/// Reads the next message; `Ok(None)` on a clean EOF between messages (the peer is gone).
/// `buf` is scratch space the caller keeps across calls to avoid reallocating.
pub async fn read_message<T, R>(reader: &mut R, buf: &mut Vec<u8>) -> Result<Option<T>, WireError>
where
    T: DeserializeOwned,
    R: AsyncBufRead + Unpin,
{
    buf.clear();
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(WireError::Truncated)
            };
        }
        let (chunk, found) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], true),
            None => (available, false),
        };
        if buf.len() + chunk.len() > MAX_LINE {
            return Err(WireError::LineTooLong { limit: MAX_LINE });
        }
        buf.extend_from_slice(chunk);
        let used = chunk.len() + usize::from(found);
        reader.consume(used);
        if found {
            return decode(buf).map(Some);
        }
    }
}

/// Writes one message and flushes it, so the peer sees it now rather than at the next write.
pub async fn write_message<T, W>(writer: &mut W, msg: &T) -> Result<(), WireError>
where
    T: Serialize,
    W: AsyncWrite + Unpin,
{
    writer.write_all(&encode(msg)).await?;
    writer.flush().await?;
    Ok(())
}

/// Checks a peer's Hello version against ours.
pub fn check_version(theirs: u32) -> Result<(), WireError> {
    if theirs == crate::PROTOCOL_VERSION {
        Ok(())
    } else {
        Err(WireError::Version {
            ours: crate::PROTOCOL_VERSION,
            theirs,
        })
    }
}

pub use stomp_codec::excerpt;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::ToBroker;

    #[tokio::test]
    async fn reads_messages_split_across_reads_and_ends_cleanly() {
        let mut input: Vec<u8> = encode(&ToBroker::Activate { epoch: 7 });
        input.extend(encode(&ToBroker::Stats));
        let mut reader = tokio::io::BufReader::with_capacity(5, &input[..]);
        let mut buf = Vec::new();
        let first: Option<ToBroker> = read_message(&mut reader, &mut buf).await.unwrap();
        assert_eq!(first, Some(ToBroker::Activate { epoch: 7 }));
        let second: Option<ToBroker> = read_message(&mut reader, &mut buf).await.unwrap();
        assert_eq!(second, Some(ToBroker::Stats));
        let end: Option<ToBroker> = read_message(&mut reader, &mut buf).await.unwrap();
        assert_eq!(end, None);
    }

    #[tokio::test]
    async fn refuses_garbage_with_a_readable_excerpt() {
        let mut reader = tokio::io::BufReader::new(&b"\x00\x01GET / HTTP/1.1\n"[..]);
        let err = read_message::<ToBroker, _>(&mut reader, &mut Vec::new())
            .await
            .unwrap_err();
        assert!(matches!(err, WireError::Malformed { .. }), "{err}");
        assert!(err.to_string().contains("GET / HTTP/1.1"), "{err}");
    }

    #[tokio::test]
    async fn refuses_an_endless_line_without_buffering_it() {
        let input = vec![b'x'; MAX_LINE * 3];
        let mut reader = tokio::io::BufReader::new(&input[..]);
        let mut buf = Vec::new();
        let err = read_message::<ToBroker, _>(&mut reader, &mut buf)
            .await
            .unwrap_err();
        assert!(matches!(err, WireError::LineTooLong { .. }), "{err}");
        assert!(buf.capacity() <= 2 * MAX_LINE);
    }

    #[tokio::test]
    async fn a_message_cut_off_by_eof_is_truncated() {
        let mut reader = tokio::io::BufReader::new(&br#"{"type":"stats""#[..]);
        let err = read_message::<ToBroker, _>(&mut reader, &mut Vec::new())
            .await
            .unwrap_err();
        assert!(matches!(err, WireError::Truncated), "{err}");
    }

    #[test]
    fn unknown_fields_and_types_are_refused() {
        assert!(decode::<ToBroker>(br#"{"type":"activate","epoch":1,"x":2}"#).is_err());
        assert!(decode::<ToBroker>(br#"{"type":"launch_missiles"}"#).is_err());
    }

    #[test]
    fn version_check_names_both_versions() {
        let err = check_version(crate::PROTOCOL_VERSION + 1).unwrap_err();
        let ours = crate::PROTOCOL_VERSION;
        let expected = format!("we speak {ours}, peer speaks {}", ours + 1);
        assert!(err.to_string().contains(&expected), "{err}");
    }
}
