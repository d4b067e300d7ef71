//! Arbitrary bytes as the contents of each file lockd reads from the shared directory, parsed as
//! lockd parses them: `holder.json` and `nodes/NODE.json` are refused above their size limit and
//! otherwise read with serde_json ([`Holder`], [`NodeRecord`]), as `shared_proto::records`'s `read_holder` and
//! `read_nodes` do; `cluster.json` goes through [`Layout::check`] itself, from a real file in a
//! scratch directory, so its size limit, its parse and its layout-version check are all the
//! real ones.
//!
//! Checks: no panic; what parses serialises and parses back equal; a marker `check` accepts
//! has the current layout version and is what serde_json reads from the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::{de::DeserializeOwned, Serialize};
use shared_proto::holder::{self, Holder};
use shared_proto::layout::{Layout, Marker, LAYOUT_VERSION};
use shared_proto::nodes::{self, NodeRecord};
use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    if data.len() <= holder::LIMIT {
        round_trip::<Holder>(data);
    }
    if data.len() <= nodes::RECORD_LIMIT {
        round_trip::<NodeRecord>(data);
    }
    check_marker(data);
});

fn round_trip<T>(data: &[u8])
where
    T: DeserializeOwned + Serialize + PartialEq + Debug,
{
    let Ok(record) = serde_json::from_slice::<T>(data) else {
        return;
    };
    let text = serde_json::to_vec(&record).expect("shared records serialise");
    let again: T = serde_json::from_slice(&text)
        .unwrap_or_else(|e| panic!("{record:?} does not parse from its own text: {e}"));
    assert_eq!(again, record);
}

fn check_marker(data: &[u8]) {
    let layout = Layout::new(scratch());
    std::fs::write(layout.marker(), data).expect("write the scratch cluster.json");
    let Ok(marker) = layout.check() else {
        return;
    };
    assert_eq!(marker.layout, LAYOUT_VERSION);
    let parsed: Marker = serde_json::from_slice(data).expect("check accepted it");
    assert_eq!(parsed, marker);
    round_trip::<Marker>(data);
}

/// A directory of this process's own for `cluster.json`, made once and reused.
fn scratch() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("fuzz-shared-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the scratch directory");
        dir
    })
    .clone()
}
