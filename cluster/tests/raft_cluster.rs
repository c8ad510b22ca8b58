//! Raft groups replicating over real gRPC on loopback: election, replication, leader
//! failure, restart and catch-up, and network partitions through the transport filter.
//!
//! No timing is asserted: every wait is for an outcome, bounded by a generous deadline
//! that only turns a hang into a failure.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use neo_broker::meta::{MetaCommand, MetaMachine, MetaResponse, MetaState, MetaView};
use neo_broker::partition::{Partition, WriteAck};
use neo_cluster::{
    ClusterTls, ControlPlane, GrpcTransport, HealthMonitor, NetFilter, ServerHandle,
};
use neo_raft::{
    GroupConfig, GroupKind, METADATA_GROUP, NodeId, NodeStore, RaftGroup, RaftTiming, Registry,
    Role,
};

/// The partition group the tests replicate (the metadata group is `METADATA_GROUP`).
const PARTITION_GROUP: u64 = 1;
/// Bounds every wait; only reached when something is broken.
const DEADLINE: Duration = Duration::from_secs(60);

fn timing() -> RaftTiming {
    RaftTiming {
        heartbeat_ms: 100,
        election_min_ms: 800,
        election_max_ms: 1_600,
    }
}

struct Node {
    id: NodeId,
    addr: SocketAddr,
    dir: PathBuf,
    filter: NetFilter,
    health: HealthMonitor,
    /// Mutual TLS on the control plane, when the cluster runs with it.
    tls: Option<ClusterTls>,
    running: Option<Running>,
}

struct Running {
    group: Arc<RaftGroup>,
    /// The metadata state as this node applies it (empty for a partition group).
    meta: MetaView,
    /// The broker's handle on the partition (partition groups only).
    partition: Option<Arc<Partition>>,
    transport: GrpcTransport,
    server: ServerHandle,
    stop_health: tokio::sync::watch::Sender<bool>,
}

struct Cluster {
    _tmp: tempfile::TempDir,
    nodes: Vec<Node>,
    kind: GroupKind,
    snapshot_every_entries: u64,
    opts: Opts,
}

/// Optional settings of a test cluster.
#[derive(Default)]
struct Opts {
    /// Every node gets a certificate of this PKI and runs the control plane over mTLS.
    pki: Option<Pki>,
    /// Snapshot chunk size of every node's transport (default: the crate's).
    snapshot_chunk_bytes: Option<usize>,
}

impl Cluster {
    /// `n` partition-group replicas, all voters.
    async fn start(n: u64) -> Cluster {
        Cluster::start_with(n, n, GroupKind::Partition, 1_000).await
    }

    /// `n` nodes running the group, of which nodes `1..=voters` bootstrap it as voters
    /// (the others wait to be added).
    async fn start_with(
        n: u64,
        voters: u64,
        kind: GroupKind,
        snapshot_every_entries: u64,
    ) -> Cluster {
        Cluster::start_opts(n, voters, kind, snapshot_every_entries, Opts::default()).await
    }

    /// [`Cluster::start_with`], with `opts`.
    async fn start_opts(
        n: u64,
        voters: u64,
        kind: GroupKind,
        snapshot_every_entries: u64,
        opts: Opts,
    ) -> Cluster {
        let tmp = tempfile::tempdir().expect("temp dir");
        let mut nodes = Vec::new();
        for id in 1..=n {
            // A free port; the node rebinds the same one on every (re)start.
            let addr = neo_tests::free_addr();
            nodes.push(Node {
                id,
                addr,
                dir: tmp.path().join(format!("node-{id}")),
                filter: NetFilter::new(),
                health: HealthMonitor::new(),
                tls: opts.pki.as_ref().map(|pki| pki.node_tls(id)),
                running: None,
            });
        }
        let mut c = Cluster {
            _tmp: tmp,
            nodes,
            kind,
            snapshot_every_entries,
            opts,
        };
        for id in 1..=n {
            c.boot(id).await;
        }
        let members: BTreeMap<NodeId, String> = c
            .nodes
            .iter()
            .filter(|n| n.id <= voters)
            .map(|n| (n.id, n.addr.to_string()))
            .collect();
        c.group(1).bootstrap(&members).await.expect("bootstrap");
        c
    }

    fn node(&self, id: NodeId) -> &Node {
        &self.nodes[(id - 1) as usize]
    }

    fn group(&self, id: NodeId) -> Arc<RaftGroup> {
        self.node(id)
            .running
            .as_ref()
            .expect("node running")
            .group
            .clone()
    }

    /// Node `id`'s partition replica, with the broker's idempotence gate (running).
    fn partition(&self, id: NodeId) -> Arc<Partition> {
        self.node(id)
            .running
            .as_ref()
            .expect("node running")
            .partition
            .clone()
            .expect("a partition group")
    }

    /// The metadata state node `id` has applied (running).
    fn meta(&self, id: NodeId) -> Arc<MetaState> {
        self.node(id)
            .running
            .as_ref()
            .expect("node running")
            .meta
            .borrow()
            .clone()
    }

    /// The groups of nodes `ids` (all running).
    fn groups(&self, ids: &[NodeId]) -> Vec<Arc<RaftGroup>> {
        ids.iter().map(|&id| self.group(id)).collect()
    }

    /// Node `id`'s transport (running).
    fn transport(&self, id: NodeId) -> GrpcTransport {
        self.node(id)
            .running
            .as_ref()
            .expect("node running")
            .transport
            .clone()
    }

