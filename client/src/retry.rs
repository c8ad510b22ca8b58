//! Retry policy: exponential backoff with jitter, bounded by an attempt limit and an
//! overall deadline. Pure arithmetic plus a sleep; the loops that use it live with
//! their callers.

use std::time::Duration;

use tokio::time::Instant;

use crate::error::{Error, Result};

/// How retriable failures are retried. Every bound is named; units last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Wait before the second attempt (before jitter); doubles each attempt.
    pub backoff_initial: Duration,
    /// Upper bound of one wait (before jitter).
    pub backoff_max: Duration,
    /// Attempts in total, the first included; at least 1.
    pub attempts_max: u32,
    /// Bound on the whole operation, every attempt and wait included.
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            backoff_initial: Duration::from_millis(20),
            backoff_max: Duration::from_secs(1),
            attempts_max: 30,
            deadline: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The un-jittered wait after the `attempt`-th failure (1-based):
    /// `min(backoff_initial * 2^(attempt-1), backoff_max)`.
    pub fn base_backoff(&self, attempt: u32) -> Duration {
        let shift = attempt.saturating_sub(1).min(31);
        self.backoff_initial
            .checked_mul(1u32 << shift)
            .unwrap_or(self.backoff_max)
            .min(self.backoff_max)
    }

    /// The wait after the `attempt`-th failure with "equal jitter": uniformly in
    /// `[base/2, base]`, so that clients that failed together do not retry together,
    /// and the wait never drops below half the base. `unit` is a uniform sample in
    /// `[0, 1)`.
    pub fn backoff_with(&self, attempt: u32, unit: f64) -> Duration {
        let base = self.base_backoff(attempt);
        let half = base / 2;
        half + half.mul_f64(unit.clamp(0.0, 1.0))
    }

    /// [`RetryPolicy::backoff_with`] with a random sample.
    pub fn backoff(&self, attempt: u32) -> Duration {
        self.backoff_with(attempt, fastrand::f64())
    }
}

/// The state of one retried operation: counts attempts, enforces both bounds.
#[derive(Debug)]
pub(crate) struct Retry {
    policy: RetryPolicy,
    started: Instant,
    attempt: u32,
}

impl Retry {
    pub(crate) fn new(policy: RetryPolicy) -> Retry {
        Retry {
            policy,
            started: Instant::now(),
            attempt: 0,
        }
    }

    /// Time left before the deadline.
    pub(crate) fn remaining(&self) -> Duration {
        self.policy.deadline.saturating_sub(self.started.elapsed())
    }

    /// Called with a failed attempt's error: `Ok(())` after sleeping the backoff if
    /// another attempt is allowed, else the error to give up with.
    pub(crate) async fn failed(&mut self, err: Error) -> Result<()> {
        if !err.is_retriable() {
            self.attempt += 1;
            return Err(err);
        }
        // A throttled request waits as long as the broker asked (at least the backoff)
        // and does not count as a failed attempt: only the deadline bounds it.
        if let Some(delay) = err.throttle_delay() {
            let wait = delay.max(self.policy.base_backoff(1));
            if wait >= self.remaining() {
                return Err(Error::DeadlineExceeded {
                    deadline: self.policy.deadline,
                    last: Box::new(err),
                });
            }
            tracing::debug!(?wait, error = %err, "throttled");
            tokio::time::sleep(wait).await;
            return Ok(());
        }
        self.attempt += 1;
        if self.attempt >= self.policy.attempts_max.max(1) {
            return Err(Error::RetriesExhausted {
                attempts: self.attempt,
                last: Box::new(err),
            });
        }
        let wait = self.policy.backoff(self.attempt);
        if wait >= self.remaining() {
            return Err(Error::DeadlineExceeded {
                deadline: self.policy.deadline,
                last: Box::new(err),
            });
        }
        tracing::debug!(attempt = self.attempt, ?wait, error = %err, "retrying");
        tokio::time::sleep(wait).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_then_caps() {
        let p = RetryPolicy {
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_millis(100),
            attempts_max: 100,
            deadline: Duration::from_secs(60),
        };
        assert_eq!(p.base_backoff(1), Duration::from_millis(10));
        assert_eq!(p.base_backoff(2), Duration::from_millis(20));
        assert_eq!(p.base_backoff(4), Duration::from_millis(80));
        assert_eq!(p.base_backoff(5), Duration::from_millis(100));
        // Huge attempt numbers neither overflow nor exceed the cap.
        assert_eq!(p.base_backoff(u32::MAX), Duration::from_millis(100));
    }

    #[test]
    fn jitter_stays_within_half_and_full_base() {
        let p = RetryPolicy::default();
        for attempt in 1..40 {
            let base = p.base_backoff(attempt);
            assert_eq!(p.backoff_with(attempt, 0.0), base / 2);
            assert!(p.backoff_with(attempt, 0.999_999) <= base);
            let random = p.backoff(attempt);
            assert!(
                random >= base / 2 && random <= base,
                "{random:?} vs {base:?}"
            );
        }
    }

    fn retriable() -> Error {
        Error::LeaderNotAvailable {
            topic: "t".into(),
            partition: 0,
        }
    }

    #[tokio::test]
    async fn attempts_are_bounded() {
        let mut retry = Retry::new(RetryPolicy {
            backoff_initial: Duration::from_millis(1),
            attempts_max: 3,
            ..RetryPolicy::default()
        });
        assert!(retry.failed(retriable()).await.is_ok());
        assert!(retry.failed(retriable()).await.is_ok());
        match retry.failed(retriable()).await {
            Err(Error::RetriesExhausted { attempts: 3, .. }) => {}
            other => panic!("expected RetriesExhausted, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn deadline_is_bounded() {
        let mut retry = Retry::new(RetryPolicy {
            backoff_initial: Duration::from_millis(40),
            backoff_max: Duration::from_millis(40),
            attempts_max: 1000,
            deadline: Duration::from_millis(100),
        });
        let mut ok = 0;
        let err = loop {
            match retry.failed(retriable()).await {
                Ok(()) => ok += 1,
                Err(err) => break err,
            }
        };
        assert!(matches!(err, Error::DeadlineExceeded { .. }), "{err:?}");
        // Waits are at least 20 ms, so at most 4 of them fit in 100 ms (a slow machine
        // only makes fewer fit); the deadline, not the attempt limit, ended it.
        assert!(ok <= 4, "{ok}");
    }

    #[tokio::test]
    async fn fatal_errors_are_not_retried() {
        let mut retry = Retry::new(RetryPolicy::default());
        let err = retry
            .failed(Error::UnknownTopic { topic: "t".into() })
            .await
            .unwrap_err();
        assert!(matches!(err, Error::UnknownTopic { .. }));
    }
}
