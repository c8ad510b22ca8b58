//! `alter_security` and `describe_security`: users, roles, grants, assignments, ACLs,
//! API keys and quotas.
//!
//! A change is committed through the metadata group (at its leader; elsewhere
//! `NotLeader` with the leader's client address) and reaches every node's
//! authorizer with the next applied metadata state, open connections included.
//!
//! Who may: role and grant changes need `admin` on `acl:<role>`; users, their API keys
//! and their ACLs need `admin` on `user:<principal>`; quotas `alter` on
//! `cluster:quotas`; describing needs `describe` on `acl:*` (`acl` is
//! the CLI's alias of the `user` resource type: one type covers users, roles, keys). Changes are
//! accepted with security off too (they take effect when it is turned on).
//!
//! Errors: `InvalidArgument` (bad name, grant, unknown role or key, limits),
//! `PermissionDenied`, `NotLeader`.

use neo_protocol::RpcError;
use neo_protocol::api::{
    AclDescription, AlterSecurityRequest, AlterSecurityResponse, ApiKeyDescription,
    DescribeSecurityRequest, GrantDescription, QuotaDescription, QuotaLimits, QuotaScope,
    RoleDescription, SecurityChange, SecurityDescription, UserDescription,
};
use neo_raft::Role;
use neo_security::authn::{ApiKeyRecord, unix_now_secs};
use neo_security::rate::Quota;
use neo_security::rbac::Grant;
use neo_security::{Operation, ResourceType, SecurityContext};

use super::{broker_error, meta_error, not_leader};
use crate::facade::Broker;
use crate::meta::security::SecurityCommand;
use crate::meta::{MetaCommand, MetaResponse};

pub(crate) async fn alter_security(
    b: &Broker,
    ctx: &SecurityContext,
    req: AlterSecurityRequest,
) -> Result<AlterSecurityResponse, RpcError> {
    let acl = |role: &str| b.authorize(ctx, ResourceType::User, role, Operation::Admin);
    // Users, their keys and their ACLs: `admin` on `user:<principal>` (the same check).
    let user = acl;
    let grant = |resource: &str, operations: &str| {
        Grant::parse(resource, operations).map_err(|e| RpcError::invalid_argument(e.to_string()))
    };
    let mut answer = AlterSecurityResponse::default();
    let what = change_name(&req.change);
    let cmd = match req.change {
        SecurityChange::CreateRole { role } => {
            acl(&role)?;
            SecurityCommand::CreateRole { role }
        }
        SecurityChange::DeleteRole { role } => {
            acl(&role)?;
            SecurityCommand::DeleteRole { role }
        }
        SecurityChange::Grant {
            role,
            resource,
            operations,
        } => {
            acl(&role)?;
            SecurityCommand::Grant {
                grant: grant(&resource, &operations)?,
                role,
            }
        }
        SecurityChange::Revoke {
            role,
            resource,
            operations,
        } => {
            acl(&role)?;
            SecurityCommand::Revoke {
                grant: grant(&resource, &operations)?,
                role,
            }
        }
        SecurityChange::Assign { role, principal } => {
            acl(&role)?;
            SecurityCommand::Assign { role, principal }
        }
        SecurityChange::Unassign { role, principal } => {
            acl(&role)?;
            SecurityCommand::Unassign { role, principal }
        }
        SecurityChange::CreateApiKey { principal } => {
            user(&principal)?;
            let (key, record) = ApiKeyRecord::generate(&principal, unix_now_secs())
                .map_err(|e| RpcError::invalid_argument(e.to_string()))?;
            answer.key_id = Some(key.key_id.clone());
            answer.api_key = Some(key.token.clone());
            SecurityCommand::AddApiKey { record }
        }
        SecurityChange::SetQuota { scope, quota } => {
            b.authorize(ctx, ResourceType::Cluster, "quotas", Operation::Alter)?;
            SecurityCommand::SetLimits {
                scope,
                quota: Quota {
                    produce_bytes_per_sec: quota.produce_bytes_per_sec,
                    fetch_bytes_per_sec: quota.fetch_bytes_per_sec,
                    requests_per_sec: quota.requests_per_sec,
                    connections: quota.connections,
                },
            }
        }
        SecurityChange::CreateUser { name } => {
            user(&name)?;
            SecurityCommand::CreateUser {
                name,
                now_unix_secs: unix_now_secs(),
            }
        }
        SecurityChange::DeleteUser { name } => {
            user(&name)?;
            SecurityCommand::DeleteUser {
                name,
                now_unix_secs: unix_now_secs(),
            }
        }
        SecurityChange::GrantAcl {
            principal,
            resource,
            operations,
        } => {
            user(&principal)?;
            SecurityCommand::GrantAcl {
                grant: grant(&resource, &operations)?,
                principal,
            }
        }
        SecurityChange::RevokeAcl {
            principal,
            resource,
            operations,
        } => {
            user(&principal)?;
            SecurityCommand::RevokeAcl {
                grant: grant(&resource, &operations)?,
                principal,
            }
        }
        SecurityChange::DeleteAcls { principal } => {
            user(&principal)?;
            SecurityCommand::DeleteAcls { principal }
        }
        SecurityChange::RevokeApiKey { key_id } => {
            let owner = b
                .state()
                .security
                .api_keys
                .get(&key_id)
                .map(|r| r.principal.clone())
                .ok_or_else(|| {
                    RpcError::invalid_argument(format!("unknown API key id {key_id:?}"))
                })?;
            b.authorize(ctx, ResourceType::User, &owner, Operation::Admin)?;
            SecurityCommand::RevokeApiKey {
                key_id,
                now_unix_secs: unix_now_secs(),
            }
        }
    };
    let m = b.meta_group().metrics();
    if m.role != Role::Leader {
        return Err(not_leader(b, m.leader, "the metadata group"));
    }
    match crate::meta::propose(b.meta_group(), &MetaCommand::Security(cmd))
        .await
        .map_err(|e| broker_error(b, e, "the metadata group"))?
    {
        MetaResponse::Refused(e) => Err(meta_error(e)),
        _ => {
            tracing::info!(
                target: "neo::audit",
                who = %ctx.describe(),
                change = what,
                key_id = answer.key_id.as_deref().unwrap_or(""),
                "security state changed"
            );
            Ok(answer)
        }
    }
}

