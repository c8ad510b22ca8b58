//! Configuration: flags > environment (`NEO_*`) > TOML file (`--config`) > defaults.
//!
//! Every setting is read as text from three layers (flags, the environment, the file),
//! the first layer that has it wins, and the winning text is then parsed and validated
//! in one place, so that an error names the setting the way the operator wrote it
//! (`--listen / NEO_LISTEN / listen`) whatever layer it came from. The environment is
//! read through a lookup function, so tests exercise the precedence without touching
//! the process environment.
//!
//! No settings at all is the embedded default: a single-node cluster with data in
//! `./neo-data`, on 127.0.0.1:7070 (Neo RPC), :7071 (gRPC) and :7072 (HTTP).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use neo_raft::{Durability, NodeId};

/// Errors of [`Config::resolve`]: the binary prints them and exits with status 2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The `--config` file could not be read or parsed.
    #[error("config file {path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A setting's value is invalid.
    #[error("invalid {field} = {value:?}: {reason}")]
    Invalid {
        /// The setting, as `--flag / NEO_ENV / file_key`.
        field: String,
        /// The value given.
        value: String,
        /// Why it was refused.
        reason: String,
    },
    /// Settings that cannot be used together, or a setting that is required.
    #[error("{reason}")]
    Conflict {
        /// What is wrong.
        reason: String,
    },
}

/// Shorthand for results of this module.
pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

