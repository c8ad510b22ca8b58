//! The authentication handshake's pluggable check.
//!
//! A connection to a server that has an [`Authenticator`] must send an `Auth` frame
//! (body: the token) before anything but heartbeats. The server calls
//! [`Authenticator::authenticate`] with the token and what it knows of the peer (address,
//! TLS client certificate); the [`Principal`] it returns is attached to the connection
//! and visible to every handler through [`crate::RequestContext::principal`].
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
}

impl Principal {
    /// A principal with this name, no roles, no expiry.
    pub fn new(name: impl Into<String>) -> Principal {
        Principal {
            name: name.into(),
            roles: Vec::new(),
            expires_at_unix_secs: None,
            credential_id: None,
        }
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
