//! The client port's handshake, counted and audited: [`Audited`] wraps the
//! [`Authenticators`] neo-protocol's server calls, counts outcomes by token kind for
//! `/metrics` (`neo_auth_total{method,result}`) and logs refusals under the
//! `neo::audit` target (peer address and the typed reason; never the token). With a
//! [`ConnectionLimiter`], it also enforces the `connections` quota: the client
//! address's slot before the credential is checked, the principal's after.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use neo_protocol::{Authenticator, PeerInfo, Principal, RpcError};
use neo_security::Authenticators;
use neo_security::authn::TokenKind;

use super::connections::ConnectionLimiter;

/// Handshake outcomes by token kind (index: [`AuthCounters::KINDS`]).
#[derive(Debug, Default)]
pub struct AuthCounters {
    /// Accepted handshakes.
    pub ok: [AtomicU64; 4],
    /// Refused handshakes.
    pub failed: [AtomicU64; 4],
}

impl AuthCounters {
    /// Metric label of each index.
    pub const KINDS: [&'static str; 4] = ["jwt", "api_key", "certificate", "other"];

    fn index(token: &[u8]) -> usize {
        match TokenKind::of(token) {
            TokenKind::Jwt => 0,
            TokenKind::ApiKey => 1,
            TokenKind::Certificate => 2,
            TokenKind::Other => 3,
        }
    }
}

/// [`Authenticators`] with counting and audit logging.
pub struct Audited {
    inner: Arc<Authenticators>,
    counters: Arc<AuthCounters>,
    connections: Option<Arc<ConnectionLimiter>>,
}

impl Audited {
    /// Wraps `inner`, counting into `counters`.
    pub fn new(inner: Arc<Authenticators>, counters: Arc<AuthCounters>) -> Audited {
        Audited {
            inner,
            counters,
            connections: None,
        }
    }

    /// Enforces the `connections` quota with `limiter`.
    pub fn with_connection_limits(mut self, limiter: Arc<ConnectionLimiter>) -> Audited {
        self.connections = Some(limiter);
        self
    }
}

impl Authenticator for Audited {
    fn authenticate(&self, token: &[u8], peer: &PeerInfo) -> Result<Principal, RpcError> {
        // Over the client address's connection limit: refused before the credential
        // is looked at (not an authentication outcome).
        let slot = match &self.connections {
            Some(limiter) => Some(limiter.open_ip(peer.addr.ip())?),
            None => None,
        };
        let result = self.check(token, peer);
        match (result, slot, &self.connections) {
            (Ok(principal), Some(slot), Some(limiter)) => limiter.admit(slot, principal),
            (result, _, _) => result,
        }
    }

    /// A re-authentication (a fresh token on an open connection): checked, counted
    /// and audited like a handshake, but the connection keeps the slots it holds (the
    /// server carries its lease over), so a principal at its limit can renew.
    fn reauthenticate(
        &self,
        token: &[u8],
        peer: &PeerInfo,
        _current: &Principal,
    ) -> Result<Principal, RpcError> {
        self.check(token, peer)
    }

    fn still_valid(&self, principal: &Principal) -> bool {
        self.inner.still_valid(principal)
    }
}

impl Audited {
    /// The credential check, counted by token kind; refusals logged.
    fn check(&self, token: &[u8], peer: &PeerInfo) -> Result<Principal, RpcError> {
        let kind = AuthCounters::index(token);
        let result = self.inner.authenticate(token, peer);
        match &result {
            Ok(_) => self.counters.ok[kind].fetch_add(1, Ordering::Relaxed),
            Err(e) => {
                tracing::info!(
                    target: "neo::audit",
                    peer = %peer.addr,
                    method = AuthCounters::KINDS[kind],
                    reason = %e.message,
                    "authentication refused"
                );
                self.counters.failed[kind].fetch_add(1, Ordering::Relaxed)
            }
        };
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_token_kind() {
        let counters = Arc::new(AuthCounters::default());
        let audited = Audited::new(Arc::new(Authenticators::new()), counters.clone());
        let peer = PeerInfo {
            addr: "127.0.0.1:9".parse().unwrap(),
            identity: None,
        };
        assert!(audited.authenticate(b"a.b.c", &peer).is_err());
        assert!(audited.authenticate(b"neoak_00_x", &peer).is_err());
        assert!(audited.authenticate(b"a.b.c", &peer).is_err());
        assert_eq!(counters.failed[0].load(Ordering::Relaxed), 2);
        assert_eq!(counters.failed[1].load(Ordering::Relaxed), 1);
        assert_eq!(counters.ok[0].load(Ordering::Relaxed), 0);
    }
}
