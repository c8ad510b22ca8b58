//! Zero-width control batches: a control batch with `record_count` 0 occupies no offset
//! and shares its base offset with the batches after it (how a partition log stores
//! Raft control entries). Offsets stay dense; positions name each batch.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use neo_storage::{BatchPos, Error, SegmentLog, testing};

/// Every batch of the log in order, read by position: (position, base offset, records).
fn read_all_at(log: &SegmentLog) -> Vec<(BatchPos, u64, u32)> {
    let mut out = Vec::new();
    let mut at = log.start_pos();
    loop {
        let s = log.read_at(at, 700).expect("read_at");
        if s.bytes.is_empty() {
            return out;
        }
        let mut p = 0;
        while p < s.bytes.len() {
            let h = qiss::batch::check(&s.bytes[p..]).expect("valid batch");
            let pos = BatchPos {
                segment: at.segment,
                position: at.position + p as u64,
            };
            out.push((pos, h.base_offset, h.record_count));
            p += h.batch_length as usize;
        }
        at = s.next;
    }
}

fn control(seed: u8) -> Vec<u8> {
    testing::control_batch(&[seed; 40])
}

#[test]
fn zero_width_batches_take_no_offset_and_fetch_skips_them() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), &small_config());
    let c0 = log.append(&control(0)).unwrap();
    assert_eq!(
        (c0.base_offset, c0.next_offset),
        (0, 0),
        "first record still gets 0"
    );
    let d0 = log.append(&batch(300, 3, 10, 1)).unwrap();
    assert_eq!((d0.base_offset, d0.next_offset), (0, 3));
    let c1 = log.append(&control(1)).unwrap();
    let c2 = log.append(&control(2)).unwrap();
    let d1 = log.append(&batch(300, 2, 20, 2)).unwrap();
    assert_eq!((c1.base_offset, c2.base_offset, d1.base_offset), (3, 3, 3));
    assert_eq!(log.next_offset(), 5);

    // A fetch from an offset returns the batch holding it first: zero-width batches at
    // that offset hold nothing of it and are skipped; the read never goes backwards.
    let s = log.read(3, 1 << 20).unwrap();
    assert_eq!(batches(&s.bytes), vec![(3, 5, batches(&s.bytes)[0].2)]);
    assert_eq!((s.base_offset, s.next_offset), (3, 5));
    let s = log.read(0, 1 << 20).unwrap();
    let seen: Vec<(u64, u64)> = batches(&s.bytes).iter().map(|b| (b.0, b.1)).collect();
    assert_eq!(seen, vec![(0, 3), (3, 3), (3, 3), (3, 5)]);
    // At the end, with a trailing zero-width batch: empty, not a loop on it.
    log.append(&control(3)).unwrap();
    assert!(log.read(5, 1 << 20).unwrap().bytes.is_empty());

    // By position, every batch is there, in order.
    let all = read_all_at(&log);
    let got: Vec<(u64, u32)> = all.iter().map(|&(_, b, n)| (b, n)).collect();
    assert_eq!(got, vec![(0, 0), (0, 3), (3, 0), (3, 0), (3, 2), (5, 0)]);
    assert_eq!(all[3].0.position, c2.position);

    // A position that is not a batch boundary is a typed error.
    let bad = BatchPos {
        segment: 0,
        position: c2.position + 1,
    };
    assert!(matches!(
        log.read_at(bad, 100),
        Err(Error::BadPosition { .. })
    ));
    assert!(matches!(
        log.truncate_at(bad),
        Err(Error::BadPosition { .. })
    ));

    // Cut one of two zero-width batches sharing offset 3: the first stays.
    let at = BatchPos {
        segment: c2.segment,
        position: c2.position,
    };
    assert_eq!(log.truncate_at(at).unwrap(), 3);
    let got: Vec<(u64, u32)> = read_all_at(&log).iter().map(|&(_, b, n)| (b, n)).collect();
    assert_eq!(got, vec![(0, 0), (0, 3), (3, 0)]);
    // The log goes on from offset 3; offsets stay dense.
    assert_eq!(log.append(&batch(200, 4, 30, 3)).unwrap().base_offset, 3);
    // By offset, truncation keeps the zero-width batch at the cut offset (it holds none).
    assert_eq!(log.truncate_suffix(3).unwrap(), 3);
    assert_eq!(read_all_at(&log).len(), 3);
}

