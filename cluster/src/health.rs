//! Node health: one heartbeat per peer per [`HEARTBEAT_INTERVAL_MS`] over the shared
//! channel, whatever the number of Raft groups. Raft groups keep their own (sparser)
//! heartbeats for leadership; this is what status pages and placement read.
//!
//! Cost: `peers × (1000 / HEARTBEAT_INTERVAL_MS)` small RPCs per second per node, flat
//! in the number of partitions.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use neo_raft::NodeId;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use crate::pb::health::health_server::Health;
use crate::pb::health::{HeartbeatReply, HeartbeatRequest};
use crate::transport::GrpcTransport;

/// Period of node heartbeats.
pub const HEARTBEAT_INTERVAL_MS: u64 = 500;
/// A peer is healthy if a heartbeat was answered within this many intervals.
pub const HEALTHY_INTERVALS: u32 = 3;

/// Last answered heartbeat per peer. Cheap to clone; clones share the state.
#[derive(Clone, Default)]
pub struct HealthMonitor {
    last_ok: Arc<RwLock<BTreeMap<NodeId, Instant>>>,
}

impl HealthMonitor {
    /// A monitor that has heard from nobody.
    pub fn new() -> Self {
        Self::default()
    }

    /// Time since `peer` last answered a heartbeat; `None` if it never did.
    pub fn since_last_ok(&self, peer: NodeId) -> Option<Duration> {
        self.last_ok
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&peer)
            .map(|t| t.elapsed())
    }

    /// Whether `peer` answered within [`HEALTHY_INTERVALS`] heartbeat periods.
    pub fn is_healthy(&self, peer: NodeId) -> bool {
        self.since_last_ok(peer)
            .is_some_and(|d| d < Duration::from_millis(HEARTBEAT_INTERVAL_MS) * HEALTHY_INTERVALS)
    }

    fn record(&self, peer: NodeId) {
        self.last_ok
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(peer, Instant::now());
    }

    /// Heartbeats every peer known to `transport` until `stop` changes.
    pub fn spawn(
        &self,
        me: NodeId,
        transport: GrpcTransport,
        mut stop: watch::Receiver<bool>,
    ) -> JoinHandle<()> {
        let monitor = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(HEARTBEAT_INTERVAL_MS));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.changed() => return,
                }
                let beats = transport.peer_ids().into_iter().map(|peer| {
                    let t = transport.clone();
                    async move { (peer, t.heartbeat(me, peer).await) }
                });
                for (peer, ok) in futures::future::join_all(beats).await {
                    if ok {
                        monitor.record(peer);
                    }
                }
            }
        })
    }
}

/// The `Health` gRPC service: answers heartbeats.
pub struct HealthService {
    pub(crate) node_id: NodeId,
}

#[tonic::async_trait]
impl Health for HealthService {
    async fn heartbeat(
        &self,
        _req: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatReply>, Status> {
        Ok(Response::new(HeartbeatReply {
            node_id: self.node_id,
        }))
    }
}