pub(crate) fn describe_security(
    b: &Broker,
    ctx: &SecurityContext,
    _req: DescribeSecurityRequest,
) -> Result<SecurityDescription, RpcError> {
    b.authorize(ctx, ResourceType::User, "*", Operation::Describe)?;
    let state = b.state();
    let rbac = &state.security.rbac;
    let roles = rbac
        .roles
        .iter()
        .map(|(name, role)| RoleDescription {
            name: name.clone(),
            grants: role.grants.iter().map(grant_description).collect(),
            principals: rbac
                .users
                .iter()
                .filter(|(_, u)| u.roles.contains(name))
                .map(|(p, _)| p.clone())
                .collect(),
        })
        .collect();
    let api_keys = state
        .security
        .api_keys
        .iter()
        .map(|k| ApiKeyDescription {
            key_id: k.key_id.clone(),
            principal: k.principal.clone(),
            revoked: k.is_revoked(),
        })
        .collect();
    let q = &state.security.quotas;
    let limits = |q: &Quota| QuotaLimits {
        produce_bytes_per_sec: q.produce_bytes_per_sec,
        fetch_bytes_per_sec: q.fetch_bytes_per_sec,
        requests_per_sec: q.requests_per_sec,
        connections: q.connections,
    };
    let mut quotas = Vec::new();
    for (scope, quota) in [
        (QuotaScope::Default, &q.principal_default),
        (QuotaScope::ClientIp, &q.per_ip),
    ] {
        if *quota != Quota::default() {
            quotas.push(QuotaDescription {
                scope,
                quota: limits(quota),
            });
        }
    }
    quotas.extend(q.per_principal.iter().map(|(p, quota)| QuotaDescription {
        scope: QuotaScope::Principal(p.clone()),
        quota: limits(quota),
    }));
    quotas.extend(q.per_role.iter().map(|(r, quota)| QuotaDescription {
        scope: QuotaScope::Role(r.clone()),
        quota: limits(quota),
    }));
    let users = state
        .security
        .users
        .iter()
        .map(|(name, u)| UserDescription {
            name: name.clone(),
            created_at_unix_secs: u.created_at_unix_secs,
        })
        .collect();
    let acls = rbac
        .acls
        .iter()
        .map(|(principal, grants)| AclDescription {
            principal: principal.clone(),
            grants: grants.iter().map(grant_description).collect(),
        })
        .collect();
    Ok(SecurityDescription {
        enabled: b.security_enabled(),
        roles,
        api_keys,
        superusers: b.superusers().to_vec(),
        quotas,
        users,
        acls,
    })
}

/// The audit log's name of a change.
fn change_name(change: &SecurityChange) -> &'static str {
    match change {
        SecurityChange::CreateRole { .. } => "create_role",
        SecurityChange::DeleteRole { .. } => "delete_role",
        SecurityChange::Grant { .. } => "grant",
        SecurityChange::Revoke { .. } => "revoke",
        SecurityChange::Assign { .. } => "assign",
        SecurityChange::Unassign { .. } => "unassign",
        SecurityChange::CreateApiKey { .. } => "create_api_key",
        SecurityChange::RevokeApiKey { .. } => "revoke_api_key",
        SecurityChange::SetQuota { .. } => "set_quota",
        SecurityChange::CreateUser { .. } => "create_user",
        SecurityChange::DeleteUser { .. } => "delete_user",
        SecurityChange::GrantAcl { .. } => "grant_acl",
        SecurityChange::RevokeAcl { .. } => "revoke_acl",
        SecurityChange::DeleteAcls { .. } => "delete_acls",
    }
}

fn grant_description(g: &Grant) -> GrantDescription {
    GrantDescription {
        resource: format!("{}:{}", g.resource, g.pattern),
        operations: g.operations.iter().map(|o| o.name().to_string()).collect(),
    }
}
