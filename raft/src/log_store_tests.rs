//! Tests of the log store: openraft's conformance suite (plain and encrypted at
//! rest), retention cuts, reopen, and the sparse index under reads, truncation and purge.

use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};

use super::*;
use crate::state_machine::GroupStateMachine;

/// Builds a fresh log store (real segment log + sled, in a temporary directory) and a
/// partition state machine for each of openraft's conformance tests.
/// Builds log stores for openraft's suite; `Builder(Some(key))`: encrypted at rest.
struct Builder(Option<neo_storage::AtRestKey>);

impl StoreBuilder<NeoRaft, LogStore, GroupStateMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, GroupStateMachine), StorageError<NeoRaft>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let node = NodeStore::open(dir.path()).expect("node store");
        let anchor = OffsetAnchor::default();
        let log = LogStore::open(
            &node.group_dir(7).join("log"),
            7,
            GroupKind::Partition,
            node.meta().clone(),
            anchor.clone(),
            LogOptions {
                durability: Durability::Fsync,
                segment_bytes: SEGMENT_BYTES_MAX,
                at_rest: self.0.clone(),
            },
        )
        .expect("log store");
        let sm =
            GroupStateMachine::open(GroupKind::Partition, None, anchor, Box::new(crate::LogOnly))
                .expect("sm");
        Ok((dir, log, sm))
    }
}