/// Declares every setting once: its clap flag (from the field name), its environment
/// variable, its TOML key (the field name) and its help text.
macro_rules! settings {
    ($( $(#[$doc:meta])* $field:ident, $env:literal, $value:literal, $help:literal; )*) => {
        /// The flags of `neo-node` (run mode). Every flag also has a `NEO_*` variable and
        /// a key of the same name in the `--config` TOML file.
        #[derive(clap::Args, Debug, Default, Clone)]
        pub struct RunArgs {
            /// TOML file with any of the settings below (keys = flag names with `_`).
            #[arg(long, value_name = "FILE", help = "TOML config file (keys = flag names with '_') [env: NEO_CONFIG]")]
            pub config: Option<PathBuf>,
            $(
                $(#[$doc])*
                #[doc = $help]
                #[arg(long, value_name = $value, help = concat!($help, " [env: ", $env, "]"))]
                pub $field: Option<String>,
            )*
            /// Superusers: principals allowed everything (repeatable; env and TOML: a
            /// comma-separated list, or a TOML array).
            #[arg(long, value_name = "NAME", help = "A principal allowed everything when security is on; repeatable (bootstraps roles and grants) [env: NEO_SUPERUSER, comma-separated]")]
            pub superuser: Vec<String>,
        }

        /// One layer of raw settings (flags, environment or file).
        #[derive(Debug, Default, Clone, PartialEq, Eq)]
        struct Layer {
            $( $field: Option<String>, )*
            superuser: Option<String>,
        }

        impl Layer {
            fn from_args(a: &RunArgs) -> Layer {
                Layer {
                    $( $field: a.$field.clone(), )*
                    superuser: (!a.superuser.is_empty()).then(|| a.superuser.join(",")),
                }
            }

            fn from_env(get: &dyn Fn(&str) -> Option<String>) -> Layer {
                Layer {
                    $( $field: get($env).filter(|v| !v.is_empty()), )*
                    superuser: get("NEO_SUPERUSER").filter(|v| !v.is_empty()),
                }
            }

            fn set(&mut self, key: &str, value: String) -> bool {
                match key {
                    $( stringify!($field) => { self.$field = Some(value); true } )*
                    "superuser" => { self.superuser = Some(value); true }
                    _ => false,
                }
            }

            /// `self` where set, else `lower`.
            fn over(self, lower: Layer) -> Layer {
                Layer {
                    $( $field: self.$field.or(lower.$field), )*
                    superuser: self.superuser.or(lower.superuser),
                }
            }
        }

        /// `--flag / NEO_ENV / key` of a setting, for error messages.
        fn field_name(key: &str) -> String {
            match key {
                $( stringify!($field) => format!(
                    "--{} / {} / {}", stringify!($field).replace('_', "-"), $env, stringify!($field)
                ), )*
                "superuser" => "--superuser / NEO_SUPERUSER / superuser".to_string(),
                other => other.to_string(),
            }
        }
    };
}

settings! {
    id, "NEO_ID", "N", "This node's id (default 1)";
    data_dir, "NEO_DATA_DIR", "DIR", "Data directory (default ./neo-data)";
    listen, "NEO_LISTEN", "IP:PORT", "Neo RPC (client) listener (default 127.0.0.1:7070)";
    cluster_listen, "NEO_CLUSTER_LISTEN", "IP:PORT", "gRPC (cluster) listener (default 127.0.0.1:7071)";
    http_listen, "NEO_HTTP_LISTEN", "IP:PORT", "HTTP admin listener (default 127.0.0.1:7072)";
    peers, "NEO_PEERS", "ID=HOST:PORT,..", "Static bootstrap: every voter's cluster address, this node included";
    join, "NEO_JOIN", "HOST:PORT", "Join the cluster at this cluster address instead of --peers";
    advertise_client, "NEO_ADVERTISE_CLIENT", "HOST:PORT", "Client address handed out in metadata and NotLeader hints (default: --listen)";
    advertise_cluster, "NEO_ADVERTISE_CLUSTER", "HOST:PORT", "Cluster address other nodes use (default: this node's --peers entry, else --cluster-listen)";
    log_format, "NEO_LOG_FORMAT", "human|json", "Log format (default human)";
    log, "NEO_LOG", "FILTER", "Log filter, tracing EnvFilter syntax (default info)";
    fsync, "NEO_FSYNC", "always|interval", "When appended entries count as flushed (default always)";
    fsync_interval_ms, "NEO_FSYNC_INTERVAL_MS", "MS", "Sync period of --fsync interval (default 10)";
    frame_size_bytes_max, "NEO_FRAME_SIZE_BYTES_MAX", "BYTES", "Largest Neo RPC frame (default 16 MiB)";
    batch_bytes_max, "NEO_BATCH_BYTES_MAX", "BYTES", "Largest produced record batch (default and max 1 MiB)";
    partitions_per_topic_max, "NEO_PARTITIONS_PER_TOPIC_MAX", "N", "Most partitions one topic may have (default 1024)";
    connections_max, "NEO_CONNECTIONS_MAX", "N", "Most client connections (default 10000)";
    inflight_requests_max, "NEO_INFLIGHT_REQUESTS_MAX", "N", "Most requests in flight per client connection (default 1024)";
    inflight_request_bytes_max, "NEO_INFLIGHT_REQUEST_BYTES_MAX", "BYTES", "Most bytes of requests in flight across all client connections; beyond: Busy (default 256 MiB)";
    outbound_queue_bytes_max, "NEO_OUTBOUND_QUEUE_BYTES_MAX", "BYTES", "Most bytes of replies one client connection holds unwritten; handlers wait beyond (default 32 MiB)";
    frame_read_timeout_ms, "NEO_FRAME_READ_TIMEOUT_MS", "MS", "Longest a client may take to send one frame, first byte to last; then Timeout and closed (default 30000)";
    write_timeout_ms, "NEO_WRITE_TIMEOUT_MS", "MS", "Longest one write of replies to a client may take; a client that does not read is closed (default 30000)";
    fetch_wait_ms_max, "NEO_FETCH_WAIT_MS_MAX", "MS", "Longest fetch long poll (default 30000)";
    fetch_bytes_max, "NEO_FETCH_BYTES_MAX", "BYTES", "Most bytes one fetch returns (default 8 MiB)";
    produce_timeout_ms_max, "NEO_PRODUCE_TIMEOUT_MS_MAX", "MS", "Longest a produce waits for commit (default 30000)";
    retention_check_ms, "NEO_RETENTION_CHECK_MS", "MS", "Period of the retention pass over hosted partitions (default 30000)";
    segment_bytes, "NEO_SEGMENT_BYTES", "BYTES", "Segment file size of Raft group logs; retention deletes whole segments (default 256 MiB)";
    storage_reserve_bytes, "NEO_STORAGE_RESERVE_BYTES", "BYTES", "Free space produce leaves on the data directory's filesystem; beyond: StorageFull until space is freed; 0 turns the check off (default 64 MiB)";
    cluster_tls_cert, "NEO_CLUSTER_TLS_CERT", "FILE", "Cluster mTLS: this node's certificate chain, PEM, naming its id in a URI SAN neo-node:<id> (with --cluster-tls-key and --cluster-tls-ca)";
    cluster_tls_key, "NEO_CLUSTER_TLS_KEY", "FILE", "Cluster mTLS: this node's private key, PEM";
    cluster_tls_ca, "NEO_CLUSTER_TLS_CA", "FILE", "Cluster mTLS: the cluster CA certificate(s), PEM; peers must present a certificate it signed";
    cluster_tls_server_name, "NEO_CLUSTER_TLS_SERVER_NAME", "NAME", "Cluster mTLS: check every peer's certificate against this DNS name instead of the host of its address";
    offsets_retention_ms, "NEO_OFFSETS_RETENTION_MS", "MS", "A consumer group without members for this long is deleted with its committed offsets (default 604800000 = 7 days)";
    leader_balance_ms, "NEO_LEADER_BALANCE_MS", "MS", "Period of leader balancing: partitions led here go back to their preferred replica; 0 turns it off (default 5000)";
    auth, "NEO_AUTH", "jwt,apikey,mtls", "Security on: the client port requires one of these authentication methods (any subset; none or empty = security off) and every request is authorized";
    jwt_hs256_secret_file, "NEO_JWT_HS256_SECRET_FILE", "FILE", "JWT: HS256 shared secret (the file's bytes, trailing newline trimmed)";
    jwt_public_key_file, "NEO_JWT_PUBLIC_KEY_FILE", "FILE", "JWT: public key, PEM (RS256, ES256 or EdDSA by key type)";
    jwt_jwks_file, "NEO_JWT_JWKS_FILE", "FILE", "JWT: a JWKS file of public keys, reloaded when it changes";
    jwt_issuer, "NEO_JWT_ISSUER", "ISS", "JWT: required issuer (iss)";
    jwt_audience, "NEO_JWT_AUDIENCE", "AUD", "JWT: required audience (aud)";
    jwt_roles_claim, "NEO_JWT_ROLES_CLAIM", "CLAIM", "JWT: the claim holding the principal's role names (default roles)";
    metrics_open, "NEO_METRICS_OPEN", "true|false", "With security on, serve /metrics on the HTTP port without a bearer token (default false)";
    tls_cert, "NEO_TLS_CERT", "FILE", "TLS on the client port: this node's certificate chain, PEM (with --tls-key)";
    tls_key, "NEO_TLS_KEY", "FILE", "TLS on the client port: the private key, PEM";
    tls_client_ca, "NEO_TLS_CLIENT_CA", "FILE", "TLS on the client port: CA certificate(s), PEM, that sign client certificates (mTLS; required with --auth mtls)";
    at_rest_key_file, "NEO_AT_REST_KEY_FILE", "FILE", "Encryption at rest: this node's key (64 hex digits or 32 bytes); topics created with encryption.at-rest=true keep their logs encrypted under it";
    metrics_per_partition, "NEO_METRICS_PER_PARTITION", "true|false", "Export neo_partition_log_start_offset / neo_partition_log_end_offset per hosted partition on /metrics (two series per partition; default false)";
    slow_request_ms, "NEO_SLOW_REQUEST_MS", "MS", "Log a produce slower than this at WARN with its phases; 0 turns it off (default 1000)";
    raft_timing, "NEO_RAFT_TIMING", "fast|classic", "Raft timing of the metadata and partition groups: fast (default: a dead partition leader is replaced 1.25-1.5 s after its last heartbeat) or classic (the timing before issue #22: 4.5-6 s), kept for comparisons";
    http_allowed_hosts, "NEO_HTTP_ALLOWED_HOSTS", "HOST,..", "Host names the web console and /v1 API answer to besides IP addresses, localhost and the cluster's own node names (DNS-rebinding guard; * allows any)";
}

/// Default of `--slow-request-ms`.
pub const DEFAULT_SLOW_REQUEST_MS: u64 = 1_000;

/// How this node finds its cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootstrap {
    /// The embedded default: a one-voter metadata group of this node alone, whose
    /// address is its bound cluster listener.
    Single,
    /// `--peers`: every voter's id and cluster address (this node included). Each node
    /// bootstraps the metadata group with the same members; idempotent across restarts.
    Static(BTreeMap<NodeId, String>),
    /// `--join`: ask the cluster at this cluster address to add this node.
    Join(String),
}

/// `--raft-timing`: which Raft timing the node's groups use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RaftTimingProfile {
    /// `neo_raft::RaftTiming::METADATA` and `PARTITION` (the default).
    #[default]
    Fast,
    /// The timing before issue #22 (`METADATA_CLASSIC`, `PARTITION_CLASSIC`).
    Classic,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// Every named limit of a node (units last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest Neo RPC frame, both directions.
    pub frame_size_bytes_max: usize,
    /// Largest record batch a produce may carry (at most `neo_raft::RECORD_BATCH_BYTES_MAX`).
    pub batch_bytes_max: usize,
    /// Most partitions one topic may have.
    pub partitions_per_topic_max: u32,
    /// Most client connections.
    pub connections_max: usize,
    /// Most requests in flight on one client connection (`Busy` beyond).
    pub inflight_requests_max: usize,
    /// Most bytes of request bodies in flight across every client connection (`Busy`
    /// beyond).
    pub inflight_request_bytes_max: usize,
    /// Most bytes of replies one client connection holds unwritten (handlers wait).
    pub outbound_queue_bytes_max: usize,
    /// Longest a client may take to send one frame (slowloris bound).
    pub frame_read_timeout_ms: u64,
    /// Longest one write of replies to a client may take (a client that does not read).
    pub write_timeout_ms: u64,
    /// Longest fetch long poll.
    pub fetch_wait_ms_max: u32,
    /// Most bytes one fetch returns (at least one batch is always returned).
    pub fetch_bytes_max: usize,
    /// Longest a produce waits for commit before `NotEnoughReplicas`.
    pub produce_timeout_ms_max: u32,
    /// Most concurrent HTTP admin connections.
    pub http_connections_max: usize,
    /// Period of the retention pass over the partitions hosted here.
    pub retention_check_ms: u64,
    /// Segment file size of every Raft group log opened by this node (partitions and
    /// metadata). Retention deletes whole sealed segments, so this is its granularity.
    pub segment_bytes: u64,
    /// Produce is refused (`StorageFull`) while less than this would stay free on the
    /// data directory's filesystem; 0 turns the check off.
    pub storage_reserve_bytes: u64,
    /// Period of leader balancing (each leader hands its partitions back to their
    /// preferred replica once that replica is alive and caught up); 0 turns it off.
    pub leader_balance_ms: u64,
    /// A consumer group without members for this long is deleted with its committed
    /// offsets (`offsets.retention.ms`).
    pub offsets_retention_ms: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        // The broker's limits have one set of defaults, the broker's.
        let b = neo_broker::BrokerLimits::default();
        Limits {
            frame_size_bytes_max: 16 * 1024 * 1024,
            batch_bytes_max: b.batch_bytes_max,
            partitions_per_topic_max: b.partitions_per_topic_max,
            connections_max: 10_000,
            inflight_requests_max: 1024,
            inflight_request_bytes_max: neo_protocol::server::INFLIGHT_REQUEST_BYTES_MAX_DEFAULT,
            outbound_queue_bytes_max: neo_protocol::server::OUTBOUND_QUEUE_BYTES_MAX_DEFAULT,
            frame_read_timeout_ms: 30_000,
            write_timeout_ms: 30_000,
            fetch_wait_ms_max: b.fetch_wait_ms_max,
            fetch_bytes_max: b.fetch_bytes_max,
            produce_timeout_ms_max: b.produce_timeout_ms_max,
            http_connections_max: 64,
            retention_check_ms: 30_000,
            segment_bytes: 256 * 1024 * 1024,
            storage_reserve_bytes: 64 * 1024 * 1024,
            leader_balance_ms: 5_000,
            offsets_retention_ms: b.offsets_retention_ms,
        }
    }
}

