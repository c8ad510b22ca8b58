//! [`SecurityAdmin`]: users, roles, grants, role assignments, ACLs (direct grants to a
//! principal), API keys and quotas (rate and connection limits), through the
//! `alter_security` (21) and `describe_security` (22) methods. What `neo user`,
//! `neo role`, `neo acl` and `neo quota` run.
//!
//! Any node answers (the change goes through the metadata Raft group and is applied on
//! every node within a second), so every call takes the client's any-broker path:
//! controller first, `NotLeader` hints followed, retriable failures retried per the
//! client's [`crate::RetryPolicy`].
//!
//! # Errors a caller should expect
//!
//! | code | when |
//! |---|---|
//! | `Unauthenticated` (30) | no credential, or one the cluster refused (the connection's handshake) |
//! | `PermissionDenied` (31) | the principal lacks `admin` on `acl:ROLE` (roles, grants, assignments) or `user:PRINCIPAL` (users, API keys, ACLs), `alter` on `cluster:quotas` (quotas), or `describe` on `acl:*` (describe); the message names principal, resource and operation |
//! | `InvalidArgument` (12) | a bad name, pattern or operation; a role, user, ACL or key that does not exist; a role or user that already exists; a rate or connection limit of 0; too many users or ACLs |
//! | `UnknownMethod` (11) | the node predates security administration |
//!
//! With security off the cluster accepts changes too (they take effect when it is turned
//! on); [`SecurityDescription::enabled`] says which.
//!
//! A change retried after a lost answer (a timeout, a dropped connection) may find its
//! first attempt applied: `create_role` and `create_user` then fail with "already
//! exists", `delete_user` with "does not exist", and
//! `create_api_key` may leave one more key for the principal, whose secret nobody ever
//! saw (list and revoke it with [`SecurityAdmin::describe`] and
//! [`SecurityAdmin::revoke_api_key`]). Grants, revokes, assignments, revocations,
//! ACL deletions and quotas are idempotent.

use neo_protocol::api::{
    AlterSecurityRequest, AlterSecurityResponse, DescribeSecurityRequest, QuotaLimits, QuotaScope,
    SecurityChange, SecurityDescription,
};
use neo_protocol::{ErrorCode, RpcError};

use crate::client::Client;
use crate::error::{Error, Result};

/// A newly created API key: the only moment its secret exists outside the holder's
/// hands (the cluster keeps a salted hash). `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct CreatedApiKey {
    /// The key id: not secret, it names the key in lists, revocations and logs.
    pub key_id: String,
    /// The whole key (`neoak_<key id>_<secret>`), to hand to its user once and to send
    /// as the handshake token (`neo --api-key`).
    pub api_key: String,
}

impl std::fmt::Debug for CreatedApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedApiKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// Security administration of a cluster. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SecurityAdmin {
    client: Client,
}

impl SecurityAdmin {
    /// A security admin handle on `client` (whose connections carry the admin's
    /// credential: `rpc.auth_token` of its [`crate::ClientConfig`]).
    pub fn new(client: Client) -> SecurityAdmin {
        SecurityAdmin { client }
    }

    /// Create a role without grants. Fails if it exists.
    pub async fn create_role(&self, role: &str) -> Result<()> {
        let role = required("role", role)?;
        self.alter(SecurityChange::CreateRole { role }).await?;
        Ok(())
    }

    /// Delete a role and its assignments.
    pub async fn delete_role(&self, role: &str) -> Result<()> {
        let role = required("role", role)?;
        self.alter(SecurityChange::DeleteRole { role }).await?;
        Ok(())
    }

    /// Allow `role` the `operations` (`produce`, `consume`, `describe`, `create`,
    /// `delete`, `alter`, `admin`, or `all`) on `resource` (`KIND:PATTERN`, e.g.
    /// `topic:orders.*`). Granting again merges the operations.
    pub async fn grant<S: AsRef<str>>(
        &self,
        role: &str,
        resource: &str,
        operations: &[S],
    ) -> Result<()> {
        let (role, resource, operations) = grant_args(role, resource, operations)?;
        self.alter(SecurityChange::Grant {
            role,
            resource,
            operations,
        })
        .await?;
        Ok(())
    }

