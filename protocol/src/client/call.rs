//! [`Call`]: the future of one unary call, written out by hand as a small state machine
//! instead of nested `async fn`s. Every pipelined call's future is moved into a task or
//! a `FuturesUnordered` slot and polled once or twice, so its size and its steps are on
//! the hot path (the `async fn` version was 600 bytes; this one is a fraction of it).
//!
//! ```text
//!  Begin ─(no live connection)─▶ Dial ─┐
//!    │◀────────────────────────────────┘
//!    ▼
//!  Start: one lock registers the call and queues its frame ─(queue full: wait for
//!    │    room, until the call's deadline)
//!    ├─(flush duty, others may join: yield once)──▶ Wait: write first ─┐
//!    ├─(flush duty, a lone call: write now)─────────────────────────────┤
//!    └─(someone else writes)────────────────────────────────────────────┴▶ Wait: the
//!                                                              reply, or the cancel token
//! ```
//!
//! The hot steps run in place (no move of the state per poll). Dropped while
//! registered (`Wait`), the call is forgotten and the server told
//! to stop (`Cancel`); a pending flush duty goes to the writer task first, so frames
//! other callers queued behind this one still go out.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::{CallOptions, Connection, Flush, NeoClient, Outgoing, Slot, deadline_after};
use crate::error::{Error, Result};
use crate::frame::Kind;

/// The future of one unary call: resolves to the reply body, or to why there is none
/// (a remote error, a timeout, cancellation, the connection's end). Returned by
/// [`NeoClient::call_raw_by_id`]; dropping it cancels the call on the server.
#[must_use = "a call does nothing unless awaited"]
pub struct Call<'c> {
    client: &'c NeoClient,
    step: Step<'c>,
}

impl std::fmt::Debug for Call<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let step = match &self.step {
            Step::Begin { .. } => "begin",
            Step::Dial(..) => "dial",
            Step::Start(_) => "start",
            Step::Wait(_) => "wait",
            Step::Done => "done",
        };
        f.debug_struct("Call").field("step", &step).finish()
    }
}

/// What the call sends, until it is queued.
struct Request {
    kind: Kind,
    service_id: u16,
    method_id: u16,
    body: Bytes,
    options: CallOptions,
}

/// A dial in progress (boxed: large and rare).
type Dialing<'c> = Pin<Box<dyn Future<Output = Result<Arc<Connection>>> + Send + 'c>>;

enum Step<'c> {
    /// Check the request; take the given connection, or the client's live one.
    Begin {
        conn: Option<Arc<Connection>>,
        request: Request,
    },
    /// No live connection: dialing.
    Dial(Dialing<'c>, Request),
    /// Waiting for room in a full outbound queue to register.
    Start(Unregistered),
    /// Registered: waiting for the reply (or the cancel token).
    Wait(Registered),
    /// Finished (or failed before registering): nothing to clean up.
    Done,
}

/// A call ready to register and queue its frame.
struct Unregistered {
    conn: Arc<Connection>,
    outgoing: Outgoing,
    cancel: Option<tokio_util::sync::CancellationToken>,
    deadline: Instant,
    timeout: Duration,
    /// The deadline's timer, built (boxed) only if the outbound queue is full and the
    /// call has to wait for room.
    room: Option<Pin<Box<Sleep>>>,
}

/// A call in the connection's pending table.
struct Registered {
    conn: Arc<Connection>,
    id: u64,
    /// Boxed: only calls with a token pay for it.
    cancel: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    /// The call owns the flush duty and has yielded once: it writes on its next poll.
    flush: bool,
}

impl<'c> Call<'c> {
    /// A call on the client's live connection (dialing one if there is none).
    pub(super) fn new(
        client: &'c NeoClient,
        conn: Option<Arc<Connection>>,
        kind: Kind,
        service_id: u16,
        method_id: u16,
        body: Bytes,
        options: CallOptions,
    ) -> Call<'c> {
        let request = Request {
            kind,
            service_id,
            method_id,
            body,
            options,
        };
        Call {
            client,
            step: Step::Begin { conn, request },
        }
    }
}

