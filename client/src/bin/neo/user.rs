//! `neo user create|list|describe|delete` and `neo user api-key create|revoke|list`
//! (docs/cli.md, "Security"): registered users, everything stored under a principal's
//! name, and API keys, through [`SecurityAdmin`].

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Subcommand;
use neo_client::{Client, SecurityAdmin, SecurityDescription};
use serde::Serialize;

use crate::Format;
use crate::role::JsonGrant;
use crate::security::{describe, print_output, unsupported};

#[derive(Debug, Subcommand)]
pub(crate) enum UserCommand {
    /// Create, revoke and list API keys.
    #[command(subcommand)]
    ApiKey(ApiKeyCommand),
    /// Register a user (a principal name; JWT and certificate principals need none, an
    /// API key registers its principal itself).
    Create {
        /// Principal name.
        name: String,
    },
    /// List registered users: roles, API keys, ACLs.
    List {
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// A principal's record, roles, API keys, quota override and ACLs (registered or
    /// not).
    Describe {
        /// Principal name.
        name: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Delete everything stored under a principal's name: its user record, role
    /// assignments and ACLs; its API keys are revoked (their connections are refused
    /// at their next request). Quota overrides stay.
    Delete {
        /// Principal name.
        name: String,
    },
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

/// An API key as `neo user api-key list --format json` prints it.
#[derive(Debug, Serialize)]
struct JsonApiKey<'a> {
    key_id: &'a str,
    principal: &'a str,
    revoked: bool,
}

/// A user as `neo user list|describe --format json` prints it (docs/cli.md); the field
/// order is the contract.
#[derive(Debug, Serialize)]
struct JsonUser<'a> {
    name: &'a str,
    /// Whether a user record exists (`neo user create`, or an API key).
    registered: bool,
    created_at_unix_secs: Option<u64>,
    /// Roles assigned in the cluster (not those a token states).
    roles: Vec<&'a str>,
    api_keys: Vec<JsonApiKey<'a>>,
    /// The principal's own quota override, if any.
    quota: Option<crate::quota::JsonLimits>,
    acls: Vec<JsonGrant<'a>>,
}

/// `neo user api-key create --format json`.
#[derive(Debug, Serialize)]
struct JsonCreatedKey<'a> {
    key_id: &'a str,
    api_key: &'a str,
}

