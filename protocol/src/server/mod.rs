//! The Neo RPC server: configuration, the accept loop with its connection limit, and
//! graceful shutdown. One task per connection lives in `connection`; the bounded queue
//! of its replies in `outbox`; its spawned requests in `spawned`.

pub(crate) mod connection;
pub(crate) mod context;
pub(crate) mod handshake;
pub mod observer;
pub(crate) mod outbox;
pub mod registry;
pub(crate) mod shutdown;
pub(crate) mod spawned;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::auth::{Authenticator, PeerInfo};
use crate::error::{ErrorCode, Result, RpcError};
use crate::frame::{self, EncodeOptions, FRAME_SIZE_BYTES_MAX_DEFAULT, Frame, Kind};
use crate::tls::PeerIdentity;
use observer::ServerObserver;
use registry::{Registry, ServiceBuilder};
use shutdown::Shutdown;

/// What a TLS connection reads from its socket in one go. rustls asks for 4 KiB at a
/// time; under it, this buffer turns a 1 MiB produce request into 16 reads instead of
/// 256 (docs/BENCHMARKS.md, "Security on vs off").
const TLS_READ_BUFFER_BYTES: usize = 64 * 1024;

/// Default of [`NeoConfig::outbound_queue_bytes_max`]: 32 MiB per connection.
pub const OUTBOUND_QUEUE_BYTES_MAX_DEFAULT: usize = 32 * 1024 * 1024;
/// Default of [`NeoConfig::inflight_request_bytes_max`]: 256 MiB per server.
pub const INFLIGHT_REQUEST_BYTES_MAX_DEFAULT: usize = 256 * 1024 * 1024;

/// Every limit of a server, named, with units last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeoConfig {
    /// Bound on one frame (26-byte header + body), in both directions, and on a
    /// decompressed body. Larger frames get `FrameTooLarge` and the connection closes.
    pub frame_size_bytes_max: usize,
    /// Bound on async and event requests in flight on one connection. One more gets a
    /// retriable `Busy` error (never an unbounded queue).
    pub inflight_requests_max: usize,
    /// Bound on open connections. One more is accepted only to be told `Busy` and closed.
    pub connections_max: usize,
    /// Bound on frames queued for a connection's writer; a full queue makes handlers
    /// (and the reader) wait, which pushes back on the client through TCP.
    pub outbound_queue_frames_max: usize,
    /// Bound on the bytes of replies and events of spawned handlers that one connection
    /// holds unwritten (queued, or written into a socket that does not drain). Handlers
    /// wait for room, so a peer that does not read pins at most this much (a single
    /// larger frame still goes, alone).
    pub outbound_queue_bytes_max: usize,
    /// Bound on the bytes of request bodies held by spawned (async and event) handlers
    /// across every connection of the server. A request that would go over it is
    /// answered a retriable `Busy` at once: producers faster than the disk are pushed
    /// back instead of growing memory.
    pub inflight_request_bytes_max: usize,
    /// A connection with nothing in flight and no request for this long is closed.
    pub idle_timeout: Duration,
    /// A silent peer is pinged after this long; heartbeats count as traffic.
    pub heartbeat_interval: Duration,
    /// A peer silent for `heartbeat_interval * heartbeat_misses_max` is dead: the
    /// connection is closed.
    pub heartbeat_misses_max: u32,
    /// Timeout of async handlers whose method sets none.
    pub request_timeout_default: Duration,
    /// Bodies of at least this size are zstd-compressed on the way out.
    pub compression_threshold_bytes: usize,
    /// Whether outgoing bodies carry a CRC32 (incoming ones are verified whenever flagged).
    pub checksum_bodies: bool,
    /// How long shutdown waits for in-flight requests before aborting them.
    pub shutdown_drain_timeout: Duration,
    /// Bound on one write of a connection's replies (what one step of its loop
    /// produced). A peer that does not read its replies for this long is disconnected,
    /// so it cannot hold its connection's heartbeats and buffers forever.
    pub write_timeout: Duration,
    /// How long a TLS handshake (and the first bytes) may take.
    pub tls_handshake_timeout: Duration,
    /// Bound on receiving one frame, from its first byte to its last. A peer that
    /// trickles a frame (slowloris) is told `Timeout` on correlation id 0 and closed.
    pub frame_read_timeout: Duration,
}

