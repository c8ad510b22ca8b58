//! [`Admin`]: topics and the cluster's status.

use std::time::Duration;

use neo_protocol::api::{
    CreateTopicRequest, CreateTopicResponse, DeleteTopicRequest, DeleteTopicResponse,
    DescribeTopicRequest, ListTopicsRequest, ListTopicsResponse, MetadataRequest, MetadataResponse,
    TopicDescription,
};
use serde::Serialize;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::retry::Retry;

/// One node in [`ClusterStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeStatus {
    /// Node id.
    pub id: u64,
    /// Its client address.
    pub client_addr: String,
    /// Whether it answered a metadata request from this client just now (within
    /// `Admin::probe_timeout`). The metadata response carries no liveness of its own.
    pub alive: bool,
}

/// One partition in [`ClusterStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionStatus {
    /// Topic.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
    /// Leader node id, `null` when there is none.
    pub leader: Option<u64>,
    /// Replica node ids.
    pub replicas: Vec<u64>,
}

/// The cluster as `neo cluster status` prints it. Field names and order are the CLI's
/// JSON contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterStatus {
    /// Every node, by id.
    pub nodes: Vec<NodeStatus>,
    /// The metadata group's leader, `null` when unknown.
    pub controller: Option<u64>,
    /// Every partition of every topic, by topic then index.
    pub partitions: Vec<PartitionStatus>,
}

/// Topic administration and cluster status. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Admin {
    client: Client,
    /// Bound on the per-node liveness probe of [`Admin::cluster_status`].
    pub probe_timeout: Duration,
}

/// Topic config key: delete a partition's oldest data once older than this many
/// milliseconds (whole log segments, on every replica).
pub const RETENTION_MS: &str = "retention.ms";
/// Topic config key: delete a partition's oldest data while its log (on each replica)
/// is larger than this many bytes (whole segments; the active segment always stays).
pub const RETENTION_BYTES: &str = "retention.bytes";
/// Topic config key: `true` keeps the partition logs encrypted at rest on every replica,
/// under each node's key (`neo-node --at-rest-key-file`; refused if the node has none).
pub const ENCRYPTION_AT_REST: &str = "encryption.at-rest";

impl Admin {
    /// An admin handle on `client`.
    pub fn new(client: Client) -> Admin {
        Admin {
            client,
            probe_timeout: Duration::from_secs(2),
        }
    }

