//! Behaviour of `SegmentLog` through its public API.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use neo_storage::{Error, FsyncPolicy, LogConfig, SegmentLog};

#[test]
fn append_stamps_offsets_and_reads_back_whole_batches() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), &small_config());
    let b1 = batch(300, 3, 10, 1);
    let b2 = batch(500, 1, 20, 2);
    let a1 = log.append(&b1).unwrap();
    let a2 = log.append(&b2).unwrap();
    assert_eq!((a1.base_offset, a1.next_offset, a1.position), (0, 3, 0));
    assert_eq!((a2.base_offset, a2.next_offset, a2.position), (3, 4, 300));
    // The caller's bytes are untouched; the stored ones differ only in the stamp.
    let s = log.read(0, 1 << 20).unwrap();
    assert_eq!(s.bytes.len(), 800);
    assert_eq!(&s.bytes[8..300], &b1[8..]);
    assert_eq!(&s.bytes[308..], &b2[8..]);
    assert_eq!(
        batches(&s.bytes),
        vec![(0, 3, batches(&b1)[0].2), (3, 4, batches(&b2)[0].2)]
    );
    // An offset inside a batch returns that whole batch first.
    let s = log.read(2, 1).unwrap();
    assert_eq!((s.base_offset, s.next_offset, s.bytes.len()), (0, 3, 300));
    // max_bytes smaller than a batch still yields one whole batch.
    let s = log.read(3, 10).unwrap();
    assert_eq!((s.base_offset, s.next_offset, s.bytes.len()), (3, 4, 500));
    // At the end: empty. Beyond: out of range.
    assert!(log.read(4, 100).unwrap().bytes.is_empty());
    assert!(matches!(
        log.read(5, 100),
        Err(Error::OffsetOutOfRange {
            requested: 5,
            start: 0,
            end: 4
        })
    ));
    // Bounded reads stop before a batch that ends beyond the bound.
    let s = log.read_bounded(0, 1 << 20, 3).unwrap();
    assert_eq!(s.next_offset, 3);
    assert!(log.read_bounded(0, 1 << 20, 2).unwrap().bytes.is_empty());
}

#[test]
fn rejects_bad_input_without_changing_anything() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), &small_config());
    log.append(&batch(100, 1, 0, 1)).unwrap();
    let mut bad = batch(100, 1, 0, 2);
    bad[90] ^= 1;
    assert!(matches!(
        log.append(&bad),
        Err(Error::InvalidBatch(qiss::Error::CrcMismatch { .. }))
    ));
    let mut trailing = batch(100, 1, 0, 3);
    trailing.push(0);
    assert!(matches!(log.append(&trailing), Err(Error::InvalidBatch(_))));
    let huge = batch(64 * 1024 + 1, 1, 0, 4);
    assert!(matches!(
        log.append(&huge),
        Err(Error::BatchTooLarge {
            size: 65537,
            max: 65536
        })
    ));
    let mut at = batch(100, 1, 0, 5);
    qiss::batch::set_base_offset(&mut at, 7);
    assert!(matches!(
        log.append_at(&at),
        Err(Error::NonContiguous {
            expected: 1,
            got: 7
        })
    ));
    qiss::batch::set_base_offset(&mut at, 1);
    assert_eq!(log.append_at(&at).unwrap().base_offset, 1);
    assert_eq!(log.next_offset(), 2);
    assert_eq!(read_all(&log).len(), 2);
    assert!(!Error::BatchTooLarge { size: 1, max: 0 }.is_fatal());
}

