//! `neo queue`'s flags and output formats: the contract of docs/cli.md, "Queues".

use std::time::Instant;

use bytes::Bytes;
use clap::Parser;
use clap::error::ErrorKind;
use neo_client::queue::{PartitionReport, QueueDelivery, QueuePartitionStats};
use neo_client::{QueueReport, QueueSettings, Receipt};

use super::*;
use crate::{Cli, Command};

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(["neo", "queue"].into_iter().chain(args.iter().copied()))
}

fn queue_command(args: &[&str]) -> QueueCommand {
    match parse(args)
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
        .command
    {
        Command::Queue(cmd) => cmd,
        other => panic!("{other:?}"),
    }
}

fn create_args(args: &[&str]) -> CreateArgs {
    match queue_command(&[&["create", "q"], args].concat()) {
        QueueCommand::Create(a) => a,
        other => panic!("{other:?}"),
    }
}

fn receipt() -> Receipt {
    Receipt {
        group: 12,
        partition: 3,
        offset: 99,
        delivery: 2,
        lease: 1234,
    }
}

#[test]
fn create_flags_become_queue_options() {
    let defaults = create_options(&create_args(&[]));
    assert_eq!(defaults, QueueOptions::new(1, 1), "server defaults, Q.dlq");
    assert_eq!(defaults.dead_letter, DeadLetter::Default);

    let o = create_options(&create_args(&[
        "--partitions",
        "6",
        "--replication",
        "3",
        "--visibility-timeout-ms",
        "5000",
        "--max-deliveries",
        "7",
        "--dead-letter",
        "q.dead",
        "--ordered-by-key",
        "--max-in-flight",
        "100",
        "--max-in-flight-per-consumer",
        "10",
        "--backoff-ms",
        "100,1000,60000",
        "--retention-ms",
        "86400000",
        "--retention-bytes",
        "1048576",
    ]));
    assert_eq!((o.partitions, o.replication_factor), (6, 3));
    let s = &o.settings;
    assert_eq!((s.visibility_timeout_ms, s.max_deliveries), (5000, 7));
    assert!(s.ordered_by_key);
    assert_eq!((s.max_in_flight, s.max_in_flight_per_consumer), (100, 10));
    assert_eq!(s.redelivery_backoff_ms, vec![100, 1000, 60_000]);
    assert_eq!(o.dead_letter, DeadLetter::Queue("q.dead".into()));
    assert_eq!(
        o.configs,
        vec![
            ("retention.ms".to_string(), "86400000".to_string()),
            ("retention.bytes".to_string(), "1048576".to_string())
        ]
    );
    assert!(o.validate().is_ok());
    let none = create_options(&create_args(&["--dead-letter", "none"]));
    assert_eq!(none.dead_letter, DeadLetter::None);
}

#[test]
fn bad_create_values_are_usage_errors() {
    let bad: &[&[&str]] = &[
        &["--partitions", "0"],
        &["--visibility-timeout-ms", "99"],
        &["--visibility-timeout-ms", "43200001"],
        &["--max-deliveries", "0"],
        &["--max-deliveries", "1001"],
        &["--max-in-flight", "0"],
        &["--max-in-flight-per-consumer", "100001"],
        &["--backoff-ms", "100,x"],
        &["--backoff-ms", ""],
        &["--backoff-ms", "604800001"],
        &["--dead-letter", ""],
        &["--retention-ms", "0"],
    ];
    for extra in bad {
        let err = parse(&[&["create", "q"], *extra].concat()).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{extra:?}");
    }
    let many = vec!["1"; 33].join(",");
    assert!(parse(&["create", "q", "--backoff-ms", &many]).is_err());
    let enough = vec!["1"; 32].join(",");
    assert!(parse(&["create", "q", "--backoff-ms", &enough]).is_ok());
    assert!(parse(&["create"]).is_err(), "the name is required");
}

#[test]
fn receive_flags_and_defaults() {
    let QueueCommand::Receive(a) = queue_command(&["receive", "q"]) else {
        panic!()
    };
    assert_eq!(
        (a.max, a.wait_ms, a.no_ack),
        (1, 1000, false),
        "--ack by default"
    );
    assert_eq!(a.consumer, CLI_CONSUMER);
    assert_eq!((a.visibility_timeout_ms, a.format), (None, Format::Text));
    let QueueCommand::Receive(a) = queue_command(&[
        "receive",
        "q",
        "--max",
        "5",
        "--no-ack",
        "--wait-ms",
        "200",
        "--visibility-timeout-ms",
        "60000",
        "--share-group",
        "g",
        "--consumer",
        "w1",
        "--format",
        "json",
    ]) else {
        panic!()
    };
    assert_eq!((a.max, a.wait_ms, a.no_ack), (5, 200, true));
    assert_eq!(a.visibility_timeout_ms, Some(60_000));
    assert_eq!(
        (a.share_group.as_deref(), a.consumer.as_str()),
        (Some("g"), "w1")
    );
    assert_eq!(a.format, Format::Json);
    let err = parse(&["receive", "q", "--ack", "--no-ack"]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ArgumentConflict);
    for bad in [
        &["receive", "q", "--max", "0"][..],
        &["receive", "q", "--visibility-timeout-ms", "50"],
        &["receive", "q", "--consumer", ""],
        &["receive", "q", "--share-group", " "],
    ] {
        assert_eq!(parse(bad).unwrap_err().exit_code(), 2, "{bad:?}");
    }
}

