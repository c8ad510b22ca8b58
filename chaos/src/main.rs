//! `neo-chaos`: run fault scenarios against a Neo cluster and check the history.
//!
//! Exit status: 0 when every scenario passed (or was skipped, unless
//! `--fail-on-skip`), 1 when any invariant was violated, 2 when a run broke (cluster
//! did not start, node never ready) or the command line is wrong.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use neo_chaos::cluster::{DockerOptions, LocalOptions};
use neo_chaos::report;
use neo_chaos::security::ClientSecurity;
use neo_chaos::soak::summary as soak_summary;
use neo_chaos::workload::WorkloadConfig;
use neo_chaos::{
    Mode, RunConfig, Scenario, ScenarioReport, SoakConfig, Status, check, run_scenario,
    run_soak as run_soak_config,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ModeArg {
    /// Local `neo-node` processes on loopback.
    Local,
    /// The docker compose project (`--compose-file`).
    Docker,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ScenarioArg {
    All,
    KillLeader,
    PauseLeader,
    IsolateLeader,
    PartitionHalves,
    PacketLoss,
    RollingRestart,
    KillAll,
}

/// Fault runner and history checker for Neo (see docs/CHAOS.md).
#[derive(Debug, Parser)]
#[command(name = "neo-chaos", version, args_conflicts_with_subcommands = true)]
struct Cli {
    /// `soak`: a long run with a fault every few minutes and the nodes' memory sampled
    /// (without a subcommand: the scenarios).
    #[command(subcommand)]
    command: Option<Command>,
    /// Where the cluster runs and how to reach it.
    #[command(flatten)]
    target: TargetArgs,
    /// The workload.
    #[command(flatten)]
    workload: WorkloadArgs,
    /// Scenario(s) to run; may be repeated or comma-separated.
    #[arg(long, value_enum, default_value = "all", value_delimiter = ',')]
    scenario: Vec<ScenarioArg>,
    /// Length of each scenario's fault phase (`90`, `90s`, `2m`, `1500ms`).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Writes before the first fault.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    warmup: Duration,
    /// Writes after the last heal.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    cooldown: Duration,
    /// Seed of every random choice (default: from the clock; always printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Folder for `<scenario>.json`, histories of failed runs, node logs, summary.md.
    #[arg(long, default_value = "chaos-reports")]
    report_dir: PathBuf,
    /// Write every history, not only failed ones.
    #[arg(long)]
    history: bool,
    /// Exit non-zero when a scenario was skipped.
    #[arg(long)]
    fail_on_skip: bool,
    /// Only re-check a saved history file and print the verdict.
    #[arg(long, value_name = "FILE")]
    check_history: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// A long run on one cluster: a fault every few minutes, the nodes' memory sampled.
    ///
    /// Mixed produce / consume, a consumer group and a queue against one cluster for
    /// `--duration`, one fault cycle every `--fault-every` (each healed before the
    /// next), every node's RSS, threads, open fds and connections sampled every
    /// `--sample-every`; fails on a lost or unknown record, any rule of the scenarios,
    /// or RSS growth at or above `--rss-growth-max` after the warm-up (docs/CHAOS.md,
    /// "Soak").
    Soak(SoakArgs),
}

/// Where the cluster runs and how clients reach it (the scenarios' and the soak's).
#[derive(Debug, Clone, clap::Args)]
struct TargetArgs {
    /// Where the cluster runs.
    #[arg(long, value_enum, default_value = "local")]
    mode: ModeArg,
    /// Local mode: the `neo-node` binary (default: next to this executable).
    #[arg(long)]
    node_bin: Option<PathBuf>,
    /// Local mode: parent folder of the clusters' temp dirs.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Local mode: keep data dirs and logs.
    #[arg(long)]
    keep: bool,
    /// Local mode: NEO_LOG of the nodes.
    #[arg(long, default_value = "warn")]
    node_log: String,
    /// Docker mode: the compose file (services neo1..neo3, ports 7171-7173 / 7271-7273).
    #[arg(long, default_value = "docker-compose.yml")]
    compose_file: PathBuf,
    /// Bearer token (JWT or API key) of a cluster with security on: sent in every
    /// client's authentication handshake and as `Authorization: Bearer` to the HTTP
    /// admin port (`/v1/cluster`, digests). Docker mode only.
    #[arg(long, env = "NEO_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    token: Option<String>,
    /// TLS to the client port, trusting the CA certificate(s) of this PEM file (e.g.
    /// `dev-certs/ca.pem` of `scripts/dev-certs.sh`). Docker mode only.
    #[arg(long, env = "NEO_TLS_CA", value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// Name every node's certificate is checked against (default: the host of the
    /// first node's client address, `127.0.0.1` in docker mode).
    #[arg(
        long,
        env = "NEO_TLS_SERVER_NAME",
        value_name = "NAME",
        requires = "tls_ca"
    )]
    tls_server_name: Option<String>,
}