#[test]
fn rolls_segments_and_reopens_with_index_files() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config();
    let mut expect = Vec::new();
    {
        let log = open(dir.path(), &cfg);
        for i in 0..60u64 {
            let b = batch(
                200 + (i as usize * 37) % 700,
                1 + (i % 3) as u32,
                i as i64 * 10,
                i,
            );
            let a = log.append(&b).unwrap();
            expect.push((a.base_offset, a.next_offset));
        }
        assert!(log.stats().segments > 5, "{:?}", log.stats());
        log.close().unwrap();
    }
    assert!(segment_files(dir.path(), "index").len() > 5);
    let log = open(dir.path(), &cfg);
    let got: Vec<(u64, u64)> = read_all(&log).iter().map(|b| (b.0, b.1)).collect();
    assert_eq!(got, expect);
    // Every offset reads back its own batch (through the sparse index).
    for &(base, next) in &expect {
        for o in base..next {
            let s = log.read(o, 1).unwrap();
            assert_eq!((s.base_offset, s.next_offset), (base, next));
        }
    }
    assert_eq!(log.durable_offset(), log.next_offset());
}

#[test]
fn timestamps_find_the_first_batch_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), &small_config());
    let ts = [5i64, 3, 10, 10, 7, 20, 15, 30];
    let mut bases = Vec::new();
    for (i, &t) in ts.iter().enumerate() {
        bases.push(log.append(&batch(900, 2, t, i as u64)).unwrap().base_offset);
    }
    for target in 0..35 {
        let want = ts.iter().position(|&t| t >= target).map(|i| bases[i]);
        assert_eq!(
            log.offset_for_timestamp(target).unwrap(),
            want,
            "target {target}"
        );
    }
}

#[test]
fn truncate_suffix_cuts_at_batch_boundaries_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config();
    let log = open(dir.path(), &cfg);
    for i in 0..40u64 {
        log.append(&batch(400, 2, i as i64, i)).unwrap();
    }
    // 80 offsets in batches of 2. Cut inside a batch: it goes whole.
    assert_eq!(log.truncate_suffix(51).unwrap(), 50);
    assert_eq!(log.next_offset(), 50);
    assert_eq!(
        log.truncate_suffix(60).unwrap(),
        50,
        "beyond the end is a no-op"
    );
    assert_eq!(read_all(&log).last().unwrap().1, 50);
    // Appends continue from the cut, also after reopening.
    assert_eq!(log.append(&batch(400, 2, 99, 99)).unwrap().base_offset, 50);
    drop(log);
    let log = open(dir.path(), &cfg);
    assert_eq!(log.next_offset(), 52);
    assert_eq!(read_all(&log).len(), 26);
    assert_eq!(log.offset_for_timestamp(99).unwrap(), Some(50));
    assert_eq!(log.truncate_suffix(0).unwrap(), 0);
    assert!(read_all(&log).is_empty());
}

#[test]
fn purge_prefix_deletes_whole_segments_and_resets_past_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config();
    let log = open(dir.path(), &cfg);
    for i in 0..40u64 {
        log.append(&batch(400, 1, i as i64, i)).unwrap();
    }
    let start = log.purge_prefix(15).unwrap();
    assert!(start <= 15 && start > 0, "start {start}");
    assert_eq!(log.start_offset(), start);
    assert!(matches!(
        log.read(start - 1, 1),
        Err(Error::OffsetOutOfRange { .. })
    ));
    assert_eq!(read_all(&log).first().unwrap().0, start);
    // Past the end: the log restarts empty at the new offset (snapshot install).
    assert_eq!(log.purge_prefix(100).unwrap(), 100);
    assert_eq!(
        (log.start_offset(), log.next_offset(), log.durable_offset()),
        (100, 100, 100)
    );
    assert_eq!(log.append(&batch(400, 1, 0, 0)).unwrap().base_offset, 100);
    drop(log);
    let log = open(dir.path(), &cfg);
    assert_eq!((log.start_offset(), log.next_offset()), (100, 101));
    assert_eq!(segment_files(dir.path(), "log").len(), 1);
}

