//! Wiring: one [`Node`] = storage, the control plane, the metadata group, the partition
//! groups it replicates, the Neo RPC broker service and the HTTP admin, started in that
//! order and stopped by one broadcast.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use neo_cluster::{ControlPlane, GrpcTransport, HealthMonitor, NetFilter};
use neo_protocol::{NeoConfig, NeoServer};
use neo_raft::meta_sm::{MetaState, PartitionInfo};
use neo_raft::{
    GroupConfig, GroupKind, METADATA_GROUP, NodeId, NodeStore, RaftGroup, RaftTiming, Registry,
    Role,
};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{Bootstrap, Config, Limits};
use crate::error::{Error, Result};
use crate::metrics::{Gauges, Metrics};

/// Metadata group snapshots (and purges its log) every this many entries.
const METADATA_SNAPSHOT_EVERY_ENTRIES: u64 = 10_000;
/// First and longest pause between attempts to register with the metadata leader.
const REGISTER_BACKOFF_MS: (u64, u64) = (100, 2_000);

/// What every handler, the reconciler and the HTTP admin share.
pub(crate) struct Shared {
    pub(crate) node_id: NodeId,
    pub(crate) limits: Limits,
    /// The client address this node hands out.
    pub(crate) advertise_client: String,
    /// The cluster address other nodes use for this node.
    pub(crate) advertise_cluster: String,
    pub(crate) store: NodeStore,
    pub(crate) transport: GrpcTransport,
    pub(crate) registry: Arc<Registry>,
    /// This node's replica of the metadata group.
    pub(crate) meta: Arc<RaftGroup>,
    pub(crate) health: HealthMonitor,
    /// Mutual TLS of the control plane, if configured (membership calls use it).
    pub(crate) cluster_tls: Option<neo_cluster::ClusterTls>,
    pub(crate) metrics: Metrics,
    /// Turns `true` once: the node is shutting down (long polls return at once).
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Turns `true` once the metadata leader has this node's addresses.
    pub(crate) registered: watch::Receiver<bool>,
}

/// A partition as the broker resolves it from the local metadata state.
pub(crate) struct PartitionRef {
    pub(crate) info: PartitionInfo,
    /// This node's replica, if it hosts one (and the reconciler has opened it).
    pub(crate) group: Option<Arc<RaftGroup>>,
}

/// Why a topic/partition lookup failed.
pub(crate) enum Lookup {
    UnknownTopic,
    UnknownPartition { count: usize },
}

impl Shared {
    /// The metadata state as this node has applied it.
    pub(crate) fn state(&self) -> Arc<MetaState> {
        self.meta.local_meta()
    }

    /// The advertised client address of `node`, if it registered one.
    pub(crate) fn client_addr_of(&self, node: NodeId) -> Option<String> {
        if node == self.node_id {
            return Some(self.advertise_client.clone());
        }
        self.state()
            .nodes
            .get(&node)
            .map(|n| n.client_addr.clone())
            .filter(|a| !a.is_empty())
    }

    /// The current metadata leader (controller), if known.
    pub(crate) fn controller(&self) -> Option<NodeId> {
        self.meta.metrics().serving_leader()
    }

    pub(crate) fn partition(&self, topic: &str, partition: u32) -> Result<PartitionRef, Lookup> {
        let state = self.state();
        let t = state.topics.get(topic).ok_or(Lookup::UnknownTopic)?;
        let info = t
            .partitions
            .get(partition as usize)
            .ok_or(Lookup::UnknownPartition {
                count: t.partitions.len(),
            })?
            .clone();
        let group = self.registry.get(info.group);
        Ok(PartitionRef { info, group })
    }

    /// Whether `peer` counts as alive (itself always does).
    pub(crate) fn is_alive(&self, node: NodeId) -> bool {
        node == self.node_id || self.health.is_healthy(node)
    }

    /// Ids of the partition groups hosted here.
    pub(crate) fn partition_groups(&self) -> Vec<Arc<RaftGroup>> {
        self.registry
            .ids()
            .into_iter()
            .filter(|g| *g != METADATA_GROUP)
            .filter_map(|g| self.registry.get(g))
            .collect()
    }

    /// Scrape-time gauges.
    pub(crate) fn gauges(&self) -> Gauges {
        let groups = self.partition_groups();
        let led = groups
            .iter()
            .filter(|g| g.metrics().role == Role::Leader)
            .count();
        let state = self.state();
        Gauges {
            partitions_hosted: groups.len() as u64,
            partitions_led: led as u64,
            log_bytes: groups.iter().map(|g| g.log_size_bytes()).sum(),
            is_controller: self.meta.metrics().role == Role::Leader,
            nodes_alive: state.nodes.keys().filter(|n| self.is_alive(**n)).count() as u64,
        }
    }

