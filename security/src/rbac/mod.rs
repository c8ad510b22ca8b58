//! Authorization: roles grant permissions; principals hold roles; everything else is
//! denied.
//!
//! # The permission model
//! A [`Grant`] is resource type × name pattern × operations:
//! - [`ResourceType`]: `topic`, `group`, `queue`, `cluster`, `user` (users, roles, API
//!   keys and ACLs themselves; `acl` is accepted as a synonym when parsing).
//! - [`NamePattern`]: a literal name (`orders`), a prefix (`orders.*`: every name that
//!   starts with `orders.`; the `*` must be last and appear once), or `*` (every name).
//! - [`Operation`]s: `produce`, `consume`, `describe`, `create`, `delete`, `alter`,
//!   `admin`. Each stands alone: `admin` does not imply the others (grant them
//!   explicitly), so a grant never allows an operation it does not list.
//!
//! A [`Role`] is a named list of grants; [`RbacState`] maps principals to role names,
//! and holds grants made to a principal directly (ACLs, Kafka style).
//! A request is allowed iff the request comes from inside the node, or the principal is a
//! configured superuser, or one of its ACLs, or some role of the principal (assigned in
//! the state, or stated by its credential, e.g. a JWT's roles claim) has a grant covering
//! the resource type, the name and the operation. Roles that do not exist grant nothing; an unauthenticated
//! request is denied.
//!
//! [`RbacState`] is serde state for the metadata group; [`Authorizer`] is its compiled,
//! read-only form, rebuilt on each change (see [`check`]).

pub mod check;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{SecurityError, check_name};
use crate::limits::{
    ACLS_MAX, ACLS_PER_PRINCIPAL_MAX, GRANTS_PER_ROLE_MAX, NAME_BYTES_MAX, ROLES_MAX,
    ROLES_PER_PRINCIPAL_MAX,
};

pub use check::{Authorized, Authorizer, Permissions};

/// What kind of thing a permission is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ResourceType {
    /// A topic.
    Topic,
    /// A consumer group.
    Group,
    /// A queue.
    Queue,
    /// The cluster itself (membership, configuration).
    Cluster,
    /// Users, roles, API keys and grants.
    User,
}

impl ResourceType {
    /// Every type, in index order.
    pub const ALL: [ResourceType; 5] = [
        ResourceType::Topic,
        ResourceType::Group,
        ResourceType::Queue,
        ResourceType::Cluster,
        ResourceType::User,
    ];

    /// The name used in CLI arguments and messages.
    pub fn name(self) -> &'static str {
        match self {
            ResourceType::Topic => "topic",
            ResourceType::Group => "group",
            ResourceType::Queue => "queue",
            ResourceType::Cluster => "cluster",
            ResourceType::User => "user",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ResourceType {
    type Err = SecurityError;
    fn from_str(s: &str) -> Result<ResourceType, SecurityError> {
        match s {
            "acl" => Ok(ResourceType::User),
            _ => ResourceType::ALL
                .into_iter()
                .find(|t| t.name() == s)
                .ok_or_else(|| SecurityError::Invalid {
                    what: "resource type",
                    value: s.to_string(),
                    reason: "expected topic, group, queue, cluster, user or acl",
                }),
        }
    }
}

/// What a request does to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Operation {
    /// Write records.
    Produce,
    /// Read records, commit offsets, ack/nack.
    Consume,
    /// Read metadata and configuration.
    Describe,
    /// Create the resource.
    Create,
    /// Delete the resource (or records in it).
    Delete,
    /// Change its configuration.
    Alter,
    /// Administrative actions (membership, grants, key management).
    Admin,
}

impl Operation {
    /// Every operation, in bit order.
    pub const ALL: [Operation; 7] = [
        Operation::Produce,
        Operation::Consume,
        Operation::Describe,
        Operation::Create,
        Operation::Delete,
        Operation::Alter,
        Operation::Admin,
    ];

    /// The name used in CLI arguments and messages.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Produce => "produce",
            Operation::Consume => "consume",
            Operation::Describe => "describe",
            Operation::Create => "create",
            Operation::Delete => "delete",
            Operation::Alter => "alter",
            Operation::Admin => "admin",
        }
    }

    const fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Operation {
    type Err = SecurityError;
    fn from_str(s: &str) -> Result<Operation, SecurityError> {
        Operation::ALL
            .into_iter()
            .find(|op| op.name() == s)
            .ok_or_else(|| SecurityError::Invalid {
                what: "operation",
                value: s.to_string(),
                reason: "expected produce, consume, describe, create, delete, alter or admin",
            })
    }
}