/// A node's whole, validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// This node's id.
    pub node_id: NodeId,
    /// Data directory (sled metadata store + one directory per Raft group).
    pub data_dir: PathBuf,
    /// Neo RPC listener (port 0: any free port).
    pub listen: SocketAddr,
    /// gRPC listener.
    pub cluster_listen: SocketAddr,
    /// HTTP admin listener.
    pub http_listen: SocketAddr,
    /// How the node finds its cluster.
    pub bootstrap: Bootstrap,
    /// Client address handed out; `None`: the bound `listen` address.
    pub advertise_client: Option<String>,
    /// Cluster address other nodes use; `None`: the bound `cluster_listen` address.
    pub advertise_cluster: Option<String>,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter (tracing `EnvFilter` syntax).
    pub log_filter: String,
    /// When appended entries count as flushed.
    pub durability: Durability,
    /// Named limits.
    pub limits: Limits,
    /// Mutual TLS on the control plane (port 7071); `None`: plaintext.
    pub cluster_tls: Option<ClusterTlsFiles>,
    /// Security (`--auth` and friends); `None`: off.
    pub security: Option<crate::security::SecurityConfig>,
    /// TLS on the client port (`--tls-*`); `None`: plaintext.
    pub client_tls: Option<crate::security::ClientTlsFiles>,
    /// `--at-rest-key-file`: the node's key for topics encrypted at rest.
    pub at_rest_key_file: Option<PathBuf>,
    /// `--metrics-per-partition`: `/metrics` has each hosted partition's log start and
    /// end offsets (two series per partition: off by default).
    pub metrics_per_partition: bool,
    /// `--slow-request-ms`: a produce slower than this is logged at WARN with its
    /// phases; 0: never.
    pub slow_request_ms: u64,
    /// `--http-allowed-hosts`: extra host names (lowercase, no port) the console and
    /// the `/v1` API answer to; `["*"]`: any (see `crate::http` on DNS rebinding).
    pub http_allowed_hosts: Vec<String>,
    /// `--raft-timing`: the Raft timing of the node's groups.
    pub raft_timing: RaftTimingProfile,
}