/// The workload's size (the scenarios' and the soak's).
#[derive(Debug, Clone, clap::Args)]
struct WorkloadArgs {
    /// Producers (each writes its own partition, `i % partitions`).
    #[arg(long, default_value_t = 4)]
    producers: u32,
    /// Records per second, all producers together.
    #[arg(long, default_value_t = 400.0)]
    rate: f64,
    /// Partitions of the topic.
    #[arg(long, default_value_t = 3)]
    partitions: u32,
    /// Members of the consumer group that consumes the topic during every scenario
    /// (0: no group workload).
    #[arg(long, default_value_t = 3)]
    group_consumers: u32,
    /// Workers of the queue (`chaos-queue`) that runs beside the topic during every
    /// scenario (0: no queue workload).
    #[arg(long, default_value_t = 3)]
    queue_workers: u32,
    /// Messages per second sent to the queue, its producers together.
    #[arg(long, default_value_t = 40.0)]
    queue_rate: f64,
    /// Replication factor of the topic.
    #[arg(long, default_value_t = 3)]
    replication: u32,
}

/// `neo-chaos soak` (docs/CHAOS.md, "Soak").
#[derive(Debug, Clone, clap::Args)]
struct SoakArgs {
    /// Where the cluster runs and how to reach it.
    #[command(flatten)]
    target: TargetArgs,
    /// The workload.
    #[command(flatten)]
    workload: WorkloadArgs,
    /// Length of the soak's fault phase (`5m`, `2h`, `90s`).
    #[arg(long, default_value = "2h", value_parser = parse_duration)]
    duration: Duration,
    /// One fault cycle every this long; the first after one interval.
    #[arg(long, default_value = "3m", value_parser = parse_duration)]
    fault_every: Duration,
    /// Time between two samples of every node.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    sample_every: Duration,
    /// The RSS rule's warm-up of each process lifetime (default: 10 % of
    /// `--duration`, at most half of `--fault-every`).
    #[arg(long, value_parser = parse_duration)]
    warmup: Option<Duration>,
    /// RSS growth (percent) after the warm-up that fails a node.
    #[arg(long, default_value_t = 10.0)]
    rss_growth_max: f64,
    /// The scenarios whose single cycles are dealt, each once per round in a seeded
    /// order; comma-separated or repeated.
    #[arg(long, value_enum, default_value = "all", value_delimiter = ',')]
    faults: Vec<ScenarioArg>,
    /// Writes after the last heal, before the workload stops.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    cooldown: Duration,
    /// Seed of every random choice (default: from the clock; always printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Folder for soak.json, soak.md, soak-samples.csv (and the history and node logs
    /// of a failed run).
    #[arg(long, default_value = "soak-reports")]
    report_dir: PathBuf,
    /// Write the history even when the soak passes.
    #[arg(long)]
    history: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("bad duration unit in {s:?} (ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("bad duration {s:?}: {e}"))
}

fn default_node_bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("current_exe")?;
    let mut dir = exe.parent().context("executable has no folder")?;
    if dir.ends_with("deps") {
        dir = dir.parent().context("deps has no parent")?;
    }
    Ok(dir.join("neo-node"))
}