impl Default for NeoConfig {
    fn default() -> NeoConfig {
        NeoConfig {
            frame_size_bytes_max: FRAME_SIZE_BYTES_MAX_DEFAULT,
            inflight_requests_max: 1024,
            connections_max: 10_000,
            outbound_queue_frames_max: 1024,
            outbound_queue_bytes_max: OUTBOUND_QUEUE_BYTES_MAX_DEFAULT,
            inflight_request_bytes_max: INFLIGHT_REQUEST_BYTES_MAX_DEFAULT,
            idle_timeout: Duration::from_secs(600),
            heartbeat_interval: Duration::from_secs(5),
            heartbeat_misses_max: 3,
            request_timeout_default: Duration::from_secs(30),
            compression_threshold_bytes: 64 * 1024,
            checksum_bodies: false,
            shutdown_drain_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            tls_handshake_timeout: Duration::from_secs(10),
            frame_read_timeout: Duration::from_secs(30),
        }
    }
}

impl NeoConfig {
    pub(crate) fn encode_options(&self) -> EncodeOptions {
        EncodeOptions {
            frame_size_bytes_max: self.frame_size_bytes_max,
            compression_threshold_bytes: self.compression_threshold_bytes,
            checksum_bodies: self.checksum_bodies,
        }
    }
}

/// What every connection task shares.
pub(crate) struct ServerShared {
    pub(crate) config: NeoConfig,
    pub(crate) registry: Registry,
    pub(crate) authenticator: Option<Arc<dyn Authenticator>>,
    pub(crate) observer: Option<Arc<dyn ServerObserver>>,
    /// Bytes of request bodies held by spawned handlers, server-wide
    /// (`inflight_request_bytes_max` permits).
    pub(crate) request_bytes: Arc<Semaphore>,
}

/// Ids of the connections of this process (every server), for request ids in logs.
static CONNECTION_IDS: AtomicU64 = AtomicU64::new(1);

/// A Neo RPC server being assembled: register services, then [`NeoServer::serve`] or
/// [`NeoServer::start`].
pub struct NeoServer {
    config: NeoConfig,
    registry: Registry,
    authenticator: Option<Arc<dyn Authenticator>>,
    tls: Option<Arc<rustls::ServerConfig>>,
    observer: Option<Arc<dyn ServerObserver>>,
}

impl std::fmt::Debug for NeoServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NeoServer")
            .field("config", &self.config)
            .field("authenticator", &self.authenticator.is_some())
            .field("tls", &self.tls.is_some())
            .field("observer", &self.observer.is_some())
            .finish_non_exhaustive()
    }
}

impl NeoServer {
    /// A server with these limits and no services yet.
    pub fn new(config: NeoConfig) -> NeoServer {
        NeoServer {
            config,
            registry: Registry::new(),
            authenticator: None,
            tls: None,
            observer: None,
        }
    }

    /// Register a service; returns its wire id. Names must be unique.
    pub fn register(&mut self, service: ServiceBuilder) -> Result<u16> {
        self.registry.register(service)
    }

    /// Require the authentication handshake, checked by `authenticator`.
    pub fn with_authenticator(mut self, authenticator: Arc<dyn Authenticator>) -> NeoServer {
        self.authenticator = Some(authenticator);
        self
    }

    /// Tell `observer` about connections and answered requests (metrics).
    pub fn with_observer(mut self, observer: Arc<dyn ServerObserver>) -> NeoServer {
        self.observer = Some(observer);
        self
    }

    /// Serve TLS (see [`crate::tls::server_config`]; mTLS if it verifies clients).
    pub fn with_tls(mut self, config: Arc<rustls::ServerConfig>) -> NeoServer {
        self.tls = Some(config);
        self
    }

    /// Serve on `listener` in a background task; the handle stops it.
    pub fn start(self, listener: TcpListener) -> Result<ServerHandle> {
        let local_addr = listener.local_addr()?;
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let serve = self.serve(listener, async move {
            let _ = stop_rx.await;
        });
        let join = tokio::spawn(async move {
            if let Err(err) = serve.await {
                tracing::error!(%err, "neo rpc server stopped");
            }
        });
        Ok(ServerHandle {
            local_addr,
            stop: Some(stop_tx),
            join,
        })
    }

