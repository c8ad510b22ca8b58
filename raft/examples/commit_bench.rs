//! Commit throughput of one partition group: 3 nodes over gRPC on loopback, fsync on
//! (every node's log syncs before it acknowledges), 16 KiB entries, 1 and 64 concurrent
//! writers; plus a raw `write` + `fdatasync` loop on the same disk in the same run.
//!
//! `cargo run --release -p neo-raft --example commit_bench -- --json` prints one JSON
//! line per measurement:
//! `{"system":"neo-raft","writers":N,"entries_per_s":..,"p50_us":..,"p99_us":..}` and
//! `{"system":"raw-fdatasync","fsyncs_per_s":..}`.
//! Options: `--seconds S` per measurement (default 5), `--dir PATH` for the data (default:
//! a temporary directory under `target/`, on the same disk as the build).

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use neo_cluster::{GrpcTransport, NetFilter, ServerHandle};
use neo_raft::{GroupConfig, GroupKind, NodeStore, RaftGroup, RaftTiming, Registry, Role};

const ENTRY_BYTES: usize = 16 * 1024;
const GROUP: u64 = 1;

struct Args {
    json: bool,
    seconds: u64,
    dir: Option<std::path::PathBuf>,
}

fn args() -> Args {
    let mut a = Args {
        json: false,
        seconds: 5,
        dir: None,
    };
    let usage = |why: String| -> ! {
        eprintln!("commit_bench: {why}\nusage: commit_bench [--json] [--seconds N] [--dir PATH]");
        std::process::exit(2)
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            "--json" => a.json = true,
            "--seconds" => match it.next().and_then(|s| s.parse().ok()) {
                Some(n) if n > 0 => a.seconds = n,
                _ => usage("--seconds needs a positive number".into()),
            },
            "--dir" => match it.next() {
                Some(d) => a.dir = Some(d.into()),
                None => usage("--dir needs a path".into()),
            },
            other => usage(format!("unknown argument {other}")),
        }
    }
    a
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Writes 16 KiB and fdatasyncs it, in a loop, for `secs`.
fn raw_fdatasync(dir: &std::path::Path, secs: u64) -> f64 {
    let path = dir.join("raw-fdatasync.bin");
    let mut f = std::fs::File::create(&path).expect("create");
    let buf = vec![0x5au8; ENTRY_BYTES];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        f.write_all(&buf).expect("write");
        f.sync_data().expect("fdatasync");
        n += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    drop(f);
    let _ = std::fs::remove_file(path);
    rate
}

struct Node {
    group: Arc<RaftGroup>,
    _server: ServerHandle,
}

async fn start_cluster(dir: &std::path::Path) -> Vec<Node> {
    let mut addrs = Vec::new();
    for _ in 0..3 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        addrs.push(l.local_addr().expect("addr"));
    }
    let mut nodes = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let id = i as u64 + 1;
        let transport = GrpcTransport::new(NetFilter::new());
        for (j, peer) in addrs.iter().enumerate() {
            if i != j {
                transport
                    .set_peer(j as u64 + 1, &peer.to_string())
                    .expect("peer");
            }
        }
        let store = NodeStore::open(dir.join(format!("node-{id}"))).expect("store");
        let cfg = GroupConfig {
            group: GROUP,
            node_id: id,
            kind: GroupKind::Partition,
            timing: RaftTiming::PARTITION,
            snapshot_every_entries: 10_000,
            encrypt_at_rest: false,
        };
        let group = RaftGroup::open(
            cfg,
            &store,
            Arc::new(transport),
            Box::new(neo_raft::LogOnly),
        )
        .await
        .expect("group");
        let registry = Arc::new(Registry::new());
        registry.insert(group.clone());
        let plane = neo_cluster::ControlPlane {
            node_id: id,
            registry,
            health: neo_cluster::HealthMonitor::new(),
            meta: neo_broker::meta::MetaMachine::new().1,
        };
        let server = neo_cluster::serve(*addr, plane).await.expect("serve");
        nodes.push(Node {
            group,
            _server: server,
        });
    }
    let members: BTreeMap<u64, String> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| (i as u64 + 1, a.to_string()))
        .collect();
    nodes[0].group.bootstrap(&members).await.expect("bootstrap");
    nodes
}

