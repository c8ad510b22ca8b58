//! Rendering: the OpenMetrics text, label escaping, histograms, and every name of the
//! metric contract shared with the dashboard and the alert rules.

use std::time::Duration;

use neo_protocol::{Answer, AnsweredRequest, ErrorCode, ServerObserver};

use super::process::{FDS_RESERVED, ProcessStats, open_files_short_of, parse, render_stats};
use super::scrape::Scrape;
use super::*;

/// Every series name of the metric contract of issue 21 (docs/metrics.md), as it
/// appears in the exposition. `deploy/grafana/neo.json` and
/// `deploy/prometheus/alerts.yml` use these: renaming or dropping one breaks them.
const CONTRACT: &[&str] = &[
    "neo_rpc_connections_active",
    "neo_runtime_tasks_alive",
    "neo_rpc_connections_total",
    "neo_rpc_requests_total",
    "neo_rpc_request_duration_seconds_bucket",
    "neo_rpc_request_duration_seconds_sum",
    "neo_rpc_request_duration_seconds_count",
    "neo_client_connections_active",
    "neo_produce_requests_total",
    "neo_produce_errors_total",
    "neo_produce_records_total",
    "neo_produce_bytes_total",
    "neo_produce_latency_seconds_bucket",
    "neo_fetch_requests_total",
    "neo_fetch_errors_total",
    "neo_fetch_bytes_total",
    "neo_fetch_records_total",
    "neo_fetch_latency_seconds_bucket",
    "neo_storage_append_seconds_bucket",
    "neo_storage_fsync_seconds_bucket",
    "neo_storage_appended_bytes_total",
    "neo_storage_fsyncs_total",
    "neo_storage_segments",
    "neo_storage_free_bytes",
    "neo_storage_reserve_bytes",
    "neo_replicas_stopped",
    "neo_replica_reopens_total",
    "neo_storage_damaged_logs_cut_total",
    "neo_log_bytes_stored",
    "neo_topic_log_bytes",
    "neo_raft_commit_latency_seconds_bucket",
    "neo_raft_leader_changes_total",
    "neo_raft_elections_started_total",
    "neo_raft_metadata_term",
    "neo_raft_follower_lag_entries",
    "neo_raft_apply_lag_entries",
    "neo_raft_proposals_pending",
    "neo_raft_snapshots_sent_total",
    "neo_partitions_hosted",
    "neo_partitions_led",
    "neo_partitions_under_replicated",
    "neo_partitions_leaderless",
    "neo_partition_log_start_offset",
    "neo_partition_log_end_offset",
    "neo_controller",
    "neo_nodes_alive",
    "neo_group_lag",
    "neo_group_members",
    "neo_group_rebalances_total",
    "neo_queue_available",
    "neo_queue_in_flight",
    "neo_queue_delayed",
    "neo_queue_dead_lettered_total",
    "neo_queue_acked_total",
    "neo_queue_oldest_age_ms",
    "neo_queue_redelivered_total",
    "neo_auth_total",
    "neo_permission_denied_total",
    "neo_throttled_requests_total",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_start_time_seconds",
    "process_threads",
    "neo_build_info",
];

