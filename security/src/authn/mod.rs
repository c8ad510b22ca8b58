//! Authentication: a handshake token (and the peer's TLS identity) → an [`Identity`].
//!
//! # Token formats
//! The client's `Auth` frame carries one token; [`TokenKind::of`] tells the kinds apart
//! by their shape alone, before any of them is parsed:
//!
//! | token | kind | checked by |
//! |---|---|---|
//! | empty | [`TokenKind::Certificate`] | [`cert`]: the verified mTLS client certificate names the principal |
//! | `neoak_<key id>_<secret>` | [`TokenKind::ApiKey`] | [`api_key`] |
//! | three `.`-separated segments (`header.payload.signature`) | [`TokenKind::Jwt`] | [`jwt`] |
//! | anything else | [`TokenKind::Other`] | the custom [`Authenticator`], if one is configured; else refused |
//!
//! Every token longer than [`TOKEN_SIZE_BYTES_MAX`] is refused first, whatever its kind.
//!
//! # Custom authenticators
//! [`neo_protocol::Authenticator`] stays the extension point: an operator's own check
//! (an LDAP bridge, a static table) is added with [`Authenticators::with_custom`] and gets
//! the tokens no built-in kind claims. [`Authenticators`] itself implements the trait,
//! so the node hands it to neo-protocol's server as it would any authenticator.

pub mod api_key;
pub mod cert;
pub mod jwt;
mod jwt_ring;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use neo_protocol::{Authenticator, PeerInfo, Principal, RpcError};

use crate::context::SecurityContext;
use crate::error::{AuthFailure, AuthMethod, SecurityError};
use crate::limits::TOKEN_SIZE_BYTES_MAX;

pub use api_key::{API_KEY_PREFIX, ApiKeyAuthenticator, ApiKeyRecord, ApiKeys, NewApiKey};
pub use cert::{CertAuthenticator, CertMapping, CertRule};
pub use jwt::{JwtAlgorithm, JwtAuthenticator, JwtConfig, JwtKey, JwtKeySet};

/// Who a credential proved the peer to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The principal's name.
    pub principal: String,
    /// Roles the credential itself states (a JWT's roles claim); roles assigned in the
    /// cluster's state are added by the authorizer, not here.
    pub roles: Vec<String>,
    /// How the peer authenticated.
    pub method: AuthMethod,
    /// When the credential stops being valid (a JWT's `exp`): the connection must be
    /// closed, or re-authenticate, by then. `None`: valid until revoked.
    pub expires_at_unix_secs: Option<u64>,
    /// The API key id, or the JWT's `kid`: what to re-check on revocation and to name in
    /// the audit log (never a secret).
    pub key_id: Option<String>,
}

impl Identity {
    /// Whether the credential has expired at `now_unix_secs`.
    pub fn is_expired(&self, now_unix_secs: u64) -> bool {
        self.expires_at_unix_secs
            .is_some_and(|exp| now_unix_secs >= exp)
    }

    /// The security context of requests on a connection from `peer`.
    pub fn to_context(&self, peer: SocketAddr) -> SecurityContext {
        SecurityContext {
            principal: Some(self.principal.clone()),
            roles: self.roles.clone(),
            peer: Some(peer),
            internal: false,
        }
    }
}

/// The kind of a handshake token, by its shape (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// Empty: authenticate by the TLS client certificate.
    Certificate,
    /// Starts with [`API_KEY_PREFIX`].
    ApiKey,
    /// Three `.`-separated segments.
    Jwt,
    /// Anything else: only a custom authenticator may accept it.
    Other,
}

impl TokenKind {
    /// Classify a token without parsing it.
    pub fn of(token: &[u8]) -> TokenKind {
        if token.is_empty() {
            TokenKind::Certificate
        } else if token.starts_with(API_KEY_PREFIX.as_bytes()) {
            TokenKind::ApiKey
        } else if token.iter().filter(|b| **b == b'.').count() == 2 {
            TokenKind::Jwt
        } else {
            TokenKind::Other
        }
    }
}

/// The server's authenticators, chosen by [`TokenKind`]. Methods not configured refuse
/// their tokens with [`AuthFailure::MethodDisabled`].
#[derive(Default)]
pub struct Authenticators {
    jwt: Option<Arc<JwtAuthenticator>>,
    api_keys: Option<Arc<ApiKeyAuthenticator>>,
    certificates: Option<Arc<CertAuthenticator>>,
    custom: Option<Arc<dyn Authenticator>>,
}

