//! The `neo` CLI's security contract (docs/cli.md: `--token`, `--api-key`, exit
//! statuses 3 and 4, `neo role ...`, `neo user api-key ...`) against real `neo-node`
//! processes, through `neo_tests::neo`:
//!
//! - on a cluster without security, `neo role list` / `neo user api-key list` answer
//!   an empty listing with a note, or a clear error, and never 3 or 4;
//! - on one node with security on (`--auth jwt,apikey`, an HS256 secret file,
//!   `--superuser admin`; [`TestCluster::start_with_args`]), the whole RBAC round
//!   trip: refusals as 3 and 4 naming what was refused, roles and grants taking effect,
//!   API keys created once and revoked; and rate limits (`neo quota set|list`, its JSON
//!   contract, `alter` on `cluster:quotas` required).
//!
//! The secure node's flags are in [`secure_node_flags`]. The same refusals through the
//! client library, on 3 nodes, are `tests/security.rs`.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use neo_tests::{TestCluster, neo, with_cluster};
use serde_json::Value;

/// Bound on every wait for a change to take effect (changes reach every node within a
/// second).
const WAIT_MAX: Duration = Duration::from_secs(30);
/// The HS256 secret of the secure node (at least 32 bytes).
const JWT_SECRET: &str = "neo-e2e-hs256-secret-of-at-least-32-bytes";
/// The configured superuser: the one principal that can bootstrap the rest.
const SUPERUSER: &str = "admin";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn status(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn show(args: &[&str], out: &Output) -> String {
    format!(
        "neo {args:?} exited {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    )
}

#[tokio::test]
async fn role_list_on_a_cluster_without_security() -> anyhow::Result<()> {
    with_cluster(1, async |cluster: &mut TestCluster| {
        for args in [
            &["role", "list"][..],
            &["role", "list", "--format", "json"],
            &["user", "api-key", "list", "--format", "json"],
        ] {
            let out = neo(cluster, args, "")?;
            let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
            match status(&out) {
                // Security off: nothing to list, and a note says why.
                0 => {
                    let json = args.contains(&"json");
                    ensure!(
                        stdout == if json { "[]\n" } else { "" },
                        "{}",
                        show(args, &out)
                    );
                    ensure!(stderr.contains("security is off"), "{}", show(args, &out));
                }
                // Or a refusal that says security is not there.
                1 => ensure!(
                    stderr.starts_with("error:") && stderr.to_lowercase().contains("security"),
                    "{}",
                    show(args, &out)
                ),
                _ => bail!("neither a listing nor a clear error: {}", show(args, &out)),
            }
        }
        // A credential given to a cluster without security changes nothing.
        let args = ["--token", "a.b.c", "topic", "list"];
        let out = neo(cluster, &args, "")?;
        ensure!(out.status.success(), "{}", show(&args, &out));
        Ok(())
    })
    .await
}

/// The node flags that turn security on (docs/node.md): JWTs signed with
/// [`JWT_SECRET`] and API keys, with [`SUPERUSER`] allowed everything.
fn secure_node_flags(secret_file: &Path) -> Vec<String> {
    vec![
        "--auth".into(),
        "jwt,apikey".into(),
        "--jwt-hs256-secret-file".into(),
        secret_file.display().to_string(),
        "--superuser".into(),
        SUPERUSER.into(),
    ]
}

/// One node with security on, and the folder of its secret file.
fn secure_cluster() -> anyhow::Result<(TestCluster, tempfile::TempDir)> {
    let dir = tempfile::Builder::new().prefix("neo-e2e-sec-").tempdir()?;
    let secret_file = dir.path().join("jwt.secret");
    std::fs::write(&secret_file, JWT_SECRET)?;
    let cluster = TestCluster::start_with_args(1, &secure_node_flags(&secret_file))?;
    Ok((cluster, dir))
}

/// Runs `neo` and requires exit status `want`; returns the output.
fn expect(cluster: &TestCluster, want: i32, args: &[&str], stdin: &str) -> anyhow::Result<Output> {
    let out = neo(cluster, args, stdin)?;
    ensure!(status(&out) == want, "want {want}: {}", show(args, &out));
    Ok(out)
}

/// Runs `neo` until it exits `want` (a change reaching the node), within [`WAIT_MAX`].
fn eventually(
    cluster: &TestCluster,
    want: i32,
    args: &[&str],
    stdin: &str,
) -> anyhow::Result<Output> {
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        let out = neo(cluster, args, stdin)?;
        if status(&out) == want {
            return Ok(out);
        }
        ensure!(
            Instant::now() < deadline,
            "still not {want} after {WAIT_MAX:?}: {}",
            show(args, &out)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// An HS256 JWT for `sub`, valid for an hour.
fn jwt(sub: &str) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
        + 3600;
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = URL_SAFE_NO_PAD.encode(serde_json::json!({ "sub": sub, "exp": exp }).to_string());
    let signing_input = format!("{header}.{claims}");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, JWT_SECRET.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(ring::hmac::sign(&key, signing_input.as_bytes()));
    format!("{signing_input}.{signature}")
}

#[test]
fn rbac_round_trip_through_the_cli() -> anyhow::Result<()> {
    let (cluster, _dir) = secure_cluster()?;
    let result = rbac_round_trip(&cluster);
    if result.is_err() {
        eprintln!("{}", cluster.logs(60));
    }
    result
}

fn rbac_round_trip(cluster: &TestCluster) -> anyhow::Result<()> {
    let admin_token = jwt(SUPERUSER);
    let admin = |rest: &[&str]| -> Vec<String> {
        ["--token", admin_token.as_str()]
            .iter()
            .chain(rest)
            .map(|s| s.to_string())
            .collect()
    };
    let run = |want: i32, args: Vec<String>, stdin: &str| -> anyhow::Result<String> {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Ok(text(&expect(cluster, want, &args, stdin)?.stdout))
    };

    // No credential, a wrong one, a forged one: 3, for any command.
    let out = expect(cluster, 3, &["topic", "list"], "")?;
    ensure!(
        text(&out.stderr).contains("Unauthenticated"),
        "{}",
        text(&out.stderr)
    );
    expect(cluster, 3, &["--token", "not.a.jwt", "role", "list"], "")?;
    expect(
        cluster,
        3,
        &["--api-key", "neoak_0000000000000000_nope", "topic", "list"],
        "",
    )?;
    // Both kinds at once: a usage error.
    expect(
        cluster,
        2,
        &[
            "--token",
            &admin_token,
            "--api-key",
            "neoak_x",
            "topic",
            "list",
        ],
        "",
    )?;

    // The superuser bootstraps: a topic, a role with a grant, a key for bob.
    run(0, admin(&["topic", "create", "orders.eu"]), "")?;
    ensure!(run(0, admin(&["role", "create", "writers"]), "")? == "created role writers\n");
    run(
        0,
        admin(&[
            "role",
            "grant",
            "writers",
            "--resource",
            "topic:orders.*",
            "--operations",
            "produce,describe",
        ]),
        "",
    )?;
    let created = run(
        0,
        admin(&[
            "user",
            "api-key",
            "create",
            "--principal",
            "bob",
            "--format",
            "json",
        ]),
        "",
    )?;
    let created: Value = serde_json::from_str(created.trim())?;
    let key_id = created["key_id"].as_str().context("key_id")?.to_string();
    let bob_key = created["api_key"].as_str().context("api_key")?.to_string();
    ensure!(
        bob_key.starts_with("neoak_") && bob_key.contains(&key_id),
        "{created}"
    );

    // Bob is authenticated but holds no role: 4, naming the operation and resource.
    let delete = [
        "--api-key",
        bob_key.as_str(),
        "topic",
        "delete",
        "orders.eu",
    ];
    let out = expect(cluster, 4, &delete, "")?;
    let stderr = text(&out.stderr);
    ensure!(
        stderr.contains("PermissionDenied") && stderr.contains("topic:orders.eu"),
        "{stderr}"
    );
    let out = expect(
        cluster,
        4,
        &["--api-key", &bob_key, "role", "create", "mine"],
        "",
    )?;
    ensure!(
        text(&out.stderr).contains("PermissionDenied"),
        "{}",
        text(&out.stderr)
    );

    // Assigned the role, bob may produce to orders.*.
    let produce = ["--api-key", bob_key.as_str(), "produce", "orders.eu"];
    run(
        0,
        admin(&["role", "assign", "writers", "--principal", "bob"]),
        "",
    )?;
    eventually(cluster, 0, &produce, "one\n")?;
    // ... but still not delete it, nor administer.
    expect(cluster, 4, &delete, "")?;
    expect(
        cluster,
        4,
        &["--api-key", &bob_key, "role", "create", "mine"],
        "",
    )?;

    // The listings, in their JSON contract.
    let role: Value = serde_json::from_str(
        run(
            0,
            admin(&["role", "describe", "writers", "--format", "json"]),
            "",
        )?
        .trim(),
    )?;
    ensure!(role["name"] == "writers", "{role}");
    ensure!(role["principals"] == serde_json::json!(["bob"]), "{role}");
    let grants = role["grants"].as_array().context("grants")?;
    ensure!(
        grants.len() == 1 && grants[0]["resource"] == "topic:orders.*",
        "{role}"
    );
    let ops: Vec<&str> = grants[0]["operations"]
        .as_array()
        .context("operations")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    ensure!(
        ops.contains(&"produce") && ops.contains(&"describe"),
        "{role}"
    );
    let roles: Value =
        serde_json::from_str(run(0, admin(&["role", "list", "--format", "json"]), "")?.trim())?;
    ensure!(
        roles
            .as_array()
            .context("array")?
            .iter()
            .any(|r| r["name"] == "writers"),
        "{roles}"
    );
    let keys: Value = serde_json::from_str(
        run(
            0,
            admin(&["user", "api-key", "list", "--format", "json"]),
            "",
        )?
        .trim(),
    )?;
    ensure!(
        keys.as_array()
            .context("array")?
            .iter()
            .any(|k| k["key_id"] == key_id.as_str()
                && k["principal"] == "bob"
                && k["revoked"] == false),
        "{keys}"
    );
    ensure!(
        !keys.to_string().contains(&bob_key),
        "a listing never shows a secret"
    );

    // Revoking the grant takes produce away again (describe stays: the topic is still
    // visible, the produce itself is refused).
    run(
        0,
        admin(&[
            "role",
            "revoke",
            "writers",
            "--resource",
            "topic:orders.*",
            "--operations",
            "produce",
        ]),
        "",
    )?;
    let out = eventually(cluster, 4, &produce, "two\n")?;
    ensure!(
        text(&out.stderr).contains("1 failed"),
        "{}",
        text(&out.stderr)
    );

    // A revoked key no longer authenticates.
    ensure!(
        run(0, admin(&["user", "api-key", "revoke", &key_id]), "")?
            == format!("revoked api key {key_id}\n")
    );
    eventually(cluster, 3, &["--api-key", &bob_key, "topic", "list"], "")?;

    // Unassign and delete.
    run(
        0,
        admin(&["role", "unassign", "writers", "--principal", "bob"]),
        "",
    )?;
    run(0, admin(&["role", "delete", "writers"]), "")?;
    let list = run(0, admin(&["role", "list"]), "")?;
    ensure!(!list.lines().any(|l| l.starts_with("writers ")), "{list}");
    let out = run(1, admin(&["role", "describe", "writers"]), "");
    ensure!(out.is_ok(), "an unknown role is an error: {out:?}");
    Ok(())
}

#[test]
fn quota_round_trip_through_the_cli() -> anyhow::Result<()> {
    let (cluster, _dir) = secure_cluster()?;
    let result = quota_round_trip(&cluster);
    if result.is_err() {
        eprintln!("{}", cluster.logs(60));
    }
    result
}

/// `neo quota list --format json` as the superuser, once it satisfies `done`.
fn quotas_until(
    cluster: &TestCluster,
    admin_token: &str,
    done: impl Fn(&[Value]) -> bool,
) -> anyhow::Result<Vec<Value>> {
    let args = ["--token", admin_token, "quota", "list", "--format", "json"];
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        let out = expect(cluster, 0, &args, "")?;
        let list: Value =
            serde_json::from_str(text(&out.stdout).trim()).with_context(|| show(&args, &out))?;
        let list = list.as_array().context("an array")?.clone();
        if done(&list) {
            return Ok(list);
        }
        ensure!(
            Instant::now() < deadline,
            "quotas still not as expected after {WAIT_MAX:?}: {list:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn quota_round_trip(cluster: &TestCluster) -> anyhow::Result<()> {
    let admin_token = jwt(SUPERUSER);
    let bob_token = jwt("bob");
    let admin = |rest: &[&str]| -> Vec<String> {
        ["--token", admin_token.as_str()]
            .iter()
            .chain(rest)
            .map(|s| s.to_string())
            .collect()
    };
    let run = |want: i32, args: Vec<String>| -> anyhow::Result<String> {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Ok(text(&expect(cluster, want, &args, "")?.stdout))
    };
    // Limits on principals nobody here uses: the test's own requests stay unthrottled.
    let alice = serde_json::json!({
        "scope": "principal:alice",
        "produce_bytes_per_sec": 1_048_576,
        "fetch_bytes_per_sec": null,
        "requests_per_sec": 100,
    });
    let writers = serde_json::json!({
        "scope": "role:writers",
        "produce_bytes_per_sec": null,
        "fetch_bytes_per_sec": 2_097_152,
        "requests_per_sec": null,
    });

    // The superuser sets limits; the listing has them, in its JSON contract.
    let out = run(
        0,
        admin(&[
            "quota",
            "set",
            "--principal",
            "alice",
            "--produce-bytes-per-sec",
            "1048576",
            "--requests-per-sec",
            "100",
        ]),
    )?;
    ensure!(
        out == "set quota of principal alice: produce 1048576 B/s, fetch -, requests 100/s\n",
        "{out}"
    );
    let out = run(
        0,
        admin(&[
            "quota",
            "set",
            "--role",
            "writers",
            "--fetch-bytes-per-sec",
            "2097152",
        ]),
    )?;
    ensure!(
        out == "set quota of role writers: produce -, fetch 2097152 B/s, requests -\n",
        "{out}"
    );
    let list = quotas_until(cluster, &admin_token, |l| {
        l.contains(&alice) && l.contains(&writers)
    })?;
    let scopes: Vec<&str> = list.iter().filter_map(|q| q["scope"].as_str()).collect();
    let (a, w) = (
        scopes.iter().position(|s| *s == "principal:alice"),
        scopes.iter().position(|s| *s == "role:writers"),
    );
    ensure!(a < w, "principals before roles: {scopes:?}");
    let out = run(0, admin(&["quota", "list"]))?;
    ensure!(
        out.lines()
            .any(|l| l == "principal alice: produce 1048576 B/s, fetch -, requests 100/s"),
        "{out}"
    );

    // Bob, authenticated but without `alter` on `cluster:quotas`: 4, naming it.
    let bob_set = [
        "--token",
        bob_token.as_str(),
        "quota",
        "set",
        "--principal",
        "carol",
        "--requests-per-sec",
        "1000000",
    ];
    let out = expect(cluster, 4, &bob_set, "")?;
    let stderr = text(&out.stderr);
    ensure!(
        stderr.contains("PermissionDenied") && stderr.contains("cluster:quotas"),
        "{stderr}"
    );
    ensure!(out.stdout.is_empty(), "nothing printed on a refusal");
    // Granted it through a role, he may.
    run(0, admin(&["role", "create", "quota-admins"]))?;
    run(
        0,
        admin(&[
            "role",
            "grant",
            "quota-admins",
            "--resource",
            "cluster:quotas",
            "--operations",
            "alter",
        ]),
    )?;
    run(
        0,
        admin(&["role", "assign", "quota-admins", "--principal", "bob"]),
    )?;
    eventually(cluster, 0, &bob_set, "")?;
    quotas_until(cluster, &admin_token, |l| {
        l.iter().any(|q| q["scope"] == "principal:carol")
    })?;

    // No rate: the entries go.
    for (flag, name) in [("--principal", "alice"), ("--principal", "carol")] {
        let out = run(0, admin(&["quota", "set", flag, name]))?;
        ensure!(
            out == format!("removed quota of principal {name}\n"),
            "{out}"
        );
    }
    ensure!(
        run(0, admin(&["quota", "set", "--role", "writers"]))? == "removed quota of role writers\n"
    );
    quotas_until(cluster, &admin_token, |l| {
        !l.iter().any(|q| {
            ["principal:alice", "principal:carol", "role:writers"]
                .iter()
                .any(|s| q["scope"] == *s)
        })
    })?;
    Ok(())
}
