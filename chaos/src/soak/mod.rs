//! `neo-chaos soak`: the scenarios' workload (producers, live consumers, a consumer
//! group, a queue) against one 3-node cluster for a long time, with one fault cycle
//! every `--fault-every`, and the nodes' memory, threads, open files and connections
//! sampled all along.
//!
//! ```text
//! fresh cluster ─▶ Session::start (topic, queue, every workload, warm-up)
//!   ─▶ sampler every --sample-every (soak-samples.csv as it goes)
//!   ─▶ fault phase of --duration: slot i at --fault-every × (i + 1): one cycle of the
//!      next scheduled scenario (inject, hold, heal, settle), healed before the next
//!   ─▶ Session::finish (heal, cool-down, stop, digests, drain, group, queue)
//!   ─▶ stop the sampler ─▶ history checker + soak rules + RSS rule ─▶ soak.json,
//!      soak.md ─▶ teardown
//! ```
//!
//! The verdict comes from data only: the history checker's rules (as for every
//! scenario), plus **0 unknown** (every topic produce and queue send resolved: `Ok` or
//! refused before sending), plus the RSS rule ([`rss`]). Exit status as for the
//! scenarios: 0 pass, 1 a rule violated, 2 the run broke (a fault could not be
//! injected or healed, a node could not be judged, the cluster did not start).
//!
//! | module | role |
//! |---|---|
//! | [`schedule`] | pure: the seeded order of fault kinds and the slots |
//! | [`sampler`] | `/proc/<pid>` and `/metrics` of every node, every `--sample-every`; the CSV |
//! | [`rss`] | pure: the RSS-growth rule over process lifetimes |
//! | [`summary`] | `soak.md` and the printed summary |

pub mod rss;
pub mod sampler;
pub mod schedule;
pub mod summary;

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::checker::{CheckReport, check};
use crate::cluster::{Cluster, local};
use crate::faults::{self, Scenario};
use crate::runner::{self, Mode, RunConfig, Session, Status};
use rss::{RssCheck, RssRule, check_rss};
use sampler::{Sampler, SamplerConfig, SamplerOutput};

/// The samples' file in the report folder.
pub const SAMPLES_FILE: &str = "soak-samples.csv";

/// A soak.
#[derive(Debug, Clone)]
pub struct SoakConfig {
    /// The cluster, workload, seed, security and reports. `duration` is the fault
    /// phase (the soak's length), `warmup` the writes before it (the queue's creation
    /// overlaps it), `cooldown` the writes after the last heal.
    pub run: RunConfig,
    /// The scenarios whose single cycles the schedule deals (each once per round).
    pub faults: Vec<Scenario>,
    /// One fault cycle every this long (the first after one interval).
    pub fault_every: Duration,
    /// Time between two samples of every node.
    pub sample_every: Duration,
    /// The RSS rule's warm-up of each process lifetime.
    pub rss_warmup: Duration,
    /// RSS growth at or above this fails a node, percent.
    pub rss_growth_max_percent: f64,
}

/// One fault cycle of the soak.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SoakCycle {
    /// Its slot.
    pub slot: usize,
    /// Whose cycle it was.
    pub scenario: Scenario,
    /// When it began and ended (healed and settled), seconds on the run's clock.
    pub start_s: f64,
    /// See `start_s`; `None` when it failed.
    pub end_s: Option<f64>,
    /// Why it failed (it ended the fault phase).
    pub error: Option<String>,
}