/// Gauges with one row in every labelled family.
fn gauges() -> Gauges {
    Gauges {
        queues: vec![(
            "q".into(),
            neo_protocol::api::QueuePartitionStats {
                partition: 1,
                available: 7,
                redelivered: 2,
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
        partitions_under_replicated: 1,
        partitions_leaderless: 0,
        topic_log_bytes: [("t".to_string(), 10)].into(),
        segments: 3,
        replicas_stopped: 1,
        storage_free_bytes: 1 << 30,
        storage_reserve_bytes: 64 << 20,
        metadata_term: 4,
        follower_lag: [(2, 6)].into(),
        apply_lag: 1,
        partition_offsets: vec![("t".into(), 2, 0, 9)],
    }
}

/// The value of the series that starts with `series` (name and labels) in `text`.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

// A runtime, as the node's scrapes have: `neo_runtime_tasks_alive` is read from it.
#[tokio::test(flavor = "current_thread")]
async fn every_contract_name_is_rendered() {
    let m = Metrics::new();
    m.rpc.connection_opened("127.0.0.1:1".parse().unwrap());
    let mut text = m.render(&gauges());
    // Linux renders process_* from /proc; elsewhere check the same names from values.
    let mut s = Scrape::default();
    render_stats(
        &mut s,
        &ProcessStats {
            max_fds: Some(1024),
            ..ProcessStats::default()
        },
    );
    let mut more = String::new();
    prometheus_client::encoding::text::encode_registry(&mut more, s.registry()).unwrap();
    text.push_str(&more);
    m.rpc.request_answered(&AnsweredRequest {
        service: "neo.broker",
        method: "produce",
        answer: Answer::Ok,
        duration: Duration::from_millis(1),
    });
    m.produce_latency
        .get_or_create(&acks_label(neo_protocol::api::Acks::All))
        .observe(Duration::from_millis(1));
    text.push_str(&m.render(&gauges()));
    let missing: Vec<&&str> = CONTRACT
        .iter()
        .filter(|name| {
            !text
                .lines()
                .any(|l| l.starts_with(**name) && l[name.len()..].starts_with([' ', '{']))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "missing from /metrics: {missing:?}\n{text}"
    );
}

#[test]
fn openmetrics_text_with_escaped_labels_and_eof() {
    let m = Metrics::new();
    m.produce_requests.inc_by(3);
    m.throttled.fetch_add(2, Ordering::Relaxed);
    for d in [
        Duration::from_micros(10),
        Duration::from_millis(3),
        Duration::from_secs(20),
    ] {
        m.produce_latency
            .get_or_create(&acks_label(neo_protocol::api::Acks::All))
            .observe(d);
    }
    let text = m.render(&gauges());
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert_eq!(text.matches("# EOF").count(), 1);
    // Counters are declared without `_total`, their samples carry it.
    assert!(text.contains("# TYPE neo_produce_requests counter\n"));
    assert!(!text.contains("_total_total"));
    assert_eq!(value(&text, "neo_produce_requests_total"), Some(3.0));
    assert_eq!(value(&text, "neo_throttled_requests_total"), Some(2.0));
    assert_eq!(
        value(&text, "neo_auth_total{method=\"jwt\",result=\"ok\"}"),
        Some(7.0)
    );
    assert_eq!(
        value(&text, "neo_auth_total{method=\"jwt\",result=\"refused\"}"),
        Some(2.0)
    );
    assert_eq!(value(&text, "neo_permission_denied_total"), Some(5.0));
    assert_eq!(value(&text, "neo_partitions_led"), Some(1.0));
    assert_eq!(
        value(&text, "neo_queue_available{queue=\"q\",partition=\"1\"}"),
        Some(7.0)
    );
    assert_eq!(
        value(
            &text,
            "neo_queue_redelivered_total{queue=\"q\",partition=\"1\"}"
        ),
        Some(2.0)
    );
    // A `"` in a label value is escaped.
    assert_eq!(
        value(
            &text,
            "neo_group_lag{group=\"g\\\"1\",topic=\"t\",partition=\"2\"}"
        ),
        Some(4.0)
    );
    assert_eq!(
        value(&text, "neo_group_members{group=\"g\\\"1\"}"),
        Some(3.0)
    );
    assert_eq!(
        value(&text, "neo_group_rebalances_total{group=\"g\\\"1\"}"),
        Some(4.0)
    );
    assert_eq!(
        value(&text, "neo_raft_follower_lag_entries{follower=\"2\"}"),
        Some(6.0)
    );
    assert_eq!(
        value(
            &text,
            "neo_partition_log_end_offset{topic=\"t\",partition=\"2\"}"
        ),
        Some(9.0)
    );
    let version = format!(
        "neo_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(value(&text, &version), Some(1.0));
    // Histogram buckets are cumulative, 50 µs to 10 s then +Inf.
    let bucket = |le: &str| {
        value(
            &text,
            &format!("neo_produce_latency_seconds_bucket{{le=\"{le}\",acks=\"all\"}}"),
        )
    };
    assert_eq!(bucket("0.00005"), Some(1.0), "{text}");
    assert_eq!(bucket("0.005"), Some(2.0));
    assert_eq!(bucket("10.0"), Some(2.0));
    assert_eq!(bucket("+Inf"), Some(3.0));
    assert_eq!(
        value(&text, "neo_produce_latency_seconds_count{acks=\"all\"}"),
        Some(3.0)
    );
}

#[test]
fn rpc_requests_by_method_and_code() {
    let m = Metrics::new();
    let peer = "127.0.0.1:9".parse().unwrap();
    m.rpc.connection_opened(peer);
    m.rpc.connection_opened(peer);
    m.rpc.connection_closed(peer);
    for (method, answer) in [
        ("produce", Answer::Ok),
        ("produce", Answer::Error(ErrorCode::NotLeader)),
        ("produce", Answer::Error(ErrorCode::NotLeader)),
        ("no_such_method", Answer::Custom(4242)),
    ] {
        m.rpc.request_answered(&AnsweredRequest {
            service: "neo.broker",
            method,
            answer,
            duration: Duration::from_micros(70),
        });
    }
    let text = m.render(&Gauges::default());
    assert_eq!(value(&text, "neo_rpc_connections_total"), Some(2.0));
    assert_eq!(value(&text, "neo_rpc_connections_active"), Some(1.0));
    assert_eq!(
        value(
            &text,
            "neo_rpc_requests_total{method=\"produce\",code=\"ok\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "neo_rpc_requests_total{method=\"produce\",code=\"not_leader\"}"
        ),
        Some(2.0)
    );
    // An unknown name is bounded to `other`.
    assert_eq!(
        value(
            &text,
            "neo_rpc_requests_total{method=\"other\",code=\"custom\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "neo_rpc_request_duration_seconds_bucket{le=\"0.0001\",method=\"produce\"}"
        ),
        Some(3.0),
        "{text}"
    );
}

#[test]
fn proc_self_stat_is_parsed() {
    // Field 2 holds a space and a ')'; times in ticks of 1/100 s.
    let stat = "4242 (neo node) x) S 1 4242 4242 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 \
                7 0 12345 104857600 2560 18446744073709551615";
    let boot = "cpu  1 2 3\nbtime 1700000000\nprocesses 9\n";
    let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                  Max open files            1024                 4096                 files\n";
    let p = parse(stat, boot, limits, 12).expect("parsed");
    assert_eq!(p.cpu_seconds, 3.0);
    assert_eq!(p.threads, 7);
    assert!((p.start_time_seconds - 1_700_000_123.45).abs() < 1e-3);
    assert_eq!(p.virtual_bytes, 104_857_600);
    assert_eq!(p.resident_bytes, 2560 * 4096);
    assert_eq!(p.open_fds, 12);
    assert_eq!(p.max_fds, Some(1024));
    assert!(parse("garbage", boot, limits, 0).is_none());
    assert!(parse(stat, "no btime", limits, 0).is_none());
}

#[test]
fn connections_max_is_checked_against_the_open_files_limit() {
    let limits = |soft: &str| {
        format!(
            "Limit                     Soft Limit           Hard Limit           Units\n\
             Max open files            {soft:<20} 1048576              files\n"
        )
    };
    // `ulimit -n 1024` (a common default) cannot hold the default 10 000 connections.
    assert_eq!(open_files_short_of(&limits("1024"), 10_000), Some(1024));
    assert_eq!(open_files_short_of(&limits("65536"), 10_000), None);
    let exact = (10_000 + FDS_RESERVED).to_string();
    assert_eq!(open_files_short_of(&limits(&exact), 10_000), None);
    assert_eq!(open_files_short_of(&limits("unlimited"), 10_000), None);
    assert_eq!(open_files_short_of("", 10_000), None);
}
