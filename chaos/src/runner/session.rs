//! [`Session`]: the workload's life around a fault phase, shared by a scenario
//! ([`super::run_scenario`]) and a soak ([`crate::soak`]). [`Session::start`] creates
//! the topic and the queue and starts every workload (producers, live consumers, group
//! members, queue producers and workers) through the warm-up; the caller then runs its
//! faults; [`Session::finish`] heals, cools down, stops the workload, compares the
//! replicas, drains, lets the group catch up and the queue drain, and returns the
//! history for the checker.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use neo_client::{Admin, Client};
use tokio::task::JoinHandle;

use super::{CONVERGE_TIMEOUT, DRAIN_IDLE_MAX, GROUP_CATCH_UP_MAX, QUEUE_DRAIN_MAX, RunConfig};
use crate::admin_http;
use crate::cluster::Cluster;
use crate::faults::{self, FaultContext};
use crate::group_workload::GroupWorkload;
use crate::history::{Clock, History, Outcome, PartitionDigests, Recorder};
use crate::queue_workload::{self, QueueWorkload, QueueWorkloadConfig};
use crate::workload::{self, Workload, client_config};

/// A workload running against a cluster, from the topic's creation to the history.
#[derive(Debug)]
pub(crate) struct Session {
    /// The history every task records into.
    recorder: Recorder,
    /// Client addresses of the cluster (the drain connects again).
    seeds: Vec<String>,
    /// Producers and live consumers.
    workload: Workload,
    /// The consumer group's members and sampler (`None`: `group_consumers` 0).
    group: Option<GroupWorkload>,
    /// The queue's producers, workers and DLQ reader (`None`: off, or not created).
    queue: Option<QueueWorkload>,
    /// The progress line every 10 s.
    progress: JoinHandle<()>,
    /// The first thing that went wrong outside the checker's view (the queue's
    /// creation, a fault, healing): the run is then reported broken unless a rule
    /// failed.
    trouble: Option<String>,
}

impl Session {
    /// Create the topic (and the queue alongside), start every workload, and return
    /// once `config.warmup` has passed.
    pub(crate) async fn start(
        config: &RunConfig,
        cluster: &Cluster,
        run_id: &str,
    ) -> anyhow::Result<Session> {
        let w = &config.workload;
        let seeds = cluster.client_addrs();
        let security = &config.security;
        let admin = Client::connect_with(&seeds, client_config(w.retry, security))
            .await
            .context("connect")?;
        // The queue is created while the topic is (a queue, its DLQ and their leaders
        // take longer than a topic), and its workload starts once it exists, within the
        // warm-up as a rule. A queue that cannot be created makes the run an error; the
        // rest of it is still checked.
        let created = std::time::Instant::now();
        let queue_created = (w.queue_workers > 0).then(|| {
            let admin = admin.clone();
            let (partitions, replication) = (w.partitions, config.replication);
            tokio::spawn(async move {
                queue_workload::create_queue(&admin, partitions, replication).await
            })
        });
        let topic = Admin::new(admin.clone())
            .create_topic(&w.topic, w.partitions, config.replication)
            .await
            .context("create the topic");
        if let Err(e) = topic {
            if let Some(task) = &queue_created {
                task.abort();
            }
            return Err(e);
        }
        eprintln!("topic created in {:.2} s", created.elapsed().as_secs_f64());
        let clock = Clock::start();
        let recorder = Recorder::new(clock, run_id, w.partitions, config.replication);
        let workload = Workload::start(&seeds, security, &recorder, w).await?;
        let group = (w.group_consumers > 0).then(|| {
            let name = format!("chaos-{run_id}");
            GroupWorkload::start(
                &seeds,
                security,
                &recorder,
                &w.topic,
                &name,
                w.group_consumers,
            )
        });
        let progress = tokio::spawn(progress(recorder.clone()));
        let mut trouble = None;
        let queue_start = async {
            let task = queue_created?;
            let dlq = match task.await {
                Ok(Ok(dlq)) => dlq,
                Ok(Err(e)) => return Some(Err(format!("create the queue: {e:#}"))),
                Err(e) => return Some(Err(format!("create the queue: {e}"))),
            };
            eprintln!(
                "[{:7.2}s] queue created ({:.2} s after the topic's creation began)",
                clock.secs(),
                created.elapsed().as_secs_f64()
            );
            let config = QueueWorkloadConfig {
                partitions: w.partitions,
                dlq,
                workers: w.queue_workers,
                rate: w.queue_rate,
                produce_timeout: w.produce_timeout,
                retry: w.retry,
            };
            Some(Ok(QueueWorkload::start(
                &seeds, security, &recorder, &config,
            )))
        };
        let (queue, ()) = tokio::join!(queue_start, tokio::time::sleep(config.warmup));
        let queue = match queue {
            Some(Ok(q)) => Some(q),
            Some(Err(e)) => {
                eprintln!("{e}");
                trouble = Some(e);
                None
            }
            None => None,
        };
        Ok(Session {
            recorder,
            seeds,
            workload,
            group,
            queue,
            progress,
            trouble,
        })
    }

