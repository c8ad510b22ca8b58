//! One scenario from start to verdict: fresh cluster → topic → workload → faults →
//! heal → cool-down → stop the workload → replica digests → drain → check → report.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use neo_client::{Admin, Client};
use serde::{Deserialize, Serialize};

use crate::admin_http;
use crate::checker::{CheckReport, check};
use crate::cluster::{Cluster, DockerCluster, DockerOptions, LocalCluster, LocalOptions, local};
use crate::faults::{self, FaultContext, READY_TIMEOUT, Scenario};
use crate::group_workload::GroupWorkload;
use crate::history::{Clock, FaultEvent, History, PartitionDigests, Recorder};
use crate::queue_workload::{self, QueueWorkload, QueueWorkloadConfig};
use crate::security::ClientSecurity;
use crate::workload::{self, Workload, WorkloadConfig, client_config};

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
    let mut cluster = match start_cluster(config, scenario).await {
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
    if report.status != Status::Pass
        && let Some(dir) = &config.report_dir
    {
        let logs = dir.join(format!("{scenario}-logs"));
        match cluster.save_logs(&logs).await {
            Ok(()) => report.logs_dir = Some(logs.display().to_string()),
            Err(e) => eprintln!("cannot save logs: {e:#}"),
        }
    }
    if let Err(e) = cluster.teardown().await {
        eprintln!("teardown: {e:#}");
    }
    report.wall_s = started.elapsed().as_secs_f64();
    if let Some(dir) = &config.report_dir {
        let path = dir.join(format!("{scenario}.json"));
        if let Err(e) = write_json(&path, &report) {
            eprintln!("cannot write {}: {e:#}", path.display());
        }
    }
    report
}

