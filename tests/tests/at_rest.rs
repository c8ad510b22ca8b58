//! Broker-side encryption at rest on real `neo-node` processes (issue 19): three nodes,
//! each with its own key file (`--at-rest-key-file`); a topic created with
//! `neo topic create --encrypt-at-rest` keeps no plaintext in any node's data folder
//! while a plain topic beside it does (the positive control); consumers read the
//! plaintext back, also after SIGKILL and restart; a node restarted with another key
//! refuses to open the encrypted replicas (nothing cut, nothing served wrong) while the
//! other two keep committing, and catches up once its key is back (replica digests
//! equal); a node without a key refuses to create an encrypted topic.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use neo_client::{Client, Consumer, Offset, Producer, ProducerRecord};
use neo_tests::{TestCluster, connect, folder_contains, neo, with_cluster};

const WAIT_MAX: Duration = Duration::from_secs(60);
const VAULT: &str = "vault";
const OPEN: &str = "open";

fn vault_value(i: u64) -> String {
    format!("vault-canary-{i:05}: account 9876543210")
}

fn open_value(i: u64) -> String {
    format!("open-canary-{i:05}")
}

async fn produce(client: &Client, topic: &str, values: Vec<String>) -> anyhow::Result<()> {
    let producer = Producer::new(client.clone());
    let mut acks = Vec::new();
    for (i, v) in values.into_iter().enumerate() {
        let key = format!("k{i}");
        acks.push(
            producer
                .send(ProducerRecord::new(topic, v).key(key))
                .await?,
        );
    }
    producer.flush().await;
    for a in acks {
        a.await?;
    }
    Ok(())
}

/// Every value of both partitions of `topic`, sorted.
async fn read_all(client: &Client, topic: &str, count: usize) -> anyhow::Result<Vec<String>> {
    let mut consumer = Consumer::new(client.clone());
    consumer.assign(topic, &[0, 1], Offset::Beginning).await?;
    let started = Instant::now();
    let mut out = Vec::new();
    while out.len() < count {
        ensure!(
            started.elapsed() < WAIT_MAX,
            "{topic}: {} of {count} records",
            out.len()
        );
        for r in consumer.poll(Duration::from_millis(200)).await? {
            out.push(String::from_utf8(r.value.to_vec())?);
        }
    }
    ensure!(out.len() == count, "{topic}: {} records", out.len());
    out.sort();
    Ok(out)
}

fn write_key(dir: &Path, id: u64, byte: u8) -> anyhow::Result<()> {
    let hex: String = std::iter::repeat_n(format!("{byte:02x}"), 32).collect();
    std::fs::write(dir.join(format!("key-{id}.hex")), format!("{hex}\n"))?;
    Ok(())
}

/// The digest of `topic`'s partition `p` on node `id` (committed log, plaintext).
fn digest(cluster: &TestCluster, id: u64, topic: &str, p: u32) -> anyhow::Result<String> {
    neo_tests::cluster::replica_digest(cluster, id, topic, p)
}

async fn digests_converge(cluster: &TestCluster, topic: &str, p: u32) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let all: Vec<String> = (1..=3)
            .map(|id| digest(cluster, id, topic, p))
            .collect::<anyhow::Result<_>>()?;
        if all.iter().all(|d| *d == all[0]) {
            return Ok(());
        }
        ensure!(
            started.elapsed() < WAIT_MAX,
            "{topic}/{p}: replica digests differ: {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_encrypted_at_rest_hold_no_plaintext_and_survive_restarts() -> anyhow::Result<()> {
    let keys = tempfile::tempdir()?;
    for id in 1..=3 {
        write_key(keys.path(), id, 0x10 + id as u8)?;
    }
    let key_arg = format!("{}/key-{{id}}.hex", keys.path().display());
    let mut cluster = TestCluster::start_with_args(3, &["--at-rest-key-file".into(), key_arg])?;
    let result = scenario(&mut cluster, keys.path()).await;
    if result.is_err() {
        eprintln!("{}", cluster.logs(60));
    }
    result
}

async fn scenario(cluster: &mut TestCluster, keys: &Path) -> anyhow::Result<()> {
    let out = neo(
        cluster,
        &[
            "topic",
            "create",
            VAULT,
            "--partitions",
            "2",
            "--replication",
            "3",
            "--encrypt-at-rest",
        ],
        "",
    )?;
    ensure!(out.status.success(), "create: {out:?}");
    let out = neo(
        cluster,
        &[
            "topic",
            "create",
            OPEN,
            "--partitions",
            "2",
            "--replication",
            "3",
        ],
        "",
    )?;
    ensure!(out.status.success(), "create: {out:?}");
    let out = neo(cluster, &["topic", "describe", VAULT], "")?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        text.contains("config encryption.at-rest=true"),
        "describe: {text}"
    );

    let client = connect(cluster).await?;
    let n = 200u64;
    produce(&client, VAULT, (0..n).map(vault_value).collect()).await?;
    produce(&client, OPEN, (0..n).map(open_value).collect()).await?;
    let mut expected: Vec<String> = (0..n).map(vault_value).collect();
    expected.sort();
    ensure!(read_all(&client, VAULT, n as usize).await? == expected);

    for id in 1..=3 {
        let dir = &cluster.spec(id).data_dir;
        ensure!(
            !folder_contains(dir, b"vault-canary")?,
            "node {id}: plaintext of the encrypted topic on disk"
        );
        ensure!(
            folder_contains(dir, b"open-canary")?,
            "node {id}: the plain topic's records should be on disk (positive control)"
        );
    }

    // SIGKILL and restart every node: recovery decrypts and verifies every batch.
    cluster.restart_all()?;
    let client = connect(cluster).await?;
    ensure!(read_all(&client, VAULT, n as usize).await? == expected);

    // Node 3 comes back with another key: its encrypted replicas stay closed (their
    // files untouched), the other two keep committing.
    write_key(keys, 3, 0xEE)?;
    cluster.restart(3)?;
    let refused = Instant::now();
    while !cluster
        .log_tail(3, 400)
        .contains("not the one this log was encrypted with")
    {
        ensure!(
            refused.elapsed() < WAIT_MAX,
            "node 3 did not refuse its key: {}",
            cluster.log_tail(3, 40)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    produce(&client, VAULT, (n..n + 50).map(vault_value).collect()).await?;
    // The right key again: node 3 opens its replicas and catches up.
    write_key(keys, 3, 0x13)?;
    cluster.restart(3)?;
    for p in 0..2 {
        digests_converge(cluster, VAULT, p).await?;
    }
    let client = connect(cluster).await?;
    let mut expected: Vec<String> = (0..n + 50).map(vault_value).collect();
    expected.sort();
    ensure!(read_all(&client, VAULT, expected.len()).await? == expected);
    ensure!(!folder_contains(
        &cluster.spec(3).data_dir,
        b"vault-canary"
    )?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_key_refuses_encrypted_topics() -> anyhow::Result<()> {
    with_cluster(1, async |cluster: &mut TestCluster| {
        let out = neo(
            cluster,
            &["topic", "create", VAULT, "--encrypt-at-rest"],
            "",
        )?;
        ensure!(
            out.status.code() == Some(1),
            "created without a key: {out:?}"
        );
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(err.contains("at-rest key"), "stderr: {err}");
        let out = neo(cluster, &["topic", "list"], "")?;
        ensure!(
            !String::from_utf8_lossy(&out.stdout).contains(VAULT),
            "the refused topic exists"
        );
        Ok(())
    })
    .await
    .context("no key")
}
