//! [`GroupAdmin`]: list, describe (membership + committed offsets + lag), reset the
//! committed offsets of an empty group, delete a group. What `neo group` runs.

use std::time::Duration;

use neo_protocol::ErrorCode;
use neo_protocol::api::{
    DeleteGroupRequest, DeleteGroupResponse, DescribeGroupRequest, FetchOffsetsResponse,
    GroupDescription, GroupListing, ListGroupsRequest, ListGroupsResponse, ListOffsetsRequest,
    ListOffsetsResponse, OffsetSpec,
};
use serde::Serialize;

use super::TopicPartition;
use super::coordinator::CoordinatorLink;
use super::offsets::OffsetCalls;
use crate::client::Client;
use crate::error::{Error, Result};

/// A group as `neo group describe --format json` prints it. Field names, order and
/// types are the CLI's JSON contract (docs/cli.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupReport {
    /// Group name.
    pub group: String,
    /// `empty`, `reconciling` or `stable`.
    pub state: String,
    /// The group epoch.
    pub group_epoch: u64,
    /// Node id of the coordinator that answered.
    pub coordinator: u64,
    /// Members, as the coordinator lists them.
    pub members: Vec<MemberReport>,
    /// Every partition of the group's topics, by topic then index.
    pub offsets: Vec<OffsetReport>,
}

/// One member in a [`GroupReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberReport {
    /// Member id.
    pub member_id: String,
    /// Static membership instance id (`null` for a dynamic member).
    pub instance_id: Option<String>,
    /// The client's name for itself.
    pub client_id: String,
    /// The member's address as the coordinator saw it.
    pub host: String,
    /// The member's epoch.
    pub member_epoch: u64,
    /// Subscribed topics.
    pub topics: Vec<String>,
    /// Partitions it owns, by topic then index.
    pub assignment: Vec<TopicPartition>,
}

/// One partition's committed offset in a [`GroupReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OffsetReport {
    /// Topic.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
    /// The group's committed offset (`null`: none).
    pub committed_offset: Option<u64>,
    /// The partition's log end offset (high watermark).
    pub log_end_offset: u64,
    /// `log_end_offset - committed_offset` (`null` without a committed offset).
    pub lag: Option<u64>,
    /// The metadata committed with the offset (empty when none).
    pub metadata: String,
}

/// Where `reset_offsets` moves a group's committed offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    /// Each partition's log start offset.
    Earliest,
    /// Each partition's log end offset.
    Latest,
    /// This offset, clamped to each partition's `[log start, log end]`.
    Offset(u64),
    /// The first offset whose record timestamp is at or after this many milliseconds
    /// since the Unix epoch (the log end when there is none).
    Timestamp(i64),
}

/// Consumer-group administration. Cheap to clone.
#[derive(Debug, Clone)]
pub struct GroupAdmin {
    client: Client,
}

impl GroupAdmin {
    /// An admin handle on `client`.
    pub fn new(client: Client) -> GroupAdmin {
        GroupAdmin { client }
    }

    fn timeout(&self) -> Duration {
        self.client.config().request_timeout
    }

    fn offsets(&self, group: &str) -> OffsetCalls {
        OffsetCalls {
            client: self.client.clone(),
            group: group.to_string(),
            timeout: self.timeout(),
            retry: self.client.config().retry,
        }
    }

    async fn coordinator_call<Req, Resp>(
        &self,
        group: &str,
        method: &str,
        request: &Req,
    ) -> Result<Resp>
    where
        Req: Serialize + ?Sized,
        Resp: serde::de::DeserializeOwned,
    {
        let mut link = CoordinatorLink::new(self.client.clone(), group.to_string());
        link.call(method, request, self.timeout(), self.client.config().retry)
            .await
    }

    /// The node coordinating `group`: its id and client address.
    pub async fn find_coordinator(&self, group: &str) -> Result<(u64, String)> {
        let found = CoordinatorLink::find(&self.client, group).await?;
        Ok((found.node_id, found.address))
    }

    /// Every group, by name. `list_groups` names no group to route by: it is tried on
    /// the controller (the coordinator of every group today), then on the other
    /// brokers, until one does not answer `NotCoordinator`.
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>> {
        let resp: ListGroupsResponse = self
            .client
            .call_any("list_groups", &ListGroupsRequest {})
            .await?;
        let mut groups = resp.groups;
        groups.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(groups)
    }

