//! Security from the command line (docs/cli.md, "Global" and "Security"):
//!
//! - the global connection flags (`--token`, `--api-key`, `--tls-ca`, `--tls-cert`,
//!   `--tls-key`, `--tls-server-name`) turned into the connections' handshake token
//!   and TLS settings;
//! - `neo role ...` (roles, grants, assignments) and `neo user api-key ...`, through
//!   [`SecurityAdmin`].

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use neo_client::{Client, RoleDescription, SecurityAdmin, SecurityDescription};
use neo_protocol::{ClientTls, ErrorCode};
use serde::Serialize;

use crate::Format;

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

#[derive(Debug, Subcommand)]
pub(crate) enum RoleCommand {
    /// Create a role without grants.
    Create {
        /// Role name.
        role: String,
    },
    /// Allow a role operations on resources (granting again adds operations).
    Grant(GrantArgs),
    /// Take operations on resources away from a role.
    Revoke(GrantArgs),
    /// Give a principal a role.
    Assign {
        /// Role name.
        role: String,
        /// Principal (user, service account, certificate name).
        #[arg(long)]
        principal: String,
    },
    /// Take a role from a principal.
    Unassign {
        /// Role name.
        role: String,
        /// Principal.
        #[arg(long)]
        principal: String,
    },
    /// List the roles: grant and principal counts.
    List {
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// A role's grants and principals.
    Describe {
        /// Role name.
        role: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Delete a role and its assignments.
    Delete {
        /// Role name.
        role: String,
    },
}

/// What `role grant` and `role revoke` take.
#[derive(Debug, Args)]
pub(crate) struct GrantArgs {
    /// Role name.
    pub(crate) role: String,
    /// `KIND:PATTERN`: kind `topic`, `group`, `queue`, `cluster` or `user` (`acl`); the
    /// pattern a name, a prefix (`orders.*`) or `*`.
    #[arg(long, value_name = "KIND:PATTERN")]
    pub(crate) resource: String,
    /// Comma-separated: `produce`, `consume`, `describe`, `create`, `delete`, `alter`,
    /// `admin`, `all`.
    #[arg(long, value_name = "OP,...", value_delimiter = ',', required = true)]
    pub(crate) operations: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum UserCommand {
    /// Create, revoke and list API keys.
    #[command(subcommand)]
    ApiKey(ApiKeyCommand),
}

#[derive(Debug, Subcommand)]
pub(crate) enum ApiKeyCommand {
    /// Create an API key for a principal; prints it once (and its id).
    Create {
        /// The principal the key authenticates as.
        #[arg(long)]
        principal: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Revoke an API key by id (connections using it are closed within a second).
    Revoke {
        /// Key id (as `create` and `list` print it).
        key_id: String,
    },
    /// List API keys (ids, principals, revoked or not; never secrets).
    List {
        /// Only this principal's keys.
        #[arg(long)]
        principal: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
}

/// A role as `neo role list|describe --format json` prints it (docs/cli.md). Field
/// names mirror the wire's `RoleDescription`; the order is the contract.
#[derive(Debug, Serialize)]
struct JsonRole<'a> {
    name: &'a str,
    grants: Vec<JsonGrant<'a>>,
    principals: Vec<&'a str>,
}

#[derive(Debug, Serialize)]
struct JsonGrant<'a> {
    resource: &'a str,
    operations: &'a [String],
}

/// An API key as `neo user api-key list --format json` prints it.
#[derive(Debug, Serialize)]
struct JsonApiKey<'a> {
    key_id: &'a str,
    principal: &'a str,
    revoked: bool,
}

/// `neo user api-key create --format json`.
#[derive(Debug, Serialize)]
struct JsonCreatedKey<'a> {
    key_id: &'a str,
    api_key: &'a str,
}

pub(crate) async fn role(client: Client, cmd: RoleCommand) -> anyhow::Result<ExitCode> {
    let admin = SecurityAdmin::new(client);
    match cmd {
        RoleCommand::Create { role } => {
            unsupported(admin.create_role(&role).await)
                .with_context(|| format!("create role {role:?}"))?;
            println!("created role {role}");
        }
        RoleCommand::Grant(g) => {
            unsupported(admin.grant(&g.role, &g.resource, &g.operations).await)
                .with_context(|| format!("grant to role {:?}", g.role))?;
            let ops = g.operations.join(",");
            println!("granted role {} {ops} on {}", g.role, g.resource);
        }
        RoleCommand::Revoke(g) => {
            unsupported(admin.revoke(&g.role, &g.resource, &g.operations).await)
                .with_context(|| format!("revoke from role {:?}", g.role))?;
            let ops = g.operations.join(",");
            println!("revoked from role {} {ops} on {}", g.role, g.resource);
        }
        RoleCommand::Assign { role, principal } => {
            unsupported(admin.assign(&role, &principal).await)
                .with_context(|| format!("assign role {role:?} to {principal:?}"))?;
            println!("assigned role {role} to {principal}");
        }
        RoleCommand::Unassign { role, principal } => {
            unsupported(admin.unassign(&role, &principal).await)
                .with_context(|| format!("unassign role {role:?} from {principal:?}"))?;
            println!("unassigned role {role} from {principal}");
        }
        RoleCommand::List { format } => {
            let d = describe(&admin).await?;
            print_output(&format_roles(&d, format)?);
        }
        RoleCommand::Describe { role, format } => {
            let d = describe(&admin).await?;
            let Some(r) = d.roles.iter().find(|r| r.name == role) else {
                bail!("unknown role {role:?}");
            };
            println!("{}", format_role(r, format)?);
        }
        RoleCommand::Delete { role } => {
            unsupported(admin.delete_role(&role).await)
                .with_context(|| format!("delete role {role:?}"))?;
            println!("deleted role {role}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn user(client: Client, cmd: UserCommand) -> anyhow::Result<ExitCode> {
    let admin = SecurityAdmin::new(client);
    let UserCommand::ApiKey(cmd) = cmd;
    match cmd {
        ApiKeyCommand::Create { principal, format } => {
            let key = unsupported(admin.create_api_key(&principal).await)
                .with_context(|| format!("create an API key for {principal:?}"))?;
            match format {
                Format::Json => {
                    let json = JsonCreatedKey {
                        key_id: &key.key_id,
                        api_key: &key.api_key,
                    };
                    println!("{}", serde_json::to_string(&json)?);
                }
                Format::Text => {
                    println!("key_id {}", key.key_id);
                    println!("api_key {}", key.api_key);
                }
            }
            eprintln!(
                "store the API key now: the cluster keeps only a hash of it and cannot show it again"
            );
        }
        ApiKeyCommand::Revoke { key_id } => {
            unsupported(admin.revoke_api_key(&key_id).await)
                .with_context(|| format!("revoke API key {key_id:?}"))?;
            println!("revoked api key {key_id}");
        }
        ApiKeyCommand::List { principal, format } => {
            let d = describe(&admin).await?;
            print_output(&format_api_keys(&d, principal.as_deref(), format)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The cluster's security description; a note on stderr when nothing is enforced.
async fn describe(admin: &SecurityAdmin) -> anyhow::Result<SecurityDescription> {
    let d = unsupported(admin.describe().await).context("describe security")?;
    if !d.enabled {
        eprintln!("note: security is off on this cluster: roles and keys are not enforced");
    }
    Ok(d)
}

/// Prints `out` and a newline; nothing at all for an empty text listing.
fn print_output(out: &str) {
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

fn json_role(r: &RoleDescription) -> JsonRole<'_> {
    let mut grants: Vec<JsonGrant<'_>> = r
        .grants
        .iter()
        .map(|g| JsonGrant {
            resource: &g.resource,
            operations: &g.operations,
        })
        .collect();
    grants.sort_by(|a, b| a.resource.cmp(b.resource));
    let mut principals: Vec<&str> = r.principals.iter().map(String::as_str).collect();
    principals.sort_unstable();
    JsonRole {
        name: &r.name,
        grants,
        principals,
    }
}

/// `neo role list`: text, one `NAME grants N principals N` line per role; JSON, one
/// array. Roles by name.
fn format_roles(d: &SecurityDescription, format: Format) -> anyhow::Result<String> {
    let mut roles: Vec<JsonRole<'_>> = d.roles.iter().map(json_role).collect();
    roles.sort_by(|a, b| a.name.cmp(b.name));
    Ok(match format {
        Format::Json => serde_json::to_string(&roles)?,
        Format::Text => roles
            .iter()
            .map(|r| {
                format!(
                    "{} grants {} principals {}",
                    r.name,
                    r.grants.len(),
                    r.principals.len()
                )
            })
            .collect::<Vec<_>>()
            .join("\n"),
    })
}

/// `neo role describe R`: text, a `role` line, one `grant` line per grant, one
/// `principal` line per principal; JSON, one object.
fn format_role(r: &RoleDescription, format: Format) -> anyhow::Result<String> {
    let r = json_role(r);
    Ok(match format {
        Format::Json => serde_json::to_string(&r)?,
        Format::Text => {
            let mut lines = vec![format!(
                "role {} grants {} principals {}",
                r.name,
                r.grants.len(),
                r.principals.len()
            )];
            for g in &r.grants {
                lines.push(format!("grant {} {}", g.resource, g.operations.join(",")));
            }
            for p in &r.principals {
                lines.push(format!("principal {p}"));
            }
            lines.join("\n")
        }
    })
}

/// `neo user api-key list`: text, one `KEY_ID principal P active|revoked` line per key;
/// JSON, one array. Keys by id.
fn format_api_keys(
    d: &SecurityDescription,
    principal: Option<&str>,
    format: Format,
) -> anyhow::Result<String> {
    let mut keys: Vec<JsonApiKey<'_>> = d
        .api_keys
        .iter()
        .filter(|k| principal.is_none_or(|p| k.principal == p))
        .map(|k| JsonApiKey {
            key_id: &k.key_id,
            principal: &k.principal,
            revoked: k.revoked,
        })
        .collect();
    keys.sort_by(|a, b| a.key_id.cmp(b.key_id));
    Ok(match format {
        Format::Json => serde_json::to_string(&keys)?,
        Format::Text => keys
            .iter()
            .map(|k| {
                let state = if k.revoked { "revoked" } else { "active" };
                format!("{} principal {} {state}", k.key_id, k.principal)
            })
            .collect::<Vec<_>>()
            .join("\n"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        Cli, Command, EXIT_PERMISSION_DENIED, EXIT_UNAUTHENTICATED, error_code, exit_status,
    };
    use clap::Parser;
    use neo_client::{ApiKeyDescription, GrantDescription};
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

    #[test]
    fn role_and_user_commands_parse() {
        let cli = parse(&[
            "role",
            "grant",
            "writers",
            "--resource",
            "topic:orders.*",
            "--operations",
            "produce,describe",
        ])
        .unwrap();
        match cli.command {
            Command::Role(RoleCommand::Grant(g)) => {
                assert_eq!(
                    (g.role.as_str(), g.resource.as_str()),
                    ("writers", "topic:orders.*")
                );
                assert_eq!(g.operations, vec!["produce", "describe"]);
            }
            other => panic!("{other:?}"),
        }
        match parse(&[
            "role",
            "revoke",
            "w",
            "--resource",
            "group:*",
            "--operations",
            "all",
        ])
        .unwrap()
        .command
        {
            Command::Role(RoleCommand::Revoke(g)) => assert_eq!(g.operations, vec!["all"]),
            other => panic!("{other:?}"),
        }
        assert!(parse(&["role", "grant", "w", "--resource", "topic:*"]).is_err());
        assert!(parse(&["role", "grant", "w", "--operations", "produce"]).is_err());
        match parse(&["role", "assign", "w", "--principal", "bob"])
            .unwrap()
            .command
        {
            Command::Role(RoleCommand::Assign { role, principal }) => {
                assert_eq!((role.as_str(), principal.as_str()), ("w", "bob"));
            }
            other => panic!("{other:?}"),
        }
        assert!(
            parse(&["role", "unassign", "w"]).is_err(),
            "--principal is required"
        );
        match parse(&["role", "list", "--format", "json"])
            .unwrap()
            .command
        {
            Command::Role(RoleCommand::List { format }) => assert_eq!(format, Format::Json),
            other => panic!("{other:?}"),
        }
        match parse(&["role", "describe", "w"]).unwrap().command {
            Command::Role(RoleCommand::Describe { role, format }) => {
                assert_eq!((role.as_str(), format), ("w", Format::Text));
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["role", "describe"]).is_err());
        assert!(parse(&["role", "create", "r"]).is_ok());
        assert!(parse(&["role", "delete", "r"]).is_ok());
        match parse(&["user", "api-key", "create", "--principal", "bob"])
            .unwrap()
            .command
        {
            Command::User(UserCommand::ApiKey(ApiKeyCommand::Create { principal, .. })) => {
                assert_eq!(principal, "bob");
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["user", "api-key", "create"]).is_err());
        match parse(&["user", "api-key", "revoke", "0123"])
            .unwrap()
            .command
        {
            Command::User(UserCommand::ApiKey(ApiKeyCommand::Revoke { key_id })) => {
                assert_eq!(key_id, "0123");
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["user", "api-key", "list", "--format", "json"]).is_ok());
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

    fn sample() -> SecurityDescription {
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
            quotas: Vec::new(),
        }
    }

    #[test]
    fn role_output_is_the_contract() {
        let d = sample();
        assert_eq!(
            format_roles(&d, Format::Text).unwrap(),
            "auditors grants 0 principals 0\nwriters grants 2 principals 2"
        );
        assert_eq!(
            format_roles(&d, Format::Json).unwrap(),
            concat!(
                r#"[{"name":"auditors","grants":[],"principals":[]},"#,
                r#"{"name":"writers","grants":[{"resource":"group:billing","operations":["consume"]},"#,
                r#"{"resource":"topic:orders.*","operations":["produce","describe"]}],"principals":["bob","carol"]}]"#
            )
        );
        assert_eq!(
            format_role(&d.roles[0], Format::Text).unwrap(),
            "role writers grants 2 principals 2\ngrant group:billing consume\n\
             grant topic:orders.* produce,describe\nprincipal bob\nprincipal carol"
        );
        let empty = SecurityDescription::default();
        assert_eq!(format_roles(&empty, Format::Text).unwrap(), "");
        assert_eq!(format_roles(&empty, Format::Json).unwrap(), "[]");
    }

    #[test]
    fn api_key_output_is_the_contract() {
        let d = sample();
        assert_eq!(
            format_api_keys(&d, None, Format::Text).unwrap(),
            "0a principal alice revoked\nb0 principal bob active"
        );
        assert_eq!(
            format_api_keys(&d, Some("bob"), Format::Json).unwrap(),
            r#"[{"key_id":"b0","principal":"bob","revoked":false}]"#
        );
        assert_eq!(
            format_api_keys(&d, Some("nobody"), Format::Json).unwrap(),
            "[]"
        );
    }
}
