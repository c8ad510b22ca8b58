//! `neo-client`: the Rust client library for Neo, and the `neo` CLI.
//!
//! ```no_run
//! use neo_client::{Admin, Client, Consumer, Offset, Producer, ProducerRecord};
//! # async fn demo() -> neo_client::Result<()> {
//! let client = Client::connect(&["127.0.0.1:7070"]).await?;
//! Admin::new(client.clone()).create_topic("orders", 3, 3).await?;
//! let producer = Producer::new(client.clone());
//! let delivery = producer.send(ProducerRecord::new("orders", "hello").key("user-1")).await?;
//! let meta = delivery.await?; // partition + offset, after commit on a quorum
//! let mut consumer = Consumer::new(client);
//! consumer.assign("orders", &[meta.partition], Offset::Beginning).await?;
//! for record in consumer.poll(std::time::Duration::from_secs(1)).await? {
//!     println!("{}@{}: {:?}", record.partition, record.offset, record.value);
//! }
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! | module | role |
//! |---|---|
//! | [`client`] | [`Client`]: seeds, one lazily opened connection per broker, the metadata cache, retry loops (leader calls, any-broker calls); `reauthenticate` renews every open connection's token in place |
//! | [`metadata`] | [`MetadataCache`]: brokers, controller, partition leaders; `NotLeader` hints; staleness. Pure data, no I/O |
//! | [`retry`] | [`RetryPolicy`]: exponential backoff with equal jitter, attempt limit, overall deadline |
//! | [`partitioner`] | explicit / murmur2 of the key (Kafka-compatible, stable) / round robin |
//! | [`producer`] | [`Producer`]: per-partition batching by size and linger, zstd, acks, in-flight bound, [`Delivery`] futures |
//! | [`consumer`] | [`Consumer`]: assign, seek, long-poll `poll`, control batches skipped |
//! | [`group`] | consumer groups: [`GroupConsumer`] (join, heartbeat task, revoke/assign reconciliation, commits, [`RebalanceListener`]) and [`GroupAdmin`] (list, describe with lag, reset offsets, delete) |
//! | [`queue`] | work queues: [`QueueAdmin`] (create with [`QueueOptions`], delete, list, describe merged across leaders, purge), [`QueueProducer`] (`acks=all`, `deliver_after_ms`), [`QueueConsumer`] (background receive per partition into a bounded prefetch buffer, ack / nack / extend / term grouped by partition, automatic lease extension, `run` with bounded concurrency), [`redrive`](queue::redrive) of dead letters |
//! | [`admin`] | [`Admin`]: create / delete / list / describe topics, [`ClusterStatus`] |
//! | [`encryption`] | client-side end-to-end payload encryption: [`SharedKeyring`] on a producer encrypts each value (AES-256-GCM / ChaCha20-Poly1305, key id and nonce in the `neo-enc` header, key id + origin topic bound as associated data); on a consumer decrypts, a typed error per undecryptable record |
//! | [`security_admin`] | [`SecurityAdmin`]: users, roles, grants, role assignments, ACLs, API keys, quotas (`alter_security` / `describe_security`, any broker) |
//! | [`tls`] | TLS settings from PEM files (`--tls-ca`, `--tls-cert`/`--tls-key`, the server name), shared by the CLI and neo-chaos |
//! | [`error`] | the one [`Error`] enum, retriable vs fatal |
//! | `bin/neo` | the CLI (`topic`, `produce`, `consume [--group]`, `group`, `queue`, `cluster status`, `role`, `user`, `quota`, `bench`; `--token` / `--api-key` / `--tls-*`); contract in `docs/cli.md` |
//!
//! # A produce
//!
//! ```text
//! Producer::send ─▶ partition (explicit | murmur2(key) % n | round robin)
//!   ─▶ append to the partition's open Qiss batch (BatchBuilder)
//!   ─▶ batch full, or linger passed, or flush, and an in-flight slot free
//!   ─▶ job: build (+zstd) ─▶ Client::call_partition("produce") to the cached leader
//!        ├─ NotLeader{hint}: cache.leader = hint, backoff, retry
//!        ├─ connection error / no leader: mark stale → refresh metadata, backoff, retry
//!        └─ ok: base_offset ─▶ each record's Delivery resolves (partition, base + i)
//! ```
//!
//! # A consume
//!
//! ```text
//! Consumer::poll(wait) ─▶ per assigned partition: fetch(offset, wait_ms_max = wait)
//!   to its leader (same retry loop) ─▶ first non-empty answer ─▶ split_batches
//!   ─▶ skip control batches, skip records below the position ─▶ position = next offset
//! ```
//!
//! # A group member
//!
//! ```text
//! GroupConsumer::subscribe ─▶ find_coordinator ─▶ join_group ─▶ heartbeat task
//!   (one long-poll heartbeat_group in flight; new assignments handed to poll)
//! GroupConsumer::poll ─▶ reconcile: revoked → on_revoked + commit (quorum) + report;
//!   assigned → fetch_offsets as member (fences old owners) → committed offset or
//!   auto_offset_reset ─▶ auto-commit of returned positions ─▶ Consumer's fetch
//! ```
//!
//! # A queue consumer
//!
//! ```text
//! QueueConsumer::receive ─▶ (first use: lease length = configured or the queue's)
//!   prefetch > 0: buffer ◀─ one task per partition: take free buffer places ─▶
//!     queue_receive(partition: Some(p), messages_max = places, wait) at p's leader
//!   prefetch = 0: each partition in turn, no wait, only what is still lacking
//! ack / nack / extend / term(receipts) ─▶ grouped by partition ─▶ one request per
//!   partition to its leader ─▶ one ReceiptOutcome per receipt, in order
//! run(handler, n) ─▶ ≤ n handlers; keep_alive extends each lease every third of it;
//!   Ok ─▶ ack, Err / panic ─▶ nack
//! ```
//!
//! # Invariants
//!
//! - Depends only on `neo-protocol`, `qiss` and `neo-security` (its pure key ring;
//!   and tokio & co): never on raft, cluster, storage, broker or node.
//! - Every retry loop is bounded by `RetryPolicy::attempts_max` and
//!   `RetryPolicy::deadline`; only errors with [`Error::is_retriable`] are retried. A
//!   `Throttled` answer waits the delay it carries and counts only against the
//!   deadline.
//! - The broker never sees plaintext of an encrypted record, nor any key.
//! - Every queue is bounded: records buffered in a producer (`buffer_records_max`,
//!   `send` waits beyond it), batches in flight per partition, bytes per fetch,
//!   cached connections (`connections_max`), messages a queue consumer received
//!   ahead (`prefetch`), handlers a `run` runs at once.
//! - A produced batch is never re-encoded after it was built: retries resend the same
//!   bytes (same producer stamp).
//! - A consumer position only moves past batches it returned or skipped (control), so
//!   a consumer sees each committed record once, in offset order.
//! - A group member commits only positions past records `poll` returned
//!   (at-least-once), gives a revoked partition up only after its commit was answered,
//!   and commits nothing once fenced.
//! - The key partitioner is a contract: `(murmur2(key) & 0x7fff_ffff) % partitions`,
//!   Kafka's murmur2; it never changes.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod admin;
pub mod client;
pub mod consumer;
pub mod encryption;
pub mod error;
pub mod group;
pub mod metadata;
pub mod partitioner;
pub mod producer;
pub mod queue;
pub mod retry;
pub mod security_admin;
mod suspects;
pub mod tls;