    fn running_ids(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|n| n.running.is_some())
            .map(|n| n.id)
            .collect()
    }

    /// Starts (or restarts, from its data directory) node `id`.
    async fn boot(&mut self, id: NodeId) {
        let peers: Vec<(NodeId, SocketAddr)> = self.nodes.iter().map(|n| (n.id, n.addr)).collect();
        let (kind, snapshot_every_entries) = (self.kind, self.snapshot_every_entries);
        let chunk_bytes = self.opts.snapshot_chunk_bytes;
        let node = &mut self.nodes[(id - 1) as usize];
        assert!(node.running.is_none(), "node {id} already running");
        let mut transport = GrpcTransport::with_tls(node.filter.clone(), node.tls.clone());
        if let Some(bytes) = chunk_bytes {
            transport = transport.with_snapshot_chunk_bytes(bytes);
        }
        for (pid, paddr) in peers {
            if pid != id {
                transport.set_peer(pid, &paddr.to_string()).expect("peer");
            }
        }
        // A store closed a moment ago may still be releasing its sled lock.
        let store = {
            let mut tries = 0;
            loop {
                match NodeStore::open(&node.dir) {
                    Ok(s) => break s,
                    Err(e) if tries < 100 => {
                        tries += 1;
                        tracing::debug!("reopen store: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => panic!("open store of node {id}: {e}"),
                }
            }
        };
        let cfg = GroupConfig {
            group: match kind {
                GroupKind::Metadata => METADATA_GROUP,
                GroupKind::Partition => PARTITION_GROUP,
            },
            node_id: id,
            kind,
            timing: timing(),
            snapshot_every_entries,
            encrypt_at_rest: false,
        };
        let (stop_health, stop_rx) = tokio::sync::watch::channel(false);
        node.health.spawn(id, transport.clone(), stop_rx);
        let (meta_machine, meta) = MetaMachine::new();
        let (part_machine, part_state) = Partition::machine(None);
        let machine: Box<dyn neo_raft::StateMachine> = match kind {
            GroupKind::Metadata => Box::new(meta_machine),
            GroupKind::Partition => Box::new(part_machine),
        };
        let group = RaftGroup::open(cfg, &store, Arc::new(transport.clone()), machine)
            .await
            .expect("open group");
        let partition = (kind == GroupKind::Partition)
            .then(|| Arc::new(Partition::new(group.clone(), part_state)));
        let registry = Arc::new(Registry::new());
        registry.insert(group.clone());
        let server = {
            let mut tries = 0;
            loop {
                let plane = ControlPlane {
                    node_id: id,
                    registry: registry.clone(),
                    health: node.health.clone(),
                    meta: meta.clone(),
                };
                match neo_cluster::serve_with_tls(node.addr, plane, node.tls.as_ref()).await {
                    Ok(s) => break s,
                    Err(e) if tries < 100 => {
                        tries += 1;
                        tracing::debug!("rebind: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => panic!("serve node {id}: {e}"),
                }
            }
        };
        node.running = Some(Running {
            group,
            meta,
            partition,
            transport,
            server,
            stop_health,
        });
    }

    /// Stops node `id` as a crash would look to its peers: its Raft and its server go
    /// away (files stay).
    async fn kill(&mut self, id: NodeId) {
        let r = self.nodes[(id - 1) as usize]
            .running
            .take()
            .expect("node running");
        let _ = r.stop_health.send(true);
        r.group.shutdown().await.expect("shutdown raft");
        r.server.shutdown().await;
        drop(r.partition);
        drop(r.group);
    }

    /// Waits until the running nodes in `among` agree on one leader in `among`.
    async fn leader(&self, among: &[NodeId]) -> NodeId {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let ms: Vec<_> = among.iter().map(|&id| self.group(id).metrics()).collect();
            if let Some(l) = ms.iter().find(|m| m.role == Role::Leader) {
                let lid = l.node_id;
                if ms.iter().all(|m| m.leader == Some(lid) && m.term == l.term) {
                    return lid;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no leader among {among:?}: {ms:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every node in `ids` has applied at least `index`.
    async fn applied(&self, ids: &[NodeId], index: u64) {
        for &id in ids {
            self.group(id)
                .wait_until(DEADLINE, "applied index", |m| {
                    m.applied_index.is_some_and(|a| a >= index)
                })
                .await
                .expect("replica catches up");
        }
    }

    /// Waits for a leader among `ids` and until all of `ids` applied its whole log;
    /// returns the leader.
    async fn settle(&self, ids: &[NodeId]) -> NodeId {
        let leader = self.leader(ids).await;
        let last = self
            .group(leader)
            .metrics()
            .last_log_index
            .expect("leader has a log");
        self.applied(ids, last).await;
        leader
    }

    /// The whole stored log of node `id`, byte for byte.
    async fn log_bytes(&self, id: NodeId) -> Vec<u8> {
        let start = self.group(id).log_offsets().0;
        self.log_bytes_from(id, start).await
    }

    /// Node `id`'s stored log from the batch at `offset` on.
    async fn log_bytes_from(&self, id: NodeId, mut offset: u64) -> Vec<u8> {
        let g = self.group(id);
        let end = g.log_offsets().1;
        let mut out = Vec::new();
        while offset < end {
            let (bytes, next) = g.read_log(offset, 1 << 20).await.expect("read log");
            out.extend_from_slice(&bytes);
            offset = next;
        }
        out
    }
}

/// A valid record batch of `records` records whose payload names `seq`.
fn batch(seq: u64, records: u32) -> Bytes {
    Bytes::from(neo_storage::testing::batch(
        records,
        seq as i64,
        seq as i64,
        format!("entry-{seq}").as_bytes(),
    ))
}

/// Proposes batches `seqs` from `writers` concurrent tasks to whichever of `groups`
/// leads (following "not leader" answers, as a client would); returns
/// `(seq, base_offset, record_count)` of each acknowledged one.
async fn write_all(
    groups: Vec<Arc<RaftGroup>>,
    seqs: std::ops::Range<u64>,
    writers: u64,
) -> Vec<(u64, u64, u32)> {
    let groups = Arc::new(groups);
    let mut tasks = Vec::new();
    for w in 0..writers {
        let groups = groups.clone();
        let mine: Vec<u64> = seqs.clone().filter(|s| s % writers == w).collect();
        tasks.push(tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + DEADLINE;
            let mut acked = Vec::new();
            let mut at = 0usize;
            for seq in mine {
                loop {
                    match groups[at]
                        .propose_records(valid(batch(seq, 1 + (seq % 4) as u32)))
                        .await
                    {
                        Ok((base, n)) => {
                            acked.push((seq, base, n));
                            break;
                        }
                        Err(
                            e @ (neo_raft::Error::NotLeader { .. }
                            | neo_raft::Error::QuorumLost { .. }),
                        ) => {
                            assert!(tokio::time::Instant::now() < deadline, "no leader");
                            let leader = leader_hint(&e);
                            at = match groups
                                .iter()
                                .position(|g| Some(g.metrics().node_id) == leader)
                            {
                                Some(i) => i,
                                None => {
                                    tokio::time::sleep(Duration::from_millis(50)).await;
                                    (at + 1) % groups.len()
                                }
                            };
                        }
                        Err(e) => panic!("proposal {seq} failed: {e}"),
                    }
                }
            }
            acked
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("writer task"));
    }
    all.sort_unstable();
    all
}

/// Where a client goes after `NotLeader` or `QuorumLost` (a leader cut off from its
/// quorum; the broker answers it as `NotLeader` without a hint): the hinted leader, if
/// any. A `QuorumLost` write may still commit: retrying it can store a second copy,
/// which the checks here allow (they look at acknowledged batches only).
fn leader_hint(e: &neo_raft::Error) -> Option<NodeId> {
    match e {
        neo_raft::Error::NotLeader { leader, .. } => *leader,
        _ => None,
    }
}

/// Checks that every acknowledged batch is in `log` at its acknowledged offset.
fn assert_acked_in_log(log: &[u8], acked: &[(u64, u64, u32)]) {
    let mut by_offset = BTreeMap::new();
    let mut pos = 0;
    while pos < log.len() {
        let h = qiss::batch::check(&log[pos..]).expect("stored batch is valid");
        let len = h.batch_length as usize;
        by_offset.insert(h.base_offset, (h, log[pos + 77..pos + len].to_vec()));
        pos += len;
    }
    for &(seq, base, n) in acked {
        let (h, payload) = by_offset
            .get(&base)
            .unwrap_or_else(|| panic!("acked entry {seq} missing at offset {base}"));
        assert_eq!(h.record_count, n, "entry {seq}");
        assert_eq!(payload, format!("entry-{seq}").as_bytes(), "entry {seq}");
    }
}

/// `n` nodes elect, replicate `entries` entries, lose their leader (the survivors elect
/// another that has every committed entry), and the old leader restarts and catches up.
async fn replicate_fail_over_and_catch_up(n: u64, entries: u64) {
    let mut c = Cluster::start(n).await;
    let all: Vec<NodeId> = (1..=n).collect();
    let mut acked = write_all(c.groups(&all), 0..entries, 32).await;
    assert_eq!(acked.len() as u64, entries);
    let leader = c.settle(&all).await;
    let reference = c.log_bytes(leader).await;
    for &id in &all {
        assert!(
            c.log_bytes(id).await == reference,
            "node {id}'s log differs from the leader's"
        );
    }

    // Kill the leader: the survivors elect a new one that has every committed entry.
    c.kill(leader).await;
    let survivors: Vec<NodeId> = all.iter().copied().filter(|&id| id != leader).collect();
    acked.extend(write_all(c.groups(&survivors), entries..entries + 500, 16).await);
    let new_leader = c.settle(&survivors).await;
    assert_ne!(new_leader, leader);
    let last = c.group(new_leader).metrics().last_log_index.expect("log");
    let reference = c.log_bytes(new_leader).await;
    assert_acked_in_log(&reference, &acked);
    for &id in &survivors {
        assert!(
            c.log_bytes(id).await == reference,
            "survivor {id}'s log differs"
        );
    }

    // Restart the killed node from its data directory: it catches up.
    c.boot(leader).await;
    c.applied(&[leader], last).await;
    acked.extend(write_all(c.groups(&all), entries + 500..entries + 600, 8).await);
    let leader = c.settle(&all).await;
    let reference = c.log_bytes(leader).await;
    assert_acked_in_log(&reference, &acked);
    for &id in &all {
        assert!(
            c.log_bytes(id).await == reference,
            "node {id}'s log differs after catch-up"
        );
    }
    for id in c.running_ids() {
        c.kill(id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_replicate_fail_over_and_catch_up() {
    replicate_fail_over_and_catch_up(3, 10_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_nodes_replicate_fail_over_and_catch_up() {
    replicate_fail_over_and_catch_up(5, 3_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn minority_commits_nothing_and_healing_converges() {
    let mut c = Cluster::start(3).await;
    let all = [1, 2, 3];
    let mut acked = write_all(c.groups(&all), 0..200, 8).await;
    let old = c.settle(&all).await;
    // An idempotent producer's first batch: the leader's once-per-term catch-up is done.
    produce(&c.partition(old), stamped(7, 0, 1))
        .await
        .expect("stamped batch");

    // Cut the leader off from both followers, in both directions.
    let majority: Vec<NodeId> = all.iter().copied().filter(|&id| id != old).collect();
    c.node(old).filter.isolate(majority.iter().copied());
    for &id in &majority {
        c.node(id).filter.drop_to(old);
    }
    let stranded = {
        let g = c.group(old);
        tokio::spawn(async move { g.propose_records(valid(batch(999_999, 1))).await })
    };
    // A stamped batch in flight, and a retry of it that waits for the first copy.
    let stamped_first = {
        let p = c.partition(old);
        tokio::spawn(async move { produce(&p, stamped(7, 1, 1)).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let stamped_retry = {
        let p = c.partition(old);
        tokio::spawn(async move { produce(&p, stamped(7, 1, 1)).await })
    };

    // The isolated leader notices within about the minimum election timeout (800 ms
    // here) that no quorum answers: its waiting write ends with QuorumLost (outcome
    // unknown) instead of hanging until the partition heals, it refuses new writes at
    // once, and it names no leader to clients.
    let stranded = tokio::time::timeout(Duration::from_secs(10), stranded).await;
    assert!(
        matches!(
            stranded,
            Ok(Ok(Err(neo_raft::Error::QuorumLost { written: true, .. })))
        ),
        "the isolated leader's waiting write must end with QuorumLost: {stranded:?}"
    );
    for (what, task) in [("first copy", stamped_first), ("retry", stamped_retry)] {
        let r = tokio::time::timeout(Duration::from_secs(10), task).await;
        assert!(
            matches!(
                r,
                Ok(Ok(Err(neo_broker::Error::Raft(
                    neo_raft::Error::QuorumLost { .. }
                ))))
            ),
            "the stamped {what} must end with QuorumLost: {r:?}"
        );
    }
    let refused = c.group(old).propose_records(valid(batch(999_998, 1))).await;
    assert!(
        matches!(
            refused,
            Err(neo_raft::Error::QuorumLost { written: false, .. })
        ),
        "{refused:?}"
    );
    let m = c.group(old).metrics();
    assert!(m.quorum_lost && m.role == Role::Leader, "{m:?}");
    assert_eq!(m.serving_leader(), None);
    // Read here, well after the cut: the metrics of the last commits before it (sent
    // asynchronously by openraft) have arrived.
    let committed_before = m.committed_index;

    // The majority elects a leader and goes on.
    acked.extend(write_all(c.groups(&majority), 200..600, 8).await);
    // The minority committed nothing meanwhile.
    assert_eq!(c.group(old).metrics().committed_index, committed_before);
    for &id in &majority {
        let m = c.group(id).metrics();
        assert!(!m.quorum_lost, "{m:?}");
    }

    // Heal: everyone converges on the majority's log (without the stranded write,
    // which no node of the majority has).
    for n in &c.nodes {
        n.filter.heal_all();
    }
    acked.extend(write_all(c.groups(&all), 600..650, 4).await);
    let leader = c.settle(&all).await;
    let reference = c.log_bytes(leader).await;
    assert_acked_in_log(&reference, &acked);
    for id in all {
        assert!(
            c.log_bytes(id).await == reference,
            "node {id}'s log differs after healing"
        );
    }
    for id in c.running_ids() {
        c.kill(id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarted_node_catches_up_through_a_snapshot_after_purge() {
    let mut c = Cluster::start(3).await;
    let all = [1, 2, 3];
    let mut acked = write_all(c.groups(&all), 0..300, 8).await;
    let leader = c.settle(&all).await;
    let lagger = all
        .iter()
        .copied()
        .find(|&id| id != leader)
        .expect("a follower");
    c.kill(lagger).await;
    let live: Vec<NodeId> = all.iter().copied().filter(|&id| id != lagger).collect();
    acked.extend(write_all(c.groups(&live), 300..700, 8).await);
    c.settle(&live).await;

    // Retention on every live replica: snapshot and purge everything applied.
    let mut upto = u64::MAX;
    for &id in &live {
        let g = c.group(id);
        let applied = g.metrics().applied_index.expect("applied");
        let u = g.purge_upto(applied, DEADLINE).await.expect("purge");
        g.wait_until(DEADLINE, "purge", |m| m.purged_index >= Some(u))
            .await
            .expect("replica purges");
        upto = upto.min(u);
    }
    assert!(
        upto > 300,
        "purge must cover entries the lagger lacks (upto {upto})"
    );

    // The lagger restarts; the entries it lacks are gone, so it installs a snapshot.
    c.boot(lagger).await;
    acked.extend(write_all(c.groups(&all), 700..750, 4).await);
    let leader = c.settle(&all).await;
    let m = c.group(lagger).metrics();
    assert!(
        m.snapshot_index >= Some(upto),
        "the lagger caught up through a snapshot: {m:?}"
    );
    // Same high watermark, and byte-identical batches from where the lagger's log
    // restarted (the snapshot's next offset).
    assert_eq!(
        c.group(lagger).applied().next_offset,
        c.group(leader).applied().next_offset
    );
    let start = c.group(lagger).log_offsets().0;
    assert!(start > 0, "the lagger's log restarted after the snapshot");
    assert!(
        c.log_bytes_from(lagger, start).await == c.log_bytes_from(leader, start).await,
        "the lagger's log differs from the leader's after the snapshot point"
    );
    let tail: Vec<_> = acked
        .iter()
        .copied()
        .filter(|&(_, base, _)| base >= start)
        .collect();
    assert!(!tail.is_empty());
    assert_acked_in_log(&c.log_bytes_from(lagger, start).await, &tail);
    for id in c.running_ids() {
        c.kill(id).await;
    }
}

/// Runs `op` on whichever of `groups` leads, following "not leader" answers as a
/// client would (leadership may move at any time on a loaded machine).
async fn on_leader<T, F, Fut>(groups: &[Arc<RaftGroup>], op: F) -> T
where
    F: Fn(Arc<RaftGroup>) -> Fut,
    Fut: std::future::Future<Output = neo_raft::Result<T>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut at = 0;
    loop {
        match op(groups[at].clone()).await {
            Ok(r) => return r,
            Err(e @ (neo_raft::Error::NotLeader { .. } | neo_raft::Error::QuorumLost { .. })) => {
                if tokio::time::Instant::now() >= deadline {
                    // Say why: each replica's view (term, role, leader, log) at the end.
                    let views: Vec<_> = groups.iter().map(|g| g.metrics()).collect();
                    panic!("no leader after {DEADLINE:?} (last answer: {e}): {views:#?}");
                }
                let leader = leader_hint(&e);
                at = match groups
                    .iter()
                    .position(|g| Some(g.metrics().node_id) == leader)
                {
                    // Follow the hint, but never spin: a stale hint can point at a
                    // replica that answers "not leader" at once, again and again.
                    Some(i) => {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        i
                    }
                    None => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        (at + 1) % groups.len()
                    }
                };
            }
            Err(e) => panic!("operation failed: {e}"),
        }
    }
}

/// A linearizable read of node `id`'s metadata state.
async fn linearizable_meta(c: &Cluster, id: NodeId) -> neo_broker::Result<Arc<MetaState>> {
    let view = c.node(id).running.as_ref().expect("running").meta.clone();
    neo_broker::meta::linearizable(&c.group(id), &view).await
}

/// Proposes `cmd` to whichever of `groups` leads.
async fn propose_meta(groups: &[Arc<RaftGroup>], cmd: MetaCommand) -> MetaResponse {
    on_leader(groups, |g| {
        let cmd = cmd.clone();
        async move {
            neo_broker::meta::propose(&g, &cmd)
                .await
                .map_err(|e| match e {
                    neo_broker::Error::Raft(e) => e,
                    other => panic!("metadata command: {other}"),
                })
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metadata_group_snapshots_changes_membership_and_transfers_leadership() {
    // Nodes 1-3 bootstrap the metadata group; node 4 runs but is not a member yet.
    // Snapshots every 20 entries, so a new member catches up through one.
    let mut c = Cluster::start_with(4, 3, GroupKind::Metadata, 20).await;
    let voters = [1, 2, 3];
    for id in 1..=4u64 {
        let r = propose_meta(
            &c.groups(&voters),
            MetaCommand::RegisterNode {
                node_id: id,
                addr: c.node(id).addr.to_string(),
                client_addr: String::new(),
            },
        )
        .await;
        assert_eq!(r, MetaResponse::Done);
    }
    for t in 0..60 {
        let r = propose_meta(
            &c.groups(&voters),
            MetaCommand::CreateTopic {
                name: format!("t{t}"),
                replicas: vec![vec![1, 2, 3]],
                retention_ms: None,
                retention_bytes: None,
            },
        )
        .await;
        assert!(matches!(r, MetaResponse::TopicCreated { .. }), "{r:?}");
    }
    // A refused command is answered, and changes nothing.
    let r = propose_meta(
        &c.groups(&voters),
        MetaCommand::CreateTopic {
            name: "t0".into(),
            replicas: vec![vec![1]],
            retention_ms: None,
            retention_bytes: None,
        },
    )
    .await;
    assert!(matches!(r, MetaResponse::Refused(_)), "{r:?}");

    let leader = c.settle(&voters).await;
    assert!(
        c.group(leader).metrics().snapshot_index.is_some(),
        "snapshots were built"
    );
    let state = linearizable_meta(&c, leader)
        .await
        .expect("linearizable read");
    assert_eq!(state.topics.len(), 60);
    assert_eq!(state.nodes.len(), 4);
    let follower = voters
        .iter()
        .copied()
        .find(|&id| id != leader)
        .expect("follower");
    assert!(matches!(
        linearizable_meta(&c, follower).await,
        Err(neo_broker::Error::Raft(neo_raft::Error::NotLeader { leader: Some(l), .. }))
            if l == leader
    ));

    // Membership change under load: node 4 joins as a learner, then becomes a voter,
    // while topics keep being created.
    let load = {
        let groups = c.groups(&[1, 2, 3, 4]);
        tokio::spawn(async move {
            for t in 60..120 {
                propose_meta(
                    &groups,
                    MetaCommand::CreateTopic {
                        name: format!("t{t}"),
                        replicas: vec![vec![1, 2, 3]],
                        retention_ms: None,
                        retention_bytes: None,
                    },
                )
                .await;
            }
        })
    };
    let addr4 = c.node(4).addr.to_string();
    on_leader(&c.groups(&voters), |g| {
        let addr4 = addr4.clone();
        async move { g.add_learner(4, addr4).await }
    })
    .await;
    on_leader(&c.groups(&voters), |g| async move {
        g.change_membership([1, 2, 3, 4].into()).await
    })
    .await;
    load.await.expect("load");
    let all = [1, 2, 3, 4];
    let leader = c.settle(&all).await;
    let m = c.group(4).metrics();
    assert!(m.voters.contains(&4), "{m:?}");
    assert_eq!(c.meta(4).topics.len(), 120);

    // Leader transfer: hand leadership to node 4.
    c.group(leader).transfer_leader(4).await.expect("transfer");
    c.group(4)
        .wait_until(DEADLINE, "leadership", |m| m.role == Role::Leader)
        .await
        .expect("node 4 leads");

    // Node 1 leaves the group; the rest go on.
    let rest = [2, 3, 4];
    on_leader(&c.groups(&all), |g| async move {
        g.change_membership([2, 3, 4].into()).await
    })
    .await;
    let r = propose_meta(
        &c.groups(&rest),
        MetaCommand::DeleteTopic { name: "t1".into() },
    )
    .await;
    assert_eq!(r, MetaResponse::Done);
    let leader = c.settle(&rest).await;
    assert!(!c.group(leader).metrics().voters.contains(&1));
    for id in rest {
        assert_eq!(c.meta(id).topics.len(), 119, "node {id}");
    }
    for id in c.running_ids() {
        c.kill(id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_join_and_leave_over_grpc_and_status_reports_health() {
    use neo_cluster::membership;
    let mut c = Cluster::start_with(4, 3, GroupKind::Metadata, 1_000).await;
    let voters = [1, 2, 3];
    for id in voters {
        let r = propose_meta(
            &c.groups(&voters),
            MetaCommand::RegisterNode {
                node_id: id,
                addr: c.node(id).addr.to_string(),
                client_addr: String::new(),
            },
        )
        .await;
        assert_eq!(r, MetaResponse::Done);
    }
    let leader = c.settle(&voters).await;
    let follower = voters
        .iter()
        .copied()
        .find(|&id| id != leader)
        .expect("follower");

    // Node 4 joins through a follower (which answers with a leader hint).
    let seed = c.node(follower).addr.to_string();
    let addr4 = c.node(4).addr.to_string();
    membership::join(&seed, 4, &addr4).await.expect("join");
    let all = [1, 2, 3, 4];
    c.settle(&all).await;
    for id in all {
        let m = c.group(id).metrics();
        assert!(
            m.voters.contains(&4),
            "node {id} sees node 4 as a voter: {m:?}"
        );
    }
    // Joining again is a no-op.
    membership::join(&seed, 4, &addr4)
        .await
        .expect("join again");

    // Status lists every node with its address; all become healthy.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let status = loop {
        let s = membership::status(&c.node(4).addr.to_string())
            .await
            .expect("status");
        if s.nodes.len() == 4 && s.nodes.iter().all(|n| n.healthy) {
            break s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "status never all healthy: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for n in &status.nodes {
        assert_eq!(n.addr, c.node(n.node_id).addr.to_string());
        assert!(n.voter);
    }
    // A join for a live node's id from another address is refused (a restart at the
    // same address is not: the join above, and every static node's start).
    let victim = voters
        .iter()
        .copied()
        .find(|&id| id != follower)
        .expect("another voter");
    let err = membership::join(&seed, victim, "127.0.0.1:9")
        .await
        .expect_err("a live node's id cannot be taken");
    assert!(err.to_string().contains("is alive"), "{err}");
    let s = membership::status(&seed).await.expect("status");
    let n = s
        .nodes
        .iter()
        .find(|n| n.node_id == victim)
        .expect("listed");
    assert_eq!(n.addr, c.node(victim).addr.to_string(), "address kept");

    // Node 3 dies: status turns it unhealthy; then it is removed.
    c.kill(3).await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let s = membership::status(&c.node(1).addr.to_string())
            .await
            .expect("status");
        let n3 = s
            .nodes
            .iter()
            .find(|n| n.node_id == 3)
            .expect("node 3 listed");
        if !n3.healthy {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node 3 still healthy: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    membership::leave(&c.node(4).addr.to_string(), 3)
        .await
        .expect("leave");
    let rest = [1, 2, 4];
    let leader = c.settle(&rest).await;
    let m = c.group(leader).metrics();
    assert!(!m.voters.contains(&3) && !m.learners.contains(&3), "{m:?}");
    let s = membership::status(&c.node(leader).addr.to_string())
        .await
        .expect("status");
    assert!(s.nodes.iter().all(|n| n.node_id != 3), "{s:?}");
    for id in c.running_ids() {
        c.kill(id).await;
    }
}

/// Many partition groups on 3 nodes share one channel per peer: all elect leaders, all
/// commit, and the group id routes every RPC to the right group.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_partitions_on_three_nodes_elect_and_commit() {
    const GROUPS: u64 = 200;
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut addrs = Vec::new();
    for _ in 0..3 {
        addrs.push(neo_tests::free_addr());
    }
    let members: BTreeMap<NodeId, String> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| (i as u64 + 1, a.to_string()))
        .collect();
    let mut servers = Vec::new();
    let mut groups: BTreeMap<(NodeId, u64), Arc<RaftGroup>> = BTreeMap::new();
    for (i, addr) in addrs.iter().enumerate() {
        let id = i as u64 + 1;
        let transport = GrpcTransport::new(NetFilter::new());
        for (pid, paddr) in &members {
            if *pid != id {
                transport.set_peer(*pid, paddr).expect("peer");
            }
        }
        let transport = Arc::new(transport);
        let store = NodeStore::open(tmp.path().join(format!("node-{id}"))).expect("store");
        let registry = Arc::new(Registry::new());
        for g in 1..=GROUPS {
            let cfg = GroupConfig {
                group: g,
                node_id: id,
                kind: GroupKind::Partition,
                timing: RaftTiming::PARTITION,
                snapshot_every_entries: 1_000,
                encrypt_at_rest: false,
            };
            let group =
                RaftGroup::open(cfg, &store, transport.clone(), Box::new(neo_raft::LogOnly))
                    .await
                    .expect("open group");
            registry.insert(group.clone());
            groups.insert((id, g), group);
        }
        let plane = ControlPlane {
            node_id: id,
            registry,
            health: HealthMonitor::new(),
            meta: MetaMachine::new().1,
        };
        servers.push(neo_cluster::serve(*addr, plane).await.expect("serve"));
    }
    // Spread the bootstrapping (and so, usually, the first leadership) over the nodes.
    for g in 1..=GROUPS {
        groups[&(g % 3 + 1, g)]
            .bootstrap(&members)
            .await
            .expect("bootstrap");
    }
    // One write per group, all groups at once.
    let writes = (1..=GROUPS).map(|g| {
        let replicas: Vec<Arc<RaftGroup>> = (1..=3).map(|id| groups[&(id, g)].clone()).collect();
        async move {
            let (base, n) = on_leader(&replicas, |r| async move {
                r.propose_records(valid(batch(g, 2))).await
            })
            .await;
            (g, base, n)
        }
    });
    let mut bases = BTreeMap::new();
    for (g, base, n) in futures::future::join_all(writes).await {
        assert_eq!(n, 2);
        bases.insert(g, base);
    }
    for ((id, g), group) in &groups {
        group
            .wait_until(DEADLINE, "applied", |m| m.applied_index >= Some(2))
            .await
            .unwrap_or_else(|e| panic!("node {id} group {g}: {e}"));
        // Each group's log holds exactly its own batch, at the same offset on every node.
        let (start, end) = group.log_offsets();
        let (bytes, _) = group.read_log(start, 1 << 20).await.expect("read");
        assert!(end > start);
        let mut pos = 0;
        let mut found = false;
        // The bootstrap membership entry and the leader's blank take no record offsets:
        // the acknowledged batch starts right after the record batches stored before
        // it (none, unless a write that ended in QuorumLost still committed a copy
        // before its retry).
        let mut records_before = 0;
        while pos < bytes.len() {
            let h = qiss::batch::check(&bytes[pos..]).expect("valid batch");
            if !h.is_control() && h.base_offset < bases[g] {
                records_before += u64::from(h.record_count);
            }
            if !h.is_control() {
                assert_eq!(
                    &bytes[pos + 77..pos + h.batch_length as usize],
                    format!("entry-{g}").as_bytes()
                );
                found = true;
            }
            pos += h.batch_length as usize;
        }
        assert!(found, "node {id} group {g} has its batch");
        assert_eq!(
            bases[g], records_before,
            "node {id} group {g}: offsets are dense from 0"
        );
    }
    for group in groups.values() {
        group.shutdown().await.expect("shutdown");
    }
    for s in servers {
        s.shutdown().await;
    }
}

/// A batch of `records` records stamped by idempotent producer `producer` with its
/// first sequence `sequence`.
fn stamped(producer: i64, sequence: i32, records: u32) -> Bytes {
    let mut b = qiss::batch::BatchBuilder::new();
    b.producer(producer, 0, sequence);
    for i in 0..records {
        b.push(
            1,
            None,
            &[],
            format!("p{producer}-{}", sequence as u32 + i).as_bytes(),
        )
        .expect("push");
    }
    b.build().expect("build")
}

/// Writes `batch` through the broker's idempotence gate (acks=all).
async fn produce(p: &Partition, batch: Bytes) -> neo_broker::Result<(u64, u32)> {
    p.append(valid(batch), WriteAck::Quorum).await
}

/// Counts the stored batches of `producer` in `log`.
fn stored_copies(log: &[u8], producer: i64) -> usize {
    let mut pos = 0;
    let mut n = 0;
    while pos < log.len() {
        let h = qiss::batch::check(&log[pos..]).expect("stored batch is valid");
        if h.producer_id == producer {
            n += 1;
        }
        pos += h.batch_length as usize;
    }
    n
}

/// A retried idempotent batch is answered with its first copy's offset and not stored
/// again: on the same leader (sequentially and concurrently), on a new leader after the
/// old one is killed (the producer table is replicated state), and on a restarted node
/// that becomes leader (the table is rebuilt from the log).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotent_batches_are_stored_once_across_failover() {
    const PRODUCER: i64 = 42;
    let mut c = Cluster::start(3).await;
    let all = [1, 2, 3];
    let leader = c.leader(&all).await;
    let g = c.partition(leader);
    let mut acked = BTreeMap::new();
    for i in 0..20 {
        let seq = i * 3;
        let r = produce(&g, stamped(PRODUCER, seq, 3)).await.expect("write");
        acked.insert(seq, r);
    }
    // The same batches again: same answers, nothing stored.
    let size = g.group().log_offsets().1;
    for (&seq, &r) in acked.iter().rev().take(5) {
        assert_eq!(produce(&g, stamped(PRODUCER, seq, 3)).await.unwrap(), r);
    }
    assert_eq!(g.group().log_offsets().1, size, "a duplicate was stored");
    // Concurrent copies of a new batch: one is stored, all get its offset.
    let copies: Vec<_> = (0..4)
        .map(|_| {
            let g = g.clone();
            tokio::spawn(async move { produce(&g, stamped(PRODUCER, 60, 2)).await })
        })
        .collect();
    let mut answers = Vec::new();
    for t in copies {
        answers.push(t.await.unwrap().expect("write"));
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:?}");
    acked.insert(60, answers[0]);
    assert_eq!(stored_copies(&c.log_bytes(leader).await, PRODUCER), 21);

    // Kill the leader: the new one answers retries with the original offsets.
    drop(g);
    c.kill(leader).await;
    let survivors: Vec<NodeId> = all.iter().copied().filter(|&id| id != leader).collect();
    let new_leader = c.leader(&survivors).await;
    let g2 = c.partition(new_leader);
    // The last RECENT_BATCHES are remembered; older ones are refused, not stored.
    let remembered = acked.len() - neo_broker::partition::producers::RECENT_BATCHES;
    for (&seq, &r) in acked.iter().skip(remembered) {
        let records = if seq == 60 { 2 } else { 3 };
        assert_eq!(
            produce(&g2, stamped(PRODUCER, seq, records)).await.unwrap(),
            r,
            "retry of sequence {seq} on the new leader"
        );
    }
    assert!(matches!(
        produce(&g2, stamped(PRODUCER, 0, 3)).await,
        Err(neo_broker::Error::DuplicateSequence { .. })
    ));
    let next = produce(&g2, stamped(PRODUCER, 62, 1)).await.unwrap();
    assert!(next.0 > answers[0].0);
    assert_eq!(stored_copies(&c.log_bytes(new_leader).await, PRODUCER), 22);
    drop(g2);

    // Restart the old leader and hand it leadership: its table was rebuilt from its log.
    c.boot(leader).await;
    let last = c.group(new_leader).metrics().last_log_index.unwrap();
    c.applied(&[leader], last).await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while c.leader(&all).await != leader {
        assert!(tokio::time::Instant::now() < deadline, "transfer failed");
        let current = c.leader(&all).await;
        let _ = c.group(current).transfer_leader(leader).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let g1 = c.partition(leader);
    assert_eq!(produce(&g1, stamped(PRODUCER, 62, 1)).await.unwrap(), next);
    assert_eq!(
        produce(&g1, stamped(PRODUCER, 57, 3)).await.unwrap(),
        acked[&57]
    );
    let settled = c.settle(&all).await;
    for id in all {
        assert_eq!(
            stored_copies(&c.log_bytes(id).await, PRODUCER),
            22,
            "node {id}"
        );
    }
    assert_eq!(settled, leader);
    drop(g1);
    for id in c.running_ids() {
        c.kill(id).await;
    }
}

/// Kill every node while a stamped batch is appended on the leader but not committed,
/// restart them all: whoever leads (openraft may restore the old leader in its old term,
/// with no new blank entry) answers the retry with the first copy's offset once it
/// commits, or stores it once; never twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotent_retry_after_every_node_restarts_is_stored_once() {
    const PRODUCER: i64 = 43;
    let mut c = Cluster::start(3).await;
    let all = [1, 2, 3];
    let leader = c.leader(&all).await;
    let g = c.partition(leader);
    produce(&g, stamped(PRODUCER, 0, 2)).await.expect("write");
    // Cut the leader off, so the next batch is appended on it only.
    let others: Vec<NodeId> = all.iter().copied().filter(|&id| id != leader).collect();
    c.node(leader).filter.isolate(others.iter().copied());
    for &id in &others {
        c.node(id).filter.drop_to(leader);
    }
    let stranded = {
        let g = g.clone();
        tokio::spawn(async move { produce(&g, stamped(PRODUCER, 2, 2)).await })
    };
    g.group()
        .wait_until(DEADLINE, "appended", |m| {
            m.last_log_index > m.committed_index
        })
        .await
        .expect("appended locally");
    drop(g);
    for id in all {
        c.kill(id).await;
    }
    let _ = stranded.await;
    for n in &c.nodes {
        n.filter.heal_all();
    }
    for id in all {
        c.boot(id).await;
    }
    // The retry, until some leader answers it.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let answer = loop {
        let l = c.leader(&all).await;
        match produce(&c.partition(l), stamped(PRODUCER, 2, 2)).await {
            Ok(r) => break r,
            Err(e) => {
                assert!(tokio::time::Instant::now() < deadline, "retry failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let settled = c.settle(&all).await;
    for id in all {
        assert_eq!(
            stored_copies(&c.log_bytes(id).await, PRODUCER),
            2,
            "node {id}: the retried batch is stored exactly once (answer {answer:?})"
        );
    }
    let _ = settled;
    for id in c.running_ids() {
        c.kill(id).await;
    }
}

/// The test CA (`neo_tests::TestPki`), issuing node certificates for loopback and
/// the name `neo-cluster`.
struct Pki(neo_tests::TestPki);

/// The names every test node certificate carries.
const NODE_SANS: [&str; 3] = ["127.0.0.1", "localhost", "neo-cluster"];

impl Pki {
    fn new(name: &str) -> Pki {
        Pki(neo_tests::TestPki::new(name))
    }

    /// PEMs of a certificate of node `id` (URI SAN `neo-node:<id>`) and its key.
    fn node_pems(&self, id: NodeId) -> (String, String) {
        self.0.node_leaf(id, &format!("node-{id}"), &NODE_SANS)
    }

    fn ca_pem(&self) -> String {
        self.0.ca_pem().to_string()
    }

    fn node_tls(&self, id: NodeId) -> ClusterTls {
        let (cert, key) = self.node_pems(id);
        ClusterTls::from_pem(cert, key, self.ca_pem()).expect("cluster tls")
    }

    /// A tonic channel to `addr` over mTLS with the certificate `cert` of this CA.
    async fn channel(&self, cert: (String, String), addr: SocketAddr) -> tonic::transport::Channel {
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(self.ca_pem()))
            .identity(tonic::transport::Identity::from_pem(cert.0, cert.1))
            .domain_name("localhost");
        tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
            .expect("endpoint")
            .tls_config(tls)
            .expect("tls")
            .timeout(DEADLINE)
            .connect()
            .await
            .expect("connect")
    }
}

/// The metadata group on 3 voters over mTLS: they elect and replicate; a 4th node with
/// a certificate of the same CA joins over mTLS (and so do status calls); clients
/// without a certificate, with one from another CA, in plaintext, or checking the
/// wrong server name are refused, and the cluster goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mtls_cluster_elects_replicates_and_refuses_strangers() {
    use neo_cluster::membership;
    let pki = Pki::new("neo test cluster ca");
    let ca_pem = pki.ca_pem();
    let opts = Opts {
        pki: Some(pki),
        snapshot_chunk_bytes: None,
    };
    let c = Cluster::start_opts(4, 3, GroupKind::Metadata, 1_000, opts).await;
    let voters = [1, 2, 3];
    for id in voters {
        let r = propose_meta(
            &c.groups(&voters),
            MetaCommand::RegisterNode {
                node_id: id,
                addr: c.node(id).addr.to_string(),
                client_addr: String::new(),
            },
        )
        .await;
        assert_eq!(r, MetaResponse::Done);
    }
    for t in 0..10 {
        let r = propose_meta(
            &c.groups(&voters),
            MetaCommand::CreateTopic {
                name: format!("t{t}"),
                replicas: vec![vec![1, 2, 3]],
                retention_ms: None,
                retention_bytes: None,
            },
        )
        .await;
        assert!(matches!(r, MetaResponse::TopicCreated { .. }), "{r:?}");
    }
    let leader = c.settle(&voters).await;
    for id in voters {
        assert_eq!(c.meta(id).topics.len(), 10, "node {id}");
    }
    let follower = voters
        .into_iter()
        .find(|&id| id != leader)
        .expect("follower");
    let seed = c.node(follower).addr.to_string();
    let tls1 = c.node(1).tls.clone().expect("tls");

    // Strangers. A plaintext client:
    let err = membership::status(&seed)
        .await
        .expect_err("plaintext refused");
    eprintln!("plaintext client: {err}");
    // A TLS client that trusts the CA but has no certificate of its own:
    let no_cert = {
        let ca = tonic::transport::Certificate::from_pem(&ca_pem);
        let endpoint = tonic::transport::Endpoint::from_shared(format!("https://{seed}"))
            .expect("endpoint")
            .tls_config(tonic::transport::ClientTlsConfig::new().ca_certificate(ca))
            .expect("tls config");
        match endpoint.connect().await {
            Err(e) => Err(e.to_string()),
            Ok(ch) => neo_cluster::pb::membership::membership_client::MembershipClient::new(ch)
                .status(neo_cluster::pb::membership::StatusRequest {})
                .await
                .map(|_| ())
                .map_err(|s| s.to_string()),
        }
    };
    eprintln!("client without a certificate: {no_cert:?}");
    assert!(
        no_cert.is_err(),
        "a client without a certificate is refused"
    );
    // A node whose certificate another CA signed (it trusts that CA only):
    let other = Pki::new("another ca").node_tls(9);
    let err = membership::status_with_tls(&seed, Some(&other))
        .await
        .expect_err("a certificate of another CA is refused");
    eprintln!("client of another CA: {err}");
    membership::join_with_tls(&seed, 9, "127.0.0.1:1", "", Some(&other))
        .await
        .expect_err("a stranger cannot join");
    // A certificate of another CA, but trusting ours: the server still refuses it.
    let (cert, key) = Pki::new("a third ca").node_pems(8);
    let half = ClusterTls::from_pem(cert, key, ca_pem.clone()).expect("tls");
    let err = membership::status_with_tls(&seed, Some(&half))
        .await
        .expect_err("a client certificate of another CA is refused");
    eprintln!("client certificate of another CA: {err}");
    // Its Raft transport gets nowhere either.
    let stranger = GrpcTransport::with_tls(NetFilter::new(), Some(half));
    stranger
        .set_peer(leader, &c.node(leader).addr.to_string())
        .expect("peer");
    assert!(
        !stranger.heartbeat(9, leader).await,
        "stranger heartbeat answered"
    );
    // A member checking a server name the certificates do not carry:
    let wrong_name = tls1.clone().with_server_name("not-neo").expect("name");
    let err = membership::status_with_tls(&seed, Some(&wrong_name))
        .await
        .expect_err("wrong server name refused");
    eprintln!("wrong server name: {err}");
    // ... and one they do carry.
    let fixed_name = tls1.clone().with_server_name("neo-cluster").expect("name");
    membership::status_with_tls(&seed, Some(&fixed_name))
        .await
        .expect("fixed server name accepted");
    let voters_seen = membership::status_with_tls(&seed, Some(&tls1))
        .await
        .expect("status over mTLS");
    assert_eq!(voters_seen.nodes.len(), 3, "{voters_seen:?}");
    // Certificates of the cluster CA are held to the node id they name (URI SAN
    // `neo-node:<id>`): a join or leave of another node, a Raft RPC from a node that is
    // not a member, and anything but status from a certificate without an id are
    // refused, having changed nothing.
    {
        use neo_cluster::pb::membership::membership_client::MembershipClient;
        use neo_cluster::pb::membership::{JoinRequest, LeaveRequest, StatusRequest};
        use neo_cluster::pb::raft::RaftRequest;
        use neo_cluster::pb::raft::raft_client::RaftClient;
        use tonic::Code;
        let pki = c.opts.pki.as_ref().expect("pki");
        let at = c.node(leader).addr;
        let as_node9 = pki.channel(pki.node_pems(9), at).await;
        let no_id = pki.channel(pki.0.leaf("old-node", &NODE_SANS), at).await;
        let join4 = || JoinRequest {
            node_id: 4,
            addr: c.node(4).addr.to_string(),
            client_addr: String::new(),
        };
        let s = MembershipClient::new(as_node9.clone())
            .join(join4())
            .await
            .expect_err("a join of another node");
        assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
        assert!(s.message().contains("names node 9, not node 4"), "{s:?}");
        let s = MembershipClient::new(no_id.clone())
            .join(join4())
            .await
            .expect_err("a join without a node id");
        assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
        assert!(s.message().contains("names no node id"), "{s:?}");
        let s = MembershipClient::new(as_node9.clone())
            .leave(LeaveRequest { node_id: follower })
            .await
            .expect_err("a leave of another node by a non-voter");
        assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
        MembershipClient::new(no_id.clone())
            .status(StatusRequest {})
            .await
            .expect("status is read-only: open to the cluster CA");
        let junk = || RaftRequest {
            group_id: METADATA_GROUP,
            ..Default::default()
        };
        for ch in [as_node9, no_id] {
            let s = RaftClient::new(ch)
                .vote(junk())
                .await
                .expect_err("not a member");
            assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
        }
        // A member's (junk) vote gets through to the group, which cannot decode it.
        let member = pki.channel(pki.node_pems(follower), at).await;
        let s = RaftClient::new(member)
            .vote(junk())
            .await
            .expect_err("junk");
        assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
        assert_eq!(c.group(leader).metrics().voters.len(), 3, "nobody left");
    }
    let registered = c.meta(leader).nodes.len();
    assert_eq!(registered, 3, "the stranger registered nothing");

    // Node 4 (a certificate of the cluster CA) joins over mTLS and catches up.
    let tls4 = c.node(4).tls.clone().expect("tls");
    let addr4 = c.node(4).addr.to_string();
    membership::join_with_tls(&seed, 4, &addr4, "", Some(&tls4))
        .await
        .expect("join over mTLS");
    let all = [1, 2, 3, 4];
    let leader = c.settle(&all).await;
    assert!(c.group(leader).metrics().voters.contains(&4));
    let r = propose_meta(
        &c.groups(&all),
        MetaCommand::CreateTopic {
            name: "after".into(),
            replicas: vec![vec![1, 2, 3]],
            retention_ms: None,
            retention_bytes: None,
        },
    )
    .await;
    assert!(matches!(r, MetaResponse::TopicCreated { .. }), "{r:?}");
    c.settle(&all).await;
    for id in all {
        assert_eq!(c.meta(id).topics.len(), 11, "node {id}");
    }
    let mut c = c;
    for id in c.running_ids() {
        c.kill(id).await;
    }
}

/// A snapshot transfer cut part-way is resumed: the retry sends only the chunks the
/// receiver lacks, and the new member ends with the leader's state.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_transfer_resumes_after_a_cut() {
    const CHUNK: usize = 256;
    const CUT_AFTER: u64 = 3;
    let opts = Opts {
        pki: None,
        snapshot_chunk_bytes: Some(CHUNK),
    };
    let mut c = Cluster::start_opts(4, 3, GroupKind::Metadata, 20, opts).await;
    let voters = [1, 2, 3];
    for id in voters {
        let r = propose_meta(
            &c.groups(&voters),
            MetaCommand::RegisterNode {
                node_id: id,
                addr: c.node(id).addr.to_string(),
                client_addr: String::new(),
            },
        )
        .await;
        assert_eq!(r, MetaResponse::Done);
    }
    for t in 0..60 {
        let r = propose_meta(
            &c.groups(&voters),
            MetaCommand::CreateTopic {
                name: format!("topic-with-a-longish-name-{t}"),
                replicas: vec![vec![1, 2, 3]],
                retention_ms: None,
                retention_bytes: None,
            },
        )
        .await;
        assert!(matches!(r, MetaResponse::TopicCreated { .. }), "{r:?}");
    }
    let leader = c.settle(&voters).await;
    assert!(
        c.group(leader).metrics().purged_index.is_some(),
        "log purged"
    );
    // The next snapshot transfer to node 4, from whichever voter leads, breaks after
    // CUT_AFTER chunks.
    for id in voters {
        c.node(id).filter.cut_snapshot_after(4, CUT_AFTER);
    }
    let addr4 = c.node(4).addr.to_string();
    on_leader(&c.groups(&voters), |g| {
        let addr4 = addr4.clone();
        async move { g.add_learner(4, addr4).await }
    })
    .await;
    let leader = c.leader(&voters).await;
    let last = c.group(leader).metrics().last_log_index.expect("log");
    c.applied(&[4], last).await;

    let s = voters
        .iter()
        .map(|&id| c.transport(id).snapshot_stats())
        .fold(neo_cluster::SnapshotStats::default(), |a, b| {
            neo_cluster::SnapshotStats {
                attempts: a.attempts + b.attempts,
                resumed: a.resumed + b.resumed,
                chunks_sent: a.chunks_sent + b.chunks_sent,
                bytes_sent: a.bytes_sent + b.bytes_sent,
                bytes_skipped: a.bytes_skipped + b.bytes_skipped,
                completed: a.completed + b.completed,
            }
        });
    eprintln!("snapshot transfer stats: {s:?}");
    // One cut attempt, then one resumed attempt that completed.
    assert_eq!((s.attempts, s.resumed, s.completed), (2, 1, 1), "{s:?}");
    let cut_bytes = CUT_AFTER * CHUNK as u64;
    assert_eq!(
        s.bytes_skipped, cut_bytes,
        "resumed after the cut chunks: {s:?}"
    );
    let total = s.bytes_sent - cut_bytes + s.bytes_skipped;
    let total_chunks = total.div_ceil(CHUNK as u64);
    assert!(
        total_chunks > CUT_AFTER + 1,
        "a multi-chunk snapshot: {s:?}"
    );
    let retry_chunks = s.chunks_sent - CUT_AFTER;
    assert_eq!(retry_chunks, total_chunks - CUT_AFTER, "{s:?}");
    assert!(retry_chunks < total_chunks);
    assert_eq!(s.bytes_sent, total, "every byte sent exactly once: {s:?}");

    // Node 4 holds the leader's state.
    let m = c.group(4).metrics();
    assert!(
        m.snapshot_index.is_some(),
        "node 4 installed a snapshot: {m:?}"
    );
    assert_eq!(c.meta(4), c.meta(leader));
    assert_eq!(c.meta(4).topics.len(), 60);
    for id in c.running_ids() {
        c.kill(id).await;
    }
}

/// The proof raft takes: these batches (`neo_storage::testing`) frame their records
/// loosely, so they get the replica's receipt check (header, CRC, length), not a
/// broker's full validation.
fn valid(batch: bytes::Bytes) -> qiss::batch::ValidatedBatch {
    qiss::batch::ValidatedBatch::check(batch).expect("valid batch")
}
