//! The soak's sampler: every `--sample-every`, for each node, its process's resident
//! memory (`VmRSS`), state and threads from `/proc/<pid>/status`, its open file
//! descriptors (entries of `/proc/<pid>/fd`), its open client connections and the
//! tasks alive on its runtime (`neo_rpc_connections_active`, `neo_runtime_tasks_alive`
//! of its `/metrics`). The pid comes from the cluster's
//! [`PidSource`]: the child's pid (local) or the container's init (docker: the image
//! runs `neo-node` itself; we run as root, so the host's `/proc` has it).
//!
//! Each round's rows are appended to `soak-samples.csv` as they are taken (a run that
//! breaks keeps what it sampled). Parsing is pure and tested; the `/proc` reads run on
//! blocking threads, every HTTP call and pid look-up has a deadline.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin_http;
use crate::cluster::PidSource;
use crate::history::Clock;

/// The metric read from each node's `/metrics` (a gauge without labels).
pub const CONNECTIONS_METRIC: &str = "neo_rpc_connections_active";
/// Tasks alive on the node's tokio runtime (a gauge without labels).
pub const TASKS_METRIC: &str = "neo_runtime_tasks_alive";
/// How long [`Sampler::stop`] waits for the round in progress.
pub const STOP_WAIT: Duration = Duration::from_secs(15);
/// A progress line with every node's figures at most this often.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(60);
/// The CSV's header line.
pub const CSV_HEADER: &str =
    "time_s,node,pid,state,rss_bytes,threads,fds,rpc_connections,tasks,anon_bytes,error";

/// One node at one moment. Fields are `None` when they could not be read (`error`
/// says why): a node that is down has no pid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds on the run's clock (the history's) when the round began.
    pub time_s: f64,
    /// Node id.
    pub node: u64,
    /// Its process on this host.
    pub pid: Option<u32>,
    /// `State:` of `/proc/<pid>/status` (`R`, `S`, `D`, `T` stopped, `Z` zombie, ...).
    pub state: Option<char>,
    /// `VmRSS:` in bytes.
    pub rss_bytes: Option<u64>,
    /// `Threads:`.
    pub threads: Option<u32>,
    /// Entries of `/proc/<pid>/fd`.
    pub fds: Option<u32>,
    /// `neo_rpc_connections_active` (`None`: no answer, e.g. a paused node).
    pub rpc_connections: Option<u64>,
    /// `neo_runtime_tasks_alive` (`None`: no answer).
    #[serde(default)]
    pub tasks: Option<u64>,
    /// `RssAnon:` in bytes: the part of `rss_bytes` that is the process's own memory
    /// (heap, stacks), without the file-backed pages of its binary and libraries.
    #[serde(default)]
    pub anon_bytes: Option<u64>,
    /// What could not be read, `; `-separated.
    pub error: Option<String>,
}

impl Sample {
    /// The sample as a CSV line (no newline), columns of [`CSV_HEADER`].
    pub fn csv_line(&self) -> String {
        fn opt<T: ToString>(v: Option<T>) -> String {
            v.map(|v| v.to_string()).unwrap_or_default()
        }
        // The error is the last column: quoted, inner quotes doubled, no newlines.
        let error = self
            .error
            .as_deref()
            .map(|e| format!("\"{}\"", e.replace('"', "\"\"").replace(['\n', '\r'], " ")))
            .unwrap_or_default();
        format!(
            "{:.3},{},{},{},{},{},{},{},{},{},{}",
            self.time_s,
            self.node,
            opt(self.pid),
            opt(self.state),
            opt(self.rss_bytes),
            opt(self.threads),
            opt(self.fds),
            opt(self.rpc_connections),
            opt(self.tasks),
            opt(self.anon_bytes),
            error
        )
    }
}

/// The fields of `/proc/<pid>/status` the sampler reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcStatus {
    /// `State:`'s letter.
    pub state: Option<char>,
    /// `VmRSS:` in bytes (absent for a zombie or a kernel thread).
    pub rss_bytes: Option<u64>,
    /// `Threads:`.
    pub threads: Option<u32>,
    /// `RssAnon:` in bytes.
    pub anon_bytes: Option<u64>,
}

