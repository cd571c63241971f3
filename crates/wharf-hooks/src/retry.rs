//! The retry policy: a small pure function of the attempt number, with jitter and a bounded
//! `Retry-After`.

use std::time::Duration;

/// ACR tries once; Wharf retries on a schedule like Standard Webhooks' recommendation,
/// capped at eight attempts: at once, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
pub const DEFAULT_SCHEDULE: &[u64] = &[0, 5, 300, 1800, 7200, 18000, 36000, 36000];

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Delay before each attempt, in seconds; its length is the number of attempts.
    pub schedule: Vec<u64>,
    /// Jitter as a fraction of the delay (0.2 = ±20 %), so retries of many deliveries that
    /// failed together do not arrive together.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            schedule: DEFAULT_SCHEDULE.to_vec(),
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    pub fn max_attempts(&self) -> usize {
        self.schedule.len().max(1)
    }

    /// The delay before the next attempt after `attempt` (1-based) failed, or None when the
    /// attempts are used up. `rand01` is a uniform random number in [0, 1) (a parameter so the
    /// function stays pure and testable). A `Retry-After` from the receiver is honoured but
    /// clamped to [scheduled delay, twice the scheduled delay + 60 s], so a receiver can slow
    /// retries down but neither speed them up nor park them forever.
    pub fn next_delay(
        &self,
        attempt: usize,
        retry_after: Option<Duration>,
        rand01: f64,
    ) -> Option<Duration> {
        let base = *self.schedule.get(attempt)?;
        let base = Duration::from_secs(base);
        let jittered = if base.is_zero() {
            base
        } else {
            let f = 1.0 + self.jitter * (2.0 * rand01 - 1.0);
            base.mul_f64(f.max(0.0))
        };
        Some(match retry_after {
            Some(ra) => ra.clamp(jittered, base * 2 + Duration::from_secs(60)),
            None => jittered,
        })
    }
}

/// Parses a `Retry-After` value given in seconds (the HTTP-date form is rare from webhook
/// receivers and is ignored).
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_table() {
        let p = RetryPolicy::default();
        let s = |n| p.next_delay(n, None, 0.5).map(|d| d.as_secs());
        // rand01 = 0.5 means no jitter.
        assert_eq!(s(1), Some(5));
        assert_eq!(s(2), Some(300));
        assert_eq!(s(3), Some(1800));
        assert_eq!(s(4), Some(7200));
        assert_eq!(s(5), Some(18000));
        assert_eq!(s(6), Some(36000));
        assert_eq!(s(7), Some(36000));
        assert_eq!(s(8), None, "eight attempts, then failed");
        assert_eq!(p.max_attempts(), 8);
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let p = RetryPolicy::default();
        let lo = p.next_delay(2, None, 0.0).unwrap().as_secs_f64();
        let hi = p.next_delay(2, None, 0.999_999).unwrap().as_secs_f64();
        assert!((239.9..=240.1).contains(&lo), "{lo}");
        assert!((359.0..=360.1).contains(&hi), "{hi}");
    }

    #[test]
    fn retry_after_is_clamped() {
        let p = RetryPolicy::default();
        let d = |ra| {
            p.next_delay(1, Some(Duration::from_secs(ra)), 0.5)
                .unwrap()
                .as_secs()
        };
        assert_eq!(d(1), 5, "cannot speed retries up");
        assert_eq!(d(30), 30, "can slow them down");
        assert_eq!(d(100_000), 70, "but not park them");
        assert_eq!(parse_retry_after(" 12 "), Some(Duration::from_secs(12)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn custom_schedule() {
        let p = RetryPolicy {
            schedule: vec![0, 1],
            jitter: 0.0,
        };
        assert_eq!(p.next_delay(1, None, 0.3), Some(Duration::from_secs(1)));
        assert_eq!(p.next_delay(2, None, 0.3), None);
    }
}
