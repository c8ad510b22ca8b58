//! Security on a real 3-node cluster (`--auth jwt,apikey`, an HS256 secret file,
//! `--superuser admin`), through the client library:
//!
//! - hostile credentials (none, a wrong key, `alg: none`, expired, not yet valid, a
//!   wrong issuer, a truncated token, 1 MiB, an unknown API key) are refused with
//!   `Unauthenticated`, and the nodes keep serving;
//! - a principal allowed to produce on `orders.*` (by an assigned role, or by its
//!   token's `roles` claim) but not to consume or delete is refused exactly there, with
//!   `PermissionDenied` naming the resource and operation;
//! - a grant and a role change take effect on connections already open, on every
//!   node, without reconnecting;
//! - an API key works until it is revoked, then the open connection is refused;
//! - a connection re-authenticates in place with a fresh token (new roles, a later
//!   expiry) and outlives its first token; another principal's token is refused;
//! - the HTTP admin port: probes open, the rest by bearer token and permission;
//! - a producer over its quota is throttled, slows down and loses nothing;
//! - queues: the queue's grants let a worker send, receive and term; without them
//!   `PermissionDenied`; a dead letter reaches the DLQ across the cluster's mTLS port.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use neo_client::{
    Admin, Client, ClientConfig, Consumer, Error, Offset, Producer, ProducerRecord, QueueAdmin,
    QueueConsumer, QueueConsumerConfig, QueueOptions, QueueProducer, QuotaLimits, QuotaScope,
    SecurityAdmin,
};
use neo_protocol::ErrorCode;
use neo_tests::cluster::http_get_as;
use neo_tests::{SecureCluster, TestCluster};
use serde_json::{Value, json};

/// The HS256 secret the nodes verify tokens with.
const SECRET: &str = "neo-e2e-3node-hs256-secret-at-least-32-bytes";
/// Changes reach every node well within this (the bound is 1 s).
const PROPAGATION_MAX: Duration = Duration::from_secs(5);

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap_or_default())
}

