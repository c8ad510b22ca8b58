//! Retention on a real (single-replica) partition group: `apply_retention` plans the
//! cut on segment boundaries, purges through openraft, and leaves everything above the
//! cut readable.

use std::time::Duration;

use bytes::Bytes;
use neo_raft::NodeStore;

const DEADLINE: Duration = Duration::from_secs(30);

/// A one-node group never sends anything.
mod common;
use common::{lead_alone, open_partition};

fn batch(ts: i64, seed: u8) -> Bytes {
    let mut b = qiss::batch::BatchBuilder::new();
    for _ in 0..2 {
        b.push(ts, Some(b"k"), &[], &[seed; 500]).expect("push");
    }
    Bytes::from(b.build().expect("build").to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_retention_purges_sealed_segments_below_the_applied_index() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = NodeStore::open(dir.path())
        .expect("store")
        .with_segment_bytes(4096);
    let g = open_partition(&store, 1).await;
    lead_alone(&g, DEADLINE).await;

    // Nothing stored yet (one blank entry): nothing is due.
    assert_eq!(
        g.apply_retention(Some(1), Some(1), i64::MAX, DEADLINE)
            .await
            .expect("retention"),
        None
    );

    let mut offsets = Vec::new();
    for i in 0..40u8 {
        // Old timestamps for the first 20 batches, recent ones after.
        let ts = if i < 20 { 1_000 } else { 1_000_000 };
        let (base, n) = g
            .propose_records(valid(batch(ts, i)))
            .await
            .expect("propose");
        assert_eq!(n, 2);
        offsets.push(base);
    }
    let hw = g.applied().next_offset;
    let size_before = g.log_size_bytes();
    assert_eq!(g.log_offsets().0, 0);

    // No limits: nothing. Limits not reached: nothing.
    assert_eq!(
        g.apply_retention(None, None, i64::MAX, DEADLINE)
            .await
            .expect("retention"),
        None
    );
    assert_eq!(
        g.apply_retention(Some(1_000_000_000), Some(u64::MAX), 2_000_000, DEADLINE)
            .await
            .expect("retention"),
        None
    );

    // By age: at t = 500 000 with 1000 ms, only the first 20 batches (ts 1 000) are
    // old; whole sealed segments of them go, nothing recent does.
    let upto = g
        .apply_retention(Some(1_000), None, 500_000, DEADLINE)
        .await
        .expect("retention")
        .expect("something is due");
    g.wait_until(DEADLINE, "purge", |m| m.purged_index >= Some(upto))
        .await
        .expect("purged");
    let start = g.log_offsets().0;
    assert!(start > 0, "the log start moved");
    assert!(
        start <= offsets[20],
        "recent batches are kept: start {start}, first recent {}",
        offsets[20]
    );
    assert!(g.log_size_bytes() < size_before);
    // Done once: the same plan again has nothing new.
    assert_eq!(
        g.apply_retention(Some(1_000), None, 500_000, DEADLINE)
            .await
            .expect("retention"),
        None
    );

    // By size: keep at most 5 000 bytes; the active segment always stays.
    let upto = g
        .apply_retention(None, Some(5_000), 0, DEADLINE)
        .await
        .expect("retention")
        .expect("something is due");
    g.wait_until(DEADLINE, "purge", |m| m.purged_index >= Some(upto))
        .await
        .expect("purged");
    let (start2, end) = g.log_offsets();
    assert!(start2 > start, "the log start moved again");
    assert!(g.log_size_bytes() <= 5_000 + 4096, "{}", g.log_size_bytes());
    assert_eq!(
        g.applied().next_offset,
        hw,
        "the high watermark is unchanged"
    );
    assert_eq!(end, hw);
    // Data above the start is intact and readable; a batch starts exactly there.
    let (bytes, _) = g.read_log(start2, 1 << 20).await.expect("read");
    let h = qiss::batch::BatchHeader::parse(&bytes).expect("header");
    assert_eq!(h.base_offset, start2);
    // Writes go on after a purge.
    let (base, _) = g
        .propose_records(valid(batch(2_000_000, 99)))
        .await
        .expect("propose");
    assert_eq!(base, hw);
    g.shutdown().await.expect("shutdown");
}

/// The proof a broker makes on receipt; raft takes nothing less.
fn valid(batch: bytes::Bytes) -> qiss::batch::ValidatedBatch {
    qiss::batch::ValidatedBatch::validate(batch, &qiss::batch::BatchLimits::DEFAULT)
        .expect("valid batch")
}