/// A set of operations (a bit set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Operations(u8);

impl Operations {
    /// No operation.
    pub const NONE: Operations = Operations(0);

    /// Every operation.
    pub const ALL: Operations = Operations((1 << Operation::ALL.len()) - 1);

    /// The set of these operations.
    pub fn of(ops: &[Operation]) -> Operations {
        Operations(ops.iter().fold(0, |acc, op| acc | op.bit()))
    }

    /// Whether `op` is in the set.
    #[inline]
    pub fn contains(self, op: Operation) -> bool {
        self.0 & op.bit() != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 & Operations::ALL.0 == 0
    }

    /// Both sets together.
    pub fn union(self, other: Operations) -> Operations {
        Operations(self.0 | other.0)
    }

    /// This set without `other`'s members.
    pub fn without(self, other: Operations) -> Operations {
        Operations(self.0 & !other.0)
    }

    /// The members, in order.
    pub fn iter(self) -> impl Iterator<Item = Operation> {
        Operation::ALL
            .into_iter()
            .filter(move |op| self.contains(*op))
    }
}

impl FromStr for Operations {
    type Err = SecurityError;
    /// A comma-separated list (`produce,describe`), or `all`.
    fn from_str(s: &str) -> Result<Operations, SecurityError> {
        if s == "all" {
            return Ok(Operations::ALL);
        }
        s.split(',')
            .map(|op| op.trim().parse::<Operation>())
            .try_fold(Operations::NONE, |acc, op| {
                Ok(acc.union(Operations::of(&[op?])))
            })
    }
}

impl fmt::Display for Operations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Operation::name).collect();
        f.write_str(&names.join(","))
    }
}

/// Which resource names a grant covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum NamePattern {
    /// `*`: every name.
    Any,
    /// `orders.*`: every name starting with `orders.` (stored without the `*`).
    Prefix(String),
    /// Exactly this name.
    Literal(String),
}

impl NamePattern {
    /// Whether `name` is covered.
    #[inline]
    pub fn matches(&self, name: &str) -> bool {
        match self {
            NamePattern::Any => true,
            NamePattern::Prefix(prefix) => name.starts_with(prefix.as_str()),
            NamePattern::Literal(literal) => name == literal,
        }
    }
}

impl FromStr for NamePattern {
    type Err = SecurityError;
    fn from_str(s: &str) -> Result<NamePattern, SecurityError> {
        let invalid = |reason| SecurityError::Invalid {
            what: "name pattern",
            value: s.to_string(),
            reason,
        };
        check_name("name pattern", s)?;
        match s.find('*') {
            None => Ok(NamePattern::Literal(s.to_string())),
            Some(_) if s == "*" => Ok(NamePattern::Any),
            Some(at) if at == s.len() - 1 => Ok(NamePattern::Prefix(s[..at].to_string())),
            Some(_) => Err(invalid("'*' may only end a pattern")),
        }
    }
}

impl fmt::Display for NamePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NamePattern::Any => f.write_str("*"),
            NamePattern::Prefix(prefix) => write!(f, "{prefix}*"),
            NamePattern::Literal(literal) => f.write_str(literal),
        }
    }
}

/// One permission: operations on the resources of a type whose names match a pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Grant {
    /// The resource type.
    pub resource: ResourceType,
    /// Which names.
    pub pattern: NamePattern,
    /// Which operations.
    pub operations: Operations,
}

impl Grant {
    /// Parse the CLI form: `topic:orders.*` and `produce,describe`.
    pub fn parse(resource: &str, operations: &str) -> Result<Grant, SecurityError> {
        let (kind, pattern) = resource
            .split_once(':')
            .ok_or_else(|| SecurityError::Invalid {
                what: "resource",
                value: resource.to_string(),
                reason: "expected KIND:PATTERN, e.g. topic:orders.*",
            })?;
        Ok(Grant {
            resource: kind.parse()?,
            pattern: pattern.parse()?,
            operations: operations.parse()?,
        })
    }

    /// Whether this grant allows `op` on the resource `kind`:`name`.
    pub fn allows(&self, kind: ResourceType, name: &str, op: Operation) -> bool {
        self.resource == kind && self.operations.contains(op) && self.pattern.matches(name)
    }
}

/// A named set of grants.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    /// One entry per (resource type, pattern); operations merged.
    pub grants: Vec<Grant>,
}

/// A principal known to the cluster, with the roles assigned to it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Role names.
    pub roles: BTreeSet<String>,
}

