//! Authentication, RBAC administration and the `neo` CLI's security contract
//! (docs/cli.md: `--token`, `--api-key`, `--tls-*`, exit statuses 3 and 4, `neo role`,
//! `neo user api-key`, `neo quota`) against a secure test double of a broker: a real `NeoServer`
//! with an authenticator (tokens, API keys, mTLS certificate names) whose handlers
//! refuse what a principal may not do the way the node does (`PermissionDenied`
//! naming principal, resource and operation). The end-to-end runs against real
//! `neo-node` processes are in `neo-tests` (`tests/security_cli.rs`).

use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use neo_client::{Client, ClientConfig, RetryPolicy, SecurityAdmin};
use neo_protocol::api::*;
use neo_protocol::tls::{self, ClientAuth};
use neo_protocol::{
    Authenticator, ErrorCode, MethodBuilder, NeoConfig, NeoServer, PeerInfo, Principal,
    RequestContext, RpcError, ServiceBuilder,
};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use tokio::net::TcpListener;

const ADMIN_TOKEN: &str = "hdr.admin.sig";
const BOB_KEY: &str = "neoak_00000000000000b0_bobsecret";

/// Tokens and keys as the node's chain would take them; an empty token names the
/// principal by the mTLS certificate's common name.
struct Tokens;

impl Authenticator for Tokens {
    fn authenticate(&self, token: &[u8], peer: &PeerInfo) -> Result<Principal, RpcError> {
        let refused = |why: &str| RpcError::new(ErrorCode::Unauthenticated, why);
        match token {
            b"" => peer
                .identity
                .as_ref()
                .and_then(|id| id.common_name.clone())
                .map(Principal::new)
                .ok_or_else(|| refused("no client certificate")),
            t if t == ADMIN_TOKEN.as_bytes() => Ok(Principal::new("admin")),
            t if t == BOB_KEY.as_bytes() => Ok(Principal::new("bob")),
            _ => Err(refused("invalid token")),
        }
    }
}

/// What the double recorded and answers.
#[derive(Default)]
struct State {
    changes: Vec<SecurityChange>,
    produced: u32,
}

type Shared = Arc<Mutex<State>>;

/// `admin` may do anything; everyone else is refused admin operations, as the node
/// refuses them.
fn require_admin(ctx: &RequestContext, resource: &str, op: &str) -> Result<(), RpcError> {
    let who = ctx.principal().map_or("anonymous", |p| p.name.as_str());
    if who == "admin" {
        return Ok(());
    }
    Err(RpcError::new(
        ErrorCode::PermissionDenied,
        format!("{who}@{} may not {op} {resource}", ctx.peer_addr()),
    ))
}

fn description() -> SecurityDescription {
    SecurityDescription {
        enabled: true,
        roles: vec![
            RoleDescription {
                name: "writers".into(),
                grants: vec![
                    GrantDescription {
                        resource: "topic:orders.*".into(),
                        operations: vec!["produce".into(), "describe".into()],
                    },
                    GrantDescription {
                        resource: "group:billing".into(),
                        operations: vec!["consume".into()],
                    },
                ],
                principals: vec!["carol".into(), "bob".into()],
            },
            RoleDescription {
                name: "auditors".into(),
                grants: Vec::new(),
                principals: Vec::new(),
            },
        ],
        api_keys: vec![
            ApiKeyDescription {
                key_id: "00000000000000b0".into(),
                principal: "bob".into(),
                revoked: false,
            },
            ApiKeyDescription {
                key_id: "000000000000000a".into(),
                principal: "alice".into(),
                revoked: true,
            },
        ],
        superusers: vec!["admin".into()],
        // Out of the listing's order, as a cluster may answer.
        quotas: vec![
            QuotaDescription {
                scope: QuotaScope::Role("writers".into()),
                quota: QuotaLimits {
                    fetch_bytes_per_sec: Some(2_097_152),
                    ..QuotaLimits::default()
                },
            },
            QuotaDescription {
                scope: QuotaScope::Principal("alice".into()),
                quota: QuotaLimits {
                    produce_bytes_per_sec: Some(1_048_576),
                    fetch_bytes_per_sec: None,
                    requests_per_sec: Some(100),
                    connections: None,
                },
            },
            QuotaDescription {
                scope: QuotaScope::Default,
                quota: QuotaLimits {
                    requests_per_sec: Some(1000),
                    ..QuotaLimits::default()
                },
            },
        ],
        users: Vec::new(),
        acls: Vec::new(),
    }
}

