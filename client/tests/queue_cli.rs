//! `neo queue ...`: the built `neo` binary against the queue broker double of
//! `queue_double/` (the commands, outputs and exit statuses of docs/cli.md, "Queues").

mod queue_double;

use std::process::Output;

use neo_client::queue::HEADER_DLQ_SOURCE;
use neo_client::{Client, QueueProducer, SendOptions};
use queue_double::{Shared, fast_config, lock, start};

async fn neo(address: &str, args: &[&str], stdin: &str) -> Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_neo"));
    cmd.arg("--server").arg(address).args(args);
    for var in [
        "NEO_SERVER",
        "NEO_TOKEN",
        "NEO_API_KEY",
        "NEO_TLS_CA",
        "NEO_TLS_CERT",
        "NEO_TLS_KEY",
        "NEO_TLS_SERVER_NAME",
    ] {
        cmd.env_remove(var);
    }
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let stdin = stdin.to_string();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = cmd.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// The receipts of `neo queue receive --format json` lines.
fn receipts(o: &Output) -> Vec<String> {
    stdout(o)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["receipt"].as_str().unwrap().to_string()
        })
        .collect()
}

#[tokio::test]
async fn queue_commands_follow_the_contract() {
    let shared = Shared::default();
    let addrs = start(2, &shared).await;
    let server = addrs[0].as_str();

    let o = neo(
        server,
        &[
            "queue",
            "create",
            "jobs",
            "--partitions",
            "2",
            "--max-deliveries",
            "3",
            "--backoff-ms",
            "100,200",
        ],
        "",
    )
    .await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "created queue jobs (partitions 2, replication 1, visibility_timeout_ms 30000, \
         max_deliveries 3, dead_letter jobs.dlq)\ncreated dead-letter queue jobs.dlq\n"
    );
    let o = neo(server, &["queue", "create", "jobs"], "").await;
    assert_eq!(code(&o), 1, "exists");
    assert!(
        stderr(&o).starts_with("error: create queue \"jobs\""),
        "{}",
        stderr(&o)
    );
    let o = neo(server, &["queue", "list"], "").await;
    assert_eq!(
        stdout(&o),
        "jobs partitions 2 replication 1 dead_letter jobs.dlq\n\
         jobs.dlq partitions 1 replication 1 dead_letter none\n"
    );

    let o = neo(server, &["queue", "send", "jobs"], "a\nb\nc\n").await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "");
    assert_eq!(
        stderr(&o),
        "sent 3 messages to jobs: 3 committed, 0 failed\n"
    );

    // Two messages, left leased; each line carries its receipt.
    let o = neo(
        server,
        &[
            "queue", "receive", "jobs", "--max", "2", "--no-ack", "--format", "json",
        ],
        "",
    )
    .await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let leased = receipts(&o);
    assert_eq!(leased.len(), 2, "{}", stdout(&o));
    let line = stdout(&o).lines().next().unwrap().to_string();
    let first: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(first.as_object().unwrap().len(), 6, "{line}");
    let positions: Vec<usize> = [
        "partition",
        "offset",
        "receipt",
        "delivery_count",
        "key",
        "value",
    ]
    .iter()
    .map(|f| line.find(&format!("\"{f}\":")).unwrap())
    .collect();
    assert!(
        positions.is_sorted(),
        "exactly these fields, in this order: {line}"
    );
    assert_eq!(first["delivery_count"], 1);

    let o = neo(server, &["queue", "ack", "jobs", &leased[0]], "").await;
    assert_eq!((code(&o), stdout(&o)), (0, format!("{} ok\n", leased[0])));
    let o = neo(server, &["queue", "ack", "jobs", &leased[0]], "").await;
    assert_eq!(code(&o), 1);
    assert_eq!(stdout(&o), format!("{} already_done\n", leased[0]));
    assert_eq!(stderr(&o), "error: 1 of 1 receipts could not be acked\n");
    let o = neo(server, &["queue", "ack", "jobs", "1-2-3"], "").await;
    assert_eq!(code(&o), 2, "a malformed receipt is a usage error");
    let o = neo(
        server,
        &[
            "queue",
            "nack",
            "jobs",
            &leased[1],
            "--delay-ms",
            "0",
            "--reason",
            "later",
        ],
        "",
    )
    .await;
    assert_eq!((code(&o), stdout(&o)), (0, format!("{} ok\n", leased[1])));

    // The rest (one never leased, the nacked one), acked as printed.
    let o = neo(
        server,
        &["queue", "receive", "jobs", "--max", "5", "--wait-ms", "300"],
        "",
    )
    .await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let mut values: Vec<String> = stdout(&o).lines().map(str::to_string).collect();
    values.sort();
    assert_eq!(values.len(), 2, "{values:?}");
    let o = neo(
        server,
        &["queue", "receive", "jobs", "--wait-ms", "100"],
        "",
    )
    .await;
    assert_eq!((code(&o), stdout(&o)), (0, String::new()), "nothing left");

    let o = neo(
        server,
        &["queue", "describe", "jobs", "--format", "json"],
        "",
    )
    .await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let d: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(d["total"]["acked"], 3);
    assert_eq!(d["total"]["available"], 0);
    assert_eq!(d["partitions"].as_array().unwrap().len(), 2);
    assert!(
        d["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["leader"].is_string())
    );
    let o = neo(server, &["queue", "describe", "jobs"], "").await;
    let text = stdout(&o);
    assert!(
        text.starts_with(
            "queue jobs partitions 2\nsettings visibility_timeout_ms 30000 max_deliveries 3"
        ),
        "{text}"
    );
    assert!(text.contains("backoff_ms 100,200"), "{text}");
    assert!(text.lines().last().unwrap().starts_with("total"), "{text}");

    // Text with --no-ack: the receipt, a space, the value; then extend and term.
    let o = neo(server, &["queue", "send", "jobs"], "d\n").await;
    assert_eq!(code(&o), 0);
    let o = neo(server, &["queue", "receive", "jobs", "--no-ack"], "").await;
    let line = stdout(&o);
    let (receipt, value) = line.trim_end().split_once(' ').unwrap();
    assert_eq!(value, "d");
    let o = neo(
        server,
        &[
            "queue",
            "extend",
            "jobs",
            receipt,
            "--visibility-timeout-ms",
            "60000",
        ],
        "",
    )
    .await;
    assert_eq!((code(&o), stdout(&o)), (0, format!("{receipt} ok\n")));
    let o = neo(
        server,
        &["queue", "term", "jobs", receipt, "--reason", "poison"],
        "",
    )
    .await;
    assert_eq!((code(&o), stdout(&o)), (0, format!("{receipt} ok\n")));

    // A dead letter goes back to its source.
    let client = Client::connect_with(&addrs, fast_config()).await.unwrap();
    let options = SendOptions::default().header(HEADER_DLQ_SOURCE, "jobs");
    QueueProducer::new(client)
        .send_with("jobs.dlq", "e", options)
        .await
        .unwrap();
    let o = neo(server, &["queue", "redrive", "jobs.dlq"], "").await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "moved 1 messages from jobs.dlq (jobs 1)\n");

    let o = neo(server, &["queue", "purge", "jobs"], "").await;
    assert_eq!(
        (code(&o), stdout(&o)),
        (0, "purged 1 messages from jobs\n".to_string())
    );
    assert_eq!(lock(&shared).calls("purge_queue"), 2, "one per partition");
    let o = neo(server, &["queue", "delete", "jobs"], "").await;
    assert_eq!(
        (code(&o), stdout(&o)),
        (0, "deleted queue jobs\n".to_string())
    );
    let o = neo(server, &["queue", "receive", "jobs"], "").await;
    assert_eq!(code(&o), 1);
    assert!(
        stderr(&o).starts_with("error: receive from queue \"jobs\""),
        "{}",
        stderr(&o)
    );
}
