//! The standard `process_*` series of Prometheus exporters, read from `/proc/self` at
//! each scrape (Linux only: elsewhere they are left out), and `neo_build_info`.
//!
//! `/proc` is served from kernel memory (no disk I/O); counting open descriptors reads
//! one directory entry per descriptor.

use super::scrape::Scrape;

/// What `/proc/self` says about this process.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct ProcessStats {
    pub(crate) cpu_seconds: f64,
    pub(crate) resident_bytes: u64,
    pub(crate) virtual_bytes: u64,
    pub(crate) threads: u64,
    pub(crate) start_time_seconds: f64,
    pub(crate) open_fds: u64,
    pub(crate) max_fds: Option<u64>,
}

/// Clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`: 100 on every Linux
/// architecture, whatever the kernel's own tick rate).
const USER_HZ: f64 = 100.0;

/// Parses `/proc/self/stat` (`stat`), `/proc/stat`'s `btime` line (`boot`) and
/// `/proc/self/limits` (`limits`). `None` if `stat` is not what Linux writes.
pub(crate) fn parse(stat: &str, boot: &str, limits: &str, open_fds: u64) -> Option<ProcessStats> {
    // The command name (field 2) is in parentheses and may hold spaces: fields are
    // counted from the last ')'; `rest[0]` is field 3 (state).
    let rest: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    let field = |n: usize| -> Option<u64> { rest.get(n - 3)?.parse().ok() };
    let btime: u64 = boot
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())?;
    let page_size = 4096u64;
    Some(ProcessStats {
        cpu_seconds: (field(14)? + field(15)?) as f64 / USER_HZ,
        threads: field(20)?,
        start_time_seconds: btime as f64 + field(22)? as f64 / USER_HZ,
        virtual_bytes: field(23)?,
        resident_bytes: field(24)? * page_size,
        open_fds,
        max_fds: soft_open_files_limit(limits),
    })
}

/// The soft limit on open files in `/proc/self/limits` text (`None`: unlimited or
/// not there).
fn soft_open_files_limit(limits: &str) -> Option<u64> {
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|soft| soft.parse().ok())
}

/// Descriptors a node needs besides client connections: segment files and their
/// directories, peer channels, the HTTP port's connections, sled, the runtime.
pub(crate) const FDS_RESERVED: u64 = 1_024;

/// Why `connections_max` client connections may not fit this process's open-files limit
/// (`ulimit -n`): `Some(limit)` when `connections_max + FDS_RESERVED` exceeds it. Past
/// the limit `accept` fails with EMFILE (the server backs off and retries: no spin,
/// no crash), and so would opening a segment file.
pub(crate) fn open_files_short(connections_max: u64) -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    open_files_short_of(&limits, connections_max)
}

pub(super) fn open_files_short_of(limits: &str, connections_max: u64) -> Option<u64> {
    let limit = soft_open_files_limit(limits)?;
    (connections_max.saturating_add(FDS_RESERVED) > limit).then_some(limit)
}

#[cfg(target_os = "linux")]
fn read() -> Option<ProcessStats> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let boot = std::fs::read_to_string("/proc/stat").ok()?;
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    let mut p = parse(&stat, &boot, &limits, fds)?;
    // The RSS of `stat` is in pages: prefer `status`'s VmRSS in kB (page size free).
    if let Some(kb) = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
    {
        p.resident_bytes = kb * 1024;
    }
    Some(p)
}

#[cfg(not(target_os = "linux"))]
fn read() -> Option<ProcessStats> {
    None
}

pub(crate) fn render(s: &mut Scrape) {
    s.gauges(
        "neo_build_info",
        "1, labelled with the version of this neo-node build",
        [(vec![("version", env!("CARGO_PKG_VERSION").to_string())], 1)],
    );
    if let Some(p) = read() {
        render_stats(s, &p);
    }
    // Tasks alive on the runtime that serves the scrape (the node's one runtime): with
    // RSS and threads, what a soak watches for leaks (`neo-chaos soak`).
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        s.gauge(
            "neo_runtime_tasks_alive",
            "Tasks alive on the node's async runtime (spawned and not yet finished)",
            rt.metrics().num_alive_tasks() as u64,
        );
    }
}

pub(crate) fn render_stats(s: &mut Scrape, p: &ProcessStats) {
    s.counter_f64(
        "process_cpu_seconds",
        "Total user and system CPU time spent in seconds",
        p.cpu_seconds,
    );
    s.gauge(
        "process_resident_memory_bytes",
        "Resident memory size in bytes",
        p.resident_bytes,
    );
    s.gauge(
        "process_virtual_memory_bytes",
        "Virtual memory size in bytes",
        p.virtual_bytes,
    );
    s.gauge(
        "process_open_fds",
        "Number of open file descriptors",
        p.open_fds,
    );
    if let Some(max) = p.max_fds {
        s.gauge(
            "process_max_fds",
            "Maximum number of open file descriptors",
            max,
        );
    }
    s.gauge_f64(
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds",
        p.start_time_seconds,
    );
    s.gauge(
        "process_threads",
        "Number of OS threads in the process",
        p.threads,
    );
}
