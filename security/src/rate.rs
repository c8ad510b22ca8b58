//! Rate limits: token buckets per principal and per client IP, with time passed in.
//!
//! # Buckets
//! A [`TokenBucket`] refills at `rate` units per second up to a burst of `rate × burst
//! window`; it is kept as one number, the GCRA "theoretical arrival time", so a check
//! is a few integer operations and an idle bucket (whose time is past) is the same as a
//! full one and can be dropped. A request costing more than a whole burst (a large
//! produce) is admitted when the bucket is full and leaves the bucket in debt, so it is
//! never refused forever; the requests after it wait the debt off.
//!
//! # Limits
//! Three per key ([`LimitKind`]): produce bytes/s, fetch bytes/s, requests/s. Keys are
//! the authenticated principal or, before authentication and for anonymous requests,
//! the client IP. Requests from inside the node are never limited.
//!
//! An over-limit request gets [`SecurityError::Throttled`] with the delay after which
//! the same request would pass: the answer to send (Kafka-style throttle time), never a
//! reason to close the connection.
//!
//! Not `governor`: its clocks are its own and its state is shared atomics; here time is
//! an argument (deterministic tests, the node's clock at the edge) and the state is a
//! plain map the caller owns, which takes less code than adapting a crate.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::context::SecurityContext;
use crate::error::SecurityError;
use crate::limits::{QUOTA_OVERRIDES_MAX, RATE_BURST_MS_MAX, RATE_KEYS_TRACKED_MAX};

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Which limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LimitKind {
    /// Bytes produced per second.
    ProduceBytes,
    /// Bytes fetched per second.
    FetchBytes,
    /// Requests per second.
    Requests,
}

impl LimitKind {
    const ALL: [LimitKind; 3] = [
        LimitKind::ProduceBytes,
        LimitKind::FetchBytes,
        LimitKind::Requests,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for LimitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LimitKind::ProduceBytes => "produce bytes/s",
            LimitKind::FetchBytes => "fetch bytes/s",
            LimitKind::Requests => "requests/s",
        })
    }
}

/// A token bucket (GCRA form).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucket {
    rate_per_sec: u64,
    /// The burst window: how far ahead of now the arrival time may run.
    tolerance_nanos: u64,
    /// When the bucket would be full again (theoretical arrival time).
    tat_nanos: u64,
}

impl TokenBucket {
    /// `rate_per_sec` (> 0) units per second, bursts of `rate × burst`.
    pub fn new(rate_per_sec: u64, burst: Duration) -> TokenBucket {
        assert!(rate_per_sec > 0, "a bucket needs a positive rate");
        TokenBucket {
            rate_per_sec,
            tolerance_nanos: u64::try_from(burst.as_nanos()).unwrap_or(u64::MAX),
            tat_nanos: 0,
        }
    }

    fn cost_nanos(&self, cost: u64) -> u64 {
        let nanos = (cost as u128 * NANOS_PER_SEC).div_ceil(self.rate_per_sec as u128);
        u64::try_from(nanos).unwrap_or(u64::MAX)
    }

    /// Take `cost` units at `now`, or say how long until the same request would pass.
    pub fn try_take(&mut self, cost: u64, now: Duration) -> Result<(), Duration> {
        let now = u64::try_from(now.as_nanos()).unwrap_or(u64::MAX);
        let tat = self.tat_nanos.max(now);
        let debt = tat - now;
        let cost = self.cost_nanos(cost);
        let oversized = cost > self.tolerance_nanos;
        let admit = if oversized {
            debt == 0
        } else {
            debt + cost <= self.tolerance_nanos
        };
        if admit {
            self.tat_nanos = tat.saturating_add(cost);
            Ok(())
        } else if oversized {
            Err(Duration::from_nanos(debt))
        } else {
            Err(Duration::from_nanos(debt + cost - self.tolerance_nanos))
        }
    }

    /// Take `cost` units at `now` whatever the bucket holds (the bucket goes into
    /// debt): for costs known only after the work is done, such as the bytes a fetch
    /// returned. Later requests wait the debt off.
    pub fn charge(&mut self, cost: u64, now: Duration) {
        let now = u64::try_from(now.as_nanos()).unwrap_or(u64::MAX);
        self.tat_nanos = self
            .tat_nanos
            .max(now)
            .saturating_add(self.cost_nanos(cost));
    }

