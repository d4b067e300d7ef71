//! The "one active" oracle: a prober that sends a STOMP CONNECT to every node's port at once,
//! over and over, each node from its own thread, and records when each broker (node and epoch)
//! answered CONNECTED, by the prober's clock. Reading roles node after node cannot see two
//! brokers serving at one instant; these accept windows can.
//!
//! A broker's epoch comes from the `session` header of its CONNECTED frame
//! (`NODE-EPOCH-N`, brokerd's session ids).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a probe waits for a connection and for CONNECTED. A broker that does not answer
/// within this (stopped, hung) did not accept that probe.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// Pause between two probes of one node.
const PROBE_EVERY: Duration = Duration::from_millis(20);

/// One accepted probe: the broker answered CONNECTED at some moment between `sent` and
/// `answered` (offsets from the prober's start).
#[derive(Debug, Clone, Copy)]
struct Accept {
    node: usize,
    epoch: u64,
    sent: Duration,
    answered: Duration,
}

/// When one broker (a node under one epoch) accepted CONNECTs: its first accept happened
/// between `first_sent` and `first_answered`, its last between `last_sent` and
/// `last_answered` (offsets from the prober's start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptWindow {
    pub node: String,
    pub epoch: u64,
    pub first_sent: Duration,
    pub first_answered: Duration,
    pub last_sent: Duration,
    pub last_answered: Duration,
    pub accepts: usize,
}

impl AcceptWindow {
    /// Whether this window and `other` certainly overlap: each broker surely accepted once
    /// before the other's last accept could have happened. Probe round trips never make two
    /// disjoint windows look overlapping.
    pub fn overlaps(&self, other: &AcceptWindow) -> bool {
        self.first_answered <= other.last_sent && other.first_answered <= self.last_sent
    }
}

/// Probes every node's STOMP port concurrently until dropped.
pub struct AcceptProber {
    names: Vec<String>,
    accepts: Arc<Mutex<Vec<Accept>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl AcceptProber {
    /// Starts one probing thread per node (`name`, STOMP address).
    pub fn start(nodes: &[(String, SocketAddr)]) -> AcceptProber {
        let started = Instant::now();
        let accepts = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let threads = nodes
            .iter()
            .enumerate()
            .map(|(node, &(_, addr))| {
                let (accepts, stop) = (Arc::clone(&accepts), Arc::clone(&stop));
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let sent = started.elapsed();
                        if let Some(epoch) = probe(addr) {
                            let answered = started.elapsed();
                            lock(&accepts).push(Accept {
                                node,
                                epoch,
                                sent,
                                answered,
                            });
                        }
                        std::thread::sleep(PROBE_EVERY);
                    }
                })
            })
            .collect();
        AcceptProber {
            names: nodes.iter().map(|(name, _)| name.clone()).collect(),
            accepts,
            stop,
            threads,
        }
    }

    /// Every broker's accept window so far, by first accept.
    pub fn windows(&self) -> Vec<AcceptWindow> {
        windows(&lock(&self.accepts), &self.names)
    }

    /// Pairs of windows of different brokers that overlap: two brokers served at once.
    pub fn overlaps(&self) -> Vec<(AcceptWindow, AcceptWindow)> {
        overlaps(&self.windows())
    }

    /// Panics, listing every window, if two brokers' accept windows overlap.
    pub fn assert_one_active(&self) {
        let overlapping = self.overlaps();
        assert!(
            overlapping.is_empty(),
            "two brokers accepted STOMP CONNECTs at the same time: {overlapping:#?}\nall windows: {:#?}",
            self.windows()
        );
    }

    /// Every stretch longer than `min` in which no broker accepted a probe (between two
    /// accepts, by any broker), from the first accept on: the unavailability a client saw.
    pub fn outages(&self, min: Duration) -> Vec<Duration> {
        let mut times: Vec<Duration> = lock(&self.accepts).iter().map(|a| a.answered).collect();
        times.sort();
        times
            .windows(2)
            .map(|w| w[1] - w[0])
            .filter(|gap| *gap > min)
            .collect()
    }
}

