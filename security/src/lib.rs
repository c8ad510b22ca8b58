//! `neo-security`: authentication, authorization, rate limits and payload encryption.
//!
//! **Status: not built yet.** This file is the map of what the crate will hold; no
//! function here pretends to work.
//!
//! # Layout (planned)
//! - `authn`: JWT (jsonwebtoken), API keys, mTLS peer identities → a `Principal`.
//! - `rbac`: roles and permissions; `authorize(principal, action, resource)` returns an
//!   `Authorized` proof value that only this crate can make, and broker handlers take it.
//! - `rate`: token buckets per principal and per connection.
//! - `crypto`: payload encryption (AES-256-GCM, ChaCha20-Poly1305) with key rotation.
//! - `tls`: rustls server and client configs.
//!
//! # Invariants
//! - Decisions are pure functions; the caller does the I/O.
#![forbid(unsafe_code)]
