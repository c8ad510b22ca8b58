//! `neo topic ...` (docs/cli.md, "Topics").

use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use neo_client::admin::{ENCRYPTION_AT_REST, RETENTION_BYTES, RETENTION_MS};
use neo_client::{Admin, Client};

use crate::ids;

#[derive(Debug, Subcommand)]
pub(crate) enum TopicCommand {
    /// Create a topic (waits until every partition has a leader).
    Create {
        /// Topic name.
        name: String,
        /// Partition count.
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// Replicas per partition.
        #[arg(long, default_value_t = 1)]
        replication: u32,
        /// Retention by age: delete data older than this many milliseconds (whole
        /// segments). Default: keep regardless of age.
        #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
        retention_ms: Option<u64>,
        /// Retention by size: keep each partition replica's log at about this many bytes
        /// (whole segments). Default: no limit.
        #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..))]
        retention_bytes: Option<u64>,
        /// Keep the partition logs encrypted at rest on every replica, under each node's
        /// key (`neo-node --at-rest-key-file`); refused if the node has none.
        #[arg(long)]
        encrypt_at_rest: bool,
    },
    /// List topic names, one per line.
    List,
    /// Show a topic's partitions.
    Describe {
        /// Topic name.
        name: String,
    },
    /// Delete a topic and its data.
    Delete {
        /// Topic name.
        name: String,
    },
}

pub(crate) async fn topic(client: Client, cmd: TopicCommand) -> anyhow::Result<ExitCode> {
    let admin = Admin::new(client);
    match cmd {
        TopicCommand::Create {
            name,
            partitions,
            replication,
            retention_ms,
            retention_bytes,
            encrypt_at_rest,
        } => {
            let mut configs = Vec::new();
            if let Some(ms) = retention_ms {
                configs.push((RETENTION_MS.to_string(), ms.to_string()));
            }
            if let Some(b) = retention_bytes {
                configs.push((RETENTION_BYTES.to_string(), b.to_string()));
            }
            if encrypt_at_rest {
                configs.push((ENCRYPTION_AT_REST.to_string(), "true".to_string()));
            }
            let shown: String = configs.iter().map(|(k, v)| format!(", {k} {v}")).collect();
            admin
                .create_topic_with_configs(&name, partitions, replication, configs)
                .await
                .with_context(|| format!("create topic {name:?}"))?;
            println!(
                "created topic {name} (partitions {partitions}, replication {replication}{shown})"
            );
        }
        TopicCommand::List => {
            for name in admin.list_topics().await? {
                println!("{name}");
            }
        }
        TopicCommand::Describe { name } => {
            let d = admin
                .describe_topic(&name)
                .await
                .with_context(|| format!("describe topic {name:?}"))?;
            println!("topic {} partitions {}", d.name, d.partitions.len());
            for p in &d.partitions {
                println!(
                    "  partition {} leader {} replicas {} in_sync {}",
                    p.partition,
                    p.leader.map_or("none".to_string(), |l| l.to_string()),
                    ids(&p.replicas),
                    ids(&p.in_sync)
                );
            }
            for (k, v) in &d.configs {
                println!("  config {k}={v}");
            }
        }
        TopicCommand::Delete { name } => {
            admin
                .delete_topic(&name)
                .await
                .with_context(|| format!("delete topic {name:?}"))?;
            println!("deleted topic {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cli, Command};
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("neo").chain(args.iter().copied()))
    }

    #[test]
    fn topic_create_flags() {
        let cli = parse(&[
            "topic",
            "create",
            "t",
            "--partitions",
            "3",
            "--replication",
            "3",
        ])
        .unwrap();
        match cli.command {
            Command::Topic(TopicCommand::Create {
                name,
                partitions,
                replication,
                retention_ms,
                retention_bytes,
                encrypt_at_rest,
            }) => {
                assert_eq!((name.as_str(), partitions, replication), ("t", 3, 3));
                assert_eq!((retention_ms, retention_bytes), (None, None));
                assert!(!encrypt_at_rest);
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["topic", "create"]).is_err(), "name is required");
        assert!(parse(&["topic", "create", "t", "--partitions", "x"]).is_err());
        let cli = parse(&[
            "topic",
            "create",
            "t",
            "--retention-ms",
            "60000",
            "--retention-bytes",
            "1048576",
        ])
        .unwrap();
        match cli.command {
            Command::Topic(TopicCommand::Create {
                retention_ms,
                retention_bytes,
                ..
            }) => assert_eq!(
                (retention_ms, retention_bytes),
                (Some(60_000), Some(1 << 20))
            ),
            other => panic!("{other:?}"),
        }
        for bad in ["0", "-1", "x"] {
            assert!(parse(&["topic", "create", "t", "--retention-ms", bad]).is_err());
            assert!(parse(&["topic", "create", "t", "--retention-bytes", bad]).is_err());
        }
    }
}