fn service(address: String, state: Shared) -> ServiceBuilder {
    let (s1, s2) = (state.clone(), state);
    ServiceBuilder::new(BROKER_SERVICE)
        .method(
            MethodBuilder::new("metadata").sync_handler(move |_: MetadataRequest| {
                Ok(MetadataResponse {
                    cluster_id: "secure-double".into(),
                    brokers: vec![BrokerInfo {
                        node_id: 1,
                        address: address.clone(),
                        rack: None,
                    }],
                    controller_id: Some(1),
                    topics: vec![TopicMetadata {
                        name: "orders".into(),
                        partitions: vec![PartitionMetadata {
                            partition: 0,
                            leader: Some(1),
                            replicas: vec![1],
                            in_sync: vec![1],
                            leader_epoch: 1,
                        }],
                    }],
                })
            }),
        )
        .method(
            MethodBuilder::new("create_topic").sync_handler_with_context(
                |ctx: &RequestContext, r: CreateTopicRequest| {
                    require_admin(ctx, &format!("topic:{}", r.name), "create")?;
                    Ok(CreateTopicResponse { name: r.name })
                },
            ),
        )
        .method(MethodBuilder::new("produce").sync_handler_with_context(
            move |ctx: &RequestContext, r: ProduceRequest| {
                s1.lock().unwrap().produced += 1;
                require_admin(ctx, &format!("topic:{}", r.topic), "produce")?;
                Ok(ProduceResponse {
                    base_offset: 0,
                    log_append_time_ms: None,
                    record_count: 1,
                })
            },
        ))
        .method(
            MethodBuilder::new("alter_security").sync_handler_with_context(
                move |ctx: &RequestContext, r: AlterSecurityRequest| {
                    require_admin(ctx, "acl:*", "admin")?;
                    let key = matches!(r.change, SecurityChange::CreateApiKey { .. });
                    s2.lock().unwrap().changes.push(r.change);
                    Ok(if key {
                        AlterSecurityResponse {
                            key_id: Some("00000000000000c1".into()),
                            api_key: Some("neoak_00000000000000c1_newsecret".into()),
                        }
                    } else {
                        AlterSecurityResponse::default()
                    })
                },
            ),
        )
        .method(
            MethodBuilder::new("describe_security").sync_handler_with_context(
                |ctx: &RequestContext, _: DescribeSecurityRequest| {
                    require_admin(ctx, "acl:*", "describe")?;
                    Ok(description())
                },
            ),
        )
}

/// A secure double on loopback: its address and state. With `tls` (certificate, key
/// and client CA, PEM), TLS on the port, client certificates optional.
async fn start(tls: Option<(&str, &str, &str)>) -> (String, Shared) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let state = Shared::default();
    let mut server = NeoServer::new(NeoConfig::default()).with_authenticator(Arc::new(Tokens));
    if let Some((cert, key, ca)) = tls {
        let config = tls::server_config(
            tls::certs_from_pem("cert", cert.as_bytes()).unwrap(),
            tls::key_from_pem("key", key.as_bytes()).unwrap(),
            ClientAuth::Optional(tls::certs_from_pem("ca", ca.as_bytes()).unwrap()),
        )
        .unwrap();
        server = server.with_tls(config);
    }
    server
        .register(service(address.clone(), state.clone()))
        .unwrap();
    // Leaked on purpose: the server lives as long as the test.
    std::mem::forget(server.start(listener).unwrap());
    (address, state)
}

fn config(token: Option<&str>) -> ClientConfig {
    let mut config = ClientConfig {
        retry: RetryPolicy {
            backoff_initial: Duration::from_millis(5),
            backoff_max: Duration::from_millis(20),
            attempts_max: 3,
            deadline: Duration::from_secs(5),
        },
        ..ClientConfig::default()
    };
    config.rpc.auth_token = token.map(|t| t.as_bytes().to_vec());
    config
}

#[tokio::test]
async fn a_refused_credential_keeps_its_code() {
    let (address, _) = start(None).await;
    for token in [None, Some("wrong")] {
        let err = Client::connect_with(&[&address], config(token))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::Unauthenticated), "{err:?}");
        assert!(!err.is_retriable());
    }
}

