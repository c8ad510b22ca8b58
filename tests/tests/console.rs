//! The web console's HTTP side on 3 real `neo-node` processes, over plain HTTP (a
//! small std::net client): the embedded files with their security headers; the JSON
//! reads (`/v1/topics`, `/v1/topics/{t}/messages`, `/v1/stats`, `/v1/queues/{q}`);
//! the actions (create/delete topic, reset offsets, purge, redrive) and their CSRF
//! guard and typed refusals; and attacker-controlled names and records (`<script>`)
//! coming back as JSON strings with no raw markup character in the answer.
//! The browser side is tests/console/console_test.py (scripts/console-test.sh).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, ensure};
use neo_client::{Producer, ProducerRecord, QueueAdmin, QueueOptions};
use neo_tests::secure::{ISSUER, SUPERUSER};
use neo_tests::{SecureCluster, connect, neo_ok, with_cluster};
use serde_json::{Value, json};

const SCRIPT: &str = "<script>alert('x')</script>";
/// The header lines of a console action: the JSON content type and the CSRF header.
const JSON_CONSOLE: &str = "Content-Type: application/json\r\nX-Neo-Console: 1\r\n";

/// One answer: status, headers (lower-case names), body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_str(&self.body).with_context(|| format!("not JSON: {:?}", self.body))
    }
}

/// A raw request (`head` without the final blank line) and its answer.
fn raw(addr: SocketAddr, head: &str, body: &[u8]) -> anyhow::Result<Answer> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    stream.write_all(format!("{head}\r\nHost: {addr}\r\n\r\n").as_bytes())?;
    stream.write_all(body)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let response = String::from_utf8(response)?;
    let (head, body) = response.split_once("\r\n\r\n").context("no blank line")?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .context("no status")?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Answer {
        status,
        headers,
        body: body.to_string(),
    })
}

fn get(addr: SocketAddr, path: &str) -> anyhow::Result<Answer> {
    raw(addr, &format!("GET {path} HTTP/1.1"), b"")
}

/// A console action: `method path` with the header lines `extra` (each ending in
/// CRLF), the JSON content type, the CSRF header and `body`.
fn send_json(
    addr: SocketAddr,
    method: &str,
    path: &str,
    extra: &str,
    body: &Value,
) -> anyhow::Result<Answer> {
    let body = body.to_string();
    let head = format!(
        "{method} {path} HTTP/1.1\r\n{extra}{JSON_CONSOLE}Content-Length: {}",
        body.len()
    );
    raw(addr, &head, body.as_bytes())
}

/// A console action: POST of JSON with the CSRF header.
fn post(addr: SocketAddr, path: &str, body: &Value) -> anyhow::Result<Answer> {
    send_json(addr, "POST", path, "", body)
}

/// `/` and the modules: embedded, typed, with the security headers.
fn check_assets(addr: SocketAddr) -> anyhow::Result<()> {
    let index = get(addr, "/")?;
    ensure!(index.status == 200, "GET / = {}", index.status);
    ensure!(index.header("content-type") == Some("text/html; charset=utf-8"));
    ensure!(index.body.contains("/console/app.js"));
    let csp = index.header("content-security-policy").unwrap_or("");
    for directive in [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
    ] {
        ensure!(csp.contains(directive), "CSP {csp:?} lacks {directive}");
    }
    ensure!(!csp.contains("unsafe-inline"), "{csp}");
    ensure!(index.header("x-content-type-options") == Some("nosniff"));
    ensure!(index.header("cache-control") == Some("no-cache"));
    let app = get(addr, "/console/app.js")?;
    ensure!(app.status == 200);
    ensure!(app.header("content-type") == Some("text/javascript; charset=utf-8"));
    ensure!(get(addr, "/console/missing.js")?.status == 404);
    ensure!(get(addr, "/console/../Cargo.toml")?.status == 404);
    Ok(())
}