    /// Create a topic and wait (within the client's retry deadline) until the
    /// metadata shows a leader for each of its partitions, so that a producer can use
    /// it right away.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: u32,
    ) -> Result<()> {
        self.create_topic_with_configs(name, partitions, replication_factor, Vec::new())
            .await
    }

    /// [`Admin::create_topic`] with topic configs, as `(key, value)` pairs. The broker
    /// knows [`RETENTION_MS`] and [`RETENTION_BYTES`] (decimal integers of at least 1)
    /// and [`ENCRYPTION_AT_REST`] (`true`/`false`); any other key or a bad value is
    /// refused with `InvalidArgument` naming the key.
    ///
    /// ```no_run
    /// # async fn f(admin: neo_client::Admin) -> neo_client::Result<()> {
    /// use neo_client::admin::{RETENTION_BYTES, RETENTION_MS};
    /// admin
    ///     .create_topic_with_configs(
    ///         "events",
    ///         3,
    ///         3,
    ///         vec![
    ///             (RETENTION_MS.into(), "604800000".into()),
    ///             (RETENTION_BYTES.into(), "1073741824".into()),
    ///         ],
    ///     )
    ///     .await
    /// # }
    /// ```
    pub async fn create_topic_with_configs(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: u32,
        configs: Vec<(String, String)>,
    ) -> Result<()> {
        if partitions == 0 || replication_factor == 0 {
            return Err(Error::InvalidArgument(
                "partitions and replication factor must be at least 1".into(),
            ));
        }
        let request = CreateTopicRequest {
            name: name.to_string(),
            partitions,
            replication_factor,
            configs,
        };
        let _: CreateTopicResponse = self.client.call_any("create_topic", &request).await?;
        self.wait_for_leaders(name).await
    }

    /// Wait until every partition of `name` has a leader in the metadata.
    pub async fn wait_for_leaders(&self, name: &str) -> Result<()> {
        let mut retry = Retry::new(self.client.config().retry);
        loop {
            self.client.refresh_metadata().await?;
            let cache = self.client.metadata().await?;
            let missing = match cache.partitions(name) {
                None => Some(0),
                Some(ps) => ps.iter().find(|p| p.leader.is_none()).map(|p| p.partition),
            };
            match missing {
                None => return Ok(()),
                Some(partition) => {
                    retry
                        .failed(Error::LeaderNotAvailable {
                            topic: name.to_string(),
                            partition,
                        })
                        .await?
                }
            }
        }
    }

    /// Delete a topic and its data.
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        let request = DeleteTopicRequest {
            name: name.to_string(),
        };
        let _: DeleteTopicResponse = self.client.call_any("delete_topic", &request).await?;
        self.client.refresh_metadata().await.ok();
        Ok(())
    }

    /// Topic names, sorted.
    pub async fn list_topics(&self) -> Result<Vec<String>> {
        let request = ListTopicsRequest {
            include_internal: false,
        };
        let resp: ListTopicsResponse = self.client.call_any("list_topics", &request).await?;
        Ok(resp.topics)
    }

    /// A topic's partitions and configuration.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription> {
        let request = DescribeTopicRequest {
            name: name.to_string(),
        };
        self.client.call_any("describe_topic", &request).await
    }

    /// The metadata (all topics) as the broker at `address` answers it, within
    /// `timeout`; no retry. Only a partition's leader knows its in-sync replicas (the
    /// others answer them empty): ask each broker to see them all.
    pub async fn metadata_at(&self, address: &str, timeout: Duration) -> Result<MetadataResponse> {
        let request = MetadataRequest { topics: Vec::new() };
        self.client
            .call_at(address, "metadata", &request, timeout)
            .await
    }

    /// Nodes (with a liveness probe each), controller and every partition's placement.
    pub async fn cluster_status(&self) -> Result<ClusterStatus> {
        let metadata: MetadataResponse = self
            .client
            .call_any("metadata", &MetadataRequest { topics: Vec::new() })
            .await?;
        let probes = metadata.brokers.iter().map(|b| async {
            let request = MetadataRequest { topics: Vec::new() };
            let probe = tokio::time::timeout(
                self.probe_timeout,
                self.client.call_at::<_, MetadataResponse>(
                    &b.address,
                    "metadata",
                    &request,
                    self.probe_timeout,
                ),
            )
            .await;
            // Any answer, even an error frame, means the node is up and serving.
            let alive = matches!(probe, Ok(Ok(_) | Err(Error::Broker(_))));
            NodeStatus {
                id: b.node_id,
                client_addr: b.address.clone(),
                alive,
            }
        });
        let mut nodes = futures::future::join_all(probes).await;
        nodes.sort_by_key(|n| n.id);
        Ok(ClusterStatus {
            nodes,
            controller: metadata.controller_id,
            partitions: status_partitions(&metadata),
        })
    }
}

/// The partitions of a metadata response, sorted by topic then index.
pub(crate) fn status_partitions(metadata: &MetadataResponse) -> Vec<PartitionStatus> {
    let mut out: Vec<PartitionStatus> = metadata
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| PartitionStatus {
                topic: t.name.clone(),
                partition: p.partition,
                leader: p.leader,
                replicas: p.replicas.clone(),
            })
        })
        .collect();
    out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_status_json_is_the_cli_contract() {
        let status = ClusterStatus {
            nodes: vec![NodeStatus {
                id: 1,
                client_addr: "127.0.0.1:7070".into(),
                alive: true,
            }],
            controller: Some(1),
            partitions: vec![PartitionStatus {
                topic: "t".into(),
                partition: 0,
                leader: Some(1),
                replicas: vec![1, 2, 3],
            }],
        };
        assert_eq!(
            serde_json::to_string(&status).unwrap(),
            r#"{"nodes":[{"id":1,"client_addr":"127.0.0.1:7070","alive":true}],"controller":1,"partitions":[{"topic":"t","partition":0,"leader":1,"replicas":[1,2,3]}]}"#
        );
    }
}