/// Roles, role assignments and direct grants (ACLs): the metadata group's
/// authorization state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RbacState {
    /// Roles by name.
    pub roles: BTreeMap<String, Role>,
    /// Role assignments by principal name (an entry exists while it holds a role).
    pub users: BTreeMap<String, User>,
    /// Direct grants by principal name (Kafka-style ACLs): checked exactly like the
    /// grants of a role the principal holds; one entry per (type, pattern), operations
    /// merged; an entry exists while it has a grant.
    pub acls: BTreeMap<String, Vec<Grant>>,
}

/// The layout of [`RbacState`] before ACLs (in metadata snapshots written by earlier
/// releases): decodes, then converts without loss.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RbacStateV1 {
    roles: BTreeMap<String, Role>,
    users: BTreeMap<String, User>,
}

impl From<RbacStateV1> for RbacState {
    fn from(v: RbacStateV1) -> RbacState {
        RbacState {
            roles: v.roles,
            users: v.users,
            acls: BTreeMap::new(),
        }
    }
}

/// Checks what a grant may hold before it is stored (a role's or an ACL).
fn check_grant(grant: &Grant) -> Result<(), SecurityError> {
    match &grant.pattern {
        NamePattern::Literal(name) => check_name("resource name", name)?,
        NamePattern::Prefix(prefix) if prefix.len() > NAME_BYTES_MAX => {
            return Err(SecurityError::Invalid {
                what: "name prefix",
                value: prefix.chars().take(64).collect(),
                reason: "too long",
            });
        }
        _ => {}
    }
    if grant.operations.is_empty() {
        return Err(SecurityError::Invalid {
            what: "grant",
            value: grant.pattern.to_string(),
            reason: "no operations",
        });
    }
    Ok(())
}

/// Merges `grant` into `grants` (same type and pattern: operations united); `Ok(false)`
/// when a new entry would pass `max`.
fn merge_grant(grants: &mut Vec<Grant>, grant: Grant, max: usize) -> bool {
    if let Some(existing) = grants
        .iter_mut()
        .find(|g| g.resource == grant.resource && g.pattern == grant.pattern)
    {
        existing.operations = existing.operations.union(grant.operations);
        return true;
    }
    if grants.len() >= max {
        return false;
    }
    grants.push(grant);
    true
}

/// Removes `grant`'s operations from the entry of the same type and pattern.
fn remove_grant(grants: &mut Vec<Grant>, grant: &Grant) -> Result<(), SecurityError> {
    let at = grants
        .iter()
        .position(|g| g.resource == grant.resource && g.pattern == grant.pattern)
        .ok_or_else(|| SecurityError::NotFound {
            what: "grant",
            name: format!("{}:{}", grant.resource, grant.pattern),
        })?;
    let left = grants[at].operations.without(grant.operations);
    if left.is_empty() {
        grants.remove(at);
    } else {
        grants[at].operations = left;
    }
    Ok(())
}

fn role_not_found(role: &str) -> SecurityError {
    SecurityError::NotFound {
        what: "role",
        name: role.to_string(),
    }
}

impl RbacState {
    /// Create an empty role.
    pub fn create_role(&mut self, role: &str) -> Result<(), SecurityError> {
        check_name("role", role)?;
        if self.roles.contains_key(role) {
            return Err(SecurityError::AlreadyExists {
                what: "role",
                name: role.to_string(),
            });
        }
        if self.roles.len() >= ROLES_MAX {
            return Err(SecurityError::LimitExceeded {
                what: "roles",
                max: ROLES_MAX,
            });
        }
        self.roles.insert(role.to_string(), Role::default());
        Ok(())
    }

    /// Delete a role and every assignment of it.
    pub fn delete_role(&mut self, role: &str) -> Result<(), SecurityError> {
        self.roles
            .remove(role)
            .ok_or_else(|| role_not_found(role))?;
        for user in self.users.values_mut() {
            user.roles.remove(role);
        }
        self.users.retain(|_, user| !user.roles.is_empty());
        Ok(())
    }

    /// Add `grant`'s operations to `role` (merged with a grant on the same resource type
    /// and pattern).
    pub fn grant(&mut self, role: &str, grant: Grant) -> Result<(), SecurityError> {
        let entry = self
            .roles
            .get_mut(role)
            .ok_or_else(|| role_not_found(role))?;
        check_grant(&grant)?;
        if !merge_grant(&mut entry.grants, grant, GRANTS_PER_ROLE_MAX) {
            return Err(SecurityError::LimitExceeded {
                what: "grants in a role",
                max: GRANTS_PER_ROLE_MAX,
            });
        }
        Ok(())
    }

