//! The security context of one request: who asks, from where. Every broker operation
//! takes one, so that authorization and quotas have one place to sit.

use std::net::SocketAddr;

/// Who made a request and from where.
///
/// Built by the server from the connection (the principal its authentication handshake
/// established, the peer's address) and passed to every broker operation; code inside
/// the node that acts on its own behalf (reconciliation, retention) uses
/// [`SecurityContext::internal`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecurityContext {
    /// The authenticated identity (`None`: the connection did not authenticate).
    pub principal: Option<String>,
    /// Roles the principal holds, as its credentials stated them (e.g. a JWT claim).
    pub roles: Vec<String>,
    /// The client's address (`None` for requests made inside the process).
    pub peer: Option<SocketAddr>,
    /// The request comes from the node itself or an embedding application, not from the
    /// network.
    pub internal: bool,
}

impl SecurityContext {
    /// A request from a network client.
    pub fn client(principal: Option<String>, peer: SocketAddr) -> SecurityContext {
        SecurityContext {
            principal,
            roles: Vec::new(),
            peer: Some(peer),
            internal: false,
        }
    }

    /// A request the process makes on its own behalf (embedded use, background tasks).
    pub fn internal() -> SecurityContext {
        SecurityContext {
            principal: None,
            roles: Vec::new(),
            peer: None,
            internal: true,
        }
    }

    /// A short description for logs and error texts (`alice@10.0.0.5:4711`).
    pub fn describe(&self) -> String {
        let who = match (&self.principal, self.internal) {
            (Some(p), _) => p.clone(),
            (None, true) => "internal".to_string(),
            (None, false) => "anonymous".to_string(),
        };
        match self.peer {
            Some(peer) => format!("{who}@{peer}"),
            None => who,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_who_and_where() {
        let peer: SocketAddr = "10.0.0.5:4711".parse().unwrap();
        assert_eq!(
            SecurityContext::client(Some("alice".into()), peer).describe(),
            "alice@10.0.0.5:4711"
        );
        assert_eq!(
            SecurityContext::client(None, peer).describe(),
            "anonymous@10.0.0.5:4711"
        );
        assert_eq!(SecurityContext::internal().describe(), "internal");
    }
}
