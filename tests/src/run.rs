//! Running things against a [`TestCluster`]: a scenario on a fresh cluster (logs
//! printed when it fails), a client connected to it, the `neo` CLI.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use anyhow::Context;
use neo_client::Client;

use crate::{TestCluster, binary};

/// Runs `scenario` on a fresh cluster of `nodes` nodes; prints the nodes' log tails if it
/// fails.
pub async fn with_cluster<F>(nodes: u64, scenario: F) -> anyhow::Result<()>
where
    F: AsyncFnOnce(&mut TestCluster) -> anyhow::Result<()>,
{
    let mut cluster = TestCluster::start(nodes)?;
    let result = scenario(&mut cluster).await;
    if result.is_err() {
        eprintln!("{}", cluster.logs(60));
    }
    result
}

/// A client whose seeds are every node of `cluster`.
pub async fn connect(cluster: &TestCluster) -> anyhow::Result<Client> {
    Ok(Client::connect(&cluster.client_addrs()).await?)
}

/// Runs `neo --server <every node> args...` with `stdin`, returning its output
/// (`NEO_SERVER` of the environment removed).
pub fn neo(cluster: &TestCluster, args: &[&str], stdin: &str) -> anyhow::Result<Output> {
    let mut child = Command::new(binary("neo")?)
        .arg("--server")
        .arg(cluster.servers())
        .args(args)
        .env_remove("NEO_SERVER")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(stdin.as_bytes())?;
    Ok(child.wait_with_output()?)
}

/// [`neo`], which must exit with status 0: otherwise an error with its status, stdout
/// and stderr.
pub fn neo_ok(cluster: &TestCluster, args: &[&str], stdin: &str) -> anyhow::Result<Output> {
    let out = neo(cluster, args, stdin)?;
    anyhow::ensure!(
        out.status.success(),
        "neo {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out)
}
