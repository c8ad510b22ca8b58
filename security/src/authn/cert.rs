//! Client certificates (mTLS): the principal named by a verified certificate.
//!
//! The TLS layer (neo-protocol's server with a client CA) has already verified the chain
//! when a [`PeerIdentity`] exists; a certificate from another CA never gets this far.
//! This module only maps names to a principal.
//!
//! # Mapping rule
//! [`CertMapping::rules`] are tried in order; within a rule, names in the certificate's
//! order; the first name a rule accepts, and that is a valid principal name, wins:
//!
//! - [`CertRule::UriSan`] `{ prefix }`: a URI SAN starting with `prefix`; the principal is
//!   the rest (`spiffe://neo.example/user/` + `alice` → `alice`).
//! - [`CertRule::DnsSan`] `{ suffix }`: a DNS SAN ending with `suffix` (which, if not
//!   empty, must start with `.`); the principal is the part before it
//!   (`alice.clients.neo.example` with `.clients.neo.example` → `alice`); an empty suffix
//!   takes the whole name.
//! - [`CertRule::CommonName`]: the subject's CN, as it is.
//!
//! The default is `[DnsSan { suffix: "" }, CommonName]`: the first DNS SAN, else the CN.
//! No rule matching is [`AuthFailure::NoCertificateName`].

use neo_protocol::PeerIdentity;
use serde::{Deserialize, Serialize};

use super::Identity;
use crate::error::{AuthFailure, AuthMethod, SecurityError, check_name};

/// One way of reading a principal out of a certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CertRule {
    /// A URI SAN with this prefix; the principal is what follows it.
    UriSan {
        /// E.g. `spiffe://neo.example/user/`.
        prefix: String,
    },
    /// A DNS SAN with this suffix; the principal is what precedes it.
    DnsSan {
        /// Empty, or starting with `.`, e.g. `.clients.neo.example`.
        suffix: String,
    },
    /// The subject's common name.
    CommonName,
}

/// The ordered rules (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertMapping {
    /// Tried in order.
    pub rules: Vec<CertRule>,
}

impl Default for CertMapping {
    fn default() -> CertMapping {
        CertMapping {
            rules: vec![
                CertRule::DnsSan {
                    suffix: String::new(),
                },
                CertRule::CommonName,
            ],
        }
    }
}

impl CertMapping {
    /// Check the rules themselves.
    pub fn validate(&self) -> Result<(), SecurityError> {
        if self.rules.is_empty() {
            return Err(SecurityError::Invalid {
                what: "certificate mapping",
                value: String::new(),
                reason: "no rules",
            });
        }
        for rule in &self.rules {
            if let CertRule::DnsSan { suffix } = rule
                && !suffix.is_empty()
                && !suffix.starts_with('.')
            {
                return Err(SecurityError::Invalid {
                    what: "certificate DNS suffix",
                    value: suffix.clone(),
                    reason: "must start with '.'",
                });
            }
        }
        Ok(())
    }

    /// The principal `identity` maps to, if any.
    pub fn principal(&self, identity: &PeerIdentity) -> Option<String> {
        let valid = |name: &str| check_name("principal", name).is_ok();
        self.rules.iter().find_map(|rule| match rule {
            CertRule::UriSan { prefix } => identity
                .uri_names
                .iter()
                .filter_map(|uri| uri.strip_prefix(prefix.as_str()))
                .find(|name| valid(name))
                .map(str::to_owned),
            CertRule::DnsSan { suffix } => identity
                .dns_names
                .iter()
                .filter_map(|dns| dns.strip_suffix(suffix.as_str()))
                .find(|name| valid(name))
                .map(str::to_owned),
            CertRule::CommonName => identity.common_name.clone().filter(|cn| valid(cn)),
        })
    }
}

/// Authenticates by the verified client certificate.
#[derive(Debug, Clone, Default)]
pub struct CertAuthenticator {
    mapping: CertMapping,
}

impl CertAuthenticator {
    /// With these rules. Invalid rules are refused by [`CertMapping::validate`]; call it
    /// when loading configuration.
    pub fn new(mapping: CertMapping) -> CertAuthenticator {
        CertAuthenticator { mapping }
    }

    /// The rules.
    pub fn mapping(&self) -> &CertMapping {
        &self.mapping
    }

