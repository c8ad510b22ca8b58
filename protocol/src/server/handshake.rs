//! The authentication handshake and in-place re-authentication, as decisions: what an
//! `Auth` frame does to a connection's identity. No I/O; the connection applies the
//! answer (sets its principal, re-arms its expiry timer, replies, maybe closes).
//!
//! | connection | authenticator says | answer | connection |
//! |---|---|---|---|
//! | not authenticated | a principal (`Authenticator::authenticate`) | `AuthOk` | authenticated as it |
//! | not authenticated | an error | that error | closed |
//! | authenticated as P | P again (`Authenticator::reauthenticate`) (fresh roles, expiry, credential id) | `AuthOk` | identity replaced (its `ConnectionLease` kept unless the new one holds its own), expiry timer re-armed |
//! | authenticated as P | another principal Q | `PrincipalMismatch` | keeps P, stays open |
//! | authenticated as P | an error | that error (normally `Unauthenticated`) | keeps P until its own expiry, stays open |
//!
//! Why a refused re-authentication keeps the connection: the old credential is still
//! valid until its expiry (or revocation, checked as before); a client whose identity
//! provider handed it a bad token can try another one without losing its in-flight
//! requests and subscriptions. Why a change of principal is refused: everything keyed
//! by principal on the server (rate limits, audit lines, a handler's cached view of
//! who is calling) assumes a connection is one principal for its whole life; a client
//! that wants to be someone else opens a connection as them.

use crate::auth::{AuthOk, Authenticator, PeerInfo, Principal};
use crate::error::{ErrorCode, RpcError};
use crate::frame::{Frame, Kind};

/// What an `Auth` frame does to the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AuthOutcome {
    /// The connection is (now, or still) authenticated as this principal: reply
    /// `AuthOk`, replace the connection's principal, re-arm its expiry.
    Accepted(Principal),
    /// Reply this error; the connection keeps its identity and stays open (a refused
    /// re-authentication).
    Refused(RpcError),
    /// Reply this error and close the connection (a refused first handshake).
    RefusedAndClose(RpcError),
}

/// The outcome of an `Auth` frame carrying `token`, on a connection authenticated as
/// `current` (`None`: not yet).
pub(crate) fn decide(
    authenticator: &dyn Authenticator,
    token: &[u8],
    peer: &PeerInfo,
    current: Option<&Principal>,
) -> AuthOutcome {
    let Some(current) = current else {
        return match authenticator.authenticate(token, peer) {
            Ok(principal) => AuthOutcome::Accepted(principal),
            Err(err) => AuthOutcome::RefusedAndClose(err),
        };
    };
    match authenticator.reauthenticate(token, peer, current) {
        Ok(mut principal) if principal.name == current.name => {
            // The connection's resources (its slot of a connection limit) stay with it.
            if !principal.lease.is_held() {
                principal.lease = current.lease.clone();
            }
            AuthOutcome::Accepted(principal)
        }
        Ok(principal) => AuthOutcome::Refused(RpcError::new(
            ErrorCode::PrincipalMismatch,
            format!(
                "this connection is authenticated as {:?}; the new credential names {:?}: \
                 open a new connection to act as another principal",
                current.name, principal.name
            ),
        )),
        Err(err) => AuthOutcome::Refused(err),
    }
}

/// The `Response` to an `Auth` frame: `AuthOk` naming `principal`.
pub(crate) fn auth_ok(correlation_id: u64, principal: &str) -> Frame {
    let body = qiss::to_vec(&AuthOk {
        principal: principal.to_string(),
    })
    .unwrap_or_default();
    Frame {
        kind: Kind::Response,
        body: body.into(),
        ..Frame::control(Kind::Response, correlation_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::StaticTokens;

    fn peer() -> PeerInfo {
        PeerInfo {
            addr: "127.0.0.1:1".parse().unwrap(),
            identity: None,
        }
    }

    fn tokens() -> StaticTokens {
        StaticTokens::new()
            .with_token("a1", "alice")
            .with_token("a2", "alice")
            .with_token("b1", "bob")
    }

    #[test]
    fn a_first_handshake_is_accepted_or_closes() {
        let auth = tokens();
        assert_eq!(
            decide(&auth, b"a1", &peer(), None),
            AuthOutcome::Accepted(Principal::new("alice"))
        );
        match decide(&auth, b"nope", &peer(), None) {
            AuthOutcome::RefusedAndClose(e) => {
                assert_eq!(e.error_code(), Some(ErrorCode::Unauthenticated))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_re_authentication_keeps_the_principal_or_is_refused_without_closing() {
        let auth = tokens();
        let alice = Principal::new("alice");
        assert_eq!(
            decide(&auth, b"a2", &peer(), Some(&alice)),
            AuthOutcome::Accepted(Principal::new("alice"))
        );
        match decide(&auth, b"b1", &peer(), Some(&alice)) {
            AuthOutcome::Refused(e) => {
                assert_eq!(e.error_code(), Some(ErrorCode::PrincipalMismatch));
                assert!(e.message.contains("\"bob\""), "{e}");
            }
            other => panic!("{other:?}"),
        }
        match decide(&auth, b"nope", &peer(), Some(&alice)) {
            AuthOutcome::Refused(e) => {
                assert_eq!(e.error_code(), Some(ErrorCode::Unauthenticated))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_renewal_keeps_the_connection_s_lease() {
        let auth = tokens();
        let held = std::sync::Arc::new(());
        let alice = Principal::new("alice").with_lease(crate::auth::ConnectionLease::new(
            held.clone() as std::sync::Arc<dyn std::any::Any + Send + Sync>,
        ));
        match decide(&auth, b"a2", &peer(), Some(&alice)) {
            AuthOutcome::Accepted(p) => assert!(p.lease.is_held()),
            other => panic!("{other:?}"),
        }
        // The renewed principal shares the lease: dropped only with both.
        assert_eq!(std::sync::Arc::strong_count(&held), 2);
    }
}