    /// Whether the bucket is full at `now` (and so may be forgotten).
    pub fn is_full(&self, now: Duration) -> bool {
        u128::from(self.tat_nanos) <= now.as_nanos()
    }
}

/// Rates for one key, and its concurrent connections; `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Quota {
    /// Produce bytes per second.
    pub produce_bytes_per_sec: Option<u64>,
    /// Fetch bytes per second.
    pub fetch_bytes_per_sec: Option<u64>,
    /// Requests per second.
    pub requests_per_sec: Option<u64>,
    /// Concurrent authenticated connections on one node (not a rate: a count, checked
    /// at the handshake; see [`crate::connections::ConnectionCounts`]).
    pub connections: Option<u64>,
}

/// The layout of [`Quota`] before the `connections` limit, as older metadata logs and
/// snapshots hold it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct QuotaV1 {
    /// Produce bytes per second.
    pub produce_bytes_per_sec: Option<u64>,
    /// Fetch bytes per second.
    pub fetch_bytes_per_sec: Option<u64>,
    /// Requests per second.
    pub requests_per_sec: Option<u64>,
}

impl From<QuotaV1> for Quota {
    fn from(v: QuotaV1) -> Quota {
        Quota {
            produce_bytes_per_sec: v.produce_bytes_per_sec,
            fetch_bytes_per_sec: v.fetch_bytes_per_sec,
            requests_per_sec: v.requests_per_sec,
            connections: None,
        }
    }
}

impl Quota {
    /// The rate for `kind`.
    pub fn rate(&self, kind: LimitKind) -> Option<u64> {
        match kind {
            LimitKind::ProduceBytes => self.produce_bytes_per_sec,
            LimitKind::FetchBytes => self.fetch_bytes_per_sec,
            LimitKind::Requests => self.requests_per_sec,
        }
    }

    fn set(&mut self, kind: LimitKind, rate: Option<u64>) {
        match kind {
            LimitKind::ProduceBytes => self.produce_bytes_per_sec = rate,
            LimitKind::FetchBytes => self.fetch_bytes_per_sec = rate,
            LimitKind::Requests => self.requests_per_sec = rate,
        }
    }

    fn validate(&self) -> Result<(), SecurityError> {
        for kind in LimitKind::ALL {
            if self.rate(kind) == Some(0) {
                return Err(SecurityError::Invalid {
                    what: "quota",
                    value: kind.to_string(),
                    reason: "a rate must be positive (leave it unset for no limit)",
                });
            }
        }
        if self.connections == Some(0) {
            return Err(SecurityError::Invalid {
                what: "quota",
                value: "connections".to_string(),
                reason: "a connection limit must be positive (leave it unset for no limit)",
            });
        }
        Ok(())
    }
}

/// Quotas: defaults and overrides (metadata-group state).
///
/// A principal's rate for each limit is its own override's, if it sets that limit; else
/// the most generous among its roles' overrides that set it; else the default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaConfig {
    /// For authenticated principals without an override.
    pub principal_default: Quota,
    /// Per principal.
    pub per_principal: BTreeMap<String, Quota>,
    /// Per role.
    pub per_role: BTreeMap<String, Quota>,
    /// For each client IP, before authentication and for anonymous requests; its
    /// `connections` counts every connection from the address that reaches the
    /// handshake, checked before the credential.
    pub per_ip: Quota,
    /// The burst window: each bucket holds `rate × burst_ms / 1000` units.
    pub burst_ms: u64,
}

impl Default for QuotaConfig {
    fn default() -> QuotaConfig {
        QuotaConfig {
            principal_default: Quota::default(),
            per_principal: BTreeMap::new(),
            per_role: BTreeMap::new(),
            per_ip: Quota::default(),
            burst_ms: 1_000,
        }
    }
}

/// The layout of [`QuotaConfig`] before the `connections` limit (older snapshots).
#[derive(Debug, Clone, Deserialize)]
pub struct QuotaConfigV1 {
    principal_default: QuotaV1,
    per_principal: BTreeMap<String, QuotaV1>,
    per_role: BTreeMap<String, QuotaV1>,
    per_ip: QuotaV1,
    burst_ms: u64,
}

impl From<QuotaConfigV1> for QuotaConfig {
    fn from(v: QuotaConfigV1) -> QuotaConfig {
        let map =
            |m: BTreeMap<String, QuotaV1>| m.into_iter().map(|(k, q)| (k, q.into())).collect();
        QuotaConfig {
            principal_default: v.principal_default.into(),
            per_principal: map(v.per_principal),
            per_role: map(v.per_role),
            per_ip: v.per_ip.into(),
            burst_ms: v.burst_ms,
        }
    }
}

