//! The consumer group rules: pure, from the history alone, called by
//! [`crate::checker::check`] when the run had a group workload.
//!
//! | rule | fails the run |
//! |---|---|
//! | **missed = 0**: every acknowledged payload was returned by some member's `poll` at least once | yes |
//! | **unexpected = 0**: every record a member consumed is a payload of this run that was sent (not refused) and, where the drain reached, is the record the final log holds at that offset | yes |
//! | **no regression**: a partition's committed offset never goes backwards (below) | yes |
//! | **no phantom**: every sampled committed offset is an offset some member tried to commit before the sample was answered | yes |
//! | **members rejoin**: a member that was fenced (session lost, `FencedMember`) joined again under a new id before the end (fences in the last 10 s before the members are stopped are not judged) | yes |
//! | duplicates: records consumed more than once (rebalances, fenced members, uncommitted progress) | no: counted |
//! | commit errors by kind, rebalances, joins, fences, reordered acknowledgements, stale samples | no: reported |
//!
//! # The committed offset never goes backwards
//!
//! A partition's committed offset is changed only by `CommitOffset` entries of the
//! partition's Raft group, and read by the `Fence` entry of a member taking it over;
//! every replica applies them in log order. In that order the value cannot go down
//! with this workload: (1) a member's commits are serial (the next is sent after the
//! previous one answered) and carry its position, which only moves forward from where
//! its takeover started; (2) a takeover reads the value as of its place in the log,
//! and the new owner starts there; (3) once it has fenced, a commit of an older owner
//! is refused (successive owners have strictly larger epochs). What the checker sees
//! are not log positions but time intervals: an acknowledged commit was applied at
//! some instant between its invoke and its answer; a takeover read at some instant
//! between the start of the `poll` that made it and the `on_assigned` call. When one
//! operation *completed before the other began*, the log has them in that order
//! (Raft is linearizable for operations that went through the log). So the rule is:
//!
//! > for two observations `a`, `b` of a partition, each an **acknowledged commit**, a
//! > **takeover** (`Assigned` start offset) or a **final read** (the auditor's
//! > takeovers after every member closed), if `a` answered before `b` was invoked,
//! > then `b`'s value ≥ `a`'s value. Anything else is a regression.
//!
//! What is *not* a regression, and why:
//!
//! - **Acknowledgements out of order** (`reordered_acks`, reported). Member A's commit
//!   of 100 can be applied, then B take the partition over (reading 100) and commit
//!   150, and A's answer arrive only after B's (a paused leader that thaws, a slow
//!   connection): in answer order 150 then 100, yet the log held 100 then 150. Only
//!   commits whose intervals do not overlap are ordered; overlapping ones are counted.
//! - **Stale samples** (`stale_samples`, reported). The sampler's `GroupAdmin` read is
//!   not an entry of the Raft log: the node that believes it leads answers from the
//!   offset table it has applied, with no read barrier. A leader elected a moment ago
//!   may not have applied its predecessor's last commits yet, and a deposed leader that
//!   has not noticed still answers; either shows an older value. A sample below an
//!   observation (or an earlier sample) that completed before it was invoked is stale,
//!   not a regression; a sample showing an offset that nobody committed is a violation
//!   (`phantom_samples`).
//! - Commits that ended in an error or that the client made inside `poll` / `close`
//!   (revocation commits, `Unobserved`) may or may not have been applied: they are not
//!   observations, only legitimate values for samples.
//!
//! Log start offsets are 0 in a chaos run (no retention), so a takeover that found no
//! committed offset (and started at the log start) reads as 0.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::history::{
    CommitOutcome, GroupEventKind, GroupHistory, History, Outcome, ProduceOp, drain_map,
    parse_payload, payload,
};

/// Examples kept per category.
const EXAMPLES_MAX: usize = 10;
/// A member fenced less than this before the members were stopped may not have had
/// the time to join again: such a fence is not held against it.
const REJOIN_GRACE_US: u64 = 10_000_000;

