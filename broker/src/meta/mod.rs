//! The metadata group's application state: [`state`] holds the pure data and rules
//! ([`MetaState::apply`]); [`MetaMachine`] is the [`StateMachine`] that feeds it the
//! committed commands and publishes every new state to a [`MetaView`].

pub mod queues;
pub mod security;
pub mod state;

use std::sync::Arc;

use bytes::Bytes;
use neo_raft::{AppliedBatch, EntryId, RaftGroup, StateMachine};
use tokio::sync::watch;

pub use state::{
    MetaCommand, MetaError, MetaResponse, MetaState, NodeInfo, PARTITIONS_PER_TOPIC_MAX,
    PartitionInfo, TOPIC_NAME_LEN_MAX, TopicInfo,
};

use crate::error::{Error, Result};

/// The metadata state as this replica has applied it: changes after every applied run
/// that changed it (and after a snapshot install).
pub type MetaView = watch::Receiver<Arc<MetaState>>;

/// The metadata group's [`StateMachine`].
pub struct MetaMachine {
    state: MetaState,
    /// Set when the state changed since the last publish.
    changed: bool,
    tx: watch::Sender<Arc<MetaState>>,
}

impl MetaMachine {
    /// An empty machine and the view that follows it.
    pub fn new() -> (MetaMachine, MetaView) {
        let (tx, rx) = watch::channel(Arc::new(MetaState::default()));
        (
            MetaMachine {
                state: MetaState::default(),
                changed: false,
                tx,
            },
            rx,
        )
    }
}

impl StateMachine for MetaMachine {
    fn apply_records(&mut self, _: EntryId, _: &AppliedBatch, _: &[u8]) {
        // The metadata group holds no records (neo-raft skips them before this).
    }

    fn apply_command(&mut self, _: EntryId, command: &[u8]) -> Bytes {
        let response = match qiss::from_slice::<MetaCommand>(command) {
            Ok(cmd) => {
                let r = self.state.apply(&cmd);
                self.changed |= !matches!(r, MetaResponse::Refused(_));
                r
            }
            // Refused the same way on every replica: the bytes are the same everywhere.
            Err(e) => MetaResponse::Refused(MetaError::Invalid {
                reason: format!("undecodable metadata command: {e}"),
            }),
        };
        encode_response(&response)
    }

    fn publish(&mut self) {
        if std::mem::take(&mut self.changed) {
            self.tx.send_replace(Arc::new(self.state.clone()));
        }
    }

    fn snapshot(&self) -> std::io::Result<Vec<u8>> {
        crate::error::encode_image("metadata image", &self.state)
    }

    fn restore(&mut self, image: &[u8]) -> std::io::Result<()> {
        self.state = match crate::error::decode_image("metadata image", image) {
            Ok(state) => state,
            // An image from before users and ACLs, queues, the security state, or
            // consumer groups: newest layout first.
            Err(e) => match qiss::from_slice::<state::MetaStateV4>(image) {
                Ok(old) => old.into(),
                Err(_) => match qiss::from_slice::<state::MetaStateV3>(image) {
                    Ok(old) => old.into(),
                    Err(_) => match qiss::from_slice::<state::MetaStateV2>(image) {
                        Ok(old) => old.into(),
                        Err(_) => match qiss::from_slice::<state::MetaStateV1>(image) {
                            Ok(old) => old.into(),
                            Err(_) => return Err(e),
                        },
                    },
                },
            },
        };
        self.changed = true;
        Ok(())
    }
}

fn encode_response(r: &MetaResponse) -> Bytes {
    // Plain data: encoding cannot fail; an empty answer would be refused by `propose`.
    Bytes::from(qiss::to_vec(r).unwrap_or_default())
}

/// Proposes `cmd` to the metadata group through `group` (which must lead it); returns
/// the committed outcome (a refusal is `Ok(MetaResponse::Refused(..))`: the command was
/// committed and changed nothing).
pub async fn propose(group: &RaftGroup, cmd: &MetaCommand) -> Result<MetaResponse> {
    let bytes = qiss::to_vec(cmd).map_err(|e| Error::codec("metadata command", e))?;
    let answer = group.propose_command(Bytes::from(bytes)).await?;
    qiss::from_slice(&answer).map_err(|e| Error::codec("metadata answer", e))
}

/// A linearizable read of the metadata state: waits until `group` leads a
/// quorum-confirmed term and has applied everything committed before the call.
pub async fn linearizable(group: &RaftGroup, view: &MetaView) -> Result<Arc<MetaState>> {
    group.ensure_linearizable().await?;
    Ok(view.borrow().clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(index: u64) -> EntryId {
        EntryId { term: 1, index }
    }

    fn register(node_id: u64) -> Vec<u8> {
        qiss::to_vec(&MetaCommand::RegisterNode {
            node_id,
            addr: format!("10.0.0.{node_id}:7071"),
            client_addr: format!("10.0.0.{node_id}:7070"),
        })
        .unwrap()
    }

    #[test]
    fn applies_commands_publishes_and_restores_from_its_image() {
        let (mut m, view) = MetaMachine::new();
        let r: MetaResponse = qiss::from_slice(&m.apply_command(at(1), &register(1))).unwrap();
        assert_eq!(r, MetaResponse::Done);
        assert!(
            view.borrow().nodes.is_empty(),
            "published only after the run"
        );
        m.publish();
        assert_eq!(view.borrow().nodes.len(), 1);

        let image = m.snapshot().unwrap();
        let (mut copy, copy_view) = MetaMachine::new();
        copy.restore(&image).unwrap();
        copy.publish();
        assert_eq!(*copy_view.borrow().as_ref(), *view.borrow().as_ref());
    }

    #[test]
    fn garbage_is_refused_the_same_way_everywhere_and_changes_nothing() {
        let (mut m, view) = MetaMachine::new();
        let a = m.apply_command(at(1), &[0xff, 0xff, 0xff]);
        let (mut other, _) = MetaMachine::new();
        assert_eq!(a, other.apply_command(at(1), &[0xff, 0xff, 0xff]));
        let r: MetaResponse = qiss::from_slice(&a).unwrap();
        assert!(matches!(
            r,
            MetaResponse::Refused(MetaError::Invalid { .. })
        ));
        m.publish();
        assert!(view.borrow().nodes.is_empty());
        assert!(m.restore(&[0xff, 0x01]).is_err(), "a bad image is an error");
    }
}