impl QuotaConfig {
    /// Check every quota and the burst window.
    pub fn validate(&self) -> Result<(), SecurityError> {
        if self.burst_ms == 0 || self.burst_ms > RATE_BURST_MS_MAX {
            return Err(SecurityError::Invalid {
                what: "burst window (ms)",
                value: self.burst_ms.to_string(),
                reason: "must be 1..=RATE_BURST_MS_MAX",
            });
        }
        for name in self.per_principal.keys() {
            crate::error::check_name("principal", name)?;
        }
        for name in self.per_role.keys() {
            crate::error::check_name("role", name)?;
        }
        if self.per_principal.len() + self.per_role.len() > QUOTA_OVERRIDES_MAX {
            return Err(SecurityError::LimitExceeded {
                what: "quota overrides (per principal and per role)",
                max: QUOTA_OVERRIDES_MAX,
            });
        }
        std::iter::once(&self.principal_default)
            .chain(std::iter::once(&self.per_ip))
            .chain(self.per_principal.values())
            .chain(self.per_role.values())
            .try_for_each(Quota::validate)
    }

    /// The quota of `principal` holding `roles`.
    pub fn resolve(&self, principal: &str, roles: &[String]) -> Quota {
        let own = self.per_principal.get(principal);
        let mut quota = Quota::default();
        for kind in LimitKind::ALL {
            let rate = own
                .and_then(|q| q.rate(kind))
                .or_else(|| {
                    roles
                        .iter()
                        .filter_map(|r| self.per_role.get(r)?.rate(kind))
                        .max()
                })
                .or(self.principal_default.rate(kind));
            quota.set(kind, rate);
        }
        quota.connections = own
            .and_then(|q| q.connections)
            .or_else(|| {
                roles
                    .iter()
                    .filter_map(|r| self.per_role.get(r)?.connections)
                    .max()
            })
            .or(self.principal_default.connections);
        quota
    }
}

/// Whether a request is admitted only within its limit, or charged regardless.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Take,
    Charge,
}

#[derive(Debug, Clone)]
struct Buckets([Option<TokenBucket>; 3]);

impl Buckets {
    /// `None` when the quota limits nothing (nothing to track).
    fn new(quota: &Quota, burst: Duration) -> Option<Buckets> {
        let buckets =
            LimitKind::ALL.map(|kind| quota.rate(kind).map(|r| TokenBucket::new(r, burst)));
        buckets
            .iter()
            .any(Option::is_some)
            .then_some(Buckets(buckets))
    }

    fn is_full(&self, now: Duration) -> bool {
        self.0.iter().flatten().all(|b| b.is_full(now))
    }

    fn take(
        &mut self,
        kind: LimitKind,
        cost: u64,
        now: Duration,
        mode: Mode,
    ) -> Result<(), SecurityError> {
        let Some(bucket) = self.0[kind.index()].as_mut() else {
            return Ok(());
        };
        if mode == Mode::Charge {
            bucket.charge(cost, now);
            return Ok(());
        }
        bucket
            .try_take(cost, now)
            .map_err(|wait| SecurityError::Throttled {
                limit: kind,
                retry_after_ms: u64::try_from(wait.as_nanos().div_ceil(1_000_000))
                    .unwrap_or(u64::MAX)
                    .max(1),
            })
    }
}

/// The buckets of every active principal and client IP.
///
/// A known key costs one hash lookup and no allocation; a key's quota is resolved when
/// its buckets are made. At most [`RATE_KEYS_TRACKED_MAX`] keys are tracked: past it,
/// full buckets are dropped (a full bucket is the same as a new one), and if that frees
/// nothing, new principals share one overflow bucket set at the default quota and new
/// IPs one at the per-IP quota.
#[derive(Debug, Clone, Default)]
pub struct RateLimiter {
    config: QuotaConfig,
    principals: HashMap<String, Buckets>,
    ips: HashMap<IpAddr, Buckets>,
    principal_overflow: Option<Buckets>,
    ip_overflow: Option<Buckets>,
}

impl RateLimiter {
    /// With these quotas.
    pub fn new(config: QuotaConfig) -> Result<RateLimiter, SecurityError> {
        config.validate()?;
        Ok(RateLimiter {
            config,
            ..RateLimiter::default()
        })
    }

