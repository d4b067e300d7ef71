//! Settings read from files at start and again on each SIGHUP (`systemctl reload lockd@NODE`,
//! which lockd passes on to its broker): the users file and the TLS certificates.
//!
//! Readers hold a [`watch::Receiver`] and see the new value from their next use; nothing is
//! restarted and no connection is dropped. A file that no longer reads keeps the previous
//! value, with an error in the log: a typo during a reload must not lock every client out.
//! Files are read on the blocking pool, never on a runtime thread serving clients.

use std::sync::Arc;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tracing::{debug, error, info};

/// The current value of a reloadable setting.
pub type Current<T> = watch::Receiver<Arc<T>>;

/// Serves `initial` until SIGHUP, then whatever `load` reads each time it succeeds. `what` names
/// the setting in the log. Must be called on the runtime; installs the SIGHUP handler at once,
/// so from then on a SIGHUP never ends the process.
///
/// `initial` was read before the handler existed, and a SIGHUP sent in between (an operator
/// reloading while brokerd starts) reached no handler: so the files are read once more right
/// after it is installed, and a change made in that window is served all the same.
pub fn on_sighup<T: Send + Sync + 'static>(
    what: &'static str,
    initial: T,
    load: impl Fn() -> anyhow::Result<T> + Send + Sync + 'static,
) -> std::io::Result<Current<T>> {
    let mut hangup = signal(SignalKind::hangup())?;
    let (tx, rx) = watch::channel(Arc::new(initial));
    let load = Arc::new(load);
    tokio::spawn(async move {
        reload(&tx, what, &load, Trigger::Start).await;
        while hangup.recv().await.is_some() {
            reload(&tx, what, &load, Trigger::Sighup).await;
            if tx.is_closed() {
                return;
            }
        }
    });
    Ok(rx)
}

/// Why the files are read again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// Once the handler is installed, for a SIGHUP it could not see.
    Start,
    /// A SIGHUP.
    Sighup,
}

/// Reads the setting again on the blocking pool, and serves it if it read.
async fn reload<T, F>(tx: &watch::Sender<Arc<T>>, what: &'static str, load: &Arc<F>, why: Trigger)
where
    T: Send + Sync + 'static,
    F: Fn() -> anyhow::Result<T> + Send + Sync + 'static,
{
    let load = Arc::clone(load);
    let read = match tokio::task::spawn_blocking(move || load()).await {
        Ok(read) => read,
        Err(err) => Err(anyhow::anyhow!("the reading task failed: {err}")),
    };
    match (read, why) {
        (Ok(value), Trigger::Start) => {
            tx.send_replace(Arc::new(value));
            debug!(what, "read again once the SIGHUP handler was installed");
        }
        (Ok(value), Trigger::Sighup) => {
            tx.send_replace(Arc::new(value));
            info!(what, "reloaded on SIGHUP");
        }
        (Err(err), Trigger::Start) => error!(
            what,
            error = format!("{err:#}"),
            "reading again once the SIGHUP handler was installed failed; keeping the settings read at start"
        ),
        (Err(err), Trigger::Sighup) => error!(
            what,
            error = format!("{err:#}"),
            "reload on SIGHUP failed; keeping the previous settings"
        ),
    }
}

/// A value that never changes, for settings given without a file (and for tests).
pub fn fixed<T>(value: T) -> Current<T> {
    watch::channel(Arc::new(value)).1
}

/// Makes SIGHUP harmless to the whole process before anything else runs: lockd passes every
/// reload on, and a broker with nothing to reload must not die of it (SIGHUP's default action).
/// tokio keeps a signal's handler installed for the life of the process once one was made.
pub fn absorb_sighup() -> std::io::Result<()> {
    signal(SignalKind::hangup()).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn the_files_are_read_again_once_the_handler_is_installed() {
        let reads = Arc::new(AtomicU32::new(0));
        let counted = Arc::clone(&reads);
        let mut current = on_sighup("test setting", 0, move || {
            Ok(counted.fetch_add(1, Ordering::SeqCst) + 1)
        })
        .unwrap();
        current.changed().await.unwrap();
        assert_eq!(
            **current.borrow(),
            1,
            "what changed before the handler is served"
        );
        assert_eq!(reads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_file_that_no_longer_reads_keeps_the_value_read_at_start() {
        let (tx, rx) = watch::channel(Arc::new(7));
        let failing = Arc::new(|| -> anyhow::Result<u32> { anyhow::bail!("broken") });
        reload(&tx, "test setting", &failing, Trigger::Start).await;
        reload(&tx, "test setting", &failing, Trigger::Sighup).await;
        assert_eq!(**rx.borrow(), 7);
        assert!(!rx.has_changed().unwrap());
    }
}
