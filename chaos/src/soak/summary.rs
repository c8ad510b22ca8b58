//! `soak.md`: the verdict, the history's figures, the faults and the memory table; the
//! same text is printed at the end of a soak.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::SoakReport;
use super::rss::{NodeRss, mib};
use crate::report;

/// The markdown summary of a soak.
pub fn markdown(r: &SoakReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Soak: {}\n", report::status(r.status));
    let _ = writeln!(
        out,
        "{} mode, security {}, seed {}, run {}: {:.0} s of faults (one every {:.0} s), samples every {:.0} s, {:.0} s wall.",
        r.mode,
        r.security,
        r.seed,
        r.run_id,
        r.duration_s,
        r.fault_every_s,
        r.sample_every_s,
        r.wall_s
    );
    let _ = writeln!(
        out,
        "Workload: {} producers at {} records/s on {} partitions (replication {}), {} group members, {} queue workers at {} messages/s.\n",
        r.producers,
        r.rate,
        r.partitions,
        r.replication,
        r.group_consumers,
        r.queue_workers,
        r.queue_rate
    );
    if let Some(reason) = &r.reason {
        let _ = writeln!(out, "**Reason:** {reason}\n");
    }
    if let Some(c) = &r.check {
        let _ = writeln!(
            out,
            "| acknowledged | unknown | failed | lost | unexpected | duplicates | order | replicas | failover p50 | failover max | group consumed | group missed | queue acknowledged | queue lost | queue unknown |\n\
             |---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"
        );
        let g = c.group.as_ref();
        let q = c.queue.as_ref();
        let opt = |v: Option<usize>| v.map_or_else(|| "—".to_string(), |v| v.to_string());
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            c.acknowledged,
            c.unknown,
            c.failed,
            c.lost,
            c.unexpected,
            c.duplicates,
            c.order_violations,
            if c.digests_identical {
                "identical"
            } else {
                "**differ**"
            },
            report::ms(c.failover.p50_ms),
            report::ms(c.failover.max_ms),
            opt(g.map(|g| g.consumed)),
            opt(g.map(|g| g.missed)),
            opt(q.map(|q| q.sent_acknowledged)),
            opt(q.map(|q| q.lost)),
            opt(q.map(|q| q.sent_unknown)),
        );
    }
    let mut kinds: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for c in &r.cycles {
        let e = kinds.entry(c.scenario.to_string()).or_default();
        e.0 += 1;
        if c.error.is_some() {
            e.1 += 1;
        }
    }
    let kinds: Vec<String> = kinds
        .iter()
        .map(|(k, (n, failed))| match failed {
            0 => format!("{k} {n}"),
            f => format!("{k} {n} ({f} failed)"),
        })
        .collect();
    let _ = writeln!(
        out,
        "Faults: {} cycles of {} scheduled: {}.{}\n",
        r.cycles.len(),
        r.schedule.len(),
        if kinds.is_empty() {
            "none".to_string()
        } else {
            kinds.join(", ")
        },
        r.faults_skipped
            .as_deref()
            .map(|s| format!(" {s}."))
            .unwrap_or_default()
    );
    if let Some(rss) = &r.rss {
        let _ = writeln!(
            out,
            "Memory (RSS rule: growth < {} % per node, each process lifetime's first {:.0} s are its warm-up, samples up to {:.0} s; {} samples in {}):\n",
            rss.rule.growth_max_percent,
            rss.rule.warmup_s,
            rss.rule.until_s,
            r.samples,
            r.samples_file.as_deref().unwrap_or("memory")
        );
        out.push_str(&node_table(&rss.nodes));
        for line in rss.violations.iter().chain(&rss.not_judged) {
            let _ = writeln!(out, "- {line}");
        }
        let _ = writeln!(out);
    }
    if let Some(e) = &r.samples_error {
        let _ = writeln!(out, "Samples: {e}\n");
    }
    if let Some(b) = r.runner_rss_max_bytes {
        let _ = writeln!(out, "neo-chaos itself: RSS max {}.\n", mib(Some(b)));
    }
    for v in &r.violations {
        let _ = writeln!(out, "- violation: {v}");
    }
    if let Some(c) = &r.check {
        let _ = writeln!(out, "```text\n{}```", report::check_summary(c));
    }
    if let Some(h) = &r.history_file {
        let _ = writeln!(out, "History: {h}");
    }
    if let Some(l) = &r.logs_dir {
        let _ = writeln!(out, "Node logs: {l}");
    }
    let _ = writeln!(out, "\nReproduce: `{}`", r.reproduce);
    out
}

/// One row per node: the judged lifetime's windows.
fn node_table(nodes: &[NodeRss]) -> String {
    let mut out = String::from(
        "| node | processes | judged (pid, from–to) | RSS baseline | RSS tail | growth | anonymous RSS (growth) | RSS peak (all) | threads | open fds | verdict |\n\
         |---|---:|---|---:|---:|---:|---|---:|---|---|---|\n",
    );
    for n in nodes {
        let peak = n.lifetimes.iter().map(|l| l.peak_rss_bytes).max();
        let judged = n.judged.and_then(|i| n.lifetimes.get(i));
        let pair = |p: Option<(u64, u64)>| {
            p.map_or_else(|| "—".to_string(), |(a, b)| format!("{a} → {b}"))
        };
        let verdict = match n.pass {
            Some(true) => "pass",
            Some(false) => "**FAIL**",
            None => "not judged",
        };
        let anon = judged.and_then(|l| l.anon).map_or_else(
            || "—".to_string(),
            |(a, b)| {
                let g = if a > 0 {
                    (b as f64 - a as f64) * 100.0 / a as f64
                } else {
                    0.0
                };
                format!("{} → {} ({g:+.1} %)", mib(Some(a)), mib(Some(b)))
            },
        );
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            n.node,
            n.lifetimes.len(),
            judged.map_or_else(
                || "—".to_string(),
                |l| format!(
                    "{} ({:.0}–{:.0} s, {} samples)",
                    l.pid, l.first_s, l.last_s, l.judged_samples
                )
            ),
            mib(judged.and_then(|l| l.baseline_rss_bytes)),
            mib(judged.and_then(|l| l.tail_rss_bytes)),
            n.growth_percent
                .map_or_else(|| "—".to_string(), |g| format!("{g:+.1} %")),
            anon,
            mib(peak),
            pair(judged.and_then(|l| l.threads)),
            pair(judged.and_then(|l| l.fds)),
            verdict
        );
    }
    out
}
