//! Forwarding a record batch to a partition group's leader (`neo_raft::forward_records`,
//! `RpcKind::ForwardRecords`): three replicas in one process, connected by an in-memory
//! transport that counts the forwards each node receives, plus a fourth node that hosts
//! no replica (as a broker forwarding to another partition group's leader).
//!
//! No timing is asserted: every wait is for an outcome, bounded by a deadline that only
//! turns a hang into a failure.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use neo_raft::{
    Error, ForwardAttemptError, ForwardError, ForwardRecordsError, GroupConfig, GroupId, GroupKind,
    NodeId, NodeStore, RaftGroup, RaftTiming, Registry, Role, RpcKind, Transport, TransportError,
    forward_records,
};
use qiss::batch::{BatchBuilder, BatchHeader, CONTROL_FLAG, CRC_START};
use serde::Serialize;

const DEADLINE: Duration = Duration::from_secs(30);
const GROUP: GroupId = 5;
/// A node that hosts no replica of `GROUP`.
const OUTSIDER: NodeId = 4;

/// The nodes' registries, by node id, and the forwards each node was sent.
#[derive(Default)]
struct Net {
    nodes: RwLock<HashMap<NodeId, Arc<Registry>>>,
    /// Nodes whose RPCs fail as unreachable (the registry stays: it is still running).
    down: Mutex<HashSet<NodeId>>,
    forwards: Mutex<HashMap<NodeId, u32>>,
}

impl Net {
    fn forwards_to(&self, node: NodeId) -> u32 {
        let f = self.forwards.lock().expect("lock");
        f.get(&node).copied().unwrap_or(0)
    }

    fn forwards_total(&self) -> u32 {
        self.forwards.lock().expect("lock").values().sum()
    }
}

#[derive(Clone)]
struct Loopback(Arc<Net>);

impl Loopback {
    fn registry(&self, target: NodeId) -> Result<Arc<Registry>, TransportError> {
        let unreachable = |reason: &str| TransportError::Unreachable {
            target,
            reason: reason.into(),
        };
        if self.0.down.lock().expect("lock").contains(&target) {
            return Err(unreachable("down"));
        }
        let nodes = self.0.nodes.read().expect("net lock");
        nodes
            .get(&target)
            .cloned()
            .ok_or_else(|| unreachable("not running"))
    }
}

fn elapsed(target: NodeId, timeout: Duration) -> TransportError {
    TransportError::Timeout {
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
        if kind == RpcKind::ForwardRecords {
            *self
                .0
                .forwards
                .lock()
                .expect("lock")
                .entry(target)
                .or_default() += 1;
        }
        let registry = self.registry(target);
        Box::pin(async move {
            let r = tokio::time::timeout(timeout, registry?.handle(group, kind, &body))
                .await
                .map_err(|_| elapsed(target, timeout))?;
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
            .map_err(|_| elapsed(target, timeout))?;
            r.map(Bytes::from).map_err(|e| TransportError::Network {
                target,
                reason: e.to_string(),
            })
        })
    }
}

struct Cluster {
    net: Arc<Net>,
    _dirs: Vec<tempfile::TempDir>,
    _stores: Vec<NodeStore>,
    groups: HashMap<NodeId, Arc<RaftGroup>>,
}

