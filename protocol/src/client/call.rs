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
//!    ├─(flush duty, others may join: yield once)─▶ Flush: write ─┐
//!    ├─(flush duty, a lone call: write now)──────────────────────┤
//!    └─(someone else writes)─────────────────────────────────────┴▶ Wait: the reply,
//!                                                                    or the cancel token
//! ```
//!
//! Dropped while registered (`Flush`, `Wait`), the call is forgotten and the server told
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

use super::{
    CallOptions, Connection, Flush, NeoClient, Outgoing, Slot, Wakeups, deadline_after, wake_all,
};
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
            Step::Start { .. } => "start",
            Step::Flush(_) => "flush",
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
    /// Register the call and queue its frame. `room`: the deadline's timer, built
    /// (boxed) only if the outbound queue is full and the call has to wait.
    Start {
        conn: Arc<Connection>,
        outgoing: Outgoing,
        cancel: Option<tokio_util::sync::CancellationToken>,
        deadline: Instant,
        timeout: Duration,
        room: Option<Pin<Box<Sleep>>>,
    },
    /// Registered, owning the flush duty: yielded once, writes on the next poll.
    Flush(Registered),
    /// Registered: waiting for the reply (or the cancel token).
    Wait(Registered),
    /// Finished (or failed before registering): nothing to clean up.
    Done,
}

/// A call in the connection's pending table.
struct Registered {
    conn: Arc<Connection>,
    id: u64,
    /// Boxed: only calls with a token pay for it.
    cancel: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
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

    /// From `Begin`: the step after it, for this connection.
    fn start(&self, conn: Arc<Connection>, request: Request) -> Result<Step<'c>> {
        let timeout = request
            .options
            .timeout
            .unwrap_or(self.client.inner.config.call_timeout);
        // Once registered, the reader's timer enforces the deadline: no timer per call.
        let deadline = deadline_after(timeout);
        let outgoing = Outgoing::new(
            request.kind,
            request.service_id,
            request.method_id,
            request.body,
            &conn.options,
        )?;
        Ok(Step::Start {
            conn,
            outgoing,
            cancel: request.options.cancel,
            deadline,
            timeout,
            room: None,
        })
    }
}

impl Future for Call<'_> {
    type Output = Result<Bytes>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Bytes>> {
        let this = self.get_mut();
        loop {
            // Every arm puts back the step it leaves the call in; returning without
            // doing so leaves `Done` (nothing to clean up on drop).
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
                    this.step = this.start(conn, request)?;
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
                Step::Start {
                    conn,
                    outgoing,
                    cancel,
                    deadline,
                    timeout,
                    mut room,
                } => {
                    let slot = || Slot::Waiting {
                        waker: None,
                        deadline,
                        timeout,
                    };
                    let (flush, id) = match conn.poll_start(cx, &outgoing, slot) {
                        Poll::Ready(started) => started?,
                        Poll::Pending => {
                            // The outbound queue is full (a peer that stopped reading):
                            // wait for room, until the call's deadline.
                            let timer = room.get_or_insert_with(|| {
                                Box::pin(tokio::time::sleep_until(deadline))
                            });
                            if timer.as_mut().poll(cx).is_ready() {
                                return Poll::Ready(Err(Error::Timeout { after: timeout }));
                            }
                            this.step = Step::Start {
                                conn,
                                outgoing,
                                cancel,
                                deadline,
                                timeout,
                                room,
                            };
                            return Poll::Pending;
                        }
                    };
                    let call = Registered {
                        conn,
                        id,
                        cancel: cancel.map(|token| Box::pin(token.cancelled_owned())),
                    };
                    match flush {
                        Flush::AfterYield => {
                            this.step = Step::Flush(call);
                            cx.waker().wake_by_ref();
                            return Poll::Pending;
                        }
                        Flush::Now => call.conn.flush_now(),
                        Flush::No => {}
                    }
                    let watch_cancel = call.cancel.is_some();
                    this.step = Step::Wait(call);
                    // `poll_start` registered this poll's waker for the reply: unless a
                    // cancel token needs watching too, there is nothing to look at yet.
                    if !watch_cancel {
                        return Poll::Pending;
                    }
                }
                Step::Flush(call) => {
                    call.conn.flush_now();
                    this.step = Step::Wait(call);
                }
                Step::Wait(mut call) => {
                    if let Poll::Ready(result) = call.conn.poll_reply(cx, call.id) {
                        // The slot is gone: nothing left to cancel.
                        return Poll::Ready(result);
                    }
                    if let Some(cancelled) = &mut call.cancel
                        && cancelled.as_mut().poll(cx).is_ready()
                    {
                        call.conn.abandon(call.id);
                        return Poll::Ready(Err(Error::Cancelled));
                    }
                    this.step = Step::Wait(call);
                    return Poll::Pending;
                }
                Step::Done => panic!("`Call` polled after it completed"),
            }
        }
    }
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        let call = match std::mem::replace(&mut self.step, Step::Done) {
            Step::Flush(call) => {
                // Frames queued behind this one still go out.
                let mut wakeups = Wakeups::new();
                Connection::hand_to_writer(&mut call.conn.lock(), &mut wakeups);
                wake_all(&mut wakeups);
                call
            }
            Step::Wait(call) => call,
            _ => return,
        };
        // Left before its reply: forget it, and tell the server to stop.
        call.conn.abandon(call.id);
    }
}
