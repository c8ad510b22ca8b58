//! `neo`: the command-line client of a Neo cluster. The contract (commands, flags,
//! output formats, exit statuses) is documented in `docs/cli.md`; scripts rely on it.

mod acl;
mod alloc;
mod bench;
mod group;
mod keyring;
mod queue;
mod quota;
mod role;
mod security;
mod topic;
mod user;

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use neo_client::{
    Acks, Admin, Client, ClientConfig, ClusterStatus, Consumer, ConsumerConfig, ConsumerRecord,
    Offset, Producer, ProducerConfig, ProducerRecord,
};
use neo_protocol::ErrorCode;
use serde::Serialize;

use acl::AclCommand;
use bench::{BenchCommand, bench};
use group::{GroupCommand, consume_group};
use queue::QueueCommand;
use quota::QuotaCommand;
use role::RoleCommand;
use security::ConnectionSecurity;
use topic::{TopicCommand, topic};
use user::UserCommand;

/// Command-line client of a Neo cluster.
#[derive(Debug, Parser)]
#[command(name = "neo", version, about)]
struct Cli {
    /// Seed brokers, comma-separated `HOST:PORT` (any broker of the cluster will do).
    #[arg(
        long,
        global = true,
        env = "NEO_SERVER",
        default_value = "127.0.0.1:7070",
        value_delimiter = ','
    )]
    server: Vec<String>,
    /// Credential and TLS: `--token`, `--api-key`, `--tls-ca`, `--tls-cert`,
    /// `--tls-key`, `--tls-server-name`.
    #[command(flatten)]
    security: ConnectionSecurity,
    #[command(subcommand)]
    command: Command,
}

/// Exit status when the cluster refused the credential (`Unauthenticated`).
const EXIT_UNAUTHENTICATED: u8 = 3;
/// Exit status when the cluster refused the operation (`PermissionDenied`).
const EXIT_PERMISSION_DENIED: u8 = 4;

#[derive(Debug, Subcommand)]
enum Command {
    /// Create, list, describe and delete topics.
    #[command(subcommand)]
    Topic(TopicCommand),
    /// Produce one message per stdin line; a summary goes to stderr.
    Produce(ProduceArgs),
    /// Print messages, one per stdout line (as a member of a consumer group with
    /// `--group`).
    Consume(ConsumeArgs),
    /// List, describe, reset the offsets of, and delete consumer groups.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Work queues: create, list, describe, purge, delete; send, receive, ack, nack,
    /// extend, term; redrive dead letters.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// The cluster's nodes, controller and partition placement.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Roles: create, grant, revoke, assign, unassign, list, describe, delete.
    #[command(subcommand)]
    Role(RoleCommand),
    /// Users: create, list, describe, delete; their API keys: create, revoke, list.
    #[command(subcommand)]
    User(UserCommand),
    /// Grants made to a principal directly (ACLs): grant, revoke, list, describe,
    /// delete.
    #[command(subcommand)]
    Acl(AclCommand),
    /// Rate and connection limits: set, list.
    #[command(subcommand)]
    Quota(QuotaCommand),
    /// Measure throughput and latency; prints one JSON line.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum AcksArg {
    All,
    Leader,
    None,
}

