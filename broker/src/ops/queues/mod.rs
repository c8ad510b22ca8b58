//! The queue methods (see `docs/queues.md`): `create_queue`, `delete_queue`,
//! `list_queues`, `describe_queue`, `purge_queue` (admin.rs), `queue_receive`
//! (receive.rs) and `queue_ack` / `queue_nack` / `queue_extend` / `queue_term`
//! (settle.rs).
//!
//! Every delivery change is a command of the partition's own Raft group
//! ([`crate::partition::deliveries`]), proposed by its leader and answered after commit.
//! A queue's own deliveries are share group `""`; a plain topic is consumed with queue
//! semantics by a named share group, with the default settings.

pub(crate) mod admin;
pub(crate) mod duties;
pub(crate) mod receive;
pub(crate) mod settle;

use std::time::{SystemTime, UNIX_EPOCH};

use neo_protocol::api::{
    QUEUE_NAME_LEN_MAX, QUEUE_VISIBILITY_TIMEOUT_MS_MAX, QUEUE_VISIBILITY_TIMEOUT_MS_MIN,
    QueueSettings,
};
use neo_protocol::{ErrorCode, RpcError};
use neo_security::{Operation, ResourceType, SecurityContext};

use crate::facade::Broker;
use crate::meta::PartitionInfo;
use crate::partition::deliveries::Limits;
use crate::partition::queues::QUEUE_OWN;

/// A queue, or a topic's share group, resolved from the applied metadata.
pub(crate) struct Target {
    /// Queue (topic) name.
    pub(crate) name: String,
    /// The share group (`""`: the queue's own deliveries).
    pub(crate) group: String,
    /// Its settings (a share group's: the defaults, without a dead-letter queue).
    pub(crate) settings: QueueSettings,
    /// The topic's partitions.
    pub(crate) partitions: Vec<PartitionInfo>,
}

impl Target {
    /// The settings as a delivery command carries them.
    pub(crate) fn limits(&self) -> Limits {
        Limits {
            max_deliveries: self.settings.max_deliveries,
            max_in_flight: self.settings.max_in_flight,
            max_in_flight_per_consumer: self.settings.max_in_flight_per_consumer,
            ordered_by_key: self.settings.ordered_by_key,
            backoff_ms: self.settings.redelivery_backoff_ms.clone(),
        }
    }

    /// `name/partition` (and the share group), for messages.
    pub(crate) fn what(&self, partition: u32) -> String {
        if self.group == QUEUE_OWN {
            format!("queue {}/{partition}", self.name)
        } else {
            format!("{}/{partition} (share group {})", self.name, self.group)
        }
    }
}

/// Checks a consumer name, share group name or reason.
pub(crate) fn check_text(what: &str, s: &str, empty_ok: bool) -> Result<(), RpcError> {
    if (!empty_ok && s.is_empty()) || s.len() > QUEUE_NAME_LEN_MAX {
        return Err(RpcError::invalid_argument(format!(
            "{what} must be {}..={QUEUE_NAME_LEN_MAX} bytes",
            u8::from(!empty_ok)
        )));
    }
    Ok(())
}

/// The lease length a request asks for: 0 is the queue's visibility timeout; anything
/// else must be within the documented bounds.
pub(crate) fn visibility(t: &Target, asked_ms: u32) -> Result<u32, RpcError> {
    match asked_ms {
        0 => Ok(t.settings.visibility_timeout_ms),
        v if (QUEUE_VISIBILITY_TIMEOUT_MS_MIN..=QUEUE_VISIBILITY_TIMEOUT_MS_MAX).contains(&v) => {
            Ok(v)
        }
        v => Err(RpcError::invalid_argument(format!(
            "visibility_timeout_ms must be 0 (the queue's) or in \
             {QUEUE_VISIBILITY_TIMEOUT_MS_MIN}..={QUEUE_VISIBILITY_TIMEOUT_MS_MAX}, got {v}"
        ))),
    }
}

/// Resolves `queue` (with an optional share group) and authorizes `op` on it: a
/// queue's own deliveries need `op` on the queue; a share group needs it on the topic
/// and on the group.
pub(crate) fn resolve(
    b: &Broker,
    ctx: &SecurityContext,
    queue: &str,
    share_group: Option<&str>,
    op: Operation,
) -> Result<Target, RpcError> {
    match share_group {
        None => b.authorize(ctx, ResourceType::Queue, queue, op)?,
        Some(g) => {
            b.authorize(ctx, ResourceType::Topic, queue, op)?;
            b.authorize(ctx, ResourceType::Group, g, op)?;
            check_text("share group name", g, false)?;
        }
    }
    let state = b.state();
    let topic = state
        .topics
        .get(queue)
        .ok_or_else(|| unknown_queue(queue))?;
    let (group, settings) = match (state.queues.get(queue), share_group) {
        (Some(s), None) => (QUEUE_OWN.to_string(), s.clone()),
        (Some(_), Some(_)) => {
            return Err(RpcError::invalid_argument(format!(
                "{queue:?} is a queue: it has its own deliveries (share groups are for plain topics)"
            )));
        }
        (None, Some(g)) => (g.to_string(), QueueSettings::default()),
        (None, None) => {
            return Err(RpcError::invalid_argument(format!(
                "{queue:?} is a topic, not a queue: receive from it with a share group"
            )));
        }
    };
    Ok(Target {
        name: queue.to_string(),
        group,
        settings,
        partitions: topic.partitions.clone(),
    })
}

/// `UnknownTopic` for a queue name.
pub(crate) fn unknown_queue(queue: &str) -> RpcError {
    RpcError::new(ErrorCode::UnknownQueue, format!("unknown queue {queue:?}"))
}

/// The leader's clock, in ms since the epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
