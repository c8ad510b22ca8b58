//! The [`Broker`]: one value every broker operation goes through, with the request's
//! [`SecurityContext`], testable without sockets (see `tests/broker.rs`: a single-node
//! broker over real storage in a temporary directory).
//!
//! It owns this node's metadata replica (with its [`MetaMachine`]) and the partition
//! replicas hosted here ([`Partition`]s, opened and closed by `reconcile`). The node
//! (`neo-node`) builds it, feeds it the cluster's facts through [`Cluster`], and hands
//! every Neo RPC request to one of its operations.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use neo_protocol::RpcError;
use neo_protocol::api::{
    CreateQueueRequest, CreateQueueResponse, DeleteQueueRequest, DeleteQueueResponse,
    DescribeQueueRequest, ListQueuesRequest, ListQueuesResponse, PurgeQueueRequest,
    PurgeQueueResponse, QueueAckRequest, QueueDescription, QueueExtendRequest, QueueNackRequest,
    QueueReceiveRequest, QueueReceiveResponse, QueueSettleResponse, QueueTermRequest,
};
use neo_protocol::api::{
    CreateTopicRequest, CreateTopicResponse, DeleteTopicRequest, DeleteTopicResponse,
    DescribeTopicRequest, FetchRequest, FetchResponse, ListTopicsRequest, ListTopicsResponse,
    MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse, TopicDescription,
};
use neo_raft::{
    GroupConfig, GroupId, GroupKind, METADATA_GROUP, NodeId, NodeStore, RaftGroup, RaftTiming,
    Registry, Transport,
};
use neo_security::SecurityContext;
use tokio::sync::watch;

use crate::meta::{MetaMachine, MetaState, MetaView, PartitionInfo};
use crate::ops;
use crate::partition::Partition;

/// Metadata group snapshots (and purges its log) every this many entries.
pub const METADATA_SNAPSHOT_EVERY_ENTRIES: u64 = 10_000;

/// The limits broker operations enforce (the node's configuration sets them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerLimits {
    /// Largest record batch a produce may carry, in bytes.
    pub batch_bytes_max: usize,
    /// Most partitions a topic may be created with.
    pub partitions_per_topic_max: u32,
    /// A consumer group without members for this long is deleted with its committed
    /// offsets (`offsets.retention.ms`), in milliseconds.
    pub offsets_retention_ms: u64,
    /// Longest a fetch may wait for data, in milliseconds.
    pub fetch_wait_ms_max: u32,
    /// Most bytes one fetch answers with.
    pub fetch_bytes_max: usize,
    /// Longest a produce waits for its commit, in milliseconds.
    pub produce_timeout_ms_max: u32,
}

impl Default for BrokerLimits {
    /// The node's defaults (`neo-node` takes its own from here).
    fn default() -> Self {
        BrokerLimits {
            batch_bytes_max: neo_raft::RECORD_BATCH_BYTES_MAX,
            partitions_per_topic_max: 1024,
            offsets_retention_ms: 7 * 24 * 3600 * 1000,
            fetch_wait_ms_max: 30_000,
            fetch_bytes_max: 8 * 1024 * 1024,
            produce_timeout_ms_max: 30_000,
        }
    }
}

/// Who this broker is.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// This node.
    pub node_id: NodeId,
    /// The Neo RPC address this node hands out to clients (metadata, `NotLeader` hints).
    pub advertise_client: String,
    /// The limits of its operations.
    pub limits: BrokerLimits,
    /// Authorization: on or off, and the superusers.
    pub access: crate::access::AccessConfig,
    /// The Raft timing of the metadata group and of the partition groups.
    pub timing: GroupTiming,
}

/// The Raft timing of a node's groups (docs/raft.md, "Timing and heartbeat cost").
#[derive(Debug, Clone)]
pub struct GroupTiming {
    /// The metadata group's.
    pub metadata: RaftTiming,
    /// Every partition group's.
    pub partition: RaftTiming,
}

impl GroupTiming {
    /// The timing before issue #22 (a dead partition leader replaced 4.5-6 s after its
    /// last heartbeat), kept to compare against.
    pub fn classic() -> Self {
        GroupTiming {
            metadata: RaftTiming::METADATA_CLASSIC,
            partition: RaftTiming::PARTITION_CLASSIC,
        }
    }
}

