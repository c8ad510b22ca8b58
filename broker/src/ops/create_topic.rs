//! `create_topic`: on the metadata leader (else `NotLeader` with the leader's client
//! address; the client retries there).
//!
//! Validates the name (1..=249 bytes of `[A-Za-z0-9._-]`, not `.` or `..`), the
//! partition count (1..=`partitions_per_topic_max`) and the replication factor (at
//! least 1, at most the live registered nodes: else `NotEnoughReplicas`, retriable);
//! places replica sets with `neo_cluster::placement::place` over the live nodes given
//! the existing load, and commits a `CreateTopic` command. Every replica then opens and
//! bootstraps its partition groups (`reconcile`). The answer waits (bounded) until the
//! partitions this node replicates have leaders, so that a produce right after it
//! usually finds one; others may still be electing (clients retry `NotLeader`).
//!
//! Topic configs: `retention.ms` (age) and `retention.bytes` (size of each partition
//! replica's log), each a decimal integer of at least 1, at most once. They are stored
//! with the topic in the metadata state and enforced by every replica (`retention`).
//! `encryption.at-rest` (`true` or `false`): every replica keeps the topic's partition
//! logs encrypted under its node's at-rest key (refused with `InvalidArgument` when the
//! node answering has no key; the creation and the flag are one metadata command).
//! Any other key, a repeated key or a bad value is refused with `InvalidArgument`
//! naming the key, rather than silently ignored.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::meta::{MetaCommand, MetaError, MetaResponse, TOPIC_NAME_LEN_MAX};
use crate::placement::{Load, place};
use neo_protocol::api::{CreateTopicRequest, CreateTopicResponse, QueueSettings};
use neo_protocol::{ErrorCode, RpcError};
use neo_raft::{NodeId, Role};

use super::{broker_error, not_leader};
use neo_security::{Operation, ResourceType, SecurityContext};

use crate::facade::Broker;

/// How long the answer waits for locally hosted partitions to elect leaders.
const LEADERS_WAIT_MS: u64 = 10_000;

/// Why a topic name is refused, if it is.
pub fn check_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > TOPIC_NAME_LEN_MAX {
        return Err(format!("topic name must be 1..={TOPIC_NAME_LEN_MAX} bytes"));
    }
    if name == "." || name == ".." {
        return Err("topic name cannot be \".\" or \"..\"".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "topic name may hold only A-Z a-z 0-9 . _ - (found {c:?})"
        ));
    }
    Ok(())
}

/// Topic config key: retention by age, in milliseconds.
pub const RETENTION_MS: &str = "retention.ms";
/// Topic config key: retention by size of each partition replica's log, in bytes.
pub const RETENTION_BYTES: &str = "retention.bytes";
/// Topic config key: partition logs encrypted at rest (`true` / `false`).
pub const ENCRYPTION_AT_REST: &str = "encryption.at-rest";

/// A topic's configs as given at creation.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Retention {
    /// `retention.ms`: age limit in milliseconds.
    pub ms: Option<u64>,
    /// `retention.bytes`: size limit of each partition replica's log.
    pub bytes: Option<u64>,
    /// `encryption.at-rest`: partition logs encrypted at rest.
    pub encrypt_at_rest: bool,
}

/// Parses a create's configs: `retention.ms` and `retention.bytes`, each a decimal
/// integer in `1..=u64::MAX`, and `encryption.at-rest` (`true`/`false`), each at most
/// once. The error names the key.
pub fn parse_topic_configs(configs: &[(String, String)]) -> Result<Retention, String> {
    let mut r = Retention::default();
    let mut seen_encryption = false;
    for (key, value) in configs {
        let slot = match key.as_str() {
            RETENTION_MS => &mut r.ms,
            RETENTION_BYTES => &mut r.bytes,
            ENCRYPTION_AT_REST => {
                if std::mem::replace(&mut seen_encryption, true) {
                    return Err(format!("topic config {key} given more than once"));
                }
                r.encrypt_at_rest = match value.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(format!(
                            "topic config {key} must be true or false, got {value:?}"
                        ));
                    }
                };
                continue;
            }
            other => {
                return Err(format!(
                    "unknown topic config {other:?} (supported: {RETENTION_MS}, \
                     {RETENTION_BYTES}, {ENCRYPTION_AT_REST})"
                ));
            }
        };
        if slot.is_some() {
            return Err(format!("topic config {key} given more than once"));
        }
        let n = (!value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()))
            .then(|| value.parse::<u64>().ok())
            .flatten()
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                format!(
                    "topic config {key} must be a decimal integer in 1..={}, got {value:?}",
                    u64::MAX
                )
            })?;
        *slot = Some(n);
    }
    Ok(r)
}