#[test]
fn retention_by_age_and_size_only_touches_sealed_segments() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        retention_ms: Some(1000),
        retention_bytes: Some(10_000),
        ..small_config()
    };
    let log = open(dir.path(), &cfg);
    // 30 batches of 1000 bytes, 4 per segment, timestamps 0, 100, ..., 2900.
    for i in 0..30u64 {
        log.append(&batch(1000, 1, i as i64 * 100, i)).unwrap();
    }
    let size = log.stats().size_bytes;
    assert_eq!(size, 30_000);
    // By size alone (nothing is old at t=0): keep at most 10 000 bytes.
    let plan = log.retention_plan(0).unwrap();
    assert_eq!(plan, 20, "drop 5 segments of 4 batches: 10 000 bytes left");
    // By age at t=3000: batches with ts < 2000 (offsets < 20) are old; whole segments
    // of them go: the same answer here. At t=3500, offsets < 25 are old: segment
    // [20, 24) goes too.
    assert_eq!(log.retention_plan(3500), Some(24));
    assert_eq!(log.apply_retention(3500).unwrap(), Some(24));
    assert_eq!(log.start_offset(), 24);
    // The active segment is never due, however old.
    assert_eq!(log.retention_plan(1_000_000), Some(28));
    log.apply_retention(1_000_000).unwrap();
    assert_eq!(log.retention_plan(1_000_000), None);
    assert_eq!(log.stats().segments, 1);
}

#[test]
fn retention_plan_for_takes_its_limits_from_the_caller() {
    let dir = tempfile::tempdir().unwrap();
    // The log's own config has no retention: only the limits passed in count.
    let log = open(dir.path(), &small_config());
    for i in 0..30u64 {
        log.append(&batch(1000, 1, i as i64 * 100, i)).unwrap();
    }
    assert_eq!(log.retention_plan(1_000_000), None, "no limits configured");
    assert_eq!(log.retention_plan_for(None, None, 1_000_000), None);
    // Size: 30 000 bytes, keep at most 10 000: 5 segments of 4 000 go.
    assert_eq!(log.retention_plan_for(None, Some(10_000), 0), Some(20));
    // Size at or above the log's size: nothing is due.
    assert_eq!(log.retention_plan_for(None, Some(30_000), 0), None);
    // Age: at t=3500 with 1000 ms, batches with ts < 2500 (offsets < 25) are old; whole
    // sealed segments of them go ([0, 24)).
    assert_eq!(log.retention_plan_for(Some(1000), None, 3500), Some(24));
    // Nothing is old yet.
    assert_eq!(log.retention_plan_for(Some(1000), None, 0), None);
    // Both: the larger cut wins.
    assert_eq!(
        log.retention_plan_for(Some(1000), Some(20_000), 3500),
        Some(24)
    );
    assert_eq!(log.retention_plan_for(Some(1000), Some(1), 0), Some(28));
    // However small the limits, the active segment [28, 30) stays.
    assert_eq!(log.retention_plan_for(Some(1), Some(1), i64::MAX), Some(28));
    // The plan does no I/O.
    assert_eq!(log.start_offset(), 0);
}

#[test]
fn callbacks_fire_only_after_sync_under_never() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_size_bytes_max: 1 << 20,
        ..small_config()
    };
    let log = open(dir.path(), &cfg);
    let fired = Arc::new(Mutex::new(Vec::new()));
    for i in 0..5u64 {
        let f = Arc::clone(&fired);
        log.append_with(&batch(100, 1, 0, i), move |r| {
            f.lock().unwrap().push((i, r.is_ok()))
        })
        .unwrap();
    }
    assert!(fired.lock().unwrap().is_empty(), "nothing synced yet");
    assert_eq!(log.durable_offset(), 0);
    let before = log.stats().syncs;
    assert_eq!(log.sync().unwrap(), 5);
    assert_eq!(
        log.stats().syncs,
        before + 1,
        "one fdatasync for the whole group"
    );
    assert_eq!(
        *fired.lock().unwrap(),
        (0..5).map(|i| (i, true)).collect::<Vec<_>>()
    );
    assert_eq!(log.durable_offset(), 5);
    // Already durable: fires at once.
    let hit = Arc::new(AtomicUsize::new(0));
    let h = Arc::clone(&hit);
    log.notify_durable(5, move |r| {
        assert!(r.is_ok());
        h.fetch_add(1, Ordering::SeqCst);
    });
    assert_eq!(hit.load(Ordering::SeqCst), 1);
}

