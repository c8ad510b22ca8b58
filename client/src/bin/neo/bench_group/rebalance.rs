//! `neo bench rebalance`: how long a clean leave, a killed member and a join take to
//! give every partition one owner again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use neo_client::{Client, GroupAdmin};
use neo_protocol::NeoClient;
use neo_protocol::api::{
    BROKER_SERVICE, GroupHeartbeatRequest, GroupHeartbeatResponse, JoinGroupRequest,
    JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse,
};
use serde::Serialize;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::*;

/// p50, p99 and max of a series of times, in ms.
#[derive(Debug, Serialize, PartialEq)]
pub(crate) struct Times {
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
}

impl Times {
    fn of(mut samples_us: Vec<u64>) -> Times {
        samples_us.sort_unstable();
        Times {
            p50_ms: ms(percentile(&samples_us, 0.50)),
            p99_ms: ms(percentile(&samples_us, 0.99)),
            max_ms: ms(samples_us.last().copied().unwrap_or(0)),
        }
    }

    fn minus(&self, ms: f64) -> Times {
        Times {
            p50_ms: self.p50_ms - ms,
            p99_ms: self.p99_ms - ms,
            max_ms: self.max_ms - ms,
        }
    }
}

/// The line `neo bench rebalance` prints: `leave` and `close` with a clean leave,
/// `kill` and `kill_minus_session` with `--kill`.
#[derive(Debug, Serialize, PartialEq)]
pub(crate) struct RebalanceReport {
    pub(crate) rounds: u32,
    pub(crate) members: u32,
    pub(crate) partitions: u32,
    pub(crate) session_timeout_ms: u64,
    /// The wait between a stable group and the next leave, kill or join.
    pub(crate) pause_ms: u64,
    /// From the start of the member's `close` to every partition owned again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) leave: Option<Times>,
    /// How long the leaving member's `close` took (its revocation commit and leave).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) close: Option<Times>,
    /// From the kill to every partition owned again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) kill: Option<Times>,
    /// `kill` minus the session timeout (negative: the coordinator's session clock
    /// started at the member's last heartbeat, before the kill).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) kill_minus_session: Option<Times>,
    /// From a fresh member's `subscribe` to the stable group.
    pub(crate) join: Times,
    /// Baseline: a no-news heartbeat (`wait_ms` 0) at the coordinator, round trip.
    pub(crate) heartbeat_rtt: Times,
    pub(crate) heartbeat_rtt_samples: usize,
    /// The p50 leave in heartbeat round trips (`leave.p50_ms / heartbeat_rtt.p50_ms`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) leave_p50_in_round_trips: Option<f64>,
    /// Errors the members met (the run is suspect if not 0).
    pub(crate) errors: u64,
    /// Times a member was fenced (lost its membership and joined again).
    pub(crate) fenced: u64,
}

/// A member of `bench rebalance`, polling in its own task until told to stop; then
/// it closes (leaves) and returns when its close started and how long it took.
struct Running {
    stop: Arc<Notify>,
    handle: JoinHandle<anyhow::Result<(Instant, Duration)>>,
}

/// What every member of `bench rebalance` shares.
struct Members {
    client: Client,
    group: String,
    topic: String,
    session_timeout_ms: u64,
    table: Arc<Table>,
    errors: Arc<Errors>,
}

impl Members {
    fn spawn(&self, slot: usize) -> Running {
        self.table.lock().live.insert(slot);
        let config = member_config("rebalance", slot, self.session_timeout_ms);
        let (client, group, topic) = (self.client.clone(), self.group.clone(), self.topic.clone());
        let (table, errors) = (self.table.clone(), self.errors.clone());
        let stop = Arc::new(Notify::new());
        let stopped = stop.clone();
        let handle = tokio::spawn(async move {
            let mut member = subscribe(client, &group, &topic, config, slot, &table).await?;
            loop {
                tokio::select! {
                    biased;
                    () = stopped.notified() => break,
                    result = member.poll(POLL_WAIT) => errors.after_poll(result).await,
                }
            }
            let t0 = Instant::now();
            if let Err(err) = member.close().await {
                errors.note(ERROR, &format!("member {slot} closing"), &err);
            }
            Ok((t0, t0.elapsed()))
        });
        Running { stop, handle }
    }
}

/// A member of a group of its own on the same coordinator, for the heartbeat round
/// trip: joined once, then heartbeats with nothing new (it reports exactly its
/// assignment, at its epoch) and `wait_ms` 0, which the coordinator answers at once.
struct Probe {
    conn: NeoClient,
    heartbeat: GroupHeartbeatRequest,
}

