//! The compiled permission checker.
//!
//! [`Authorizer::compile`] turns an [`RbacState`] (and the configured superusers) into
//! per-principal [`Permissions`] (assigned roles and direct grants, ACLs, merged): for
//! each resource type, the operations granted on every
//! name (`*`), a hash map of literal names, and a short list of prefixes. A check is then
//! one or two hash lookups and a scan of the prefixes of one resource type; nothing is
//! allocated unless the answer is a denial (measured in `benches/rbac.rs`, see
//! docs/BENCHMARKS.md).
//!
//! The compiled form is the cache: it is rebuilt when the state changes (the caller
//! swaps an `Arc<Authorizer>`), and a connection may keep the `Arc<Permissions>` of its
//! context ([`Authorizer::permissions`]) to skip even the principal lookup, re-deriving
//! it when [`Authorizer::generation`] moves.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::{NamePattern, Operation, Operations, RbacState, ResourceType};
use crate::context::SecurityContext;
use crate::error::SecurityError;

/// Proof that a request passed authorization. Only this crate can make one, so a
/// handler that takes an `Authorized` cannot be called without the check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Authorized {
    resource: ResourceType,
    operation: Operation,
}

impl Authorized {
    /// The resource type checked.
    pub fn resource(&self) -> ResourceType {
        self.resource
    }

    /// The operation checked.
    pub fn operation(&self) -> Operation {
        self.operation
    }
}

/// The grants of one resource type, compiled.
#[derive(Debug, Clone, Default)]
struct TypeGrants {
    /// Operations granted on every name.
    any: Operations,
    /// Operations granted on exactly one name.
    literals: HashMap<Box<str>, Operations>,
    /// Operations granted on names with a prefix (few per principal; scanned).
    prefixes: Vec<(Box<str>, Operations)>,
}

impl TypeGrants {
    fn add(&mut self, pattern: &NamePattern, ops: Operations) {
        match pattern {
            NamePattern::Any => self.any = self.any.union(ops),
            NamePattern::Literal(name) => {
                let entry = self.literals.entry(name.as_str().into()).or_default();
                *entry = entry.union(ops);
            }
            NamePattern::Prefix(prefix) => {
                match self.prefixes.iter_mut().find(|(p, _)| **p == **prefix) {
                    Some((_, existing)) => *existing = existing.union(ops),
                    None => self.prefixes.push((prefix.as_str().into(), ops)),
                }
            }
        }
    }

    fn merge(&mut self, other: &TypeGrants) {
        self.any = self.any.union(other.any);
        for (name, ops) in &other.literals {
            self.add(&NamePattern::Literal(name.to_string()), *ops);
        }
        for (prefix, ops) in &other.prefixes {
            self.add(&NamePattern::Prefix(prefix.to_string()), *ops);
        }
    }

    #[inline]
    fn allows(&self, name: &str, op: Operation) -> bool {
        self.any.contains(op)
            || (!self.literals.is_empty()
                && self.literals.get(name).is_some_and(|ops| ops.contains(op)))
            || self
                .prefixes
                .iter()
                .any(|(prefix, ops)| ops.contains(op) && name.starts_with(&**prefix))
    }
}

/// Everything one principal (with a set of roles) may do, compiled.
#[derive(Debug, Clone, Default)]
pub struct Permissions {
    /// For denial messages.
    principal: Option<String>,
    /// Allowed everything (a superuser, or the node itself).
    everything: bool,
    /// By [`ResourceType::index`].
    types: [TypeGrants; 5],
    /// The [`Authorizer::generation`] these were compiled from.
    generation: u64,
}

impl Permissions {
    /// Whether `op` on `resource`:`name` is allowed.
    #[inline]
    pub fn allows(&self, resource: ResourceType, name: &str, op: Operation) -> bool {
        self.everything || self.types[resource.index()].allows(name, op)
    }

    /// The check, as a proof value or a denial naming what was refused.
    #[inline]
    pub fn authorize(
        &self,
        resource: ResourceType,
        name: &str,
        op: Operation,
    ) -> Result<Authorized, SecurityError> {
        if self.allows(resource, name, op) {
            Ok(Authorized {
                resource,
                operation: op,
            })
        } else {
            Err(SecurityError::PermissionDenied {
                principal: self
                    .principal
                    .clone()
                    .unwrap_or_else(|| "anonymous".to_string()),
                resource: format!("{resource}:{name}"),
                operation: op,
            })
        }
    }

    /// Whether these are a superuser's (or the node's own).
    pub fn is_superuser(&self) -> bool {
        self.everything
    }

    /// The authorizer generation these come from.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn add_role(&mut self, role: &[TypeGrants; 5]) {
        for (mine, theirs) in self.types.iter_mut().zip(role) {
            mine.merge(theirs);
        }
    }
}

