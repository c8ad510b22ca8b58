//! Damage injected into segment and index files is detected: index damage is rebuilt,
//! a torn tail is cut, any other data damage is a typed `Corruption` error.

mod common;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use common::*;
use neo_storage::{Error, SegmentLog};

/// Writes 30 batches of 300 bytes (13 per 4 KiB segment) and closes the log.
/// Returns (base, next, crc) of every batch.
fn fill(dir: &Path) -> Vec<(u64, u64, u32)> {
    let log = open(dir, &small_config());
    for i in 0..30u64 {
        log.append(&batch(300, 1 + (i % 2) as u32, i as i64, i))
            .unwrap();
    }
    let all = read_all(&log);
    log.close().unwrap();
    all
}

fn flip(path: &Path, pos: u64) {
    let mut b = fs::read(path).unwrap();
    b[pos as usize] ^= 0x40;
    fs::write(path, b).unwrap();
}

fn tail(dir: &Path) -> std::path::PathBuf {
    segment_files(dir, "log").pop().unwrap()
}

#[test]
fn torn_tails_of_every_length_are_cut() {
    let dir = tempfile::tempdir().unwrap();
    let expect = fill(dir.path());
    let tail_path = tail(dir.path());
    let clean_len = fs::metadata(&tail_path).unwrap().len();
    let mut torn = batch(300, 1, 0, 99);
    qiss::batch::set_base_offset(&mut torn, expect.last().unwrap().1);
    for cut in [1usize, 8, 11, 12, 13, 40, 76, 77, 78, 200, 299] {
        let mut f = OpenOptions::new().append(true).open(&tail_path).unwrap();
        f.write_all(&torn[..cut]).unwrap();
        drop(f);
        let log = open(dir.path(), &small_config());
        assert_eq!(read_all(&log), expect, "torn write of {cut} bytes");
        drop(log);
        assert_eq!(
            fs::metadata(&tail_path).unwrap().len(),
            clean_len,
            "cut back after {cut} bytes"
        );
    }
    // Zeros (a size extended with no data written) are torn as well.
    let mut f = OpenOptions::new().append(true).open(&tail_path).unwrap();
    f.write_all(&[0u8; 5000]).unwrap();
    drop(f);
    let log = open(dir.path(), &small_config());
    assert_eq!(read_all(&log), expect);
}

#[test]
fn a_bad_batch_followed_by_valid_data_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path());
    let tail_path = tail(dir.path());
    let base: u64 = tail_path
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // Second batch of the tail segment: a flip in its records section.
    flip(&tail_path, 300 + 150);
    match SegmentLog::open(dir.path(), small_config()) {
        Err(Error::Corruption {
            segment,
            position,
            reason,
        }) => {
            assert_eq!((segment, position), (base, 300), "{reason}");
            assert!(reason.contains("valid batch follows"), "{reason}");
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    // Nothing was cut: the file still has every byte.
    assert_eq!(fs::metadata(&tail_path).unwrap().len() % 300, 0);
}

#[test]
fn damage_in_the_last_batch_of_the_tail_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let expect = fill(dir.path());
    let tail_path = tail(dir.path());
    let len = fs::metadata(&tail_path).unwrap().len();
    flip(&tail_path, len - 10);
    let log = open(dir.path(), &small_config());
    assert_eq!(read_all(&log), expect[..expect.len() - 1]);
}

#[test]
fn sealed_segment_damage_is_found_by_verify_and_by_a_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let expect = fill(dir.path());
    let first = segment_files(dir.path(), "log").remove(0);
    flip(&first, 5 * 300 + 100);
    // The index files are intact, so open trusts the sealed segment without scanning it...
    let log = open(dir.path(), &small_config());
    assert_eq!(log.next_offset(), expect.last().unwrap().1);
    // Reads do not verify CRCs (consumers do): the damaged batch comes back as stored.
    let s = log.read(expect[5].0, 1).unwrap();
    assert!(matches!(
        qiss::batch::check(&s.bytes),
        Err(qiss::Error::CrcMismatch { .. })
    ));
    // ...and a scrub finds the damage.
    match log.verify() {
        Err(Error::Corruption {
            segment: 0,
            position: 1500,
            ..
        }) => {}
        other => panic!("expected corruption, got {other:?}"),
    }
    drop(log);
    // Without the index, open scans the segment and refuses it.
    fs::remove_file(dir.path().join("00000000000000000000.index")).unwrap();
    match SegmentLog::open(dir.path(), small_config()) {
        Err(Error::Corruption {
            segment: 0,
            position: 1500,
            ..
        }) => {}
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn a_shortened_sealed_segment_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path());
    let first = segment_files(dir.path(), "log").remove(0);
    // Even cut exactly at a batch boundary: the segment no longer reaches the next one.
    for cut in [3600u64, 3450] {
        let f = OpenOptions::new().write(true).open(&first).unwrap();
        f.set_len(cut).unwrap();
        drop(f);
        assert!(
            matches!(
                SegmentLog::open(dir.path(), small_config()),
                Err(Error::Corruption { segment: 0, .. })
            ),
            "cut at {cut}"
        );
    }
}

