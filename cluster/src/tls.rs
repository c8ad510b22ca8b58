//! Optional mutual TLS between nodes: [`ClusterTls`] holds one node's certificate, key
//! and the cluster CA, checked when loaded, and turns them into tonic's server and
//! client TLS configs (rustls 0.23 with the ring provider, as `neo-protocol`).
//!
//! # Rules
//!
//! - **Server side**: every connecting node must present a client certificate that
//!   chains to the cluster CA; a connection without one, or with one from another CA,
//!   fails its TLS handshake and never reaches a service. Any certificate the CA signed
//!   is a cluster node: use a CA dedicated to the cluster.
//! - **Client side** (Raft transport, heartbeats, join/leave/status): channels use
//!   `https`, present this node's certificate as the client identity, and verify the
//!   peer's certificate against the cluster CA and a server name:
//!   - by default the host part of the peer's address (`--peers`, the join seed, the
//!     leader hint): a hostname must be a DNS SAN of the peer's certificate, an IP
//!     address an IP SAN;
//!   - with [`ClusterTls::with_server_name`], that one name instead, for every peer
//!     (every node's certificate then carries it as a DNS SAN), for clusters whose nodes
//!     are addressed by IPs that their certificates do not list.
//! - Node certificates serve both ends: when they carry an extended key usage, it must
//!   include both `serverAuth` and `clientAuth`.
//! - **Node id**: a node certificate names its node's id in a URI SAN `neo-node:<id>`
//!   ([`crate::peer`]). The server checks it on every Join, Leave and Raft RPC; a node
//!   checks its own with [`ClusterTls::check_node_id`] before it starts.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::limits::TLS_HANDSHAKE_TIMEOUT_MS;
use crate::peer::{NodeIdError, node_id_of_cert};

/// Why cluster TLS material was refused.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file is missing or unreadable.
    #[error("cluster tls: cannot read {what} file {path:?}: {source}")]
    Read {
        /// Which file: `certificate`, `private key` or `CA`.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file was read but its content is not usable.
    #[error("cluster tls: invalid {what}: {reason}")]
    Invalid {
        /// Which part: `certificate`, `private key`, `CA`, `server name`, ...
        what: &'static str,
        /// Why.
        reason: String,
    },
}

/// One node's TLS identity on the control plane and the CA its peers are checked
/// against. Cheap to clone. See the module rules for what is verified.
#[derive(Clone)]
pub struct ClusterTls {
    inner: Arc<Inner>,
}

struct Inner {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    ca_pem: Vec<u8>,
    server_name: Option<String>,
    /// The node id the leaf certificate names ([`crate::peer`]).
    node_id: Result<neo_raft::NodeId, NodeIdError>,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("ClusterTls")
            .field("server_name", &self.inner.server_name)
            .field("node_id", &self.inner.node_id)
            .finish_non_exhaustive()
    }
}

fn invalid(what: &'static str, reason: impl std::fmt::Display) -> TlsError {
    TlsError::Invalid {
        what,
        reason: reason.to_string(),
    }
}

