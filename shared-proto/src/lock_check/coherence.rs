//! What the self-test checks besides the lock: an O_EXCL create is exclusive across two paths,
//! and how soon a renamed or created file written through one path shows through the other.

use super::*;

/// Creates `name` with O_EXCL through `first`, then tries again through `second`.
pub(super) fn probe_claim(
    first: &Path,
    second: &Path,
    name: &str,
) -> Result<ClaimProbe, CheckError> {
    let claimed = Removal::create_new(&first.join(name))?;
    let again = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(second.join(name));
    let exclusive = matches!(&again, Err(e) if e.kind() == io::ErrorKind::AlreadyExists);
    if again.is_ok() && first != second {
        // A second directory after all: remove the file we made there too.
        let _ = fs::remove_file(second.join(name));
    }
    drop(claimed);
    Ok(ClaimProbe {
        first: first.to_owned(),
        second: second.to_owned(),
        exclusive,
    })
}

/// Creates `name` with O_EXCL through `writer` as lockd claims an epoch (file and directory
/// synced), and measures how soon it exists through `reader`. The reader looks first, so that a
/// cached "no such file" is in the way, as it is for a node that looked before the claim.
pub(super) fn probe_created(
    writer: &Path,
    reader: &Path,
    name: &str,
    limits: &Limits,
) -> CoherenceProbe {
    let mut probe = CoherenceProbe {
        method: Publication::Create,
        writer: writer.to_owned(),
        reader: reader.to_owned(),
        coherent: false,
        lag_ms: 0,
        error: None,
    };
    let target = reader.join(name);
    let exists = || match fs::symlink_metadata(&target) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    };
    if let Err(e) = exists() {
        probe.error = Some(format!("looking for {}: {e}", target.display()));
        return probe;
    }
    let created = writer.join(name);
    let removal = match Removal::create_new(&created) {
        Ok(removal) => removal,
        Err(e) => {
            probe.error = Some(e.to_string());
            return probe;
        }
    };
    if let Err(e) = File::open(&created)
        .and_then(|f| f.sync_all())
        .and_then(|()| File::open(writer)?.sync_all())
    {
        probe.error = Some(format!("syncing {}: {e}", created.display()));
        return probe;
    }
    seen(&mut probe, limits.coherence, exists, &target);
    drop(removal);
    probe
}

/// Replaces `name` through `writer` as lockd replaces the epoch file (temporary file, sync,
/// rename, directory sync), twice, and measures how soon the second content is read through
/// `reader`. The reader reads the first content before the second is written, so that it is
/// cached, as it is for a broker polling the epoch.
pub(super) fn probe_renamed(
    writer: &Path,
    reader: &Path,
    name: &str,
    limits: &Limits,
) -> CoherenceProbe {
    let mut probe = CoherenceProbe {
        method: Publication::Rename,
        writer: writer.to_owned(),
        reader: reader.to_owned(),
        coherent: false,
        lag_ms: 0,
        error: None,
    };
    let target = writer.join(name);
    let temporary = writer.join(format!("{name}.tmp"));
    let read_through = reader.join(name);
    // First content: read through the reader, so that its caches hold it.
    if let Err(e) = replace(&temporary, &target, b"first\n") {
        let _ = fs::remove_file(&temporary);
        probe.error = Some(format!("replacing {}: {e}", target.display()));
        return probe;
    }
    let removal = Removal { path: target };
    seen(
        &mut probe,
        limits.coherence,
        reads(&read_through, b"first\n"),
        &read_through,
    );
    if !probe.coherent || probe.error.is_some() {
        return probe;
    }
    // The replacement, measured: what a broker polling the epoch would see of a new claim.
    probe.coherent = false;
    if let Err(e) = replace(&temporary, &removal.path, b"second\n") {
        let _ = fs::remove_file(&temporary);
        probe.error = Some(format!("replacing {}: {e}", removal.path.display()));
        return probe;
    }
    seen(
        &mut probe,
        limits.coherence,
        reads(&read_through, b"second\n"),
        &read_through,
    );
    probe
}

/// Whether `path` reads as `content` (not there yet counts as no).
fn reads<'a>(path: &'a Path, content: &'a [u8]) -> impl FnMut() -> io::Result<bool> + 'a {
    move || match fs::read(path) {
        Ok(text) => Ok(text == content),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// lockd's atomic write: temporary file, sync, rename over `target`, sync of the directory.
fn replace(temporary: &Path, target: &Path, content: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(temporary)?;
    file.write_all(content)?;
    file.sync_all()?;
    fs::rename(temporary, target)?;
    File::open(target.parent().unwrap_or(Path::new(".")))?.sync_all()
}

/// Polls `check` until it says yes, fails, or `timeout` passes, and records that in `probe`.
fn seen(
    probe: &mut CoherenceProbe,
    timeout: Duration,
    mut check: impl FnMut() -> io::Result<bool>,
    through: &Path,
) {
    let started = Instant::now();
    loop {
        match check() {
            Ok(true) => {
                probe.coherent = true;
                probe.lag_ms = started.elapsed().as_millis() as u64;
                return;
            }
            Ok(false) if started.elapsed() < timeout => std::thread::sleep(POLL_INTERVAL),
            Ok(false) => return,
            Err(e) => {
                probe.error = Some(format!("reading {}: {e}", through.display()));
                return;
            }
        }
    }
}