#[test]
fn damaged_or_missing_index_files_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let expect = fill(dir.path());
    let index = dir.path().join("00000000000000000000.index");
    let time = dir.path().join("00000000000000000000.timeindex");
    let good_index = fs::read(&index).unwrap();
    let good_time = fs::read(&time).unwrap();
    let positions: Vec<u64> = (0..good_index.len() as u64).step_by(3).collect();
    for pos in positions {
        flip(&index, pos);
        let log = open(dir.path(), &small_config());
        assert_eq!(read_all(&log), expect, "index flip at {pos}");
        drop(log);
        assert_eq!(
            fs::read(&index).unwrap(),
            good_index,
            "rebuilt identically after flip at {pos}"
        );
    }
    for pos in [0u64, 5, good_time.len() as u64 - 1] {
        flip(&time, pos);
        let log = open(dir.path(), &small_config());
        assert_eq!(log.offset_for_timestamp(3).unwrap(), Some(expect[3].0));
        drop(log);
        assert_eq!(fs::read(&time).unwrap(), good_time);
    }
    for cut in [0usize, 7, good_index.len() - 1] {
        fs::write(&index, &good_index[..cut]).unwrap();
        assert_eq!(read_all(&open(dir.path(), &small_config())), expect);
    }
    fs::remove_file(&index).unwrap();
    fs::remove_file(&time).unwrap();
    assert_eq!(read_all(&open(dir.path(), &small_config())), expect);
    assert_eq!(fs::read(&index).unwrap(), good_index);
}

#[test]
fn random_single_byte_flips_are_never_silent() {
    // For a flip anywhere in any file, opening and scrubbing either reports corruption,
    // or returns exactly the original data, or (a flip in the tail's last batch) the
    // original minus that batch. Never different bytes, never a panic.
    let dir = tempfile::tempdir().unwrap();
    let expect = fill(dir.path());
    let pristine = tempfile::tempdir().unwrap();
    let copy_dir = |from: &Path, to: &Path| {
        for e in fs::read_dir(to).unwrap() {
            fs::remove_file(e.unwrap().path()).unwrap();
        }
        for e in fs::read_dir(from).unwrap() {
            let p = e.unwrap().path();
            fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
        }
    };
    copy_dir(dir.path(), pristine.path());
    let mut files: Vec<_> = fs::read_dir(pristine.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    files.sort();
    let mut seed = 0x1234_5678_9abc_def0u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let (mut reported, mut intact, mut cut) = (0, 0, 0);
    for _ in 0..150 {
        copy_dir(pristine.path(), dir.path());
        let name = &files[(next() % files.len() as u64) as usize];
        let path = dir.path().join(name);
        let len = fs::metadata(&path).unwrap().len();
        flip(&path, next() % len);
        let outcome = SegmentLog::open(dir.path(), small_config()).and_then(|log| {
            log.verify()?;
            Ok(read_all(&log))
        });
        match outcome {
            Err(Error::Corruption { .. }) => reported += 1,
            Err(e) => panic!("unexpected error {e:?}"),
            Ok(got) if got == expect => intact += 1,
            Ok(got) if got == expect[..expect.len() - 1] => cut += 1,
            Ok(got) => panic!("silently different data after flipping {name:?}: {got:?}"),
        }
    }
    assert!(
        reported > 0 && intact > 0,
        "{reported} reported, {intact} intact, {cut} cut"
    );
}