fn certs(what: &'static str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(what, e))?;
    if certs.is_empty() {
        return Err(invalid(what, "no PEM certificate found"));
    }
    Ok(certs)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl ClusterTls {
    /// Reads the node's certificate chain, its private key and the cluster CA
    /// certificate(s) from PEM files, and checks them (see [`ClusterTls::from_pem`]).
    pub fn from_pem_files(
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
        ca: impl AsRef<Path>,
    ) -> Result<ClusterTls, TlsError> {
        let read = |what: &'static str, path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                what,
                path: path.to_path_buf(),
                source,
            })
        };
        let cert = read("certificate", cert.as_ref())?;
        let key = read("private key", key.as_ref())?;
        let ca = read("CA", ca.as_ref())?;
        ClusterTls::from_pem(cert, key, ca)
    }

    /// The node's certificate chain (leaf first), its private key (PKCS#8, PKCS#1 or
    /// SEC1) and the cluster CA certificate(s), all PEM. Refused unless each parses, the
    /// key matches the certificate, and rustls accepts them for both ends.
    pub fn from_pem(
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
        ca_pem: impl Into<Vec<u8>>,
    ) -> Result<ClusterTls, TlsError> {
        let (cert_pem, key_pem, ca_pem) = (cert_pem.into(), key_pem.into(), ca_pem.into());
        let chain = certs("certificate", &cert_pem)?;
        let node_id = node_id_of_cert(&chain[0]);
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| invalid("private key", e))?;
        let mut roots = RootCertStore::empty();
        for ca in certs("CA", &ca_pem)? {
            roots.add(ca).map_err(|e| invalid("CA", e))?;
        }
        // Build both rustls configs once, as tonic will: errors surface here, typed,
        // rather than when the first connection is made.
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| invalid("CA", e))?;
        rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid("protocol versions", e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|e| invalid("certificate and key", e))?;
        Ok(ClusterTls {
            inner: Arc::new(Inner {
                cert_pem,
                key_pem,
                ca_pem,
                server_name: None,
                node_id,
            }),
        })
    }

    /// Verifies every peer's certificate against `name` (a DNS name or an IP address)
    /// instead of the host part of its address.
    pub fn with_server_name(self, name: impl Into<String>) -> Result<ClusterTls, TlsError> {
        let name = name.into();
        ServerName::try_from(name.as_str()).map_err(|e| invalid("server name", e))?;
        let inner = &self.inner;
        Ok(ClusterTls {
            inner: Arc::new(Inner {
                cert_pem: inner.cert_pem.clone(),
                key_pem: inner.key_pem.clone(),
                ca_pem: inner.ca_pem.clone(),
                server_name: Some(name),
                node_id: inner.node_id.clone(),
            }),
        })
    }

    /// The node id this certificate names (URI SAN `neo-node:<id>`, [`crate::peer`]).
    pub fn node_id(&self) -> Result<neo_raft::NodeId, NodeIdError> {
        self.inner.node_id.clone()
    }

    /// Refused unless this certificate names node `id`: peers would refuse this node's
    /// Raft RPCs and joins otherwise, so a node checks before it starts.
    pub fn check_node_id(&self, id: neo_raft::NodeId) -> Result<(), TlsError> {
        match &self.inner.node_id {
            Ok(named) if *named == id => Ok(()),
            Ok(named) => Err(invalid(
                "certificate",
                format!("it names node {named} (URI SAN neo-node:{named}), not node {id}"),
            )),
            Err(e) => Err(invalid(
                "certificate",
                format!("{e}; node {id} needs a URI SAN neo-node:{id}"),
            )),
        }
    }

    /// The name peers are verified against, when fixed by [`ClusterTls::with_server_name`].
    pub fn server_name(&self) -> Option<&str> {
        self.inner.server_name.as_deref()
    }

    /// tonic's server config: this node's identity, client certificates required and
    /// verified against the CA.
    pub(crate) fn server_config(&self) -> ServerTlsConfig {
        install_ring_default();
        ServerTlsConfig::new()
            .identity(self.identity())
            .client_ca_root(Certificate::from_pem(&self.inner.ca_pem))
            .client_auth_optional(false)
            .timeout(Duration::from_millis(TLS_HANDSHAKE_TIMEOUT_MS))
    }

    /// tonic's client config: the CA as the only root, this node's identity, and the
    /// fixed server name if any.
    pub(crate) fn client_config(&self) -> ClientTlsConfig {
        install_ring_default();
        let cfg = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.inner.ca_pem))
            .identity(self.identity())
            .timeout(Duration::from_millis(TLS_HANDSHAKE_TIMEOUT_MS));
        match &self.inner.server_name {
            Some(name) => cfg.domain_name(name.clone()),
            None => cfg,
        }
    }

    fn identity(&self) -> Identity {
        Identity::from_pem(&self.inner.cert_pem, &self.inner.key_pem)
    }
}