/// What the group rules found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupCheck {
    /// The group's name.
    pub group: String,
    /// Members started (the auditor not included).
    pub members: u32,
    /// Records returned to members, copies included.
    pub consumed: usize,
    /// Distinct (partition, offset) consumed.
    pub consumed_distinct: usize,
    /// Extra copies of records consumed more than once.
    pub duplicates: usize,
    /// Records consumed more than once.
    pub duplicated_records: usize,
    /// Acknowledged payloads no member consumed.
    pub missed: usize,
    /// Consumed records that were never produced, refused before sending, or differ
    /// from the final log at their offset.
    pub unexpected: usize,
    /// Commits answered.
    pub commits_acked: usize,
    /// Revocation commits made inside `poll` / `close` (answer not observable).
    pub commits_unobserved: usize,
    /// Commits that failed, by error kind (`FencedMember`, `NotLeader`, `Timeout`, ...).
    pub commit_errors: BTreeMap<String, usize>,
    /// Errors of `poll`, `subscribe`, `close` and connects, by `call:kind`.
    pub member_errors: BTreeMap<String, usize>,
    /// Member ids taken (first joins and rejoins, the auditor's included).
    pub joins: usize,
    /// Times a member lost its membership (`FencedMember` from `poll` or a commit).
    pub fences: usize,
    /// Takeovers, revocations and losses seen by the members' listeners.
    pub rebalances: usize,
    /// The highest group epoch `describe_group` showed.
    pub group_epoch_max: Option<u64>,
    /// Members fenced (or never joined) that did not join again before the end.
    pub members_stuck: usize,
    /// Observations below an earlier one (the rule above).
    pub commit_regressions: usize,
    /// The largest of those regressions, in offsets.
    pub commit_regression_max: u64,
    /// Acknowledged commits below an earlier-answered one they overlapped in time.
    pub reordered_acks: usize,
    /// Committed-offset samples taken.
    pub samples: usize,
    /// Sample and describe calls that failed, by error kind (`UnknownGroup` before
    /// the first join is normal).
    pub sample_errors: BTreeMap<String, usize>,
    /// Samples below an observation or sample that completed before them.
    pub stale_samples: usize,
    /// How far below, at most, in offsets.
    pub stale_sample_lag_max: u64,
    /// Samples showing an offset no member had tried to commit.
    pub phantom_samples: usize,
    /// The final committed offset of each partition (the auditor's reads).
    pub final_committed: Vec<(u32, Option<u64>)>,
    /// Σ over partitions of the drained high watermark minus the final committed offset.
    pub final_lag: u64,
    /// From the end of the drain until the group had consumed every acknowledged record
    /// (or the deadline), milliseconds.
    pub catch_up_ms: Option<f64>,
    /// Up to 10 examples per category.
    pub examples: BTreeMap<String, Vec<String>>,
    /// One line per violated rule; empty = pass.
    pub violations: Vec<String>,
}

impl GroupCheck {
    fn example(&mut self, category: &str, text: String) {
        let list = self.examples.entry(category.to_string()).or_default();
        if list.len() < EXAMPLES_MAX {
            list.push(text);
        }
    }
}

/// One ordered observation of a committed offset: its value was in force at some
/// instant of `[start_us, end_us]` (see the module doc).
#[derive(Debug, Clone)]
struct Observation {
    start_us: u64,
    end_us: u64,
    value: Option<u64>,
    what: String,
}

fn secs(us: u64) -> f64 {
    us as f64 / 1e6
}

/// Check the group part of a history.
pub fn check_group(history: &History, g: &GroupHistory) -> GroupCheck {
    let mut r = GroupCheck {
        group: g.group.clone(),
        members: g.members,
        consumed: g.reads.len(),
        samples: g.samples.len(),
        group_epoch_max: g.snapshots.iter().map(|s| s.group_epoch).max(),
        catch_up_ms: g
            .final_phase_us
            .map(|(a, b)| b.saturating_sub(a) as f64 / 1000.0),
        ..GroupCheck::default()
    };
    for (_, kind) in &g.sample_errors {
        *r.sample_errors.entry(kind.clone()).or_default() += 1;
    }
    consumption(history, g, &mut r);
    membership(g, &mut r);
    let by_partition = observations(g);
    for (p, obs) in &by_partition {
        regressions(*p, obs, &mut r);
    }
    reordered(g, &mut r);
    samples(g, &by_partition, &mut r);
    finals(history, g, &mut r);

    let mut v = Vec::new();
    if r.missed > 0 {
        v.push(format!(
            "{} acknowledged records never consumed by the group",
            r.missed
        ));
    }
    if r.unexpected > 0 {
        v.push(format!(
            "{} records consumed by the group were never produced or are not in the final log there",
            r.unexpected
        ));
    }
    if r.commit_regressions > 0 {
        v.push(format!(
            "the group's committed offset went backwards {} times (by up to {})",
            r.commit_regressions, r.commit_regression_max
        ));
    }
    if r.phantom_samples > 0 {
        v.push(format!(
            "{} committed-offset samples show an offset no member committed",
            r.phantom_samples
        ));
    }
    if r.members_stuck > 0 {
        v.push(format!(
            "{} group members lost their membership and never joined again",
            r.members_stuck
        ));
    }
    r.violations = v;
    r
}

