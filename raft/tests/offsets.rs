//! Record offsets users can trust: a partition's first record gets offset 0, and offsets
//! stay dense (each batch starts where the previous one ended) across elections, leader
//! transfers, membership changes, restarts and snapshot installs, whose Raft control
//! entries take no offset. Replicas hold byte-identical logs. Three (then four) replicas
//! in one process, connected by an in-memory transport.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use neo_raft::{
    GroupConfig, GroupId, GroupKind, NodeId, NodeStore, RaftGroup, RaftTiming, Registry, Role,
    RpcKind, Transport, TransportError,
};

const DEADLINE: Duration = Duration::from_secs(30);
const GROUP: GroupId = 9;

/// The nodes' registries, by node id: what a peer's RPC is dispatched to.
#[derive(Default)]
struct Net {
    nodes: RwLock<HashMap<NodeId, Arc<Registry>>>,
}

struct Loopback(Arc<Net>);

impl Loopback {
    fn registry(&self, target: NodeId) -> Result<Arc<Registry>, TransportError> {
        let nodes = self.0.nodes.read().expect("net lock");
        nodes
            .get(&target)
            .cloned()
            .ok_or(TransportError::Unreachable {
                target,
                reason: "not running".into(),
            })
    }
}

fn failed(
    target: NodeId,
    timeout: Duration,
) -> impl Fn(tokio::time::error::Elapsed) -> TransportError {
    move |_| TransportError::Timeout {
        target,
        timeout_ms: timeout.as_millis() as u64,
    }
}