#[test]
fn a_zero_width_append_is_not_durable_before_a_sync() {
    // FsyncPolicy::Never: only an explicit sync makes anything durable.
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), &small_config());
    log.append(&batch(300, 3, 10, 1)).unwrap();
    log.sync().unwrap();
    assert_eq!(log.durable_offset(), 3);
    // Offset 3 is "durable" already, but the control batch appended at it is not.
    let a = log.append(&control(1)).unwrap();
    assert_eq!(a.next_offset, 3);
    let fired = Arc::new(AtomicUsize::new(0));
    let f = Arc::clone(&fired);
    log.notify_durable(a.next_offset, move |r| {
        assert!(r.is_ok());
        f.fetch_add(1, Ordering::SeqCst);
    });
    assert_eq!(fired.load(Ordering::SeqCst), 0, "reported before fdatasync");
    log.sync().unwrap();
    assert_eq!(fired.load(Ordering::SeqCst), 1);
}

#[test]
fn segments_roll_past_zero_width_runs_and_recover() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config();
    let mut expect = Vec::new();
    {
        let log = open(dir.path(), &config);
        // Only control batches: every one is at offset 0, so no segment can start
        // after them (it would have the same name); the first segment grows instead.
        for i in 0..120u8 {
            log.append(&control(i)).unwrap();
            expect.push((0, 0));
        }
        assert_eq!(log.stats().segments, 1);
        assert!(log.stats().size_bytes > config.segment_size_bytes_max);
        // Then records and controls interleaved: segments roll at record offsets.
        for i in 0..40u64 {
            let a = log.append(&batch(400, 2, i as i64, i)).unwrap();
            expect.push((a.base_offset, 2));
            let c = log.append(&control(i as u8)).unwrap();
            expect.push((c.base_offset, 0));
        }
        assert!(log.stats().segments > 3);
        let got: Vec<(u64, u32)> = read_all_at(&log).iter().map(|&(_, b, n)| (b, n)).collect();
        assert_eq!(got, expect);
        // Offsets are dense: every record offset is read back exactly once.
        let records: u64 = read_all(&log).iter().map(|b| b.1 - b.0).sum();
        assert_eq!(records, 80);
        assert_eq!(log.next_offset(), 80);
    }
    // Reopen: sealed segments from their index files, the tail by a scan.
    let log = open(dir.path(), &config);
    assert_eq!(log.next_offset(), 80);
    let got: Vec<(u64, u32)> = read_all_at(&log).iter().map(|&(_, b, n)| (b, n)).collect();
    assert_eq!(got, expect);
    log.verify().unwrap();
    drop(log);
    // Without index files: rebuilt from the segments.
    for f in segment_files(dir.path(), "index") {
        std::fs::remove_file(f).unwrap();
    }
    let log = open(dir.path(), &config);
    let got: Vec<(u64, u32)> = read_all_at(&log).iter().map(|&(_, b, n)| (b, n)).collect();
    assert_eq!(got, expect);
    // A torn zero-width batch at the tail is cut like any torn tail.
    let tail = segment_files(dir.path(), "log").pop().unwrap();
    drop(log);
    let f = std::fs::OpenOptions::new()
        .append(true)
        .open(&tail)
        .unwrap();
    let mut torn = control(9);
    qiss::batch::set_base_offset(&mut torn, 80);
    std::os::unix::fs::FileExt::write_all_at(&f, &torn[..50], f.metadata().unwrap().len()).unwrap();
    let log = open(dir.path(), &config);
    assert_eq!(read_all_at(&log).len(), expect.len());
    // Purge by segment: the first remaining batch's segment and everything after stay.
    let keep = read_all_at(&log)[150].0.segment;
    assert_eq!(log.purge_prefix(keep).unwrap(), keep);
    assert_eq!(log.start_pos().segment, keep);
    assert!(read_all_at(&log).iter().all(|b| b.0.segment >= keep));
}
