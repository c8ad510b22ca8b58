//! Partitions, consumer groups, queues and security: series computed from [`Gauges`].

use super::scrape::Scrape;
use super::{Gauges, Labels};

pub(crate) fn render(s: &mut Scrape, g: &Gauges) {
    s.gauge(
        "neo_partitions_hosted",
        "Partition replicas hosted on this node",
        g.partitions_hosted,
    );
    s.gauge(
        "neo_partitions_led",
        "Partitions this node leads",
        g.partitions_led,
    );
    s.gauge(
        "neo_partitions_under_replicated",
        "Partitions led here with a replica not in sync (not holding every committed entry)",
        g.partitions_under_replicated,
    );
    s.gauge(
        "neo_partitions_leaderless",
        "Partitions hosted here whose replica knows no leader now",
        g.partitions_leaderless,
    );
    s.gauge(
        "neo_controller",
        "1 if this node leads the metadata group",
        u64::from(g.is_controller),
    );
    s.gauge(
        "neo_nodes_alive",
        "Registered nodes this node considers alive (itself included)",
        g.nodes_alive,
    );
    let part = |topic: &str, p: u32| -> Labels {
        vec![("topic", topic.to_string()), ("partition", p.to_string())]
    };
    if !g.partition_offsets.is_empty() {
        s.gauges(
            "neo_partition_log_start_offset",
            "First record offset the partition's replica here holds (--metrics-per-partition)",
            g.partition_offsets
                .iter()
                .map(|(t, p, start, _)| (part(t, *p), *start)),
        );
        s.gauges(
            "neo_partition_log_end_offset",
            "Offset after the last record the partition's replica here holds (--metrics-per-partition)",
            g.partition_offsets
                .iter()
                .map(|(t, p, _, end)| (part(t, *p), *end)),
        );
    }
    if !g.auth.is_empty() {
        s.counters(
            "neo_auth",
            "Client-port authentication handshakes by token kind and result",
            g.auth.iter().flat_map(|(method, ok, refused)| {
                [
                    (
                        vec![("method", method.to_string()), ("result", "ok".into())],
                        *ok,
                    ),
                    (
                        vec![("method", method.to_string()), ("result", "refused".into())],
                        *refused,
                    ),
                ]
            }),
        );
    }
    s.counter(
        "neo_permission_denied",
        "Requests refused PermissionDenied (security on)",
        g.permission_denials,
    );
    groups(s, g);
    queues(s, g);
}

/// Lag per partition (on its leader), members and rebalances per group (on the
/// coordinator).
fn groups(s: &mut Scrape, g: &Gauges) {
    s.gauges(
        "neo_group_lag",
        "Records between a group's committed offset and the log end (reported by the partition's leader)",
        g.group_lags.iter().map(|l| {
            (
                vec![
                    ("group", l.group.clone()),
                    ("topic", l.topic.clone()),
                    ("partition", l.partition.to_string()),
                ],
                l.log_end.saturating_sub(l.committed),
            )
        }),
    );
    s.gauges(
        "neo_group_members",
        "Members of a group (reported by the group coordinator)",
        g.group_members
            .iter()
            .map(|(name, n)| (vec![("group", name.clone())], *n)),
    );
    s.counters(
        "neo_group_rebalances",
        "Membership changes (joins, leaves, evictions, subscription changes) this node made as coordinator",
        g.group_rebalances
            .iter()
            .map(|(name, n)| (vec![("group", name.clone())], *n)),
    );
}

/// The queue series, per partition led here.
fn queues(s: &mut Scrape, g: &Gauges) {
    type Field = fn(&neo_protocol::api::QueuePartitionStats) -> u64;
    let labels = |q: &str, p: u32| -> Labels {
        vec![("queue", q.to_string()), ("partition", p.to_string())]
    };
    let gauges: [(&str, &str, Field); 4] = [
        (
            "neo_queue_available",
            "Messages of a queue partition receivable now (reported by the partition's leader)",
            |s| s.available,
        ),
        (
            "neo_queue_in_flight",
            "Messages of a queue partition leased to a consumer (reported by the partition's leader)",
            |s| s.in_flight,
        ),
        (
            "neo_queue_delayed",
            "Messages of a queue partition waiting for a delay (reported by the partition's leader)",
            |s| s.delayed,
        ),
        (
            "neo_queue_oldest_age_ms",
            "Age of the oldest message of a queue partition not yet done (reported by the partition's leader)",
            |s| s.oldest_age_ms,
        ),
    ];
    for (name, help, f) in gauges {
        s.gauges(
            name,
            help,
            g.queues
                .iter()
                .map(|(q, st)| (labels(q, st.partition), f(st))),
        );
    }
    let counters: [(&str, &str, Field); 3] = [
        (
            "neo_queue_dead_lettered",
            "Messages of a queue partition dead-lettered (reported by the partition's leader)",
            |s| s.dead_lettered,
        ),
        (
            "neo_queue_acked",
            "Messages of a queue partition acked (reported by the partition's leader)",
            |s| s.acked,
        ),
        (
            "neo_queue_redelivered",
            "Deliveries of a queue partition's messages after the first (lease expiries, nacks; reported by the partition's leader)",
            |s| s.redelivered,
        ),
    ];
    for (name, help, f) in counters {
        s.counters(
            name,
            help,
            g.queues
                .iter()
                .map(|(q, st)| (labels(q, st.partition), f(st))),
        );
    }
}
