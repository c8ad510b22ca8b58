//! A throwaway certificate authority for tests of TLS between nodes and clients: a
//! self-signed CA and leaf certificates signed by it, as PEM strings, generated at test
//! time (no files checked in, nothing that expires between runs).

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    SanType,
};

/// A test CA. Leaves are valid for both server and client authentication, so one
/// certificate serves a node on both ends of mutual TLS.
pub struct TestPki {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestPki {
    /// A new CA named `name` (its common name), with a fresh key.
    pub fn new(name: &str) -> TestPki {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("ca key");
        let ca_pem = params.self_signed(&key).expect("ca cert").pem();
        TestPki {
            ca_pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A leaf certificate and its private key, PEM, for `common_name` with the subject
    /// alternative names `sans` (an entry that parses as an IP address is an IP SAN,
    /// any other a DNS name).
    pub fn leaf(&self, common_name: &str, sans: &[&str]) -> (String, String) {
        self.leaf_with_uris(common_name, sans, &[])
    }

    /// A node certificate of node `node_id` for the cluster port: [`TestPki::leaf`] with
    /// the URI SAN `neo-node:<id>` that names the node (neo-cluster's rule).
    pub fn node_leaf(&self, node_id: u64, common_name: &str, sans: &[&str]) -> (String, String) {
        self.leaf_with_uris(common_name, sans, &[&format!("neo-node:{node_id}")])
    }

    /// [`TestPki::leaf`], with URI SANs `uris` too.
    pub fn leaf_with_uris(
        &self,
        common_name: &str,
        sans: &[&str],
        uris: &[&str],
    ) -> (String, String) {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.subject_alt_names = sans
            .iter()
            .map(|san| match san.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*san).try_into().expect("dns name")),
            })
            .chain(
                uris.iter()
                    .map(|uri| SanType::URI((*uri).try_into().expect("uri"))),
            )
            .collect();
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("cert");
        (cert.pem(), key.serialize_pem())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_are_pem_and_distinct() {
        let pki = TestPki::new("test ca");
        assert!(pki.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        let (cert, key) = pki.leaf("node", &["127.0.0.1", "localhost"]);
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(key.contains("PRIVATE KEY"));
        assert_ne!(
            pki.leaf("node", &["127.0.0.1"]).1,
            key,
            "a fresh key each time"
        );
    }
}