/// The compiled, read-only form of an [`RbacState`] plus the superusers.
#[derive(Debug, Clone, Default)]
pub struct Authorizer {
    generation: u64,
    superusers: HashSet<String>,
    /// Each role's grants, for roles stated by credentials.
    roles: HashMap<String, [TypeGrants; 5]>,
    /// Each principal with assigned roles (or a superuser), merged.
    principals: HashMap<String, Arc<Permissions>>,
    /// Shared answers for the node itself and for principals with no entry.
    internal: Arc<Permissions>,
}

impl Authorizer {
    /// Compile `state`. `generation` identifies this version (e.g. the metadata log
    /// index it was applied at), so cached [`Permissions`] can tell they are stale.
    pub fn compile(state: &RbacState, superusers: &[String], generation: u64) -> Authorizer {
        let roles: HashMap<String, [TypeGrants; 5]> = state
            .roles
            .iter()
            .map(|(name, role)| {
                let mut types: [TypeGrants; 5] = Default::default();
                for grant in &role.grants {
                    types[grant.resource.index()].add(&grant.pattern, grant.operations);
                }
                (name.clone(), types)
            })
            .collect();
        let superusers: HashSet<String> = superusers.iter().cloned().collect();
        let mut principals: HashMap<String, Permissions> = HashMap::new();
        let empty = |principal: &String| Permissions {
            principal: Some(principal.clone()),
            generation,
            ..Permissions::default()
        };
        for (principal, user) in &state.users {
            let perms = principals
                .entry(principal.clone())
                .or_insert_with(|| empty(principal));
            for role in user.roles.iter().filter_map(|r| roles.get(r)) {
                perms.add_role(role);
            }
        }
        // Direct grants (ACLs) join the principal's permissions like one more role.
        for (principal, grants) in &state.acls {
            let perms = principals
                .entry(principal.clone())
                .or_insert_with(|| empty(principal));
            for grant in grants {
                perms.types[grant.resource.index()].add(&grant.pattern, grant.operations);
            }
        }
        let mut principals: HashMap<String, Arc<Permissions>> = principals
            .into_iter()
            .map(|(name, perms)| (name, Arc::new(perms)))
            .collect();
        for superuser in &superusers {
            principals.insert(
                superuser.clone(),
                Arc::new(Permissions {
                    principal: Some(superuser.clone()),
                    everything: true,
                    generation,
                    ..Permissions::default()
                }),
            );
        }
        Authorizer {
            generation,
            superusers,
            roles,
            principals,
            internal: Arc::new(Permissions {
                principal: Some("internal".to_string()),
                everything: true,
                generation,
                ..Permissions::default()
            }),
        }
    }

    /// The version this was compiled from.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether `principal` is a configured superuser.
    pub fn is_superuser(&self, principal: &str) -> bool {
        self.superusers.contains(principal)
    }

    /// Whether the request of `ctx` may do `op` on `resource`:`name`.
    #[inline]
    pub fn allows(
        &self,
        ctx: &SecurityContext,
        resource: ResourceType,
        name: &str,
        op: Operation,
    ) -> bool {
        if ctx.internal {
            return true;
        }
        let Some(principal) = ctx.principal.as_deref() else {
            return false;
        };
        if let Some(perms) = self.principals.get(principal)
            && perms.allows(resource, name, op)
        {
            return true;
        }
        ctx.roles.iter().any(|role| {
            self.roles
                .get(role.as_str())
                .is_some_and(|types| types[resource.index()].allows(name, op))
        })
    }

    /// The check, as a proof value or a denial naming the principal, resource and
    /// operation.
    #[inline]
    pub fn authorize(
        &self,
        ctx: &SecurityContext,
        resource: ResourceType,
        name: &str,
        op: Operation,
    ) -> Result<Authorized, SecurityError> {
        if self.allows(ctx, resource, name, op) {
            Ok(Authorized {
                resource,
                operation: op,
            })
        } else {
            Err(SecurityError::PermissionDenied {
                principal: ctx.describe(),
                resource: format!("{resource}:{name}"),
                operation: op,
            })
        }
    }

