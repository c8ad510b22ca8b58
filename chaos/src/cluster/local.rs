//! [`LocalCluster`]: `neo-node` processes on loopback, statically bootstrapped with
//! `--peers`, data and logs in a temporary folder.
//!
//! Network faults between processes on one loopback interface: when
//! [`LocalOptions::separate_uids`] is set (root and a working `iptables` needed), node
//! N runs as its own uid, and two chains hang off the host's `OUTPUT` chain:
//!
//! ```text
//! OUTPUT ─▶ NEOCM-<pid>: -m owner --uid-owner <uid of N> -m conntrack --ctstate NEW
//!                         -j CONNMARK --set-mark <mark of N>          (one per node, fixed)
//!        ─▶ NEOCD-<pid>: -m connmark --mark <mark of A> -m conntrack --ctorigdstport
//!                         <cluster port of B> [-m statistic ...] -j DROP   (per fault)
//! ```
//!
//! Every connection a node opens is marked with its id; a rule drops both directions of
//! A's connections to B's cluster port (and one more B's to A's), so A and B stop
//! hearing each other while clients still reach both. Healing flushes `NEOCD-<pid>`
//! only, so the marks never lapse. Only packets of our own uids and ports match: other
//! processes on the host are untouched. Both chains are removed on teardown (and stale
//! ones of dead runs at the next start).

use std::collections::BTreeMap;
use std::fs::File;
use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};

use super::{Link, args, command, command_blocking};

/// How to run a local cluster.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// The `neo-node` binary.
    pub node_bin: PathBuf,
    /// Number of nodes.
    pub nodes: u64,
    /// Run each node as its own uid, so that iptables can cut links between nodes.
    pub separate_uids: bool,
    /// Parent of the temporary folder (default: the system temp dir).
    pub work_dir: Option<PathBuf>,
    /// `NEO_LOG` of the nodes.
    pub node_log: String,
    /// Keep the data dirs and logs after teardown.
    pub keep: bool,
}

#[derive(Debug)]
struct Node {
    id: u64,
    client: SocketAddr,
    cluster: SocketAddr,
    http: SocketAddr,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    uid: Option<u32>,
}

/// Local `neo-node` processes.
#[derive(Debug)]
pub struct LocalCluster {
    nodes: Vec<Node>,
    peers: String,
    binary: PathBuf,
    node_log: String,
    /// Chains (mark, drop) when links can be cut.
    chains: Option<(String, String)>,
    root: Option<tempfile::TempDir>,
    keep: bool,
    /// Pid of every started child not killed, stopped or reaped since, by node id:
    /// shared with samplers ([`super::PidSource::Local`]).
    pids: Arc<Mutex<BTreeMap<u64, u32>>>,
}

/// First uid of the nodes of this process (node N runs as `base + N`).
fn uid_base() -> u32 {
    2_000_000_000 + (std::process::id() % 100_000) * 16
}

/// Connection mark of node `id`.
fn mark(id: u64) -> String {
    format!("0x{:x}", 0x4e43_0000u32 + id as u32)
}

/// Whether iptables can be used for network faults here (root + iptables); the reason
/// when not.
pub fn network_probe() -> Result<(), String> {
    let uid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .map_err(|e| format!("cannot read /proc/self: {e}"))?;
    if uid != 0 {
        return Err(format!(
            "needs root (to run nodes as separate uids and change iptables); running as uid {uid}"
        ));
    }
    command_blocking("iptables", &args(&["-w", "-S", "OUTPUT"]))
        .map(|_| ())
        .map_err(|e| format!("iptables unusable: {e}"))
}

fn iptables(rule: &[&str]) -> anyhow::Result<String> {
    let mut a = vec!["-w".to_string()];
    a.extend(args(rule));
    command_blocking("iptables", &a)
}

/// Remove the chains of runs whose process is gone.
fn remove_stale_chains() {
    let Ok(rules) = iptables(&["-S", "OUTPUT"]) else {
        return;
    };
    for line in rules.lines() {
        let Some(chain) = line.strip_prefix("-A OUTPUT -j ") else {
            continue;
        };
        let chain = chain.trim();
        let pid = chain
            .strip_prefix("NEOCM-")
            .or_else(|| chain.strip_prefix("NEOCD-"));
        if let Some(pid) = pid
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            remove_chain(chain);
        }
    }
}

fn remove_chain(chain: &str) {
    while iptables(&["-D", "OUTPUT", "-j", chain]).is_ok() {}
    let _ = iptables(&["-F", chain]);
    let _ = iptables(&["-X", chain]);
}

