//! Append/read benchmark of the segment log against a raw write+fdatasync loop, measured
//! in the same run (the machine is shared and noisy: compare ratios).
//!
//! `cargo run --release -p neo-storage --example append_bench -- --json [--dir PATH]
//! [--seconds S]`. Use a directory on a real disk (not tmpfs).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use neo_storage::{FsyncPolicy, LogConfig, SegmentLog, testing};

const SIZES: [usize; 3] = [1024, 16 * 1024, 256 * 1024];
const ROUNDS: usize = 4;
const THREADS: usize = 16;

struct Args {
    json: bool,
    dir: PathBuf,
    seconds: f64,
}

fn args() -> Args {
    let mut a = Args {
        json: false,
        dir: std::env::temp_dir().join("neo-append-bench"),
        seconds: 1.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            "--json" => a.json = true,
            "--dir" => a.dir = PathBuf::from(it.next().expect("--dir PATH")),
            "--seconds" => a.seconds = it.next().expect("--seconds S").parse().expect("seconds"),
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

fn fresh(dir: &Path) -> PathBuf {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    dir.to_path_buf()
}

fn log_config() -> LogConfig {
    LogConfig {
        segment_size_bytes_max: 1 << 30,
        batch_size_bytes_max: 1 << 20,
        fsync: FsyncPolicy::Always,
        ..LogConfig::default()
    }
}

/// Batches per second of `write` + `fdatasync` on a plain file.
fn raw(dir: &Path, batch: &[u8], secs: f64) -> f64 {
    let dir = fresh(dir);
    let mut f = File::create(dir.join("raw.dat")).unwrap();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        f.write_all(batch).unwrap();
        f.sync_data().unwrap();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Batches per second through the log, each waited for durability, one appender.
fn log_single(dir: &Path, batch: &[u8], secs: f64) -> f64 {
    let log = SegmentLog::open(fresh(dir), log_config()).unwrap();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        let (_, d) = log.append_durable(batch).unwrap();
        d.wait().unwrap();
        n += 1;
    }
    if std::env::var_os("BENCH_DEBUG").is_some() {
        eprintln!("single: {n} batches, {:?}", log.stats());
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// (batches/s, fsyncs/s) with `THREADS` appenders each waiting for durability.
fn log_concurrent(dir: &Path, batch: &[u8], secs: f64) -> (f64, f64) {
    let log = Arc::new(SegmentLog::open(fresh(dir), log_config()).unwrap());
    let batch = Arc::new(batch.to_vec());
    let start = Instant::now();
    let syncs0 = log.stats().syncs;
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let (log, batch) = (Arc::clone(&log), Arc::clone(&batch));
            std::thread::spawn(move || {
                let mut n = 0u64;
                while start.elapsed().as_secs_f64() < secs {
                    let (_, d) = log.append_durable(&batch).unwrap();
                    d.wait().unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();
    let n: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    let el = start.elapsed().as_secs_f64();
    ((n as f64) / el, (log.stats().syncs - syncs0) as f64 / el)
}

/// GB/s of 1 MiB reads over a 256 MiB log that is in the page cache.
fn cached_reads(dir: &Path, secs: f64) -> f64 {
    let log = SegmentLog::open(
        fresh(dir),
        LogConfig {
            fsync: FsyncPolicy::Never,
            ..log_config()
        },
    )
    .unwrap();
    let b = testing::batch_of_size(16 * 1024, 16, 0, 7);
    for _ in 0..(256 << 20) / b.len() {
        log.append(&b).unwrap();
    }
    let pass = |log: &SegmentLog| -> u64 {
        let (mut at, mut bytes) = (0, 0u64);
        loop {
            let s = log.read(at, 1 << 20).unwrap();
            if s.bytes.is_empty() {
                return bytes;
            }
            bytes += s.bytes.len() as u64;
            at = s.next_offset;
        }
    };
    pass(&log); // warm
    let start = Instant::now();
    let mut bytes = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        bytes += pass(&log);
    }
    bytes as f64 / start.elapsed().as_secs_f64() / 1e9
}

fn main() {
    let a = args();
    let secs = a.seconds;
    let mut table = Vec::new();
    for size in SIZES {
        let batch = testing::batch_of_size(size, 1, 0, size as u64);
        let (mut best_raw, mut best_log) = (0f64, 0f64);
        // Interleave the two systems so that noise hits both alike; keep each one's best.
        for _ in 0..ROUNDS {
            best_raw = best_raw.max(raw(&a.dir, &batch, secs));
            best_log = best_log.max(log_single(&a.dir, &batch, secs));
        }
        for (system, bps) in [("raw-fdatasync", best_raw), ("neo-storage", best_log)] {
            let mbps = bps * size as f64 / 1e6;
            if a.json {
                println!(
                    r#"{{"system":"{system}","batch_bytes":{size},"mb_per_s":{mbps:.2},"batches_per_s":{bps:.1}}}"#
                );
            }
        }
        table.push((size, best_raw, best_log));
    }
    let (gbps, gsps) = log_concurrent(
        &a.dir,
        &testing::batch_of_size(1024, 1, 0, 1),
        secs.max(2.0),
    );
    let gb = gbps / 1e3 * 1024.0 / 1e3;
    let rd = cached_reads(&a.dir, secs);
    let _ = std::fs::remove_dir_all(&a.dir);
    if a.json {
        println!(
            r#"{{"system":"neo-storage-group-commit","threads":{THREADS},"batch_bytes":1024,"mb_per_s":{gb:.2},"batches_per_s":{gbps:.1},"fsyncs_per_s":{gsps:.1},"batches_per_fsync":{:.2}}}"#,
            gbps / gsps.max(1e-9)
        );
        println!(
            r#"{{"system":"neo-storage-cached-read","read_bytes_max":1048576,"gb_per_s":{rd:.2}}}"#
        );
    } else {
        for (size, r, l) in table {
            println!(
                "{size:>7} B: raw {r:>9.1}/s  log {l:>9.1}/s  ratio {:.3}",
                l / r
            );
        }
        println!("group commit, {THREADS} threads: {gbps:.1} batches/s, {gsps:.1} fsyncs/s");
        println!("cached reads: {rd:.2} GB/s");
    }
    std::thread::sleep(Duration::from_millis(0));
}
