//! [`NeoClient`]: one connection, many concurrent calls.
//!
//! ```text
//!  call() ─┐  register oneshot in `pending[id]`      reader task ── frames ──▶ pending[id].send
//!  call() ─┼─▶ bounded mpsc of Frames ─▶ writer task ─ one write per batch ─▶ socket
//!  call() ─┘
//! ```
//!
//! - Calls are multiplexed by correlation id (from 1; 0 is the connection itself), so
//!   any number of tasks pipeline on one socket. The client is an `Arc`: clone freely.
//! - A call ends with its reply, its timeout, its cancellation token, or the
//!   connection's end. Whenever it ends without a reply (timeout, cancel, or the caller
//!   dropping the future) a `Cancel` frame tells the server to stop.
//! - The reader pings a silent server every `heartbeat_interval` and drops the
//!   connection after `heartbeat_misses_max` silent intervals; pending calls then fail
//!   with a retriable error and the next call reconnects (with exponential backoff).

use std::collections::HashMap;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use crate::auth::AuthOk;
use crate::codec::{FrameCodec, READ_BUFFER_BYTES, write_loop};
use crate::error::{Error, Result, RpcError};
use crate::frame::{
    EncodeOptions, FRAME_SIZE_BYTES_MAX_DEFAULT, Frame, FrameError, HEADER_LEN, Kind,
};
use crate::server::registry::{DESCRIBE_METHOD_ID, RegistryTable, SYSTEM_SERVICE_ID};
use crate::tls::ClientTls;

/// Every knob of a client, named, with units last.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Bound on one frame in both directions (must not exceed the server's).
    pub frame_size_bytes_max: usize,
    /// Request bodies of at least this size are zstd-compressed.
    pub compression_threshold_bytes: usize,
    /// Whether request bodies carry a CRC32.
    pub checksum_bodies: bool,
    /// Timeout of calls that do not set their own.
    pub call_timeout: Duration,
    /// Bound on one TCP connect (+ TLS handshake + auth handshake) attempt.
    pub connect_timeout: Duration,
    /// A silent server is pinged after this long.
    pub heartbeat_interval: Duration,
    /// A server silent for `heartbeat_interval * heartbeat_misses_max` is dead.
    pub heartbeat_misses_max: u32,
    /// First wait between reconnect attempts; doubles each attempt.
    pub reconnect_backoff_initial: Duration,
    /// Upper bound of the wait between reconnect attempts.
    pub reconnect_backoff_max: Duration,
    /// Connect attempts per call before it fails with `Connect`.
    pub reconnect_attempts_max: u32,
    /// Bound on frames queued for the writer (callers wait when it is full).
    pub outbound_queue_frames_max: usize,
    /// Bound on undelivered events per subscription; a subscriber that falls further
    /// behind is cut off (`Lagged`) rather than stalling every other call.
    pub subscription_events_max: usize,
    /// TLS to the server, if any.
    pub tls: Option<ClientTls>,
    /// Token for the authentication handshake, sent right after connecting.
    pub auth_token: Option<Vec<u8>>,
}

impl Default for ClientConfig {
    fn default() -> ClientConfig {
        ClientConfig {
            frame_size_bytes_max: FRAME_SIZE_BYTES_MAX_DEFAULT,
            compression_threshold_bytes: 64 * 1024,
            checksum_bodies: false,
            call_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            heartbeat_interval: Duration::from_secs(5),
            heartbeat_misses_max: 3,
            reconnect_backoff_initial: Duration::from_millis(50),
            reconnect_backoff_max: Duration::from_secs(2),
            reconnect_attempts_max: 5,
            outbound_queue_frames_max: 1024,
            subscription_events_max: 1024,
            tls: None,
            auth_token: None,
        }
    }
}

impl ClientConfig {
    fn encode_options(&self) -> EncodeOptions {
        EncodeOptions {
            frame_size_bytes_max: self.frame_size_bytes_max,
            compression_threshold_bytes: self.compression_threshold_bytes,
            checksum_bodies: self.checksum_bodies,
        }
    }
}

