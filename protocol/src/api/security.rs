//! Security administration: users, roles, grants, role assignments, ACLs, API keys and
//! quotas, changed
//! through the metadata Raft group (any node answers; the change is applied on every
//! node within a second, open connections included).
//!
//! | method | request | response |
//! |---|---|---|
//! | `alter_security` (21) | [`AlterSecurityRequest`] | [`AlterSecurityResponse`] |
//! | `describe_security` (22) | [`DescribeSecurityRequest`] | [`SecurityDescription`] |
//!
//! Rate limits (`SetQuota`) need `alter` on `cluster:quotas`; an over-limit request is
//! answered `Throttled` with the delay in milliseconds in the error's details.
//!
//! Grants are written in the CLI's form: `resource` = `KIND:PATTERN` (`topic:orders.*`,
//! `group:*`, `cluster:*`) and `operations` = a comma-separated list
//! (`produce,describe`). Errors: `InvalidArgument` (bad name, pattern or operation),
//! `NotFound`-like refusals as `InvalidArgument` naming what is missing,
//! `PermissionDenied` (the caller lacks `admin` on `acl:<role>` or `user:<principal>`
//! (users, API keys, ACLs), or `describe` on `acl:*`), `NotLeader`.
//!
//! Variants and fields are only ever appended (the encoding is positional). Changes are accepted with security off
//! too: they take effect when it is turned on.

use serde::{Deserialize, Serialize};

/// One change to the cluster's security state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SecurityChange {
    /// A new role without grants.
    CreateRole {
        /// Role name.
        role: String,
    },
    /// Deletes a role and its assignments.
    DeleteRole {
        /// Role name.
        role: String,
    },
    /// Adds operations on resources to a role.
    Grant {
        /// Role name.
        role: String,
        /// `KIND:PATTERN`.
        resource: String,
        /// `op,op,...`.
        operations: String,
    },
    /// Removes operations on resources from a role.
    Revoke {
        /// Role name.
        role: String,
        /// `KIND:PATTERN`.
        resource: String,
        /// `op,op,...`.
        operations: String,
    },
    /// Gives a principal a role.
    Assign {
        /// Role name.
        role: String,
        /// Principal name.
        principal: String,
    },
    /// Takes a role from a principal.
    Unassign {
        /// Role name.
        role: String,
        /// Principal name.
        principal: String,
    },
    /// Creates an API key for a principal; the answer carries the key, once.
    CreateApiKey {
        /// Principal name.
        principal: String,
    },
    /// Revokes an API key (connections that used it are closed within a second).
    RevokeApiKey {
        /// The key id (`neo user api-key create` prints it).
        key_id: String,
    },
    /// Sets (replaces) the rate limits of a scope; every rate `None` removes them.
    SetQuota {
        /// Whose limits.
        scope: QuotaScope,
        /// The limits.
        quota: QuotaLimits,
    },
    /// Registers a user (a principal name; JWT and certificate principals need none).
    CreateUser {
        /// Principal name.
        name: String,
    },
    /// Deletes a user: its record, role assignments and ACLs; revokes its API keys
    /// (connections that used them are refused at their next request).
    DeleteUser {
        /// Principal name.
        name: String,
    },
    /// Grants a principal operations on resources directly (an ACL).
    GrantAcl {
        /// Principal name.
        principal: String,
        /// `KIND:PATTERN`.
        resource: String,
        /// `op,op,...`.
        operations: String,
    },
    /// Removes operations from a principal's ACL.
    RevokeAcl {
        /// Principal name.
        principal: String,
        /// `KIND:PATTERN`.
        resource: String,
        /// `op,op,...`.
        operations: String,
    },
    /// Removes every ACL of a principal (none is not an error).
    DeleteAcls {
        /// Principal name.
        principal: String,
    },
}

/// Whose rate limits a [`SecurityChange::SetQuota`] sets. A principal's limit of each
/// kind is its own if set, else the highest of its roles', else the default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum QuotaScope {
    /// Every principal without a limit of its own or of a role.
    Default,
    /// Each client address, for requests without a principal.
    ClientIp,
    /// One principal.
    Principal(String),
    /// Principals holding a role.
    Role(String),
}

/// Rate and connection limits (`None`: no limit of that kind).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaLimits {
    /// Bytes of produced record batches per second.
    pub produce_bytes_per_sec: Option<u64>,
    /// Bytes of fetched record batches per second.
    pub fetch_bytes_per_sec: Option<u64>,
    /// Requests of any method per second.
    pub requests_per_sec: Option<u64>,
    /// Concurrent connections on each node: per principal (default, principal and role
    /// scopes), or per client address (client-ip scope: every connection from it that
    /// reaches the handshake). Over it, the handshake is refused with `Throttled`.
    pub connections: Option<u64>,
}

/// One scope's limits, as `describe_security` lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaDescription {
    /// Whose.
    pub scope: QuotaScope,
    /// The limits.
    pub quota: QuotaLimits,
}

/// `alter_security` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlterSecurityRequest {
    /// The change.
    pub change: SecurityChange,
}

/// `alter_security` response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlterSecurityResponse {
    /// `CreateApiKey` only: the key id.
    pub key_id: Option<String>,
    /// `CreateApiKey` only: the whole key, shown this once (the cluster keeps a salted
    /// hash).
    pub api_key: Option<String>,
}

/// `describe_security` request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescribeSecurityRequest {}

/// One grant of a role, in the CLI's form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantDescription {
    /// `KIND:PATTERN`.
    pub resource: String,
    /// Operation names.
    pub operations: Vec<String>,
}

/// A role, its grants and the principals it is assigned to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleDescription {
    /// Role name.
    pub name: String,
    /// Grants.
    pub grants: Vec<GrantDescription>,
    /// Principals assigned the role.
    pub principals: Vec<String>,
}

/// An API key's public part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyDescription {
    /// Key id.
    pub key_id: String,
    /// Principal it authenticates.
    pub principal: String,
    /// Whether it was revoked.
    pub revoked: bool,
}

/// A registered user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserDescription {
    /// Principal name.
    pub name: String,
    /// When it was registered (seconds since the Unix epoch).
    pub created_at_unix_secs: u64,
}

/// A principal's direct grants (ACLs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclDescription {
    /// Principal name.
    pub principal: String,
    /// Its grants, in the CLI's form.
    pub grants: Vec<GrantDescription>,
}

/// `describe_security` response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityDescription {
    /// Whether the cluster enforces authentication and authorization.
    pub enabled: bool,
    /// Roles by name.
    pub roles: Vec<RoleDescription>,
    /// API keys (never the secrets).
    pub api_keys: Vec<ApiKeyDescription>,
    /// Configured superusers.
    pub superusers: Vec<String>,
    /// Rate limits: the default, per client address, per principal, per role.
    pub quotas: Vec<QuotaDescription>,
    /// Registered users, by name (role assignments are in `roles`, keys in
    /// `api_keys`, direct grants in `acls`).
    pub users: Vec<UserDescription>,
    /// Direct grants, by principal.
    pub acls: Vec<AclDescription>,
}
