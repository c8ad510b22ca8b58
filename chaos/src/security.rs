//! [`ClientSecurity`]: how every connection the runner makes reaches a cluster with
//! security on (docs/security.md): the bearer token sent in the client port's
//! authentication handshake and in the HTTP admin port's `Authorization` header, and
//! TLS to the client port. Built once from `--token`, `--tls-ca` and
//! `--tls-server-name`; the default (no token, no TLS) is a cluster with security off.
//!
//! The HTTP admin port is plain HTTP even with TLS on the client port: only the token
//! applies to it.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use neo_client::ClientConfig;
use neo_protocol::ClientTls;

/// The credentials and TLS settings of every client the runner makes (producers,
/// consumers, group members, the sampler and auditor, the drain, the topic's creation)
/// and the bearer of its HTTP admin requests.
#[derive(Debug, Clone, Default)]
pub struct ClientSecurity {
    /// JWT or API key; `None`: no handshake, no `Authorization` header.
    token: Option<String>,
    /// TLS to the client port; `None`: plain TCP.
    tls: Option<ClientTls>,
    /// The CA file `tls` trusts (for the report's command line).
    tls_ca: Option<PathBuf>,
    /// The server name asked for with `--tls-server-name` (for the command line).
    tls_server_name: Option<String>,
}

impl ClientSecurity {
    /// Security off: plain TCP, no token.
    pub fn off() -> ClientSecurity {
        ClientSecurity::default()
    }

    /// `token` for the handshake and the HTTP port; TLS trusting the CA certificates of
    /// the PEM file `tls_ca` when given, checking every node's certificate against
    /// `tls_server_name` or else the host of the first seed (as the `neo` CLI does).
    pub fn new(
        token: Option<String>,
        tls_ca: Option<&Path>,
        tls_server_name: Option<&str>,
        seeds: &[String],
    ) -> anyhow::Result<ClientSecurity> {
        if let Some(token) = &token {
            check_token(token)?;
        }
        let tls = match tls_ca {
            None => None,
            Some(ca) => {
                let name = match tls_server_name {
                    Some(name) => name.to_string(),
                    None => seed_host(seeds.first().map(String::as_str).unwrap_or_default())?,
                };
                let tls = neo_client::tls::from_pem_files(ca, None, &name)?;
                Some(tls)
            }
        };
        Ok(ClientSecurity {
            token,
            tls,
            tls_ca: tls_ca.map(Path::to_path_buf),
            tls_server_name: tls_server_name.map(str::to_string),
        })
    }

    /// `config` with this handshake token and TLS on its connections.
    pub fn apply(&self, mut config: ClientConfig) -> ClientConfig {
        config.rpc.auth_token = self.token.as_ref().map(|t| t.clone().into_bytes());
        config.rpc.tls = self.tls.clone();
        config
    }

    /// The bearer token of HTTP admin requests.
    pub fn bearer(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// How the run's report names these settings (never the token itself):
    /// `off`, `token`, `TLS`, `token + TLS`.
    pub fn describe(&self) -> &'static str {
        match (&self.token, &self.tls) {
            (None, None) => "off",
            (Some(_), None) => "token",
            (None, Some(_)) => "TLS",
            (Some(_), Some(_)) => "token + TLS",
        }
    }

    /// The flags that set these again, for a reproducing command line; the token
    /// itself is left to `NEO_TOKEN` (a report must not carry a credential).
    pub fn flags(&self) -> String {
        let mut out = String::new();
        if self.token.is_some() {
            out.push_str(" --token \"$NEO_TOKEN\"");
        }
        if let Some(ca) = &self.tls_ca {
            out.push_str(&format!(" --tls-ca {}", ca.display()));
        }
        if let Some(name) = &self.tls_server_name {
            out.push_str(&format!(" --tls-server-name {name}"));
        }
        out
    }
}

/// A token goes into an HTTP header line as is: no whitespace or control characters
/// (which would also end or split the header), and not empty.
fn check_token(token: &str) -> anyhow::Result<()> {
    if token.is_empty() {
        bail!("--token: empty");
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!("--token: contains whitespace or control characters");
    }
    Ok(())
}

/// The host part of a `HOST:PORT` seed, to check the TLS certificates against.
fn seed_host(seed: &str) -> anyhow::Result<String> {
    neo_client::tls::seed_host(seed).with_context(|| {
        format!(
            "no host in seed {seed:?} to check the TLS certificates against: set --tls-server-name"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_hosts_drop_the_port_and_brackets() {
        assert_eq!(seed_host("127.0.0.1:7171").unwrap(), "127.0.0.1");
        assert_eq!(seed_host("[::1]:7171").unwrap(), "::1");
        assert_eq!(seed_host("neo1").unwrap(), "neo1");
        assert!(seed_host(":7171").is_err());
        assert!(seed_host("").is_err());
    }

    #[test]
    fn tokens_with_whitespace_are_refused() {
        assert!(check_token("a.b.c").is_ok());
        assert!(check_token("").is_err());
        assert!(check_token("a.b.c\r\nX-Evil: 1").is_err());
        assert!(check_token("a b").is_err());
    }

    #[test]
    fn the_token_and_tls_reach_the_connection_settings() {
        let off = ClientSecurity::off().apply(ClientConfig::default());
        assert!(off.rpc.auth_token.is_none() && off.rpc.tls.is_none());
        let secure = ClientSecurity::new(Some("a.b.c".into()), None, None, &[]).unwrap();
        assert_eq!(secure.bearer(), Some("a.b.c"));
        let config = secure.apply(ClientConfig::default());
        assert_eq!(config.rpc.auth_token.as_deref(), Some(&b"a.b.c"[..]));
        assert_eq!(secure.describe(), "token");
        assert_eq!(secure.flags(), " --token \"$NEO_TOKEN\"");
        assert!(!secure.flags().contains("a.b.c"));
    }

    #[test]
    fn a_missing_ca_file_is_an_error_naming_the_flag() {
        let err = ClientSecurity::new(
            None,
            Some(Path::new("/nonexistent/ca.pem")),
            None,
            &["127.0.0.1:7171".into()],
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("--tls-ca"), "{err:#}");
    }
}