/// Per-call options.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// Overrides the client's `call_timeout`.
    pub timeout: Option<Duration>,
    /// Cancelling this token ends the call with `Cancelled` and tells the server.
    pub cancel: Option<CancellationToken>,
}

impl CallOptions {
    /// Options with this timeout.
    pub fn timeout(timeout: Duration) -> CallOptions {
        CallOptions {
            timeout: Some(timeout),
            cancel: None,
        }
    }

    /// Options with this cancellation token.
    pub fn cancel_on(token: CancellationToken) -> CallOptions {
        CallOptions {
            timeout: None,
            cancel: Some(token),
        }
    }
}

/// Where a reply goes.
enum Pending {
    Unary(oneshot::Sender<Result<Bytes>>),
    Stream(mpsc::Sender<Result<Bytes>>),
}

/// Why a connection ended, kept to tell late callers.
#[derive(Debug, Clone)]
enum Closed {
    Eof,
    Unresponsive(Duration),
    Remote(RpcError),
    Frame(FrameError),
}

impl Closed {
    fn to_error(&self) -> Error {
        match self {
            Closed::Eof => Error::ConnectionClosed,
            Closed::Unresponsive(silent_for) => Error::PeerUnresponsive {
                silent_for: *silent_for,
            },
            Closed::Remote(err) => Error::Rpc(err.clone()),
            Closed::Frame(err) => Error::Frame(err.clone()),
        }
    }
}

struct PendingState {
    /// Set once, when the connection ends; no call registers after that.
    closed: Option<Closed>,
    calls: HashMap<u64, Pending>,
}

/// One live connection: the writer's queue, the pending calls, and the name table.
struct Connection {
    tx: mpsc::Sender<Frame>,
    state: Mutex<PendingState>,
    next_id: AtomicU64,
    /// Stops the reader and writer (client dropped, or connection failed).
    stop: CancellationToken,
    /// `neo.system/describe`, fetched on the first call by name.
    table: tokio::sync::OnceCell<RegistryTable>,
    principal: Mutex<Option<String>>,
}

impl Connection {
    fn is_closed(&self) -> bool {
        self.lock().closed.is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PendingState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn register(&self, pending: Pending) -> Result<u64> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut state = self.lock();
        if let Some(closed) = &state.closed {
            return Err(closed.to_error());
        }
        state.calls.insert(id, pending);
        Ok(id)
    }

    /// Forget a call that ended without a reply and tell the server to stop it. The
    /// cancel is best effort: with a full queue it is dropped (the reply, if any, will
    /// be ignored).
    fn abandon(&self, id: u64) {
        let removed = self.lock().calls.remove(&id).is_some();
        if removed {
            let _ = self.tx.try_send(Frame::control(Kind::Cancel, id));
        }
    }

    fn fail_all(&self, closed: Closed) {
        let calls = {
            let mut state = self.lock();
            if state.closed.is_none() {
                state.closed = Some(closed.clone());
            }
            std::mem::take(&mut state.calls)
        };
        for (_, pending) in calls {
            match pending {
                Pending::Unary(tx) => {
                    let _ = tx.send(Err(closed.to_error()));
                }
                Pending::Stream(tx) => {
                    let _ = tx.try_send(Err(closed.to_error()));
                }
            }
        }
        self.stop.cancel();
    }

