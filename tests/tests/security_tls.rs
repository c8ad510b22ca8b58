//! TLS on the client port, mTLS between nodes and client-certificate authentication
//! on a real 3-node cluster, through the `neo` CLI (`--tls-ca`, `--tls-cert`,
//! `--tls-key`, `--token`): the settings of docker-compose.secure.yml, with a CA made
//! at test time.
//!
//! - without a credential: exit 3, even over TLS;
//! - the superuser's client certificate (CN `admin`) creates a topic, produces and
//!   consumes; a JWT over TLS works too;
//! - another principal's certificate (first DNS SAN `bob`) is refused deletes with 4;
//! - the HTTP admin's `/v1/groups/{name}` describes a group (200, its offsets) through
//!   the TLS client ports; 401 without a token, 403 without `describe` on the group.

use std::process::Output;

use anyhow::{Context, ensure};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use neo_tests::cluster::http_get_as;
use neo_tests::pki::TestPki;
use neo_tests::{TestCluster, neo};

/// An HS256 JWT for `sub`, valid for an hour.
fn jwt(secret: &str, sub: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let b64 = |v: serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let signing_input = format!(
        "{}.{}",
        b64(serde_json::json!({"alg": "HS256", "typ": "JWT"})),
        b64(serde_json::json!({"sub": sub, "exp": now + 3600}))
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn expect(cluster: &TestCluster, want: i32, args: &[&str], stdin: &str) -> anyhow::Result<Output> {
    let out = neo(cluster, args, stdin)?;
    ensure!(
        out.status.code() == Some(want),
        "neo {args:?}: want {want}, got {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    Ok(out)
}

#[test]
fn tls_mtls_and_certificate_principals_on_three_nodes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = |name: &str, body: &str| -> anyhow::Result<String> {
        let path = dir.path().join(name);
        std::fs::write(&path, body)?;
        Ok(path.to_string_lossy().into_owned())
    };
    let pki = TestPki::new("neo e2e CA");
    let ca = file("ca.pem", pki.ca_pem())?;
    // One certificate per node (they share 127.0.0.1), on both ports; each names its
    // node id (`neo-node:<id>`, the cluster port's rule). TestCluster gives node N
    // `node-N.pem` for `node-{id}.pem`.
    for id in 1..=3 {
        let (cert, key) = pki.node_leaf(id, "neo", &["neo", "localhost", "127.0.0.1"]);
        file(&format!("node-{id}.pem"), &cert)?;
        file(&format!("node-{id}.key"), &key)?;
    }
    let dir_str = dir.path().to_string_lossy().into_owned();
    let (node_cert, node_key) = (
        format!("{dir_str}/node-{{id}}.pem"),
        format!("{dir_str}/node-{{id}}.key"),
    );
    let (admin_cert, admin_key) = pki.leaf("admin", &[]);
    let (admin_cert, admin_key) = (
        file("admin.pem", &admin_cert)?,
        file("admin.key", &admin_key)?,
    );
    let (bob_cert, bob_key) = pki.leaf("robert", &["bob"]);
    let (bob_cert, bob_key) = (file("bob.pem", &bob_cert)?, file("bob.key", &bob_key)?);
    let secret_text = "neo-e2e-tls-hs256-secret-of-32-bytes-or-more".to_string();
    let secret = file("jwt.secret", &format!("{secret_text}\n"))?;
    let args: Vec<String> = [
        "--auth",
        "mtls,jwt",
        "--jwt-hs256-secret-file",
        &secret,
        "--superuser",
        "admin",
        "--tls-cert",
        &node_cert,
        "--tls-key",
        &node_key,
        "--tls-client-ca",
        &ca,
        "--cluster-tls-cert",
        &node_cert,
        "--cluster-tls-key",
        &node_key,
        "--cluster-tls-ca",
        &ca,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let cluster = TestCluster::start_with_args(3, &args)?;
    let result = (|| -> anyhow::Result<()> {
        let tls = ["--tls-ca", ca.as_str()];
        let with = |extra: &[&str], rest: &[&str]| -> Vec<String> {
            tls.iter()
                .chain(extra)
                .chain(rest)
                .map(|s| s.to_string())
                .collect()
        };
        let run = |want: i32, args: Vec<String>, stdin: &str| -> anyhow::Result<Output> {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            expect(&cluster, want, &args, stdin)
        };
        let admin = [
            "--tls-cert",
            admin_cert.as_str(),
            "--tls-key",
            admin_key.as_str(),
        ];
        let bob = [
            "--tls-cert",
            bob_cert.as_str(),
            "--tls-key",
            bob_key.as_str(),
        ];

        // TLS alone is not a credential.
        let out = run(3, with(&[], &["topic", "list"]), "")?;
        let (so, se) = (text(&out.stdout), text(&out.stderr));
        ensure!(se.contains("Unauthenticated"), "stdout: {so}\nstderr: {se}");

        // The superuser's certificate: create, produce, consume.
        run(
            0,
            with(&admin, &["topic", "create", "secure", "--partitions", "3"]),
            "",
        )?;
        let out = run(0, with(&admin, &["produce", "secure"]), "one\ntwo\nthree\n")?;
        let summary = text(&out.stderr);
        ensure!(summary.contains("3 acknowledged"), "produce: {summary:?}");
        let out = run(
            0,
            with(
                &admin,
                &[
                    "consume",
                    "secure",
                    "--from-beginning",
                    "--timeout-ms",
                    "1500",
                ],
            ),
            "",
        )?;
        let got = text(&out.stdout);
        for v in ["one", "two", "three"] {
            ensure!(got.contains(v), "consumed {got}");
        }

        // The HTTP admin's /v1/groups/{name} with TLS on the client port: the node
        // describes the group through the client ports (trusting its own
        // certificate), reading the offsets as the bearer of the token.
        run(
            0,
            with(
                &admin,
                &[
                    "consume",
                    "secure",
                    "--group",
                    "tls-readers",
                    "--from-beginning",
                    "--max-messages",
                    "3",
                    "--timeout-ms",
                    "20000",
                ],
            ),
            "",
        )?;
        let http = cluster.spec(2).http;
        let path = "/v1/groups/tls-readers";
        let (status, body) = http_get_as(http, path, Some(&jwt(&secret_text, "admin")))?;
        ensure!(status == 200, "{path} as admin: {status} {body}");
        let v: serde_json::Value = serde_json::from_str(&body)?;
        let offsets = v["offsets"].as_array().context("offsets")?;
        ensure!(offsets.len() == 3, "{body}");
        let mut committed = 0;
        for o in offsets {
            ensure!(
                o["lag"] == 0 && o["committed_offset"] == o["log_end_offset"],
                "{o}"
            );
            committed += o["committed_offset"].as_u64().unwrap_or(0);
        }
        ensure!(committed == 3, "{body}");
        let (status, body) = http_get_as(http, path, None)?;
        ensure!(status == 401, "{path} without a token: {status} {body}");
        let (status, body) = http_get_as(http, path, Some(&jwt(&secret_text, "bob")))?;
        ensure!(status == 403, "{path} as bob: {status} {body}");

        // bob (by his certificate's DNS SAN, not its CN) may not delete it.
        let out = run(4, with(&bob, &["topic", "delete", "secure"]), "")?;
        let err = text(&out.stderr);
        ensure!(
            err.contains("bob") && err.contains("topic:secure"),
            "bob refused: stderr {err:?}"
        );
        Ok(())
    })();
    if result.is_err() {
        eprintln!("{}", cluster.logs(40));
    }
    result
}
