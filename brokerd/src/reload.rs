//! Settings read from files at start and again on each SIGHUP (`systemctl reload lockd@NODE`,
//! which lockd passes on to its broker): the users file and the TLS certificates.
//!
//! Readers hold a [`watch::Receiver`] and see the new value from their next use; nothing is
//! restarted and no connection is dropped. A file that no longer reads keeps the previous
//! value, with an error in the log: a typo during a reload must not lock every client out.

use std::sync::Arc;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tracing::{error, info};

/// The current value of a reloadable setting.
pub type Current<T> = watch::Receiver<Arc<T>>;

/// Serves `initial` until SIGHUP, then whatever `load` reads each time it succeeds. `what` names
/// the setting in the log. Must be called on the runtime; installs the SIGHUP handler at once,
/// so from then on a SIGHUP never ends the process.
pub fn on_sighup<T: Send + Sync + 'static>(
    what: &'static str,
    initial: T,
    load: impl Fn() -> anyhow::Result<T> + Send + 'static,
) -> std::io::Result<Current<T>> {
    let mut hangup = signal(SignalKind::hangup())?;
    let (tx, rx) = watch::channel(Arc::new(initial));
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            match load() {
                Ok(value) => {
                    tx.send_replace(Arc::new(value));
                    info!(what, "reloaded on SIGHUP");
                }
                Err(err) => {
                    error!(
                        what,
                        error = format!("{err:#}"),
                        "reload on SIGHUP failed; keeping the previous settings"
                    );
                }
            }
            if tx.is_closed() {
                return;
            }
        }
    });
    Ok(rx)
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