    /// Take `operations` on `resource` away from `role` (same forms as
    /// [`SecurityAdmin::grant`]).
    pub async fn revoke<S: AsRef<str>>(
        &self,
        role: &str,
        resource: &str,
        operations: &[S],
    ) -> Result<()> {
        let (role, resource, operations) = grant_args(role, resource, operations)?;
        self.alter(SecurityChange::Revoke {
            role,
            resource,
            operations,
        })
        .await?;
        Ok(())
    }

    /// Give `principal` the role `role`.
    pub async fn assign(&self, role: &str, principal: &str) -> Result<()> {
        let role = required("role", role)?;
        let principal = required("principal", principal)?;
        self.alter(SecurityChange::Assign { role, principal })
            .await?;
        Ok(())
    }

    /// Take the role `role` from `principal`.
    pub async fn unassign(&self, role: &str, principal: &str) -> Result<()> {
        let role = required("role", role)?;
        let principal = required("principal", principal)?;
        self.alter(SecurityChange::Unassign { role, principal })
            .await?;
        Ok(())
    }

    /// Create an API key that authenticates as `principal`. The answer is the only
    /// copy of the key's secret.
    pub async fn create_api_key(&self, principal: &str) -> Result<CreatedApiKey> {
        let principal = required("principal", principal)?;
        let response = self
            .alter(SecurityChange::CreateApiKey { principal })
            .await?;
        created_key(response)
    }

    /// Revoke the API key `key_id`: it is refused from now on, and connections that
    /// authenticated with it are closed within a second.
    pub async fn revoke_api_key(&self, key_id: &str) -> Result<()> {
        let key_id = required("key id", key_id)?;
        self.alter(SecurityChange::RevokeApiKey { key_id }).await?;
        Ok(())
    }

    /// Register the user `name` (a principal name). JWT and certificate principals
    /// need no record; an API key registers its principal itself. Fails if it exists.
    pub async fn create_user(&self, name: &str) -> Result<()> {
        let name = required("user", name)?;
        self.alter(SecurityChange::CreateUser { name }).await?;
        Ok(())
    }

    /// Delete everything stored under the principal `name`: its user record, role
    /// assignments and ACLs; its API keys are revoked (connections that used them are
    /// refused at their next request). Fails if none of these exist.
    pub async fn delete_user(&self, name: &str) -> Result<()> {
        let name = required("user", name)?;
        self.alter(SecurityChange::DeleteUser { name }).await?;
        Ok(())
    }

    /// Allow `principal` the `operations` on `resource` directly (an ACL; same forms
    /// as [`SecurityAdmin::grant`]). It applies on open connections within a second.
    pub async fn grant_acl<S: AsRef<str>>(
        &self,
        principal: &str,
        resource: &str,
        operations: &[S],
    ) -> Result<()> {
        let (principal, resource, operations) =
            grant_args(principal, resource, operations).map_err(|e| rename_role(e, "principal"))?;
        self.alter(SecurityChange::GrantAcl {
            principal,
            resource,
            operations,
        })
        .await?;
        Ok(())
    }

    /// Take `operations` on `resource` away from `principal`'s ACLs.
    pub async fn revoke_acl<S: AsRef<str>>(
        &self,
        principal: &str,
        resource: &str,
        operations: &[S],
    ) -> Result<()> {
        let (principal, resource, operations) =
            grant_args(principal, resource, operations).map_err(|e| rename_role(e, "principal"))?;
        self.alter(SecurityChange::RevokeAcl {
            principal,
            resource,
            operations,
        })
        .await?;
        Ok(())
    }

    /// Remove every ACL of `principal` (none is not an error).
    pub async fn delete_acls(&self, principal: &str) -> Result<()> {
        let principal = required("principal", principal)?;
        self.alter(SecurityChange::DeleteAcls { principal }).await?;
        Ok(())
    }

