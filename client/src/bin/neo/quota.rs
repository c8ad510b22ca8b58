//! `neo quota set|list` (docs/cli.md, "Security: quotas"): the cluster's rate limits
//! and connection limits, through [`SecurityAdmin::set_quota`] and
//! [`SecurityAdmin::describe`].

use std::process::ExitCode;

use anyhow::Context;
use clap::{ArgGroup, Args, Subcommand};
use neo_client::{Client, QuotaDescription, QuotaLimits, QuotaScope, SecurityAdmin};
use serde::Serialize;

use crate::Format;
use crate::security::{non_empty, unsupported};

#[derive(Debug, Subcommand)]
pub(crate) enum QuotaCommand {
    /// Set the rate limits of one scope, replacing its previous ones (no rate given:
    /// remove them).
    Set(SetArgs),
    /// Every scope with a limit.
    List {
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
}

/// What `quota set` takes: exactly one scope, any of the three rates.
#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("scope")
        .required(true)
        .multiple(false)
        .args(["default", "client_ip", "principal", "role"])
))]
pub(crate) struct SetArgs {
    /// The default: every principal without a limit of its own or of a role.
    #[arg(long)]
    pub(crate) default: bool,
    /// Each client address, for requests without a principal.
    #[arg(long)]
    pub(crate) client_ip: bool,
    /// One principal (overrides its roles' limits and the default).
    #[arg(long, value_name = "P", value_parser = non_empty)]
    pub(crate) principal: Option<String>,
    /// The principals holding a role (the highest of a principal's roles counts).
    #[arg(long, value_name = "R", value_parser = non_empty)]
    pub(crate) role: Option<String>,
    /// Bytes of produced record batches per second (default: no limit).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) produce_bytes_per_sec: Option<u64>,
    /// Bytes of fetched record batches per second (default: no limit).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) fetch_bytes_per_sec: Option<u64>,
    /// Requests of any kind per second (default: no limit).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) requests_per_sec: Option<u64>,
    /// Concurrent connections on each node (default: no limit): per principal, or with
    /// `--client-ip` per client address (counted at the handshake). The next one is
    /// refused with `Throttled`.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) connections: Option<u64>,
}

impl SetArgs {
    /// The scope flag given (clap requires exactly one).
    fn scope(&self) -> QuotaScope {
        match (&self.principal, &self.role) {
            (Some(p), _) => QuotaScope::Principal(p.clone()),
            (None, Some(r)) => QuotaScope::Role(r.clone()),
            (None, None) if self.client_ip => QuotaScope::ClientIp,
            (None, None) => QuotaScope::Default,
        }
    }

    fn limits(&self) -> QuotaLimits {
        QuotaLimits {
            produce_bytes_per_sec: self.produce_bytes_per_sec,
            fetch_bytes_per_sec: self.fetch_bytes_per_sec,
            requests_per_sec: self.requests_per_sec,
            connections: self.connections,
        }
    }
}

/// A scope's limits as `neo quota list --format json` prints them (docs/cli.md); the
/// field order is the contract.
#[derive(Debug, Serialize)]
struct JsonQuota {
    scope: String,
    produce_bytes_per_sec: Option<u64>,
    fetch_bytes_per_sec: Option<u64>,
    requests_per_sec: Option<u64>,
    /// Left out when not set (the listing before connection limits stays the same).
    #[serde(skip_serializing_if = "Option::is_none")]
    connections: Option<u64>,
}

/// One scope's limits as `neo user describe --format json` prints them (every field,
/// `null` for no limit).
#[derive(Debug, Serialize)]
pub(crate) struct JsonLimits {
    produce_bytes_per_sec: Option<u64>,
    fetch_bytes_per_sec: Option<u64>,
    requests_per_sec: Option<u64>,
    connections: Option<u64>,
}

impl JsonLimits {
    pub(crate) fn of(q: &QuotaLimits) -> JsonLimits {
        JsonLimits {
            produce_bytes_per_sec: q.produce_bytes_per_sec,
            fetch_bytes_per_sec: q.fetch_bytes_per_sec,
            requests_per_sec: q.requests_per_sec,
            connections: q.connections,
        }
    }

