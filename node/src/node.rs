//! Wiring: one [`Node`] = storage, the control plane, the metadata group, the partition
//! groups it replicates, the Neo RPC broker service and the HTTP admin, started in that
//! order and stopped by one broadcast.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use neo_broker::meta::{MetaState, PartitionInfo};
use neo_broker::{Broker, BrokerConfig, BrokerLimits, GroupTiming};
use neo_cluster::{ControlPlane, GrpcTransport, HealthMonitor, NetFilter};
use neo_protocol::{NeoConfig, NeoServer};
use neo_raft::{NodeId, NodeStore, RaftGroup, Registry, Role};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{Bootstrap, Config, Limits, RaftTimingProfile};
use crate::error::{Error, Result};
use crate::metrics::{Gauges, Metrics};

/// First and longest pause between attempts to register with the metadata leader.
const REGISTER_BACKOFF_MS: (u64, u64) = (100, 2_000);
/// How long shutdown waits for each background task to stop.
const TASK_STOP_TIMEOUT_MS: u64 = 5_000;

/// What the Neo RPC service, the background tasks and the HTTP admin share: the
/// [`Broker`] (every broker operation goes through it) and the node's own wiring.
pub(crate) struct Shared {
    pub(crate) node_id: NodeId,
    pub(crate) limits: Limits,
    /// The client address this node hands out.
    pub(crate) advertise_client: String,
    /// The cluster address other nodes use for this node.
    pub(crate) advertise_cluster: String,
    pub(crate) broker: Arc<Broker>,
    /// Mutual TLS of the control plane, if configured (membership calls use it).
    pub(crate) cluster_tls: Option<neo_cluster::ClusterTls>,
    pub(crate) metrics: Metrics,
    /// Turns `true` once the metadata leader has this node's addresses.
    pub(crate) registered: watch::Receiver<bool>,
    /// A client of the cluster through this node's own client port (made on first use
    /// by `/v1/groups/{name}`, which reads offsets from every partition leader).
    pub(crate) cluster_client: tokio::sync::OnceCell<neo_client::Client>,
    /// Rate limits (security on only).
    pub(crate) throttle: Option<Arc<crate::security::Throttle>>,
    /// The credential checks of the client port, also used for the HTTP port's bearer
    /// tokens (security on only).
    pub(crate) authenticators: Option<Arc<neo_security::Authenticators>>,
    /// Client-port handshakes by token kind and outcome.
    pub(crate) auth_counters: Arc<crate::security::AuthCounters>,
    /// TLS of the node's own client of the client ports (`/v1/groups/{name}`), when
    /// the client port has TLS: trusts the node's own certificate and the cluster CA
    /// (`crate::admin_tls`).
    pub(crate) client_tls: Option<neo_protocol::ClientTls>,
    /// `/metrics` answers without a token.
    pub(crate) metrics_open: bool,
    /// `/metrics` has each hosted partition's log offsets (`--metrics-per-partition`).
    pub(crate) metrics_per_partition: bool,
    /// A produce slower than this is logged at WARN (`--slow-request-ms`; `None`: off).
    pub(crate) slow_request: Option<Duration>,
    /// `--http-allowed-hosts` (see `crate::http`'s DNS-rebinding guard).
    pub(crate) http_allowed_hosts: Vec<String>,
}

/// A partition as the HTTP admin resolves it from the local metadata state.
pub(crate) struct PartitionRef {
    /// This node's replica, if it hosts one (and it is open).
    pub(crate) group: Option<Arc<RaftGroup>>,
}

/// The broker's view of the cluster, from the node's heartbeats and transport.
struct NodeCluster {
    health: HealthMonitor,
    transport: GrpcTransport,
}

impl neo_broker::Cluster for NodeCluster {
    fn is_alive(&self, node: NodeId) -> bool {
        self.health.is_healthy(node)
    }

    fn peer_address(
        &self,
        node: NodeId,
        addr: &str,
    ) -> std::result::Result<(), neo_broker::PeerAddressError> {
        Ok(self.transport.set_peer(node, addr)?)
    }
}

impl Shared {
    /// The metadata state as this node has applied it.
    pub(crate) fn state(&self) -> Arc<MetaState> {
        self.broker.state()
    }

    /// The advertised client address of `node`, if it registered one.
    pub(crate) fn client_addr_of(&self, node: NodeId) -> Option<String> {
        self.broker.client_addr_of(node)
    }

    /// The current metadata leader (controller), if known.
    pub(crate) fn controller(&self) -> Option<NodeId> {
        self.broker.controller()
    }