    /// Remove `grant`'s operations from the same resource type and pattern in `role`.
    pub fn revoke(&mut self, role: &str, grant: &Grant) -> Result<(), SecurityError> {
        let entry = self
            .roles
            .get_mut(role)
            .ok_or_else(|| role_not_found(role))?;
        remove_grant(&mut entry.grants, grant)
    }

    /// Grant `principal` directly (an ACL): merged with its ACL on the same resource
    /// type and pattern. The principal needs no user record (JWT and certificate
    /// principals have none).
    pub fn grant_acl(&mut self, principal: &str, grant: Grant) -> Result<(), SecurityError> {
        check_name("principal", principal)?;
        check_grant(&grant)?;
        let total: usize = self.acls.values().map(Vec::len).sum();
        if total >= ACLS_MAX {
            return Err(SecurityError::LimitExceeded {
                what: "ACLs",
                max: ACLS_MAX,
            });
        }
        let entry = self.acls.entry(principal.to_string()).or_default();
        if !merge_grant(entry, grant, ACLS_PER_PRINCIPAL_MAX) {
            return Err(SecurityError::LimitExceeded {
                what: "ACLs of a principal",
                max: ACLS_PER_PRINCIPAL_MAX,
            });
        }
        Ok(())
    }

    /// Remove `grant`'s operations from `principal`'s ACL on the same type and pattern.
    pub fn revoke_acl(&mut self, principal: &str, grant: &Grant) -> Result<(), SecurityError> {
        let entry = self
            .acls
            .get_mut(principal)
            .ok_or_else(|| SecurityError::NotFound {
                what: "ACL of principal",
                name: principal.to_string(),
            })?;
        remove_grant(entry, grant)?;
        if entry.is_empty() {
            self.acls.remove(principal);
        }
        Ok(())
    }

    /// Remove every ACL of `principal`; how many there were (0 is not an error).
    pub fn delete_acls(&mut self, principal: &str) -> usize {
        self.acls.remove(principal).map_or(0, |g| g.len())
    }

    /// Give `principal` the role.
    pub fn assign(&mut self, role: &str, principal: &str) -> Result<(), SecurityError> {
        check_name("principal", principal)?;
        if !self.roles.contains_key(role) {
            return Err(role_not_found(role));
        }
        let user = self.users.entry(principal.to_string()).or_default();
        if !user.roles.contains(role) && user.roles.len() >= ROLES_PER_PRINCIPAL_MAX {
            return Err(SecurityError::LimitExceeded {
                what: "roles of a principal",
                max: ROLES_PER_PRINCIPAL_MAX,
            });
        }
        user.roles.insert(role.to_string());
        Ok(())
    }

