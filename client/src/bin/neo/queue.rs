//! `neo queue ...` (docs/cli.md, "Queues").

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use neo_client::admin::{ENCRYPTION_AT_REST, RETENTION_BYTES, RETENTION_MS};
use neo_client::queue::{RedriveOptions, SendOptions, redrive};
use neo_client::{
    Client, DeadLetter, QueueAdmin, QueueConsumer, QueueConsumerConfig, QueueOptions,
    QueueProducer, Receipt, ReceiptOutcome, SettleOp,
};
use neo_protocol::api::{
    QUEUE_BACKOFF_STEPS_MAX, QUEUE_DELAY_MS_MAX, QUEUE_MAX_DELIVERIES_MAX, QUEUE_MAX_IN_FLIGHT_MAX,
    QUEUE_RECEIVE_MESSAGES_MAX, QUEUE_VISIBILITY_TIMEOUT_MS_MAX, QUEUE_VISIBILITY_TIMEOUT_MS_MIN,
};

use crate::security::non_empty;
use crate::{Format, exit_status, stdin_lines};
use output::{format_delivery, format_report, outcome_name};

/// The consumer name of `neo queue receive` and the settle commands by default.
const CLI_CONSUMER: &str = "neo-cli";

#[derive(Debug, Subcommand)]
pub(crate) enum QueueCommand {
    /// Create a queue (and its dead-letter queue); waits until every partition has a
    /// leader.
    Create(CreateArgs),
    /// List the queues: name, partitions, replication, dead-letter queue.
    List,
    /// A queue's settings and, per partition, its delivery counts.
    Describe {
        /// Queue (or topic, with --share-group) name.
        name: String,
        /// Describe this share group of a topic.
        #[arg(long, value_parser = non_empty)]
        share_group: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Drop every message not yet done (leased ones included).
    Purge {
        /// Queue (or topic, with --share-group) name.
        name: String,
        /// Purge this share group of a topic.
        #[arg(long, value_parser = non_empty)]
        share_group: Option<String>,
    },
    /// Delete a queue and its data (its dead-letter queue stays).
    Delete {
        /// Queue name.
        name: String,
    },
    /// Send one message per stdin line; waits for every commit; a summary goes to
    /// stderr.
    Send(SendArgs),
    /// Receive messages, one per stdout line; acks them after printing (--ack).
    Receive(ReceiveArgs),
    /// Acknowledge deliveries: done for good.
    Ack {
        #[command(flatten)]
        target: Receipts,
    },
    /// Give deliveries back for redelivery.
    Nack {
        #[command(flatten)]
        target: Receipts,
        /// Redeliver no sooner than this (default: the queue's backoff).
        #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u32).range(..=i64::from(QUEUE_DELAY_MS_MAX)))]
        delay_ms: Option<u32>,
        /// Why (kept in the dead-letter headers).
        #[arg(long, default_value = "", value_parser = reason)]
        reason: String,
    },
    /// Lease deliveries for longer, from now.
    Extend {
        #[command(flatten)]
        target: Receipts,
        /// The new lease length from now (0: the queue's visibility timeout).
        #[arg(long, value_name = "MS", value_parser = visibility)]
        visibility_timeout_ms: u32,
    },
    /// Dead-letter deliveries now.
    Term {
        #[command(flatten)]
        target: Receipts,
        /// Why (kept in the dead-letter headers).
        #[arg(long, default_value = "", value_parser = reason)]
        reason: String,
    },
    /// Move dead letters back to their source queues (header neo-dlq-source).
    Redrive {
        /// The dead-letter queue (e.g. orders.dlq).
        name: String,
        /// Move at most this many (default: until the dead-letter queue is empty).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        max: Option<u64>,
    },
}

#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
    /// Queue name.
    name: String,
    /// Partition count.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    partitions: u32,
    /// Replicas per partition.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    replication: u32,
    /// Lease length of a receive that names none (default 30000).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u32).range(i64::from(QUEUE_VISIBILITY_TIMEOUT_MS_MIN)..=i64::from(QUEUE_VISIBILITY_TIMEOUT_MS_MAX)))]
    visibility_timeout_ms: Option<u32>,
    /// Deliveries before a message is dead-lettered (default 5).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(QUEUE_MAX_DELIVERIES_MAX)))]
    max_deliveries: Option<u32>,
    /// Where dead letters go: a queue name, or `none` (default: NAME.dlq, created
    /// with the queue).
    #[arg(long, value_name = "NAME|none", value_parser = non_empty)]
    dead_letter: Option<String>,
    /// Never lease two messages of one key at once (a key's messages in order).
    #[arg(long)]
    ordered_by_key: bool,
    /// Leased messages per partition at most (default 10000).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(QUEUE_MAX_IN_FLIGHT_MAX)))]
    max_in_flight: Option<u32>,
    /// Leased messages per consumer per partition at most (default 0: no bound).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(..=i64::from(QUEUE_MAX_IN_FLIGHT_MAX)))]
    max_in_flight_per_consumer: Option<u32>,
    /// Delays of successive redeliveries after a nack without delay, comma-separated
    /// (the last repeats; default: at once).
    #[arg(long, value_name = "MS,MS,...", value_parser = backoff)]
    backoff_ms: Option<Backoff>,
    /// Retention by age (whole segments). Default: no limit.
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    retention_ms: Option<u64>,
    /// Retention by size per partition replica (whole segments). Default: no limit.
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..))]
    retention_bytes: Option<u64>,
    /// Keep the queue's (and its dead-letter queue's) logs encrypted at rest, under each
    /// node's key (`neo-node --at-rest-key-file`).
    #[arg(long)]
    encrypt_at_rest: bool,
}

