//! The crate's one error type, and its mapping to neo-protocol's wire errors.
//!
//! Every refusal is typed: an authentication failure carries an [`AuthFailure`] (tests
//! and the audit log match on it), a denial names the principal, resource and operation,
//! a throttle carries the delay to answer with. [`SecurityError::to_rpc_error`] is the
//! one place these become wire codes.

use std::fmt;

use neo_protocol::{ErrorCode, RpcError};

use crate::rbac::Operation;

/// How a client tried to authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthMethod {
    /// A JSON Web Token.
    Jwt,
    /// A Neo API key (`neoak_…`).
    ApiKey,
    /// A TLS client certificate (mTLS) with an empty handshake token.
    Certificate,
    /// An operator-supplied [`neo_protocol::Authenticator`].
    Custom,
}

impl fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthMethod::Jwt => "jwt",
            AuthMethod::ApiKey => "api-key",
            AuthMethod::Certificate => "certificate",
            AuthMethod::Custom => "custom",
        })
    }
}

/// Why a credential was refused. The texts are safe to send to the client: they never
/// contain the token, a secret, or a claim value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum AuthFailure {
    /// The token is longer than [`crate::limits::TOKEN_SIZE_BYTES_MAX`].
    #[error("token too large")]
    Oversized,
    /// The token is not well-formed for its kind (segments, base64url, JSON, UTF-8).
    #[error("malformed token")]
    Malformed,
    /// The token matches no documented token format.
    #[error("unrecognised token format")]
    UnknownTokenKind,
    /// The token's kind is recognised but that method is not enabled on this server.
    #[error("authentication method not enabled")]
    MethodDisabled,
    /// A JWT with `alg: none` (unsigned).
    #[error("unsigned token (alg none) refused")]
    AlgorithmNone,
    /// A JWT whose `alg` is not accepted, or not the algorithm of the key it names.
    #[error("token algorithm not allowed")]
    AlgorithmNotAllowed,
    /// A JWT whose `kid` names no configured key.
    #[error("unknown signing key")]
    UnknownKey,
    /// The signature does not verify under any candidate key.
    #[error("bad token signature")]
    BadSignature,
    /// `exp` is past (beyond the allowed clock skew).
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future (beyond the allowed clock skew).
    #[error("token not yet valid")]
    NotYetValid,
    /// `iss` is not the configured issuer.
    #[error("wrong token issuer")]
    WrongIssuer,
    /// `aud` does not contain the configured audience.
    #[error("wrong token audience")]
    WrongAudience,
    /// A required claim is absent.
    #[error("token lacks the {claim} claim")]
    MissingClaim {
        /// The claim's name.
        claim: &'static str,
    },
    /// A claim has the wrong type or an invalid value.
    #[error("token has an invalid {claim} claim")]
    BadClaim {
        /// The claim's name (`roles` stands for the configured roles claim).
        claim: &'static str,
    },
    /// The API key id is unknown or its secret does not match (one reason for both, so a
    /// probe learns nothing about which key ids exist).
    #[error("invalid API key")]
    ApiKeyInvalid,
    /// The API key was revoked.
    #[error("API key revoked")]
    ApiKeyRevoked,
    /// Certificate authentication was asked for on a connection without a verified
    /// client certificate.
    #[error("no client certificate")]
    NoCertificate,
    /// The client certificate carries no name the mapping rules accept.
    #[error("client certificate names no acceptable principal")]
    NoCertificateName,
    /// An operator-supplied authenticator refused the token.
    #[error("refused by custom authenticator")]
    Custom,
}

/// Why payload encryption or decryption failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoFailure {
    /// The envelope names a key the key ring does not hold (never had, or retired).
    #[error("unknown encryption key {key_id:?}")]
    UnknownKey {
        /// The key id from the envelope.
        key_id: String,
    },
    /// The key ring has no current key to encrypt with.
    #[error("no current encryption key")]
    NoCurrentKey,
    /// Authentication of the ciphertext failed: a different key under the same id, a
    /// changed byte, or different associated data (e.g. another topic).
    #[error("decryption failed: wrong key or tampered data")]
    DecryptFailed,
    /// The envelope is truncated or its header is invalid.
    #[error("malformed envelope")]
    Malformed,
    /// The envelope's format version is not one this build reads.
    #[error("unsupported envelope version {version}")]
    UnsupportedVersion {
        /// The version byte found.
        version: u8,
    },
    /// The envelope names an algorithm this build does not know.
    #[error("unsupported algorithm id {algorithm}")]
    UnsupportedAlgorithm {
        /// The algorithm byte found.
        algorithm: u8,
    },
    /// The random source failed.
    #[error("random source failed")]
    Random,
}

