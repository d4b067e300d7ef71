//! Preparing the shared directory at start (config `init`), so that installing a node is writing
//! its config and starting the unit, while the marker keeps its job: a node whose cluster
//! filesystem did not mount must not lock the empty local directory beneath the mount point and
//! become a second active.

use crate::config::Init;
use shared_proto::layout::{self, Layout, LayoutError, Marker};
use shared_proto::mounts::{self, Filesystem};
use std::path::Path;

/// The shared directory's marker: read as it is, or, where it has none and `init` allows,
/// prepared as `ctl init` would (for `owner`, the broker's uid and gid) and logged once, naming
/// `node`.
pub fn marker(
    layout: &Layout,
    init: Init,
    owner: Option<(u32, u32)>,
    node: &str,
) -> anyhow::Result<Marker> {
    let missing = match layout.check() {
        Ok(marker) => return Ok(marker),
        Err(e @ (LayoutError::NoMarker { .. } | LayoutError::Missing(_))) => e,
        Err(other) => return Err(other.into()),
    };
    let reason = match init {
        Init::Never => return Err(missing.into()),
        Init::Always => "init = \"always\" (or --init)".to_owned(),
        Init::IfMounted => mounted_for_init(layout.root()).map_err(anyhow::Error::msg)?,
    };
    let marker = layout.init(owner)?;
    tracing::info!(
        node,
        dir = %layout.root().display(),
        cluster = %marker.cluster_id,
        %reason,
        "prepared the shared directory"
    );
    Ok(marker)
}

/// Whether `dir` is the cluster filesystem's own directory, ready to be prepared: it exists, is
/// a mount point or on a filesystem made for sharing, and holds nothing but what a peer that is
/// preparing it at the same moment puts there. `Ok` says why (for the log); `Err` says what is
/// wrong and what to do.
fn mounted_for_init(dir: &Path) -> Result<String, String> {
    let shown = dir.display();
    let refuse = |what: String| {
        format!(
            "shared_dir {shown} {what}, and init = \"if-mounted\" prepares only the cluster \
             filesystem's own directory"
        )
    };
    match std::fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(refuse("is not a directory (a link or a file)".into())),
        Err(e) => {
            return Err(refuse(format!(
                "cannot be read ({e}): mount the cluster filesystem there"
            )))
        }
    }
    let fs = Filesystem::probe(dir).map_err(|e| refuse(format!("cannot be examined ({e})")))?;
    let canonical = std::fs::canonicalize(dir).map_err(|e| refuse(format!("({e})")))?;
    let reason = if fs.mount_point.as_deref() == Some(canonical.as_path()) {
        format!("a mount of its own: {}", fs.describe())
    } else if mounts::is_shared(&fs.fs_type) {
        format!("on a shared filesystem: {}", fs.describe())
    } else {
        return Err(refuse(format!(
            "is on {}, neither a mount point nor a network or cluster filesystem: is the cluster \
             filesystem mounted? Mount it there, or, for a single node on this disk, prepare the \
             directory once with `ctl init {shown}`",
            fs.describe()
        )));
    };
    let entries = std::fs::read_dir(dir).map_err(|e| refuse(format!("cannot be listed ({e})")))?;
    let mut foreign = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| refuse(format!("cannot be listed ({e})")))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !layout::made_by_init(&name) && name != "lost+found" {
            foreign.push(name);
        }
    }
    if !foreign.is_empty() {
        foreign.sort();
        foreign.truncate(5);
        return Err(refuse(format!(
            "holds files lockd did not make ({}) and no {}: point shared_dir at an empty \
             directory, or run `ctl init {shown}` if they are meant to stay beside the cluster's",
            foreign.join(", "),
            layout::MARKER
        )));
    }
    Ok(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_refuses_always_prepares() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path().join("shared"));
        let err = marker(&layout, Init::Never, None, "n1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("ctl init"), "{err}");
        let made = marker(&layout, Init::Always, None, "n1").unwrap();
        assert_eq!(marker(&layout, Init::Never, None, "n1").unwrap(), made);
    }

    #[test]
    fn if_mounted_refuses_a_directory_on_the_disk_beneath() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        let layout = Layout::new(&shared);
        let err = marker(&layout, Init::IfMounted, None, "n1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("is the cluster filesystem mounted?"), "{err}");
        assert!(
            err.contains(&format!("ctl init {}", shared.display())),
            "{err}"
        );
        assert!(!layout.marker().exists(), "nothing was prepared");

        let missing = Layout::new(dir.path().join("absent"));
        let err = marker(&missing, Init::IfMounted, None, "n1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("mount the cluster filesystem there"), "{err}");
        assert!(!dir.path().join("absent").exists());
    }
}
