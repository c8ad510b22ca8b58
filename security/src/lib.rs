//! `neo-security`: authentication, authorization, rate limits and payload encryption,
//! as pure decisions. It does no I/O: the node reads key files and the metadata group's
//! state and feeds them in, passes the clock in, and acts on the answers.
//!
//! # Layout
//!
//! | module | role | status |
//! |---|---|---|
//! | [`context`] | [`SecurityContext`]: the principal, its roles and the peer address of one request; every `neo-broker` operation takes one | built |
//! | [`authn`] | handshake token → [`Identity`]: [`authn::jwt`] (HS256/RS256/ES256/EdDSA, PEM or JWKS keys), [`authn::api_key`] (salted-hash API keys), [`authn::cert`] (mTLS name mapping), and [`Authenticators`], the chain behind neo-protocol's `Authenticator` | built, not wired |
//! | [`rbac`] | roles → grants (resource type × name pattern × operations); [`Authorizer`], the compiled checker whose [`rbac::Authorized`] proof only this crate can make | built, not wired |
//! | [`rate`] | token buckets per principal and per client IP (produce bytes/s, fetch bytes/s, requests/s) with the throttle delay | built, not wired |
//! | [`connections`] | the `connections` quota: open connections per principal and per client address, against their limits | built |
//! | [`crypto`] | AES-256-GCM / ChaCha20-Poly1305 envelopes under a rotating [`Keyring`] | built, not wired |
//! | [`state`] | [`SecurityState`]: users, roles, grants, ACLs, API key hashes, quotas (serde, for the metadata Raft group) | built |
//! | [`error`] | [`SecurityError`], its typed reasons and the mapping to wire codes | built |
//! | [`limits`] | every bound, units last | built |
//!
//! # Request flow (once wired; see docs/security.md)
//!
//! ```text
//! Auth frame (token, peer addr, TLS identity)
//!   ─► Authenticators::identify ─► Identity { principal, roles, expiry, key id }
//!   ─► neo-node builds SecurityContext for the connection
//!   ─► each request: RateLimiter::check ─► Authorizer::authorize ─► Authorized
//!        ─► neo-broker's Broker::<operation>(&SecurityContext, request)
//! ```
//!
//! # Invariants
//! - Decisions are pure functions of their inputs; time is an argument (the one
//!   exception is [`Authenticators`]' `Authenticator` impl, which reads the system clock
//!   because the protocol's hook has no clock parameter).
//! - Deny by default: no grant, no access; an unauthenticated request is denied.
//! - Secrets are never stored (API keys: salted hashes), never in `Debug` output, never
//!   in error texts.
//! - Every refusal is typed ([`error::AuthFailure`], [`error::CryptoFailure`]), so
//!   tests and the audit log match on the reason, not on text.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod authn;
pub mod connections;
pub mod context;
pub mod crypto;
pub mod error;
pub mod limits;
pub mod rate;
pub mod rbac;
pub mod state;

pub use authn::{Authenticators, Identity};
pub use context::SecurityContext;
pub use crypto::Keyring;
pub use error::{AuthFailure, AuthMethod, CryptoFailure, SecurityError};
pub use rate::RateLimiter;
pub use rbac::{Authorizer, Operation, ResourceType};
pub use state::SecurityState;