#[test]
fn settle_commands_take_receipts() {
    let QueueCommand::Ack { target } = queue_command(&["ack", "q", "12-3-99-2-1234", "1-0-0-1-5"])
    else {
        panic!()
    };
    assert_eq!(target.queue, "q");
    assert_eq!(target.receipts.len(), 2);
    assert_eq!(target.receipts[0], receipt());
    assert_eq!(target.share_group, None);

    let err = parse(&["ack", "q", "12-3-99-2"]).unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::ValueValidation,
        "a bad receipt: usage"
    );
    assert_eq!(err.exit_code(), 2);
    let err = parse(&["ack", "q"]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MissingRequiredArgument);

    let QueueCommand::Nack {
        target,
        delay_ms,
        reason,
    } = queue_command(&[
        "nack",
        "q",
        "1-0-0-1-5",
        "--delay-ms",
        "500",
        "--reason",
        "busy",
    ])
    else {
        panic!()
    };
    assert_eq!(
        (target.receipts.len(), delay_ms, reason.as_str()),
        (1, Some(500), "busy")
    );
    let QueueCommand::Nack {
        delay_ms, reason, ..
    } = queue_command(&["nack", "q", "1-0-0-1-5"])
    else {
        panic!()
    };
    assert_eq!(
        (delay_ms, reason.as_str()),
        (None, ""),
        "the queue's backoff"
    );
    let long = "r".repeat(257);
    assert!(parse(&["nack", "q", "1-0-0-1-5", "--reason", &long]).is_err());
    assert!(parse(&["nack", "q", "1-0-0-1-5", "--delay-ms", "604800001"]).is_err());

    let err = parse(&["extend", "q", "1-0-0-1-5"]).unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::MissingRequiredArgument,
        "the lease is required"
    );
    let QueueCommand::Extend {
        visibility_timeout_ms,
        ..
    } = queue_command(&[
        "extend",
        "q",
        "1-0-0-1-5",
        "--visibility-timeout-ms",
        "90000",
    ])
    else {
        panic!()
    };
    assert_eq!(visibility_timeout_ms, 90_000);
    let QueueCommand::Term { target, reason } = queue_command(&[
        "term",
        "q",
        "1-0-0-1-5",
        "--reason",
        "poison",
        "--share-group",
        "g",
    ]) else {
        panic!()
    };
    assert_eq!(
        (reason.as_str(), target.share_group.as_deref()),
        ("poison", Some("g"))
    );
}

#[test]
fn the_other_commands_parse() {
    assert!(matches!(queue_command(&["list"]), QueueCommand::List));
    let QueueCommand::Describe {
        name,
        share_group,
        format,
    } = queue_command(&["describe", "t", "--share-group", "g", "--format", "json"])
    else {
        panic!()
    };
    assert_eq!(
        (name.as_str(), share_group.as_deref(), format),
        ("t", Some("g"), Format::Json)
    );
    assert!(matches!(
        queue_command(&["purge", "q"]),
        QueueCommand::Purge {
            share_group: None,
            ..
        }
    ));
    assert!(matches!(
        queue_command(&["delete", "q"]),
        QueueCommand::Delete { .. }
    ));
    let QueueCommand::Send(s) =
        queue_command(&["send", "q", "--key", "k", "--deliver-after-ms", "500"])
    else {
        panic!()
    };
    assert_eq!(
        (s.key.as_deref(), s.deliver_after_ms),
        (Some("k"), Some(500))
    );
    assert!(parse(&["send", "q", "--deliver-after-ms", "604800001"]).is_err());
    let QueueCommand::Redrive { name, max } = queue_command(&["redrive", "q.dlq", "--max", "10"])
    else {
        panic!()
    };
    assert_eq!((name.as_str(), max), ("q.dlq", Some(10)));
    assert!(parse(&["redrive", "q.dlq", "--max", "0"]).is_err());
}

