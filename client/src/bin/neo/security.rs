//! Security from the command line (docs/cli.md, "Global" and "Security"):
//!
//! - the global connection flags (`--token`, `--api-key`, `--tls-ca`, `--tls-cert`,
//!   `--tls-key`, `--tls-server-name`) turned into the connections' handshake token
//!   and TLS settings;
//! - what `neo user`, `neo role`, `neo acl` and `neo quota` share: the description
//!   fetched through [`SecurityAdmin`], the empty-listing rule, the old-node message.
//!
//! The commands themselves: `user.rs` (users and their API keys), `role.rs` (roles,
//! grants, assignments), `acl.rs` (direct grants), `quota.rs` (rate and connection
//! limits).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use neo_client::{SecurityAdmin, SecurityDescription};
use neo_protocol::{ClientTls, ErrorCode};

/// Every API key starts with this (the cluster tells keys from JWTs by it).
const API_KEY_PREFIX: &str = "neoak_";

/// The global flags that say who this client is and how it reaches the client port.
/// Flattened into `Cli`; every one is also accepted after the subcommand.
#[derive(Debug, Default, Args)]
pub(crate) struct ConnectionSecurity {
    /// Bearer token (a JWT) sent in each connection's authentication handshake.
    #[arg(
        long,
        global = true,
        env = "NEO_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        value_parser = non_empty,
        conflicts_with = "api_key"
    )]
    pub(crate) token: Option<String>,
    /// API key (`neoak_...`, from `neo user api-key create`), sent in the handshake
    /// like a token. Excludes `--token`.
    #[arg(
        long,
        global = true,
        env = "NEO_API_KEY",
        hide_env_values = true,
        value_name = "KEY",
        value_parser = api_key_shape
    )]
    pub(crate) api_key: Option<String>,
    /// TLS to the client port, trusting the CA certificate(s) of this PEM file.
    #[arg(long, global = true, env = "NEO_TLS_CA", value_name = "FILE")]
    pub(crate) tls_ca: Option<PathBuf>,
    /// Client certificate chain (PEM) for mutual TLS; needs `--tls-key` and `--tls-ca`.
    /// Without `--token` / `--api-key` the certificate names the principal.
    #[arg(
        long,
        global = true,
        env = "NEO_TLS_CERT",
        value_name = "FILE",
        requires_all = ["tls_key", "tls_ca"]
    )]
    pub(crate) tls_cert: Option<PathBuf>,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1) of `--tls-cert`.
    #[arg(
        long,
        global = true,
        env = "NEO_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub(crate) tls_key: Option<PathBuf>,
    /// Name every node's certificate is checked against (default: the host of the
    /// first `--server` seed).
    #[arg(
        long,
        global = true,
        env = "NEO_TLS_SERVER_NAME",
        value_name = "NAME",
        requires = "tls_ca"
    )]
    pub(crate) tls_server_name: Option<String>,
}

pub(crate) fn non_empty(value: &str) -> Result<String, String> {
    if value.trim().is_empty() {
        return Err("must not be empty".into());
    }
    Ok(value.to_string())
}

fn api_key_shape(value: &str) -> Result<String, String> {
    if !value.starts_with(API_KEY_PREFIX) || value.len() == API_KEY_PREFIX.len() {
        return Err(format!(
            "an API key starts with {API_KEY_PREFIX} (use --token for a JWT)"
        ));
    }
    Ok(value.to_string())
}

impl ConnectionSecurity {
    /// Whether a token or an API key was given.
    pub(crate) fn has_credential(&self) -> bool {
        self.token.is_some() || self.api_key.is_some()
    }

    /// Sets the handshake token and TLS of `rpc`. `seeds` give the default name the
    /// nodes' certificates are checked against.
    pub(crate) fn apply(
        &self,
        seeds: &[String],
        rpc: &mut neo_protocol::ClientConfig,
    ) -> anyhow::Result<()> {
        rpc.auth_token = self.handshake_token();
        rpc.tls = self.tls(seeds)?;
        Ok(())
    }

    /// The token of the handshake: the API key or the JWT as given; an empty token
    /// with a client certificate alone (the certificate names the principal); none
    /// otherwise.
    fn handshake_token(&self) -> Option<Vec<u8>> {
        match (&self.token, &self.api_key) {
            (Some(token), _) => Some(token.clone().into_bytes()),
            (None, Some(key)) => Some(key.clone().into_bytes()),
            (None, None) if self.tls_cert.is_some() => Some(Vec::new()),
            (None, None) => None,
        }
    }

    fn tls(&self, seeds: &[String]) -> anyhow::Result<Option<ClientTls>> {
        let Some(ca) = &self.tls_ca else {
            return Ok(None);
        };
        // clap requires --tls-cert and --tls-key together.
        let client = self.tls_cert.as_deref().zip(self.tls_key.as_deref());
        let name = match &self.tls_server_name {
            Some(name) => name.clone(),
            None => seed_host(seeds.first().map(String::as_str).unwrap_or_default())?,
        };
        let tls = neo_client::tls::from_pem_files(ca, client, &name)?;
        Ok(Some(tls))
    }
}

