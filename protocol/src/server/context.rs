//! What a handler knows about the request beyond its body.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::auth::Principal;
use crate::tls::PeerIdentity;

/// Facts about a connection, shared by every request on it. Replaced (not mutated)
/// when the handshake establishes a principal, so requests never lock.
#[derive(Debug)]
pub(crate) struct ConnectionInfo {
    /// Unique among the connections of this process (request ids in logs).
    pub(crate) id: u64,
    pub(crate) peer_addr: SocketAddr,
    pub(crate) identity: Option<PeerIdentity>,
    pub(crate) principal: Option<Principal>,
}

/// Per-request context handed to handlers: who is calling and which request this is.
/// Cheap to clone (one `Arc`).
#[derive(Debug, Clone)]
pub struct RequestContext {
    conn: Arc<ConnectionInfo>,
    correlation_id: u64,
    service_id: u16,
    method_id: u16,
    /// When the request's frame was read.
    received_at: Instant,
}

impl RequestContext {
    pub(crate) fn new(
        conn: Arc<ConnectionInfo>,
        correlation_id: u64,
        service_id: u16,
        method_id: u16,
    ) -> RequestContext {
        RequestContext {
            conn,
            correlation_id,
            service_id,
            method_id,
            received_at: Instant::now(),
        }
    }

    /// Point the context at another request on the same connection.
    pub(crate) fn aim(
        &mut self,
        correlation_id: u64,
        service_id: u16,
        method_id: u16,
        received_at: Instant,
    ) {
        self.received_at = received_at;
        self.correlation_id = correlation_id;
        self.service_id = service_id;
        self.method_id = method_id;
    }

    /// The connection's facts.
    pub(crate) fn connection(&self) -> &Arc<ConnectionInfo> {
        &self.conn
    }

    /// New facts about the connection (the handshake established a principal).
    pub(crate) fn set_connection(&mut self, conn: Arc<ConnectionInfo>) {
        self.conn = conn;
    }

    /// The client's socket address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.conn.peer_addr
    }

    /// The client's certificate identity on an mTLS connection.
    pub fn peer_identity(&self) -> Option<&PeerIdentity> {
        self.conn.identity.as_ref()
    }

    /// The principal the authentication handshake established, if the server has an
    /// authenticator.
    pub fn principal(&self) -> Option<&Principal> {
        self.conn.principal.as_ref()
    }

    /// The request's correlation id (unique among the connection's in-flight requests).
    pub fn correlation_id(&self) -> u64 {
        self.correlation_id
    }

    /// The connection's id, unique in this process: with the correlation id, it names
    /// the request in logs (`<connection id>-<correlation id>`).
    pub fn connection_id(&self) -> u64 {
        self.conn.id
    }

    /// When the server read the request's frame (the batch of frames it came in).
    pub fn received_at(&self) -> Instant {
        self.received_at
    }

    /// The wire id of the called service.
    pub fn service_id(&self) -> u16 {
        self.service_id
    }

    /// The wire id of the called method.
    pub fn method_id(&self) -> u16 {
        self.method_id
    }
}
