//! Tests of the record batch: round trips, exact structure, corruption and hostile input.

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::Error;

/// An owned record, for comparing what went in with what came out.
#[derive(Debug, Clone, PartialEq)]
struct Rec {
    timestamp: i64,
    key: Option<Vec<u8>>,
    headers: Vec<(String, Vec<u8>)>,
    value: Vec<u8>,
}

fn build(recs: &[Rec], compression: Compression) -> Bytes {
    let mut b = BatchBuilder::new();
    b.compression(compression).producer(7, 2, 100);
    for r in recs {
        let headers: Vec<(&str, &[u8])> = r
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_slice()))
            .collect();
        let before = b.encoded_len();
        let expect = b.record_len(r.timestamp, r.key.as_deref(), &headers, &r.value);
        b.push(r.timestamp, r.key.as_deref(), &headers, &r.value)
            .unwrap();
        assert_eq!(b.encoded_len() - before, expect);
    }
    b.build().unwrap()
}

fn read(batch: &RecordBatch) -> Vec<Rec> {
    batch
        .records()
        .map(|r| Rec {
            timestamp: r.timestamp(),
            key: r.key().map(<[u8]>::to_vec),
            headers: r
                .headers()
                .map(|(n, v)| (n.to_string(), v.to_vec()))
                .collect(),
            value: r.value().to_vec(),
        })
        .collect()
}

fn sample() -> Vec<Rec> {
    vec![
        Rec {
            timestamp: 1_700_000_000_000,
            key: Some(b"key-1".to_vec()),
            headers: vec![("trace".into(), b"abc".to_vec()), ("e".into(), vec![])],
            value: b"hello".to_vec(),
        },
        Rec {
            timestamp: 1_699_999_999_000,
            key: None,
            headers: vec![],
            value: vec![],
        },
        Rec {
            timestamp: 1_700_000_000_500,
            key: Some(vec![]),
            headers: vec![("ünïcode".into(), vec![0xff; 300])],
            value: vec![7; 1000],
        },
    ]
}

/// Recomputes the CRC of a hand-edited batch so that only the edit is under test.
fn reseal(batch: &mut [u8]) {
    let crc = crc32fast::hash(&batch[CRC_START..]);
    batch[CRC_POS..CRC_POS + 4].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn round_trip_both_codecs() {
    for c in [Compression::None, Compression::Zstd] {
        let bytes = build(&sample(), c);
        let h = validate(&bytes).unwrap();
        assert_eq!(h.compression(), c);
        assert_eq!(h.record_count, 3);
        assert_eq!(h.first_timestamp, 1_700_000_000_000);
        assert_eq!(h.max_timestamp, 1_700_000_000_500);
        assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence),
            (7, 2, 100)
        );
        assert_eq!(h.batch_length as usize, bytes.len());
        let batch = RecordBatch::new(bytes).unwrap();
        assert_eq!(read(&batch), sample());
        let offsets: Vec<u64> = batch.records().map(|r| r.offset()).collect();
        assert_eq!(offsets, [0, 1, 2]);
        assert_eq!(batch.records().len(), 3);
    }
}

#[test]
fn exact_record_bytes() {
    let mut b = BatchBuilder::new();
    b.push(1000, Some(b"k"), &[("h", b"v")], b"val").unwrap();
    b.push(999, None, &[], b"").unwrap();
    let bytes = b.build().unwrap();
    assert_eq!(
        &bytes[HEADER_LEN..],
        &[
            // record 0: length 13, offset_delta 0, ts_delta 0, key_length 1 (zigzag 2),
            // "k", 1 header, "h" -> "v", value_length 3, "val"
            13, 0, 0, 2, b'k', 1, 1, b'h', 1, b'v', 3, b'v', b'a', b'l',
            // record 1: length 5, offset_delta 1, ts_delta -1 (zigzag 1), no key (-1 ->
            // 1), 0 headers, value_length 0
            5, 1, 1, 1, 0, 0,
        ][..]
    );
}

#[test]
fn records_are_zero_copy() {
    let bytes = build(&sample(), Compression::None);
    let batch = RecordBatch::new(bytes.clone()).unwrap();
    let r = batch.records().next().unwrap();
    let range = bytes.as_ptr_range();
    assert!(range.contains(&r.value().as_ptr()));
    assert!(range.contains(&r.key().unwrap().as_ptr()));
    assert!(range.contains(&r.value_bytes().as_ptr()));
    assert!(range.contains(&r.headers().next().unwrap().0.as_ptr()));
}

#[test]
fn stamping_keeps_the_crc() {
    let mut bytes = build(&sample(), Compression::Zstd).to_vec();
    set_base_offset(&mut bytes, 41);
    set_raft_stamp(&mut bytes, 3, 9);
    let batch = RecordBatch::new(Bytes::from(bytes)).unwrap();
    assert_eq!((batch.header().term, batch.header().log_index), (3, 9));
    let offsets: Vec<u64> = batch.records().map(|r| r.offset()).collect();
    assert_eq!(offsets, [41, 42, 43]);
    assert_eq!(batch.header().next_offset(), 44);
}

