//! TLS with rustls (ring provider): config builders for both sides, and the peer
//! identity read from a client certificate (mTLS) and shown to handlers.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::error::{Error, Result};

/// ring's suites with AES-128-GCM ahead of AES-256-GCM (then ChaCha20-Poly1305), the
/// order Go's TLS stack offers on CPUs with AES instructions: both are 128-bit-secure
/// or better, and AES-128 has 10 rounds against 14 (docs/BENCHMARKS.md, "Security on
/// vs off", measured the difference). Both sides of the client port use this order;
/// peers that prefer another suite still get it.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|suite| !is_aes128_gcm(suite.suite()));
    Arc::new(provider)
}

fn is_aes128_gcm(suite: rustls::CipherSuite) -> bool {
    use rustls::CipherSuite as S;
    matches!(
        suite,
        S::TLS13_AES_128_GCM_SHA256
            | S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            | S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
    )
}

fn tls_err(err: impl std::fmt::Display) -> Error {
    Error::Tls(err.to_string())
}

/// How the server treats client certificates.
#[derive(Debug, Clone, Default)]
pub enum ClientAuth {
    /// No client certificates are asked for.
    #[default]
    None,
    /// Client certificates signed by these roots are verified if presented; clients
    /// without one are still accepted (handlers see no identity).
    Optional(Vec<CertificateDer<'static>>),
    /// Every client must present a certificate signed by these roots (mTLS).
    Required(Vec<CertificateDer<'static>>),
}

/// A server config from a certificate chain and key, with the given client-auth policy.
pub fn server_config(
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_auth: ClientAuth,
) -> Result<Arc<ServerConfig>> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?;
    let builder = match client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Optional(roots) | ClientAuth::Required(roots) if roots.is_empty() => {
            return Err(Error::Tls(
                "client auth needs at least one root certificate".into(),
            ));
        }
        ClientAuth::Optional(roots) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(
                Arc::new(root_store(roots)?),
                provider(),
            )
            .allow_unauthenticated()
            .build()
            .map_err(tls_err)?;
            builder.with_client_cert_verifier(verifier)
        }
        ClientAuth::Required(roots) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(
                Arc::new(root_store(roots)?),
                provider(),
            )
            .build()
            .map_err(tls_err)?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(cert_chain, key).map_err(tls_err)?;
    Ok(Arc::new(config))
}

/// A client config trusting `roots`, optionally presenting a client certificate (mTLS).
pub fn client_config(
    roots: Vec<CertificateDer<'static>>,
    client_cert: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<Arc<ClientConfig>> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .with_root_certificates(root_store(roots)?);
    let config = match client_cert {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).map_err(tls_err)?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Every certificate of a PEM document (`what` names it in errors); none is an error.
pub fn certs_from_pem(what: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Tls(format!("{what}: {e}")))?;
    if certs.is_empty() {
        return Err(Error::Tls(format!("{what}: no PEM certificate found")));
    }
    Ok(certs)
}

/// The private key of a PEM document (PKCS#8, PKCS#1 or SEC1).
pub fn key_from_pem(what: &str, pem: &[u8]) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| Error::Tls(format!("{what}: {e}")))
}

fn root_store(roots: Vec<CertificateDer<'static>>) -> Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add(root).map_err(tls_err)?;
    }
    Ok(store)
}

/// TLS settings of a client: the rustls config and the name to verify the server as.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// The rustls client config (see [`client_config`]).
    pub config: Arc<ClientConfig>,
    /// The server's name as it appears in its certificate.
    pub server_name: ServerName<'static>,
}

impl ClientTls {
    /// TLS to a server whose certificate names `server_name` (a DNS name or an IP).
    pub fn new(config: Arc<ClientConfig>, server_name: &str) -> Result<ClientTls> {
        let server_name = ServerName::try_from(server_name.to_owned()).map_err(tls_err)?;
        Ok(ClientTls {
            config,
            server_name,
        })
    }
}

/// The identity a TLS client proved with its certificate (mTLS), as handlers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The presented chain, end-entity certificate first, DER-encoded.
    pub certificate_chain_der: Vec<CertificateDer<'static>>,
    /// DNS names from the end-entity certificate's subject alternative names.
    pub dns_names: Vec<String>,
    /// URI names from the subject alternative names (e.g. SPIFFE ids).
    pub uri_names: Vec<String>,
    /// The subject's common name, when it has one that is a UTF-8 string.
    pub common_name: Option<String>,
}

impl PeerIdentity {
    /// Read the identity out of a verified chain. `None` for an empty chain.
    pub fn from_chain(chain: &[CertificateDer<'static>]) -> Option<PeerIdentity> {
        let end_entity = chain.first()?;
        let (dns_names, uri_names, common_name) = match webpki::EndEntityCert::try_from(end_entity)
        {
            Ok(cert) => (
                cert.valid_dns_names().map(str::to_owned).collect(),
                cert.valid_uri_names().map(str::to_owned).collect(),
                common_name(cert.subject()),
            ),
            Err(_) => (Vec::new(), Vec::new(), None),
        };
        Some(PeerIdentity {
            certificate_chain_der: chain.to_vec(),
            dns_names,
            uri_names,
            common_name,
        })
    }
}

/// Best-effort: the first commonName (OID 2.5.4.3) attribute of a DER subject, if it is
/// a short-form-length UTF8String/PrintableString/IA5String.
fn common_name(subject: &[u8]) -> Option<String> {
    const CN_OID: [u8; 5] = [0x06, 0x03, 0x55, 0x04, 0x03];
    let at = subject.windows(CN_OID.len()).position(|w| w == CN_OID)? + CN_OID.len();
    let tag = *subject.get(at)?;
    let len = *subject.get(at + 1)? as usize;
    if !matches!(tag, 0x0C | 0x13 | 0x16) || len >= 0x80 {
        return None;
    }
    let value = subject.get(at + 2..at + 2 + len)?;
    String::from_utf8(value.to_vec()).ok()
}