impl std::fmt::Debug for Authenticators {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticators")
            .field("jwt", &self.jwt.is_some())
            .field("api_keys", &self.api_keys.is_some())
            .field("certificates", &self.certificates.is_some())
            .field("custom", &self.custom.is_some())
            .finish()
    }
}

impl Authenticators {
    /// No method enabled: every token is refused.
    pub fn new() -> Authenticators {
        Authenticators::default()
    }

    /// Accept JWTs. The `Arc` lets the caller keep a handle to rotate keys.
    pub fn with_jwt(mut self, jwt: Arc<JwtAuthenticator>) -> Authenticators {
        self.jwt = Some(jwt);
        self
    }

    /// Accept API keys. The caller keeps a handle to apply key changes.
    pub fn with_api_keys(mut self, api_keys: Arc<ApiKeyAuthenticator>) -> Authenticators {
        self.api_keys = Some(api_keys);
        self
    }

    /// Accept mTLS client certificates (with an empty token).
    pub fn with_certificates(mut self, certificates: Arc<CertAuthenticator>) -> Authenticators {
        self.certificates = Some(certificates);
        self
    }

    /// Hand tokens of no built-in kind to `custom`.
    pub fn with_custom(mut self, custom: Arc<dyn Authenticator>) -> Authenticators {
        self.custom = Some(custom);
        self
    }

    /// Authenticate `token` from `peer` at `now_unix_secs`.
    pub fn identify(
        &self,
        token: &[u8],
        peer: &PeerInfo,
        now_unix_secs: u64,
    ) -> Result<Identity, SecurityError> {
        if token.len() > TOKEN_SIZE_BYTES_MAX {
            return Err(SecurityError::unauthenticated(None, AuthFailure::Oversized));
        }
        let kind = TokenKind::of(token);
        let method = match kind {
            TokenKind::Certificate => AuthMethod::Certificate,
            TokenKind::ApiKey => AuthMethod::ApiKey,
            TokenKind::Jwt => AuthMethod::Jwt,
            TokenKind::Other => AuthMethod::Custom,
        };
        let disabled = || SecurityError::unauthenticated(Some(method), AuthFailure::MethodDisabled);
        match kind {
            TokenKind::Certificate => self
                .certificates
                .as_ref()
                .ok_or_else(disabled)?
                .identify(peer.identity.as_ref()),
            TokenKind::ApiKey => self.api_keys.as_ref().ok_or_else(disabled)?.verify(token),
            TokenKind::Jwt => self
                .jwt
                .as_ref()
                .ok_or_else(disabled)?
                .verify(token, now_unix_secs),
            TokenKind::Other => {
                let Some(custom) = &self.custom else {
                    return Err(SecurityError::unauthenticated(
                        None,
                        AuthFailure::UnknownTokenKind,
                    ));
                };
                let principal = custom.authenticate(token, peer).map_err(|_| {
                    SecurityError::unauthenticated(Some(AuthMethod::Custom), AuthFailure::Custom)
                })?;
                Ok(Identity {
                    principal: principal.name,
                    roles: Vec::new(),
                    method: AuthMethod::Custom,
                    expires_at_unix_secs: None,
                    key_id: None,
                })
            }
        }
    }
}