impl Cluster {
    /// Replicas on nodes 1..=3, bootstrapped, and node [`OUTSIDER`] with an empty
    /// registry.
    async fn start() -> Cluster {
        let net = Arc::new(Net::default());
        let (mut dirs, mut stores, mut groups) = (Vec::new(), Vec::new(), HashMap::new());
        for node in 1..=3 {
            let dir = tempfile::tempdir().expect("tmp");
            let store = NodeStore::open(dir.path()).expect("store");
            let g = RaftGroup::open(
                GroupConfig {
                    group: GROUP,
                    node_id: node,
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
                Arc::new(Loopback(net.clone())),
                Box::new(neo_raft::LogOnly),
            )
            .await
            .expect("open");
            let registry = Arc::new(Registry::new());
            registry.insert(g.clone());
            net.nodes.write().expect("lock").insert(node, registry);
            groups.insert(node, g);
            dirs.push(dir);
            stores.push(store);
        }
        net.nodes
            .write()
            .expect("lock")
            .insert(OUTSIDER, Arc::new(Registry::new()));
        let members: BTreeMap<NodeId, String> = (1..=3).map(|n| (n, format!("node-{n}"))).collect();
        groups[&1].bootstrap(&members).await.expect("bootstrap");
        Cluster {
            net,
            _dirs: dirs,
            _stores: stores,
            groups,
        }
    }

    fn registry(&self, node: NodeId) -> Arc<Registry> {
        self.net.nodes.read().expect("lock")[&node].clone()
    }

    fn transport(&self) -> Loopback {
        Loopback(self.net.clone())
    }

    /// Waits until one replica leads and the others follow it, in one term; returns the
    /// leader and the two followers.
    async fn settle(&self) -> (NodeId, NodeId, NodeId) {
        let started = std::time::Instant::now();
        loop {
            let ms: Vec<_> = (1..=3).map(|n| self.groups[&n].metrics()).collect();
            if let Some(l) = ms.iter().find(|m| m.role == Role::Leader) {
                let lid = l.node_id;
                // ... and the leader has applied its whole log (its term's first
                // entries take offsets: a test reading the next offset must not race them).
                if ms.iter().all(|m| m.leader == Some(lid) && m.term == l.term)
                    && l.applied_index >= l.last_log_index
                {
                    let mut f = (1..=3).filter(|&n| n != lid);
                    let (a, b) = (f.next().expect("f1"), f.next().expect("f2"));
                    return (lid, a, b);
                }
            }
            assert!(started.elapsed() < DEADLINE, "no leader: {ms:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Forwards `batch` as node `from` would, to the replicas in `order`.
    async fn forward(
        &self,
        from: NodeId,
        order: &[NodeId],
        batch: Bytes,
    ) -> Result<(u64, u32), ForwardRecordsError> {
        forward_records(
            &self.registry(from),
            from,
            &self.transport(),
            order,
            GROUP,
            batch,
            DEADLINE,
        )
        .await
    }

    /// Sends one raw `ForwardRecords` RPC to `target` (as neo-cluster would carry it)
    /// and decodes the answer.
    async fn rpc(
        &self,
        target: NodeId,
        group: GroupId,
        body: Vec<u8>,
    ) -> Result<(u64, u32), ForwardError> {
        let reply = self
            .transport()
            .send(
                target,
                group,
                RpcKind::ForwardRecords,
                Bytes::from(body),
                DEADLINE,
            )
            .await
            .expect("an answer");
        qiss::from_slice(&reply).expect("a forward answer")
    }

    /// The leader's log end and last index: unchanged when nothing was stored.
    fn stored(&self, leader: NodeId) -> ((u64, u64), Option<u64>) {
        let g = &self.groups[&leader];
        (g.log_offsets(), g.metrics().last_log_index)
    }
}

/// The body of a `ForwardRecords` request, as neo-raft encodes it (the wire format).
#[derive(Serialize)]
struct ForwardRequest {
    #[serde(with = "qiss::bytes")]
    batch: Bytes,
    timeout_ms: u64,
}

fn request(batch: Bytes) -> Vec<u8> {
    qiss::to_vec(&ForwardRequest {
        batch,
        timeout_ms: DEADLINE.as_millis() as u64,
    })
    .expect("encode")
}

fn batch(values: &[&str]) -> Bytes {
    let mut b = BatchBuilder::new();
    for v in values {
        b.push(1, Some(b"k"), &[], v.as_bytes()).expect("push");
    }
    b.build().expect("build")
}

/// A well-formed batch with the control attribute set (CRC recomputed).
fn control_batch() -> Bytes {
    let mut buf = batch(&["c"]).to_vec();
    let mut h = BatchHeader::parse(&buf).expect("header");
    h.attributes |= CONTROL_FLAG;
    h.write_to(&mut buf);
    h.crc = crc32fast::hash(&buf[CRC_START..]);
    h.write_to(&mut buf);
    Bytes::from(buf)
}

fn stamped_batch() -> Bytes {
    let mut b = BatchBuilder::new();
    b.producer(11, 0, 0);
    b.push(1, None, &[], b"v").expect("push");
    b.build().expect("build")
}

/// The values of the records stored at `base..base + count` in `g`'s log.
async fn values_at(g: &RaftGroup, base: u64, count: u32) -> Vec<String> {
    g.wait_until(DEADLINE, "applied", |_| {
        g.applied().next_offset >= base + u64::from(count)
    })
    .await
    .expect("applied");
    let (bytes, _) = g.read_log(base, 1 << 20).await.expect("read");
    let mut out = Vec::new();
    for b in qiss::batch::split_batches(bytes) {
        let b = qiss::batch::RecordBatch::new(b.expect("batch")).expect("valid");
        for r in b.records() {
            if (base..base + u64::from(count)).contains(&r.offset()) {
                out.push(String::from_utf8(r.value().to_vec()).expect("utf8"));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_forwarded_to_a_follower_is_committed_at_the_leader() {
    let c = Cluster::start().await;
    let (leader, f1, f2) = c.settle().await;

    // From a node without a replica, asking a follower first: it answers NotLeader with
    // its hint, which is followed; the leader commits the batch.
    let before = c.groups[&leader].applied().next_offset;
    let (base, n) = c
        .forward(OUTSIDER, &[f1, f2, leader], batch(&["a", "b", "c"]))
        .await
        .expect("forwarded");
    assert_eq!((base, n), (before, 3));
    assert_eq!((c.net.forwards_to(f1), c.net.forwards_to(leader)), (1, 1));
    assert_eq!(
        c.net.forwards_to(f2),
        0,
        "the hint went straight to the leader"
    );
    assert_eq!(
        values_at(&c.groups[&leader], base, n).await,
        ["a", "b", "c"]
    );
    // Committed means a quorum has it: every replica ends with it.
    for node in [f1, f2] {
        assert_eq!(values_at(&c.groups[&node], base, n).await, ["a", "b", "c"]);
    }

    // From a follower's node: its replica knows the leader, one RPC.
    let sent = c.net.forwards_total();
    let (base2, _) = c
        .forward(f1, &[f1, f2, leader], batch(&["d"]))
        .await
        .expect("forwarded");
    assert_eq!(base2, base + 3);
    assert_eq!(c.net.forwards_total() - sent, 1);
    assert_eq!(c.net.forwards_to(leader), 2);

    // From the leader's node: proposed locally, no RPC at all.
    let sent = c.net.forwards_total();
    let (base3, _) = c
        .forward(leader, &[f1, f2, leader], batch(&["e"]))
        .await
        .expect("proposed locally");
    assert_eq!(base3, base2 + 1);
    assert_eq!(c.net.forwards_total(), sent);
    assert_eq!(values_at(&c.groups[&leader], base2, 2).await, ["d", "e"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_batch_is_refused_with_a_typed_error_and_nothing_stored() {
    let c = Cluster::start().await;
    let (leader, f1, _) = c.settle().await;
    // The term's first entries are applied: nothing else writes now.
    c.forward(OUTSIDER, &[leader], batch(&["x"]))
        .await
        .expect("forwarded");
    let stored = c.stored(leader);

    // The sender's check refuses before anything is sent.
    let sent = c.net.forwards_total();
    let refused = [
        (control_batch(), "control"),
        (Bytes::from_static(b"not a record batch at all"), "garbage"),
        (stamped_batch(), "stamped"),
    ];
    for (bad, what) in &refused {
        match c.forward(OUTSIDER, &[f1, leader], bad.clone()).await {
            Err(ForwardRecordsError::BadBatch { group, source }) => {
                assert_eq!(group, GROUP);
                let expected = match *what {
                    "control" => matches!(source, Error::ControlBatch),
                    "garbage" => matches!(source, Error::BadBatch { .. }),
                    _ => matches!(source, Error::StampedBatch { producer_id: 11 }),
                };
                assert!(expected, "{what}: {source}");
            }
            other => panic!("{what}: expected BadBatch, got {other:?}"),
        }
    }
    assert_eq!(c.net.forwards_total(), sent, "nothing was sent");

    // The leader checks again what a peer sends it: a typed refusal.
    let mut damaged = batch(&["y"]).to_vec();
    let last = damaged.len() - 1;
    damaged[last] ^= 0x20;
    for (bad, what) in refused
        .into_iter()
        .chain([(Bytes::from(damaged), "bad crc")])
    {
        match c.rpc(leader, GROUP, request(bad)).await {
            Err(ForwardError::BadBatch { reason }) => {
                assert!(!reason.is_empty(), "{what}");
            }
            other => panic!("{what}: expected BadBatch, got {other:?}"),
        }
    }
    // A body that is not a forward request at all is an error, not a panic.
    assert!(
        c.transport()
            .send(
                leader,
                GROUP,
                RpcKind::ForwardRecords,
                Bytes::from_static(b"\xff\xff\xff"),
                DEADLINE,
            )
            .await
            .is_err()
    );
    assert_eq!(c.stored(leader), stored, "nothing stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_does_not_lead_answers_not_leader_and_the_hint_is_followed() {
    let c = Cluster::start().await;
    let (leader, f1, f2) = c.settle().await;

    // A follower refuses with its hint; nothing is stored there or anywhere.
    let stored = c.stored(leader);
    assert_eq!(
        c.rpc(f1, GROUP, request(batch(&["n"]))).await,
        Err(ForwardError::NotLeader {
            leader: Some(leader)
        })
    );
    // A node without the group says so.
    assert_eq!(
        c.rpc(OUTSIDER, GROUP, request(batch(&["n"]))).await,
        Err(ForwardError::UnknownGroup)
    );
    assert_eq!(c.stored(leader), stored);

    // forward_records given only the follower follows the hint to the leader.
    let (base, n) = c
        .forward(OUTSIDER, &[f1], batch(&["h"]))
        .await
        .expect("forwarded");
    assert_eq!(values_at(&c.groups[&leader], base, n).await, ["h"]);

    // An unreachable replica is passed for the next one.
    c.net.down.lock().expect("lock").insert(f2);
    let (base2, _) = c
        .forward(OUTSIDER, &[f2, leader], batch(&["u"]))
        .await
        .expect("forwarded past the unreachable replica");
    assert_eq!(base2, base + 1);

    // After a leader change, the old leader's hint leads to the new one.
    let new_leader = f1;
    c.groups[&leader]
        .transfer_leader(new_leader)
        .await
        .expect("transfer");
    c.groups[&new_leader]
        .wait_until(DEADLINE, "leads", |m| m.role == Role::Leader)
        .await
        .expect("new leader");
    let (base3, _) = c
        .forward(OUTSIDER, &[leader], batch(&["t"]))
        .await
        .expect("forwarded to the new leader");
    assert_eq!(values_at(&c.groups[&new_leader], base3, 1).await, ["t"]);

    // No replica reachable: the call ends at its deadline with the last failure.
    c.net.down.lock().expect("lock").extend([1, 2, 3]);
    let started = std::time::Instant::now();
    let r = forward_records(
        &c.registry(OUTSIDER),
        OUTSIDER,
        &c.transport(),
        &[1, 2, 3],
        GROUP,
        batch(&["z"]),
        Duration::from_millis(300),
    )
    .await;
    match r {
        Err(ForwardRecordsError::Timeout {
            group,
            timeout_ms: 300,
            last: Some(ForwardAttemptError::Transport(TransportError::Unreachable { .. })),
        }) => assert_eq!(group, GROUP),
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(started.elapsed() < DEADLINE);
    // No replica at all, or only this node, which hosts none.
    assert!(matches!(
        forward_records(
            &c.registry(OUTSIDER),
            OUTSIDER,
            &c.transport(),
            &[OUTSIDER],
            GROUP,
            batch(&["z"]),
            DEADLINE,
        )
        .await,
        Err(ForwardRecordsError::NoReplicas { group: GROUP })
    ));
    assert!(matches!(
        forward_records(
            &c.registry(OUTSIDER),
            OUTSIDER,
            &c.transport(),
            &[],
            GROUP,
            batch(&["z"]),
            DEADLINE,
        )
        .await,
        Err(ForwardRecordsError::NoReplicas { group: GROUP })
    ));
}