impl Probe {
    async fn join(client: &Client, group: String, topic: &str) -> anyhow::Result<Probe> {
        let admin = GroupAdmin::new(client.clone());
        let (_, address) = admin.find_coordinator(&group).await?;
        let conn = NeoClient::connect(address, client.config().rpc.clone()).await?;
        let join = JoinGroupRequest {
            group: group.clone(),
            instance_id: None,
            client_id: "neo-bench-probe".into(),
            topics: vec![topic.to_string()],
            session_timeout_ms: 300_000,
        };
        let resp: JoinGroupResponse = conn.call(BROKER_SERVICE, "join_group", &join).await?;
        let heartbeat = GroupHeartbeatRequest {
            group,
            member_id: resp.member_id,
            member_epoch: resp.member_epoch,
            owned: resp.assignment,
            topics: None,
            wait_ms: 0,
        };
        Ok(Probe { conn, heartbeat })
    }

    async fn heartbeat(&mut self) -> anyhow::Result<Duration> {
        let t0 = Instant::now();
        let resp: GroupHeartbeatResponse = (self.conn)
            .call(BROKER_SERVICE, "heartbeat_group", &self.heartbeat)
            .await?;
        let rtt = t0.elapsed();
        self.heartbeat.member_epoch = resp.member_epoch;
        self.heartbeat.owned = resp.assignment;
        Ok(rtt)
    }

    async fn leave(self, admin: &GroupAdmin) -> anyhow::Result<()> {
        let h = self.heartbeat;
        let request = LeaveGroupRequest {
            group: h.group.clone(),
            member_id: h.member_id,
            member_epoch: h.member_epoch,
        };
        let _: LeaveGroupResponse = (self.conn)
            .call(BROKER_SERVICE, "leave_group", &request)
            .await?;
        admin.delete_group(&h.group).await?;
        Ok(())
    }
}

fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