/// Rules (b) and (c): every acknowledged payload consumed; nothing foreign consumed;
/// duplicates counted.
fn consumption(history: &History, g: &GroupHistory, r: &mut GroupCheck) {
    let run = history.run_id.as_str();
    let ops: HashMap<(u32, u64), &ProduceOp> = history
        .produces
        .iter()
        .map(|op| ((op.producer, op.seq), op))
        .collect();
    let log = drain_map(&history.drain);
    let drained_to: HashMap<u32, u64> = history
        .drain
        .iter()
        .map(|d| (d.partition, d.position))
        .collect();
    let mut copies: BTreeMap<(u32, u64), Vec<usize>> = BTreeMap::new();
    for (i, read) in g.reads.iter().enumerate() {
        copies
            .entry((read.partition, read.offset))
            .or_default()
            .push(i);
    }
    r.consumed_distinct = copies.len();
    let mut consumed_values: HashSet<&str> = HashSet::new();
    for ((p, offset), at) in &copies {
        let first = &g.reads[at[0]];
        let value = first.value.as_str();
        consumed_values.insert(value);
        if at.len() > 1 {
            r.duplicates += at.len() - 1;
            r.duplicated_records += 1;
            let who: Vec<(u32, f64)> = at
                .iter()
                .map(|i| (g.reads[*i].member, secs(g.reads[*i].at_us)))
                .collect();
            r.example(
                "group_duplicates",
                format!("{p}/{offset} {value:?} consumed by (member, s) {who:?}"),
            );
            if let Some(other) = at.iter().map(|i| &g.reads[*i]).find(|x| x.value != value) {
                r.unexpected += 1;
                r.example(
                    "group_unexpected",
                    format!(
                        "{p}/{offset}: consumed as {value:?} and as {:?}",
                        other.value
                    ),
                );
            }
        }
        let why = match parse_payload(run, value).map(|key| ops.get(&key)) {
            None => Some(format!("not a payload of run {run}")),
            Some(None) => Some("never sent".to_string()),
            Some(Some(op)) if op.outcome == Outcome::Fail => {
                Some("refused before sending".to_string())
            }
            Some(Some(_)) => {
                let drained = drained_to.get(p).is_some_and(|to| offset < to);
                match log.get(&(*p, *offset)) {
                    Some(stored) if *stored != value => {
                        Some(format!("the final log has {stored:?} there"))
                    }
                    None if drained => Some("the final log has nothing there".to_string()),
                    _ => None,
                }
            }
        };
        if let Some(why) = why {
            r.unexpected += 1;
            r.example(
                "group_unexpected",
                format!(
                    "{p}/{offset}: member {} consumed {value:?} at {:.3}s: {why}",
                    first.member,
                    secs(first.at_us)
                ),
            );
        }
    }
    for op in &history.produces {
        if op.outcome != Outcome::Ok {
            continue;
        }
        let value = payload(run, op.producer, op.seq);
        if !consumed_values.contains(value.as_str()) {
            r.missed += 1;
            r.example(
                "group_missed",
                format!(
                    "producer {} seq {} acknowledged at {}/{:?} ({:.3}s), never consumed by the group",
                    op.producer,
                    op.seq,
                    op.partition,
                    op.offset,
                    secs(op.complete_us.unwrap_or(0))
                ),
            );
        }
    }
}

