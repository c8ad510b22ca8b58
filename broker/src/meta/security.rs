//! The security commands of the metadata group: roles, grants, role assignments and
//! API key records (users, roles and key hashes are replicated like topics, and are in
//! the metadata snapshots). Pure: randomness (API key generation) and the clock
//! (revocation time) are the proposer's, carried in the command.

use neo_security::SecurityState;
use neo_security::authn::ApiKeyRecord;
use neo_security::rate::Quota;
use neo_security::rbac::Grant;
use serde::{Deserialize, Serialize};

use super::state::MetaError;

/// A change to the replicated security state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SecurityCommand {
    /// A new role, without grants.
    CreateRole {
        /// Role name.
        role: String,
    },
    /// Deletes a role and its assignments.
    DeleteRole {
        /// Role name.
        role: String,
    },
    /// Adds a grant to a role (merging operations).
    Grant {
        /// Role name.
        role: String,
        /// The grant.
        grant: Grant,
    },
    /// Removes operations of a grant from a role.
    Revoke {
        /// Role name.
        role: String,
        /// The grant.
        grant: Grant,
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
    /// Stores a new API key's record (salted hash; the secret never enters the log).
    AddApiKey {
        /// The record the proposer generated.
        record: ApiKeyRecord,
    },
    /// Sets (replaces) one scope's rate limits.
    SetQuota {
        /// Whose.
        scope: neo_protocol::api::QuotaScope,
        /// The limits (all `None`: removed).
        quota: neo_security::rate::Quota,
    },
    /// Marks an API key revoked.
    RevokeApiKey {
        /// Key id.
        key_id: String,
        /// The proposer's clock.
        now_unix_secs: u64,
    },
}

/// Applies `cmd` to `state`; a refusal leaves it unchanged.
pub(crate) fn apply(state: &mut SecurityState, cmd: &SecurityCommand) -> Result<(), MetaError> {
    let refused = |e: neo_security::SecurityError| MetaError::Security {
        reason: e.to_string(),
    };
    match cmd {
        SecurityCommand::CreateRole { role } => state.rbac.create_role(role),
        SecurityCommand::DeleteRole { role } => state.rbac.delete_role(role),
        SecurityCommand::Grant { role, grant } => state.rbac.grant(role, grant.clone()),
        SecurityCommand::Revoke { role, grant } => state.rbac.revoke(role, grant),
        SecurityCommand::Assign { role, principal } => state.rbac.assign(role, principal),
        SecurityCommand::Unassign { role, principal } => state.rbac.unassign(role, principal),
        SecurityCommand::AddApiKey { record } => state.api_keys.insert(record.clone()),
        SecurityCommand::RevokeApiKey {
            key_id,
            now_unix_secs,
        } => state.api_keys.revoke(key_id, *now_unix_secs),
        SecurityCommand::SetQuota { scope, quota } => set_quota(state, scope, *quota),
    }
    .map_err(refused)
}

fn set_quota(
    state: &mut SecurityState,
    scope: &neo_protocol::api::QuotaScope,
    quota: Quota,
) -> Result<(), neo_security::SecurityError> {
    use neo_protocol::api::QuotaScope;
    let mut quotas = state.quotas.clone();
    let unset = quota == Quota::default();
    let keyed = |map: &mut std::collections::BTreeMap<String, Quota>, name: &str| {
        if unset {
            map.remove(name);
        } else {
            map.insert(name.to_string(), quota);
        }
    };
    match scope {
        QuotaScope::Default => quotas.principal_default = quota,
        QuotaScope::ClientIp => quotas.per_ip = quota,
        QuotaScope::Principal(p) => keyed(&mut quotas.per_principal, p),
        QuotaScope::Role(r) => keyed(&mut quotas.per_role, r),
    }
    quotas.validate()?;
    state.quotas = quotas;
    Ok(())
}