    pub(crate) fn partition(&self, topic: &str, partition: u32) -> Option<PartitionRef> {
        let state = self.state();
        let info: &PartitionInfo = state
            .topics
            .get(topic)?
            .partitions
            .get(partition as usize)?;
        Some(PartitionRef {
            group: self.partition_group(info.group),
        })
    }

    /// This node's replica of partition group `group`, if it hosts one.
    pub(crate) fn partition_group(&self, group: neo_raft::GroupId) -> Option<Arc<RaftGroup>> {
        self.broker.partition(group).map(|p| p.group().clone())
    }

    /// Whether `name` (lowercase) is the host of this node's advertised addresses or of
    /// any registered node's client or cluster address (the HTTP port's DNS-rebinding
    /// guard answers those names).
    pub(crate) fn is_node_host(&self, name: &str) -> bool {
        use crate::http::host_of;
        if host_of(&self.advertise_client) == name || host_of(&self.advertise_cluster) == name {
            return true;
        }
        let state = self.state();
        state.nodes.iter().any(|(id, n)| {
            host_of(&n.addr) == name
                || self
                    .client_addr_of(*id)
                    .is_some_and(|a| host_of(&a) == name)
        })
    }

    /// Whether `peer` counts as alive (itself always does).
    pub(crate) fn is_alive(&self, node: NodeId) -> bool {
        self.broker.is_alive(node)
    }

    /// The partition groups hosted here.
    pub(crate) fn partition_groups(&self) -> Vec<Arc<RaftGroup>> {
        self.broker
            .partitions()
            .into_iter()
            .map(|p| p.group().clone())
            .collect()
    }

    /// Scrape-time gauges.
    pub(crate) fn gauges(&self) -> Gauges {
        let groups = self.partition_groups();
        let state = self.state();
        let meta = self.broker.meta_group().metrics();
        let mut g = Gauges {
            partitions_hosted: groups.len() as u64,
            metadata_term: meta.term,
            segments: self.broker.meta_group().log_segments() as u64,
            storage_free_bytes: self.broker.store().space().free_now().unwrap_or(0),
            storage_reserve_bytes: self.broker.store().space().reserve(),
            ..Gauges::default()
        };
        // Partition group id -> (topic, partition, replicas), from metadata.
        let mut partitions: HashMap<neo_raft::GroupId, (&str, u32, &[NodeId])> = HashMap::new();
        for (topic, t) in &state.topics {
            for (i, p) in t.partitions.iter().enumerate() {
                partitions.insert(p.group, (topic.as_str(), i as u32, &p.replicas));
            }
        }
        g.note_raft(&meta);
        for group in &groups {
            let m = group.metrics();
            g.note_raft(&m);
            let placed = partitions.get(&group.id());
            if m.role == Role::Leader {
                g.partitions_led += 1;
                // As metadata answers say it: a replica not in the leader's in-sync set.
                let behind = match placed {
                    Some((_, _, replicas)) => replicas.iter().any(|r| !m.in_sync.contains(r)),
                    None => m.voters.iter().any(|v| !m.in_sync.contains(v)),
                };
                if behind {
                    g.partitions_under_replicated += 1;
                }
            }
            if m.serving_leader().is_none() {
                g.partitions_leaderless += 1;
            }
            let bytes = group.log_size_bytes();
            g.log_bytes += bytes;
            g.segments += group.log_segments() as u64;
            if group.failure().is_some() {
                g.replicas_stopped += 1;
            }
            if let Some((topic, partition, _)) = placed {
                *g.topic_log_bytes.entry(topic.to_string()).or_default() += bytes;
                if self.metrics_per_partition {
                    let (start, end) = group.log_offsets();
                    g.partition_offsets
                        .push((topic.to_string(), *partition, start, end));
                }
            }
        }
        Gauges {
            is_controller: meta.role == Role::Leader,
            nodes_alive: state.nodes.keys().filter(|n| self.is_alive(**n)).count() as u64,
            group_lags: self.broker.group_lags(),
            group_members: if meta.role == Role::Leader {
                state
                    .groups
                    .groups
                    .iter()
                    .map(|(n, g)| (n.clone(), g.members.len() as u64))
                    .collect()
            } else {
                Vec::new()
            },
            group_rebalances: self.broker.group_rebalances(),
            queues: self.broker.queue_stats_led(),
            auth: match &self.authenticators {
                Some(_) => crate::security::AuthCounters::KINDS
                    .iter()
                    .enumerate()
                    .map(|(i, kind)| {
                        let c = &self.auth_counters;
                        (
                            *kind,
                            c.ok[i].load(std::sync::atomic::Ordering::Relaxed),
                            c.failed[i].load(std::sync::atomic::Ordering::Relaxed),
                        )
                    })
                    .collect(),
                None => Vec::new(),
            },
            permission_denials: self.broker.permission_denials(),
            ..g
        }
    }
}