impl LocalCluster {
    /// Start `options.nodes` nodes and wait until each is ready (the caller does).
    pub fn launch(options: &LocalOptions) -> anyhow::Result<LocalCluster> {
        if !options.node_bin.exists() {
            bail!(
                "{} does not exist: build it (`cargo build -p neo-node`) or pass --node-bin",
                options.node_bin.display()
            );
        }
        let mut builder = tempfile::Builder::new();
        builder.prefix("neo-chaos-");
        let root = match &options.work_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                builder.tempdir_in(dir)?
            }
            None => builder.tempdir()?,
        };
        let mut binary = options.node_bin.clone();
        let mut chains = None;
        if options.separate_uids {
            network_probe().map_err(|e| anyhow::anyhow!(e))?;
            // Other uids must reach the binary and the folder.
            std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755))?;
            let copy = root.path().join("neo-node");
            std::fs::copy(&options.node_bin, &copy).context("copy neo-node for other uids")?;
            std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))?;
            binary = copy;
            remove_stale_chains();
            let pid = std::process::id();
            let (m, d) = (format!("NEOCM-{pid}"), format!("NEOCD-{pid}"));
            for chain in [&m, &d] {
                remove_chain(chain);
                iptables(&["-N", chain])?;
            }
            iptables(&["-I", "OUTPUT", "1", "-j", &d])?;
            iptables(&["-I", "OUTPUT", "1", "-j", &m])?;
            chains = Some((m, d));
        }
        let mut nodes = Vec::new();
        for id in 1..=options.nodes {
            let uid = options.separate_uids.then(|| uid_base() + id as u32);
            nodes.push(Node {
                id,
                client: neo_tests::free_addr(),
                cluster: neo_tests::free_addr(),
                http: neo_tests::free_addr(),
                data_dir: root.path().join(format!("node-{id}")),
                log: root.path().join(format!("node-{id}.log")),
                child: None,
                uid,
            });
        }
        let peers = nodes
            .iter()
            .map(|n| format!("{}={}", n.id, n.cluster))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = LocalCluster {
            nodes,
            peers,
            binary,
            node_log: options.node_log.clone(),
            chains,
            root: Some(root),
            keep: options.keep,
            pids: Arc::default(),
        };
        if let Some((m, _)) = &cluster.chains {
            for n in &cluster.nodes {
                let uid = n.uid.expect("separate uids").to_string();
                iptables(&[
                    "-A",
                    m,
                    "-m",
                    "owner",
                    "--uid-owner",
                    &uid,
                    "-m",
                    "conntrack",
                    "--ctstate",
                    "NEW",
                    "-j",
                    "CONNMARK",
                    "--set-mark",
                    &mark(n.id),
                ])?;
            }
        }
        for id in 1..=options.nodes {
            cluster.start(id)?;
        }
        Ok(cluster)
    }

    /// The temporary folder (data dirs, logs).
    pub fn root(&self) -> Option<&Path> {
        self.root.as_ref().map(|r| r.path())
    }

    pub(super) fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    pub(super) fn client_addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.client.to_string()).collect()
    }

    pub(super) fn http_addrs(&self) -> Vec<(u64, String)> {
        self.nodes
            .iter()
            .map(|n| (n.id, n.http.to_string()))
            .collect()
    }

    pub(super) fn network_support(&self) -> Result<(), String> {
        if self.chains.is_some() {
            Ok(())
        } else {
            Err("local cluster started without separate uids".into())
        }
    }

    /// Whether node `id` runs (started, not exited).
    pub fn is_running(&mut self, id: u64) -> bool {
        match &mut self.node_mut(id).child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub(super) fn kill(&mut self, id: u64) -> anyhow::Result<()> {
        self.forget_pid(id);
        if let Some(mut child) = self.node_mut(id).child.take() {
            child.kill().ok(); // SIGKILL, works on stopped processes too
            child.wait().context("reap killed node")?;
        }
        Ok(())
    }

    pub(super) fn kill_all(&mut self) -> anyhow::Result<()> {
        // Signal every node first, then reap: they die together.
        self.pid_board_lock().clear();
        let mut children: Vec<Child> = self
            .nodes
            .iter_mut()
            .filter_map(|n| n.child.take())
            .collect();
        for child in &mut children {
            child.kill().ok();
        }
        for mut child in children {
            child.wait().context("reap killed node")?;
        }
        Ok(())
    }

    pub(super) async fn stop(&mut self, id: u64) -> anyhow::Result<()> {
        let Some(pid) = self.pid(id) else {
            return Ok(());
        };
        signal(pid, "TERM").await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while tokio::time::Instant::now() < deadline {
            if !self.is_running(id) {
                self.node_mut(id).child = None;
                self.forget_pid(id);
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!("node {id} ignored SIGTERM for 15 s: SIGKILL");
        self.kill(id)
    }

    pub(super) fn start(&mut self, id: u64) -> anyhow::Result<()> {
        if self.is_running(id) {
            return Ok(());
        }
        let binary = self.binary.clone();
        let peers = self.peers.clone();
        let node_log = self.node_log.clone();
        let node = self.node_mut(id);
        std::fs::create_dir_all(&node.data_dir)?;
        if let Some(uid) = node.uid {
            std::os::unix::fs::chown(&node.data_dir, Some(uid), Some(uid))?;
        }
        let log = File::options().create(true).append(true).open(&node.log)?;
        let mut cmd = Command::new(&binary);
        cmd.arg("--id")
            .arg(id.to_string())
            .arg("--data-dir")
            .arg(&node.data_dir)
            .arg("--listen")
            .arg(node.client.to_string())
            .arg("--cluster-listen")
            .arg(node.cluster.to_string())
            .arg("--http-listen")
            .arg(node.http.to_string())
            .arg("--peers")
            .arg(&peers)
            .env("NEO_LOG", node_log)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(uid) = node.uid {
            cmd.uid(uid).gid(uid).env("HOME", &node.data_dir);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("spawn {}", binary.display()))?;
        let pid = child.id();
        node.child = Some(child);
        self.pid_board_lock().insert(id, pid);
        Ok(())
    }

    pub(super) async fn pause(&mut self, id: u64) -> anyhow::Result<()> {
        match self.pid(id) {
            Some(pid) => signal(pid, "STOP").await,
            None => bail!("node {id} is not running"),
        }
    }

    pub(super) async fn resume(&mut self, id: u64) -> anyhow::Result<()> {
        match self.pid(id) {
            Some(pid) => signal(pid, "CONT").await,
            None => Ok(()),
        }
    }

    pub(super) async fn degrade(&mut self, links: &[Link]) -> anyhow::Result<()> {
        let Some((_, drop)) = self.chains.clone() else {
            bail!("network faults need separate uids (see LocalOptions::separate_uids)");
        };
        for link in links {
            for (from, to) in [(link.a, link.b), (link.b, link.a)] {
                let port = self.node(to).cluster.port().to_string();
                let mut rule = args(&[
                    "-w",
                    "-A",
                    &drop,
                    "-m",
                    "connmark",
                    "--mark",
                    &mark(from),
                    "-m",
                    "conntrack",
                    "--ctorigdstport",
                    &port,
                ]);
                if link.drop_probability < 1.0 {
                    rule.extend(args(&[
                        "-m",
                        "statistic",
                        "--mode",
                        "random",
                        "--probability",
                        &format!("{:.3}", link.drop_probability),
                    ]));
                }
                rule.extend(args(&["-j", "DROP"]));
                command("iptables", &rule).await?;
            }
        }
        Ok(())
    }

    pub(super) async fn heal_network(&mut self) -> anyhow::Result<()> {
        if let Some((_, drop)) = &self.chains {
            command("iptables", &args(&["-w", "-F", drop])).await?;
        }
        Ok(())
    }

    /// The whole log of node `id`.
    pub fn log(&self, id: u64) -> String {
        std::fs::read_to_string(&self.node(id).log).unwrap_or_default()
    }

    /// The last `lines` lines of node `id`'s log.
    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        let text = self.log(id);
        let all: Vec<&str> = text.lines().collect();
        let from = all.len().saturating_sub(lines);
        format!("--- node {id} log ---\n{}", all[from..].join("\n"))
    }

    pub(super) async fn teardown(&mut self) -> anyhow::Result<()> {
        self.cleanup();
        Ok(())
    }

    fn cleanup(&mut self) {
        self.pid_board_lock().clear();
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                child.kill().ok();
                child.wait().ok();
            }
        }
        if let Some((m, d)) = self.chains.take() {
            remove_chain(&m);
            remove_chain(&d);
        }
        if let Some(root) = self.root.take()
            && self.keep
        {
            let path = root.keep();
            eprintln!(
                "kept the local cluster's data and logs in {}",
                path.display()
            );
        }
    }

    /// The shared pid board (see [`super::PidSource::Local`]).
    pub(super) fn pid_board(&self) -> Arc<Mutex<BTreeMap<u64, u32>>> {
        self.pids.clone()
    }

    fn pid_board_lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, u32>> {
        self.pids.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn forget_pid(&self, id: u64) {
        self.pid_board_lock().remove(&id);
    }

    fn pid(&mut self, id: u64) -> Option<u32> {
        if !self.is_running(id) {
            return None;
        }
        self.node(id).child.as_ref().map(|c| c.id())
    }

    fn node(&self, id: u64) -> &Node {
        &self.nodes[(id - 1) as usize]
    }

    fn node_mut(&mut self, id: u64) -> &mut Node {
        &mut self.nodes[(id - 1) as usize]
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// `kill -<sig> <pid>` (no unsafe code: the `kill` program does it).
async fn signal(pid: u32, sig: &str) -> anyhow::Result<()> {
    command("kill", &[format!("-{sig}"), pid.to_string()])
        .await
        .map(|_| ())
}
