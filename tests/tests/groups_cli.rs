//! The CLI and HTTP views of consumer groups on 3 real `neo-node` processes:
//! `neo consume --group`, `neo group list/describe/reset-offsets/delete` (the contract in
//! docs/cli.md) and `/v1/groups`, `/v1/groups/{name}` (docs/node.md).

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use neo_client::{Admin, AutoOffsetReset, GroupConsumer, GroupConsumerConfig};
use neo_tests::cluster::http_get;
use neo_tests::{TestCluster, connect, neo, with_cluster};
use serde_json::Value;

/// Bound on every wait for an assignment.
const WAIT_MAX: Duration = Duration::from_secs(60);

fn config(session: Duration) -> GroupConsumerConfig {
    GroupConsumerConfig {
        client_id: "neo-e2e".into(),
        session_timeout: session,
        auto_offset_reset: AutoOffsetReset::Earliest,
        ..GroupConsumerConfig::default()
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs and requires exit status 0; returns stdout.
fn ok(cluster: &TestCluster, args: &[&str], stdin: &str) -> anyhow::Result<String> {
    let out = neo(cluster, args, stdin)?;
    ensure!(
        out.status.success(),
        "neo {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    Ok(text(&out.stdout))
}

/// `neo group describe G --format json`, with its documented shape checked.
fn describe_json(cluster: &TestCluster, group: &str) -> anyhow::Result<Value> {
    let raw = ok(
        cluster,
        &["group", "describe", group, "--format", "json"],
        "",
    )?;
    ensure!(raw.lines().count() == 1, "one line: {raw}");
    let v: Value = serde_json::from_str(raw.trim())?;
    let keys: Vec<&String> = v.as_object().context("object")?.keys().collect();
    ensure!(keys.len() == 6, "{raw}");
    let at = |f: &str| raw.find(&format!("\"{f}\":"));
    let order = [
        at("group"),
        at("state"),
        at("group_epoch"),
        at("coordinator"),
        at("members"),
        at("offsets"),
    ];
    ensure!(
        order.iter().all(Option::is_some) && order.is_sorted(),
        "field order: {raw}"
    );
    ensure!(
        v["group"] == group
            && v["state"].is_string()
            && v["group_epoch"].is_u64()
            && v["coordinator"].is_u64()
            && v["members"].is_array()
            && v["offsets"].is_array(),
        "{raw}"
    );
    for o in v["offsets"].as_array().context("offsets")? {
        ensure!(
            o["topic"].is_string()
                && o["partition"].is_u64()
                && (o["committed_offset"].is_u64() || o["committed_offset"].is_null())
                && o["log_end_offset"].is_u64()
                && (o["lag"].is_u64() || o["lag"].is_null())
                && o["metadata"].is_string(),
            "{o}"
        );
    }
    Ok(v)
}

/// (e) `neo consume --group`, `neo group list/describe/reset-offsets/delete`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cli_group_commands() -> anyhow::Result<()> {
    with_cluster(3, async |cluster| {
        let (topic, group) = ("ge", "cg");
        let client = connect(cluster).await?;
        Admin::new(client.clone()).create_topic(topic, 3, 3).await?;
        ok(cluster, &["produce", topic], "m0\nm1\nm2\nm3\nm4\nm5\n")?;

        // consume as a member: prints everything, commits it, leaves
        let out = ok(
            cluster,
            &[
                "consume",
                topic,
                "--group",
                group,
                "--from-beginning",
                "--max-messages",
                "6",
                "--timeout-ms",
                "20000",
            ],
            "",
        )?;
        let mut lines: Vec<&str> = out.lines().collect();
        lines.sort();
        ensure!(lines == ["m0", "m1", "m2", "m3", "m4", "m5"], "{out}");

        // describe: no member left, every partition committed at its end, lag 0
        let v = describe_json(cluster, group)?;
        ensure!(v["members"].as_array().is_some_and(Vec::is_empty), "{v}");
        let offsets = v["offsets"].as_array().context("offsets")?;
        ensure!(offsets.len() == 3, "{v}");
        for o in offsets {
            ensure!(
                o["topic"] == topic
                    && o["lag"] == 0
                    && o["committed_offset"] == o["log_end_offset"],
                "{o}"
            );
        }
        let described = ok(cluster, &["group", "describe", group], "")?;
        ensure!(
            described.starts_with(&format!("group {group} state ")),
            "{described}"
        );
        ensure!(
            described
                .lines()
                .filter(|l| l.starts_with("offset ge/"))
                .count()
                == 3,
            "{described}"
        );
        // HTTP on any node: /v1/groups lists it, /v1/groups/{name} is the same
        // document as describe --format json, an unknown group is 404
        let http = cluster.spec(2).http;
        let (status, body) = http_get(http, "/v1/groups")?;
        ensure!(status == 200, "/v1/groups: {status} {body}");
        let listed: Value = serde_json::from_str(&body)?;
        ensure!(
            listed["groups"]
                .as_array()
                .is_some_and(|g| g.iter().any(|g| g["name"] == group && g["members"] == 0)),
            "{body}"
        );
        let (status, body) = http_get(http, &format!("/v1/groups/{group}"))?;
        ensure!(status == 200, "/v1/groups/{group}: {status} {body}");
        let over_http: Value = serde_json::from_str(&body)?;
        ensure!(
            over_http["group"] == group
                && over_http["members"] == v["members"]
                && over_http["offsets"] == v["offsets"],
            "{body} vs {v}"
        );
        let (status, body) = http_get(http, "/v1/groups/no%2Dsuch")?;
        ensure!(status == 404, "unknown group: {status} {body}");
        // /metrics: each partition's leader reports the group's lag (0: all committed),
        // and the coordinator its members
        let mut lag_series = 0;
        let mut members_series = 0;
        for id in 1..=3 {
            let (status, body) = http_get(cluster.spec(id).http, "/metrics")?;
            ensure!(status == 200, "/metrics of node {id}: {status}");
            for line in body.lines() {
                if line.starts_with(&format!(
                    "neo_group_lag{{group=\"{group}\",topic=\"{topic}\""
                )) {
                    ensure!(line.ends_with(" 0"), "lag after a full commit: {line}");
                    lag_series += 1;
                }
                if line.starts_with(&format!("neo_group_members{{group=\"{group}\"}}")) {
                    members_series += 1;
                }
            }
        }
        ensure!(
            lag_series == 3,
            "one lag series per partition, got {lag_series}"
        );
        ensure!(
            members_series == 1,
            "the coordinator reports members: {members_series}"
        );

        let listed = ok(cluster, &["group", "list"], "")?;
        ensure!(
            listed
                .lines()
                .any(|l| l.starts_with(&format!("{group} state "))),
            "{listed}"
        );

        // without --from-beginning a member resumes at the committed offsets: nothing
        let out = ok(
            cluster,
            &["consume", topic, "--group", group, "--timeout-ms", "2000"],
            "",
        )?;
        ensure!(out.is_empty(), "{out}");

        // reset-offsets is refused while a member is active
        let mut member = GroupConsumer::subscribe(
            client.clone(),
            group,
            &[topic],
            config(Duration::from_secs(10)),
        )
        .await?;
        let started = Instant::now();
        while member.assignment().len() < 3 {
            ensure!(started.elapsed() < WAIT_MAX, "no assignment for the member");
            member.poll(Duration::from_millis(200)).await?;
        }
        let out = neo(
            cluster,
            &[
                "group",
                "reset-offsets",
                group,
                "--topic",
                topic,
                "--to-earliest",
            ],
            "",
        )?;
        ensure!(
            out.status.code() == Some(1),
            "reset with a member: {}",
            out.status
        );
        ensure!(
            text(&out.stderr).contains("active members"),
            "{}",
            text(&out.stderr)
        );
        let out = neo(cluster, &["group", "delete", group], "")?;
        ensure!(!out.status.success(), "delete with a member succeeded");
        member.close().await?;

        // ... and accepted once the group is empty
        let out = ok(
            cluster,
            &[
                "group",
                "reset-offsets",
                group,
                "--topic",
                topic,
                "--to-earliest",
            ],
            "",
        )?;
        ensure!(out.lines().count() == 3, "{out}");
        for line in out.lines() {
            ensure!(
                line.starts_with(&format!("reset {group} {topic}/")),
                "{line}"
            );
        }
        let v = describe_json(cluster, group)?;
        let lag: u64 = v["offsets"]
            .as_array()
            .context("offsets")?
            .iter()
            .map(|o| o["lag"].as_u64().unwrap_or(0))
            .sum();
        ensure!(lag >= 6, "lag after reset to earliest: {v}");
        let out = ok(
            cluster,
            &["consume", topic, "--group", group, "--timeout-ms", "3000"],
            "",
        )?;
        ensure!(out.lines().count() == 6, "re-read after the reset: {out}");
        ok(
            cluster,
            &[
                "group",
                "reset-offsets",
                group,
                "--topic",
                topic,
                "--to-latest",
            ],
            "",
        )?;
        let v = describe_json(cluster, group)?;
        for o in v["offsets"].as_array().context("offsets")? {
            ensure!(o["lag"] == 0, "{o}");
        }

        // delete
        let out = ok(cluster, &["group", "delete", group], "")?;
        ensure!(out.trim() == format!("deleted group {group}"), "{out}");
        let out = neo(cluster, &["group", "describe", group], "")?;
        ensure!(
            out.status.code() == Some(1),
            "describe of a deleted group: {}",
            out.status
        );
        ensure!(
            text(&out.stderr).starts_with("error:"),
            "{}",
            text(&out.stderr)
        );
        Ok(())
    })
    .await
}
