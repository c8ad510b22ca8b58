//! The security state the metadata Raft group replicates, as one serde value.
//!
//! Registered users, roles and their grants, role assignments, direct grants (ACLs),
//! API key hashes, and quotas. Nothing here is a secret: API keys are stored as salted
//! hashes only, and keys for JWT or payload encryption never enter the replicated state
//! (they come from files).
//!
//! # Users
//! A user record registers a principal name (`neo user create`). It is not needed to
//! authenticate: JWT `sub` and certificate principals need no record, and role
//! assignments and ACLs may name any principal. Creating an API key registers its
//! principal if it is not yet ([`SecurityState::add_api_key`]), so every key's owner is
//! listed. Deleting a user removes everything stored under its name: the record, its
//! role assignments, its ACLs, and revokes its API keys (kept, revoked, for the audit
//! trail). Quota overrides stay: they are keyed by name and also bind JWT and
//! certificate principals of that name (remove them with `neo quota set`).
//!
//! # Layout versions
//! The state is encoded positionally (Qiss) in metadata snapshots, so a new field makes
//! a new layout; [`SecurityStateV1`] is the layout before users, ACLs and the
//! `connections` quota, and converts without loss.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::authn::{ApiKeyRecord, ApiKeys};
use crate::error::{SecurityError, check_name};
use crate::limits::USERS_MAX;
use crate::rate::{QuotaConfig, QuotaConfigV1};
use crate::rbac::{RbacState, RbacStateV1};

/// A registered user.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// When it was registered (the proposer's clock, seconds since the Unix epoch).
    pub created_at_unix_secs: u64,
}

/// Everything security-related the cluster agrees on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityState {
    /// Roles, grants, role assignments and ACLs.
    pub rbac: RbacState,
    /// API key records (salted hashes).
    pub api_keys: ApiKeys,
    /// Rate-limit and connection quotas.
    pub quotas: QuotaConfig,
    /// Registered users by principal name.
    pub users: BTreeMap<String, UserRecord>,
}

/// The layout of [`SecurityState`] before users, ACLs and the `connections` quota.
#[derive(Debug, Clone, Deserialize)]
pub struct SecurityStateV1 {
    rbac: RbacStateV1,
    api_keys: ApiKeys,
    quotas: QuotaConfigV1,
}

impl From<SecurityStateV1> for SecurityState {
    /// Every API key's principal becomes a registered user (created with its first
    /// key), as replaying the `AddApiKey` commands would have made it.
    fn from(v: SecurityStateV1) -> SecurityState {
        let mut users: BTreeMap<String, UserRecord> = BTreeMap::new();
        for key in v.api_keys.iter() {
            let created = key.created_at_unix_secs;
            users
                .entry(key.principal.clone())
                .and_modify(|u| u.created_at_unix_secs = u.created_at_unix_secs.min(created))
                .or_insert(UserRecord {
                    created_at_unix_secs: created,
                });
        }
        SecurityState {
            rbac: v.rbac.into(),
            api_keys: v.api_keys,
            quotas: v.quotas.into(),
            users,
        }
    }
}

impl SecurityState {
    /// Registers `name`. Refused if it exists.
    pub fn create_user(&mut self, name: &str, now_unix_secs: u64) -> Result<(), SecurityError> {
        check_name("user", name)?;
        if self.users.contains_key(name) {
            return Err(SecurityError::AlreadyExists {
                what: "user",
                name: name.to_string(),
            });
        }
        self.register(name, now_unix_secs)
    }

    fn register(&mut self, name: &str, now_unix_secs: u64) -> Result<(), SecurityError> {
        if self.users.len() >= USERS_MAX {
            return Err(SecurityError::LimitExceeded {
                what: "users",
                max: USERS_MAX,
            });
        }
        self.users.insert(
            name.to_string(),
            UserRecord {
                created_at_unix_secs: now_unix_secs,
            },
        );
        Ok(())
    }

    /// Stores a new API key's record, registering its principal if needed (at the
    /// key's creation time). Nothing changes if either step is refused.
    pub fn add_api_key(&mut self, record: ApiKeyRecord) -> Result<(), SecurityError> {
        check_name("principal", &record.principal)?;
        let principal = record.principal.clone();
        let created = record.created_at_unix_secs;
        let new_user = !self.users.contains_key(&principal);
        if new_user && self.users.len() >= USERS_MAX {
            return Err(SecurityError::LimitExceeded {
                what: "users",
                max: USERS_MAX,
            });
        }
        self.api_keys.insert(record)?;
        if new_user {
            self.register(&principal, created)?;
        }
        Ok(())
    }

