//! Human output: a summary block per scenario and the markdown table of a whole run
//! (the one `docs/CHAOS.md` holds).

use std::fmt::Write;

use crate::checker::CheckReport;
use crate::groups_check::GroupCheck;
use crate::queue_check::QueueCheck;
use crate::runner::{ScenarioReport, Status};

pub(crate) fn ms(v: Option<f64>) -> String {
    match v {
        Some(v) if v >= 10_000.0 => format!("{:.1} s", v / 1000.0),
        Some(v) => format!("{v:.0} ms"),
        None => "—".into(),
    }
}

pub(crate) fn status(s: Status) -> &'static str {
    match s {
        Status::Pass => "PASS",
        Status::Fail => "FAIL",
        Status::Skipped => "SKIPPED",
        Status::Error => "ERROR",
    }
}

/// The summary block of one scenario.
pub fn summary(r: &ScenarioReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: {}  (seed {}, {} mode, {:.0} s of faults, {} cycles, {:.0} s wall)",
        r.scenario,
        status(r.status),
        r.seed,
        r.mode,
        r.duration_s,
        r.fault_cycles,
        r.wall_s
    );
    if let Some(reason) = &r.reason {
        let _ = writeln!(out, "  reason: {reason}");
    }
    if let Some(c) = &r.check {
        out.push_str(&check_summary(c));
    }
    if let Some(h) = &r.history_file {
        let _ = writeln!(out, "  history: {h}");
    }
    if let Some(l) = &r.logs_dir {
        let _ = writeln!(out, "  node logs: {l}");
    }
    let _ = writeln!(out, "  reproduce: {}", r.reproduce);
    out
}

/// The checker's findings as indented lines (the body of a summary block).
pub fn check_summary(c: &CheckReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "  produced {}: acknowledged {}, unknown {} ({} of them stored), failed {}",
        c.invoked, c.acknowledged, c.unknown, c.unknown_stored, c.failed
    );
    let _ = writeln!(
        out,
        "  lost {}, offset mismatches {}, unexpected {}, duplicates {} (of {} records), order violations {}, divergent live reads {} (of {} read)",
        c.lost,
        c.offset_mismatches,
        c.unexpected,
        c.duplicates,
        c.duplicated_values,
        c.order_violations,
        c.divergent_reads,
        c.live_reads
    );
    let _ = writeln!(
        out,
        "  drain {}, {} records; replica digests {}",
        if c.drain_complete {
            "complete"
        } else {
            "INCOMPLETE"
        },
        c.stored_records,
        if c.digests_identical {
            "identical"
        } else {
            "DIFFER / MISSING"
        }
    );
    let f = &c.failover;
    let _ = writeln!(
        out,
        "  failover (n={}): p50 {}, p99 {}, max {}; no ack after {} (fault, partition) pairs",
        f.samples,
        ms(f.p50_ms),
        ms(f.p99_ms),
        ms(f.max_ms),
        f.unrecovered
    );
    if let Some(g) = &c.group {
        group_summary(&mut out, g);
    }
    if let Some(q) = &c.queue {
        queue_summary(&mut out, q);
    }
    for (category, list) in &c.examples {
        let _ = writeln!(out, "  {category}:");
        for e in list.iter().take(5) {
            let _ = writeln!(out, "    {e}");
        }
    }
    out
}

