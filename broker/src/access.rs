//! Authorization at the broker: every operation asks [`Broker::authorize`] before it
//! does anything. With security off ([`AccessConfig::enabled`] false: the embedded and
//! development default) every request is allowed. With it on, the request's
//! [`SecurityContext`] (principal, roles its credential stated) is checked against the
//! replicated roles and grants plus the configured superusers, deny by default.
//!
//! The compiled [`Authorizer`] is cached and rebuilt only when the metadata state
//! changed *and* its roles or assignments differ, so a check is a pointer compare, a
//! hash lookup and a pattern match (see `security/benches/rbac.rs`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use neo_protocol::RpcError;
use neo_security::rbac::RbacState;
use neo_security::{Authorizer, Operation, ResourceType, SecurityContext};

use crate::meta::MetaState;

/// Whether, and for whom beyond the replicated grants, requests are authorized.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessConfig {
    /// Check every request (security on). Off: everything is allowed.
    pub enabled: bool,
    /// Principals allowed everything (they bootstrap roles and grants).
    pub superusers: Vec<String>,
}

/// The cached authorizer of one broker.
#[derive(Debug, Default)]
pub(crate) struct Access {
    pub(crate) cfg: AccessConfig,
    cache: Mutex<Option<Cached>>,
    /// Requests refused `PermissionDenied` so far.
    denials: AtomicU64,
}

#[derive(Debug)]
struct Cached {
    /// The metadata state it was looked at for (pointer identity).
    state: Arc<MetaState>,
    /// The roles it was compiled from.
    rbac: RbacState,
    authorizer: Arc<Authorizer>,
}

impl Access {
    pub(crate) fn new(cfg: AccessConfig) -> Access {
        Access {
            cfg,
            cache: Mutex::default(),
            denials: AtomicU64::new(0),
        }
    }

    /// The authorizer for `state`, compiled once per change of its roles.
    pub(crate) fn authorizer(&self, state: &Arc<MetaState>) -> Arc<Authorizer> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cache.as_mut() {
            if Arc::ptr_eq(&c.state, state) {
                return c.authorizer.clone();
            }
            if c.rbac == state.security.rbac {
                c.state = state.clone();
                return c.authorizer.clone();
            }
        }
        let generation = cache.as_ref().map_or(1, |c| c.authorizer.generation() + 1);
        let authorizer = Arc::new(Authorizer::compile(
            &state.security.rbac,
            &self.cfg.superusers,
            generation,
        ));
        *cache = Some(Cached {
            state: state.clone(),
            rbac: state.security.rbac.clone(),
            authorizer: authorizer.clone(),
        });
        authorizer
    }
}

impl crate::facade::Broker {
    /// Changes roles, grants, assignments or API keys (at the metadata leader).
    pub async fn alter_security(
        &self,
        ctx: &SecurityContext,
        req: neo_protocol::api::AlterSecurityRequest,
    ) -> Result<neo_protocol::api::AlterSecurityResponse, RpcError> {
        crate::ops::security::alter_security(self, ctx, req).await
    }

    /// Roles, grants, assignments and API key ids (any node answers).
    pub async fn describe_security(
        &self,
        ctx: &SecurityContext,
        req: neo_protocol::api::DescribeSecurityRequest,
    ) -> Result<neo_protocol::api::SecurityDescription, RpcError> {
        crate::ops::security::describe_security(self, ctx, req)
    }

    /// Whether security is on (requests are authenticated and authorized).
    pub fn security_enabled(&self) -> bool {
        self.access.cfg.enabled
    }

    /// The configured superusers.
    pub fn superusers(&self) -> &[String] {
        &self.access.cfg.superusers
    }

    /// `Ok` if `ctx` may do `op` on `resource`:`name`, else `PermissionDenied` naming
    /// the principal, the resource and the operation.
    pub fn authorize(
        &self,
        ctx: &SecurityContext,
        resource: ResourceType,
        name: &str,
        op: Operation,
    ) -> Result<(), RpcError> {
        if !self.access.cfg.enabled || ctx.internal {
            return Ok(());
        }
        self.access
            .authorizer(&self.state())
            .authorize(ctx, resource, name, op)
            .map(|_| ())
            .map_err(|e| {
                self.access.denials.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    target: "neo::audit",
                    who = %ctx.describe(),
                    resource = %format_args!("{resource}:{name}"),
                    operation = op.name(),
                    "permission denied"
                );
                e.to_rpc_error()
            })
    }

    /// Requests refused `PermissionDenied` since the node started (lists filtered by
    /// permission count nothing).
    pub fn permission_denials(&self) -> u64 {
        self.access.denials.load(Ordering::Relaxed)
    }

    /// Whether `ctx` may do `op` on `resource`:`name` (for filtering lists: nothing
    /// is counted or logged).
    pub fn allows(
        &self,
        ctx: &SecurityContext,
        resource: ResourceType,
        name: &str,
        op: Operation,
    ) -> bool {
        self.allowed_for(ctx)(resource, name, op)
    }

    /// [`crate::Broker::allows`] for many names: the authorizer is looked up once.
    pub fn allowed_for<'a>(
        &self,
        ctx: &'a SecurityContext,
    ) -> impl Fn(ResourceType, &str, Operation) -> bool + 'a {
        let authorizer = (self.access.cfg.enabled && !ctx.internal)
            .then(|| self.access.authorizer(&self.state()));
        move |resource, name, op| {
            authorizer
                .as_ref()
                .is_none_or(|a| a.allows(ctx, resource, name, op))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use neo_security::rbac::Grant;

    fn ctx(principal: &str) -> SecurityContext {
        SecurityContext::client(Some(principal.into()), "127.0.0.1:1".parse().unwrap())
    }

    #[test]
    fn recompiles_only_when_roles_change() {
        let access = Access::new(AccessConfig {
            enabled: true,
            superusers: vec!["root".into()],
        });
        let mut state = MetaState::default();
        let a = access.authorizer(&Arc::new(state.clone()));
        assert!(a.allows(&ctx("root"), ResourceType::Topic, "t", Operation::Delete));
        assert!(!a.allows(&ctx("bob"), ResourceType::Topic, "t", Operation::Produce));
        // Same roles in a new state: the same authorizer.
        let b = access.authorizer(&Arc::new(state.clone()));
        assert!(Arc::ptr_eq(&a, &b));
        state.security.rbac.create_role("w").unwrap();
        state
            .security
            .rbac
            .grant("w", Grant::parse("topic:orders.*", "produce").unwrap())
            .unwrap();
        state.security.rbac.assign("w", "bob").unwrap();
        let c = access.authorizer(&Arc::new(state));
        assert!(c.generation() > a.generation());
        assert!(c.allows(
            &ctx("bob"),
            ResourceType::Topic,
            "orders.eu",
            Operation::Produce
        ));
        assert!(!c.allows(
            &ctx("bob"),
            ResourceType::Topic,
            "orders.eu",
            Operation::Consume
        ));
        assert!(!c.allows(
            &ctx("bob"),
            ResourceType::Topic,
            "other",
            Operation::Produce
        ));
    }
}
