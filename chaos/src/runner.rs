//! One scenario from start to verdict: fresh cluster → topic → workload → faults →
//! heal → cool-down → stop the workload → replica digests → drain → check → report.

mod session;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::checker::{CheckReport, check};
use crate::cluster::{Cluster, DockerCluster, DockerOptions, LocalCluster, LocalOptions, local};
use crate::faults::{self, READY_TIMEOUT, Scenario};
use crate::history::{FaultEvent, History, PartitionDigests};
use crate::queue_workload;
use crate::security::ClientSecurity;
use crate::workload::WorkloadConfig;

pub(crate) use session::Session;

/// Bound on the wait for every replica to reach the same high watermark.
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);
/// The drain gives up on a partition after this long without progress.
pub const DRAIN_IDLE_MAX: Duration = Duration::from_secs(30);
/// After the drain, how long the group may take to consume every acknowledged record.
pub const GROUP_CATCH_UP_MAX: Duration = Duration::from_secs(60);
/// After the group, how long the queue's workers may take to account for every
/// acknowledged message (see [`queue_workload::DRAIN_MAX`]).
pub const QUEUE_DRAIN_MAX: Duration = queue_workload::DRAIN_MAX;

/// Where the cluster runs.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Local `neo-node` processes (`separate_uids` is set per scenario).
    Local(LocalOptions),
    /// The docker compose project.
    Docker(DockerOptions),
}

impl Mode {
    /// `local` or `docker`.
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Local(_) => "local",
            Mode::Docker(_) => "docker",
        }
    }
}

/// Everything one run of a scenario needs.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Where the cluster runs.
    pub mode: Mode,
    /// Length of the fault phase (cycles start until it is over).
    pub duration: Duration,
    /// Writes before the first fault.
    pub warmup: Duration,
    /// Writes after the last heal, before the workload stops.
    pub cooldown: Duration,
    /// The seed of every random choice (printed; `--seed` replays the schedule).
    pub seed: u64,
    /// Replication factor of the topic.
    pub replication: u32,
    /// The workload.
    pub workload: WorkloadConfig,
    /// Token and TLS of every client and HTTP admin request (security off by default).
    pub security: ClientSecurity,
    /// Where reports go (`None`: nowhere).
    pub report_dir: Option<PathBuf>,
    /// Write the full history even when the run passes.
    pub write_history: bool,
}

/// How a scenario ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Every invariant held.
    Pass,
    /// An invariant was violated.
    Fail,
    /// Not run here (the reason says why).
    Skipped,
    /// The run itself broke (cluster did not start, a node never became ready, ...).
    Error,
}

/// The JSON report of one scenario (`<report-dir>/<scenario>.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioReport {
    /// The scenario.
    pub scenario: Scenario,
    /// `local` or `docker`.
    pub mode: String,
    /// The clients' security: `off`, `token`, `TLS`, `token + TLS`.
    #[serde(default)]
    pub security: String,
    /// The seed.
    pub seed: u64,
    /// The run id in every payload.
    pub run_id: String,
    /// The verdict.
    pub status: Status,
    /// Why it was skipped or errored; the violations when it failed.
    pub reason: Option<String>,
    /// The fault phase asked for, seconds.
    pub duration_s: f64,
    /// Wall time of the whole scenario, seconds.
    pub wall_s: f64,
    /// Fault cycles run.
    pub fault_cycles: usize,
    /// Producers.
    pub producers: u32,
    /// Members of the consumer group workload (0: none).
    #[serde(default)]
    pub group_consumers: u32,
    /// Workers of the queue workload (0: none).
    #[serde(default)]
    pub queue_workers: u32,
    /// Records per second asked for.
    pub rate: f64,
    /// Partitions of the topic.
    pub partitions: u32,
    /// Replication factor.
    pub replication: u32,
    /// The checker's findings (absent when skipped or the run broke early).
    pub check: Option<CheckReport>,
    /// The faults, with times (µs since the run's start).
    pub faults: Vec<FaultEvent>,
    /// Replica digests after healing.
    pub digests: Vec<PartitionDigests>,
    /// The command line that replays this scenario's schedule.
    pub reproduce: String,
    /// The full history file, when written.
    pub history_file: Option<String>,
    /// Node logs, when saved (failures).
    pub logs_dir: Option<String>,
}