    /// The quotas.
    pub fn config(&self) -> &QuotaConfig {
        &self.config
    }

    /// New quotas. Every bucket starts over full (a quota change forgives debt).
    pub fn set_config(&mut self, config: QuotaConfig) -> Result<(), SecurityError> {
        config.validate()?;
        *self = RateLimiter {
            config,
            ..RateLimiter::default()
        };
        Ok(())
    }

    fn burst(&self) -> Duration {
        Duration::from_millis(self.config.burst_ms)
    }

    fn at_capacity(&mut self, now: Duration) -> bool {
        if self.tracked() < RATE_KEYS_TRACKED_MAX {
            return false;
        }
        self.evict_idle(now);
        self.tracked() >= RATE_KEYS_TRACKED_MAX
    }

    /// Charge a request of `ctx` costing `cost` units of `kind` at `now` (time since
    /// any fixed origin, the same for every call). The principal's roles count when its
    /// buckets are made.
    pub fn check(
        &mut self,
        ctx: &SecurityContext,
        kind: LimitKind,
        cost: u64,
        now: Duration,
    ) -> Result<(), SecurityError> {
        self.apply(ctx, kind, cost, now, Mode::Take)
    }

    /// Charge `cost` units of `kind` to `ctx` at `now` unconditionally (into debt):
    /// for costs known after the work, such as the bytes a fetch returned; the
    /// principal's next requests of that kind are throttled until the debt is paid.
    pub fn charge(&mut self, ctx: &SecurityContext, kind: LimitKind, cost: u64, now: Duration) {
        let _ = self.apply(ctx, kind, cost, now, Mode::Charge);
    }

    fn apply(
        &mut self,
        ctx: &SecurityContext,
        kind: LimitKind,
        cost: u64,
        now: Duration,
        mode: Mode,
    ) -> Result<(), SecurityError> {
        if ctx.internal {
            return Ok(());
        }
        let Some(principal) = ctx.principal.as_deref() else {
            return match ctx.peer {
                Some(peer) => self.apply_ip(peer.ip(), kind, cost, now, mode),
                None => Ok(()),
            };
        };
        if let Some(buckets) = self.principals.get_mut(principal) {
            return buckets.take(kind, cost, now, mode);
        }
        let burst = self.burst();
        if self.at_capacity(now) {
            if self.principal_overflow.is_none() {
                self.principal_overflow = Buckets::new(&self.config.principal_default, burst);
            }
            return match self.principal_overflow.as_mut() {
                Some(buckets) => buckets.take(kind, cost, now, mode),
                None => Ok(()),
            };
        }
        let quota = self.config.resolve(principal, &ctx.roles);
        match Buckets::new(&quota, burst) {
            Some(buckets) => self
                .principals
                .entry(principal.to_string())
                .or_insert(buckets)
                .take(kind, cost, now, mode),
            None => Ok(()),
        }
    }

    /// Charge a request from `ip` (before authentication, or anonymous).
    pub fn check_ip(
        &mut self,
        ip: IpAddr,
        kind: LimitKind,
        cost: u64,
        now: Duration,
    ) -> Result<(), SecurityError> {
        self.apply_ip(ip, kind, cost, now, Mode::Take)
    }

    fn apply_ip(
        &mut self,
        ip: IpAddr,
        kind: LimitKind,
        cost: u64,
        now: Duration,
        mode: Mode,
    ) -> Result<(), SecurityError> {
        if let Some(buckets) = self.ips.get_mut(&ip) {
            return buckets.take(kind, cost, now, mode);
        }
        let burst = self.burst();
        let Some(fresh) = Buckets::new(&self.config.per_ip, burst) else {
            return Ok(());
        };
        if self.at_capacity(now) {
            return self
                .ip_overflow
                .get_or_insert(fresh)
                .take(kind, cost, now, mode);
        }
        self.ips
            .entry(ip)
            .or_insert(fresh)
            .take(kind, cost, now, mode)
    }

    /// Forget every full bucket set (no state is lost: a full bucket is a new one).
    /// Returns how many keys were dropped.
    pub fn evict_idle(&mut self, now: Duration) -> usize {
        let before = self.tracked();
        self.principals.retain(|_, buckets| !buckets.is_full(now));
        self.ips.retain(|_, buckets| !buckets.is_full(now));
        before - self.tracked()
    }