/// A `/proc/<pid>/status` size (`123 kB`) in bytes; the kernel always writes kB (KiB),
/// anything else is not trusted.
fn kib_bytes(value: &str) -> Option<u64> {
    let mut parts = value.split_whitespace();
    let n = parts.next().and_then(|n| n.parse::<u64>().ok());
    let kib = parts.next() == Some("kB");
    n.filter(|_| kib).and_then(|n| n.checked_mul(1024))
}

/// Parse the text of `/proc/<pid>/status`; lines it does not know or cannot read are
/// ignored.
pub fn parse_status(text: &str) -> ProcStatus {
    let mut out = ProcStatus::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key {
            "State" => out.state = value.chars().next().filter(char::is_ascii_alphabetic),
            "VmRSS" => out.rss_bytes = kib_bytes(value),
            "RssAnon" => out.anon_bytes = kib_bytes(value),
            "Threads" => out.threads = value.parse().ok(),
            _ => {}
        }
    }
    out
}

/// The value of the unlabelled series `name` in a Prometheus text exposition.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let mut parts = line.split_whitespace();
            (parts.next()? == name).then_some(())?;
            parts.next()?.parse::<f64>().ok()
        })
}

/// `/proc/<pid>/status` and the count of `/proc/<pid>/fd` (blocking).
fn read_proc(pid: u32) -> (anyhow::Result<ProcStatus>, anyhow::Result<u32>) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))
        .map(|t| parse_status(&t));
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .with_context(|| format!("list /proc/{pid}/fd"))
        .map(|dir| u32::try_from(dir.count()).unwrap_or(u32::MAX));
    (status, fds)
}

/// Resident memory of this process (the soak's own history grows with the run).
pub fn own_rss_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_status(&text).rss_bytes
}

/// What the sampler needs.
#[derive(Debug, Clone)]
pub struct SamplerConfig {
    /// Where the pids come from.
    pub pids: PidSource,
    /// (id, HTTP admin address) of every node.
    pub http: Vec<(u64, String)>,
    /// Bearer token of `/metrics` (security on).
    pub token: Option<String>,
    /// Time between rounds.
    pub every: Duration,
    /// The CSV file (`None`: keep the samples in memory only).
    pub csv: Option<PathBuf>,
}

/// What the sampler gives back.
#[derive(Debug, Clone, Default)]
pub struct SamplerOutput {
    /// The nodes sampled.
    pub nodes: Vec<u64>,
    /// Every sample, in round order.
    pub samples: Vec<Sample>,
    /// The largest resident memory of this process seen at a round.
    pub own_rss_max_bytes: Option<u64>,
    /// Why the CSV could not be written, if it could not.
    pub csv_error: Option<String>,
}

/// A running sampler task.
#[derive(Debug)]
pub struct Sampler {
    stop: watch::Sender<bool>,
    task: JoinHandle<SamplerOutput>,
}

impl Sampler {
    /// Start sampling now, then every `config.every`, on `clock`.
    pub fn start(config: SamplerConfig, clock: Clock) -> Sampler {
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(config, clock, stop_rx));
        Sampler { stop, task }
    }

    /// Stop after the round in progress (≤ [`STOP_WAIT`]) and return the samples.
    pub async fn stop(self) -> SamplerOutput {
        let _ = self.stop.send(true);
        let abort = self.task.abort_handle();
        match tokio::time::timeout(STOP_WAIT, self.task).await {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => SamplerOutput {
                csv_error: Some(format!("sampler task: {e}")),
                ..SamplerOutput::default()
            },
            Err(_) => {
                abort.abort();
                SamplerOutput {
                    csv_error: Some(format!("sampler did not stop within {STOP_WAIT:?}")),
                    ..SamplerOutput::default()
                }
            }
        }
    }
}

