//! Tests of [`super`]: precedence of flags, environment and file; every refusal.

use super::*;

fn no_env(_: &str) -> Option<String> {
    None
}

fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
    move |k| {
        pairs
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    }
}

#[test]
fn no_settings_is_the_embedded_single_node_default() {
    let c = Config::resolve(&RunArgs::default(), &no_env).expect("default config");
    assert_eq!(c.node_id, 1);
    assert_eq!(c.data_dir, PathBuf::from("./neo-data"));
    assert_eq!(c.listen.to_string(), "127.0.0.1:7070");
    assert_eq!(c.cluster_listen.to_string(), "127.0.0.1:7071");
    assert_eq!(c.http_listen.to_string(), "127.0.0.1:7072");
    assert_eq!(c.bootstrap, Bootstrap::Single);
    assert_eq!(c.durability, Durability::Fsync);
    assert_eq!(c.log_format, LogFormat::Human);
    assert_eq!(c.limits, Limits::default());
}

#[test]
fn flags_beat_env_beat_file_beat_defaults() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("neo.toml");
    std::fs::write(
        &path,
        "id = 3\nlisten = \"127.0.0.1:9000\"\nhttp_listen = \"127.0.0.1:9002\"\n\
         data_dir = \"/file\"\nfetch_wait_ms_max = 100\n",
    )
    .expect("write");
    let args = RunArgs {
        config: Some(path),
        id: Some("5".into()),
        ..RunArgs::default()
    };
    let env = env_of(&[
        ("NEO_ID", "4"),
        ("NEO_LISTEN", "127.0.0.1:8000"),
        ("NEO_LOG_FORMAT", "json"),
    ]);
    let c = Config::resolve(&args, &env).expect("config");
    assert_eq!(c.node_id, 5, "flag wins over env and file");
    assert_eq!(c.listen.to_string(), "127.0.0.1:8000", "env wins over file");
    assert_eq!(
        c.http_listen.to_string(),
        "127.0.0.1:9002",
        "file over default"
    );
    assert_eq!(c.data_dir, PathBuf::from("/file"));
    assert_eq!(c.limits.fetch_wait_ms_max, 100);
    assert_eq!(c.log_format, LogFormat::Json);
    assert_eq!(c.cluster_listen.to_string(), "127.0.0.1:7071", "default");
}

#[test]
fn storage_reserve_setting() {
    let d = Config::resolve(&RunArgs::default(), &no_env).expect("default config");
    assert_eq!(d.limits.storage_reserve_bytes, 64 * 1024 * 1024);
    let env = env_of(&[("NEO_STORAGE_RESERVE_BYTES", "0")]);
    let c = Config::resolve(&RunArgs::default(), &env).expect("config");
    assert_eq!(c.limits.storage_reserve_bytes, 0, "0 turns the check off");
    let args = RunArgs {
        storage_reserve_bytes: Some("lots".into()),
        ..RunArgs::default()
    };
    assert!(Config::resolve(&args, &no_env).is_err());
}

#[test]
fn retention_check_and_segment_size_settings() {
    let d = Config::resolve(&RunArgs::default(), &no_env).expect("default config");
    assert_eq!(d.limits.retention_check_ms, 30_000);
    assert_eq!(d.limits.segment_bytes, 256 * 1024 * 1024);
    let env = env_of(&[
        ("NEO_RETENTION_CHECK_MS", "250"),
        ("NEO_SEGMENT_BYTES", "65536"),
    ]);
    let c = Config::resolve(&RunArgs::default(), &env).expect("config");
    assert_eq!(c.limits.retention_check_ms, 250);
    assert_eq!(c.limits.segment_bytes, 65_536);
    let args = RunArgs {
        retention_check_ms: Some("100".into()),
        ..RunArgs::default()
    };
    let c = Config::resolve(&args, &env).expect("config");
    assert_eq!(c.limits.retention_check_ms, 100, "flag over env");
}

#[test]
fn leader_balance_setting() {
    let d = Config::resolve(&RunArgs::default(), &no_env).expect("default config");
    assert_eq!(d.limits.leader_balance_ms, 5_000);
    let env = env_of(&[("NEO_LEADER_BALANCE_MS", "0")]);
    let c = Config::resolve(&RunArgs::default(), &env).expect("config");
    assert_eq!(c.limits.leader_balance_ms, 0, "0 turns it off");
    let args = RunArgs {
        leader_balance_ms: Some("5".into()),
        ..RunArgs::default()
    };
    let c = Config::resolve(&args, &env).expect("config");
    assert_eq!(
        c.limits.leader_balance_ms, 100,
        "flag over env, raised to 100 ms"
    );
    let args = RunArgs {
        leader_balance_ms: Some("soon".into()),
        ..RunArgs::default()
    };
    let e = Config::resolve(&args, &no_env).expect_err("not a number");
    assert!(e.to_string().contains("--leader-balance-ms"), "{e}");
}

