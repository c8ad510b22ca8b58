//! Automatic lease extension: [`LeaseGuard`]s register deliveries, one task per
//! consumer extends them.
//!
//! ```text
//! keep_alive(d) ─▶ registry[d.receipt] = due: a third of the lease after the receive
//! extend_leases (one task): sleep until the earliest due (or a new registration)
//!   ─▶ every receipt due ─▶ queue_extend (one request per partition, to its leader;
//!      retried no longer than a third of the lease)
//!      ├─ Ok ─▶ due again a third of the lease later
//!      ├─ LeaseLost / AlreadyDone / Unknown ─▶ guard marked lost, entry removed
//!      └─ the request failed ─▶ due again soon (a tenth of the lease, ≤ 1 s)
//! guard dropped ─▶ entry removed (no more extension)
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use neo_protocol::api::{Receipt, ReceiptOutcome};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::QueueDelivery;
use super::consumer::Core;
use super::settle::{SettleOp, SettleTarget, settle};

/// Shortest pause between two extension rounds.
const TICK_MIN: Duration = Duration::from_millis(10);

/// Why a guard's lease is no longer extended (set once).
#[derive(Debug, Default)]
struct LeaseState {
    lost: Mutex<Option<ReceiptOutcome>>,
}

#[derive(Debug)]
struct Entry {
    due: Instant,
    state: Arc<LeaseState>,
}

/// The leases a consumer keeps alive.
#[derive(Debug, Default)]
pub(crate) struct LeaseRegistry {
    entries: Mutex<HashMap<Receipt, Entry>>,
    /// Woken by a registration (it may be due before the task's next round).
    wake: Notify,
}

impl LeaseRegistry {
    fn lock(&self) -> MutexGuard<'_, HashMap<Receipt, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn register(&self, receipt: Receipt, due: Instant) -> Arc<LeaseState> {
        let state = Arc::new(LeaseState::default());
        self.lock().insert(
            receipt,
            Entry {
                due,
                state: Arc::clone(&state),
            },
        );
        self.wake.notify_one();
        state
    }

    /// Remove `receipt`'s entry if it is still `state`'s (a second guard of the same
    /// receipt replaced the first; the first's drop must not remove the second's).
    fn remove(&self, receipt: &Receipt, state: &Arc<LeaseState>) {
        let mut entries = self.lock();
        if entries
            .get(receipt)
            .is_some_and(|e| Arc::ptr_eq(&e.state, state))
        {
            entries.remove(receipt);
        }
    }

    /// The receipts due at `now`, and the earliest due of the others.
    pub(crate) fn due(&self, now: Instant) -> (Vec<Receipt>, Option<Instant>) {
        let entries = self.lock();
        let mut due = Vec::new();
        let mut next: Option<Instant> = None;
        for (receipt, entry) in entries.iter() {
            if entry.due <= now {
                due.push(*receipt);
            } else {
                next = Some(next.map_or(entry.due, |n| n.min(entry.due)));
            }
        }
        due.sort();
        (due, next)
    }

    /// Apply one extension round's answer: `Ok` outcomes due again after `period`,
    /// refusals marked lost and removed; a failed request retried after `retry_in`.
    pub(crate) fn apply(
        &self,
        receipts: &[Receipt],
        answer: Option<&[ReceiptOutcome]>,
        now: Instant,
        period: Duration,
        retry_in: Duration,
    ) {
        let mut entries = self.lock();
        for (i, receipt) in receipts.iter().enumerate() {
            let outcome = match answer {
                Some(outcomes) => outcomes.get(i).copied(),
                None => None,
            };
            match outcome {
                Some(ReceiptOutcome::Ok) => {
                    if let Some(e) = entries.get_mut(receipt) {
                        e.due = now + period;
                    }
                }
                Some(refused) => {
                    if let Some(e) = entries.remove(receipt) {
                        *e.state.lost.lock().unwrap_or_else(|e| e.into_inner()) = Some(refused);
                    }
                }
                None => {
                    if let Some(e) = entries.get_mut(receipt) {
                        e.due = now + retry_in;
                    }
                }
            }
        }
    }
}

/// Keeps one delivery's lease alive while it lives (from
/// [`QueueConsumer::keep_alive`](super::QueueConsumer::keep_alive)), as long as its
/// consumer lives too (the consumer's task does the extending). Dropping it stops the
/// extension; it neither acks nor nacks.
pub struct LeaseGuard {
    core: Arc<Core>,
    receipt: Receipt,
    state: Arc<LeaseState>,
}

impl fmt::Debug for LeaseGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseGuard")
            .field("receipt", &self.receipt)
            .field("lost", &self.lost())
            .finish()
    }
}

