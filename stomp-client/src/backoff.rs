//! The pause between passes over the address list, and when to give up: pure state, so the
//! sequence is unit-tested without clocks or sockets.
//!
//! As in ActiveMQ's failover transport, one *attempt* is one pass over every address; the first
//! pass after a lost connection starts at once, the pause after the first failed pass is
//! `initialReconnectDelay`, and each further failed pass multiplies it (with exponential
//! back-off) up to `maxReconnectDelay`.

use crate::url::ReconnectPolicy;
use std::time::Duration;

/// Back-off state for one outage (or the startup connection).
#[derive(Debug, Clone)]
pub struct Backoff {
    delay: Duration,
    failures: u32,
    limit: Option<u32>,
    max: Duration,
    multiplier: f64,
    exponential: bool,
}

impl Backoff {
    /// A fresh outage; `startup` selects `startupMaxReconnectAttempts` when it is set.
    pub fn new(policy: &ReconnectPolicy, startup: bool) -> Backoff {
        Backoff {
            delay: policy.initial_delay.min(policy.max_delay),
            failures: 0,
            limit: policy.attempt_limit(startup),
            max: policy.max_delay,
            multiplier: policy.multiplier,
            exponential: policy.exponential,
        }
    }

    /// Records a failed pass. Returns the pause before the next pass, or `None` when the
    /// attempt limit is reached (a limit of 0 still allows the one pass just made).
    pub fn failed(&mut self) -> Option<Duration> {
        self.failures = self.failures.saturating_add(1);
        if let Some(limit) = self.limit {
            if self.failures >= limit.max(1) {
                return None;
            }
        }
        let pause = self.delay;
        if self.exponential {
            self.delay = self.delay.mul_f64(self.multiplier).min(self.max);
        }
        Some(pause)
    }

    /// Failed passes so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(query: &str) -> ReconnectPolicy {
        format!("failover:(tcp://a:1)?{query}")
            .parse::<crate::url::FailoverUrl>()
            .unwrap()
            .reconnect
    }

    #[test]
    fn delays_double_up_to_the_maximum_and_never_exceed_it() {
        let mut b = Backoff::new(&policy("maxReconnectDelay=1000"), false);
        let delays: Vec<u64> = (0..12)
            .map(|_| b.failed().unwrap().as_millis() as u64)
            .collect();
        assert_eq!(
            delays,
            [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000, 1000, 1000]
        );
    }

    #[test]
    fn without_exponential_back_off_the_delay_is_constant() {
        let mut b = Backoff::new(
            &policy("useExponentialBackOff=false&initialReconnectDelay=50"),
            false,
        );
        for _ in 0..5 {
            assert_eq!(b.failed(), Some(Duration::from_millis(50)));
        }
    }

    #[test]
    fn attempt_limits_follow_activemq() {
        let mut b = Backoff::new(&policy("maxReconnectAttempts=3"), false);
        assert!(b.failed().is_some());
        assert!(b.failed().is_some());
        assert_eq!(b.failed(), None);
        assert_eq!(b.failures(), 3);
        // 0: one pass, no retry.
        assert_eq!(
            Backoff::new(&policy("maxReconnectAttempts=0"), false).failed(),
            None
        );
        // At startup the startup limit wins when set, otherwise maxReconnectAttempts applies.
        let p = policy("maxReconnectAttempts=5&startupMaxReconnectAttempts=1");
        assert_eq!(Backoff::new(&p, true).failed(), None);
        assert!(Backoff::new(&p, false).failed().is_some());
        let p = policy("maxReconnectAttempts=1");
        assert_eq!(Backoff::new(&p, true).failed(), None);
        // Forever by default.
        let mut b = Backoff::new(&ReconnectPolicy::default(), true);
        assert!((0..10_000).all(|_| b.failed().is_some()));
    }

    #[test]
    fn a_multiplier_below_one_is_refused_so_delays_cannot_shrink() {
        assert!("failover:(a:1)?backOffMultiplier=0.5"
            .parse::<crate::url::FailoverUrl>()
            .is_err());
    }
}