/// The PEM files of cluster mTLS (checked when the config is resolved, loaded again at
/// start by [`ClusterTlsFiles::load`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterTlsFiles {
    /// This node's certificate chain, leaf first.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// The cluster CA certificate(s).
    pub ca: PathBuf,
    /// Name every peer certificate is checked against; `None`: the host of the peer's
    /// address (a DNS or IP SAN of its certificate).
    pub server_name: Option<String>,
}

impl ClusterTlsFiles {
    /// Reads and checks the files.
    pub fn load(&self) -> Result<neo_cluster::ClusterTls, neo_cluster::TlsError> {
        let tls = neo_cluster::ClusterTls::from_pem_files(&self.cert, &self.key, &self.ca)?;
        match &self.server_name {
            Some(name) => tls.with_server_name(name.clone()),
            None => Ok(tls),
        }
    }
}

fn invalid(key: &str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field_name(key),
        value: value.to_string(),
        reason: reason.into(),
    }
}

fn parse_num<T>(key: &str, value: &str, min: T, max: T) -> Result<T>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let v: T = value
        .trim()
        .parse()
        .map_err(|_| invalid(key, value, "not a number"))?;
    if v < min || v > max {
        return Err(invalid(key, value, format!("must be in {min}..={max}")));
    }
    Ok(v)
}

