//! [`QueueAdmin`]: create, delete, list, describe and purge queues. What `neo queue
//! create|delete|list|describe|purge` runs.
//!
//! Create, delete and list go to any broker (the metadata leader applies them, like
//! topic administration). A broker counts deliveries only of the partitions it leads,
//! so [`QueueAdmin::describe`] asks one broker, then the leaders that broker names
//! for the other partitions (or the metadata's, when it names none), a few rounds at
//! most, and merges the answers by partition (`report.rs`: [`QueueReport`]). Purge
//! goes to every partition's leader.

use neo_protocol::api::{
    CreateQueueRequest, CreateQueueResponse, DeadLetter, DeleteQueueRequest, DeleteQueueResponse,
    DescribeQueueRequest, ListQueuesRequest, ListQueuesResponse, PurgeQueueRequest,
    PurgeQueueResponse, QUEUE_BACKOFF_STEPS_MAX, QUEUE_DELAY_MS_MAX, QUEUE_MAX_DELIVERIES_MAX,
    QUEUE_MAX_IN_FLIGHT_MAX, QUEUE_VISIBILITY_TIMEOUT_MS_MAX, QUEUE_VISIBILITY_TIMEOUT_MS_MIN,
    QueueDescription, QueueListing, QueueSettings,
};

use super::report::{DescribeMerge, QueueReport};

use crate::admin::{Admin, RETENTION_BYTES, RETENTION_MS};
use crate::client::Client;
use crate::error::{Error, Result};
use crate::metadata::LeaderLookup;

/// Rounds of `describe_queue` calls to the leaders of partitions not counted yet.
const DESCRIBE_ROUNDS_MAX: u32 = 3;

/// How to create a queue: placement, delivery settings, dead letters, topic configs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueOptions {
    /// Partition count (at least 1).
    pub partitions: u32,
    /// Replicas per partition (at least 1).
    pub replication_factor: u32,
    /// Delivery settings (`settings.dead_letter` is not used: see `dead_letter`).
    pub settings: QueueSettings,
    /// Where dead letters go (default: `Q.dlq`, created with the queue).
    pub dead_letter: DeadLetter,
    /// Topic configuration (`retention.ms`, `retention.bytes`).
    pub configs: Vec<(String, String)>,
}

impl QueueOptions {
    /// `partitions` × `replication_factor`, the default settings, dead letters to
    /// `Q.dlq`, no configs.
    pub fn new(partitions: u32, replication_factor: u32) -> QueueOptions {
        QueueOptions {
            partitions,
            replication_factor,
            settings: QueueSettings::default(),
            dead_letter: DeadLetter::Default,
            configs: Vec::new(),
        }
    }

    /// Lease length of a receive that names none.
    pub fn visibility_timeout_ms(mut self, ms: u32) -> QueueOptions {
        self.settings.visibility_timeout_ms = ms;
        self
    }

    /// Deliveries after which an unacked message is dead-lettered.
    pub fn max_deliveries(mut self, n: u32) -> QueueOptions {
        self.settings.max_deliveries = n;
        self
    }

    /// Where dead letters go.
    pub fn dead_letter(mut self, dead_letter: DeadLetter) -> QueueOptions {
        self.dead_letter = dead_letter;
        self
    }

    /// Never lease two messages of one key at once.
    pub fn ordered_by_key(mut self, on: bool) -> QueueOptions {
        self.settings.ordered_by_key = on;
        self
    }

    /// Bound on leased messages per partition.
    pub fn max_in_flight(mut self, n: u32) -> QueueOptions {
        self.settings.max_in_flight = n;
        self
    }

    /// Bound on leased messages per consumer per partition (0: none).
    pub fn max_in_flight_per_consumer(mut self, n: u32) -> QueueOptions {
        self.settings.max_in_flight_per_consumer = n;
        self
    }

    /// Delays of successive redeliveries after a nack that names none (the last
    /// repeats).
    pub fn redelivery_backoff_ms(mut self, steps: Vec<u32>) -> QueueOptions {
        self.settings.redelivery_backoff_ms = steps;
        self
    }

    /// Retention by age (`retention.ms`).
    pub fn retention_ms(self, ms: u64) -> QueueOptions {
        self.config(RETENTION_MS, ms.to_string())
    }

    /// Retention by size (`retention.bytes`).
    pub fn retention_bytes(self, bytes: u64) -> QueueOptions {
        self.config(RETENTION_BYTES, bytes.to_string())
    }

