//! The broken-locks policy: once this node has seen (or been told through `SHARED/broken-locks`)
//! that the filesystem's locks are not exclusive between nodes, it takes the lock only from a
//! holder whose heartbeat in `holder.json` has been still long enough for it to have fenced
//! itself, or that released on purpose.

use super::{Event, Keeper};
use crate::shared_dir;
use shared_proto::holder::HolderState;
use shared_proto::records;
use std::time::Instant;

/// What identifies one heartbeat of one holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct HolderBeat {
    node: String,
    epoch: u64,
    heartbeat_unix_ms: u64,
    released: bool,
}

impl Keeper {
    /// Another node named in `holder.json`, not released, whose heartbeat changed (or could not
    /// be read) less than fence_timeout + keepalive + the takeover grace ago, by our own clock
    /// (never by comparing clocks between nodes): by then a live holder whose filesystem hung
    /// has fenced its own broker, counting from its last keepalive, which precedes our reading.
    /// A claim newer than the epoch `holder.json` names counts as live too: its node has
    /// claimed and not yet published itself there (in that window `holder.json` may still name
    /// us, the node it just superseded).
    pub(super) fn live_holder(&mut self) -> Option<String> {
        self.next_keepalive = Instant::now();
        self.refresh_view();
        let published = self.holder_seen.as_ref().map_or(0, |(beat, _)| beat.epoch);
        match self.layout.read_epoch() {
            Ok(claimed) if claimed <= published => {}
            Ok(claimed) => {
                if let Some((_, changed)) = self.holder_seen.as_mut() {
                    *changed = Instant::now();
                }
                return Some(format!("the node that claimed epoch {claimed}"));
            }
            Err(_) => return Some("the epoch file's owner (unreadable)".into()),
        }
        let quiet = self.config.fence_timeout + self.config.keepalive + self.config.takeover_grace;
        let (beat, changed) = self.holder_seen.as_ref()?;
        (beat.node != self.config.node && !beat.released && changed.elapsed() < quiet)
            .then(|| beat.node.clone())
    }

    /// Takes in another node's record of broken locks (`SHARED/broken-locks`), once.
    pub(super) fn learn_broken_locks(&mut self) {
        if self.broken_locks.is_some() {
            return;
        }
        if let Ok(Some(record)) = records::read_broken_locks(&self.layout) {
            let evidence = format!(
                "recorded in {}: {record}",
                self.layout.broken_locks().display()
            );
            tracing::error!(
                node = %self.config.node,
                %evidence,
                "the shared filesystem's locks are not exclusive between nodes: this node takes the lock only from a holder whose heartbeat has stopped"
            );
            self.broken_locks = Some(evidence.clone());
            self.report(Event::BrokenLocks { evidence });
        }
    }

    /// Records that another node claimed the lock while ours still looked held.
    pub(super) fn saw_broken_locks(&mut self, evidence: &str) {
        if self.broken_locks.is_none() {
            tracing::error!(
                node = %self.config.node,
                %evidence,
                "the shared filesystem's locks are not exclusive between nodes: from now on this node takes the lock only from a holder whose heartbeat has stopped; run `ctl check-lock` on every node's mount"
            );
            self.broken_locks = Some(evidence.to_owned());
            // Every node must distrust the locks, not only the one pushed out: the node that
            // took over never sees a conflict itself.
            if let Err(e) =
                shared_dir::record_broken_locks(&self.layout, &self.config.node, evidence)
            {
                tracing::warn!(node = %self.config.node, error = %e, "cannot record the broken locks in the shared directory");
            }
            self.report(Event::BrokenLocks {
                evidence: evidence.to_owned(),
            });
        }
    }

    /// Re-reads `holder.json` for status and hold-off, at most once per keepalive period.
    pub(super) fn refresh_view(&mut self) {
        if Instant::now() < self.next_keepalive {
            return;
        }
        self.next_keepalive = Instant::now() + self.config.keepalive;
        match records::read_holder(&self.layout) {
            Ok(holder) => {
                let beat = holder.as_ref().map(|h| HolderBeat {
                    node: h.node.clone(),
                    epoch: h.epoch,
                    heartbeat_unix_ms: h.heartbeat_unix_ms,
                    released: h.state == HolderState::Released,
                });
                match (&beat, &self.holder_seen) {
                    (Some(beat), Some((seen, _))) if beat == seen => {}
                    (Some(beat), _) => self.holder_seen = Some((beat.clone(), Instant::now())),
                    (None, _) => self.holder_seen = None,
                }
                self.holder.send_if_modified(|current| {
                    let changed = *current != holder;
                    *current = holder;
                    changed
                });
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot read holder.json");
                // Unreadable is not still: a holder may be beating behind the error.
                let now = Instant::now();
                match self.holder_seen.as_mut() {
                    Some((_, changed)) => *changed = now,
                    None => {
                        let unknown = HolderBeat {
                            node: "(holder.json unreadable)".into(),
                            epoch: 0,
                            heartbeat_unix_ms: 0,
                            released: false,
                        };
                        self.holder_seen = Some((unknown, now));
                    }
                }
            }
        }
        self.learn_broken_locks();
    }
}
