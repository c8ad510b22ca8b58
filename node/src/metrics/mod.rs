//! Prometheus metrics with the `prometheus-client` crate, served by `/metrics` as
//! OpenMetrics text ([`CONTENT_TYPE`]). Two registries make one exposition:
//!
//! - the node's own, built once ([`Metrics::new`]): counters and histograms recorded on
//!   the request path (produce, fetch, admin, groups, queues, Neo RPC requests and
//!   connections through [`rpc::RpcObserver`]);
//! - one built at each scrape from [`Gauges`] (what the node's groups, queues and
//!   security layer say now), the process-wide storage and Raft statistics of
//!   `neo-storage` and `neo-raft`, and `/proc/self` (`process`).
//!
//! Every name, type and label is listed in docs/metrics.md; [`tests`] checks that the
//! names of the shared contract are all rendered.
//!
//! | module | role |
//! |---|---|
//! | `mod` | [`Metrics`] (registry of the request-path metrics), [`Gauges`], [`Metrics::render`] |
//! | `scrape` | [`scrape::Scrape`]: a per-scrape registry of constant values, histograms from bucket snapshots; [`LatencyHistogram`]: the lock-free histogram of the request path |
//! | `rpc` | Neo RPC requests and connections: the protocol server's observer |
//! | `cluster` | partitions, groups, queues, security: series from [`Gauges`] |
//! | `raft` | Raft groups: term, lags, leader changes, elections, proposals, snapshots |
//! | `storage` | segment appends and `fdatasync`s, segments, bytes per topic |
//! | `process` | `process_*` from `/proc/self` (Linux only), `neo_build_info` |

mod cluster;
mod process;
mod raft;
pub(crate) mod rpc;
mod scrape;
mod storage;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use neo_protocol::api::Acks;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

pub(crate) use process::{FDS_RESERVED, open_files_short};
pub(crate) use scrape::LatencyHistogram;
use scrape::Scrape;

/// The `Content-Type` of `/metrics`: OpenMetrics text 1.0.0 (Prometheus 2.x and later
/// ask for it and parse it).
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The `acks` label of `neo_produce_latency_seconds`.
pub(crate) type AcksLabel = [(&'static str, &'static str); 1];

/// The label value of an `acks` setting.
pub(crate) fn acks_label(acks: Acks) -> AcksLabel {
    [(
        "acks",
        match acks {
            Acks::All => "all",
            Acks::Leader => "leader",
            Acks::None => "none",
        },
    )]
}

/// A client connection counts as active while it sent a request this recently
/// (`neo_client_connections_active`; `neo_rpc_connections_active` counts open ones).
const CONNECTION_ACTIVE_WINDOW: Duration = Duration::from_secs(60);
/// Bound on tracked client connections (oldest are forgotten first on overflow).
const CONNECTIONS_TRACKED_MAX: usize = 100_000;

/// Every counter and histogram recorded on the request path, registered once.
pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) produce_requests: Counter,
    pub(crate) produce_errors: Counter,
    pub(crate) produce_records: Counter,
    pub(crate) produce_bytes: Counter,
    pub(crate) fetch_requests: Counter,
    pub(crate) fetch_errors: Counter,
    pub(crate) fetch_bytes: Counter,
    pub(crate) fetch_records: Counter,
    pub(crate) admin_requests: Counter,
    /// Consumer-group requests (membership and offsets).
    pub(crate) group_requests: Counter,
    /// Consumer-group requests answered with an error.
    pub(crate) group_errors: Counter,
    /// Queue requests (receive, ack, nack, extend, term).
    pub(crate) queue_requests: Counter,
    /// Queue requests answered with an error.
    pub(crate) queue_errors: Counter,
    /// Messages handed out by queue receives.
    pub(crate) queue_delivered: Counter,
    /// Requests refused `Throttled` (over a rate limit).
    pub(crate) throttled: AtomicU64,
    /// Retention purges asked of partition replicas here.
    pub(crate) retention_purges: AtomicU64,
    /// Retention attempts that failed (logged; the next pass retries).
    pub(crate) retention_errors: AtomicU64,
    /// Leader transfers this node started to hand partitions to their preferred replica.
    pub(crate) leader_transfers: AtomicU64,
    /// Produce latency by `acks`.
    pub(crate) produce_latency: Family<AcksLabel, LatencyHistogram>,
    pub(crate) fetch_latency: LatencyHistogram,
    pub(crate) commit_latency: LatencyHistogram,
    /// Neo RPC requests and connections (the server's observer records them).
    pub(crate) rpc: rpc::RpcMetrics,
    peers: Mutex<HashMap<SocketAddr, Instant>>,
}