#[derive(Debug, Args)]
pub(crate) struct SendArgs {
    /// Queue name.
    queue: String,
    /// Key of every message (also picks the partition: murmur2(key) % partitions).
    #[arg(long)]
    key: Option<String>,
    /// Deliver each message no sooner than this after it was sent.
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u32).range(..=i64::from(QUEUE_DELAY_MS_MAX)))]
    deliver_after_ms: Option<u32>,
}

#[derive(Debug, Args)]
pub(crate) struct ReceiveArgs {
    /// Queue (or topic, with --share-group) name.
    queue: String,
    /// Stop after this many messages.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    max: u64,
    /// Ack every message after printing it (the default).
    #[arg(long, conflicts_with = "no_ack")]
    ack: bool,
    /// Leave the messages leased (ack them later with `neo queue ack`); text output
    /// then starts each line with the receipt.
    #[arg(long)]
    no_ack: bool,
    /// Stop after this long with no new message.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    wait_ms: u64,
    /// Lease length (default: the queue's visibility timeout).
    #[arg(long, value_name = "MS", value_parser = visibility)]
    visibility_timeout_ms: Option<u32>,
    /// Receive as this share group of a topic.
    #[arg(long, value_parser = non_empty)]
    share_group: Option<String>,
    /// Consumer name (leases are counted per consumer).
    #[arg(long, default_value = CLI_CONSUMER, value_parser = non_empty)]
    consumer: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

/// The queue and receipts of ack / nack / extend / term.
#[derive(Debug, Args)]
pub(crate) struct Receipts {
    /// Queue (or topic, with --share-group) name.
    queue: String,
    /// Receipts, as `neo queue receive` prints them (GROUP-PARTITION-OFFSET-DELIVERY-LEASE).
    #[arg(required = true, value_name = "RECEIPT")]
    receipts: Vec<Receipt>,
    /// The share group the receipts are of.
    #[arg(long, value_parser = non_empty)]
    share_group: Option<String>,
}

/// `--backoff-ms`'s steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Backoff(Vec<u32>);

fn backoff(value: &str) -> Result<Backoff, String> {
    let steps = value
        .split(',')
        .map(|s| {
            let ms: u32 = s
                .trim()
                .parse()
                .map_err(|_| format!("{s:?} is not a number of milliseconds"))?;
            if ms > QUEUE_DELAY_MS_MAX {
                return Err(format!("{ms} is above {QUEUE_DELAY_MS_MAX} ms (7 days)"));
            }
            Ok(ms)
        })
        .collect::<Result<Vec<u32>, String>>()?;
    if steps.len() > QUEUE_BACKOFF_STEPS_MAX {
        return Err(format!("at most {QUEUE_BACKOFF_STEPS_MAX} steps"));
    }
    Ok(Backoff(steps))
}

fn visibility(value: &str) -> Result<u32, String> {
    let ms: u32 = value
        .parse()
        .map_err(|_| format!("{value:?} is not a number of milliseconds"))?;
    if ms != 0 && !(QUEUE_VISIBILITY_TIMEOUT_MS_MIN..=QUEUE_VISIBILITY_TIMEOUT_MS_MAX).contains(&ms)
    {
        return Err(format!(
            "0 (the queue's) or {QUEUE_VISIBILITY_TIMEOUT_MS_MIN} to \
             {QUEUE_VISIBILITY_TIMEOUT_MS_MAX}"
        ));
    }
    Ok(ms)
}

fn reason(value: &str) -> Result<String, String> {
    let max = neo_protocol::api::QUEUE_NAME_LEN_MAX;
    if value.len() > max {
        return Err(format!("at most {max} bytes"));
    }
    Ok(value.to_string())
}

pub(crate) async fn queue(client: Client, cmd: QueueCommand) -> anyhow::Result<ExitCode> {
    let admin = QueueAdmin::new(client.clone());
    match cmd {
        QueueCommand::Create(args) => create(&admin, args).await,
        QueueCommand::List => {
            for q in admin.list().await.context("list queues")? {
                let dlq = q.settings.dead_letter.as_deref().unwrap_or("none");
                println!(
                    "{} partitions {} replication {} dead_letter {dlq}",
                    q.name, q.partitions, q.replication_factor
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        QueueCommand::Describe {
            name,
            share_group,
            format,
        } => {
            let report = admin
                .describe(&name, share_group.as_deref())
                .await
                .with_context(|| format!("describe queue {name:?}"))?;
            println!("{}", format_report(&report, format)?);
            let missing = report.missing();
            if !missing.is_empty() {
                eprintln!(
                    "error: describe queue {name:?}: no counts for partitions {missing:?} \
                     (their leaders did not answer)"
                );
                return Ok(ExitCode::FAILURE);
            }
            Ok(ExitCode::SUCCESS)
        }
        QueueCommand::Purge { name, share_group } => {
            let purged = admin
                .purge(&name, share_group.as_deref())
                .await
                .with_context(|| format!("purge queue {name:?}"))?;
            let group = share_group.map_or(String::new(), |g| format!(" (share group {g})"));
            println!("purged {purged} messages from {name}{group}");
            Ok(ExitCode::SUCCESS)
        }
        QueueCommand::Delete { name } => {
            admin
                .delete(&name)
                .await
                .with_context(|| format!("delete queue {name:?}"))?;
            println!("deleted queue {name}");
            Ok(ExitCode::SUCCESS)
        }
        QueueCommand::Send(args) => send(client, args).await,
        QueueCommand::Receive(args) => receive(client, args).await,
        QueueCommand::Ack { target } => settle(client, target, SettleOp::Ack).await,
        QueueCommand::Nack {
            target,
            delay_ms,
            reason,
        } => settle(client, target, SettleOp::Nack { delay_ms, reason }).await,
        QueueCommand::Extend {
            target,
            visibility_timeout_ms,
        } => {
            let op = SettleOp::Extend {
                visibility_timeout_ms,
            };
            settle(client, target, op).await
        }
        QueueCommand::Term { target, reason } => {
            settle(client, target, SettleOp::Term { reason }).await
        }
        QueueCommand::Redrive { name, max } => redrive_dlq(client, &name, max).await,
    }
}

/// The queue options `neo queue create` asks for.
fn create_options(args: &CreateArgs) -> QueueOptions {
    let mut o =
        QueueOptions::new(args.partitions, args.replication).ordered_by_key(args.ordered_by_key);
    if let Some(ms) = args.visibility_timeout_ms {
        o = o.visibility_timeout_ms(ms);
    }
    if let Some(n) = args.max_deliveries {
        o = o.max_deliveries(n);
    }
    if let Some(dl) = &args.dead_letter {
        o = o.dead_letter(match dl.as_str() {
            "none" => DeadLetter::None,
            name => DeadLetter::Queue(name.to_string()),
        });
    }
    if let Some(n) = args.max_in_flight {
        o = o.max_in_flight(n);
    }
    if let Some(n) = args.max_in_flight_per_consumer {
        o = o.max_in_flight_per_consumer(n);
    }
    if let Some(Backoff(steps)) = &args.backoff_ms {
        o = o.redelivery_backoff_ms(steps.clone());
    }
    if let Some(ms) = args.retention_ms {
        o = o.config(RETENTION_MS, ms.to_string());
    }
    if let Some(b) = args.retention_bytes {
        o = o.config(RETENTION_BYTES, b.to_string());
    }
    if args.encrypt_at_rest {
        o = o.config(ENCRYPTION_AT_REST, "true".to_string());
    }
    o
}

async fn create(admin: &QueueAdmin, args: CreateArgs) -> anyhow::Result<ExitCode> {
    let name = &args.name;
    let created = admin
        .create(name, create_options(&args))
        .await
        .with_context(|| format!("create queue {name:?}"))?;
    let s = &created.settings;
    println!(
        "created queue {name} (partitions {}, replication {}, visibility_timeout_ms {}, \
         max_deliveries {}, dead_letter {})",
        args.partitions,
        args.replication,
        s.visibility_timeout_ms,
        s.max_deliveries,
        s.dead_letter.as_deref().unwrap_or("none")
    );
    if let Some(dlq) = created.created_dead_letter {
        println!("created dead-letter queue {dlq}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn send(client: Client, args: SendArgs) -> anyhow::Result<ExitCode> {
    // Fail early and clearly on an unknown queue.
    client
        .partition_count(&args.queue)
        .await
        .with_context(|| format!("send to queue {:?}", args.queue))?;
    let producer = QueueProducer::new(client);
    let mut lines = stdin_lines();
    let mut deliveries = Vec::new();
    let mut failed = 0u64;
    let mut first_error: Option<neo_client::Error> = None;
    while let Some(line) = lines.recv().await {
        let line = line.context("read stdin")?;
        let mut options = SendOptions::default();
        if let Some(key) = &args.key {
            options = options.key(key.clone());
        }
        if let Some(ms) = args.deliver_after_ms {
            options = options.deliver_after_ms(ms);
        }
        match producer.submit(&args.queue, line, options).await {
            Ok(delivery) => deliveries.push(delivery),
            Err(err) => {
                failed += 1;
                first_error.get_or_insert(err);
            }
        }
    }
    producer.flush().await;
    let total = deliveries.len() as u64 + failed;
    let mut committed = 0u64;
    for delivery in deliveries {
        match delivery.await {
            Ok(_) => committed += 1,
            Err(err) => {
                failed += 1;
                first_error.get_or_insert(err);
            }
        }
    }
    eprintln!(
        "sent {total} messages to {}: {committed} committed, {failed} failed",
        args.queue
    );
    match first_error {
        Some(err) => {
            eprintln!("error: {err}");
            Ok(ExitCode::from(exit_status(err.code())))
        }
        None => Ok(ExitCode::SUCCESS),
    }
}

async fn receive(client: Client, args: ReceiveArgs) -> anyhow::Result<ExitCode> {
    let ack = !args.no_ack;
    let config = QueueConsumerConfig {
        share_group: args.share_group.clone(),
        visibility_timeout_ms: args.visibility_timeout_ms.unwrap_or(0),
        // Lease only what is printed.
        prefetch: 0,
        receive_batch: args.max.min(u64::from(QUEUE_RECEIVE_MESSAGES_MAX)) as u32,
        ..QueueConsumerConfig::default()
    };
    let consumer = QueueConsumer::with_config(client, &args.queue, &args.consumer, config)?;
    let idle = Duration::from_millis(args.wait_ms);
    let mut printed = 0u64;
    let mut refused: Vec<(Receipt, ReceiptOutcome)> = Vec::new();
    let stdout = std::io::stdout();
    while printed < args.max {
        let want = (args.max - printed).min(u64::from(QUEUE_RECEIVE_MESSAGES_MAX)) as usize;
        let batch = consumer
            .receive(want, idle)
            .await
            .with_context(|| format!("receive from queue {:?}", args.queue))?;
        if batch.is_empty() {
            break;
        }
        {
            let mut out = stdout.lock();
            for d in &batch {
                writeln!(out, "{}", format_delivery(d, args.format, !ack))?;
            }
            out.flush()?;
        }
        printed += batch.len() as u64;
        if ack {
            let receipts: Vec<Receipt> = batch.iter().map(|d| d.receipt).collect();
            let outcomes = consumer
                .ack(&receipts)
                .await
                .with_context(|| format!("ack in queue {:?}", args.queue))?;
            refused.extend(
                receipts
                    .into_iter()
                    .zip(outcomes)
                    .filter(|(_, o)| *o != ReceiptOutcome::Ok),
            );
        }
    }
    if refused.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let list: Vec<String> = refused
        .iter()
        .map(|(r, o)| format!("{r} {}", outcome_name(*o)))
        .collect();
    eprintln!(
        "error: {} of {printed} received messages could not be acked (they will be \
         delivered again): {}",
        refused.len(),
        list.join(", ")
    );
    Ok(ExitCode::FAILURE)
}

async fn settle(client: Client, target: Receipts, op: SettleOp) -> anyhow::Result<ExitCode> {
    let config = QueueConsumerConfig {
        share_group: target.share_group,
        prefetch: 0,
        ..QueueConsumerConfig::default()
    };
    let consumer = QueueConsumer::with_config(client, &target.queue, CLI_CONSUMER, config)?;
    let outcomes = consumer
        .settle(&op, &target.receipts)
        .await
        .with_context(|| format!("{} in queue {:?}", op.verb(), target.queue))?;
    for (receipt, outcome) in target.receipts.iter().zip(&outcomes) {
        println!("{receipt} {}", outcome_name(*outcome));
    }
    let refused = outcomes
        .iter()
        .filter(|o| **o != ReceiptOutcome::Ok)
        .count();
    if refused == 0 {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "error: {refused} of {} receipts could not be {}",
        outcomes.len(),
        match op {
            SettleOp::Ack => "acked",
            SettleOp::Nack { .. } => "nacked",
            SettleOp::Extend { .. } => "extended",
            SettleOp::Term { .. } => "dead-lettered",
        }
    );
    Ok(ExitCode::FAILURE)
}

async fn redrive_dlq(client: Client, name: &str, max: Option<u64>) -> anyhow::Result<ExitCode> {
    let options = RedriveOptions {
        max,
        ..RedriveOptions::default()
    };
    let report = redrive(&client, name, options)
        .await
        .with_context(|| format!("redrive {name:?}"))?;
    let to: Vec<String> = report
        .by_source
        .iter()
        .map(|(source, n)| format!("{source} {n}"))
        .collect();
    let to = if to.is_empty() {
        String::new()
    } else {
        format!(" ({})", to.join(", "))
    };
    println!("moved {} messages from {name}{to}", report.moved);
    if report.ack_failed > 0 {
        eprintln!(
            "warning: {} moved messages could not be acked in {name} and are in both places",
            report.ack_failed
        );
    }
    if let Some(err) = report.error {
        eprintln!("error: redrive {name:?}: {err}");
        return Ok(ExitCode::from(exit_status(err.code())));
    }
    if report.skipped > 0 {
        eprintln!(
            "error: {} dead letters have no usable neo-dlq-source header and stay in {name}",
            report.skipped
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

mod output;
#[cfg(test)]
mod tests;