    /// Route one frame from the server. `Err` ends the connection.
    fn dispatch(&self, frame: Frame) -> std::result::Result<(), Closed> {
        match frame.kind {
            Kind::Response | Kind::Error => {
                if frame.kind == Kind::Error && frame.correlation_id == 0 {
                    // About the connection as a whole (e.g. Busy at connections_max).
                    return Err(Closed::Remote(RpcError::from_body(&frame.body)));
                }
                let pending = self.lock().calls.remove(&frame.correlation_id);
                let result = if frame.kind == Kind::Response {
                    Ok(frame.body)
                } else {
                    Err(Error::Rpc(RpcError::from_body(&frame.body)))
                };
                match pending {
                    Some(Pending::Unary(tx)) => {
                        let _ = tx.send(result);
                    }
                    // `Response` ends a stream: dropping the sender ends it.
                    Some(Pending::Stream(tx)) => {
                        if let Err(err) = result {
                            let _ = tx.try_send(Err(err));
                        }
                    }
                    // Cancelled or timed out meanwhile: ignore.
                    None => {}
                }
                Ok(())
            }
            Kind::Event => {
                let mut state = self.lock();
                let Some(Pending::Stream(tx)) = state.calls.get(&frame.correlation_id) else {
                    return Ok(());
                };
                match tx.try_send(Ok(frame.body)) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        // Cut off a subscriber that fell behind instead of stalling the
                        // connection for every other call.
                        let capacity = tx.max_capacity();
                        if let Some(Pending::Stream(tx)) = state.calls.remove(&frame.correlation_id)
                        {
                            drop(state);
                            let _ = self
                                .tx
                                .try_send(Frame::control(Kind::Cancel, frame.correlation_id));
                            // Make room for the error: the subscriber reads it after the
                            // events it already has.
                            tokio::spawn(async move {
                                let _ = tx.send(Err(Error::Lagged { capacity })).await;
                            });
                        }
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        state.calls.remove(&frame.correlation_id);
                    }
                }
                Ok(())
            }
            Kind::Ping => {
                let _ = self
                    .tx
                    .try_send(Frame::control(Kind::Pong, frame.correlation_id));
                Ok(())
            }
            Kind::Pong => Ok(()),
            Kind::Request | Kind::Auth | Kind::Cancel => {
                Err(Closed::Frame(FrameError::UnknownKind {
                    found: frame.kind as u8,
                }))
            }
        }
    }
}

/// Stops the connection when the last client clone goes away.
struct Inner {
    addr: String,
    config: ClientConfig,
    current: Mutex<Option<Arc<Connection>>>,
    /// Serialises reconnects so that many callers do not dial at once.
    connecting: tokio::sync::Mutex<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(conn) = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            conn.stop.cancel();
        }
    }
}

/// A Neo RPC client: one multiplexed connection, reconnected on demand. Cheap to clone;
/// every clone shares the connection.
#[derive(Clone)]
pub struct NeoClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for NeoClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NeoClient")
            .field("addr", &self.inner.addr)
            .finish_non_exhaustive()
    }
}

impl NeoClient {
    /// Connect to `addr` (`host:port`), with the handshakes the config asks for.
    pub async fn connect(addr: impl Into<String>, config: ClientConfig) -> Result<NeoClient> {
        let client = NeoClient {
            inner: Arc::new(Inner {
                addr: addr.into(),
                config,
                current: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
            }),
        };
        client.connection().await?;
        Ok(client)
    }

    /// The principal the server established in the handshake (empty without an
    /// authenticator; `None` before the handshake or without a token).
    pub async fn principal(&self) -> Result<Option<String>> {
        let conn = self.connection().await?;
        let principal = conn
            .principal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Ok(principal)
    }

