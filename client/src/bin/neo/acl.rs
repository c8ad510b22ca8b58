//! `neo acl grant|revoke|list|describe|delete` (docs/cli.md, "Security"): grants made
//! to a principal directly (Kafka-style ACLs), checked exactly like the grants of a
//! role it holds, through [`SecurityAdmin`]. A change applies on every node within a
//! second, to connections already open.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use neo_client::{Client, SecurityAdmin, SecurityDescription};
use serde::Serialize;

use crate::Format;
use crate::role::JsonGrant;
use crate::security::{describe, non_empty, print_output, unsupported};

#[derive(Debug, Subcommand)]
pub(crate) enum AclCommand {
    /// Allow a principal operations on resources (granting again adds operations).
    Grant(AclArgs),
    /// Take operations on resources away from a principal's ACLs.
    Revoke(AclArgs),
    /// Every ACL (or one principal's): one line per principal and resource.
    List {
        /// Only this principal's.
        #[arg(long, value_parser = non_empty)]
        principal: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// One principal's ACLs.
    Describe {
        /// Principal name.
        principal: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Remove every ACL of a principal (none is not an error).
    Delete {
        /// Principal name.
        #[arg(long, value_parser = non_empty)]
        principal: String,
    },
}

/// What `acl grant` and `acl revoke` take (as `role grant`, with a principal).
#[derive(Debug, Args)]
pub(crate) struct AclArgs {
    /// The principal (user, service account, certificate name); it needs no user
    /// record.
    #[arg(long, value_parser = non_empty)]
    pub(crate) principal: String,
    /// `KIND:PATTERN`: kind `topic`, `group`, `queue`, `cluster` or `user` (`acl`); the
    /// pattern a name, a prefix (`orders.*`) or `*`.
    #[arg(long, value_name = "KIND:PATTERN")]
    pub(crate) resource: String,
    /// Comma-separated: `produce`, `consume`, `describe`, `create`, `delete`, `alter`,
    /// `admin`, `all`.
    #[arg(long, value_name = "OP,...", value_delimiter = ',', required = true)]
    pub(crate) operations: Vec<String>,
}

/// One ACL entry as `neo acl list --format json` prints it; the field order is the
/// contract.
#[derive(Debug, Serialize)]
struct JsonAcl<'a> {
    principal: &'a str,
    resource: &'a str,
    operations: &'a [String],
}

/// `neo acl describe P --format json`.
#[derive(Debug, Serialize)]
struct JsonPrincipalAcls<'a> {
    principal: &'a str,
    grants: Vec<JsonGrant<'a>>,
}

