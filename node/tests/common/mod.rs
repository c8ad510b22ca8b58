//! Helpers shared by the tests that run real `neo-node` processes: a process handle,
//! free loopback ports, a leader-following broker call and a tiny HTTP GET.

#![allow(dead_code)] // Each test binary uses its own subset.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use neo_protocol::api::BROKER_SERVICE;
use neo_protocol::{ClientConfig, NeoClient};

/// A free loopback port for a node that binds it later, below the ephemeral range
/// (see `neo_tests::ports`).
pub use neo_tests::free_port;

/// One `neo-node` process on loopback ports; killed (SIGKILL) on drop.
pub struct Proc {
    pub id: u64,
    pub client: String,
    pub cluster: String,
    pub http: String,
    pub dir: PathBuf,
    /// Flags added to every start (after the addresses and `--peers`).
    pub extra_args: Vec<String>,
    pub child: Option<Child>,
}

impl Proc {
    /// Node `id` on three free ports, data in `dir`; not started.
    pub fn new(id: u64, dir: PathBuf, extra_args: &[&str]) -> Proc {
        Proc {
            id,
            client: format!("127.0.0.1:{}", free_port()),
            cluster: format!("127.0.0.1:{}", free_port()),
            http: format!("127.0.0.1:{}", free_port()),
            dir,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            child: None,
        }
    }

    /// Starts the process; its stderr is appended to `logs/node-{id}.log`.
    pub fn spawn(&mut self, peers: &str, logs: &Path) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(logs.join(format!("node-{}.log", self.id)))
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_neo-node"))
            .args(["--id", &self.id.to_string()])
            .args(["--data-dir", &self.dir.display().to_string()])
            .args(["--listen", &self.client])
            .args(["--cluster-listen", &self.cluster])
            .args(["--http-listen", &self.http])
            .args(["--peers", peers])
            .args(&self.extra_args)
            .args(["--log", "info,openraft=warn"])
            .env_remove("NEO_CONFIG")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn neo-node");
        self.child = Some(child);
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Calls `method` at `addrs[start]` (or the next node that answers), following
/// `NotLeader` hints and retrying retriable and connect errors until `deadline` passes
/// (then it panics); another error is returned.
pub async fn try_call_leader<Req, Resp>(
    addrs: &[String],
    start: usize,
    method: &str,
    req: &Req,
    deadline: Duration,
) -> Result<Resp, neo_protocol::Error>
where
    Req: serde::Serialize + Sync,
    Resp: serde::de::DeserializeOwned,
{
    let deadline = tokio::time::Instant::now() + deadline;
    let config = ClientConfig {
        connect_timeout: Duration::from_millis(500),
        reconnect_attempts_max: 1,
        call_timeout: Duration::from_secs(15),
        ..ClientConfig::default()
    };
    let mut next = start;
    let mut target = addrs[start % addrs.len()].clone();
    loop {
        let r = match NeoClient::connect(target.clone(), config.clone()).await {
            Ok(c) => c.call::<Req, Resp>(BROKER_SERVICE, method, req).await,
            Err(e) => Err(e),
        };
        let e = match r {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "{method} never succeeded; last error at {target}: {e}"
        );
        let hint = match &e {
            neo_protocol::Error::Rpc(r) => r.leader_hint().map(str::to_string),
            _ => None,
        };
        match hint {
            Some(h) if h != target => target = h,
            _ => {
                if !e.is_retriable() && !matches!(e, neo_protocol::Error::Connect { .. }) {
                    return Err(e);
                }
                next += 1;
                target = addrs[next % addrs.len()].clone();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The body of a 200 answer to `GET path` on `addr`.
pub async fn http_get(addr: &str, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.ok()?;
    if !out.starts_with("HTTP/1.1 200") {
        return None;
    }
    Some(out.split("\r\n\r\n").nth(1)?.to_string())
}

/// [`http_get`], parsed as JSON.
pub async fn http_json(addr: &str, path: &str) -> Option<serde_json::Value> {
    serde_json::from_str(&http_get(addr, path).await?).ok()
}

/// Starts nodes `1..=n`, data under `tmp/node-{id}`, logs in `tmp`, node `id` with
/// `args(id)` added to its flags; returns them, their `--peers` list and their client
/// addresses.
pub fn start_cluster(
    tmp: &Path,
    n: u64,
    args: impl Fn(u64) -> Vec<String>,
) -> (Vec<Proc>, String, Vec<String>) {
    let mut procs: Vec<Proc> = (1..=n)
        .map(|id| {
            let a = args(id);
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            Proc::new(id, tmp.join(format!("node-{id}")), &a)
        })
        .collect();
    let peers = procs
        .iter()
        .map(|p| format!("{}={}", p.id, p.cluster))
        .collect::<Vec<_>>()
        .join(",");
    for p in &mut procs {
        p.spawn(&peers, tmp);
    }
    let addrs = procs.iter().map(|p| p.client.clone()).collect();
    (procs, peers, addrs)
}

/// Prints the last 40 lines of each node's log in `tmp` (after a failed scenario).
pub fn dump_logs(tmp: &Path, ids: impl IntoIterator<Item = u64>) {
    for id in ids {
        let log = std::fs::read_to_string(tmp.join(format!("node-{id}.log"))).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        eprintln!("--- node {id} log tail ---");
        for l in &lines[lines.len().saturating_sub(40)..] {
            eprintln!("{l}");
        }
    }
}

/// The nodes that say they lead `topic`/`partition` (by their digest endpoint).
pub async fn leaders_of<'a>(procs: &'a [Proc], topic: &str, partition: u32) -> Vec<&'a Proc> {
    let mut out = Vec::new();
    for p in procs {
        let path = format!("/v1/partitions/{topic}/{partition}/digest");
        if http_json(&p.http, &path)
            .await
            .is_some_and(|v| v["leader"] == true)
        {
            out.push(p);
        }
    }
    out
}
