//! Prometheus metrics, by hand: atomic counters and fixed-bucket histograms, rendered in
//! the text exposition format (version 0.0.4) by `/metrics`. Gauges that describe the
//! node's groups (partitions hosted and led, bytes stored) are computed when scraped.

use std::collections::HashMap;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Bucket upper bounds, in seconds: 100 µs to 10 s.
const BUCKETS_S: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 10.0,
];

/// A latency histogram with [`BUCKETS_S`] (plus `+Inf`).
#[derive(Default)]
pub(crate) struct Histogram {
    /// Non-cumulative counts per bucket; the last is `+Inf`.
    counts: [AtomicU64; BUCKETS_S.len() + 1],
    sum_us: AtomicU64,
}

impl Histogram {
    pub(crate) fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BUCKETS_S
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(BUCKETS_S.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            cumulative += c.load(Ordering::Relaxed);
            let le = BUCKETS_S
                .get(i)
                .map_or_else(|| "+Inf".to_string(), |b| b.to_string());
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

/// A client connection counts as active while it sent a request this recently (the
/// RPC server does not report its connections, see docs/node.md).
const CONNECTION_ACTIVE_WINDOW: Duration = Duration::from_secs(60);
/// Bound on tracked client connections (oldest are forgotten first on overflow).
const CONNECTIONS_TRACKED_MAX: usize = 100_000;

/// Every counter and histogram of a node.
#[derive(Default)]
pub(crate) struct Metrics {
    pub(crate) produce_requests: AtomicU64,
    pub(crate) produce_errors: AtomicU64,
    pub(crate) produce_records: AtomicU64,
    pub(crate) produce_bytes: AtomicU64,
    pub(crate) fetch_requests: AtomicU64,
    pub(crate) fetch_errors: AtomicU64,
    pub(crate) fetch_bytes: AtomicU64,
    pub(crate) admin_requests: AtomicU64,
    /// Consumer-group requests (membership and offsets).
    pub(crate) group_requests: AtomicU64,
    /// Consumer-group requests answered with an error.
    pub(crate) group_errors: AtomicU64,
    /// Queue requests (receive, ack, nack, extend, term).
    pub(crate) queue_requests: AtomicU64,
    /// Queue requests answered with an error.
    pub(crate) queue_errors: AtomicU64,
    /// Messages handed out by queue receives.
    pub(crate) queue_delivered: AtomicU64,
    /// Requests refused `Throttled` (over a rate limit).
    pub(crate) throttled: AtomicU64,
    /// Retention purges asked of partition replicas here.
    pub(crate) retention_purges: AtomicU64,
    /// Retention attempts that failed (logged; the next pass retries).
    pub(crate) retention_errors: AtomicU64,
    /// Leader transfers this node started to hand partitions to their preferred replica.
    pub(crate) leader_transfers: AtomicU64,
    pub(crate) produce_latency: Histogram,
    pub(crate) fetch_latency: Histogram,
    pub(crate) commit_latency: Histogram,
    peers: Mutex<HashMap<SocketAddr, Instant>>,
}

/// Gauges computed at scrape time by the caller.
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
    pub(crate) group_rebalances: std::collections::BTreeMap<String, u64>,
    /// Client-port handshakes: (method, accepted, refused), security on only.
    pub(crate) auth: Vec<(&'static str, u64, u64)>,
    /// Requests refused `PermissionDenied`.
    pub(crate) permission_denials: u64,
    /// Counts of the queue partitions led here.
    pub(crate) queues: Vec<(String, neo_protocol::api::QueuePartitionStats)>,
}

/// A label value escaped for the text format.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// Notes a request from `peer` (for the active-connections gauge).
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

    /// The whole exposition text.
    pub(crate) fn render(&self, g: &Gauges) -> String {
        let mut out = String::with_capacity(4096);
        let counter = |out: &mut String, name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
        };
        let gauge = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            let _ = writeln!(out, "{name} {v}");
        };
        counter(
            &mut out,
            "neo_produce_requests_total",
            "Produce requests received.",
            &self.produce_requests,
        );
        counter(
            &mut out,
            "neo_produce_errors_total",
            "Produce requests answered with an error.",
            &self.produce_errors,
        );
        counter(
            &mut out,
            "neo_produce_records_total",
            "Records in acknowledged produce requests.",
            &self.produce_records,
        );
        counter(
            &mut out,
            "neo_produce_bytes_total",
            "Record batch bytes in acknowledged produce requests.",
            &self.produce_bytes,
        );
        counter(
            &mut out,
            "neo_fetch_requests_total",
            "Fetch requests received.",
            &self.fetch_requests,
        );
        counter(
            &mut out,
            "neo_fetch_errors_total",
            "Fetch requests answered with an error.",
            &self.fetch_errors,
        );
        counter(
            &mut out,
            "neo_fetch_bytes_total",
            "Record batch bytes returned by fetches.",
            &self.fetch_bytes,
        );
        counter(
            &mut out,
            "neo_admin_requests_total",
            "Metadata and topic admin requests received.",
            &self.admin_requests,
        );
        counter(
            &mut out,
            "neo_group_requests_total",
            "Consumer-group requests received (membership and offsets).",
            &self.group_requests,
        );
        counter(
            &mut out,
            "neo_group_errors_total",
            "Consumer-group requests answered with an error.",
            &self.group_errors,
        );
        counter(
            &mut out,
            "neo_queue_requests_total",
            "Queue requests received (receive, ack, nack, extend, term).",
            &self.queue_requests,
        );
        counter(
            &mut out,
            "neo_queue_errors_total",
            "Queue requests answered with an error.",
            &self.queue_errors,
        );
        counter(
            &mut out,
            "neo_queue_delivered_total",
            "Messages handed out by queue receives on this node.",
            &self.queue_delivered,
        );
        if !g.auth.is_empty() {
            let _ = writeln!(
                out,
                "# HELP neo_auth_total Client-port authentication handshakes by token kind and result."
            );
            let _ = writeln!(out, "# TYPE neo_auth_total counter");
            for (method, ok, failed) in &g.auth {
                let _ = writeln!(
                    out,
                    "neo_auth_total{{method=\"{method}\",result=\"ok\"}} {ok}"
                );
                let _ = writeln!(
                    out,
                    "neo_auth_total{{method=\"{method}\",result=\"refused\"}} {failed}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP neo_permission_denied_total Requests refused PermissionDenied (security on)."
        );
        let _ = writeln!(out, "# TYPE neo_permission_denied_total counter");
        let _ = writeln!(out, "neo_permission_denied_total {}", g.permission_denials);
        counter(
            &mut out,
            "neo_throttled_requests_total",
            "Requests refused Throttled: a principal or client address over a rate limit.",
            &self.throttled,
        );
        counter(
            &mut out,
            "neo_retention_purges_total",
            "Retention purges of partition replica logs on this node.",
            &self.retention_purges,
        );
        counter(
            &mut out,
            "neo_retention_errors_total",
            "Retention passes over a partition replica that failed.",
            &self.retention_errors,
        );
        counter(
            &mut out,
            "neo_leader_transfers_total",
            "Leader transfers this node started to hand partitions back to their preferred replica.",
            &self.leader_transfers,
        );
        self.produce_latency.render(
            &mut out,
            "neo_produce_latency_seconds",
            "Produce request latency, receipt to answer (acks=all: includes commit).",
        );
        self.fetch_latency.render(
            &mut out,
            "neo_fetch_latency_seconds",
            "Fetch request latency, including long-poll waits.",
        );
        self.commit_latency.render(
            &mut out,
            "neo_raft_commit_latency_seconds",
            "Partition proposal to applied on this leader (quorum fsync included).",
        );
        gauge(
            &mut out,
            "neo_partitions_hosted",
            "Partition replicas hosted on this node.",
            g.partitions_hosted,
        );
        gauge(
            &mut out,
            "neo_partitions_led",
            "Partitions this node leads.",
            g.partitions_led,
        );
        gauge(
            &mut out,
            "neo_log_bytes_stored",
            "Bytes of partition segment logs on this node.",
            g.log_bytes,
        );
        gauge(
            &mut out,
            "neo_controller",
            "1 if this node leads the metadata group.",
            u64::from(g.is_controller),
        );
        gauge(
            &mut out,
            "neo_nodes_alive",
            "Registered nodes this node considers alive (itself included).",
            g.nodes_alive,
        );
        gauge(
            &mut out,
            "neo_client_connections_active",
            "Client connections that sent a request in the last 60 s.",
            self.active_connections() as u64,
        );
        render_groups(&mut out, g);
        render_queues(&mut out, g);
        out
    }
}

/// The queue series, per partition led here.
fn render_queues(out: &mut String, g: &Gauges) {
    type Field = fn(&neo_protocol::api::QueuePartitionStats) -> u64;
    let series: [(&str, &str, &str, Field); 6] = [
        (
            "neo_queue_available",
            "gauge",
            "Messages of a queue partition receivable now.",
            |s| s.available,
        ),
        (
            "neo_queue_in_flight",
            "gauge",
            "Messages of a queue partition leased to a consumer.",
            |s| s.in_flight,
        ),
        (
            "neo_queue_delayed",
            "gauge",
            "Messages of a queue partition waiting for a delay.",
            |s| s.delayed,
        ),
        (
            "neo_queue_dead_lettered_total",
            "counter",
            "Messages of a queue partition dead-lettered.",
            |s| s.dead_lettered,
        ),
        (
            "neo_queue_acked_total",
            "counter",
            "Messages of a queue partition acked.",
            |s| s.acked,
        ),
        (
            "neo_queue_oldest_age_ms",
            "gauge",
            "Age of the oldest message of a queue partition not yet done.",
            |s| s.oldest_age_ms,
        ),
    ];
    for (name, kind, help, f) in series {
        let _ = writeln!(
            out,
            "# HELP {name} {help} (reported by the partition's leader)"
        );
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (q, s) in &g.queues {
            let _ = writeln!(
                out,
                "{name}{{queue=\"{}\",partition=\"{}\"}} {}",
                label(q),
                s.partition,
                f(s)
            );
        }
    }
}

/// The consumer-group series: lag per partition (on its leader), members and
/// rebalances per group (on the coordinator).
fn render_groups(out: &mut String, g: &Gauges) {
    let _ = writeln!(
        out,
        "# HELP neo_group_lag Records between a group's committed offset and the log end \
         (reported by the partition's leader)."
    );
    let _ = writeln!(out, "# TYPE neo_group_lag gauge");
    for l in &g.group_lags {
        let _ = writeln!(
            out,
            "neo_group_lag{{group=\"{}\",topic=\"{}\",partition=\"{}\"}} {}",
            label(&l.group),
            label(&l.topic),
            l.partition,
            l.log_end.saturating_sub(l.committed)
        );
    }
    let _ = writeln!(
        out,
        "# HELP neo_group_members Members of a group (reported by the group coordinator)."
    );
    let _ = writeln!(out, "# TYPE neo_group_members gauge");
    for (name, n) in &g.group_members {
        let _ = writeln!(out, "neo_group_members{{group=\"{}\"}} {n}", label(name));
    }
    let _ = writeln!(
        out,
        "# HELP neo_group_rebalances_total Membership changes (joins, leaves, evictions, \
         subscription changes) this node made as coordinator."
    );
    let _ = writeln!(out, "# TYPE neo_group_rebalances_total counter");
    for (name, n) in &g.group_rebalances {
        let _ = writeln!(
            out,
            "neo_group_rebalances_total{{group=\"{}\"}} {n}",
            label(name)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.produce_latency.observe(Duration::from_micros(50));
        m.produce_latency.observe(Duration::from_millis(3));
        m.produce_latency.observe(Duration::from_secs(20));
        m.produce_requests.fetch_add(3, Ordering::Relaxed);
        let text = m.render(&Gauges {
            queues: vec![(
                "q".into(),
                neo_protocol::api::QueuePartitionStats {
                    partition: 1,
                    available: 7,
                    ..Default::default()
                },
            )],
            partitions_hosted: 2,
            partitions_led: 1,
            log_bytes: 10,
            is_controller: true,
            nodes_alive: 1,
            group_lags: vec![neo_broker::GroupLag {
                group: "g\"1".into(),
                topic: "t".into(),
                partition: 2,
                committed: 5,
                log_end: 9,
            }],
            group_members: vec![("g\"1".into(), 3)],
            group_rebalances: [("g\"1".to_string(), 4)].into(),
            auth: vec![("jwt", 7, 2)],
            permission_denials: 5,
        });
        assert!(text.contains("neo_produce_requests_total 3"));
        assert!(text.contains("neo_auth_total{method=\"jwt\",result=\"ok\"} 7"));
        assert!(text.contains("neo_auth_total{method=\"jwt\",result=\"refused\"} 2"));
        assert!(text.contains("neo_permission_denied_total 5"));
        assert!(text.contains("neo_produce_latency_seconds_bucket{le=\"0.0001\"} 1"));
        assert!(text.contains("neo_produce_latency_seconds_bucket{le=\"0.005\"} 2"));
        assert!(text.contains("neo_produce_latency_seconds_bucket{le=\"+Inf\"} 3"));
        assert!(text.contains("neo_produce_latency_seconds_count 3"));
        assert!(text.contains("neo_partitions_led 1"));
        assert!(text.contains("neo_queue_available{queue=\"q\",partition=\"1\"} 7"));
        assert!(text.contains("neo_group_lag{group=\"g\\\"1\",topic=\"t\",partition=\"2\"} 4"));
        assert!(text.contains("neo_group_members{group=\"g\\\"1\"} 3"));
        assert!(text.contains("neo_group_rebalances_total{group=\"g\\\"1\"} 4"));
    }
}