pub(crate) async fn user(client: Client, cmd: UserCommand) -> anyhow::Result<ExitCode> {
    let admin = SecurityAdmin::new(client);
    let cmd = match cmd {
        UserCommand::ApiKey(cmd) => cmd,
        UserCommand::Create { name } => {
            unsupported(admin.create_user(&name).await)
                .with_context(|| format!("create user {name:?}"))?;
            println!("created user {name}");
            return Ok(ExitCode::SUCCESS);
        }
        UserCommand::Delete { name } => {
            unsupported(admin.delete_user(&name).await)
                .with_context(|| format!("delete user {name:?}"))?;
            println!("deleted user {name}");
            return Ok(ExitCode::SUCCESS);
        }
        UserCommand::List { format } => {
            let d = describe(&admin).await?;
            print_output(&format_users(&d, format)?);
            return Ok(ExitCode::SUCCESS);
        }
        UserCommand::Describe { name, format } => {
            let d = describe(&admin).await?;
            let Some(user) = json_user(&d, &name) else {
                bail!("unknown user {name:?}: no record, role, API key or ACL under this name");
            };
            println!("{}", format_user(&user, format)?);
            return Ok(ExitCode::SUCCESS);
        }
    };
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

/// Everything `d` holds under the principal `name`; `None` if nothing.
fn json_user<'a>(d: &'a SecurityDescription, name: &'a str) -> Option<JsonUser<'a>> {
    let record = d.users.iter().find(|u| u.name == name);
    let mut roles: Vec<&str> = d
        .roles
        .iter()
        .filter(|r| r.principals.iter().any(|p| p == name))
        .map(|r| r.name.as_str())
        .collect();
    roles.sort_unstable();
    let mut api_keys: Vec<JsonApiKey<'_>> = d
        .api_keys
        .iter()
        .filter(|k| k.principal == name)
        .map(|k| JsonApiKey {
            key_id: &k.key_id,
            principal: &k.principal,
            revoked: k.revoked,
        })
        .collect();
    api_keys.sort_by(|a, b| a.key_id.cmp(b.key_id));
    let quota = d
        .quotas
        .iter()
        .find(|q| matches!(&q.scope, neo_client::QuotaScope::Principal(p) if p == name))
        .map(|q| crate::quota::JsonLimits::of(&q.quota));
    let mut acls: Vec<JsonGrant<'_>> = d
        .acls
        .iter()
        .filter(|a| a.principal == name)
        .flat_map(|a| a.grants.iter())
        .map(|g| JsonGrant {
            resource: &g.resource,
            operations: &g.operations,
        })
        .collect();
    acls.sort_by(|a, b| a.resource.cmp(b.resource));
    if record.is_none() && roles.is_empty() && api_keys.is_empty() && acls.is_empty() {
        return None;
    }
    Some(JsonUser {
        name,
        registered: record.is_some(),
        created_at_unix_secs: record.map(|r| r.created_at_unix_secs),
        roles,
        api_keys,
        quota,
        acls,
    })
}

/// `neo user list`: the registered users by name; text, one `NAME roles N api_keys N
/// acls N` line each (API keys counted when active); JSON, an array of
/// `neo user describe` objects.
fn format_users(d: &SecurityDescription, format: Format) -> anyhow::Result<String> {
    let mut names: Vec<&str> = d.users.iter().map(|u| u.name.as_str()).collect();
    names.sort_unstable();
    let users: Vec<JsonUser<'_>> = names.iter().filter_map(|n| json_user(d, n)).collect();
    Ok(match format {
        Format::Json => serde_json::to_string(&users)?,
        Format::Text => users
            .iter()
            .map(|u| {
                format!(
                    "{} roles {} api_keys {} acls {}",
                    u.name,
                    u.roles.len(),
                    u.api_keys.iter().filter(|k| !k.revoked).count(),
                    u.acls.len()
                )
            })
            .collect::<Vec<_>>()
            .join("\n"),
    })
}

/// `neo user describe NAME`: text, a `user` line (`registered CREATED` or
/// `unregistered`), then one `role R`, `api_key ID active|revoked`, `acl KIND:PATTERN
/// OPS` line each and a `quota RATES` line if it has an override; JSON, one object.
fn format_user(u: &JsonUser<'_>, format: Format) -> anyhow::Result<String> {
    Ok(match format {
        Format::Json => serde_json::to_string(u)?,
        Format::Text => {
            let registered = match u.created_at_unix_secs {
                Some(at) => format!("registered {at}"),
                None => "unregistered".to_string(),
            };
            let mut lines = vec![format!(
                "user {} {registered} roles {} api_keys {} acls {}",
                u.name,
                u.roles.len(),
                u.api_keys.len(),
                u.acls.len()
            )];
            lines.extend(u.roles.iter().map(|r| format!("role {r}")));
            for k in &u.api_keys {
                let state = if k.revoked { "revoked" } else { "active" };
                lines.push(format!("api_key {} {state}", k.key_id));
            }
            lines.extend(
                u.acls
                    .iter()
                    .map(|g| format!("acl {} {}", g.resource, g.operations.join(","))),
            );
            if let Some(q) = &u.quota {
                lines.push(format!("quota {}", q.text()));
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
    use crate::security::sample::sample;
    use crate::{Cli, Command};
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("neo").chain(args.iter().copied()))
    }

    #[test]
    fn user_commands_parse() {
        match parse(&["user", "create", "alice"]).unwrap().command {
            Command::User(UserCommand::Create { name }) => assert_eq!(name, "alice"),
            other => panic!("{other:?}"),
        }
        match parse(&["user", "describe", "alice", "--format", "json"])
            .unwrap()
            .command
        {
            Command::User(UserCommand::Describe { name, format }) => {
                assert_eq!((name.as_str(), format), ("alice", Format::Json));
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["user", "list"]).is_ok());
        assert!(parse(&["user", "delete", "alice"]).is_ok());
        assert!(parse(&["user", "delete"]).is_err());
        assert!(parse(&["user", "create"]).is_err());
    }

    #[test]
    fn user_output_is_the_contract() {
        let d = sample();
        assert_eq!(
            format_users(&d, Format::Text).unwrap(),
            "alice roles 0 api_keys 0 acls 1\nbob roles 1 api_keys 1 acls 0"
        );
        let bob = json_user(&d, "bob").unwrap();
        assert_eq!(
            format_user(&bob, Format::Text).unwrap(),
            "user bob registered 20 roles 1 api_keys 1 acls 0\nrole writers\napi_key b0 active\n\
             quota produce -, fetch -, requests 10/s, connections 2"
        );
        assert_eq!(
            format_user(&bob, Format::Json).unwrap(),
            concat!(
                r#"{"name":"bob","registered":true,"created_at_unix_secs":20,"roles":["writers"],"#,
                r#""api_keys":[{"key_id":"b0","principal":"bob","revoked":false}],"#,
                r#""quota":{"produce_bytes_per_sec":null,"fetch_bytes_per_sec":null,"requests_per_sec":10,"connections":2},"#,
                r#""acls":[]}"#
            )
        );
        // A principal with only a role (a JWT principal): described, unregistered.
        let carol = json_user(&d, "carol").unwrap();
        assert_eq!(
            format_user(&carol, Format::Text).unwrap(),
            "user carol unregistered roles 1 api_keys 0 acls 0\nrole writers"
        );
        assert!(json_user(&d, "nobody").is_none());
        let alice = json_user(&d, "alice").unwrap();
        assert_eq!(
            format_user(&alice, Format::Text).unwrap(),
            "user alice registered 10 roles 0 api_keys 1 acls 1\napi_key 0a revoked\n\
             acl topic:audit consume,describe"
        );
        assert_eq!(
            format_users(&SecurityDescription::default(), Format::Json).unwrap(),
            "[]"
        );
    }

    #[test]
    fn api_key_commands_parse() {
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
