//! What encryption at rest costs a segment log: appends (Raft-stamped, as the log store
//! writes them) and reads of a plaintext log against an encrypted one, interleaved in
//! the same run (the machine is shared and noisy: compare ratios).
//!
//! `cargo run --release -p neo-storage --example at_rest_bench -- [--dir PATH]
//! [--seconds S] [--fsync]`. Without `--fsync` the log never syncs (the cipher's CPU
//! cost alone); with it every append waits for its group-commit `fdatasync` (what a
//! produce with acks=all pays on each replica).

use std::path::{Path, PathBuf};
use std::time::Instant;

use neo_storage::{AtRestKey, FsyncPolicy, LogConfig, SegmentLog, testing};
use qiss::batch::HEADER_LEN;

const SIZES: [usize; 3] = [1024, 16 * 1024, 256 * 1024];
const PAIRS: usize = 5;

struct Args {
    dir: PathBuf,
    seconds: f64,
    fsync: bool,
}

fn args() -> Args {
    let mut a = Args {
        dir: std::env::temp_dir().join("neo-at-rest-bench"),
        seconds: 0.5,
        fsync: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            "--dir" => a.dir = PathBuf::from(it.next().expect("--dir PATH")),
            "--seconds" => a.seconds = it.next().expect("--seconds S").parse().expect("seconds"),
            "--fsync" => a.fsync = true,
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// (append MB/s, read MB/s) of one run.
fn run(dir: &Path, key: Option<AtRestKey>, size: usize, a: &Args) -> (f64, f64) {
    let _ = std::fs::remove_dir_all(dir);
    let log = SegmentLog::open(
        dir,
        LogConfig {
            segment_size_bytes_max: 1 << 30,
            batch_size_bytes_max: 1 << 20,
            fsync: if a.fsync {
                FsyncPolicy::Always
            } else {
                FsyncPolicy::Never
            },
            buffered_bytes_max: u64::MAX / 2,
            at_rest: key,
            ..LogConfig::default()
        },
    )
    .expect("open");
    let batch = testing::batch_of_size(size, 1, 1, 7);
    let mut head = [0u8; HEADER_LEN];
    head.copy_from_slice(&batch[..HEADER_LEN]);
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed().as_secs_f64() < a.seconds {
        qiss::batch::set_base_offset(&mut head, n);
        qiss::batch::set_raft_stamp(&mut head, 1, n + 1);
        log.append_stamped_at(&head, &batch).expect("append");
        if a.fsync {
            log.durable(n + 1).wait().expect("durable");
        }
        n += 1;
    }
    let append = (n as usize * size) as f64 / started.elapsed().as_secs_f64() / 1e6;
    log.sync().expect("sync");
    let started = Instant::now();
    let (mut offset, mut bytes) = (0u64, 0usize);
    while offset < n {
        let s = log.read(offset, 1 << 20).expect("read");
        bytes += s.bytes.len();
        offset = s.next_offset;
    }
    let read = bytes as f64 / started.elapsed().as_secs_f64() / 1e6;
    drop(log);
    let _ = std::fs::remove_dir_all(dir);
    (append, read)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let a = args();
    let key = AtRestKey::new([0x5a; 32]);
    println!(
        "size     plain append  encrypted append  ratio   plain read  encrypted read  ratio  (MB/s, median of {PAIRS} interleaved pairs{})",
        if a.fsync {
            ", fsync always"
        } else {
            ", no fsync"
        }
    );
    for size in SIZES {
        let (mut pa, mut ea, mut pr, mut er) = (vec![], vec![], vec![], vec![]);
        for _ in 0..PAIRS {
            let (x, y) = run(&a.dir.join("plain"), None, size, &a);
            pa.push(x);
            pr.push(y);
            let (x, y) = run(&a.dir.join("encrypted"), Some(key.clone()), size, &a);
            ea.push(x);
            er.push(y);
        }
        let (pa, ea, pr, er) = (median(pa), median(ea), median(pr), median(er));
        println!(
            "{size:>7}  {pa:>12.0}  {ea:>16.0}  {:>5.2}   {pr:>10.0}  {er:>14.0}  {:>5.2}",
            ea / pa,
            er / pr
        );
    }
}
