//! Consumer groups through the [`Broker`] facade, without sockets: membership, revoke
//! before assign, member fencing, committed offsets through Raft, the typed errors and
//! limits, eviction, static members, deletion and a restart.
//!
//! No timing is asserted; waits are bounded only to turn a hang into a failure.

use std::collections::BTreeSet;
use std::time::Duration;

use neo_broker::Embedded;
use neo_broker::groups::state::{GROUP_MEMBERS_MAX, GROUP_NAME_LEN_MAX};
use neo_broker::partition::offsets::OFFSET_METADATA_LEN_MAX;
use neo_protocol::ErrorCode;
use neo_protocol::api::{
    Acks, CommitOffsetsRequest, DeleteGroupRequest, DescribeGroupRequest, FetchOffsetsRequest,
    FindCoordinatorRequest, GroupHeartbeatRequest, GroupHeartbeatResponse, JoinGroupRequest,
    JoinGroupResponse, LeaveGroupRequest, ListGroupsRequest, ListOffsetsRequest, OffsetSpec,
    TopicPartitions,
};

mod common;
use common::*;

type Owned = BTreeSet<(String, u32)>;

fn join_req(group: &str, topics: &[&str], instance: Option<&str>) -> JoinGroupRequest {
    JoinGroupRequest {
        group: group.into(),
        instance_id: instance.map(str::to_string),
        client_id: "tests".into(),
        topics: topics.iter().map(|t| t.to_string()).collect(),
        session_timeout_ms: 0,
    }
}

fn owned(wire: &[TopicPartitions]) -> Owned {
    wire.iter()
        .flat_map(|tp| tp.partitions.iter().map(|p| (tp.topic.clone(), *p)))
        .collect()
}

fn wire(owned: &Owned) -> Vec<TopicPartitions> {
    let mut out: Vec<TopicPartitions> = Vec::new();
    for (t, p) in owned {
        match out.last_mut() {
            Some(last) if &last.topic == t => last.partitions.push(*p),
            _ => out.push(TopicPartitions {
                topic: t.clone(),
                partitions: vec![*p],
            }),
        }
    }
    out
}

/// A member as the test drives it: what it owns and its epoch.
struct Member {
    id: String,
    epoch: u64,
    owned: Owned,
}

impl Member {
    fn joined(r: JoinGroupResponse) -> Member {
        Member {
            id: r.member_id,
            epoch: r.member_epoch,
            owned: owned(&r.assignment),
        }
    }

    fn heartbeat(&self, group: &str, wait_ms: u32) -> GroupHeartbeatRequest {
        GroupHeartbeatRequest {
            group: group.into(),
            member_id: self.id.clone(),
            member_epoch: self.epoch,
            owned: wire(&self.owned),
            topics: None,
            wait_ms,
        }
    }

    /// One heartbeat; the member then owns what the answer says.
    async fn beat(&mut self, e: &Embedded, group: &str) -> GroupHeartbeatResponse {
        let r = e
            .broker()
            .heartbeat_group(&ctx(), self.heartbeat(group, 50))
            .await
            .expect("heartbeat");
        self.epoch = r.member_epoch;
        self.owned = owned(&r.assignment);
        r
    }

    fn commit(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        offset: u64,
    ) -> CommitOffsetsRequest {
        CommitOffsetsRequest {
            group: group.into(),
            member_id: Some(self.id.clone()),
            member_epoch: self.epoch,
            topic: topic.into(),
            partition,
            offset,
            metadata: String::new(),
        }
    }
}

fn admin_commit(group: &str, topic: &str, partition: u32, offset: u64) -> CommitOffsetsRequest {
    CommitOffsetsRequest {
        group: group.into(),
        member_id: None,
        member_epoch: 0,
        topic: topic.into(),
        partition,
        offset,
        metadata: "reset".into(),
    }
}

fn admin_fetch(group: &str, topic: &str, partition: u32) -> FetchOffsetsRequest {
    FetchOffsetsRequest {
        group: group.into(),
        topic: topic.into(),
        partition,
        member_id: None,
        member_epoch: 0,
    }
}

async fn fill(e: &Embedded, topic: &str, partition: u32, n: usize) {
    let values: Vec<String> = (0..n).map(|i| format!("v{i}")).collect();
    let refs: Vec<&str> = values.iter().map(String::as_str).collect();
    e.broker()
        .produce(
            &ctx(),
            produce_req(topic, partition, Acks::All, batch(&refs, None)),
        )
        .await
        .expect("produce");
}

