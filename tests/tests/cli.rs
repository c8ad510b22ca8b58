//! The `neo` CLI contract (`docs/cli.md`), by running the built binary against a real
//! 3-node cluster.

use std::process::Output;

use anyhow::{Context, ensure};
use neo_tests::{TestCluster, neo};
use serde_json::Value;

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs and requires exit status 0.
fn ok(cluster: &TestCluster, args: &[&str], stdin: &str) -> anyhow::Result<Output> {
    let out = neo(cluster, args, stdin)?;
    ensure!(
        out.status.success(),
        "neo {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    Ok(out)
}

#[test]
fn cli_contract() -> anyhow::Result<()> {
    let cluster = TestCluster::start(3)?;
    let result = contract(&cluster);
    if result.is_err() {
        eprintln!("{}", cluster.logs(60));
    }
    result
}

fn contract(c: &TestCluster) -> anyhow::Result<()> {
    // topic create / list / describe
    ok(
        c,
        &[
            "topic",
            "create",
            "cli",
            "--partitions",
            "3",
            "--replication",
            "3",
        ],
        "",
    )?;
    ok(c, &["topic", "create", "scratch"], "")?;
    let list = stdout(&ok(c, &["topic", "list"], "")?);
    let names: Vec<&str> = list.lines().collect();
    ensure!(
        names.contains(&"cli") && names.contains(&"scratch"),
        "{list}"
    );
    let describe = stdout(&ok(c, &["topic", "describe", "cli"], "")?);
    ensure!(describe.contains("partitions 3"), "{describe}");
    ensure!(
        describe
            .lines()
            .filter(|l| l.contains("partition "))
            .count()
            == 3,
        "{describe}"
    );

    // produce: one message per line, summary on stderr, exit 0
    let out = ok(
        c,
        &["produce", "cli", "--partition", "1"],
        "one\ntwo\nthree\n",
    )?;
    let summary = stderr(&out);
    ensure!(
        summary.contains("3 acknowledged") && summary.contains("0 failed"),
        "{summary}"
    );
    ok(
        c,
        &["produce", "cli", "--key", "user-7", "--acks", "leader"],
        "keyed\n",
    )?;

    // consume json: {"partition":P,"offset":O,"key":K,"value":V}, stops at --max
    let out = ok(
        c,
        &[
            "consume",
            "cli",
            "--partition",
            "1",
            "--from-beginning",
            "--max",
            "3",
            "--format",
            "json",
        ],
        "",
    )?;
    let raw = stdout(&out);
    let lines: Vec<Value> = raw
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let values: Vec<&str> = lines.iter().filter_map(|l| l["value"].as_str()).collect();
    ensure!(values == ["one", "two", "three"], "{lines:?}");
    let offsets: Vec<u64> = lines.iter().filter_map(|l| l["offset"].as_u64()).collect();
    // Consecutive records of one batch; the log may hold Raft entries before them.
    ensure!(
        offsets.len() == 3 && offsets[1] == offsets[0] + 1 && offsets[2] == offsets[1] + 1,
        "{offsets:?}"
    );
    for (line, l) in raw.lines().zip(&lines) {
        ensure!(l["partition"] == 1 && l["key"].is_null(), "{l}");
        // Field order is part of the contract.
        let at = |f: &str| line.find(&format!("\"{f}\":"));
        let order = [at("partition"), at("offset"), at("key"), at("value")];
        ensure!(
            order.iter().all(Option::is_some) && order.is_sorted(),
            "field order in {line}"
        );
    }
    let three_at = offsets[2].to_string();

    // consume text across partitions, stopping after --timeout-ms with nothing new
    let out = ok(
        c,
        &["consume", "cli", "--from-beginning", "--timeout-ms", "1500"],
        "",
    )?;
    let mut text: Vec<String> = stdout(&out).lines().map(String::from).collect();
    text.sort();
    ensure!(text == ["keyed", "one", "three", "two"], "{text:?}");
    // --offset starts in the middle (partition 1: "three")
    let out = ok(
        c,
        &[
            "consume",
            "cli",
            "--partition",
            "1",
            "--offset",
            &three_at,
            "--timeout-ms",
            "1000",
        ],
        "",
    )?;
    ensure!(stdout(&out) == "three\n", "{}", stdout(&out));

    // cluster status json: exactly the documented shape
    let out = ok(c, &["cluster", "status", "--format", "json"], "")?;
    let raw = stdout(&out);
    let status: Value = serde_json::from_str(raw.trim())?;
    ensure!(raw.lines().count() == 1, "one line: {raw}");
    let top: Vec<&String> = status.as_object().context("object")?.keys().collect();
    ensure!(top.len() == 3, "{status}");
    let at = |f: &str| raw.find(&format!("\"{f}\":"));
    let order = [at("nodes"), at("controller"), at("partitions")];
    ensure!(
        order.iter().all(Option::is_some) && order.is_sorted(),
        "field order in {raw}"
    );
    let nodes = status["nodes"].as_array().context("nodes")?;
    ensure!(nodes.len() == 3, "{status}");
    for n in nodes {
        ensure!(
            n["alive"] == true && n["client_addr"].is_string() && n["id"].is_u64(),
            "{n}"
        );
    }
    ensure!(status["controller"].is_u64(), "{status}");
    let cli_parts: Vec<&Value> = status["partitions"]
        .as_array()
        .context("partitions")?
        .iter()
        .filter(|p| p["topic"] == "cli")
        .collect();
    ensure!(cli_parts.len() == 3, "{status}");
    for p in cli_parts {
        ensure!(
            p["leader"].is_u64() && p["replicas"].as_array().map(Vec::len) == Some(3),
            "{p}"
        );
    }
    ok(c, &["cluster", "status"], "")?;

    // bench: one JSON line with the documented fields
    for args in [
        &[
            "bench",
            "produce",
            "--topic",
            "cli",
            "--msgs",
            "2000",
            "--size",
            "100",
            "--inflight",
            "16",
        ][..],
        &["bench", "consume", "--topic", "cli", "--timeout-ms", "1500"][..],
    ] {
        let out = ok(c, args, "")?;
        let line: Value = serde_json::from_str(stdout(&out).trim())
            .with_context(|| format!("{args:?}: {}", stdout(&out)))?;
        for field in ["msgs_per_s", "mb_per_s", "p50_us", "p99_us", "p999_us"] {
            ensure!(
                line[field].is_number(),
                "{args:?}: {field} missing in {line}"
            );
        }
    }

    // errors: a clear message and a non-zero status
    let out = neo(c, &["produce", "no-such-topic"], "x\n")?;
    ensure!(
        !out.status.success(),
        "produce to an unknown topic succeeded"
    );
    ensure!(stderr(&out).contains("no-such-topic"), "{}", stderr(&out));
    let out = neo(c, &["topic", "describe", "no-such-topic"], "")?;
    ensure!(
        !out.status.success() && stderr(&out).contains("error"),
        "{}",
        stderr(&out)
    );
    let out = neo(c, &["topic", "create", "cli", "--partitions", "3"], "")?;
    ensure!(
        !out.status.success(),
        "creating an existing topic succeeded"
    );

    // topic delete
    ok(c, &["topic", "delete", "scratch"], "")?;
    let list = stdout(&ok(c, &["topic", "list"], "")?);
    ensure!(!list.lines().any(|l| l == "scratch"), "{list}");
    Ok(())
}
