//! The soak's memory rule, pure: samples in, per-node verdict out.
//!
//! - A node's **lifetimes** are the maximal runs of its consecutive samples with one
//!   pid (a kill, stop or crash and the start after it make a new process: a new
//!   lifetime, with a new baseline). Samples without a pid or an RSS (node down,
//!   zombie) and samples after the end of the fault phase (`until_s`: cool-down,
//!   drain and checks load the nodes differently) are left out.
//! - In a lifetime, the samples of its first `warmup_s` seconds (from its first
//!   sample) are its warm-up and not judged. With at least [`JUDGED_SAMPLES_MIN`]
//!   samples after it, the lifetime is *judgeable*: with `n` of them and
//!   `k = max(`[`WINDOW_SAMPLES_MIN`]`, ⌈n / 10⌉)`, the **baseline** is the median RSS of
//!   the first `k` samples after the warm-up, the **tail** the median of the last `k`
//!   (the last 10 %), and **growth** = (tail − baseline) / baseline, in percent.
//! - A node is judged on its judgeable lifetime with the most samples after its
//!   warm-up (the latest of equals): the longest stretch of one process. It **fails**
//!   when that growth is ≥ `growth_max_percent`. The other lifetimes' growths are
//!   reported, not judged (a process a fault restarted a minute ago says little about
//!   leaks, and it is noisy while it catches up with its peers).
//! - A node without any judgeable lifetime is **not judged**, which breaks the run
//!   (the warm-up, the fault interval or the duration do not leave enough samples).
//!
//! Threads, open file descriptors and anonymous RSS (`RssAnon`) get the same windows
//! (medians), reported only.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::sampler::Sample;

/// Samples after the warm-up that make a lifetime judgeable.
pub const JUDGED_SAMPLES_MIN: usize = 10;
/// Samples in the baseline and in the tail window, at least.
pub const WINDOW_SAMPLES_MIN: usize = 3;

/// The rule's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RssRule {
    /// Warm-up of each lifetime, seconds from its first sample.
    pub warmup_s: f64,
    /// Growth at or above this fails the node, percent.
    pub growth_max_percent: f64,
    /// Samples after this time (the end of the fault phase) are not judged.
    pub until_s: f64,
}

/// One process of a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lifetime {
    /// Its pid.
    pub pid: u32,
    /// Its first and last sample, seconds.
    pub first_s: f64,
    /// See `first_s`.
    pub last_s: f64,
    /// Samples with an RSS.
    pub samples: usize,
    /// Of them, after the warm-up (and before `until_s`).
    pub judged_samples: usize,
    /// The largest RSS sampled.
    pub peak_rss_bytes: u64,
    /// Median RSS of the window right after the warm-up (judgeable lifetimes only).
    pub baseline_rss_bytes: Option<u64>,
    /// Median RSS of the last window.
    pub tail_rss_bytes: Option<u64>,
    /// (tail − baseline) / baseline, percent.
    pub growth_percent: Option<f64>,
    /// Median threads of the baseline and tail windows.
    pub threads: Option<(u64, u64)>,
    /// Median open file descriptors of the baseline and tail windows.
    pub fds: Option<(u64, u64)>,
    /// Median anonymous RSS of the baseline and tail windows (reported, not judged:
    /// `VmRSS` also counts the file-backed pages of the binary).
    #[serde(default)]
    pub anon: Option<(u64, u64)>,
}

/// The verdict on one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRss {
    /// Node id.
    pub node: u64,
    /// Its processes, in order.
    pub lifetimes: Vec<Lifetime>,
    /// Index in `lifetimes` of the one judged (`None`: not judged).
    pub judged: Option<usize>,
    /// Its growth, percent.
    pub growth_percent: Option<f64>,
    /// `Some(true)` within the limit, `Some(false)` at or over it, `None` not judged.
    pub pass: Option<bool>,
}

/// The rule over every node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RssCheck {
    /// The parameters.
    pub rule: RssRule,
    /// Per node, ascending.
    pub nodes: Vec<NodeRss>,
    /// Nodes at or over the limit, one line each.
    pub violations: Vec<String>,
    /// Nodes that could not be judged, one line each.
    pub not_judged: Vec<String>,
}