/// Counts of commits, errors, joins, fences, rebalances; members that did not rejoin.
fn membership(g: &GroupHistory, r: &mut GroupCheck) {
    for c in &g.commits {
        match c.outcome {
            CommitOutcome::Acked => r.commits_acked += 1,
            CommitOutcome::Unobserved => r.commits_unobserved += 1,
            CommitOutcome::Error => {
                let kind = c.error_kind.clone().unwrap_or_else(|| "Other".into());
                *r.commit_errors.entry(kind).or_default() += 1;
            }
        }
    }
    let fenced_commit = |c: &&crate::history::GroupCommit| {
        c.outcome == CommitOutcome::Error && c.error_kind.as_deref() == Some("FencedMember")
    };
    r.fences += g.commits.iter().filter(fenced_commit).count();
    for e in &g.events {
        match &e.kind {
            GroupEventKind::Joined { .. } => r.joins += 1,
            GroupEventKind::Assigned { .. }
            | GroupEventKind::Revoked { .. }
            | GroupEventKind::Lost { .. } => r.rebalances += 1,
            GroupEventKind::Error { call, kind, .. } => {
                *r.member_errors.entry(format!("{call}:{kind}")).or_default() += 1;
                if call == "poll" && kind == "FencedMember" {
                    r.fences += 1;
                }
            }
            GroupEventKind::Closed => {}
        }
    }
    // Members stop polling at the end of the final phase: a fence after it (or just
    // before it) cannot be followed by a join.
    let end = g
        .final_phase_us
        .map_or(u64::MAX, |(_, end)| end.saturating_sub(REJOIN_GRACE_US));
    for m in 0..g.members {
        let last_join = g
            .events
            .iter()
            .filter(|e| e.member == m && matches!(e.kind, GroupEventKind::Joined { .. }))
            .map(|e| e.at_us)
            .max();
        let event_fences = g
            .events
            .iter()
            .filter(|e| e.member == m)
            .filter(|e| match &e.kind {
                GroupEventKind::Lost { .. } => true,
                GroupEventKind::Error { call, kind, .. } => {
                    call == "poll" && kind == "FencedMember"
                }
                _ => false,
            })
            .map(|e| e.at_us);
        let commit_fences = g
            .commits
            .iter()
            .filter(|c| c.member == m)
            .filter(fenced_commit)
            .filter_map(|c| c.complete_us);
        let last_fence = event_fences.chain(commit_fences).filter(|t| *t < end).max();
        let stuck = match (last_join, last_fence) {
            (None, _) => Some("never joined".to_string()),
            (Some(j), Some(f)) if f > j => Some(format!(
                "fenced at {:.3}s, last joined at {:.3}s",
                secs(f),
                secs(j)
            )),
            _ => None,
        };
        if let Some(why) = stuck {
            r.members_stuck += 1;
            r.example("members_stuck", format!("member {m}: {why}"));
        }
    }
}

/// Acknowledged commits, takeovers and the auditor's reads, by partition.
fn observations(g: &GroupHistory) -> BTreeMap<u32, Vec<Observation>> {
    let mut by: BTreeMap<u32, Vec<Observation>> = BTreeMap::new();
    for c in &g.commits {
        if let (CommitOutcome::Acked, Some(end)) = (c.outcome, c.complete_us) {
            by.entry(c.partition).or_default().push(Observation {
                start_us: c.invoke_us,
                end_us: end,
                value: Some(c.offset),
                what: format!(
                    "member {} ({}) committed {} [{:.3}s, {:.3}s]",
                    c.member,
                    c.member_id,
                    c.offset,
                    secs(c.invoke_us),
                    secs(end)
                ),
            });
        }
    }
    for e in &g.events {
        if let GroupEventKind::Assigned { partitions } = &e.kind {
            let who = if e.member == g.members {
                "the auditor".to_string()
            } else {
                format!("member {}", e.member)
            };
            for (p, start) in partitions {
                by.entry(*p).or_default().push(Observation {
                    start_us: e.start_us,
                    end_us: e.at_us,
                    value: Some(*start),
                    what: format!(
                        "{who} took over at {start} [{:.3}s, {:.3}s]",
                        secs(e.start_us),
                        secs(e.at_us)
                    ),
                });
            }
        }
    }
    for obs in by.values_mut() {
        obs.sort_by_key(|o| o.end_us);
    }
    by
}

/// (end, value) pairs sorted by end, and for each prefix the index of its highest value
/// (the first of equals): which value was in force, at least, before a given instant.
struct Preceding {
    sorted: Vec<(u64, Option<u64>)>,
    /// `best[i]`: index of the highest value among `0..=i`.
    best: Vec<usize>,
}

impl Preceding {
    fn new(sorted: Vec<(u64, Option<u64>)>) -> Preceding {
        debug_assert!(sorted.windows(2).all(|w| w[0].0 <= w[1].0));
        let mut best: Vec<usize> = Vec::with_capacity(sorted.len());
        for (i, (_, v)) in sorted.iter().enumerate() {
            let keep = match best.last() {
                Some(&b) if sorted[b].1 >= *v => b,
                _ => i,
            };
            best.push(keep);
        }
        Preceding { sorted, best }
    }

    /// The index of the highest value among those that ended before `start_us`.
    fn before(&self, start_us: u64) -> Option<usize> {
        let n = self.sorted.partition_point(|(e, _)| *e < start_us);
        n.checked_sub(1).map(|i| self.best[i])
    }
}

fn below(later: Option<u64>, earlier: Option<u64>) -> Option<u64> {
    (later < earlier).then(|| earlier.unwrap_or(0).saturating_sub(later.unwrap_or(0)))
}

