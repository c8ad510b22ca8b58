//! Injected disk faults (feature `failpoints`): a failed `fdatasync` is never retried
//! as if the data were safe, and the log reopens at its last successful sync; a failed
//! write (EIO, ENOSPC) fails the log without cutting what was durable.
#![cfg(feature = "failpoints")]

mod common;

use neo_storage::{Error, FsyncPolicy, LogConfig, SegmentLog, failpoints, salvage_pending};
use std::sync::Mutex;

/// Failpoint rules are process-wide: these tests take turns.
static SERIAL: Mutex<()> = Mutex::new(());

fn config() -> LogConfig {
    LogConfig {
        fsync: FsyncPolicy::Always,
        ..common::small_config()
    }
}

fn read_all(log: &SegmentLog) -> Vec<(u64, u64, u32)> {
    let s = log.read(log.start_offset(), 1 << 20).expect("read");
    common::batches(&s.bytes)
}

#[test]
fn a_failed_sync_fails_the_log_and_reopening_cuts_back_to_the_last_good_sync() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let tag = dir.path().to_string_lossy().to_string();
    let log = SegmentLog::open(dir.path(), config()).unwrap();
    for i in 0..5 {
        log.append_durable(&common::batch(200, 2, 1, i))
            .unwrap()
            .1
            .wait()
            .unwrap();
    }
    let durable = read_all(&log);
    assert_eq!(log.durable_offset(), 10);

    failpoints::configure(&format!("segment.sync=eio,times=1,path={tag}")).unwrap();
    let (_, pending) = log.append_durable(&common::batch(200, 2, 1, 99)).unwrap();
    let err = pending.wait().expect_err("the sync failed");
    assert!(err.to_string().contains("fdatasync"), "{err}");
    // Refused from now on, even though the next sync would "succeed".
    assert!(matches!(
        log.append(&common::batch(200, 2, 1, 100)),
        Err(Error::Failed { .. })
    ));
    assert_eq!(
        log.durable_offset(),
        10,
        "nothing past the last good sync is durable"
    );
    assert!(salvage_pending(dir.path()));
    drop(log);
    failpoints::clear();

    // The batch whose sync failed is still in the file (page cache); reopening cuts it.
    let log = SegmentLog::open(dir.path(), config()).unwrap();
    assert!(!salvage_pending(dir.path()));
    assert_eq!(log.next_offset(), 10);
    assert_eq!(read_all(&log), durable);
    log.append_durable(&common::batch(200, 2, 1, 7))
        .unwrap()
        .1
        .wait()
        .unwrap();
    assert_eq!(log.next_offset(), 12);
}

#[test]
fn a_full_disk_fails_the_write_and_keeps_what_was_durable() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let tag = dir.path().to_string_lossy().to_string();
    let log = SegmentLog::open(dir.path(), config()).unwrap();
    // Enough batches to roll segments (4 KiB each).
    for i in 0..40 {
        log.append_durable(&common::batch(300, 1, 1, i))
            .unwrap()
            .1
            .wait()
            .unwrap();
    }
    let durable = read_all(&log);
    failpoints::configure(&format!("segment.write=enospc,path={tag}")).unwrap();
    let err = log
        .append(&common::batch(300, 1, 1, 1))
        .expect_err("disk full");
    assert!(err.is_storage_full(), "{err}");
    // Reads keep working on a failed log.
    assert_eq!(read_all(&log), durable);
    drop(log);
    failpoints::clear();
    let log = SegmentLog::open(dir.path(), config()).unwrap();
    assert_eq!(read_all(&log), durable);
    assert_eq!(log.next_offset(), 40);
}