async fn start_cluster(config: &RunConfig, scenario: Scenario) -> anyhow::Result<Cluster> {
    let mut cluster = match &config.mode {
        Mode::Local(options) => {
            let options = LocalOptions {
                separate_uids: scenario.needs_network(),
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
    let w = &config.workload;
    let seeds = cluster.client_addrs();
    let security = &config.security;
    let admin = Client::connect_with(&seeds, client_config(w.retry, security))
        .await
        .context("connect")?;
    // The queue is created while the topic is (a queue, its DLQ and their leaders
    // take longer than a topic), and its workload starts once it exists, within the
    // warm-up as a rule. A queue that cannot be created makes the run an error; the
    // rest of it is still checked.
    let created = std::time::Instant::now();
    let queue_created = (w.queue_workers > 0).then(|| {
        let admin = admin.clone();
        let (partitions, replication) = (w.partitions, config.replication);
        tokio::spawn(
            async move { queue_workload::create_queue(&admin, partitions, replication).await },
        )
    });
    let topic = Admin::new(admin.clone())
        .create_topic(&w.topic, w.partitions, config.replication)
        .await
        .context("create the topic");
    if let Err(e) = topic {
        if let Some(task) = &queue_created {
            task.abort();
        }
        return Err(e);
    }
    eprintln!("topic created in {:.2} s", created.elapsed().as_secs_f64());
    let clock = Clock::start();
    let recorder = Recorder::new(clock, run_id, w.partitions, config.replication);
    let workload = Workload::start(&seeds, security, &recorder, w).await?;
    let group = (w.group_consumers > 0).then(|| {
        let name = format!("chaos-{run_id}");
        GroupWorkload::start(
            &seeds,
            security,
            &recorder,
            &w.topic,
            &name,
            w.group_consumers,
        )
    });
    let progress = tokio::spawn(progress(recorder.clone()));
    let mut trouble = None;
    let queue_start = async {
        let task = queue_created?;
        let dlq = match task.await {
            Ok(Ok(dlq)) => dlq,
            Ok(Err(e)) => return Some(Err(format!("create the queue: {e:#}"))),
            Err(e) => return Some(Err(format!("create the queue: {e}"))),
        };
        eprintln!(
            "[{:7.2}s] queue created ({:.2} s after the topic's creation began)",
            clock.secs(),
            created.elapsed().as_secs_f64()
        );
        let config = QueueWorkloadConfig {
            partitions: w.partitions,
            dlq,
            workers: w.queue_workers,
            rate: w.queue_rate,
            produce_timeout: w.produce_timeout,
            retry: w.retry,
        };
        Some(Ok(QueueWorkload::start(
            &seeds, security, &recorder, &config,
        )))
    };
    let (queue, ()) = tokio::join!(queue_start, tokio::time::sleep(config.warmup));
    let mut queue = match queue {
        Some(Ok(q)) => Some(q),
        Some(Err(e)) => {
            eprintln!("{e}");
            trouble = Some(e);
            None
        }
        None => None,
    };

    let mut ctx = FaultContext {
        recorder: &recorder,
        topic: &w.topic,
        partitions: w.partitions,
        http_token: security.bearer(),
        rng,
        until: tokio::time::Instant::now() + config.duration,
    };
    let cycles = match faults::run(scenario, cluster, &mut ctx).await {
        Ok(n) => n,
        Err(e) => {
            eprintln!("fault driver failed: {e:#}");
            trouble.get_or_insert(format!("fault driver: {e:#}"));
            0
        }
    };
    if let Err(e) = faults::heal_all(cluster).await {
        eprintln!("healing failed: {e:#}");
        trouble.get_or_insert(format!("healing: {e:#}"));
    }
    recorder.healed();
    eprintln!(
        "[{:7.2}s] healed; cool-down {:?}",
        clock.secs(),
        config.cooldown
    );
    // The queue stops sending a lease length and a second before the cool-down ends,
    // so that its last messages (a crash's redelivery takes a lease length) are done
    // by the time the other checks are: its drain then has nothing left to wait for.
    let lead = queue_workload::SEND_STOP_LEAD.min(config.cooldown);
    tokio::time::sleep(config.cooldown - lead).await;
    if let Some(queue) = &queue {
        queue.signal_stop_sending();
    }
    tokio::time::sleep(lead).await;
    let wait = w.retry.deadline + w.produce_timeout + Duration::from_secs(10);
    eprintln!(
        "[{:7.2}s] stopping the workload ({} records unresolved)",
        clock.secs(),
        recorder.pending()
    );
    let stop_queue = async {
        if let Some(queue) = queue.as_mut() {
            queue.stop_sending(wait).await;
        }
    };
    tokio::join!(workload.stop(wait), stop_queue);
    progress.abort();
    eprintln!(
        "[{:7.2}s] workload stopped ({} unresolved); comparing replicas",
        clock.secs(),
        recorder.pending()
    );
    let digests = collect_digests(cluster, &w.topic, w.partitions, security.bearer()).await;
    let targets: BTreeMap<u32, u64> = digests
        .iter()
        .filter(|d| converged(d))
        .map(|d| (d.partition, d.digests[0].high_watermark))
        .collect();
    eprintln!("[{:7.2}s] draining up to {targets:?}", clock.secs());
    let drain = workload::drain(
        &seeds,
        security,
        &w.topic,
        w.partitions,
        &targets,
        w.retry,
        DRAIN_IDLE_MAX,
    )
    .await;
    recorder.finish(drain, digests);
    if let Some(group) = group {
        group
            .finish(&recorder, w.partitions, GROUP_CATCH_UP_MAX)
            .await;
    }
    if let Some(queue) = queue {
        queue.finish(&recorder, QUEUE_DRAIN_MAX).await;
    }
    Ok((recorder.snapshot(), cycles, trouble))
}

/// Every replica answered, at one (start, high watermark).
fn converged(d: &PartitionDigests) -> bool {
    !d.digests.is_empty()
        && d.digests.len() == d.replicas.len()
        && d.digests.iter().all(|x| {
            (x.start_offset, x.high_watermark)
                == (d.digests[0].start_offset, d.digests[0].high_watermark)
        })
}

/// Digests of every replica of every partition, retried until they converge (or
/// [`CONVERGE_TIMEOUT`]).
async fn collect_digests(
    cluster: &Cluster,
    topic: &str,
    partitions: u32,
    token: Option<&str>,
) -> Vec<PartitionDigests> {
    let http = cluster.http_addrs();
    let deadline = tokio::time::Instant::now() + CONVERGE_TIMEOUT;
    let mut replicas = BTreeMap::new();
    loop {
        if replicas.is_empty() {
            replicas = admin_http::replicas(&http, topic, token)
                .await
                .unwrap_or_default();
        }
        let mut all = Vec::new();
        for p in 0..partitions {
            let set = replicas.get(&p).cloned().unwrap_or_default();
            let mut pd = PartitionDigests {
                partition: p,
                replicas: set.clone(),
                ..PartitionDigests::default()
            };
            for node in set {
                let Some((_, addr)) = http.iter().find(|(id, _)| *id == node) else {
                    pd.errors
                        .push(format!("node {node} has no known HTTP address"));
                    continue;
                };
                match admin_http::digest(addr, topic, p, token).await {
                    Ok(d) => pd.digests.push(d),
                    Err(e) => pd.errors.push(format!("node {node}: {e:#}")),
                }
            }
            all.push(pd);
        }
        if all.iter().all(converged) || tokio::time::Instant::now() >= deadline {
            return all;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A progress line every 10 s.
async fn progress(recorder: Recorder) {
    loop {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let group = recorder
            .group(|g| format!(", group consumed {}", g.reads.len()))
            .unwrap_or_default();
        let queue = recorder
            .queue(|q| {
                let sent = q
                    .sends
                    .iter()
                    .filter(|s| s.outcome == crate::history::Outcome::Ok)
                    .count();
                format!(
                    ", queue sent {sent}, delivered {}, worker errors {}",
                    q.deliveries.len(),
                    q.errors.len()
                )
            })
            .unwrap_or_default();
        eprintln!(
            "[{:7.2}s] acknowledged {}, unresolved {}{group}{queue}",
            recorder.clock().secs(),
            recorder.acknowledged(),
            recorder.pending()
        );
    }
}

fn write_json<T: Serialize>(path: &std::path::Path, value: &T) -> anyhow::Result<()> {
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
