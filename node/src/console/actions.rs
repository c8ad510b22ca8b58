//! The console's actions (POST, JSON bodies), each done through this node's client
//! port as the caller (which checks the caller's permissions again) under
//! [`super::CALL_TIMEOUT`]. The page asks for confirmation first; the server does not
//! rely on it.

use std::sync::Arc;
use std::time::Duration;

use neo_client::queue::{RedriveOptions, redrive as redrive_dead_letters};
use neo_client::{Admin, GroupAdmin, QueueAdmin, ResetTo};
use neo_security::{Operation, ResourceType};
use serde::Deserialize;
use serde_json::json;

use super::with_deadline;
use crate::http::{Reply, caller_client, json_body};
use crate::node::Shared;
use crate::security::http::{self as http_auth, Caller};

/// Most partitions of a topic created from the console.
pub(crate) const PARTITIONS_MAX: u32 = 1024;
/// Most dead letters one console redrive moves.
pub(crate) const REDRIVE_MAX: u64 = 10_000;

/// The body of `POST /v1/topics`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateTopic {
    pub name: String,
    pub partitions: u32,
    pub replication_factor: u32,
}

pub(super) async fn create_topic(
    shared: &Arc<Shared>,
    body: &[u8],
    caller: Option<&Caller>,
) -> Reply {
    let req: CreateTopic = match json_body(body) {
        Ok(r) => r,
        Err(bad) => return bad.into(),
    };
    if !(1..=PARTITIONS_MAX).contains(&req.partitions) || req.replication_factor == 0 {
        return Reply::error(
            400,
            format!("partitions must be 1 to {PARTITIONS_MAX}, replication factor at least 1"),
        );
    }
    let check = http_auth::authorize(
        shared,
        caller,
        ResourceType::Topic,
        &req.name,
        Operation::Create,
    );
    if let Err(refusal) = check {
        return Reply::error(refusal.status, refusal.reason);
    }
    with_deadline(async {
        let admin = Admin::new(caller_client(shared, caller).await?);
        admin
            .create_topic(&req.name, req.partitions, req.replication_factor)
            .await?;
        Ok(Reply::json(200, json!({ "created": req.name })))
    })
    .await
}

pub(super) async fn delete_topic(
    shared: &Arc<Shared>,
    topic: &str,
    caller: Option<&Caller>,
) -> Reply {
    with_deadline(async {
        let admin = Admin::new(caller_client(shared, caller).await?);
        admin.delete_topic(topic).await?;
        Ok(Reply::json(200, json!({ "deleted": topic })))
    })
    .await
}

/// The body of `POST /v1/groups/{g}/reset-offsets`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResetOffsets {
    pub topic: String,
    /// `earliest`, `latest`, or `offset` (then `offset` is used, clamped to the log).
    pub to: String,
    #[serde(default)]
    pub offset: Option<u64>,
}

impl ResetOffsets {
    pub(crate) fn target(&self) -> Result<ResetTo, String> {
        match (self.to.as_str(), self.offset) {
            ("earliest", _) => Ok(ResetTo::Earliest),
            ("latest", _) => Ok(ResetTo::Latest),
            ("offset", Some(o)) => Ok(ResetTo::Offset(o)),
            ("offset", None) => Err("to=offset needs an offset".into()),
            (other, _) => Err(format!(
                "to must be earliest, latest or offset (got {other:?})"
            )),
        }
    }
}

pub(super) async fn reset_offsets(
    shared: &Arc<Shared>,
    group: &str,
    body: &[u8],
    caller: Option<&Caller>,
) -> Reply {
    let req: ResetOffsets = match json_body(body) {
        Ok(r) => r,
        Err(bad) => return bad.into(),
    };
    let to = match req.target() {
        Ok(to) => to,
        Err(reason) => return Reply::error(400, reason),
    };
    with_deadline(async {
        let admin = GroupAdmin::new(caller_client(shared, caller).await?);
        let moved = admin.reset_offsets(group, &req.topic, to).await?;
        let offsets: Vec<_> = moved
            .iter()
            .map(|(p, o)| json!({ "partition": p, "offset": o }))
            .collect();
        Ok(Reply::json(
            200,
            json!({ "group": group, "topic": req.topic, "offsets": offsets }),
        ))
    })
    .await
}

pub(super) async fn purge_queue(
    shared: &Arc<Shared>,
    name: &str,
    caller: Option<&Caller>,
) -> Reply {
    with_deadline(async {
        let admin = QueueAdmin::new(caller_client(shared, caller).await?);
        let purged = admin.purge(name, None).await?;
        Ok(Reply::json(200, json!({ "queue": name, "purged": purged })))
    })
    .await
}

/// The body of `POST /v1/queues/{q}/redrive` (`{}` is fine).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Redrive {
    /// Most dead letters to move (default and bound: [`REDRIVE_MAX`]).
    #[serde(default)]
    pub max: Option<u64>,
}

pub(super) async fn redrive(
    shared: &Arc<Shared>,
    name: &str,
    body: &[u8],
    caller: Option<&Caller>,
) -> Reply {
    let req: Redrive = match json_body(body) {
        Ok(r) => r,
        Err(bad) => return bad.into(),
    };
    let max = req.max.unwrap_or(REDRIVE_MAX);
    if !(1..=REDRIVE_MAX).contains(&max) {
        return Reply::error(400, format!("max must be 1 to {REDRIVE_MAX}"));
    }
    let options = RedriveOptions {
        max: Some(max),
        idle_wait: Duration::from_millis(500),
        // A redrive cut off by the deadline leaves its leased letters to come back soon.
        visibility_timeout_ms: 30_000,
        consumer: "neo-console-redrive".into(),
        ..RedriveOptions::default()
    };
    with_deadline(async {
        let client = caller_client(shared, caller).await?;
        let report = redrive_dead_letters(&client, name, options).await?;
        let status = if report.error.is_some() { 503 } else { 200 };
        Ok(Reply::json(
            status,
            json!({
                "queue": name,
                "moved": report.moved,
                "by_source": report.by_source,
                "skipped": report.skipped,
                "failed": report.failed,
                "ack_failed": report.ack_failed,
                "error": report.error.as_ref().map(ToString::to_string),
            }),
        ))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_targets_are_checked() {
        let r = |to: &str, offset| ResetOffsets {
            topic: "t".into(),
            to: to.into(),
            offset,
        };
        assert!(matches!(
            r("earliest", None).target(),
            Ok(ResetTo::Earliest)
        ));
        assert!(matches!(r("latest", None).target(), Ok(ResetTo::Latest)));
        assert!(matches!(
            r("offset", Some(3)).target(),
            Ok(ResetTo::Offset(3))
        ));
        assert!(r("offset", None).target().is_err());
        assert!(r("<b>", None).target().unwrap_err().contains("\"<b>\""));
    }

    #[test]
    fn bodies_with_unknown_fields_are_refused() {
        let bad = json_body::<CreateTopic>(
            br#"{"name":"t","partitions":1,"replication_factor":1,"x":1}"#,
        );
        assert_eq!(bad.unwrap_err().status, 400);
        assert!(json_body::<Redrive>(b"{}").is_ok());
        assert_eq!(json_body::<Redrive>(b"").unwrap_err().status, 400);
    }
}
