//! The cluster under test, behind one interface whatever runs it: local `neo-node`
//! processes ([`local`]) or a docker compose project ([`docker`]).
//!
//! | operation | local | docker |
//! |---|---|---|
//! | kill | SIGKILL the child | `docker kill -s KILL` |
//! | stop (graceful) | SIGTERM, wait ≤ 15 s, then SIGKILL | `docker stop -t 15` |
//! | start | spawn on the same data dir and ports | `docker start` |
//! | pause / resume | SIGSTOP / SIGCONT | `docker pause` / `docker unpause` |
//! | cut / loss between two nodes | iptables in the host's OUTPUT chain: connections are marked by the owner uid of the node that opened them (each node runs as its own uid), and both directions of a marked connection to the peer's cluster port are dropped | iptables in the container's network namespace (`nsenter -t PID -n`): packets from / to the peer's bridge IP are dropped |
//! | heal network | flush the drop chain | flush the chain in every container |
//! | pid of a node ([`PidSource`]) | the child's pid | `docker inspect -f '{{.State.Pid}}'` (the image runs `neo-node` as the container's init) |

pub mod docker;
pub mod local;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};

pub use docker::{DockerCluster, DockerOptions};
pub use local::{LocalCluster, LocalOptions};

/// Traffic between two nodes, dropped with a probability (1.0 = cut), both ways.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Link {
    /// One node.
    pub a: u64,
    /// The other node.
    pub b: u64,
    /// Probability that a packet is dropped, in (0, 1].
    pub drop_probability: f64,
}

/// Bound on one pid look-up (`docker inspect`).
pub const PID_LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the host pid of each node's process comes from. A clone works while the
/// fault loop holds the [`Cluster`] (`&mut`), so a sampler can run beside it.
#[derive(Debug, Clone)]
pub enum PidSource {
    /// Local: the pids of the children the [`LocalCluster`] started and has not
    /// killed, stopped or reaped since.
    Local(Arc<Mutex<BTreeMap<u64, u32>>>),
    /// Docker: each node's container id, asked with `docker inspect` (a stopped
    /// container answers 0).
    Docker(BTreeMap<u64, String>),
}

impl PidSource {
    /// The pid of node `id`'s process on this host; `None` when it is not running.
    pub async fn pid(&self, id: u64) -> anyhow::Result<Option<u32>> {
        match self {
            PidSource::Local(pids) => Ok(pids
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&id)
                .copied()),
            PidSource::Docker(containers) => {
                let container = containers
                    .get(&id)
                    .with_context(|| format!("no container for node {id}"))?;
                let argv = args(&["inspect", "-f", "{{.State.Pid}}", container]);
                let inspect = command("docker", &argv);
                let out = tokio::time::timeout(PID_LOOKUP_TIMEOUT, inspect)
                    .await
                    .with_context(|| {
                        format!("docker inspect of node {id}: no answer in {PID_LOOKUP_TIMEOUT:?}")
                    })??;
                let pid: u32 = out
                    .trim()
                    .parse()
                    .with_context(|| format!("docker inspect of node {id}: pid {out:?}"))?;
                Ok((pid != 0).then_some(pid))
            }
        }
    }
}

/// A running cluster the fault runner can hurt.
#[derive(Debug)]
pub enum Cluster {
    /// Local processes.
    Local(LocalCluster),
    /// A docker compose project.
    Docker(DockerCluster),
}

impl Cluster {
    /// Node ids, ascending.
    pub fn ids(&self) -> Vec<u64> {
        match self {
            Cluster::Local(c) => c.ids(),
            Cluster::Docker(c) => c.ids(),
        }
    }

    /// Client (Neo RPC) addresses the workload connects to, by id.
    pub fn client_addrs(&self) -> Vec<String> {
        match self {
            Cluster::Local(c) => c.client_addrs(),
            Cluster::Docker(c) => c.client_addrs(),
        }
    }

    /// (id, HTTP admin address) of every node.
    pub fn http_addrs(&self) -> Vec<(u64, String)> {
        match self {
            Cluster::Local(c) => c.http_addrs(),
            Cluster::Docker(c) => c.http_addrs(),
        }
    }

    /// Where the nodes' pids come from (see [`PidSource`]).
    pub fn pid_source(&self) -> PidSource {
        match self {
            Cluster::Local(c) => PidSource::Local(c.pid_board()),
            Cluster::Docker(c) => PidSource::Docker(c.containers()),
        }
    }

