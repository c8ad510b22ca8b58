//! A broker in the process, on one node: no sockets, real storage. What tests and
//! applications that embed Neo start ([`Embedded::start`]); the same [`Broker`] and the
//! same operations as a server node.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use neo_raft::{NoPeers, NodeId, NodeStore, Registry, Role};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::facade::{Broker, BrokerConfig, BrokerLimits, SingleNode};
use crate::meta::{MetaCommand, MetaMachine, MetaResponse};

/// The node id of an embedded broker.
pub const EMBEDDED_NODE_ID: NodeId = 1;
/// The (unused) cluster and client address an embedded broker registers.
pub const EMBEDDED_ADDR: &str = "in-process:0";
/// How long [`Embedded::shutdown`] waits for the reconciler to stop.
const RECONCILE_STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long [`Embedded::start`] waits for its metadata group to elect itself.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running single-node broker in this process.
pub struct Embedded {
    broker: Arc<Broker>,
    stop: watch::Sender<bool>,
    reconcile: JoinHandle<()>,
}

impl Embedded {
    /// Opens (or reopens) the broker whose data lives in `dir`, elects its metadata
    /// group, registers the node and starts keeping its partitions open.
    pub async fn start(dir: &Path, limits: BrokerLimits) -> Result<Embedded> {
        // Opening the store (sled, directory scan) is blocking disk I/O.
        let path = dir.to_path_buf();
        let store = tokio::task::spawn_blocking(move || NodeStore::open(path))
            .await
            .map_err(|e| join_error("open the node store", e))??;
        let (stop, stop_rx) = watch::channel(false);
        let (machine, view) = MetaMachine::new();
        let broker = Broker::open(
            BrokerConfig {
                node_id: EMBEDDED_NODE_ID,
                advertise_client: EMBEDDED_ADDR.to_string(),
                limits,
                access: Default::default(),
                timing: Default::default(),
            },
            store,
            Arc::new(NoPeers),
            Arc::new(Registry::new()),
            Arc::new(SingleNode),
            stop_rx.clone(),
            machine,
            view,
        )
        .await?;
        broker
            .bootstrap_metadata(&BTreeMap::from([(
                EMBEDDED_NODE_ID,
                EMBEDDED_ADDR.to_string(),
            )]))
            .await?;
        broker
            .meta_group()
            .wait_until(START_TIMEOUT, "metadata leader", |m| m.role == Role::Leader)
            .await?;
        let registered = crate::meta::propose(
            broker.meta_group(),
            &MetaCommand::RegisterNode {
                node_id: EMBEDDED_NODE_ID,
                addr: EMBEDDED_ADDR.to_string(),
                client_addr: EMBEDDED_ADDR.to_string(),
            },
        )
        .await?;
        if let MetaResponse::Refused(e) = registered {
            return Err(Error::Raft(neo_raft::Error::Membership {
                group: neo_raft::METADATA_GROUP,
                reason: e.to_string(),
            }));
        }
        let b = broker.clone();
        let duties_stop = stop_rx.clone();
        let queue_stop = stop_rx.clone();
        let reconcile = tokio::spawn(async move {
            // The group duties (evictions, expiry) and the queue duties (expiry at max
            // deliveries, dead-letter moves) run beside the reconciler and stop with it.
            let duties = b.group_duties(duties_stop);
            let queues = b.queue_duties(queue_stop);
            tokio::join!(b.reconcile(stop_rx), duties, queues);
        });
        Ok(Embedded {
            broker,
            stop,
            reconcile,
        })
    }

    /// The broker.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// Stops the broker: long polls end, the groups stop, the store is flushed.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        // The reconciler returns at its next await; a pass stuck in a group's open or
        // bootstrap must not hold shutdown.
        if tokio::time::timeout(RECONCILE_STOP_TIMEOUT, self.reconcile)
            .await
            .is_err()
        {
            tracing::warn!("reconcile did not stop within {RECONCILE_STOP_TIMEOUT:?}");
        }
        self.broker.shutdown().await;
        let store = self.broker.store().clone();
        match tokio::task::spawn_blocking(move || store.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("flush of the metadata store: {e}"),
            Err(e) => tracing::warn!("flush of the metadata store: {e}"),
        }
    }
}

/// A blocking task that did not finish (panicked or was cancelled).
fn join_error(what: &str, e: tokio::task::JoinError) -> Error {
    Error::Raft(neo_raft::Error::Fatal {
        group: neo_raft::METADATA_GROUP,
        reason: format!("{what}: {e}"),
    })
}