#[tokio::test]
async fn security_admin_sends_each_change_and_reads_the_description() {
    let (address, state) = start(None).await;
    let client = Client::connect_with(&[&address], config(Some(ADMIN_TOKEN)))
        .await
        .unwrap();
    let admin = SecurityAdmin::new(client);
    admin.create_role("writers").await.unwrap();
    admin
        .grant("writers", "topic:orders.*", &["produce", "describe"])
        .await
        .unwrap();
    admin
        .revoke("writers", "topic:orders.*", &["describe"])
        .await
        .unwrap();
    admin.assign("writers", "bob").await.unwrap();
    admin.unassign("writers", "bob").await.unwrap();
    let key = admin.create_api_key("bob").await.unwrap();
    assert_eq!(
        (key.key_id.as_str(), key.api_key.as_str()),
        ("00000000000000c1", "neoak_00000000000000c1_newsecret")
    );
    admin.revoke_api_key("00000000000000c1").await.unwrap();
    let alice = QuotaLimits {
        produce_bytes_per_sec: Some(1 << 20),
        fetch_bytes_per_sec: None,
        requests_per_sec: Some(100),
        connections: None,
    };
    admin
        .set_quota(QuotaScope::Principal("alice".into()), alice)
        .await
        .unwrap();
    admin
        .set_quota(QuotaScope::Role("writers".into()), QuotaLimits::default())
        .await
        .unwrap();
    // Refused before anything is sent.
    for (scope, quota) in [
        (QuotaScope::Principal(" ".into()), alice),
        (
            QuotaScope::Default,
            QuotaLimits {
                requests_per_sec: Some(0),
                ..alice
            },
        ),
    ] {
        let err = admin.set_quota(scope, quota).await.unwrap_err();
        assert!(
            matches!(err, neo_client::Error::InvalidArgument(_)),
            "{err}"
        );
    }
    admin.delete_role("writers").await.unwrap();
    assert_eq!(admin.describe().await.unwrap(), description());
    let role = |r: &str| r.to_string();
    assert_eq!(
        state.lock().unwrap().changes,
        vec![
            SecurityChange::CreateRole {
                role: role("writers")
            },
            SecurityChange::Grant {
                role: role("writers"),
                resource: "topic:orders.*".into(),
                operations: "produce,describe".into(),
            },
            SecurityChange::Revoke {
                role: role("writers"),
                resource: "topic:orders.*".into(),
                operations: "describe".into(),
            },
            SecurityChange::Assign {
                role: role("writers"),
                principal: "bob".into(),
            },
            SecurityChange::Unassign {
                role: role("writers"),
                principal: "bob".into(),
            },
            SecurityChange::CreateApiKey {
                principal: "bob".into(),
            },
            SecurityChange::RevokeApiKey {
                key_id: "00000000000000c1".into(),
            },
            SecurityChange::SetQuota {
                scope: QuotaScope::Principal("alice".into()),
                quota: alice,
            },
            SecurityChange::SetQuota {
                scope: QuotaScope::Role("writers".into()),
                quota: QuotaLimits::default(),
            },
            SecurityChange::DeleteRole {
                role: role("writers")
            },
        ]
    );
}

#[tokio::test]
async fn a_denied_change_is_not_retried_and_names_what_was_refused() {
    let (address, state) = start(None).await;
    let client = Client::connect_with(&[&address], config(Some(BOB_KEY)))
        .await
        .unwrap();
    let err = SecurityAdmin::new(client)
        .create_role("mine")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::PermissionDenied), "{err:?}");
    assert!(err.to_string().contains("bob@"), "{err}");
    assert!(err.to_string().contains("may not admin acl:*"), "{err}");
    assert!(state.lock().unwrap().changes.is_empty());
}

// ---- the `neo` binary ----

/// Runs `neo --server ADDRESS args...` (credential variables of the environment
/// removed) on a blocking thread.
async fn neo(address: &str, args: &[&str]) -> Output {
    neo_with(address, args, &[], "").await
}