/// An HS256 JWT over `claims` signed with `secret`.
fn jwt_with(secret: &str, header: &Value, claims: &Value) -> String {
    let signing_input = format!("{}.{}", b64(header), b64(claims));
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

/// A valid token for `sub`, with `roles`, valid for an hour.
fn jwt(sub: &str, roles: &[&str]) -> String {
    jwt_with(
        SECRET,
        &json!({"alg": "HS256", "typ": "JWT"}),
        &json!({"sub": sub, "iss": "neo-e2e", "exp": now() + 3600, "roles": roles}),
    )
}

async fn client_with(cluster: &TestCluster, token: Option<&str>) -> neo_client::Result<Client> {
    let mut config = ClientConfig::default();
    config.rpc.auth_token = token.map(|t| t.as_bytes().to_vec());
    config.request_timeout = Duration::from_secs(10);
    Client::connect_with(&cluster.client_addrs(), config).await
}

fn code(err: &Error) -> Option<ErrorCode> {
    err.code()
}

/// The error of `r`, which must be a refusal with `want`.
fn refused<T: std::fmt::Debug>(r: neo_client::Result<T>, want: ErrorCode) -> anyhow::Result<Error> {
    match r {
        Ok(v) => bail!("expected {want:?}, got Ok({v:?})"),
        Err(e) if code(&e) == Some(want) => Ok(e),
        Err(e) => bail!("expected {want:?}, got {e} ({:?})", code(&e)),
    }
}

async fn produce_one(client: &Client, topic: &str) -> neo_client::Result<Option<u64>> {
    let producer = Producer::new(client.clone());
    let meta = producer
        .send_and_wait(ProducerRecord::new(topic, &b"hello"[..]).partition(0))
        .await?;
    Ok(meta.offset)
}

async fn consume_some(client: &Client, topic: &str) -> neo_client::Result<usize> {
    let mut consumer = Consumer::new(client.clone());
    consumer.assign(topic, &[0], Offset::Beginning).await?;
    Ok(consumer.poll(Duration::from_millis(500)).await?.len())
}

/// Polls `f` until it is `Ok`, or fails after `PROPAGATION_MAX`.
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = neo_client::Result<T>>,
{
    let deadline = Instant::now() + PROPAGATION_MAX;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => bail!("{what}: still {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rbac_authentication_and_revocation_on_three_nodes() -> anyhow::Result<()> {
    let (cluster, _dir) = SecureCluster::new(3, SECRET)?.auth("jwt,apikey").start()?;
    let result = scenario(&cluster).await;
    if result.is_err() {
        eprintln!("{}", cluster.logs(40));
    }
    result
}

async fn scenario(cluster: &TestCluster) -> anyhow::Result<()> {
    // Hostile credentials: each refused, the nodes unaffected.
    let header = json!({"alg": "HS256", "typ": "JWT"});
    let claims = |extra: Value| {
        let mut c = json!({"sub": "mallory", "iss": "neo-e2e", "exp": now() + 3600});
        if let (Some(c), Some(e)) = (c.as_object_mut(), extra.as_object()) {
            c.extend(e.clone());
        }
        c
    };
    let good = jwt("mallory", &[]);
    let hostile: Vec<(&str, String)> = vec![
        (
            "wrong key",
            jwt_with(
                "another-secret-of-at-least-32-bytes!!",
                &header,
                &claims(json!({})),
            ),
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(&json!({"alg": "none"})),
                b64(&claims(json!({})))
            ),
        ),
        (
            "expired",
            jwt_with(SECRET, &header, &claims(json!({"exp": now() - 600}))),
        ),
        (
            "not yet valid",
            jwt_with(SECRET, &header, &claims(json!({"nbf": now() + 600}))),
        ),
        (
            "wrong issuer",
            jwt_with(SECRET, &header, &claims(json!({"iss": "evil"}))),
        ),
        ("truncated", good[..good.len() - 5].to_string()),
        ("1 MiB", "a".repeat(1 << 20)),
        ("bad base64", "!!!.@@@.###".to_string()),
        (
            "unknown API key",
            "neoak_00112233445566778899aabb_0000".to_string(),
        ),
    ];
    for (what, token) in &hostile {
        refused(
            client_with(cluster, Some(token)).await,
            ErrorCode::Unauthenticated,
        )
        .with_context(|| what.to_string())?;
    }
    refused(client_with(cluster, None).await, ErrorCode::Unauthenticated).context("no token")?;

    // The superuser bootstraps topics and a role.
    let admin = client_with(cluster, Some(&jwt("admin", &[]))).await?;
    let topics = Admin::new(admin.clone());
    topics.create_topic("orders.eu", 1, 3).await?;
    topics.create_topic("payments", 1, 3).await?;
    let security = SecurityAdmin::new(admin.clone());
    security.create_role("writer").await?;
    security
        .grant("writer", "topic:orders.*", &["produce", "describe"])
        .await?;
    security.assign("writer", "alice").await?;

    // alice: produce on orders.*, nothing else.
    let alice_token = jwt("alice", &[]);
    let alice = eventually("alice's metadata", || {
        client_with(cluster, Some(&alice_token))
    })
    .await?;
    eventually("alice produces", || produce_one(&alice, "orders.eu")).await?;
    let denied = refused(
        produce_one(&alice, "payments").await,
        ErrorCode::PermissionDenied,
    )?;
    ensure!(denied.to_string().contains("payments"), "{denied}");
    let denied = refused(
        consume_some(&alice, "orders.eu").await,
        ErrorCode::PermissionDenied,
    )?;
    ensure!(denied.to_string().contains("consume"), "{denied}");
    refused(
        Admin::new(alice.clone()).delete_topic("orders.eu").await,
        ErrorCode::PermissionDenied,
    )?;
    refused(
        security_of(&alice).create_role("mine").await,
        ErrorCode::PermissionDenied,
    )?;
    let listed = Admin::new(alice.clone()).list_topics().await?;
    ensure!(
        listed == vec!["orders.eu".to_string()],
        "alice sees {listed:?}"
    );

    // A grant reaches alice's open connections (every node) without a reconnect.
    security
        .grant("writer", "topic:orders.*", &["consume"])
        .await?;
    let read = eventually("the consume grant", || consume_some(&alice, "orders.eu")).await?;
    ensure!(read >= 1, "read {read}");

    // Roles stated by the token: bob is not assigned anything but says "writer".
    let bob_token = jwt("bob", &["writer"]);
    let bob = eventually("bob", || client_with(cluster, Some(&bob_token))).await?;
    eventually("bob produces", || produce_one(&bob, "orders.eu")).await?;
    refused(
        produce_one(&bob, "payments").await,
        ErrorCode::PermissionDenied,
    )?;

    reauthentication(cluster).await?;

    // Unassigning takes effect on alice's open connection.
    security.unassign("writer", "alice").await?;
    let deadline = Instant::now() + PROPAGATION_MAX;
    loop {
        match produce_one(&alice, "orders.eu").await {
            Err(e) if code(&e) == Some(ErrorCode::PermissionDenied) => break,
            _ if Instant::now() >= deadline => bail!("alice still produces after unassign"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }

    // API keys: carol's key works, with the role she is assigned, until revoked.
    let key = security.create_api_key("carol").await?;
    security.assign("writer", "carol").await?;
    let carol = eventually("carol's key", || client_with(cluster, Some(&key.api_key))).await?;
    eventually("carol produces", || produce_one(&carol, "orders.eu")).await?;
    let described = security.describe().await?;
    ensure!(described.enabled, "{described:?}");
    ensure!(
        described
            .api_keys
            .iter()
            .any(|k| k.key_id == key.key_id && k.principal == "carol" && !k.revoked),
        "{described:?}"
    );
    security.revoke_api_key(&key.key_id).await?;
    let deadline = Instant::now() + PROPAGATION_MAX;
    loop {
        match produce_one(&carol, "orders.eu").await {
            Err(e) if code(&e) == Some(ErrorCode::Unauthenticated) => break,
            Err(e) if Instant::now() >= deadline => bail!("after revocation: {e}"),
            Ok(_) if Instant::now() >= deadline => bail!("carol still produces after revocation"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    // A new connection with the key is refused too, by whichever node it reaches once
    // that node's metadata replica has applied the revocation (a follower learns the
    // commit at the leader's next message: within a heartbeat).
    let deadline = Instant::now() + PROPAGATION_MAX;
    loop {
        let attempt = client_with(cluster, Some(&key.api_key)).await;
        match refused(attempt, ErrorCode::Unauthenticated) {
            Ok(_) => break,
            Err(e) if Instant::now() >= deadline => return Err(e.context("after revocation")),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }

    // The HTTP admin port: probes open, the rest by bearer token and permission.
    let http = cluster.spec(1).http;
    let admin_token = jwt("admin", &[]);
    ensure!(http_get_as(http, "/health", None)?.0 == 200);
    ensure!(http_get_as(http, "/ready", None)?.0 == 200);
    for path in ["/metrics", "/v1/cluster", "/v1/groups"] {
        let (status, body) = http_get_as(http, path, None)?;
        ensure!(status == 401, "{path} without a token: {status} {body}");
        let (status, _) = http_get_as(http, path, Some("not-a-token"))?;
        ensure!(status == 401, "{path} with a bad token: {status}");
        let (status, body) = http_get_as(http, path, Some(&admin_token))?;
        ensure!(status == 200, "{path} as admin: {status} {body}");
    }
    let (status, body) = http_get_as(http, "/v1/cluster", Some(&bob_token))?;
    ensure!(status == 403, "/v1/cluster as bob: {status} {body}");
    let (status, _) = http_get_as(http, "/v1/partitions/payments/0/digest", Some(&bob_token))?;
    ensure!(status == 403, "digest of payments as bob: {status}");
    let (status, body) = http_get_as(http, "/v1/partitions/orders.eu/0/digest", Some(&bob_token))?;
    ensure!(
        status == 200,
        "digest of orders.eu as bob (describe on orders.*): {status} {body}"
    );

    // A throttled producer slows down and loses nothing: dave may produce 20 KB/s and
    // sends 100 KiB; every record is acknowledged once and read back in order, and the
    // nodes counted refusals.
    security
        .set_quota(
            QuotaScope::Principal("dave".into()),
            QuotaLimits {
                produce_bytes_per_sec: Some(20_000),
                ..QuotaLimits::default()
            },
        )
        .await?;
    topics.create_topic("orders.slow", 1, 3).await?;
    let dave_token = jwt("dave", &["writer"]);
    let dave = eventually("dave", || client_with(cluster, Some(&dave_token))).await?;
    // One record per request (each waits for its answer), so that the limit is met
    // request by request rather than by one oversized batch.
    let producer = Producer::new(dave.clone());
    let mut offsets = Vec::new();
    for i in 0..100u32 {
        let mut value = vec![b'x'; 1024];
        value[..4].copy_from_slice(&i.to_be_bytes());
        let meta = producer
            .send_and_wait(ProducerRecord::new("orders.slow", value).partition(0))
            .await?;
        offsets.push(meta.offset.context("an offset")?);
    }
    offsets.sort_unstable();
    offsets.dedup();
    ensure!(offsets.len() == 100, "{} distinct offsets", offsets.len());
    let mut consumer = Consumer::new(admin.clone());
    consumer
        .assign("orders.slow", &[0], Offset::Beginning)
        .await?;
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < 100 && Instant::now() < deadline {
        for r in consumer.poll(Duration::from_millis(500)).await? {
            seen.push(u32::from_be_bytes([
                r.value[0], r.value[1], r.value[2], r.value[3],
            ]));
        }
    }
    ensure!(seen == (0..100).collect::<Vec<_>>(), "read back {seen:?}");
    let (mut throttled, mut denied, mut refused_jwt) = (0u64, 0u64, 0u64);
    for id in 1..=3 {
        let (_, body) = http_get_as(cluster.spec(id).http, "/metrics", Some(&admin_token))?;
        let value = |prefix: &str| {
            body.lines()
                .find_map(|l| l.strip_prefix(prefix))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        throttled += value("neo_throttled_requests_total ");
        denied += value("neo_permission_denied_total ");
        refused_jwt += value("neo_auth_total{method=\"jwt\",result=\"refused\"} ");
    }
    ensure!(throttled > 0, "no request was throttled");
    ensure!(denied > 0, "no denial counted");
    ensure!(refused_jwt > 0, "no refused JWT handshake counted");

    // The superuser still has everything; the nodes kept serving throughout.
    topics.delete_topic("payments").await?;
    queues(cluster, &admin).await
}

/// Queues with security on: the queue's grants (not the topic's) let a worker send,
/// receive and term; without them every call is `PermissionDenied`; a dead letter
/// crosses nodes over the cluster's mTLS port to the DLQ's leader.
async fn queues(cluster: &TestCluster, admin: &Client) -> anyhow::Result<()> {
    QueueAdmin::new(admin.clone())
        .create("jobs", QueueOptions::new(3, 3).max_deliveries(1))
        .await?;
    let security = SecurityAdmin::new(admin.clone());
    security.create_role("worker").await?;
    security
        .grant("worker", "queue:jobs", &["produce", "consume", "describe"])
        .await?;
    let worker_token = jwt("wendy", &["worker"]);
    let wendy = eventually("wendy's metadata", || {
        client_with(cluster, Some(&worker_token))
    })
    .await?;
    let producer = QueueProducer::new(wendy.clone());
    eventually("wendy sends", || producer.send("jobs", "job-1")).await?;
    let consumer = QueueConsumer::with_config(
        wendy.clone(),
        "jobs",
        "wendy-1",
        QueueConsumerConfig {
            prefetch: 0,
            visibility_timeout_ms: 30_000,
            ..QueueConsumerConfig::default()
        },
    )?;
    let got = eventually("wendy receives", || async {
        let got = consumer.receive(1, Duration::from_millis(500)).await?;
        match got.is_empty() {
            true => Err(Error::InvalidArgument("nothing received yet".into())),
            false => Ok(got),
        }
    })
    .await?;
    consumer.term_one(got[0].receipt, "no thanks").await?;
    // alice has no queue grant: refused.
    let alice = client_with(cluster, Some(&jwt("alice", &[]))).await?;
    let hers = QueueConsumer::with_config(
        alice,
        "jobs",
        "alice",
        QueueConsumerConfig {
            prefetch: 0,
            visibility_timeout_ms: 30_000,
            ..QueueConsumerConfig::default()
        },
    )?;
    refused(
        hers.receive(1, Duration::from_millis(100)).await,
        ErrorCode::PermissionDenied,
    )?;
    // The superuser finds the dead letter in jobs.dlq.
    let dlq = QueueConsumer::with_config(
        admin.clone(),
        "jobs.dlq",
        "ops",
        QueueConsumerConfig {
            prefetch: 0,
            ..QueueConsumerConfig::default()
        },
    )?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let dead = dlq.receive(1, Duration::from_millis(500)).await?;
        if let Some(d) = dead.first() {
            ensure!(&d.value[..] == b"job-1", "{d:?}");
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the dead letter never reached jobs.dlq"
        );
    }
    Ok(())
}

/// A JWT for `sub` with `roles` that expires `secs` seconds from now.
fn short_jwt(sub: &str, roles: &[&str], secs: u64) -> String {
    jwt_with(
        SECRET,
        &json!({"alg": "HS256", "typ": "JWT"}),
        &json!({"sub": sub, "iss": "neo-e2e", "exp": now() + secs, "roles": roles}),
    )
}

/// In-place re-authentication: connections opened with a 6 s token are renewed with a
/// fresh one (whose roles claim now says `writer`) and keep working, as the renewed
/// principal, past the first token's expiry; a bad token and another principal's are
/// refused without touching the connection.
async fn reauthentication(cluster: &TestCluster) -> anyhow::Result<()> {
    const FIRST_TOKEN_SECS: u64 = 6;
    let expired_after = Instant::now() + Duration::from_secs(FIRST_TOKEN_SECS + 1);
    let short = short_jwt("dave", &[], FIRST_TOKEN_SECS);
    // The client library: every open broker connection is renewed.
    let dave = eventually("dave", || client_with(cluster, Some(&short))).await?;
    // One connection, seen through a pipeline (bound to its connection: it fails if
    // the connection closes, where a client would reconnect unseen).
    let config = neo_protocol::ClientConfig {
        auth_token: Some(short.clone().into_bytes()),
        ..neo_protocol::ClientConfig::default()
    };
    let raw = neo_protocol::NeoClient::connect(cluster.client_addrs()[0].clone(), config).await?;
    let (service, method) = raw.resolve("neo.broker", "metadata").await?;
    let mut pipe = raw.pipeline().await?;

    refused(
        produce_one(&dave, "orders.eu").await,
        ErrorCode::PermissionDenied,
    )?;
    dave.reauthenticate(jwt("dave", &["writer"])).await?;
    produce_one(&dave, "orders.eu")
        .await
        .context("the renewed token's roles")?;
    refused(
        dave.reauthenticate(jwt("admin", &[])).await,
        ErrorCode::PrincipalMismatch,
    )?;
    refused(
        dave.reauthenticate("garbage").await,
        ErrorCode::Unauthenticated,
    )?;
    ensure!(raw.reauthenticate(jwt("dave", &[])).await? == "dave");
    match raw.reauthenticate(jwt("erin", &[])).await {
        Err(neo_protocol::Error::Rpc(e))
            if e.error_code() == Some(ErrorCode::PrincipalMismatch) => {}
        other => bail!("expected PrincipalMismatch, got {other:?}"),
    }

    tokio::time::sleep_until(expired_after.into()).await;
    for _ in 0..2 {
        // Qiss of `MetadataRequest { topics: [] }`: an empty list.
        pipe.send(service, method, bytes::Bytes::from_static(&[0]))
            .await
            .context("the renewed connection past the first token's expiry")?;
        let (_, reply) = pipe.recv().await.context("pipeline ended")?;
        reply.context("metadata past the first token's expiry")?;
    }
    produce_one(&dave, "orders.eu")
        .await
        .context("dave past the first token's expiry")?;
    Ok(())
}

fn security_of(client: &Client) -> SecurityAdmin {
    SecurityAdmin::new(client.clone())
}
