//! The scheduler's clock: wall-clock milliseconds, and the instant at which one comes.
//!
//! Due times are wall-clock times (ms since the Unix epoch), so they mean the same to the next
//! broker after a failover. A test can run the clock faster (`--test-scheduler-clock-rate`) to
//! see cron minutes pass in seconds; production runs it at rate 1.

use std::time::Duration;
use tokio::time::Instant;

/// Wall-clock time as the scheduler sees it.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
    origin_ms: u64,
    rate: u32,
}

impl Clock {
    /// Wall-clock time, `rate` times as fast from now on (1: real time).
    pub fn new(rate: u32) -> Clock {
        Clock {
            origin: Instant::now(),
            origin_ms: shared_proto::unix_ms(),
            rate: rate.max(1),
        }
    }

    /// Now, in ms since the Unix epoch.
    pub fn now(&self) -> u64 {
        let elapsed = self.origin.elapsed().as_millis() as u64;
        self.origin_ms + elapsed * u64::from(self.rate)
    }

    /// The instant at which the clock reads `ms` (now, if that has passed).
    pub fn instant_of(&self, ms: u64) -> Instant {
        let ahead = ms.saturating_sub(self.origin_ms) / u64::from(self.rate);
        self.origin + Duration::from_millis(ahead)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_faster_clock_reaches_a_time_sooner() {
        let clock = Clock::new(60);
        let start = clock.now();
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(clock.now() - start, 60_000);
        let minute_on = clock.instant_of(start + 120_000);
        assert_eq!(minute_on - clock.origin, Duration::from_secs(2));
    }
}