    /// Call `service`/`method` with a Qiss-encoded request, decoding the reply.
    pub async fn call<Req, Resp>(&self, service: &str, method: &str, request: &Req) -> Result<Resp>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        self.call_with(service, method, request, CallOptions::default())
            .await
    }

    /// [`NeoClient::call`] with per-call options (timeout, cancellation).
    pub async fn call_with<Req, Resp>(
        &self,
        service: &str,
        method: &str,
        request: &Req,
        options: CallOptions,
    ) -> Result<Resp>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let body = Bytes::from(qiss::to_vec(request)?);
        let reply = self.call_raw_with(service, method, body, options).await?;
        Ok(qiss::from_slice(&reply)?)
    }

    /// Call with raw body bytes (no Qiss on either side).
    pub async fn call_raw(&self, service: &str, method: &str, body: Bytes) -> Result<Bytes> {
        self.call_raw_with(service, method, body, CallOptions::default())
            .await
    }

    /// [`NeoClient::call_raw`] with per-call options.
    pub async fn call_raw_with(
        &self,
        service: &str,
        method: &str,
        body: Bytes,
        options: CallOptions,
    ) -> Result<Bytes> {
        let (service_id, method_id) = self.resolve(service, method).await?;
        self.call_raw_by_id(service_id, method_id, body, options)
            .await
    }

    /// Call by wire ids, skipping name resolution (the fastest path).
    pub async fn call_raw_by_id(
        &self,
        service_id: u16,
        method_id: u16,
        body: Bytes,
        options: CallOptions,
    ) -> Result<Bytes> {
        let conn = self.connection().await?;
        self.unary(&conn, Kind::Request, service_id, method_id, body, options)
            .await
    }

    /// The server's registry table (`neo.system/describe`).
    pub async fn describe(&self) -> Result<RegistryTable> {
        let conn = self.connection().await?;
        Ok(self.table(&conn).await?.clone())
    }

    /// The wire ids of `service`/`method`, from the table cached per connection.
    pub async fn resolve(&self, service: &str, method: &str) -> Result<(u16, u16)> {
        let conn = self.connection().await?;
        Ok(self.table(&conn).await?.resolve(service, method)?)
    }

    /// Open a subscription: the server pushes events until it ends the stream, the
    /// subscription is dropped (which cancels it), or the connection ends.
    pub async fn subscribe<Req, Ev>(
        &self,
        service: &str,
        method: &str,
        request: &Req,
    ) -> Result<Subscription<Ev>>
    where
        Req: Serialize + ?Sized,
        Ev: DeserializeOwned,
    {
        let body = Bytes::from(qiss::to_vec(request)?);
        let (service_id, method_id) = self.resolve(service, method).await?;
        let conn = self.connection().await?;
        self.check_size(&body)?;
        let (tx, rx) = mpsc::channel(self.inner.config.subscription_events_max.max(1));
        let id = conn.register(Pending::Stream(tx))?;
        let guard = CallGuard {
            conn: Arc::clone(&conn),
            id,
            armed: true,
        };
        let frame = Frame {
            kind: Kind::Request,
            service_id,
            method_id,
            correlation_id: id,
            body,
        };
        conn.tx
            .send(frame)
            .await
            .map_err(|_| Error::ConnectionClosed)?;
        Ok(Subscription {
            rx,
            guard,
            _event: PhantomData,
        })
    }

    async fn table<'c>(&self, conn: &'c Connection) -> Result<&'c RegistryTable> {
        conn.table
            .get_or_try_init(|| async {
                let body = self
                    .unary(
                        conn,
                        Kind::Request,
                        SYSTEM_SERVICE_ID,
                        DESCRIBE_METHOD_ID,
                        Bytes::new(),
                        CallOptions::default(),
                    )
                    .await?;
                Ok::<_, Error>(qiss::from_slice::<RegistryTable>(&body)?)
            })
            .await
    }

    fn check_size(&self, body: &Bytes) -> Result<()> {
        let max = self.inner.config.frame_size_bytes_max;
        if HEADER_LEN + body.len() > max {
            return Err(Error::Frame(FrameError::TooLarge {
                len: (HEADER_LEN + body.len()) as u64,
                max,
                correlation_id: 0,
            }));
        }
        Ok(())
    }

    async fn unary(
        &self,
        conn: &Connection,
        kind: Kind,
        service_id: u16,
        method_id: u16,
        body: Bytes,
        options: CallOptions,
    ) -> Result<Bytes> {
        self.check_size(&body)?;
        let (tx, rx) = oneshot::channel();
        let id = conn.register(Pending::Unary(tx))?;
        // From here on, leaving early (timeout, cancel, the caller dropping this future)
        // sends a Cancel.
        let mut guard = CallGuard {
            conn,
            id,
            armed: true,
        };
        let frame = Frame {
            kind,
            service_id,
            method_id,
            correlation_id: id,
            body,
        };
        conn.tx
            .send(frame)
            .await
            .map_err(|_| Error::ConnectionClosed)?;
        let timeout = options.timeout.unwrap_or(self.inner.config.call_timeout);
        let reply = async { rx.await.unwrap_or(Err(Error::ConnectionClosed)) };
        let result = match options.cancel {
            None => tokio::time::timeout(timeout, reply)
                .await
                .map_err(|_| Error::Timeout { after: timeout }),
            Some(token) => tokio::select! {
                result = tokio::time::timeout(timeout, reply) => result.map_err(|_| Error::Timeout { after: timeout }),
                _ = token.cancelled() => Err(Error::Cancelled),
            },
        };
        if let Ok(reply) = result {
            guard.armed = false;
            return reply;
        }
        result.and_then(|r| r)
    }

    /// The live connection, or a new one (with backoff between failed attempts).
    async fn connection(&self) -> Result<Arc<Connection>> {
        if let Some(conn) = self.current() {
            return Ok(conn);
        }
        let _dialing = self.inner.connecting.lock().await;
        if let Some(conn) = self.current() {
            return Ok(conn);
        }
        let config = &self.inner.config;
        let mut backoff = config.reconnect_backoff_initial;
        let attempts_max = config.reconnect_attempts_max.max(1);
        let mut last = String::new();
        for attempt in 1..=attempts_max {
            match tokio::time::timeout(config.connect_timeout, self.dial()).await {
                Ok(Ok(conn)) => {
                    *self.inner.current.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(Arc::clone(&conn));
                    return Ok(conn);
                }
                // A rejected token will be rejected again: do not retry it.
                Ok(Err(err @ Error::Rpc(_))) => return Err(err),
                Ok(Err(err)) => last = err.to_string(),
                Err(_) => last = format!("timed out after {:?}", config.connect_timeout),
            }
            tracing::debug!(addr = %self.inner.addr, attempt, %last, "connect failed");
            if attempt < attempts_max {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(config.reconnect_backoff_max);
            }
        }
        Err(Error::Connect {
            addr: self.inner.addr.clone(),
            attempts: attempts_max,
            last,
        })
    }

    fn current(&self) -> Option<Arc<Connection>> {
        let current = self.inner.current.lock().unwrap_or_else(|e| e.into_inner());
        current.as_ref().filter(|conn| !conn.is_closed()).cloned()
    }

    async fn dial(&self) -> Result<Arc<Connection>> {
        let config = &self.inner.config;
        let socket = TcpStream::connect(self.inner.addr.as_str()).await?;
        socket.set_nodelay(true)?;
        let conn = match &config.tls {
            None => {
                let (reader, writer) = socket.into_split();
                start_connection(reader, writer, config)
            }
            Some(tls) => {
                let connector = tokio_rustls::TlsConnector::from(Arc::clone(&tls.config));
                let stream = connector
                    .connect(tls.server_name.clone(), socket)
                    .await
                    .map_err(|err| Error::Tls(err.to_string()))?;
                let (reader, writer) = tokio::io::split(stream);
                start_connection(reader, writer, config)
            }
        };
        if let Some(token) = &config.auth_token {
            let body = self
                .unary(
                    &conn,
                    Kind::Auth,
                    0,
                    0,
                    Bytes::from(token.clone()),
                    CallOptions::timeout(config.connect_timeout),
                )
                .await;
            let body = match body {
                Ok(body) => body,
                Err(err) => {
                    conn.stop.cancel();
                    return Err(err);
                }
            };
            let ok: AuthOk = qiss::from_slice(&body)?;
            *conn.principal.lock().unwrap_or_else(|e| e.into_inner()) = Some(ok.principal);
        }
        Ok(conn)
    }
}

