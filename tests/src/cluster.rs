//! [`TestCluster`]: real `neo-node` processes on loopback.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Bound on the wait for a started node's `/ready`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The path of a binary of this workspace, built by cargo into the same target folder
/// as the running test executable (`target/<profile>/deps/<test>` → `target/<profile>/<name>`).
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("current_exe")?;
    let mut dir = exe.parent().context("test executable has no folder")?;
    if dir.ends_with("deps") {
        dir = dir.parent().context("deps has no parent")?;
    }
    let path = dir.join(name);
    if !path.exists() {
        bail!(
            "{} does not exist: build it first (`cargo build -p {}` or `cargo test --workspace`)",
            path.display(),
            if name == "neo" { "neo-client" } else { name }
        );
    }
    Ok(path)
}

/// The addresses of one node.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// Node id (1-based).
    pub id: u64,
    /// Neo RPC (client) listener.
    pub client: SocketAddr,
    /// gRPC (cluster) listener.
    pub cluster: SocketAddr,
    /// HTTP admin listener.
    pub http: SocketAddr,
    /// Data folder.
    pub data_dir: PathBuf,
}

struct Node {
    spec: NodeSpec,
    child: Option<Child>,
    log: PathBuf,
    /// Environment variables of this node's process (besides `NEO_LOG`).
    env: Vec<(String, String)>,
}

/// N `neo-node` processes on loopback, statically bootstrapped with `--peers`.
pub struct TestCluster {
    nodes: Vec<Node>,
    peers: String,
    binary: PathBuf,
    /// Flags every node gets besides the addresses (e.g. security settings); `{id}` in
    /// a flag is replaced by the node's id (its own certificate files).
    extra_args: Vec<String>,
    /// Holds every data dir and log; removed on drop.
    _root: tempfile::TempDir,
}