/// Opens group `group`'s log under `node` (fsync durability, not encrypted).
fn open_log(node: &NodeStore, group: GroupId, segment_bytes: u64) -> Result<LogStore> {
    LogStore::open(
        &node.group_dir(group).join("log"),
        group,
        GroupKind::Partition,
        node.meta().clone(),
        OffsetAnchor::default(),
        LogOptions {
            durability: Durability::Fsync,
            segment_bytes,
            at_rest: None,
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_maps_the_planned_segment_cut_to_a_raft_index() {
    use openraft::entry::RaftEntry;
    use openraft::type_config::TypeConfigExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let node = NodeStore::open(dir.path())
        .expect("node store")
        .with_segment_bytes(SEGMENT_BYTES_MIN);
    assert_eq!(node.segment_bytes(), SEGMENT_BYTES_MIN);
    let mut log = open_log(&node, 4, node.segment_bytes()).expect("open");
    // A blank entry, then 24 batches of 3 records and ~1000 bytes, timestamps
    // 100, 200, ...: 4 batches per 4 KiB segment.
    let mut entries = vec![Entry::new_blank(LogId::new(1.into(), 0))];
    for i in 1..=24u64 {
        let b = neo_storage::testing::batch(3, i as i64 * 100, i as i64 * 100, &[7; 1000]);
        entries.push(Entry::new_normal(
            LogId::new(1.into(), i),
            crate::types::Proposal::Records(crate::types::RecordBatch::new(Bytes::from(b))),
        ));
    }
    let (tx, rx) = NeoRaft::oneshot();
    log.append(entries, IOFlushed::signal(tx))
        .await
        .expect("append");
    rx.await.expect("flush notified").expect("flushed");
    let segments = log.inner.log.stats().segments;
    assert!(segments >= 5, "the log rolled: {segments} segments");

    assert_eq!(log.retention_upto(None, None, i64::MAX), None, "no limits");
    assert_eq!(
        log.retention_upto(Some(1), None, 0),
        None,
        "nothing old yet"
    );
    assert_eq!(
        log.retention_upto(None, Some(u64::MAX), 0),
        None,
        "the log is below the size limit"
    );

    // Size 1: every sealed segment is due; the cut is the active segment's base.
    let cut = log
        .inner
        .log
        .retention_plan_for(None, Some(1), 0)
        .expect("a plan");
    let upto = log.retention_upto(None, Some(1), 0).expect("an index");
    {
        let at = |index| {
            let map = log.inner.map();
            let start = map.scan_start(index).expect("present");
            log_index::locate(&log.inner.log, start, index).expect("located")
        };
        assert_eq!(
            at(upto + 1).segment,
            cut,
            "entry {upto} is the last one below the cut"
        );
        assert!(at(upto).segment < cut);
    }
    // By age: at t = 1000 + 1, batches with timestamp < 1000 (entries 1..=9) are
    // old; the cut is a segment boundary at or below entry 10.
    let by_age = log.retention_upto(Some(1), None, 1001).expect("an index");
    assert!((1..10).contains(&by_age), "{by_age}");
    assert!(by_age < upto);

    // Purging up to it deletes exactly the planned segments.
    log.purge(LogId::new(1.into(), upto)).await.expect("purge");
    assert_eq!(log.inner.log.start_offset(), cut);
    assert_eq!(log.inner.log.stats().segments, 1);
    assert_eq!(
        log.retention_upto(None, Some(1), 0),
        None,
        "nothing left to cut"
    );
    let st = log.get_log_state().await.expect("state");
    assert_eq!(st.last_log_id, Some(LogId::new(1.into(), 24)));
    let got = log.try_get_log_entries(upto + 1..25).await.expect("read");
    assert_eq!(got.len() as u64, 24 - upto);
}

/// Reads, truncations, purges and a reopen at entries between anchors, across
/// segment rolls: every entry is found by scanning from its anchor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_between_sparse_anchors_are_found() {
    use openraft::entry::RaftEntry;
    use openraft::type_config::TypeConfigExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let node = NodeStore::open(dir.path())
        .expect("node store")
        .with_segment_bytes(16 * 1024);
    let open = || open_log(&node, 5, node.segment_bytes()).expect("open");
    let records = |i: u64| {
        let b = neo_storage::testing::batch(2, i as i64, i as i64, &[i as u8; 120]);
        crate::types::Proposal::Records(crate::types::RecordBatch::new(Bytes::from(b)))
    };
    // 400 entries of ~200 bytes in 16 KiB segments: several segments, each with
    // entries between its anchors; a blank entry every 7th (zero-width).
    let entries: Vec<Entry> = (0..400u64)
        .map(|i| {
            let id = LogId::new((1 + i / 100).into(), i);
            if i % 7 == 0 {
                Entry::new_blank(id)
            } else {
                Entry::new_normal(id, records(i))
            }
        })
        .collect();
    let mut log = open();
    let (tx, rx) = NeoRaft::oneshot();
    log.append(entries.clone(), IOFlushed::signal(tx))
        .await
        .expect("append");
    rx.await.expect("flush notified").expect("flushed");
    assert!(log.segments() >= 4, "{} segments", log.segments());
    let anchors = log.inner.map().anchors();
    assert!(anchors < 40, "{anchors} anchors for 400 entries");

    let ids = |got: &[Entry]| got.iter().map(|e| e.log_id).collect::<Vec<_>>();
    let want = |r: std::ops::Range<u64>| ids(&entries[r.start as usize..r.end as usize]);
    for start in [0, 1, 31, 32, 33, 77, 150, 255, 398, 399] {
        let got = log
            .try_get_log_entries(start..(start + 9).min(400))
            .await
            .expect("read");
        assert_eq!(ids(&got), want(start..(start + 9).min(400)), "from {start}");
    }

    // Truncate at an entry between anchors, append a new term's entries there.
    log.truncate_after(Some(entries[300].log_id))
        .await
        .expect("truncate");
    let st = log.get_log_state().await.expect("state");
    assert_eq!(st.last_log_id, Some(entries[300].log_id));
    let again: Vec<Entry> = (301..320u64)
        .map(|i| Entry::new_normal(LogId::new(9.into(), i), records(i)))
        .collect();
    let (tx, rx) = NeoRaft::oneshot();
    log.append(again.clone(), IOFlushed::signal(tx))
        .await
        .expect("append");
    rx.await.expect("flush notified").expect("flushed");

    // Purge into the middle of a segment, then reopen: the map is rebuilt sparse.
    log.purge(entries[150].log_id).await.expect("purge");
    drop(log);
    let mut log = open();
    let st = log.get_log_state().await.expect("state");
    assert_eq!(st.last_purged_log_id, Some(entries[150].log_id));
    assert_eq!(st.last_log_id, Some(LogId::new(9.into(), 319)));
    let got = log.try_get_log_entries(0..400).await.expect("read");
    let mut expected = want(151..301);
    expected.extend(ids(&again));
    assert_eq!(ids(&got), expected);
    let got = log.try_get_log_entries(151..152).await.expect("read");
    assert_eq!(ids(&got), want(151..152));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_openraft_storage_suite() {
    Suite::test_all(Builder(None)).await.expect("storage suite");
}

/// The same suite on a log encrypted at rest: every entry read back (appends,
/// truncations, purges, reopen) must be the entry written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_openraft_storage_suite_encrypted_at_rest() {
    let key = neo_storage::AtRestKey::new([9; 32]);
    Suite::test_all(Builder(Some(key)))
        .await
        .expect("storage suite");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_rebuilds_the_index_map_from_batch_stamps() {
    use openraft::entry::RaftEntry;
    let dir = tempfile::tempdir().expect("temp dir");
    let node = NodeStore::open(dir.path()).expect("node store");
    let open = || open_log(&node, 3, SEGMENT_BYTES_MAX);
    let batch = |n: u32| {
        let b = neo_storage::testing::batch(n, 1, 1, b"payload");
        crate::types::Proposal::Records(crate::types::RecordBatch::new(Bytes::from(b)))
    };
    let entries = vec![
        Entry::new_blank(LogId::new(1.into(), 0)),
        Entry::new_normal(LogId::new(1.into(), 1), batch(5)),
        Entry::new_normal(LogId::new(2.into(), 2), batch(3)),
        Entry::new_blank(LogId::new(2.into(), 3)),
    ];
    {
        let mut log = open().expect("open");
        use openraft::type_config::TypeConfigExt;
        let (tx, rx) = NeoRaft::oneshot();
        log.append(entries.clone(), IOFlushed::signal(tx))
            .await
            .expect("append");
        rx.await.expect("flush notified").expect("flushed");
        log.purge(LogId::new(1.into(), 0)).await.expect("purge");
    }
    let mut log = open().expect("reopen");
    let st = log.get_log_state().await.expect("state");
    assert_eq!(st.last_purged_log_id, Some(LogId::new(1.into(), 0)));
    assert_eq!(st.last_log_id, Some(LogId::new(2.into(), 3)));
    let got = log.try_get_log_entries(1..4).await.expect("read");
    assert_eq!(got.len(), 3);
    // Control entries take no offset: blank at 0, 5 records at 0..5, 3 at 5..8,
    // blank at 8.
    // The stored batches' base offsets, from their headers.
    let stored = log
        .inner
        .log
        .read_at(log.inner.log.start_pos(), 1 << 20)
        .expect("read");
    let mut offsets = Vec::new();
    let mut buf = &stored.bytes[..];
    while !buf.is_empty() {
        let h = BatchHeader::parse(buf).expect("header");
        if h.log_index >= 1 {
            offsets.push(h.base_offset);
        }
        buf = &buf[h.batch_length as usize..];
    }
    assert_eq!(offsets, vec![0, 5, 8]);
    for (g, want) in got.iter().zip(&entries[1..]) {
        assert_eq!(g.log_id, want.log_id);
    }
    match &got[0].payload {
        openraft::EntryPayload::Normal(crate::types::Proposal::Records(b)) => {
            let h = qiss::batch::check(&b.0).expect("stored batch checks");
            assert_eq!((h.base_offset, h.term, h.log_index), (0, 1, 1));
        }
        other => panic!("unexpected payload {other:?}"),
    }
    log.truncate_after(Some(LogId::new(1.into(), 1)))
        .await
        .expect("truncate");
    let st = log.get_log_state().await.expect("state");
    assert_eq!(st.last_log_id, Some(LogId::new(1.into(), 1)));
    assert_eq!(log.inner.log.next_offset(), 5);
}