/// [`neo`] with environment variables and a stdin.
async fn neo_with(address: &str, args: &[&str], env: &[(&str, &str)], stdin: &str) -> Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_neo"));
    cmd.arg("--server").arg(address).args(args);
    for var in [
        "NEO_SERVER",
        "NEO_TOKEN",
        "NEO_API_KEY",
        "NEO_TLS_CA",
        "NEO_TLS_CERT",
        "NEO_TLS_KEY",
        "NEO_TLS_SERVER_NAME",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let stdin = stdin.to_string();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = cmd.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn status(o: &Output) -> i32 {
    o.status.code().expect("exited")
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_maps_refusals_to_exit_statuses_3_and_4() {
    let (address, state) = start(None).await;
    // No credential, or a wrong one: 3, with the server's reason and a hint.
    let out = neo(&address, &["role", "list"]).await;
    assert_eq!(status(&out), 3, "{}", stderr(&out));
    assert!(stderr(&out).contains("Unauthenticated"), "{}", stderr(&out));
    assert!(stderr(&out).contains("hint: pass a credential"));
    let out = neo(&address, &["--token", "nope", "topic", "list"]).await;
    assert_eq!(status(&out), 3, "{}", stderr(&out));
    assert!(stderr(&out).contains("invalid token"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("hint:"), "a credential was given");
    // Authenticated but not allowed: 4, naming principal, resource and operation, for
    // every kind of command (admin, topic, produce).
    let bob = ["--api-key", BOB_KEY];
    for args in [
        &["role", "create", "mine"][..],
        &["role", "list", "--format", "json"],
        &["user", "api-key", "create", "--principal", "bob"],
        &["topic", "create", "orders.eu"],
        &["quota", "set", "--default", "--requests-per-sec", "10"],
        &["quota", "list", "--format", "json"],
    ] {
        let out = neo(&address, &[&bob[..], args].concat()).await;
        assert_eq!(status(&out), 4, "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("PermissionDenied"),
            "{}",
            stderr(&out)
        );
        assert!(stderr(&out).contains("bob@"), "{}", stderr(&out));
        assert!(stdout(&out).is_empty(), "nothing printed on a refusal");
    }
    // produce reports per message; the first refusal sets the status.
    let produce = ["--api-key", BOB_KEY, "produce", "orders"];
    let out = neo_with(&address, &produce, &[], "x\n").await;
    assert_eq!(status(&out), 4, "{}", stderr(&out));
    assert!(stderr(&out).contains("1 failed"), "{}", stderr(&out));
    assert!(stderr(&out).contains("may not produce topic:orders"));
    assert!(state.lock().unwrap().produced >= 1);
    assert!(state.lock().unwrap().changes.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_role_and_api_key_commands_print_the_contract() {
    let (address, state) = start(None).await;
    let admin = |args: &[&str]| {
        let args: Vec<String> = ["--token", ADMIN_TOKEN]
            .iter()
            .chain(args)
            .map(|s| s.to_string())
            .collect();
        let address = address.clone();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = neo(&address, &args).await;
            assert_eq!(status(&out), 0, "{args:?}: {}", stderr(&out));
            stdout(&out)
        }
    };
    assert_eq!(
        admin(&["role", "create", "writers"]).await,
        "created role writers\n"
    );
    assert_eq!(
        admin(&[
            "role",
            "grant",
            "writers",
            "--resource",
            "topic:orders.*",
            "--operations",
            "produce,describe",
        ])
        .await,
        "granted role writers produce,describe on topic:orders.*\n"
    );
    assert_eq!(
        admin(&[
            "role",
            "revoke",
            "writers",
            "--resource",
            "topic:orders.*",
            "--operations",
            "describe",
        ])
        .await,
        "revoked from role writers describe on topic:orders.*\n"
    );
    assert_eq!(
        admin(&["role", "assign", "writers", "--principal", "bob"]).await,
        "assigned role writers to bob\n"
    );
    assert_eq!(
        admin(&["role", "unassign", "writers", "--principal", "bob"]).await,
        "unassigned role writers from bob\n"
    );
    assert_eq!(
        admin(&["role", "delete", "writers"]).await,
        "deleted role writers\n"
    );
    // Listings: sorted by name / id; principals sorted; grants by resource.
    assert_eq!(
        admin(&["role", "list"]).await,
        "auditors grants 0 principals 0\nwriters grants 2 principals 2\n"
    );
    assert_eq!(
        admin(&["role", "list", "--format", "json"]).await,
        concat!(
            r#"[{"name":"auditors","grants":[],"principals":[]},"#,
            r#"{"name":"writers","grants":[{"resource":"group:billing","operations":["consume"]},"#,
            r#"{"resource":"topic:orders.*","operations":["produce","describe"]}],"principals":["bob","carol"]}]"#,
            "\n"
        )
    );
    assert_eq!(
        admin(&["role", "describe", "writers"]).await,
        "role writers grants 2 principals 2\ngrant group:billing consume\n\
         grant topic:orders.* produce,describe\nprincipal bob\nprincipal carol\n"
    );
    assert_eq!(
        admin(&["role", "describe", "auditors", "--format", "json"]).await,
        "{\"name\":\"auditors\",\"grants\":[],\"principals\":[]}\n"
    );
    let out = neo(
        &address,
        &["--token", ADMIN_TOKEN, "role", "describe", "nope"],
    )
    .await;
    assert_eq!(status(&out), 1);
    assert!(
        stderr(&out).contains("unknown role \"nope\""),
        "{}",
        stderr(&out)
    );
    // API keys: shown once, with the id; listed without secrets.
    let out = neo(
        &address,
        &[
            "--token",
            ADMIN_TOKEN,
            "user",
            "api-key",
            "create",
            "--principal",
            "bob",
        ],
    )
    .await;
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "key_id 00000000000000c1\napi_key neoak_00000000000000c1_newsecret\n"
    );
    assert!(stderr(&out).contains("cannot show it again"));
    assert_eq!(
        admin(&[
            "user",
            "api-key",
            "create",
            "--principal",
            "bob",
            "--format",
            "json"
        ])
        .await,
        "{\"key_id\":\"00000000000000c1\",\"api_key\":\"neoak_00000000000000c1_newsecret\"}\n"
    );
    assert_eq!(
        admin(&["user", "api-key", "revoke", "00000000000000c1"]).await,
        "revoked api key 00000000000000c1\n"
    );
    assert_eq!(
        admin(&["user", "api-key", "list"]).await,
        "000000000000000a principal alice revoked\n00000000000000b0 principal bob active\n"
    );
    assert_eq!(
        admin(&[
            "user",
            "api-key",
            "list",
            "--principal",
            "bob",
            "--format",
            "json"
        ])
        .await,
        "[{\"key_id\":\"00000000000000b0\",\"principal\":\"bob\",\"revoked\":false}]\n"
    );
    assert_eq!(state.lock().unwrap().changes.len(), 9);
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_quota_commands_print_the_contract() {
    let (address, state) = start(None).await;
    let admin = |args: &[&str]| {
        let args: Vec<String> = ["--token", ADMIN_TOKEN]
            .iter()
            .chain(args)
            .map(|s| s.to_string())
            .collect();
        let address = address.clone();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = neo(&address, &args).await;
            (status(&out), stdout(&out), stderr(&out))
        }
    };
    let ok = |(code, out, err): (i32, String, String)| {
        assert_eq!(code, 0, "{err}");
        out
    };
    assert_eq!(
        ok(admin(&[
            "quota",
            "set",
            "--principal",
            "alice",
            "--produce-bytes-per-sec",
            "1048576",
            "--requests-per-sec",
            "100",
        ])
        .await),
        "set quota of principal alice: produce 1048576 B/s, fetch -, requests 100/s\n"
    );
    assert_eq!(
        ok(admin(&["quota", "set", "--client-ip", "--fetch-bytes-per-sec", "5"]).await),
        "set quota of client-ip: produce -, fetch 5 B/s, requests -\n"
    );
    assert_eq!(
        ok(admin(&["quota", "set", "--role", "writers"]).await),
        "removed quota of role writers\n"
    );
    assert_eq!(
        ok(admin(&["quota", "list"]).await),
        "default: produce -, fetch -, requests 1000/s\n\
         principal alice: produce 1048576 B/s, fetch -, requests 100/s\n\
         role writers: produce -, fetch 2097152 B/s, requests -\n"
    );
    assert_eq!(
        ok(admin(&["quota", "list", "--format", "json"]).await),
        concat!(
            r#"[{"scope":"default","produce_bytes_per_sec":null,"fetch_bytes_per_sec":null,"requests_per_sec":1000},"#,
            r#"{"scope":"principal:alice","produce_bytes_per_sec":1048576,"fetch_bytes_per_sec":null,"requests_per_sec":100},"#,
            r#"{"scope":"role:writers","produce_bytes_per_sec":null,"fetch_bytes_per_sec":2097152,"requests_per_sec":null}]"#,
            "\n"
        )
    );
    // Usage errors: no scope, two scopes, a rate of 0. Nothing is sent.
    for args in [
        &["quota", "set", "--requests-per-sec", "1"][..],
        &["quota", "set", "--default", "--principal", "a"],
        &["quota", "set", "--default", "--requests-per-sec", "0"],
    ] {
        let (code, out, _) = admin(args).await;
        assert_eq!((code, out.as_str()), (2, ""), "{args:?}");
    }
    assert_eq!(
        state.lock().unwrap().changes,
        vec![
            SecurityChange::SetQuota {
                scope: QuotaScope::Principal("alice".into()),
                quota: QuotaLimits {
                    produce_bytes_per_sec: Some(1_048_576),
                    fetch_bytes_per_sec: None,
                    requests_per_sec: Some(100),
                    connections: None,
                },
            },
            SecurityChange::SetQuota {
                scope: QuotaScope::ClientIp,
                quota: QuotaLimits {
                    fetch_bytes_per_sec: Some(5),
                    ..QuotaLimits::default()
                },
            },
            SecurityChange::SetQuota {
                scope: QuotaScope::Role("writers".into()),
                quota: QuotaLimits::default(),
            },
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_credentials_from_the_environment() {
    let (address, _) = start(None).await;
    let out = neo_with(&address, &["role", "list"], &[("NEO_API_KEY", BOB_KEY)], "").await;
    assert_eq!(status(&out), 4, "{}", stderr(&out));
    let out = neo_with(
        &address,
        &["role", "list"],
        &[("NEO_TOKEN", ADMIN_TOKEN)],
        "",
    )
    .await;
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    // Both: a usage error, whichever way they were given.
    let both = [("NEO_TOKEN", ADMIN_TOKEN), ("NEO_API_KEY", BOB_KEY)];
    let out = neo_with(&address, &["role", "list"], &both, "").await;
    assert_eq!(status(&out), 2, "{}", stderr(&out));
    let out = neo_with(
        &address,
        &["--api-key", BOB_KEY, "role", "list"],
        &[("NEO_TOKEN", ADMIN_TOKEN)],
        "",
    )
    .await;
    assert_eq!(status(&out), 2, "{}", stderr(&out));
}

// ---- TLS to the client port ----

struct Pki {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "neo cli test ca");
        let key = KeyPair::generate().unwrap();
        let ca_pem = params.self_signed(&key).unwrap().pem();
        Pki {
            ca_pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf (certificate PEM, key PEM) named `cn`, valid for `sans`.
    fn leaf(&self, cn: &str, sans: &[&str]) -> (String, String) {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_tls_flags_reach_a_tls_port() {
    let pki = Pki::new();
    let (cert_pem, key_pem) = pki.leaf("neo server", &["localhost"]);
    let (address, _) = start(Some((&cert_pem, &key_pem, &pki.ca_pem))).await;
    let port = address.rsplit_once(':').unwrap().1;
    let localhost = format!("localhost:{port}");
    let dir = std::env::temp_dir().join(format!("neo-cli-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    };
    let ca_file = write("ca.pem", &pki.ca_pem);
    let (admin_cert, admin_key) = pki.leaf("admin", &["admin.neo.test"]);
    let cert_file = write("admin.pem", &admin_cert);
    let key_file = write("admin.key", &admin_key);

    // TLS + a token; the server name is the seed's host.
    let out = neo(
        &localhost,
        &["--tls-ca", &ca_file, "--token", ADMIN_TOKEN, "role", "list"],
    )
    .await;
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    // By IP (the certificate names only `localhost`): the name to check is given.
    // (A certificate that does not match fails the handshake, which the client
    // retries like any connection failure, for its whole deadline: not run here.)
    let out = neo(
        &address,
        &[
            "--tls-ca",
            &ca_file,
            "--tls-server-name",
            "localhost",
            "--token",
            ADMIN_TOKEN,
            "role",
            "list",
        ],
    )
    .await;
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    // mTLS alone: the certificate names the principal (an empty handshake token).
    let mtls = [
        "--tls-ca",
        ca_file.as_str(),
        "--tls-cert",
        cert_file.as_str(),
        "--tls-key",
        key_file.as_str(),
    ];
    let out = neo(&localhost, &[&mtls[..], &["role", "list"]].concat()).await;
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    // A missing file is named (before anything is dialled).
    let out = neo(
        &localhost,
        &["--tls-ca", "/nonexistent/ca.pem", "role", "list"],
    )
    .await;
    assert_eq!(status(&out), 1);
    assert!(stderr(&out).contains("--tls-ca"), "{}", stderr(&out));
    std::fs::remove_dir_all(&dir).ok();
}