/// tonic's server builds its rustls config with the process-wide default provider:
/// make it ring (as everywhere in Neo) unless one was installed already, so that no
/// provider ambiguity can make rustls panic.
fn install_ring_default() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The URL scheme of a peer channel.
pub(crate) fn scheme(tls: Option<&ClusterTls>) -> &'static str {
    if tls.is_some() { "https" } else { "http" }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pki(names: &[&str]) -> (String, String, String) {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().expect("key");
        let ca_pem = ca.self_signed(&ca_key).expect("ca").pem();
        let issuer = Issuer::new(ca, ca_key);
        let leaf = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("leaf params");
        let key = KeyPair::generate().expect("key");
        let cert = leaf.signed_by(&key, &issuer).expect("leaf");
        (cert.pem(), key.serialize_pem(), ca_pem)
    }

    #[test]
    fn loads_good_material_and_refuses_bad() {
        let (cert, key, ca) = pki(&["127.0.0.1", "localhost"]);
        let tls = ClusterTls::from_pem(cert.clone(), key.clone(), ca.clone()).expect("good");
        assert_eq!(tls.server_name(), None);
        let tls = tls.with_server_name("neo-cluster").expect("name");
        assert_eq!(tls.server_name(), Some("neo-cluster"));
        assert!(!format!("{tls:?}").contains("PRIVATE"));

        let bad = |r: Result<ClusterTls, TlsError>, what: &str| match r {
            Err(TlsError::Invalid { what: w, .. }) => assert_eq!(w, what),
            other => panic!("expected invalid {what}: {other:?}"),
        };
        bad(
            ClusterTls::from_pem("junk", key.clone(), ca.clone()),
            "certificate",
        );
        bad(
            ClusterTls::from_pem(cert.clone(), "junk", ca.clone()),
            "private key",
        );
        bad(ClusterTls::from_pem(cert.clone(), key.clone(), ""), "CA");
        // A key that is not the certificate's.
        let (_, other_key, _) = pki(&["localhost"]);
        bad(
            ClusterTls::from_pem(cert.clone(), other_key, ca.clone()),
            "certificate and key",
        );
        bad(
            ClusterTls::from_pem(cert, key, ca)
                .expect("good")
                .with_server_name("not a name!"),
            "server name",
        );
    }

    #[test]
    fn the_certificate_names_the_node_id() {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().expect("key");
        let ca_pem = ca.self_signed(&ca_key).expect("ca").pem();
        let issuer = Issuer::new(ca, ca_key);
        let leaf = |uri: Option<&str>| {
            let mut p = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
            if let Some(uri) = uri {
                p.subject_alt_names
                    .push(SanType::URI(uri.try_into().expect("uri")));
            }
            let key = KeyPair::generate().expect("key");
            let cert = p.signed_by(&key, &issuer).expect("leaf");
            ClusterTls::from_pem(cert.pem(), key.serialize_pem(), ca_pem.clone()).expect("tls")
        };
        let tls = leaf(Some("neo-node:7"));
        assert_eq!(tls.node_id(), Ok(7));
        tls.check_node_id(7).expect("its own id");
        let named = tls.clone().with_server_name("neo").expect("name");
        assert_eq!(named.node_id(), Ok(7), "kept by with_server_name");
        assert!(matches!(
            tls.check_node_id(8),
            Err(TlsError::Invalid {
                what: "certificate",
                ..
            })
        ));
        let old = leaf(None);
        assert_eq!(old.node_id(), Err(NodeIdError::Missing));
        match old.check_node_id(7) {
            Err(e @ TlsError::Invalid { .. }) => {
                assert!(e.to_string().contains("neo-node:7"), "{e}")
            }
            other => panic!("expected a refusal: {other:?}"),
        }
    }

    #[test]
    fn missing_files_are_a_read_error() {
        let dir = tempfile::tempdir().expect("dir");
        let (cert, key, ca) = pki(&["localhost"]);
        for (name, pem) in [("c.pem", &cert), ("k.pem", &key), ("ca.pem", &ca)] {
            std::fs::write(dir.path().join(name), pem).expect("write");
        }
        let p = |n: &str| dir.path().join(n);
        ClusterTls::from_pem_files(p("c.pem"), p("k.pem"), p("ca.pem")).expect("files load");
        match ClusterTls::from_pem_files(p("c.pem"), p("missing.pem"), p("ca.pem")) {
            Err(TlsError::Read { what, path, .. }) => {
                assert_eq!(what, "private key");
                assert_eq!(path, p("missing.pem"));
            }
            other => panic!("expected a read error: {other:?}"),
        }
    }
}
