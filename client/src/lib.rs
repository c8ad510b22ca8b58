//! `neo-client`: the Rust client library for Neo, and the `neo` CLI.
//!
//! **Status: not built yet (issue 6).** This file is the map of what the crate will hold;
//! no function here pretends to work.
//!
//! # Layout (planned)
//! - `client`: `Client::connect(seeds)`, metadata cache, leader discovery, retries with
//!   backoff; refreshes metadata on `NotLeader{leader}` and on errors.
//! - `producer`: batching by size and linger into Qiss record batches, zstd, acks
//!   (`all`, `leader`, `none`), idempotence, partitioning by key hash or round robin.
//! - `consumer`: assign partitions, seek, poll; consumer groups and committed offsets.
//! - `queue`: point-to-point queue consumer with ack/nack.
//! - `admin`: topics, cluster status.
//! - `bin/neo`: the CLI (`topic`, `produce`, `consume`, `cluster status`, `bench`).
//!
//! # Invariants
//! - Depends only on `neo-protocol` and `qiss`: never on raft, cluster or storage.
#![forbid(unsafe_code)]
