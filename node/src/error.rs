//! The one error type of `neo-node` (start-up and wiring; request errors are wire
//! [`neo_protocol::RpcError`]s, see `broker`).

use std::net::SocketAddr;

/// Why a node could not start (or stop cleanly).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A listener could not be bound.
    #[error("bind {what} listener on {addr}: {source}")]
    Bind {
        /// Which listener (`client`, `http`).
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A Raft group or the node's storage failed.
    #[error(transparent)]
    Raft(#[from] neo_raft::Error),
    /// The control plane failed.
    #[error(transparent)]
    Cluster(#[from] neo_cluster::Error),
    /// The cluster TLS files could not be loaded (they were readable when the config
    /// was resolved).
    #[error("cluster TLS: {0}")]
    ClusterTls(#[from] neo_cluster::TlsError),
    /// A key or certificate file of the security settings could not be used (they
    /// were readable when the config was resolved).
    #[error("security: {0}")]
    Security(#[from] crate::security::KeyFileError),
    /// The Neo RPC server failed.
    #[error(transparent)]
    Protocol(#[from] neo_protocol::Error),
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