/// The host part of a `HOST:PORT` seed, to check the TLS certificates against.
fn seed_host(seed: &str) -> anyhow::Result<String> {
    neo_client::tls::seed_host(seed).with_context(|| {
        format!("no host in --server {seed:?} to check the TLS certificates against: set --tls-server-name")
    })
}

/// The cluster's security description; a note on stderr when nothing is enforced.
pub(crate) async fn describe(admin: &SecurityAdmin) -> anyhow::Result<SecurityDescription> {
    let d = unsupported(admin.describe().await).context("describe security")?;
    if !d.enabled {
        eprintln!("note: security is off on this cluster: roles and keys are not enforced");
    }
    Ok(d)
}

/// Prints `out` and a newline; nothing at all for an empty text listing.
pub(crate) fn print_output(out: &str) {
    if !out.is_empty() {
        println!("{out}");
    }
}

/// Says so when the nodes predate security administration (they answer
/// `UnknownMethod`), keeping the error (and its code) as the cause.
pub(crate) fn unsupported<T>(result: neo_client::Result<T>) -> anyhow::Result<T> {
    match result {
        Err(err) if err.code() == Some(ErrorCode::UnknownMethod) => Err(anyhow::Error::new(err)
            .context(
                "this cluster does not support security administration (its nodes predate \
                 alter_security / describe_security)",
            )),
        other => Ok(other?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cli, EXIT_PERMISSION_DENIED, EXIT_UNAUTHENTICATED, error_code, exit_status};
    use clap::Parser;
    use neo_protocol::RpcError;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("neo").chain(args.iter().copied()))
    }

    /// These tests assume no credential in the environment (as CI runs them).
    fn env_is_clean() -> bool {
        [
            "NEO_TOKEN",
            "NEO_API_KEY",
            "NEO_TLS_CA",
            "NEO_TLS_CERT",
            "NEO_TLS_KEY",
        ]
        .iter()
        .all(|v| std::env::var_os(v).is_none())
    }

    #[test]
    fn credential_flags() {
        if !env_is_clean() {
            return;
        }
        let cli = parse(&["--token", "a.b.c", "topic", "list"]).unwrap();
        assert_eq!(cli.security.token.as_deref(), Some("a.b.c"));
        assert_eq!(cli.security.handshake_token(), Some(b"a.b.c".to_vec()));
        // Global: also after the subcommand.
        let cli = parse(&["role", "list", "--api-key", "neoak_01_s"]).unwrap();
        assert_eq!(cli.security.handshake_token(), Some(b"neoak_01_s".to_vec()));
        assert!(cli.security.has_credential());
        let cli = parse(&["role", "list"]).unwrap();
        assert_eq!(cli.security.handshake_token(), None);
        assert!(!cli.security.has_credential());
        // Both: a usage error (exit status 2), whatever the order.
        for args in [
            &["--token", "t", "--api-key", "neoak_x", "role", "list"][..],
            &["role", "list", "--api-key", "neoak_x", "--token", "t"],
        ] {
            let err = parse(args).unwrap_err();
            assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
            assert_eq!(err.exit_code(), 2);
        }
        // An API key has the API key shape; nothing is empty.
        assert!(parse(&["--api-key", "eyJ.a.b", "role", "list"]).is_err());
        assert!(parse(&["--api-key", "neoak_", "role", "list"]).is_err());
        assert!(parse(&["--token", "", "role", "list"]).is_err());
    }

    #[test]
    fn tls_flags_come_together() {
        if !env_is_clean() {
            return;
        }
        let cli = parse(&[
            "--tls-ca",
            "ca.pem",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "role",
            "list",
        ])
        .unwrap();
        assert_eq!(cli.security.tls_ca, Some(PathBuf::from("ca.pem")));
        // A client certificate alone names the principal: an empty handshake token.
        assert_eq!(cli.security.handshake_token(), Some(Vec::new()));
        assert!(parse(&["--tls-ca", "ca.pem", "role", "list"]).is_ok());
        for partial in [
            &["--tls-cert", "c.pem", "--tls-key", "k.pem"][..],
            &["--tls-ca", "ca.pem", "--tls-cert", "c.pem"],
            &["--tls-ca", "ca.pem", "--tls-key", "k.pem"],
            &["--tls-server-name", "neo.example"],
        ] {
            let err = parse(&[partial, &["role", "list"]].concat()).unwrap_err();
            assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        }
    }

    #[test]
    fn tls_server_name_defaults_to_the_first_seed_host() {
        assert_eq!(seed_host("neo-1.example:7070").unwrap(), "neo-1.example");
        assert_eq!(seed_host("127.0.0.1:7070").unwrap(), "127.0.0.1");
        assert_eq!(seed_host("[::1]:7070").unwrap(), "::1");
        assert_eq!(seed_host("neo.example").unwrap(), "neo.example");
        assert!(seed_host(":7070").is_err());
        let missing = ConnectionSecurity {
            tls_ca: Some(PathBuf::from("/nonexistent/ca.pem")),
            ..ConnectionSecurity::default()
        };
        let err = missing.tls(&["a:1".into()]).unwrap_err();
        assert!(format!("{err:#}").contains("--tls-ca"), "{err:#}");
        assert!(ConnectionSecurity::default().tls(&[]).unwrap().is_none());
    }

    fn refusal(code: ErrorCode) -> neo_client::Error {
        neo_client::Error::from(neo_protocol::Error::Rpc(RpcError::new(
            code,
            "alice@10.0.0.9:4000 may not delete topic:orders.eu",
        )))
    }

    #[test]
    fn exit_statuses_come_from_the_error_chain() {
        assert_eq!(
            exit_status(Some(ErrorCode::Unauthenticated)),
            EXIT_UNAUTHENTICATED
        );
        assert_eq!(
            exit_status(Some(ErrorCode::PermissionDenied)),
            EXIT_PERMISSION_DENIED
        );
        assert_eq!(
            (EXIT_UNAUTHENTICATED, EXIT_PERMISSION_DENIED),
            (3, 4),
            "the contract"
        );
        assert_eq!(exit_status(Some(ErrorCode::UnknownTopic)), 1);
        assert_eq!(exit_status(None), 1);

        // Under context, as commands add it.
        let err = anyhow::Error::new(refusal(ErrorCode::PermissionDenied))
            .context("delete topic \"orders.eu\"");
        assert_eq!(error_code(&err), Some(ErrorCode::PermissionDenied));
        assert!(format!("{err:#}").contains("may not delete topic:orders.eu"));
        // Inside the retry wrappers.
        let wrapped = neo_client::Error::RetriesExhausted {
            attempts: 3,
            last: Box::new(refusal(ErrorCode::Unauthenticated)),
        };
        let err = anyhow::Error::new(wrapped).context("cannot reach the cluster");
        assert_eq!(exit_status(error_code(&err)), 3);
        // A bare protocol error or broker error.
        let err = anyhow::Error::new(neo_protocol::Error::Rpc(RpcError::new(
            ErrorCode::Unauthenticated,
            "expired",
        )));
        assert_eq!(error_code(&err), Some(ErrorCode::Unauthenticated));
        let err = anyhow::Error::new(RpcError::new(ErrorCode::PermissionDenied, "no"))
            .context("a")
            .context("b");
        assert_eq!(exit_status(error_code(&err)), 4);
        // Anything else.
        assert_eq!(error_code(&anyhow::anyhow!("unknown role")), None);
        let unknown = anyhow::Error::new(refusal(ErrorCode::UnknownMethod));
        assert_eq!(exit_status(error_code(&unknown)), 1);
    }

    #[test]
    fn an_old_node_is_named_as_such() {
        let err = unsupported::<()>(Err(refusal(ErrorCode::UnknownMethod))).unwrap_err();
        assert!(format!("{err:#}").contains("does not support security administration"));
        assert_eq!(
            error_code(&err),
            Some(ErrorCode::UnknownMethod),
            "the cause is kept"
        );
        let err = unsupported::<()>(Err(refusal(ErrorCode::PermissionDenied))).unwrap_err();
        assert_eq!(exit_status(error_code(&err)), 4);
    }
}