impl From<AcksArg> for Acks {
    fn from(a: AcksArg) -> Acks {
        match a {
            AcksArg::All => Acks::All,
            AcksArg::Leader => Acks::Leader,
            AcksArg::None => Acks::None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(Debug, Args)]
struct ProduceArgs {
    /// Topic name.
    topic: String,
    /// Key of every message (also picks the partition: murmur2(key) % partitions).
    #[arg(long)]
    key: Option<String>,
    /// When a message counts as acknowledged.
    #[arg(long, value_enum, default_value = "all")]
    acks: AcksArg,
    /// Send every message to this partition.
    #[arg(long)]
    partition: Option<u32>,
    /// A header of every message, `NAME=VALUE` (repeat for several).
    #[arg(long = "header", value_name = "NAME=VALUE", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// Encrypt every value with the current key of this key-ring file (`ID ALGORITHM
    /// HEXKEY` lines; the last key is current): the cluster stores ciphertext only.
    #[arg(long, value_name = "FILE")]
    keyring: Option<std::path::PathBuf>,
    /// The key of `--keyring` to encrypt with (default: its last key).
    #[arg(long, value_name = "ID", requires = "keyring")]
    encrypt_key: Option<String>,
}

#[derive(Debug, Args)]
struct ConsumeArgs {
    /// Topic name.
    topic: String,
    /// Read only this partition (default: all).
    #[arg(long)]
    partition: Option<u32>,
    /// Start at the first offset still stored (default: only new messages). With
    /// `--group`: only for partitions where the group has no committed offset.
    #[arg(long, conflicts_with = "offset")]
    from_beginning: bool,
    /// Start at this offset.
    #[arg(long)]
    offset: Option<u64>,
    /// Stop after this many messages.
    #[arg(long, visible_alias = "max-messages")]
    max: Option<u64>,
    /// Consume as a member of this consumer group: read the partitions the group
    /// assigns, from its committed offsets, and commit what was printed.
    #[arg(long, conflicts_with_all = ["partition", "offset"])]
    group: Option<String>,
    /// Stop after this long with nothing new (default: never).
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Decrypt values with the keys of this key-ring file (as `neo produce
    /// --keyring`). A record that cannot be decrypted (or, without a key ring, an
    /// encrypted record) is an `error:` line on stderr instead of a message; the
    /// command then exits 5.
    #[arg(long, value_name = "FILE")]
    keyring: Option<std::path::PathBuf>,
}

/// Exit status of `neo consume` when some records could not be decrypted (each one
/// reported on stderr): everything else went well.
pub(crate) const EXIT_UNDECRYPTABLE: u8 = 5;

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// Nodes (with liveness), controller, partition leaders and replicas.
    Status {
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
}

fn main() -> ExitCode {
    alloc::keep_freed_memory();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let has_credential = cli.security.has_credential();
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            let status = exit_status(error_code(&err));
            if status == EXIT_UNAUTHENTICATED && !has_credential {
                eprintln!(
                    "hint: pass a credential: --token (NEO_TOKEN) or --api-key (NEO_API_KEY)"
                );
            }
            ExitCode::from(status)
        }
    }
}

/// The exit status of a failure with this wire code (docs/cli.md): 3 and 4 tell a
/// refused credential and a refused operation apart from every other error (1).
fn exit_status(code: Option<ErrorCode>) -> u8 {
    match code {
        Some(ErrorCode::Unauthenticated) => EXIT_UNAUTHENTICATED,
        Some(ErrorCode::PermissionDenied) => EXIT_PERMISSION_DENIED,
        _ => 1,
    }
}

/// The first wire code in `err`'s chain: a client error (retry wrappers included), a
/// protocol error or a bare broker error, under any context added on the way up.
fn error_code(err: &anyhow::Error) -> Option<ErrorCode> {
    err.chain().find_map(|cause| {
        if let Some(e) = cause.downcast_ref::<neo_client::Error>() {
            e.code()
        } else if let Some(neo_protocol::Error::Rpc(e)) = cause.downcast_ref() {
            e.error_code()
        } else {
            cause
                .downcast_ref::<neo_protocol::RpcError>()
                .and_then(neo_protocol::RpcError::error_code)
        }
    })
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut config = ClientConfig::default();
    if let Command::Bench(BenchCommand::Produce {
        rpc_compression: false,
        ..
    }) = &cli.command
    {
        // The bench's values are all `x`: compressing the frames would measure zstd.
        config.rpc.compression_threshold_bytes = usize::MAX;
    }
    cli.security.apply(&cli.server, &mut config.rpc)?;
    let client = Client::connect_with(&cli.server, config)
        .await
        .map_err(|err| {
            let what = match exit_status(err.code()) {
                1 => "cannot reach the cluster",
                _ => "the cluster refused this client",
            };
            anyhow::Error::new(err).context(format!("{what} at {}", cli.server.join(",")))
        })?;
    match cli.command {
        Command::Topic(cmd) => topic(client, cmd).await,
        Command::Produce(args) => produce(client, args).await,
        Command::Consume(args) => match args.group.clone() {
            Some(group) => consume_group(client, args, &group).await,
            None => consume(client, args).await,
        },
        Command::Group(cmd) => group::group(client, cmd).await,
        Command::Queue(cmd) => queue::queue(client, cmd).await,
        Command::Cluster(ClusterCommand::Status { format }) => {
            let status = Admin::new(client).cluster_status().await?;
            println!("{}", format_status(&status, format)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Role(cmd) => role::role(client, cmd).await,
        Command::User(cmd) => user::user(client, cmd).await,
        Command::Acl(cmd) => acl::acl(client, cmd).await,
        Command::Quota(cmd) => quota::quota(client, cmd).await,
        Command::Bench(cmd) => bench(client, cmd).await,
    }
}

pub(crate) fn ids(ids: &[u64]) -> String {
    let list: Vec<String> = ids.iter().map(u64::to_string).collect();
    format!("[{}]", list.join(","))
}

/// Stdin's lines, read on a blocking thread, through a bounded channel.
pub(crate) fn stdin_lines() -> tokio::sync::mpsc::Receiver<std::io::Result<String>> {
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    rx
}

async fn produce(client: Client, args: ProduceArgs) -> anyhow::Result<ExitCode> {
    // Fail early and clearly on an unknown topic or partition.
    let count = client.partition_count(&args.topic).await?;
    if let Some(p) = args.partition
        && p >= count
    {
        bail!(
            "topic {:?} has no partition {p} (it has {count})",
            args.topic
        );
    }
    let encryption = keyring::load(args.keyring.as_deref(), args.encrypt_key.as_deref())?;
    let producer = Producer::with_config(
        client,
        ProducerConfig {
            acks: args.acks.into(),
            encryption,
            ..ProducerConfig::default()
        },
    );
    let mut rx = stdin_lines();
    let mut deliveries = Vec::new();
    let mut send_failed = 0u64;
    let mut first_error: Option<neo_client::Error> = None;
    while let Some(line) = rx.recv().await {
        let line = line.context("read stdin")?;
        let mut record = ProducerRecord::new(args.topic.clone(), line);
        if let Some(key) = &args.key {
            record = record.key(key.clone());
        }
        if let Some(p) = args.partition {
            record = record.partition(p);
        }
        for (name, value) in &args.headers {
            record = record.header(name.clone(), value.clone().into_bytes());
        }
        match producer.send(record).await {
            Ok(delivery) => deliveries.push(delivery),
            Err(err) => {
                send_failed += 1;
                first_error.get_or_insert(err);
            }
        }
    }
    producer.flush().await;
    let total = deliveries.len() as u64 + send_failed;
    let mut acked = 0u64;
    let mut failed = send_failed;
    for delivery in deliveries {
        match delivery.await {
            Ok(_) => acked += 1,
            Err(err) => {
                failed += 1;
                first_error.get_or_insert(err);
            }
        }
    }
    let acks = format!("{:?}", args.acks).to_lowercase();
    eprintln!(
        "produced {total} messages to {}: {acked} acknowledged, {failed} failed (acks={acks})",
        args.topic
    );
    // Every failure is counted with its error; the first one sets the exit status (3 or
    // 4 when the cluster refused, as for every command).
    match first_error {
        Some(err) => {
            eprintln!("error: {err}");
            Ok(ExitCode::from(exit_status(err.code())))
        }
        None => Ok(ExitCode::SUCCESS),
    }
}

/// `--header NAME=VALUE` of `neo produce` (the name is not empty).
fn parse_header(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => Err(format!("expected NAME=VALUE, got {s:?}")),
    }
}

/// One consumed message as `neo consume --format json` prints it.
#[derive(Debug, Serialize)]
struct JsonMessage<'a> {
    partition: u32,
    offset: u64,
    key: Option<std::borrow::Cow<'a, str>>,
    value: std::borrow::Cow<'a, str>,
}

/// The line `neo consume` prints for a record (without the newline). Keys and values
/// are printed as UTF-8 (invalid sequences replaced by U+FFFD).
fn format_record(record: &ConsumerRecord, format: Format) -> String {
    match format {
        Format::Text => String::from_utf8_lossy(&record.value).into_owned(),
        Format::Json => {
            let msg = JsonMessage {
                partition: record.partition,
                offset: record.offset,
                key: record.key.as_deref().map(String::from_utf8_lossy),
                value: String::from_utf8_lossy(&record.value),
            };
            serde_json::to_string(&msg).expect("strings and numbers always serialize")
        }
    }
}

fn format_status(status: &ClusterStatus, format: Format) -> anyhow::Result<String> {
    Ok(match format {
        Format::Json => serde_json::to_string(status)?,
        Format::Text => {
            let mut out = String::new();
            let controller = status
                .controller
                .map_or("unknown".to_string(), |c| c.to_string());
            out.push_str(&format!("controller {controller}\n"));
            for n in &status.nodes {
                let state = if n.alive { "alive" } else { "down" };
                out.push_str(&format!("node {} {} {state}\n", n.id, n.client_addr));
            }
            for p in &status.partitions {
                let leader = p.leader.map_or("none".to_string(), |l| l.to_string());
                out.push_str(&format!(
                    "partition {}/{} leader {leader} replicas {}\n",
                    p.topic,
                    p.partition,
                    ids(&p.replicas)
                ));
            }
            out.trim_end().to_string()
        }
    })
}

/// The stderr line of a record `neo consume` cannot show: encrypted without a key ring
/// to open it, or undecryptable with the one given; `None` for a record to print.
pub(crate) fn undecryptable_line(record: &ConsumerRecord) -> Option<String> {
    let header = record
        .headers
        .iter()
        .find(|(name, _)| name == neo_client::encryption::ENCRYPTION_HEADER)?;
    let key = match neo_client::encryption::EncryptionHeader::parse(&header.1) {
        Ok(h) => format!("key {:?}", h.key_id),
        Err(e) => format!("malformed header: {e}"),
    };
    Some(format!(
        "error: record {}/{}@{} is encrypted ({key}): pass --keyring with its key",
        record.topic, record.partition, record.offset
    ))
}

async fn consume(client: Client, args: ConsumeArgs) -> anyhow::Result<ExitCode> {
    let from = match (args.from_beginning, args.offset) {
        (_, Some(o)) => Offset::At(o),
        (true, None) => Offset::Beginning,
        (false, None) => Offset::End,
    };
    let encryption = keyring::load(args.keyring.as_deref(), None)?;
    let mut consumer = Consumer::with_config(
        client,
        ConsumerConfig {
            encryption,
            ..ConsumerConfig::default()
        },
    );
    match args.partition {
        Some(p) => consumer.assign(&args.topic, &[p], from).await?,
        None => consumer.assign_all(&args.topic, from).await?,
    }
    let max = args.max.unwrap_or(u64::MAX);
    if max == 0 {
        return Ok(ExitCode::SUCCESS);
    }
    let idle_limit = args.timeout_ms.map(Duration::from_millis);
    // One long poll waits at most this long, so that the idle limit is honoured.
    let poll_wait = idle_limit
        .unwrap_or(Duration::from_millis(500))
        .min(Duration::from_millis(500));
    let mut printed = 0u64;
    let mut undecryptable = 0u64;
    let done = |undecryptable: u64| {
        if undecryptable == 0 {
            ExitCode::SUCCESS
        } else {
            eprintln!("{undecryptable} records could not be decrypted");
            ExitCode::from(EXIT_UNDECRYPTABLE)
        }
    };
    let mut last_new = Instant::now();
    let stdout = std::io::stdout();
    loop {
        let wait = match idle_limit {
            Some(limit) => {
                let left = limit.saturating_sub(last_new.elapsed());
                if left.is_zero() {
                    break;
                }
                left.min(poll_wait)
            }
            None => poll_wait,
        };
        // Every record comes back, decrypted or not (a bad one does not stop the rest).
        let records = consumer.poll_each(wait).await?;
        if records.is_empty() {
            continue;
        }
        last_new = Instant::now();
        let mut out = stdout.lock();
        for record in &records {
            let line = match record {
                Ok(record) => match undecryptable_line(record) {
                    None => Ok(format_record(record, args.format)),
                    Some(error) => Err(error),
                },
                Err(bad) => Err(format!("error: {bad}")),
            };
            match line {
                Ok(line) => writeln!(out, "{line}")?,
                Err(error) => {
                    out.flush()?;
                    eprintln!("{error}");
                    undecryptable += 1;
                }
            }
            printed += 1;
            if printed >= max {
                out.flush()?;
                return Ok(done(undecryptable));
            }
        }
        out.flush()?;
    }
    Ok(done(undecryptable))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{BENCH_BATCHES_INFLIGHT, percentile, report};
    use bytes::Bytes;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("neo").chain(args.iter().copied()))
    }

    #[test]
    fn server_default_and_list() {
        // SAFETY-free: the test only reads the default when NEO_SERVER is unset.
        if std::env::var_os("NEO_SERVER").is_none() {
            let cli = parse(&["topic", "list"]).unwrap();
            assert_eq!(cli.server, vec!["127.0.0.1:7070"]);
        }
        let cli = parse(&["--server", "a:1,b:2", "topic", "list"]).unwrap();
        assert_eq!(cli.server, vec!["a:1", "b:2"]);
        // Global: also accepted after the subcommand.
        let cli = parse(&["topic", "list", "--server", "c:3"]).unwrap();
        assert_eq!(cli.server, vec!["c:3"]);
    }

    #[test]
    fn produce_flags() {
        let cli = parse(&[
            "produce",
            "t",
            "--key",
            "k",
            "--acks",
            "leader",
            "--partition",
            "2",
        ])
        .unwrap();
        match cli.command {
            Command::Produce(a) => {
                assert_eq!(a.key.as_deref(), Some("k"));
                assert_eq!(a.acks, AcksArg::Leader);
                assert_eq!(a.partition, Some(2));
            }
            other => panic!("{other:?}"),
        }
        match parse(&["produce", "t"]).unwrap().command {
            Command::Produce(a) => assert_eq!(a.acks, AcksArg::All),
            other => panic!("{other:?}"),
        }
        assert!(parse(&["produce", "t", "--acks", "some"]).is_err());
    }

    #[test]
    fn consume_flags() {
        let cli = parse(&[
            "consume",
            "t",
            "--from-beginning",
            "--max",
            "5",
            "--timeout-ms",
            "100",
            "--format",
            "json",
        ])
        .unwrap();
        match cli.command {
            Command::Consume(a) => {
                assert!(a.from_beginning);
                assert_eq!(
                    (a.max, a.timeout_ms, a.format),
                    (Some(5), Some(100), Format::Json)
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(
            parse(&["consume", "t", "--from-beginning", "--offset", "3"]).is_err(),
            "--from-beginning and --offset exclude each other"
        );
    }

    #[test]
    fn bench_and_cluster_flags() {
        let cli = parse(&[
            "bench",
            "produce",
            "--topic",
            "t",
            "--msgs",
            "10",
            "--size",
            "100",
            "--inflight",
            "8",
        ])
        .unwrap();
        match cli.command {
            Command::Bench(BenchCommand::Produce {
                msgs,
                size,
                inflight,
                acks,
                ..
            }) => assert_eq!((msgs, size, inflight, acks), (10, 100, 8, AcksArg::All)),
            other => panic!("{other:?}"),
        }
        assert!(parse(&["bench", "produce", "--topic", "t"]).is_err());
        let base = [
            "bench", "produce", "--topic", "t", "--msgs", "1", "--size", "1",
        ];
        match parse(&base).unwrap().command {
            Command::Bench(BenchCommand::Produce {
                batches_inflight,
                linger_us,
                batch_bytes,
                rpc_compression,
                ..
            }) => assert_eq!(
                (batches_inflight, linger_us, batch_bytes, rpc_compression),
                (BENCH_BATCHES_INFLIGHT, 0, 256 * 1024, false)
            ),
            other => panic!("{other:?}"),
        }
        let with = |extra: &[&str]| parse(&[&base[..], extra].concat());
        match with(&[
            "--batches-inflight",
            "3",
            "--linger-us",
            "500",
            "--batch-bytes",
            "65536",
            "--rpc-compression",
        ])
        .unwrap()
        .command
        {
            Command::Bench(BenchCommand::Produce {
                batches_inflight,
                linger_us,
                batch_bytes,
                rpc_compression,
                ..
            }) => assert_eq!(
                (batches_inflight, linger_us, batch_bytes, rpc_compression),
                (3, 500, 65536, true)
            ),
            other => panic!("{other:?}"),
        }
        // Out of range: a usage error, not a panic or a silent clamp.
        assert!(with(&["--batches-inflight", "0"]).is_err());
        assert!(with(&["--batch-bytes", "0"]).is_err());
        assert!(with(&["--batch-bytes", "2000000"]).is_err());
        assert!(with(&["--linger-us", "-1"]).is_err());
        assert!(parse(&["bench", "consume", "--topic", "t"]).is_ok());
        match parse(&["cluster", "status", "--format", "json"])
            .unwrap()
            .command
        {
            Command::Cluster(ClusterCommand::Status { format }) => assert_eq!(format, Format::Json),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn produce_headers_are_name_equals_value() {
        assert_eq!(parse_header("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(parse_header("a="), Ok(("a".into(), String::new())));
        assert!(parse_header("=b").is_err());
        assert!(parse_header("ab").is_err());
        match parse(&["produce", "t", "--header", "x=1", "--header", "y=<b>"])
            .unwrap()
            .command
        {
            Command::Produce(args) => assert_eq!(
                args.headers,
                vec![("x".into(), "1".into()), ("y".into(), "<b>".into())]
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn consume_json_line_is_the_contract() {
        let mut record = ConsumerRecord {
            topic: "t".into(),
            partition: 2,
            offset: 41,
            timestamp_ms: 0,
            key: Some(Bytes::from_static(b"k\"1")),
            value: Bytes::from_static(b"hello"),
            headers: Vec::new(),
        };
        assert_eq!(
            format_record(&record, Format::Json),
            r#"{"partition":2,"offset":41,"key":"k\"1","value":"hello"}"#
        );
        assert_eq!(format_record(&record, Format::Text), "hello");
        record.key = None;
        assert_eq!(
            format_record(&record, Format::Json),
            r#"{"partition":2,"offset":41,"key":null,"value":"hello"}"#
        );
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let samples: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&samples, 0.5), 500);
        assert_eq!(percentile(&samples, 0.99), 990);
        assert_eq!(percentile(&samples, 0.999), 999);
        assert_eq!(percentile(&[], 0.5), 0);
        assert_eq!(percentile(&[7], 0.999), 7);
        let r = report(10, 1000, Duration::from_secs(2), vec![3, 1, 2]);
        assert_eq!((r.msgs_per_s, r.mb_per_s, r.p50_us), (5.0, 0.0005, 2));
        let line = serde_json::to_string(&r).unwrap();
        for field in ["msgs_per_s", "mb_per_s", "p50_us", "p99_us", "p999_us"] {
            assert!(line.contains(&format!("\"{field}\":")), "{line}");
        }
    }
}