#[test]
fn truncate_resolves_pending_notifications() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), &small_config());
    let (_, d1) = log.append_durable(&batch(100, 1, 0, 1)).unwrap();
    let (_, d2) = log.append_durable(&batch(100, 1, 0, 2)).unwrap();
    let (_, d3) = log.append_durable(&batch(100, 1, 0, 3)).unwrap();
    assert_eq!(log.truncate_suffix(1).unwrap(), 1);
    assert!(
        d1.wait().is_ok(),
        "below the cut and synced by the truncation"
    );
    assert!(matches!(
        d2.wait(),
        Err(Error::Truncated {
            end: 2,
            truncated_from: 1
        })
    ));
    assert!(matches!(
        d3.wait(),
        Err(Error::Truncated {
            end: 3,
            truncated_from: 1
        })
    ));
    // A new batch at offset 1 gets its own notification, not the old one's.
    let (a, d) = log.append_durable(&batch(100, 1, 0, 4)).unwrap();
    assert_eq!(a.base_offset, 1);
    log.sync().unwrap();
    assert!(d.wait().is_ok());
}

#[test]
fn group_commit_covers_concurrent_appenders_with_fewer_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        fsync: FsyncPolicy::Always,
        segment_size_bytes_max: 64 << 20,
        ..small_config()
    };
    let log = Arc::new(open(dir.path(), &cfg));
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for i in 0..25u64 {
                    let (a, d) = log.append_durable(&batch(256, 1, 0, t * 100 + i)).unwrap();
                    d.wait().unwrap();
                    assert!(log.durable_offset() >= a.next_offset);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let stats = log.stats();
    assert_eq!(stats.batches_appended, 200);
    assert_eq!(stats.durable_offset, 200);
    assert!(
        stats.syncs <= 200,
        "never more syncs than batches: {stats:?}"
    );
    assert_eq!(read_all(&log).len(), 200);
}

/// Threads of this process whose name starts with `prefix` (Linux: /proc/self/task).
fn threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|tasks| {
            tasks
                .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .filter(|name| name.starts_with(prefix))
                .count()
        })
        .unwrap_or(0)
}

/// Many `Always` logs share the process's sync pool: no thread per log, at most 32 sync
/// threads however many logs append at once, every notification completes after its
/// batch is durable, and logs closed (or dropped) while queued are fine.
#[test]
fn many_always_logs_share_a_bounded_sync_pool() {
    const LOGS: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        fsync: FsyncPolicy::Always,
        segment_size_bytes_max: 1 << 20,
        ..small_config()
    };
    let logs: Vec<Arc<SegmentLog>> = (0..LOGS)
        .map(|i| Arc::new(open(&dir.path().join(format!("log-{i}")), &cfg)))
        .collect();
    assert_eq!(threads_named("neo-log-flusher"), 0, "no thread per log");
    // Three rounds of one append per log, from 6 appender threads at once.
    let appenders: Vec<_> = (0..6usize)
        .map(|t| {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for round in 0..3u64 {
                    let waits: Vec<_> = logs
                        .iter()
                        .skip(t)
                        .step_by(6)
                        .map(|log| {
                            let (a, d) = log.append_durable(&batch(200, 1, 0, round)).unwrap();
                            (Arc::clone(log), a, d)
                        })
                        .collect();
                    for (log, a, d) in waits {
                        d.wait().unwrap();
                        assert!(log.durable_offset() >= a.next_offset);
                    }
                }
            })
        })
        .collect();
    for a in appenders {
        a.join().unwrap();
    }
    let sync_threads = threads_named("neo-log-sync");
    assert!(
        (1..=32).contains(&sync_threads),
        "sync threads: {sync_threads}"
    );
    for log in &logs {
        let stats = log.stats();
        assert_eq!(stats.durable_offset, 3, "{stats:?}");
        assert!(stats.syncs >= 1 && stats.syncs <= 3, "{stats:?}");
    }
    // Append and drop at once: the final sync of the drop makes it durable, and a pool
    // thread that still holds the log finds it closed.
    let reopened: Vec<u64> = logs
        .into_iter()
        .enumerate()
        .map(|(i, log)| {
            log.append(&batch(200, 1, 0, 9)).unwrap();
            drop(log);
            let log = open(&dir.path().join(format!("log-{i}")), &cfg);
            log.durable_offset()
        })
        .collect();
    assert!(reopened.iter().all(|&end| end == 4), "{reopened:?}");
}