    /// Serve on `listener` until `shutdown` completes, then stop accepting, let every
    /// connection drain its in-flight requests (up to `shutdown_drain_timeout`) and
    /// return once every connection task has ended.
    pub async fn serve(
        mut self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<()> {
        self.registry.freeze()?;
        let request_bytes = Arc::new(Semaphore::new(
            self.config
                .inflight_request_bytes_max
                .clamp(1, Semaphore::MAX_PERMITS),
        ));
        let shared = Arc::new(ServerShared {
            request_bytes,
            config: self.config,
            registry: self.registry,
            authenticator: self.authenticator,
            observer: self.observer,
        });
        let tls = self.tls.map(tokio_rustls::TlsAcceptor::from);
        let (notify_shutdown, _) = broadcast::channel::<()>(1);
        // Each connection task holds a clone; `recv` returns `None` once all are gone.
        let (drained_tx, mut drained_rx) = mpsc::channel::<()>(1);
        let connections = Arc::new(Semaphore::new(shared.config.connections_max));
        tokio::pin!(shutdown);
        loop {
            let (socket, peer_addr) = tokio::select! {
                _ = &mut shutdown => break,
                accepted = accept(&listener) => accepted,
            };
            let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
                tokio::spawn(refuse(socket, shared.config.encode_options()));
                continue;
            };
            let shared = Arc::clone(&shared);
            let tls = tls.clone();
            let shutdown = Shutdown::new(notify_shutdown.subscribe());
            let drained_tx = drained_tx.clone();
            let id = CONNECTION_IDS.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                if let Some(o) = &shared.observer {
                    o.connection_opened(peer_addr);
                }
                let observer = shared.observer.clone();
                if let Err(err) = run_connection(socket, peer_addr, id, shared, tls, shutdown).await
                {
                    tracing::debug!(%peer_addr, %err, "connection ended with an error");
                }
                if let Some(o) = observer {
                    o.connection_closed(peer_addr);
                }
                drop(permit);
                drop(drained_tx);
            });
        }
        // Stop accepting, tell every connection, and wait for them to drain. Each
        // connection's drain is bounded (in-flight requests by `shutdown_drain_timeout`,
        // its last writes by `write_timeout` and the writer flush); this bound is the
        // sum, so a connection task that is stuck for another reason cannot hold
        // shutdown forever.
        drop(listener);
        drop(notify_shutdown);
        drop(drained_tx);
        let bound = shared.config.shutdown_drain_timeout
            + shared.config.write_timeout
            + connection::WRITER_FLUSH_TIMEOUT;
        if tokio::time::timeout(bound, drained_rx.recv())
            .await
            .is_err()
        {
            tracing::warn!(
                ?bound,
                "connections still open after the shutdown drain bound"
            );
        }
        Ok(())
    }
}

/// Accept with a short backoff on errors (e.g. out of file descriptors), so a
/// transient failure neither spins nor stops the server.
async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    let mut backoff = Duration::from_millis(1);
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(err) => {
                tracing::warn!(%err, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Over `connections_max`: say `Busy` on connection-level correlation id 0, then close.
async fn refuse(mut socket: TcpStream, options: EncodeOptions) {
    let err = RpcError::new(ErrorCode::Busy, "connections_max reached");
    let mut buf = bytes::BytesMut::new();
    if let Ok(body) = qiss::to_vec(&err) {
        let frame = Frame {
            kind: Kind::Error,
            service_id: 0,
            method_id: 0,
            correlation_id: 0,
            body: body.into(),
        };
        if frame::encode(&frame, &options, &mut buf).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(1), socket.write_all(&buf)).await;
        }
    }
    let _ = socket.shutdown().await;
}

async fn run_connection(
    socket: TcpStream,
    peer_addr: SocketAddr,
    id: u64,
    shared: Arc<ServerShared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: Shutdown,
) -> Result<()> {
    // Small frames must not wait for Nagle: every reply is written in one go anyway.
    socket.set_nodelay(true)?;
    match tls {
        None => {
            let (reader, writer) = socket.into_split();
            let peer = PeerInfo {
                addr: peer_addr,
                identity: None,
            };
            connection::serve(reader, writer, peer, id, shared, shutdown).await
        }
        Some(acceptor) => {
            let handshake = tokio::time::timeout(
                shared.config.tls_handshake_timeout,
                acceptor.accept(BufReader::with_capacity(TLS_READ_BUFFER_BYTES, socket)),
            );
            let stream = handshake
                .await
                .map_err(|_| crate::Error::Tls("handshake timed out".into()))?
                .map_err(|err| crate::Error::Tls(err.to_string()))?;
            let identity = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(PeerIdentity::from_chain);
            let (reader, writer) = tokio::io::split(stream);
            let peer = PeerInfo {
                addr: peer_addr,
                identity,
            };
            connection::serve(reader, writer, peer, id, shared, shutdown).await
        }
    }
}

/// A running server started with [`NeoServer::start`].
#[derive(Debug)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    join: JoinHandle<()>,
}

impl ServerHandle {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Graceful shutdown: stop accepting, drain in-flight requests, wait for every
    /// connection task to end.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.join).await;
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        // Dropping the handle without `shutdown` still stops the server (gracefully, in
        // the background).
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
