//! The metadata cache: brokers, the controller, and each partition's leader and
//! replicas. Pure data and decisions; [`crate::Client`] does the I/O.
//!
//! Sources of truth, in order of freshness:
//! 1. a `NotLeader` hint just received (the leader's client address), applied with
//!    [`MetadataCache::apply_leader_hint`];
//! 2. the last `metadata` response ([`MetadataCache::apply`]);
//! 3. nothing: a topic not in the cache yet is fetched on first use.
//!
//! The cache is marked stale by errors that suggest it is wrong (wrong leader, dead
//! connection) and when older than `metadata_age_max`; the next lookup then refreshes.

use std::collections::HashMap;
use std::time::Duration;

use neo_protocol::api::{MetadataResponse, PartitionMetadata};
use tokio::time::Instant;

/// One broker as the cache knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    /// Node id.
    pub id: u64,
    /// Client address (`host:port`).
    pub address: String,
}

/// One partition's placement as the cache knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    /// Partition index.
    pub partition: u32,
    /// Leader node id, if any.
    pub leader: Option<u64>,
    /// Leader address learnt from a `NotLeader` hint for a broker not (yet) in the
    /// broker list; wins over `leader` until the next refresh.
    pub leader_address_hint: Option<String>,
    /// Replica node ids.
    pub replicas: Vec<u64>,
    /// In-sync replica node ids.
    pub in_sync: Vec<u64>,
    /// Leader epoch (term) of `leader`.
    pub leader_epoch: u64,
}

impl From<&PartitionMetadata> for PartitionInfo {
    fn from(p: &PartitionMetadata) -> PartitionInfo {
        PartitionInfo {
            partition: p.partition,
            leader: p.leader,
            leader_address_hint: None,
            replicas: p.replicas.clone(),
            in_sync: p.in_sync.clone(),
            leader_epoch: p.leader_epoch,
        }
    }
}

/// What a lookup of a partition's leader found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaderLookup {
    /// The leader's client address.
    Address(String),
    /// The topic is not in the cache.
    UnknownTopic,
    /// The topic has fewer partitions.
    UnknownPartition {
        /// How many it has.
        count: u32,
    },
    /// The partition exists but has no known leader (or the leader's address is not
    /// known).
    NoLeader,
}

/// The cached cluster view.
#[derive(Debug, Clone)]
pub struct MetadataCache {
    brokers: HashMap<u64, Broker>,
    controller: Option<u64>,
    topics: HashMap<String, Vec<PartitionInfo>>,
    refreshed_at: Option<Instant>,
    stale: bool,
    /// Bumped on every applied refresh, so that a caller can tell whether someone else
    /// refreshed since it saw an error (single-flight refreshes).
    generation: u64,
}

impl Default for MetadataCache {
    fn default() -> Self {
        MetadataCache::new()
    }
}

impl MetadataCache {
    /// An empty cache (stale: the first lookup refreshes).
    pub fn new() -> MetadataCache {
        MetadataCache {
            brokers: HashMap::new(),
            controller: None,
            topics: HashMap::new(),
            refreshed_at: None,
            stale: true,
            generation: 0,
        }
    }

    /// Apply a metadata response. `topics_asked` empty means the response lists every
    /// topic, so cached topics missing from it are forgotten (they were deleted).
    pub fn apply(&mut self, response: &MetadataResponse, topics_asked: &[String], now: Instant) {
        self.brokers = response
            .brokers
            .iter()
            .map(|b| {
                (
                    b.node_id,
                    Broker {
                        id: b.node_id,
                        address: b.address.clone(),
                    },
                )
            })
            .collect();
        self.controller = response.controller_id;
        if topics_asked.is_empty() {
            self.topics.clear();
        } else {
            for topic in topics_asked {
                self.topics.remove(topic);
            }
        }
        for topic in &response.topics {
            let mut partitions: Vec<PartitionInfo> =
                topic.partitions.iter().map(PartitionInfo::from).collect();
            partitions.sort_by_key(|p| p.partition);
            self.topics.insert(topic.name.clone(), partitions);
        }
        self.refreshed_at = Some(now);
        self.stale = false;
        self.generation += 1;
    }

    /// How many cached partitions have no leader whose address is known.
    pub fn leaderless(&self) -> usize {
        self.topics
            .values()
            .flatten()
            .filter(|p| {
                p.leader_address_hint.is_none()
                    && !p.leader.is_some_and(|id| self.brokers.contains_key(&id))
            })
            .count()
    }

