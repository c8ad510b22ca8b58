//! `neo group ...` and `neo consume TOPIC --group G` (docs/cli.md, "Consumer groups").

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use neo_client::{
    AutoOffsetReset, Client, Error, GroupAdmin, GroupConsumer, GroupConsumerConfig, GroupReport,
    RebalanceListener, ResetTo, Revocation, TopicPartition,
};

use crate::{ConsumeArgs, Format, format_record};

#[derive(Debug, Subcommand)]
pub(crate) enum GroupCommand {
    /// List the groups: name, state and member count.
    List {
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// A group's state, members and, per partition, committed offset, log end and lag.
    Describe {
        /// Group name.
        group: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Move a group's committed offsets of a topic (only while it has no members).
    ResetOffsets {
        /// Group name.
        group: String,
        /// Topic whose partitions are reset (all of them).
        #[arg(long)]
        topic: String,
        #[command(flatten)]
        to: ResetTarget,
    },
    /// Delete a group without members: its membership and committed offsets.
    Delete {
        /// Group name.
        group: String,
    },
}

/// Exactly one target of `group reset-offsets`.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub(crate) struct ResetTarget {
    /// Each partition's first offset still stored.
    #[arg(long)]
    pub(crate) to_earliest: bool,
    /// Each partition's log end (skip everything stored).
    #[arg(long)]
    pub(crate) to_latest: bool,
    /// This offset, clamped to each partition's [log start, log end].
    #[arg(long, value_name = "N")]
    pub(crate) to_offset: Option<u64>,
    /// The first offset whose record timestamp is at or after MS (milliseconds since
    /// the Unix epoch); the log end if there is none.
    #[arg(long, value_name = "MS", allow_negative_numbers = true)]
    pub(crate) to_timestamp: Option<i64>,
}

impl ResetTarget {
    pub(crate) fn to(&self) -> ResetTo {
        match (self.to_offset, self.to_timestamp) {
            (Some(n), _) => ResetTo::Offset(n),
            (_, Some(ms)) => ResetTo::Timestamp(ms),
            _ if self.to_earliest => ResetTo::Earliest,
            _ => ResetTo::Latest,
        }
    }
}

pub(crate) async fn group(client: Client, cmd: GroupCommand) -> anyhow::Result<ExitCode> {
    let admin = GroupAdmin::new(client);
    match cmd {
        GroupCommand::List { format } => {
            let groups = admin.list_groups().await?;
            match format {
                Format::Json => println!("{}", serde_json::to_string(&groups)?),
                Format::Text => {
                    for g in groups {
                        println!("{} state {} members {}", g.name, g.state, g.members);
                    }
                }
            }
        }
        GroupCommand::Describe { group, format } => {
            let report = admin
                .describe(&group)
                .await
                .map_err(|e| anyhow::anyhow!("describe group {group:?}: {e}"))?;
            println!("{}", format_report(&report, format)?);
        }
        GroupCommand::ResetOffsets { group, topic, to } => {
            let done = admin
                .reset_offsets(&group, &topic, to.to())
                .await
                .map_err(|e| anyhow::anyhow!("reset offsets of group {group:?}: {e}"))?;
            for (partition, offset) in done {
                println!("reset {group} {topic}/{partition} to {offset}");
            }
        }
        GroupCommand::Delete { group } => {
            admin
                .delete_group(&group)
                .await
                .map_err(|e| anyhow::anyhow!("delete group {group:?}: {e}"))?;
            println!("deleted group {group}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn or_dash<T: ToString>(value: Option<T>) -> String {
    value.map_or("-".to_string(), |v| v.to_string())
}

/// `neo group describe` output (text: one line per group, member and partition).
pub(crate) fn format_report(report: &GroupReport, format: Format) -> anyhow::Result<String> {
    if format == Format::Json {
        return Ok(serde_json::to_string(report)?);
    }
    let mut out = format!(
        "group {} state {} epoch {} coordinator {} members {}\n",
        report.group,
        report.state,
        report.group_epoch,
        report.coordinator,
        report.members.len()
    );
    for m in &report.members {
        let assigned: Vec<String> = m.assignment.iter().map(ToString::to_string).collect();
        out.push_str(&format!(
            "member {} client {} host {} instance {} epoch {} assigned [{}]\n",
            m.member_id,
            m.client_id,
            m.host,
            or_dash(m.instance_id.as_deref()),
            m.member_epoch,
            assigned.join(",")
        ));
    }
    for o in &report.offsets {
        out.push_str(&format!(
            "offset {}/{} committed {} end {} lag {}\n",
            o.topic,
            o.partition,
            or_dash(o.committed_offset),
            o.log_end_offset,
            or_dash(o.lag)
        ));
    }
    Ok(out.trim_end().to_string())
}

/// Offsets printed but not yet committed with a revocation, per partition (the next
/// offset to print). Shared with the listener so that a revoked partition commits
/// exactly what was printed of it.
type Printed = Arc<Mutex<BTreeMap<TopicPartition, u64>>>;

struct CommitPrinted(Printed);

impl RebalanceListener for CommitPrinted {
    fn on_revoked(&mut self, revocation: &mut Revocation) {
        let mut printed = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for tp in revocation.partitions() {
            if let Some(offset) = printed.remove(&tp) {
                revocation.commit(tp, offset);
            }
        }
    }

    fn on_lost(&mut self, lost: &[TopicPartition]) {
        let mut printed = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for tp in lost {
            printed.remove(tp);
        }
    }
}

/// `neo consume TOPIC --group G`: prints like the plain consume, commits what it
/// printed after each batch (without waiting), and before it exits (waiting).
pub(crate) async fn consume_group(
    client: Client,
    args: ConsumeArgs,
    group: &str,
) -> anyhow::Result<ExitCode> {
    // Fail early and clearly on an unknown topic.
    client.partition_count(&args.topic).await?;
    // With a key ring, members decrypt; an undecryptable record stops the command
    // with its error (a group must not commit past it).
    let encryption = crate::keyring::load(args.keyring.as_deref(), None)?;
    let config = GroupConsumerConfig {
        consumer: neo_client::ConsumerConfig {
            encryption,
            ..neo_client::ConsumerConfig::default()
        },
        client_id: "neo-cli".to_string(),
        // Commits follow what was printed, not what was polled (`--max` may stop in
        // the middle of a poll's records).
        auto_commit: false,
        auto_offset_reset: if args.from_beginning {
            AutoOffsetReset::Earliest
        } else {
            AutoOffsetReset::Latest
        },
        ..GroupConsumerConfig::default()
    };
    let mut consumer = GroupConsumer::subscribe(client, group, &[&args.topic], config).await?;
    let printed: Printed = Arc::default();
    consumer.set_listener(Box::new(CommitPrinted(printed.clone())));
    let result = print_loop(&mut consumer, &args, &printed).await;
    // Before exiting: commit everything printed (the close's revocation does it,
    // through the listener), then leave the group.
    let closed = consumer.close().await;
    let code = result?;
    closed.map_err(|e| anyhow::anyhow!("commit before exit: {e}"))?;
    Ok(code)
}

/// The offsets to commit after printing the first `shown` of a poll's `records`: for a
/// partition whose records were all printed, the consumer's position (past any Raft
/// control entries the fetch skipped too); else the offset after the last one printed.
fn printed_offsets(
    records: &[neo_client::ConsumerRecord],
    shown: usize,
    position: impl Fn(&TopicPartition) -> Option<u64>,
) -> BTreeMap<TopicPartition, u64> {
    let mut out = BTreeMap::new();
    for record in &records[..shown] {
        out.insert(
            TopicPartition::new(record.topic.clone(), record.partition),
            record.offset + 1,
        );
    }
    let cut: std::collections::BTreeSet<TopicPartition> = records[shown..]
        .iter()
        .map(|r| TopicPartition::new(r.topic.clone(), r.partition))
        .collect();
    for (tp, offset) in out.iter_mut() {
        if !cut.contains(tp)
            && let Some(p) = position(tp)
        {
            *offset = (*offset).max(p);
        }
    }
    out
}

async fn print_loop(
    consumer: &mut GroupConsumer,
    args: &ConsumeArgs,
    printed: &Printed,
) -> anyhow::Result<ExitCode> {
    let max = args.max.unwrap_or(u64::MAX);
    if max == 0 {
        return Ok(ExitCode::SUCCESS);
    }
    let idle_limit = args.timeout_ms.map(Duration::from_millis);
    let poll_wait = idle_limit
        .unwrap_or(Duration::from_millis(500))
        .min(Duration::from_millis(500));
    let mut count = 0u64;
    let mut last_new = Instant::now();
    let stdout = std::io::stdout();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let wait = match idle_limit {
            Some(limit) => {
                let left = limit.saturating_sub(last_new.elapsed());
                if left.is_zero() {
                    return Ok(ExitCode::SUCCESS);
                }
                left.min(poll_wait)
            }
            None => poll_wait,
        };
        let polled = tokio::select! {
            polled = consumer.poll(wait) => polled,
            _ = &mut ctrl_c => return Ok(ExitCode::SUCCESS),
        };
        let records = match polled {
            Ok(records) => records,
            Err(err @ Error::Fenced { .. }) => {
                // Partitions dropped; the next poll joins again.
                eprintln!("warning: {err}");
                continue;
            }
            Err(err) => return Err(err.into()),
        };
        if records.is_empty() {
            continue;
        }
        last_new = Instant::now();
        let mut out = stdout.lock();
        let mut shown = 0usize;
        for record in &records {
            writeln!(out, "{}", format_record(record, args.format))?;
            shown += 1;
            count += 1;
            if count >= max {
                break;
            }
        }
        out.flush()?;
        drop(out);
        let done = count >= max;
        let mut batch = printed_offsets(&records, shown, |tp| consumer.position(tp));
        if shown == records.len() {
            // Everything polled was printed: every position is printed up to (a
            // partition whose fetch held only Raft control entries moved too).
            for tp in consumer.assignment() {
                if let Some(p) = consumer.position(&tp) {
                    let at = batch.entry(tp).or_insert(p);
                    *at = (*at).max(p);
                }
            }
        }
        printed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(batch.clone());
        if let Err(err) = consumer.commit_offsets(batch) {
            eprintln!("warning: commit failed: {err}");
        }
        if done {
            return Ok(ExitCode::SUCCESS);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::BenchCommand;
    use crate::{Cli, Command};
    use bytes::Bytes;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("neo").chain(args.iter().copied()))
    }

    #[test]
    fn consume_group_flags() {
        match parse(&[
            "consume",
            "t",
            "--group",
            "g",
            "--from-beginning",
            "--max-messages",
            "7",
        ])
        .unwrap()
        .command
        {
            Command::Consume(a) => {
                assert_eq!(a.group.as_deref(), Some("g"));
                assert!(a.from_beginning);
                assert_eq!(a.max, Some(7), "--max-messages is --max");
            }
            other => panic!("{other:?}"),
        }
        assert!(
            parse(&["consume", "t", "--group", "g", "--partition", "1"]).is_err(),
            "a member reads what the group assigns"
        );
        assert!(parse(&["consume", "t", "--group", "g", "--offset", "3"]).is_err());
        assert!(
            parse(&["consume", "t", "--group"]).is_err(),
            "a name is required"
        );
    }

    #[test]
    fn group_command_flags() {
        match parse(&["group", "list"]).unwrap().command {
            Command::Group(GroupCommand::List { format }) => assert_eq!(format, Format::Text),
            other => panic!("{other:?}"),
        }
        match parse(&["group", "describe", "g", "--format", "json"])
            .unwrap()
            .command
        {
            Command::Group(GroupCommand::Describe { group, format }) => {
                assert_eq!((group.as_str(), format), ("g", Format::Json))
            }
            other => panic!("{other:?}"),
        }
        assert!(
            parse(&["group", "describe"]).is_err(),
            "group name required"
        );
        let reset = |extra: &[&str]| {
            parse(&[&["group", "reset-offsets", "g", "--topic", "t"][..], extra].concat())
        };
        let to = |extra: &[&str]| match reset(extra).unwrap().command {
            Command::Group(GroupCommand::ResetOffsets { group, topic, to }) => {
                assert_eq!((group.as_str(), topic.as_str()), ("g", "t"));
                to.to()
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(to(&["--to-earliest"]), neo_client::ResetTo::Earliest);
        assert_eq!(to(&["--to-latest"]), neo_client::ResetTo::Latest);
        assert_eq!(to(&["--to-offset", "42"]), neo_client::ResetTo::Offset(42));
        assert_eq!(
            to(&["--to-timestamp", "1700000000000"]),
            neo_client::ResetTo::Timestamp(1_700_000_000_000)
        );
        assert_eq!(
            to(&["--to-timestamp", "-5"]),
            neo_client::ResetTo::Timestamp(-5)
        );
        assert!(reset(&[]).is_err(), "a target is required");
        assert!(
            reset(&["--to-earliest", "--to-latest"]).is_err(),
            "one target only"
        );
        assert!(reset(&["--to-offset", "-1"]).is_err());
        assert!(
            parse(&["group", "reset-offsets", "g", "--to-earliest"]).is_err(),
            "--topic"
        );
        match parse(&["group", "delete", "g"]).unwrap().command {
            Command::Group(GroupCommand::Delete { group }) => assert_eq!(group, "g"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bench_consume_group_flags() {
        match parse(&["bench", "consume", "--topic", "t", "--group", "g"])
            .unwrap()
            .command
        {
            Command::Bench(BenchCommand::Consume {
                group, consumers, ..
            }) => {
                assert_eq!((group.as_deref(), consumers), (Some("g"), 4))
            }
            other => panic!("{other:?}"),
        }
        match parse(&[
            "bench",
            "consume",
            "--topic",
            "t",
            "--group",
            "g",
            "--consumers",
            "8",
        ])
        .unwrap()
        .command
        {
            Command::Bench(BenchCommand::Consume { consumers, .. }) => assert_eq!(consumers, 8),
            other => panic!("{other:?}"),
        }
        assert!(
            parse(&["bench", "consume", "--topic", "t", "--consumers", "2"]).is_err(),
            "--consumers needs --group"
        );
        assert!(
            parse(&[
                "bench",
                "consume",
                "--topic",
                "t",
                "--group",
                "g",
                "--consumers",
                "0"
            ])
            .is_err()
        );
    }

    #[test]
    fn group_describe_text_is_one_line_per_item() {
        let report = neo_client::GroupReport {
            group: "g".into(),
            state: "stable".into(),
            group_epoch: 3,
            coordinator: 1,
            members: vec![neo_client::MemberReport {
                member_id: "m1".into(),
                instance_id: None,
                client_id: "neo-cli".into(),
                host: "127.0.0.1:5000".into(),
                member_epoch: 3,
                topics: vec!["t".into()],
                assignment: vec![neo_client::TopicPartition::new("t", 0)],
            }],
            offsets: vec![neo_client::OffsetReport {
                topic: "t".into(),
                partition: 0,
                committed_offset: None,
                log_end_offset: 4,
                lag: None,
                metadata: String::new(),
            }],
        };
        assert_eq!(
            format_report(&report, Format::Text).unwrap(),
            "group g state stable epoch 3 coordinator 1 members 1\n\
             member m1 client neo-cli host 127.0.0.1:5000 instance - epoch 3 assigned [t/0]\n\
             offset t/0 committed - end 4 lag -"
        );
    }

    fn record(partition: u32, offset: u64) -> neo_client::ConsumerRecord {
        neo_client::ConsumerRecord {
            topic: "t".into(),
            partition,
            offset,
            timestamp_ms: 0,
            key: None,
            value: Bytes::new(),
            headers: Vec::new(),
        }
    }

    #[test]
    fn commits_cover_what_was_printed_and_nothing_more() {
        let records = [record(0, 4), record(1, 7), record(0, 5), record(1, 8)];
        // Positions past trailing control entries: 0 → 9, 1 → 12.
        let position = |tp: &TopicPartition| Some(if tp.partition == 0 { 9 } else { 12 });
        let all = printed_offsets(&records, 4, position);
        assert_eq!(
            all,
            BTreeMap::from([
                (TopicPartition::new("t", 0), 9),
                (TopicPartition::new("t", 1), 12)
            ])
        );
        // --max stopped after 3: partition 0 fully printed, partition 1 cut after 7.
        let cut = printed_offsets(&records, 3, position);
        assert_eq!(
            cut,
            BTreeMap::from([
                (TopicPartition::new("t", 0), 9),
                (TopicPartition::new("t", 1), 8)
            ])
        );
        assert!(printed_offsets(&records, 0, position).is_empty());
    }
}