/// Everything that can go wrong in this crate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecurityError {
    /// A credential was refused. On the wire: `Unauthenticated`, and the connection is
    /// closed.
    #[error("authentication failed: {reason}")]
    Unauthenticated {
        /// The method tried, when the token's kind was recognised.
        method: Option<AuthMethod>,
        /// What was wrong.
        reason: AuthFailure,
    },
    /// The principal may not do this. On the wire: `PermissionDenied`.
    #[error("{principal} may not {operation} {resource}")]
    PermissionDenied {
        /// Who asked (`anonymous` when unauthenticated).
        principal: String,
        /// `kind:name`, e.g. `topic:orders.eu`.
        resource: String,
        /// What was asked.
        operation: Operation,
    },
    /// Over a rate limit: answer after `retry_after_ms` (never close the connection).
    #[error("throttled on {limit}: retry after {retry_after_ms} ms")]
    Throttled {
        /// Which limit.
        limit: crate::rate::LimitKind,
        /// How long the client should wait before the next such request.
        retry_after_ms: u64,
    },
    /// A handshake over the `connections` quota: the principal (or client address)
    /// already has `max` connections open on this node. On the wire: `Throttled` with
    /// [`crate::limits::CONNECTION_RETRY_AFTER_MS`]; the refused connection is closed,
    /// the open ones are untouched.
    #[error("{who} already has {max} connections open on this node (its connections quota)")]
    TooManyConnections {
        /// `principal NAME` or `client address IP`.
        who: String,
        /// The limit.
        max: u64,
    },
    /// Payload encryption or decryption failed.
    #[error("{0}")]
    Crypto(#[from] CryptoFailure),
    /// Key material could not be used (bad PEM, bad JWKS, weak secret, wrong length).
    #[error("invalid key ({what}): {reason}")]
    InvalidKey {
        /// Which key or file.
        what: String,
        /// Why.
        reason: String,
    },
    /// A name, pattern, operation or setting is not valid.
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        /// What kind of value.
        what: &'static str,
        /// The value given (never a secret).
        value: String,
        /// Why.
        reason: &'static str,
    },
    /// A state change names something that does not exist.
    #[error("{what} {name:?} does not exist")]
    NotFound {
        /// What kind of thing.
        what: &'static str,
        /// Its name.
        name: String,
    },
    /// A state change would create something that exists.
    #[error("{what} {name:?} already exists")]
    AlreadyExists {
        /// What kind of thing.
        what: &'static str,
        /// Its name.
        name: String,
    },
    /// A state change would pass one of [`crate::limits`].
    #[error("too many {what} (at most {max})")]
    LimitExceeded {
        /// What would overflow.
        what: &'static str,
        /// The limit.
        max: usize,
    },
}

impl SecurityError {
    /// Shorthand for an authentication failure.
    pub fn unauthenticated(method: Option<AuthMethod>, reason: AuthFailure) -> SecurityError {
        SecurityError::Unauthenticated { method, reason }
    }

    /// The authentication failure reason, if this is one.
    pub fn auth_failure(&self) -> Option<AuthFailure> {
        match self {
            SecurityError::Unauthenticated { reason, .. } => Some(*reason),
            _ => None,
        }
    }

    /// The error as it travels to a client.
    ///
    /// `Throttled` carries the delay in milliseconds (decimal ASCII) in `details`.
    pub fn to_rpc_error(&self) -> RpcError {
        let code = match self {
            SecurityError::Unauthenticated { .. } => ErrorCode::Unauthenticated,
            SecurityError::PermissionDenied { .. } => ErrorCode::PermissionDenied,
            SecurityError::Throttled { retry_after_ms, .. } => {
                return RpcError::new(ErrorCode::Throttled, self.to_string())
                    .with_details(retry_after_ms.to_string().into_bytes());
            }
            SecurityError::TooManyConnections { .. } => {
                return RpcError::new(ErrorCode::Throttled, self.to_string()).with_details(
                    crate::limits::CONNECTION_RETRY_AFTER_MS
                        .to_string()
                        .into_bytes(),
                );
            }
            SecurityError::Invalid { .. }
            | SecurityError::NotFound { .. }
            | SecurityError::AlreadyExists { .. }
            | SecurityError::LimitExceeded { .. } => ErrorCode::InvalidArgument,
            SecurityError::Crypto(_) | SecurityError::InvalidKey { .. } => ErrorCode::Internal,
        };
        RpcError::new(code, self.to_string())
    }
}

impl From<SecurityError> for RpcError {
    fn from(err: SecurityError) -> RpcError {
        err.to_rpc_error()
    }
}

/// Check a principal, role or resource name: 1..=[`NAME_BYTES_MAX`] bytes, no control
/// characters, no leading or trailing whitespace.
///
/// [`NAME_BYTES_MAX`]: crate::limits::NAME_BYTES_MAX
pub(crate) fn check_name(what: &'static str, name: &str) -> Result<(), SecurityError> {
    let reason = if name.is_empty() {
        "empty"
    } else if name.len() > crate::limits::NAME_BYTES_MAX {
        "too long"
    } else if name.chars().any(char::is_control) {
        "contains control characters"
    } else if name.trim() != name {
        "leading or trailing whitespace"
    } else {
        return Ok(());
    };
    Err(SecurityError::Invalid {
        what,
        value: name.chars().take(64).collect(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate::LimitKind;

    #[test]
    fn wire_codes() {
        let unauth = SecurityError::unauthenticated(Some(AuthMethod::Jwt), AuthFailure::Expired);
        assert_eq!(
            unauth.to_rpc_error().error_code(),
            Some(ErrorCode::Unauthenticated)
        );
        assert_eq!(unauth.to_string(), "authentication failed: token expired");
        let denied = SecurityError::PermissionDenied {
            principal: "alice".into(),
            resource: "topic:orders".into(),
            operation: Operation::Delete,
        };
        assert_eq!(denied.to_string(), "alice may not delete topic:orders");
        assert_eq!(
            denied.to_rpc_error().error_code(),
            Some(ErrorCode::PermissionDenied)
        );
        let throttled = SecurityError::Throttled {
            limit: LimitKind::Requests,
            retry_after_ms: 250,
        };
        let wire = throttled.to_rpc_error();
        assert_eq!(wire.error_code(), Some(ErrorCode::Throttled));
        assert_eq!(wire.details, b"250");
    }

    #[test]
    fn names() {
        assert!(check_name("principal", "alice@example.com").is_ok());
        assert!(check_name("principal", "").is_err());
        assert!(check_name("principal", " alice").is_err());
        assert!(check_name("principal", "al\nice").is_err());
        assert!(check_name("principal", &"a".repeat(257)).is_err());
    }
}
