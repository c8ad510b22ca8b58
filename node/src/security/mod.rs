//! Security wiring: `--auth` and the `--jwt-*` / `--superuser` settings become the
//! client port's [`Authenticators`] (neo-protocol's handshake hook) and the broker's
//! [`AccessConfig`]; background tasks keep them current:
//!
//! - a JWKS file (`--jwt-jwks-file`) is re-read when its modification time or size
//!   changes (checked every [`RELOAD_CHECK`]), and the new key set swapped in;
//! - the API key table follows the replicated metadata (every applied change), so a key
//!   created or revoked on any node is known here as soon as this replica applies it.
//!
//! Rate limits are [`Throttle`] (`throttle.rs`); the `connections` quota is
//! [`ConnectionLimiter`] (`connections.rs`), applied in the handshake by [`Audited`].
//!
//! Key files are read once at start (refused with a clear error if unreadable or
//! malformed); secrets never reach a log line.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use neo_broker::AccessConfig;
use neo_broker::meta::MetaView;
use neo_security::Authenticators;
use neo_security::authn::{
    ApiKeyAuthenticator, ApiKeys, CertAuthenticator, CertMapping, JwtAuthenticator, JwtConfig,
    JwtKey, JwtKeySet,
};
use tokio::sync::watch;

use crate::config::ConfigError;

mod audit;
mod connections;
pub(crate) mod http;
mod throttle;
pub use audit::{Audited, AuthCounters};
pub use connections::{ConnectionLimiter, Slot};
pub use throttle::Throttle;

/// How often the JWKS file is looked at.
pub const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// Authentication methods of `--auth`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthMethods {
    /// JSON Web Tokens.
    pub jwt: bool,
    /// Neo API keys.
    pub api_key: bool,
    /// Client certificates (mTLS): the principal is the certificate's first DNS SAN,
    /// else its subject CN (see docs/security.md).
    pub mtls: bool,
}

/// TLS on the client port: PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTlsFiles {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
    /// CA of client certificates (mTLS), if any.
    pub client_ca: Option<PathBuf>,
    /// Every client must present a certificate (`--auth mtls` is the only method).
    pub require_client_cert: bool,
}

impl ClientTlsFiles {
    /// The rustls server config of these files (blocking file reads).
    pub fn load(&self) -> Result<Arc<neo_protocol::rustls::ServerConfig>, KeyFileError> {
        use neo_protocol::tls::{self, ClientAuth};
        let pem = |what: &'static str, path: &Path| {
            read(path).and_then(|bytes| {
                tls::certs_from_pem(what, &bytes)
                    .map_err(|source| KeyFileError::Tls { what, source })
            })
        };
        let chain = pem("--tls-cert", &self.cert)?;
        let key = tls::key_from_pem("--tls-key", &read(&self.key)?).map_err(|source| {
            KeyFileError::Tls {
                what: "--tls-key",
                source,
            }
        })?;
        let auth = match &self.client_ca {
            None => ClientAuth::None,
            Some(ca) if self.require_client_cert => {
                ClientAuth::Required(pem("--tls-client-ca", ca)?)
            }
            Some(ca) => ClientAuth::Optional(pem("--tls-client-ca", ca)?),
        };
        tls::server_config(chain, key, auth).map_err(|source| KeyFileError::Tls {
            what: "client port TLS",
            source,
        })
    }
}

/// Why a key or certificate file could not be used (at start, or a JWKS reload).
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file holds no usable key.
    #[error("{}: {source}", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: neo_security::SecurityError,
    },
    /// The keys or settings together are refused (too many keys, a bad claim name).
    #[error("JWT: {0}")]
    Jwt(#[source] neo_security::SecurityError),
    /// A certificate, key or CA for TLS is refused.
    #[error("{what}: {source}")]
    Tls {
        /// Which setting.
        what: &'static str,
        /// Why.
        source: neo_protocol::Error,
    },
    /// The at-rest key file holds no usable key.
    #[error("{}: {reason}", path.display())]
    AtRest {
        /// The file.
        path: PathBuf,
        /// What is wrong with it (never its bytes).
        reason: &'static str,
    },
    /// The blocking task that read the files failed.
    #[error("reading key files: {0}")]
    Blocking(#[source] tokio::task::JoinError),
}

/// Where JWT keys come from, and what tokens must claim.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JwtFiles {
    /// HS256 secret file.
    pub hs256_secret: Option<PathBuf>,
    /// PEM public key file.
    pub public_key: Option<PathBuf>,
    /// JWKS file (reloaded on change).
    pub jwks: Option<PathBuf>,
    /// Required `iss`.
    pub issuer: Option<String>,
    /// Required `aud`.
    pub audience: Option<String>,
    /// The roles claim (default `roles`).
    pub roles_claim: Option<String>,
}