/// `<report-dir>/soak.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SoakReport {
    /// `local` or `docker`.
    pub mode: String,
    /// The clients' security.
    pub security: String,
    /// The seed.
    pub seed: u64,
    /// The run id in every payload.
    pub run_id: String,
    /// The verdict.
    pub status: Status,
    /// Why it failed or broke.
    pub reason: Option<String>,
    /// Every rule violated (checker, soak, RSS).
    pub violations: Vec<String>,
    /// The fault phase asked for, seconds.
    pub duration_s: f64,
    /// Wall time of the whole soak, seconds.
    pub wall_s: f64,
    /// `--fault-every`, seconds.
    pub fault_every_s: f64,
    /// `--sample-every`, seconds.
    pub sample_every_s: f64,
    /// The scenarios asked for.
    pub faults: Vec<Scenario>,
    /// Scenarios left out, and why (local mode without iptables).
    pub faults_skipped: Option<String>,
    /// The planned kind of every slot.
    pub schedule: Vec<Scenario>,
    /// The cycles run.
    pub cycles: Vec<SoakCycle>,
    /// The workload: producers, records/s, partitions, replication, members, workers,
    /// queue messages/s.
    pub producers: u32,
    /// See `producers`.
    pub rate: f64,
    /// See `producers`.
    pub partitions: u32,
    /// See `producers`.
    pub replication: u32,
    /// See `producers`.
    pub group_consumers: u32,
    /// See `producers`.
    pub queue_workers: u32,
    /// See `producers`.
    pub queue_rate: f64,
    /// The history checker's findings.
    pub check: Option<CheckReport>,
    /// The RSS rule.
    pub rss: Option<RssCheck>,
    /// When the fault phase ended (samples after it are not judged), seconds.
    pub fault_phase_end_s: Option<f64>,
    /// Samples taken (rows of the CSV).
    pub samples: usize,
    /// The CSV.
    pub samples_file: Option<String>,
    /// Why the CSV is incomplete, if it is.
    pub samples_error: Option<String>,
    /// The largest resident memory of `neo-chaos` itself (its history grows).
    pub runner_rss_max_bytes: Option<u64>,
    /// The history, when written (failures, or `--history`).
    pub history_file: Option<String>,
    /// Node logs, when saved.
    pub logs_dir: Option<String>,
    /// The command line that replays the schedule.
    pub reproduce: String,
}

/// Run a soak; never panics on cluster trouble (that is [`Status::Error`]). Writes
/// `soak.json`, `soak.md` and `soak-samples.csv` into the report folder.
pub async fn run_soak(config: &SoakConfig) -> SoakReport {
    let started = Instant::now();
    let run = &config.run;
    let run_id = format!("{:08x}", schedule::soak_rng(run.seed, "run").u32(..));
    let mut report = new_report(config, &run_id);
    eprintln!(
        "=== soak ({} mode) seed {} run {run_id}: {:?}, a fault every {:?}, samples every {:?} ===",
        run.mode.name(),
        run.seed,
        run.duration,
        config.fault_every,
        config.sample_every
    );
    let mut kinds = config.faults.clone();
    if let Mode::Local(_) = run.mode
        && kinds.iter().any(|k| k.needs_network())
        && let Err(why) = local::network_probe()
    {
        let left: Vec<String> = kinds
            .iter()
            .filter(|k| k.needs_network())
            .map(|k| k.to_string())
            .collect();
        kinds.retain(|k| !k.needs_network());
        let note = format!(
            "{} left out: local network faults unavailable: {why}",
            left.join(", ")
        );
        eprintln!("{note}");
        report.faults_skipped = Some(note);
    }
    report.schedule = schedule::schedule(
        run.seed,
        &kinds,
        schedule::slots(run.duration, config.fault_every),
    );
    if kinds.is_empty() && !config.faults.is_empty() {
        report.reason = Some("no fault kind can run here".into());
        return finish_report(config, report, started);
    }
    let separate_uids = kinds.iter().any(|k| k.needs_network());
    let mut cluster = match runner::start_cluster(run, separate_uids).await {
        Ok(c) => c,
        Err(e) => {
            report.reason = Some(format!("cluster did not start: {e:#}"));
            return finish_report(config, report, started);
        }
    };
    let mut unknown = false;
    match soak(config, &mut cluster, &run_id, &mut report).await {
        Ok((history, trouble, sampled)) => {
            let result = check(&history);
            judge(config, &mut report, &result, trouble, sampled);
            unknown = result.unknown > 0;
            if let Some(dir) = &run.report_dir
                && (run.write_history || report.status != Status::Pass)
            {
                let path = dir.join("soak.history.json");
                match runner::write_json(&path, &history) {
                    Ok(()) => report.history_file = Some(path.display().to_string()),
                    Err(e) => eprintln!("cannot write {}: {e:#}", path.display()),
                }
            }
            report.check = Some(result);
        }
        Err(e) => {
            report.reason = Some(format!("{e:#}"));
            eprintln!("error: {e:#}");
        }
    }
    report.logs_dir = runner::close_cluster(
        &mut cluster,
        run.report_dir.as_deref(),
        "soak-logs",
        report.status != Status::Pass || unknown,
    )
    .await;
    finish_report(config, report, started)
}

