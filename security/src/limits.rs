//! Every bound this crate enforces, in one place, units last in the name.
//!
//! Hostile input (tokens, JWKS files, envelopes) is checked against these before it is
//! parsed; state that grows with operator input (roles, grants, keys) is capped so that a
//! runaway script cannot make the metadata group or a check unbounded.

/// Largest handshake token any authenticator looks at. Real JWTs are well under 2 KiB
/// (an RS256 token with a few roles is ~800 B); identity providers that stuff group
/// lists into tokens reach 4-6 KiB. Anything longer is refused before it is decoded.
pub const TOKEN_SIZE_BYTES_MAX: usize = 8 * 1024;

/// Largest JWKS document accepted (a set of [`JWT_KEYS_MAX`] RSA-4096 keys is ~50 KiB).
pub const JWKS_SIZE_BYTES_MAX: usize = 256 * 1024;

/// Most keys in one JWT key set. A token without `kid` is tried against every key of
/// its algorithm, so this also bounds the signature checks one token can cost.
pub const JWT_KEYS_MAX: usize = 32;

/// The largest clock skew (seconds) an operator may allow on `exp`/`nbf`. Skew beyond
/// a few minutes means a broken clock, and would keep stolen tokens alive.
pub const CLOCK_SKEW_SECS_MAX: u64 = 300;

/// The clock skew used when none is configured.
pub const CLOCK_SKEW_SECS_DEFAULT: u64 = 60;

/// Smallest HS256 secret accepted: RFC 7518 §3.2 asks for a key at least as long as
/// the hash output (256 bits).
pub const HS256_SECRET_BYTES_MIN: usize = 32;

/// Most roles one token may state.
pub const ROLES_PER_TOKEN_MAX: usize = 64;

/// Longest principal, role, or resource name / pattern.
pub const NAME_BYTES_MAX: usize = 256;

/// Most roles defined in the cluster.
pub const ROLES_MAX: usize = 10_000;

/// Most grants in one role.
pub const GRANTS_PER_ROLE_MAX: usize = 1_024;

/// Most roles assigned to one principal.
pub const ROLES_PER_PRINCIPAL_MAX: usize = 256;

/// Most registered users (`neo user create`; a principal needs no record to
/// authenticate by JWT or certificate, so this bounds the registry, not who may connect).
pub const USERS_MAX: usize = 100_000;

/// Most direct grants (ACLs) on one principal (as [`GRANTS_PER_ROLE_MAX`] for a role).
pub const ACLS_PER_PRINCIPAL_MAX: usize = 1_024;

/// Most direct grants (ACLs) in the cluster, every principal together: each one is
/// compiled into every node's authorizer.
pub const ACLS_MAX: usize = 100_000;

/// How long a client refused for its principal's `connections` quota is told to wait
/// before trying again (a slot frees only when one of its connections closes, so this
/// is a polling interval, not a promise).
pub const CONNECTION_RETRY_AFTER_MS: u64 = 1_000;

/// Most API keys (live or revoked) kept in the state.
pub const API_KEYS_MAX: usize = 100_000;

/// Random bytes in an API key secret (256 bits: the secret is never guessable, which is
/// why a single salted SHA-256 is enough to store it; see `authn::api_key`).
pub const API_KEY_SECRET_BYTES: usize = 32;

/// Random bytes in an API key id.
pub const API_KEY_ID_BYTES: usize = 8;

/// Random bytes of salt per stored API key hash.
pub const API_KEY_SALT_BYTES: usize = 16;

/// Most per-principal plus per-role quota overrides kept in the state.
pub const QUOTA_OVERRIDES_MAX: usize = 10_000;

/// Most rate-limit keys (principals + client IPs) tracked at once; past it, idle
/// buckets are dropped and then new keys share one overflow bucket.
pub const RATE_KEYS_TRACKED_MAX: usize = 100_000;

/// Longest burst window a quota may configure (a bucket's capacity is rate × window).
pub const RATE_BURST_MS_MAX: u64 = 60_000;

/// Most keys in a payload-encryption key ring.
pub const KEYRING_KEYS_MAX: usize = 256;

/// Longest payload-encryption key id (it travels in every envelope).
pub const ENCRYPTION_KEY_ID_BYTES_MAX: usize = 64;
