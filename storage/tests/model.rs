//! Property test: random appends, truncations, purges, retention and reopens against a
//! simple in-memory model of the log.

mod common;

use common::*;
use neo_storage::{LogConfig, SegmentLog};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Append { bytes: usize, records: u32, ts: i64 },
    Truncate(prop::sample::Index),
    Purge(prop::sample::Index),
    PurgePastEnd(u8),
    Retention { now: i64 },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (77usize..1500, 1u32..5, 0i64..1000).prop_map(|(bytes, records, ts)| Op::Append { bytes, records, ts }),
        1 => any::<prop::sample::Index>().prop_map(Op::Truncate),
        1 => any::<prop::sample::Index>().prop_map(Op::Purge),
        1 => (0u8..4).prop_map(Op::PurgePastEnd),
        1 => (0i64..2000).prop_map(|now| Op::Retention { now }),
        1 => Just(Op::Reopen),
    ]
}

/// (base, next, crc, max timestamp) of each batch the model holds.
type Model = Vec<(u64, u64, u32, i64)>;

fn check(log: &SegmentLog, model: &Model, start: u64, next: u64) -> Result<(), TestCaseError> {
    prop_assert_eq!(log.start_offset(), start);
    prop_assert_eq!(log.next_offset(), next);
    let got = read_all(log);
    let want: Vec<(u64, u64, u32)> = model.iter().map(|b| (b.0, b.1, b.2)).collect();
    prop_assert_eq!(got, want);
    // Every offset reads its own batch; timestamp lookups match a linear search.
    for b in model {
        for o in b.0..b.1 {
            let s = log.read(o, 1).unwrap();
            prop_assert_eq!((s.base_offset, s.next_offset), (b.0, b.1));
        }
    }
    for target in [0i64, 250, 500, 750, 999, 1000] {
        let want = model.iter().find(|b| b.3 >= target).map(|b| b.0);
        prop_assert_eq!(log.offset_for_timestamp(target).unwrap(), want);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model(ops in prop::collection::vec(op(), 1..60), interval in 64u32..2048) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            index_interval_bytes: interval,
            retention_ms: Some(500),
            retention_bytes: Some(6000),
            ..small_config()
        };
        let mut log = open(dir.path(), &cfg);
        let mut model: Model = Vec::new();
        let (mut start, mut next) = (0u64, 0u64);
        for (i, op) in ops.into_iter().enumerate() {
            match op {
                Op::Append { bytes, records, ts } => {
                    let b = batch(bytes, records, ts, i as u64);
                    let a = log.append(&b).unwrap();
                    prop_assert_eq!(a.base_offset, next);
                    next += u64::from(records);
                    model.push((a.base_offset, next, batches(&b)[0].2, ts));
                }
                Op::Truncate(ix) => {
                    let from = start + ix.index((next - start + 1) as usize) as u64;
                    let new_next = model.iter().find(|b| b.1 > from).map_or(next, |b| b.0);
                    prop_assert_eq!(log.truncate_suffix(from).unwrap(), new_next);
                    model.retain(|b| b.0 < new_next);
                    next = new_next;
                }
                Op::Purge(ix) => {
                    let to = start + ix.index((next - start).max(1) as usize) as u64;
                    let new_start = log.purge_prefix(to).unwrap();
                    prop_assert!(new_start >= start && new_start <= to.max(start));
                    prop_assert!(new_start == next || model.iter().any(|b| b.0 == new_start));
                    model.retain(|b| b.0 >= new_start);
                    start = new_start;
                }
                Op::PurgePastEnd(k) => {
                    let to = next + u64::from(k);
                    prop_assert_eq!(log.purge_prefix(to).unwrap(), to);
                    model.clear();
                    start = to;
                    next = to;
                }
                Op::Retention { now } => {
                    let size_before = log.stats().size_bytes;
                    if let Some(new_start) = log.apply_retention(now).unwrap() {
                        prop_assert!(new_start > start && new_start <= next);
                        // Only old batches went, or the log was over its size limit.
                        let gone: Vec<_> = model.iter().filter(|b| b.0 < new_start).collect();
                        prop_assert!(size_before > 6000 || gone.iter().all(|b| b.3 < now - 500));
                        model.retain(|b| b.0 >= new_start);
                        start = new_start;
                    }
                }
                Op::Reopen => {
                    drop(log);
                    log = open(dir.path(), &cfg);
                }
            }
            check(&log, &model, start, next)?;
        }
        log.verify().unwrap();
    }
}