pub use admin::{Admin, ClusterStatus, NodeStatus, PartitionStatus};
pub use client::{Client, ClientConfig};
pub use consumer::{Consumer, ConsumerConfig, ConsumerRecord, Offset};
pub use encryption::{
    AeadAlgorithm, EncryptionError, Keyring, RecordResult, SharedKeyring, UndecryptableRecord,
};
pub use error::{Error, Result};
pub use group::{
    AutoOffsetReset, GroupAdmin, GroupConsumer, GroupConsumerConfig, GroupReport, MemberReport,
    OffsetReport, PartitionLag, RebalanceListener, ResetTo, Revocation, TopicPartition,
};
pub use metadata::MetadataCache;
pub use neo_protocol::api::{Acks, Isolation};
pub use neo_protocol::api::{
    AclDescription, ApiKeyDescription, GrantDescription, QuotaDescription, QuotaLimits, QuotaScope,
    RoleDescription, SecurityChange, SecurityDescription, UserDescription,
};
pub use neo_protocol::api::{DeadLetter, QueueSettings, Receipt, ReceiptOutcome};
pub use partitioner::{murmur2, partition_for_key};
pub use producer::{Delivery, Producer, ProducerConfig, ProducerRecord, RecordMetadata};
pub use qiss::batch::Compression;
pub use queue::{
    LeaseGuard, QueueAdmin, QueueConsumer, QueueConsumerConfig, QueueDelivery, QueueOptions,
    QueueProducer, QueueReport, RedriveOptions, RedriveReport, RunReport, SendOptions, SettleOp,
};
pub use retry::RetryPolicy;
pub use security_admin::{CreatedApiKey, SecurityAdmin};