pub(crate) async fn rebalance(client: Client, args: RebalanceArgs) -> anyhow::Result<()> {
    let partitions = client.partition_count(&args.topic).await?;
    let group =
        (args.group.clone()).unwrap_or_else(|| format!("neo-bench-rebalance-{}", unix_ms()));
    let admin = GroupAdmin::new(client.clone());
    let table = Table::new(partitions);
    let errors = Arc::new(Errors::default());
    let session = Duration::from_millis(args.session_timeout_ms);
    let pause_ms = (args.pause_ms).unwrap_or_else(|| default_pause_ms(args.session_timeout_ms));
    let pause = Duration::from_millis(pause_ms);
    let members = Members {
        client: client.clone(),
        group: group.clone(),
        topic: args.topic.clone(),
        session_timeout_ms: args.session_timeout_ms,
        table: table.clone(),
        errors: errors.clone(),
    };
    let mut running: BTreeMap<usize, Running> = BTreeMap::new();
    for slot in 0..args.members as usize {
        running.insert(slot, members.spawn(slot));
    }
    let mut next_slot = args.members as usize;
    wait_stable(&admin, &group, &table, SETTLE_MAX)
        .await
        .inspect_err(|_| errors.warn(&table))?;
    let mut probe = Probe::join(&client, format!("{group}-rtt-probe"), &args.topic).await?;
    let (mut removals, mut closes, mut joins, mut rtts) = (vec![], vec![], vec![], vec![]);
    for _round in 0..args.rounds {
        tokio::time::sleep(pause).await;
        for _ in 0..PROBES_PER_ROUND {
            rtts.push(us(probe.heartbeat().await?));
        }
        // The member that goes: the oldest one that owns a partition.
        let victim = {
            let t = table.lock();
            running.keys().copied().find(|s| t.owned_by(*s) > 0)
        }
        .context("no member owns a partition")?;
        let member = running.remove(&victim).expect("a running member");
        let killed_at = Instant::now();
        if args.kill {
            member.handle.abort();
            table.lock().kill(victim);
        } else {
            table.lock().live.remove(&victim);
            member.stop.notify_one();
        }
        // Until every partition has an owner again (and the one that went has none).
        let deadline = Instant::now() + session + REBALANCE_MAX;
        let covered = loop {
            {
                let t = table.lock();
                if let (0, Some(at)) = (t.owned_by(victim), t.complete_since) {
                    break at;
                }
            }
            if Instant::now() > deadline {
                bail!("partitions without an owner: {}", table.lock().summary());
            }
            tokio::time::sleep(LOOK_EVERY).await;
        };
        if args.kill {
            removals.push(us(covered - killed_at));
        } else {
            // From the start of its close (the task's own clock reading).
            let (closing_at, closed) = member.handle.await.context("leaving member")??;
            removals.push(us(covered.saturating_duration_since(closing_at)));
            closes.push(us(closed));
        }
        wait_stable(&admin, &group, &table, session + REBALANCE_MAX)
            .await
            .inspect_err(|_| errors.warn(&table))?;
        tokio::time::sleep(pause).await;
        // A fresh member brings the group back to its size.
        let joined_at = Instant::now();
        running.insert(next_slot, members.spawn(next_slot));
        next_slot += 1;
        let stable = wait_stable(&admin, &group, &table, REBALANCE_MAX)
            .await
            .inspect_err(|_| errors.warn(&table))?;
        joins.push(us(stable - joined_at));
    }
    probe.leave(&admin).await?;
    for member in running.values() {
        member.stop.notify_one();
    }
    for (_, member) in running {
        member.handle.await??;
    }
    let removed = Times::of(removals);
    let removed_p50 = removed.p50_ms;
    let heartbeat_rtt_samples = rtts.len();
    let heartbeat_rtt = Times::of(rtts);
    let session_ms = args.session_timeout_ms as f64;
    let (leave, close, kill, kill_minus_session) = if args.kill {
        let minus = removed.minus(session_ms);
        (None, None, Some(removed), Some(minus))
    } else {
        (Some(removed), Some(Times::of(closes)), None, None)
    };
    let line = RebalanceReport {
        rounds: args.rounds,
        members: args.members,
        partitions,
        session_timeout_ms: args.session_timeout_ms,
        pause_ms,
        leave,
        close,
        kill,
        kill_minus_session,
        join: Times::of(joins),
        leave_p50_in_round_trips: (!args.kill)
            .then(|| removed_p50 / heartbeat_rtt.p50_ms.max(1e-9)),
        heartbeat_rtt,
        heartbeat_rtt_samples,
        errors: errors.count(ERROR),
        fenced: errors.count(FENCED),
    };
    errors.warn(&table);
    println!("{}", serde_json::to_string(&line)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_follows_cover_and_balance() {
        let t = Table::new(3);
        let mut t = t.lock();
        t.live.extend([0, 1]);
        t.assign(0, [0, 1].into_iter());
        assert!(t.complete_since.is_none() && !t.balanced());
        t.assign(1, [2].into_iter());
        let since = t.complete_since.expect("every partition owned");
        assert!(t.balanced());
        // A revocation uncovers, the takeover covers again, later.
        t.release(0, [1].into_iter());
        assert!(t.complete_since.is_none());
        t.assign(1, [1].into_iter());
        assert!(t.complete_since.is_some_and(|at| at >= since));
        assert_eq!((t.owned_by(0), t.owned_by(1)), (1, 2));
        assert!(t.balanced());
        // A release of a partition another member owns changes nothing.
        t.release(0, [2].into_iter());
        assert_eq!(t.owned_by(1), 2);
        // A killed member's partitions have no owner; a member not live gets nothing.
        t.kill(1);
        t.assign(1, [1].into_iter());
        assert_eq!(t.owners.len(), 1);
        t.assign(0, [1, 2].into_iter());
        assert!(t.balanced(), "one live member owning all");
        t.live.insert(2);
        assert!(!t.balanced(), "3 to 0");
        assert_eq!(t.double_owned, 0);
        t.assign(2, [2].into_iter());
        assert_eq!(t.double_owned, 1);
        assert!(!t.balanced(), "partition 2 has two owners");
        // The first owner giving it up leaves the second one owning it.
        t.release(0, [2].into_iter());
        assert_eq!((t.owned_by(0), t.owned_by(2)), (2, 1));
        assert!(t.balanced());
    }

    #[test]
    fn rebalance_line_names_the_removal() {
        let t = |p50_ms: f64, max_ms: f64| Times {
            p50_ms,
            p99_ms: max_ms,
            max_ms,
        };
        let line = RebalanceReport {
            rounds: 1,
            members: 2,
            partitions: 2,
            session_timeout_ms: 3000,
            pause_ms: 1500,
            leave: None,
            close: None,
            kill: Some(t(3100.0, 3100.0)),
            kill_minus_session: Some(t(3100.0, 3100.0).minus(3000.0)),
            join: t(1.0, 1.0),
            heartbeat_rtt: t(0.5, 0.5),
            heartbeat_rtt_samples: 10,
            leave_p50_in_round_trips: None,
            errors: 0,
            fenced: 0,
        };
        let json = serde_json::to_string(&line).unwrap();
        let minus = r#""kill_minus_session":{"p50_ms":100.0,"p99_ms":100.0,"max_ms":100.0}"#;
        assert!(json.contains(minus), "{json}");
        assert!(!json.contains("leave") && !json.contains("close"), "{json}");
        assert_eq!(Times::of(vec![3000, 1000, 2000]), t(2.0, 3.0));
        assert_eq!(Times::of(Vec::new()), t(0.0, 0.0));
    }
}