/// Rule (a) on one partition's observations (sorted by end).
fn regressions(p: u32, obs: &[Observation], r: &mut GroupCheck) {
    let preceding = Preceding::new(obs.iter().map(|o| (o.end_us, o.value)).collect());
    for o in obs {
        let Some(i) = preceding.before(o.start_us) else {
            continue;
        };
        if let Some(by) = below(o.value, obs[i].value) {
            r.commit_regressions += 1;
            r.commit_regression_max = r.commit_regression_max.max(by);
            r.example(
                "commit_regressions",
                format!("partition {p}: {} after {}", o.what, obs[i].what),
            );
        }
    }
}

/// Acknowledged commits below an earlier-answered one that overlapped them in time.
fn reordered(g: &GroupHistory, r: &mut GroupCheck) {
    let mut acked: BTreeMap<u32, Vec<(u64, u64, u64)>> = BTreeMap::new();
    for c in &g.commits {
        if let (CommitOutcome::Acked, Some(end)) = (c.outcome, c.complete_us) {
            acked
                .entry(c.partition)
                .or_default()
                .push((end, c.invoke_us, c.offset));
        }
    }
    for (p, mut list) in acked {
        list.sort_unstable();
        let mut top: Option<(u64, u64, u64)> = None;
        for (end, start, offset) in list {
            match top {
                Some((top_end, _, top_offset)) if offset < top_offset => {
                    // Ordered pairs were judged by `regressions`.
                    if top_end >= start {
                        r.reordered_acks += 1;
                        r.example(
                            "reordered_acks",
                            format!(
                                "partition {p}: commit of {offset} [{:.3}s, {:.3}s] answered after one of {top_offset} ({:.3}s)",
                                secs(start),
                                secs(end),
                                secs(top_end)
                            ),
                        );
                    }
                }
                _ => top = Some((end, start, offset)),
            }
        }
    }
}

/// Stale and phantom samples.
fn samples(g: &GroupHistory, obs: &BTreeMap<u32, Vec<Observation>>, r: &mut GroupCheck) {
    // The earliest invoke of a commit of each (partition, offset), any outcome.
    let mut tried: HashMap<(u32, u64), u64> = HashMap::new();
    for c in &g.commits {
        let t = tried.entry((c.partition, c.offset)).or_insert(c.invoke_us);
        *t = (*t).min(c.invoke_us);
    }
    let mut by: BTreeMap<u32, Vec<(u64, Option<u64>)>> = BTreeMap::new();
    for (p, list) in obs {
        by.entry(*p)
            .or_default()
            .extend(list.iter().map(|o| (o.end_us, o.value)));
    }
    for s in &g.samples {
        by.entry(s.partition)
            .or_default()
            .push((s.complete_us, s.offset));
    }
    let preceding: BTreeMap<u32, Preceding> = by
        .into_iter()
        .map(|(p, mut list)| {
            list.sort_unstable();
            (p, Preceding::new(list))
        })
        .collect();
    for s in &g.samples {
        if let Some(v) = s.offset
            && tried
                .get(&(s.partition, v))
                .is_none_or(|t| *t > s.complete_us)
        {
            r.phantom_samples += 1;
            r.example(
                "phantom_samples",
                format!(
                    "partition {}: sampled committed offset {v} [{:.3}s, {:.3}s]; no member had committed it",
                    s.partition,
                    secs(s.invoke_us),
                    secs(s.complete_us)
                ),
            );
        }
        let Some(pre) = preceding.get(&s.partition) else {
            continue;
        };
        if let Some(i) = pre.before(s.invoke_us)
            && let Some(by) = below(s.offset, pre.sorted[i].1)
        {
            r.stale_samples += 1;
            r.stale_sample_lag_max = r.stale_sample_lag_max.max(by);
            r.example(
                "stale_samples",
                format!(
                    "partition {}: sampled {:?} [{:.3}s, {:.3}s] after {:?} was in force ({:.3}s)",
                    s.partition,
                    s.offset,
                    secs(s.invoke_us),
                    secs(s.complete_us),
                    pre.sorted[i].1,
                    secs(pre.sorted[i].0)
                ),
            );
        }
    }
}

/// The final committed offsets and how far they are from the drained high watermarks.
fn finals(history: &History, g: &GroupHistory, r: &mut GroupCheck) {
    r.final_committed = (0..history.partitions)
        .map(|p| {
            let offset = g
                .final_offsets
                .iter()
                .find(|s| s.partition == p)
                .and_then(|s| s.offset);
            (p, offset)
        })
        .collect();
    for (p, offset) in &r.final_committed {
        if let Some(d) = history.drain.iter().find(|d| d.partition == *p) {
            r.final_lag += d.target.saturating_sub(offset.unwrap_or(0));
        }
    }
}

#[cfg(test)]
mod tests;
