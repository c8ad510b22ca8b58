//! One client connection on the server: one task that reads frames, dispatches them and
//! writes the replies. Frames already buffered are handled together and their replies go
//! out in one write; replies of spawned handlers come back through a bounded queue and
//! are written by the same task.
//!
//! ```text
//!  socket ─read─▶ read buffer ─▶ decode ─▶ dispatch ─┬─ sync handler (inline) ─▶ out buffer
//!                                                     ├─ async handler (spawned) ─┐  │
//!                                                     └─ event handler (spawned) ─┴▶ mpsc
//!                                                                          ──▶ out buffer
//!  socket ◀──────────────── one write per step ◀──────────────────────────────────┘
//! ```
//!
//! Invariants:
//! - At most `inflight_requests_max` spawned requests per connection; one more is
//!   answered `Busy` at once.
//! - Every request gets exactly one terminal frame (`Response` or `Error`), except one
//!   that the client cancelled, which gets none.
//! - A malformed frame gets an `Error` (correlation id of the frame if readable, else 0)
//!   and the connection closes; nothing else is affected.
//! - Memory per connection is bounded: the read buffer by `frame_size_bytes_max` (a
//!   frame must also be complete within `frame_read_timeout` of its first byte, else
//!   `Timeout` on correlation id 0 and close); replies of spawned handlers by
//!   `outbound_queue_frames_max` and `outbound_queue_bytes_max` (they hold room in the
//!   outbox until written, see `server::outbox`); a write by `write_timeout`. Request
//!   bodies held by spawned handlers are bounded server-wide by
//!   `inflight_request_bytes_max` (`Busy` beyond).
//! - A connection is one principal for its whole life: an `Auth` frame after the
//!   handshake may renew its credential (roles, expiry, credential id: requests
//!   received after the reply see them), never change who it is (`server::handshake`).

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use futures::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tracing::Instrument;

use crate::auth::PeerInfo;
use crate::codec::{
    READ_BUFFER_BYTES, READ_ROOM_BYTES_MIN, WRITE_BATCH_FRAMES_MAX, WRITE_BUFFER_RETAIN_BYTES_MAX,
};
use crate::error::{ErrorCode, Result, RpcError};
use crate::frame::{self, EncodeOptions, Frame, Kind};
use crate::server::ServerShared;
use crate::server::context::{ConnectionInfo, RequestContext};
use crate::server::handshake::{self, AuthOutcome, auth_ok};
use crate::server::observer::{self, Answer};
use crate::server::outbox::{Outbox, Queued};
use crate::server::registry::{DESCRIBE_METHOD_ID, EventSink, Handler, SYSTEM_SERVICE_ID};
use crate::server::shutdown::Shutdown;
use crate::server::spawned::{Done, Task, Tasks, answer_frame, request_room};

/// How long a closing connection waits for its writer to flush the last frames.
pub(crate) const WRITER_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the reader loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    PeerClosed,
    Shutdown,
    Malformed,
    DeadPeer,
    /// The peer did not take its replies within `write_timeout`.
    SlowPeer,
    /// The peer did not complete a frame within `frame_read_timeout` (slowloris).
    SlowFrame,
    Idle,
    Unauthenticated,
}

/// What the dispatcher wants the loop to do next.
enum Flow {
    Continue,
    Close(Outcome),
}

/// The connection's state as the reader loop sees it.
struct Conn {
    shared: Arc<ServerShared>,
    tx: Outbox,
    /// The context handed to sync handlers, re-aimed at each request (no `Arc`
    /// traffic per request); async handlers get a clone.
    ctx: RequestContext,
    peer: PeerInfo,
    authenticated: bool,
    /// When the credential of the handshake (or of the last re-authentication)
    /// expires: the connection is closed then.
    expires_at: Option<Instant>,
    inflight: Arc<Semaphore>,
    tasks: Tasks,
    /// Frames encoded and waiting for the next write.
    out: BytesMut,
    /// The outbox room held by the queued frames in `out`, given back once written.
    written: Vec<OwnedSemaphorePermit>,
    /// Since when the read buffer holds the start of a frame not yet complete
    /// (`frame_read_timeout` runs from there).
    partial_since: Option<Instant>,
    /// The last step stopped at `WRITE_BATCH_FRAMES_MAX` frames: more whole frames may
    /// be in the read buffer, to handle before reading again.
    more_buffered: bool,
    options: EncodeOptions,
    /// Any frame counts for heartbeats; only requests count against `idle_timeout`.
    last_frame_at: Instant,
    last_request_at: Instant,
    /// When the frames being handled were read (one clock reading per batch).
    received_at: Instant,
}

