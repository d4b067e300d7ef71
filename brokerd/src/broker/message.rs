//! A message as the broker holds it, and its encoding in the store.
//!
//! Headers the broker interprets (`destination`, `persistent`, `priority`, `expires`, ...) are
//! fields; every other header a producer sent is passed through to consumers untouched, in order.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::sync::Arc;

/// Headers that belong to one hop of the protocol, or that the broker keeps as fields and
/// writes itself, never passed from a SEND to a MESSAGE as they came.
const HOP_HEADERS: [&str; 12] = [
    "destination",
    "expires",
    "priority",
    "timestamp",
    "receipt",
    "transaction",
    "content-length",
    "message-id",
    "subscription",
    "ack",
    "redelivered",
    "persistent",
];

/// Default priority of a message without a `priority` header (JMS's default).
pub const DEFAULT_PRIORITY: u8 = 4;

/// One message. Shared (`Arc`) between a topic's subscribers and the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The `message-id` header: node, epoch and sequence, unique across failovers.
    pub id: Arc<str>,
    /// Store key and FIFO order: `(epoch << 40) | counter`, so it grows across failovers too.
    pub seq: u64,
    pub destination: Arc<str>,
    /// Headers passed through to consumers, in the producer's order.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub persistent: bool,
    /// 0-9, higher first (queues only).
    pub priority: u8,
    /// Unix milliseconds after which the message is not delivered; 0 = never.
    pub expires: u64,
    /// Times it was delivered and not acknowledged (NACK, consumer gone, failover).
    pub redeliveries: u32,
    /// JMSTimestamp: Unix milliseconds when the broker took it (or the SEND's `timestamp`).
    pub timestamp: u64,
    /// The SEND gave a `content-length`, so every MESSAGE carries one (ActiveMQ's bytes
    /// message); without it, none (its text message): the header is never invented.
    pub sized: bool,
    /// The connection that sent it (`activemq.noLocal`); 0 for one the broker made or read
    /// back from the store. Not stored: connections do not outlive the broker.
    pub from: u64,
}

/// Why a SEND's headers are unacceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("SEND needs a destination header")]
    NoDestination,
    #[error("priority {0:?} is not a number")]
    BadPriority(String),
    #[error("expires {0:?} is not a time in milliseconds since the Unix epoch")]
    BadExpires(String),
    #[error("timestamp {0:?} is not a time in milliseconds since the Unix epoch")]
    BadTimestamp(String),
    #[error(transparent)]
    BadSchedule(#[from] crate::scheduler::spec::ScheduleError),
}

/// The value of a frame's header `name`: its first occurrence, as STOMP says.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Owned header pairs, for tests.
/// The store's copy of a message is made on the journal's writer thread.
impl crate::journal::Encode for Message {
    fn encode(&self) -> Bytes {
        Message::encode(self)
    }

    fn size(&self) -> usize {
        self.footprint()
    }
}

#[cfg(test)]
pub fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// The parts of a SEND frame the broker interprets, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// As the SEND named it: the broker resolves it ([`super::names`]) for the connection.
    pub destination: String,
    pub headers: Vec<(String, String)>,
    pub persistent: bool,
    pub priority: u8,
    pub expires: u64,
    /// The SEND's `timestamp`, which ActiveMQ keeps as the JMSTimestamp.
    pub timestamp: Option<u64>,
    /// The SEND gave a `content-length` ([`Message::sized`]).
    pub sized: bool,
    /// ActiveMQ's scheduling headers: a job, not a message (their headers are not passed on).
    pub schedule: Option<crate::scheduler::spec::Schedule>,
}

