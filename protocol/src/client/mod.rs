//! [`NeoClient`]: one connection, many concurrent calls.
//!
//! ```text
//!  call() ─┐ one lock: pending[id] = Waiting, encode the request into `out`
//!  call() ─┼─▶ the first caller to find nobody writing owns the write half: it yields
//!  call() ─┘   once (the other ready callers append behind it), then writes all of
//!              `out` in one syscall, synchronously ──────────────────────────▶ socket
//!              (a lone call, none other pending, writes at once: no yield)
//!              (a full socket, a caller that went away, or a control frame hand the
//!              write half to the writer task, the slow path)
//!  reader task: read_buf → decode every whole frame → one lock: pending[id] = Done,
//!               collect wakers → unlock → wake the callers
//!  call() ◀── woken: takes its reply out of pending[id]
//! ```
//!
//! - Calls are multiplexed by correlation id, so any number of tasks pipeline on one
//!   socket. An id indexes the pending table directly (entry index and generation, see
//!   `calls`; never 0, which is the connection itself). The client is an `Arc`: clone
//!   freely.
//! - A round trip costs one cross-thread wake on the client (reader → caller), as a
//!   raw TCP client would: no hand-off to a writer task, no per-call channel, timer or
//!   allocation. The pending table and the outgoing buffer share one mutex, held only
//!   for table updates and `memcpy`s, never across an `.await` or a syscall.
//! - A call ends with its reply, its timeout, its cancellation token, or the
//!   connection's end. Timeouts are enforced by one timer in the reader task, armed for
//!   the earliest deadline. Whenever a call ends without a reply (timeout, cancel, or
//!   the caller dropping the future) a `Cancel` frame tells the server to stop.
//! - Writes never tear a frame: a caller writes only within one poll (the transport
//!   polled with a no-op waker) and hands whatever the socket did not take to the
//!   writer task.
//! - [`Pipeline`] (`pipeline`): one task keeps a window of calls going with `send`
//!   and `recv`; its calls are slots like any other (same ids, timeouts, cancels),
//!   but a reply goes to the pipeline's queue, so there is no future, waker or
//!   wake-up per call, and requests go out in half-window batches.
//! - The reader pings a silent server every `heartbeat_interval` and drops the
//!   connection after `heartbeat_misses_max` silent intervals; pending calls then fail
//!   with a retriable error and the next call reconnects (with exponential backoff).
//! - A connection that ends (EOF, bad frame, silent server, write error) shuts its
//!   socket's write half at once and takes no new call, even while handles on it (a
//!   pipeline, a call finishing) remain.
//! - [`NeoClient::reauthenticate`] (`auth`) renews the open connection's credential
//!   in place (an `Auth` frame after the handshake); the token it had accepted is the
//!   one every later reconnect sends.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures::{FutureExt, Stream, StreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

mod auth;
mod call;
mod calls;
mod pipeline;

pub use call::Call;
pub use pipeline::{PIPELINE_IN_FLIGHT_MAX_DEFAULT, PIPELINE_WRITE_BATCH_FRAMES_DEFAULT, Pipeline};

use calls::Calls;