/// Requests the server must refuse, each with its typed status.
fn check_refusals(addr: SocketAddr) -> anyhow::Result<()> {
    let body = r#"{"name":"x","partitions":1,"replication_factor":1}"#;
    let len = body.len();
    // POST /v1/topics: the header lines `headers` (each ending in CRLF), then
    // `Content-Length: length`, then `body`.
    let post_topics = |headers: &str, length: usize, body: &[u8]| {
        let head = format!("POST /v1/topics HTTP/1.1\r\n{headers}Content-Length: {length}");
        raw(addr, &head, body)
    };
    // A cross-site form: no JSON content type, no console header.
    let form = post_topics(
        "Content-Type: application/x-www-form-urlencoded\r\n",
        len,
        body.as_bytes(),
    )?;
    ensure!(form.status == 415, "form post = {}", form.status);
    let no_header = post_topics("Content-Type: application/json\r\n", len, body.as_bytes())?;
    ensure!(
        no_header.status == 403,
        "no X-Neo-Console = {}",
        no_header.status
    );
    let bad_json = post_topics(JSON_CONSOLE, 5, b"{nope")?;
    ensure!(bad_json.status == 400, "bad JSON = {}", bad_json.status);
    ensure!(
        bad_json.json()?["error"]
            .as_str()
            .unwrap_or("")
            .starts_with("bad JSON body")
    );
    let too_large = post_topics(JSON_CONSOLE, 100000, b"")?;
    ensure!(too_large.status == 413, "too large = {}", too_large.status);
    ensure!(raw(addr, "PUT /v1/topics HTTP/1.1", b"")?.status == 405);
    // An attacker-controlled topic name: refused, and echoed only as a JSON string.
    let evil = post(
        addr,
        "/v1/topics",
        &json!({"name": SCRIPT, "partitions": 1, "replication_factor": 1}),
    )?;
    ensure!(
        evil.status == 400,
        "{SCRIPT} topic = {} {}",
        evil.status,
        evil.body
    );
    ensure!(!evil.body.contains('<'), "raw markup in {:?}", evil.body);
    // DNS rebinding: a browser's request with an attacker's name in Host (sent before
    // the harness's own Host, so it is the one read) is refused on the console and the
    // API, not on probes; a tool that is not a browser is not guarded.
    const BROWSER: &str =
        "User-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\nSec-Fetch-Site: same-origin";
    for path in ["/", "/console/app.js", "/v1/cluster", "/v1/topics"] {
        let rebound = raw(
            addr,
            &format!("GET {path} HTTP/1.1\r\nHost: rebind.evil.example:7072\r\n{BROWSER}"),
            b"",
        )?;
        ensure!(
            rebound.status == 403 && rebound.body.contains("--http-allowed-hosts"),
            "{path} with an attacker's Host = {} {}",
            rebound.status,
            rebound.body
        );
    }
    for path in ["/health", "/metrics"] {
        let probe = raw(
            addr,
            &format!("GET {path} HTTP/1.1\r\nHost: rebind.evil.example:7072"),
            b"",
        )?;
        ensure!(
            probe.status == 200,
            "{path} with another Host = {}",
            probe.status
        );
    }
    let local = raw(
        addr,
        "GET /v1/cluster HTTP/1.1\r\nHost: localhost:7072",
        b"",
    )?;
    ensure!(local.status == 200, "localhost = {}", local.status);
    let limit = get(addr, "/v1/topics/web/messages?limit=101")?;
    ensure!(limit.status == 400, "limit 101 = {}", limit.status);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_endpoints_and_actions() -> anyhow::Result<()> {
    with_cluster(3, async |cluster| {
        let addr = cluster.spec(1).http;
        check_assets(addr)?;
        check_refusals(addr)?;

        // Create a topic through the console's action; a second time is a conflict.
        let create = json!({"name": "web", "partitions": 2, "replication_factor": 3});
        let created = post(addr, "/v1/topics", &create)?;
        ensure!(
            created.status == 200,
            "create: {} {}",
            created.status,
            created.body
        );
        ensure!(post(addr, "/v1/topics", &create)?.status == 409);

        // A hostile record: key, value and a header.
        let client = connect(cluster).await?;
        let producer = Producer::new(client.clone());
        let record = ProducerRecord::new("web", SCRIPT)
            .key(format!("k{SCRIPT}"))
            .header("h", format!("<img src=x onerror=alert(1)>{SCRIPT}"))
            .partition(0);
        producer.send(record).await?.await?;
        producer
            .send(ProducerRecord::new("web", vec![0xffu8, 0x00]).partition(0))
            .await?
            .await?;

        // Read on another node than the leader's, perhaps: every node answers the same.
        for id in 1..=3 {
            let addr = cluster.spec(id).http;
            let page = get(
                addr,
                "/v1/topics/web/messages?partition=0&offset=0&limit=10",
            )?;
            ensure!(
                page.status == 200,
                "messages: {} {}",
                page.status,
                page.body
            );
            ensure!(!page.body.contains('<'), "raw markup in {:?}", page.body);
            let v = page.json()?;
            let records = v["records"].as_array().context("records")?;
            ensure!(records.len() == 2, "{v}");
            ensure!(records[0]["value"]["text"] == SCRIPT, "{v}");
            ensure!(records[0]["key"]["text"] == format!("k{SCRIPT}"));
            ensure!(records[0]["headers"][0]["name"] == "h");
            ensure!(
                records[0]["headers"][0]["value"]["text"]
                    == format!("<img src=x onerror=alert(1)>{SCRIPT}")
            );
            // Not UTF-8: no text, hex only.
            ensure!(records[1]["value"]["text"].is_null());
            ensure!(records[1]["value"]["hex"] == "ff00");
            ensure!(v["end_offset"] == 2 && v["next_offset"] == 2, "{v}");
        }
        let latest = get(addr, "/v1/topics/web/messages?partition=0&limit=1")?.json()?;
        ensure!(latest["offset"] == 1 && latest["records"].as_array().map(Vec::len) == Some(1));

        // Topics: partitions with leader, replicas, in sync and end offsets.
        let topics = get(addr, "/v1/topics")?;
        ensure!(topics.status == 200, "{}", topics.body);
        let topics = topics.json()?;
        let web = topics["topics"]
            .as_array()
            .and_then(|ts| ts.iter().find(|t| t["name"] == "web"))
            .context("web listed")?
            .clone();
        let partitions = web["partitions"].as_array().context("partitions")?;
        ensure!(partitions.len() == 2, "{web}");
        ensure!(partitions[0]["end_offset"] == 2, "{web}");
        ensure!(partitions[0]["replicas"].as_array().map(Vec::len) == Some(3));
        ensure!(partitions[0]["leader"].is_u64() && partitions[0]["in_sync"].is_array());

        // Stats: the produce counters are there (on the leader's node at least).
        // (A labelled histogram has no series on a node that observed nothing: null.)
        let (mut produced, mut histograms) = (0.0, 0);
        for id in 1..=3 {
            let stats = get(cluster.spec(id).http, "/v1/stats")?.json()?;
            produced += stats["produce_records"]
                .as_f64()
                .context("produce_records")?;
            if stats["produce_latency"]["buckets"].is_array() {
                histograms += 1;
            }
        }
        ensure!(
            produced >= 2.0,
            "produce_records over the nodes: {produced}"
        );
        ensure!(histograms >= 1, "no node has a produce latency histogram");

        // Reset the offsets of a group once its member has left.
        neo_ok(
            cluster,
            &[
                "consume",
                "web",
                "--group",
                "web-readers",
                "--from-beginning",
                "--max",
                "1",
            ],
            "",
        )?;
        let reset = post(
            addr,
            "/v1/groups/web-readers/reset-offsets",
            &json!({"topic": "web", "to": "latest"}),
        )?;
        ensure!(
            reset.status == 200,
            "reset: {} {}",
            reset.status,
            reset.body
        );
        ensure!(reset.json()?["offsets"].as_array().map(Vec::len) == Some(2));
        let bad = post(
            addr,
            "/v1/groups/web-readers/reset-offsets",
            &json!({"topic": "web", "to": SCRIPT}),
        )?;
        ensure!(bad.status == 400 && !bad.body.contains('<'), "{}", bad.body);

        // Queues: describe, purge, redrive of the (empty) dead-letter queue.
        QueueAdmin::new(client.clone())
            .create("jobs", QueueOptions::new(2, 3))
            .await?;
        let producer = Producer::new(client.clone());
        producer
            .send(ProducerRecord::new("jobs", "job"))
            .await?
            .await?;
        let q = get(addr, "/v1/queues/jobs")?;
        ensure!(q.status == 200, "{}", q.body);
        let q = q.json()?;
        ensure!(q["totals"]["available"] == 1, "{q}");
        ensure!(q["settings"]["dead_letter"] == "jobs.dlq", "{q}");
        let purged = post(addr, "/v1/queues/jobs/purge", &json!({}))?;
        ensure!(purged.status == 200, "{}", purged.body);
        ensure!(purged.json()?["purged"] == 1);
        let redrive = post(addr, "/v1/queues/jobs.dlq/redrive", &json!({"max": 10}))?;
        ensure!(redrive.status == 200, "{}", redrive.body);
        ensure!(redrive.json()?["moved"] == 0);
        ensure!(get(addr, "/v1/queues/nope")?.status == 404);

        // Delete the topic: its messages are gone.
        let deleted = post(addr, "/v1/topics/web/delete", &json!({}))?;
        ensure!(deleted.status == 200, "{}", deleted.body);
        let gone = get(addr, "/v1/topics/web/messages")?;
        ensure!(gone.status == 404, "{} {}", gone.status, gone.body);
        Ok(())
    })
    .await
}

/// The HS256 secret of [`console_with_security`]'s nodes.
const SECRET: &str = "neo-console-e2e-hs256-secret-at-least-32-bytes";

/// An HS256 JWT for `sub`, valid for an hour.
fn jwt(sub: &str) -> String {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + 3600;
    let input = format!(
        "{}.{}",
        b64(&json!({"alg": "HS256", "typ": "JWT"})),
        b64(&json!({"sub": sub, "iss": ISSUER, "exp": exp}))
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    let tag = ring::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

/// [`raw`] with `Authorization: Bearer token`.
fn as_user(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&Value>,
) -> anyhow::Result<Answer> {
    let auth = format!("Authorization: Bearer {token}");
    match body {
        None => raw(addr, &format!("{method} {path} HTTP/1.1\r\n{auth}"), b""),
        Some(body) => send_json(addr, method, path, &format!("{auth}\r\n"), body),
    }
}

/// With security on: the console's files load without a token, its data and actions
/// need one (401) and the permissions (403), checked again as the caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_with_security() -> anyhow::Result<()> {
    let (cluster, _files) = SecureCluster::new(3, SECRET)?.start()?;
    let result = async {
        let addr = cluster.spec(2).http;
        let (admin, bob) = (jwt(SUPERUSER), jwt("bob"));
        ensure!(get(addr, "/")?.status == 200, "the page needs no token");
        ensure!(get(addr, "/console/api.js")?.status == 200);
        ensure!(get(addr, "/v1/topics")?.status == 401);
        ensure!(get(addr, "/v1/stats")?.status == 401);
        let create = json!({"name": "secure", "partitions": 1, "replication_factor": 3});
        ensure!(post(addr, "/v1/topics", &create)?.status == 401);
        // bob has no grant: refused before anything is asked of the cluster.
        let refused = as_user(addr, "POST", "/v1/topics", &bob, Some(&create))?;
        ensure!(refused.status == 403, "{} {}", refused.status, refused.body);
        let created = as_user(addr, "POST", "/v1/topics", &admin, Some(&create))?;
        ensure!(created.status == 200, "{} {}", created.status, created.body);
        let listed = as_user(addr, "GET", "/v1/topics", &admin, None)?.json()?;
        ensure!(listed["topics"][0]["name"] == "secure", "{listed}");
        // bob sees no topic (the client port filters as bob) and reads none.
        let hidden = as_user(addr, "GET", "/v1/topics", &bob, None)?;
        ensure!(hidden.status == 200, "{}", hidden.body);
        ensure!(hidden.json()?["topics"] == json!([]), "{}", hidden.body);
        let read = as_user(addr, "GET", "/v1/topics/secure/messages", &bob, None)?;
        ensure!(read.status == 403, "{} {}", read.status, read.body);
        let deleted = as_user(
            addr,
            "POST",
            "/v1/topics/secure/delete",
            &bob,
            Some(&json!({})),
        )?;
        ensure!(deleted.status == 403, "{} {}", deleted.status, deleted.body);
        let stats = as_user(addr, "GET", "/v1/stats", &admin, None)?;
        ensure!(stats.status == 200, "{}", stats.body);
        Ok(())
    }
    .await;
    if result.is_err() {
        eprintln!("{}", cluster.logs(60));
    }
    result
}
