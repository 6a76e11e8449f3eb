//! Exponential backoff with jitter, used between retries of polls and reports.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

/// An exponential schedule: `initial * 2^n`, capped at `max`, then jittered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    /// Retries of reports and polls while a server restarts: quick first retries, then no
    /// more than one request every 5 s per in-flight call so a recovering server is not
    /// swamped by every worker at once.
    pub const RETRY: Backoff = Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(5),
    };

    /// The wait before retry number `retry` (0-based), with a random `unit` in `[0, 1)`.
    ///
    /// "Equal jitter": the wait is uniformly spread over the upper half of the exponential
    /// value, so many workers failing together spread out, yet none retries immediately.
    pub fn delay(&self, retry: u32, unit: f64) -> Duration {
        // 2^31 already exceeds any sane cap; clamping avoids overflow in the shift.
        let factor = 1u32 << retry.min(31);
        let exp = self.initial.saturating_mul(factor).min(self.max);
        let half = exp / 2;
        half + half.mul_f64(unit.clamp(0.0, 1.0))
    }

    /// [`Backoff::delay`] with fresh randomness.
    pub fn delay_random(&self, retry: u32) -> Duration {
        self.delay(retry, random_unit())
    }
}

/// A uniform-ish value in `[0, 1)`. Jitter needs no quality randomness, only values that
/// differ between processes and calls; `RandomState` is randomly keyed per instance, which
/// gives exactly that without a `rand` dependency.
fn random_unit() -> f64 {
    let bits = RandomState::new().hash_one(std::time::Instant::now());
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Backoff = Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(5),
    };

    #[test]
    fn doubles_from_initial_until_the_cap() {
        assert_eq!(B.delay(0, 1.0), Duration::from_millis(100));
        assert_eq!(B.delay(1, 1.0), Duration::from_millis(200));
        assert_eq!(B.delay(5, 1.0), Duration::from_millis(3200));
        assert_eq!(B.delay(6, 1.0), Duration::from_secs(5));
        assert_eq!(B.delay(u32::MAX, 1.0), Duration::from_secs(5));
    }

    #[test]
    fn jitter_spans_the_upper_half() {
        assert_eq!(B.delay(2, 0.0), Duration::from_millis(200));
        assert_eq!(B.delay(2, 0.5), Duration::from_millis(300));
        // Out-of-range randomness is clamped rather than trusted.
        assert_eq!(B.delay(2, 7.0), Duration::from_millis(400));
        assert_eq!(B.delay(2, -1.0), Duration::from_millis(200));
    }

    #[test]
    fn random_delays_stay_in_range() {
        for retry in 0..10 {
            let d = B.delay_random(retry);
            assert!(
                d >= B.delay(retry, 0.0) && d <= B.delay(retry, 1.0),
                "{d:?}"
            );
        }
    }
}