    /// Opens (or reopens) this node's replica of a partition group.
    pub(crate) async fn open_partition(&self, group: u64) -> Result<Arc<RaftGroup>> {
        let cfg = GroupConfig {
            group,
            node_id: self.node_id,
            kind: GroupKind::Partition,
            timing: RaftTiming::PARTITION,
            snapshot_every_entries: METADATA_SNAPSHOT_EVERY_ENTRIES,
        };
        Ok(RaftGroup::open(cfg, &self.store, Arc::new(self.transport.clone())).await?)
    }
}

/// A running node. Stop it with [`Node::shutdown`] (dropping it leaves tasks running
/// until the runtime ends).
pub struct Node {
    shared: Arc<Shared>,
    client_addr: SocketAddr,
    cluster_addr: SocketAddr,
    http_addr: SocketAddr,
    stop: watch::Sender<bool>,
    rpc: Option<neo_protocol::ServerHandle>,
    cluster: Option<neo_cluster::ServerHandle>,
    tasks: Vec<JoinHandle<()>>,
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { what, addr, source })
}

impl Node {
    /// Starts a node: opens its storage, binds its three listeners, opens (and on first
    /// start bootstraps) the metadata group, registers with the metadata leader, and
    /// keeps the partition groups it replicates in step with the metadata.
    pub async fn start(cfg: Config) -> Result<Node> {
        let store = NodeStore::open_with(&cfg.data_dir, cfg.durability)?
            .with_segment_bytes(cfg.limits.segment_bytes);
        let (stop, stop_rx) = watch::channel(false);
        let registry = Arc::new(Registry::new());
        let health = HealthMonitor::new();
        let cluster_tls = match &cfg.cluster_tls {
            Some(files) => Some(files.load()?),
            None => None,
        };
        let transport = GrpcTransport::with_tls(NetFilter::new(), cluster_tls.clone());

        // Control plane first: its bound address is the default advertised one.
        let plane = ControlPlane {
            node_id: cfg.node_id,
            registry: registry.clone(),
            health: health.clone(),
        };
        let cluster =
            neo_cluster::serve_with_tls(cfg.cluster_listen, plane, cluster_tls.as_ref()).await?;
        let cluster_addr = cluster.local_addr();
        let advertise_cluster = cfg
            .advertise_cluster
            .clone()
            .unwrap_or_else(|| cluster_addr.to_string());
        let client_listener = bind("client", cfg.listen).await?;
        let client_addr = client_listener.local_addr().map_err(|source| Error::Bind {
            what: "client",
            addr: cfg.listen,
            source,
        })?;
        let advertise_client = cfg
            .advertise_client
            .clone()
            .unwrap_or_else(|| client_addr.to_string());
        let http_listener = bind("http", cfg.http_listen).await?;
        let http_addr = http_listener.local_addr().map_err(|source| Error::Bind {
            what: "http",
            addr: cfg.http_listen,
            source,
        })?;

        let peers: BTreeMap<NodeId, String> = match &cfg.bootstrap {
            Bootstrap::Single => BTreeMap::from([(cfg.node_id, advertise_cluster.clone())]),
            Bootstrap::Static(p) => p.clone(),
            Bootstrap::Join(_) => BTreeMap::new(),
        };
        for (id, addr) in &peers {
            if *id != cfg.node_id {
                transport.set_peer(*id, addr)?;
            }
        }

        // Every node hosts a metadata replica: the static peers as voters, a joining
        // node as a learner first (the leader promotes it up to 5 voters).
        let meta = RaftGroup::open(
            GroupConfig {
                group: METADATA_GROUP,
                node_id: cfg.node_id,
                kind: GroupKind::Metadata,
                timing: RaftTiming::METADATA,
                snapshot_every_entries: METADATA_SNAPSHOT_EVERY_ENTRIES,
            },
            &store,
            Arc::new(transport.clone()),
        )
        .await?;
        registry.insert(meta.clone());
        if !peers.is_empty() {
            meta.bootstrap(&peers).await?;
        }

        let (registered_tx, registered) = watch::channel(false);
        let shared = Arc::new(Shared {
            node_id: cfg.node_id,
            limits: cfg.limits.clone(),
            advertise_client,
            advertise_cluster,
            store,
            transport: transport.clone(),
            registry,
            meta,
            health: health.clone(),
            cluster_tls,
            metrics: Metrics::default(),
            shutdown: stop_rx.clone(),
            registered,
        });

        let mut tasks = vec![health.spawn(cfg.node_id, transport, stop_rx.clone())];
        let seed = match &cfg.bootstrap {
            Bootstrap::Join(seed) => seed.clone(),
            // Our own control plane answers with the leader's address when it does not
            // lead; the join then follows it.
            _ => shared.advertise_cluster.clone(),
        };
        tasks.push(tokio::spawn(register(
            shared.clone(),
            seed,
            registered_tx,
            stop_rx.clone(),
        )));
        tasks.push(tokio::spawn(crate::reconcile::run(
            shared.clone(),
            stop_rx.clone(),
        )));
        tasks.push(tokio::spawn(crate::retention::run(
            shared.clone(),
            stop_rx.clone(),
        )));
        if cfg.limits.leader_balance_ms > 0 {
            tasks.push(tokio::spawn(crate::balance::run(
                shared.clone(),
                stop_rx.clone(),
            )));
        }

        let mut server = NeoServer::new(NeoConfig {
            frame_size_bytes_max: cfg.limits.frame_size_bytes_max,
            connections_max: cfg.limits.connections_max,
            inflight_requests_max: cfg.limits.inflight_requests_max,
            // In-flight requests get this long to finish at shutdown; long polls end
            // at once on the shutdown broadcast.
            shutdown_drain_timeout: Duration::from_secs(5),
            ..NeoConfig::default()
        });
        server.register(crate::broker::service(shared.clone()))?;
        let rpc = server.start(client_listener)?;
        tasks.push(tokio::spawn(crate::http::serve(
            http_listener,
            shared.clone(),
            stop_rx,
        )));
        tracing::info!(
            node_id = cfg.node_id,
            client = %shared.advertise_client,
            cluster = %shared.advertise_cluster,
            http = %http_addr,
            data_dir = %cfg.data_dir.display(),
            "neo-node started"
        );
        Ok(Node {
            shared,
            client_addr,
            cluster_addr,
            http_addr,
            stop,
            rpc: Some(rpc),
            cluster: Some(cluster),
            tasks,
        })
    }

