//! TLS of the node's own client of the cluster's client ports, used by the HTTP admin's
//! `/v1/groups/{name}` when the client port has TLS.
//!
//! Describing a group needs the committed offsets of every partition of its topics,
//! which only each partition's leader answers, possibly on another node: the node asks
//! them the way a client would, through the client ports (its own included). The
//! broker facade cannot do it from inside (it answers `NotLeader` for partitions led
//! elsewhere), and the cluster port has no client-request forwarding.
//!
//! Which server certificates the node trusts, in order:
//!
//! 1. exactly the end-entity certificate it serves itself (`--tls-cert`'s first
//!    certificate, DER-equal): pinned, whatever name it carries; a cluster whose nodes
//!    share one certificate needs nothing else;
//! 2. with cluster mTLS (`--cluster-tls-ca`), any certificate that chains to the
//!    cluster CA, by name-blind chain verification (validity, signatures, usage): the
//!    cluster CA is what already identifies nodes on the cluster port, which no more
//!    checks names (any certificate of the cluster CA may claim any node id);
//! 3. nothing else: a node whose client-port certificate is neither is unreachable for
//!    this purpose, and the endpoint answers 503 naming the TLS error.
//!
//! The node presents no client certificate. With security on it authenticates in the
//! handshake with the HTTP caller's bearer token (the offsets are read as the caller);
//! a client port that requires client certificates is one whose only `--auth` method
//! is `mtls`, where the HTTP port accepts no bearer token at all (401 before this).

use std::path::Path;
use std::sync::Arc;

use neo_protocol::ClientTls;
use neo_protocol::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use neo_protocol::rustls::client::verify_server_cert_signed_by_trust_anchor;
use neo_protocol::rustls::crypto::{
    CryptoProvider, WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature,
};
use neo_protocol::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use neo_protocol::rustls::server::ParsedCertificate;
use neo_protocol::rustls::{
    self, CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use neo_protocol::tls::certs_from_pem;

use crate::security::KeyFileError;

/// The server name sent in the TLS handshake (SNI). The verifier does not check names
/// (see the module doc); this is only what the node says it dials.
const SERVER_NAME: &str = "neo";

/// Trusts the node's own certificate, and certificates of the cluster CA.
#[derive(Debug)]
struct NodeCertVerifier {
    /// The end-entity certificate the node serves on its client port.
    own: CertificateDer<'static>,
    /// The cluster CA, when cluster mTLS is on.
    cluster_roots: Option<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for NodeCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.own.as_ref() {
            return Ok(ServerCertVerified::assertion());
        }
        let Some(roots) = &self.cluster_roots else {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ));
        };
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

fn tls_error(what: &'static str, reason: impl std::fmt::Display) -> KeyFileError {
    KeyFileError::Tls {
        what,
        source: neo_protocol::Error::Tls(reason.to_string()),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, KeyFileError> {
    std::fs::read(path).map_err(|source| KeyFileError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The TLS settings of the node's own client from its `--tls-cert` chain and, when
/// cluster mTLS is on, the `--cluster-tls-ca` file (blocking file reads).
pub(crate) fn load(
    client_port_cert: &Path,
    cluster_ca: Option<&Path>,
) -> Result<ClientTls, KeyFileError> {
    let what = "--tls-cert";
    let chain = certs_from_pem(what, &read(client_port_cert)?)
        .map_err(|source| KeyFileError::Tls { what, source })?;
    let own = chain
        .into_iter()
        .next()
        .ok_or_else(|| tls_error(what, "no certificate"))?;
    let cluster_roots = match cluster_ca {
        Some(path) => {
            let what = "--cluster-tls-ca";
            let mut store = RootCertStore::empty();
            for ca in certs_from_pem(what, &read(path)?)
                .map_err(|source| KeyFileError::Tls { what, source })?
            {
                store.add(ca).map_err(|e| tls_error(what, e))?;
            }
            Some(store)
        }
        None => None,
    };
    client_tls(own, cluster_roots)
}

fn client_tls(
    own: CertificateDer<'static>,
    cluster_roots: Option<RootCertStore>,
) -> Result<ClientTls, KeyFileError> {
    let what = "TLS of the node's own client";
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = NodeCertVerifier {
        own,
        cluster_roots,
        algorithms: provider.signature_verification_algorithms,
    };
    let config = ClientConfig::builder_with_provider(Arc::clone(&provider) as Arc<CryptoProvider>)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(what, e))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    ClientTls::new(Arc::new(config), SERVER_NAME)
        .map_err(|source| KeyFileError::Tls { what, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use neo_tests::TestPki;

    fn der(pem: &str) -> CertificateDer<'static> {
        certs_from_pem("test", pem.as_bytes()).unwrap().remove(0)
    }

    fn verify(v: &NodeCertVerifier, cert: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        let name = ServerName::try_from("elsewhere.example").unwrap();
        v.verify_server_cert(cert, &[], &name, &[], UnixTime::now())
            .map(|_| ())
    }

    fn verifier(own: CertificateDer<'static>, ca: Option<&TestPki>) -> NodeCertVerifier {
        let cluster_roots = ca.map(|pki| {
            let mut store = RootCertStore::empty();
            store.add(der(pki.ca_pem())).unwrap();
            store
        });
        NodeCertVerifier {
            own,
            cluster_roots,
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        }
    }

    #[test]
    fn its_own_certificate_is_trusted_whatever_the_name() {
        let pki = TestPki::new("node CA");
        let (own, _) = pki.leaf("neo1", &["neo1"]);
        let (other, _) = pki.leaf("neo2", &["neo2"]);
        let v = verifier(der(&own), None);
        verify(&v, &der(&own)).unwrap();
        // Without the cluster CA, a sibling's certificate is not.
        assert!(verify(&v, &der(&other)).is_err());
    }

    #[test]
    fn certificates_of_the_cluster_ca_are_trusted_and_others_are_not() {
        let pki = TestPki::new("cluster CA");
        let stranger = TestPki::new("someone else's CA");
        let (own, _) = pki.leaf("neo1", &["neo1"]);
        let (sibling, _) = pki.leaf("neo2", &["neo2"]);
        let (forged, _) = stranger.leaf("neo1", &["neo1"]);
        let v = verifier(der(&own), Some(&pki));
        verify(&v, &der(&sibling)).unwrap();
        assert!(verify(&v, &der(&forged)).is_err());
    }
}