impl Drop for AcceptProber {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// One probe: the epoch of the broker that answered CONNECTED at `addr`, if one did.
fn probe(addr: SocketAddr) -> Option<u64> {
    session_epoch(&crate::stomp_connect(addr, PROBE_TIMEOUT).ok()?)
}

/// The epoch in a CONNECTED frame's `session` header (`NODE-EPOCH-N`; the node name may hold
/// dashes itself).
fn session_epoch(frame: &str) -> Option<u64> {
    let mut lines = frame.lines();
    if lines.next()? != "CONNECTED" {
        return None;
    }
    let session = lines.find_map(|line| line.strip_prefix("session:"))?;
    let mut fields = session.rsplitn(3, '-');
    fields.next()?.parse::<u64>().ok()?;
    fields.next()?.parse().ok()
}

/// The accept windows of `accepts`, one per (node, epoch), by first accept.
fn windows(accepts: &[Accept], names: &[String]) -> Vec<AcceptWindow> {
    let mut by_broker: std::collections::BTreeMap<(usize, u64), AcceptWindow> =
        std::collections::BTreeMap::new();
    for a in accepts {
        let w = by_broker
            .entry((a.node, a.epoch))
            .or_insert_with(|| AcceptWindow {
                node: names[a.node].clone(),
                epoch: a.epoch,
                first_sent: a.sent,
                first_answered: a.answered,
                last_sent: a.sent,
                last_answered: a.answered,
                accepts: 0,
            });
        if a.sent < w.first_sent {
            (w.first_sent, w.first_answered) = (a.sent, a.answered);
        }
        if a.sent > w.last_sent {
            (w.last_sent, w.last_answered) = (a.sent, a.answered);
        }
        w.accepts += 1;
    }
    let mut windows: Vec<AcceptWindow> = by_broker.into_values().collect();
    windows.sort_by_key(|w| w.first_sent);
    windows
}

/// Pairs of `windows` (of different brokers) that overlap.
fn overlaps(windows: &[AcceptWindow]) -> Vec<(AcceptWindow, AcceptWindow)> {
    let mut pairs = Vec::new();
    for (i, a) in windows.iter().enumerate() {
        for b in &windows[i + 1..] {
            if a.overlaps(b) {
                pairs.push((a.clone(), b.clone()));
            }
        }
    }
    pairs
}

/// Locks the accept log even if a probing thread panicked while holding it.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn accept(node: usize, epoch: u64, sent: u64, answered: u64) -> Accept {
        Accept {
            node,
            epoch,
            sent: ms(sent),
            answered: ms(answered),
        }
    }

    #[test]
    fn the_epoch_comes_from_the_session_header() {
        let frame = "CONNECTED\nversion:1.2\nserver:brokerd/0.1\nsession:node-a-7-12\n";
        assert_eq!(session_epoch(frame), Some(7));
        assert_eq!(session_epoch("CONNECTED\nversion:1.2\n"), None);
        assert_eq!(session_epoch("ERROR\nsession:n-1-1\n"), None);
    }

    #[test]
    fn handovers_do_not_overlap_but_a_broker_that_serves_again_does() {
        let names = ["n1".to_string(), "n2".to_string()];
        // n1 (epoch 1) serves until 100 ms, n2 (epoch 2) from 150 ms.
        let mut log = vec![
            accept(0, 1, 0, 5),
            accept(0, 1, 95, 100),
            accept(1, 2, 150, 155),
            accept(1, 2, 300, 305),
        ];
        assert!(overlaps(&windows(&log, &names)).is_empty());
        // Probe round trips alone never make an overlap: n1's last answer came after n2's
        // first probe was sent, but n2 may have accepted it later.
        log.push(accept(0, 1, 140, 152));
        assert!(overlaps(&windows(&log, &names)).is_empty());
        // n1 (stopped, then resumed) accepts again at 400 ms, after n2 took over.
        log.push(accept(0, 1, 400, 401));
        let found = overlaps(&windows(&log, &names));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!((found[0].0.epoch, found[0].1.epoch), (1, 2));
    }

    #[test]
    fn a_restart_in_place_under_a_new_epoch_is_another_window() {
        let names = ["n1".to_string()];
        let log = [
            accept(0, 1, 0, 5),
            accept(0, 3, 50, 55),
            accept(0, 3, 90, 95),
        ];
        let found = windows(&log, &names);
        assert_eq!(found.len(), 2);
        assert!(overlaps(&found).is_empty());
    }
}
