//! Membership: static bootstrap from `--peers`, join (learner, then voter), leave, and
//! status. Join and leave run on the metadata group's leader; any other node answers
//! with a leader hint, and [`join`] follows it.
//!
//! The client calls ([`join`], [`leave`], [`status`]) are plaintext; their `_with_tls`
//! forms use mutual TLS with the node's [`ClusterTls`] when one is given (a cluster
//! with TLS on refuses plaintext clients).
//!
//! With cluster TLS on, the server checks who asks ([`crate::peer`]): a `Join` of node N
//! needs a certificate naming N; a `Leave` of node N one naming N or a voter of the
//! metadata group; otherwise `PERMISSION_DENIED`, having changed nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use neo_broker::meta::{MetaCommand, MetaResponse, MetaView};
use neo_raft::{METADATA_GROUP, NodeId, RaftGroup, Registry};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use crate::error::{Error, Result, error_chain};
use crate::health::HealthMonitor;
use crate::limits::{CONNECT_TIMEOUT_MS, MEMBERSHIP_CALL_TIMEOUT_MS, STATUS_CALL_TIMEOUT_MS};
use crate::pb::membership::membership_client::MembershipClient;
use crate::pb::membership::membership_server::Membership;
use crate::pb::membership::{
    ChangeReply, JoinRequest, LeaveRequest, NodeStatus, StatusReply, StatusRequest,
};
use crate::peer::{Caller, Refusal};
use crate::tls::{ClusterTls, scheme};

/// Most voters of the metadata group; later joiners stay learners (design.md).
pub const METADATA_VOTERS_MAX: usize = 5;

/// Parses `--peers 1=host:port,2=host:port,...`.
pub fn parse_peers(s: &str) -> Result<BTreeMap<NodeId, String>> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = |reason: &str| Error::BadPeers {
            entry: part.to_string(),
            reason: reason.to_string(),
        };
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| bad("expected ID=HOST:PORT"))?;
        let id: NodeId = id
            .trim()
            .parse()
            .map_err(|_| bad("node id is not a number"))?;
        let addr = addr.trim();
        if addr
            .rsplit_once(':')
            .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        {
            return Err(bad("address is not HOST:PORT"));
        }
        if out.insert(id, addr.to_string()).is_some() {
            return Err(bad("node id given twice"));
        }
    }
    if out.is_empty() {
        return Err(Error::BadPeers {
            entry: s.to_string(),
            reason: "no peers".into(),
        });
    }
    Ok(out)
}

/// The `Membership` gRPC service of one node.
pub struct MembershipService {
    pub(crate) node_id: NodeId,
    pub(crate) registry: Arc<Registry>,
    pub(crate) health: HealthMonitor,
    pub(crate) meta: MetaView,
    /// Cluster TLS on: callers are checked ([`crate::peer`]).
    pub(crate) tls: bool,
}

/// A refused caller, logged for audit.
fn denied(call: &'static str, node: NodeId, r: Refusal) -> Status {
    tracing::warn!(target: "neo::audit", call, node, "cluster port: {r}");
    Status::from(r)
}

/// Proposes a metadata command; a refusal or a codec failure is a refused change.
async fn propose(g: &RaftGroup, cmd: MetaCommand) -> neo_raft::Result<()> {
    let refused = |reason: String| neo_raft::Error::Membership {
        group: METADATA_GROUP,
        reason,
    };
    match neo_broker::meta::propose(g, &cmd).await {
        Ok(MetaResponse::Refused(e)) => Err(refused(e.to_string())),
        Ok(_) => Ok(()),
        Err(neo_broker::Error::Raft(e)) => Err(e),
        Err(e) => Err(refused(e.to_string())),
    }
}

fn refused(g: &RaftGroup, e: neo_raft::Error) -> ChangeReply {
    let leader = match &e {
        neo_raft::Error::NotLeader { leader, .. } => *leader,
        _ => g.metrics().leader,
    };
    ChangeReply {
        ok: false,
        leader_id: leader.unwrap_or(0),
        leader_addr: leader.and_then(|l| g.member_addr(l)).unwrap_or_default(),
        error: e.to_string(),
    }
}

const OK: ChangeReply = ChangeReply {
    ok: true,
    leader_id: 0,
    leader_addr: String::new(),
    error: String::new(),
};

impl MembershipService {
    fn meta(&self) -> Result<Arc<RaftGroup>, Status> {
        self.registry
            .get(METADATA_GROUP)
            .ok_or_else(|| Status::unavailable("this node does not host the metadata group"))
    }

    async fn do_join(
        g: &RaftGroup,
        node: NodeId,
        addr: String,
        client_addr: String,
    ) -> neo_raft::Result<()> {
        propose(
            g,
            MetaCommand::RegisterNode {
                node_id: node,
                addr: addr.clone(),
                client_addr,
            },
        )
        .await?;
        let m = g.metrics();
        if m.voters.contains(&node) {
            return Ok(()); // Idempotent: a restarted node joins again.
        }
        g.add_learner(node, addr).await?;
        let m = g.metrics();
        if m.voters.len() < METADATA_VOTERS_MAX {
            let mut voters = m.voters.clone();
            voters.insert(node);
            g.change_membership(voters).await?;
        }
        Ok(())
    }