    /// As `neo quota list` shows them.
    pub(crate) fn text(&self) -> String {
        rates_text(&QuotaLimits {
            produce_bytes_per_sec: self.produce_bytes_per_sec,
            fetch_bytes_per_sec: self.fetch_bytes_per_sec,
            requests_per_sec: self.requests_per_sec,
            connections: self.connections,
        })
    }
}

pub(crate) async fn quota(client: Client, cmd: QuotaCommand) -> anyhow::Result<ExitCode> {
    let admin = SecurityAdmin::new(client);
    match cmd {
        QuotaCommand::Set(args) => {
            let (scope, limits) = (args.scope(), args.limits());
            let (what, shown) = (scope_text(&scope), format_set(&scope, &limits));
            unsupported(admin.set_quota(scope, limits).await)
                .with_context(|| format!("set the quota of {what}"))?;
            println!("{shown}");
        }
        QuotaCommand::List { format } => {
            let d = unsupported(admin.describe().await).context("describe security")?;
            print_output(&format_quotas(&d.quotas, format)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints `out` and a newline; nothing at all for an empty text listing.
fn print_output(out: &str) {
    if !out.is_empty() {
        println!("{out}");
    }
}

/// A scope in text: `default`, `client-ip`, `principal P`, `role R`.
fn scope_text(scope: &QuotaScope) -> String {
    match scope {
        QuotaScope::Default => "default".into(),
        QuotaScope::ClientIp => "client-ip".into(),
        QuotaScope::Principal(p) => format!("principal {p}"),
        QuotaScope::Role(r) => format!("role {r}"),
    }
}

/// A scope in JSON: `default`, `client-ip`, `principal:P`, `role:R`.
fn scope_json(scope: &QuotaScope) -> String {
    match scope {
        QuotaScope::Default => "default".into(),
        QuotaScope::ClientIp => "client-ip".into(),
        QuotaScope::Principal(p) => format!("principal:{p}"),
        QuotaScope::Role(r) => format!("role:{r}"),
    }
}

/// `produce N B/s, fetch N B/s, requests N/s`, `-` for no limit; then
/// `, connections N` when a connection limit is set.
fn rates_text(q: &QuotaLimits) -> String {
    let rate = |r: Option<u64>, unit: &str| r.map_or("-".to_string(), |n| format!("{n}{unit}"));
    let mut text = format!(
        "produce {}, fetch {}, requests {}",
        rate(q.produce_bytes_per_sec, " B/s"),
        rate(q.fetch_bytes_per_sec, " B/s"),
        rate(q.requests_per_sec, "/s"),
    );
    if let Some(n) = q.connections {
        text.push_str(&format!(", connections {n}"));
    }
    text
}

fn unlimited(q: &QuotaLimits) -> bool {
    *q == QuotaLimits::default()
}

/// What `neo quota set` prints: `set quota of SCOPE: RATES`, or `removed quota of
/// SCOPE` when no rate was given.
fn format_set(scope: &QuotaScope, limits: &QuotaLimits) -> String {
    if unlimited(limits) {
        format!("removed quota of {}", scope_text(scope))
    } else {
        format!("set quota of {}: {}", scope_text(scope), rates_text(limits))
    }
}

/// The listing's order: the default, client addresses, principals by name, roles by
/// name.
fn scope_order(scope: &QuotaScope) -> (u8, &str) {
    match scope {
        QuotaScope::Default => (0, ""),
        QuotaScope::ClientIp => (1, ""),
        QuotaScope::Principal(p) => (2, p),
        QuotaScope::Role(r) => (3, r),
    }
}

/// `neo quota list`: text, one `SCOPE: RATES` line per scope; JSON, one array. Scopes
/// without any limit are left out.
fn format_quotas(quotas: &[QuotaDescription], format: Format) -> anyhow::Result<String> {
    let mut quotas: Vec<&QuotaDescription> =
        quotas.iter().filter(|q| !unlimited(&q.quota)).collect();
    quotas.sort_by(|a, b| scope_order(&a.scope).cmp(&scope_order(&b.scope)));
    Ok(match format {
        Format::Json => {
            let json: Vec<JsonQuota> = quotas
                .iter()
                .map(|q| JsonQuota {
                    scope: scope_json(&q.scope),
                    produce_bytes_per_sec: q.quota.produce_bytes_per_sec,
                    fetch_bytes_per_sec: q.quota.fetch_bytes_per_sec,
                    requests_per_sec: q.quota.requests_per_sec,
                    connections: q.quota.connections,
                })
                .collect();
            serde_json::to_string(&json)?
        }
        Format::Text => quotas
            .iter()
            .map(|q| format!("{}: {}", scope_text(&q.scope), rates_text(&q.quota)))
            .collect::<Vec<_>>()
            .join("\n"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cli, Command};
    use clap::Parser;
    use clap::error::ErrorKind;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("neo").chain(args.iter().copied()))
    }

    fn set(args: &[&str]) -> Result<SetArgs, clap::Error> {
        match parse(&[&["quota", "set"][..], args].concat())?.command {
            Command::Quota(QuotaCommand::Set(s)) => Ok(s),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn quota_set_takes_one_scope_and_positive_rates() {
        let s = set(&[
            "--principal",
            "alice",
            "--produce-bytes-per-sec",
            "1048576",
            "--requests-per-sec",
            "100",
        ])
        .unwrap();
        assert_eq!(s.scope(), QuotaScope::Principal("alice".into()));
        assert_eq!(
            s.limits(),
            QuotaLimits {
                produce_bytes_per_sec: Some(1 << 20),
                fetch_bytes_per_sec: None,
                requests_per_sec: Some(100),
                connections: None,
            }
        );
        let s = set(&["--principal", "alice", "--connections", "3"]).unwrap();
        assert_eq!(s.limits().connections, Some(3));
        assert_eq!(
            set(&["--client-ip", "--connections", "1"]).unwrap().scope(),
            QuotaScope::ClientIp
        );
        assert_eq!(set(&["--default"]).unwrap().scope(), QuotaScope::Default);
        assert_eq!(
            set(&["--client-ip", "--fetch-bytes-per-sec", "5"])
                .unwrap()
                .scope(),
            QuotaScope::ClientIp
        );
        let s = set(&["--role", "writers"]).unwrap();
        assert_eq!(s.scope(), QuotaScope::Role("writers".into()));
        assert_eq!(s.limits(), QuotaLimits::default(), "no rate: remove");

        // No scope, two scopes: usage errors (exit status 2).
        let err = set(&["--requests-per-sec", "1"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::MissingRequiredArgument);
        assert_eq!(err.exit_code(), 2);
        for two in [
            &["--default", "--client-ip"][..],
            &["--principal", "a", "--role", "r"],
            &["--default", "--role", "r"],
        ] {
            let err = set(two).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::ArgumentConflict, "{two:?}");
            assert_eq!(err.exit_code(), 2);
        }
        // A rate is a positive integer; a name is not blank.
        for bad in ["0", "-1", "1.5", "x"] {
            for flag in [
                "--produce-bytes-per-sec",
                "--fetch-bytes-per-sec",
                "--requests-per-sec",
                "--connections",
            ] {
                assert!(set(&["--default", flag, bad]).is_err(), "{flag} {bad}");
            }
        }
        assert!(set(&["--principal", ""]).is_err());
        assert!(set(&["--role", " "]).is_err());
        assert!(set(&["--principal"]).is_err());

        match parse(&["quota", "list", "--format", "json"])
            .unwrap()
            .command
        {
            Command::Quota(QuotaCommand::List { format }) => assert_eq!(format, Format::Json),
            other => panic!("{other:?}"),
        }
        match parse(&["quota", "list"]).unwrap().command {
            Command::Quota(QuotaCommand::List { format }) => assert_eq!(format, Format::Text),
            other => panic!("{other:?}"),
        }
    }

    fn limits(produce: Option<u64>, fetch: Option<u64>, requests: Option<u64>) -> QuotaLimits {
        QuotaLimits {
            produce_bytes_per_sec: produce,
            fetch_bytes_per_sec: fetch,
            requests_per_sec: requests,
            connections: None,
        }
    }

    #[test]
    fn quota_set_output_is_the_contract() {
        assert_eq!(
            format_set(
                &QuotaScope::Principal("alice".into()),
                &limits(Some(1_048_576), None, Some(100))
            ),
            "set quota of principal alice: produce 1048576 B/s, fetch -, requests 100/s"
        );
        assert_eq!(
            format_set(&QuotaScope::Default, &limits(None, Some(5), None)),
            "set quota of default: produce -, fetch 5 B/s, requests -"
        );
        assert_eq!(
            format_set(&QuotaScope::Role("writers".into()), &QuotaLimits::default()),
            "removed quota of role writers"
        );
        assert_eq!(
            format_set(&QuotaScope::ClientIp, &QuotaLimits::default()),
            "removed quota of client-ip"
        );
        assert_eq!(
            format_set(
                &QuotaScope::Principal("alice".into()),
                &QuotaLimits {
                    connections: Some(2),
                    ..QuotaLimits::default()
                }
            ),
            "set quota of principal alice: produce -, fetch -, requests -, connections 2"
        );
    }

    #[test]
    fn quota_list_output_is_the_contract() {
        let q = |scope: QuotaScope, quota: QuotaLimits| QuotaDescription { scope, quota };
        // Out of order, with an entry without a limit (left out).
        let quotas = vec![
            q(
                QuotaScope::Role("writers".into()),
                limits(None, Some(2_097_152), None),
            ),
            q(
                QuotaScope::Principal("bob".into()),
                limits(None, None, Some(10)),
            ),
            q(QuotaScope::ClientIp, limits(None, None, Some(50))),
            q(
                QuotaScope::Principal("alice".into()),
                limits(Some(1_048_576), None, Some(100)),
            ),
            q(QuotaScope::Default, limits(Some(10_485_760), None, None)),
            q(QuotaScope::Role("idle".into()), QuotaLimits::default()),
        ];
        assert_eq!(
            format_quotas(&quotas, Format::Text).unwrap(),
            "default: produce 10485760 B/s, fetch -, requests -\n\
             client-ip: produce -, fetch -, requests 50/s\n\
             principal alice: produce 1048576 B/s, fetch -, requests 100/s\n\
             principal bob: produce -, fetch -, requests 10/s\n\
             role writers: produce -, fetch 2097152 B/s, requests -"
        );
        assert_eq!(
            format_quotas(&quotas, Format::Json).unwrap(),
            concat!(
                r#"[{"scope":"default","produce_bytes_per_sec":10485760,"fetch_bytes_per_sec":null,"requests_per_sec":null},"#,
                r#"{"scope":"client-ip","produce_bytes_per_sec":null,"fetch_bytes_per_sec":null,"requests_per_sec":50},"#,
                r#"{"scope":"principal:alice","produce_bytes_per_sec":1048576,"fetch_bytes_per_sec":null,"requests_per_sec":100},"#,
                r#"{"scope":"principal:bob","produce_bytes_per_sec":null,"fetch_bytes_per_sec":null,"requests_per_sec":10},"#,
                r#"{"scope":"role:writers","produce_bytes_per_sec":null,"fetch_bytes_per_sec":2097152,"requests_per_sec":null}]"#
            )
        );
        // A connection limit: one more field, only where set.
        let with = vec![q(
            QuotaScope::Role("batch".into()),
            QuotaLimits {
                connections: Some(4),
                ..QuotaLimits::default()
            },
        )];
        assert_eq!(
            format_quotas(&with, Format::Text).unwrap(),
            "role batch: produce -, fetch -, requests -, connections 4"
        );
        assert_eq!(
            format_quotas(&with, Format::Json).unwrap(),
            r#"[{"scope":"role:batch","produce_bytes_per_sec":null,"fetch_bytes_per_sec":null,"requests_per_sec":null,"connections":4}]"#
        );
        assert_eq!(format_quotas(&[], Format::Text).unwrap(), "");
        assert_eq!(format_quotas(&[], Format::Json).unwrap(), "[]");
    }
}