    /// A group's membership, from its coordinator (`UnknownGroup` if there is none).
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        let request = DescribeGroupRequest {
            group: group.to_string(),
        };
        self.coordinator_call(group, "describe_group", &request)
            .await
    }

    /// The group's committed offset of one partition, with the log's bounds.
    pub async fn committed_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<FetchOffsetsResponse> {
        self.offsets(group)
            .fetch(&TopicPartition::new(topic, partition), None)
            .await
    }

    /// The group's committed offsets of every partition of `topic`, by partition.
    pub async fn committed_offsets(
        &self,
        group: &str,
        topic: &str,
    ) -> Result<Vec<(u32, FetchOffsetsResponse)>> {
        let count = self.client.partition_count(topic).await?;
        let calls = self.offsets(group);
        let asks = (0..count).map(|p| {
            let calls = &calls;
            async move { (p, calls.fetch(&TopicPartition::new(topic, p), None).await) }
        });
        futures::future::join_all(asks)
            .await
            .into_iter()
            .map(|(p, r)| r.map(|resp| (p, resp)))
            .collect()
    }

    /// Membership, coordinator and, for every partition of the group's topics, the
    /// committed offset, log end offset and lag. Topics deleted since are skipped.
    pub async fn describe(&self, group: &str) -> Result<GroupReport> {
        let (coordinator, _) = self.find_coordinator(group).await?;
        let description = self.describe_group(group).await?;
        let mut offsets = Vec::new();
        let mut topics = description.topics.clone();
        topics.sort();
        topics.dedup();
        for topic in &topics {
            let partitions = match self.committed_offsets(group, topic).await {
                Ok(p) => p,
                Err(err) if err.code() == Some(ErrorCode::UnknownTopic) => continue,
                Err(Error::UnknownTopic { .. }) => continue,
                Err(err) => return Err(err),
            };
            for (partition, resp) in partitions {
                offsets.push(OffsetReport {
                    topic: topic.clone(),
                    partition,
                    committed_offset: resp.offset,
                    log_end_offset: resp.log_end_offset,
                    lag: resp.offset.map(|o| resp.log_end_offset.saturating_sub(o)),
                    metadata: resp.metadata,
                });
            }
        }
        Ok(report(coordinator, description, offsets))
    }

    /// The offset of a partition by position or time, from its leader.
    pub async fn list_offset(&self, topic: &str, partition: u32, spec: OffsetSpec) -> Result<u64> {
        let request = ListOffsetsRequest {
            topic: topic.to_string(),
            partition,
            spec,
        };
        let resp: ListOffsetsResponse = self
            .client
            .call_partition(
                topic,
                partition,
                "list_offsets",
                &request,
                self.timeout(),
                self.client.config().retry,
            )
            .await?;
        Ok(resp.offset)
    }

    /// Move the group's committed offsets of every partition of `topic` (admin
    /// commits, accepted only while the group has no members: [`Error::GroupNotEmpty`]
    /// otherwise). Returns the new offset of each partition.
    pub async fn reset_offsets(
        &self,
        group: &str,
        topic: &str,
        to: ResetTo,
    ) -> Result<Vec<(u32, u64)>> {
        match self.describe_group(group).await {
            Ok(d) if !d.members.is_empty() => {
                return Err(Error::GroupNotEmpty {
                    group: group.to_string(),
                });
            }
            Ok(_) => {}
            // A group known only by its offsets (or not at all yet): the commits decide.
            Err(err) if err.code() == Some(ErrorCode::UnknownGroup) => {}
            Err(err) => return Err(err),
        }
        let count = self.client.partition_count(topic).await?;
        let calls = self.offsets(group);
        let resets = (0..count).map(|p| {
            let calls = &calls;
            async move {
                let offset = self.target_offset(topic, p, to).await?;
                calls
                    .commit(&TopicPartition::new(topic, p), offset, None)
                    .await?;
                Ok::<_, Error>((p, offset))
            }
        });
        let mut out = Vec::new();
        for result in futures::future::join_all(resets).await {
            match result {
                Ok(done) => out.push(done),
                Err(err) if err.code() == Some(ErrorCode::GroupNotEmpty) => {
                    return Err(Error::GroupNotEmpty {
                        group: group.to_string(),
                    });
                }
                Err(err) => return Err(err),
            }
        }
        Ok(out)
    }

    async fn target_offset(&self, topic: &str, partition: u32, to: ResetTo) -> Result<u64> {
        match to {
            ResetTo::Earliest => {
                self.list_offset(topic, partition, OffsetSpec::Earliest)
                    .await
            }
            ResetTo::Latest => self.list_offset(topic, partition, OffsetSpec::Latest).await,
            ResetTo::Timestamp(ms) => {
                self.list_offset(topic, partition, OffsetSpec::Timestamp(ms))
                    .await
            }
            ResetTo::Offset(offset) => {
                let start = self
                    .list_offset(topic, partition, OffsetSpec::Earliest)
                    .await?;
                let end = self
                    .list_offset(topic, partition, OffsetSpec::Latest)
                    .await?;
                Ok(offset.clamp(start, end.max(start)))
            }
        }
    }

    /// Delete a group without members: its membership and committed offsets
    /// ([`Error::GroupNotEmpty`] while it has members).
    pub async fn delete_group(&self, group: &str) -> Result<()> {
        let request = DeleteGroupRequest {
            group: group.to_string(),
        };
        let result: Result<DeleteGroupResponse> =
            self.coordinator_call(group, "delete_group", &request).await;
        match result {
            Ok(_) => Ok(()),
            Err(err) if err.code() == Some(ErrorCode::GroupNotEmpty) => Err(Error::GroupNotEmpty {
                group: group.to_string(),
            }),
            Err(err) => Err(err),
        }
    }
}

