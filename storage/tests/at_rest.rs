//! Encryption at rest: a log opened with `LogConfig::at_rest` stores every records
//! section encrypted (no plaintext in its files), reads return the plaintext batches
//! byte for byte, recovery verifies CRCs after decryption (torn tails are still cut,
//! corruption still found), and a wrong or missing key is refused before any segment
//! is read.

mod common;

use neo_storage::{AtRestKey, Error, LogConfig, SegmentLog, testing};
use std::fs;
use std::path::Path;

const MARKER: &[u8] = b"PLAINTEXT-MARKER-0123456789";

fn config(key: Option<AtRestKey>) -> LogConfig {
    LogConfig {
        at_rest: key,
        ..common::small_config()
    }
}

fn key(b: u8) -> AtRestKey {
    AtRestKey::new([b; 32])
}

/// Batch `i`: a payload holding the marker, stamped with Raft term 1 and index `i + 1`
/// (as a Raft log store writes them: every batch a distinct stamp).
fn stamped(i: u64) -> ([u8; qiss::batch::HEADER_LEN], Vec<u8>) {
    let mut payload = MARKER.repeat(4);
    payload.extend_from_slice(&i.to_le_bytes());
    let b = testing::batch(1, 1_000 + i as i64, 1_000 + i as i64, &payload);
    let mut head = [0u8; qiss::batch::HEADER_LEN];
    head.copy_from_slice(&b[..qiss::batch::HEADER_LEN]);
    qiss::batch::set_base_offset(&mut head, i);
    qiss::batch::set_raft_stamp(&mut head, 1, i + 1);
    (head, b)
}

/// The batch as a plaintext log stores it (header as stamped, body as given).
fn as_stored(head: &[u8], batch: &[u8]) -> Vec<u8> {
    let mut v = head.to_vec();
    v.extend_from_slice(&batch[qiss::batch::HEADER_LEN..]);
    v
}

fn files_contain(dir: &Path, needle: &[u8]) -> bool {
    fs::read_dir(dir).unwrap().any(|e| {
        let bytes = fs::read(e.unwrap().path()).unwrap();
        bytes.windows(needle.len()).any(|w| w == needle)
    })
}

fn fill(log: &SegmentLog, n: u64) -> Vec<u8> {
    let mut expected = Vec::new();
    for i in 0..n {
        let (head, b) = stamped(i);
        log.append_stamped_at(&head, &b).unwrap();
        expected.extend(as_stored(&head, &b));
    }
    log.sync().unwrap();
    expected
}

fn read_all(log: &SegmentLog) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = log.start_pos();
    loop {
        let s = log.read_at(at, 1 << 20).unwrap();
        if s.bytes.is_empty() {
            return out;
        }
        out.extend_from_slice(&s.bytes);
        at = s.next;
    }
}

#[test]
fn encrypted_log_reads_back_plaintext_and_stores_none() {
    let dir = tempfile::tempdir().unwrap();
    let log = common::open(dir.path(), &config(Some(key(1))));
    let expected = fill(&log, 60);
    assert!(log.stats().segments > 2, "small segments: rolls happened");
    assert_eq!(read_all(&log), expected);
    // Reads by offset return the same plaintext batches, CRCs valid.
    let s = log.read(17, 1).unwrap();
    assert_eq!(s.base_offset, 17);
    qiss::batch::check(&s.bytes).unwrap();
    log.verify().unwrap();
    assert!(!files_contain(dir.path(), MARKER), "no plaintext on disk");
    drop(log);
    // Reopened with the same key: recovery verifies every batch after decryption.
    let log = common::open(dir.path(), &config(Some(key(1))));
    assert_eq!(log.next_offset(), 60);
    assert_eq!(read_all(&log), expected);
    log.verify().unwrap();

    // The same batches in a plaintext log: the marker is on disk.
    let plain = tempfile::tempdir().unwrap();
    let log = common::open(plain.path(), &config(None));
    fill(&log, 3);
    assert!(files_contain(plain.path(), MARKER));
}

