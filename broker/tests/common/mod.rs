//! Helpers the broker's socket-free tests share: an embedded broker over a temporary
//! directory, requests and batches.

#![allow(dead_code)] // each test file uses a part of them

use std::time::Duration;

use bytes::Bytes;
use neo_broker::{BrokerLimits, Embedded, SecurityContext};
use neo_protocol::api::{Acks, CreateTopicRequest, ProduceRequest};
use neo_protocol::{ErrorCode, RpcError};

pub const DEADLINE: Duration = Duration::from_secs(30);

pub fn ctx() -> SecurityContext {
    SecurityContext::client(Some("tester".into()), "127.0.0.1:4000".parse().unwrap())
}

pub async fn start(dir: &std::path::Path) -> Embedded {
    Embedded::start(dir, BrokerLimits::default())
        .await
        .expect("embedded broker starts")
}

pub fn create(name: &str, partitions: u32) -> CreateTopicRequest {
    CreateTopicRequest {
        name: name.into(),
        partitions,
        replication_factor: 1,
        configs: vec![],
    }
}

pub fn batch(values: &[&str], producer: Option<(i64, i32)>) -> Bytes {
    let mut b = qiss::batch::BatchBuilder::new();
    if let Some((id, seq)) = producer {
        b.producer(id, 0, seq);
    }
    for v in values {
        b.push(1, Some(b"k"), &[], v.as_bytes()).expect("push");
    }
    b.build().expect("build")
}

pub fn produce_req(topic: &str, partition: u32, acks: Acks, records: Bytes) -> ProduceRequest {
    ProduceRequest {
        topic: topic.into(),
        partition,
        acks,
        timeout_ms: 0,
        producer: None,
        records,
    }
}

pub fn code(r: Result<impl std::fmt::Debug, RpcError>) -> ErrorCode {
    r.expect_err("refused").error_code().expect("a known code")
}