/// Spawn the reader and writer of a fresh connection.
fn start_connection<R, W>(reader: R, writer: W, config: &ClientConfig) -> Arc<Connection>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::channel(config.outbound_queue_frames_max.max(1));
    let stop = CancellationToken::new();
    let conn = Arc::new(Connection {
        tx,
        state: Mutex::new(PendingState {
            closed: None,
            calls: HashMap::new(),
        }),
        next_id: AtomicU64::new(1),
        stop: stop.clone(),
        table: tokio::sync::OnceCell::new(),
        principal: Mutex::new(None),
    });
    let options = config.encode_options();
    tokio::spawn(write_loop(writer, rx, options, stop));
    let heartbeat_interval = config.heartbeat_interval.max(Duration::from_millis(1));
    let dead_after = heartbeat_interval * config.heartbeat_misses_max.max(1);
    tokio::spawn(read_loop(
        reader,
        Arc::clone(&conn),
        options,
        heartbeat_interval,
        dead_after,
    ));
    conn
}

async fn read_loop<R>(
    reader: R,
    conn: Arc<Connection>,
    options: EncodeOptions,
    heartbeat_interval: Duration,
    dead_after: Duration,
) where
    R: AsyncRead + Unpin,
{
    let mut frames = FramedRead::with_capacity(reader, FrameCodec::new(options), READ_BUFFER_BYTES);
    let mut ticker =
        tokio::time::interval_at(Instant::now() + heartbeat_interval, heartbeat_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_frame_at = Instant::now();
    let mut ping_id = 0u64;
    let closed = loop {
        tokio::select! {
            _ = conn.stop.cancelled() => break Closed::Eof,
            next = frames.next() => match next {
                None | Some(Err(FrameError::Io(_))) => break Closed::Eof,
                Some(Err(err)) => break Closed::Frame(err),
                Some(Ok(frame)) => {
                    last_frame_at = Instant::now();
                    if let Err(closed) = conn.dispatch(frame) {
                        break closed;
                    }
                }
            },
            _ = ticker.tick() => {
                let silent_for = last_frame_at.elapsed();
                if silent_for >= dead_after {
                    break Closed::Unresponsive(silent_for);
                }
                if silent_for >= heartbeat_interval {
                    ping_id = ping_id.wrapping_add(1);
                    let _ = conn.tx.try_send(Frame::control(Kind::Ping, ping_id));
                }
            }
        }
    };
    tracing::debug!(?closed, "client connection ended");
    conn.fail_all(closed);
}

/// Sends a `Cancel` for a call that ends without its reply.
struct CallGuard<C: std::ops::Deref<Target = Connection>> {
    conn: C,
    id: u64,
    armed: bool,
}

impl<C: std::ops::Deref<Target = Connection>> Drop for CallGuard<C> {
    fn drop(&mut self) {
        if self.armed {
            self.conn.abandon(self.id);
        }
    }
}

/// The events of one subscription. Ends (`None`) when the server ends the stream;
/// dropping it (or [`Subscription::cancel`]) cancels the subscription on the server.
pub struct Subscription<Ev> {
    rx: mpsc::Receiver<Result<Bytes>>,
    guard: CallGuard<Arc<Connection>>,
    _event: PhantomData<fn() -> Ev>,
}

impl<Ev> std::fmt::Debug for Subscription<Ev> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.guard.id)
            .finish_non_exhaustive()
    }
}

impl<Ev: DeserializeOwned> Subscription<Ev> {
    /// The next event; `None` once the stream has ended.
    pub async fn next_event(&mut self) -> Option<Result<Ev>> {
        self.next().await
    }

    /// Stop the subscription (same as dropping it).
    pub fn cancel(self) {}
}

impl<Ev: DeserializeOwned> Stream for Subscription<Ev> {
    type Item = Result<Ev>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Ev>>> {
        let this = self.get_mut();
        match this.rx.poll_recv(cx) {
            Poll::Ready(Some(Ok(body))) => {
                Poll::Ready(Some(qiss::from_slice(&body).map_err(Error::from)))
            }
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(err))),
            Poll::Ready(None) => {
                // The stream ended on the server: nothing to cancel.
                this.guard.armed = false;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
