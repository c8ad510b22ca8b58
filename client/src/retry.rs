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
    /// Attempts in total, the first included; at least 1. The quick retries of a call
    /// whose partition leader is moving ([`FAILOVER_BACKOFF_MAX`]) count one attempt
    /// per step of this policy's backoff, not one per retry, so that the policy gives
    /// up after about as long as it would have without them.
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

/// Upper bound of the wait before retrying a call whose partition leader is gone or
/// moving ([`Error::is_leader_failover`]), whatever the policy's backoff has grown to:
/// an election takes about a second (docs/raft.md, "Timing"), and a client that
/// waits up to `backoff_max` (1 s by default) after it would add up to that much to
/// every failover. Jittered like the policy's waits (in `[cap/2, cap]`). Each such
/// retry refreshes metadata first (the error marks it stale), so a client costs the
/// cluster at most about 1000 / 125 metadata requests per second and broker while a
/// partition it writes has no leader.
pub const FAILOVER_BACKOFF_MAX: Duration = Duration::from_millis(250);

/// How soon the next attempt goes after a failed one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pace {
    /// The policy's exponential backoff.
    Backoff,
    /// The policy's backoff, at most [`FAILOVER_BACKOFF_MAX`]: the leader is gone or
    /// moving and the cache does not name another one yet.
    Failover,
    /// At once: the cache names another leader than the one that just failed (a
    /// `NotLeader` hint, or metadata that already moved on).
    Now,
}

/// How many attempts in a row may go at once ([`Pace::Now`]) before the next one waits
/// (bounds a ping-pong between two nodes that each name the other as leader).
pub(crate) const IMMEDIATE_RETRIES_MAX: u32 = 2;

/// The pace of the next attempt after `err`, a failed call to `failed_at`, given the
/// leader the cache names now (after the error was applied to it: a hint, or `None`
/// when it is stale or names no leader) and how many attempts in a row already went
/// at once.
pub(crate) fn pace_after(
    err: &Error,
    failed_at: &str,
    leader_now: Option<&str>,
    immediate_in_a_row: u32,
) -> Pace {
    if !err.is_leader_failover() || err.throttle_delay().is_some() {
        return Pace::Backoff;
    }
    match leader_now {
        Some(leader) if leader != failed_at && immediate_in_a_row < IMMEDIATE_RETRIES_MAX => {
            Pace::Now
        }
        _ => Pace::Failover,
    }
}

/// The state of one retried operation: counts attempts, enforces both bounds.
#[derive(Debug)]
pub(crate) struct Retry {
    policy: RetryPolicy,
    started: Instant,
    attempt: u32,
    /// When `attempt` was last counted.
    counted_at: Instant,
}

impl Retry {
    pub(crate) fn new(policy: RetryPolicy) -> Retry {
        let now = Instant::now();
        Retry {
            policy,
            started: now,
            attempt: 0,
            counted_at: now,
        }
    }

    /// Time left before the deadline.
    pub(crate) fn remaining(&self) -> Duration {
        self.policy.deadline.saturating_sub(self.started.elapsed())
    }

    /// Called with a failed attempt's error: `Ok(())` after sleeping the backoff if
    /// another attempt is allowed, else the error to give up with.
    pub(crate) async fn failed(&mut self, err: Error) -> Result<()> {
        self.failed_paced(err, Pace::Backoff).await
    }

    /// [`Retry::failed`] with the wait chosen by `pace` (see [`pace_after`]). Every
    /// attempt counts against the deadline; a [`Pace::Failover`] one counts against
    /// `attempts_max` only once the policy's own wait for the last counted attempt
    /// (its lower, jittered bound) has passed since that one ([`counts_as_attempt`]).
    pub(crate) async fn failed_paced(&mut self, err: Error, pace: Pace) -> Result<()> {
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
        let now = Instant::now();
        let since = now.saturating_duration_since(self.counted_at);
        if counts_as_attempt(&self.policy, self.attempt, pace, since) {
            self.attempt += 1;
            self.counted_at = now;
            if self.attempt >= self.policy.attempts_max.max(1) {
                return Err(Error::RetriesExhausted {
                    attempts: self.attempt,
                    last: Box::new(err),
                });
            }
        }
        let wait = wait_for(&self.policy, self.attempt.max(1), pace, fastrand::f64());
        if wait >= self.remaining() {
            return Err(Error::DeadlineExceeded {
                deadline: self.policy.deadline,
                last: Box::new(err),
            });
        }
        tracing::debug!(attempt = self.attempt, ?wait, ?pace, error = %err, "retrying");
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }
}

