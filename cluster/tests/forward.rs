//! `ForwardRecords` over the real control plane: a partition group on 3 nodes serving
//! gRPC on loopback with cluster mTLS; a batch forwarded by a fourth node (a member of
//! the cluster hosting no replica) to a follower is redirected to the leader and
//! committed; a node of another CA gets nothing stored; certificates of the cluster CA
//! that name no node id, or a node that is not a member, are refused (PERMISSION_DENIED).
//!
//! No timing is asserted: every wait is for an outcome, bounded by a generous deadline.
//! (The forwarding rules themselves are tested in `raft/tests/forward.rs`.)

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use neo_broker::meta::{MetaCommand, MetaState, MetaView};
use neo_cluster::{
    ClusterTls, ControlPlane, GrpcTransport, HealthMonitor, NetFilter, ServerHandle,
};
use neo_raft::{
    ForwardAttemptError, ForwardRecordsError, GroupConfig, GroupKind, NodeId, NodeStore, RaftGroup,
    RaftTiming, Registry, Role, forward_records,
};

const GROUP: u64 = 3;
const DEADLINE: Duration = Duration::from_secs(60);

struct Node {
    group: Arc<RaftGroup>,
    registry: Arc<Registry>,
    transport: GrpcTransport,
    server: ServerHandle,
    _store: NodeStore,
}

/// A node certificate of `pki` for loopback, naming node `id` (URI SAN `neo-node:<id>`).
fn tls(pki: &neo_tests::TestPki, id: NodeId) -> ClusterTls {
    let (cert, key) = pki.node_leaf(id, &format!("node-{id}"), &["127.0.0.1", "localhost"]);
    ClusterTls::from_pem(cert, key, pki.ca_pem().to_string()).expect("cluster tls")
}

/// The metadata state every node sees: nodes 1 to 4 registered (node 4 hosts no
/// replica; the check of callers reads the registered nodes).
fn registered() -> MetaView {
    let mut state = MetaState::default();
    for id in 1..=4 {
        state.apply(&MetaCommand::RegisterNode {
            node_id: id,
            addr: format!("127.0.0.1:{id}"),
            client_addr: String::new(),
        });
    }
    tokio::sync::watch::channel(Arc::new(state)).1
}

/// An AppendEntries to `addr` of a (junk) body, over mTLS with the certificate
/// `cert` of `pki`: the status it is refused with.
async fn append_entries_as(
    pki: &neo_tests::TestPki,
    cert: (String, String),
    addr: SocketAddr,
) -> tonic::Status {
    use neo_cluster::pb::raft::{RaftRequest, raft_client::RaftClient};
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(pki.ca_pem()))
        .identity(tonic::transport::Identity::from_pem(cert.0, cert.1))
        .domain_name("localhost");
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
        .expect("endpoint")
        .tls_config(tls)
        .expect("tls")
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("connect");
    RaftClient::new(channel)
        .append_entries(RaftRequest {
            group_id: GROUP,
            ..Default::default()
        })
        .await
        .expect_err("a junk body is refused either way")
}

fn transport(tls: ClusterTls, peers: &[(NodeId, SocketAddr)]) -> GrpcTransport {
    let t = GrpcTransport::with_tls(NetFilter::new(), Some(tls));
    for (id, addr) in peers {
        t.set_peer(*id, &addr.to_string()).expect("peer");
    }
    t
}

async fn start(
    id: NodeId,
    dir: &std::path::Path,
    pki: &neo_tests::TestPki,
    addrs: &[(NodeId, SocketAddr)],
) -> Node {
    let me = addrs.iter().find(|(n, _)| *n == id).expect("addr").1;
    let peers: Vec<_> = addrs.iter().copied().filter(|(n, _)| *n != id).collect();
    let tls = tls(pki, id);
    let transport = transport(tls.clone(), &peers);
    let store = NodeStore::open(dir).expect("store");
    let group = RaftGroup::open(
        GroupConfig {
            group: GROUP,
            node_id: id,
            kind: GroupKind::Partition,
            timing: RaftTiming {
                heartbeat_ms: 100,
                election_min_ms: 800,
                election_max_ms: 1_600,
            },
            snapshot_every_entries: 0,
            encrypt_at_rest: false,
        },
        &store,
        Arc::new(transport.clone()),
        Box::new(neo_raft::LogOnly),
    )
    .await
    .expect("open group");
    let registry = Arc::new(Registry::new());
    registry.insert(group.clone());
    let meta = registered();
    let plane = ControlPlane {
        node_id: id,
        registry: registry.clone(),
        health: HealthMonitor::new(),
        meta,
    };
    let server = neo_cluster::serve_with_tls(me, plane, Some(&tls))
        .await
        .expect("serve");
    Node {
        group,
        registry,
        transport,
        server,
        _store: store,
    }
}

fn batch(value: &str) -> Bytes {
    let mut b = qiss::batch::BatchBuilder::new();
    b.push(1, None, &[], value.as_bytes()).expect("push");
    b.build().expect("build")
}

/// A batch close to `neo_raft::RECORD_BATCH_BYTES_MAX` (1000 records of 1000 bytes).
fn big_batch() -> Bytes {
    let mut b = qiss::batch::BatchBuilder::new();
    for i in 0..1000u32 {
        b.push(1, None, &[], &[(i % 251) as u8; 1000])
            .expect("push");
    }
    let b = b.build().expect("build");
    assert!(b.len() > 1_000_000 && b.len() <= neo_raft::RECORD_BATCH_BYTES_MAX);
    b
}

