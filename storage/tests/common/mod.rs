//! Helpers shared by the integration tests.
#![allow(dead_code)]

use neo_storage::{FsyncPolicy, LogConfig, SegmentLog, testing};
use std::path::Path;

/// A config with tiny segments and index intervals so that rolls, sealed segments and
/// index lookups happen within a few batches.
pub fn small_config() -> LogConfig {
    LogConfig {
        segment_size_bytes_max: 4096,
        index_interval_bytes: 256,
        batch_size_bytes_max: 64 * 1024,
        open_files_max: 3,
        fsync: FsyncPolicy::Never,
        ..LogConfig::default()
    }
}

/// A batch of `records` records, `bytes` long, timestamp `ts`, payload seeded by `seed`.
pub fn batch(bytes: usize, records: u32, ts: i64, seed: u64) -> Vec<u8> {
    testing::batch_of_size(bytes, records, ts, seed)
}

pub fn open(dir: &Path, config: &LogConfig) -> SegmentLog {
    SegmentLog::open(dir, config.clone()).expect("open log")
}

/// Splits a byte run into batches: (base offset, next offset, crc).
pub fn batches(bytes: &[u8]) -> Vec<(u64, u64, u32)> {
    let mut out = Vec::new();
    let mut p = 0;
    while p < bytes.len() {
        let h = qiss::batch::check(&bytes[p..]).expect("valid batch");
        let len = h.batch_length as usize;
        qiss::batch::check(&bytes[p..p + len]).expect("valid batch");
        out.push((h.base_offset, h.next_offset(), h.crc));
        p += len;
    }
    out
}

/// Reads the whole log from its start: every batch, in order.
pub fn read_all(log: &SegmentLog) -> Vec<(u64, u64, u32)> {
    let mut out = Vec::new();
    let mut at = log.start_offset();
    loop {
        let s = log.read(at, 1 << 20).expect("read");
        if s.bytes.is_empty() {
            assert_eq!(at, log.next_offset(), "empty read before the end");
            return out;
        }
        out.extend(batches(&s.bytes));
        at = s.next_offset;
    }
}

/// The segment files of a log directory, sorted.
pub fn segment_files(dir: &Path, ext: &str) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}