pub(crate) async fn acl(client: Client, cmd: AclCommand) -> anyhow::Result<ExitCode> {
    let admin = SecurityAdmin::new(client);
    match cmd {
        AclCommand::Grant(a) => {
            unsupported(
                admin
                    .grant_acl(&a.principal, &a.resource, &a.operations)
                    .await,
            )
            .with_context(|| format!("grant to principal {:?}", a.principal))?;
            let ops = a.operations.join(",");
            println!("granted principal {} {ops} on {}", a.principal, a.resource);
        }
        AclCommand::Revoke(a) => {
            unsupported(
                admin
                    .revoke_acl(&a.principal, &a.resource, &a.operations)
                    .await,
            )
            .with_context(|| format!("revoke from principal {:?}", a.principal))?;
            let ops = a.operations.join(",");
            println!(
                "revoked from principal {} {ops} on {}",
                a.principal, a.resource
            );
        }
        AclCommand::List { principal, format } => {
            let d = describe(&admin).await?;
            print_output(&format_acls(&d, principal.as_deref(), format)?);
        }
        AclCommand::Describe { principal, format } => {
            let d = describe(&admin).await?;
            println!("{}", format_principal(&d, &principal, format)?);
        }
        AclCommand::Delete { principal } => {
            unsupported(admin.delete_acls(&principal).await)
                .with_context(|| format!("delete the ACLs of {principal:?}"))?;
            println!("deleted the ACLs of {principal}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `neo acl list`: text, one `PRINCIPAL KIND:PATTERN OPS` line per entry; JSON, one
/// array. By principal, then resource.
fn format_acls(
    d: &SecurityDescription,
    principal: Option<&str>,
    format: Format,
) -> anyhow::Result<String> {
    let mut acls: Vec<JsonAcl<'_>> = d
        .acls
        .iter()
        .filter(|a| principal.is_none_or(|p| a.principal == p))
        .flat_map(|a| {
            a.grants.iter().map(|g| JsonAcl {
                principal: &a.principal,
                resource: &g.resource,
                operations: &g.operations,
            })
        })
        .collect();
    acls.sort_by(|a, b| (a.principal, a.resource).cmp(&(b.principal, b.resource)));
    Ok(match format {
        Format::Json => serde_json::to_string(&acls)?,
        Format::Text => acls
            .iter()
            .map(|a| format!("{} {} {}", a.principal, a.resource, a.operations.join(",")))
            .collect::<Vec<_>>()
            .join("\n"),
    })
}

/// `neo acl describe P`: text, an `acl P grants N` line and one `grant KIND:PATTERN
/// OPS` line per entry; JSON, one object. A principal without ACLs has 0 grants.
fn format_principal(
    d: &SecurityDescription,
    principal: &str,
    format: Format,
) -> anyhow::Result<String> {
    let mut grants: Vec<JsonGrant<'_>> = d
        .acls
        .iter()
        .filter(|a| a.principal == principal)
        .flat_map(|a| a.grants.iter())
        .map(|g| JsonGrant {
            resource: &g.resource,
            operations: &g.operations,
        })
        .collect();
    grants.sort_by(|a, b| a.resource.cmp(b.resource));
    Ok(match format {
        Format::Json => serde_json::to_string(&JsonPrincipalAcls { principal, grants })?,
        Format::Text => {
            let mut lines = vec![format!("acl {principal} grants {}", grants.len())];
            lines.extend(
                grants
                    .iter()
                    .map(|g| format!("grant {} {}", g.resource, g.operations.join(","))),
            );
            lines.join("\n")
        }
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
    fn acl_commands_parse() {
        match parse(&[
            "acl",
            "grant",
            "--principal",
            "alice",
            "--resource",
            "topic:orders.*",
            "--operations",
            "produce,describe",
        ])
        .unwrap()
        .command
        {
            Command::Acl(AclCommand::Grant(a)) => {
                assert_eq!(
                    (a.principal.as_str(), a.resource.as_str()),
                    ("alice", "topic:orders.*")
                );
                assert_eq!(a.operations, vec!["produce", "describe"]);
            }
            other => panic!("{other:?}"),
        }
        assert!(
            parse(&["acl", "revoke", "--principal", "a", "--resource", "topic:*"]).is_err(),
            "--operations is required"
        );
        assert!(
            parse(&[
                "acl",
                "grant",
                "--resource",
                "topic:*",
                "--operations",
                "all"
            ])
            .is_err(),
            "--principal is required"
        );
        assert!(parse(&["acl", "list", "--principal", "a", "--format", "json"]).is_ok());
        assert!(parse(&["acl", "describe", "a"]).is_ok());
        assert!(parse(&["acl", "delete", "--principal", "a"]).is_ok());
        assert!(parse(&["acl", "delete"]).is_err());
        assert!(parse(&["acl", "delete", "--principal", ""]).is_err());
    }

    #[test]
    fn acl_output_is_the_contract() {
        let d = sample();
        assert_eq!(
            format_acls(&d, None, Format::Text).unwrap(),
            "alice topic:audit consume,describe"
        );
        assert_eq!(
            format_acls(&d, Some("alice"), Format::Json).unwrap(),
            r#"[{"principal":"alice","resource":"topic:audit","operations":["consume","describe"]}]"#
        );
        assert_eq!(format_acls(&d, Some("bob"), Format::Json).unwrap(), "[]");
        assert_eq!(format_acls(&d, Some("bob"), Format::Text).unwrap(), "");
        assert_eq!(
            format_principal(&d, "alice", Format::Text).unwrap(),
            "acl alice grants 1\ngrant topic:audit consume,describe"
        );
        assert_eq!(
            format_principal(&d, "bob", Format::Json).unwrap(),
            r#"{"principal":"bob","grants":[]}"#
        );
    }
}
