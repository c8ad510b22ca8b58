//! The receiver's side of snapshot transfer on the wire (one node serving gRPC on
//! loopback, a raw client sending chunks): resumable transfers, checks before buffering.
//!
//! No timing is asserted: every wait is for an outcome, bounded by a deadline that only
//! turns a hang into a failure.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use neo_broker::meta::MetaMachine;
use neo_cluster::{ControlPlane, GrpcTransport, HealthMonitor, NetFilter};
use neo_raft::{GroupConfig, GroupKind, NodeStore, RaftGroup, RaftTiming, Registry};

fn timing() -> RaftTiming {
    RaftTiming {
        heartbeat_ms: 100,
        election_min_ms: 800,
        election_max_ms: 1_600,
    }
}

/// A registry hosting one (uninitialised) partition group `group` of node 1, and the
/// store it lives in.
async fn registry_hosting(group: u64, dir: &std::path::Path) -> (Arc<Registry>, NodeStore) {
    let store = NodeStore::open(dir).expect("store");
    let g = RaftGroup::open(
        GroupConfig {
            group,
            node_id: 1,
            kind: GroupKind::Partition,
            timing: timing(),
            snapshot_every_entries: 0,
            encrypt_at_rest: false,
        },
        &store,
        Arc::new(GrpcTransport::new(NetFilter::new())),
        Box::new(neo_raft::LogOnly),
    )
    .await
    .expect("open group");
    let registry = Arc::new(Registry::new());
    registry.insert(g);
    (registry, store)
}

/// The receiver's side of resumable snapshot transfer, on the wire: a stream that ends
/// early keeps its prefix (the probe reports it), only the same snapshot resumes it, a
/// resume from the wrong offset is refused (the sender then restarts from 0), and the
/// whole snapshot's CRC32 is checked before it is handed to the group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_receiver_keeps_resumes_and_checks_transfers() {
    use neo_cluster::pb::raft::raft_client::RaftClient;
    use neo_cluster::pb::raft::{SnapshotChunk, SnapshotProbe};
    const GROUP: u64 = 77;
    const CHUNK: usize = 100;
    let tmp = tempfile::tempdir().expect("tmp");
    // Group 77 is hosted (else the first chunk is refused): a transfer that passes
    // every check reaches the group, which refuses this test's head (not a real one).
    let (registry, _store) = registry_hosting(GROUP, tmp.path()).await;
    let plane = ControlPlane {
        node_id: 1,
        registry,
        health: HealthMonitor::new(),
        meta: MetaMachine::new().1,
    };
    let server = neo_cluster::serve("127.0.0.1:0".parse().expect("addr"), plane)
        .await
        .expect("serve");
    let mut client = RaftClient::connect(format!("http://{}", server.local_addr()))
        .await
        .expect("connect");
    let data: Vec<u8> = (0..1_000u32).map(|i| (i % 251) as u8).collect();
    let crc = crc32fast::hash(&data);
    let head = Bytes::from_static(b"vote+meta of snapshot 1");
    let chunks = |from: usize, to: usize, head: &Bytes, crc: u32| {
        (from..to)
            .step_by(CHUNK)
            .enumerate()
            .map(|(i, start)| SnapshotChunk {
                group_id: GROUP,
                head: if i == 0 { head.clone() } else { Bytes::new() },
                offset: start as u64,
                total_len: data.len() as u64,
                data: Bytes::copy_from_slice(&data[start..(start + CHUNK).min(data.len())]),
                crc32: Some(crc),
            })
            .collect::<Vec<_>>()
    };
    let probe = |head: &Bytes| SnapshotProbe {
        group_id: GROUP,
        head: head.clone(),
        total_len: data.len() as u64,
        crc32: crc,
    };

    // Three chunks, then the stream ends: refused, and the 300 bytes are kept.
    let s = client
        .install_snapshot(tokio_stream::iter(chunks(0, 300, &head, crc)))
        .await
        .expect_err("a short stream is refused");
    assert_eq!(s.code(), tonic::Code::Aborted, "{s:?}");
    assert_eq!(held(&client, probe(&head)).await, 300);
    // Another snapshot (another head) resumes nothing.
    let other = Bytes::from_static(b"vote+meta of snapshot 2");
    assert_eq!(held(&client, probe(&other)).await, 0);

    // Resuming at the wrong offset is refused, and drops the kept part.
    let s = client
        .install_snapshot(tokio_stream::iter(chunks(200, 1_000, &head, crc)))
        .await
        .expect_err("wrong offset");
    assert_eq!(s.code(), tonic::Code::FailedPrecondition, "{s:?}");
    assert_eq!(held(&client, probe(&head)).await, 0);

    // Cut again after 5 chunks, resume at 500: all checks pass, the group is asked to
    // install (and cannot decode the test's head).
    let _ = client
        .install_snapshot(tokio_stream::iter(chunks(0, 500, &head, crc)))
        .await
        .expect_err("short");
    assert_eq!(held(&client, probe(&head)).await, 500);
    let s = client
        .install_snapshot(tokio_stream::iter(chunks(500, 1_000, &head, crc)))
        .await
        .expect_err("not a real snapshot head");
    assert_eq!(s.code(), tonic::Code::InvalidArgument, "{s:?}");
    assert!(s.message().contains("snapshot head"), "{s:?}");
    assert_eq!(
        held(&client, probe(&head)).await,
        0,
        "nothing kept after install"
    );

    // A whole transfer whose bytes do not match the announced CRC is refused.
    let s = client
        .install_snapshot(tokio_stream::iter(chunks(0, 1_000, &head, crc ^ 1)))
        .await
        .expect_err("bad crc");
    assert_eq!(s.code(), tonic::Code::DataLoss, "{s:?}");
    server.shutdown().await;
}