/// Whether a failure at `pace`, `since` the last counted attempt (the `attempt`-th; 0:
/// none yet), counts as an attempt: always, but for a [`Pace::Failover`] one that comes
/// before the policy's mean wait after the `attempt`-th failure (3/4 of its base) has
/// passed: those quick retries share the attempt of their backoff step.
fn counts_as_attempt(policy: &RetryPolicy, attempt: u32, pace: Pace, since: Duration) -> bool {
    match pace {
        Pace::Failover => attempt == 0 || since >= policy.base_backoff(attempt) * 3 / 4,
        Pace::Backoff | Pace::Now => true,
    }
}

/// The wait after the `attempt`-th failure at `pace` (`unit`: a uniform sample in
/// `[0, 1)`).
fn wait_for(policy: &RetryPolicy, attempt: u32, pace: Pace, unit: f64) -> Duration {
    match pace {
        Pace::Backoff => policy.backoff_with(attempt, unit),
        Pace::Failover => {
            let capped = RetryPolicy {
                backoff_max: policy.backoff_max.min(FAILOVER_BACKOFF_MAX),
                ..*policy
            };
            capped.backoff_with(attempt, unit)
        }
        Pace::Now => Duration::ZERO,
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

    #[test]
    fn failover_waits_are_capped_and_now_does_not_wait() {
        let p = RetryPolicy {
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_secs(1),
            attempts_max: 100,
            deadline: Duration::from_secs(60),
        };
        for attempt in 1..40 {
            for unit in [0.0, 0.5, 0.999_999] {
                let normal = wait_for(&p, attempt, Pace::Backoff, unit);
                let failover = wait_for(&p, attempt, Pace::Failover, unit);
                assert_eq!(normal, p.backoff_with(attempt, unit));
                assert!(failover <= FAILOVER_BACKOFF_MAX, "{attempt}: {failover:?}");
                assert!(failover <= normal, "{attempt}: {failover:?} > {normal:?}");
                assert!(failover >= (p.base_backoff(attempt) / 2).min(FAILOVER_BACKOFF_MAX / 2));
                assert_eq!(wait_for(&p, attempt, Pace::Now, unit), Duration::ZERO);
            }
        }
        // Late attempts of a long outage: the policy has grown to its 1 s cap, a
        // failover retry still comes back within the failover cap.
        assert_eq!(p.base_backoff(10), Duration::from_secs(1));
        assert_eq!(
            wait_for(&p, 10, Pace::Failover, 0.999_999).max(FAILOVER_BACKOFF_MAX),
            FAILOVER_BACKOFF_MAX
        );
        // A policy with a smaller cap keeps it.
        let small = RetryPolicy {
            backoff_max: Duration::from_millis(40),
            ..p
        };
        assert!(wait_for(&small, 10, Pace::Failover, 0.999_999) <= Duration::from_millis(40));
    }

    #[test]
    fn pace_goes_at_once_only_to_another_leader_and_not_forever() {
        let refused = Error::from(neo_protocol::Error::Connect {
            addr: "a:1".into(),
            attempts: 1,
            last: "connection refused".into(),
        });
        let not_leader = Error::from(neo_protocol::Error::Rpc(
            neo_protocol::RpcError::not_leader(Some("b:1")),
        ));
        let busy = Error::from(neo_protocol::Error::Rpc(neo_protocol::RpcError::new(
            neo_protocol::ErrorCode::Busy,
            "busy",
        )));
        // The cache names another leader: go now, but not more than twice in a row.
        assert_eq!(pace_after(&not_leader, "a:1", Some("b:1"), 0), Pace::Now);
        assert_eq!(pace_after(&refused, "a:1", Some("b:1"), 1), Pace::Now);
        assert_eq!(
            pace_after(&not_leader, "a:1", Some("b:1"), IMMEDIATE_RETRIES_MAX),
            Pace::Failover
        );
        // Same (dead) leader, or none known yet: an election is on, come back soon.
        assert_eq!(pace_after(&refused, "a:1", Some("a:1"), 0), Pace::Failover);
        assert_eq!(pace_after(&refused, "a:1", None, 0), Pace::Failover);
        // Not a leader problem: the policy's backoff, even if the cache moved.
        assert_eq!(pace_after(&busy, "a:1", Some("b:1"), 0), Pace::Backoff);
        let timeout = Error::from(neo_protocol::Error::Timeout {
            after: Duration::from_secs(7),
        });
        assert_eq!(pace_after(&timeout, "a:1", None, 0), Pace::Backoff);
    }

    #[tokio::test]
    async fn paced_attempts_still_count() {
        let mut retry = Retry::new(RetryPolicy {
            backoff_initial: Duration::from_millis(1),
            attempts_max: 2,
            ..RetryPolicy::default()
        });
        assert!(retry.failed_paced(retriable(), Pace::Now).await.is_ok());
        // The failover wait (>= 0.5 ms) is past 3/4 of the 1 ms base: counted.
        tokio::time::sleep(Duration::from_millis(2)).await;
        match retry.failed_paced(retriable(), Pace::Failover).await {
            Err(Error::RetriesExhausted { attempts: 2, .. }) => {}
            other => panic!("expected RetriesExhausted, got {other:?}"),
        }
        // A single attempt allowed: the first failure ends it, whatever its pace.
        let mut once = Retry::new(RetryPolicy {
            attempts_max: 1,
            ..RetryPolicy::default()
        });
        assert!(matches!(
            once.failed_paced(retriable(), Pace::Failover).await,
            Err(Error::RetriesExhausted { attempts: 1, .. })
        ));
    }

    #[test]
    fn quick_failover_retries_share_their_backoff_step() {
        let p = RetryPolicy {
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            attempts_max: 30,
            deadline: Duration::from_secs(30),
        };
        let ms = Duration::from_millis;
        // The first failure always counts.
        assert!(counts_as_attempt(&p, 0, Pace::Failover, Duration::ZERO));
        // After the 4th (base 800 ms): a retry 250 ms later is free, one 600 ms later counts.
        assert!(!counts_as_attempt(&p, 4, Pace::Failover, ms(250)));
        assert!(counts_as_attempt(&p, 4, Pace::Failover, ms(600)));
        // Other paces always count.
        assert!(counts_as_attempt(&p, 4, Pace::Backoff, ms(1)));
        assert!(counts_as_attempt(&p, 4, Pace::Now, ms(1)));
    }

    #[test]
    fn failover_retries_give_up_about_as_late_as_the_policy() {
        // The policy alone: 10 attempts wait at least 50+100+200+400+500*5 ms = 3.25 s.
        let p = RetryPolicy {
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            attempts_max: 10,
            deadline: Duration::from_secs(600),
        };
        // What `failed_paced` does at `Pace::Failover`, on a virtual clock.
        let (mut now, mut counted_at, mut attempt, mut retries) =
            (Duration::ZERO, Duration::ZERO, 0u32, 0u32);
        loop {
            if counts_as_attempt(&p, attempt, Pace::Failover, now - counted_at) {
                attempt += 1;
                counted_at = now;
                if attempt >= p.attempts_max {
                    break;
                }
            }
            let wait = wait_for(&p, attempt.max(1), Pace::Failover, 0.999);
            assert!(wait <= FAILOVER_BACKOFF_MAX, "{wait:?}");
            now += wait;
            retries += 1;
        }
        assert!(now >= Duration::from_millis(3_250), "gave up after {now:?}");
        assert!(
            retries > 2 * p.attempts_max,
            "quick retries in between: {retries}"
        );
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
