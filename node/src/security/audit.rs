//! The client port's handshake, counted and audited: [`Audited`] wraps the
//! [`Authenticators`] neo-protocol's server calls, counts outcomes by token kind for
//! `/metrics` (`neo_auth_total{method,result}`) and logs refusals under the
//! `neo::audit` target (peer address and the typed reason; never the token).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use neo_protocol::{Authenticator, PeerInfo, Principal, RpcError};
use neo_security::Authenticators;
use neo_security::authn::TokenKind;

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
}

impl Audited {
    /// Wraps `inner`, counting into `counters`.
    pub fn new(inner: Arc<Authenticators>, counters: Arc<AuthCounters>) -> Audited {
        Audited { inner, counters }
    }
}

impl Authenticator for Audited {
    fn authenticate(&self, token: &[u8], peer: &PeerInfo) -> Result<Principal, RpcError> {
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

    fn still_valid(&self, principal: &Principal) -> bool {
        self.inner.still_valid(principal)
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