/// Serve one connection until the peer leaves, misbehaves, goes silent or the server
/// shuts down.
pub(crate) async fn serve<R, W>(
    reader: R,
    writer: W,
    peer: PeerInfo,
    connection_id: u64,
    shared: Arc<ServerShared>,
    mut shutdown: Shutdown,
) -> Result<()>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let config = shared.config.clone();
    let options = config.encode_options();
    // Replies of spawned handlers come back through this queue; inline replies go
    // straight into `out`.
    let (tx, mut rx) = Outbox::new(
        config.outbound_queue_frames_max,
        config.outbound_queue_bytes_max,
    );
    let mut writer = writer;
    let mut reader = reader;
    // Small until the peer sends something: an idle connection holds little memory.
    let mut input = BytesMut::with_capacity(READ_ROOM_BYTES_MIN);
    let info = Arc::new(ConnectionInfo {
        id: connection_id,
        peer_addr: peer.addr,
        identity: peer.identity.clone(),
        principal: None,
    });
    let now = Instant::now();
    let mut conn = Conn {
        authenticated: shared.authenticator.is_none(),
        expires_at: None,
        shared,
        tx,
        ctx: RequestContext::new(info, 0, 0, 0),
        peer,
        inflight: Arc::new(Semaphore::new(config.inflight_requests_max)),
        tasks: Arc::new(Mutex::new(HashMap::new())),
        out: BytesMut::new(),
        written: Vec::new(),
        partial_since: None,
        more_buffered: false,
        options,
        last_frame_at: now,
        last_request_at: now,
        received_at: now,
    };

    let heartbeat_interval = config.heartbeat_interval.max(Duration::from_millis(1));
    let dead_after = heartbeat_interval * config.heartbeat_misses_max.max(1);
    let mut ticker = tokio::time::interval_at(now + heartbeat_interval, heartbeat_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ping_id = 0u64;
    let mut batch: Vec<Queued> = Vec::new();

    let outcome = loop {
        let step = if conn.more_buffered {
            // The last step stopped at a batch: the rest is already read.
            conn.on_buffered(&mut input)
        } else {
            tokio::select! {
            _ = shutdown.recv() => Some(Outcome::Shutdown),
            _ = sleep_until_some(conn.expires_at) => {
                tracing::debug!(peer = %conn.peer.addr, "credential expired: closing");
                let err = RpcError::new(
                    ErrorCode::Unauthenticated,
                    "the credential of this connection expired: re-authenticate before expiry, or reconnect with a fresh one",
                );
                conn.push(err.to_frame(0, 0, 0));
                Some(Outcome::Unauthenticated)
            }
            _ = rx.recv_many(&mut batch, WRITE_BATCH_FRAMES_MAX) => {
                conn.push_queued(&mut batch);
                None
            }
            _ = sleep_until_some(conn.partial_since.map(|at| at + config.frame_read_timeout)) => {
                // After a stall the timer may win the race against bytes already in
                // the socket: look before judging the peer.
                match reader.read_buf(&mut input).now_or_never() {
                    Some(read) => conn.on_read(read, &mut input),
                    None => {
                        tracing::debug!(peer = %conn.peer.addr, "a frame was not completed within frame_read_timeout");
                        let err = RpcError::new(
                            ErrorCode::Timeout,
                            format!(
                                "a frame was not completed within frame_read_timeout ({:?})",
                                config.frame_read_timeout
                            ),
                        );
                        conn.push(err.to_frame(0, 0, 0));
                        Some(Outcome::SlowFrame)
                    }
                }
            }
            read = reader.read_buf(&mut input) => {
                // Handle the whole frames the read brought (up to a batch) before
                // writing, so pipelined requests are answered with one write.
                conn.on_read(read, &mut input)
            }
            _ = ticker.tick() => {
                let silent_for = conn.last_frame_at.elapsed();
                let idle = conn.inflight.available_permits() == config.inflight_requests_max;
                // After a stall (a loaded machine) the tick may win the race against a
                // frame already in the socket: look before judging the peer dead.
                let waiting = if silent_for >= dead_after {
                    reader.read_buf(&mut input).now_or_never()
                } else {
                    None
                };
                if let Some(read) = waiting {
                    conn.on_read(read, &mut input)
                } else if conn.revoked() {
                    tracing::debug!(peer = %conn.peer.addr, "credential revoked: closing");
                    let err = RpcError::new(
                        ErrorCode::Unauthenticated,
                        "the credential of this connection was revoked",
                    );
                    conn.push(err.to_frame(0, 0, 0));
                    Some(Outcome::Unauthenticated)
                } else if silent_for >= dead_after {
                    tracing::debug!(peer = %conn.peer.addr, ?silent_for, "peer missed heartbeats");
                    Some(Outcome::DeadPeer)
                } else if idle && conn.last_request_at.elapsed() >= config.idle_timeout {
                    Some(Outcome::Idle)
                } else {
                    if silent_for >= heartbeat_interval {
                        ping_id = ping_id.wrapping_add(1);
                        conn.push(Frame::control(Kind::Ping, ping_id));
                    }
                    None
                }
            }
            }
        };
        if input.is_empty() || conn.more_buffered {
            conn.partial_since = None;
        } else if conn.partial_since.is_none() {
            conn.partial_since = Some(Instant::now());
        }
        if input.capacity() - input.len() < READ_ROOM_BYTES_MIN {
            // Nothing buffered (an idle connection answering heartbeats, or a busy one
            // between frames): a small reserve, which reclaims a buffer no frame holds
            // any more in place, whatever its size. A frame under way: room for many.
            let grow = if input.is_empty() {
                READ_ROOM_BYTES_MIN
            } else {
                READ_BUFFER_BYTES
            };
            input.reserve(grow);
        }
        // One write for everything this step produced. A peer that does not read
        // stalls only its own connection (TCP backpressure).
        if !conn.out.is_empty() {
            let flushed = {
                let write = tokio::time::timeout(config.write_timeout, conn.flush(&mut writer));
                tokio::pin!(write);
                tokio::select! {
                    flushed = &mut write => flushed,
                    // Shutting down: a peer that does not read gets only
                    // `WRITER_FLUSH_TIMEOUT` more, not the whole `write_timeout`.
                    _ = shutdown.recv(), if step != Some(Outcome::Shutdown) => {
                        match tokio::time::timeout(WRITER_FLUSH_TIMEOUT, &mut write).await {
                            Ok(flushed) => flushed,
                            Err(elapsed) => Err(elapsed),
                        }
                    }
                }
            };
            match flushed {
                Ok(Ok(())) => {}
                Ok(Err(_)) => break step.unwrap_or(Outcome::PeerClosed),
                Err(_) => {
                    tracing::debug!(peer = %conn.peer.addr, "peer did not read its replies");
                    break Outcome::SlowPeer;
                }
            }
        }
        if let Some(outcome) = step {
            break outcome;
        }
    };
    conn.close(outcome, &mut rx, &mut writer).await;
    Ok(())
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The monotonic instant of a wall-clock time (seconds since the Unix epoch); now if
/// that time has passed; `None` if it is beyond what `Instant` can hold (a credential
/// claiming to expire in the far future: it then expires with the connection).
fn instant_of_unix_secs(unix_secs: u64) -> Option<Instant> {
    let now_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let left = Duration::from_secs(unix_secs).saturating_sub(now_unix);
    Instant::now().checked_add(left)
}

impl Conn {
    fn on_frame(&mut self, frame: Frame) -> Flow {
        match frame.kind {
            Kind::Request if !self.authenticated => {
                let err = RpcError::new(
                    ErrorCode::Unauthenticated,
                    "authentication handshake required",
                );
                self.push(err.to_frame(frame.correlation_id, frame.service_id, frame.method_id));
                Flow::Close(Outcome::Unauthenticated)
            }
            Kind::Request => self.on_request(frame),
            Kind::Auth => self.on_auth(frame),
            Kind::Cancel => {
                let task = self
                    .tasks
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&frame.correlation_id);
                if let Some(task) = task {
                    task.abort.abort();
                }
                Flow::Continue
            }
            Kind::Ping => {
                self.push(Frame::control(Kind::Pong, frame.correlation_id));
                Flow::Continue
            }
            // Any frame proves the peer alive; the loop already noted the time.
            Kind::Pong => Flow::Continue,
            Kind::Response | Kind::Error | Kind::Event => {
                let err = RpcError::new(
                    ErrorCode::Malformed,
                    format!("a client may not send {:?} frames", frame.kind),
                );
                self.push(err.to_frame(frame.correlation_id, 0, 0));
                Flow::Close(Outcome::Malformed)
            }
        }
    }

    /// An `Auth` frame: the handshake, or a re-authentication on an authenticated
    /// connection (see `server::handshake` for what each answer does).
    fn on_auth(&mut self, frame: Frame) -> Flow {
        let Some(authenticator) = self.shared.authenticator.clone() else {
            // No authenticator: the handshake is a no-op that names nobody.
            self.push(auth_ok(frame.correlation_id, ""));
            return Flow::Continue;
        };
        let current = if self.authenticated {
            self.ctx.connection().principal.clone()
        } else {
            None
        };
        match handshake::decide(
            authenticator.as_ref(),
            &frame.body,
            &self.peer,
            current.as_ref(),
        ) {
            AuthOutcome::Accepted(principal) => {
                if current.is_some() {
                    tracing::debug!(peer = %self.peer.addr, principal = %principal.name, "re-authenticated");
                }
                // The expiry timer is the loop's `sleep_until_some(expires_at)`: a new
                // value re-arms it at the next step.
                self.expires_at = principal
                    .expires_at_unix_secs
                    .and_then(instant_of_unix_secs);
                self.push(auth_ok(frame.correlation_id, &principal.name));
                let info = self.ctx.connection();
                let info = Arc::new(ConnectionInfo {
                    id: info.id,
                    peer_addr: info.peer_addr,
                    identity: info.identity.clone(),
                    principal: Some(principal),
                });
                self.ctx.set_connection(info);
                self.authenticated = true;
                Flow::Continue
            }
            AuthOutcome::Refused(err) => {
                tracing::debug!(peer = %self.peer.addr, %err, "re-authentication refused: identity kept");
                self.push(err.to_frame(frame.correlation_id, 0, 0));
                Flow::Continue
            }
            AuthOutcome::RefusedAndClose(err) => {
                tracing::debug!(peer = %self.peer.addr, %err, "authentication rejected");
                self.push(err.to_frame(frame.correlation_id, 0, 0));
                Flow::Close(Outcome::Unauthenticated)
            }
        }
    }

    fn reply_error(&mut self, request: &Frame, err: RpcError) {
        self.push(err.to_frame(
            request.correlation_id,
            request.service_id,
            request.method_id,
        ));
    }

    /// Whether the connection's credential was revoked since its handshake.
    fn revoked(&self) -> bool {
        let info = self.ctx.connection();
        match (&info.principal, &self.shared.authenticator) {
            (Some(p), Some(a)) if p.credential_id.is_some() => !a.still_valid(p),
            _ => false,
        }
    }

    fn on_request(&mut self, frame: Frame) -> Flow {
        if self.revoked() {
            let err = RpcError::new(
                ErrorCode::Unauthenticated,
                "the credential of this connection was revoked",
            );
            self.push(err.to_frame(frame.correlation_id, frame.service_id, frame.method_id));
            return Flow::Close(Outcome::Unauthenticated);
        }
        if frame.service_id == SYSTEM_SERVICE_ID {
            let reply = if frame.method_id == DESCRIBE_METHOD_ID {
                Frame {
                    kind: Kind::Response,
                    body: self.shared.registry.describe_body(),
                    ..frame
                }
            } else {
                let err = RpcError::new(
                    ErrorCode::UnknownMethod,
                    format!("neo.system has no method id {}", frame.method_id),
                );
                err.to_frame(frame.correlation_id, frame.service_id, frame.method_id)
            };
            self.push(reply);
            return Flow::Continue;
        }
        let entry = match self
            .shared
            .registry
            .lookup(frame.service_id, frame.method_id)
        {
            Ok(entry) => entry,
            Err(err) => {
                self.reply_error(&frame, err);
                return Flow::Continue;
            }
        };
        let Frame {
            service_id,
            method_id,
            correlation_id,
            body,
            ..
        } = frame;
        self.ctx.aim(
            correlation_id,
            service_id,
            method_id,
            self.received_at.into_std(),
        );
        let received_at = self.received_at;
        let handler = match &entry.handler {
            Handler::Sync(f) => {
                // Inline: no task, no allocation beyond the reply, no reference count
                // touched. A panic is the handler's bug, reported as Internal; the
                // connection lives on.
                let ctx = &self.ctx;
                let result = std::panic::catch_unwind(AssertUnwindSafe(|| f(ctx, body)))
                    .unwrap_or_else(|_| Err(RpcError::internal("handler panicked")));
                let (reply, answer) = answer_frame(result, service_id, method_id, correlation_id);
                let observer = self.shared.observer.as_deref();
                observer::report(observer, &entry.names, answer, received_at);
                self.push(reply);
                return Flow::Continue;
            }
            other => other.clone(),
        };
        let timeout = entry.timeout;
        let names = Arc::clone(&entry.names);
        let shared = Arc::clone(&self.shared);
        let ctx = self.ctx.clone();
        let request = Frame {
            kind: Kind::Request,
            service_id,
            method_id,
            correlation_id,
            body: Default::default(),
        };
        let body_room = request_room(&shared.config, body.len());
        let Ok(request_bytes) = Arc::clone(&shared.request_bytes).try_acquire_many_owned(body_room)
        else {
            let max = shared.config.inflight_request_bytes_max;
            self.reply_error(
                &request,
                RpcError::new(
                    ErrorCode::Busy,
                    format!("inflight_request_bytes_max ({max} bytes) reached: retry later"),
                ),
            );
            let answer = Answer::Error(ErrorCode::Busy);
            observer::report(shared.observer.as_deref(), &names, answer, received_at);
            return Flow::Continue;
        };
        let Ok(permit) = Arc::clone(&self.inflight).try_acquire_owned() else {
            let max = shared.config.inflight_requests_max;
            self.reply_error(
                &request,
                RpcError::new(
                    ErrorCode::Busy,
                    format!("inflight_requests_max ({max}) reached"),
                ),
            );
            let answer = Answer::Error(ErrorCode::Busy);
            observer::report(shared.observer.as_deref(), &names, answer, received_at);
            return Flow::Continue;
        };
        let tasks = Arc::clone(&self.tasks);
        let tx = self.tx.clone();
        let duplicate = self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&correlation_id);
        if duplicate {
            self.reply_error(
                &request,
                RpcError::invalid_argument("correlation id already in flight"),
            );
            let answer = Answer::Error(ErrorCode::InvalidArgument);
            observer::report(shared.observer.as_deref(), &names, answer, received_at);
            return Flow::Continue;
        }
        // Hold the map's lock across spawn + insert, so a task that finishes at once
        // cannot remove its entry before it was inserted. (Only this task inserts, so
        // the duplicate check above still holds.)
        let mut map = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        let done = Done {
            tasks,
            outbox: tx.clone(),
            request_bytes,
            shared: Arc::clone(&shared),
            names: Arc::clone(&names),
            received_at,
            permit,
            service_id,
            method_id,
            correlation_id,
        };
        let (join, streaming) = match handler {
            Handler::Async(f) => {
                let timeout = timeout.unwrap_or(shared.config.request_timeout_default);
                let span =
                    observer::request_span(ctx.connection_id(), correlation_id, &names.method);
                let join = tokio::spawn(
                    async move {
                        let run = AssertUnwindSafe(async move {
                            tokio::time::timeout(timeout, f(ctx, body)).await
                        });
                        let err = match run.catch_unwind().await {
                            Ok(Ok(Ok(body))) => Ok(body),
                            Ok(Ok(Err(err))) => Err(err),
                            Ok(Err(_elapsed)) => Err(RpcError::new(
                                ErrorCode::Timeout,
                                format!("handler exceeded {timeout:?}"),
                            )),
                            Err(_panic) => Err(RpcError::internal("handler panicked")),
                        };
                        done.finish(err).await;
                    }
                    .instrument(span),
                );
                (join, false)
            }
            Handler::Events(f) => {
                let sink = EventSink::new(tx.clone(), service_id, method_id, correlation_id);
                let span =
                    observer::request_span(ctx.connection_id(), correlation_id, &names.method);
                let join = tokio::spawn(
                    async move {
                        let run = AssertUnwindSafe(async move { f(ctx, body, sink).await });
                        let ended = match run.catch_unwind().await {
                            Ok(r) => r,
                            Err(_panic) => Err(RpcError::internal("handler panicked")),
                        };
                        // `Ok`: the end of the stream, an empty response.
                        done.finish(ended.map(|()| Default::default())).await;
                    }
                    .instrument(span),
                );
                (join, true)
            }
            Handler::Sync(_) => unreachable!("sync handlers returned above"),
        };
        map.insert(
            correlation_id,
            Task {
                abort: join.abort_handle(),
                streaming,
                service_id,
                method_id,
            },
        );
        Flow::Continue
    }

    /// Append one frame to the write buffer. A frame the peer could not accept (too
    /// large) becomes an error reply instead.
    fn push(&mut self, frame: Frame) {
        if let Err(err) = frame::encode(&frame, &self.options, &mut self.out) {
            let reply = RpcError::new(err.error_code(), format!("reply not sent: {err}"));
            let reply = reply.to_frame(frame.correlation_id, frame.service_id, frame.method_id);
            let _ = frame::encode(&reply, &self.options, &mut self.out);
        }
    }

    /// Append frames of spawned handlers, keeping their outbox room until written.
    fn push_queued(&mut self, batch: &mut Vec<Queued>) {
        for queued in batch.drain(..) {
            self.push(queued.frame);
            self.written.push(queued.room);
        }
    }

    async fn flush<W: AsyncWrite + Unpin>(&mut self, writer: &mut W) -> std::io::Result<()> {
        writer.write_all(&self.out).await?;
        writer.flush().await?;
        self.written.clear();
        if self.out.capacity() > WRITE_BUFFER_RETAIN_BYTES_MAX {
            self.out = BytesMut::with_capacity(READ_BUFFER_BYTES);
        } else {
            self.out.clear();
        }
        Ok(())
    }

    /// Handle what a read brought (see [`Conn::on_buffered`]). `Some` ends the
    /// connection: the peer left (a frame cut short by the end of the stream
    /// included), or sent a malformed frame, or a frame that closes it.
    fn on_read(&mut self, read: std::io::Result<usize>, input: &mut BytesMut) -> Option<Outcome> {
        if !matches!(read, Ok(n) if n > 0) {
            return Some(Outcome::PeerClosed);
        }
        self.on_buffered(input)
    }

    /// Handle the whole frames in `input`, up to `WRITE_BATCH_FRAMES_MAX` per step
    /// (one clock reading for them all); `more_buffered` says whether it stopped short.
    fn on_buffered(&mut self, input: &mut BytesMut) -> Option<Outcome> {
        let now = Instant::now();
        let frame_size_bytes_max = self.options.frame_size_bytes_max;
        self.more_buffered = false;
        for _ in 0..WRITE_BATCH_FRAMES_MAX {
            let frame = match frame::decode(input, frame_size_bytes_max) {
                Ok(Some(frame)) => frame,
                Ok(None) => return None,
                Err(err) => {
                    tracing::debug!(peer = %self.peer.addr, %err, "malformed frame");
                    let reply = RpcError::new(err.error_code(), err.to_string());
                    self.push(reply.to_frame(err.correlation_id(), 0, 0));
                    return Some(Outcome::Malformed);
                }
            };
            self.last_frame_at = now;
            self.received_at = now;
            self.partial_since = None;
            if matches!(frame.kind, Kind::Request | Kind::Auth | Kind::Cancel) {
                self.last_request_at = now;
            }
            if let Flow::Close(outcome) = self.on_frame(frame) {
                return Some(outcome);
            }
        }
        self.more_buffered = true;
        None
    }

    /// End the connection's work. On shutdown: end subscriptions with `ShuttingDown`
    /// and let unary requests finish (bounded by `shutdown_drain_timeout`), writing
    /// their replies. Otherwise the peer is gone or untrusted: abort everything. Then
    /// flush what is left (bounded by `WRITER_FLUSH_TIMEOUT`) and close.
    async fn close<W: AsyncWrite + Unpin>(
        &mut self,
        outcome: Outcome,
        rx: &mut mpsc::Receiver<Queued>,
        writer: &mut W,
    ) {
        tracing::debug!(peer = %self.peer.addr, ?outcome, "closing connection");
        // A write cut off by its timeout may have left a frame half written: writing
        // anything more would corrupt the stream, so only the close goes out.
        let mut torn = outcome == Outcome::SlowPeer;
        if outcome == Outcome::Shutdown {
            let streams: Vec<(u64, Task)> = {
                let mut map = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
                let ids: Vec<u64> = map
                    .iter()
                    .filter(|(_, t)| t.streaming)
                    .map(|(id, _)| *id)
                    .collect();
                ids.into_iter()
                    .filter_map(|id| map.remove(&id).map(|t| (id, t)))
                    .collect()
            };
            for (id, task) in streams {
                task.abort.abort();
                let err = RpcError::new(ErrorCode::ShuttingDown, "server shutting down");
                self.push(err.to_frame(id, task.service_id, task.method_id));
            }
            let max = self.shared.config.inflight_requests_max as u32;
            let drained = Arc::clone(&self.inflight).acquire_many_owned(max);
            let deadline = tokio::time::sleep(self.shared.config.shutdown_drain_timeout);
            tokio::pin!(drained, deadline);
            let mut batch = Vec::new();
            loop {
                tokio::select! {
                    _ = &mut drained => break,
                    _ = &mut deadline => {
                        tracing::warn!(peer = %self.peer.addr, "in-flight requests outlived the drain timeout");
                        break;
                    }
                    _ = rx.recv_many(&mut batch, WRITE_BATCH_FRAMES_MAX) => {
                        self.push_queued(&mut batch);
                        let flushed = tokio::time::timeout(WRITER_FLUSH_TIMEOUT, self.flush(writer)).await;
                        if !matches!(flushed, Ok(Ok(()))) {
                            torn |= flushed.is_err();
                            break;
                        }
                    }
                }
            }
        }
        let leftovers: Vec<Task> = self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, t)| t)
            .collect();
        for task in leftovers {
            task.abort.abort();
        }
        // Senders still waiting for room give up.
        self.tx.close();
        // Replies that finished meanwhile are already queued.
        while let Ok(queued) = rx.try_recv() {
            if !torn {
                self.push(queued.frame);
            }
        }
        // A peer that stops reading must not hold the connection open.
        let _ = tokio::time::timeout(WRITER_FLUSH_TIMEOUT, async {
            if !self.out.is_empty() && !torn {
                self.flush(writer).await?;
            }
            writer.shutdown().await
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_expiry_in_the_far_future_is_no_panic() {
        assert!(super::instant_of_unix_secs(u64::MAX).is_none());
        assert!(super::instant_of_unix_secs(0).is_some());
    }
}
