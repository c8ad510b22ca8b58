//! Who is calling on the cluster port: the node id a peer's certificate names, and what
//! that caller may do. The decisions are pure (they take the caller and the node's view
//! of the cluster, and return a [`Refusal`] or nothing); the services read the request's
//! certificates and the view, and answer `PERMISSION_DENIED` with the refusal.
//!
//! # The certificate rule
//!
//! With cluster mTLS, a node certificate names its node id in a URI subject alternative
//! name [`NODE_ID_URI_PREFIX`]`<id>`: `neo-node:3` for node 3, the id in canonical
//! decimal (no sign, no leading zero, not 0). Other SANs (DNS names and IPs the server
//! name is checked against) and the subject are not read for the id. Several URI SANs
//! naming the same id are one; naming two ids, or a malformed `neo-node:` SAN, makes the
//! certificate name no id ([`NodeIdError`]).
//!
//! # What is checked (cluster TLS on; with it off, nothing is: [`Caller::Plaintext`])
//!
//! | call | the caller's certificate must name |
//! |---|---|
//! | `Join` of node N | N |
//! | `Leave` of node N | N, or a voter of the metadata group (a voter removes a dead peer) |
//! | Raft RPCs (AppendEntries, Vote, PreVote, TransferLeader, ForwardRecords, InstallSnapshot, SnapshotResume) | a node this node knows as a member: registered in the metadata state, or a member of the metadata group or of the RPC's group; while this node knows no cluster at all (a fresh node before its first snapshot or log entries), any node id |
//! | `Status`, `Heartbeat` | anything (a certificate of the cluster CA): read-only |
//!
//! A certificate without a node id (made before this rule) is refused for everything
//! but `Status` and `Heartbeat`; a node refuses to start with such a certificate of its
//! own ([`crate::ClusterTls::check_node_id`]).

use neo_raft::NodeId;
use rustls::pki_types::CertificateDer;
use tonic::{Request, Status};

/// The prefix of the URI SAN that names a node's id in its certificate.
pub const NODE_ID_URI_PREFIX: &str = "neo-node:";

/// Why a certificate names no node id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeIdError {
    /// Cluster TLS is on but the connection carries no client certificate (tonic did
    /// not hand one over; the handshake requires one, so this is a defect, refused).
    #[error("no client certificate")]
    NoCertificate,
    /// The certificate cannot be parsed.
    #[error("the certificate cannot be parsed: {reason}")]
    Unparsable {
        /// The parser's reason.
        reason: String,
    },
    /// No URI SAN `neo-node:<id>`.
    #[error("the certificate names no node id (a URI SAN {NODE_ID_URI_PREFIX}<id>)")]
    Missing,
    /// A `neo-node:` URI SAN whose id is not a canonical decimal above 0.
    #[error("malformed node id SAN {uri:?}")]
    Malformed {
        /// The SAN.
        uri: String,
    },
    /// Two different ids.
    #[error("the certificate names two node ids, {first} and {second}")]
    Ambiguous {
        /// One.
        first: NodeId,
        /// The other.
        second: NodeId,
    },
}

/// The node id the URI SANs `uris` name, by the module's rule.
pub fn node_id_of_uris<'a>(uris: impl IntoIterator<Item = &'a str>) -> Result<NodeId, NodeIdError> {
    let mut found: Option<NodeId> = None;
    for uri in uris {
        // The scheme is case-insensitive (RFC 3986); the id is not.
        let Some(rest) = uri
            .get(..NODE_ID_URI_PREFIX.len())
            .filter(|p| p.eq_ignore_ascii_case(NODE_ID_URI_PREFIX))
            .map(|_| &uri[NODE_ID_URI_PREFIX.len()..])
        else {
            continue;
        };
        let id = rest
            .parse::<NodeId>()
            .ok()
            .filter(|id| *id != 0 && id.to_string() == rest)
            .ok_or_else(|| NodeIdError::Malformed {
                uri: uri.to_string(),
            })?;
        match found {
            Some(first) if first != id => {
                return Err(NodeIdError::Ambiguous { first, second: id });
            }
            _ => found = Some(id),
        }
    }
    found.ok_or(NodeIdError::Missing)
}