    /// Take the role from `principal`.
    pub fn unassign(&mut self, role: &str, principal: &str) -> Result<(), SecurityError> {
        let user = self.users.get_mut(principal);
        let removed = user.is_some_and(|u| u.roles.remove(role));
        if !removed {
            return Err(SecurityError::NotFound {
                what: "role assignment",
                name: format!("{role} for {principal}"),
            });
        }
        self.users.retain(|_, user| !user.roles.is_empty());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_parse_and_match() {
        assert_eq!("*".parse::<NamePattern>().unwrap(), NamePattern::Any);
        let prefix: NamePattern = "orders.*".parse().unwrap();
        assert_eq!(prefix, NamePattern::Prefix("orders.".into()));
        assert!(prefix.matches("orders.eu"));
        assert!(prefix.matches("orders.eu.west"));
        assert!(!prefix.matches("orders"));
        assert!(!prefix.matches("ordersX"));
        let literal: NamePattern = "orders".parse().unwrap();
        assert!(literal.matches("orders"));
        assert!(!literal.matches("orders.eu"));
        assert!("ord*ers".parse::<NamePattern>().is_err());
        assert!("**".parse::<NamePattern>().is_err());
        assert!("".parse::<NamePattern>().is_err());
        for p in ["*", "orders.*", "orders"] {
            assert_eq!(p.parse::<NamePattern>().unwrap().to_string(), p);
        }
    }

    #[test]
    fn grants_parse_like_the_cli() {
        let g = Grant::parse("topic:orders.*", "produce,describe").unwrap();
        assert_eq!(g.resource, ResourceType::Topic);
        assert_eq!(g.operations.to_string(), "produce,describe");
        assert_eq!(
            Grant::parse("acl:*", "admin").unwrap().resource,
            ResourceType::User
        );
        assert!(Grant::parse("topic", "produce").is_err());
        assert!(Grant::parse("table:x", "produce").is_err());
        assert!(Grant::parse("topic:x", "fly").is_err());
        assert_eq!(
            Grant::parse("topic:x", "all").unwrap().operations,
            Operations::ALL
        );
    }

    #[test]
    fn state_changes() {
        let mut s = RbacState::default();
        s.create_role("writer").unwrap();
        assert!(matches!(
            s.create_role("writer"),
            Err(SecurityError::AlreadyExists { .. })
        ));
        s.grant("writer", Grant::parse("topic:orders.*", "produce").unwrap())
            .unwrap();
        s.grant(
            "writer",
            Grant::parse("topic:orders.*", "describe").unwrap(),
        )
        .unwrap();
        assert_eq!(s.roles["writer"].grants.len(), 1);
        assert_eq!(
            s.roles["writer"].grants[0].operations.to_string(),
            "produce,describe"
        );
        s.revoke(
            "writer",
            &Grant::parse("topic:orders.*", "produce").unwrap(),
        )
        .unwrap();
        assert_eq!(
            s.roles["writer"].grants[0].operations.to_string(),
            "describe"
        );
        s.revoke(
            "writer",
            &Grant::parse("topic:orders.*", "describe").unwrap(),
        )
        .unwrap();
        assert!(s.roles["writer"].grants.is_empty());
        assert!(
            s.revoke("writer", &Grant::parse("topic:x", "produce").unwrap())
                .is_err()
        );
        assert!(
            s.grant("nope", Grant::parse("topic:x", "produce").unwrap())
                .is_err()
        );

        s.assign("writer", "alice").unwrap();
        assert!(s.assign("nope", "alice").is_err());
        assert!(s.users["alice"].roles.contains("writer"));
        s.unassign("writer", "alice").unwrap();
        assert!(s.users.is_empty());
        assert!(s.unassign("writer", "alice").is_err());
        s.assign("writer", "bob").unwrap();
        s.delete_role("writer").unwrap();
        assert!(s.users.is_empty() && s.roles.is_empty());
    }

    #[test]
    fn acls_merge_revoke_and_are_bounded() {
        let mut s = RbacState::default();
        let g = |r: &str, ops: &str| Grant::parse(r, ops).unwrap();
        s.grant_acl("alice", g("topic:orders", "produce")).unwrap();
        s.grant_acl("alice", g("topic:orders", "describe")).unwrap();
        assert_eq!(s.acls["alice"].len(), 1, "same type and pattern: merged");
        assert_eq!(
            s.acls["alice"][0].operations.to_string(),
            "produce,describe"
        );
        assert!(matches!(
            s.revoke_acl("bob", &g("topic:orders", "produce")),
            Err(SecurityError::NotFound { .. })
        ));
        assert!(s.revoke_acl("alice", &g("topic:other", "produce")).is_err());
        s.revoke_acl("alice", &g("topic:orders", "all")).unwrap();
        assert!(s.acls.is_empty(), "an entry without operations goes");
        assert!(s.grant_acl("", g("topic:x", "produce")).is_err());
        assert!(s.grant_acl("a\nb", g("topic:x", "produce")).is_err());
        for i in 0..ACLS_PER_PRINCIPAL_MAX {
            s.grant_acl("carol", g(&format!("topic:t{i}"), "consume"))
                .unwrap();
        }
        assert!(matches!(
            s.grant_acl("carol", g("topic:one-more", "consume")),
            Err(SecurityError::LimitExceeded { .. })
        ));
        // Merging into an existing entry is not a new one.
        s.grant_acl("carol", g("topic:t0", "describe")).unwrap();
        assert_eq!(s.delete_acls("carol"), ACLS_PER_PRINCIPAL_MAX);
        assert_eq!(s.delete_acls("carol"), 0);
    }

    #[test]
    fn state_round_trips_through_qiss() {
        let mut s = RbacState::default();
        s.create_role("ops").unwrap();
        s.grant("ops", Grant::parse("cluster:*", "admin,describe").unwrap())
            .unwrap();
        s.grant("ops", Grant::parse("topic:orders", "all").unwrap())
            .unwrap();
        s.assign("ops", "alice").unwrap();
        s.grant_acl("bob", Grant::parse("queue:jobs.*", "consume").unwrap())
            .unwrap();
        let back: RbacState = qiss::from_slice(&qiss::to_vec(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