/// The value of the one-record batch at `offset` in `g`'s log, once applied.
async fn value_at(g: &RaftGroup, offset: u64) -> String {
    g.wait_until(DEADLINE, "applied", |_| g.applied().next_offset > offset)
        .await
        .expect("applied");
    let (bytes, _) = g.read_log(offset, 1 << 20).await.expect("read");
    for b in qiss::batch::split_batches(bytes) {
        let b = qiss::batch::RecordBatch::new(b.expect("batch")).expect("valid");
        if let Some(r) = b.records().find(|r| r.offset() == offset) {
            return String::from_utf8(r.value().to_vec()).expect("utf8");
        }
    }
    panic!("no record at {offset}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_records_over_mtls_reaches_the_leader() {
    let tmp = tempfile::tempdir().expect("tmp");
    let pki = neo_tests::TestPki::new("neo forward test ca");
    let addrs: Vec<(NodeId, SocketAddr)> = (1..=3).map(|id| (id, neo_tests::free_addr())).collect();
    let mut nodes = BTreeMap::new();
    for &(id, _) in &addrs {
        let node = start(id, &tmp.path().join(format!("node-{id}")), &pki, &addrs).await;
        nodes.insert(id, node);
    }
    let members: BTreeMap<NodeId, String> =
        addrs.iter().map(|(id, a)| (*id, a.to_string())).collect();
    nodes[&1]
        .group
        .bootstrap(&members)
        .await
        .expect("bootstrap");
    let leader = nodes[&1]
        .group
        .wait_until(DEADLINE, "a leader", |m| m.leader.is_some())
        .await
        .expect("leader")
        .leader
        .expect("leader");
    nodes[&leader]
        .group
        .wait_until(DEADLINE, "leads", |m| m.role == Role::Leader)
        .await
        .expect("leads");
    let followers: Vec<NodeId> = (1..=3).filter(|&n| n != leader).collect();

    // A cluster node without a replica, asking a follower first.
    let outsider = transport(tls(&pki, 4), &addrs);
    let (base, n) = forward_records(
        &Registry::new(),
        4,
        &outsider,
        &[followers[0], followers[1], leader],
        GROUP,
        batch("via-follower"),
        DEADLINE,
    )
    .await
    .expect("forwarded");
    assert_eq!(n, 1);
    assert_eq!(value_at(&nodes[&leader].group, base).await, "via-follower");
    for f in &followers {
        assert_eq!(value_at(&nodes[f].group, base).await, "via-follower");
    }

    // A batch of nearly the largest size goes through the same way.
    let (big_base, n) = forward_records(
        &Registry::new(),
        4,
        &outsider,
        &[followers[0], leader],
        GROUP,
        big_batch(),
        DEADLINE,
    )
    .await
    .expect("forwarded a ~1 MiB batch");
    assert_eq!((big_base, n), (base + 1, 1000));
    let base = big_base + 999;

    // A follower's node forwards over its own transport.
    let f = &nodes[&followers[1]];
    let (base2, _) = forward_records(
        &f.registry,
        followers[1],
        &f.transport,
        &[followers[0], leader],
        GROUP,
        batch("from-a-follower"),
        DEADLINE,
    )
    .await
    .expect("forwarded");
    assert_eq!(base2, base + 1);
    assert_eq!(
        value_at(&nodes[&leader].group, base2).await,
        "from-a-follower"
    );

    // A node whose certificate another CA signed cannot forward: nothing is stored.
    let stored = nodes[&leader].group.log_offsets();
    let stranger = transport(tls(&neo_tests::TestPki::new("another ca"), 9), &addrs);
    let r = forward_records(
        &Registry::new(),
        9,
        &stranger,
        &[leader],
        GROUP,
        batch("stranger"),
        Duration::from_secs(2),
    )
    .await;
    match r {
        Err(ForwardRecordsError::Timeout {
            last:
                Some(e @ (ForwardAttemptError::Transport(_) | ForwardAttemptError::TimedOut { .. })),
            ..
        }) => eprintln!("stranger: {e}"),
        other => panic!("expected a transport failure, got {other:?}"),
    }
    assert_eq!(nodes[&leader].group.log_offsets(), stored);

    // Certificates of the cluster CA: one naming a registered node gets to the group
    // (which refuses the junk body); one naming no node id, or a node that is not a
    // member, is refused before.
    let leader_addr = addrs.iter().find(|(id, _)| *id == leader).expect("addr").1;
    let sans = ["127.0.0.1", "localhost"];
    let s = append_entries_as(&pki, pki.node_leaf(4, "node-4", &sans), leader_addr).await;
    assert_eq!(s.code(), tonic::Code::InvalidArgument, "{s:?}");
    let s = append_entries_as(&pki, pki.leaf("no-id", &sans), leader_addr).await;
    assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s:?}");
    assert!(s.message().contains("names no node id"), "{s:?}");
    let s = append_entries_as(&pki, pki.node_leaf(9, "node-9", &sans), leader_addr).await;
    assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s:?}");
    assert!(s.message().contains("node 9"), "{s:?}");
    // ... and so is its ForwardRecords: nothing is stored.
    let member_of_no_cluster = transport(tls(&pki, 9), &addrs);
    let r = forward_records(
        &Registry::new(),
        9,
        &member_of_no_cluster,
        &[leader],
        GROUP,
        batch("not a member"),
        Duration::from_secs(2),
    )
    .await;
    assert!(r.is_err(), "{r:?}");
    assert_eq!(nodes[&leader].group.log_offsets(), stored);

    for (_, node) in nodes {
        node.group.shutdown().await.expect("shutdown");
        node.server.shutdown().await;
    }
}