    /// Everything `ctx` may do, merged into one value a connection can keep.
    pub fn permissions(&self, ctx: &SecurityContext) -> Arc<Permissions> {
        if ctx.internal {
            return self.internal.clone();
        }
        let Some(principal) = ctx.principal.as_deref() else {
            return Arc::new(Permissions {
                generation: self.generation,
                ..Permissions::default()
            });
        };
        let assigned = self.principals.get(principal);
        let stated: Vec<&[TypeGrants; 5]> = ctx
            .roles
            .iter()
            .filter_map(|r| self.roles.get(r.as_str()))
            .collect();
        match assigned {
            Some(perms) if stated.is_empty() || perms.everything => perms.clone(),
            _ => {
                let mut perms = match assigned {
                    Some(perms) => Permissions::clone(perms),
                    None => Permissions {
                        principal: Some(principal.to_string()),
                        generation: self.generation,
                        ..Permissions::default()
                    },
                };
                for role in stated {
                    perms.add_role(role);
                }
                Arc::new(perms)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rbac::Grant;
    use proptest::prelude::*;

    fn ctx(principal: &str, roles: &[&str]) -> SecurityContext {
        SecurityContext {
            principal: Some(principal.to_string()),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            peer: Some("10.0.0.9:4000".parse().unwrap()),
            internal: false,
        }
    }

    fn state() -> RbacState {
        let mut s = RbacState::default();
        s.create_role("writer").unwrap();
        s.grant(
            "writer",
            Grant::parse("topic:orders.*", "produce,describe").unwrap(),
        )
        .unwrap();
        s.grant("writer", Grant::parse("topic:audit", "produce").unwrap())
            .unwrap();
        s.create_role("reader").unwrap();
        s.grant(
            "reader",
            Grant::parse("topic:*", "consume,describe").unwrap(),
        )
        .unwrap();
        s.grant("reader", Grant::parse("group:*", "consume").unwrap())
            .unwrap();
        s.assign("writer", "alice").unwrap();
        s
    }

    fn both(
        authz: &Authorizer,
        ctx: &SecurityContext,
        resource: ResourceType,
        name: &str,
        op: Operation,
    ) -> bool {
        let direct = authz.allows(ctx, resource, name, op);
        assert_eq!(direct, authz.permissions(ctx).allows(resource, name, op));
        assert_eq!(direct, authz.authorize(ctx, resource, name, op).is_ok());
        direct
    }

    #[test]
    fn prefix_literal_wildcard() {
        let authz = Authorizer::compile(&state(), &[], 1);
        let alice = ctx("alice", &[]);
        use Operation::*;
        use ResourceType::*;
        assert!(both(&authz, &alice, Topic, "orders.eu", Produce));
        assert!(both(&authz, &alice, Topic, "orders.eu", Describe));
        assert!(!both(&authz, &alice, Topic, "orders.eu", Consume));
        assert!(!both(&authz, &alice, Topic, "orders.eu", Delete));
        assert!(!both(&authz, &alice, Topic, "orders", Produce));
        assert!(both(&authz, &alice, Topic, "audit", Produce));
        assert!(!both(&authz, &alice, Topic, "audit.x", Produce));
        assert!(!both(&authz, &alice, Queue, "orders.eu", Produce));
        // A role stated by the credential adds the wildcard grant.
        let reading = ctx("alice", &["reader"]);
        assert!(both(&authz, &reading, Topic, "anything", Consume));
        assert!(both(&authz, &reading, Topic, "orders.eu", Produce));
        assert!(!both(&authz, &reading, Topic, "anything", Produce));
        assert!(both(&authz, &reading, Group, "g1", Consume));
    }

    #[test]
    fn deny_by_default() {
        let authz = Authorizer::compile(&state(), &[], 1);
        use Operation::*;
        use ResourceType::*;
        // Unknown principal, unknown stated role, anonymous.
        assert!(!both(
            &authz,
            &ctx("mallory", &[]),
            Topic,
            "orders.eu",
            Describe
        ));
        assert!(!both(
            &authz,
            &ctx("mallory", &["root"]),
            Topic,
            "orders.eu",
            Describe
        ));
        let anonymous = SecurityContext::client(None, "10.0.0.1:1".parse().unwrap());
        assert!(!both(&authz, &anonymous, Topic, "x", Describe));
        let empty = Authorizer::compile(&RbacState::default(), &[], 0);
        for t in ResourceType::ALL {
            for op in Operation::ALL {
                assert!(!both(
                    &empty,
                    &ctx("alice", &["writer"]),
                    t,
                    "orders.eu",
                    op
                ));
            }
        }
        let err = authz
            .authorize(&ctx("alice", &[]), Topic, "orders.eu", Delete)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "alice@10.0.0.9:4000 may not delete topic:orders.eu"
        );
    }

    #[test]
    fn acls_grant_like_roles_and_merge_with_them() {
        let mut s = state();
        s.grant_acl("bob", Grant::parse("topic:audit", "consume").unwrap())
            .unwrap();
        s.grant_acl("alice", Grant::parse("queue:jobs.*", "consume").unwrap())
            .unwrap();
        let authz = Authorizer::compile(&s, &[], 1);
        use Operation::*;
        use ResourceType::*;
        let (alice, bob) = (ctx("alice", &[]), ctx("bob", &[]));
        assert!(both(&authz, &bob, Topic, "audit", Consume));
        assert!(!both(&authz, &bob, Topic, "audit", Produce));
        assert!(!both(&authz, &bob, Topic, "audit.x", Consume));
        // With roles: the union.
        assert!(both(&authz, &alice, Queue, "jobs.eu", Consume));
        assert!(both(&authz, &alice, Topic, "orders.eu", Produce));
        // And with a stated role on top.
        let reading = ctx("bob", &["reader"]);
        assert!(both(&authz, &reading, Topic, "x", Consume));
        assert!(both(&authz, &reading, Topic, "audit", Consume));
        // Revoke: gone at the next compile.
        s.revoke_acl("bob", &Grant::parse("topic:audit", "consume").unwrap())
            .unwrap();
        assert!(!s.acls.contains_key("bob"));
        let authz = Authorizer::compile(&s, &[], 2);
        assert!(!both(&authz, &bob, Topic, "audit", Consume));
    }

    #[test]
    fn superuser_and_internal() {
        let authz = Authorizer::compile(&state(), &["root".to_string()], 3);
        assert!(authz.is_superuser("root"));
        for t in ResourceType::ALL {
            for op in Operation::ALL {
                assert!(both(&authz, &ctx("root", &[]), t, "x", op));
                assert!(both(&authz, &SecurityContext::internal(), t, "x", op));
            }
        }
        assert!(authz.permissions(&ctx("root", &["reader"])).is_superuser());
        assert_eq!(authz.permissions(&ctx("alice", &[])).generation(), 3);
    }

    fn pattern_strategy() -> impl Strategy<Value = NamePattern> {
        prop_oneof![
            Just(NamePattern::Any),
            "[ab.]{0,3}".prop_map(NamePattern::Prefix),
            "[ab.]{1,4}".prop_map(NamePattern::Literal),
        ]
    }

    fn grant_strategy() -> impl Strategy<Value = Grant> {
        (0..5usize, pattern_strategy(), 1u8..128).prop_map(|(t, pattern, bits)| Grant {
            resource: ResourceType::ALL[t],
            pattern,
            operations: Operations::of(
                &Operation::ALL
                    .into_iter()
                    .filter(|op| bits & (1 << *op as u8) != 0)
                    .collect::<Vec<_>>(),
            ),
        })
    }

    /// The reference semantics, written independently of the compiled form.
    fn reference(grants: &[Grant], t: ResourceType, name: &str, op: Operation) -> bool {
        grants.iter().any(|g| {
            let name_ok = match &g.pattern {
                NamePattern::Any => true,
                NamePattern::Prefix(p) => {
                    name.len() >= p.len() && name.as_bytes()[..p.len()] == *p.as_bytes()
                }
                NamePattern::Literal(l) => name == l,
            };
            g.resource == t && name_ok && g.operations.iter().any(|o| o == op)
        })
    }

    proptest! {
        /// A grant never allows an operation or a resource outside it, and always allows
        /// what it covers — via assignment, via a stated role and as an ACL alike.
        #[test]
        fn grants_allow_exactly_what_they_cover(
            grants in proptest::collection::vec(grant_strategy(), 0..6),
            t in 0..5usize,
            name in "[ab.]{1,5}",
            op in 0..7usize,
        ) {
            let mut s = RbacState::default();
            s.create_role("r").unwrap();
            for g in &grants {
                s.grant("r", g.clone()).unwrap();
            }
            s.assign("r", "assigned").unwrap();
            for g in &grants {
                s.grant_acl("direct", g.clone()).unwrap();
                s.grant_acl("mixed", g.clone()).unwrap();
            }
            // A principal with an ACL and an unrelated (empty) role.
            s.create_role("empty").unwrap();
            s.assign("empty", "mixed").unwrap();
            let authz = Authorizer::compile(&s, &[], 0);
            let (t, op) = (ResourceType::ALL[t], Operation::ALL[op]);
            let expected = reference(&grants, t, &name, op);
            prop_assert_eq!(both(&authz, &ctx("assigned", &[]), t, &name, op), expected);
            prop_assert_eq!(both(&authz, &ctx("stated", &["r"]), t, &name, op), expected);
            prop_assert_eq!(both(&authz, &ctx("direct", &[]), t, &name, op), expected);
            prop_assert_eq!(both(&authz, &ctx("mixed", &["empty"]), t, &name, op), expected);
            prop_assert!(!both(&authz, &ctx("other", &[]), t, &name, op));
            // Revoking every ACL leaves nothing allowed.
            let mut revoked = s.clone();
            prop_assert_eq!(revoked.delete_acls("direct"), s.acls.get("direct").map_or(0, Vec::len));
            let authz = Authorizer::compile(&revoked, &[], 1);
            prop_assert!(!both(&authz, &ctx("direct", &[]), t, &name, op));
        }
    }
}