/// The broker's limits from the node's.
fn broker_limits(l: &Limits) -> BrokerLimits {
    BrokerLimits {
        batch_bytes_max: l.batch_bytes_max,
        partitions_per_topic_max: l.partitions_per_topic_max,
        fetch_wait_ms_max: l.fetch_wait_ms_max,
        fetch_bytes_max: l.fetch_bytes_max,
        produce_timeout_ms_max: l.produce_timeout_ms_max,
        offsets_retention_ms: l.offsets_retention_ms,
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

/// Reads the at-rest key file on the blocking pool.
async fn load_at_rest_key(path: std::path::PathBuf) -> Result<neo_raft::AtRestKey> {
    use crate::security::KeyFileError;
    let key = tokio::task::spawn_blocking(move || {
        let bytes = std::fs::read(&path).map_err(|source| KeyFileError::Read {
            path: path.clone(),
            source,
        })?;
        neo_raft::AtRestKey::from_file_bytes(&bytes)
            .map_err(|reason| KeyFileError::AtRest { path, reason })
    })
    .await
    .map_err(KeyFileError::Blocking)??;
    Ok(key)
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
        // Test builds only: arm storage faults from NEO_FAILPOINTS (logged when armed).
        #[cfg(feature = "failpoints")]
        neo_storage::failpoints::init();
        let mut store = NodeStore::open_with(&cfg.data_dir, cfg.durability)?
            .with_segment_bytes(cfg.limits.segment_bytes)
            .with_storage_reserve(cfg.limits.storage_reserve_bytes);
        if let Some(path) = cfg.at_rest_key_file.clone() {
            let key = load_at_rest_key(path).await?;
            tracing::info!(
                fingerprint = key.fingerprint(),
                "encryption at rest: node key loaded"
            );
            store = store.with_at_rest_key(key);
        }
        let (stop, stop_rx) = watch::channel(false);
        let registry = Arc::new(Registry::new());
        let health = HealthMonitor::new();
        let cluster_tls = match &cfg.cluster_tls {
            Some(files) => {
                let tls = files.load()?;
                // Peers refuse joins and Raft RPCs from a certificate that does not name
                // this node (URI SAN `neo-node:<id>`, docs/security.md): fail at start.
                tls.check_node_id(cfg.node_id)?;
                Some(tls)
            }
            None => None,
        };
        let transport = GrpcTransport::with_tls(NetFilter::new(), cluster_tls.clone());

        // Control plane first: its bound address is the default advertised one. Its
        // status answers read the metadata state the broker's machine will apply.
        let (meta_machine, meta_view) = neo_broker::meta::MetaMachine::new();
        let plane = ControlPlane {
            node_id: cfg.node_id,
            registry: registry.clone(),
            health: health.clone(),
            meta: meta_view.clone(),
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
        let cluster_view = Arc::new(NodeCluster {
            health: health.clone(),
            transport: transport.clone(),
        });
        let broker = Broker::open(
            BrokerConfig {
                node_id: cfg.node_id,
                advertise_client: advertise_client.clone(),
                limits: broker_limits(&cfg.limits),
                access: crate::security::SecurityConfig::access(cfg.security.as_ref()),
                timing: match cfg.raft_timing {
                    RaftTimingProfile::Fast => GroupTiming::default(),
                    RaftTimingProfile::Classic => GroupTiming::classic(),
                },
            },
            store,
            Arc::new(transport.clone()),
            registry,
            cluster_view,
            stop_rx.clone(),
            meta_machine,
            meta_view,
        )
        .await?;
        if !peers.is_empty() {
            broker.bootstrap_metadata(&peers).await?;
        }

        let (registered_tx, registered) = watch::channel(false);
        let mut tasks = Vec::new();
        let authenticators = match &cfg.security {
            Some(security) => {
                let runtime = crate::security::SecurityRuntime::start(
                    security,
                    broker.meta_view(),
                    stop_rx.clone(),
                )
                .await?;
                tasks.extend(runtime.tasks);
                tracing::info!(
                    jwt = security.methods.jwt,
                    api_key = security.methods.api_key,
                    mtls = security.methods.mtls,
                    superusers = security.superusers.len(),
                    "security on: the client and HTTP ports require authentication"
                );
                Some(runtime.authenticators)
            }
            None => None,
        };
        let throttle = cfg.security.as_ref().map(|_| {
            let (throttle, task) =
                crate::security::Throttle::start(broker.meta_view(), stop_rx.clone());
            tasks.push(task);
            throttle
        });
        let client_tls = match &cfg.client_tls {
            Some(tls) => {
                let cert = tls.cert.clone();
                let ca = cfg.cluster_tls.as_ref().map(|c| c.ca.clone());
                let loaded = tokio::task::spawn_blocking(move || {
                    crate::admin_tls::load(&cert, ca.as_deref())
                })
                .await
                .map_err(crate::security::KeyFileError::Blocking)??;
                Some(loaded)
            }
            None => None,
        };
        let shared = Arc::new(Shared {
            throttle,
            authenticators,
            auth_counters: Arc::default(),
            client_tls,
            metrics_open: cfg.security.as_ref().is_none_or(|s| s.metrics_open),
            metrics_per_partition: cfg.metrics_per_partition,
            slow_request: (cfg.slow_request_ms > 0)
                .then(|| Duration::from_millis(cfg.slow_request_ms)),
            http_allowed_hosts: cfg.http_allowed_hosts.clone(),
            node_id: cfg.node_id,
            limits: cfg.limits.clone(),
            advertise_client,
            advertise_cluster,
            broker: broker.clone(),
            cluster_tls,
            metrics: Metrics::default(),
            registered,
            cluster_client: tokio::sync::OnceCell::new(),
        });

        tasks.push(health.spawn(cfg.node_id, transport, stop_rx.clone()));
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
        let (b, until) = (broker.clone(), stop_rx.clone());
        tasks.push(tokio::spawn(async move { b.reconcile(until).await }));
        let (b, until) = (broker.clone(), stop_rx.clone());
        tasks.push(tokio::spawn(async move { b.group_duties(until).await }));
        let (b, until) = (broker.clone(), stop_rx.clone());
        tasks.push(tokio::spawn(async move { b.queue_duties(until).await }));
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

        if let Some(limit) = crate::metrics::open_files_short(cfg.limits.connections_max as u64) {
            // Past the limit, accept fails with EMFILE (the server backs off and keeps
            // serving the connections it has) and so would opening a segment file.
            tracing::warn!(
                connections_max = cfg.limits.connections_max,
                open_files_limit = limit,
                reserved = crate::metrics::FDS_RESERVED,
                "--connections-max plus the descriptors the node needs besides clients \
                 exceed the open-files limit (ulimit -n): raise it (systemd LimitNOFILE, \
                 docker --ulimit nofile) or lower --connections-max"
            );
        }
        let mut server = NeoServer::new(NeoConfig {
            frame_size_bytes_max: cfg.limits.frame_size_bytes_max,
            connections_max: cfg.limits.connections_max,
            inflight_requests_max: cfg.limits.inflight_requests_max,
            inflight_request_bytes_max: cfg.limits.inflight_request_bytes_max,
            outbound_queue_bytes_max: cfg.limits.outbound_queue_bytes_max,
            frame_read_timeout: Duration::from_millis(cfg.limits.frame_read_timeout_ms),
            write_timeout: Duration::from_millis(cfg.limits.write_timeout_ms),
            // In-flight requests get this long to finish at shutdown; long polls end
            // at once on the shutdown broadcast.
            shutdown_drain_timeout: Duration::from_secs(5),
            ..NeoConfig::default()
        });
        if let Some(tls) = cfg.client_tls.clone() {
            let config = tokio::task::spawn_blocking(move || tls.load())
                .await
                .map_err(crate::security::KeyFileError::Blocking)??;
            server = server.with_tls(config);
        }
        if let Some(authenticators) = &shared.authenticators {
            // Refusals of the `connections` quota count as throttled requests.
            let counted = Arc::downgrade(&shared);
            let limiter = crate::security::ConnectionLimiter::new(
                broker.meta_view(),
                Arc::new(move || {
                    if let Some(s) = counted.upgrade() {
                        s.metrics
                            .throttled
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }),
            );
            server = server.with_authenticator(Arc::new(
                crate::security::Audited::new(authenticators.clone(), shared.auth_counters.clone())
                    .with_connection_limits(limiter),
            ));
        }
        server = server.with_observer(Arc::new(shared.metrics.rpc.clone()));
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
            if tokio::time::timeout(Duration::from_millis(TASK_STOP_TIMEOUT_MS), t)
                .await
                .is_err()
            {
                tracing::warn!("a background task did not stop within {TASK_STOP_TIMEOUT_MS} ms");
            }
        }
        self.shared.broker.shutdown().await;
        if let Some(cluster) = self.cluster.take() {
            cluster.shutdown().await;
        }
        if let Err(e) = self.shared.broker.store().flush() {
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