/// The node id a DER certificate names.
pub fn node_id_of_cert(cert: &CertificateDer<'_>) -> Result<NodeId, NodeIdError> {
    let parsed = webpki::EndEntityCert::try_from(cert).map_err(|e| NodeIdError::Unparsable {
        reason: e.to_string(),
    })?;
    node_id_of_uris(parsed.valid_uri_names())
}

/// The caller of one RPC, as far as the cluster port can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Caller {
    /// Cluster TLS is off: no identity (anyone who reaches the port; documented).
    Plaintext,
    /// Cluster TLS is on and the (CA-verified) certificate names this node.
    Node(NodeId),
    /// Cluster TLS is on and the certificate names no usable node id.
    Unnamed(NodeIdError),
}

impl Caller {
    /// The caller of `req` on a server with cluster TLS on (`tls`) or off.
    pub(crate) fn of<T>(tls: bool, req: &Request<T>) -> Caller {
        if !tls {
            return Caller::Plaintext;
        }
        let chain = req.peer_certs();
        match chain.as_ref().and_then(|c| c.first()) {
            None => Caller::Unnamed(NodeIdError::NoCertificate),
            Some(leaf) => match node_id_of_cert(leaf) {
                Ok(id) => Caller::Node(id),
                Err(e) => Caller::Unnamed(e),
            },
        }
    }
}

/// Whether a node id is a member of the cluster, as this node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Known {
    /// Registered, or a member of a group this node hosts.
    Member,
    /// This node knows a cluster, and this id is not in it.
    Stranger,
    /// This node knows no cluster yet (fresh): it cannot tell.
    NoView,
}

/// Why a caller was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    /// Its certificate names no node id.
    #[error("cluster mTLS: {0}")]
    Unnamed(NodeIdError),
    /// Its certificate names another node than the one the call is about.
    #[error("cluster mTLS: the caller's certificate names node {caller}, not node {node}")]
    OtherNode {
        /// The id the certificate names.
        caller: NodeId,
        /// The node the call is about.
        node: NodeId,
    },
    /// Its certificate names a node that is not a member of the cluster.
    #[error("cluster mTLS: node {caller} (named by the caller's certificate) is not a member")]
    NotMember {
        /// The id the certificate names.
        caller: NodeId,
    },
}

impl From<Refusal> for Status {
    fn from(r: Refusal) -> Status {
        Status::permission_denied(r.to_string())
    }
}

impl Caller {
    /// The node id a TLS caller's certificate names; `None` in plaintext.
    fn named(&self) -> Result<Option<NodeId>, Refusal> {
        match self {
            Caller::Plaintext => Ok(None),
            Caller::Node(id) => Ok(Some(*id)),
            Caller::Unnamed(e) => Err(Refusal::Unnamed(e.clone())),
        }
    }

    /// May this caller ask for node `node` to join?
    pub(crate) fn may_join(&self, node: NodeId) -> Result<(), Refusal> {
        match self.named()? {
            Some(caller) if caller != node => Err(Refusal::OtherNode { caller, node }),
            _ => Ok(()),
        }
    }

    /// May this caller ask for node `node` to leave? `is_voter` tells the metadata
    /// group's voters.
    pub(crate) fn may_leave(
        &self,
        node: NodeId,
        is_voter: impl FnOnce(NodeId) -> bool,
    ) -> Result<(), Refusal> {
        match self.named()? {
            Some(caller) if caller != node && !is_voter(caller) => {
                Err(Refusal::OtherNode { caller, node })
            }
            _ => Ok(()),
        }
    }

