//! The Grafana dashboard (`deploy/grafana/neo.json`) and the Prometheus alert rules
//! (`deploy/prometheus/alerts.yml`) against a real 3-node cluster scraped by a real
//! Prometheus (Debian's `prometheus` package, installed by `.ci/run`):
//!
//! - `promtool check rules`, `promtool check config` and `promtool test rules` (the
//!   alert logic's unit tests, `deploy/prometheus/alerts_test.yml`) pass;
//! - a 3-node cluster with security on (so the authentication series exist) serves
//!   topics, a consumer group with committed offsets, a queue with a dead letter, a
//!   refused handshake and a refused request, under steady produce and fetch traffic;
//! - Prometheus scrapes the three nodes (1 s interval) and loads the alert rules; then
//!   every expression of every dashboard panel returns data (template variables
//!   replaced by match-all regexes), every alert rule is healthy, and every metric
//!   name an alert or a panel uses has series: an alert that is quiet on a healthy
//!   cluster returns nothing by design, so its metric names are what is checked.
//!
//! Every missing metric and empty expression is reported at once. Without `prometheus`
//! on the PATH the test says so and passes, unless `NEO_CI` is set: then it fails.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use neo_client::{
    Acks, Admin, AutoOffsetReset, Client, ClientConfig, Consumer, GroupConsumer,
    GroupConsumerConfig, Offset, Producer, ProducerConfig, ProducerRecord, QueueAdmin,
    QueueConsumer, QueueOptions, QueueProducer,
};
use neo_tests::cluster::http_get;
use neo_tests::secure::{ISSUER, SUPERUSER};
use neo_tests::{SecureCluster, TestCluster, free_port};
use serde_json::{Value, json};

/// Bound on Prometheus answering `/-/ready`, on all targets being up, and on the rules
/// being evaluated once.
const PROMETHEUS_WAIT_MAX: Duration = Duration::from_secs(60);
/// Bound on each step of the workload (an assignment, a receive).
const WORKLOAD_WAIT_MAX: Duration = Duration::from_secs(60);
/// What `$__rate_interval`, `$__interval` and `$__range` become: 15 scrapes at 1 s.
const RANGE: &str = "15s";
/// Scrapes of every target required before the expressions are queried (rates need 2).
const SCRAPES_MIN: u32 = 5;
/// The HS256 secret the nodes verify tokens with.
const SECRET: &str = "neo-e2e-monitoring-hs256-secret-of-32-bytes";

fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

/// `name` on the PATH; `None` (after a skip message) when it is absent outside CI.
fn tool(name: &str) -> anyhow::Result<Option<PathBuf>> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    match found {
        Some(p) => Ok(Some(p)),
        None if std::env::var_os("NEO_CI").is_some() => bail!(
            "`{name}` is not on the PATH: .ci/run must install Debian's `prometheus` \
             package (apt-get install prometheus: /usr/bin/prometheus and /usr/bin/promtool)"
        ),
        None => {
            eprintln!(
                "SKIPPED: `{name}` is not on the PATH (apt-get install prometheus); \
                 the dashboard and alert rules were not checked"
            );
            Ok(None)
        }
    }
}