    /// Any topic config (replacing an earlier value of the same key).
    pub fn config(mut self, key: &str, value: String) -> QueueOptions {
        self.configs.retain(|(k, _)| k != key);
        self.configs.push((key.to_string(), value));
        self
    }

    /// The bounds the broker enforces too, checked before anything is sent.
    pub fn validate(&self) -> Result<()> {
        let s = &self.settings;
        let problem = if self.partitions == 0 || self.replication_factor == 0 {
            Some("partitions and replication factor must be at least 1".to_string())
        } else if !(QUEUE_VISIBILITY_TIMEOUT_MS_MIN..=QUEUE_VISIBILITY_TIMEOUT_MS_MAX)
            .contains(&s.visibility_timeout_ms)
        {
            Some(format!(
                "visibility timeout must be {QUEUE_VISIBILITY_TIMEOUT_MS_MIN} to \
                 {QUEUE_VISIBILITY_TIMEOUT_MS_MAX} ms"
            ))
        } else if !(1..=QUEUE_MAX_DELIVERIES_MAX).contains(&s.max_deliveries) {
            Some(format!(
                "max deliveries must be 1 to {QUEUE_MAX_DELIVERIES_MAX}"
            ))
        } else if !(1..=QUEUE_MAX_IN_FLIGHT_MAX).contains(&s.max_in_flight)
            || s.max_in_flight_per_consumer > QUEUE_MAX_IN_FLIGHT_MAX
        {
            Some(format!(
                "max in flight must be 1 to {QUEUE_MAX_IN_FLIGHT_MAX} (per consumer: 0 to \
                 {QUEUE_MAX_IN_FLIGHT_MAX})"
            ))
        } else if s.redelivery_backoff_ms.len() > QUEUE_BACKOFF_STEPS_MAX
            || s.redelivery_backoff_ms
                .iter()
                .any(|d| *d > QUEUE_DELAY_MS_MAX)
        {
            Some(format!(
                "redelivery backoff: at most {QUEUE_BACKOFF_STEPS_MAX} steps of at most \
                 {QUEUE_DELAY_MS_MAX} ms"
            ))
        } else if matches!(&self.dead_letter, DeadLetter::Queue(q) if q.is_empty()) {
            Some("dead-letter queue name is empty".to_string())
        } else {
            None
        };
        problem.map_or(Ok(()), |p| Err(Error::InvalidArgument(p)))
    }
}

/// Queue administration. Cheap to clone.
#[derive(Debug, Clone)]
pub struct QueueAdmin {
    client: Client,
}

impl QueueAdmin {
    /// An admin handle on `client`.
    pub fn new(client: Client) -> QueueAdmin {
        QueueAdmin { client }
    }

    /// Create a queue (and its dead-letter queue when the broker creates one), then
    /// wait (within the client's retry deadline) until every partition of both has a
    /// leader. Creating an existing queue fails; so does a retry whose first attempt
    /// was applied but whose answer was lost.
    pub async fn create(&self, name: &str, options: QueueOptions) -> Result<CreateQueueResponse> {
        options.validate()?;
        let request = CreateQueueRequest {
            name: name.to_string(),
            partitions: options.partitions,
            replication_factor: options.replication_factor,
            settings: options.settings,
            dead_letter: options.dead_letter,
            configs: options.configs,
        };
        let response: CreateQueueResponse = self.client.call_any("create_queue", &request).await?;
        let admin = Admin::new(self.client.clone());
        admin.wait_for_leaders(name).await?;
        if let Some(dlq) = &response.created_dead_letter {
            admin.wait_for_leaders(dlq).await?;
        }
        Ok(response)
    }

    /// Delete a queue and its data (its dead-letter queue stays).
    pub async fn delete(&self, name: &str) -> Result<()> {
        let request = DeleteQueueRequest {
            name: name.to_string(),
        };
        let _: DeleteQueueResponse = self.client.call_any("delete_queue", &request).await?;
        self.client.refresh_metadata().await.ok();
        Ok(())
    }

    /// Every queue the caller may see, by name.
    pub async fn list(&self) -> Result<Vec<QueueListing>> {
        let resp: ListQueuesResponse = self
            .client
            .call_any("list_queues", &ListQueuesRequest {})
            .await?;
        let mut queues = resp.queues;
        queues.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(queues)
    }