impl Call<'_> {
    /// One attempt to register the call (see [`Connection::poll_start`]); sets the
    /// step it leads to. `None`: go on polling (a cancel token needs watching).
    fn register(
        &mut self,
        cx: &mut Context<'_>,
        mut call: Unregistered,
    ) -> Option<Poll<Result<Bytes>>> {
        let (deadline, timeout) = (call.deadline, call.timeout);
        let slot = || Slot::Waiting {
            waker: None,
            deadline,
            timeout,
        };
        let (flush, id) = match call.conn.poll_start(cx, &call.outgoing, slot) {
            Poll::Ready(Ok(started)) => started,
            Poll::Ready(Err(err)) => return Some(Poll::Ready(Err(err))),
            Poll::Pending => {
                // The outbound queue is full (a peer that stopped reading): wait for
                // room, until the call's deadline.
                let timer = call
                    .room
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.as_mut().poll(cx).is_ready() {
                    return Some(Poll::Ready(Err(Error::Timeout { after: timeout })));
                }
                self.step = Step::Start(call);
                return Some(Poll::Pending);
            }
        };
        if flush == Flush::Now {
            call.conn.flush_now();
        }
        let watch_cancel = call.cancel.is_some();
        self.step = Step::Wait(Registered {
            conn: call.conn,
            id,
            cancel: call.cancel.map(|token| Box::pin(token.cancelled_owned())),
            flush: flush == Flush::AfterYield,
        });
        if flush == Flush::AfterYield {
            cx.waker().wake_by_ref();
            return Some(Poll::Pending);
        }
        // `poll_start` registered this poll's waker for the reply: unless a cancel
        // token needs watching too, there is nothing to look at yet.
        if watch_cancel {
            None
        } else {
            Some(Poll::Pending)
        }
    }
}

impl Future for Call<'_> {
    type Output = Result<Bytes>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Bytes>> {
        let this = self.get_mut();
        loop {
            // The hot step, in place.
            if let Step::Wait(call) = &mut this.step {
                if std::mem::take(&mut call.flush) {
                    call.conn.flush_now();
                }
                if let Poll::Ready(result) = call.conn.poll_reply(cx, call.id) {
                    // The slot is gone: nothing left to cancel.
                    this.step = Step::Done;
                    return Poll::Ready(result);
                }
                if let Some(cancelled) = &mut call.cancel
                    && cancelled.as_mut().poll(cx).is_ready()
                {
                    call.conn.abandon(call.id);
                    this.step = Step::Done;
                    return Poll::Ready(Err(Error::Cancelled));
                }
                return Poll::Pending;
            }
            // The other steps move on: each arm sets the step it leads to; returning
            // without doing so leaves `Done` (nothing to clean up on drop).
            match std::mem::replace(&mut this.step, Step::Done) {
                Step::Begin { conn, request } => {
                    this.client.check_size(&request.body)?;
                    let conn = match conn.or_else(|| this.client.current()) {
                        Some(conn) => conn,
                        None => {
                            this.step = Step::Dial(Box::pin(this.client.reconnect()), request);
                            continue;
                        }
                    };
                    let timeout = request
                        .options
                        .timeout
                        .unwrap_or(this.client.inner.config.call_timeout);
                    // Once registered, the reader's timer enforces the deadline: no
                    // timer per call.
                    let deadline = deadline_after(timeout);
                    let outgoing = Outgoing::new(
                        request.kind,
                        request.service_id,
                        request.method_id,
                        request.body,
                        &conn.options,
                    )?;
                    let call = Unregistered {
                        conn,
                        outgoing,
                        cancel: request.options.cancel,
                        deadline,
                        timeout,
                        room: None,
                    };
                    if let Some(poll) = this.register(cx, call) {
                        return poll;
                    }
                }
                Step::Dial(mut dial, request) => match dial.as_mut().poll(cx) {
                    Poll::Pending => {
                        this.step = Step::Dial(dial, request);
                        return Poll::Pending;
                    }
                    Poll::Ready(conn) => {
                        this.step = Step::Begin {
                            conn: Some(conn?),
                            request,
                        }
                    }
                },
                Step::Start(call) => {
                    if let Some(poll) = this.register(cx, call) {
                        return poll;
                    }
                }
                // Handled in place above.
                step @ Step::Wait(_) => this.step = step,
                Step::Done => panic!("`Call` polled after it completed"),
            }
        }
    }
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        let Step::Wait(call) = std::mem::replace(&mut self.step, Step::Done) else {
            return;
        };
        if call.flush {
            call.conn.give_flush_to_writer();
        }
        // Left before its reply: forget it, and tell the server to stop.
        call.conn.abandon(call.id);
    }
}