use crate::auth::AuthOk;
use crate::codec::{
    READ_BUFFER_BYTES, READ_ROOM_BYTES_MIN, WRITE_BATCH_FRAMES_MAX, WRITE_BUFFER_RETAIN_BYTES_MAX,
};
use crate::error::{Error, Result, RpcError};
use crate::frame::{
    self, EncodeOptions, FRAME_SIZE_BYTES_MAX_DEFAULT, Frame, FrameError, HEADER_LEN, Kind,
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
    /// Bound on request frames queued and not yet written (callers wait when it is
    /// full; pings, pongs and cancels are never held back).
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

/// Outgoing frames at least this large are encoded before taking the connection's lock
/// (and copied in under it), so a big or compressed body never holds up the reader.
const ENCODE_UNLOCKED_BYTES_MIN: usize = 16 * 1024;

/// One call in the pending table.
enum Slot {
    /// A unary call waiting for its reply.
    Waiting {
        /// The caller, to wake when the reply (or the call's end) is in.
        waker: Option<Waker>,
        /// When the reader's timer fails the call with `Timeout`.
        deadline: Instant,
        /// The call's timeout, for the error.
        timeout: Duration,
    },
    /// The call's outcome, not yet picked up by the caller.
    Done(Result<Bytes>),
    /// A subscription: events and its end go to this queue.
    Stream(mpsc::Sender<Result<Bytes>>),
    /// A call of a [`Pipeline`]: its outcome goes to the pipeline's queue
    /// (`State::pipes[pipe]`), and the slot is gone.
    Piped {
        pipe: u32,
        deadline: Instant,
        timeout: Duration,
    },
}

impl Slot {
    /// When the reader's timer fails the call (`None`: never, a subscription).
    fn deadline(&self) -> Option<Instant> {
        match self {
            Slot::Waiting { deadline, .. } | Slot::Piped { deadline, .. } => Some(*deadline),
            Slot::Done(_) | Slot::Stream(_) => None,
        }
    }
}

/// The outcomes of a [`Pipeline`]'s calls, in the order they came in, until the
/// pipeline takes them (all at once, under one lock).
#[derive(Default)]
struct PipeQueue {
    outcomes: VecDeque<(u64, Result<Bytes>)>,
    /// The pipeline, waiting for an outcome.
    waker: Option<Waker>,
}

impl PipeQueue {
    /// Queue call `id`'s outcome and collect the pipeline's waker (the first outcome
    /// of a batch wakes it; the rest ride along).
    fn push(&mut self, id: u64, outcome: Result<Bytes>, wakeups: &mut Wakeups) {
        self.outcomes.push_back((id, outcome));
        wakeups.extend(self.waker.take());
    }
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

/// Everything callers, the reader and the writer share, behind one mutex that is held
/// only for table updates and `memcpy`s (never across an `.await` or a syscall).
struct State {
    /// Set once, when the connection ends; no call registers after that.
    closed: Option<Closed>,
    calls: Calls,
    /// Frames encoded by callers (and the reader's pings, pongs and cancels), waiting
    /// for the writer: everything queued while a write is in progress goes out in the
    /// next write.
    out: BytesMut,
    /// Frames in `out` (bounded by `outbound_queue_frames_max` for calls).
    out_frames: usize,
    /// Someone owns the write half: a caller about to flush `out` itself, or the
    /// writer task. Whoever owns it looks at `out` again before letting go, so a frame
    /// queued meanwhile is never stranded.
    writing: bool,
    /// The write half belongs to the writer task (the socket was full, a flushing
    /// caller went away, or a control frame was queued).
    writer_turn: bool,
    /// Bytes a caller's write could not finish: they go out before `out`.
    unfinished: BytesMut,
    /// The transport still needs a flush (after a caller's write left it pending).
    flush_pending: bool,
    /// An empty buffer to swap with `out`, so flushing callers do not allocate.
    spare: BytesMut,
    /// The writer task, parked until its turn.
    writer: Option<Waker>,
    /// Callers waiting for room in `out`.
    room: Vec<Waker>,
    /// The earliest deadline the reader's timer is armed for (`None`: not armed). May
    /// be earlier than every pending deadline (the call completed); never later.
    timer_at: Option<Instant>,
    /// Frames the reader routed from its latest read. More than one means several
    /// callers were answered at once (pipelining): the first of them to start a new
    /// call is not a lone call, even if it finds no other call pending (the others
    /// have only picked up their replies so far), and it yields for them to queue
    /// their calls behind its own (`Flush::AfterYield`).
    last_read_frames: usize,
    /// The open pipelines' queues, by index (`None`: free).
    pipes: Vec<Option<PipeQueue>>,
}

impl State {
    /// Deliver a piped call's outcome to its pipeline (dropped if it has gone).
    fn deliver(&mut self, pipe: u32, id: u64, outcome: Result<Bytes>, wakeups: &mut Wakeups) {
        if let Some(Some(queue)) = self.pipes.get_mut(pipe as usize) {
            queue.push(id, outcome, wakeups);
        }
    }
}

/// Wakers collected under the lock, woken after it is released.
type Wakeups = Vec<Waker>;

fn wake_all(wakeups: &mut Wakeups) {
    for waker in wakeups.drain(..) {
        waker.wake();
    }
}

/// One live connection: the pending calls, the outgoing buffer, and the name table.
struct Connection {
    state: Mutex<State>,
    /// The write half. Only the owner of `State::writing` touches it, and only within
    /// one poll (never across an `.await`), so the lock is never contended.
    io: Mutex<Box<dyn AsyncWrite + Send + Unpin>>,
    /// Mirrors `state.closed.is_some()`, read without the lock on every call.
    closed: AtomicBool,
    /// Stops the reader and writer (client dropped, or connection failed).
    stop: CancellationToken,
    /// Tells the reader that a call's deadline is earlier than its timer.
    timer_changed: Notify,
    options: EncodeOptions,
    out_frames_max: usize,
    /// `neo.system/describe`, fetched on the first call by name.
    table: tokio::sync::OnceCell<RegistryTable>,
    principal: Mutex<Option<String>>,
}

/// A call's first frame, to be queued.
struct Outgoing {
    kind: Kind,
    service_id: u16,
    method_id: u16,
    body: Bytes,
    /// The whole frame, encoded before taking the lock (large bodies), with correlation
    /// id 0: the id is set under the lock.
    encoded: Option<BytesMut>,
}

impl Outgoing {
    /// A call's first frame; a large body is encoded here, before the lock is taken.
    fn new(
        kind: Kind,
        service_id: u16,
        method_id: u16,
        body: Bytes,
        options: &EncodeOptions,
    ) -> Result<Outgoing> {
        let mut outgoing = Outgoing {
            kind,
            service_id,
            method_id,
            body,
            encoded: None,
        };
        if outgoing.body.len() >= ENCODE_UNLOCKED_BYTES_MIN {
            let mut encoded = BytesMut::new();
            frame::encode_parts(
                kind,
                service_id,
                method_id,
                0,
                &outgoing.body,
                options,
                &mut encoded,
            )?;
            outgoing.encoded = Some(encoded);
        }
        Ok(outgoing)
    }
}

impl Connection {
    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Register a subscription and queue its request in one critical section. Waits
    /// while `outbound_queue_frames_max` frames are queued. (Unary calls do the same
    /// step by step in [`Call`].)
    async fn start(&self, outgoing: Outgoing, slot: impl Fn() -> Slot) -> Result<(Flush, u64)> {
        std::future::poll_fn(|cx| self.poll_start(cx, &outgoing, &slot)).await
    }

    /// One attempt to register a call and queue its first frame, in one critical
    /// section: `Pending` while the outbound queue is full (the waker kept in `room`);
    /// otherwise the call's id and what the caller owes the write half.
    fn poll_start(
        &self,
        cx: &mut Context<'_>,
        outgoing: &Outgoing,
        make_slot: impl FnOnce() -> Slot,
    ) -> Poll<Result<(Flush, u64)>> {
        let mut guard = self.lock();
        if let Some(closed) = &guard.closed {
            return Poll::Ready(Err(closed.to_error()));
        }
        if guard.out_frames >= self.out_frames_max {
            guard.room.push(cx.waker().clone());
            return Poll::Pending;
        }
        if !guard.calls.has_room() {
            return Poll::Ready(Err(Error::Rpc(RpcError::new(
                crate::error::ErrorCode::Busy,
                "too many calls in flight on one connection",
            ))));
        }
        let state = &mut *guard;
        // Ids are handed out under the lock: no atomic of its own per call.
        let id = state.calls.next_id();
        match &outgoing.encoded {
            Some(encoded) => {
                let at = state.out.len() + frame::CORRELATION_ID_OFFSET;
                state.out.extend_from_slice(encoded);
                state.out[at..at + 8].copy_from_slice(&id.to_be_bytes());
            }
            None => {
                if let Err(err) = frame::encode_parts(
                    outgoing.kind,
                    outgoing.service_id,
                    outgoing.method_id,
                    id,
                    &outgoing.body,
                    &self.options,
                    &mut state.out,
                ) {
                    return Poll::Ready(Err(err.into()));
                }
            }
        }
        state.out_frames += 1;
        let mut slot = make_slot();
        if let Slot::Waiting { waker, .. } = &mut slot {
            // The caller waits right after this poll: register it now, which saves
            // its first `poll_reply` (a lock and a lookup).
            *waker = Some(cx.waker().clone());
        }
        let mut poke_timer = false;
        if let Some(deadline) = slot.deadline()
            && state.timer_at.is_none_or(|at| deadline < at)
        {
            state.timer_at = Some(deadline);
            poke_timer = true;
        }
        state.calls.insert(slot);
        // Nobody is writing: this caller flushes, after letting the other ready callers
        // queue their frames behind its own; at once if no other call is pending (a
        // lone call, nobody to wait for).
        let flush = if state.writing {
            Flush::No
        } else if state.calls.len() == 1 && state.last_read_frames <= 1 {
            Flush::Now
        } else {
            Flush::AfterYield
        };
        state.writing = true;
        drop(guard);
        if poke_timer {
            self.timer_changed.notify_one();
        }
        Poll::Ready(Ok((flush, id)))
    }

    /// Give the write half to the writer task (the lock held); its waker goes to
    /// `wakeups`.
    fn hand_to_writer(state: &mut State, wakeups: &mut Wakeups) {
        state.writing = true;
        state.writer_turn = true;
        wakeups.extend(state.writer.take());
    }

    /// A caller that owned the flush duty goes away before writing: the writer task
    /// writes what it (and the callers behind it) queued.
    fn give_flush_to_writer(&self) {
        let mut wakeups = Wakeups::new();
        Self::hand_to_writer(&mut self.lock(), &mut wakeups);
        wake_all(&mut wakeups);
    }

    /// Write everything queued, synchronously, as the owner of the write half: the
    /// transport is polled with a no-op waker, so nothing is ever left half-written
    /// by a caller going away. Whatever the socket does not take at once (it is full)
    /// goes to the writer task, as does a queue that keeps refilling.
    fn flush_now(&self) {
        let mut wakeups = Wakeups::new();
        for _ in 0..2 {
            let mut buf = {
                let mut state = self.lock();
                if state.closed.is_some() {
                    return;
                }
                if state.out.is_empty() {
                    state.writing = false;
                    return;
                }
                let mut buf = std::mem::take(&mut state.spare);
                std::mem::swap(&mut buf, &mut state.out);
                state.out_frames = 0;
                wakeups.append(&mut state.room);
                buf
            };
            wake_all(&mut wakeups);
            let mut cx = Context::from_waker(futures::task::noop_waker_ref());
            let mut written = 0;
            let mut blocked = false;
            let mut failed = false;
            {
                let mut io = self.io.lock().unwrap_or_else(|e| e.into_inner());
                while written < buf.len() {
                    match Pin::new(&mut **io).poll_write(&mut cx, &buf[written..]) {
                        Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                            failed = true;
                            break;
                        }
                        Poll::Ready(Ok(n)) => written += n,
                        Poll::Pending => {
                            blocked = true;
                            break;
                        }
                    }
                }
                if !blocked && !failed {
                    match Pin::new(&mut **io).poll_flush(&mut cx) {
                        Poll::Ready(Ok(())) => {}
                        Poll::Ready(Err(_)) => failed = true,
                        Poll::Pending => blocked = true,
                    }
                }
            }
            if failed {
                self.fail_all(Closed::Eof);
                return;
            }
            let mut state = self.lock();
            if blocked {
                buf.advance(written);
                state.unfinished = buf;
                state.flush_pending = true;
                Self::hand_to_writer(&mut state, &mut wakeups);
                drop(state);
                wake_all(&mut wakeups);
                return;
            }
            if buf.capacity() <= WRITE_BUFFER_RETAIN_BYTES_MAX {
                buf.clear();
                state.spare = buf;
            }
        }
        // Still refilling: let the writer task take over.
        let mut state = self.lock();
        if state.out.is_empty() {
            state.writing = false;
        } else {
            Self::hand_to_writer(&mut state, &mut wakeups);
        }
        drop(state);
        wake_all(&mut wakeups);
    }

    /// Queue a control frame (ping, pong, cancel) regardless of the caller bound; if
    /// nobody is writing, the writer task is woken (its waker pushed to `wakeups`).
    fn queue_control(state: &mut State, kind: Kind, id: u64, wakeups: &mut Wakeups) {
        let frame = Frame::control(kind, id);
        if frame::encode(&frame, &EncodeOptions::default(), &mut state.out).is_ok() {
            state.out_frames += 1;
            if !state.writing {
                Self::hand_to_writer(state, wakeups);
            }
        }
    }

    /// The reply of call `id`, once it is in.
    fn poll_reply(&self, cx: &mut Context<'_>, id: u64) -> Poll<Result<Bytes>> {
        let mut state = self.lock();
        match state.calls.get_mut(id) {
            Some(Slot::Waiting { waker, .. }) => {
                match waker {
                    Some(waker) if waker.will_wake(cx.waker()) => {}
                    _ => *waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            Some(Slot::Done(_)) => match state.calls.remove(id) {
                Some(Slot::Done(result)) => Poll::Ready(result),
                _ => Poll::Ready(Err(Error::ConnectionClosed)),
            },
            Some(Slot::Stream(_) | Slot::Piped { .. }) | None => {
                Poll::Ready(Err(Error::ConnectionClosed))
            }
        }
    }

    /// Forget a call that ended without its reply and, if the server may still be
    /// working on it, tell it to stop.
    fn abandon(&self, id: u64) {
        let mut wakeups = Wakeups::new();
        Self::forget(&mut self.lock(), id, &mut wakeups);
        wake_all(&mut wakeups);
    }

    /// Remove call `id` (the lock held) and, if the server may still be working on it,
    /// queue its `Cancel`; whether it was still running.
    fn forget(state: &mut State, id: u64, wakeups: &mut Wakeups) -> bool {
        let still_running = matches!(
            state.calls.remove(id),
            Some(Slot::Waiting { .. } | Slot::Stream(_) | Slot::Piped { .. })
        );
        if still_running && state.closed.is_none() {
            Self::queue_control(state, Kind::Cancel, id, wakeups);
        }
        still_running
    }

    /// End the connection: every waiting call fails with `closed`'s error.
    fn fail_all(&self, closed: Closed) {
        let mut wakeups = Wakeups::new();
        let first = {
            let mut state = self.lock();
            let first = state.closed.is_none();
            self.closed.store(true, Ordering::Release);
            let reason = state.closed.clone().unwrap_or(closed);
            // From now on nothing registers here: a caller that took this connection
            // just before it ended gets the reason instead of waiting forever (the
            // reader and its timer are gone).
            state.closed = Some(reason.clone());
            let mut piped = Vec::new();
            state.calls.retain(|id, slot| match slot {
                Slot::Waiting { waker, .. } => {
                    wakeups.extend(waker.take());
                    *slot = Slot::Done(Err(reason.to_error()));
                    true
                }
                Slot::Done(_) => true,
                Slot::Stream(tx) => {
                    let _ = tx.try_send(Err(reason.to_error()));
                    false
                }
                Slot::Piped { pipe, .. } => {
                    piped.push((*pipe, id));
                    false
                }
            });
            for (pipe, id) in piped {
                state.deliver(pipe, id, Err(reason.to_error()), &mut wakeups);
            }
            state.timer_at = None;
            state.out.clear();
            state.out_frames = 0;
            wakeups.extend(state.writer.take());
            wakeups.append(&mut state.room);
            first
        };
        wake_all(&mut wakeups);
        self.stop.cancel();
        if first {
            // Close our half now, so the server sees the end at once rather than when
            // the last handle on this connection (a pipeline, a finishing call) goes.
            // Whoever holds the write half is failing too: then it is closed on drop.
            if let Ok(mut io) = self.io.try_lock() {
                let mut cx = Context::from_waker(futures::task::noop_waker_ref());
                let _ = Pin::new(&mut **io).poll_shutdown(&mut cx);
            }
        }
    }

    /// Fail the calls whose deadline has passed (and cancel them on the server);
    /// returns the next deadline to arm the timer for.
    fn expire(&self, now: Instant) -> Option<Instant> {
        let mut wakeups = Wakeups::new();
        let mut expired = Vec::new();
        let next = {
            let mut state = self.lock();
            let mut next: Option<Instant> = None;
            let mut piped = Vec::new();
            for (id, slot) in state.calls.iter_mut() {
                match slot {
                    Slot::Waiting {
                        waker,
                        deadline,
                        timeout,
                    } if *deadline <= now => {
                        wakeups.extend(waker.take());
                        *slot = Slot::Done(Err(Error::Timeout { after: *timeout }));
                        expired.push(id);
                    }
                    Slot::Piped {
                        pipe,
                        deadline,
                        timeout,
                    } if *deadline <= now => {
                        piped.push((*pipe, id, *timeout));
                        expired.push(id);
                    }
                    slot => {
                        if let Some(deadline) = slot.deadline()
                            && next.is_none_or(|at| deadline < at)
                        {
                            next = Some(deadline);
                        }
                    }
                }
            }
            for (pipe, id, timeout) in piped {
                state.calls.remove(id);
                state.deliver(
                    pipe,
                    id,
                    Err(Error::Timeout { after: timeout }),
                    &mut wakeups,
                );
            }
            if state.closed.is_none() {
                for id in expired {
                    Self::queue_control(&mut state, Kind::Cancel, id, &mut wakeups);
                }
            }
            state.timer_at = next;
            next
        };
        wake_all(&mut wakeups);
        next
    }

    fn timer_at(&self) -> Option<Instant> {
        self.lock().timer_at
    }

    /// Queue a heartbeat ping.
    fn ping(&self, id: u64) {
        let mut wakeups = Wakeups::new();
        Self::queue_control(&mut self.lock(), Kind::Ping, id, &mut wakeups);
        wake_all(&mut wakeups);
    }

    /// Route a batch of frames from the server under one lock acquisition, then wake
    /// their callers. `Err` ends the connection (frames before the bad one are routed).
    fn dispatch(
        &self,
        frames: &mut Vec<Frame>,
        wakeups: &mut Wakeups,
    ) -> std::result::Result<(), Closed> {
        let mut outcome = Ok(());
        let mut lagged = Vec::new();
        {
            let mut state = self.lock();
            state.last_read_frames = frames.len();
            for frame in frames.drain(..) {
                if let Err(closed) = Self::route(&mut state, frame, wakeups, &mut lagged) {
                    outcome = Err(closed);
                    break;
                }
            }
            frames.clear();
        }
        wake_all(wakeups);
        for (tx, capacity) in lagged {
            // Make room for the error: the subscriber reads it after the events it
            // already has.
            tokio::spawn(async move {
                let _ = tx.send(Err(Error::Lagged { capacity })).await;
            });
        }
        outcome
    }

    /// Route one frame (the lock held).
    fn route(
        state: &mut State,
        frame: Frame,
        wakeups: &mut Wakeups,
        lagged: &mut Vec<(mpsc::Sender<Result<Bytes>>, usize)>,
    ) -> std::result::Result<(), Closed> {
        match frame.kind {
            Kind::Response | Kind::Error => {
                if frame.kind == Kind::Error && frame.correlation_id == 0 {
                    // About the connection as a whole (e.g. Busy at connections_max).
                    return Err(Closed::Remote(RpcError::from_body(&frame.body)));
                }
                let result = if frame.kind == Kind::Response {
                    Ok(frame.body)
                } else {
                    Err(Error::Rpc(RpcError::from_body(&frame.body)))
                };
                match state.calls.get_mut(frame.correlation_id) {
                    Some(slot @ Slot::Waiting { .. }) => {
                        if let Slot::Waiting { waker, .. } = slot {
                            wakeups.extend(waker.take());
                        }
                        *slot = Slot::Done(result);
                    }
                    Some(Slot::Piped { pipe, .. }) => {
                        let pipe = *pipe;
                        state.calls.remove(frame.correlation_id);
                        state.deliver(pipe, frame.correlation_id, result, wakeups);
                    }
                    // `Response` ends a stream: dropping the sender ends it.
                    Some(Slot::Stream(_)) => {
                        if let Some(Slot::Stream(tx)) = state.calls.remove(frame.correlation_id)
                            && let Err(err) = result
                        {
                            let _ = tx.try_send(Err(err));
                        }
                    }
                    // Timed out, cancelled, or a duplicate: ignore.
                    Some(Slot::Done(_)) | None => {}
                }
                Ok(())
            }
            Kind::Event => {
                let Some(Slot::Stream(tx)) = state.calls.get(frame.correlation_id) else {
                    return Ok(());
                };
                match tx.try_send(Ok(frame.body)) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        // Cut off a subscriber that fell behind instead of stalling the
                        // connection for every other call.
                        let capacity = tx.max_capacity();
                        if let Some(Slot::Stream(tx)) = state.calls.remove(frame.correlation_id) {
                            Self::queue_control(state, Kind::Cancel, frame.correlation_id, wakeups);
                            lagged.push((tx, capacity));
                        }
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        state.calls.remove(frame.correlation_id);
                    }
                }
                Ok(())
            }
            Kind::Ping => {
                Self::queue_control(state, Kind::Pong, frame.correlation_id, wakeups);
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

    /// The writer task's side: when it is its turn, swap the next bytes to write
    /// into `buf` (empty on entry); `Ready(true)` with an empty `buf` asks for a flush
    /// only. Parks (and gives the write half back) when nothing is left.
    /// `Ready(false)`: the connection is closed.
    fn poll_writer_turn(&self, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<bool> {
        let mut room = {
            let mut state = self.lock();
            if state.closed.is_some() {
                return Poll::Ready(false);
            }
            if !state.writer_turn {
                state.writer = Some(cx.waker().clone());
                return Poll::Pending;
            }
            if !state.unfinished.is_empty() {
                std::mem::swap(&mut state.unfinished, buf);
                return Poll::Ready(true);
            }
            if state.out.is_empty() {
                if std::mem::take(&mut state.flush_pending) {
                    return Poll::Ready(true);
                }
                state.writer_turn = false;
                state.writing = false;
                state.writer = Some(cx.waker().clone());
                return Poll::Pending;
            }
            std::mem::swap(&mut state.out, buf);
            state.out_frames = 0;
            std::mem::take(&mut state.room)
        };
        wake_all(&mut room);
        Poll::Ready(true)
    }
}

/// The duty of a subscriber that took the write half in [`Connection::start`] (a unary
/// [`Call`] carries out the same duty as steps of its own): yield once
/// (so every other ready caller queues its frame behind this one), then write them all
/// in one syscall; a lone call (no other call pending: nobody to wait for) writes at
/// once. Inside a tokio task the yield costs more than a reschedule: the runtime wakes
/// an idle worker for the yielded task, which then bounces between workers (a lone
/// call's round trip from a task: p50 28 µs with the yield, 16 µs without; see
/// docs/BENCHMARKS.md). If the caller goes away first, the writer task takes the duty
/// over.
struct FlushDuty<'c> {
    conn: &'c Connection,
    done: bool,
}

/// What [`Connection::start`] asks of its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flush {
    /// Someone else writes.
    No,
    /// Write, after yielding once.
    AfterYield,
    /// Write now.
    Now,
}

impl<'c> FlushDuty<'c> {
    /// Carry out what [`Connection::start`] asked of its caller.
    async fn carry_out(conn: &'c Connection, flush: Flush) {
        if flush == Flush::No {
            return;
        }
        let mut duty = FlushDuty { conn, done: false };
        if flush == Flush::AfterYield {
            let mut yielded = false;
            std::future::poll_fn(|cx| {
                if yielded {
                    Poll::Ready(())
                } else {
                    yielded = true;
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
            })
            .await;
        }
        duty.done = true;
        conn.flush_now();
    }
}

impl Drop for FlushDuty<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.conn.give_flush_to_writer();
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
    /// The token of the next handshake: `config.auth_token` at first, then the last
    /// one a re-authentication had accepted (`auth`).
    token: Mutex<Option<Vec<u8>>>,
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
                token: Mutex::new(config.auth_token.clone()),
                config,
                current: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
            }),
        };
        client.connection().await?;
        Ok(client)
    }

    /// The principal the server established in the handshake or the last
    /// re-authentication (empty without an authenticator; `None` before the
    /// handshake or without a token).
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
        Ok(qiss::from_bytes(&reply)?)
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
    pub fn call_raw_by_id(
        &self,
        service_id: u16,
        method_id: u16,
        body: Bytes,
        options: CallOptions,
    ) -> Call<'_> {
        Call::new(
            self,
            None,
            Kind::Request,
            service_id,
            method_id,
            body,
            options,
        )
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
        let outgoing = Outgoing::new(Kind::Request, service_id, method_id, body, &conn.options)?;
        let (flush, id) = conn.start(outgoing, || Slot::Stream(tx.clone())).await?;
        drop(tx);
        let guard = CallGuard {
            conn: Arc::clone(&conn),
            id,
            armed: true,
        };
        FlushDuty::carry_out(&conn, flush).await;
        Ok(Subscription {
            rx,
            guard,
            _event: PhantomData,
        })
    }

    async fn table<'c>(&self, conn: &'c Arc<Connection>) -> Result<&'c RegistryTable> {
        conn.table
            .get_or_try_init(|| async {
                let body = Call::new(
                    self,
                    Some(Arc::clone(conn)),
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
        check_body_size(body.len(), self.inner.config.frame_size_bytes_max)
    }

    /// The live connection, or a new one (with backoff between failed attempts).
    async fn connection(&self) -> Result<Arc<Connection>> {
        if let Some(conn) = self.current() {
            return Ok(conn);
        }
        // Boxed: the dial path is large and rare; inlined, it would make every call's
        // future ~1.4 KB bigger (and every spawned or pushed call copy it).
        Box::pin(self.reconnect()).await
    }

    /// Dial, with backoff between failed attempts (one dialer at a time).
    async fn reconnect(&self) -> Result<Arc<Connection>> {
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
        let token = self
            .inner
            .token
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(token) = token {
            let body = Call::new(
                self,
                Some(Arc::clone(&conn)),
                Kind::Auth,
                0,
                0,
                Bytes::from(token),
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

/// A request body of `len` bytes fits in a frame of at most `max` bytes.
fn check_body_size(len: usize, max: usize) -> Result<()> {
    if HEADER_LEN + len > max {
        return Err(Error::Frame(FrameError::TooLarge {
            len: (HEADER_LEN + len) as u64,
            max,
            correlation_id: 0,
        }));
    }
    Ok(())
}

/// `now + timeout`, saturating (about 30 years out) instead of overflowing.
fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30))
}

/// Spawn the reader and writer of a fresh connection.
fn start_connection<R, W>(reader: R, writer: W, config: &ClientConfig) -> Arc<Connection>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let stop = CancellationToken::new();
    let conn = Arc::new(Connection {
        io: Mutex::new(Box::new(writer)),
        state: Mutex::new(State {
            closed: None,
            calls: Calls::default(),
            out: BytesMut::with_capacity(READ_BUFFER_BYTES),
            out_frames: 0,
            writing: false,
            writer_turn: false,
            unfinished: BytesMut::new(),
            flush_pending: false,
            spare: BytesMut::with_capacity(READ_BUFFER_BYTES),
            writer: None,
            room: Vec::new(),
            timer_at: None,
            last_read_frames: 0,
            pipes: Vec::new(),
        }),
        closed: AtomicBool::new(false),
        stop,
        timer_changed: Notify::new(),
        options: config.encode_options(),
        out_frames_max: config.outbound_queue_frames_max.max(1),
        table: tokio::sync::OnceCell::new(),
        principal: Mutex::new(None),
    });
    tokio::spawn(write_loop(Arc::clone(&conn)));
    let heartbeat_interval = config.heartbeat_interval.max(Duration::from_millis(1));
    let dead_after = heartbeat_interval * config.heartbeat_misses_max.max(1);
    tokio::spawn(read_loop(
        reader,
        Arc::clone(&conn),
        config.frame_size_bytes_max,
        heartbeat_interval,
        dead_after,
    ));
    conn
}

/// The writer task: the slow path of writes. It runs when a caller could not finish a
/// write (the socket was full), when a flushing caller went away, or when the reader
/// queued a control frame; it writes everything queued per `write_all` and gives the
/// write half back once the queue is empty. A write error ends the connection.
async fn write_loop(conn: Arc<Connection>) {
    let mut buf = BytesMut::with_capacity(READ_BUFFER_BYTES);
    let written: std::io::Result<()> = async {
        loop {
            if !std::future::poll_fn(|cx| conn.poll_writer_turn(cx, &mut buf)).await {
                return Ok(());
            }
            let mut done = 0;
            let write = std::future::poll_fn(|cx| {
                let mut io = conn.io.lock().unwrap_or_else(|e| e.into_inner());
                while done < buf.len() {
                    match Pin::new(&mut **io).poll_write(cx, &buf[done..]) {
                        Poll::Ready(Ok(0)) => {
                            return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                        }
                        Poll::Ready(Ok(n)) => done += n,
                        Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                        Poll::Pending => return Poll::Pending,
                    }
                }
                Pin::new(&mut **io).poll_flush(cx)
            });
            tokio::select! {
                written = write => written?,
                _ = conn.stop.cancelled() => return Ok(()),
            }
            if buf.capacity() > WRITE_BUFFER_RETAIN_BYTES_MAX {
                buf = BytesMut::with_capacity(READ_BUFFER_BYTES);
            } else {
                buf.clear();
            }
        }
    }
    .await;
    if let Err(err) = written {
        tracing::debug!(%err, "client write failed");
        conn.fail_all(Closed::Eof);
    }
}

/// The reader: read as much as the socket has, decode every whole frame, route them
/// all under one lock; ping a silent server; fail calls whose deadline passed.
async fn read_loop<R>(
    mut reader: R,
    conn: Arc<Connection>,
    frame_size_bytes_max: usize,
    heartbeat_interval: Duration,
    dead_after: Duration,
) where
    R: AsyncRead + Unpin,
{
    let mut buf = BytesMut::with_capacity(READ_BUFFER_BYTES);
    let mut frames: Vec<Frame> = Vec::with_capacity(WRITE_BATCH_FRAMES_MAX);
    let mut wakeups = Wakeups::with_capacity(WRITE_BATCH_FRAMES_MAX);
    let mut ticker =
        tokio::time::interval_at(Instant::now() + heartbeat_interval, heartbeat_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_frame_at = Instant::now();
    let mut ping_id = 0u64;
    // One timer for every call's deadline: armed for the earliest one.
    let deadline = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(deadline);
    let mut armed: Option<Instant> = None;
    let closed = loop {
        if buf.capacity() - buf.len() < READ_ROOM_BYTES_MIN {
            buf.reserve(READ_BUFFER_BYTES);
        }
        let mut timer = None;
        let mut read = None;
        tokio::select! {
            _ = conn.stop.cancelled() => break Closed::Eof,
            result = reader.read_buf(&mut buf) => read = Some(result),
            _ = ticker.tick() => {
                let mut silent_for = last_frame_at.elapsed();
                if silent_for >= dead_after {
                    // After a stall (a loaded machine) the tick may win the race
                    // against a reply already in the socket: look before judging.
                    read = reader.read_buf(&mut buf).now_or_never();
                    if read.is_none() {
                        break Closed::Unresponsive(silent_for);
                    }
                    silent_for = Duration::ZERO;
                }
                if silent_for >= heartbeat_interval {
                    ping_id = ping_id.wrapping_add(1);
                    conn.ping(ping_id);
                }
            }
            _ = &mut deadline, if armed.is_some() => {
                timer = Some(conn.expire(Instant::now()));
            }
            _ = conn.timer_changed.notified() => {
                timer = Some(conn.timer_at());
            }
        }
        if let Some(read) = read {
            if !matches!(read, Ok(n) if n > 0) {
                break Closed::Eof;
            }
            if let Err(closed) = decode_and_dispatch(
                &conn,
                &mut buf,
                frame_size_bytes_max,
                &mut frames,
                &mut wakeups,
            ) {
                break closed;
            }
            last_frame_at = Instant::now();
        }
        if let Some(at) = timer
            && at != armed
        {
            if let Some(at) = at {
                deadline.as_mut().reset(at);
            }
            armed = at;
        }
    };
    tracing::debug!(?closed, "client connection ended");
    conn.fail_all(closed);
}

/// Decode every whole frame in `buf` and route them (one lock for the batch). Frames
/// before a malformed one are routed; the malformed one ends the connection.
fn decode_and_dispatch(
    conn: &Connection,
    buf: &mut BytesMut,
    frame_size_bytes_max: usize,
    frames: &mut Vec<Frame>,
    wakeups: &mut Wakeups,
) -> std::result::Result<(), Closed> {
    let mut bad = None;
    loop {
        match frame::decode(buf, frame_size_bytes_max) {
            Ok(Some(frame)) => frames.push(frame),
            Ok(None) => break,
            Err(err) => {
                bad = Some(err);
                break;
            }
        }
    }
    conn.dispatch(frames, wakeups)?;
    match bad {
        Some(err) => Err(Closed::Frame(err)),
        None => Ok(()),
    }
}

/// Sends a `Cancel` for a call that ends without its reply.
struct CallGuard {
    conn: Arc<Connection>,
    id: u64,
    armed: bool,
}

impl Drop for CallGuard {
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
    guard: CallGuard,
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

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream::FuturesUnordered;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;
    use tokio_util::codec::FramedRead;

    use crate::codec::FrameCodec;

    /// A scripted server: accepts one connection and hands every frame it reads to the
    /// test, which answers through the returned writer.
    async fn scripted_server() -> (
        String,
        tokio::task::JoinHandle<(
            mpsc::UnboundedReceiver<Frame>,
            tokio::net::tcp::OwnedWriteHalf,
        )>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accepted = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            let (read, write) = socket.into_split();
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(async move {
                let mut frames = FramedRead::new(read, FrameCodec::default());
                while let Some(Ok(frame)) = frames.next().await {
                    if tx.send(frame).is_err() {
                        break;
                    }
                }
            });
            (rx, write)
        });
        (addr, accepted)
    }

    /// A client connected to a scripted server, and the server's ends.
    pub(super) async fn scripted_client() -> (
        NeoClient,
        mpsc::UnboundedReceiver<Frame>,
        tokio::net::tcp::OwnedWriteHalf,
    ) {
        let (addr, accepted) = scripted_server().await;
        let client = NeoClient::connect(addr, ClientConfig::default())
            .await
            .unwrap();
        let (rx, write) = accepted.await.unwrap();
        (client, rx, write)
    }

    /// One spawned call per body; returns them and the requests the server got.
    async fn spawn_calls(
        client: &NeoClient,
        rx: &mut mpsc::UnboundedReceiver<Frame>,
        bodies: &[&'static [u8]],
    ) -> (Vec<tokio::task::JoinHandle<Result<Bytes>>>, Vec<Frame>) {
        let calls: Vec<_> = bodies
            .iter()
            .map(|b| tokio::spawn(call(client, b)))
            .collect();
        let mut requests = Vec::new();
        for _ in 0..bodies.len() {
            requests.push(next_request(rx).await);
        }
        (calls, requests)
    }

    /// One more call, answered with its own body: the connection still works.
    pub(super) async fn assert_still_works(
        client: &NeoClient,
        rx: &mut mpsc::UnboundedReceiver<Frame>,
        write: &mut tokio::net::tcp::OwnedWriteHalf,
    ) {
        let after = tokio::spawn(call(client, b"after"));
        let request = next_request(rx).await;
        reply(write, &request, request.body.clone()).await;
        assert_eq!(&after.await.unwrap().unwrap()[..], b"after");
    }

    /// `request`'s `Response` with `body`, encoded onto `buf`.
    fn encode_response(request: &Frame, body: Bytes, buf: &mut BytesMut) {
        let frame = Frame {
            kind: Kind::Response,
            service_id: request.service_id,
            method_id: request.method_id,
            correlation_id: request.correlation_id,
            body,
        };
        frame::encode(&frame, &EncodeOptions::default(), buf).unwrap();
    }

    /// One `Response` per request, echoing its body, encoded back to back.
    pub(super) fn echoes<'f>(requests: impl Iterator<Item = &'f Frame>) -> BytesMut {
        let mut buf = BytesMut::new();
        for request in requests {
            encode_response(request, request.body.clone(), &mut buf);
        }
        buf
    }

    pub(super) async fn reply(
        write: &mut tokio::net::tcp::OwnedWriteHalf,
        request: &Frame,
        body: Bytes,
    ) {
        let mut buf = BytesMut::new();
        encode_response(request, body, &mut buf);
        write.write_all(&buf).await.unwrap();
    }

    pub(super) async fn next_request(rx: &mut mpsc::UnboundedReceiver<Frame>) -> Frame {
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("the client sent nothing")
                .expect("the client hung up");
            if frame.kind != Kind::Ping {
                return frame;
            }
        }
    }

    fn call(
        client: &NeoClient,
        body: &'static [u8],
    ) -> impl Future<Output = Result<Bytes>> + Send + 'static {
        let client = client.clone();
        async move {
            client
                .call_raw_by_id(1, 1, Bytes::from_static(body), CallOptions::default())
                .await
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_concurrent_callers_share_one_connection() {
        let mut server = crate::NeoServer::new(crate::NeoConfig::default());
        server
            .register(
                crate::ServiceBuilder::new("echo")
                    .method(crate::MethodBuilder::new("echo").raw_sync_handler(|_, body| Ok(body))),
            )
            .unwrap();
        let handle = server
            .start(TcpListener::bind("127.0.0.1:0").await.unwrap())
            .unwrap();
        let config = ClientConfig {
            // A tiny queue: callers wait for room, and still all complete.
            outbound_queue_frames_max: 4,
            ..ClientConfig::default()
        };
        let client = NeoClient::connect(handle.local_addr().to_string(), config)
            .await
            .unwrap();
        let (service_id, method_id) = client.resolve("echo", "echo").await.unwrap();
        let mut tasks = Vec::new();
        for task in 0..32u32 {
            let client = client.clone();
            tasks.push(tokio::spawn(async move {
                let mut calls = FuturesUnordered::new();
                for i in 0..64u32 {
                    let client = client.clone();
                    calls.push(async move {
                        let body = Bytes::from(format!("{task}/{i}").repeat(i as usize % 5 + 1));
                        let reply = client
                            .call_raw_by_id(
                                service_id,
                                method_id,
                                body.clone(),
                                CallOptions::default(),
                            )
                            .await
                            .unwrap();
                        assert_eq!(reply, body);
                    });
                }
                while calls.next().await.is_some() {}
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        handle.shutdown().await;
    }

    #[tokio::test]
    async fn replies_out_of_order_reach_their_callers() {
        let (client, mut rx, mut write) = scripted_client().await;
        let bodies: [&'static [u8]; 5] = [b"a", b"bb", b"ccc", b"dddd", b"eeeee"];
        let (calls, requests) = spawn_calls(&client, &mut rx, &bodies).await;
        // Answer in reverse order, each with its own request's body doubled.
        for request in requests.iter().rev() {
            let body = Bytes::from([&request.body[..], &request.body[..]].concat());
            reply(&mut write, request, body).await;
        }
        for (body, call) in bodies.iter().zip(calls) {
            let reply = call.await.unwrap().unwrap();
            assert_eq!(&reply[..], &[*body, *body].concat()[..]);
        }
    }

    #[tokio::test]
    async fn replies_in_one_read_all_reach_their_callers_before_a_bad_frame_ends_it() {
        let (client, mut rx, mut write) = scripted_client().await;
        let bodies: [&'static [u8]; 4] = [b"a", b"bb", b"ccc", b"dddd"];
        let (calls, requests) = spawn_calls(&client, &mut rx, &bodies).await;
        let unanswered = tokio::spawn(call(&client, b"never answered"));
        next_request(&mut rx).await;
        // Every reply, reversed, in one write (one read for the client), then a frame
        // with a bad magic: the replies before it are routed, then the connection ends.
        let mut buf = echoes(requests.iter().rev());
        buf.extend_from_slice(&[0xde; HEADER_LEN]);
        write.write_all(&buf).await.unwrap();
        for (body, call) in bodies.iter().zip(calls) {
            assert_eq!(&call.await.unwrap().unwrap()[..], *body);
        }
        let err = unanswered.await.unwrap().unwrap_err();
        assert!(matches!(err, Error::Frame(_)), "{err:?}");
    }

    #[tokio::test]
    async fn a_call_times_out_while_others_complete() {
        let (client, mut rx, mut write) = scripted_client().await;
        let slow = {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .call_raw_by_id(
                        1,
                        1,
                        Bytes::from_static(b"slow"),
                        CallOptions::timeout(Duration::from_millis(50)),
                    )
                    .await
            })
        };
        let slow_request = next_request(&mut rx).await;
        let fast: Vec<_> = (0..3)
            .map(|_| tokio::spawn(call(&client, b"fast")))
            .collect();
        for _ in 0..3 {
            let request = next_request(&mut rx).await;
            reply(&mut write, &request, request.body.clone()).await;
        }
        for call in fast {
            assert_eq!(&call.await.unwrap().unwrap()[..], b"fast");
        }
        let started = Instant::now();
        let result = slow.await.unwrap();
        assert!(
            matches!(result, Err(Error::Timeout { after }) if after == Duration::from_millis(50)),
            "{result:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        // The server is told to stop it, and a late reply is ignored.
        let cancel = next_request(&mut rx).await;
        assert_eq!(cancel.kind, Kind::Cancel);
        assert_eq!(cancel.correlation_id, slow_request.correlation_id);
        reply(&mut write, &slow_request, Bytes::from_static(b"late")).await;
        assert_still_works(&client, &mut rx, &mut write).await;
    }

    #[tokio::test]
    async fn a_dropped_connection_fails_every_pending_call() {
        let (client, mut rx, write) = scripted_client().await;
        let calls: Vec<_> = (0..10).map(|_| tokio::spawn(call(&client, b"x"))).collect();
        for _ in 0..10 {
            next_request(&mut rx).await;
        }
        drop(write);
        drop(rx);
        for call in calls {
            let result = tokio::time::timeout(Duration::from_secs(5), call)
                .await
                .unwrap()
                .unwrap();
            assert!(matches!(result, Err(Error::ConnectionClosed)), "{result:?}");
        }
    }

    #[tokio::test]
    async fn a_caller_dropped_before_flushing_still_gets_its_frame_written() {
        let (client, mut rx, mut write) = scripted_client().await;
        // A call in flight, so that the next one batches (yields before writing)
        // instead of writing at once as a lone call does.
        let earlier = tokio::spawn(call(&client, b"earlier"));
        let earlier_request = next_request(&mut rx).await;
        // Poll once: the call registers, takes the flush duty and yields; then drop it.
        {
            let mut first = Box::pin(call(&client, b"first"));
            assert!(futures::poll!(first.as_mut()).is_pending());
        }
        // The writer task took the duty over: the request and its cancel arrive.
        let request = next_request(&mut rx).await;
        assert_eq!(&request.body[..], b"first");
        let cancel = next_request(&mut rx).await;
        assert_eq!(
            (cancel.kind, cancel.correlation_id),
            (Kind::Cancel, request.correlation_id)
        );
        assert_still_works(&client, &mut rx, &mut write).await;
        reply(&mut write, &earlier_request, earlier_request.body.clone()).await;
        assert_eq!(&earlier.await.unwrap().unwrap()[..], b"earlier");
    }

    #[tokio::test]
    async fn a_lone_call_is_written_at_once_and_a_call_behind_others_batches() {
        let (client, mut rx, mut write) = scripted_client().await;
        let conn = client.connection().await.unwrap();
        // Alone: the call's first poll writes its frame (no yield first).
        let mut lone = Box::pin(call(&client, b"lone"));
        assert!(futures::poll!(lone.as_mut()).is_pending());
        assert!(
            !conn.lock().writing,
            "a lone call flushes within its first poll"
        );
        let lone_request = next_request(&mut rx).await;
        // Behind a pending call: the first poll takes the flush duty and yields, so
        // that other ready callers can join the write.
        let mut batched = Box::pin(call(&client, b"batched"));
        assert!(futures::poll!(batched.as_mut()).is_pending());
        assert!(
            conn.lock().writing,
            "the duty is pending until the caller's next poll"
        );
        assert!(futures::poll!(batched.as_mut()).is_pending());
        assert!(!conn.lock().writing);
        let batched_request = next_request(&mut rx).await;
        for request in [&lone_request, &batched_request] {
            reply(&mut write, request, request.body.clone()).await;
        }
        assert_eq!(&lone.await.unwrap()[..], b"lone");
        assert_eq!(&batched.await.unwrap()[..], b"batched");
    }

    #[tokio::test]
    async fn the_first_call_after_a_batch_of_replies_waits_for_the_other_callers() {
        let (client, mut rx, mut write) = scripted_client().await;
        let conn = client.connection().await.unwrap();
        let (calls, requests) = spawn_calls(&client, &mut rx, &[b"a", b"b"]).await;
        // Both replies in one write, so the reader routes them from one read.
        let mut both = BytesMut::new();
        for request in &requests {
            let response = Frame {
                kind: Kind::Response,
                ..request.clone()
            };
            frame::encode(&response, &EncodeOptions::default(), &mut both).unwrap();
        }
        write.write_all(&both).await.unwrap();
        for call in calls {
            call.await.unwrap().unwrap();
        }
        // No call is pending now, but two callers were just answered: pipelining, the
        // other one is about to call again, so this call waits a turn for it.
        let mut next = Box::pin(call(&client, b"next"));
        assert!(futures::poll!(next.as_mut()).is_pending());
        assert!(
            conn.lock().writing,
            "the write waits for the caller's next poll"
        );
        assert!(futures::poll!(next.as_mut()).is_pending());
        assert!(!conn.lock().writing);
        let request = next_request(&mut rx).await;
        reply(&mut write, &request, request.body.clone()).await;
        assert_eq!(&next.await.unwrap()[..], b"next");
        // After a read that answered only it, a lone caller writes at once again.
        let mut lone = Box::pin(call(&client, b"lone"));
        assert!(futures::poll!(lone.as_mut()).is_pending());
        assert!(
            !conn.lock().writing,
            "a lone call flushes within its first poll"
        );
        let request = next_request(&mut rx).await;
        reply(&mut write, &request, request.body.clone()).await;
        assert_eq!(&lone.await.unwrap()[..], b"lone");
    }

    #[tokio::test]
    async fn a_call_waiting_for_room_times_out() {
        // A server that accepts and never reads: the socket fills, the outbound queue
        // fills behind it, and later calls wait for room until their deadline.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        // A small receive window, so the client's socket fills after a few MB.
        socket.set_recv_buffer_size(4096).unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(8).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let _silent = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(socket);
        });
        let config = ClientConfig {
            outbound_queue_frames_max: 1,
            call_timeout: Duration::from_millis(300),
            ..ClientConfig::default()
        };
        let client = NeoClient::connect(addr, config).await.unwrap();
        let conn = client.connection().await.unwrap();
        // Incompressible (the client compresses large bodies).
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let body: Bytes = (0..1 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect::<Vec<u8>>()
            .into();
        let calls: Vec<_> = (0..40)
            .map(|_| {
                let client = client.clone();
                let body = body.clone();
                tokio::spawn(async move {
                    client
                        .call_raw_by_id(1, 1, body, CallOptions::default())
                        .await
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !conn.lock().room.is_empty(),
            "some calls wait for room in the outbound queue"
        );
        for call in calls {
            let result = tokio::time::timeout(Duration::from_secs(10), call)
                .await
                .unwrap()
                .unwrap();
            assert!(matches!(result, Err(Error::Timeout { .. })), "{result:?}");
        }
    }

    #[tokio::test]
    async fn cancelling_a_call_tells_the_server() {
        let (client, mut rx, _write) = scripted_client().await;
        let token = CancellationToken::new();
        let call = {
            let client = client.clone();
            let token = token.clone();
            tokio::spawn(async move {
                client
                    .call_raw_by_id(1, 1, Bytes::new(), CallOptions::cancel_on(token))
                    .await
            })
        };
        let request = next_request(&mut rx).await;
        token.cancel();
        assert!(matches!(call.await.unwrap(), Err(Error::Cancelled)));
        let cancel = next_request(&mut rx).await;
        assert_eq!(
            (cancel.kind, cancel.correlation_id),
            (Kind::Cancel, request.correlation_id)
        );
    }

    #[tokio::test]
    async fn an_ended_connection_closes_its_socket_while_handles_on_it_remain() {
        let (client, mut rx, mut write) = scripted_client().await;
        // A pipeline keeps this connection's Arc alive after it ends.
        let pipe = client.pipeline().await.unwrap();
        write.write_all(&[0xde; HEADER_LEN]).await.unwrap();
        // The server's reader sees the client's end of the socket close.
        let end = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(frame) = rx.recv().await {
                assert_eq!(frame.kind, Kind::Ping, "{frame:?}");
            }
        })
        .await;
        assert!(end.is_ok(), "the client's socket is still open");
        drop(pipe);
    }

    #[tokio::test]
    async fn a_call_on_a_connection_that_just_ended_fails_at_once() {
        // The race: a caller takes the live connection, which ends before the call
        // registers. With the reader (and its timer) gone, registering would wait
        // forever.
        let (client, _rx, _write) = scripted_client().await;
        let conn = client.connection().await.unwrap();
        conn.fail_all(Closed::Eof);
        // Let the reader and writer tasks see the end and finish.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let call = Call::new(
            &client,
            Some(conn),
            Kind::Request,
            1,
            1,
            Bytes::new(),
            CallOptions::default(),
        );
        let result = tokio::time::timeout(Duration::from_secs(5), call)
            .await
            .expect("the call ends at once");
        assert!(matches!(result, Err(Error::ConnectionClosed)), "{result:?}");
    }

    #[test]
    fn deadlines_saturate_instead_of_overflowing() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            assert!(deadline_after(Duration::MAX) > Instant::now());
        });
    }

    #[tokio::test]
    async fn a_call_future_stays_small() {
        // Every pipelined call's future is moved into a task or a FuturesUnordered
        // slot: `Call` keeps the dial path and the rare timers boxed (the async fn
        // before it was 600 bytes).
        let client = NeoClient {
            inner: Arc::new(Inner {
                addr: "127.0.0.1:1".into(),
                config: ClientConfig::default(),
                current: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
                token: Mutex::new(None),
            }),
        };
        let call = client.call_raw_by_id(1, 1, Bytes::new(), CallOptions::default());
        let size = std::mem::size_of_val(&call);
        assert!(size <= 160, "{size}");
    }
}
