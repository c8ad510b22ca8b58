//! The one error type of `neo-cluster`.

use std::net::SocketAddr;

/// Everything that can go wrong on the control plane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A peer address cannot be turned into a gRPC endpoint.
    #[error("bad address {addr:?} for node {node}: {reason}")]
    BadAddress {
        /// The peer.
        node: u64,
        /// The address given.
        addr: String,
        /// Why it was refused.
        reason: String,
    },
    /// A `--peers` list entry is malformed.
    #[error("bad --peers entry {entry:?}: {reason}")]
    BadPeers {
        /// The entry.
        entry: String,
        /// Why.
        reason: String,
    },
    /// A control-plane RPC (join, leave, status) failed.
    #[error("control-plane rpc: {reason}")]
    Rpc {
        /// Why.
        reason: String,
    },
    /// The control-plane listener could not be bound.
    #[error("bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("grpc server: {reason}")]
    Server {
        /// Why.
        reason: String,
    },
    /// Cluster TLS material was refused.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// A Raft group failed.
    #[error(transparent)]
    Raft(#[from] neo_raft::Error),
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `e` and its sources: tonic's connect errors say "transport error" on top and the
/// useful part (refused, TLS handshake failure) underneath.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        // Some layers repeat their source's text in their own.
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
