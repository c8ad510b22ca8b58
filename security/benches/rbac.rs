//! The cost of one authorization check (goal: under 200 ns).
//!
//! A realistic state: 200 roles of 10 grants each (literal, prefix and wildcard
//! patterns over every resource type), 1 000 principals with 3 roles each. Measured:
//! - `authorize/*`: `Authorizer::authorize(&SecurityContext, …)`, the full path a handler
//!   takes (principal lookup, then the principal's compiled grants; stated roles after);
//! - `permissions/*`: `Permissions::authorize`, a connection's cached `Arc<Permissions>`;
//! - `denied`: a denial, which builds the error (allocates; rare by design).
//!
//! `cargo bench -p neo-security --bench rbac`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use neo_security::SecurityContext;
use neo_security::rbac::{Authorizer, Grant, Operation, RbacState, ResourceType};

fn state() -> RbacState {
    let mut s = RbacState::default();
    for r in 0..200 {
        let role = format!("role-{r}");
        s.create_role(&role).unwrap();
        for g in 0..10 {
            let (resource, ops) = match g % 5 {
                0 => (format!("topic:orders-{r}-{g}"), "produce,describe"),
                1 => (format!("topic:events.{r}.{g}.*"), "consume,describe"),
                2 => (format!("group:svc-{r}-{g}"), "consume"),
                3 => (format!("queue:jobs.{r}.*"), "produce,consume"),
                _ => ("cluster:*".to_string(), "describe"),
            };
            s.grant(&role, Grant::parse(&resource, ops).unwrap())
                .unwrap();
        }
    }
    for p in 0..1_000 {
        for k in 0..3 {
            s.assign(
                &format!("role-{}", (p * 7 + k * 13) % 200),
                &format!("user-{p}"),
            )
            .unwrap();
        }
    }
    s
}

fn bench(c: &mut Criterion) {
    let authz = Authorizer::compile(&state(), &["root".to_string()], 1);
    let peer = "10.0.0.1:5000".parse().unwrap();
    // user-0 holds role-0, role-13, role-26.
    let user = SecurityContext::client(Some("user-0".to_string()), peer);
    let stated = SecurityContext {
        roles: vec!["role-99".to_string()],
        ..SecurityContext::client(Some("user-0".to_string()), peer)
    };
    let root = SecurityContext::client(Some("root".to_string()), peer);
    assert!(authz.allows(
        &user,
        ResourceType::Topic,
        "orders-13-5",
        Operation::Produce
    ));
    assert!(authz.allows(
        &user,
        ResourceType::Topic,
        "events.26.1.eu",
        Operation::Consume
    ));
    assert!(authz.allows(
        &stated,
        ResourceType::Queue,
        "jobs.99.x",
        Operation::Consume
    ));
    assert!(!authz.allows(&user, ResourceType::Topic, "orders-13-5", Operation::Delete));

    let mut g = c.benchmark_group("rbac");
    g.bench_function("authorize/literal", |b| {
        b.iter(|| {
            authz
                .authorize(
                    black_box(&user),
                    ResourceType::Topic,
                    black_box("orders-13-5"),
                    Operation::Produce,
                )
                .is_ok()
        })
    });
    g.bench_function("authorize/prefix", |b| {
        b.iter(|| {
            authz
                .authorize(
                    black_box(&user),
                    ResourceType::Topic,
                    black_box("events.26.1.eu"),
                    Operation::Consume,
                )
                .is_ok()
        })
    });
    g.bench_function("authorize/stated-role", |b| {
        b.iter(|| {
            authz
                .authorize(
                    black_box(&stated),
                    ResourceType::Queue,
                    black_box("jobs.99.x"),
                    Operation::Consume,
                )
                .is_ok()
        })
    });
    g.bench_function("authorize/superuser", |b| {
        b.iter(|| {
            authz
                .authorize(
                    black_box(&root),
                    ResourceType::Topic,
                    black_box("anything"),
                    Operation::Delete,
                )
                .is_ok()
        })
    });
    let perms = authz.permissions(&user);
    g.bench_function("permissions/literal", |b| {
        b.iter(|| {
            perms
                .authorize(
                    ResourceType::Topic,
                    black_box("orders-13-5"),
                    Operation::Produce,
                )
                .is_ok()
        })
    });
    g.bench_function("permissions/prefix", |b| {
        b.iter(|| {
            perms
                .authorize(
                    ResourceType::Topic,
                    black_box("events.26.1.eu"),
                    Operation::Consume,
                )
                .is_ok()
        })
    });
    g.bench_function("denied", |b| {
        b.iter(|| {
            authz
                .authorize(
                    black_box(&user),
                    ResourceType::Topic,
                    black_box("orders-13-5"),
                    Operation::Delete,
                )
                .is_err()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