/// Heartbeats every member until none has news, checking after every answer that no
/// partition has two owners.
async fn settle(e: &Embedded, group: &str, members: &mut [Member]) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let mut news = false;
        for i in 0..members.len() {
            let before = (members[i].epoch, members[i].owned.clone());
            members[i].beat(e, group).await;
            news |= before != (members[i].epoch, members[i].owned.clone());
            let mut seen = Owned::new();
            for m in members.iter() {
                for tp in &m.owned {
                    assert!(seen.insert(tp.clone()), "{tp:?} has two owners");
                }
            }
        }
        if !news {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no stable assignment"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_share_partitions_revoke_before_assign_and_commit_through_raft() {
    let dir = tempfile::tempdir().unwrap();
    let e = start(dir.path()).await;
    let b = e.broker();
    let c = ctx();
    b.create_topic(&c, create("orders", 4)).await.unwrap();
    for p in 0..4 {
        fill(&e, "orders", p, 10).await;
    }

    let coord = b
        .find_coordinator(&c, FindCoordinatorRequest { group: "g".into() })
        .await
        .unwrap();
    assert_eq!(coord.node_id, neo_broker::EMBEDDED_NODE_ID);

    let m1 = Member::joined(
        b.join_group(&c, join_req("g", &["orders"], None))
            .await
            .unwrap(),
    );
    assert_eq!(m1.owned.len(), 4, "a lone member owns every partition");
    b.commit_offsets(&c, m1.commit("g", "orders", 0, 7))
        .await
        .unwrap();

    // A second member: m1 is told to give two up, m2 gets them only after m1 has.
    let m2 = Member::joined(
        b.join_group(&c, join_req("g", &["orders"], None))
            .await
            .unwrap(),
    );
    assert!(m2.owned.is_empty(), "nothing is free before m1 revokes");
    let old_epoch = m1.epoch;
    let mut members = [m1, m2];
    settle(&e, "g", &mut members).await;
    let [m1, m2] = &mut members;
    assert_eq!((m1.owned.len(), m2.owned.len()), (2, 2));
    assert!(m2.epoch > old_epoch, "a gain gets a fresh epoch");

    // m2 takes over a partition m1 committed: fetch as a member fences the partition
    // and answers m1's commit.
    let p = m2.owned.iter().next().unwrap().1;
    let taken = b
        .fetch_offsets(
            &c,
            FetchOffsetsRequest {
                group: "g".into(),
                topic: "orders".into(),
                partition: p,
                member_id: Some(m2.id.clone()),
                member_epoch: m2.epoch,
            },
        )
        .await
        .unwrap();
    assert_eq!(taken.log_end_offset, 10);
    assert_eq!(taken.offset, if p == 0 { Some(7) } else { None });
    b.commit_offsets(&c, m2.commit("g", "orders", p, 9))
        .await
        .unwrap();

    // m1 no longer holds p: its commit is fenced, and the offset stays m2's.
    let fenced = b.commit_offsets(&c, m1.commit("g", "orders", p, 3)).await;
    assert_eq!(code(fenced), ErrorCode::FencedMember);
    let read = b
        .fetch_offsets(&c, admin_fetch("g", "orders", p))
        .await
        .unwrap();
    assert_eq!(read.offset, Some(9));

    // A heartbeat with an epoch the group never gave is fenced.
    let mut stale = m1.heartbeat("g", 0);
    stale.member_epoch = m1.epoch + 100;
    assert_eq!(
        code(b.heartbeat_group(&c, stale).await),
        ErrorCode::FencedMember
    );

    // Describe and list see both members and the split.
    let d = b
        .describe_group(&c, DescribeGroupRequest { group: "g".into() })
        .await
        .unwrap();
    assert_eq!(d.members.len(), 2);
    assert_eq!(d.state, "stable");
    let listed = b.list_groups(&c, ListGroupsRequest {}).await.unwrap();
    assert_eq!(listed.groups.len(), 1);
    assert_eq!(listed.groups[0].members, 2);

    // m1 leaves: m2 gets everything; m1 is fenced from then on.
    b.leave_group(
        &c,
        LeaveGroupRequest {
            group: "g".into(),
            member_id: m1.id.clone(),
            member_epoch: m1.epoch,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        code(b.heartbeat_group(&c, m1.heartbeat("g", 0)).await),
        ErrorCode::FencedMember
    );
    let mut rest = [Member {
        id: m2.id.clone(),
        epoch: m2.epoch,
        owned: m2.owned.clone(),
    }];
    settle(&e, "g", &mut rest).await;
    assert_eq!(rest[0].owned.len(), 4);
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_group_requests_get_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let e = start(dir.path()).await;
    let b = e.broker();
    let c = ctx();
    b.create_topic(&c, create("t", 1)).await.unwrap();
    fill(&e, "t", 0, 5).await;

    let unknown_topic = b.join_group(&c, join_req("g", &["nope"], None)).await;
    assert_eq!(code(unknown_topic), ErrorCode::UnknownTopic);
    let empty_name = b.join_group(&c, join_req("", &["t"], None)).await;
    assert_eq!(code(empty_name), ErrorCode::InvalidArgument);
    let long_name = "g".repeat(GROUP_NAME_LEN_MAX + 1);
    let too_long = b.join_group(&c, join_req(&long_name, &["t"], None)).await;
    assert_eq!(code(too_long), ErrorCode::InvalidArgument);
    for session in [1, 999, 300_001, u32::MAX] {
        let mut r = join_req("g", &["t"], None);
        r.session_timeout_ms = session;
        assert_eq!(
            code(b.join_group(&c, r).await),
            ErrorCode::InvalidArgument,
            "session timeout {session}"
        );
    }

    // Commits to a group that does not exist, and reads of one.
    assert_eq!(
        code(b.commit_offsets(&c, admin_commit("none", "t", 0, 1)).await),
        ErrorCode::UnknownGroup
    );
    assert_eq!(
        code(
            b.describe_group(
                &c,
                DescribeGroupRequest {
                    group: "none".into()
                }
            )
            .await
        ),
        ErrorCode::UnknownGroup
    );
    assert_eq!(
        code(
            b.delete_group(
                &c,
                DeleteGroupRequest {
                    group: "none".into()
                }
            )
            .await
        ),
        ErrorCode::UnknownGroup
    );

    let m = Member::joined(b.join_group(&c, join_req("g", &["t"], None)).await.unwrap());
    // Beyond the log end, any absurd offset, oversized metadata, unknown partitions.
    for offset in [6, u64::MAX] {
        assert_eq!(
            code(b.commit_offsets(&c, m.commit("g", "t", 0, offset)).await),
            ErrorCode::OffsetOutOfRange
        );
    }
    let mut big = m.commit("g", "t", 0, 1);
    big.metadata = "m".repeat(OFFSET_METADATA_LEN_MAX + 1);
    assert_eq!(
        code(b.commit_offsets(&c, big).await),
        ErrorCode::InvalidArgument
    );
    let nowhere = b.commit_offsets(&c, m.commit("g", "t", 7, 1)).await;
    assert_eq!(code(nowhere), ErrorCode::UnknownPartition);
    // Admin commits and deletion need an empty group.
    assert_eq!(
        code(b.commit_offsets(&c, admin_commit("g", "t", 0, 1)).await),
        ErrorCode::GroupNotEmpty
    );
    assert_eq!(
        code(
            b.delete_group(&c, DeleteGroupRequest { group: "g".into() })
                .await
        ),
        ErrorCode::GroupNotEmpty
    );
    // None of it changed the offset: still none committed.
    let read = b.fetch_offsets(&c, admin_fetch("g", "t", 0)).await.unwrap();
    assert_eq!(read.offset, None);
    b.commit_offsets(&c, m.commit("g", "t", 0, 5))
        .await
        .unwrap();
    let read = b.fetch_offsets(&c, admin_fetch("g", "t", 0)).await.unwrap();
    assert_eq!((read.offset, read.log_end_offset), (Some(5), 5));
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_joins_at_once_fill_the_group_to_its_limit() {
    let dir = tempfile::tempdir().unwrap();
    let e = start(dir.path()).await;
    let b = e.broker().clone();
    b.create_topic(&ctx(), create("t", 8)).await.unwrap();
    let mut joins = tokio::task::JoinSet::new();
    for _ in 0..10_000 {
        let b = b.clone();
        joins.spawn(async move {
            let mut r = join_req("crowd", &["t"], None);
            r.session_timeout_ms = 300_000;
            b.join_group(&ctx(), r).await
        });
    }
    let mut joined = 0;
    while let Some(j) = joins.join_next().await {
        match j.expect("no join panics") {
            Ok(_) => joined += 1,
            Err(e) => assert_eq!(e.error_code(), Some(ErrorCode::InvalidArgument), "{e}"),
        }
    }
    assert_eq!(joined, GROUP_MEMBERS_MAX);
    let d = b
        .describe_group(
            &ctx(),
            DescribeGroupRequest {
                group: "crowd".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(d.members.len(), GROUP_MEMBERS_MAX);
    let owners: usize = d.members.iter().map(|m| owned(&m.assignment).len()).sum();
    assert_eq!(owners, 8, "each of the 8 partitions has one owner");
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_members_are_evicted_and_static_members_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let e = start(dir.path()).await;
    let b = e.broker();
    let c = ctx();
    b.create_topic(&c, create("t", 4)).await.unwrap();

    // A static member and another one share the topic.
    let mut stat = join_req("g", &["t"], Some("worker-1"));
    stat.session_timeout_ms = 30_000;
    let mut members = [
        Member::joined(b.join_group(&c, stat.clone()).await.unwrap()),
        Member::joined(b.join_group(&c, join_req("g", &["t"], None)).await.unwrap()),
    ];
    settle(&e, "g", &mut members).await;
    let [s, other] = &members;
    let (other_epoch, other_owned) = (other.epoch, other.owned.clone());
    // The static member restarts (it rejoins without leaving): its partitions come
    // back to it, nobody else's move.
    let back = Member::joined(b.join_group(&c, stat).await.unwrap());
    assert_eq!(back.owned, s.owned);
    let d = b
        .describe_group(&c, DescribeGroupRequest { group: "g".into() })
        .await
        .unwrap();
    assert_eq!(d.members.len(), 2);
    let o = d.members.iter().find(|m| m.member_id == other.id).unwrap();
    assert_eq!(
        (o.member_epoch, owned(&o.assignment)),
        (other_epoch, other_owned)
    );

    // A member with a 1 s session that never heartbeats is evicted.
    let mut short = join_req("quiet", &["t"], None);
    short.session_timeout_ms = 1_000;
    b.join_group(&c, short).await.unwrap();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let d = b
            .describe_group(
                &c,
                DescribeGroupRequest {
                    group: "quiet".into(),
                },
            )
            .await
            .unwrap();
        if d.members.is_empty() {
            assert_eq!(d.state, "empty");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never evicted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_survive_a_restart_and_go_with_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let e = start(dir.path()).await;
    let c = ctx();
    e.broker().create_topic(&c, create("t", 2)).await.unwrap();
    fill(&e, "t", 0, 20).await;
    fill(&e, "t", 1, 20).await;
    let m = Member::joined(
        e.broker()
            .join_group(&c, join_req("g", &["t"], None))
            .await
            .unwrap(),
    );
    e.broker()
        .commit_offsets(&c, m.commit("g", "t", 0, 12))
        .await
        .unwrap();
    e.broker()
        .leave_group(
            &c,
            LeaveGroupRequest {
                group: "g".into(),
                member_id: m.id.clone(),
                member_epoch: m.epoch,
            },
        )
        .await
        .unwrap();
    // An empty group takes admin commits (reset-offsets).
    e.broker()
        .commit_offsets(&c, admin_commit("g", "t", 1, 4))
        .await
        .unwrap();
    e.shutdown().await;

    let e = start(dir.path()).await;
    let b = e.broker();
    for (p, want) in [(0, 12), (1, 4)] {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        let read = loop {
            // The partition reopens and elects itself: NotLeader until then.
            match b.fetch_offsets(&c, admin_fetch("g", "t", p)).await {
                Ok(r) => break r,
                Err(err) if err.error_code() == Some(ErrorCode::NotLeader) => {
                    assert!(tokio::time::Instant::now() < deadline, "no leader: {err:?}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(err) => panic!("fetch offsets after restart: {err:?}"),
            }
        };
        assert_eq!(read.offset, Some(want), "partition {p} after the restart");
    }
    let spec = |spec| ListOffsetsRequest {
        topic: "t".into(),
        partition: 0,
        spec,
    };
    assert_eq!(
        b.list_offsets(&c, spec(OffsetSpec::Earliest))
            .await
            .unwrap()
            .offset,
        0
    );
    assert_eq!(
        b.list_offsets(&c, spec(OffsetSpec::Latest))
            .await
            .unwrap()
            .offset,
        20
    );
    let future = OffsetSpec::Timestamp(i64::MAX);
    assert_eq!(b.list_offsets(&c, spec(future)).await.unwrap().offset, 20);
    assert_eq!(
        b.list_offsets(&c, spec(OffsetSpec::Timestamp(0)))
            .await
            .unwrap()
            .offset,
        0
    );

    // Deleted, then created again under the same name: the old offsets are gone.
    b.delete_group(&c, DeleteGroupRequest { group: "g".into() })
        .await
        .unwrap();
    assert_eq!(
        code(b.fetch_offsets(&c, admin_fetch("g", "t", 0)).await),
        ErrorCode::UnknownGroup
    );
    let m = Member::joined(b.join_group(&c, join_req("g", &["t"], None)).await.unwrap());
    for p in 0..2 {
        let mut r = admin_fetch("g", "t", p);
        r.member_id = Some(m.id.clone());
        r.member_epoch = m.epoch;
        assert_eq!(b.fetch_offsets(&c, r).await.unwrap().offset, None);
    }
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_group_expires_with_its_offsets_after_the_retention() {
    let dir = tempfile::tempdir().unwrap();
    let limits = neo_broker::BrokerLimits {
        offsets_retention_ms: 1_000,
        ..neo_broker::BrokerLimits::default()
    };
    let e = Embedded::start(dir.path(), limits).await.unwrap();
    let b = e.broker();
    let c = ctx();
    b.create_topic(&c, create("t", 1)).await.unwrap();
    fill(&e, "t", 0, 3).await;
    let m = Member::joined(b.join_group(&c, join_req("g", &["t"], None)).await.unwrap());
    b.commit_offsets(&c, m.commit("g", "t", 0, 2))
        .await
        .unwrap();
    // A group with a member never expires, however long it lives.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let d = b
        .describe_group(&c, DescribeGroupRequest { group: "g".into() })
        .await
        .unwrap();
    assert_eq!(d.members.len(), 1);
    let mut keep = [m];
    settle(&e, "g", &mut keep).await;
    b.leave_group(
        &c,
        LeaveGroupRequest {
            group: "g".into(),
            member_id: keep[0].id.clone(),
            member_epoch: keep[0].epoch,
        },
    )
    .await
    .unwrap();
    // Empty for longer than the retention: the group goes, and its offsets with it.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let listed = b.list_groups(&c, ListGroupsRequest {}).await.unwrap();
        if listed.groups.is_empty() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        code(b.fetch_offsets(&c, admin_fetch("g", "t", 0)).await),
        ErrorCode::UnknownGroup
    );
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while b
        .partitions()
        .iter()
        .any(|p| p.with_offsets(|t| !t.groups.is_empty()))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "offsets never dropped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    e.shutdown().await;
}

/// Member ids stay unique when the coordinator restarts and resumes its metadata term
/// (openraft's leader restore: a single node always does): a join after the restart
/// must not be refused because its id is one the previous run gave out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_ids_stay_unique_across_a_coordinator_restart() {
    let dir = tempfile::tempdir().unwrap();
    let c = ctx();
    let e = start(dir.path()).await;
    e.broker().create_topic(&c, create("t", 2)).await.unwrap();
    let first = e
        .broker()
        .join_group(&c, join_req("g", &["t"], None))
        .await
        .unwrap();
    let term_before = e.broker().meta_group().metrics().term;
    e.shutdown().await;

    let e = start(dir.path()).await;
    let term_after = e.broker().meta_group().metrics().term;
    eprintln!("metadata term {term_before} before the restart, {term_after} after");
    let second = e
        .broker()
        .join_group(&c, join_req("g", &["t"], None))
        .await
        .expect("a join after the restart");
    assert_ne!(first.member_id, second.member_id);
    let d = e
        .broker()
        .describe_group(&c, DescribeGroupRequest { group: "g".into() })
        .await
        .unwrap();
    assert_eq!(d.members.len(), 2, "{d:?}");
    e.shutdown().await;
}
