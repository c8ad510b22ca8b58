//! `neo-chaos`: a fault runner against a docker compose cluster or local processes, a
//! workload that records every operation, and a history checker.
//!
//! **Status: not built yet (issue 7).** This file is the map of what the crate will hold.
//!
//! # Layout (planned)
//! - `workload`: producers with unique payloads and consumers; every operation recorded
//!   as invoke/ok/fail/unknown with timestamps; a final drain after healing.
//! - `faults`: kill -9, pause, isolate (iptables via nsenter), halves partition, packet
//!   loss, rolling restart, kill all; the same against local processes.
//! - `checker`: lost = 0, unexpected = 0, duplicates counted, per-partition order,
//!   identical replica digests, failover times.
#![forbid(unsafe_code)]
