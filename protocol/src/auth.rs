//! The authentication handshake's pluggable check.
//!
//! A connection to a server that has an [`Authenticator`] must send an `Auth` frame
//! (body: the token) before anything but heartbeats. The server calls
//! [`Authenticator::authenticate`] with the token and what it knows of the peer (address,
//! TLS client certificate); the [`Principal`] it returns is attached to the connection
//! and visible to every handler through [`crate::RequestContext::principal`].
//! An `Auth` frame after the handshake re-authenticates the connection in place:
//! [`Authenticator::reauthenticate`] checks the fresh token, and the server keeps the
//! connection's principal name (see `server::handshake`).
//! The security crate plugs its JWT / API-key / mTLS checks in here.

use std::collections::HashMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, RpcError};
use crate::tls::PeerIdentity;

/// Who the peer is, as established by the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Principal {
    /// Stable name of the authenticated identity (user, service account, key id).
    pub name: String,
    /// Roles the credential itself states (e.g. a JWT's roles claim).
    #[serde(default)]
    pub roles: Vec<String>,
    /// When the credential stops being valid (seconds since the Unix epoch): the
    /// server closes the connection then, with `Unauthenticated`. `None`: never.
    #[serde(default)]
    pub expires_at_unix_secs: Option<u64>,
    /// The id of a revocable credential (an API key id): the server asks
    /// [`Authenticator::still_valid`] before each request on the connection.
    #[serde(default)]
    pub credential_id: Option<String>,
    /// Held for as long as the connection is: the authenticator's per-connection
    /// resources (a slot of a connection limit) are released when it drops. Never
    /// encoded; not part of the principal's identity (ignored by `==` and `Hash`).
    #[serde(skip)]
    pub lease: ConnectionLease,
}

/// Something an [`Authenticator`] ties to one connection: the server keeps the
/// [`Principal`] (and so this) for the connection's lifetime and drops it when the
/// connection ends (or a new handshake replaces the principal), so a `Drop` impl inside
/// runs then. Clones share one value, released with the last.
#[derive(Clone, Default)]
pub struct ConnectionLease(Option<std::sync::Arc<dyn std::any::Any + Send + Sync>>);

impl ConnectionLease {
    /// A lease holding `value` until the connection ends.
    pub fn new(value: std::sync::Arc<dyn std::any::Any + Send + Sync>) -> ConnectionLease {
        ConnectionLease(Some(value))
    }

    /// Whether it holds anything.
    pub fn is_held(&self) -> bool {
        self.0.is_some()
    }
}

impl std::fmt::Debug for ConnectionLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_held() {
            "ConnectionLease(held)"
        } else {
            "ConnectionLease(none)"
        })
    }
}

/// Not part of a principal's identity: every lease equals every other.
impl PartialEq for ConnectionLease {
    fn eq(&self, _: &ConnectionLease) -> bool {
        true
    }
}

impl Eq for ConnectionLease {}

impl std::hash::Hash for ConnectionLease {
    fn hash<H: std::hash::Hasher>(&self, _: &mut H) {}
}

impl Principal {
    /// A principal with this name, no roles, no expiry.
    pub fn new(name: impl Into<String>) -> Principal {
        Principal {
            name: name.into(),
            roles: Vec::new(),
            expires_at_unix_secs: None,
            credential_id: None,
            lease: ConnectionLease::default(),
        }
    }

    /// This principal, holding `lease` for the connection's lifetime.
    pub fn with_lease(mut self, lease: ConnectionLease) -> Principal {
        self.lease = lease;
        self
    }

    /// This principal, authenticated by the revocable credential `id`.
    pub fn with_credential_id(mut self, id: Option<String>) -> Principal {
        self.credential_id = id;
        self
    }

    /// This principal with `roles`.
    pub fn with_roles(mut self, roles: Vec<String>) -> Principal {
        self.roles = roles;
        self
    }

    /// This principal, valid until `unix_secs`.
    pub fn expiring_at(mut self, unix_secs: Option<u64>) -> Principal {
        self.expires_at_unix_secs = unix_secs;
        self
    }
}

/// What the server knows of a peer before the handshake.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// The remote socket address.
    pub addr: SocketAddr,
    /// The TLS client certificate identity, when the connection is mTLS.
    pub identity: Option<PeerIdentity>,
}

/// Checks a handshake token. Implementations must be cheap and must not block: the
/// check runs on the connection's task. (Decisions are pure functions; a token store
/// that needs I/O refreshes itself elsewhere.)
pub trait Authenticator: Send + Sync + 'static {
    /// The principal for `token`, or an error whose code is sent to the client
    /// (normally `Unauthenticated`) before the connection is closed.
    fn authenticate(&self, token: &[u8], peer: &PeerInfo) -> Result<Principal, RpcError>;

    /// The principal for `token` presented to re-authenticate a connection already
    /// authenticated as `current` (an `Auth` frame after the handshake). The server
    /// then refuses a principal of another name (`PrincipalMismatch`), and an error
    /// here leaves the connection as it was (open, `current` kept). When the returned
    /// principal holds no [`ConnectionLease`], the server carries `current`'s lease
    /// over: an implementation that ties resources to a connection (a slot of a
    /// connection limit) should override this to check the token without taking them
    /// again. Default: [`Authenticator::authenticate`].
    fn reauthenticate(
        &self,
        token: &[u8],
        peer: &PeerInfo,
        current: &Principal,
    ) -> Result<Principal, RpcError> {
        let _ = current;
        self.authenticate(token, peer)
    }

    /// Whether a principal this authenticator established is still valid (its
    /// credential was not revoked since). Asked before every request of a connection
    /// whose principal has a [`Principal::credential_id`]; a `false` closes the
    /// connection with `Unauthenticated`. Must be cheap. Default: always valid.
    fn still_valid(&self, principal: &Principal) -> bool {
        let _ = principal;
        true
    }
}

/// Body of the `Response` to a successful `Auth` frame (Qiss-encoded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthOk {
    /// The principal the server established.
    pub principal: String,
}

/// An [`Authenticator`] over a fixed table of tokens: for tests, examples and
/// development setups.
#[derive(Debug, Clone, Default)]
pub struct StaticTokens {
    tokens: HashMap<Vec<u8>, Principal>,
}

impl StaticTokens {
    /// An empty table (rejects everything).
    pub fn new() -> StaticTokens {
        StaticTokens::default()
    }

    /// Accept `token` as `principal`.
    pub fn with_token(
        mut self,
        token: impl Into<Vec<u8>>,
        principal: impl Into<String>,
    ) -> StaticTokens {
        self.tokens.insert(token.into(), Principal::new(principal));
        self
    }
}

impl Authenticator for StaticTokens {
    fn authenticate(&self, token: &[u8], _peer: &PeerInfo) -> Result<Principal, RpcError> {
        self.tokens
            .get(token)
            .cloned()
            .ok_or_else(|| RpcError::new(ErrorCode::Unauthenticated, "unknown token"))
    }
}