fn new_report(config: &SoakConfig, run_id: &str) -> SoakReport {
    let run = &config.run;
    let w = &run.workload;
    SoakReport {
        mode: run.mode.name().into(),
        security: run.security.describe().into(),
        seed: run.seed,
        run_id: run_id.to_string(),
        status: Status::Error,
        reason: None,
        violations: Vec::new(),
        duration_s: run.duration.as_secs_f64(),
        wall_s: 0.0,
        fault_every_s: config.fault_every.as_secs_f64(),
        sample_every_s: config.sample_every.as_secs_f64(),
        faults: config.faults.clone(),
        faults_skipped: None,
        schedule: Vec::new(),
        cycles: Vec::new(),
        producers: w.producers,
        rate: w.rate,
        partitions: w.partitions,
        replication: run.replication,
        group_consumers: w.group_consumers,
        queue_workers: w.queue_workers,
        queue_rate: w.queue_rate,
        check: None,
        rss: None,
        fault_phase_end_s: None,
        samples: 0,
        samples_file: None,
        samples_error: None,
        runner_rss_max_bytes: None,
        history_file: None,
        logs_dir: None,
        reproduce: reproduce(config),
    }
}

/// Everything between a ready cluster and the history: the session, the sampler and
/// the fault phase. Returns the history, the session's trouble and the samples.
async fn soak(
    config: &SoakConfig,
    cluster: &mut Cluster,
    run_id: &str,
    report: &mut SoakReport,
) -> anyhow::Result<(crate::history::History, Option<String>, SamplerOutput)> {
    let run = &config.run;
    let mut session = Session::start(run, cluster, run_id).await?;
    let clock = session.recorder().clock();
    let csv = run.report_dir.as_ref().map(|d| d.join(SAMPLES_FILE));
    report.samples_file = csv.as_ref().map(|p| p.display().to_string());
    let sampler = Sampler::start(
        SamplerConfig {
            pids: cluster.pid_source(),
            http: cluster.http_addrs(),
            token: run.security.bearer().map(str::to_string),
            every: config.sample_every,
            csv,
        },
        clock,
    );
    let phase_start = tokio::time::Instant::now();
    let until = phase_start + run.duration;
    let mut ctx = session.fault_context(run, schedule::soak_rng(run.seed, "faults"), until);
    let mut failed = None;
    for (slot, &scenario) in report.schedule.iter().enumerate() {
        let at = phase_start + schedule::slot_start(config.fault_every, slot);
        if at >= until {
            break;
        }
        tokio::time::sleep_until(at).await;
        let start_s = clock.secs();
        eprintln!(
            "[{start_s:7.2}s] soak fault {}/{}: {scenario}",
            slot + 1,
            report.schedule.len()
        );
        let result = faults::cycle(scenario, cluster, &mut ctx).await;
        let mut cycle = SoakCycle {
            slot,
            scenario,
            start_s,
            end_s: Some(clock.secs()),
            error: None,
        };
        if let Err(e) = result {
            eprintln!("fault cycle failed, ending the fault phase: {e:#}");
            cycle.end_s = None;
            cycle.error = Some(format!("{e:#}"));
            failed = Some(format!("fault cycle {} ({scenario}): {e:#}", slot + 1));
        }
        report.cycles.push(cycle);
        if failed.is_some() {
            break;
        }
    }
    if let Some(why) = failed {
        session.trouble(why);
    } else {
        tokio::time::sleep_until(until).await;
    }
    report.fault_phase_end_s = Some(clock.secs());
    eprintln!("[{:7.2}s] fault phase over", clock.secs());
    let (history, trouble) = session.finish(run, cluster).await;
    let sampled = sampler.stop().await;
    Ok((history, trouble, sampled))
}

