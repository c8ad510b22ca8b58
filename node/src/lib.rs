//! `neo-node`: the broker binary's library: config, wiring, broker service handlers,
//! HTTP admin.
//!
//! **Status: not built yet (issue 6).** This file is the map of what the crate will hold;
//! no function here pretends to work.
//!
//! # Layout (planned)
//! - `config`: flags > environment (`NEO_*`) > TOML file; invalid config is an error at
//!   start. No arguments means the embedded default: a single-node cluster with data in
//!   `./neo-data` on 127.0.0.1:7070 (Neo RPC), :7071 (gRPC), :7072 (HTTP).
//! - `broker/`: one file per API method (produce, fetch, admin, groups, queues), each
//!   taking an authorization proof from `neo-security`.
//! - `http`: `/health`, `/ready`, `/metrics` (Prometheus text).
//! - `bin/neo-node`: parses config, starts the three listeners, shuts down by broadcast.
//!
//! # Request flow (planned)
//! Neo RPC frame → authenticate/authorize → partition group propose (`neo-raft`) →
//! commit on a quorum → reply with the base offset.
#![forbid(unsafe_code)]