/// Apply `rule` to the samples of `nodes` (see the module doc).
pub fn check_rss(samples: &[Sample], nodes: &[u64], rule: &RssRule) -> RssCheck {
    let mut by_node: BTreeMap<u64, Vec<&Sample>> = nodes.iter().map(|n| (*n, vec![])).collect();
    for s in samples {
        if s.pid.is_some() && s.rss_bytes.is_some() && s.time_s <= rule.until_s {
            by_node.entry(s.node).or_default().push(s);
        }
    }
    let mut out = RssCheck {
        rule: *rule,
        nodes: Vec::new(),
        violations: Vec::new(),
        not_judged: Vec::new(),
    };
    for (node, mut list) in by_node {
        list.sort_by(|a, b| a.time_s.total_cmp(&b.time_s));
        let mut lifetimes: Vec<Lifetime> = Vec::new();
        let mut start = 0;
        for i in 1..=list.len() {
            if i == list.len() || list[i].pid != list[start].pid {
                lifetimes.push(lifetime(&list[start..i], rule.warmup_s));
                start = i;
            }
        }
        let judged = lifetimes
            .iter()
            .enumerate()
            .filter(|(_, l)| l.growth_percent.is_some())
            .max_by_key(|(i, l)| (l.judged_samples, *i))
            .map(|(i, _)| i);
        let growth = judged.and_then(|i| lifetimes[i].growth_percent);
        let pass = growth.map(|g| g < rule.growth_max_percent);
        match (judged, pass) {
            (Some(i), Some(false)) => {
                let l = &lifetimes[i];
                out.violations.push(format!(
                    "node {node}: RSS grew {:.1} % ({} → {}) over pid {}'s {:.0}–{:.0} s after its warm-up (limit {} %)",
                    growth.unwrap_or_default(),
                    mib(l.baseline_rss_bytes),
                    mib(l.tail_rss_bytes),
                    l.pid,
                    l.first_s + rule.warmup_s,
                    l.last_s,
                    rule.growth_max_percent
                ));
            }
            (None, _) => {
                let most = lifetimes
                    .iter()
                    .map(|l| l.judged_samples)
                    .max()
                    .unwrap_or(0);
                out.not_judged.push(format!(
                    "node {node}: no process lifetime with {JUDGED_SAMPLES_MIN} samples after its {:.0} s warm-up ({} lifetimes, the most {most})",
                    rule.warmup_s,
                    lifetimes.len()
                ));
            }
            _ => {}
        }
        out.nodes.push(NodeRss {
            node,
            lifetimes,
            judged,
            growth_percent: growth,
            pass,
        });
    }
    out
}

/// `123.4 MiB` (`—` when absent).
pub fn mib(bytes: Option<u64>) -> String {
    bytes.map_or_else(
        || "—".to_string(),
        |b| format!("{:.1} MiB", b as f64 / 1_048_576.0),
    )
}

fn lifetime(list: &[&Sample], warmup_s: f64) -> Lifetime {
    let first_s = list.first().map_or(0.0, |s| s.time_s);
    let last_s = list.last().map_or(0.0, |s| s.time_s);
    let rss: Vec<u64> = list.iter().filter_map(|s| s.rss_bytes).collect();
    let after: Vec<&Sample> = list
        .iter()
        .copied()
        .filter(|s| s.time_s >= first_s + warmup_s)
        .collect();
    let mut l = Lifetime {
        pid: list.first().and_then(|s| s.pid).unwrap_or_default(),
        first_s,
        last_s,
        samples: rss.len(),
        judged_samples: after.len(),
        peak_rss_bytes: rss.iter().copied().max().unwrap_or(0),
        baseline_rss_bytes: None,
        tail_rss_bytes: None,
        growth_percent: None,
        threads: None,
        fds: None,
        anon: None,
    };
    let n = after.len();
    if n < JUDGED_SAMPLES_MIN {
        return l;
    }
    let k = WINDOW_SAMPLES_MIN.max(n.div_ceil(10));
    let (head, tail) = (&after[..k], &after[n - k..]);
    let windows = |f: fn(&Sample) -> Option<u64>| -> Option<(u64, u64)> {
        Some((
            median(head.iter().filter_map(|s| f(s)).collect())?,
            median(tail.iter().filter_map(|s| f(s)).collect())?,
        ))
    };
    let Some((base, end)) = windows(|s| s.rss_bytes) else {
        return l;
    };
    l.baseline_rss_bytes = Some(base);
    l.tail_rss_bytes = Some(end);
    if base > 0 {
        l.growth_percent = Some((end as f64 - base as f64) * 100.0 / base as f64);
    }
    l.threads = windows(|s| s.threads.map(u64::from));
    l.fds = windows(|s| s.fds.map(u64::from));
    l.anon = windows(|s| s.anon_bytes);
    l
}

