//! The security state the metadata Raft group will replicate, as one serde value.
//!
//! Users and their roles, roles and their grants, API key hashes, and quotas. Nothing
//! here is a secret: API keys are stored as salted hashes only, and keys for JWT or
//! payload encryption never enter the replicated state (they come from files).

use serde::{Deserialize, Serialize};

use crate::authn::ApiKeys;
use crate::rate::QuotaConfig;
use crate::rbac::RbacState;

/// Everything security-related the cluster agrees on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityState {
    /// Roles, grants and role assignments.
    pub rbac: RbacState,
    /// API key records (salted hashes).
    pub api_keys: ApiKeys,
    /// Rate-limit quotas.
    pub quotas: QuotaConfig,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authn::ApiKeyRecord;
    use crate::rbac::Grant;

    #[test]
    fn round_trips_through_qiss() {
        let mut state = SecurityState::default();
        state.rbac.create_role("writer").unwrap();
        state
            .rbac
            .grant("writer", Grant::parse("topic:orders.*", "produce").unwrap())
            .unwrap();
        state.rbac.assign("writer", "alice").unwrap();
        let (_, record) = ApiKeyRecord::generate("alice", 1).unwrap();
        state.api_keys.insert(record).unwrap();
        state.quotas.principal_default.requests_per_sec = Some(100);
        let bytes = qiss::to_vec(&state).unwrap();
        let back: SecurityState = qiss::from_slice(&bytes).unwrap();
        assert_eq!(back, state);
    }
}
