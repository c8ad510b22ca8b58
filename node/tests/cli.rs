//! The binary's command line: invalid configuration exits with status 2 naming the
//! setting; `healthcheck` exits 1 when nothing answers.

use std::process::Command;

#[test]
fn invalid_config_exits_2_and_names_the_setting() {
    let out = Command::new(env!("CARGO_BIN_EXE_neo-node"))
        .args(["--listen", "nope"])
        .env_remove("NEO_CONFIG")
        .output()
        .expect("run neo-node");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--listen / NEO_LISTEN / listen"),
        "{stderr}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_neo-node"))
        .env("NEO_FSYNC", "sometimes")
        .output()
        .expect("run neo-node");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("NEO_FSYNC"));

    let out = Command::new(env!("CARGO_BIN_EXE_neo-node"))
        .arg("--no-such-flag")
        .output()
        .expect("run neo-node");
    assert_eq!(out.status.code(), Some(2), "clap usage errors exit 2 too");
}

#[test]
fn healthcheck_fails_when_nothing_listens() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let out = Command::new(env!("CARGO_BIN_EXE_neo-node"))
        .args(["healthcheck", "--http", &format!("127.0.0.1:{port}")])
        .output()
        .expect("run neo-node");
    assert_eq!(out.status.code(), Some(1));
}