fn parse_socket(key: &str, value: &str) -> Result<SocketAddr> {
    value
        .trim()
        .parse()
        .map_err(|_| invalid(key, value, "expected IP:PORT (e.g. 127.0.0.1:7070)"))
}

/// `host:port` with a non-empty host and a valid port.
fn check_host_port(key: &str, value: &str) -> Result<String> {
    let v = value.trim();
    match v.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p != 0) => {
            Ok(v.to_string())
        }
        _ => Err(invalid(
            key,
            value,
            "expected HOST:PORT with a non-zero port",
        )),
    }
}

/// Reads the TOML file into a layer; unknown keys are errors (a typo must not pass
/// silently).
fn file_layer(path: &std::path::Path) -> Result<Layer> {
    let file_err = |reason: String| ConfigError::File {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()))?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| file_err(e.to_string()))?;
    let mut layer = Layer::default();
    for (key, value) in table {
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Array(items) if key == "superuser" => {
                let names: Option<Vec<&str>> = items.iter().map(|v| v.as_str()).collect();
                names
                    .ok_or_else(|| file_err("key \"superuser\": expected strings".into()))?
                    .join(",")
            }
            other => {
                return Err(file_err(format!(
                    "key {key:?}: expected a string or a number, found {}",
                    other.type_str()
                )));
            }
        };
        if !layer.set(&key, text) {
            return Err(file_err(format!("unknown key {key:?}")));
        }
    }
    Ok(layer)
}

impl Config {
    /// The configuration `args` (flags), the environment (read through `env`) and the
    /// `--config` file (named by the flag or `NEO_CONFIG`) describe, in that order of
    /// precedence, over the defaults.
    pub fn resolve(args: &RunArgs, env: &dyn Fn(&str) -> Option<String>) -> Result<Config> {
        let file = match args.config.clone().or_else(|| {
            env("NEO_CONFIG")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        }) {
            Some(path) => file_layer(&path)?,
            None => Layer::default(),
        };
        let l = Layer::from_args(args).over(Layer::from_env(env).over(file));
        Self::from_layer(l)
    }

