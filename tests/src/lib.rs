//! `neo-tests`: end-to-end tests of real clusters of real `neo-node` processes on
//! loopback.
//!
//! **Status: not built yet (issue 6).** This file is the map of what the crate will hold.
//!
//! # Layout (planned)
//! - `cluster`: a harness that starts N `neo-node` processes on free loopback ports,
//!   kills (SIGKILL), pauses (SIGSTOP) and restarts them.
//! - `tests/`: produce/consume through the client across leader kills; the CLI contract.
#![forbid(unsafe_code)]
