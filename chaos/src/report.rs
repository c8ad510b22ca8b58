//! Human output: a summary block per scenario and the markdown table of a whole run
//! (the one `docs/CHAOS.md` holds).

use std::fmt::Write;

use crate::groups_check::GroupCheck;
use crate::runner::{ScenarioReport, Status};

fn ms(v: Option<f64>) -> String {
    match v {
        Some(v) if v >= 10_000.0 => format!("{:.1} s", v / 1000.0),
        Some(v) => format!("{v:.0} ms"),
        None => "—".into(),
    }
}

fn status(s: Status) -> &'static str {
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
        for (category, list) in &c.examples {
            let _ = writeln!(out, "  {category}:");
            for e in list.iter().take(5) {
                let _ = writeln!(out, "    {e}");
            }
        }
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