    /// A queue's (or a topic's share group's) settings and the delivery counts of
    /// every partition, each from its leader. Partitions whose leader could not be
    /// reached in three rounds of asking have no counts
    /// ([`QueueReport::missing`]).
    pub async fn describe(&self, name: &str, share_group: Option<&str>) -> Result<QueueReport> {
        let request = DescribeQueueRequest {
            queue: name.to_string(),
            share_group: share_group.map(str::to_string),
        };
        let first: QueueDescription = self.client.call_any("describe_queue", &request).await?;
        let mut merge = DescribeMerge::new(first, None);
        let timeout = self.client.config().request_timeout;
        let policy = self.client.config().retry;
        for round in 0..DESCRIBE_ROUNDS_MAX {
            if merge.missing().is_empty() {
                break;
            }
            if round > 0 {
                tokio::time::sleep(policy.backoff(round)).await;
                self.client.refresh_metadata().await.ok();
            }
            let cache = self.client.metadata().await.ok();
            let targets = merge.targets(|p| match cache.as_ref()?.leader(name, p) {
                LeaderLookup::Address(a) => Some(a),
                _ => None,
            });
            if targets.is_empty() {
                continue;
            }
            let calls = targets.into_keys().map(|address| {
                let request = &request;
                async move {
                    let answer = self
                        .client
                        .call_at::<_, QueueDescription>(
                            &address,
                            "describe_queue",
                            request,
                            timeout,
                        )
                        .await;
                    (address, answer)
                }
            });
            for (address, answer) in futures::future::join_all(calls).await {
                match answer {
                    Ok(d) => merge.add(d, Some(&address)),
                    Err(err) => {
                        tracing::debug!(%address, error = %err, "describe_queue failed");
                    }
                }
            }
        }
        let cache = self.client.metadata().await.ok();
        Ok(merge.report(|p| match cache.as_ref()?.leader(name, p) {
            LeaderLookup::Address(a) => Some(a),
            _ => None,
        }))
    }

    /// Drop every message of a queue (or share group) not yet done, leased ones
    /// included, in every partition (each at its leader). Returns how many were
    /// dropped. Fails if a partition's purge failed (the others may have been purged).
    pub async fn purge(&self, name: &str, share_group: Option<&str>) -> Result<u64> {
        let count = self.client.partition_count(name).await?;
        let timeout = self.client.config().request_timeout;
        let policy = self.client.config().retry;
        let calls = (0..count).map(|p| {
            let request = PurgeQueueRequest {
                queue: name.to_string(),
                share_group: share_group.map(str::to_string),
                partition: Some(p),
            };
            async move {
                self.client
                    .call_partition::<_, PurgeQueueResponse>(
                        name,
                        p,
                        "purge_queue",
                        &request,
                        timeout,
                        policy,
                    )
                    .await
            }
        });
        let mut purged = 0u64;
        let mut failed = None;
        for answer in futures::future::join_all(calls).await {
            match answer {
                Ok(r) => purged = purged.saturating_add(r.purged),
                Err(err) => {
                    failed.get_or_insert(err);
                }
            }
        }
        failed.map_or(Ok(purged), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked_before_sending() {
        assert!(QueueOptions::new(3, 3).validate().is_ok());
        assert!(QueueOptions::new(0, 3).validate().is_err());
        assert!(QueueOptions::new(1, 0).validate().is_err());
        let ok = || QueueOptions::new(1, 1);
        assert!(ok().visibility_timeout_ms(99).validate().is_err());
        assert!(ok().visibility_timeout_ms(100).validate().is_ok());
        assert!(ok().max_deliveries(0).validate().is_err());
        assert!(ok().max_deliveries(1001).validate().is_err());
        assert!(ok().max_in_flight(0).validate().is_err());
        assert!(ok().max_in_flight_per_consumer(0).validate().is_ok());
        assert!(ok().max_in_flight_per_consumer(100_001).validate().is_err());
        assert!(ok().redelivery_backoff_ms(vec![100; 32]).validate().is_ok());
        assert!(
            ok().redelivery_backoff_ms(vec![100; 33])
                .validate()
                .is_err()
        );
        assert!(
            ok().redelivery_backoff_ms(vec![QUEUE_DELAY_MS_MAX + 1])
                .validate()
                .is_err()
        );
        assert!(
            ok().dead_letter(DeadLetter::Queue(String::new()))
                .validate()
                .is_err()
        );
        let o = ok().retention_ms(5).retention_ms(6).retention_bytes(7);
        assert_eq!(
            o.configs,
            vec![
                (RETENTION_MS.to_string(), "6".to_string()),
                (RETENTION_BYTES.to_string(), "7".to_string())
            ],
            "a key set twice keeps the last value"
        );
        assert_eq!(ok().dead_letter, DeadLetter::Default);
    }
}