#[test]
fn plain_appends_are_encrypted_too() {
    let dir = tempfile::tempdir().unwrap();
    let log = common::open(dir.path(), &config(Some(key(1))));
    let (head, b) = stamped(0);
    let mut stamped_batch = b.clone();
    stamped_batch[..qiss::batch::HEADER_LEN].copy_from_slice(&head);
    log.append_at(&stamped_batch).unwrap();
    log.sync().unwrap();
    assert_eq!(read_all(&log), stamped_batch);
    assert!(!files_contain(dir.path(), MARKER));
}

#[test]
fn wrong_or_missing_key_is_refused_and_nothing_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let expected = {
        let log = common::open(dir.path(), &config(Some(key(1))));
        fill(&log, 20)
    };
    let sizes = || -> Vec<u64> {
        let mut v: Vec<u64> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .collect();
        v.sort();
        v
    };
    let before = sizes();
    for cfg in [config(Some(key(2))), config(None)] {
        match SegmentLog::open(dir.path(), cfg) {
            Err(Error::AtRest { .. }) => {}
            other => panic!("expected an at-rest refusal, got {:?}", other.err()),
        }
    }
    assert_eq!(sizes(), before, "a refused open changes no file");
    let log = common::open(dir.path(), &config(Some(key(1))));
    assert_eq!(read_all(&log), expected);

    // A plaintext log cannot be turned encrypted.
    let plain = tempfile::tempdir().unwrap();
    drop(common::open(plain.path(), &config(None)));
    assert!(matches!(
        SegmentLog::open(plain.path(), config(Some(key(1)))),
        Err(Error::AtRest { .. })
    ));
}

#[test]
fn torn_tail_is_cut_and_corruption_found_after_decryption() {
    let dir = tempfile::tempdir().unwrap();
    let expected = {
        let log = common::open(dir.path(), &config(Some(key(1))));
        fill(&log, 5)
    };
    let tail = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .max()
        .unwrap();
    // A torn append: half a batch at the end of the tail.
    let (head, b) = stamped(5);
    let torn = as_stored(&head, &b);
    let mut f = fs::OpenOptions::new().append(true).open(&tail).unwrap();
    std::io::Write::write_all(&mut f, &torn[..torn.len() / 2]).unwrap();
    drop(f);
    let log = common::open(dir.path(), &config(Some(key(1))));
    assert_eq!(log.next_offset(), 5);
    assert_eq!(read_all(&log), expected);
    drop(log);
    // A flipped byte inside the first batch's encrypted body, with whole batches after
    // it: corruption, not a torn tail.
    let mut bytes = fs::read(&tail).unwrap();
    bytes[qiss::batch::HEADER_LEN + 3] ^= 0x40;
    fs::write(&tail, bytes).unwrap();
    assert!(matches!(
        SegmentLog::open(dir.path(), config(Some(key(1)))),
        Err(Error::Corruption { .. })
    ));
}

#[test]
fn truncation_and_reappend_under_a_new_term() {
    let dir = tempfile::tempdir().unwrap();
    let log = common::open(dir.path(), &config(Some(key(1))));
    fill(&log, 10);
    log.truncate_suffix(6).unwrap();
    // The new leader's entries at the same indexes carry a higher term.
    let mut expected = Vec::new();
    let mut at = log.start_pos();
    while let Ok(s) = log.read_at(at, 1 << 20) {
        if s.bytes.is_empty() {
            break;
        }
        expected.extend_from_slice(&s.bytes);
        at = s.next;
    }
    for i in 6..9 {
        let (mut head, b) = stamped(i);
        qiss::batch::set_raft_stamp(&mut head, 2, i + 1);
        log.append_stamped_at(&head, &b).unwrap();
        expected.extend(as_stored(&head, &b));
    }
    log.sync().unwrap();
    drop(log);
    let log = common::open(dir.path(), &config(Some(key(1))));
    assert_eq!(read_all(&log), expected);
}
