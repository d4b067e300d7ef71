//! Arbitrary bytes as one line of each control protocol, decoded as lockd, brokerd and ctl
//! decode it ([`shared_proto::wire::decode`]: serde_json from a line of at most `MAX_LINE`
//! bytes), as each message type: lockd <-> brokerd ([`ToBroker`], [`FromBroker`]) and
//! ctl <-> lockd ([`Request`], [`Response`]).
//!
//! Checks: no panic; whatever decodes re-encodes ([`shared_proto::wire::encode`]) to one line
//! that decodes to an equal message and re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::{de::DeserializeOwned, Serialize};
use shared_proto::admin::{Request, Response};
use shared_proto::control::{FromBroker, ToBroker};
use shared_proto::wire;
use std::fmt::Debug;

fuzz_target!(|line: &[u8]| {
    round_trip::<ToBroker>(line);
    round_trip::<FromBroker>(line);
    round_trip::<Request>(line);
    round_trip::<Response>(line);
});

fn round_trip<T>(line: &[u8])
where
    T: DeserializeOwned + Serialize + PartialEq + Debug,
{
    let Ok(message) = wire::decode::<T>(line) else {
        return;
    };
    let encoded = wire::encode(&message);
    let (last, text) = encoded.split_last().expect("a line is never empty");
    assert_eq!(*last, b'\n');
    assert!(!text.contains(&b'\n'), "a message spans lines: {encoded:?}");
    let again: T = wire::decode(text)
        .unwrap_or_else(|e| panic!("{message:?} does not decode from its own line: {e}"));
    assert_eq!(again, message);
    assert_eq!(wire::encode(&again), encoded);
}