    fn from_layer(l: Layer) -> Result<Config> {
        let node_id = match &l.id {
            Some(v) => parse_num("id", v, 1u64, u64::MAX)?,
            None => 1,
        };
        let data_dir = match &l.data_dir {
            Some(v) if v.trim().is_empty() => return Err(invalid("data_dir", v, "empty path")),
            Some(v) => PathBuf::from(v),
            None => PathBuf::from("./neo-data"),
        };
        let sock = |key: &str, v: &Option<String>, default: &str| match v {
            Some(v) => parse_socket(key, v),
            None => Ok(default.parse().expect("default address parses")),
        };
        let listen = sock("listen", &l.listen, "127.0.0.1:7070")?;
        let cluster_listen = sock("cluster_listen", &l.cluster_listen, "127.0.0.1:7071")?;
        let http_listen = sock("http_listen", &l.http_listen, "127.0.0.1:7072")?;
        let advertise_client = match &l.advertise_client {
            Some(v) => Some(check_host_port("advertise_client", v)?),
            None => None,
        };
        let mut advertise_cluster = match &l.advertise_cluster {
            Some(v) => Some(check_host_port("advertise_cluster", v)?),
            None => None,
        };
        let bootstrap = match (&l.peers, &l.join) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Conflict {
                    reason: "--peers and --join cannot be used together (NEO_PEERS / NEO_JOIN)"
                        .into(),
                });
            }
            (Some(p), None) => {
                let peers = neo_cluster::membership::parse_peers(p)
                    .map_err(|e| invalid("peers", p, e.to_string()))?;
                let Some(me) = peers.get(&node_id) else {
                    return Err(invalid(
                        "peers",
                        p,
                        format!("does not list this node (--id {node_id})"),
                    ));
                };
                if peers.contains_key(&0) {
                    return Err(invalid("peers", p, "node id 0 is reserved"));
                }
                advertise_cluster.get_or_insert_with(|| me.clone());
                Bootstrap::Static(peers)
            }
            (None, Some(j)) => Bootstrap::Join(check_host_port("join", j)?),
            (None, None) => Bootstrap::Single,
        };
        if advertise_client.is_none() && (listen.ip().is_unspecified() || listen.port() == 0) {
            // Port 0 is fine (the bound port is advertised); a wildcard IP is not an
            // address anyone can dial.
            if listen.ip().is_unspecified() {
                return Err(ConfigError::Conflict {
                    reason: format!(
                        "--listen {listen} is a wildcard address: set --advertise-client \
                         (NEO_ADVERTISE_CLIENT) to the address clients should dial"
                    ),
                });
            }
        }
        if advertise_cluster.is_none() && cluster_listen.ip().is_unspecified() {
            return Err(ConfigError::Conflict {
                reason: format!(
                    "--cluster-listen {cluster_listen} is a wildcard address: set \
                     --advertise-cluster (NEO_ADVERTISE_CLUSTER) or list this node in --peers"
                ),
            });
        }
        let cluster_tls = match (&l.cluster_tls_cert, &l.cluster_tls_key, &l.cluster_tls_ca) {
            (None, None, None) => {
                if l.cluster_tls_server_name.is_some() {
                    return Err(ConfigError::Conflict {
                        reason: "--cluster-tls-server-name needs --cluster-tls-cert, \
                                 --cluster-tls-key and --cluster-tls-ca"
                            .into(),
                    });
                }
                None
            }
            (Some(cert), Some(key), Some(ca)) => {
                let files = ClusterTlsFiles {
                    cert: PathBuf::from(cert),
                    key: PathBuf::from(key),
                    ca: PathBuf::from(ca),
                    server_name: l.cluster_tls_server_name.clone(),
                };
                // Peers hold this node to the id its certificate names (URI SAN
                // `neo-node:<id>`, docs/security.md): a certificate naming another node,
                // or none, is a configuration error.
                if let Err(e) = files.load().and_then(|t| t.check_node_id(node_id)) {
                    return Err(ConfigError::Conflict {
                        reason: format!(
                            "cluster TLS (--cluster-tls-cert {cert}, --cluster-tls-key {key}, \
                             --cluster-tls-ca {ca}): {e}"
                        ),
                    });
                }
                Some(files)
            }
            _ => {
                return Err(ConfigError::Conflict {
                    reason: "cluster TLS needs all three of --cluster-tls-cert, \
                             --cluster-tls-key and --cluster-tls-ca \
                             (NEO_CLUSTER_TLS_CERT / _KEY / _CA)"
                        .into(),
                });
            }
        };
        let log_format = match l.log_format.as_deref().map(str::trim) {
            None | Some("human") => LogFormat::Human,
            Some("json") => LogFormat::Json,
            Some(v) => return Err(invalid("log_format", v, "expected human or json")),
        };
        let raft_timing = match l.raft_timing.as_deref().map(str::trim) {
            None | Some("fast") => RaftTimingProfile::Fast,
            Some("classic") => RaftTimingProfile::Classic,
            Some(v) => return Err(invalid("raft_timing", v, "expected fast or classic")),
        };
        let log_filter = l.log.clone().unwrap_or_else(|| "info".to_string());
        let interval_ms = match &l.fsync_interval_ms {
            Some(v) => parse_num("fsync_interval_ms", v, 1u64, 60_000)?,
            None => 10,
        };
        let durability = match l.fsync.as_deref().map(str::trim) {
            None | Some("always") => {
                if l.fsync_interval_ms.is_some() {
                    return Err(ConfigError::Conflict {
                        reason: "--fsync-interval-ms needs --fsync interval".into(),
                    });
                }
                Durability::Fsync
            }
            Some("interval") => Durability::IntervalMs(interval_ms),
            Some(v) => return Err(invalid("fsync", v, "expected always or interval")),
        };
        let d = Limits::default();
        let num = |key: &str, v: &Option<String>, default: u64, min: u64, max: u64| match v {
            Some(v) => parse_num(key, v, min, max),
            None => Ok(default),
        };
        let limits = Limits {
            frame_size_bytes_max: num(
                "frame_size_bytes_max",
                &l.frame_size_bytes_max,
                d.frame_size_bytes_max as u64,
                64 * 1024,
                1 << 30,
            )? as usize,
            batch_bytes_max: num(
                "batch_bytes_max",
                &l.batch_bytes_max,
                d.batch_bytes_max as u64,
                1024,
                neo_raft::RECORD_BATCH_BYTES_MAX as u64,
            )? as usize,
            partitions_per_topic_max: num(
                "partitions_per_topic_max",
                &l.partitions_per_topic_max,
                u64::from(d.partitions_per_topic_max),
                1,
                u64::from(neo_broker::meta::PARTITIONS_PER_TOPIC_MAX),
            )? as u32,
            connections_max: num(
                "connections_max",
                &l.connections_max,
                d.connections_max as u64,
                1,
                1_000_000,
            )? as usize,
            inflight_requests_max: num(
                "inflight_requests_max",
                &l.inflight_requests_max,
                d.inflight_requests_max as u64,
                1,
                1_000_000,
            )? as usize,
            inflight_request_bytes_max: num(
                "inflight_request_bytes_max",
                &l.inflight_request_bytes_max,
                d.inflight_request_bytes_max as u64,
                64 * 1024,
                1 << 40,
            )? as usize,
            outbound_queue_bytes_max: num(
                "outbound_queue_bytes_max",
                &l.outbound_queue_bytes_max,
                d.outbound_queue_bytes_max as u64,
                64 * 1024,
                1 << 32,
            )? as usize,
            frame_read_timeout_ms: num(
                "frame_read_timeout_ms",
                &l.frame_read_timeout_ms,
                d.frame_read_timeout_ms,
                10,
                3_600_000,
            )?,
            write_timeout_ms: num(
                "write_timeout_ms",
                &l.write_timeout_ms,
                d.write_timeout_ms,
                10,
                3_600_000,
            )?,
            fetch_wait_ms_max: num(
                "fetch_wait_ms_max",
                &l.fetch_wait_ms_max,
                u64::from(d.fetch_wait_ms_max),
                0,
                300_000,
            )? as u32,
            fetch_bytes_max: num(
                "fetch_bytes_max",
                &l.fetch_bytes_max,
                d.fetch_bytes_max as u64,
                1024,
                1 << 30,
            )? as usize,
            produce_timeout_ms_max: num(
                "produce_timeout_ms_max",
                &l.produce_timeout_ms_max,
                u64::from(d.produce_timeout_ms_max),
                1,
                300_000,
            )? as u32,
            http_connections_max: d.http_connections_max,
            offsets_retention_ms: num(
                "offsets_retention_ms",
                &l.offsets_retention_ms,
                d.offsets_retention_ms,
                1_000,
                u64::MAX / 2,
            )?,
            retention_check_ms: num(
                "retention_check_ms",
                &l.retention_check_ms,
                d.retention_check_ms,
                10,
                86_400_000,
            )?,
            segment_bytes: num(
                "segment_bytes",
                &l.segment_bytes,
                d.segment_bytes,
                neo_raft::SEGMENT_BYTES_MIN,
                neo_raft::SEGMENT_BYTES_MAX,
            )?,
            storage_reserve_bytes: num(
                "storage_reserve_bytes",
                &l.storage_reserve_bytes,
                d.storage_reserve_bytes,
                0,
                u64::MAX / 2,
            )?,
            leader_balance_ms: match num(
                "leader_balance_ms",
                &l.leader_balance_ms,
                d.leader_balance_ms,
                0,
                86_400_000,
            )? {
                // Off, or at least 100 ms: each pass reads every hosted group's metrics.
                0 => 0,
                ms => ms.max(100),
            },
        };
        // A produce frame carries one batch plus a small envelope; a fetch response
        // carries up to fetch_bytes_max plus at least one (possibly larger) batch.
        let envelope_bytes = 64 * 1024;
        if limits.batch_bytes_max + envelope_bytes > limits.frame_size_bytes_max {
            return Err(ConfigError::Conflict {
                reason: format!(
                    "--frame-size-bytes-max {} must exceed --batch-bytes-max {} by at least {envelope_bytes}",
                    limits.frame_size_bytes_max, limits.batch_bytes_max
                ),
            });
        }
        if limits.fetch_bytes_max.max(neo_raft::RECORD_BATCH_BYTES_MAX) + envelope_bytes
            > limits.frame_size_bytes_max
        {
            return Err(ConfigError::Conflict {
                reason: format!(
                    "--frame-size-bytes-max {} must exceed --fetch-bytes-max {} (and the 1 MiB \
                     batch limit) by at least {envelope_bytes}",
                    limits.frame_size_bytes_max, limits.fetch_bytes_max
                ),
            });
        }
        let metrics_per_partition = match l.metrics_per_partition.as_deref().map(str::trim) {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(invalid(
                    "metrics_per_partition",
                    other,
                    "expected true or false",
                ));
            }
        };
        let slow_request_ms = num(
            "slow_request_ms",
            &l.slow_request_ms,
            DEFAULT_SLOW_REQUEST_MS,
            0,
            86_400_000,
        )?;
        let mut http_allowed_hosts = Vec::new();
        for host in l.http_allowed_hosts.as_deref().unwrap_or("").split(',') {
            let host = host.trim().to_ascii_lowercase();
            if host.is_empty() {
                continue;
            }
            let valid = host == "*"
                || host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
            if !valid {
                return Err(invalid(
                    "http_allowed_hosts",
                    &host,
                    "expected host names (letters, digits, '-', '.', '_') or *, comma-separated, without ports",
                ));
            }
            http_allowed_hosts.push(host);
        }
        let path = |v: &Option<String>| v.as_ref().map(PathBuf::from);
        let (security, client_tls) =
            crate::security::SecurityConfig::resolve(crate::security::SecuritySettings {
                auth: l.auth.as_deref(),
                jwt: crate::security::JwtFiles {
                    hs256_secret: path(&l.jwt_hs256_secret_file),
                    public_key: path(&l.jwt_public_key_file),
                    jwks: path(&l.jwt_jwks_file),
                    issuer: l.jwt_issuer.clone(),
                    audience: l.jwt_audience.clone(),
                    roles_claim: l.jwt_roles_claim.clone(),
                },
                superuser: l.superuser.as_deref(),
                metrics_open: l.metrics_open.as_deref(),
                tls_cert: l.tls_cert.as_deref(),
                tls_key: l.tls_key.as_deref(),
                tls_client_ca: l.tls_client_ca.as_deref(),
            })?;
        let alone = match &bootstrap {
            Bootstrap::Single => true,
            Bootstrap::Static(peers) => peers.len() == 1,
            Bootstrap::Join(_) => false,
        };
        if security.is_some() && cluster_tls.is_none() && !alone {
            // Raft and membership would be open to anyone reaching the cluster port.
            return Err(ConfigError::Conflict {
                reason: "security on (--auth) in a cluster of several nodes needs mutual TLS \
                         on the cluster port: --cluster-tls-cert, --cluster-tls-key and \
                         --cluster-tls-ca"
                    .into(),
            });
        }
        Ok(Config {
            node_id,
            data_dir,
            listen,
            cluster_listen,
            http_listen,
            bootstrap,
            advertise_client,
            advertise_cluster,
            log_format,
            log_filter,
            durability,
            limits,
            cluster_tls,
            security,
            client_tls,
            at_rest_key_file: path(&l.at_rest_key_file),
            metrics_per_partition,
            slow_request_ms,
            http_allowed_hosts,
            raft_timing,
        })
    }
}

#[cfg(test)]
mod tests;
