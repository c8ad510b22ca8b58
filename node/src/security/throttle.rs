//! Rate limits on the client port: one [`RateLimiter`] per node, its quotas following
//! the replicated security state (a change applies on each node as its metadata
//! replica applies it; the buckets start full again then).
//!
//! Every request costs one `requests/s` token; a produce also its batch's bytes of
//! `produce bytes/s` (checked before it is stored); a fetch is admitted while its
//! principal is not in `fetch bytes/s` debt and the bytes it returns are charged after
//! (the next fetches wait that debt off). An over-limit request is answered
//! `Throttled` with the delay; the connection stays open and nothing was done.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use neo_broker::SecurityContext;
use neo_broker::meta::MetaView;
use neo_protocol::RpcError;
use neo_security::RateLimiter;
use neo_security::rate::LimitKind;
use tokio::sync::watch;

/// The node's rate limiter.
#[derive(Debug)]
pub struct Throttle {
    limiter: Mutex<RateLimiter>,
    origin: Instant,
}

impl Throttle {
    /// A limiter following the quotas of `meta` until `stop`.
    pub fn start(
        meta: MetaView,
        stop: watch::Receiver<bool>,
    ) -> (Arc<Throttle>, tokio::task::JoinHandle<()>) {
        let throttle = Arc::new(Throttle {
            limiter: Mutex::new(RateLimiter::default()),
            origin: Instant::now(),
        });
        let task = tokio::spawn(follow_quotas(throttle.clone(), meta, stop));
        (throttle, task)
    }

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn limiter(&self) -> std::sync::MutexGuard<'_, RateLimiter> {
        self.limiter.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `Throttled` if `ctx` is over its `kind` limit for `cost` more units.
    pub fn check(&self, ctx: &SecurityContext, kind: LimitKind, cost: u64) -> Result<(), RpcError> {
        let now = self.now();
        self.limiter()
            .check(ctx, kind, cost, now)
            .map_err(|e| e.to_rpc_error())
    }

    /// Charges `cost` units of `kind` to `ctx` after the fact.
    pub fn charge(&self, ctx: &SecurityContext, kind: LimitKind, cost: u64) {
        let now = self.now();
        self.limiter().charge(ctx, kind, cost, now);
    }
}

async fn follow_quotas(
    throttle: Arc<Throttle>,
    mut meta: MetaView,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let quotas = meta.borrow_and_update().security.quotas.clone();
        let changed = *throttle.limiter().config() != quotas;
        if changed && let Err(e) = throttle.limiter().set_config(quotas) {
            // Validated when committed: only a newer node's rule could get here.
            tracing::warn!("rate limits not applied: {e}");
        }
        tokio::select! {
            r = meta.changed() => if r.is_err() { return },
            _ = stop.changed() => return,
        }
    }
}