async fn run(
    config: SamplerConfig,
    clock: Clock,
    mut stop: watch::Receiver<bool>,
) -> SamplerOutput {
    let mut out = SamplerOutput {
        nodes: config.http.iter().map(|(id, _)| *id).collect(),
        ..SamplerOutput::default()
    };
    let mut file = match &config.csv {
        Some(path) => match open_csv(path) {
            Ok(f) => Some(f),
            Err(e) => {
                out.csv_error = Some(format!("{e:#}"));
                None
            }
        },
        None => None,
    };
    let mut tick = tokio::time::interval(config.every.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_progress: Option<f64> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return out,
        }
        let round = round(&config, clock).await;
        if last_progress.is_none_or(|t| clock.secs() - t >= PROGRESS_EVERY.as_secs_f64()) {
            last_progress = Some(clock.secs());
            eprintln!("[{:7.2}s] sampled {}", clock.secs(), progress_line(&round));
        }
        if let Some(f) = file.take() {
            let text: String = round.iter().map(|s| s.csv_line() + "\n").collect();
            let written = tokio::task::spawn_blocking(move || {
                let mut f = f;
                let r = f.write_all(text.as_bytes()).and_then(|()| f.flush());
                (f, r)
            })
            .await;
            match written {
                Ok((f, Ok(()))) => file = Some(f),
                Ok((_, Err(e))) => out.csv_error = Some(format!("write the samples: {e}")),
                Err(e) => out.csv_error = Some(format!("write the samples: {e}")),
            }
        }
        out.own_rss_max_bytes = out.own_rss_max_bytes.max(own_rss_bytes());
        out.samples.extend(round);
    }
}

fn open_csv(path: &std::path::Path) -> anyhow::Result<std::fs::File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let mut f =
        std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    writeln!(f, "{CSV_HEADER}").with_context(|| format!("write {}", path.display()))?;
    Ok(f)
}

/// One sample of every node, taken concurrently (a paused node's `/metrics` does not
/// hold up the others).
async fn round(config: &SamplerConfig, clock: Clock) -> Vec<Sample> {
    let time_s = clock.secs();
    let token = config.token.as_deref();
    futures::future::join_all(
        config
            .http
            .iter()
            .map(|(id, addr)| sample_node(&config.pids, *id, addr, token, time_s)),
    )
    .await
}

async fn sample_node(
    pids: &PidSource,
    node: u64,
    http: &str,
    token: Option<&str>,
    time_s: f64,
) -> Sample {
    let mut s = Sample {
        time_s,
        node,
        pid: None,
        state: None,
        rss_bytes: None,
        threads: None,
        fds: None,
        rpc_connections: None,
        tasks: None,
        anon_bytes: None,
        error: None,
    };
    let mut errors: Vec<String> = Vec::new();
    match pids.pid(node).await {
        Ok(Some(pid)) => {
            s.pid = Some(pid);
            match tokio::task::spawn_blocking(move || read_proc(pid)).await {
                Ok((status, fds)) => {
                    match status {
                        Ok(st) => {
                            s.state = st.state;
                            s.rss_bytes = st.rss_bytes;
                            s.anon_bytes = st.anon_bytes;
                            s.threads = st.threads;
                        }
                        Err(e) => errors.push(format!("{e:#}")),
                    }
                    match fds {
                        Ok(n) => s.fds = Some(n),
                        Err(e) => errors.push(format!("{e:#}")),
                    }
                }
                Err(e) => errors.push(format!("/proc read task: {e}")),
            }
        }
        Ok(None) => errors.push("not running".into()),
        Err(e) => errors.push(format!("pid: {e:#}")),
    }
    match admin_http::get(http, "/metrics", token).await {
        Ok((200, body)) => {
            for (name, field) in [
                (CONNECTIONS_METRIC, &mut s.rpc_connections),
                (TASKS_METRIC, &mut s.tasks),
            ] {
                match metric_value(&body, name) {
                    Some(v) if v >= 0.0 => *field = Some(v as u64),
                    _ => errors.push(format!("/metrics has no {name}")),
                }
            }
        }
        Ok((status, _)) => errors.push(format!("/metrics: {status}")),
        Err(e) => errors.push(format!("{e:#}")),
    }
    if !errors.is_empty() {
        s.error = Some(errors.join("; "));
    }
    s
}