    /// May this caller send Raft RPCs? `known` tells what this node knows of an id.
    pub(crate) fn may_send_raft(&self, known: impl FnOnce(NodeId) -> Known) -> Result<(), Refusal> {
        match self.named()? {
            Some(caller) if known(caller) == Known::Stranger => Err(Refusal::NotMember { caller }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_node_id_uri_san() {
        let id = |uris: &[&str]| node_id_of_uris(uris.iter().copied());
        assert_eq!(id(&["neo-node:3"]), Ok(3));
        assert_eq!(id(&["spiffe://x/y", "NEO-NODE:12", "neo-node:12"]), Ok(12));
        assert_eq!(id(&[]), Err(NodeIdError::Missing));
        assert_eq!(id(&["spiffe://neo/node/3"]), Err(NodeIdError::Missing));
        for bad in [
            "neo-node:",
            "neo-node:0",
            "neo-node:03",
            "neo-node:+3",
            "neo-node:3 ",
            "neo-node:x",
            "neo-node:18446744073709551616",
        ] {
            assert_eq!(
                id(&[bad]),
                Err(NodeIdError::Malformed { uri: bad.into() }),
                "{bad:?}"
            );
        }
        assert_eq!(
            id(&["neo-node:1", "neo-node:2"]),
            Err(NodeIdError::Ambiguous {
                first: 1,
                second: 2
            })
        );
        // Not a multi-byte-boundary panic.
        assert_eq!(id(&["néo-node:1"]), Err(NodeIdError::Missing));
    }

    #[test]
    fn reads_certificates() {
        use rcgen::{CertificateParams, KeyPair, SanType};
        let cert = |sans: Vec<SanType>| {
            let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
            p.subject_alt_names = sans;
            let key = KeyPair::generate().expect("key");
            p.self_signed(&key).expect("cert").der().clone()
        };
        let uri = |s: &str| SanType::URI(s.try_into().expect("uri"));
        let dns = |s: &str| SanType::DnsName(s.try_into().expect("dns"));
        assert_eq!(
            node_id_of_cert(&cert(vec![dns("neo2"), uri("neo-node:2")])),
            Ok(2)
        );
        // The dev-certs CN/DNS names alone name no id.
        assert_eq!(
            node_id_of_cert(&cert(vec![dns("neo2"), dns("neo")])),
            Err(NodeIdError::Missing)
        );
        assert!(matches!(
            node_id_of_cert(&CertificateDer::from(vec![0x30, 0x03, 1, 2, 3])),
            Err(NodeIdError::Unparsable { .. })
        ));
    }

    #[test]
    fn join_and_leave_need_the_named_node() {
        let n2 = Caller::Node(2);
        assert_eq!(n2.may_join(2), Ok(()));
        assert_eq!(
            n2.may_join(3),
            Err(Refusal::OtherNode { caller: 2, node: 3 })
        );
        assert_eq!(Caller::Plaintext.may_join(3), Ok(()));
        let unnamed = Caller::Unnamed(NodeIdError::Missing);
        assert_eq!(
            unnamed.may_join(3),
            Err(Refusal::Unnamed(NodeIdError::Missing))
        );

        let voters = |id: NodeId| [1, 2, 3].contains(&id);
        assert_eq!(n2.may_leave(2, voters), Ok(()));
        assert_eq!(n2.may_leave(5, voters), Ok(()), "a voter removes a peer");
        assert_eq!(
            Caller::Node(4).may_leave(5, voters),
            Err(Refusal::OtherNode { caller: 4, node: 5 })
        );
        assert_eq!(Caller::Node(4).may_leave(4, voters), Ok(()));
        assert!(unnamed.may_leave(3, |_| true).is_err());
        assert_eq!(Caller::Plaintext.may_leave(3, |_| false), Ok(()));
        let s = Status::from(Refusal::OtherNode { caller: 4, node: 5 });
        assert_eq!(s.code(), tonic::Code::PermissionDenied);
    }

    #[test]
    fn raft_rpcs_need_a_member() {
        let n2 = Caller::Node(2);
        assert_eq!(n2.may_send_raft(|_| Known::Member), Ok(()));
        assert_eq!(n2.may_send_raft(|_| Known::NoView), Ok(()));
        assert_eq!(
            n2.may_send_raft(|_| Known::Stranger),
            Err(Refusal::NotMember { caller: 2 })
        );
        assert_eq!(Caller::Plaintext.may_send_raft(|_| Known::Stranger), Ok(()));
        assert!(
            Caller::Unnamed(NodeIdError::NoCertificate)
                .may_send_raft(|_| Known::Member)
                .is_err()
        );
    }
}
