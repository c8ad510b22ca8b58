//! A produced batch's CRC is computed once on the leader: by the broker's validation on
//! receipt (`ValidatedBatch::validate`), not again by the proposal, the log store, the
//! segment log or the read-back that openraft applies from. A replica that receives a
//! batch over the network checks it on receipt (decoding the entry refuses a damaged
//! one).
//!
//! This file holds one test on purpose: it counts the process-wide CRC counter, so no
//! other test may run in its process meanwhile.

use std::time::Duration;

use bytes::Bytes;
use neo_raft::{NodeStore, Proposal, RecordBatch};
use qiss::batch::{BatchBuilder, BatchLimits, ValidatedBatch, crc_checks_total};

mod common;
use common::{lead_alone, open_partition};

const DEADLINE: Duration = Duration::from_secs(30);

fn batch(records: usize, producer: Option<i32>) -> Bytes {
    let mut b = BatchBuilder::new();
    if let Some(seq) = producer {
        b.producer(5, 0, seq);
    }
    for i in 0..records {
        b.push(1, None, &[], format!("v{i}").as_bytes())
            .expect("push");
    }
    b.build().expect("build")
}

/// CRC checks made by `f`, and its output.
async fn crcs<T>(f: impl std::future::Future<Output = T>) -> (u64, T) {
    let before = crc_checks_total();
    let out = f.await;
    (crc_checks_total() - before, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_produced_batch_is_crc_checked_once_on_the_leader() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = NodeStore::open(dir.path()).expect("store");
    let g = open_partition(&store, 1).await;
    lead_alone(&g, DEADLINE).await;
    // The term's blank entry and the membership are applied: nothing else runs now.
    let settled = g.metrics().last_log_index;
    g.wait_until(DEADLINE, "settled", |m| m.applied_index >= settled)
        .await
        .expect("settled");

    let limits = BatchLimits::DEFAULT;
    for (mode, producer) in [
        ("all", None),
        ("leader", None),
        ("all", Some(0)),
        ("none", None),
    ] {
        let bytes = batch(4, producer);
        let applied_before = g.applied().next_offset;
        let (n, ()) = crcs(async {
            let v = ValidatedBatch::validate(bytes, &limits).expect("valid");
            match mode {
                "all" => {
                    g.propose_records(v).await.expect("acks=all");
                }
                "leader" => {
                    g.propose_records_leader_ack(v).await.expect("acks=leader");
                }
                _ => g.propose_records_ff(v).await.expect("acks=none"),
            }
            // Until applied: openraft applies by reading the entry back from the log.
            g.wait_until(DEADLINE, "applied", |_| {
                g.applied().next_offset >= applied_before + 4
            })
            .await
            .expect("applied");
        })
        .await;
        assert_eq!(
            n, 1,
            "acks={mode}, producer {producer:?}: CRC checks of one produce"
        );
    }

    // A replica receiving an entry over the network decodes it: that is its check on
    // receipt, and a damaged batch is refused there.
    let good = batch(2, None);
    let mut damaged = good.to_vec();
    let last = damaged.len() - 1;
    damaged[last] ^= 0x40;
    let encode = |b: Vec<u8>| qiss::to_vec(&Proposal::Records(RecordBatch::new(Bytes::from(b))));
    let (n, ok) =
        crcs(async { qiss::from_slice::<Proposal>(&encode(good.to_vec()).unwrap()) }).await;
    assert!(ok.is_ok());
    assert_eq!(n, 1, "receipt checks the CRC once");
    assert!(qiss::from_slice::<Proposal>(&encode(damaged).unwrap()).is_err());
}