#[test]
fn metrics_per_partition_and_slow_request_settings() {
    let d = Config::resolve(&RunArgs::default(), &no_env).expect("default config");
    assert!(!d.metrics_per_partition, "off by default");
    assert_eq!(d.slow_request_ms, 1_000);
    let env = env_of(&[
        ("NEO_METRICS_PER_PARTITION", "true"),
        ("NEO_SLOW_REQUEST_MS", "0"),
    ]);
    let c = Config::resolve(&RunArgs::default(), &env).expect("config");
    assert!(c.metrics_per_partition);
    assert_eq!(c.slow_request_ms, 0, "0 turns it off");
    let args = RunArgs {
        metrics_per_partition: Some("false".into()),
        slow_request_ms: Some("250".into()),
        ..RunArgs::default()
    };
    let c = Config::resolve(&args, &env).expect("config");
    assert!(!c.metrics_per_partition, "flag over env");
    assert_eq!(c.slow_request_ms, 250, "flag over env");
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("neo.toml");
    std::fs::write(
        &path,
        "metrics_per_partition = true\nslow_request_ms = 20\n",
    )
    .expect("write");
    let p = path.display().to_string();
    let file = move |k: &str| (k == "NEO_CONFIG").then(|| p.clone());
    let c = Config::resolve(&RunArgs::default(), &file).expect("config");
    assert!(c.metrics_per_partition, "TOML key");
    assert_eq!(c.slow_request_ms, 20, "TOML key");
    let args = RunArgs {
        metrics_per_partition: Some("yes".into()),
        ..RunArgs::default()
    };
    let e = Config::resolve(&args, &no_env).expect_err("not a boolean");
    assert!(e.to_string().contains("--metrics-per-partition"), "{e}");
    let args = RunArgs {
        slow_request_ms: Some("-1".into()),
        ..RunArgs::default()
    };
    let e = Config::resolve(&args, &no_env).expect_err("negative");
    assert!(e.to_string().contains("--slow-request-ms"), "{e}");
}

#[test]
fn config_file_named_by_env() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("neo.toml");
    std::fs::write(&path, "fsync = \"interval\"\nfsync_interval_ms = 5\n").expect("write");
    let p = path.display().to_string();
    let env = move |k: &str| (k == "NEO_CONFIG").then(|| p.clone());
    let c = Config::resolve(&RunArgs::default(), &env).expect("config");
    assert_eq!(c.durability, Durability::IntervalMs(5));
}

#[test]
fn invalid_values_name_their_field() {
    let cases: &[(RunArgs, &str)] = &[
        (
            RunArgs {
                listen: Some("nope".into()),
                ..RunArgs::default()
            },
            "--listen / NEO_LISTEN / listen",
        ),
        (
            RunArgs {
                id: Some("0".into()),
                ..RunArgs::default()
            },
            "--id / NEO_ID / id",
        ),
        (
            RunArgs {
                peers: Some("2=h:1".into()),
                ..RunArgs::default()
            },
            "--peers / NEO_PEERS / peers",
        ),
        (
            RunArgs {
                batch_bytes_max: Some("99999999".into()),
                ..RunArgs::default()
            },
            "--batch-bytes-max / NEO_BATCH_BYTES_MAX / batch_bytes_max",
        ),
        (
            RunArgs {
                log_format: Some("xml".into()),
                ..RunArgs::default()
            },
            "--log-format / NEO_LOG_FORMAT / log_format",
        ),
        (
            RunArgs {
                fsync: Some("sometimes".into()),
                ..RunArgs::default()
            },
            "--fsync / NEO_FSYNC / fsync",
        ),
        (
            RunArgs {
                retention_check_ms: Some("0".into()),
                ..RunArgs::default()
            },
            "--retention-check-ms / NEO_RETENTION_CHECK_MS / retention_check_ms",
        ),
        (
            RunArgs {
                segment_bytes: Some("100".into()),
                ..RunArgs::default()
            },
            "--segment-bytes / NEO_SEGMENT_BYTES / segment_bytes",
        ),
        (
            RunArgs {
                segment_bytes: Some("lots".into()),
                ..RunArgs::default()
            },
            "--segment-bytes / NEO_SEGMENT_BYTES / segment_bytes",
        ),
    ];
    for (args, field) in cases {
        let e = Config::resolve(args, &no_env).expect_err("must be refused");
        assert!(
            matches!(&e, ConfigError::Invalid { field: f, .. } if f == field),
            "{e} should name {field}"
        );
        assert!(e.to_string().contains(field), "{e}");
    }
}