/// A snapshot stream for a group the receiver does not host is refused at its first
/// chunk (NOT_FOUND): the receiver reads no further and keeps nothing, even while the
/// sender has more to send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_stream_for_an_unknown_group_is_refused_at_the_first_chunk() {
    use neo_cluster::pb::raft::raft_client::RaftClient;
    use neo_cluster::pb::raft::{SnapshotChunk, SnapshotProbe};
    use tokio_stream::StreamExt;
    const HOSTED: u64 = 77;
    const UNKNOWN: u64 = 78;
    let tmp = tempfile::tempdir().expect("tmp");
    let (registry, _store) = registry_hosting(HOSTED, tmp.path()).await;
    let plane = ControlPlane {
        node_id: 1,
        registry,
        health: HealthMonitor::new(),
        meta: MetaMachine::new().1,
    };
    let server = neo_cluster::serve("127.0.0.1:0".parse().expect("addr"), plane)
        .await
        .expect("serve");
    let mut client = RaftClient::connect(format!("http://{}", server.local_addr()))
        .await
        .expect("connect");
    // Announces the largest snapshot, sends one chunk, then never ends the stream: only
    // a refusal at the first chunk answers before the deadline.
    let head = Bytes::from_static(b"vote+meta");
    let total_len = neo_cluster::limits::SNAPSHOT_BYTES_MAX;
    let first = SnapshotChunk {
        group_id: UNKNOWN,
        head: head.clone(),
        offset: 0,
        total_len,
        data: Bytes::from(vec![7u8; 1000]),
        crc32: Some(1),
    };
    let stream = tokio_stream::iter([first]).chain(tokio_stream::pending());
    let s = tokio::time::timeout(Duration::from_secs(10), client.install_snapshot(stream))
        .await
        .expect("answered without waiting for more chunks")
        .expect_err("unknown group");
    assert_eq!(s.code(), tonic::Code::NotFound, "{s:?}");
    let probe = SnapshotProbe {
        group_id: UNKNOWN,
        head,
        total_len,
        crc32: 1,
    };
    assert_eq!(held(&client, probe).await, 0, "nothing kept");
    server.shutdown().await;
}

/// What the receiver holds of the transfer `probe` names.
async fn held(
    client: &neo_cluster::pb::raft::raft_client::RaftClient<tonic::transport::Channel>,
    probe: neo_cluster::pb::raft::SnapshotProbe,
) -> u64 {
    let mut client = client.clone();
    client
        .snapshot_resume(probe)
        .await
        .expect("probe")
        .into_inner()
        .offset
}