    /// Deletes everything stored under `name`: its user record, role assignments and
    /// ACLs, and revokes its live API keys at `now_unix_secs`. Refused (`NotFound`)
    /// only if none of these exist.
    pub fn delete_user(&mut self, name: &str, now_unix_secs: u64) -> Result<(), SecurityError> {
        let keys: Vec<String> = self
            .api_keys
            .iter()
            .filter(|k| k.principal == name && !k.is_revoked())
            .map(|k| k.key_id.clone())
            .collect();
        let known = self.users.contains_key(name)
            || self.rbac.users.contains_key(name)
            || self.rbac.acls.contains_key(name)
            || !keys.is_empty();
        if !known {
            return Err(SecurityError::NotFound {
                what: "user",
                name: name.to_string(),
            });
        }
        self.users.remove(name);
        self.rbac.users.remove(name);
        self.rbac.delete_acls(name);
        for key in keys {
            self.api_keys.revoke(&key, now_unix_secs)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authn::ApiKeyRecord;
    use crate::rbac::Grant;

    fn sample() -> SecurityState {
        let mut state = SecurityState::default();
        state.rbac.create_role("writer").unwrap();
        state
            .rbac
            .grant("writer", Grant::parse("topic:orders.*", "produce").unwrap())
            .unwrap();
        state.rbac.assign("writer", "alice").unwrap();
        state
            .rbac
            .grant_acl("alice", Grant::parse("group:billing", "consume").unwrap())
            .unwrap();
        let (_, record) = ApiKeyRecord::generate("alice", 1).unwrap();
        state.add_api_key(record).unwrap();
        state.create_user("bob", 5).unwrap();
        state.quotas.principal_default.requests_per_sec = Some(100);
        state.quotas.principal_default.connections = Some(10);
        state
    }

    #[test]
    fn round_trips_through_qiss() {
        let state = sample();
        let bytes = qiss::to_vec(&state).unwrap();
        let back: SecurityState = qiss::from_slice(&bytes).unwrap();
        assert_eq!(back, state);
    }

    /// What the V1 layout encoded: the same fields without users, ACLs, connections.
    #[derive(Serialize)]
    struct V1<'a> {
        rbac: (
            &'a BTreeMap<String, crate::rbac::Role>,
            &'a BTreeMap<String, crate::rbac::User>,
        ),
        api_keys: &'a ApiKeys,
        quotas: (
            crate::rate::QuotaV1,
            BTreeMap<String, crate::rate::QuotaV1>,
            BTreeMap<String, crate::rate::QuotaV1>,
            crate::rate::QuotaV1,
            u64,
        ),
    }

    #[test]
    fn an_old_layout_decodes_and_registers_key_owners() {
        let mut state = sample();
        state.rbac.acls.clear();
        state.users.clear();
        state.quotas.principal_default.connections = None;
        let v1 = |q: &crate::rate::Quota| crate::rate::QuotaV1 {
            produce_bytes_per_sec: q.produce_bytes_per_sec,
            fetch_bytes_per_sec: q.fetch_bytes_per_sec,
            requests_per_sec: q.requests_per_sec,
        };
        let old = V1 {
            rbac: (&state.rbac.roles, &state.rbac.users),
            api_keys: &state.api_keys,
            quotas: (
                v1(&state.quotas.principal_default),
                BTreeMap::new(),
                BTreeMap::new(),
                v1(&state.quotas.per_ip),
                state.quotas.burst_ms,
            ),
        };
        let bytes = qiss::to_vec(&old).unwrap();
        assert!(qiss::from_slice::<SecurityState>(&bytes).is_err());
        let back: SecurityState = qiss::from_slice::<SecurityStateV1>(&bytes).unwrap().into();
        state.users.insert(
            "alice".into(),
            UserRecord {
                created_at_unix_secs: 1,
            },
        );
        assert_eq!(back, state);
    }

    #[test]
    fn users_are_created_once_and_deleted_with_everything_under_their_name() {
        let mut state = sample();
        assert!(
            state.users.contains_key("alice"),
            "a key registers its owner"
        );
        assert!(matches!(
            state.create_user("bob", 6),
            Err(SecurityError::AlreadyExists { .. })
        ));
        assert!(state.create_user("", 6).is_err());
        assert!(state.create_user("a\nb", 6).is_err());

        let key_id = state.api_keys.iter().next().unwrap().key_id.clone();
        state.delete_user("alice", 9).unwrap();
        assert!(!state.users.contains_key("alice"));
        assert!(!state.rbac.users.contains_key("alice"));
        assert!(!state.rbac.acls.contains_key("alice"));
        let key = state.api_keys.get(&key_id).unwrap();
        assert_eq!(key.revoked_at_unix_secs, Some(9), "revoked, kept");
        assert!(state.rbac.roles.contains_key("writer"), "roles stay");
        assert_eq!(state.quotas.principal_default.connections, Some(10));
        assert!(matches!(
            state.delete_user("alice", 10),
            Err(SecurityError::NotFound { .. })
        ));
        // A principal with only an ACL (a JWT principal) can be deleted too.
        state
            .rbac
            .grant_acl("carol", Grant::parse("topic:x", "consume").unwrap())
            .unwrap();
        state.delete_user("carol", 11).unwrap();
        assert!(state.rbac.acls.is_empty());
    }
}