async fn current_leader(groups: &[Arc<RaftGroup>]) -> Arc<RaftGroup> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(g) = groups.iter().find(|g| g.metrics().role == Role::Leader) {
            return g.clone();
        }
        assert!(Instant::now() < deadline, "no leader elected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `writers` concurrent proposers for `secs`; returns (entries/s, sorted latencies µs).
/// A writer whose leader lost leadership (a re-election on a loaded machine) moves to
/// the new leader; the failed attempt is not counted.
async fn measure(groups: Vec<Arc<RaftGroup>>, writers: usize, secs: u64) -> (f64, Vec<u64>) {
    let payload = neo_storage::testing::batch_of_size(ENTRY_BYTES, 16, 0, 7);
    // Validated once, as a broker does on receipt; every proposal shares it.
    let payload = valid(Bytes::from(payload));
    let start = Instant::now();
    let stop = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let groups = groups.clone();
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut g = current_leader(&groups).await;
            while Instant::now() < stop {
                let t = Instant::now();
                match g.propose_records(payload.clone()).await {
                    Ok(_) => lat.push(t.elapsed().as_micros() as u64),
                    Err(neo_raft::Error::NotLeader { .. }) => g = current_leader(&groups).await,
                    Err(e) => panic!("commit failed: {e}"),
                }
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("writer"));
    }
    let rate = all.len() as f64 / start.elapsed().as_secs_f64();
    all.sort_unstable();
    (rate, all)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let a = args();
    let tmp = match &a.dir {
        Some(d) => {
            std::fs::create_dir_all(d).expect("data dir");
            tempfile::tempdir_in(d).expect("temp dir")
        }
        None => {
            let base = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
            std::fs::create_dir_all(&base).expect("target dir");
            tempfile::tempdir_in(base).expect("temp dir")
        }
    };
    // The disk is shared (other processes, the three replicas): measure the raw loop
    // before and after the Raft runs and report the mean, so both see similar load.
    let raw_before = raw_fdatasync(tmp.path(), a.seconds);
    let nodes = start_cluster(tmp.path()).await;
    let mut lines = Vec::new();
    for writers in [1usize, 64] {
        let groups: Vec<_> = nodes.iter().map(|n| n.group.clone()).collect();
        let (rate, lat) = measure(groups, writers, a.seconds).await;
        lines.push(format!(
            "{{\"system\":\"neo-raft\",\"writers\":{writers},\"entries_per_s\":{rate:.1},\"p50_us\":{},\"p99_us\":{}}}",
            percentile(&lat, 0.50),
            percentile(&lat, 0.99)
        ));
        if !a.json {
            eprintln!(
                "neo-raft: {writers} writers: {rate:.0} entries/s ({} entries)",
                lat.len()
            );
        }
    }
    for n in &nodes {
        n.group.shutdown().await.expect("shutdown");
    }
    let raw_after = raw_fdatasync(tmp.path(), a.seconds);
    let raw = (raw_before + raw_after) / 2.0;
    if !a.json {
        eprintln!("raw fdatasync: {raw_before:.0}/s before, {raw_after:.0}/s after");
    }
    lines.push(format!(
        "{{\"system\":\"raw-fdatasync\",\"fsyncs_per_s\":{raw:.1}}}"
    ));
    for l in lines {
        println!("{l}");
    }
}

/// The proof raft takes: these batches (`neo_storage::testing`) frame their records
/// loosely, so they get the replica's receipt check (header, CRC, length), not a
/// broker's full validation.
fn valid(batch: bytes::Bytes) -> qiss::batch::ValidatedBatch {
    qiss::batch::ValidatedBatch::check(batch).expect("valid batch")
}
