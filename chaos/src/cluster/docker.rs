//! [`DockerCluster`]: the docker compose project of the repository (`docker-compose.yml`,
//! services `neo1`..`neo3` = node ids 1..3, client ports published on the host).
//!
//! Each scenario starts from nothing (`down -v`, `up -d`) and ends with `down -v`.
//! Network faults run the host's `iptables` inside a container's network namespace
//! (`nsenter -t <pid> -n`), in a chain `NEOCHAOS` jumped to from `INPUT` and `OUTPUT`:
//! `-s <peer ip> -j DROP` and `-d <peer ip> -j DROP` (with `-m statistic` for loss).
//! Clients reach the nodes through the published ports, from the bridge gateway, so
//! they are never cut. A killed container gets a new namespace on start: its rules are
//! gone with the old one.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, bail};

use super::{Link, args, command};

/// The chain every rule goes to, in each container's namespace.
const CHAIN: &str = "NEOCHAOS";

/// How to reach the compose project.
#[derive(Debug, Clone)]
pub struct DockerOptions {
    /// The compose file.
    pub compose_file: PathBuf,
    /// `docker compose` or `docker-compose` (auto-detected when `None`).
    pub compose_command: Option<Vec<String>>,
    /// Service names, node id = index + 1.
    pub services: Vec<String>,
    /// Client addresses on the host, by node id.
    pub client_addrs: Vec<String>,
    /// HTTP admin addresses on the host, by node id.
    pub http_addrs: Vec<String>,
}

impl DockerOptions {
    /// The repository's compose layout: `neo1..neoN`, client ports 7171.., HTTP 7271...
    pub fn standard(compose_file: PathBuf, nodes: u64) -> DockerOptions {
        DockerOptions {
            compose_file,
            compose_command: None,
            services: (1..=nodes).map(|i| format!("neo{i}")).collect(),
            client_addrs: (1..=nodes)
                .map(|i| format!("127.0.0.1:{}", 7170 + i))
                .collect(),
            http_addrs: (1..=nodes)
                .map(|i| format!("127.0.0.1:{}", 7270 + i))
                .collect(),
        }
    }
}

/// A running compose project.
#[derive(Debug)]
pub struct DockerCluster {
    options: DockerOptions,
    compose: Vec<String>,
    /// Container id by node id.
    containers: BTreeMap<u64, String>,
    /// Bridge IPs by node id.
    ips: BTreeMap<u64, Vec<String>>,
    up: bool,
}

/// `docker compose` if that works, else `docker-compose`.
pub async fn detect_compose() -> anyhow::Result<Vec<String>> {
    if command("docker", &args(&["compose", "version"]))
        .await
        .is_ok()
    {
        return Ok(args(&["docker", "compose"]));
    }
    if command("docker-compose", &args(&["version"])).await.is_ok() {
        return Ok(args(&["docker-compose"]));
    }
    bail!("neither `docker compose` nor `docker-compose` works")
}

impl DockerCluster {
    /// `down -v` (a fresh start), `up -d`, find containers and IPs. The caller waits
    /// for readiness.
    pub async fn launch(options: &DockerOptions) -> anyhow::Result<DockerCluster> {
        if !options.compose_file.exists() {
            bail!(
                "compose file {} does not exist",
                options.compose_file.display()
            );
        }
        let compose = match &options.compose_command {
            Some(c) => c.clone(),
            None => detect_compose().await?,
        };
        let mut cluster = DockerCluster {
            options: options.clone(),
            compose,
            containers: BTreeMap::new(),
            ips: BTreeMap::new(),
            up: true,
        };
        let _ = cluster
            .compose(&["down", "-v", "--remove-orphans", "-t", "5"])
            .await;
        cluster.compose(&["up", "-d"]).await?;
        for (i, service) in options.services.iter().enumerate() {
            let id = cluster
                .compose(&["ps", "-q", service])
                .await?
                .trim()
                .to_string();
            if id.is_empty() {
                bail!("service {service} has no container");
            }
            cluster.containers.insert(i as u64 + 1, id);
        }
        for (&node, container) in &cluster.containers {
            let ips = command(
                "docker",
                &args(&[
                    "inspect",
                    "-f",
                    "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
                    container,
                ]),
            )
            .await?;
            let ips: Vec<String> = ips.split_whitespace().map(str::to_string).collect();
            if ips.is_empty() {
                bail!("container of node {node} has no IP address");
            }
            cluster.ips.insert(node, ips);
        }
        Ok(cluster)
    }

    async fn compose(&self, rest: &[&str]) -> anyhow::Result<String> {
        let mut a: Vec<String> = self.compose[1..].to_vec();
        a.push("-f".into());
        a.push(self.options.compose_file.display().to_string());
        a.extend(args(rest));
        command(&self.compose[0], &a).await
    }

    async fn docker(&self, verb: &[&str], id: u64) -> anyhow::Result<String> {
        let mut a = args(verb);
        a.push(self.container(id)?.to_string());
        command("docker", &a).await
    }

    fn container(&self, id: u64) -> anyhow::Result<&str> {
        self.containers
            .get(&id)
            .map(String::as_str)
            .with_context(|| format!("no container for node {id}"))
    }

    /// Container id by node id.
    pub(super) fn containers(&self) -> BTreeMap<u64, String> {
        self.containers.clone()
    }

    pub(super) fn ids(&self) -> Vec<u64> {
        (1..=self.options.services.len() as u64).collect()
    }

    pub(super) fn client_addrs(&self) -> Vec<String> {
        self.options.client_addrs.clone()
    }

