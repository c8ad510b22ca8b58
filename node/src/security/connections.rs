//! The `connections` quota on the client port: [`ConnectionLimiter`] counts each
//! principal's (and each client address's) open connections on this node and refuses
//! a handshake over the limit the replicated quotas give (read from the metadata view
//! at each handshake, so a change applies from the next handshake on; open
//! connections are never cut).
//!
//! A handshake takes a [`Slot`]; the slot rides on the connection's principal (a
//! [`ConnectionLease`]) and is given back when the connection ends. The client
//! address's slot is taken before the credential is checked; the principal's after.
//! A refusal is `Throttled` (with a retry delay), counted in
//! `neo_throttled_requests_total` and logged under `neo::audit`.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use neo_broker::meta::MetaView;
use neo_protocol::{ConnectionLease, Principal, RpcError};
use neo_security::connections::ConnectionCounts;

/// Called on each refusal (the node counts it).
pub type OnRefused = Arc<dyn Fn() + Send + Sync>;

/// Open connections per principal and per client address, against the quotas.
pub struct ConnectionLimiter {
    counts: Mutex<ConnectionCounts>,
    meta: MetaView,
    on_refused: OnRefused,
}

impl std::fmt::Debug for ConnectionLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionLimiter").finish_non_exhaustive()
    }
}

/// One connection's place in the counts; given back on drop.
#[derive(Debug)]
pub struct Slot {
    limiter: Arc<ConnectionLimiter>,
    ip: IpAddr,
    principal: Option<String>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.limiter.counts();
        counts.close_ip(self.ip);
        if let Some(p) = &self.principal {
            counts.close_principal(p);
        }
    }
}

impl ConnectionLimiter {
    /// A limiter following the quotas of `meta`.
    pub fn new(meta: MetaView, on_refused: OnRefused) -> Arc<ConnectionLimiter> {
        Arc::new(ConnectionLimiter {
            counts: Mutex::new(ConnectionCounts::default()),
            meta,
            on_refused,
        })
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, ConnectionCounts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn refused(&self, err: neo_security::SecurityError, peer: IpAddr) -> RpcError {
        (self.on_refused)();
        tracing::info!(
            target: "neo::audit",
            peer = %peer,
            reason = %err,
            "connection refused: connections quota"
        );
        err.to_rpc_error()
    }

    /// A slot for a connection from `ip`, before its credential is checked.
    pub fn open_ip(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, RpcError> {
        let state = self.meta.borrow().clone();
        self.counts()
            .open_ip(&state.security.quotas, ip)
            .map_err(|e| self.refused(e, ip))?;
        Ok(Slot {
            limiter: self.clone(),
            ip,
            principal: None,
        })
    }

    /// `slot` extended to the authenticated `principal` (its roles: those its
    /// credential states and those assigned to it), attached to the principal it
    /// returns; refused if the principal is at its limit (the address slot is given
    /// back with `slot`).
    pub fn admit(&self, mut slot: Slot, principal: Principal) -> Result<Principal, RpcError> {
        let state = self.meta.borrow().clone();
        let mut roles = principal.roles.clone();
        if let Some(user) = state.security.rbac.users.get(&principal.name) {
            roles.extend(user.roles.iter().cloned());
        }
        self.counts()
            .open_principal(&state.security.quotas, &principal.name, &roles)
            .map_err(|e| self.refused(e, slot.ip))?;
        slot.principal = Some(principal.name.clone());
        Ok(principal.with_lease(ConnectionLease::new(Arc::new(slot))))
    }

    /// Open connections of `principal` on this node.
    pub fn of_principal(&self, principal: &str) -> u64 {
        self.counts().of_principal(principal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use neo_broker::meta::MetaState;
    use neo_security::rate::Quota;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn the_extra_connection_is_refused_until_one_closes() {
        let mut state = MetaState::default();
        state.security.quotas.per_principal.insert(
            "alice".into(),
            Quota {
                connections: Some(2),
                ..Quota::default()
            },
        );
        let (_tx, meta) = tokio::sync::watch::channel(Arc::new(state));
        let refusals = Arc::new(AtomicU64::new(0));
        let counter = refusals.clone();
        let limiter = ConnectionLimiter::new(
            meta,
            Arc::new(move || {
                counter.fetch_add(1, Ordering::Relaxed);
            }),
        );
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let connect = || {
            let slot = limiter.open_ip(ip)?;
            limiter.admit(slot, Principal::new("alice"))
        };
        let first = connect().unwrap();
        let second = connect().unwrap();
        assert!(first.lease.is_held());
        let err = connect().unwrap_err();
        assert_eq!(err.error_code(), Some(neo_protocol::ErrorCode::Throttled));
        assert!(err.message.contains("principal alice"), "{}", err.message);
        assert_eq!(refusals.load(Ordering::Relaxed), 1);
        assert_eq!(limiter.of_principal("alice"), 2);
        // A clone of the principal shares the slot: released with the last one.
        let clone = first.clone();
        drop(first);
        assert_eq!(limiter.of_principal("alice"), 2);
        drop(clone);
        assert_eq!(limiter.of_principal("alice"), 1);
        let third = connect().unwrap();
        drop((second, third));
        assert_eq!(limiter.of_principal("alice"), 0);
        assert_eq!(limiter.counts().tracked(), 0);
    }
}