fn delivery(key: Option<&'static [u8]>, value: &'static [u8]) -> QueueDelivery {
    QueueDelivery {
        queue: "q".into(),
        partition: 3,
        offset: 99,
        delivery_count: 2,
        receipt: receipt(),
        key: key.map(Bytes::from_static),
        value: Bytes::from_static(value),
        headers: Vec::new(),
        timestamp_ms: 0,
        lease_expires_at: Instant::now(),
    }
}

#[test]
fn receive_lines_are_the_contract() {
    let d = delivery(Some(b"k\"1"), b"hello");
    assert_eq!(
        format_delivery(&d, Format::Json, false),
        r#"{"partition":3,"offset":99,"receipt":"12-3-99-2-1234","delivery_count":2,"key":"k\"1","value":"hello"}"#
    );
    assert_eq!(
        format_delivery(&d, Format::Json, true),
        format_delivery(&d, Format::Json, false),
        "json always carries the receipt"
    );
    assert_eq!(format_delivery(&d, Format::Text, false), "hello");
    assert_eq!(
        format_delivery(&d, Format::Text, true),
        "12-3-99-2-1234 hello"
    );
    let odd = delivery(None, b"\xffx");
    let line: serde_json::Value =
        serde_json::from_str(&format_delivery(&odd, Format::Json, false)).unwrap();
    assert_eq!(line["key"], serde_json::Value::Null);
    assert_eq!(
        line["value"], "\u{fffd}x",
        "invalid UTF-8 is replaced, like neo consume"
    );
}

fn report() -> QueueReport {
    QueueReport {
        name: "orders".into(),
        share_group: None,
        settings: QueueSettings {
            dead_letter: Some("orders.dlq".into()),
            ..QueueSettings::default()
        },
        partitions: vec![
            PartitionReport {
                partition: 0,
                leader: Some("h:1".into()),
                stats: Some(QueuePartitionStats {
                    partition: 0,
                    available: 12,
                    in_flight: 3,
                    delayed: 1,
                    dead_lettered: 2,
                    acked: 40,
                    redelivered: 4,
                    ack_floor: 38,
                    end_offset: 58,
                    oldest_age_ms: 1520,
                }),
            },
            PartitionReport {
                partition: 1,
                leader: None,
                stats: None,
            },
        ],
    }
}

#[test]
fn describe_output_is_the_contract() {
    assert_eq!(
        format_report(&report(), Format::Text).unwrap(),
        "queue orders partitions 2\n\
         settings visibility_timeout_ms 30000 max_deliveries 5 dead_letter orders.dlq \
         ordered_by_key false max_in_flight 10000 max_in_flight_per_consumer 0 backoff_ms -\n\
         partition  available  in_flight  delayed  dead_lettered  acked  oldest_age_ms  leader\n\
         0                 12          3        1              2     40           1520  h:1\n\
         1                  -          -        -              -      -              -  -\n\
         total             12          3        1              2     40           1520"
    );
    let json: serde_json::Value =
        serde_json::from_str(&format_report(&report(), Format::Json).unwrap()).unwrap();
    assert_eq!(json["name"], "orders");
    assert_eq!(json["share_group"], serde_json::Value::Null);
    assert_eq!(json["settings"]["visibility_timeout_ms"], 30000);
    assert_eq!(json["settings"]["dead_letter"], "orders.dlq");
    let p0 = &json["partitions"][0];
    for (field, value) in [
        ("partition", 0),
        ("available", 12),
        ("in_flight", 3),
        ("delayed", 1),
        ("dead_lettered", 2),
        ("acked", 40),
        ("redelivered", 4),
        ("oldest_age_ms", 1520),
        ("ack_floor", 38),
        ("end_offset", 58),
    ] {
        assert_eq!(p0[field], value, "{field}");
    }
    assert_eq!(p0["leader"], "h:1");
    assert_eq!(json["partitions"][1]["available"], serde_json::Value::Null);
    assert_eq!(json["total"]["available"], 12);
    assert_eq!(json["total"]["oldest_age_ms"], 1520);
    let line = format_report(&report(), Format::Json).unwrap();
    assert!(!line.contains('\n'), "one line");
    assert!(
        line.find("\"available\"").unwrap() < line.find("\"in_flight\"").unwrap(),
        "fields in the documented order"
    );
}

#[test]
fn outcomes_print_as_documented() {
    assert_eq!(
        [
            ReceiptOutcome::Ok,
            ReceiptOutcome::LeaseLost,
            ReceiptOutcome::AlreadyDone,
            ReceiptOutcome::Unknown
        ]
        .map(outcome_name),
        ["ok", "lease_lost", "already_done", "unknown"]
    );
}