impl Published {
    /// Reads a SEND frame's headers (first occurrence wins, as STOMP says).
    pub fn from_headers(headers: &[(String, String)]) -> Result<Published, HeaderError> {
        let get = |name: &str| header(headers, name);
        let destination = get("destination").ok_or(HeaderError::NoDestination)?;
        // ActiveMQ's leniency: anything but `true` is non-persistent, and a priority outside
        // 0-9 is taken as the nearest (its JMS client would refuse it; its STOMP does not).
        let persistent = get("persistent") == Some("true");
        let priority = match get("priority") {
            None => DEFAULT_PRIORITY,
            Some(p) => p
                .trim()
                .parse::<i64>()
                .map(|p| p.clamp(0, 9) as u8)
                .map_err(|_| HeaderError::BadPriority(p.into()))?,
        };
        let millis = |name: &str, err: fn(String) -> HeaderError| match get(name) {
            None => Ok(None),
            Some(v) => v.trim().parse::<u64>().map(Some).map_err(|_| err(v.into())),
        };
        let expires = millis("expires", HeaderError::BadExpires)?.unwrap_or(0);
        let timestamp = millis("timestamp", HeaderError::BadTimestamp)?;
        let schedule = crate::scheduler::spec::Schedule::from_headers(headers)?;
        let mut passed: Vec<(String, String)> = Vec::new();
        for (name, value) in headers {
            let scheduling =
                schedule.is_some() && crate::scheduler::spec::HEADERS.contains(&name.as_str());
            if scheduling
                || HOP_HEADERS.contains(&name.as_str())
                || passed.iter().any(|(n, _)| n == name)
            {
                continue;
            }
            passed.push((name.clone(), value.clone()));
        }
        Ok(Published {
            destination: destination.into(),
            headers: passed,
            persistent,
            priority,
            expires,
            timestamp,
            sized: get("content-length").is_some(),
            schedule,
        })
    }
}

impl Message {
    /// Whether the message has expired at `now_unix_ms`.
    pub fn expired(&self, now_unix_ms: u64) -> bool {
        self.expires != 0 && self.expires <= now_unix_ms
    }

    /// Bytes the message occupies in memory, roughly, for the memory limit.
    pub fn footprint(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.len() + v.len() + 48)
            .sum();
        self.body.len() + headers + self.destination.len() + self.id.len() + 128
    }

    /// The store's encoding: a version byte, then the fields, length-prefixed. Version 2 added
    /// the timestamp and the flags byte (bit 0: [`Message::sized`]).
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.footprint());
        out.put_u8(2);
        out.put_u64(self.seq);
        put_str(&mut out, &self.id);
        put_str(&mut out, &self.destination);
        out.put_u8(u8::from(self.persistent));
        out.put_u8(self.priority);
        out.put_u64(self.expires);
        out.put_u32(self.redeliveries);
        out.put_u64(self.timestamp);
        out.put_u8(u8::from(self.sized));
        out.put_u32(self.headers.len() as u32);
        for (name, value) in &self.headers {
            put_str(&mut out, name);
            put_str(&mut out, value);
        }
        out.put_u32(self.body.len() as u32);
        out.put_slice(&self.body);
        out.freeze()
    }

    /// Reads [`Message::encode`]'s output, or version 1's (stored by an older brokerd: no
    /// timestamp, and always sized); `None` if it is neither.
    pub fn decode(mut buf: &[u8]) -> Option<Message> {
        if buf.remaining() < 1 {
            return None;
        }
        let version = buf.get_u8();
        if !(1..=2).contains(&version) || buf.remaining() < 8 {
            return None;
        }
        let seq = buf.get_u64();
        let id = get_str(&mut buf)?;
        let destination = get_str(&mut buf)?;
        if buf.remaining() < 1 + 1 + 8 + 4 + 4 {
            return None;
        }
        let persistent = buf.get_u8() != 0;
        let priority = buf.get_u8();
        let expires = buf.get_u64();
        let redeliveries = buf.get_u32();
        let (timestamp, sized) = match version {
            1 => (0, true),
            _ if buf.remaining() < 8 + 1 + 4 => return None,
            _ => (buf.get_u64(), buf.get_u8() & 1 != 0),
        };
        let count = buf.get_u32() as usize;
        let mut headers = Vec::with_capacity(count.min(1024));
        for _ in 0..count {
            let name = get_str(&mut buf)?;
            let value = get_str(&mut buf)?;
            headers.push((name, value));
        }
        if buf.remaining() < 4 {
            return None;
        }
        let len = buf.get_u32() as usize;
        if buf.remaining() != len {
            return None;
        }
        Some(Message {
            id: id.into(),
            seq,
            destination: destination.into(),
            headers,
            body: Bytes::copy_from_slice(buf),
            persistent,
            priority,
            expires,
            redeliveries,
            timestamp,
            sized,
            from: 0,
        })
    }
}

pub(crate) fn put_str(out: &mut BytesMut, s: &str) {
    out.put_u32(s.len() as u32);
    out.put_slice(s.as_bytes());
}

