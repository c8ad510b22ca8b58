//! The broker's API messages: plain serde data types carried as Qiss bodies over Neo
//! RPC. The broker (`neo-node`) serves them and `neo-client` calls them; this crate
//! only fixes their shape.
//!
//! All broker methods live in one service, [`BROKER_SERVICE`]. The node must register
//! them in the order of [`BROKER_METHODS`], so that their wire ids (position + 1) are
//! stable across nodes and releases; a method is only ever appended.
//!
//! Errors come back as error frames with the broker codes of [`crate::ErrorCode`]
//! (`NotLeader` with the leader hint, `UnknownTopic`, ...).

pub mod admin;
pub mod fetch;
pub mod groups;
pub mod produce;
pub mod queues;
pub mod security;

pub use admin::*;
pub use fetch::*;
pub use groups::*;
pub use produce::*;
pub use queues::*;
pub use security::*;

/// Name of the service every broker method belongs to.
pub const BROKER_SERVICE: &str = "neo.broker";

/// Every broker method with its wire id, request and response types. Registration order
/// = id order.
pub const BROKER_METHODS: &[(u16, &str, &str, &str)] = &[
    (1, "produce", "ProduceRequest", "ProduceResponse"),
    (2, "fetch", "FetchRequest", "FetchResponse"),
    (3, "metadata", "MetadataRequest", "MetadataResponse"),
    (
        4,
        "create_topic",
        "CreateTopicRequest",
        "CreateTopicResponse",
    ),
    (
        5,
        "delete_topic",
        "DeleteTopicRequest",
        "DeleteTopicResponse",
    ),
    (6, "list_topics", "ListTopicsRequest", "ListTopicsResponse"),
    (
        7,
        "describe_topic",
        "DescribeTopicRequest",
        "TopicDescription",
    ),
    (8, "join_group", "JoinGroupRequest", "JoinGroupResponse"),
    (
        9,
        "heartbeat_group",
        "GroupHeartbeatRequest",
        "GroupHeartbeatResponse",
    ),
    (10, "leave_group", "LeaveGroupRequest", "LeaveGroupResponse"),
    (
        11,
        "commit_offsets",
        "CommitOffsetsRequest",
        "CommitOffsetsResponse",
    ),
    (
        12,
        "fetch_offsets",
        "FetchOffsetsRequest",
        "FetchOffsetsResponse",
    ),
    (
        13,
        "queue_receive",
        "QueueReceiveRequest",
        "QueueReceiveResponse",
    ),
    (14, "queue_ack", "QueueAckRequest", "QueueSettleResponse"),
    (15, "queue_nack", "QueueNackRequest", "QueueSettleResponse"),
    (
        16,
        "find_coordinator",
        "FindCoordinatorRequest",
        "FindCoordinatorResponse",
    ),
    (17, "list_groups", "ListGroupsRequest", "ListGroupsResponse"),
    (
        18,
        "describe_group",
        "DescribeGroupRequest",
        "GroupDescription",
    ),
    (
        19,
        "delete_group",
        "DeleteGroupRequest",
        "DeleteGroupResponse",
    ),
    (
        20,
        "list_offsets",
        "ListOffsetsRequest",
        "ListOffsetsResponse",
    ),
    (
        21,
        "alter_security",
        "AlterSecurityRequest",
        "AlterSecurityResponse",
    ),
    (
        22,
        "describe_security",
        "DescribeSecurityRequest",
        "SecurityDescription",
    ),
    (
        23,
        "create_queue",
        "CreateQueueRequest",
        "CreateQueueResponse",
    ),
    (
        24,
        "delete_queue",
        "DeleteQueueRequest",
        "DeleteQueueResponse",
    ),
    (25, "list_queues", "ListQueuesRequest", "ListQueuesResponse"),
    (
        26,
        "describe_queue",
        "DescribeQueueRequest",
        "QueueDescription",
    ),
    (
        27,
        "queue_extend",
        "QueueExtendRequest",
        "QueueSettleResponse",
    ),
    (28, "queue_term", "QueueTermRequest", "QueueSettleResponse"),
    (29, "purge_queue", "PurgeQueueRequest", "PurgeQueueResponse"),
];