    pub(super) fn http_addrs(&self) -> Vec<(u64, String)> {
        self.options
            .http_addrs
            .iter()
            .enumerate()
            .map(|(i, a)| (i as u64 + 1, a.clone()))
            .collect()
    }

    pub(super) async fn kill(&mut self, id: u64) -> anyhow::Result<()> {
        self.docker(&["kill", "-s", "KILL"], id).await.map(|_| ())
    }

    pub(super) async fn kill_all(&mut self) -> anyhow::Result<()> {
        let mut a = args(&["kill", "-s", "KILL"]);
        a.extend(self.containers.values().cloned());
        command("docker", &a).await.map(|_| ())
    }

    pub(super) async fn stop(&mut self, id: u64) -> anyhow::Result<()> {
        self.docker(&["stop", "-t", "15"], id).await.map(|_| ())
    }

    pub(super) async fn start(&mut self, id: u64) -> anyhow::Result<()> {
        self.docker(&["start"], id).await.map(|_| ())
    }

    pub(super) async fn pause(&mut self, id: u64) -> anyhow::Result<()> {
        self.docker(&["pause"], id).await.map(|_| ())
    }

    pub(super) async fn resume(&mut self, id: u64) -> anyhow::Result<()> {
        self.docker(&["unpause"], id).await.map(|_| ())
    }

    /// The host pid of a running container's init process.
    async fn pid(&self, id: u64) -> anyhow::Result<String> {
        let pid = self
            .docker(&["inspect", "-f", "{{.State.Pid}}"], id)
            .await?
            .trim()
            .to_string();
        if pid.is_empty() || pid == "0" {
            bail!("node {id}'s container is not running");
        }
        Ok(pid)
    }

    /// `iptables -w <rule>` in node `id`'s network namespace.
    async fn iptables_in(&self, pid: &str, rule: &[String]) -> anyhow::Result<String> {
        let mut a = args(&["-t", pid, "-n", "iptables", "-w"]);
        a.extend(rule.iter().cloned());
        command("nsenter", &a).await
    }

    async fn ensure_chain(&self, pid: &str) -> anyhow::Result<()> {
        if self.iptables_in(pid, &args(&["-S", CHAIN])).await.is_err() {
            self.iptables_in(pid, &args(&["-N", CHAIN])).await?;
        }
        for hook in ["INPUT", "OUTPUT"] {
            if self
                .iptables_in(pid, &args(&["-C", hook, "-j", CHAIN]))
                .await
                .is_err()
            {
                self.iptables_in(pid, &args(&["-I", hook, "1", "-j", CHAIN]))
                    .await?;
            }
        }
        Ok(())
    }

    pub(super) async fn degrade(&mut self, links: &[Link]) -> anyhow::Result<()> {
        for link in links {
            let pid = self.pid(link.a).await?;
            self.ensure_chain(&pid).await?;
            let peer_ips = self
                .ips
                .get(&link.b)
                .with_context(|| format!("no IP of node {}", link.b))?
                .clone();
            for ip in &peer_ips {
                for dir in ["-s", "-d"] {
                    let mut rule = args(&["-A", CHAIN, dir, ip]);
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
                    self.iptables_in(&pid, &rule).await?;
                }
            }
        }
        Ok(())
    }

    pub(super) async fn heal_network(&mut self) -> anyhow::Result<()> {
        for id in self.ids() {
            if let Ok(pid) = self.pid(id).await {
                let _ = self.iptables_in(&pid, &args(&["-F", CHAIN])).await;
            }
        }
        Ok(())
    }

    pub(super) async fn log_tail(&self, id: u64, lines: usize) -> String {
        let tail = if lines == usize::MAX {
            "all".to_string()
        } else {
            lines.to_string()
        };
        let Ok(container) = self.container(id) else {
            return String::new();
        };
        // docker logs writes the container's stderr to its own stderr.
        let out = tokio::task::spawn_blocking({
            let container = container.to_string();
            move || {
                std::process::Command::new("docker")
                    .args(["logs", "--tail", &tail, &container])
                    .output()
            }
        })
        .await;
        match out {
            Ok(Ok(out)) => format!(
                "--- node {id} log ---\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            _ => format!("--- node {id} log unavailable ---"),
        }
    }

    pub(super) async fn teardown(&mut self) -> anyhow::Result<()> {
        if self.up {
            // Unpause first: `down` cannot stop a paused container.
            for id in self.ids() {
                let _ = self.resume(id).await;
            }
            self.compose(&["down", "-v", "--remove-orphans", "-t", "5"])
                .await?;
            self.up = false;
        }
        Ok(())
    }
}

impl Drop for DockerCluster {
    /// A run dropped before its teardown (SIGINT or SIGTERM, see `main`, or an error
    /// path) takes its containers down here, synchronously: unpause, then `down`.
    fn drop(&mut self) {
        if !self.up {
            return;
        }
        self.up = false;
        for id in self.containers.values() {
            let _ = std::process::Command::new("docker")
                .args(["unpause", id])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
        let mut down = std::process::Command::new(&self.compose[0]);
        down.args(&self.compose[1..])
            .arg("-f")
            .arg(&self.options.compose_file)
            .args(["down", "-v", "--remove-orphans", "-t", "5"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        match down.status() {
            Ok(s) if s.success() => eprintln!("neo-chaos: docker cluster taken down"),
            Ok(s) => eprintln!("neo-chaos: docker-compose down ended with {s}"),
            Err(e) => eprintln!("neo-chaos: docker-compose down did not run: {e}"),
        }
    }
}