    /// The bound Neo RPC (client) address.
    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }

    /// The bound gRPC (cluster) address.
    pub fn cluster_addr(&self) -> SocketAddr {
        self.cluster_addr
    }

    /// The bound HTTP admin address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.shared.node_id
    }

    /// Graceful stop: broadcast shutdown, drain client requests (long polls end at
    /// once), stop the background tasks, shut every Raft group down, stop the control
    /// plane, flush the metadata store.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(rpc) = self.rpc.take() {
            rpc.shutdown().await;
        }
        for t in self.tasks.drain(..) {
            if tokio::time::timeout(Duration::from_secs(5), t)
                .await
                .is_err()
            {
                tracing::warn!("a background task did not stop within 5 s");
            }
        }
        for g in self.shared.partition_groups() {
            if let Err(e) = g.shutdown().await {
                tracing::warn!(group = g.id(), "shutdown: {e}");
            }
        }
        if let Err(e) = self.shared.meta.shutdown().await {
            tracing::warn!("shutdown of the metadata group: {e}");
        }
        if let Some(cluster) = self.cluster.take() {
            cluster.shutdown().await;
        }
        if let Err(e) = self.shared.store.flush() {
            tracing::warn!("flush of the metadata store: {e}");
        }
        tracing::info!(node_id = self.shared.node_id, "neo-node stopped");
    }
}

/// Registers this node's cluster and client addresses with the metadata leader (a
/// `Join` at `seed`, which follows leader hints), retrying until it succeeds. For a
/// static voter this only records the addresses; for `--join` it also adds the node
/// to the metadata group.
async fn register(
    shared: Arc<Shared>,
    seed: String,
    done: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = REGISTER_BACKOFF_MS.0;
    loop {
        let attempt = neo_cluster::membership::join_with_tls(
            &seed,
            shared.node_id,
            &shared.advertise_cluster,
            &shared.advertise_client,
            shared.cluster_tls.as_ref(),
        );
        let r = tokio::select! {
            r = attempt => r,
            _ = stop.changed() => return,
        };
        match r {
            Ok(()) => {
                tracing::info!(
                    node_id = shared.node_id,
                    "registered with the metadata leader"
                );
                let _ = done.send(true);
                return;
            }
            Err(e) => tracing::debug!("registration not done yet: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(backoff)) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(REGISTER_BACKOFF_MS.1);
    }
}