#[test]
fn interval_policy_notifies_after_its_timer_sync() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        fsync: FsyncPolicy::Interval(5),
        ..small_config()
    };
    let log = open(dir.path(), &cfg);
    let (a, d) = log.append_durable(&batch(100, 1, 0, 1)).unwrap();
    d.wait().unwrap();
    assert!(log.durable_offset() >= a.next_offset);
}

#[test]
fn buffered_bytes_max_forces_a_sync_under_never() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        buffered_bytes_max: 1000,
        segment_size_bytes_max: 1 << 20,
        ..small_config()
    };
    let log = open(dir.path(), &cfg);
    for i in 0..3 {
        log.append(&batch(300, 1, 0, i)).unwrap();
    }
    assert_eq!(log.durable_offset(), 0);
    log.append(&batch(300, 1, 0, 3)).unwrap();
    assert_eq!(
        log.durable_offset(),
        4,
        "1200 unsynced bytes > 1000: the append synced"
    );
}

#[test]
fn open_files_stay_bounded_and_reads_still_work() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config(); // open_files_max = 3
    {
        let log = open(dir.path(), &cfg);
        for i in 0..100u64 {
            log.append(&batch(1000, 1, 0, i)).unwrap();
        }
    }
    let log = SegmentLog::open(dir.path(), cfg).unwrap();
    let fds_before = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0);
    // Read every segment twice in a row; with 25+ segments and an LRU of 3, most reads
    // open and evict handles.
    for _ in 0..2 {
        assert_eq!(read_all(&log).len(), 100);
    }
    let fds_after = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0);
    // Other tests run in parallel threads and open files too, so only a loose bound.
    assert!(
        fds_after <= fds_before + 3 + 16,
        "{fds_before} -> {fds_after}"
    );
}

#[test]
fn append_stamped_at_writes_the_stamped_header_and_the_body_unchecked_and_uncopied() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), &small_config());
    log.append(&batch(100, 2, 0, 1)).unwrap();
    let b = batch(300, 3, 10, 2);
    let head = qiss::batch::stamped_header(&b, 2, 7, 42);
    // No CRC is computed by this append (neo-raft's `one_crc` test counts that); what
    // is stored checks, with the producer's CRC and the stamps.
    let a = log.append_stamped_at(&head, &b).unwrap();
    assert_eq!((a.base_offset, a.next_offset, a.position), (2, 5, 100));
    let s = log.read(2, 1 << 20).unwrap();
    let h = qiss::batch::check(&s.bytes).unwrap();
    assert_eq!((h.base_offset, h.term, h.log_index), (2, 7, 42));
    assert_eq!(&s.bytes[qiss::batch::CRC_POS..], &b[qiss::batch::CRC_POS..]);

    // A stamped header must be the batch's own header but for the stamps, and its base
    // offset the log's next one; nothing is stored otherwise.
    let other = batch(300, 3, 11, 3);
    let wrong = qiss::batch::stamped_header(&other, 5, 7, 43);
    assert!(matches!(
        log.append_stamped_at(&wrong, &b),
        Err(Error::InvalidBatch(qiss::Error::CorruptBatch { .. }))
    ));
    let gap = qiss::batch::stamped_header(&b, 9, 7, 43);
    assert!(matches!(
        log.append_stamped_at(&gap, &b),
        Err(Error::NonContiguous {
            expected: 5,
            got: 9
        })
    ));
    let short = &b[..b.len() - 1];
    assert!(log.append_stamped_at(&head, short).is_err());
    assert_eq!(log.next_offset(), 5);
}