impl Default for GroupTiming {
    /// [`RaftTiming::METADATA`] and [`RaftTiming::PARTITION`].
    fn default() -> Self {
        GroupTiming {
            metadata: RaftTiming::METADATA,
            partition: RaftTiming::PARTITION,
        }
    }
}

/// Why the transport refused a peer address (the transport's own error, kept whole).
pub type PeerAddressError = Box<dyn std::error::Error + Send + Sync>;

/// What the broker learns from, and tells, the node's cluster wiring.
pub trait Cluster: Send + Sync + 'static {
    /// Whether `node` counts as alive (by the node heartbeats); this node always is.
    fn is_alive(&self, node: NodeId) -> bool;
    /// A registered node's cluster (gRPC) address, for the Raft transport; an error
    /// (e.g. an address the transport cannot use) is retried at the next pass.
    fn peer_address(&self, node: NodeId, addr: &str) -> Result<(), PeerAddressError>;
}

/// A cluster of one node: itself, always alive, no peers to reach.
#[derive(Debug, Default)]
pub struct SingleNode;

impl Cluster for SingleNode {
    fn is_alive(&self, _: NodeId) -> bool {
        true
    }

    fn peer_address(&self, _: NodeId, _: &str) -> Result<(), PeerAddressError> {
        Ok(())
    }
}

/// A partition as the broker resolves it from the local metadata state.
pub(crate) struct PartitionRef {
    pub(crate) info: PartitionInfo,
    /// This node's replica, if it hosts one (and `reconcile` has opened it).
    pub(crate) replica: Option<Arc<Partition>>,
}

/// Why a topic/partition lookup failed.
pub(crate) enum Lookup {
    UnknownTopic,
    UnknownPartition { count: usize },
}

/// The broker of one node.
pub struct Broker {
    pub(crate) cfg: BrokerConfig,
    store: NodeStore,
    transport: Arc<dyn Transport>,
    registry: Arc<Registry>,
    meta: Arc<RaftGroup>,
    meta_view: MetaView,
    partitions: RwLock<HashMap<GroupId, Arc<Partition>>>,
    pub(crate) cluster: Arc<dyn Cluster>,
    /// Turns `true` once: the node is shutting down (long polls return at once).
    pub(crate) shutdown: watch::Receiver<bool>,
    /// The group coordinator's soft state (used while this node leads the metadata).
    pub(crate) coordinator: crate::groups::coordinator::Coordinator,
    /// The authorizer, cached per change of the replicated roles.
    pub(crate) access: crate::access::Access,
}

impl Broker {
    /// Opens this node's metadata replica over `machine` (registered in `registry`,
    /// so peers' RPCs reach it) and returns the broker over it. `meta` is the view
    /// `machine` was made with ([`MetaMachine::new`]: a caller that needs the view
    /// before the broker exists, as the control plane does, makes the pair first).
    /// Bootstrapping the metadata group, and running [`Broker::reconcile`], are the
    /// caller's.
    #[allow(clippy::too_many_arguments)]
    pub async fn open(
        cfg: BrokerConfig,
        store: NodeStore,
        transport: Arc<dyn Transport>,
        registry: Arc<Registry>,
        cluster: Arc<dyn Cluster>,
        shutdown: watch::Receiver<bool>,
        machine: MetaMachine,
        meta_view: MetaView,
    ) -> neo_raft::Result<Arc<Broker>> {
        let meta = RaftGroup::open(
            GroupConfig {
                group: METADATA_GROUP,
                node_id: cfg.node_id,
                kind: GroupKind::Metadata,
                timing: cfg.timing.metadata.clone(),
                snapshot_every_entries: METADATA_SNAPSHOT_EVERY_ENTRIES,
                encrypt_at_rest: false,
            },
            &store,
            transport.clone(),
            Box::new(machine),
        )
        .await?;
        registry.insert(meta.clone());
        Ok(Arc::new(Broker {
            access: crate::access::Access::new(cfg.access.clone()),
            cfg,
            store,
            transport,
            registry,
            meta,
            meta_view,
            partitions: RwLock::default(),
            cluster,
            shutdown,
            coordinator: Default::default(),
        }))
    }

