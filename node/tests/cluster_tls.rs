//! Cluster mTLS end to end on three real `neo-node` processes: with
//! `--cluster-tls-cert/-key/-ca` every node-to-node connection (Raft, heartbeats,
//! registration) is mutual TLS, and the cluster elects, registers every node and
//! commits on a replication-3 topic exactly as in plaintext. A node whose certificate
//! another CA signed cannot get anything replicated to it: with it as one of the three
//! voters, a replication-3 write still commits on the other two, and the stranger's
//! copy of the partition stays empty. Bad TLS settings are refused at start (exit 2).
//!
//! No timing is asserted: every wait is for an outcome, bounded by a deadline.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

mod common;
use common::{dump_logs, http_json, start_cluster, try_call_leader};

use neo_protocol::api::*;

const DEADLINE: Duration = Duration::from_secs(60);

/// The test CA (`neo_tests::TestPki`), issuing node certificates for loopback (IP SAN
/// 127.0.0.1).
struct Pki(neo_tests::TestPki);

impl Pki {
    fn new(name: &str) -> Pki {
        Pki(neo_tests::TestPki::new(name))
    }

    /// Writes `node-{id}.crt`, `node-{id}.key` and `ca.crt` into `dir`; returns the
    /// three TLS flags pointing at them.
    fn node_flags(&self, dir: &Path, id: u64) -> Vec<String> {
        std::fs::create_dir_all(dir).expect("pki dir");
        // Named by the URI SAN `neo-node:<id>` (the cluster port's rule).
        let (cert, key) = self
            .0
            .node_leaf(id, &format!("neo node {id}"), &["127.0.0.1"]);
        let path = |name: String| -> PathBuf { dir.join(name) };
        let (crt, k, ca) = (
            path(format!("node-{id}.crt")),
            path(format!("node-{id}.key")),
            path("ca.crt".into()),
        );
        std::fs::write(&crt, cert).expect("write cert");
        std::fs::write(&k, key).expect("write key");
        std::fs::write(&ca, self.0.ca_pem()).expect("write ca");
        vec![
            "--cluster-tls-cert".into(),
            crt.display().to_string(),
            "--cluster-tls-key".into(),
            k.display().to_string(),
            "--cluster-tls-ca".into(),
            ca.display().to_string(),
        ]
    }
}

fn batch(tag: &str) -> Vec<u8> {
    let mut b = qiss::batch::BatchBuilder::new();
    b.push(1, None, &[], tag.as_bytes()).expect("push");
    b.build().expect("build").to_vec()
}

fn produce(tag: &str) -> ProduceRequest {
    ProduceRequest {
        topic: "secure".into(),
        partition: 0,
        acks: Acks::All,
        timeout_ms: 10_000,
        producer: None,
        records: batch(tag).into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_over_mtls_commit_and_a_stranger_gets_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let pki = Pki::new("neo test cluster ca");
    let stranger_ca = Pki::new("some other ca");
    let pki_dir = tmp.path().join("pki");

    // Three nodes of one CA: a replication-3 topic commits over mTLS.
    let (procs, _, addrs) = start_cluster(tmp.path(), 3, |id| pki.node_flags(&pki_dir, id));
    let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(async {
        let create = CreateTopicRequest {
            name: "secure".into(),
            partitions: 1,
            replication_factor: 3,
            configs: vec![],
        };
        let _: CreateTopicResponse = try_call_leader(&addrs, 0, "create_topic", &create, DEADLINE)
            .await
            .expect("create over mTLS");
        let r: ProduceResponse = try_call_leader(&addrs, 0, "produce", &produce("hello"), DEADLINE)
            .await
            .expect("produce over mTLS");
        assert_eq!(r.record_count, 1);
        // Every replica holds the committed record: replication ran over mTLS.
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let mut hw = Vec::new();
            for p in &procs {
                let v = http_json(&p.http, "/v1/partitions/secure/0/digest").await;
                hw.push(v.map(|v| v["high_watermark"].clone()));
            }
            if hw
                .iter()
                .all(|h| h.as_ref() == hw[0].as_ref() && h.is_some())
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "replicas never agreed: {hw:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }))
    .await;
    if outcome.is_err() {
        dump_logs(tmp.path(), 1..=3);
        panic!("mTLS cluster scenario failed (node logs above)");
    }
    drop(procs);

    // Node 3 with a certificate of another CA: nodes 1 and 2 refuse it and it refuses
    // them, so it never registers and nothing reaches it; 1 and 2 still form the
    // metadata quorum and commit a replication-2 topic.
    let tmp2 = tempfile::tempdir().expect("tmp");
    let (procs, _, addrs) = start_cluster(tmp2.path(), 3, |id| match id {
        3 => stranger_ca.node_flags(&tmp2.path().join("pki"), 3),
        _ => pki.node_flags(&pki_dir, id),
    });
    let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(async {
        let create = CreateTopicRequest {
            name: "secure".into(),
            partitions: 1,
            replication_factor: 2,
            configs: vec![],
        };
        let _: CreateTopicResponse =
            try_call_leader(&addrs[..2], 0, "create_topic", &create, DEADLINE)
                .await
                .expect("create on the two nodes of one CA");
        let _: ProduceResponse =
            try_call_leader(&addrs[..2], 0, "produce", &produce("two"), DEADLINE)
                .await
                .expect("produce on the two nodes of one CA");
        let md: MetadataResponse = try_call_leader(
            &addrs[..2],
            0,
            "metadata",
            &MetadataRequest { topics: vec![] },
            DEADLINE,
        )
        .await
        .expect("metadata");
        let ids: Vec<u64> = md.brokers.iter().map(|b| b.node_id).collect();
        assert!(
            !ids.contains(&3),
            "the stranger registered through mTLS: {ids:?}"
        );
        let replicas = &md.topics[0].partitions[0].replicas;
        assert!(
            !replicas.contains(&3),
            "placed on the stranger: {replicas:?}"
        );
    }))
    .await;
    if outcome.is_err() {
        dump_logs(tmp2.path(), 1..=3);
        panic!("stranger scenario failed (node logs above)");
    }
    drop(procs);
}

#[test]
fn bad_cluster_tls_settings_exit_2() {
    let tmp = tempfile::tempdir().expect("tmp");
    let pki = Pki::new("ca");
    let flags = pki.node_flags(tmp.path(), 1);
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_neo-node"))
            .args(["--data-dir", &tmp.path().join("data").display().to_string()])
            .args(args)
            .env_remove("NEO_CONFIG")
            .output()
            .expect("run neo-node")
    };
    // Only two of the three files.
    let out = run(&[&flags[0], &flags[1], &flags[2], &flags[3]]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--cluster-tls-ca"), "{err}");
    // A missing file.
    let out = run(&[
        &flags[0],
        &flags[1],
        &flags[2],
        &flags[3],
        &flags[4],
        "/no/such/ca.pem",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/no/such/ca.pem"), "{err}");
    // A key that does not belong to the certificate (node 2's key with node 1's cert).
    let other = pki.node_flags(&tmp.path().join("other"), 2);
    let out = run(&[
        &flags[0], &flags[1], &flags[2], &other[3], &flags[4], &flags[5],
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cluster TLS"), "{err}");
    // Node 2's certificate for node 1 (the default `--id`): it names another node.
    let out = run(&[
        &other[0], &other[1], &other[2], &other[3], &other[4], &other[5],
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("names node 2"), "{err}");
}