/// Seconds since the Unix epoch by the system clock (0 if the clock is before 1970).
pub fn unix_now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Authenticator for Authenticators {
    /// The protocol's hook has no clock parameter: this is where the system clock is read.
    fn authenticate(&self, token: &[u8], peer: &PeerInfo) -> Result<Principal, RpcError> {
        self.identify(token, peer, unix_now_secs())
            .map(|identity| {
                let revocable = identity.method == AuthMethod::ApiKey;
                Principal::new(identity.principal)
                    .with_roles(identity.roles)
                    .expiring_at(identity.expires_at_unix_secs)
                    .with_credential_id(identity.key_id.filter(|_| revocable))
            })
            .map_err(|e| e.to_rpc_error())
    }

    /// An API key must not have been revoked (or removed) since the handshake.
    fn still_valid(&self, principal: &Principal) -> bool {
        match (&principal.credential_id, &self.api_keys) {
            (Some(key_id), Some(keys)) => keys.is_valid(key_id),
            (Some(_), None) => false,
            (None, _) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use neo_protocol::{ErrorCode, PeerIdentity, StaticTokens};

    fn peer(identity: Option<PeerIdentity>) -> PeerInfo {
        PeerInfo {
            addr: "10.1.2.3:5555".parse().unwrap(),
            identity,
        }
    }

    #[test]
    fn token_kinds_by_shape() {
        assert_eq!(TokenKind::of(b""), TokenKind::Certificate);
        assert_eq!(TokenKind::of(b"neoak_0011_abc"), TokenKind::ApiKey);
        assert_eq!(TokenKind::of(b"eyJh.eyJz.c2ln"), TokenKind::Jwt);
        assert_eq!(TokenKind::of(b"a.b"), TokenKind::Other);
        assert_eq!(TokenKind::of(b"plain-secret"), TokenKind::Other);
    }

    #[test]
    fn nothing_enabled_refuses_everything() {
        let chain = Authenticators::new();
        for (token, reason) in [
            (&b""[..], AuthFailure::MethodDisabled),
            (b"neoak_00_x", AuthFailure::MethodDisabled),
            (b"a.b.c", AuthFailure::MethodDisabled),
            (b"whatever", AuthFailure::UnknownTokenKind),
        ] {
            let err = chain.identify(token, &peer(None), 0).unwrap_err();
            assert_eq!(err.auth_failure(), Some(reason), "{token:?}");
        }
        let wire = chain.authenticate(b"x", &peer(None)).unwrap_err();
        assert_eq!(wire.error_code(), Some(ErrorCode::Unauthenticated));
    }

    #[test]
    fn oversized_refused_before_parsing() {
        let chain = Authenticators::new().with_custom(Arc::new(StaticTokens::new()));
        let huge = vec![b'a'; 1024 * 1024];
        let err = chain.identify(&huge, &peer(None), 0).unwrap_err();
        assert_eq!(err.auth_failure(), Some(AuthFailure::Oversized));
    }

    #[test]
    fn custom_gets_other_tokens() {
        let chain = Authenticators::new()
            .with_custom(Arc::new(StaticTokens::new().with_token("t0k", "bob")));
        let id = chain.identify(b"t0k", &peer(None), 0).unwrap();
        assert_eq!(
            (id.principal.as_str(), id.method),
            ("bob", AuthMethod::Custom)
        );
        let err = chain.identify(b"nope", &peer(None), 0).unwrap_err();
        assert_eq!(err.auth_failure(), Some(AuthFailure::Custom));
    }

    #[test]
    fn chain_dispatches_to_each_method() {
        let keys = Arc::new(ApiKeyAuthenticator::new(ApiKeys::default()));
        let (new_key, record) = ApiKeyRecord::generate("svc-ingest", 1_000).unwrap();
        keys.update(|k| k.insert(record)).unwrap();
        let certs = Arc::new(CertAuthenticator::new(CertMapping::default()));
        let chain = Authenticators::new()
            .with_api_keys(keys)
            .with_certificates(certs);

        let id = chain
            .identify(new_key.token.as_bytes(), &peer(None), 0)
            .unwrap();
        assert_eq!(id.principal, "svc-ingest");
        assert_eq!(id.method, AuthMethod::ApiKey);

        let identity = PeerIdentity {
            certificate_chain_der: Vec::new(),
            dns_names: vec!["alice".into()],
            uri_names: Vec::new(),
            common_name: None,
        };
        let id = chain.identify(b"", &peer(Some(identity)), 0).unwrap();
        assert_eq!(
            (id.principal.as_str(), id.method),
            ("alice", AuthMethod::Certificate)
        );
        let err = chain.identify(b"", &peer(None), 0).unwrap_err();
        assert_eq!(err.auth_failure(), Some(AuthFailure::NoCertificate));
        // JWT not enabled on this chain.
        let err = chain.identify(b"a.b.c", &peer(None), 0).unwrap_err();
        assert_eq!(err.auth_failure(), Some(AuthFailure::MethodDisabled));
    }

    #[test]
    fn identity_expiry_and_context() {
        let id = Identity {
            principal: "alice".into(),
            roles: vec!["ops".into()],
            method: AuthMethod::Jwt,
            expires_at_unix_secs: Some(100),
            key_id: None,
        };
        assert!(!id.is_expired(99));
        assert!(id.is_expired(100));
        let ctx = id.to_context("10.0.0.1:1".parse().unwrap());
        assert_eq!(ctx.principal.as_deref(), Some("alice"));
        assert_eq!(ctx.roles, vec!["ops".to_string()]);
    }
}