/// The wire id of a broker method by name.
pub fn broker_method_id(name: &str) -> Option<u16> {
    BROKER_METHODS
        .iter()
        .find(|(_, n, _, _)| *n == name)
        .map(|(id, _, _, _)| *id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{Bytes, BytesMut};
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(value: T) {
        let bytes = qiss::to_vec(&value).unwrap();
        assert_eq!(qiss::from_slice::<T>(&bytes).unwrap(), value);
    }

    #[test]
    fn method_ids_are_dense_and_unique() {
        for (index, (id, name, _, _)) in BROKER_METHODS.iter().enumerate() {
            assert_eq!(*id as usize, index + 1, "{name}");
            assert_eq!(broker_method_id(name), Some(*id));
        }
    }

    #[test]
    fn every_message_round_trips() {
        round_trip(ProduceRequest {
            topic: "orders".into(),
            partition: 3,
            acks: Acks::All,
            timeout_ms: 5000,
            producer: Some(ProducerStamp {
                producer_id: 7,
                epoch: 1,
                sequence: 42,
            }),
            records: Bytes::from_static(&[0xde, 0xad, 0xbe, 0xef]),
        });
        round_trip(ProduceResponse {
            base_offset: 100,
            log_append_time_ms: Some(1),
            record_count: 3,
        });
        round_trip(FetchRequest {
            topic: "orders".into(),
            partition: 0,
            offset: 10,
            bytes_max: 1 << 20,
            wait_ms_max: 500,
            bytes_min: 1,
            isolation: Isolation::Committed,
        });
        round_trip(FetchResponse {
            high_watermark: 20,
            log_start_offset: 0,
            batches: Bytes::from_static(&[1, 2, 3]),
        });
        round_trip(MetadataRequest {
            topics: vec!["a".into()],
        });
        round_trip(MetadataResponse {
            cluster_id: "c".into(),
            brokers: vec![BrokerInfo {
                node_id: 1,
                address: "127.0.0.1:7070".into(),
                rack: None,
            }],
            controller_id: Some(1),
            topics: vec![TopicMetadata {
                name: "a".into(),
                partitions: vec![PartitionMetadata {
                    partition: 0,
                    leader: Some(1),
                    replicas: vec![1, 2, 3],
                    in_sync: vec![1, 2],
                    leader_epoch: 4,
                }],
            }],
        });
        round_trip(CreateTopicRequest {
            name: "a".into(),
            partitions: 3,
            replication_factor: 3,
            configs: vec![("retention.ms".into(), "1000".into())],
        });
        round_trip(CreateTopicResponse { name: "a".into() });
        round_trip(DeleteTopicRequest { name: "a".into() });
        round_trip(DeleteTopicResponse {});
        round_trip(ListTopicsRequest {
            include_internal: false,
        });
        round_trip(ListTopicsResponse {
            topics: vec!["a".into()],
        });
        round_trip(DescribeTopicRequest { name: "a".into() });
        round_trip(TopicDescription {
            name: "a".into(),
            partitions: vec![],
            configs: vec![],
        });
        let tp = || TopicPartitions {
            topic: "a".into(),
            partitions: vec![0, 1],
        };
        round_trip(FindCoordinatorRequest { group: "g".into() });
        round_trip(FindCoordinatorResponse {
            node_id: 2,
            address: "127.0.0.1:7070".into(),
        });
        round_trip(JoinGroupRequest {
            group: "g".into(),
            instance_id: Some("i".into()),
            client_id: "c".into(),
            topics: vec!["a".into()],
            session_timeout_ms: 10_000,
        });
        round_trip(JoinGroupResponse {
            member_id: "m".into(),
            member_epoch: 2,
            assignment: vec![tp()],
            heartbeat_interval_ms: 1000,
            session_timeout_ms: 10_000,
        });
        round_trip(GroupHeartbeatRequest {
            group: "g".into(),
            member_id: "m".into(),
            member_epoch: 2,
            owned: vec![tp()],
            topics: Some(vec!["a".into()]),
            wait_ms: 3000,
        });
        round_trip(GroupHeartbeatResponse {
            member_epoch: 3,
            assignment: vec![],
            heartbeat_interval_ms: 1000,
        });
        round_trip(LeaveGroupRequest {
            group: "g".into(),
            member_id: "m".into(),
            member_epoch: 3,
        });
        round_trip(LeaveGroupResponse {});
        round_trip(CommitOffsetsRequest {
            group: "g".into(),
            member_id: Some("m".into()),
            member_epoch: 2,
            topic: "a".into(),
            partition: 0,
            offset: 5,
            metadata: "x".into(),
        });
        round_trip(CommitOffsetsResponse {});
        round_trip(FetchOffsetsRequest {
            group: "g".into(),
            topic: "a".into(),
            partition: 0,
            member_id: None,
            member_epoch: 0,
        });
        round_trip(FetchOffsetsResponse {
            offset: Some(5),
            metadata: String::new(),
            commit_time_ms: 1,
            log_start_offset: 0,
            log_end_offset: 9,
        });
        round_trip(ListGroupsRequest {});
        round_trip(ListGroupsResponse {
            groups: vec![GroupListing {
                name: "g".into(),
                state: "stable".into(),
                members: 1,
            }],
        });
        round_trip(DescribeGroupRequest { group: "g".into() });
        round_trip(GroupDescription {
            name: "g".into(),
            state: "stable".into(),
            group_epoch: 4,
            members: vec![MemberDescription {
                member_id: "m".into(),
                instance_id: None,
                client_id: "c".into(),
                host: "127.0.0.1:5000".into(),
                member_epoch: 4,
                topics: vec!["a".into()],
                assignment: vec![tp()],
                pending: vec![],
            }],
            topics: vec!["a".into()],
        });
        round_trip(DeleteGroupRequest { group: "g".into() });
        round_trip(DeleteGroupResponse {});
        for spec in [
            OffsetSpec::Earliest,
            OffsetSpec::Latest,
            OffsetSpec::Timestamp(-5),
        ] {
            round_trip(ListOffsetsRequest {
                topic: "a".into(),
                partition: 1,
                spec,
            });
        }
        round_trip(ListOffsetsResponse { offset: 7 });
        let receipt = Receipt {
            group: 4,
            partition: 1,
            offset: 1,
            delivery: 1,
            lease: 77,
        };
        round_trip(QueueReceiveRequest {
            queue: "q".into(),
            share_group: Some("w".into()),
            consumer: "c".into(),
            partition: None,
            messages_max: 10,
            visibility_timeout_ms: 30_000,
            wait_ms_max: 0,
        });
        round_trip(QueueReceiveResponse {
            messages: vec![QueueMessage {
                receipt,
                partition: 1,
                offset: 1,
                delivery_count: 1,
                key: None,
                value: vec![7],
                headers: vec![("h".into(), vec![1])],
                timestamp_ms: 3,
            }],
            led_partitions: vec![1],
        });
        round_trip(QueueAckRequest {
            queue: "q".into(),
            share_group: None,
            receipts: vec![receipt],
        });
        round_trip(QueueSettleResponse {
            outcomes: vec![ReceiptOutcome::Ok, ReceiptOutcome::LeaseLost],
        });
        round_trip(QueueNackRequest {
            queue: "q".into(),
            share_group: None,
            receipts: vec![receipt],
            delay_ms: Some(100),
            reason: "bad".into(),
        });
        round_trip(CreateQueueRequest {
            name: "q".into(),
            partitions: 6,
            replication_factor: 3,
            settings: QueueSettings {
                redelivery_backoff_ms: vec![100, 1000],
                ..QueueSettings::default()
            },
            dead_letter: DeadLetter::Queue("q.dead".into()),
            configs: vec![],
        });
        round_trip(QueueDescription {
            name: "q".into(),
            share_group: None,
            partitions: 2,
            settings: QueueSettings::default(),
            led: vec![QueuePartitionStats::default()],
            not_led: vec![(1, Some("h:1".into()))],
        });
    }

    #[test]
    fn produce_records_travel_unchanged() {
        // The batch bytes are a length-prefixed byte string, copied verbatim.
        let records: Vec<u8> = (0..=255).collect();
        let request = ProduceRequest {
            topic: "t".into(),
            partition: 0,
            acks: Acks::Leader,
            timeout_ms: 0,
            producer: None,
            records: Bytes::from(records.clone()),
        };
        let bytes = qiss::to_vec(&request).unwrap();
        assert!(
            bytes
                .windows(records.len())
                .any(|w| w == records.as_slice())
        );
    }

    /// Whether `inner`'s bytes lie inside the buffer `[start, start + len)`.
    fn inside(start: *const u8, len: usize, inner: &[u8]) -> bool {
        let (start, at) = (start as usize, inner.as_ptr() as usize);
        at >= start && at + inner.len() <= start + len
    }

    /// Encodes `body` as a frame into a fresh read buffer, decodes it as the server and
    /// the client do, and returns the body with the read buffer's range.
    fn through_a_frame(body: Vec<u8>) -> (Bytes, *const u8, usize) {
        use crate::frame::{self, EncodeOptions, Frame, Kind};
        let frame = Frame {
            kind: Kind::Request,
            service_id: 1,
            method_id: 1,
            correlation_id: 1,
            body: Bytes::from(body),
        };
        let mut read_buf = BytesMut::new();
        frame::encode(&frame, &EncodeOptions::default(), &mut read_buf).unwrap();
        let (start, len) = (read_buf.as_ptr(), read_buf.len());
        let decoded = frame::decode(&mut read_buf, 1 << 20).unwrap().unwrap();
        assert!(inside(start, len, &decoded.body));
        (decoded.body, start, len)
    }

    #[test]
    fn produce_records_and_fetch_batches_are_slices_of_the_frame_buffer() {
        // A frame is cut out of the connection's read buffer and its body decoded with
        // `qiss::from_bytes`: the batch bytes must not be copied.
        let records: Vec<u8> = (0..200u8).collect();
        let request = ProduceRequest {
            topic: "t".into(),
            partition: 0,
            acks: Acks::All,
            timeout_ms: 0,
            producer: None,
            records: Bytes::from(records.clone()),
        };
        let (body, start, len) = through_a_frame(qiss::to_vec(&request).unwrap());
        let req: ProduceRequest = qiss::from_bytes(&body).unwrap();
        assert_eq!(req, request);
        assert!(inside(start, len, &req.records), "records were copied");

        let response = FetchResponse {
            high_watermark: 9,
            log_start_offset: 0,
            batches: Bytes::from(records.clone()),
        };
        let (body, start, len) = through_a_frame(qiss::to_vec(&response).unwrap());
        let resp: FetchResponse = qiss::from_bytes(&body).unwrap();
        assert_eq!(resp, response);
        assert!(inside(start, len, &resp.batches), "batches were copied");

        // From a plain slice the same bytes decode too (into a copy).
        let wire = qiss::to_vec(&request).unwrap();
        let copied: ProduceRequest = qiss::from_slice(&wire).unwrap();
        assert_eq!(copied, request);
        assert!(!inside(wire.as_ptr(), wire.len(), &copied.records));
    }
}