    /// Set the rate and connection limits of `scope`, replacing its previous ones: a
    /// limit left `None` is no limit of that kind. The connection limit is counted per
    /// node at the handshake (a refused connection gets `Throttled`). All `None` removes a principal's or a role's entry (its
    /// principals fall back to their roles' limits, then the default) and clears the
    /// default or per-address limits. Needs `alter` on `cluster:quotas`. A principal's
    /// limit of each kind is its own, else the highest of its roles', else the default;
    /// requests without a principal are limited per client address. Over a limit, the
    /// cluster answers `Throttled` and this client waits and retries.
    ///
    /// A blank principal or role name, or a rate of 0, is refused before anything is
    /// sent.
    pub async fn set_quota(&self, scope: QuotaScope, quota: QuotaLimits) -> Result<()> {
        let (scope, quota) = quota_args(scope, quota)?;
        self.alter(SecurityChange::SetQuota { scope, quota })
            .await?;
        Ok(())
    }

    /// Whether security is enforced, every role (grants, principals), every API key
    /// (never a secret), the configured superusers and the quotas.
    pub async fn describe(&self) -> Result<SecurityDescription> {
        self.client
            .call_any("describe_security", &DescribeSecurityRequest {})
            .await
    }

    /// One change, as sent on the wire (every method above goes through here).
    pub async fn alter(&self, change: SecurityChange) -> Result<AlterSecurityResponse> {
        self.client
            .call_any("alter_security", &AlterSecurityRequest { change })
            .await
    }
}

/// `value`, owned, unless it is blank.
fn required(what: &str, value: &str) -> Result<String> {
    if value.trim().is_empty() {
        return Err(Error::InvalidArgument(format!("{what} must not be empty")));
    }
    Ok(value.to_string())
}

/// `grant_args`' "role must not be empty" said of another name.
fn rename_role(err: Error, what: &str) -> Error {
    match err {
        Error::InvalidArgument(m) if m.starts_with("role ") => {
            Error::InvalidArgument(format!("{what}{}", &m["role".len()..]))
        }
        other => other,
    }
}

/// The wire form of a grant or revoke: the resource checked for its `KIND:PATTERN`
/// shape, the operations joined with commas. Names and operation words are the
/// cluster's to check (it names what it refuses).
fn grant_args<S: AsRef<str>>(
    role: &str,
    resource: &str,
    operations: &[S],
) -> Result<(String, String, String)> {
    let role = required("role", role)?;
    match resource.split_once(':') {
        Some((kind, pattern)) if !kind.trim().is_empty() && !pattern.trim().is_empty() => {}
        _ => {
            return Err(Error::InvalidArgument(format!(
                "resource {resource:?} is not KIND:PATTERN (e.g. topic:orders.*)"
            )));
        }
    }
    if operations.is_empty() {
        return Err(Error::InvalidArgument(
            "at least one operation is required".into(),
        ));
    }
    let mut joined = Vec::with_capacity(operations.len());
    for op in operations {
        let op = op.as_ref().trim();
        if op.is_empty() || op.contains(',') {
            return Err(Error::InvalidArgument(format!(
                "operation {op:?} is not one word (produce, consume, describe, create, delete, alter, admin, all)"
            )));
        }
        joined.push(op);
    }
    Ok((role, resource.to_string(), joined.join(",")))
}

/// A `SetQuota` as sent: a principal or role named, every rate positive (`None` is how
/// "no limit" is said; the cluster refuses 0).
fn quota_args(scope: QuotaScope, quota: QuotaLimits) -> Result<(QuotaScope, QuotaLimits)> {
    let scope = match scope {
        QuotaScope::Principal(p) => QuotaScope::Principal(required("principal", &p)?),
        QuotaScope::Role(r) => QuotaScope::Role(required("role", &r)?),
        other => other,
    };
    for (what, rate) in [
        ("produce bytes per second", quota.produce_bytes_per_sec),
        ("fetch bytes per second", quota.fetch_bytes_per_sec),
        ("requests per second", quota.requests_per_sec),
        ("connections", quota.connections),
    ] {
        if rate == Some(0) {
            return Err(Error::InvalidArgument(format!(
                "{what} must be positive (leave it unset for no limit)"
            )));
        }
    }
    Ok((scope, quota))
}