/// The median (the mean of the two middle values when even); `None` when empty.
fn median(mut v: Vec<u64>) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        v[m - 1] / 2 + v[m] / 2 + (v[m - 1] % 2 + v[m] % 2) / 2
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1_048_576;

    fn sample(node: u64, t: f64, pid: Option<u32>, rss_mib: Option<u64>) -> Sample {
        Sample {
            time_s: t,
            node,
            pid,
            state: Some('S'),
            rss_bytes: rss_mib.map(|m| m * MIB),
            threads: Some(20),
            fds: Some(100),
            rpc_connections: Some(10),
            tasks: Some(300),
            anon_bytes: rss_mib.map(|m| m * MIB / 2),
            error: None,
        }
    }

    /// Node `node`, pid `pid`, one sample every 10 s from `t0`, RSS `f(i)` MiB.
    fn series(node: u64, pid: u32, t0: f64, n: usize, f: impl Fn(usize) -> u64) -> Vec<Sample> {
        (0..n)
            .map(|i| sample(node, t0 + 10.0 * i as f64, Some(pid), Some(f(i))))
            .collect()
    }

    fn rule(warmup_s: f64) -> RssRule {
        RssRule {
            warmup_s,
            growth_max_percent: 10.0,
            until_s: f64::MAX,
        }
    }

    #[test]
    fn flat_memory_after_a_warm_up_climb_passes() {
        // 0–60 s: climbing 50 → 110 MiB (warm-up); then flat around 110 MiB.
        let s = series(1, 100, 0.0, 40, |i| {
            if i < 6 {
                50 + 10 * i as u64
            } else {
                110 + (i % 2) as u64
            }
        });
        let c = check_rss(&s, &[1], &rule(60.0));
        assert!(c.violations.is_empty() && c.not_judged.is_empty(), "{c:?}");
        let n = &c.nodes[0];
        assert_eq!(n.pass, Some(true));
        let l = &n.lifetimes[0];
        assert_eq!(l.judged_samples, 34);
        assert_eq!(l.baseline_rss_bytes, Some(110 * MIB + MIB / 2)); // 110, 111, 110, 111
        assert!(n.growth_percent.unwrap().abs() < 1.0);
        assert_eq!(l.threads, Some((20, 20)));
        assert_eq!(l.peak_rss_bytes, 111 * MIB);
    }

    #[test]
    fn a_leak_of_one_mib_a_sample_fails() {
        let s = series(2, 7, 0.0, 60, |i| 100 + i as u64);
        let c = check_rss(&s, &[2], &rule(30.0));
        assert_eq!(c.nodes[0].pass, Some(false));
        // 57 samples after the warm-up: windows of 6; baseline median 105.5 → 105 or
        // 106 (integer halves), tail 156.5.
        let g = c.nodes[0].growth_percent.unwrap();
        assert!((47.0..50.0).contains(&g), "{g}");
        assert_eq!(c.violations.len(), 1);
        assert!(
            c.violations[0].starts_with("node 2: RSS grew"),
            "{}",
            c.violations[0]
        );
    }

    #[test]
    fn growth_exactly_at_the_limit_fails_and_just_under_passes() {
        let at = series(1, 1, 0.0, 12, |i| if i < 6 { 100 } else { 110 });
        let c = check_rss(&at, &[1], &rule(0.0));
        assert_eq!(c.nodes[0].growth_percent, Some(10.0));
        assert_eq!(c.nodes[0].pass, Some(false));
        let under = series(1, 1, 0.0, 12, |i| if i < 6 { 1000 } else { 1099 });
        assert_eq!(
            check_rss(&under, &[1], &rule(0.0)).nodes[0].pass,
            Some(true)
        );
    }

    #[test]
    fn a_restart_starts_a_new_baseline_and_the_longest_lifetime_is_judged() {
        // pid 10: 0–290 s flat at 200 MiB; killed; pid 11 from 300 s starts at 60 MiB
        // and climbs to 200 MiB (catching up) and stays there. Across the restart the
        // "growth" would be 233 %; within each process there is none after its warm-up.
        let mut s = series(3, 10, 0.0, 30, |_| 200);
        s.push(sample(3, 295.0, None, None)); // down: no pid
        s.extend(series(3, 11, 300.0, 50, |i| {
            if i < 10 { 60 + 14 * i as u64 } else { 200 }
        }));
        let c = check_rss(&s, &[3], &rule(100.0));
        let n = &c.nodes[0];
        assert_eq!(n.lifetimes.len(), 2);
        assert_eq!(n.lifetimes[0].pid, 10);
        assert_eq!(n.lifetimes[1].pid, 11);
        assert_eq!(n.lifetimes[0].judged_samples, 20);
        assert_eq!(n.lifetimes[1].judged_samples, 40);
        assert_eq!(n.judged, Some(1));
        assert_eq!(n.growth_percent, Some(0.0));
        assert_eq!(n.pass, Some(true));
        assert!(c.violations.is_empty());
    }

    #[test]
    fn a_leak_in_the_longest_lifetime_fails_even_after_a_restart() {
        let mut s = series(1, 10, 0.0, 15, |_| 100);
        s.extend(series(1, 11, 150.0, 40, |i| 100 + 2 * i as u64));
        let c = check_rss(&s, &[1], &rule(20.0));
        assert_eq!(c.nodes[0].judged, Some(1));
        assert_eq!(c.nodes[0].pass, Some(false));
    }

    #[test]
    fn short_lifetimes_leave_a_node_not_judged() {
        // Restarted every 60 s, sampled every 10 s, warm-up 30 s: 3 samples each.
        let mut s = Vec::new();
        for k in 0..5u32 {
            s.extend(series(1, 100 + k, 60.0 * f64::from(k), 6, |_| 100));
        }
        let c = check_rss(&s, &[1, 2], &rule(30.0));
        assert_eq!(c.nodes.len(), 2);
        assert_eq!(c.nodes[0].lifetimes.len(), 5);
        assert_eq!(c.nodes[0].pass, None);
        assert!(c.nodes[1].lifetimes.is_empty(), "node 2 was never sampled");
        assert_eq!(c.not_judged.len(), 2);
        assert!(c.violations.is_empty());
    }

    #[test]
    fn samples_after_the_fault_phase_and_without_rss_are_left_out() {
        let mut s = series(1, 5, 0.0, 20, |_| 100);
        // The cool-down and drain: RSS doubles, but after `until_s`.
        s.extend(series(1, 5, 200.0, 10, |_| 200));
        s.push(sample(1, 150.0, Some(5), None)); // a zombie read: no RSS
        let r = RssRule {
            until_s: 195.0,
            ..rule(0.0)
        };
        let c = check_rss(&s, &[1], &r);
        assert_eq!(c.nodes[0].lifetimes[0].samples, 20);
        assert_eq!(c.nodes[0].pass, Some(true));
    }

    #[test]
    fn medians_of_odd_even_and_empty_lists() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3, 1, 2]), Some(2));
        assert_eq!(median(vec![4, 1, 3, 2]), Some(2)); // (2 + 3) / 2 rounded down
        assert_eq!(median(vec![u64::MAX, u64::MAX]), Some(u64::MAX));
        assert_eq!(median(vec![1, 3]), Some(2));
    }
}
