//! `neo role create|grant|revoke|assign|unassign|list|describe|delete` (docs/cli.md,
//! "Security"): roles, their grants and their principals, through [`SecurityAdmin`].

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use neo_client::{Client, RoleDescription, SecurityAdmin, SecurityDescription};
use serde::Serialize;

use crate::Format;
use crate::security::{describe, print_output, unsupported};

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

/// A role as `neo role list|describe --format json` prints it (docs/cli.md). Field
/// names mirror the wire's `RoleDescription`; the order is the contract.
#[derive(Debug, Serialize)]
pub(crate) struct JsonRole<'a> {
    name: &'a str,
    grants: Vec<JsonGrant<'a>>,
    principals: Vec<&'a str>,
}

#[derive(Debug, Serialize)]
pub(crate) struct JsonGrant<'a> {
    pub(crate) resource: &'a str,
    pub(crate) operations: &'a [String],
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
    fn role_commands_parse() {
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
}
