//! The security commands of the metadata group: users, roles, grants, role
//! assignments, ACLs, API key records and quotas (replicated like topics, and in the
//! metadata snapshots). Pure: randomness (API key generation) and the clock (creation
//! and revocation times) are the proposer's, carried in the command.
//!
//! Commands are encoded positionally in the log: a variant's layout never changes once
//! released; a new need is a new variant at the end (`SetQuota` keeps the layout before
//! the `connections` quota, `SetLimits` has every kind).

use neo_security::SecurityState;
use neo_security::authn::ApiKeyRecord;
use neo_security::rate::{Quota, QuotaV1};
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
    /// Sets (replaces) one scope's rate limits; its connection limit is removed. The
    /// layout before the `connections` quota, for logs written by earlier releases:
    /// proposers use [`SecurityCommand::SetLimits`].
    SetQuota {
        /// Whose.
        scope: neo_protocol::api::QuotaScope,
        /// The limits (all `None`: removed).
        quota: QuotaV1,
    },
    /// Marks an API key revoked.
    RevokeApiKey {
        /// Key id.
        key_id: String,
        /// The proposer's clock.
        now_unix_secs: u64,
    },
    /// Registers a user.
    CreateUser {
        /// Principal name.
        name: String,
        /// The proposer's clock.
        now_unix_secs: u64,
    },
    /// Deletes a user's record, role assignments and ACLs, and revokes its API keys.
    DeleteUser {
        /// Principal name.
        name: String,
        /// The proposer's clock (revocation time of its keys).
        now_unix_secs: u64,
    },
    /// Grants a principal directly (an ACL), merging operations.
    GrantAcl {
        /// Principal name.
        principal: String,
        /// The grant.
        grant: Grant,
    },
    /// Removes operations of a principal's ACL.
    RevokeAcl {
        /// Principal name.
        principal: String,
        /// The grant.
        grant: Grant,
    },
    /// Removes every ACL of a principal (none: nothing to do, not a refusal).
    DeleteAcls {
        /// Principal name.
        principal: String,
    },
    /// Sets (replaces) one scope's limits, the `connections` quota included.
    SetLimits {
        /// Whose.
        scope: neo_protocol::api::QuotaScope,
        /// The limits (all `None`: removed).
        quota: Quota,
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
        SecurityCommand::AddApiKey { record } => state.add_api_key(record.clone()),
        SecurityCommand::RevokeApiKey {
            key_id,
            now_unix_secs,
        } => state.api_keys.revoke(key_id, *now_unix_secs),
        SecurityCommand::SetQuota { scope, quota } => set_quota(state, scope, (*quota).into()),
        SecurityCommand::SetLimits { scope, quota } => set_quota(state, scope, *quota),
        SecurityCommand::CreateUser {
            name,
            now_unix_secs,
        } => state.create_user(name, *now_unix_secs),
        SecurityCommand::DeleteUser {
            name,
            now_unix_secs,
        } => state.delete_user(name, *now_unix_secs),
        SecurityCommand::GrantAcl { principal, grant } => {
            state.rbac.grant_acl(principal, grant.clone())
        }
        SecurityCommand::RevokeAcl { principal, grant } => state.rbac.revoke_acl(principal, grant),
        // Idempotent, like a revoke: none left is the goal.
        SecurityCommand::DeleteAcls { principal } => {
            state.rbac.delete_acls(principal);
            Ok(())
        }
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use neo_protocol::api::QuotaScope;
    use neo_raft::EntryId;
    use neo_raft::StateMachine;
    use neo_security::authn::ApiKeyRecord;
    use neo_security::rbac::{Role, User};
    use serde::Serialize;

    use super::*;
    use crate::meta::{MetaCommand, MetaMachine, MetaResponse, MetaState};

    fn apply(state: &mut MetaState, cmd: SecurityCommand) -> MetaResponse {
        state.apply(&MetaCommand::Security(cmd))
    }

    #[test]
    fn users_acls_and_connection_limits() {
        let mut s = MetaState::default();
        let done = |r: MetaResponse| assert_eq!(r, MetaResponse::Done);
        done(apply(
            &mut s,
            SecurityCommand::CreateUser {
                name: "alice".into(),
                now_unix_secs: 7,
            },
        ));
        let again = apply(
            &mut s,
            SecurityCommand::CreateUser {
                name: "alice".into(),
                now_unix_secs: 8,
            },
        );
        assert!(matches!(
            again,
            MetaResponse::Refused(MetaError::Security { .. })
        ));
        done(apply(
            &mut s,
            SecurityCommand::GrantAcl {
                principal: "alice".into(),
                grant: Grant::parse("topic:orders", "produce").unwrap(),
            },
        ));
        done(apply(
            &mut s,
            SecurityCommand::SetLimits {
                scope: QuotaScope::Principal("alice".into()),
                quota: Quota {
                    connections: Some(2),
                    ..Quota::default()
                },
            },
        ));
        assert_eq!(
            s.security.quotas.per_principal["alice"].connections,
            Some(2)
        );
        // The old command (before connections) replaces the scope, without one.
        done(apply(
            &mut s,
            SecurityCommand::SetQuota {
                scope: QuotaScope::Principal("alice".into()),
                quota: QuotaV1 {
                    requests_per_sec: Some(5),
                    ..QuotaV1::default()
                },
            },
        ));
        let q = s.security.quotas.per_principal["alice"];
        assert_eq!((q.requests_per_sec, q.connections), (Some(5), None));
        let zero = apply(
            &mut s,
            SecurityCommand::SetLimits {
                scope: QuotaScope::Default,
                quota: Quota {
                    connections: Some(0),
                    ..Quota::default()
                },
            },
        );
        assert!(matches!(zero, MetaResponse::Refused(_)), "{zero:?}");
        // A key registers its owner; deleting the user revokes it.
        let (_, record) = ApiKeyRecord::generate("bob", 3).unwrap();
        let key_id = record.key_id.clone();
        done(apply(&mut s, SecurityCommand::AddApiKey { record }));
        assert_eq!(s.security.users["bob"].created_at_unix_secs, 3);
        done(apply(
            &mut s,
            SecurityCommand::DeleteUser {
                name: "bob".into(),
                now_unix_secs: 9,
            },
        ));
        assert!(!s.security.users.contains_key("bob"));
        assert!(!s.security.api_keys.is_valid(&key_id));
        // ACL deletion is idempotent.
        done(apply(
            &mut s,
            SecurityCommand::DeleteAcls {
                principal: "alice".into(),
            },
        ));
        done(apply(
            &mut s,
            SecurityCommand::DeleteAcls {
                principal: "alice".into(),
            },
        ));
        assert!(s.security.rbac.acls.is_empty());
        let back: MetaState = qiss::from_slice(&qiss::to_vec(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }

    /// `RbacState` before ACLs, `QuotaConfig` before connection limits, as tuples.
    type RbacV1 = (BTreeMap<String, Role>, BTreeMap<String, User>);
    type QuotasV1 = (
        QuotaV1,
        BTreeMap<String, QuotaV1>,
        BTreeMap<String, QuotaV1>,
        QuotaV1,
        u64,
    );

    /// The metadata image as the release before users and ACLs wrote it.
    #[derive(Serialize)]
    struct ImageV4 {
        nodes: BTreeMap<u64, crate::meta::NodeInfo>,
        topics: BTreeMap<String, crate::meta::TopicInfo>,
        next_group: u64,
        groups: crate::groups::state::Groups,
        security: (RbacV1, neo_security::authn::ApiKeys, QuotasV1),
        queues: BTreeMap<String, neo_protocol::api::QueueSettings>,
    }

    #[test]
    fn an_image_from_before_users_and_acls_restores() {
        let mut roles = BTreeMap::new();
        roles.insert("writer".to_string(), Role::default());
        let mut users = BTreeMap::new();
        users.insert(
            "carol".to_string(),
            User {
                roles: ["writer".to_string()].into(),
            },
        );
        let mut keys = neo_security::authn::ApiKeys::default();
        let (_, record) = ApiKeyRecord::generate("dave", 11).unwrap();
        keys.insert(record).unwrap();
        let mut per_principal = BTreeMap::new();
        per_principal.insert(
            "carol".to_string(),
            QuotaV1 {
                requests_per_sec: Some(50),
                ..QuotaV1::default()
            },
        );
        let image = ImageV4 {
            nodes: BTreeMap::new(),
            topics: BTreeMap::new(),
            next_group: 4,
            groups: Default::default(),
            security: (
                (roles, users),
                keys,
                (
                    QuotaV1::default(),
                    per_principal,
                    BTreeMap::new(),
                    QuotaV1::default(),
                    1_000,
                ),
            ),
            queues: BTreeMap::new(),
        };
        let bytes = qiss::to_vec(&image).unwrap();
        let (mut m, view) = MetaMachine::new();
        m.restore(&bytes).unwrap();
        m.publish();
        let state = view.borrow().clone();
        assert_eq!(state.next_group, 4);
        assert!(state.security.rbac.users["carol"].roles.contains("writer"));
        assert_eq!(
            state.security.quotas.per_principal["carol"].requests_per_sec,
            Some(50)
        );
        assert_eq!(state.security.users["dave"].created_at_unix_secs, 11);
        assert!(state.security.rbac.acls.is_empty());
        // And the machine goes on applying new commands.
        let cmd = qiss::to_vec(&MetaCommand::Security(SecurityCommand::CreateUser {
            name: "erin".into(),
            now_unix_secs: 12,
        }))
        .unwrap();
        let r: MetaResponse =
            qiss::from_slice(&m.apply_command(EntryId { term: 1, index: 1 }, &cmd)).unwrap();
        assert_eq!(r, MetaResponse::Done);
    }
}