#[test]
fn control_batches_are_opaque() {
    let bytes = BatchBuilder::control(b"raft membership").unwrap();
    let batch = RecordBatch::new(bytes).unwrap();
    assert!(batch.is_control());
    assert_eq!(batch.len(), 1);
    assert_eq!(batch.records().count(), 0);
    assert_eq!(&batch.records_section()[..], b"raft membership");
}

#[test]
fn empty_builder_and_limits() {
    assert!(matches!(
        BatchBuilder::new().build(),
        Err(Error::BatchLimit { .. })
    ));
    let mut b = BatchBuilder::new();
    b.records_length_max(20);
    assert!(matches!(
        b.push(0, None, &[], &[0; 100]),
        Err(Error::BatchLimit { .. })
    ));
    assert!(b.is_empty());
    b.push(i64::MIN, None, &[], b"").unwrap();
    assert!(matches!(
        b.push(i64::MAX, None, &[], b""),
        Err(Error::BatchLimit { .. })
    ));
    assert_eq!(b.len(), 1);
}

#[test]
fn every_truncation_is_an_error() {
    for c in [Compression::None, Compression::Zstd] {
        let bytes = build(&sample(), c);
        for n in 0..bytes.len() {
            assert!(validate(&bytes[..n]).is_err(), "{c:?} prefix {n}");
            assert!(RecordBatch::new(bytes.slice(..n)).is_err());
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert_eq!(
            validate(&longer),
            Err(Error::TrailingBytes { remaining: 1 })
        );
    }
}

#[test]
fn every_byte_flip_outside_the_stamps_is_detected() {
    for c in [Compression::None, Compression::Zstd] {
        let bytes = build(&sample(), c);
        for pos in 0..bytes.len() {
            // base_offset, term and log_index are the log's stamps, outside the CRC.
            let stamped = pos < BATCH_LENGTH_POS || (TERM_POS..CRC_POS).contains(&pos);
            for bit in [0x01u8, 0x80] {
                let mut bad = bytes.to_vec();
                bad[pos] ^= bit;
                let r = validate(&bad);
                assert_eq!(r.is_ok(), stamped, "{c:?} flip {bit:#x} at {pos}: {r:?}");
            }
        }
    }
}

#[test]
fn structure_is_checked_even_under_a_good_crc() {
    let bytes = build(&sample(), Compression::None).to_vec();
    // A record claiming a key longer than itself.
    let mut bad = bytes.clone();
    bad[HEADER_LEN + 3] = 0x7e; // key_length 63 in a 30-byte record
    reseal(&mut bad);
    assert!(matches!(
        validate(&bad),
        Err(Error::CorruptRecord { index: 0, .. })
    ));
    // record_count larger than the records.
    let mut bad = bytes.clone();
    bad[39] = 4;
    reseal(&mut bad);
    assert!(validate(&bad).is_err());
    // record_count zero: only a control batch may occupy no offset.
    let mut bad = bytes.clone();
    bad[39..43].copy_from_slice(&0u32.to_le_bytes());
    reseal(&mut bad);
    assert!(matches!(validate(&bad), Err(Error::CorruptBatch { .. })));
    let mut control = BatchBuilder::control(b"entry").unwrap().to_vec();
    control[39..43].copy_from_slice(&0u32.to_le_bytes());
    reseal(&mut control);
    let h = validate(&control).expect("a zero-width control batch is valid");
    assert_eq!((h.record_count, h.next_offset()), (0, h.base_offset));
    // record_count smaller: bytes left after the last record.
    let mut bad = bytes.clone();
    bad[39] = 2;
    reseal(&mut bad);
    assert!(matches!(validate(&bad), Err(Error::CorruptBatch { .. })));
    // max_timestamp that the records do not have.
    let mut bad = bytes.clone();
    bad[51] ^= 1;
    reseal(&mut bad);
    assert_eq!(
        validate(&bad),
        Err(Error::CorruptBatch {
            reason: "max_timestamp does not match the records"
        })
    );
    // Unknown version and reserved attributes.
    let mut bad = bytes.clone();
    bad[VERSION_POS] = 2;
    assert!(matches!(validate(&bad), Err(Error::CorruptBatch { .. })));
    let mut bad = bytes.clone();
    bad[38] = 0x80;
    reseal(&mut bad);
    assert!(matches!(validate(&bad), Err(Error::CorruptBatch { .. })));
    // A base_offset so large the offsets would overflow.
    let mut bad = bytes.clone();
    set_base_offset(&mut bad, u64::MAX);
    assert!(matches!(validate(&bad), Err(Error::CorruptBatch { .. })));
}

#[test]
fn hostile_records_length_is_refused_before_allocating() {
    let mut bad = build(&sample(), Compression::Zstd).to_vec();
    bad[73..77].copy_from_slice(&u32::MAX.to_le_bytes());
    reseal(&mut bad);
    assert!(matches!(
        validate(&bad),
        Err(Error::LengthLimit { position: 73, .. })
    ));
    // Under the limit but not what the frame declares.
    let mut bad = build(&sample(), Compression::Zstd).to_vec();
    bad[73..77].copy_from_slice(&(1u32 << 20).to_le_bytes());
    reseal(&mut bad);
    assert!(matches!(validate(&bad), Err(Error::CorruptBatch { .. })));
    // A tight limit.
    let bytes = build(&sample(), Compression::None);
    let limits = BatchLimits {
        records_length_max: 10,
    };
    assert!(matches!(
        validate_with(&bytes, &limits),
        Err(Error::LengthLimit { .. })
    ));
}

#[test]
fn split_back_to_back_batches() {
    let a = build(&sample(), Compression::None);
    let b = build(&sample()[..1], Compression::Zstd);
    let mut all = a.to_vec();
    all.extend_from_slice(&b);
    let parts: Vec<Bytes> = split_batches(Bytes::from(all.clone()))
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(parts, [a, b]);
    all.truncate(all.len() - 1);
    let last = split_batches(Bytes::from(all)).last().unwrap();
    assert!(matches!(last, Err(Error::UnexpectedEof { .. })));
}

fn rec() -> impl Strategy<Value = Rec> {
    (
        -1_000_000i64..1_000_000,
        prop::option::of(prop::collection::vec(any::<u8>(), 0..20)),
        prop::collection::vec((".{0,6}", prop::collection::vec(any::<u8>(), 0..10)), 0..4),
        prop::collection::vec(any::<u8>(), 0..200),
    )
        .prop_map(|(ts, key, headers, value)| Rec {
            timestamp: 1_700_000_000_000 + ts,
            key,
            headers,
            value,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn prop_batch_round_trip(
        recs in prop::collection::vec(rec(), 1..20),
        zstd in any::<bool>(),
        base in 0u64..1 << 40,
    ) {
        let c = if zstd { Compression::Zstd } else { Compression::None };
        let mut bytes = build(&recs, c).to_vec();
        set_base_offset(&mut bytes, base);
        let batch = RecordBatch::new(Bytes::from(bytes)).unwrap();
        prop_assert_eq!(read(&batch), recs.clone());
        for (i, r) in batch.records().enumerate() {
            prop_assert_eq!(r.offset(), base + i as u64);
        }
        prop_assert_eq!(
            batch.header().max_timestamp,
            recs.iter().map(|r| r.timestamp).max().unwrap()
        );
    }

    #[test]
    fn prop_flips_are_detected(
        recs in prop::collection::vec(rec(), 1..5),
        zstd in any::<bool>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
    ) {
        let c = if zstd { Compression::Zstd } else { Compression::None };
        let mut bytes = build(&recs, c).to_vec();
        let mut changed = false;
        for (at, x) in flips {
            let pos = CRC_POS + at.index(bytes.len() - CRC_POS);
            bytes[pos] ^= x;
            changed = true;
        }
        // Flips can cancel each other; only a changed batch must fail.
        let original = build(&recs, c);
        if changed && bytes[..] != original[..] {
            prop_assert!(validate(&bytes).is_err());
        }
    }

    #[test]
    fn prop_garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = validate(&bytes);
        let _ = RecordBatch::new(Bytes::from(bytes.clone()));
        // And the same garbage behind a valid, resealed header.
        let mut b = BatchBuilder::new();
        b.push(0, None, &[], b"x").unwrap();
        let mut framed = b.build().unwrap().to_vec();
        framed.truncate(HEADER_LEN);
        framed.extend_from_slice(&bytes);
        let len = framed.len() as u32;
        framed[8..12].copy_from_slice(&len.to_le_bytes());
        framed[73..77].copy_from_slice(&(bytes.len() as u32).to_le_bytes());
        framed[39..43].copy_from_slice(&(1 + bytes.first().copied().unwrap_or(0) as u32 % 8).to_le_bytes());
        reseal(&mut framed);
        if let Ok(batch) = RecordBatch::new(Bytes::from(framed)) {
            for r in batch.records() {
                let _ = (r.key(), r.value(), r.headers().count());
            }
        }
    }
}

/// The worked example of docs/qiss.md, byte for byte.
#[test]
fn spec_example() {
    let mut b = BatchBuilder::new();
    b.push(1000, Some(b"k"), &[("h", b"v")], b"val").unwrap();
    let bytes = b.build().unwrap();
    let expect: [u8; 91] = [
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x5b, 0x00, 0x00, 0x00, 0x51, 0x49, 0x53,
        0x42, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x08, 0x59, 0xc9, 0x4c, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0xe8, 0x03,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xe8, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0e, 0x00,
        0x00, 0x00, 0x0d, 0x00, 0x00, 0x02, 0x6b, 0x01, 0x01, 0x68, 0x01, 0x76, 0x03, 0x76, 0x61,
        0x6c,
    ];
    assert_eq!(&bytes[..], &expect[..]);
    assert_eq!(validate(&bytes).unwrap().crc, 0x4cc9_5908);
}