    /// The identity of a connection with this (verified) client certificate.
    pub fn identify(&self, identity: Option<&PeerIdentity>) -> Result<Identity, SecurityError> {
        let refused =
            |reason| SecurityError::unauthenticated(Some(AuthMethod::Certificate), reason);
        let identity = identity.ok_or_else(|| refused(AuthFailure::NoCertificate))?;
        let principal = self
            .mapping
            .principal(identity)
            .ok_or_else(|| refused(AuthFailure::NoCertificateName))?;
        Ok(Identity {
            principal,
            roles: Vec::new(),
            method: AuthMethod::Certificate,
            // The TLS layer enforces the certificate's validity period at the handshake.
            expires_at_unix_secs: None,
            key_id: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(dns: &[&str], uri: &[&str], cn: Option<&str>) -> PeerIdentity {
        PeerIdentity {
            certificate_chain_der: Vec::new(),
            dns_names: dns.iter().map(|s| s.to_string()).collect(),
            uri_names: uri.iter().map(|s| s.to_string()).collect(),
            common_name: cn.map(str::to_owned),
        }
    }

    #[test]
    fn default_rule_is_first_dns_san_then_cn() {
        let m = CertMapping::default();
        assert_eq!(
            m.principal(&identity(&["alice", "bob"], &[], Some("carol")))
                .as_deref(),
            Some("alice")
        );
        assert_eq!(
            m.principal(&identity(&[], &[], Some("carol"))).as_deref(),
            Some("carol")
        );
        assert_eq!(m.principal(&identity(&[], &["spiffe://x/y"], None)), None);
    }

    #[test]
    fn prefix_and_suffix_rules() {
        let m = CertMapping {
            rules: vec![
                CertRule::UriSan {
                    prefix: "spiffe://neo.example/user/".into(),
                },
                CertRule::DnsSan {
                    suffix: ".clients.neo.example".into(),
                },
            ],
        };
        m.validate().unwrap();
        let both = identity(
            &["alice.clients.neo.example"],
            &[
                "spiffe://other/user/mallory",
                "spiffe://neo.example/user/svc-a",
            ],
            Some("ignored"),
        );
        assert_eq!(m.principal(&both).as_deref(), Some("svc-a"));
        let dns_only = identity(&["host.example", "bob.clients.neo.example"], &[], None);
        assert_eq!(m.principal(&dns_only).as_deref(), Some("bob"));
        // The suffix alone leaves an empty name: not a principal.
        assert_eq!(
            m.principal(&identity(&[".clients.neo.example"], &[], None)),
            None
        );
        // CN is not in these rules.
        assert_eq!(m.principal(&identity(&[], &[], Some("carol"))), None);
        let bad = CertMapping {
            rules: vec![CertRule::DnsSan {
                suffix: "neo.example".into(),
            }],
        };
        assert!(bad.validate().is_err());
        assert!(CertMapping { rules: vec![] }.validate().is_err());
    }

    #[test]
    fn refusals() {
        let auth = CertAuthenticator::default();
        let reason = |r: Result<Identity, SecurityError>| r.unwrap_err().auth_failure();
        assert_eq!(
            reason(auth.identify(None)),
            Some(AuthFailure::NoCertificate)
        );
        assert_eq!(
            reason(auth.identify(Some(&identity(&[], &[], None)))),
            Some(AuthFailure::NoCertificateName)
        );
        assert_eq!(
            reason(auth.identify(Some(&identity(&[], &[], Some("bad\u{7}cn"))))),
            Some(AuthFailure::NoCertificateName)
        );
    }

    #[test]
    fn real_certificate_through_peer_identity() {
        let mut params =
            rcgen::CertificateParams::new(vec!["dave.clients.neo.example".into()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Dave");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let peer = PeerIdentity::from_chain(&[cert.der().clone()]).unwrap();
        let by_dns = CertAuthenticator::new(CertMapping {
            rules: vec![CertRule::DnsSan {
                suffix: ".clients.neo.example".into(),
            }],
        });
        assert_eq!(by_dns.identify(Some(&peer)).unwrap().principal, "dave");
        let by_cn = CertAuthenticator::new(CertMapping {
            rules: vec![CertRule::CommonName],
        });
        assert_eq!(by_cn.identify(Some(&peer)).unwrap().principal, "Dave");
    }
}