    /// `Err(reason)` when this cluster cannot cut or degrade links between nodes.
    pub fn network_support(&self) -> Result<(), String> {
        match self {
            Cluster::Local(c) => c.network_support(),
            Cluster::Docker(_) => Ok(()),
        }
    }

    /// SIGKILL a node (no shutdown path runs).
    pub async fn kill(&mut self, id: u64) -> anyhow::Result<()> {
        match self {
            Cluster::Local(c) => c.kill(id),
            Cluster::Docker(c) => c.kill(id).await,
        }
    }

    /// SIGKILL every node at once.
    pub async fn kill_all(&mut self) -> anyhow::Result<()> {
        match self {
            Cluster::Local(c) => c.kill_all(),
            Cluster::Docker(c) => c.kill_all().await,
        }
    }

    /// Stop a node gracefully (SIGTERM).
    pub async fn stop(&mut self, id: u64) -> anyhow::Result<()> {
        match self {
            Cluster::Local(c) => c.stop(id).await,
            Cluster::Docker(c) => c.stop(id).await,
        }
    }

    /// Start a stopped or killed node again on its data.
    pub async fn start(&mut self, id: u64) -> anyhow::Result<()> {
        match self {
            Cluster::Local(c) => c.start(id),
            Cluster::Docker(c) => c.start(id).await,
        }
    }

    /// Freeze a node (SIGSTOP / docker pause).
    pub async fn pause(&mut self, id: u64) -> anyhow::Result<()> {
        match self {
            Cluster::Local(c) => c.pause(id).await,
            Cluster::Docker(c) => c.pause(id).await,
        }
    }

    /// Thaw a paused node.
    pub async fn resume(&mut self, id: u64) -> anyhow::Result<()> {
        match self {
            Cluster::Local(c) => c.resume(id).await,
            Cluster::Docker(c) => c.resume(id).await,
        }
    }

    /// Add drop rules for `links` (on top of those already in force).
    pub async fn degrade(&mut self, links: &[Link]) -> anyhow::Result<()> {
        match self {
            Cluster::Local(c) => c.degrade(links).await,
            Cluster::Docker(c) => c.degrade(links).await,
        }
    }

    /// Remove every drop rule.
    pub async fn heal_network(&mut self) -> anyhow::Result<()> {
        match self {
            Cluster::Local(c) => c.heal_network().await,
            Cluster::Docker(c) => c.heal_network().await,
        }
    }

    /// Wait until each of `ids` answers `/ready` with 200.
    pub async fn wait_ready(&mut self, ids: &[u64], timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        for &id in ids {
            let http = self
                .http_addrs()
                .into_iter()
                .find(|(i, _)| *i == id)
                .map(|(_, a)| a)
                .with_context(|| format!("no node {id}"))?;
            loop {
                if let Cluster::Local(c) = self
                    && !c.is_running(id)
                {
                    bail!("node {id} exited while starting:\n{}", c.log_tail(id, 40));
                }
                if crate::admin_http::ready(&http).await {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    bail!(
                        "node {id} not ready after {timeout:?}:\n{}",
                        self.log_tail(id, 40).await
                    );
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(())
    }

    /// The last `lines` lines of a node's log.
    pub async fn log_tail(&self, id: u64, lines: usize) -> String {
        match self {
            Cluster::Local(c) => c.log_tail(id, lines),
            Cluster::Docker(c) => c.log_tail(id, lines).await,
        }
    }

    /// Copy every node's whole log into `dir` (`node-N.log`).
    pub async fn save_logs(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        for id in self.ids() {
            let text = match self {
                Cluster::Local(c) => c.log(id),
                Cluster::Docker(c) => c.log_tail(id, usize::MAX).await,
            };
            std::fs::write(dir.join(format!("node-{id}.log")), text)?;
        }
        Ok(())
    }

    /// Stop everything and remove what the cluster created (processes, containers,
    /// volumes, iptables rules, data dirs unless kept).
    pub async fn teardown(&mut self) -> anyhow::Result<()> {
        match self {
            Cluster::Local(c) => c.teardown().await,
            Cluster::Docker(c) => c.teardown().await,
        }
    }
}

/// Run a command to completion (off the async threads); its stdout, or an error with
/// its stderr.
pub(crate) async fn command(program: &str, args: &[String]) -> anyhow::Result<String> {
    let program = program.to_string();
    let args = args.to_vec();
    tokio::task::spawn_blocking(move || command_blocking(&program, &args))
        .await
        .context("command task")?
}

/// [`command`] on the calling thread.
pub(crate) fn command_blocking(program: &str, args: &[String]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {program}"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `&[&str]` → `Vec<String>`.
pub(crate) fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}