    /// Keys currently tracked (principals and IPs).
    pub fn tracked(&self) -> usize {
        self.principals.len() + self.ips.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn bucket_bursts_then_refills() {
        let mut b = TokenBucket::new(10, Duration::from_secs(1));
        for _ in 0..10 {
            b.try_take(1, ms(0)).unwrap();
        }
        assert_eq!(b.try_take(1, ms(0)), Err(ms(100)));
        assert_eq!(b.try_take(1, ms(60)), Err(ms(40)));
        b.try_take(1, ms(100)).unwrap();
        assert!(b.try_take(1, ms(100)).is_err());
        assert!(!b.is_full(ms(999)));
        assert!(b.is_full(ms(1_100)));
        // A second later the whole burst is back.
        for _ in 0..10 {
            b.try_take(1, ms(1_100)).unwrap();
        }
    }

    #[test]
    fn a_charge_is_waited_off() {
        let mut b = TokenBucket::new(1_000, Duration::from_secs(1));
        b.try_take(500, ms(0)).unwrap();
        // 3 000 bytes charged after the fact: 2.5 s beyond the burst.
        b.charge(3_000, ms(0));
        assert_eq!(b.try_take(1, ms(0)), Err(ms(2_501)));
        b.try_take(1, ms(2_501)).unwrap();
    }

    #[test]
    fn oversized_request_goes_into_debt() {
        let mut b = TokenBucket::new(1_000, Duration::from_secs(1));
        // 5 000 bytes at 1 000/s with a 1 000-byte burst: admitted when full...
        b.try_take(5_000, ms(0)).unwrap();
        // ...and the next request waits the 5 s debt minus the burst.
        assert_eq!(b.try_take(1_000, ms(0)), Err(ms(5_000)));
        assert_eq!(b.try_take(5_000, ms(1_000)), Err(ms(4_000)));
        b.try_take(1_000, ms(5_000)).unwrap();
    }

    #[test]
    fn limiter_per_principal_and_ip() {
        let config = QuotaConfig {
            principal_default: Quota {
                requests_per_sec: Some(2),
                ..Quota::default()
            },
            per_principal: [(
                "bulk".to_string(),
                Quota {
                    produce_bytes_per_sec: Some(1_000_000),
                    ..Quota::default()
                },
            )]
            .into(),
            per_ip: Quota {
                requests_per_sec: Some(1),
                ..Quota::default()
            },
            ..QuotaConfig::default()
        };
        let mut limiter = RateLimiter::new(config).unwrap();
        let peer = "10.0.0.7:999".parse().unwrap();
        let alice = SecurityContext::client(Some("alice".into()), peer);
        limiter
            .check(&alice, LimitKind::Requests, 1, ms(0))
            .unwrap();
        limiter
            .check(&alice, LimitKind::Requests, 1, ms(0))
            .unwrap();
        let err = limiter
            .check(&alice, LimitKind::Requests, 1, ms(0))
            .unwrap_err();
        assert_eq!(
            err,
            SecurityError::Throttled {
                limit: LimitKind::Requests,
                retry_after_ms: 500
            }
        );
        // Produce bytes are unlimited for alice; bulk's own override keeps the default
        // request rate.
        limiter
            .check(&alice, LimitKind::ProduceBytes, u64::MAX, ms(0))
            .unwrap();
        let bulk = SecurityContext::client(Some("bulk".into()), peer);
        limiter
            .check(&bulk, LimitKind::ProduceBytes, 1_000_000, ms(0))
            .unwrap();
        assert!(
            limiter
                .check(&bulk, LimitKind::ProduceBytes, 1, ms(0))
                .is_err()
        );
        // Anonymous: per IP, one bucket per address.
        let anon = SecurityContext::client(None, peer);
        limiter.check(&anon, LimitKind::Requests, 1, ms(0)).unwrap();
        assert!(limiter.check(&anon, LimitKind::Requests, 1, ms(0)).is_err());
        let other_ip = "10.0.0.8".parse().unwrap();
        limiter
            .check_ip(other_ip, LimitKind::Requests, 1, ms(0))
            .unwrap();
        // The node itself is never limited.
        for _ in 0..100 {
            limiter
                .check(&SecurityContext::internal(), LimitKind::Requests, 1, ms(0))
                .unwrap();
        }
        assert_eq!(limiter.tracked(), 4);
        assert_eq!(limiter.evict_idle(ms(500)), 0);
        assert_eq!(limiter.evict_idle(Duration::from_secs(10)), 4);
    }

    #[test]
    fn tracked_keys_are_bounded() {
        let config = QuotaConfig {
            per_ip: Quota {
                requests_per_sec: Some(1),
                ..Quota::default()
            },
            ..QuotaConfig::default()
        };
        let mut limiter = RateLimiter::new(config).unwrap();
        for i in 0..RATE_KEYS_TRACKED_MAX as u32 {
            let ip = IpAddr::from(i.to_be_bytes());
            limiter.check_ip(ip, LimitKind::Requests, 1, ms(0)).unwrap();
        }
        assert_eq!(limiter.tracked(), RATE_KEYS_TRACKED_MAX);
        // Every bucket is busy: two new addresses share the overflow bucket.
        let a = "192.0.2.1".parse().unwrap();
        let b = "192.0.2.2".parse().unwrap();
        limiter.check_ip(a, LimitKind::Requests, 1, ms(10)).unwrap();
        assert!(limiter.check_ip(b, LimitKind::Requests, 1, ms(10)).is_err());
        assert_eq!(limiter.tracked(), RATE_KEYS_TRACKED_MAX);
        // Once the buckets are full again they are dropped and new keys tracked.
        limiter
            .check_ip(b, LimitKind::Requests, 1, ms(2_000))
            .unwrap();
        assert_eq!(limiter.tracked(), 1);
        // Unlimited principals are not tracked at all.
        let alice = SecurityContext::client(Some("alice".into()), "10.0.0.1:1".parse().unwrap());
        limiter
            .check(&alice, LimitKind::Requests, 1, ms(0))
            .unwrap();
        assert_eq!(limiter.tracked(), 1);
    }

    #[test]
    fn role_overrides_and_validation() {
        let q = |r| Quota {
            requests_per_sec: Some(r),
            ..Quota::default()
        };
        let config = QuotaConfig {
            principal_default: q(1),
            per_role: [("a".to_string(), q(10)), ("b".to_string(), q(50))].into(),
            per_principal: [("carol".to_string(), q(5))].into(),
            ..QuotaConfig::default()
        };
        let roles = ["a".to_string(), "b".to_string()];
        assert_eq!(config.resolve("dave", &roles).requests_per_sec, Some(50));
        assert_eq!(config.resolve("dave", &[]).requests_per_sec, Some(1));
        assert_eq!(config.resolve("carol", &roles).requests_per_sec, Some(5));
        assert_eq!(config.resolve("carol", &roles).fetch_bytes_per_sec, None);
        assert!(
            RateLimiter::new(QuotaConfig {
                principal_default: q(0),
                ..QuotaConfig::default()
            })
            .is_err()
        );
        assert!(
            RateLimiter::new(QuotaConfig {
                burst_ms: 0,
                ..QuotaConfig::default()
            })
            .is_err()
        );
        let back: QuotaConfig = qiss::from_slice(&qiss::to_vec(&config).unwrap()).unwrap();
        assert_eq!(back, config);
    }

    proptest! {
        /// Never more than rate × elapsed + one burst (or one oversized request), and a
        /// throttled request passes once its delay has elapsed.
        #[test]
        fn bucket_bounds_and_liveness(
            rate in 1u64..10_000,
            burst_ms in 1u64..2_000,
            steps in proptest::collection::vec((0u64..50, 1u64..5_000), 1..200),
        ) {
            let mut b = TokenBucket::new(rate, ms(burst_ms));
            let mut now = Duration::ZERO;
            let mut admitted_nanos: u128 = 0;
            let mut largest_nanos: u128 = 0;
            for (advance_ms, cost) in steps {
                now += ms(advance_ms);
                let cost_nanos = (cost as u128 * NANOS_PER_SEC).div_ceil(rate as u128);
                match b.try_take(cost, now) {
                    Ok(()) => {
                        admitted_nanos += cost_nanos;
                        largest_nanos = largest_nanos.max(cost_nanos);
                    }
                    Err(wait) => {
                        let mut copy = b;
                        prop_assert!(copy.try_take(cost, now + wait).is_ok());
                    }
                }
                let allowance = now.as_nanos() + ms(burst_ms).as_nanos().max(largest_nanos);
                prop_assert!(admitted_nanos <= allowance);
            }
        }
    }
}
