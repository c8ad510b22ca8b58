//! Neo RPC: the framed binary protocol every Neo client speaks, a server with a
//! service registry, a multiplexed client, and the broker's API messages.
//!
//! The wire format is specified byte by byte in `docs/protocol.md`; this crate is its
//! reference implementation. Frames have a fixed 26-byte header (magic, version, kind,
//! flags, service/method id, correlation id, body length, CRC32) followed by a body in
//! the Qiss format.
//!
//! ```no_run
//! use std::time::Duration;
//! use neo_protocol::{ClientConfig, MethodBuilder, NeoClient, NeoConfig, NeoServer, RpcError, ServiceBuilder};
//!
//! # async fn demo() -> neo_protocol::Result<()> {
//! let mut server = NeoServer::new(NeoConfig::default());
//! server.register(
//!     ServiceBuilder::new("greeter").version("1.0").namespace("neo.example").method(
//!         MethodBuilder::new("hello")
//!             .input("String")
//!             .output("String")
//!             .timeout(Duration::from_secs(1))
//!             .sync_handler(|name: String| Ok::<_, RpcError>(format!("hello, {name}"))),
//!     ),
//! )?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let handle = server.start(listener)?;
//! let client = NeoClient::connect(handle.local_addr().to_string(), ClientConfig::default()).await?;
//! let greeting: String = client.call("greeter", "hello", "neo").await?;
//! assert_eq!(greeting, "hello, neo");
//! handle.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! | module | role |
//! |---|---|
//! | [`frame`] | the header layout, [`Kind`]s, flags, [`frame::decode`] / [`frame::encode`]: pure functions, no I/O |
//! | [`codec`] | [`FrameCodec`]: the frame functions as a tokio-util `Decoder`/`Encoder`; buffer and batch sizes |
//! | `server` | [`NeoServer`], [`NeoConfig`], accept loop + connection limit, graceful shutdown |
//! | `server::connection` | one connection: read, dispatch, batched writes, in-flight limit, heartbeats, drain |
//! | `server::registry` | [`ServiceBuilder`], [`MethodBuilder`], handlers, the id table, `neo.system/describe` |
//! | `server::handshake` | what an `Auth` frame does: the handshake, or a re-authentication (same principal: credential replaced, expiry re-armed; else `PrincipalMismatch` / `Unauthenticated`, connection kept) |
//! | `server::context` | [`RequestContext`]: peer address, mTLS identity, principal, connection id, receipt time |
//! | `server::observer` | [`ServerObserver`]: the optional hook told of connections opened/closed and requests answered (method, [`Answer`], duration), for the node's metrics |
//! | `server::shutdown` | the broadcast shutdown signal each connection listens to |
//! | [`client`] | [`NeoClient`]: one multiplexed connection (callers write, a reader task completes), timeouts, cancel, reconnect, subscriptions |
//! | `client::call` | [`Call`]: one unary call's future, a hand-written state machine (begin, dial, start, wait) |
//! | `client::calls` | the pending-call table: correlation id = generation and index, no hashing |
//! | `client::auth` | [`NeoClient::reauthenticate`]: a fresh token on the open connection, kept for reconnects |
//! | `client::pipeline` | [`Pipeline`]: a window of calls driven by one task (send, recv), no future or wake-up per call, written in half-window batches |
//! | [`tls`] | rustls (ring) config builders, [`PeerIdentity`] |
//! | [`auth`] | the [`Authenticator`] trait of the handshake and of re-authentication, [`Principal`] |
//! | [`error`] | the crate's [`Error`], wire [`ErrorCode`]s, [`RpcError`] |
//! | [`api`] | the broker's request/response types (produce, fetch, admin, groups, queues); produce's `records` and fetch's `batches` are `Bytes` that decode as slices of the frame |
//!
//! # Request flow
//!
//! ```text
//! client: call() ─ one lock: pending[id] = Waiting, encode into the shared out buffer
//!   └─ first caller of a burst: yield once (a lone call, none other pending and no
//!      batch of replies just in: no yield), then write the
//!      whole buffer itself ─────────────────────────────────────────────────────▶ socket
//!      (socket full / caller gone / ping, pong, cancel: the writer task writes)     │
//!                                                                                   │
//! server: read loop ◀─ read buffer: whole frames, up to a batch per write ◀─────────┘
//!   ├─ lookup (service_id, method_id) in the registry → UnknownService/UnknownMethod
//!   ├─ typed handlers decode the body (a slice of the read buffer) with
//!   │  `qiss::from_bytes`: `Bytes` fields share it, nothing is copied
//!   ├─ sync handler: run inline, reply
//!   └─ async / event handler: take an in-flight permit (or reply Busy), spawn with
//!      the method timeout; Cancel aborts it (its reply comes back through a queue)
//!        └─▶ out buffer: every reply of one read batch in one write ─▶ socket
//!                                                                        │
//! client: reader task ◀─ read_buf, decode every whole frame ◀────────────┘
//!   └─ one lock for the batch: pending[id] = Done(reply), collect wakers;
//!      unlock, wake ─▶ call() takes its reply
//!      (a Pipeline's call: its reply goes to the pipeline's queue, its slot is
//!      freed, and the pipeline is woken once per read)
//!   └─ one timer for all calls, armed for the earliest deadline ─▶ Timeout + Cancel
//! ```
//!
//! # Invariants
//!
//! - Decoding checks before it parses: an incomplete frame is `Ok(None)`, a length
//!   above `frame_size_bytes_max` is refused before anything is buffered for it, and no
//!   input panics (fuzzed: `protocol/fuzz`).
//! - A malformed frame gets an error frame (when the connection can still carry one)
//!   and its connection is closed; no other connection notices.
//! - Every request gets exactly one `Response` or `Error`, unless the client cancelled it.
//! - Every queue is bounded: in-flight requests (`Busy` beyond), writer queues
//!   (backpressure), subscription queues (`Lagged` beyond), connections (`Busy`).
//!
//! # Limits
//!
//! | name | default | where | beyond it |
//! |---|---|---|---|
//! | `frame_size_bytes_max` | 16 MiB | both sides | `FrameTooLarge`, connection closed |
//! | `inflight_requests_max` | 1024 / connection | server | retriable `Busy` reply |
//! | `connections_max` | 10 000 | server | `Busy` on correlation id 0, closed |
//! | `outbound_queue_frames_max` | 1024 | both sides | senders wait (backpressure) |
//! | `idle_timeout` | 10 min | server | connection closed |
//! | `heartbeat_interval` × `heartbeat_misses_max` | 5 s × 3 | both sides | peer declared dead, closed |
//! | method `timeout` / `request_timeout_default` | 30 s | server (async handlers) | `Timeout` reply |
//! | `call_timeout` | 30 s | client | `Error::Timeout`, `Cancel` sent |
//! | [`PIPELINE_WRITE_BATCH_FRAMES_DEFAULT`] | 32 | client `Pipeline` | queued requests written without waiting for `recv` |
//! | [`PIPELINE_IN_FLIGHT_MAX_DEFAULT`] | 4096 | client `Pipeline` | `send` refused with retriable `Busy` until `recv` |
//! | `compression_threshold_bytes` | 64 KiB | both sides | body zstd-compressed |
//! | `subscription_events_max` | 1024 | client | subscription cut off with `Lagged` |
//! | `shutdown_drain_timeout` | 30 s | server | in-flight requests aborted |
//! | `write_timeout` | 30 s | server | a peer that does not read its replies is disconnected |
//! | [`server::registry::SERVICES_MAX`] / `METHODS_PER_SERVICE_MAX` | 1024 | server | `RegistryFull` at registration |
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod client;
pub mod codec;
pub mod error;
pub mod frame;
pub mod server;
pub mod tls;

pub use auth::{AuthOk, Authenticator, ConnectionLease, PeerInfo, Principal, StaticTokens};
pub use client::{
    Call, CallOptions, ClientConfig, NeoClient, PIPELINE_IN_FLIGHT_MAX_DEFAULT,
    PIPELINE_WRITE_BATCH_FRAMES_DEFAULT, Pipeline, Subscription,
};
pub use codec::FrameCodec;
pub use error::{Error, ErrorCode, Result, RpcError};
pub use frame::{Frame, Kind};
/// The rustls this crate is built with (for TLS configs made elsewhere).
pub use rustls;
pub use server::context::RequestContext;
pub use server::observer::{Answer, AnsweredRequest, ServerObserver, error_code_name};
pub use server::registry::{
    EventSink, Method, MethodBuilder, MethodDescriptor, RegistryTable, ServiceBuilder,
    ServiceDescriptor,
};
pub use server::{NeoConfig, NeoServer, ServerHandle};
pub use tls::{ClientAuth, ClientTls, PeerIdentity};
pub use tokio_util::sync::CancellationToken;