pub(crate) fn get_str(buf: &mut &[u8]) -> Option<String> {
    if buf.remaining() < 4 {
        return None;
    }
    let len = buf.get_u32() as usize;
    if buf.remaining() < len {
        return None;
    }
    let s = std::str::from_utf8(&buf[..len]).ok()?.to_owned();
    buf.advance(len);
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_headers_are_checked_and_custom_ones_passed_through_first_wins() {
        let p = Published::from_headers(&headers(&[
            ("destination", "/queue/a"),
            ("receipt", "r1"),
            ("persistent", "true"),
            ("priority", "7"),
            ("timestamp", "1700000000000"),
            ("reply-to", "/queue/b"),
            ("x", "1"),
            ("x", "2"),
            ("content-length", "3"),
        ]))
        .unwrap();
        assert_eq!(p.destination, "/queue/a");
        assert!(p.persistent && p.sized);
        assert_eq!((p.priority, p.timestamp), (7, Some(1_700_000_000_000)));
        assert_eq!(p.headers, headers(&[("reply-to", "/queue/b"), ("x", "1")]));
        for (name, value, expected) in [
            ("priority", "high", "priority \"high\""),
            ("expires", "soon", "expires \"soon\""),
            ("timestamp", "-1", "timestamp \"-1\""),
        ] {
            let err =
                Published::from_headers(&headers(&[("destination", "/topic/t"), (name, value)]))
                    .unwrap_err();
            assert!(err.to_string().contains(expected), "{err}");
        }
        assert_eq!(
            Published::from_headers(&[]).unwrap_err(),
            HeaderError::NoDestination
        );
    }

    #[test]
    fn send_headers_are_read_as_leniently_as_activemq_reads_them() {
        let read = |pairs: &[(&str, &str)]| {
            let mut all = vec![("destination", "/queue/a")];
            all.extend_from_slice(pairs);
            Published::from_headers(&headers(&all)).unwrap()
        };
        // Anything but "true" is non-persistent.
        for value in ["yes", "TRUE", "1", "false", ""] {
            assert!(!read(&[("persistent", value)]).persistent, "{value}");
        }
        // A priority outside 0-9 is the nearest one.
        for (value, expected) in [("12", 9), ("-3", 0), (" 5", 5), ("9", 9)] {
            assert_eq!(read(&[("priority", value)]).priority, expected, "{value}");
        }
        let plain = read(&[]);
        assert!(!plain.sized && plain.timestamp.is_none());
        assert_eq!(plain.priority, DEFAULT_PRIORITY);
    }

    #[test]
    fn messages_round_trip_through_the_store_encoding() {
        let msg = Message {
            id: "ID:n1-3-42".into(),
            seq: (3 << 40) | 42,
            destination: "/queue/a".into(),
            headers: headers(&[("k", "v\nw"), ("empty", "")]),
            body: Bytes::from_static(b"body\0with nul"),
            persistent: true,
            priority: 9,
            expires: 123,
            redeliveries: 2,
            timestamp: 1_700_000_000_123,
            sized: false,
            from: 0,
        };
        let encoded = msg.encode();
        assert_eq!(Message::decode(&encoded), Some(msg.clone()));
        assert_eq!(Message::decode(&encoded[..encoded.len() - 1]), None);
        assert_eq!(Message::decode(b"\x02"), None);
        assert_eq!(Message::decode(b"\x03"), None);
        // Version 1, as an older brokerd stored it: no timestamp, no flags, always sized.
        let mut v1 = BytesMut::new();
        v1.put_u8(1);
        v1.put_u64(msg.seq);
        put_str(&mut v1, &msg.id);
        put_str(&mut v1, &msg.destination);
        v1.put_u8(1);
        v1.put_u8(9);
        v1.put_u64(123);
        v1.put_u32(2);
        v1.put_u32(2);
        for (name, value) in &msg.headers {
            put_str(&mut v1, name);
            put_str(&mut v1, value);
        }
        v1.put_u32(msg.body.len() as u32);
        v1.put_slice(&msg.body);
        let old = Message {
            timestamp: 0,
            sized: true,
            from: 0,
            ..msg
        };
        assert_eq!(Message::decode(&v1), Some(old));
    }
}
