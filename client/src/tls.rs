//! TLS settings of a client from PEM files, as the `neo` CLI and neo-chaos take them
//! (`--tls-ca`, `--tls-cert`/`--tls-key`, `--tls-server-name`).
//!
//! Every node's certificate is checked against one name: `--tls-server-name`, else the
//! host of the first seed ([`seed_host`]), so node certificates of a cluster share a
//! name (or each names the address clients dial, e.g. `127.0.0.1`).

use std::path::Path;

use neo_protocol::ClientTls;
use neo_protocol::tls::{certs_from_pem, client_config, key_from_pem};

use crate::error::{Error, Result};

fn read(flag: &str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| Error::InvalidArgument(format!("{flag}: cannot read {}: {e}", path.display())))
}

fn invalid(e: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(e.to_string())
}

/// TLS trusting the CA certificate(s) of the PEM file `ca`, presenting the certificate
/// chain and key of `client` (PEM files, for mTLS) when given, and checking every
/// server's certificate against `server_name`.
pub fn from_pem_files(
    ca: &Path,
    client: Option<(&Path, &Path)>,
    server_name: &str,
) -> Result<ClientTls> {
    let named = |flag: &str, path: &Path| format!("{flag} {}", path.display());
    let roots = certs_from_pem(&named("--tls-ca", ca), &read("--tls-ca", ca)?).map_err(invalid)?;
    let client_cert = match client {
        Some((cert, key)) => Some((
            certs_from_pem(&named("--tls-cert", cert), &read("--tls-cert", cert)?)
                .map_err(invalid)?,
            key_from_pem(&named("--tls-key", key), &read("--tls-key", key)?).map_err(invalid)?,
        )),
        None => None,
    };
    let config = client_config(roots, client_cert).map_err(invalid)?;
    ClientTls::new(config, server_name).map_err(|e| {
        Error::InvalidArgument(format!(
            "TLS server name {server_name:?} (set --tls-server-name): {e}"
        ))
    })
}

/// The host part of a `HOST:PORT` seed (brackets of an IPv6 literal removed); `None`
/// when there is none.
pub fn seed_host(seed: &str) -> Option<String> {
    let host = match seed.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => seed,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then(|| host.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_hosts_drop_the_port_and_brackets() {
        assert_eq!(seed_host("127.0.0.1:7171").as_deref(), Some("127.0.0.1"));
        assert_eq!(seed_host("[::1]:7171").as_deref(), Some("::1"));
        assert_eq!(seed_host("neo1").as_deref(), Some("neo1"));
        assert_eq!(seed_host(":7171"), None);
        assert_eq!(seed_host(""), None);
    }

    #[test]
    fn unreadable_files_are_named() {
        let err = from_pem_files(Path::new("/nonexistent/ca.pem"), None, "neo").unwrap_err();
        assert!(
            err.to_string()
                .contains("--tls-ca: cannot read /nonexistent/ca.pem"),
            "{err}"
        );
    }
}