/// The key of a `CreateApiKey` answer; an answer without one breaks the protocol.
fn created_key(response: AlterSecurityResponse) -> Result<CreatedApiKey> {
    match response {
        AlterSecurityResponse {
            key_id: Some(key_id),
            api_key: Some(api_key),
        } => Ok(CreatedApiKey { key_id, api_key }),
        _ => Err(Error::Broker(RpcError::new(
            ErrorCode::Malformed,
            "alter_security answered CreateApiKey without a key id and key",
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_arguments_take_the_wire_form() {
        let (role, resource, ops) =
            grant_args("writers", "topic:orders.*", &["produce", " describe"]).unwrap();
        assert_eq!(
            (role.as_str(), resource.as_str(), ops.as_str()),
            ("writers", "topic:orders.*", "produce,describe")
        );
        for bad in ["orders", "topic:", ":orders", ""] {
            let err = grant_args("r", bad, &["produce"]).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{bad}: {err}");
        }
        assert!(grant_args::<&str>("r", "topic:*", &[]).is_err());
        assert!(grant_args("r", "topic:*", &["produce,consume"]).is_err());
        assert!(grant_args("r", "topic:*", &[""]).is_err());
        assert!(grant_args(" ", "topic:*", &["produce"]).is_err());
        let err = grant_args("", "topic:*", &["produce"])
            .map_err(|e| rename_role(e, "principal"))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            Error::InvalidArgument("principal must not be empty".into()).to_string()
        );
    }

    #[test]
    fn quota_arguments_name_someone_and_limit_something() {
        let limits = QuotaLimits {
            produce_bytes_per_sec: Some(1 << 20),
            fetch_bytes_per_sec: None,
            requests_per_sec: Some(100),
            connections: Some(8),
        };
        for scope in [
            QuotaScope::Default,
            QuotaScope::ClientIp,
            QuotaScope::Principal("alice".into()),
            QuotaScope::Role("writers".into()),
        ] {
            assert_eq!(
                quota_args(scope.clone(), limits).unwrap(),
                (scope.clone(), limits)
            );
            // No limit at all: how an entry is removed.
            assert!(quota_args(scope, QuotaLimits::default()).is_ok());
        }
        for blank in ["", " "] {
            let err = quota_args(QuotaScope::Principal(blank.into()), limits).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
            assert!(quota_args(QuotaScope::Role(blank.into()), limits).is_err());
        }
        for zero in [
            QuotaLimits {
                produce_bytes_per_sec: Some(0),
                ..limits
            },
            QuotaLimits {
                fetch_bytes_per_sec: Some(0),
                ..limits
            },
            QuotaLimits {
                requests_per_sec: Some(0),
                ..limits
            },
            QuotaLimits {
                connections: Some(0),
                ..limits
            },
        ] {
            let err = quota_args(QuotaScope::Default, zero).unwrap_err();
            assert!(err.to_string().contains("must be positive"), "{err}");
        }
    }

    #[test]
    fn a_created_key_needs_both_parts_and_hides_its_secret() {
        let key = created_key(AlterSecurityResponse {
            key_id: Some("0123456789abcdef".into()),
            api_key: Some("neoak_0123456789abcdef_s3cret".into()),
        })
        .unwrap();
        assert_eq!(key.key_id, "0123456789abcdef");
        let shown = format!("{key:?}");
        assert!(
            shown.contains("0123456789abcdef") && !shown.contains("s3cret"),
            "{shown}"
        );
        let missing = created_key(AlterSecurityResponse::default()).unwrap_err();
        assert_eq!(missing.code(), Some(ErrorCode::Malformed));
        assert!(!missing.is_retriable());
    }
}