/// Runs `promtool args...` in `dir`; requires exit status 0.
fn promtool(promtool: &Path, dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(promtool)
        .args(args)
        .current_dir(dir)
        .output()
        .with_context(|| format!("run {}", promtool.display()))?;
    ensure!(
        out.status.success(),
        "promtool {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[test]
fn promtool_checks_and_unit_tests_pass() -> anyhow::Result<()> {
    let Some(promtool_bin) = tool("promtool")? else {
        return Ok(());
    };
    let dir = repo_file("deploy/prometheus");
    promtool(&promtool_bin, &dir, &["check", "rules", "alerts.yml"])?;
    promtool(&promtool_bin, &dir, &["check", "config", "prometheus.yml"])?;
    promtool(&promtool_bin, &dir, &["test", "rules", "alerts_test.yml"])
}

// ---------------------------------------------------------------------------------
// The cluster and its workload
// ---------------------------------------------------------------------------------

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// An HS256 JWT for `sub`, valid for an hour, signed with `secret`.
fn jwt(secret: &str, sub: &str) -> String {
    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let signing_input = format!(
        "{}.{}",
        b64(&json!({"alg": "HS256", "typ": "JWT"})),
        b64(&json!({"sub": sub, "iss": ISSUER, "exp": now_s() + 3600}))
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

async fn client_as(cluster: &TestCluster, token: &str) -> neo_client::Result<Client> {
    let mut config = ClientConfig::default();
    config.rpc.auth_token = Some(token.as_bytes().to_vec());
    config.request_timeout = Duration::from_secs(10);
    Client::connect_with(&cluster.client_addrs(), config).await
}

/// 3 nodes with security on (JWT, cluster mTLS) and `/metrics` open, and the folder
/// of their secret and certificates.
fn secure_cluster() -> anyhow::Result<(TestCluster, tempfile::TempDir)> {
    SecureCluster::new(3, SECRET)?
        .arg("--metrics-open")
        .arg("true")
        .start()
}

/// Topics, a consumer group with commits, a queue with a dead letter, a refused
/// handshake and a refused request: the series the dashboard and the alerts read.
async fn workload(cluster: &TestCluster, client: &Client) -> anyhow::Result<()> {
    Admin::new(client.clone())
        .create_topic("orders", 6, 3)
        .await?;
    for acks in [Acks::All, Acks::Leader, Acks::None] {
        let producer = Producer::with_config(
            client.clone(),
            ProducerConfig {
                acks,
                ..ProducerConfig::default()
            },
        );
        for i in 0..60u32 {
            let record = ProducerRecord::new("orders", format!("order {i}")).key(i.to_string());
            producer.send_and_wait(record).await?;
        }
        producer.flush().await;
    }

    // A group member reads some records, commits, and leaves: lag series appear
    // (the records produced later make the lag non-zero).
    let config = GroupConsumerConfig {
        client_id: "neo-e2e-monitoring".into(),
        auto_offset_reset: AutoOffsetReset::Earliest,
        ..GroupConsumerConfig::default()
    };
    let mut member =
        GroupConsumer::subscribe(client.clone(), "billing", &["orders"], config).await?;
    let started = Instant::now();
    let mut read = 0;
    while read < 60 {
        ensure!(
            started.elapsed() < WORKLOAD_WAIT_MAX,
            "the group member read {read} records"
        );
        read += member.poll(Duration::from_millis(200)).await?.len();
    }
    member.commit_sync().await?;
    member.close().await?;

    // A queue: one message dead-lettered (termed), others left available.
    QueueAdmin::new(client.clone())
        .create("jobs", QueueOptions::new(2, 3).max_deliveries(3))
        .await?;
    let sender = QueueProducer::new(client.clone());
    for i in 0..10 {
        sender.send("jobs", format!("job {i}")).await?;
    }
    let worker = QueueConsumer::new(client.clone(), "jobs", "w1")?;
    let started = Instant::now();
    let delivery = loop {
        if let Some(d) = worker.receive(1, Duration::from_millis(500)).await?.pop() {
            break d;
        }
        ensure!(started.elapsed() < WORKLOAD_WAIT_MAX, "no queue delivery");
    };
    worker.term_one(delivery.receipt, "poison").await?;
    worker.close().await?;

    // Refusals: a bad token (authentication) and a principal without grants.
    let forged = jwt("not-the-secret-of-the-cluster-32-bytes", SUPERUSER);
    ensure!(
        client_as(cluster, &forged).await.is_err(),
        "a forged token was accepted"
    );
    let nobody = client_as(cluster, &jwt(SECRET, "nobody")).await?;
    let refused = Producer::new(nobody)
        .send_and_wait(ProducerRecord::new("orders", "denied"))
        .await;
    ensure!(refused.is_err(), "a principal without grants produced");
    Ok(())
}

/// Produce and fetch until `stop`, so rates and latency histograms have recent
/// observations while the expressions are queried.
fn traffic(client: Client, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let producer = Producer::new(client.clone());
        let mut consumer = Consumer::new(client);
        let mut assigned = false;
        let mut i = 0u64;
        while !stop.load(Ordering::SeqCst) {
            i += 1;
            let record = ProducerRecord::new("orders", format!("tick {i}")).partition(0);
            // Errors (a slow moment) only thin out the traffic: the queries decide.
            let _ = producer.send_and_wait(record).await;
            if !assigned {
                assigned = consumer
                    .assign("orders", &[0], Offset::Beginning)
                    .await
                    .is_ok();
            } else {
                let _ = consumer.poll(Duration::from_millis(100)).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

// ---------------------------------------------------------------------------------
// Prometheus
// ---------------------------------------------------------------------------------

/// A Prometheus process scraping the cluster, killed on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

impl Prometheus {
    /// Starts `binary` scraping `targets` every second with the repository's alert
    /// rules, and waits for `/-/ready`.
    fn start(binary: &Path, targets: &[SocketAddr]) -> anyhow::Result<Prometheus> {
        let dir = tempfile::Builder::new().prefix("neo-e2e-prom-").tempdir()?;
        let rules = repo_file("deploy/prometheus/alerts.yml").canonicalize()?;
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        // JSON is YAML: no YAML writer needed.
        let config = format!(
            "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\n\
             rule_files: [{rules:?}]\n\
             scrape_configs:\n  - job_name: neo\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config)?;
        let log = dir.path().join("prometheus.log");
        let out = File::create(&log)?;
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("spawn {}", binary.display()))?;
        let mut prometheus = Prometheus {
            child,
            addr,
            log,
            _dir: dir,
        };
        prometheus.wait_for("/-/ready", |_| true)?;
        Ok(prometheus)
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(30);
        format!("--- prometheus log ---\n{}", lines[from..].join("\n"))
    }

    /// Polls `GET path` until it answers 200 with a body `done` accepts; bounded.
    fn wait_for(&mut self, path: &str, done: impl Fn(&str) -> bool) -> anyhow::Result<String> {
        let deadline = Instant::now() + PROMETHEUS_WAIT_MAX;
        let mut last;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!("prometheus exited ({status}):\n{}", self.log_tail());
            }
            match http_get(self.addr, path) {
                Ok((200, body)) if done(&body) => return Ok(body),
                Ok((status, body)) => last = format!("{status} {body}"),
                Err(e) => last = e.to_string(),
            }
            if Instant::now() >= deadline {
                bail!(
                    "GET {path} not as wanted after {PROMETHEUS_WAIT_MAX:?}; last answer: \
                     {last}\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// `GET path` answered 200 with `status: success`: its `data`.
    fn api(&self, path: &str) -> anyhow::Result<Value> {
        let (status, body) = http_get(self.addr, path)?;
        let v: Value =
            serde_json::from_str(&body).with_context(|| format!("GET {path}: {status} {body}"))?;
        ensure!(
            status == 200 && v["status"] == "success",
            "GET {path}: {status} {body}"
        );
        Ok(v["data"].clone())
    }

    /// The result vector of the instant query `expr`.
    fn query(&self, expr: &str) -> anyhow::Result<Vec<Value>> {
        let data = self.api(&format!("/api/v1/query?query={}", url_encode(expr)))?;
        match (data["resultType"].as_str(), &data["result"]) {
            (Some("vector" | "matrix"), Value::Array(a)) => Ok(a.clone()),
            // A scalar or a string: one `[time, "value"]`, shaped like a sample.
            (Some("scalar" | "string"), v) => Ok(vec![json!({ "value": v })]),
            _ => bail!("query {expr}: unexpected answer {data}"),
        }
    }
}

fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Every active target is up, and there are `n` of them.
fn all_targets_up(body: &str, n: usize) -> bool {
    let Ok(v) = serde_json::from_str::<Value>(body) else {
        return false;
    };
    v["data"]["activeTargets"]
        .as_array()
        .is_some_and(|t| t.len() == n && t.iter().all(|t| t["health"] == "up"))
}

/// Every rule of every group was evaluated at least once.
fn rules_evaluated(body: &str) -> bool {
    let Ok(v) = serde_json::from_str::<Value>(body) else {
        return false;
    };
    let groups = v["data"]["groups"].as_array().cloned().unwrap_or_default();
    !groups.is_empty()
        && groups.iter().all(|g| {
            g["rules"]
                .as_array()
                .is_some_and(|r| r.iter().all(|r| r["health"] != "unknown"))
        })
}

// ---------------------------------------------------------------------------------
// PromQL and the dashboard
// ---------------------------------------------------------------------------------

/// Vector matching and aggregation modifiers: a parenthesised list of labels follows.
const MODIFIERS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
/// Words of PromQL that are neither metric names nor followed by `(`.
const OPERATORS: [&str; 7] = ["and", "or", "unless", "bool", "offset", "inf", "nan"];

/// The metric names an expression selects: identifiers that are not functions or
/// aggregations (followed by `(`), keywords, label names (inside `{}` or after
/// `by`/`without`/`on`/`ignoring`/`group_left`/`group_right`), strings, ranges or
/// numbers and durations.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    // Skips to the char after the `close` matching the opener at `i`, over strings.
    let skip_group = |mut i: usize, close: char| -> usize {
        i += 1;
        while i < chars.len() && chars[i] != close {
            if matches!(chars[i], '"' | '\'' | '`') {
                let quote = chars[i];
                i += 1;
                while i < chars.len() && chars[i] != quote {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
            }
            i += 1;
        }
        i + 1
    };
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '"' | '\'' | '`') {
            i = skip_group(i, c);
        } else if c == '{' {
            i = skip_group(i, '}');
        } else if c == '[' {
            i = skip_group(i, ']');
        } else if c.is_ascii_digit() || c == '.' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            // `sum by (x) (...)`: an aggregation whose modifier comes first.
            let rest: String = chars[next..].iter().take(8).collect();
            let before_modifier = MODIFIERS[..2].iter().any(|m| {
                rest.starts_with(m)
                    && !rest[m.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
            });
            let before_paren = chars.get(next) == Some(&'(') || before_modifier;
            let lower = word.to_ascii_lowercase();
            if MODIFIERS.contains(&lower.as_str()) {
                if before_paren {
                    i = skip_group(next, ')');
                }
            } else if !before_paren && !OPERATORS.contains(&lower.as_str()) {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// One panel query of the dashboard.
struct PanelQuery {
    panel: String,
    expr: String,
}

/// Every target expression of every panel (rows' nested panels included).
fn panel_queries(dashboard: &Value) -> Vec<PanelQuery> {
    fn walk(panels: &Value, out: &mut Vec<PanelQuery>) {
        for p in panels.as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = t["expr"].as_str() {
                    out.push(PanelQuery {
                        panel: p["title"].as_str().unwrap_or("?").to_string(),
                        expr: expr.to_string(),
                    });
                }
            }
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// `expr` with Grafana's interval variables replaced by [`RANGE`] and the dashboard's
/// template variables by `.*` (all values); a template variable may only appear as
/// the value of a regex matcher (`=~"$name"`), where `.*` matches every value.
fn instantiate(expr: &str, variables: &[String]) -> Result<String, String> {
    let mut out = expr.to_string();
    for builtin in ["__rate_interval", "__interval", "__range"] {
        out = out
            .replace(&format!("${{{builtin}}}"), RANGE)
            .replace(&format!("${builtin}"), RANGE);
    }
    // Longest names first: `$job` must not eat the start of `$jobs`.
    let mut variables = variables.to_vec();
    variables.sort_by_key(|v| std::cmp::Reverse(v.len()));
    for v in &variables {
        for form in [format!("${{{v}}}"), format!("${v}")] {
            let used = format!("=~\"{form}\"");
            out = out.replace(&used, "=~\".*\"");
            if out.contains(&form) {
                return Err(format!("${v} is used outside a =~\"...\" matcher"));
            }
        }
    }
    if out.contains('$') {
        return Err("an unknown $variable".into());
    }
    Ok(out)
}

/// Whether a query result holds a number (not only NaN, e.g. a quantile of a window
/// without observations).
fn has_number(result: &[Value]) -> bool {
    result
        .iter()
        .any(|r| r["value"][1].as_str().is_some_and(|s| s != "NaN"))
}

// ---------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_dashboard_and_alert_expression_returns_data() -> anyhow::Result<()> {
    let Some(prometheus_bin) = tool("prometheus")? else {
        return Ok(());
    };
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(repo_file(
        "deploy/grafana/neo.json",
    ))?)
    .context("deploy/grafana/neo.json is not JSON")?;

    let (cluster, _secrets) = secure_cluster()?;
    let result = scenario(&cluster, &prometheus_bin, &dashboard).await;
    if result.is_err() {
        eprintln!("{}", cluster.logs(30));
    }
    result
}

async fn scenario(
    cluster: &TestCluster,
    prometheus_bin: &Path,
    dashboard: &Value,
) -> anyhow::Result<()> {
    let client = client_as(cluster, &jwt(SECRET, SUPERUSER)).await?;
    workload(cluster, &client).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = traffic(client.clone(), stop.clone());

    let targets: Vec<SocketAddr> = (1..=3).map(|id| cluster.spec(id).http).collect();
    let checked = tokio::task::block_in_place(|| -> anyhow::Result<Vec<String>> {
        let mut prometheus = Prometheus::start(prometheus_bin, &targets)?;
        prometheus.wait_for("/api/v1/targets?state=active", |b| all_targets_up(b, 3))?;
        // Enough scrapes of every target for rate() over RANGE to have points.
        let enough = format!("min(count_over_time(up{{job=\"neo\"}}[{RANGE}])) >= {SCRAPES_MIN}");
        let deadline = Instant::now() + PROMETHEUS_WAIT_MAX;
        while prometheus.query(&enough)?.is_empty() {
            ensure!(
                Instant::now() < deadline,
                "fewer than {SCRAPES_MIN} scrapes per target after {PROMETHEUS_WAIT_MAX:?}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        prometheus.wait_for("/api/v1/rules", rules_evaluated)?;
        check_expressions(&prometheus, dashboard)
    });
    stop.store(true, Ordering::SeqCst);
    traffic.await?;
    for line in checked? {
        eprintln!("{line}");
    }
    Ok(())
}

/// Queries every dashboard expression and every alert rule; fails listing every
/// problem found. Returns notes for the log (expressions that only returned NaN).
fn check_expressions(prometheus: &Prometheus, dashboard: &Value) -> anyhow::Result<Vec<String>> {
    let mut problems: Vec<String> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    // metric name -> where it is used
    let mut used: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();

    // (a) The dashboard: its variables' queries and every panel's expressions.
    let variables: Vec<Value> = dashboard["templating"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let names: Vec<String> = variables
        .iter()
        .filter_map(|v| v["name"].as_str().map(str::to_string))
        .collect();
    for v in variables.iter().filter(|v| v["type"] == "query") {
        let name = v["name"].as_str().unwrap_or("?");
        let definition = v["definition"].as_str().unwrap_or_default();
        // label_values(<selector>, <label>): the selector must have series with it.
        let Some((selector, label)) = definition
            .strip_prefix("label_values(")
            .and_then(|d| d.strip_suffix(')'))
            .and_then(|d| d.rsplit_once(','))
        else {
            problems.push(format!(
                "variable ${name}: not label_values(...): {definition}"
            ));
            continue;
        };
        let expr = match instantiate(selector, &names) {
            Ok(e) => format!("count by ({}) ({e})", label.trim()),
            Err(e) => {
                problems.push(format!("variable ${name}: {e}: {definition}"));
                continue;
            }
        };
        match prometheus.query(&expr) {
            Ok(r) if r.is_empty() => problems.push(format!("variable ${name}: no values: {expr}")),
            Ok(_) => {}
            Err(e) => problems.push(format!("variable ${name}: {e:#}")),
        }
    }
    let panels = panel_queries(dashboard);
    ensure!(!panels.is_empty(), "the dashboard has no panel expressions");
    for q in &panels {
        for m in metric_names(&q.expr) {
            used.entry(m)
                .or_default()
                .insert(format!("panel {:?}", q.panel));
        }
        let expr = match instantiate(&q.expr, &names) {
            Ok(e) => e,
            Err(e) => {
                problems.push(format!("panel {:?}: {e}: {}", q.panel, q.expr));
                continue;
            }
        };
        match prometheus.query(&expr) {
            Ok(r) if r.is_empty() => {
                problems.push(format!("panel {:?}: empty result: {expr}", q.panel));
            }
            Ok(r) if !has_number(&r) => {
                notes.push(format!("note: panel {:?}: only NaN now: {expr}", q.panel));
            }
            Ok(_) => {}
            Err(e) => problems.push(format!("panel {:?}: {e:#}", q.panel)),
        }
    }

    // (b) The alert rules as Prometheus loaded them.
    let rules = prometheus.api("/api/v1/rules")?;
    let mut alerts = 0;
    for group in rules["groups"].as_array().into_iter().flatten() {
        for rule in group["rules"].as_array().into_iter().flatten() {
            let name = rule["name"].as_str().unwrap_or("?");
            let query = rule["query"].as_str().unwrap_or_default();
            alerts += 1;
            if rule["health"] != "ok" {
                problems.push(format!(
                    "rule {name}: health {} ({}): {query}",
                    rule["health"], rule["lastError"]
                ));
            }
            let metrics = metric_names(query);
            if metrics.is_empty() {
                problems.push(format!("rule {name}: no metric name found in {query}"));
            }
            for m in metrics {
                used.entry(m).or_default().insert(format!("rule {name}"));
            }
        }
    }
    ensure!(alerts > 0, "Prometheus loaded no alert rule");

    // Every metric name used has series.
    let mut missing = Vec::new();
    for (metric, users) in &used {
        match prometheus.query(&format!("count({metric})")) {
            Ok(r) if r.is_empty() => missing.push(format!(
                "{metric} (used by {})",
                users.iter().cloned().collect::<Vec<_>>().join(", ")
            )),
            Ok(_) => {}
            Err(e) => problems.push(format!("metric {metric}: {e:#}")),
        }
    }
    if !missing.is_empty() || !problems.is_empty() {
        bail!(
            "{} metric names without series:\n  {}\n{} other problems:\n  {}",
            missing.len(),
            missing.join("\n  "),
            problems.len(),
            problems.join("\n  ")
        );
    }
    notes.push(format!(
        "checked {} panel expressions, {alerts} rules, {} metric names",
        panels.len(),
        used.len()
    ));
    Ok(notes)
}

#[test]
fn metric_names_skip_functions_labels_and_durations() {
    let names = metric_names(
        r#"sum by (group, topic) (neo_group_lag{job="neo", x=~"a{b}"}) > 1000
           and deriv(sum by (group) (neo_group_lag)[10m:1m]) > 0
           or histogram_quantile(0.99, sum by (le) (rate(neo_x_bucket[5m] offset 1h)))
           / on (instance) group_left (version) neo_build_info unless up == bool 1e3"#,
    );
    let want: BTreeSet<String> = ["neo_group_lag", "neo_x_bucket", "neo_build_info", "up"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(names, want);
}

#[test]
fn instantiate_replaces_intervals_and_match_all_variables() {
    let vars = vec!["job".to_string(), "instance".to_string()];
    assert_eq!(
        instantiate(
            r#"rate(a{job=~"$job", instance=~"${instance}"}[$__rate_interval])"#,
            &vars
        ),
        Ok(format!(r#"rate(a{{job=~".*", instance=~".*"}}[{RANGE}])"#))
    );
    assert!(instantiate(r#"a{job="$job"}"#, &vars).is_err());
    assert!(instantiate(r#"a{x=~"$nope"}"#, &vars).is_err());
}
