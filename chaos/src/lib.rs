//! `neo-chaos`: a fault runner against a docker compose cluster or local processes, a
//! workload that records every operation, and a history checker. The binary
//! `neo-chaos` runs one scenario or all of them and exits non-zero on any violation;
//! `docs/CHAOS.md` is the operator's page (commands, the last run's table).
//!
//! # Layout
//!
//! | module | role |
//! |---|---|
//! | [`history`] | the recorded run: produces (invoke → ok / fail / unknown, µs timestamps), live reads, faults, drain, replica digests; [`Recorder`](history::Recorder) shared by every task |
//! | [`workload`] | producers (unique payloads `{run}:{producer}:{seq}`, one partition each) and one live consumer per partition; the final drain |
//! | [`group_workload`] | `--group-consumers` members of one consumer group polling and committing under the faults, a committed-offset sampler, the catch-up after the drain and the auditor's final read |
//! | [`queue_workload`] | a queue (`chaos-queue`, 3 s leases, 5 deliveries, DLQ `chaos-queue.dlq`): producers (poison and crash markers) and `--queue-workers` workers receiving, acking, nacking poison under the faults; the drain and the DLQ read after the other checks |
//! | [`cluster`] | [`Cluster`](cluster::Cluster): kill, stop, start, pause, resume, cut / degrade links, heal, ready, logs — over local processes ([`cluster::local`]: signals, per-node uids + iptables connmark rules) or docker compose ([`cluster::docker`]: docker CLI + iptables via `nsenter`) |
//! | [`faults`] | [`Scenario`](faults::Scenario)s and their inject → hold → heal → settle cycles, seeded |
//! | [`admin_http`] | the node's HTTP admin API: `/ready`, `/v1/cluster` (leaders, replicas), digests; the bearer token when security is on |
//! | [`security`] | [`ClientSecurity`](security::ClientSecurity): `--token`, `--tls-ca`, `--tls-server-name` → every client's handshake token and TLS, the HTTP bearer |
//! | [`checker`] | pure: history → [`CheckReport`](checker::CheckReport) (lost, unexpected, duplicates, order, live reads, drain, digests, failover) |
//! | [`groups_check`] | pure: the group rules → [`GroupCheck`](groups_check::GroupCheck) (consumed at least once, nothing foreign, committed offsets never backwards, members rejoin; duplicates, commit errors, rebalances) |
//! | [`queue_check`] | pure: the queue rules → [`QueueCheck`](queue_check::QueueCheck) (every acknowledged message acked or dead-lettered, nothing delivered after an `Ok` ack, dead letters only after `max_deliveries`, DLQ headers; redeliveries, ack outcomes) |
//! | [`runner`] | one scenario end to end → [`ScenarioReport`](runner::ScenarioReport) (JSON); its `Session` (topic, queue, every workload through the warm-up; then heal, cool-down, stop, digests, drain, group and queue end) is shared with the soak |
//! | [`soak`] | `neo-chaos soak`: the same workload for a long time, one seeded fault cycle every `--fault-every`, each node's RSS, threads, open fds and connections sampled (`/proc/<pid>`, `/metrics`) into `soak-samples.csv`; the RSS-growth rule over process lifetimes → [`SoakReport`](soak::SoakReport) |
//! | [`report`] | human summary and the markdown table |
//! | `main` | the CLI (`--mode`, `--scenario`, `--duration`, `--seed`, `--report-dir`, `--token`, `--tls-ca`, ...; the `soak` subcommand) |
//!
//! # A run
//!
//! ```text
//! fresh cluster (temp dirs | compose down -v; up -d) ─▶ wait /ready on every node
//!   ─▶ create topic (partitions, rf 3), the queue alongside ─▶ workload: producers
//!      + live consumers + group members (poll, commit) + committed-offset sampler
//!   ─▶ warm-up; meanwhile the queue exists: queue producers + workers (receive,
//!      ack, nack poison) + DLQ reader
//!   ─▶ fault cycles until --duration (inject, hold, heal, settle)
//!   ─▶ heal everything, wait /ready ─▶ cool-down (writes continue)
//!   ─▶ stop producers (topic and queue), wait until every send resolved (or its retry
//!      deadline passed)
//!   ─▶ digests of every replica until they agree on (start, high watermark)
//!   ─▶ drain every partition to that high watermark
//!   ─▶ group: consume until every acknowledged record was (≤ 60 s), members commit
//!      and close, the auditor reads the final committed offsets
//!   ─▶ queue: workers go on and the DLQ is read until every acknowledged message is
//!      acked or dead-lettered (≤ 18 s), workers stop, the rest of the DLQ, describe
//!   ─▶ check ─▶ report ─▶ teardown
//! ```
//!
//! # Invariants
//!
//! - The checker alone decides pass / fail, from the history alone (`--check-history`
//!   re-checks a saved history); its unit tests use hand-made histories.
//! - A produce is `Ok` only with an acknowledged offset, `Fail` only when nothing was
//!   sent (`Producer::send` refused it); everything else after a send is `Unknown` and
//!   may legitimately be stored or not.
//! - A run fails on: lost > 0, offset mismatches, unexpected > 0, order violations,
//!   live reads missing from the final log, an incomplete drain, replica digests that
//!   differ or are missing; and for the group: an acknowledged record it never
//!   consumed, a consumed record never produced, a committed offset going backwards, a
//!   phantom committed offset, a fenced member that never rejoined; and for the
//!   queue: an acknowledged message neither acked nor dead-lettered, a delivery after
//!   an `Ok` ack, a dead letter before `max_deliveries`, a delivery beyond it, a
//!   delivery count going back, DLQ headers that do not match, a foreign value.
//!   Duplicates (stored or consumed), commit errors, redeliveries, ack errors and
//!   failover times are reported, never failed on.
//! - Every random choice comes from the printed seed; no timing is ever asserted.
//! - With `--token` / `--tls-ca` ([`security`]), every client connection carries them and
//!   every HTTP admin request but `/ready` the token; no report holds the token.
//! - Every fault is undone before the checks (links healed, nodes resumed / started),
//!   and every cluster is torn down (processes, containers, volumes, iptables chains).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod admin_http;
pub mod checker;
pub mod cluster;
pub mod faults;
pub mod group_workload;
pub mod groups_check;
pub mod history;
pub mod queue_check;
pub mod queue_workload;
pub mod report;
pub mod runner;
pub mod security;
pub mod soak;
pub mod workload;

pub use checker::{CheckReport, check};
pub use faults::Scenario;
pub use runner::{Mode, RunConfig, ScenarioReport, Status, run_scenario};
pub use soak::{SoakConfig, SoakReport, run_soak};