/// `n1 112.3 MiB 41 thr 97 fd 12 conn, n2 ...` for the progress line.
fn progress_line(round: &[Sample]) -> String {
    round
        .iter()
        .map(|s| {
            let mib = s.rss_bytes.map_or_else(
                || "—".to_string(),
                |b| format!("{:.1} MiB", b as f64 / 1048576.0),
            );
            let opt = |v: Option<u64>| v.map_or_else(|| "—".to_string(), |v| v.to_string());
            format!(
                "n{} {mib} {} thr {} fd {} conn {} tasks",
                s.node,
                opt(s.threads.map(u64::from)),
                opt(s.fds.map(u64::from)),
                opt(s.rpc_connections),
                opt(s.tasks)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tneo-node\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4242\n\
        VmPeak:\t 1049088 kB\nVmSize:\t 1048576 kB\nVmHWM:\t   90000 kB\nVmRSS:\t   81234 kB\n\
        RssAnon:\t   60000 kB\nThreads:\t17\nSigQ:\t0/63439\n";

    #[test]
    fn proc_status_gives_state_rss_and_threads() {
        let st = parse_status(STATUS);
        assert_eq!(st.state, Some('S'));
        assert_eq!(st.rss_bytes, Some(81_234 * 1024));
        assert_eq!(st.anon_bytes, Some(60_000 * 1024));
        assert_eq!(st.threads, Some(17));
    }

    #[test]
    fn a_zombie_has_no_rss_and_bad_lines_are_ignored() {
        let st = parse_status("Name:\tneo-node\nState:\tZ (zombie)\nThreads:\t1\n");
        assert_eq!(
            st,
            ProcStatus {
                state: Some('Z'),
                rss_bytes: None,
                threads: Some(1),
                anon_bytes: None,
            }
        );
        let junk = parse_status("VmRSS:\tlots kB\nThreads:\t-3\nState:\t\nno colon\n\u{0}:\u{0}");
        assert_eq!(junk, ProcStatus::default());
        assert_eq!(parse_status("VmRSS:\t1 parsec").rss_bytes, None);
        assert_eq!(
            parse_status("VmRSS:\t99999999999999999999 kB").rss_bytes,
            None
        );
        assert_eq!(parse_status("").rss_bytes, None);
    }

    #[test]
    fn an_unlabelled_gauge_is_found_and_labelled_or_similar_names_are_not() {
        let text = "# HELP neo_rpc_connections_active open\n# TYPE neo_rpc_connections_active gauge\n\
            neo_rpc_connections_active_total 9\nneo_rpc_connections_active{x=\"y\"} 8\n\
            neo_rpc_connections_active 12\n";
        assert_eq!(metric_value(text, CONNECTIONS_METRIC), Some(12.0));
        assert_eq!(
            metric_value("neo_rpc_connections_active x\n", CONNECTIONS_METRIC),
            None
        );
        assert_eq!(metric_value("", CONNECTIONS_METRIC), None);
    }

    #[test]
    fn csv_lines_have_every_column_and_a_quoted_error() {
        let mut s = Sample {
            time_s: 12.5,
            node: 2,
            pid: Some(4242),
            state: Some('S'),
            rss_bytes: Some(1024),
            threads: Some(17),
            fds: Some(90),
            rpc_connections: Some(12),
            tasks: Some(301),
            anon_bytes: Some(512),
            error: None,
        };
        assert_eq!(s.csv_line(), "12.500,2,4242,S,1024,17,90,12,301,512,");
        assert_eq!(
            s.csv_line().split(',').count(),
            CSV_HEADER.split(',').count()
        );
        s.pid = None;
        s.state = None;
        s.rss_bytes = None;
        s.anon_bytes = None;
        s.error = Some("not running; GET \"x\", refused\n".into());
        assert_eq!(
            s.csv_line(),
            "12.500,2,,,,17,90,12,301,,\"not running; GET \"\"x\"\", refused \""
        );
    }
}