    /// The history being recorded.
    pub(crate) fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    /// What the fault cycles need, with `rng` for their choices; no cycle of
    /// [`faults::run`] starts after `until`.
    pub(crate) fn fault_context<'a>(
        &'a self,
        config: &'a RunConfig,
        rng: fastrand::Rng,
        until: tokio::time::Instant,
    ) -> FaultContext<'a> {
        FaultContext {
            recorder: &self.recorder,
            topic: &config.workload.topic,
            partitions: config.workload.partitions,
            http_token: config.security.bearer(),
            rng,
            until,
        }
    }

    /// Note what went wrong (the first cause is kept).
    pub(crate) fn trouble(&mut self, what: String) {
        self.trouble.get_or_insert(what);
    }

    /// Heal every fault, cool down (writes go on), stop the workload, wait for the
    /// replicas to agree, drain, let the group catch up and the queue drain. Returns
    /// the history and what went wrong outside the checker's view, if anything.
    pub(crate) async fn finish(
        mut self,
        config: &RunConfig,
        cluster: &mut Cluster,
    ) -> (History, Option<String>) {
        let w = &config.workload;
        let security = &config.security;
        let clock = self.recorder.clock();
        if let Err(e) = faults::heal_all(cluster).await {
            eprintln!("healing failed: {e:#}");
            self.trouble(format!("healing: {e:#}"));
        }
        self.recorder.healed();
        eprintln!(
            "[{:7.2}s] healed; cool-down {:?}",
            clock.secs(),
            config.cooldown
        );
        // The queue stops sending a lease length and a second before the cool-down
        // ends, so that its last messages (a crash's redelivery takes a lease length)
        // are done by the time the other checks are: its drain then has nothing left
        // to wait for.
        let lead = queue_workload::SEND_STOP_LEAD.min(config.cooldown);
        tokio::time::sleep(config.cooldown - lead).await;
        if let Some(queue) = &self.queue {
            queue.signal_stop_sending();
        }
        tokio::time::sleep(lead).await;
        let wait = w.retry.deadline + w.produce_timeout + Duration::from_secs(10);
        eprintln!(
            "[{:7.2}s] stopping the workload ({} records unresolved)",
            clock.secs(),
            self.recorder.pending()
        );
        let mut queue = self.queue.take();
        let stop_queue = async {
            if let Some(queue) = queue.as_mut() {
                queue.stop_sending(wait).await;
            }
        };
        tokio::join!(self.workload.stop(wait), stop_queue);
        self.progress.abort();
        eprintln!(
            "[{:7.2}s] workload stopped ({} unresolved); comparing replicas",
            clock.secs(),
            self.recorder.pending()
        );
        let digests = collect_digests(cluster, &w.topic, w.partitions, security.bearer()).await;
        let targets: BTreeMap<u32, u64> = digests
            .iter()
            .filter(|d| converged(d))
            .map(|d| (d.partition, d.digests[0].high_watermark))
            .collect();
        eprintln!("[{:7.2}s] draining up to {targets:?}", clock.secs());
        let drain = workload::drain(
            &self.seeds,
            security,
            &w.topic,
            w.partitions,
            &targets,
            w.retry,
            DRAIN_IDLE_MAX,
        )
        .await;
        self.recorder.finish(drain, digests);
        if let Some(group) = self.group {
            group
                .finish(&self.recorder, w.partitions, GROUP_CATCH_UP_MAX)
                .await;
        }
        if let Some(queue) = queue {
            queue.finish(&self.recorder, QUEUE_DRAIN_MAX).await;
        }
        (self.recorder.snapshot(), self.trouble)
    }
}

/// Every replica answered, at one (start, high watermark).
fn converged(d: &PartitionDigests) -> bool {
    !d.digests.is_empty()
        && d.digests.len() == d.replicas.len()
        && d.digests.iter().all(|x| {
            (x.start_offset, x.high_watermark)
                == (d.digests[0].start_offset, d.digests[0].high_watermark)
        })
}

/// Digests of every replica of every partition, retried until they converge (or
/// [`CONVERGE_TIMEOUT`]).
async fn collect_digests(
    cluster: &Cluster,
    topic: &str,
    partitions: u32,
    token: Option<&str>,
) -> Vec<PartitionDigests> {
    let http = cluster.http_addrs();
    let deadline = tokio::time::Instant::now() + CONVERGE_TIMEOUT;
    let mut replicas = BTreeMap::new();
    loop {
        if replicas.is_empty() {
            replicas = admin_http::replicas(&http, topic, token)
                .await
                .unwrap_or_default();
        }
        let mut all = Vec::new();
        for p in 0..partitions {
            let set = replicas.get(&p).cloned().unwrap_or_default();
            let mut pd = PartitionDigests {
                partition: p,
                replicas: set.clone(),
                ..PartitionDigests::default()
            };
            for node in set {
                let Some((_, addr)) = http.iter().find(|(id, _)| *id == node) else {
                    pd.errors
                        .push(format!("node {node} has no known HTTP address"));
                    continue;
                };
                match admin_http::digest(addr, topic, p, token).await {
                    Ok(d) => pd.digests.push(d),
                    Err(e) => pd.errors.push(format!("node {node}: {e:#}")),
                }
            }
            all.push(pd);
        }
        if all.iter().all(converged) || tokio::time::Instant::now() >= deadline {
            return all;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A progress line every 10 s.
async fn progress(recorder: Recorder) {
    loop {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let group = recorder
            .group(|g| format!(", group consumed {}", g.reads.len()))
            .unwrap_or_default();
        let queue = recorder
            .queue(|q| {
                let sent = q.sends.iter().filter(|s| s.outcome == Outcome::Ok).count();
                format!(
                    ", queue sent {sent}, delivered {}, worker errors {}",
                    q.deliveries.len(),
                    q.errors.len()
                )
            })
            .unwrap_or_default();
        eprintln!(
            "[{:7.2}s] acknowledged {}, unresolved {}{group}{queue}",
            recorder.clock().secs(),
            recorder.acknowledged(),
            recorder.pending()
        );
    }
}