impl std::fmt::Debug for TestCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCluster")
            .field(
                "nodes",
                &self.nodes.iter().map(|n| &n.spec).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl TestCluster {
    /// Start `n` nodes and wait until each reports `/ready`.
    pub fn start(n: u64) -> anyhow::Result<TestCluster> {
        TestCluster::start_with_args(n, &[])
    }

    /// Start `n` nodes, each also given `extra_args` (e.g. `--auth jwt ...`; `{id}` in
    /// an argument is replaced by the node's id, e.g. `node-{id}.pem`), and wait until
    /// each reports `/ready`.
    pub fn start_with_args(n: u64, extra_args: &[String]) -> anyhow::Result<TestCluster> {
        TestCluster::start_custom(n, extra_args, |_| Ok(Vec::new()))
    }

    /// [`TestCluster::start_with_args`], calling `setup` for each node before it first
    /// starts: it may change the node's spec (e.g. put its data folder on a filesystem
    /// the test mounted) and returns environment variables for the node's process
    /// (e.g. `NEO_FAILPOINTS`), kept across restarts ([`TestCluster::set_env`]).
    pub fn start_custom(
        n: u64,
        extra_args: &[String],
        mut setup: impl FnMut(&mut NodeSpec) -> anyhow::Result<Vec<(String, String)>>,
    ) -> anyhow::Result<TestCluster> {
        let binary = binary("neo-node")?;
        let root = tempfile::Builder::new().prefix("neo-e2e-").tempdir()?;
        let mut specs = Vec::new();
        for id in 1..=n {
            specs.push(NodeSpec {
                id,
                client: crate::ports::free_addr(),
                cluster: crate::ports::free_addr(),
                http: crate::ports::free_addr(),
                data_dir: root.path().join(format!("node-{id}")),
            });
        }
        let peers = specs
            .iter()
            .map(|s| format!("{}={}", s.id, s.cluster))
            .collect::<Vec<_>>()
            .join(",");
        let nodes = specs
            .into_iter()
            .map(|mut spec| {
                let env = setup(&mut spec)?;
                Ok(Node {
                    log: root.path().join(format!("node-{}.log", spec.id)),
                    spec,
                    child: None,
                    env,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        let mut cluster = TestCluster {
            nodes,
            peers,
            binary,
            extra_args: extra_args.to_vec(),
            _root: root,
        };
        for id in 1..=n {
            cluster.spawn(id)?;
        }
        for id in 1..=n {
            cluster.wait_ready(id, READY_TIMEOUT)?;
        }
        Ok(cluster)
    }

    /// Sets (or, with `None`, removes) an environment variable of node `id`'s process,
    /// from its next (re)start on.
    pub fn set_env(&mut self, id: u64, key: &str, value: Option<&str>) {
        let env = &mut self.node_mut(id).env;
        env.retain(|(k, _)| k != key);
        if let Some(v) = value {
            env.push((key.to_string(), v.to_string()));
        }
    }

    /// Every node's client address (`host:port`), by id.
    pub fn client_addrs(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| n.spec.client.to_string())
            .collect()
    }

    /// The client addresses joined with commas (`neo --server`).
    pub fn servers(&self) -> String {
        self.client_addrs().join(",")
    }

    /// A node's addresses.
    pub fn spec(&self, id: u64) -> &NodeSpec {
        &self.node(id).spec
    }

    /// The id of the node whose client address is `address`.
    pub fn id_of(&self, address: &str) -> Option<u64> {
        self.nodes
            .iter()
            .find(|n| n.spec.client.to_string() == address)
            .map(|n| n.spec.id)
    }

    /// Whether node `id` is running (started and not killed).
    pub fn is_running(&mut self, id: u64) -> bool {
        let node = self.node_mut(id);
        match &mut node.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The OS process id of node `id`, while it runs.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.nodes
            .iter()
            .find(|n| n.spec.id == id)
            .and_then(|n| n.child.as_ref())
            .map(|c| c.id())
    }

    /// SIGKILL node `id` and reap it.
    pub fn kill(&mut self, id: u64) -> anyhow::Result<()> {
        let node = self.node_mut(id);
        if let Some(mut child) = node.child.take() {
            // `Child::kill` is SIGKILL on Unix: no shutdown path runs.
            child.kill().ok();
            child.wait().context("reap killed node")?;
        }
        Ok(())
    }

    /// Start node `id` again on its data dir and wait for `/ready`.
    pub fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        self.kill(id)?;
        self.spawn(id)?;
        self.wait_ready(id, READY_TIMEOUT)
    }

    /// SIGKILL every node, then start them all again on their data dirs and wait for
    /// each `/ready` (a node alone cannot be ready: it needs the metadata group's
    /// quorum, so they are all started before any is waited for).
    pub fn restart_all(&mut self) -> anyhow::Result<()> {
        let ids: Vec<u64> = self.nodes.iter().map(|n| n.spec.id).collect();
        for &id in &ids {
            self.kill(id)?;
        }
        for &id in &ids {
            self.spawn(id)?;
        }
        for &id in &ids {
            self.wait_ready(id, READY_TIMEOUT)?;
        }
        Ok(())
    }

    /// Wait until node `id` answers `/ready` with 200.
    pub fn wait_ready(&mut self, id: u64, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let http = self.node(id).spec.http;
        loop {
            if !self.is_running(id) {
                bail!(
                    "node {id} exited while starting:\n{}",
                    self.log_tail(id, 40)
                );
            }
            if http_status(http, "/ready").is_ok_and(|s| s == 200) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "node {id} not ready after {timeout:?}:\n{}",
                    self.log_tail(id, 40)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last `lines` lines of node `id`'s log (stdout and stderr).
    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.node(id).log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let from = all.len().saturating_sub(lines);
        format!("--- node {id} log ---\n{}", all[from..].join("\n"))
    }

    /// Log tails of every node, for failure messages.
    pub fn logs(&self, lines: usize) -> String {
        self.nodes
            .iter()
            .map(|n| self.log_tail(n.spec.id, lines))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn spawn(&mut self, id: u64) -> anyhow::Result<()> {
        let binary = self.binary.clone();
        let peers = self.peers.clone();
        let extra = self.extra_args.clone();
        let node = self.node_mut(id);
        std::fs::create_dir_all(&node.spec.data_dir)?;
        let log = File::options().create(true).append(true).open(&node.log)?;
        let child = Command::new(&binary)
            .arg("--id")
            .arg(id.to_string())
            .arg("--data-dir")
            .arg(&node.spec.data_dir)
            .arg("--listen")
            .arg(node.spec.client.to_string())
            .arg("--cluster-listen")
            .arg(node.spec.cluster.to_string())
            .arg("--http-listen")
            .arg(node.spec.http.to_string())
            .arg("--peers")
            .arg(&peers)
            .args(extra.iter().map(|a| a.replace("{id}", &id.to_string())))
            .env(
                "NEO_LOG",
                std::env::var("NEO_E2E_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .envs(node.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawn {}", binary.display()))?;
        node.child = Some(child);
        Ok(())
    }

    fn node(&self, id: u64) -> &Node {
        &self.nodes[(id - 1) as usize]
    }

    fn node_mut(&mut self, id: u64) -> &mut Node {
        &mut self.nodes[(id - 1) as usize]
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                child.kill().ok();
                child.wait().ok();
            }
        }
    }
}

/// What the replicas of `topic`/`partition` must agree on, from node `id`'s digest of
/// its committed log (`/v1/partitions/{topic}/{p}/digest`): start offset, high
/// watermark, batches, bytes and CRC (not who answers, nor whether it leads).
pub fn replica_digest(
    cluster: &TestCluster,
    id: u64,
    topic: &str,
    partition: u32,
) -> anyhow::Result<String> {
    let (status, body) = http_get(
        cluster.spec(id).http,
        &format!("/v1/partitions/{topic}/{partition}/digest"),
    )?;
    anyhow::ensure!(status == 200, "digest on node {id}: {status} {body}");
    let v: serde_json::Value = serde_json::from_str(&body)?;
    Ok(format!(
        "{} {} {} {} {}",
        v["start_offset"], v["high_watermark"], v["batches"], v["bytes"], v["crc32"]
    ))
}

/// The status code of `GET path` on `addr` (HTTP/1.0, no client library needed).
pub fn http_status(addr: SocketAddr, path: &str) -> anyhow::Result<u16> {
    let (status, _) = http_get(addr, path)?;
    Ok(status)
}

/// `GET path` on `addr`: the status code and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    http_get_as(addr, path, None)
}

/// `GET path` on `addr` with `Authorization: Bearer <token>` when given.
pub fn http_get_as(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(15)))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status line in {response:?}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Whether any file under `dir` (recursively) contains `needle`: the check that no
/// plaintext reached a node's data folder.
pub fn folder_contains(dir: &Path, needle: &[u8]) -> anyhow::Result<bool> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let found = if entry.file_type()?.is_dir() {
            folder_contains(&path, needle)?
        } else {
            let bytes = std::fs::read(&path)?;
            bytes.windows(needle.len()).any(|w| w == needle)
        };
        if found {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A data dir's size in bytes (for catch-up checks and reports).
pub fn dir_size_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
