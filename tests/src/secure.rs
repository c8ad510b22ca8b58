//! A cluster with security on, as the security, console and monitoring tests run it:
//! authentication by HS256 JWTs (a secret file, a required issuer, a superuser) and, as
//! a secure cluster of several nodes must, mutual TLS on the cluster port (a throwaway
//! CA and one certificate per node naming its id).
//!
//! `SecureCluster::new(3, SECRET)?.auth("jwt,apikey").arg("--metrics-open").arg("true")
//! .start()?` gives the running cluster and the folder of its files; tokens for it
//! are HS256 JWTs over `SECRET` with `iss` [`ISSUER`].

use anyhow::Context;
use tempfile::TempDir;

use crate::{TestCluster, TestPki};

/// The issuer the nodes require of a token (`--jwt-issuer`).
pub const ISSUER: &str = "neo-e2e";
/// The superuser of the cluster (`--superuser`), allowed everything.
pub const SUPERUSER: &str = "admin";

/// The files and flags of a secure cluster of `nodes` nodes, written to a temporary
/// folder: `hs256.secret` (the secret, one line), `ca.pem`, and `node-<id>.pem` /
/// `node-<id>.key` for each node (valid for `127.0.0.1` and `localhost`, with the URI
/// SAN `neo-node:<id>`).
pub struct SecureCluster {
    nodes: u64,
    dir: TempDir,
    secret_file: String,
    ca_file: String,
    auth: String,
    extra: Vec<String>,
}

impl SecureCluster {
    /// The files of `nodes` nodes verifying tokens signed with `secret`; `--auth jwt`
    /// until [`SecureCluster::auth`] says otherwise.
    pub fn new(nodes: u64, secret: &str) -> anyhow::Result<SecureCluster> {
        let dir = tempfile::Builder::new()
            .prefix("neo-e2e-secure-")
            .tempdir()?;
        let file = |name: &str, body: &str| -> anyhow::Result<String> {
            let path = dir.path().join(name);
            std::fs::write(&path, body).with_context(|| format!("write {}", path.display()))?;
            Ok(path.to_str().context("path is not UTF-8")?.to_string())
        };
        let secret_file = file("hs256.secret", &format!("{secret}\n"))?;
        let pki = TestPki::new("neo e2e cluster CA");
        for id in 1..=nodes {
            let (cert, key) = pki.node_leaf(id, "neo", &["127.0.0.1", "localhost"]);
            file(&format!("node-{id}.pem"), &cert)?;
            file(&format!("node-{id}.key"), &key)?;
        }
        let ca_file = file("ca.pem", pki.ca_pem())?;
        Ok(SecureCluster {
            nodes,
            dir,
            secret_file,
            ca_file,
            auth: "jwt".to_string(),
            extra: Vec::new(),
        })
    }

    /// `--auth methods` (e.g. `jwt,apikey`) instead of `--auth jwt`.
    pub fn auth(mut self, methods: &str) -> SecureCluster {
        self.auth = methods.to_string();
        self
    }

    /// One more argument for every node, after the security flags (`{id}` is replaced
    /// by the node's id, as in [`TestCluster::start_with_args`]).
    pub fn arg(mut self, arg: &str) -> SecureCluster {
        self.extra.push(arg.to_string());
        self
    }

    /// Every node's flags: `--auth`, `--jwt-hs256-secret-file`, `--jwt-issuer`
    /// [`ISSUER`], `--superuser` [`SUPERUSER`], `--cluster-tls-cert`/`-key`/`-ca`, then
    /// the [`SecureCluster::arg`]s.
    pub fn args(&self) -> anyhow::Result<Vec<String>> {
        let folder = self.dir.path().to_str().context("path is not UTF-8")?;
        let mut args: Vec<String> = [
            "--auth",
            &self.auth,
            "--jwt-hs256-secret-file",
            &self.secret_file,
            "--jwt-issuer",
            ISSUER,
            "--superuser",
            SUPERUSER,
            "--cluster-tls-cert",
            &format!("{folder}/node-{{id}}.pem"),
            "--cluster-tls-key",
            &format!("{folder}/node-{{id}}.key"),
            "--cluster-tls-ca",
            &self.ca_file,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(self.extra.iter().cloned());
        Ok(args)
    }

    /// Starts the nodes with [`SecureCluster::args`]; returns the cluster and the folder
    /// of its files, to keep as long as the cluster (a restarted node reads them again).
    pub fn start(self) -> anyhow::Result<(TestCluster, TempDir)> {
        let cluster = TestCluster::start_with_args(self.nodes, &self.args()?)?;
        Ok((cluster, self.dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_name_the_files_written() -> anyhow::Result<()> {
        let secure = SecureCluster::new(2, "s")?
            .auth("jwt,apikey")
            .arg("--metrics-open")
            .arg("true");
        let args = secure.args()?;
        let value = |flag: &str| {
            let at = args.iter().position(|a| a == flag);
            at.and_then(|i| args.get(i + 1)).cloned()
        };
        assert_eq!(value("--auth").as_deref(), Some("jwt,apikey"));
        assert_eq!(value("--superuser").as_deref(), Some(SUPERUSER));
        assert_eq!(value("--jwt-issuer").as_deref(), Some(ISSUER));
        assert_eq!(args[args.len() - 2..], ["--metrics-open", "true"]);
        let secret = value("--jwt-hs256-secret-file").context("secret flag")?;
        assert_eq!(std::fs::read_to_string(secret)?, "s\n");
        let ca = value("--cluster-tls-ca").context("ca flag")?;
        assert!(std::fs::read_to_string(ca)?.starts_with("-----BEGIN CERTIFICATE-----"));
        for id in 1..=2 {
            let cert = value("--cluster-tls-cert").context("cert flag")?;
            let key = value("--cluster-tls-key").context("key flag")?;
            let cert = std::fs::read_to_string(cert.replace("{id}", &id.to_string()))?;
            let key = std::fs::read_to_string(key.replace("{id}", &id.to_string()))?;
            assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
            assert!(key.contains("PRIVATE KEY"));
        }
        Ok(())
    }
}