/// Gauges computed at scrape time by the caller (`Shared::gauges`).
#[derive(Default)]
pub(crate) struct Gauges {
    pub(crate) partitions_hosted: u64,
    pub(crate) partitions_led: u64,
    pub(crate) log_bytes: u64,
    pub(crate) is_controller: bool,
    pub(crate) nodes_alive: u64,
    /// Every group's committed offset and log end on the partitions led here.
    pub(crate) group_lags: Vec<neo_broker::GroupLag>,
    /// Members per group (filled on the coordinator only).
    pub(crate) group_members: Vec<(String, u64)>,
    /// Membership changes this node made as coordinator, by group.
    pub(crate) group_rebalances: BTreeMap<String, u64>,
    /// Client-port handshakes: (method, accepted, refused), security on only.
    pub(crate) auth: Vec<(&'static str, u64, u64)>,
    /// Requests refused `PermissionDenied`.
    pub(crate) permission_denials: u64,
    /// Counts of the queue partitions led here.
    pub(crate) queues: Vec<(String, neo_protocol::api::QueuePartitionStats)>,
    /// Partitions led here with a voter missing from their in-sync set.
    pub(crate) partitions_under_replicated: u64,
    /// Partitions hosted here whose replica knows no (serving) leader.
    pub(crate) partitions_leaderless: u64,
    /// Bytes of the partition replicas hosted here, by topic.
    pub(crate) topic_log_bytes: BTreeMap<String, u64>,
    /// Segment files of every group log hosted here (partitions and metadata).
    pub(crate) segments: u64,
    /// Partition replicas hosted here that stopped (log failed, being reopened).
    pub(crate) replicas_stopped: u64,
    /// Bytes free on the data directory's filesystem, and the produce reserve.
    pub(crate) storage_free_bytes: u64,
    pub(crate) storage_reserve_bytes: u64,
    /// Term of the metadata group's replica here.
    pub(crate) metadata_term: u64,
    /// By follower node id: the largest (leader last log index - matched index) over
    /// the groups led here.
    pub(crate) follower_lag: BTreeMap<u64, u64>,
    /// Largest (committed - applied) over the groups hosted here.
    pub(crate) apply_lag: u64,
    /// `(topic, partition, log start offset, log end offset)` of every hosted
    /// partition; filled only with `--metrics-per-partition`.
    pub(crate) partition_offsets: Vec<(String, u32, u64, u64)>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// Every request-path metric, registered.
    pub(crate) fn new() -> Metrics {
        let mut registry = Registry::default();
        let mut counter = |name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let produce_requests = counter("neo_produce_requests", "Produce requests received");
        let produce_errors = counter(
            "neo_produce_errors",
            "Produce requests answered with an error",
        );
        let produce_records = counter(
            "neo_produce_records",
            "Records in acknowledged produce requests",
        );
        let produce_bytes = counter(
            "neo_produce_bytes",
            "Record batch bytes in acknowledged produce requests",
        );
        let fetch_requests = counter("neo_fetch_requests", "Fetch requests received");
        let fetch_errors = counter("neo_fetch_errors", "Fetch requests answered with an error");
        let fetch_bytes = counter("neo_fetch_bytes", "Record batch bytes returned by fetches");
        let fetch_records = counter(
            "neo_fetch_records",
            "Records in the batches returned by fetches (whole batches, so records before the asked offset included)",
        );
        let admin_requests = counter(
            "neo_admin_requests",
            "Metadata and topic admin requests received",
        );
        let group_requests = counter(
            "neo_group_requests",
            "Consumer-group requests received (membership and offsets)",
        );
        let group_errors = counter(
            "neo_group_errors",
            "Consumer-group requests answered with an error",
        );
        let queue_requests = counter(
            "neo_queue_requests",
            "Queue requests received (receive, ack, nack, extend, term)",
        );
        let queue_errors = counter("neo_queue_errors", "Queue requests answered with an error");
        let queue_delivered = counter(
            "neo_queue_delivered",
            "Messages handed out by queue receives on this node",
        );
        let produce_latency: Family<AcksLabel, LatencyHistogram> = Family::default();
        registry.register(
            "neo_produce_latency_seconds",
            "Produce request latency, receipt to answer, by acks (all: includes the quorum commit)",
            produce_latency.clone(),
        );
        let fetch_latency = LatencyHistogram::default();
        registry.register(
            "neo_fetch_latency_seconds",
            "Fetch request latency, including long-poll waits",
            fetch_latency.clone(),
        );
        let commit_latency = LatencyHistogram::default();
        registry.register(
            "neo_raft_commit_latency_seconds",
            "Partition proposal to applied on this leader (quorum fsync included; acks=all produces)",
            commit_latency.clone(),
        );
        let rpc = rpc::RpcMetrics::register(&mut registry);
        Metrics {
            registry,
            produce_requests,
            produce_errors,
            produce_records,
            produce_bytes,
            fetch_requests,
            fetch_errors,
            fetch_bytes,
            fetch_records,
            admin_requests,
            group_requests,
            group_errors,
            queue_requests,
            queue_errors,
            queue_delivered,
            throttled: AtomicU64::new(0),
            retention_purges: AtomicU64::new(0),
            retention_errors: AtomicU64::new(0),
            leader_transfers: AtomicU64::new(0),
            produce_latency,
            fetch_latency,
            commit_latency,
            rpc,
            peers: Mutex::new(HashMap::new()),
        }
    }

    /// Notes a request from `peer` (for `neo_client_connections_active`).
    pub(crate) fn saw_peer(&self, peer: SocketAddr) {
        let mut peers = self
            .peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if peers.len() >= CONNECTIONS_TRACKED_MAX && !peers.contains_key(&peer) {
            peers.retain(|_, t| t.elapsed() < CONNECTION_ACTIVE_WINDOW);
            if peers.len() >= CONNECTIONS_TRACKED_MAX {
                return;
            }
        }
        peers.insert(peer, Instant::now());
    }

    fn active_connections(&self) -> usize {
        let mut peers = self
            .peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        peers.retain(|_, t| t.elapsed() < CONNECTION_ACTIVE_WINDOW);
        peers.len()
    }

    /// The whole exposition: the node's registry, then the scrape-time series, then
    /// `# EOF`.
    pub(crate) fn render(&self, g: &Gauges) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let mut s = Scrape::default();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        s.counter(
            "neo_throttled_requests",
            "Requests refused Throttled: a principal or client address over a rate limit",
            load(&self.throttled),
        );
        s.counter(
            "neo_retention_purges",
            "Retention purges of partition replica logs on this node",
            load(&self.retention_purges),
        );
        s.counter(
            "neo_retention_errors",
            "Retention passes over a partition replica that failed",
            load(&self.retention_errors),
        );
        s.counter(
            "neo_leader_transfers",
            "Leader transfers this node started to hand partitions back to their preferred replica",
            load(&self.leader_transfers),
        );
        s.gauge(
            "neo_client_connections_active",
            "Client connections that sent a request in the last 60 s",
            self.active_connections() as u64,
        );
        cluster::render(&mut s, g);
        raft::render(&mut s, g);
        storage::render(&mut s, g);
        process::render(&mut s);
        // Writing to a String cannot fail.
        let _ = encode_registry(&mut out, &self.registry);
        let _ = encode_registry(&mut out, s.registry());
        let _ = encode_eof(&mut out);
        out
    }
}

/// A gauge family keyed by label values, for scrape-time series.
pub(crate) type Labels = Vec<(&'static str, String)>;