/// Run one scenario; never panics on cluster trouble (that is [`Status::Error`]).
pub async fn run_scenario(config: &RunConfig, scenario: Scenario) -> ScenarioReport {
    let started = Instant::now();
    let mut rng = scenario.rng(config.seed);
    let run_id = format!("{:08x}", rng.u32(..));
    let mut report = ScenarioReport {
        scenario,
        mode: config.mode.name().into(),
        security: config.security.describe().into(),
        seed: config.seed,
        run_id: run_id.clone(),
        status: Status::Error,
        reason: None,
        duration_s: config.duration.as_secs_f64(),
        wall_s: 0.0,
        fault_cycles: 0,
        producers: config.workload.producers,
        group_consumers: config.workload.group_consumers,
        queue_workers: config.workload.queue_workers,
        rate: config.workload.rate,
        partitions: config.workload.partitions,
        replication: config.replication,
        check: None,
        faults: Vec::new(),
        digests: Vec::new(),
        reproduce: reproduce(config, scenario),
        history_file: None,
        logs_dir: None,
    };
    eprintln!(
        "=== {scenario} ({} mode) seed {} run {run_id}, faults for {:?} ===",
        config.mode.name(),
        config.seed,
        config.duration
    );
    if scenario.needs_network()
        && let Mode::Local(_) = config.mode
        && let Err(why) = local::network_probe()
    {
        report.status = Status::Skipped;
        report.reason = Some(format!("local network faults unavailable: {why}"));
        eprintln!("skipped: {}", report.reason.as_deref().unwrap_or(""));
        return report;
    }
    let mut cluster = match start_cluster(config, scenario.needs_network()).await {
        Ok(c) => c,
        Err(e) => {
            report.reason = Some(format!("cluster did not start: {e:#}"));
            report.wall_s = started.elapsed().as_secs_f64();
            eprintln!("error: {}", report.reason.as_deref().unwrap_or(""));
            return report;
        }
    };
    let driven = drive(config, scenario, &mut cluster, rng, &run_id).await;
    match driven {
        Ok((history, cycles, trouble)) => {
            let result = check(&history);
            report.fault_cycles = cycles;
            report.faults = history.faults.clone();
            report.digests = history.digests.clone();
            report.status = if !result.pass() {
                Status::Fail
            } else if trouble.is_some() {
                Status::Error
            } else {
                Status::Pass
            };
            report.reason = match (&trouble, result.pass()) {
                (_, false) => Some(result.violations.join("; ")),
                (Some(t), true) => Some(t.clone()),
                (None, true) => None,
            };
            if let Some(dir) = &config.report_dir
                && (config.write_history || report.status != Status::Pass)
            {
                let path = dir.join(format!("{scenario}.history.json"));
                match write_json(&path, &history) {
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
    // Sends whose outcome never resolved pass the checker, but they are what a stalled
    // producer leaves: keep the node logs for them too.
    let unresolved = report.check.as_ref().is_some_and(|c| c.unknown > 0);
    report.logs_dir = close_cluster(
        &mut cluster,
        config.report_dir.as_deref(),
        &format!("{scenario}-logs"),
        report.status != Status::Pass || unresolved,
    )
    .await;
    report.wall_s = started.elapsed().as_secs_f64();
    if let Some(dir) = &config.report_dir {
        let path = dir.join(format!("{scenario}.json"));
        if let Err(e) = write_json(&path, &report) {
            eprintln!("cannot write {}: {e:#}", path.display());
        }
    }
    report
}

/// Start a fresh cluster (local nodes as separate uids when `separate_uids`, for
/// network faults) and wait until every node is ready.
pub(crate) async fn start_cluster(
    config: &RunConfig,
    separate_uids: bool,
) -> anyhow::Result<Cluster> {
    let mut cluster = match &config.mode {
        Mode::Local(options) => {
            let options = LocalOptions {
                separate_uids,
                ..options.clone()
            };
            Cluster::Local(LocalCluster::launch(&options)?)
        }
        Mode::Docker(options) => Cluster::Docker(DockerCluster::launch(options).await?),
    };
    let ids = cluster.ids();
    if let Err(e) = cluster.wait_ready(&ids, READY_TIMEOUT).await {
        cluster.teardown().await.ok();
        return Err(e);
    }
    Ok(cluster)
}

/// The workload under faults, then healing, digests and drain. Returns the history,
/// the cycles run, and what went wrong with the faults or healing, if anything (the
/// history is still checked then).
async fn drive(
    config: &RunConfig,
    scenario: Scenario,
    cluster: &mut Cluster,
    rng: fastrand::Rng,
    run_id: &str,
) -> anyhow::Result<(History, usize, Option<String>)> {
    let mut session = Session::start(config, cluster, run_id).await?;
    let until = tokio::time::Instant::now() + config.duration;
    let mut ctx = session.fault_context(config, rng, until);
    let cycles = faults::run(scenario, cluster, &mut ctx).await;
    let cycles = match cycles {
        Ok(n) => n,
        Err(e) => {
            eprintln!("fault driver failed: {e:#}");
            session.trouble(format!("fault driver: {e:#}"));
            0
        }
    };
    let (history, trouble) = session.finish(config, cluster).await;
    Ok((history, cycles, trouble))
}

/// Save the node logs into `<report_dir>/<logs_name>` when `save_logs` (and a report
/// folder is set), then tear the cluster down. Returns the logs folder when saved.
pub(crate) async fn close_cluster(
    cluster: &mut Cluster,
    report_dir: Option<&Path>,
    logs_name: &str,
    save_logs: bool,
) -> Option<String> {
    let mut saved = None;
    if save_logs && let Some(dir) = report_dir {
        let logs = dir.join(logs_name);
        match cluster.save_logs(&logs).await {
            Ok(()) => saved = Some(logs.display().to_string()),
            Err(e) => eprintln!("cannot save logs: {e:#}"),
        }
    }
    if let Err(e) = cluster.teardown().await {
        eprintln!("teardown: {e:#}");
    }
    saved
}

/// Write `value` as pretty JSON to `path` (creating its folder).
pub(crate) fn write_json<T: Serialize>(path: &std::path::Path, value: &T) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = std::fs::File::create(path)?;
    serde_json::to_writer_pretty(std::io::BufWriter::new(file), value)?;
    Ok(())
}

/// The command line that replays a scenario's fault schedule.
fn reproduce(config: &RunConfig, scenario: Scenario) -> String {
    let w = &config.workload;
    let compose = match &config.mode {
        Mode::Docker(options) => format!(" --compose-file {}", options.compose_file.display()),
        Mode::Local(_) => String::new(),
    };
    format!(
        "neo-chaos --mode {}{compose} --scenario {scenario} --seed {} --duration {}s --producers {} --rate {} --partitions {} --group-consumers {} --queue-workers {} --queue-rate {}{}",
        config.mode.name(),
        config.seed,
        config.duration.as_secs(),
        w.producers,
        w.rate,
        w.partitions,
        w.group_consumers,
        w.queue_workers,
        w.queue_rate,
        config.security.flags()
    )
}
