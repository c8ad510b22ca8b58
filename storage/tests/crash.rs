//! Crash test: a child process appends with `fsync=always` from several threads to
//! [`LOGS`] logs at once (more than the sync pool has threads, so rounds queue, as with
//! many partition groups on one node) and prints every batch whose durability
//! notification fired; the parent SIGKILLs it at random moments, reopens every log, and
//! checks that every notified batch is present and intact in its own log and that each
//! log is consistent, then lets a new child continue appending.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use neo_storage::{FsyncPolicy, LogConfig, SegmentLog};

const CHILD_ENV: &str = "NEO_STORAGE_CRASH_CHILD_DIR";
const TEST_NAME: &str = "sigkill_never_loses_a_notified_batch";
const ITERATIONS: usize = 30;
/// Logs appended to at once: above the sync pool's 32 threads.
const LOGS: u64 = 40;

fn log_dir(dir: &Path, log: u64) -> std::path::PathBuf {
    dir.join(format!("log-{log}"))
}

fn child_config() -> LogConfig {
    LogConfig {
        segment_size_bytes_max: 64 * 1024,
        index_interval_bytes: 1024,
        fsync: FsyncPolicy::Always,
        ..LogConfig::default()
    }
}

/// Appends forever; prints `DURABLE <log> <base> <next> <crc>` for each notified batch.
fn run_child(dir: &Path) -> ! {
    let logs: Vec<std::sync::Arc<SegmentLog>> = (0..LOGS)
        .map(|l| {
            std::sync::Arc::new(
                SegmentLog::open(log_dir(dir, l), child_config()).expect("child open"),
            )
        })
        .collect();
    let (tx, rx) = mpsc::channel::<(u64, u64, u64, u32)>();
    let seed0 = std::process::id() as u64;
    for t in 0..4u64 {
        let logs = logs.clone();
        let tx = tx.clone();
        std::thread::spawn(move || {
            for i in 0u64.. {
                let l = (t + i * 4) % LOGS;
                let log = &logs[l as usize];
                let seed = seed0 << 32 | t << 28 | i;
                let size = 100 + (seed.wrapping_mul(2654435761) % 3000) as usize;
                let b = batch(size, 1 + (i % 4) as u32, i as i64, seed);
                let crc = u32::from_le_bytes(b[33..37].try_into().unwrap());
                // The Raft log store's pattern: append, then register the callback
                // for everything below the batch's end.
                let a = log.append(&b).expect("append");
                let tx = tx.clone();
                log.notify_durable(a.next_offset, move |r| {
                    if r.is_ok() {
                        let _ = tx.send((l, a.base_offset, a.next_offset, crc));
                    }
                });
            }
        });
    }
    drop(tx);
    let mut out = std::io::stdout().lock();
    for (l, base, next, crc) in rx {
        writeln!(out, "DURABLE {l} {base} {next} {crc}").unwrap();
        out.flush().unwrap();
    }
    std::process::exit(0);
}

#[test]
fn sigkill_never_loses_a_notified_batch() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        run_child(Path::new(&dir));
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ std::process::id() as u64;
    let mut rand = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    // (log, base offset) -> (next offset, crc) of every batch whose notification fired.
    let mut notified: BTreeMap<(u64, u64), (u64, u32)> = BTreeMap::new();
    let started = Instant::now();
    let mut total_batches = 0;
    for iteration in 0..ITERATIONS {
        let mut child = Command::new(&exe)
            .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let (first_tx, first_rx) = mpsc::channel::<()>();
        let reader = std::thread::spawn(move || {
            let mut s = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                s.extend_from_slice(&buf[..n]);
                if s.contains(&b'\n') {
                    let _ = first_tx.send(());
                }
            }
            String::from_utf8_lossy(&s).into_owned()
        });
        // Every other kill waits for the child's first durable batch (on a loaded
        // machine starting the child alone can take longer than the random delay), the
        // others may land anywhere, recovery and opening included.
        if iteration % 2 == 0 {
            let _ = first_rx.recv_timeout(Duration::from_secs(30));
        }
        std::thread::sleep(Duration::from_millis(50 + rand(250)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let text = reader.join().unwrap();
        // Only whole lines: the child may die in the middle of one.
        let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        for line in complete.lines().filter_map(|l| l.strip_prefix("DURABLE ")) {
            let v: Vec<u64> = line.split(' ').map(|x| x.parse().unwrap()).collect();
            let old = notified.insert((v[0], v[1]), (v[2], v[3] as u32));
            assert!(old.is_none(), "log {} offset {} notified twice", v[0], v[1]);
        }
        total_batches = (0..LOGS)
            .map(|l| check_log(dir.path(), l, &notified, iteration))
            .sum();
    }
    assert!(!notified.is_empty(), "the child never got a batch durable");
    eprintln!(
        "{ITERATIONS} kills, {} notified batches, {total_batches} batches read back, {:?}",
        notified.len(),
        started.elapsed()
    );
}

/// Reopens log `l`, checks it and that every batch notified for it is there, intact.
/// Returns how many batches it holds.
fn check_log(
    dir: &Path,
    l: u64,
    notified: &BTreeMap<(u64, u64), (u64, u32)>,
    iteration: usize,
) -> usize {
    let log = SegmentLog::open(
        log_dir(dir, l),
        LogConfig {
            fsync: FsyncPolicy::Never,
            ..child_config()
        },
    )
    .unwrap_or_else(|e| panic!("iteration {iteration}, log {l}: reopen failed: {e}"));
    log.verify()
        .unwrap_or_else(|e| panic!("iteration {iteration}, log {l}: {e}"));
    let present = read_all(&log); // checks every CRC and contiguity
    let mut next = log.start_offset();
    for &(base, n, _) in &present {
        assert_eq!(base, next, "iteration {iteration}, log {l}: gap in offsets");
        next = n;
    }
    assert_eq!(next, log.next_offset());
    let stored: BTreeMap<u64, (u64, u32)> = present.iter().map(|b| (b.0, (b.1, b.2))).collect();
    for (&(_, base), want) in notified.range((l, 0)..=(l, u64::MAX)) {
        assert_eq!(
            stored.get(&base),
            Some(want),
            "iteration {iteration}, log {l}: notified batch at {base} lost or changed"
        );
    }
    present.len()
}
