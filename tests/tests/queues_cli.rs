//! The `neo queue` CLI against a real 3-node cluster: create (with its DLQ), send,
//! receive --no-ack then ack/nack/term by receipt, describe (text and JSON), redrive
//! of dead letters back to their source, purge, list, delete; bad receipts are usage
//! errors (2), stale ones fail (1); `/v1/queues` and `/metrics` on the admin port.

use anyhow::{Context, ensure};
use neo_tests::cluster::http_get;
use neo_tests::{TestCluster, neo, with_cluster};

/// Runs `neo args` with `stdin`; returns (exit code, stdout, stderr).
fn run(cluster: &TestCluster, args: &[&str], stdin: &str) -> anyhow::Result<(i32, String, String)> {
    let out = neo(cluster, args, stdin)?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout)?,
        String::from_utf8(out.stderr)?,
    ))
}

fn ok(cluster: &TestCluster, args: &[&str], stdin: &str) -> anyhow::Result<String> {
    let (code, out, err) = run(cluster, args, stdin)?;
    ensure!(code == 0, "neo {args:?} exited {code}: {err}");
    Ok(out)
}

/// (receipt, value, delivery_count) of each JSON line.
fn deliveries(json_lines: &str) -> anyhow::Result<Vec<(String, String, u64)>> {
    json_lines
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).with_context(|| l.to_string())?;
            for field in [
                "partition",
                "offset",
                "receipt",
                "delivery_count",
                "key",
                "value",
            ] {
                ensure!(v.get(field).is_some(), "{field} missing in {l}");
            }
            Ok((
                v["receipt"].as_str().context("receipt")?.to_string(),
                v["value"].as_str().context("value")?.to_string(),
                v["delivery_count"].as_u64().context("delivery_count")?,
            ))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn neo_queue_commands_against_a_cluster() -> anyhow::Result<()> {
    with_cluster(3, async |cluster| {
        ok(
            cluster,
            &[
                "queue",
                "create",
                "orders",
                "--partitions",
                "2",
                "--replication",
                "3",
                "--max-deliveries",
                "2",
                "--visibility-timeout-ms",
                "60000",
            ],
            "",
        )?;
        let list = ok(cluster, &["queue", "list"], "")?;
        ensure!(
            list.contains("orders") && list.contains("orders.dlq"),
            "{list}"
        );
        ok(cluster, &["queue", "send", "orders"], "a\nb\nc\nd\n")?;

        // Lease all four, settle them one way each.
        let got = deliveries(&ok(
            cluster,
            &[
                "queue",
                "receive",
                "orders",
                "--max",
                "4",
                "--no-ack",
                "--format",
                "json",
                "--wait-ms",
                "3000",
            ],
            "",
        )?)?;
        ensure!(got.len() == 4, "{got:?}");
        ensure!(got.iter().all(|(_, _, n)| *n == 1));
        let by_value = |v: &str| {
            got.iter()
                .find(|(_, val, _)| val == v)
                .map(|(r, _, _)| r.clone())
                .context("value")
        };
        ok(cluster, &["queue", "ack", "orders", &by_value("a")?], "")?;
        // Acking again: the message is done; exit 1.
        let (code, _, _) = run(cluster, &["queue", "ack", "orders", &by_value("a")?], "")?;
        ensure!(code == 1, "a second ack fails: {code}");
        // A malformed receipt is a usage error.
        let (code, _, _) = run(cluster, &["queue", "ack", "orders", "not-a-receipt"], "")?;
        ensure!(code == 2, "malformed receipt: {code}");
        ok(
            cluster,
            &[
                "queue",
                "nack",
                "orders",
                &by_value("b")?,
                "--delay-ms",
                "0",
                "--reason",
                "retry",
            ],
            "",
        )?;
        ok(
            cluster,
            &[
                "queue",
                "term",
                "orders",
                &by_value("c")?,
                "--reason",
                "unprocessable",
            ],
            "",
        )?;
        // b comes back (delivery 2); d stays leased.
        let again = deliveries(&ok(
            cluster,
            &[
                "queue",
                "receive",
                "orders",
                "--max",
                "4",
                "--no-ack",
                "--format",
                "json",
                "--wait-ms",
                "2000",
            ],
            "",
        )?)?;
        ensure!(
            again.len() == 1 && again[0].1 == "b" && again[0].2 == 2,
            "{again:?}"
        );
        // Its second nack is its last allowed delivery: it dies too.
        ok(
            cluster,
            &["queue", "nack", "orders", &again[0].0, "--delay-ms", "0"],
            "",
        )?;

        // Both dead letters reach orders.dlq; describe shows them.
        let mut dead = Vec::new();
        for _ in 0..50 {
            let d = ok(
                cluster,
                &["queue", "describe", "orders", "--format", "json"],
                "",
            )?;
            let v: serde_json::Value = serde_json::from_str(&d)?;
            let n: u64 = v["partitions"]
                .as_array()
                .context("partitions")?
                .iter()
                .map(|p| p["dead_lettered"].as_u64().unwrap_or(0))
                .sum();
            if n == 2 {
                dead = vec![n];
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        ensure!(dead == vec![2], "two dead letters counted");
        let text = ok(cluster, &["queue", "describe", "orders"], "")?;
        ensure!(text.contains("orders"), "{text}");

        // Redrive them back; they are received from orders again.
        let out = ok(cluster, &["queue", "redrive", "orders.dlq"], "")?;
        eprintln!("redrive: {out}");
        let back = deliveries(&ok(
            cluster,
            &[
                "queue",
                "receive",
                "orders",
                "--max",
                "4",
                "--format",
                "json",
                "--wait-ms",
                "3000",
            ],
            "",
        )?)?;
        let mut values: Vec<_> = back.iter().map(|(_, v, _)| v.clone()).collect();
        values.sort();
        ensure!(values == ["b", "c"], "redriven: {values:?}");

        // Admin port: /v1/queues and the queue series.
        let (status, body) = http_get(cluster.spec(1).http, "/v1/queues")?;
        ensure!(
            status == 200 && body.contains("\"orders\""),
            "{status} {body}"
        );
        let mut series = false;
        for id in 1..=3 {
            let (_, metrics) = http_get(cluster.spec(id).http, "/metrics")?;
            series |= metrics.contains("neo_queue_available{queue=\"orders\"");
        }
        ensure!(series, "a leader exports neo_queue_available for orders");

        // Purge drops the leased d; delete removes the queue, the DLQ stays.
        ok(cluster, &["queue", "purge", "orders"], "")?;
        let none = deliveries(&ok(
            cluster,
            &[
                "queue",
                "receive",
                "orders",
                "--max",
                "4",
                "--format",
                "json",
                "--wait-ms",
                "500",
            ],
            "",
        )?)?;
        ensure!(none.is_empty(), "{none:?}");
        ok(cluster, &["queue", "delete", "orders"], "")?;
        let list = ok(cluster, &["queue", "list"], "")?;
        ensure!(
            !list
                .lines()
                .any(|l| l.split_whitespace().next() == Some("orders")),
            "{list}"
        );
        ensure!(list.contains("orders.dlq"), "{list}");
        let (code, _, err) = run(
            cluster,
            &["queue", "receive", "nope", "--format", "json"],
            "",
        )?;
        ensure!(code == 1 && err.contains("error:"), "{code} {err}");
        Ok(())
    })
    .await
}