/// The node's security settings (`None` in [`crate::config::Config`]: security off).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecurityConfig {
    /// Accepted methods.
    pub methods: AuthMethods,
    /// JWT keys and claims (set when `methods.jwt`).
    pub jwt: JwtFiles,
    /// Principals allowed everything.
    pub superusers: Vec<String>,
    /// `/metrics` on the HTTP port answers without a bearer token.
    pub metrics_open: bool,
}

/// The raw settings, as [`crate::config`] resolved them.
#[derive(Debug, Default)]
pub(crate) struct SecuritySettings<'a> {
    pub auth: Option<&'a str>,
    pub jwt: JwtFiles,
    pub superuser: Option<&'a str>,
    pub metrics_open: Option<&'a str>,
    pub tls_cert: Option<&'a str>,
    pub tls_key: Option<&'a str>,
    pub tls_client_ca: Option<&'a str>,
}

fn conflict(reason: impl Into<String>) -> ConfigError {
    ConfigError::Conflict {
        reason: reason.into(),
    }
}

impl SecurityConfig {
    /// Checks the settings: the security configuration (`None`: off) and the client
    /// port's TLS (`None`: plaintext).
    pub(crate) fn resolve(
        s: SecuritySettings<'_>,
    ) -> Result<(Option<SecurityConfig>, Option<ClientTlsFiles>), ConfigError> {
        let superusers: Vec<String> = s
            .superuser
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        let jwt_set = s.jwt != JwtFiles::default();
        let mut methods = AuthMethods::default();
        for m in s.auth.unwrap_or("").split(',').map(str::trim) {
            match m {
                "" | "none" => {}
                "jwt" => methods.jwt = true,
                "apikey" | "api-key" => methods.api_key = true,
                "mtls" => methods.mtls = true,
                other => {
                    return Err(ConfigError::Invalid {
                        field: "--auth / NEO_AUTH / auth".into(),
                        value: other.into(),
                        reason: "expected a comma-separated subset of jwt, apikey, mtls".into(),
                    });
                }
            }
        }
        let client_tls = match (s.tls_cert, s.tls_key) {
            (None, None) => {
                if s.tls_client_ca.is_some() {
                    return Err(conflict("--tls-client-ca needs --tls-cert and --tls-key"));
                }
                None
            }
            (Some(cert), Some(key)) => {
                let files = ClientTlsFiles {
                    cert: PathBuf::from(cert),
                    key: PathBuf::from(key),
                    client_ca: s.tls_client_ca.map(PathBuf::from),
                    require_client_cert: methods.mtls && !methods.jwt && !methods.api_key,
                };
                files
                    .load()
                    .map_err(|e| conflict(format!("client port TLS: {e}")))?;
                Some(files)
            }
            _ => {
                return Err(conflict(
                    "TLS on the client port needs both --tls-cert and --tls-key",
                ));
            }
        };
        if methods.mtls && client_tls.as_ref().is_none_or(|t| t.client_ca.is_none()) {
            return Err(conflict(
                "--auth mtls needs TLS on the client port with a client CA: --tls-cert, \
                 --tls-key and --tls-client-ca",
            ));
        }
        if methods == AuthMethods::default() {
            if jwt_set || !superusers.is_empty() || s.metrics_open.is_some() {
                return Err(conflict(
                    "--jwt-*, --superuser and --metrics-open need security on: set --auth \
                     (NEO_AUTH), e.g. --auth jwt",
                ));
            }
            return Ok((None, client_tls));
        }
        if methods.jwt {
            let keys = [&s.jwt.hs256_secret, &s.jwt.public_key, &s.jwt.jwks];
            if keys.iter().all(|k| k.is_none()) {
                return Err(conflict(
                    "--auth jwt needs a key: --jwt-hs256-secret-file, --jwt-public-key-file \
                     or --jwt-jwks-file",
                ));
            }
        } else if jwt_set {
            return Err(conflict("--jwt-* settings need jwt in --auth"));
        }
        let metrics_open = match s.metrics_open.map(str::trim) {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    field: "--metrics-open / NEO_METRICS_OPEN / metrics_open".into(),
                    value: other.into(),
                    reason: "expected true or false".into(),
                });
            }
        };
        let config = SecurityConfig {
            methods,
            jwt: s.jwt,
            superusers,
            metrics_open,
        };
        // Read the key files now, so a bad file stops the node at start.
        if config.methods.jwt {
            jwt_authenticator(&config.jwt).map_err(|e| conflict(format!("JWT keys: {e}")))?;
        }
        Ok((Some(config), client_tls))
    }

    /// The broker's authorization settings.
    pub fn access(config: Option<&SecurityConfig>) -> AccessConfig {
        match config {
            Some(c) => AccessConfig {
                enabled: true,
                superusers: c.superusers.clone(),
            },
            None => AccessConfig::default(),
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, KeyFileError> {
    std::fs::read(path).map_err(|source| KeyFileError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The key set the JWT files hold now (blocking file reads).
pub fn jwt_keys(files: &JwtFiles) -> Result<JwtKeySet, KeyFileError> {
    let bad = |path: &Path| {
        let path = path.to_path_buf();
        move |source| KeyFileError::Key { path, source }
    };
    let mut keys = Vec::new();
    if let Some(path) = &files.hs256_secret {
        let mut secret = read(path)?;
        while secret.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            secret.pop();
        }
        keys.push(JwtKey::hs256(&secret).map_err(bad(path))?);
    }
    if let Some(path) = &files.public_key {
        keys.push(JwtKey::from_public_pem(&read(path)?).map_err(bad(path))?);
    }
    if let Some(path) = &files.jwks {
        let jwks = JwtKeySet::from_jwks(&read(path)?).map_err(bad(path))?;
        keys.extend(jwks.iter().cloned());
    }
    keys.into_iter()
        .try_fold(JwtKeySet::new(), JwtKeySet::with)
        .map_err(KeyFileError::Jwt)
}

/// The JWT checker of `files`: keys read now (blocking), claims as configured.
fn jwt_authenticator(files: &JwtFiles) -> Result<JwtAuthenticator, KeyFileError> {
    let mut config = JwtConfig {
        issuer: files.issuer.clone(),
        audience: files.audience.clone(),
        ..JwtConfig::default()
    };
    if let Some(claim) = &files.roles_claim {
        config.roles_claim = claim.clone();
    }
    JwtAuthenticator::new(config, jwt_keys(files)?).map_err(KeyFileError::Jwt)
}

/// The client port's authenticators, and the tasks that keep them current (until
/// `stop`).
pub struct SecurityRuntime {
    /// The handshake hook.
    pub authenticators: Arc<Authenticators>,
    /// Background tasks (JWKS reload, API key table).
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl SecurityRuntime {
    /// Builds the authenticators of `config` (key files read on the blocking pool) and
    /// starts their upkeep.
    pub async fn start(
        config: &SecurityConfig,
        meta: MetaView,
        stop: watch::Receiver<bool>,
    ) -> Result<SecurityRuntime, KeyFileError> {
        let mut chain = Authenticators::new();
        let mut tasks = Vec::new();
        if config.methods.jwt {
            let files = config.jwt.clone();
            let jwt = tokio::task::spawn_blocking(move || jwt_authenticator(&files))
                .await
                .map_err(KeyFileError::Blocking)??;
            let jwt = Arc::new(jwt);
            chain = chain.with_jwt(jwt.clone());
            if config.jwt.jwks.is_some() {
                tasks.push(tokio::spawn(reload_jwt_keys(
                    jwt,
                    config.jwt.clone(),
                    stop.clone(),
                )));
            }
        }
        if config.methods.mtls {
            chain =
                chain.with_certificates(Arc::new(CertAuthenticator::new(CertMapping::default())));
        }
        if config.methods.api_key {
            let keys = Arc::new(ApiKeyAuthenticator::new(ApiKeys::default()));
            chain = chain.with_api_keys(keys.clone());
            tasks.push(tokio::spawn(follow_api_keys(keys, meta, stop)));
        }
        Ok(SecurityRuntime {
            authenticators: Arc::new(chain),
            tasks,
        })
    }
}

/// (modified time, length) of a file, to notice changes.
fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Re-reads the JWT key files when the JWKS file changes; a bad new file keeps the old
/// keys (and is logged).
async fn reload_jwt_keys(
    jwt: Arc<JwtAuthenticator>,
    files: JwtFiles,
    mut stop: watch::Receiver<bool>,
) {
    let Some(jwks) = files.jwks.clone() else {
        return;
    };
    let mut seen = stamp(&jwks);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(RELOAD_CHECK) => {}
            _ = stop.changed() => return,
        }
        let path = jwks.clone();
        let now = tokio::task::spawn_blocking(move || stamp(&path))
            .await
            .unwrap_or(None);
        if now == seen {
            continue;
        }
        seen = now;
        let files = files.clone();
        match tokio::task::spawn_blocking(move || jwt_keys(&files)).await {
            Ok(Ok(keys)) => {
                tracing::info!(target: "neo::audit", keys = keys.len(), "JWT keys reloaded");
                jwt.replace_keys(keys);
            }
            Ok(Err(e)) => tracing::warn!("JWKS reload failed, keeping the old keys: {e}"),
            Err(e) => tracing::warn!("JWKS reload task failed: {e}"),
        }
    }
}

/// Keeps the API key table equal to the replicated one.
async fn follow_api_keys(
    keys: Arc<ApiKeyAuthenticator>,
    mut meta: MetaView,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let current = meta.borrow_and_update().security.api_keys.clone();
        if *keys.snapshot() != current {
            keys.replace(current);
        }
        tokio::select! {
            r = meta.changed() => if r.is_err() { return },
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, RunArgs};
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn resolve(args: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let cli = Cli::try_parse_from(std::iter::once("neo-node").chain(args.iter().copied()))
            .expect("flags parse");
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::resolve(&cli.run, &move |k| {
            env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
    }

    fn secret_file() -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(f.path(), b"0123456789abcdef0123456789abcdef\n").expect("write");
        f
    }

    #[test]
    fn off_by_default() {
        let c = resolve(&[], &[]).unwrap();
        assert_eq!(c.security, None);
        assert_eq!(SecurityConfig::access(None), AccessConfig::default());
    }

    #[test]
    fn jwt_with_a_secret_file_and_repeated_superusers() {
        let f = secret_file();
        let path = f.path().to_str().unwrap();
        let c = resolve(
            &[
                "--auth",
                "jwt,apikey",
                "--jwt-hs256-secret-file",
                path,
                "--superuser",
                "admin",
                "--superuser",
                "ops",
            ],
            &[],
        )
        .unwrap();
        let s = c.security.unwrap();
        assert!(s.methods.jwt && s.methods.api_key);
        assert_eq!(s.superusers, vec!["admin".to_string(), "ops".to_string()]);
        let access = SecurityConfig::access(Some(&s));
        assert!(access.enabled);
        assert_eq!(jwt_keys(&s.jwt).unwrap().len(), 1);
    }

    #[test]
    fn environment_and_comma_separated_superusers() {
        let f = secret_file();
        let path = f.path().to_str().unwrap();
        let c = resolve(
            &[],
            &[
                ("NEO_AUTH", "jwt"),
                ("NEO_JWT_HS256_SECRET_FILE", path),
                ("NEO_SUPERUSER", "a, b"),
            ],
        )
        .unwrap();
        assert_eq!(c.security.unwrap().superusers, vec!["a", "b"]);
    }

    #[test]
    fn refusals_are_clear() {
        let f = secret_file();
        let path = f.path().to_str().unwrap();
        for (args, needle) in [
            (vec!["--auth", "jwt"], "needs a key"),
            (vec!["--auth", "mtls"], "needs TLS on the client port"),
            (
                vec!["--tls-cert", path],
                "needs both --tls-cert and --tls-key",
            ),
            (vec!["--tls-client-ca", path], "--tls-client-ca needs"),
            (
                vec!["--auth", "kerberos"],
                "expected a comma-separated subset",
            ),
            (vec!["--jwt-hs256-secret-file", path], "need security on"),
            (vec!["--superuser", "root"], "need security on"),
            (
                vec!["--auth", "apikey", "--jwt-hs256-secret-file", path],
                "need jwt in --auth",
            ),
            (
                vec![
                    "--auth",
                    "jwt",
                    "--jwt-hs256-secret-file",
                    "/nonexistent/secret",
                ],
                "/nonexistent/secret",
            ),
            (
                vec!["--auth", "jwt", "--jwt-public-key-file", path],
                "JWT keys",
            ),
        ] {
            let err = resolve(&args, &[]).unwrap_err().to_string();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }

    #[test]
    fn a_secure_cluster_of_several_nodes_needs_cluster_mtls() {
        let f = secret_file();
        let path = f.path().to_str().unwrap();
        let secure = ["--auth", "jwt", "--jwt-hs256-secret-file", path];
        let peers = ["--peers", "1=127.0.0.1:7071,2=127.0.0.1:7081"];
        let args: Vec<&str> = secure.iter().chain(peers.iter()).copied().collect();
        let err = resolve(&args, &[]).unwrap_err().to_string();
        assert!(err.contains("--cluster-tls-cert"), "{err}");
        // Alone (no peers, or only itself) it may run without.
        resolve(&secure, &[]).unwrap();
        let args: Vec<&str> = secure
            .iter()
            .chain(["--peers", "1=127.0.0.1:7071"].iter())
            .copied()
            .collect();
        resolve(&args, &[]).unwrap();
    }

    #[test]
    fn toml_superusers_as_an_array() {
        let f = secret_file();
        let dir = tempfile::tempdir().unwrap();
        let toml = dir.path().join("neo.toml");
        std::fs::write(
            &toml,
            format!(
                "auth = \"jwt\"\njwt_hs256_secret_file = {:?}\nsuperuser = [\"x\", \"y\"]\n",
                f.path().to_str().unwrap()
            ),
        )
        .unwrap();
        let c = resolve(&["--config", toml.to_str().unwrap()], &[]).unwrap();
        assert_eq!(c.security.unwrap().superusers, vec!["x", "y"]);
    }
}