    /// Fill in leaders from another broker's metadata `response`: each cached partition
    /// with no known leader takes the leader `response` gives it, if any, and so does
    /// one whose cached leader is of an older epoch (term) than `response`'s. Brokers
    /// and topics are not changed (a broker behind on the metadata log may not know
    /// them yet). One broker's view can lag: a leader cut off from its followers gives
    /// no leader for its partitions, and the follower side knows the new one.
    pub fn merge_leaders(&mut self, response: &MetadataResponse) {
        for topic in &response.topics {
            let Some(cached) = self.topics.get_mut(&topic.name) else {
                continue;
            };
            for p in &topic.partitions {
                let Some(leader) = p.leader.filter(|id| self.brokers.contains_key(id)) else {
                    continue;
                };
                let Some(c) = cached.iter_mut().find(|c| c.partition == p.partition) else {
                    continue;
                };
                let known = c.leader.is_some_and(|id| self.brokers.contains_key(&id));
                if !known || p.leader_epoch > c.leader_epoch {
                    c.leader = Some(leader);
                    c.leader_epoch = p.leader_epoch;
                    c.leader_address_hint = None;
                    c.in_sync = p.in_sync.clone();
                }
            }
        }
    }

    /// Apply a `NotLeader` hint: `address` now leads `topic`/`partition`. Returns
    /// whether the hint could be used (the partition is cached).
    pub fn apply_leader_hint(&mut self, topic: &str, partition: u32, address: &str) -> bool {
        let broker = self
            .brokers
            .values()
            .find(|b| b.address == address)
            .map(|b| b.id);
        let Some(p) = self
            .topics
            .get_mut(topic)
            .and_then(|ps| ps.iter_mut().find(|p| p.partition == partition))
        else {
            return false;
        };
        match broker {
            Some(id) => {
                p.leader = Some(id);
                p.leader_address_hint = None;
            }
            None => p.leader_address_hint = Some(address.to_string()),
        }
        true
    }

    /// Mark the cache as probably wrong: the next lookup refreshes it.
    pub fn mark_stale(&mut self) {
        self.stale = true;
    }

    /// Whether the cache should be refreshed before use.
    pub fn needs_refresh(&self, now: Instant, age_max: Duration) -> bool {
        match self.refreshed_at {
            None => true,
            Some(at) => self.stale || now.saturating_duration_since(at) >= age_max,
        }
    }

    /// Incremented by every [`MetadataCache::apply`].
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Where `topic`/`partition`'s leader is.
    pub fn leader(&self, topic: &str, partition: u32) -> LeaderLookup {
        let Some(partitions) = self.topics.get(topic) else {
            return LeaderLookup::UnknownTopic;
        };
        let Some(p) = partitions.iter().find(|p| p.partition == partition) else {
            return LeaderLookup::UnknownPartition {
                count: partitions.len() as u32,
            };
        };
        if let Some(address) = &p.leader_address_hint {
            return LeaderLookup::Address(address.clone());
        }
        match p.leader.and_then(|id| self.brokers.get(&id)) {
            Some(broker) => LeaderLookup::Address(broker.address.clone()),
            None => LeaderLookup::NoLeader,
        }
    }

    /// The partition count of a cached topic.
    pub fn partition_count(&self, topic: &str) -> Option<u32> {
        self.topics.get(topic).map(|ps| ps.len() as u32)
    }

    /// A cached topic's partitions.
    pub fn partitions(&self, topic: &str) -> Option<&[PartitionInfo]> {
        self.topics.get(topic).map(Vec::as_slice)
    }

    /// Every cached broker, by id.
    pub fn brokers(&self) -> Vec<Broker> {
        let mut brokers: Vec<Broker> = self.brokers.values().cloned().collect();
        brokers.sort_by_key(|b| b.id);
        brokers
    }

    /// The controller's address, if known.
    pub fn controller_address(&self) -> Option<String> {
        self.controller
            .and_then(|id| self.brokers.get(&id))
            .map(|b| b.address.clone())
    }

