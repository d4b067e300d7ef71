//! brokerd's own fence against a newer epoch, for shared filesystems whose locks are broken.
//!
//! lockd's keepalive notices another node's epoch claim within its period (500 ms by
//! default). Where the filesystem's locks are not exclusive between nodes, the other node's
//! broker starts meanwhile, and two brokers writing one store lose messages. So brokerd watches
//! as well, much faster: a thread asks the shared directory every [`POLL`] whether another
//! epoch was claimed and ends the process the moment one was, without flushing or saying
//! goodbye (to the store, a crash, which it survives). The new holder's lockd waits several of
//! these polls after its claim before its broker opens the store, so the stale broker has
//! stopped writing by then.

use crate::store::StoreError;
use shared_proto::layout::Layout;
use std::time::Duration;

/// How often the epoch is checked: a read of `SHARED/epoch` and a stat of the next claim file,
/// a few microseconds each on a local filesystem. On NFS each poll is an OPEN, READ, CLOSE and
/// LOOKUP (close-to-open consistency makes the read fresh): about 800 small requests a second
/// to the server from the one active broker. Shared with lockd, whose takeover grace is checked
/// at compile time to cover several of these polls.
pub const POLL: Duration = shared_proto::lock_check::EPOCH_POLL;

/// brokerd's exit status when its epoch is stale (found at start or by the fence poll).
pub const STALE_EPOCH_EXIT: u8 = 3;

/// Reads of the epoch [`Fence::check`] tries, [`POLL`] apart, before it gives up: enough to ride
/// out one failed NFS request, few enough that a batch waits at most a few polls.
pub const CHECK_ATTEMPTS: u32 = 3;

/// The question the fence asks, for the journal's writer to ask before each write too.
#[derive(Debug, Clone)]
pub struct Fence {
    shared: Layout,
    epoch: u64,
}

impl Fence {
    /// Asked before every write: ends the process at once if another epoch has been claimed,
    /// and returns Ok only if the read showed ours is still the newest. A read that fails means
    /// "cannot tell", never "pass": a broker that another node superseded while the shared
    /// directory was unreadable must not write. It is tried [`CHECK_ATTEMPTS`] times, [`POLL`]
    /// apart; then `Err(FenceUncertain)`, and the caller writes nothing (the journal's writer
    /// stops, and with it the broker, saying why).
    pub fn check(&self) -> Result<(), StoreError> {
        let mut attempt = 1;
        loop {
            match self.shared.newer_epoch(self.epoch) {
                Ok(None) => return Ok(()),
                Ok(Some(other)) => superseded(self.epoch, other),
                Err(source) if attempt >= CHECK_ATTEMPTS => {
                    return Err(StoreError::FenceUncertain {
                        path: self.shared.epoch(),
                        attempts: attempt,
                        source,
                    })
                }
                Err(e) => {
                    tracing::warn!(epoch = self.epoch, attempt, error = %e, "the epoch fence cannot read the shared directory before a write; retrying");
                    attempt += 1;
                    std::thread::sleep(POLL);
                }
            }
        }
    }
}

/// Checks at once, then starts the fence thread. `Err(StaleEpoch)`: another epoch was claimed
/// after ours, and the caller must not open the store. `Err(FenceUnreadable)`: the fence could
/// not work, and the broker must not run without it.
pub fn watch(shared: Layout, epoch: u64) -> Result<Fence, StoreError> {
    match shared.newer_epoch(epoch) {
        Ok(None) => {}
        Ok(Some(other)) => {
            return Err(StoreError::StaleEpoch {
                ours: epoch,
                stored: other,
            })
        }
        Err(source) => {
            return Err(StoreError::FenceUnreadable {
                path: shared.epoch(),
                source,
            })
        }
    }
    let fence = Fence { shared, epoch };
    let polled = fence.clone();
    std::thread::Builder::new()
        .name("fence".into())
        .spawn(move || poll(&polled))
        .map_err(|source| StoreError::Spawn {
            path: fence.shared.root().to_owned(),
            source,
        })?;
    Ok(fence)
}

fn poll(fence: &Fence) -> ! {
    let (shared, epoch) = (&fence.shared, fence.epoch);
    let mut failing = false;
    loop {
        std::thread::sleep(POLL);
        match shared.newer_epoch(epoch) {
            Ok(Some(other)) => superseded(epoch, other),
            Ok(None) => failing = false,
            // It was readable at start, so this is the filesystem, which lockd's keepalive
            // watches (and fences on). Meanwhile the journal's writer checks before each write
            // and writes nothing it cannot verify (`Fence::check`).
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(epoch, error = %e, "the epoch fence cannot read the shared directory; the store takes no write until it can");
            }
            Err(_) => {}
        }
    }
}

fn superseded(ours: u64, other: u64) -> ! {
    tracing::error!(
        epoch = ours,
        claimed = other,
        "another epoch was claimed: this broker is stale (broken cluster locks?); exiting at once"
    );
    // SAFETY: _exit(2) ends every thread of the process at once, which is the point: no thread
    // may write to the store or answer a client after this.
    unsafe { libc::_exit(i32::from(STALE_EPOCH_EXIT)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_epoch_claimed_after_ours_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        layout.init(None).unwrap();
        std::fs::write(layout.epoch(), "7\n").unwrap();
        let err = watch(layout.clone(), 6).unwrap_err();
        assert!(
            matches!(err, StoreError::StaleEpoch { ours: 6, stored: 7 }),
            "{err}"
        );
        std::fs::create_dir_all(layout.epochs()).unwrap();
        std::fs::write(layout.epochs().join("8"), "").unwrap();
        let err = watch(layout.clone(), 7).unwrap_err();
        assert!(
            matches!(err, StoreError::StaleEpoch { ours: 7, stored: 8 }),
            "{err}"
        );
        std::fs::remove_file(layout.epoch()).unwrap();
        let err = watch(layout, 8).unwrap_err();
        assert!(matches!(err, StoreError::FenceUnreadable { .. }), "{err}");
        assert!(err.to_string().contains("needs read access"), "{err}");
    }

    #[test]
    fn a_check_that_cannot_read_the_epoch_is_not_a_pass() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        layout.init(None).unwrap();
        std::fs::write(layout.epoch(), "4\n").unwrap();
        let fence = Fence {
            shared: layout.clone(),
            epoch: 4,
        };
        fence.check().unwrap();
        // A directory where the epoch file was: every read fails.
        std::fs::remove_file(layout.epoch()).unwrap();
        std::fs::create_dir(layout.epoch()).unwrap();
        let err = fence.check().unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::FenceUncertain {
                    attempts: CHECK_ATTEMPTS,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("cannot tell"), "{err}");
        // Readable again: the check passes again.
        std::fs::remove_dir(layout.epoch()).unwrap();
        std::fs::write(layout.epoch(), "4\n").unwrap();
        fence.check().unwrap();
        // The next claim cannot be looked up (epochs/ is not a directory): not a pass either.
        std::fs::remove_dir_all(layout.epochs()).unwrap();
        std::fs::write(layout.epochs(), "").unwrap();
        let err = fence.check().unwrap_err();
        assert!(matches!(err, StoreError::FenceUncertain { .. }), "{err}");
    }
}