fn scenarios(list: &[ScenarioArg]) -> Vec<Scenario> {
    let mut out = Vec::new();
    for s in list {
        let add: Vec<Scenario> = match s {
            ScenarioArg::All => Scenario::ALL.to_vec(),
            ScenarioArg::KillLeader => vec![Scenario::KillLeader],
            ScenarioArg::PauseLeader => vec![Scenario::PauseLeader],
            ScenarioArg::IsolateLeader => vec![Scenario::IsolateLeader],
            ScenarioArg::PartitionHalves => vec![Scenario::PartitionHalves],
            ScenarioArg::PacketLoss => vec![Scenario::PacketLoss],
            ScenarioArg::RollingRestart => vec![Scenario::RollingRestart],
            ScenarioArg::KillAll => vec![Scenario::KillAll],
        };
        for s in add {
            if !out.contains(&s) {
                out.push(s);
            }
        }
    }
    out
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let args = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("NEO_CHAOS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    // On SIGINT or SIGTERM the run is dropped before exiting: a local cluster's drop
    // kills its nodes and removes its iptables chains, a docker cluster's unpauses its
    // containers and runs `docker-compose down`.
    let outcome = tokio::select! {
        outcome = run(args) => Some(outcome),
        signal = interrupted() => {
            eprintln!("neo-chaos: {signal}: stopped, cleaning up");
            None
        }
    };
    let code = match outcome {
        Some(Ok(code)) => code,
        Some(Err(e)) => {
            eprintln!("neo-chaos: {e:#}");
            2
        }
        // The shell's status for a process ended by SIGINT.
        None => 130,
    };
    std::process::exit(code);
}

/// Completes on the first SIGINT or SIGTERM (never, if they cannot be watched).
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        },
        _ => std::future::pending().await,
    }
}

/// The seed asked for, or one from the clock.
fn seed_or_clock(seed: Option<u64>) -> u64 {
    seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64 % 1_000_000_000)
            .unwrap_or(1)
    })
}

/// The workload of the flags, checked.
fn workload_config(w: &WorkloadArgs) -> anyhow::Result<WorkloadConfig> {
    if w.partitions == 0 || w.producers == 0 || w.replication == 0 || w.rate <= 0.0 {
        bail!("--partitions, --producers, --replication and --rate must be positive");
    }
    if w.queue_workers > 0 && w.queue_rate <= 0.0 {
        bail!("--queue-rate must be positive (or --queue-workers 0)");
    }
    Ok(WorkloadConfig {
        partitions: w.partitions,
        producers: w.producers,
        rate: w.rate,
        group_consumers: w.group_consumers,
        queue_workers: w.queue_workers,
        queue_rate: w.queue_rate,
        ..WorkloadConfig::default()
    })
}

/// The cluster and the clients' security of the flags.
fn target(t: &TargetArgs) -> anyhow::Result<(Mode, ClientSecurity)> {
    let mode = match t.mode {
        ModeArg::Local => Mode::Local(LocalOptions {
            node_bin: match &t.node_bin {
                Some(p) => p.clone(),
                None => default_node_bin()?,
            },
            nodes: 3,
            separate_uids: false,
            work_dir: t.work_dir.clone(),
            node_log: t.node_log.clone(),
            keep: t.keep,
        }),
        ModeArg::Docker => Mode::Docker(DockerOptions::standard(t.compose_file.clone(), 3)),
    };
    let security = match &mode {
        Mode::Docker(options) => ClientSecurity::new(
            t.token.clone(),
            t.tls_ca.as_deref(),
            t.tls_server_name.as_deref(),
            &options.client_addrs,
        )?,
        Mode::Local(_) if t.token.is_some() || t.tls_ca.is_some() => {
            bail!("--token and --tls-ca need --mode docker: local nodes run with security off")
        }
        Mode::Local(_) => ClientSecurity::off(),
    };
    Ok((mode, security))
}

