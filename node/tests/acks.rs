//! Produce acknowledgement modes on three real `neo-node` processes (replication 3):
//! `acks=leader` answers once the leader's own log holds the batch, before any
//! follower does, so it answers with a real offset even when both followers are dead,
//! where `acks=all` times out with `NotEnoughReplicas` and the batch stays uncommitted
//! (above the high watermark). With every node up an `acks=leader` batch commits and is
//! read back at the offset it was given.
//!
//! No timing is asserted: every wait is for an outcome, bounded by a deadline.

use std::time::Duration;

mod common;
use common::{leaders_of, start_cluster, try_call_leader};

use neo_protocol::api::*;
use neo_protocol::{ClientConfig, ErrorCode, NeoClient};

const DEADLINE: Duration = Duration::from_secs(60);
/// `base_offset` of an `acks=none` answer.
const OFFSET_UNKNOWN: u64 = u64::MAX;

fn produce(tag: &str, acks: Acks, timeout_ms: u32) -> ProduceRequest {
    let mut b = qiss::batch::BatchBuilder::new();
    b.push(1, None, &[], tag.as_bytes()).expect("push");
    ProduceRequest {
        topic: "acks".into(),
        partition: 0,
        acks,
        timeout_ms,
        producer: None,
        records: b.build().expect("build"),
    }
}

/// The committed value at `offset`, if the partition has committed that far.
async fn committed_at(addrs: &[String], offset: u64) -> (Option<String>, u64) {
    let req = FetchRequest {
        topic: "acks".into(),
        partition: 0,
        offset,
        bytes_max: 1 << 20,
        wait_ms_max: 0,
        bytes_min: 1,
        isolation: Isolation::Committed,
    };
    let r: FetchResponse = try_call_leader(addrs, 0, "fetch", &req, DEADLINE)
        .await
        .expect("fetch");
    for b in qiss::batch::split_batches(r.batches) {
        let b = qiss::batch::RecordBatch::new(b.expect("batch")).expect("valid");
        for rec in b.records() {
            if rec.offset() == offset && !b.is_control() {
                return (
                    Some(String::from_utf8_lossy(rec.value()).into_owned()),
                    r.high_watermark,
                );
            }
        }
    }
    (None, r.high_watermark)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_leader_answers_from_the_leaders_log_alone() {
    let tmp = tempfile::tempdir().expect("tmp");
    // Leader balancing off: the test picks the leader and keeps it.
    let (mut procs, _, addrs) = start_cluster(tmp.path(), 3, |_| {
        vec!["--leader-balance-ms".into(), "0".into()]
    });
    let create = CreateTopicRequest {
        name: "acks".into(),
        partitions: 1,
        replication_factor: 3,
        configs: vec![],
    };
    let _: CreateTopicResponse = try_call_leader(&addrs, 0, "create_topic", &create, DEADLINE)
        .await
        .expect("create");

    // Everyone up: an acks=leader batch gets an offset and commits there.
    let r: ProduceResponse = try_call_leader(
        &addrs,
        0,
        "produce",
        &produce("up", Acks::Leader, 10_000),
        DEADLINE,
    )
    .await
    .expect("acks=leader");
    assert_ne!(r.base_offset, OFFSET_UNKNOWN);
    let up = r.base_offset;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if committed_at(&addrs, up).await.0.as_deref() == Some("up") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the acks=leader batch never committed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Kill both followers of the partition.
    let leader = loop {
        if let Some(p) = leaders_of(&procs, "acks", 0).await.last() {
            break p.id;
        }
        assert!(tokio::time::Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let leader_addr = procs[(leader - 1) as usize].client.clone();
    let c = NeoClient::connect(leader_addr.clone(), ClientConfig::default())
        .await
        .expect("connect");
    for p in procs.iter_mut().filter(|p| p.id != leader) {
        p.kill9();
    }

    // At once (before the leader notices, a lease after its followers' last answer, that
    // it lost its quorum and refuses writes): acks=leader answers from the leader's log
    // alone, with a real offset that is not committed (it is above the high watermark).
    let r: ProduceResponse = c
        .call(
            BROKER_SERVICE,
            "produce",
            &produce("alone", Acks::Leader, 10_000),
        )
        .await
        .expect("acks=leader without followers");
    assert_ne!(r.base_offset, OFFSET_UNKNOWN);
    assert_eq!(r.record_count, 1);
    let (value, high_watermark) = committed_at(std::slice::from_ref(&leader_addr), up).await;
    assert_eq!(value.as_deref(), Some("up"));
    assert!(
        high_watermark <= r.base_offset,
        "acked at {} but the high watermark is {high_watermark}",
        r.base_offset
    );
    // acks=all cannot commit without a follower: NotEnoughReplicas at its timeout, or
    // NotLeader (no hint) once the leader knows it lost its quorum.
    match c
        .call::<_, ProduceResponse>(BROKER_SERVICE, "produce", &produce("all", Acks::All, 1_000))
        .await
    {
        Err(neo_protocol::Error::Rpc(e)) => assert!(
            matches!(
                e.error_code(),
                Some(ErrorCode::NotEnoughReplicas | ErrorCode::NotLeader)
            ) && e.leader_hint().is_none(),
            "{e}"
        ),
        other => panic!("acks=all without followers: {other:?}"),
    }
}
