//! A short `kill-leader` run against three real local `neo-node` processes (no docker,
//! no iptables): the whole pipeline (cluster, workload, group, queue, faults, heal,
//! digests, drain, checker, report) must run and find nothing wrong. Correctness only:
//! no timing is asserted.

use std::path::PathBuf;
use std::time::Duration;

use neo_chaos::cluster::LocalOptions;
use neo_chaos::security::ClientSecurity;
use neo_chaos::workload::WorkloadConfig;
use neo_chaos::{Mode, RunConfig, Scenario, Status, run_scenario};

/// `neo-node`, built by cargo into the folder of this test's executable's parent.
fn node_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("test folder").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join("neo-node");
    assert!(
        bin.exists(),
        "{} does not exist: build it first (`cargo build -p neo-node` or `cargo test --workspace`)",
        bin.display()
    );
    bin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_leader_for_15s_loses_nothing() {
    let reports = tempfile::tempdir().expect("tempdir");
    let seed = std::env::var("NEO_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let config = RunConfig {
        mode: Mode::Local(LocalOptions {
            node_bin: node_bin(),
            nodes: 3,
            separate_uids: false,
            work_dir: None,
            node_log: "warn".into(),
            keep: false,
        }),
        duration: Duration::from_secs(15),
        warmup: Duration::from_secs(2),
        cooldown: Duration::from_secs(3),
        seed,
        replication: 3,
        workload: WorkloadConfig {
            rate: 200.0,
            ..WorkloadConfig::default()
        },
        security: ClientSecurity::off(),
        report_dir: Some(reports.path().to_path_buf()),
        write_history: false,
    };
    let report = run_scenario(&config, Scenario::KillLeader).await;
    let summary = neo_chaos::report::summary(&report);
    eprintln!("{summary}");
    let logs = report
        .logs_dir
        .as_ref()
        .map(|d| {
            (1..=3)
                .map(|i| {
                    let text =
                        std::fs::read_to_string(format!("{d}/node-{i}.log")).unwrap_or_default();
                    let lines: Vec<&str> = text.lines().collect();
                    format!(
                        "--- node {i} ---\n{}",
                        lines[lines.len().saturating_sub(40)..].join("\n")
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default();
    assert_eq!(report.status, Status::Pass, "{summary}\n{logs}");
    let check = report.check.as_ref().expect("checked");
    assert!(report.fault_cycles >= 1, "no fault was injected: {summary}");
    assert!(check.acknowledged > 0, "nothing acknowledged: {summary}");
    assert_eq!(
        (check.lost, check.unexpected, check.order_violations),
        (0, 0, 0)
    );
    assert!(check.drain_complete && check.digests_identical, "{summary}");
    // The queue ran beside it: poison dead-lettered, nothing lost or acked twice.
    let queue = check.queue.as_ref().expect("the queue workload ran");
    assert!(
        queue.sent_acknowledged > 0 && queue.poison_dead_lettered > 0,
        "{summary}"
    );
    assert_eq!((queue.lost, queue.acked_then_redelivered), (0, 0));
    // The JSON report is where CI reads it.
    let json = std::fs::read_to_string(reports.path().join("kill-leader.json")).expect("report");
    let parsed: serde_json::Value = serde_json::from_str(&json).expect("report is JSON");
    assert_eq!(parsed["status"], "pass");
    assert_eq!(parsed["check"]["lost"], 0);
}