    async fn do_leave(g: &RaftGroup, node: NodeId) -> neo_raft::Result<()> {
        g.remove_members(BTreeSet::from([node])).await?;
        propose(g, MetaCommand::RemoveNode { node_id: node }).await
    }
}

#[tonic::async_trait]
impl Membership for MembershipService {
    async fn join(&self, req: Request<JoinRequest>) -> Result<Response<ChangeReply>, Status> {
        let node = req.get_ref().node_id;
        Caller::of(self.tls, &req)
            .may_join(node)
            .map_err(|r| denied("join", node, r))?;
        let req = req.into_inner();
        let g = self.meta()?;
        // A join may re-register a node (a restart, a new address once the old one is
        // silent), but never take over the id of a node that is alive elsewhere.
        let registered = (self.meta.borrow().nodes.get(&req.node_id)).map(|n| n.addr.clone());
        let known = registered.or_else(|| g.member_addr(req.node_id));
        if let Some(known) = known
            && known != req.addr
            && req.node_id != self.node_id
            && self.health.is_healthy(req.node_id)
        {
            return Err(Status::permission_denied(format!(
                "node {} is alive at {known}: a join for its id from {} is refused",
                req.node_id, req.addr
            )));
        }
        Ok(Response::new(
            match Self::do_join(&g, req.node_id, req.addr, req.client_addr).await {
                Ok(()) => OK,
                Err(e) => refused(&g, e),
            },
        ))
    }

    async fn leave(&self, req: Request<LeaveRequest>) -> Result<Response<ChangeReply>, Status> {
        let caller = Caller::of(self.tls, &req);
        let req = req.into_inner();
        let g = self.meta()?;
        caller
            .may_leave(req.node_id, |id| g.metrics().voters.contains(&id))
            .map_err(|r| denied("leave", req.node_id, r))?;
        Ok(Response::new(match Self::do_leave(&g, req.node_id).await {
            Ok(()) => OK,
            Err(e) => refused(&g, e),
        }))
    }

    async fn status(&self, _req: Request<StatusRequest>) -> Result<Response<StatusReply>, Status> {
        let g = self.meta()?;
        let m = g.metrics();
        let state = self.meta.borrow().clone();
        let mut ids: BTreeSet<NodeId> = state.nodes.keys().copied().collect();
        ids.extend(m.voters.iter().chain(m.learners.iter()).copied());
        let nodes = ids
            .into_iter()
            .map(|id| {
                let addr = state
                    .nodes
                    .get(&id)
                    .map(|n| n.addr.clone())
                    .or_else(|| g.member_addr(id))
                    .unwrap_or_default();
                let (healthy, last) = if id == self.node_id {
                    (true, Some(0))
                } else {
                    let since = self.health.since_last_ok(id);
                    (
                        self.health.is_healthy(id),
                        since.map(|d| d.as_millis() as u64),
                    )
                };
                NodeStatus {
                    node_id: id,
                    addr,
                    voter: m.voters.contains(&id),
                    learner: m.learners.contains(&id),
                    healthy,
                    last_heartbeat_ms: last,
                }
            })
            .collect();
        Ok(Response::new(StatusReply {
            node_id: self.node_id,
            leader_id: m.leader.unwrap_or(0),
            nodes,
        }))
    }
}

/// Longest chain of leader hints [`join`] and [`leave`] follow.
const REDIRECTS_MAX: usize = 8;

enum Change<'a> {
    Join {
        node_id: NodeId,
        addr: &'a str,
        client_addr: &'a str,
    },
    Leave {
        node_id: NodeId,
    },
}

/// Connects to the control plane at `target` (`host:port`), over mutual TLS with `tls`;
/// every call on the channel fails with `DeadlineExceeded` after `call_timeout_ms`.
async fn connect(target: &str, tls: Option<&ClusterTls>, call_timeout_ms: u64) -> Result<Channel> {
    let endpoint = Endpoint::from_shared(format!("{}://{target}", scheme(tls)))
        .map_err(|e| Error::BadAddress {
            node: 0,
            addr: target.to_string(),
            reason: e.to_string(),
        })?
        .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
        .timeout(Duration::from_millis(call_timeout_ms));
    let endpoint = match tls {
        Some(tls) => endpoint
            .tls_config(tls.client_config())
            .map_err(|e| Error::BadAddress {
                node: 0,
                addr: target.to_string(),
                reason: format!("tls: {e}"),
            })?,
        None => endpoint,
    };
    endpoint.connect().await.map_err(|e| Error::Rpc {
        reason: format!("connect {target}: {}", error_chain(&e)),
    })
}