    /// Cached topic names, sorted.
    pub fn topics(&self) -> Vec<String> {
        let mut names: Vec<String> = self.topics.keys().cloned().collect();
        names.sort();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use neo_protocol::api::{BrokerInfo, TopicMetadata};

    fn response(leader: Option<u64>) -> MetadataResponse {
        MetadataResponse {
            cluster_id: "c".into(),
            brokers: (1..=3)
                .map(|id| BrokerInfo {
                    node_id: id,
                    address: format!("127.0.0.1:70{id}0"),
                    rack: None,
                })
                .collect(),
            controller_id: Some(2),
            topics: vec![TopicMetadata {
                name: "t".into(),
                partitions: (0..3)
                    .rev()
                    .map(|p| PartitionMetadata {
                        partition: p,
                        leader,
                        replicas: vec![1, 2, 3],
                        in_sync: vec![1, 2, 3],
                        leader_epoch: 1,
                    })
                    .collect(),
            }],
        }
    }

    #[test]
    fn lookups_follow_the_response() {
        let mut cache = MetadataCache::new();
        let now = Instant::now();
        assert!(cache.needs_refresh(now, Duration::from_secs(30)));
        assert_eq!(cache.leader("t", 0), LeaderLookup::UnknownTopic);
        cache.apply(&response(Some(1)), &[], now);
        assert!(!cache.needs_refresh(now, Duration::from_secs(30)));
        assert_eq!(
            cache.leader("t", 2),
            LeaderLookup::Address("127.0.0.1:7010".into())
        );
        assert_eq!(
            cache.leader("t", 3),
            LeaderLookup::UnknownPartition { count: 3 }
        );
        assert_eq!(cache.partition_count("t"), Some(3));
        assert_eq!(cache.partitions("t").unwrap()[0].partition, 0, "sorted");
        assert_eq!(
            cache.controller_address().as_deref(),
            Some("127.0.0.1:7020")
        );

        cache.apply(&response(None), &["t".into()], now);
        assert_eq!(cache.leader("t", 0), LeaderLookup::NoLeader);
    }

    #[test]
    fn not_leader_hint_moves_the_leader() {
        let mut cache = MetadataCache::new();
        cache.apply(&response(Some(1)), &[], Instant::now());
        assert!(cache.apply_leader_hint("t", 1, "127.0.0.1:7030"));
        assert_eq!(
            cache.leader("t", 1),
            LeaderLookup::Address("127.0.0.1:7030".into())
        );
        assert_eq!(
            cache.leader("t", 0),
            LeaderLookup::Address("127.0.0.1:7010".into())
        );
        // An address outside the broker list is used as is until the next refresh.
        assert!(cache.apply_leader_hint("t", 0, "10.0.0.9:7070"));
        assert_eq!(
            cache.leader("t", 0),
            LeaderLookup::Address("10.0.0.9:7070".into())
        );
        cache.apply(&response(Some(1)), &[], Instant::now());
        assert_eq!(
            cache.leader("t", 0),
            LeaderLookup::Address("127.0.0.1:7010".into())
        );
        // A hint for a topic the cache does not know is refused.
        assert!(!cache.apply_leader_hint("other", 0, "127.0.0.1:7030"));
    }

    #[test]
    fn staleness_and_age() {
        let mut cache = MetadataCache::new();
        let t0 = Instant::now();
        cache.apply(&response(Some(1)), &[], t0);
        let generation = cache.generation();
        assert!(cache.needs_refresh(t0 + Duration::from_secs(31), Duration::from_secs(30)));
        cache.mark_stale();
        assert!(cache.needs_refresh(t0, Duration::from_secs(30)));
        cache.apply(&response(Some(1)), &[], t0);
        assert_eq!(cache.generation(), generation + 1);
        assert!(!cache.needs_refresh(t0, Duration::from_secs(30)));
    }

    #[test]
    fn merge_fills_leaderless_partitions_and_newer_epochs_only() {
        let mut cache = MetadataCache::new();
        // The first broker to answer leads partition 1 but lost its quorum: no leader.
        let mut first = response(Some(1));
        first.topics[0].partitions[1].leader = None;
        cache.apply(&first, &[], Instant::now());
        assert_eq!(cache.leaderless(), 1);
        assert_eq!(cache.leader("t", 1), LeaderLookup::NoLeader);

        // Another broker still names the old leader of epoch 1 for every partition, and
        // a new leader of epoch 2 for partition 2.
        let mut second = response(Some(1));
        second.topics[0].partitions[0].leader = Some(3);
        second.topics[0].partitions[0].leader_epoch = 2;
        second.topics[0].partitions[2].leader = Some(2); // same epoch: ignored
        cache.merge_leaders(&second);
        assert_eq!(cache.leaderless(), 0);
        // Partitions are listed in reverse: index 0 of the response is partition 2.
        assert_eq!(
            cache.leader("t", 2),
            LeaderLookup::Address("127.0.0.1:7030".into()),
            "a newer epoch wins"
        );
        assert_eq!(
            cache.leader("t", 0),
            LeaderLookup::Address("127.0.0.1:7010".into()),
            "the same epoch does not replace a known leader"
        );
        assert_eq!(
            cache.leader("t", 1),
            LeaderLookup::Address("127.0.0.1:7010".into()),
            "a leaderless partition takes what another broker knows"
        );

        // A leader outside the broker list, and a topic not cached, change nothing.
        let mut third = response(Some(9));
        third.topics[0].name = "other".into();
        cache.merge_leaders(&third);
        cache.merge_leaders(&response(Some(9)));
        assert_eq!(cache.topics(), vec!["t".to_string()]);
        assert_eq!(
            cache.leader("t", 1),
            LeaderLookup::Address("127.0.0.1:7010".into())
        );
    }

    #[test]
    fn full_refresh_forgets_deleted_topics() {
        let mut cache = MetadataCache::new();
        cache.apply(&response(Some(1)), &[], Instant::now());
        let mut empty = response(Some(1));
        empty.topics.clear();
        // Asked for another topic: "t" is kept.
        cache.apply(&empty, &["x".into()], Instant::now());
        assert_eq!(cache.topics(), vec!["t".to_string()]);
        // Asked for everything: "t" is gone.
        cache.apply(&empty, &[], Instant::now());
        assert!(cache.topics().is_empty());
    }
}
