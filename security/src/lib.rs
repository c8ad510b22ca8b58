//! `neo-security`: authentication, authorization, rate limits and payload encryption.
//!
//! # Layout
//!
//! | module | role | status |
//! |---|---|---|
//! | [`context`] | [`SecurityContext`]: the principal, its roles and the peer address of one request; every `neo-broker` operation takes one | built |
//! | `authn` | JWT (jsonwebtoken), API keys, mTLS peer identities → a principal, behind neo-protocol's `Authenticator` | planned |
//! | `rbac` | roles and permissions; `authorize(context, operation, resource)` returns an `Authorized` proof value that only this crate can make | planned |
//! | `rate` | token buckets per principal and per connection | planned |
//! | `crypto` | payload encryption (AES-256-GCM, ChaCha20-Poly1305) with key rotation | planned |
//!
//! # Request flow
//!
//! ```text
//! Neo RPC connection (peer addr, handshake principal) ─► neo-node builds SecurityContext
//!   ─► neo-broker's Broker::<operation>(&SecurityContext, request)
//!        (planned: ─► rbac::authorize ─► rate::check ─► the operation)
//! ```
//!
//! # Invariants
//! - Decisions are pure functions; the caller does the I/O.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod context;

pub use context::SecurityContext;