/// A description for the output tests of `user.rs`, `role.rs` and `acl.rs`.
#[cfg(test)]
pub(crate) mod sample {
    use neo_client::{
        AclDescription, ApiKeyDescription, GrantDescription, QuotaDescription, QuotaLimits,
        QuotaScope, RoleDescription, SecurityDescription, UserDescription,
    };

    pub(crate) fn sample() -> SecurityDescription {
        SecurityDescription {
            enabled: true,
            roles: vec![
                RoleDescription {
                    name: "writers".into(),
                    grants: vec![
                        GrantDescription {
                            resource: "topic:orders.*".into(),
                            operations: vec!["produce".into(), "describe".into()],
                        },
                        GrantDescription {
                            resource: "group:billing".into(),
                            operations: vec!["consume".into()],
                        },
                    ],
                    principals: vec!["carol".into(), "bob".into()],
                },
                RoleDescription {
                    name: "auditors".into(),
                    grants: Vec::new(),
                    principals: Vec::new(),
                },
            ],
            api_keys: vec![
                ApiKeyDescription {
                    key_id: "b0".into(),
                    principal: "bob".into(),
                    revoked: false,
                },
                ApiKeyDescription {
                    key_id: "0a".into(),
                    principal: "alice".into(),
                    revoked: true,
                },
            ],
            superusers: vec!["admin".into()],
            quotas: vec![QuotaDescription {
                scope: QuotaScope::Principal("bob".into()),
                quota: QuotaLimits {
                    requests_per_sec: Some(10),
                    connections: Some(2),
                    ..QuotaLimits::default()
                },
            }],
            users: vec![
                UserDescription {
                    name: "bob".into(),
                    created_at_unix_secs: 20,
                },
                UserDescription {
                    name: "alice".into(),
                    created_at_unix_secs: 10,
                },
            ],
            acls: vec![AclDescription {
                principal: "alice".into(),
                grants: vec![GrantDescription {
                    resource: "topic:audit".into(),
                    operations: vec!["consume".into(), "describe".into()],
                }],
            }],
        }
    }
}