    /// This node.
    pub fn node_id(&self) -> NodeId {
        self.cfg.node_id
    }

    /// The limits of this broker's operations.
    pub fn limits(&self) -> &BrokerLimits {
        &self.cfg.limits
    }

    /// This node's replica of the metadata group.
    pub fn meta_group(&self) -> &Arc<RaftGroup> {
        &self.meta
    }

    /// A receiver of the metadata state as this node applies it.
    pub fn meta_view(&self) -> MetaView {
        self.meta_view.clone()
    }

    /// The metadata state as this node has applied it (possibly a little stale).
    pub fn state(&self) -> Arc<MetaState> {
        self.meta_view.borrow().clone()
    }

    /// The node store every group of this node lives in.
    pub fn store(&self) -> &NodeStore {
        &self.store
    }

    /// The advertised client address of `node`, if it registered one.
    pub fn client_addr_of(&self, node: NodeId) -> Option<String> {
        if node == self.cfg.node_id {
            return Some(self.cfg.advertise_client.clone());
        }
        self.state()
            .nodes
            .get(&node)
            .map(|n| n.client_addr.clone())
            .filter(|a| !a.is_empty())
    }

    /// The current metadata leader (controller), if known.
    pub fn controller(&self) -> Option<NodeId> {
        self.meta.metrics().serving_leader()
    }

    /// Whether `node` counts as alive (this node always does).
    pub fn is_alive(&self, node: NodeId) -> bool {
        node == self.cfg.node_id || self.cluster.is_alive(node)
    }

