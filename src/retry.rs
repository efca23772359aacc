//! When to send a failed batch again, and after how long: pure, so it is tested without a clock.
//!
//! Retriable errors (connection lost, timeouts, `Neo.TransientError.*`) are retried with
//! exponential backoff, capped, with jitter so that several writers hitting the same deadlock do
//! not retry in lock step. There is no attempt limit: while the database is down the writer keeps
//! trying and the pending bound pushes back on the orchestrator. Only a shutdown deadline stops
//! it. Permanent errors are not retried; the writer isolates the rows that cause them.

use std::time::{Duration, Instant};

use crate::error::StoreError;

/// Default first retry delay.
pub const DEFAULT_RETRY_INITIAL: Duration = Duration::from_millis(50);
/// Default cap on the retry delay.
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(2);

/// Exponential backoff with a cap and jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    initial: Duration,
    max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial: DEFAULT_RETRY_INITIAL,
            max: DEFAULT_RETRY_MAX,
        }
    }
}

impl RetryPolicy {
    /// A policy whose delays start at `initial` and double up to `max`, taken as given:
    /// [`AggregatorConfigBuilder::build`](crate::AggregatorConfigBuilder::build) refuses a zero
    /// `initial` or a `max` below it with [`ConfigError::Invalid`](crate::ConfigError::Invalid)
    /// naming `retry`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self { initial, max }
    }

    /// The first delay.
    pub fn initial(&self) -> Duration {
        self.initial
    }

    /// The largest delay.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The delay before retry number `attempt` (0 for the first retry), given `jitter` in
    /// `[0, 1)`: between half and all of `min(max, initial * 2^attempt)`.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let factor = 2u32.saturating_pow(attempt.min(31));
        let ceiling = self.initial.saturating_mul(factor).min(self.max);
        ceiling.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }
}

/// What to do after a failed write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Send the same batch again after this delay.
    Retry(Duration),
    /// Stop: the error is permanent, or the shutdown deadline leaves no time.
    GiveUp,
}

/// Decides whether to retry `error` after `attempt` earlier retries.
pub(crate) fn decide(
    policy: &RetryPolicy,
    error: &StoreError,
    attempt: u32,
    jitter: f64,
    now: Instant,
    deadline: Option<Instant>,
) -> Decision {
    if !error.is_retriable() {
        return Decision::GiveUp;
    }
    let delay = policy.delay(attempt, jitter);
    match deadline {
        Some(deadline) if now + delay >= deadline => Decision::GiveUp,
        _ => Decision::Retry(delay),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transient() -> StoreError {
        StoreError::timeout(Duration::from_secs(1))
    }

    #[test]
    fn delays_double_up_to_the_cap() {
        let p = RetryPolicy::new(Duration::from_millis(100), Duration::from_secs(1));
        let full: Vec<_> = (0..6).map(|a| p.delay(a, 1.0)).collect();
        assert_eq!(
            full,
            [100, 200, 400, 800, 1000, 1000].map(Duration::from_millis)
        );
        assert_eq!(p.delay(40, 1.0), Duration::from_secs(1), "no overflow");
    }

    #[test]
    fn jitter_keeps_delays_between_half_and_full() {
        let p = RetryPolicy::new(Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(p.delay(1, 0.0), Duration::from_millis(100));
        assert_eq!(p.delay(1, 0.5), Duration::from_millis(150));
    }

    #[test]
    fn permanent_errors_are_not_retried() {
        let p = RetryPolicy::default();
        let orphan = StoreError::orphaned(1, 1);
        assert_eq!(
            decide(&p, &orphan, 0, 0.5, Instant::now(), None),
            Decision::GiveUp
        );
    }

    #[test]
    fn transient_errors_are_retried_without_limit_until_a_deadline() {
        let p = RetryPolicy::default();
        let now = Instant::now();
        assert!(matches!(
            decide(&p, &transient(), 1000, 0.5, now, None),
            Decision::Retry(_)
        ));
        let soon = now + Duration::from_millis(10);
        assert_eq!(
            decide(&p, &transient(), 5, 0.5, now, Some(soon)),
            Decision::GiveUp
        );
    }
}
