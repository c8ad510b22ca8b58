//! `neo-chaos`: run fault scenarios against a Neo cluster and check the history.
//!
//! Exit status: 0 when every scenario passed (or was skipped, unless
//! `--fail-on-skip`), 1 when any invariant was violated, 2 when a run broke (cluster
//! did not start, node never ready) or the command line is wrong.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use neo_chaos::cluster::{DockerOptions, LocalOptions};
use neo_chaos::report;
use neo_chaos::security::ClientSecurity;
use neo_chaos::workload::WorkloadConfig;
use neo_chaos::{Mode, RunConfig, Scenario, ScenarioReport, Status, check, run_scenario};

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
#[command(name = "neo-chaos", version)]
struct Args {
    /// Where the cluster runs.
    #[arg(long, value_enum, default_value = "local")]
    mode: ModeArg,
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
    /// Exit non-zero when a scenario was skipped.
    #[arg(long)]
    fail_on_skip: bool,
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
    /// Only re-check a saved history file and print the verdict.
    #[arg(long, value_name = "FILE")]
    check_history: Option<PathBuf>,
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
        _ => return Err(format!("bad duration unit in {s:?} (ms, s, m)")),
    };
    Ok(Duration::from_secs_f64(secs))
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
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("NEO_CHAOS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let code = match run(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("neo-chaos: {e:#}");
            2
        }
    };
    std::process::exit(code);
}

async fn run(args: Args) -> anyhow::Result<i32> {
    if let Some(path) = &args.check_history {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        let history = serde_json::from_str(&text).context("parse the history")?;
        let result = check(&history);
        println!("{}", serde_json::to_string_pretty(&result)?);
        return Ok(if result.pass() { 0 } else { 1 });
    }
    if args.partitions == 0 || args.producers == 0 || args.replication == 0 || args.rate <= 0.0 {
        bail!("--partitions, --producers, --replication and --rate must be positive");
    }
    if args.queue_workers > 0 && args.queue_rate <= 0.0 {
        bail!("--queue-rate must be positive (or --queue-workers 0)");
    }
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64 % 1_000_000_000)
            .unwrap_or(1)
    });
    let mode = match args.mode {
        ModeArg::Local => Mode::Local(LocalOptions {
            node_bin: match &args.node_bin {
                Some(p) => p.clone(),
                None => default_node_bin()?,
            },
            nodes: 3,
            separate_uids: false,
            work_dir: args.work_dir.clone(),
            node_log: args.node_log.clone(),
            keep: args.keep,
        }),
        ModeArg::Docker => Mode::Docker(DockerOptions::standard(args.compose_file.clone(), 3)),
    };
    let security = match &mode {
        Mode::Docker(options) => ClientSecurity::new(
            args.token.clone(),
            args.tls_ca.as_deref(),
            args.tls_server_name.as_deref(),
            &options.client_addrs,
        )?,
        Mode::Local(_) if args.token.is_some() || args.tls_ca.is_some() => {
            bail!("--token and --tls-ca need --mode docker: local nodes run with security off")
        }
        Mode::Local(_) => ClientSecurity::off(),
    };
    let config = RunConfig {
        mode,
        duration: args.duration,
        warmup: args.warmup,
        cooldown: args.cooldown,
        seed,
        replication: args.replication,
        workload: WorkloadConfig {
            partitions: args.partitions,
            producers: args.producers,
            rate: args.rate,
            group_consumers: args.group_consumers,
            queue_workers: args.queue_workers,
            queue_rate: args.queue_rate,
            ..WorkloadConfig::default()
        },
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
        assert!(parse_duration("10h").is_err());
        assert!(parse_duration("x").is_err());
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
}