    /// This node's replica of partition group `group`, if it hosts one.
    pub fn partition(&self, group: GroupId) -> Option<Arc<Partition>> {
        self.partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&group)
            .cloned()
    }

    /// Every partition replica hosted here.
    pub fn partitions(&self) -> Vec<Arc<Partition>> {
        let map = self.partitions.read().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = map.values().cloned().collect();
        v.sort_by_key(|p| p.group().id());
        v
    }

    /// Resolves `topic`/`partition` in the local metadata state.
    pub(crate) fn lookup(&self, topic: &str, partition: u32) -> Result<PartitionRef, Lookup> {
        let state = self.state();
        let t = state.topics.get(topic).ok_or(Lookup::UnknownTopic)?;
        let info = t
            .partitions
            .get(partition as usize)
            .ok_or(Lookup::UnknownPartition {
                count: t.partitions.len(),
            })?
            .clone();
        let replica = self.partition(info.group);
        Ok(PartitionRef { info, replica })
    }

    /// `Some(ordered_by_key)` when partition group `group` belongs to a queue, from the
    /// applied metadata (the queue and its topic are created in one command, and a
    /// partition is opened only once its topic is applied here).
    fn queue_kind_of(&self, group: GroupId) -> Option<bool> {
        let state = self.state();
        let (name, _) = state
            .topics
            .iter()
            .find(|(_, t)| t.partitions.iter().any(|p| p.group == group))?;
        state.queues.get(name).map(|q| q.ordered_by_key)
    }

    /// Whether `group`'s topic keeps its logs encrypted at rest.
    fn encrypted_at_rest(&self, group: GroupId) -> bool {
        let state = self.state();
        state
            .topics
            .iter()
            .find(|(_, t)| t.partitions.iter().any(|p| p.group == group))
            .is_some_and(|(name, _)| state.encrypted_topics.contains(name))
    }

    /// Whether this node has a key for encryption at rest.
    pub fn has_at_rest_key(&self) -> bool {
        self.store.has_at_rest_key()
    }

    /// Opens (or reopens) this node's replica of a partition group and registers it
    /// (peers' RPCs reach it; operations find it).
    pub async fn open_partition(&self, group: GroupId) -> neo_raft::Result<Arc<Partition>> {
        if let Some(p) = self.partition(group) {
            return Ok(p);
        }
        let cfg = GroupConfig {
            group,
            node_id: self.cfg.node_id,
            kind: GroupKind::Partition,
            timing: self.cfg.timing.partition.clone(),
            snapshot_every_entries: METADATA_SNAPSHOT_EVERY_ENTRIES,
            encrypt_at_rest: self.encrypted_at_rest(group),
        };
        let (machine, state) = Partition::machine(self.queue_kind_of(group));
        let g =
            RaftGroup::open(cfg, &self.store, self.transport.clone(), Box::new(machine)).await?;
        let p = Arc::new(Partition::new(g.clone(), state));
        self.registry.insert(g);
        self.partitions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(group, p.clone());
        Ok(p)
    }

    /// Appends `batch` to partition group `group` (replicas `replicas`) through its
    /// leader, here or on another node (at least once: see
    /// [`neo_raft::forward_records`]).
    pub(crate) async fn forward_batch(
        &self,
        replicas: &[NodeId],
        group: GroupId,
        batch: bytes::Bytes,
        timeout: std::time::Duration,
    ) -> crate::error::Result<(u64, u32)> {
        neo_raft::forward_records(
            &self.registry,
            self.cfg.node_id,
            self.transport.as_ref(),
            replicas,
            group,
            batch,
            timeout,
        )
        .await
        .map_err(|e| crate::error::Error::Forward(Box::new(e)))
    }

    /// Stops and unregisters this node's replica of `group`; with `delete`, removes its
    /// files too (its partition is gone from the metadata).
    pub async fn close_partition(&self, group: GroupId, delete: bool) -> neo_raft::Result<()> {
        let removed = self
            .partitions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&group);
        self.registry.remove(group);
        if let Some(p) = removed {
            p.group().shutdown().await?;
            drop(p);
            if delete {
                // Deleting a directory tree is blocking disk I/O: off the executor.
                let store = self.store.clone();
                tokio::task::spawn_blocking(move || store.remove_group_files(group))
                    .await
                    .map_err(|e| neo_raft::Error::Fatal {
                        group,
                        reason: format!("remove group files: {e}"),
                    })??;
            }
        }
        Ok(())
    }

    /// Stops every group of this node (partitions, then the metadata group). Files stay.
    pub async fn shutdown(&self) {
        for p in self.partitions() {
            if let Err(e) = p.group().shutdown().await {
                tracing::warn!(group = p.group().id(), "shutdown: {e}");
            }
        }
        if let Err(e) = self.meta.shutdown().await {
            tracing::warn!("shutdown of the metadata group: {e}");
        }
    }

    /// Keeps the partition replicas hosted here in step with the applied metadata (see
    /// `reconcile`) until `stop` turns `true`.
    pub async fn reconcile(&self, stop: watch::Receiver<bool>) {
        crate::reconcile::run(self, stop).await
    }

    /// The metadata group's members to bootstrap with: `peers` (node id → cluster
    /// address). Idempotent across restarts.
    pub async fn bootstrap_metadata(
        &self,
        peers: &BTreeMap<NodeId, String>,
    ) -> neo_raft::Result<()> {
        self.meta.bootstrap(peers).await
    }

    // The operations, one per broker method. Each takes the request's security context
    // (the one place authorization and quotas will check it) and answers with the
    // wire's typed error.

    /// Appends a record batch to a partition (on its leader).
    pub async fn produce(
        &self,
        ctx: &SecurityContext,
        req: ProduceRequest,
    ) -> Result<ProduceResponse, RpcError> {
        ops::produce::produce(self, ctx, req).await
    }

    /// Reads committed batches of a partition (on its leader), waiting for data.
    pub async fn fetch(
        &self,
        ctx: &SecurityContext,
        req: FetchRequest,
    ) -> Result<FetchResponse, RpcError> {
        ops::fetch::fetch(self, ctx, req).await
    }

    /// Brokers, controller and partitions as this node knows them.
    pub async fn metadata(
        &self,
        ctx: &SecurityContext,
        req: MetadataRequest,
    ) -> Result<MetadataResponse, RpcError> {
        ops::metadata::metadata(self, ctx, req)
    }

    /// Creates a topic (on the metadata leader).
    pub async fn create_topic(
        &self,
        ctx: &SecurityContext,
        req: CreateTopicRequest,
    ) -> Result<CreateTopicResponse, RpcError> {
        ops::create_topic::create_topic(self, ctx, req).await
    }

    /// Deletes a topic (on the metadata leader).
    pub async fn delete_topic(
        &self,
        ctx: &SecurityContext,
        req: DeleteTopicRequest,
    ) -> Result<DeleteTopicResponse, RpcError> {
        ops::delete_topic::delete_topic(self, ctx, req).await
    }

    /// Topic names (linearizable on the metadata leader).
    pub async fn list_topics(
        &self,
        ctx: &SecurityContext,
        req: ListTopicsRequest,
    ) -> Result<ListTopicsResponse, RpcError> {
        ops::list_topics::list_topics(self, ctx, req).await
    }

    /// One topic's partitions and configs.
    pub async fn describe_topic(
        &self,
        ctx: &SecurityContext,
        req: DescribeTopicRequest,
    ) -> Result<TopicDescription, RpcError> {
        ops::describe_topic::describe_topic(self, ctx, req)
    }

    /// Creates a queue (and its dead-letter queue when missing), on the metadata leader.
    pub async fn create_queue(
        &self,
        ctx: &SecurityContext,
        req: CreateQueueRequest,
    ) -> Result<CreateQueueResponse, RpcError> {
        ops::queues::admin::create_queue(self, ctx, req).await
    }

    /// Deletes a queue (its dead-letter queue stays), on the metadata leader.
    pub async fn delete_queue(
        &self,
        ctx: &SecurityContext,
        req: DeleteQueueRequest,
    ) -> Result<DeleteQueueResponse, RpcError> {
        ops::queues::admin::delete_queue(self, ctx, req).await
    }

    /// Every queue the caller may see.
    pub async fn list_queues(
        &self,
        ctx: &SecurityContext,
        req: ListQueuesRequest,
    ) -> Result<ListQueuesResponse, RpcError> {
        ops::queues::admin::list_queues(self, ctx, req).await
    }

    /// A queue's settings and the counts of the partitions this node leads.
    pub async fn describe_queue(
        &self,
        ctx: &SecurityContext,
        req: DescribeQueueRequest,
    ) -> Result<QueueDescription, RpcError> {
        ops::queues::admin::describe_queue(self, ctx, req).await
    }

    /// Drops every message not yet done of the partitions this node leads (or one).
    pub async fn purge_queue(
        &self,
        ctx: &SecurityContext,
        req: PurgeQueueRequest,
    ) -> Result<PurgeQueueResponse, RpcError> {
        ops::queues::admin::purge_queue(self, ctx, req).await
    }

    /// Leases available messages to a consumer (on partition leaders), long-polling.
    pub async fn queue_receive(
        &self,
        ctx: &SecurityContext,
        req: QueueReceiveRequest,
    ) -> Result<QueueReceiveResponse, RpcError> {
        ops::queues::receive::receive(self, ctx, req).await
    }

    /// Acks deliveries (their partitions' leader).
    pub async fn queue_ack(
        &self,
        ctx: &SecurityContext,
        req: QueueAckRequest,
    ) -> Result<QueueSettleResponse, RpcError> {
        ops::queues::settle::ack(self, ctx, req).await
    }

    /// Nacks deliveries: redelivered after a delay, or dead-lettered out of deliveries.
    pub async fn queue_nack(
        &self,
        ctx: &SecurityContext,
        req: QueueNackRequest,
    ) -> Result<QueueSettleResponse, RpcError> {
        ops::queues::settle::nack(self, ctx, req).await
    }

    /// Extends leases.
    pub async fn queue_extend(
        &self,
        ctx: &SecurityContext,
        req: QueueExtendRequest,
    ) -> Result<QueueSettleResponse, RpcError> {
        ops::queues::settle::extend(self, ctx, req).await
    }

    /// Dead-letters deliveries at once.
    pub async fn queue_term(
        &self,
        ctx: &SecurityContext,
        req: QueueTermRequest,
    ) -> Result<QueueSettleResponse, RpcError> {
        ops::queues::settle::term(self, ctx, req).await
    }
}