/// The RSS warm-up when `--warmup` is not given: 10 % of the run, at most half the
/// fault interval (so that a process a fault started still has half an interval of
/// samples to be judged on).
fn default_rss_warmup(duration: Duration, fault_every: Duration) -> Duration {
    (duration / 10).min(fault_every / 2)
}

/// `neo-chaos soak`.
async fn run_soak(args: &SoakArgs) -> anyhow::Result<i32> {
    let workload = workload_config(&args.workload)?;
    if args.duration.is_zero() || args.fault_every.is_zero() || args.sample_every.is_zero() {
        bail!("--duration, --fault-every and --sample-every must be positive");
    }
    if !(args.rss_growth_max.is_finite() && args.rss_growth_max > 0.0) {
        bail!("--rss-growth-max must be a positive number of percent");
    }
    let seed = seed_or_clock(args.seed);
    let (mode, security) = target(&args.target)?;
    let config = SoakConfig {
        run: RunConfig {
            mode,
            duration: args.duration,
            warmup: Duration::from_secs(3),
            cooldown: args.cooldown,
            seed,
            replication: args.workload.replication,
            workload,
            security,
            report_dir: Some(args.report_dir.clone()),
            write_history: args.history,
        },
        faults: scenarios(&args.faults),
        fault_every: args.fault_every,
        sample_every: args.sample_every,
        rss_warmup: args
            .warmup
            .unwrap_or_else(|| default_rss_warmup(args.duration, args.fault_every)),
        rss_growth_max_percent: args.rss_growth_max,
    };
    std::fs::create_dir_all(&args.report_dir)
        .with_context(|| format!("create {}", args.report_dir.display()))?;
    eprintln!(
        "neo-chaos soak: {} mode, security {}, seed {seed}, RSS warm-up {:?}, reports in {}",
        config.run.mode.name(),
        config.run.security.describe(),
        config.rss_warmup,
        args.report_dir.display()
    );
    let r = run_soak_config(&config).await;
    println!("\n{}", soak_summary::markdown(&r));
    Ok(match r.status {
        Status::Pass => 0,
        Status::Fail => 1,
        Status::Error | Status::Skipped => 2,
    })
}