async fn change_at_leader(seed: &str, change: Change<'_>, tls: Option<&ClusterTls>) -> Result<()> {
    let mut target = seed.to_string();
    for _ in 0..REDIRECTS_MAX {
        let channel = connect(&target, tls, MEMBERSHIP_CALL_TIMEOUT_MS).await?;
        let mut client = MembershipClient::new(channel);
        let reply = match change {
            Change::Join {
                node_id,
                addr,
                client_addr,
            } => {
                client
                    .join(JoinRequest {
                        node_id,
                        addr: addr.to_string(),
                        client_addr: client_addr.to_string(),
                    })
                    .await
            }
            Change::Leave { node_id } => client.leave(LeaveRequest { node_id }).await,
        }
        .map_err(|s| Error::Rpc {
            reason: error_chain(&s),
        })?
        .into_inner();
        if reply.ok {
            return Ok(());
        }
        if reply.leader_addr.is_empty() || reply.leader_addr == target {
            return Err(Error::Rpc {
                reason: format!("membership change refused: {}", reply.error),
            });
        }
        target = reply.leader_addr;
    }
    Err(Error::Rpc {
        reason: "too many leader redirects".into(),
    })
}

/// Asks the cluster at `seed` (`host:port` of any member) to add node `node_id`,
/// reachable at `addr`: registered in the metadata, a learner of the metadata group,
/// then a voter while there are fewer than [`METADATA_VOTERS_MAX`]. Follows leader
/// hints; idempotent (a restarted node may join again).
pub async fn join(seed: &str, node_id: NodeId, addr: &str) -> Result<()> {
    join_with_client_addr(seed, node_id, addr, "").await
}

/// [`join`], also registering the Neo RPC address the node advertises to clients (what
/// the broker's metadata and `NotLeader` hints hand out). A node of a static `--peers`
/// cluster calls it too, at every start: for a node that already votes it only
/// (re-)registers the addresses.
pub async fn join_with_client_addr(
    seed: &str,
    node_id: NodeId,
    addr: &str,
    client_addr: &str,
) -> Result<()> {
    join_with_tls(seed, node_id, addr, client_addr, None).await
}

/// [`join_with_client_addr`] over mutual TLS when `tls` is given.
pub async fn join_with_tls(
    seed: &str,
    node_id: NodeId,
    addr: &str,
    client_addr: &str,
    tls: Option<&ClusterTls>,
) -> Result<()> {
    change_at_leader(
        seed,
        Change::Join {
            node_id,
            addr,
            client_addr,
        },
        tls,
    )
    .await
}

/// Asks the cluster at `seed` to remove node `node_id` from the metadata group and the
/// node registry (refused while it still hosts partition replicas). Follows leader hints.
pub async fn leave(seed: &str, node_id: NodeId) -> Result<()> {
    leave_with_tls(seed, node_id, None).await
}

/// [`leave`] over mutual TLS when `tls` is given.
pub async fn leave_with_tls(seed: &str, node_id: NodeId, tls: Option<&ClusterTls>) -> Result<()> {
    change_at_leader(seed, Change::Leave { node_id }, tls).await
}

/// Asks the node at `addr` for its view of the cluster.
pub async fn status(addr: &str) -> Result<StatusReply> {
    status_with_tls(addr, None).await
}

/// [`status`] over mutual TLS when `tls` is given.
pub async fn status_with_tls(addr: &str, tls: Option<&ClusterTls>) -> Result<StatusReply> {
    let channel = connect(addr, tls, STATUS_CALL_TIMEOUT_MS).await?;
    MembershipClient::new(channel)
        .status(StatusRequest {})
        .await
        .map(|r| r.into_inner())
        .map_err(|s| Error::Rpc {
            reason: error_chain(&s),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_peers_and_rejects_bad_ones() {
        let p = parse_peers("1=127.0.0.1:7071, 2=node-b:7071,3=[::1]:7071").expect("peers");
        assert_eq!(p.len(), 3);
        assert_eq!(p[&2], "node-b:7071");
        assert_eq!(p[&3], "[::1]:7071");
        for bad in [
            "",
            "1",
            "x=h:1",
            "1=h",
            "1=h:port",
            "1=:7071",
            "1=h:1,1=h:2",
        ] {
            assert!(
                matches!(parse_peers(bad), Err(Error::BadPeers { .. })),
                "{bad:?} must be refused"
            );
        }
    }

    /// A node that accepts the connection and never answers must not hold a caller
    /// for ever: the call ends with an error at its deadline.
    #[tokio::test]
    async fn a_silent_node_fails_the_call_at_its_deadline() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        // Accept and hold every connection, reading nothing.
        let _silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let started = tokio::time::Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(60), status(&addr))
            .await
            .expect("status must end by its own deadline");
        assert!(matches!(r, Err(Error::Rpc { .. })), "{r:?}");
        assert!(started.elapsed() >= Duration::from_millis(STATUS_CALL_TIMEOUT_MS));
    }
}