/// The report of a description and offsets (members' assignments flattened, sorted).
fn report(coordinator: u64, d: GroupDescription, offsets: Vec<OffsetReport>) -> GroupReport {
    GroupReport {
        group: d.name,
        state: d.state,
        group_epoch: d.group_epoch,
        coordinator,
        members: d
            .members
            .into_iter()
            .map(|m| MemberReport {
                assignment: super::assignment::from_wire(&m.assignment)
                    .into_iter()
                    .collect(),
                member_id: m.member_id,
                instance_id: m.instance_id,
                client_id: m.client_id,
                host: m.host,
                member_epoch: m.member_epoch,
                topics: m.topics,
            })
            .collect(),
        offsets,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use neo_protocol::api::{MemberDescription, TopicPartitions};

    #[test]
    fn describe_json_is_the_cli_contract() {
        let description = GroupDescription {
            name: "g".into(),
            state: "stable".into(),
            group_epoch: 4,
            members: vec![MemberDescription {
                member_id: "m1".into(),
                instance_id: None,
                client_id: "neo-cli".into(),
                host: "127.0.0.1:5000".into(),
                member_epoch: 4,
                topics: vec!["t".into()],
                assignment: vec![TopicPartitions {
                    topic: "t".into(),
                    partitions: vec![1, 0],
                }],
                pending: vec![],
            }],
            topics: vec!["t".into()],
        };
        let offsets = vec![
            OffsetReport {
                topic: "t".into(),
                partition: 0,
                committed_offset: Some(5),
                log_end_offset: 7,
                lag: Some(2),
                metadata: String::new(),
            },
            OffsetReport {
                topic: "t".into(),
                partition: 1,
                committed_offset: None,
                log_end_offset: 3,
                lag: None,
                metadata: String::new(),
            },
        ];
        let json = serde_json::to_string(&report(2, description, offsets)).unwrap();
        assert_eq!(
            json,
            concat!(
                r#"{"group":"g","state":"stable","group_epoch":4,"coordinator":2,"members":["#,
                r#"{"member_id":"m1","instance_id":null,"client_id":"neo-cli","host":"127.0.0.1:5000","#,
                r#""member_epoch":4,"topics":["t"],"assignment":[{"topic":"t","partition":0},{"topic":"t","partition":1}]}],"#,
                r#""offsets":[{"topic":"t","partition":0,"committed_offset":5,"log_end_offset":7,"lag":2,"metadata":""},"#,
                r#"{"topic":"t","partition":1,"committed_offset":null,"log_end_offset":3,"lag":null,"metadata":""}]}"#
            )
        );
    }
}