impl Transport for Loopback {
    fn send(
        &self,
        target: NodeId,
        group: GroupId,
        kind: RpcKind,
        body: Bytes,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Bytes, TransportError>> {
        let registry = self.registry(target);
        Box::pin(async move {
            let r = tokio::time::timeout(timeout, registry?.handle(group, kind, &body))
                .await
                .map_err(failed(target, timeout))?;
            r.map(Bytes::from).map_err(|e| TransportError::Network {
                target,
                reason: e.to_string(),
            })
        })
    }

    fn send_snapshot(
        &self,
        target: NodeId,
        group: GroupId,
        head: Bytes,
        data: Bytes,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Bytes, TransportError>> {
        let registry = self.registry(target);
        Box::pin(async move {
            let r = tokio::time::timeout(
                timeout,
                registry?.handle_snapshot(group, &head, data.to_vec()),
            )
            .await
            .map_err(failed(target, timeout))?;
            r.map(Bytes::from).map_err(|e| TransportError::Network {
                target,
                reason: e.to_string(),
            })
        })
    }
}

struct Cluster {
    net: Arc<Net>,
    dirs: HashMap<NodeId, tempfile::TempDir>,
    /// One store per node, kept across a group's restart (the node process would
    /// reopen it; sled's lock outlives a shut-down group for a moment).
    stores: HashMap<NodeId, NodeStore>,
    groups: HashMap<NodeId, Arc<RaftGroup>>,
}

impl Cluster {
    async fn start(&mut self, node: NodeId) -> Arc<RaftGroup> {
        let dir = self
            .dirs
            .entry(node)
            .or_insert_with(|| tempfile::tempdir().expect("tmp"));
        // Small segments: the log rolls, so purge and snapshot install cut real files.
        let store = self.stores.entry(node).or_insert_with(|| {
            NodeStore::open(dir.path())
                .expect("store")
                .with_segment_bytes(4096)
        });
        let g = RaftGroup::open(
            GroupConfig {
                group: GROUP,
                node_id: node,
                kind: GroupKind::Partition,
                timing: RaftTiming::PARTITION,
                snapshot_every_entries: 0,
                encrypt_at_rest: false,
            },
            store,
            Arc::new(Loopback(self.net.clone())),
            Box::new(neo_raft::LogOnly),
        )
        .await
        .expect("open");
        let registry = Arc::new(Registry::new());
        registry.insert(g.clone());
        self.net
            .nodes
            .write()
            .expect("net lock")
            .insert(node, registry);
        self.groups.insert(node, g.clone());
        g
    }

    async fn stop(&mut self, node: NodeId) {
        self.net.nodes.write().expect("net lock").remove(&node);
        let g = self.groups.remove(&node).expect("running");
        g.shutdown().await.expect("shutdown");
    }

    /// The replica that leads by its own metrics (another's view may be stale).
    async fn leader(&self) -> Arc<RaftGroup> {
        let started = std::time::Instant::now();
        loop {
            if let Some(g) = self
                .groups
                .values()
                .find(|g| g.metrics().role == Role::Leader)
            {
                return g.clone();
            }
            assert!(started.elapsed() < DEADLINE, "no leader");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until every running replica applied up to `next_offset`.
    async fn settle(&self, next_offset: u64) {
        for g in self.groups.values() {
            g.wait_until(DEADLINE, "applied", |_| {
                g.applied().next_offset >= next_offset
            })
            .await
            .expect("applied");
        }
    }
}

fn batch(records: usize, seed: u8) -> qiss::batch::ValidatedBatch {
    let mut b = qiss::batch::BatchBuilder::new();
    for _ in 0..records {
        b.push(1, None, &[], &[seed; 300]).expect("push");
    }
    qiss::batch::ValidatedBatch::check(b.build().expect("build")).expect("valid batch")
}

/// Proposes `records` records at the cluster's leader (found again while a new one
/// settles in); checks they start at `expected`.
async fn produce(c: &Cluster, records: usize, expected: &mut u64) {
    let started = std::time::Instant::now();
    let (base, n) = loop {
        let leader = c.leader().await;
        match leader
            .propose_records(batch(records, *expected as u8))
            .await
        {
            Err(neo_raft::Error::NotLeader { .. }) if started.elapsed() < DEADLINE => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            r => break r.expect("propose"),
        }
    };
    assert_eq!((base, n as usize), (*expected, records), "dense offsets");
    *expected += records as u64;
}

/// Every stored batch of `g`'s log from `from`: (base offset, records, control?), and
/// the bytes. Checks each record batch starts where the previous one ended.
async fn log_of(g: &RaftGroup, from: u64) -> (Vec<(u64, u32, bool)>, Vec<u8>) {
    let (mut out, mut bytes) = (Vec::new(), Vec::new());
    let mut offset = from;
    let mut expected = from;
    loop {
        let (chunk, next) = g.read_log(offset, 1 << 20).await.expect("read");
        if chunk.is_empty() {
            return (out, bytes);
        }
        let mut rest = &chunk[..];
        while !rest.is_empty() {
            let h = qiss::batch::check(rest).expect("stored batch");
            let len = h.batch_length as usize;
            // A read starts at the batch holding `offset`: skip what was seen.
            if h.next_offset() > offset || (h.record_count == 0 && h.base_offset > offset) {
                assert_eq!(h.base_offset, expected, "batches are contiguous");
                expected = h.next_offset();
                out.push((h.base_offset, h.record_count, h.is_control()));
                bytes.extend_from_slice(&rest[..len]);
            }
            rest = &rest[len..];
        }
        if next == offset {
            return (out, bytes);
        }
        offset = next;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_offsets_are_dense_from_zero_across_raft_control_entries() {
    let mut c = Cluster {
        net: Arc::default(),
        dirs: HashMap::new(),
        stores: HashMap::new(),
        groups: HashMap::new(),
    };
    let g1 = c.start(1).await;
    g1.bootstrap(&BTreeMap::from([(1, "n1".to_string())]))
        .await
        .expect("bootstrap");
    let leader = c.leader().await;
    // A fresh group's log already holds control entries (membership, blank); the first
    // record still gets offset 0.
    let mut next = 0;
    produce(&c, 3, &mut next).await;
    assert_eq!(next, 3);

    // Membership changes: two learners, then three voters.
    c.start(2).await;
    c.start(3).await;
    leader.add_learner(2, "n2".into()).await.expect("learner 2");
    leader.add_learner(3, "n3".into()).await.expect("learner 3");
    leader
        .change_membership(BTreeSet::from([1, 2, 3]))
        .await
        .expect("membership");
    produce(&c, 2, &mut next).await;

    // A leader change (a new term's blank entry).
    leader.transfer_leader(2).await.expect("transfer");
    c.groups[&2]
        .wait_until(DEADLINE, "node 2 leads", |m| m.role == Role::Leader)
        .await
        .expect("node 2 leads");
    produce(&c, 4, &mut next).await;
    for i in 0..20 {
        produce(&c, 1 + i % 3, &mut next).await;
    }
    c.settle(next).await;

    // Every replica: dense offsets from 0, control batches zero-width, same bytes.
    let (batches, bytes) = log_of(&c.groups[&1], 0).await;
    assert_eq!(batches.first().map(|b| b.0), Some(0));
    assert!(
        batches.iter().any(|b| b.2),
        "control entries are in the log"
    );
    assert!(batches.iter().filter(|b| b.2).all(|b| b.1 == 0));
    let records: u64 = batches.iter().map(|b| u64::from(b.1)).sum();
    assert_eq!(records, next);
    for n in [2, 3] {
        assert_eq!(
            log_of(&c.groups[&n], 0).await.1,
            bytes,
            "node {n} holds the same bytes"
        );
    }

    // Restart a follower: recovery rebuilds its index from the stamps; offsets go on.
    c.stop(1).await;
    produce(&c, 2, &mut next).await;
    c.start(1).await;
    let leader = c.leader().await;
    produce(&c, 3, &mut next).await;
    c.settle(next).await;
    let bytes = log_of(&leader, 0).await.1;
    assert_eq!(
        log_of(&c.groups[&1], 0).await.1,
        bytes,
        "the restarted node catches up"
    );

    // Snapshot install: the leader purges its log, a new node gets a snapshot and its
    // log restarts at the snapshot's next offset.
    let applied = leader.metrics().applied_index.expect("applied");
    let upto = leader.purge_upto(applied, DEADLINE).await.expect("purge");
    leader
        .wait_until(DEADLINE, "purged", |m| m.purged_index >= Some(upto))
        .await
        .expect("purged");
    let g4 = c.start(4).await;
    leader.add_learner(4, "n4".into()).await.expect("learner 4");
    g4.wait_until(DEADLINE, "snapshot", |m| m.snapshot_index.is_some())
        .await
        .expect("snapshot installed");
    produce(&c, 5, &mut next).await;
    c.settle(next).await;
    let (start, end) = g4.log_offsets();
    assert!(
        start > 0,
        "the new node's log starts at the snapshot's offset"
    );
    assert_eq!(end, next);
    let (tail, tail_bytes) = log_of(&g4, start).await;
    assert_eq!(tail.last().map(|b| (b.0, b.1)), Some((next - 5, 5)));
    let leader_tail = log_of(&leader, start).await.1;
    assert!(
        leader_tail.ends_with(&tail_bytes),
        "the new node's batches are the leader's bytes"
    );
    for g in c.groups.values() {
        g.shutdown().await.expect("shutdown");
    }
}