/// `{a: 1, b: 2}` as `a 1, b 2` (`none` when empty).
fn counts(map: &std::collections::BTreeMap<String, usize>) -> String {
    if map.is_empty() {
        return "none".into();
    }
    map.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn group_summary(out: &mut String, g: &GroupCheck) {
    let _ = writeln!(
        out,
        "  group {} ({} members): consumed {} ({} distinct), missed {}, duplicates {} (of {} records), unexpected {}; caught up in {}",
        g.group,
        g.members,
        g.consumed,
        g.consumed_distinct,
        g.missed,
        g.duplicates,
        g.duplicated_records,
        g.unexpected,
        ms(g.catch_up_ms)
    );
    let _ = writeln!(
        out,
        "  group commits: acked {}, unobserved (revocations) {}, errors: {}",
        g.commits_acked,
        g.commits_unobserved,
        counts(&g.commit_errors)
    );
    let _ = writeln!(
        out,
        "  group members: joins {}, fences {}, rebalance callbacks {}, group epoch max {}, stuck {}; errors: {}",
        g.joins,
        g.fences,
        g.rebalances,
        g.group_epoch_max
            .map_or_else(|| "—".to_string(), |e| e.to_string()),
        g.members_stuck,
        counts(&g.member_errors)
    );
    let _ = writeln!(
        out,
        "  committed offsets: regressions {} (max {}), reordered acks {}, samples {} ({} stale, lag max {}; {} phantom; failed: {}), final {:?} (lag {})",
        g.commit_regressions,
        g.commit_regression_max,
        g.reordered_acks,
        g.samples,
        g.stale_samples,
        g.stale_sample_lag_max,
        g.phantom_samples,
        counts(&g.sample_errors),
        g.final_committed,
        g.final_lag
    );
    for (category, list) in &g.examples {
        let _ = writeln!(out, "  {category}:");
        for e in list.iter().take(5) {
            let _ = writeln!(out, "    {e}");
        }
    }
}

fn queue_summary(out: &mut String, q: &QueueCheck) {
    let _ = writeln!(
        out,
        "  queue {} ({} workers, max deliveries {}, visibility {} ms): sent {}: acknowledged {} ({} poison, {} crash), unknown {} ({} of them delivered), failed {}",
        q.queue,
        q.workers,
        q.max_deliveries,
        q.visibility_timeout_ms,
        q.sent,
        q.sent_acknowledged,
        q.poison_acknowledged,
        q.crash_acknowledged,
        q.sent_unknown,
        q.unknown_sends_delivered,
        q.sent_failed
    );
    let _ = writeln!(
        out,
        "  queue deliveries {} ({} messages): redelivered {}, unseen {}, max count {}, processed twice {}, crash redelivered {}, early redeliveries {}, stored twice {}",
        q.deliveries,
        q.delivered_messages,
        q.redeliveries,
        q.unseen_deliveries,
        q.delivery_count_max,
        q.processed_twice,
        q.crash_redelivered,
        q.early_redeliveries,
        q.stored_twice
    );
    let _ = writeln!(
        out,
        "  queue acks: {}; nacks: {}; worker errors: {}",
        counts(&q.acks),
        counts(&q.nacks),
        counts(&q.worker_errors)
    );
    let _ = writeln!(
        out,
        "  queue end: acked {} (+{} unconfirmed), dead-lettered {} ({} poison, {} other; {} DLQ records, {} duplicates{}), drained in {}; final counts {}{}",
        q.acked,
        q.acked_unconfirmed,
        q.dead_lettered,
        q.poison_dead_lettered,
        q.dead_lettered_other,
        q.dlq_records,
        q.dlq_duplicates,
        q.dlq_error
            .as_deref()
            .map(|e| format!(", DLQ read: {e}"))
            .unwrap_or_default(),
        ms(q.drain_ms),
        q.final_counts.map_or_else(
            || "not read".to_string(),
            |t| format!(
                "not done {}, acked {}, dead-lettered {}, redelivered {}, partitions not drained {}",
                t.not_done, t.acked, t.dead_lettered, t.redelivered, t.partitions_not_drained
            )
        ),
        match q.counts_agree {
            Some(true) => " (agree with the workers)",
            Some(false) => " (DISAGREE with the workers)",
            None => "",
        }
    );
    let _ = writeln!(
        out,
        "  queue rules: lost {} ({} poison), acked-then-redelivered {}, dead-lettered early {}, over-delivered {}, count regressions {}, acked and dead-lettered {}, DLQ mismatches {}, unexpected {}",
        q.lost,
        q.poison_missing,
        q.acked_then_redelivered,
        q.dead_lettered_early,
        q.over_delivered,
        q.count_regressions,
        q.acked_and_dead_lettered,
        q.dlq_mismatches,
        q.unexpected
    );
    for (category, list) in &q.examples {
        let _ = writeln!(out, "  {category}:");
        for e in list.iter().take(5) {
            let _ = writeln!(out, "    {e}");
        }
    }
}

/// The markdown table of the queue figures (empty without a queue workload).
pub fn queue_table(reports: &[ScenarioReport]) -> String {
    let rows: Vec<(&ScenarioReport, &QueueCheck)> = reports
        .iter()
        .filter_map(|r| Some((r, r.check.as_ref()?.queue.as_ref()?)))
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "| scenario | workers | acknowledged | deliveries | redelivered | processed twice | acked | unconfirmed | dead-lettered (poison) | lost | acked then redelivered | DLQ early | ack errors | drain |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|\n",
    );
    for (r, q) in rows {
        let errors: std::collections::BTreeMap<String, usize> = q
            .acks
            .iter()
            .filter(|(k, _)| k.as_str() != "Ok")
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} ({}) | {} | {} | {} | {} | {} |",
            r.scenario,
            q.workers,
            q.sent_acknowledged,
            q.deliveries,
            q.redeliveries,
            q.processed_twice,
            q.acked,
            q.acked_unconfirmed,
            q.dead_lettered,
            q.poison_dead_lettered,
            q.lost,
            q.acked_then_redelivered,
            q.dead_lettered_early,
            counts(&errors),
            ms(q.drain_ms)
        );
    }
    out
}

/// The markdown table of the consumer group figures (empty without a group workload).
pub fn group_table(reports: &[ScenarioReport]) -> String {
    let rows: Vec<(&ScenarioReport, &GroupCheck)> = reports
        .iter()
        .filter_map(|r| Some((r, r.check.as_ref()?.group.as_ref()?)))
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "| scenario | members | consumed | missed | duplicates | unexpected | commits acked | commit errors | joins | fences | rebalance callbacks | regression max | stale samples | catch-up |\n\
         |---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for (r, g) in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.scenario,
            g.members,
            g.consumed,
            g.missed,
            g.duplicates,
            g.unexpected,
            g.commits_acked,
            counts(&g.commit_errors),
            g.joins,
            g.fences,
            g.rebalances,
            g.commit_regression_max,
            g.stale_samples,
            ms(g.catch_up_ms)
        );
    }
    out
}

/// The markdown table of a run.
pub fn table(reports: &[ScenarioReport]) -> String {
    let mut out = String::from(
        "| scenario | result | faults | acknowledged | unknown | lost | unexpected | duplicates | order | replicas | failover p50 | failover p99 | failover max | seed |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|\n",
    );
    for r in reports {
        match &r.check {
            Some(c) => {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    r.scenario,
                    status(r.status),
                    r.faults.len(),
                    c.acknowledged,
                    c.unknown,
                    c.lost,
                    c.unexpected,
                    c.duplicates,
                    c.order_violations,
                    if c.digests_identical {
                        "identical"
                    } else {
                        "**differ**"
                    },
                    ms(c.failover.p50_ms),
                    ms(c.failover.p99_ms),
                    ms(c.failover.max_ms),
                    r.seed
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "| {} | {} | — | — | — | — | — | — | — | — | — | — | — | {} |",
                    r.scenario,
                    status(r.status),
                    r.seed
                );
            }
        }
    }
    out
}