/// The verdict: the checker's rules, 0 unknown, the RSS rule; then what broke.
fn judge(
    config: &SoakConfig,
    report: &mut SoakReport,
    result: &CheckReport,
    trouble: Option<String>,
    sampled: SamplerOutput,
) {
    let mut violations = result.violations.clone();
    violations.extend(soak_violations(result));
    let rule = RssRule {
        warmup_s: config.rss_warmup.as_secs_f64(),
        growth_max_percent: config.rss_growth_max_percent,
        until_s: report.fault_phase_end_s.unwrap_or(f64::MAX),
    };
    let rss = check_rss(&sampled.samples, &sampled.nodes, &rule);
    violations.extend(rss.violations.iter().cloned());
    report.samples = sampled.samples.len();
    report.samples_error = sampled.csv_error;
    report.runner_rss_max_bytes = sampled.own_rss_max_bytes;
    let mut broken: Vec<String> = trouble.into_iter().collect();
    broken.extend(rss.not_judged.iter().cloned());
    report.status = if !violations.is_empty() {
        Status::Fail
    } else if !broken.is_empty() {
        Status::Error
    } else {
        Status::Pass
    };
    report.reason = if !violations.is_empty() {
        Some(violations.join("; "))
    } else if !broken.is_empty() {
        Some(broken.join("; "))
    } else {
        None
    };
    report.violations = violations;
    report.rss = Some(rss);
}

/// The soak's own rule beyond the checker's: every send resolved.
pub fn soak_violations(result: &CheckReport) -> Vec<String> {
    let mut out = Vec::new();
    if result.unknown > 0 {
        out.push(format!(
            "unknown {}: topic produces whose outcome never resolved ({} of them stored)",
            result.unknown, result.unknown_stored
        ));
    }
    if let Some(q) = &result.queue
        && q.sent_unknown > 0
    {
        out.push(format!(
            "queue unknown {}: queue sends whose outcome never resolved",
            q.sent_unknown
        ));
    }
    out
}

fn finish_report(config: &SoakConfig, mut report: SoakReport, started: Instant) -> SoakReport {
    report.wall_s = started.elapsed().as_secs_f64();
    if report.status == Status::Error && report.reason.is_none() {
        report.reason = Some("the run broke".into());
    }
    if let Some(dir) = &config.run.report_dir {
        if let Err(e) = runner::write_json(&dir.join("soak.json"), &report) {
            eprintln!("cannot write soak.json: {e:#}");
        }
        if let Err(e) = std::fs::write(dir.join("soak.md"), summary::markdown(&report)) {
            eprintln!("cannot write soak.md: {e}");
        }
    }
    report
}

/// `90s`, `1500ms`.
fn flag_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// The command line that replays a soak's schedule.
fn reproduce(config: &SoakConfig) -> String {
    let run = &config.run;
    let w = &run.workload;
    let compose = match &run.mode {
        Mode::Docker(options) => format!(" --compose-file {}", options.compose_file.display()),
        Mode::Local(_) => String::new(),
    };
    let faults: Vec<&str> = config.faults.iter().map(|f| f.name()).collect();
    format!(
        "neo-chaos soak --mode {}{compose} --seed {} --duration {} --fault-every {} --sample-every {} --warmup {} --rss-growth-max {} --faults {} --producers {} --rate {} --partitions {} --replication {} --group-consumers {} --queue-workers {} --queue-rate {}{}",
        run.mode.name(),
        run.seed,
        flag_duration(run.duration),
        flag_duration(config.fault_every),
        flag_duration(config.sample_every),
        flag_duration(config.rss_warmup),
        config.rss_growth_max_percent,
        faults.join(","),
        w.producers,
        w.rate,
        w.partitions,
        run.replication,
        w.group_consumers,
        w.queue_workers,
        w.queue_rate,
        run.security.flags()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_sends_fail_a_soak_but_refused_ones_do_not() {
        let ok = CheckReport {
            invoked: 10,
            acknowledged: 8,
            failed: 2,
            ..CheckReport::default()
        };
        assert!(soak_violations(&ok).is_empty());
        let unknown = CheckReport {
            unknown: 3,
            unknown_stored: 1,
            ..ok
        };
        let v = soak_violations(&unknown);
        assert_eq!(v.len(), 1);
        assert!(v[0].starts_with("unknown 3:"), "{v:?}");
    }

    #[test]
    fn durations_print_as_flags() {
        assert_eq!(flag_duration(Duration::from_secs(90)), "90s");
        assert_eq!(flag_duration(Duration::from_millis(1500)), "1500ms");
    }
}
