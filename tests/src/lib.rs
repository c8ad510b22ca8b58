//! `neo-tests`: end-to-end tests of real clusters of real `neo-node` processes on
//! loopback, driven through `neo-client` and the `neo` CLI.
//!
//! # Layout
//!
//! | module | role |
//! |---|---|
//! | [`cluster`] | [`TestCluster`]: start N `neo-node` processes on free loopback ports with static `--peers` (per node: spec changes and environment, `start_custom`, `set_env`), wait for `/ready`, kill -9, restart one or all on the same data dirs, node logs for failure messages; `replica_digest` |
//! | [`pki`] | [`TestPki`]: a throwaway CA and leaf certificates (PEM) for mutual-TLS tests (shared with the `neo-cluster` and `neo-node` tests) |
//! | [`run`] | [`with_cluster`] (a scenario on a fresh cluster, logs on failure), [`connect`], [`neo`] (the CLI against a cluster), [`neo_ok`] (the same, required to succeed) |
//! | [`secure`] | [`SecureCluster`]: the files and flags of a cluster with security on (`--auth jwt` with an HS256 secret file, issuer and superuser; cluster mTLS with one certificate per node), extra flags from the caller (shared by `tests/security.rs`, `tests/console.rs`, `tests/monitoring.rs`) |
//! | [`ports`] | [`free_port`]: loopback ports for nodes to bind later, below the ephemeral range (shared with `neo-chaos` and the `neo-node` tests) |
//! | `tests/cluster.rs` | 3 nodes, 3 partitions × replication 3, 100k messages through the client while the leader of a partition is killed; exactly-once and per-partition order of acknowledged messages; the killed node restarts, rejoins and catches up |
//! | `tests/cli.rs` | the `neo` CLI contract of `docs/cli.md`, by running the built binary |
//! | `tests/groups.rs` | consumer groups on 3 nodes: 4 members share 12 partitions exactly once; a killed member's partitions move after its session timeout and resume from its last commit; kill -9 of the coordinator and of a partition leader; committed offsets across a full restart |
//! | `tests/encryption.rs` | client-side end-to-end encryption on 1 node: plaintext back with the key ring, ciphertext only on the wire and on the node's disk, a typed error per record without the key, rotation, crypto-shredding by retiring a key, a dead-lettered record, a group member |
//! | `tests/security.rs` | security on 3 nodes (`--auth jwt,apikey`): hostile credentials refused, RBAC refusals exactly where a grant ends, grants/unassigns/API-key revocation reaching open connections on every node, roles from the token's claim |
//! | `tests/security_cli.rs` | the CLI's security contract: `--token`/`--api-key`, exit statuses 3 and 4, `neo role ...`, `neo user api-key ...` |
//! | `tests/security_tls.rs` | TLS on the client port, cluster mTLS and client-certificate principals on 3 nodes, through the CLI's `--tls-*` flags |
//! | `tests/monitoring.rs` | `deploy/`'s Grafana dashboard and Prometheus alert rules against 3 nodes (security on) scraped by a real `prometheus` (Debian's, on the PATH; skipped without it unless `NEO_CI`): every panel expression returns data, every rule is healthy, every metric name used has series; `promtool check`/`test rules` pass |
//! | `tests/disk_faults.rs` | disk faults on real processes: a full disk (a tmpfs the test mounts, as root or through `sudo -n`) answers `StorageFull`, keeps reads and resumes once space is freed, with and without the reserve; a failed `fdatasync` (the `failpoints` feature, `NEO_FAILPOINTS`) on one follower and on every replica in turn; a follower's segments damaged while it is down; acknowledged data read back and replica digests equal in every case |
//! | `tests/floods.rs` | connection floods past `--connections-max` (typed `Busy`), a slowloris and a client that never reads (closed), produce faster than the node takes (`Busy` under `--inflight-request-bytes-max`): a normal client's data reads back intact throughout |
//! | `tests/groups_cli.rs` | `neo consume --group`, `neo group list/describe/reset-offsets/delete`, `/v1/groups`, `/v1/groups/{name}` and the group metrics on a real cluster |
//!
//! # Binaries
//!
//! Tests start the binaries cargo built into the same target folder as the test
//! executable (`target/<profile>/neo-node`, `target/<profile>/neo`): `cargo test
//! --workspace` builds them. They are never built from here; a missing binary fails
//! the test with a message saying how to build it.
//!
//! # Invariants
//!
//! - Every process a [`TestCluster`] starts is killed when it is dropped (test
//!   failures included), and its data lives in a temporary folder removed with it.
//! - Every wait is bounded (readiness, leaders, consumption) and fails with the nodes'
//!   log tails, never hangs.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod cluster;
pub mod pki;
pub mod ports;
pub mod run;
pub mod secure;

pub use cluster::{TestCluster, binary, folder_contains};
pub use pki::TestPki;
pub use ports::{free_addr, free_port};
pub use run::{connect, neo, neo_ok, with_cluster};
pub use secure::SecureCluster;