#[test]
fn conflicts_and_requirements_are_refused() {
    let both = RunArgs {
        peers: Some("1=h:1".into()),
        join: Some("h:2".into()),
        ..RunArgs::default()
    };
    assert!(matches!(
        Config::resolve(&both, &no_env),
        Err(ConfigError::Conflict { .. })
    ));
    let wildcard = RunArgs {
        listen: Some("0.0.0.0:7070".into()),
        ..RunArgs::default()
    };
    let e = Config::resolve(&wildcard, &no_env).expect_err("wildcard needs advertise");
    assert!(e.to_string().contains("--advertise-client"), "{e}");
    let ok = RunArgs {
        listen: Some("0.0.0.0:7070".into()),
        advertise_client: Some("node-a:7070".into()),
        ..RunArgs::default()
    };
    assert!(Config::resolve(&ok, &no_env).is_ok());
    let interval_alone = RunArgs {
        fsync_interval_ms: Some("5".into()),
        ..RunArgs::default()
    };
    assert!(matches!(
        Config::resolve(&interval_alone, &no_env),
        Err(ConfigError::Conflict { .. })
    ));
}

#[test]
fn peers_set_the_advertised_cluster_address() {
    let args = RunArgs {
        id: Some("2".into()),
        peers: Some("1=a:7071,2=b:7071,3=c:7071".into()),
        ..RunArgs::default()
    };
    let c = Config::resolve(&args, &no_env).expect("config");
    assert_eq!(c.advertise_cluster.as_deref(), Some("b:7071"));
    assert!(matches!(c.bootstrap, Bootstrap::Static(ref p) if p.len() == 3));
}

#[test]
fn bad_config_files_are_errors() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("neo.toml");
    std::fs::write(&path, "lisen = \"127.0.0.1:1\"\n").expect("write");
    let args = RunArgs {
        config: Some(path.clone()),
        ..RunArgs::default()
    };
    let e = Config::resolve(&args, &no_env).expect_err("unknown key");
    assert!(e.to_string().contains("unknown key \"lisen\""), "{e}");
    std::fs::write(&path, "id = [1]\n").expect("write");
    assert!(matches!(
        Config::resolve(&args, &no_env),
        Err(ConfigError::File { .. })
    ));
    let missing = RunArgs {
        config: Some(dir.path().join("missing.toml")),
        ..RunArgs::default()
    };
    assert!(matches!(
        Config::resolve(&missing, &no_env),
        Err(ConfigError::File { .. })
    ));
}

#[test]
fn http_allowed_hosts_are_lowercase_names_or_any() {
    let d = Config::resolve(&RunArgs::default(), &no_env).expect("default config");
    assert!(d.http_allowed_hosts.is_empty(), "none by default");
    let env = env_of(&[("NEO_HTTP_ALLOWED_HOSTS", "Neo.Example.com, console-1 ,")]);
    let c = Config::resolve(&RunArgs::default(), &env).expect("config");
    assert_eq!(c.http_allowed_hosts, ["neo.example.com", "console-1"]);
    let args = RunArgs {
        http_allowed_hosts: Some("*".into()),
        ..RunArgs::default()
    };
    let c = Config::resolve(&args, &env).expect("config");
    assert_eq!(c.http_allowed_hosts, ["*"], "flag over env");
    let args = RunArgs {
        http_allowed_hosts: Some("neo.example.com:7072".into()),
        ..RunArgs::default()
    };
    let e = Config::resolve(&args, &no_env).expect_err("a port is not a host name");
    assert!(e.to_string().contains("--http-allowed-hosts"), "{e}");
}

#[test]
fn raft_timing_is_fast_unless_classic_is_asked_for() {
    let d = Config::resolve(&RunArgs::default(), &no_env).expect("default config");
    assert_eq!(d.raft_timing, RaftTimingProfile::Fast);
    let env = env_of(&[("NEO_RAFT_TIMING", "classic")]);
    let c = Config::resolve(&RunArgs::default(), &env).expect("config");
    assert_eq!(c.raft_timing, RaftTimingProfile::Classic);
    let args = RunArgs {
        raft_timing: Some("slow".into()),
        ..RunArgs::default()
    };
    let e = Config::resolve(&args, &no_env).expect_err("not a timing");
    assert!(e.to_string().contains("--raft-timing"), "{e}");
}