pub(crate) async fn create_topic(
    b: &Broker,
    ctx: &SecurityContext,
    req: CreateTopicRequest,
) -> Result<CreateTopicResponse, RpcError> {
    b.authorize(ctx, ResourceType::Topic, &req.name, Operation::Create)?;
    create_placed(
        b,
        &req.name,
        req.partitions,
        req.replication_factor,
        &req.configs,
        None,
    )
    .await?;
    Ok(CreateTopicResponse { name: req.name })
}

/// Checks a create's arguments, places replica sets and commits a `CreateTopic` (or,
/// with `queue`, a `CreateQueue` with those settings); waits (bounded) for the leaders
/// of the partitions hosted here. Authorization is the caller's.
pub(crate) async fn create_placed(
    b: &Broker,
    name: &str,
    partitions: u32,
    replication_factor: u32,
    configs: &[(String, String)],
    queue: Option<QueueSettings>,
) -> Result<(), RpcError> {
    check_topic_name(name).map_err(RpcError::invalid_argument)?;
    let max = b.limits().partitions_per_topic_max;
    if partitions == 0 || partitions > max {
        return Err(RpcError::invalid_argument(format!(
            "partitions must be in 1..={max} (partitions_per_topic_max), got {partitions}"
        )));
    }
    if replication_factor == 0 {
        return Err(RpcError::invalid_argument(
            "replication_factor must be at least 1",
        ));
    }
    let retention = parse_topic_configs(configs).map_err(RpcError::invalid_argument)?;
    if retention.encrypt_at_rest && !b.has_at_rest_key() {
        return Err(RpcError::invalid_argument(format!(
            "{ENCRYPTION_AT_REST}=true needs an at-rest key on every node \
             (neo-node --at-rest-key-file); this node has none"
        )));
    }
    let m = b.meta_group().metrics();
    if m.role != Role::Leader {
        return Err(not_leader(b, m.leader, "the metadata group"));
    }
    let state = crate::meta::linearizable(b.meta_group(), &b.meta_view())
        .await
        .map_err(|e| broker_error(b, e, "the metadata group"))?;
    if state.topics.contains_key(name) {
        return Err(RpcError::new(
            ErrorCode::TopicAlreadyExists,
            format!("topic {name:?} already exists"),
        ));
    }
    let alive: BTreeSet<NodeId> = state
        .nodes
        .keys()
        .copied()
        .filter(|n| b.is_alive(*n))
        .collect();
    let rf = replication_factor as usize;
    if rf > alive.len() {
        return Err(RpcError::new(
            ErrorCode::NotEnoughReplicas,
            format!(
                "replication factor {rf} needs {rf} live nodes; {} of {} registered nodes are live",
                alive.len(),
                state.nodes.len()
            ),
        ));
    }
    let load = Load::of(
        state
            .topics
            .values()
            .flat_map(|t| t.partitions.iter().map(|p| p.replicas.as_slice())),
    );
    let replicas = place(&alive, &load, partitions as usize, rf)
        .map_err(|e| RpcError::invalid_argument(e.to_string()))?;
    let cmd = match queue {
        None => MetaCommand::CreateTopic {
            name: name.to_string(),
            replicas: replicas.clone(),
            retention_ms: retention.ms,
            retention_bytes: retention.bytes,
        },
        Some(settings) => MetaCommand::CreateQueue {
            name: name.to_string(),
            replicas: replicas.clone(),
            retention_ms: retention.ms,
            retention_bytes: retention.bytes,
            settings,
        },
    };
    let cmd = match retention.encrypt_at_rest {
        true => MetaCommand::EncryptedAtRest(Box::new(cmd)),
        false => cmd,
    };
    let r = crate::meta::propose(b.meta_group(), &cmd)
        .await
        .map_err(|e| broker_error(b, e, "the metadata group"))?;
    let first_group = match r {
        MetaResponse::TopicCreated { first_group } => first_group,
        MetaResponse::Refused(MetaError::TopicExists { name }) => {
            return Err(RpcError::new(
                ErrorCode::TopicAlreadyExists,
                format!("topic {name:?} already exists"),
            ));
        }
        MetaResponse::Refused(e) => return Err(RpcError::invalid_argument(e.to_string())),
        MetaResponse::Done => {
            return Err(RpcError::internal("create topic answered without groups"));
        }
    };
    wait_for_local_leaders(b, first_group, &replicas).await;
    Ok(())
}