impl LeaseGuard {
    pub(crate) fn register(core: Arc<Core>, delivery: &QueueDelivery) -> LeaseGuard {
        let length = core.lease().length;
        let now_std = std::time::Instant::now();
        // A third of the lease after the receive: its expiry minus two thirds.
        let left = delivery.lease_expires_at.saturating_duration_since(now_std);
        let first = left.saturating_sub(length - length / 3);
        let state = core
            .leases
            .register(delivery.receipt, Instant::now() + first);
        LeaseGuard {
            core,
            receipt: delivery.receipt,
            state,
        }
    }

    /// The receipt kept alive.
    pub fn receipt(&self) -> Receipt {
        self.receipt
    }

    /// Why the extension stopped, if it did: the broker answered `LeaseLost`,
    /// `AlreadyDone` or `Unknown` to an extension (a settle of this receipt would be
    /// refused the same way).
    pub fn lost(&self) -> Option<ReceiptOutcome> {
        *self.state.lost.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.core.leases.remove(&self.receipt, &self.state);
    }
}

/// The extension task of one consumer (aborted when the consumer is dropped).
pub(crate) async fn extend_leases(core: Arc<Core>) {
    let lease = core.lease();
    let period = (lease.length / 3).max(TICK_MIN);
    let retry_in = (lease.length / 10).clamp(TICK_MIN, Duration::from_secs(1));
    // An extension that cannot get through within a third of the lease is late.
    let mut target: SettleTarget<'_> = core.target();
    target.timeout = target.timeout.min(period);
    target.retry.deadline = target.retry.deadline.min(period);
    let op = SettleOp::Extend {
        visibility_timeout_ms: lease.request_ms,
    };
    loop {
        let wake = core.leases.wake.notified();
        tokio::pin!(wake);
        wake.as_mut().enable();
        let now = Instant::now();
        let (due, next) = core.leases.due(now);
        if !due.is_empty() {
            let answer = settle(target, &op, &due).await;
            if let Err(err) = &answer {
                tracing::debug!(queue = %core.queue, error = %err, "lease extension failed");
            }
            let outcomes = answer.as_deref().ok();
            core.leases
                .apply(&due, outcomes, Instant::now(), period, retry_in);
            continue;
        }
        let until = next.unwrap_or(now + period).max(now + TICK_MIN);
        tokio::select! {
            _ = tokio::time::sleep_until(until) => {}
            _ = &mut wake => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(offset: u64) -> Receipt {
        Receipt {
            group: 1,
            partition: 0,
            offset,
            delivery: 1,
            lease: 5,
        }
    }

    #[test]
    fn due_leases_are_extended_and_refusals_stop_them() {
        let registry = LeaseRegistry::default();
        let t0 = Instant::now();
        let a = registry.register(r(1), t0);
        let b = registry.register(r(2), t0 + Duration::from_secs(10));
        let c = registry.register(r(3), t0);
        let (due, next) = registry.due(t0);
        assert_eq!(due, vec![r(1), r(3)]);
        assert_eq!(next, Some(t0 + Duration::from_secs(10)));

        let period = Duration::from_secs(10);
        registry.apply(
            &due,
            Some(&[ReceiptOutcome::Ok, ReceiptOutcome::LeaseLost]),
            t0,
            period,
            Duration::from_secs(1),
        );
        assert_eq!(*a.lost.lock().unwrap(), None);
        assert_eq!(*c.lost.lock().unwrap(), Some(ReceiptOutcome::LeaseLost));
        let (due, _) = registry.due(t0 + Duration::from_secs(10));
        assert_eq!(due, vec![r(1), r(2)], "3 is no longer extended");

        // A failed request: due again soon, nothing marked lost.
        registry.apply(&due, None, t0, period, Duration::from_secs(1));
        let (due, _) = registry.due(t0 + Duration::from_secs(1));
        assert_eq!(due, vec![r(1), r(2)]);
        assert_eq!(*b.lost.lock().unwrap(), None);

        // A short answer leaves the rest for a retry rather than panicking.
        registry.apply(&due, Some(&[]), t0, period, Duration::from_secs(2));
        assert_eq!(registry.due(t0 + Duration::from_secs(2)).0.len(), 2);
    }

    #[test]
    fn a_stale_guard_does_not_remove_a_newer_registration() {
        let registry = LeaseRegistry::default();
        let now = Instant::now();
        let old = registry.register(r(1), now);
        let new = registry.register(r(1), now);
        registry.remove(&r(1), &old);
        assert_eq!(
            registry.due(now).0,
            vec![r(1)],
            "the newer guard's entry stays"
        );
        registry.remove(&r(1), &new);
        assert!(registry.due(now).0.is_empty());
    }
}