async fn run(args: Cli) -> anyhow::Result<i32> {
    if let Some(Command::Soak(soak)) = &args.command {
        return run_soak(soak).await;
    }
    if let Some(path) = &args.check_history {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        let history = serde_json::from_str(&text).context("parse the history")?;
        let result = check(&history);
        println!("{}", serde_json::to_string_pretty(&result)?);
        return Ok(if result.pass() { 0 } else { 1 });
    }
    let workload = workload_config(&args.workload)?;
    let seed = seed_or_clock(args.seed);
    let (mode, security) = target(&args.target)?;
    let config = RunConfig {
        mode,
        duration: args.duration,
        warmup: args.warmup,
        cooldown: args.cooldown,
        seed,
        replication: args.workload.replication,
        workload,
        security,
        report_dir: Some(args.report_dir.clone()),
        write_history: args.history,
    };
    std::fs::create_dir_all(&args.report_dir)
        .with_context(|| format!("create {}", args.report_dir.display()))?;
    let list = scenarios(&args.scenario);
    eprintln!(
        "neo-chaos: {} scenario(s), {} mode, security {}, seed {seed}, reports in {}",
        list.len(),
        config.mode.name(),
        config.security.describe(),
        args.report_dir.display()
    );
    let started = std::time::Instant::now();
    let mut reports: Vec<ScenarioReport> = Vec::new();
    for scenario in list {
        let r = run_scenario(&config, scenario).await;
        print!("\n{}", report::summary(&r));
        reports.push(r);
    }
    let table = report::table(&reports);
    let group_table = report::group_table(&reports);
    let table = if group_table.is_empty() {
        table
    } else {
        format!("{table}\nConsumer group:\n\n{group_table}")
    };
    let queue_table = report::queue_table(&reports);
    let table = if queue_table.is_empty() {
        table
    } else {
        format!("{table}\nQueue:\n\n{queue_table}")
    };
    let security = config.security.describe();
    println!(
        "\n{table}\nseed {seed}, {} mode, security {security}, {:.0} s wall in total",
        config.mode.name(),
        started.elapsed().as_secs_f64()
    );
    let md = format!(
        "{table}\nseed {seed}, {} mode, security {security}, --duration {}s, {:.0} s wall in total\n",
        config.mode.name(),
        args.duration.as_secs(),
        started.elapsed().as_secs_f64()
    );
    std::fs::write(args.report_dir.join("summary.md"), md)?;
    std::fs::write(
        args.report_dir.join("summary.json"),
        serde_json::to_string_pretty(&reports)?,
    )?;
    let failed = reports.iter().any(|r| r.status == Status::Fail);
    let errored = reports.iter().any(|r| r.status == Status::Error);
    let skipped = reports.iter().any(|r| r.status == Status::Skipped);
    Ok(if failed {
        1
    } else if errored || (skipped && args.fail_on_skip) {
        2
    } else {
        0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_and_without_units() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("45s"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("10d").is_err());
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("-5s").is_err());
        assert!(parse_duration("99999999999999999999999h").is_err());
    }

    #[test]
    fn all_expands_to_every_scenario_once() {
        assert_eq!(scenarios(&[ScenarioArg::All]), Scenario::ALL.to_vec());
        assert_eq!(
            scenarios(&[ScenarioArg::KillAll, ScenarioArg::All]).len(),
            Scenario::ALL.len()
        );
        assert_eq!(
            scenarios(&[ScenarioArg::PauseLeader]),
            vec![Scenario::PauseLeader]
        );
    }

    #[test]
    fn the_flat_scenario_flags_still_parse() {
        let cli = Cli::try_parse_from([
            "neo-chaos",
            "--mode",
            "docker",
            "--compose-file",
            "docker-compose.yml",
            "--scenario",
            "all",
            "--duration",
            "30s",
            "--report-dir",
            "r",
            "--fail-on-skip",
            "--producers",
            "2",
            "--queue-workers",
            "0",
        ])
        .expect("the CI command line");
        assert!(cli.command.is_none());
        assert_eq!(cli.target.mode, ModeArg::Docker);
        assert_eq!(cli.duration, Duration::from_secs(30));
        assert_eq!(cli.workload.producers, 2);
        assert_eq!(cli.workload.queue_workers, 0);
        assert!(cli.fail_on_skip);
    }

    #[test]
    fn soak_takes_its_own_flags_and_refuses_scenario_flags_before_it() {
        let cli = Cli::try_parse_from([
            "neo-chaos",
            "soak",
            "--mode",
            "local",
            "--duration",
            "5m",
            "--fault-every",
            "45s",
            "--sample-every",
            "2s",
            "--faults",
            "kill-leader,pause-leader",
            "--rss-growth-max",
            "25",
            "--rate",
            "100",
        ])
        .expect("a soak command line");
        let Some(Command::Soak(soak)) = cli.command else {
            panic!("no soak subcommand");
        };
        assert_eq!(soak.duration, Duration::from_secs(300));
        assert_eq!(soak.fault_every, Duration::from_secs(45));
        assert_eq!(soak.sample_every, Duration::from_secs(2));
        assert_eq!(soak.warmup, None);
        assert_eq!(soak.rss_growth_max, 25.0);
        assert_eq!(soak.workload.rate, 100.0);
        assert_eq!(
            scenarios(&soak.faults),
            vec![Scenario::KillLeader, Scenario::PauseLeader]
        );
        assert!(Cli::try_parse_from(["neo-chaos", "--mode", "docker", "soak"]).is_err());
        assert!(Cli::try_parse_from(["neo-chaos", "soak", "--scenario", "all"]).is_err());
    }

    #[test]
    fn the_rss_warm_up_defaults_to_a_tenth_at_most_half_an_interval() {
        let s = Duration::from_secs;
        assert_eq!(default_rss_warmup(s(300), s(60)), s(30));
        assert_eq!(default_rss_warmup(s(7200), s(180)), s(90));
        assert_eq!(default_rss_warmup(s(90), s(30)), s(9));
    }
}