/// Waits (bounded) until every partition group of the new topic that this node
/// replicates is open and has a leader.
async fn wait_for_local_leaders(b: &Broker, first_group: u64, replicas: &[Vec<NodeId>]) {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(LEADERS_WAIT_MS);
    let mine: Vec<u64> = replicas
        .iter()
        .enumerate()
        .filter(|(_, set)| set.contains(&b.node_id()))
        .map(|(i, _)| first_group + i as u64)
        .collect();
    for group in mine {
        loop {
            let led = b
                .partition(group)
                .is_some_and(|p| p.group().metrics().leader.is_some());
            if led || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_configs() {
        let c = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(parse_topic_configs(&[]), Ok(Retention::default()));
        assert_eq!(
            parse_topic_configs(&c(&[("retention.ms", "60000"), ("retention.bytes", "1")])),
            Ok(Retention {
                ms: Some(60_000),
                bytes: Some(1),
                encrypt_at_rest: false,
            })
        );
        assert_eq!(
            parse_topic_configs(&c(&[("retention.bytes", "18446744073709551615")])),
            Ok(Retention {
                ms: None,
                bytes: Some(u64::MAX),
                encrypt_at_rest: false,
            })
        );
        assert_eq!(
            parse_topic_configs(&c(&[("encryption.at-rest", "true")])),
            Ok(Retention {
                encrypt_at_rest: true,
                ..Retention::default()
            })
        );
        for (bad, key) in [
            (("retention.ms", "0"), "retention.ms"),
            (("retention.ms", "-1"), "retention.ms"),
            (("retention.ms", "+5"), "retention.ms"),
            (("retention.ms", " 5"), "retention.ms"),
            (("retention.ms", ""), "retention.ms"),
            (("retention.bytes", "1k"), "retention.bytes"),
            (
                ("retention.bytes", "18446744073709551616"),
                "retention.bytes",
            ),
            (("cleanup.policy", "compact"), "cleanup.policy"),
            (("encryption.at-rest", "yes"), "encryption.at-rest"),
            (("encryption.at-rest", ""), "encryption.at-rest"),
        ] {
            let e = parse_topic_configs(&c(&[bad])).expect_err("refused");
            assert!(e.contains(key), "{e} should name {key}");
        }
        let e = parse_topic_configs(&c(&[("retention.ms", "1"), ("retention.ms", "2")]))
            .expect_err("repeated");
        assert!(e.contains("retention.ms"), "{e}");
        let e = parse_topic_configs(&c(&[
            ("encryption.at-rest", "true"),
            ("encryption.at-rest", "true"),
        ]))
        .expect_err("repeated");
        assert!(e.contains("encryption.at-rest"), "{e}");
    }

    #[test]
    fn topic_names() {
        for ok in ["orders", "a.b-c_d", "A1", &"x".repeat(249)] {
            assert!(check_topic_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "ü", &"x".repeat(250)] {
            assert!(check_topic_name(bad).is_err(), "{bad:?}");
        }
    }
}
