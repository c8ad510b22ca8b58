//! [`Pipeline`]: many calls in flight from one task, with no future, waker or wake-up
//! of their own per call, the way a producer keeps a window of requests going.
//!
//! ```text
//!  send() ─ one lock: calls[id] = Piped{pipe}, encode the request into `out`; the
//!  send() ─ first send to find nobody writing owns the write half (as a call would)
//!  recv() ─ an outcome already taken out? return it, no lock
//!           else: write what this pipeline owes (every request queued since, in one
//!           syscall), then one lock: take every outcome queued for the pipeline, or
//!           park (one waker for the whole pipeline)
//!  reader task: a reply for a piped call frees its slot and goes to pipes[pipe];
//!               the pipeline is woken once per read, however many replies it carried
//! ```
//!
//! Invariants: every call sent yields exactly one outcome from `recv` (its reply, a
//! remote error, `Timeout`, or the connection's end), unless [`Pipeline::cancel`]
//! took it back first; `recv` returns `None` only when nothing is in flight; at most
//! [`PIPELINE_IN_FLIGHT_MAX_DEFAULT`] calls (or [`Pipeline::with_in_flight_max`]) are
//! in flight, so the queue of outcomes is bounded even if nobody calls `recv`. Requests
//! go out when the pipeline waits for an outcome (`recv`), once
//! [`Pipeline::with_write_batch`] of them are queued (default
//! [`PIPELINE_WRITE_BATCH_FRAMES_DEFAULT`]), on [`Pipeline::flush`], or when it is
//! dropped; until then they, and calls other tasks queue on the same connection
//! behind them, wait (as with a buffered writer). Dropping the pipeline cancels its
//! calls still in flight on the server.
//!
//! Why a write batch: a window written as one batch turns into stop-and-wait (the
//! client waits while the server answers the whole batch, then the server waits while
//! the client refills it). Written in batches of half the window, one batch is on the
//! server while the client fills the next, and both ends stay busy: with a window of
//! 64 on this project's 2-vCPU machine that is +50 % calls/s (docs/BENCHMARKS.md, Neo
//! RPC, "Pipeline").

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Sleep;

use super::{
    Connection, Flush, NeoClient, Outgoing, PipeQueue, Slot, Wakeups, check_body_size,
    deadline_after, wake_all,
};
use crate::error::{Error, ErrorCode, Result, RpcError};
use crate::frame::Kind;

/// Requests a [`Pipeline`] queues before it writes them without waiting for
/// `recv` (half of a 64-call window).
pub const PIPELINE_WRITE_BATCH_FRAMES_DEFAULT: usize = 32;

/// Calls a [`Pipeline`] may have in flight (sent, outcome not yet returned by
/// `recv`) before `send` refuses with a retriable `Busy`: the bound on its queue of
/// outcomes when nobody calls `recv`.
pub const PIPELINE_IN_FLIGHT_MAX_DEFAULT: usize = 4096;

/// Many calls in flight on one connection, driven by one task: [`Pipeline::send`]
/// queues a call and returns its id at once; [`Pipeline::recv`] writes what was queued
/// and returns outcomes as they come in (any order), each with its call's id.
///
/// Cheaper per call than one [`super::Call`] future per call (no future, waker or
/// wake-up of its own), for a window of calls kept going by one task. Bound to the
/// connection it was opened on: once that ends, every call in flight yields the
/// connection's error and further sends fail; open a new pipeline (which reconnects).
///
/// ```no_run
/// # async fn demo(client: neo_protocol::NeoClient) -> neo_protocol::Result<()> {
/// let (service, method) = client.resolve("bench", "echo").await?;
/// let mut pipe = client.pipeline().await?;
/// for _ in 0..64 {
///     pipe.send(service, method, bytes::Bytes::from_static(b"hi")).await?;
/// }
/// while let Some((id, outcome)) = pipe.recv().await {
///     println!("call {id}: {} bytes", outcome?.len());
/// }
/// # Ok(()) }
/// ```
pub struct Pipeline {
    conn: Arc<Connection>,
    /// This pipeline's queue: `State::pipes[pipe]`.
    pipe: u32,
    timeout: Duration,
    frame_size_bytes_max: usize,
    /// Calls sent whose outcome `recv` has not returned (nor `cancel` taken back).
    in_flight: usize,
    /// This pipeline owns the connection's write half: it writes what is queued at
    /// its next `recv` or `flush`, or hands the duty to the writer task when dropped.
    owes_flush: bool,
    /// Requests sent since this pipeline last wrote.
    unwritten: usize,
    /// Write once this many requests are queued.
    write_batch: usize,
    /// `send` refuses beyond this many calls in flight.
    in_flight_max: usize,
    /// Outcomes taken out of the queue, not yet returned.
    taken: VecDeque<(u64, Result<Bytes>)>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("in_flight", &self.in_flight)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl NeoClient {
    /// Open a [`Pipeline`] on the live connection (dialing one if there is none). Its
    /// calls time out after the client's `call_timeout` unless
    /// [`Pipeline::with_timeout`] says otherwise.
    pub async fn pipeline(&self) -> Result<Pipeline> {
        let conn = self.connection().await?;
        let pipe = conn.open_pipe()?;
        Ok(Pipeline {
            conn,
            pipe,
            timeout: self.inner.config.call_timeout,
            frame_size_bytes_max: self.inner.config.frame_size_bytes_max,
            in_flight: 0,
            owes_flush: false,
            unwritten: 0,
            write_batch: PIPELINE_WRITE_BATCH_FRAMES_DEFAULT,
            in_flight_max: PIPELINE_IN_FLIGHT_MAX_DEFAULT,
            taken: VecDeque::new(),
        })
    }
}

impl Pipeline {
    /// Calls sent from now on time out after `timeout` (their outcome is then
    /// `Timeout`, and the server is told to stop).
    pub fn with_timeout(mut self, timeout: Duration) -> Pipeline {
        self.timeout = timeout;
        self
    }

    /// Write the queued requests as soon as `frames` of them are queued, without
    /// waiting for `recv` (at least 1; `usize::MAX`: only when `recv` waits or on
    /// `flush`). See the module docs for why half the window is a good batch.
    pub fn with_write_batch(mut self, frames: usize) -> Pipeline {
        self.write_batch = frames.max(1);
        self
    }

    /// At most `calls` in flight (at least 1): beyond it `send` fails with a retriable
    /// `Busy` until `recv` has returned some outcomes. Default
    /// [`PIPELINE_IN_FLIGHT_MAX_DEFAULT`].
    pub fn with_in_flight_max(mut self, calls: usize) -> Pipeline {
        self.in_flight_max = calls.max(1);
        self
    }

    /// Calls sent whose outcome [`Pipeline::recv`] has not returned yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Queue a call of `service_id`/`method_id` with a raw body; returns its id (the
    /// one `recv` pairs with its outcome). Waits only while the connection's outbound
    /// queue is full (`outbound_queue_frames_max`), at most until the call's deadline.
    /// Fails at once if the body is too large, the connection has ended, or
    /// [`Pipeline::with_in_flight_max`] calls are already in flight (`Busy`).
    pub async fn send(&mut self, service_id: u16, method_id: u16, body: Bytes) -> Result<u64> {
        if self.in_flight >= self.in_flight_max {
            return Err(Error::Rpc(RpcError::new(
                ErrorCode::Busy,
                format!(
                    "{} calls in flight on this pipeline: take outcomes with recv first",
                    self.in_flight
                ),
            )));
        }
        check_body_size(body.len(), self.frame_size_bytes_max)?;
        let outgoing = Outgoing::new(
            Kind::Request,
            service_id,
            method_id,
            body,
            &self.conn.options,
        )?;
        let (pipe, timeout) = (self.pipe, self.timeout);
        let deadline = deadline_after(timeout);
        let slot = || Slot::Piped {
            pipe,
            deadline,
            timeout,
        };
        let mut room: Option<Pin<Box<Sleep>>> = None;
        let (flush, id) = std::future::poll_fn(|cx| {
            loop {
                match self.conn.poll_start(cx, &outgoing, slot) {
                    Poll::Ready(started) => return Poll::Ready(started),
                    // The queue is full of this pipeline's own requests: write them.
                    Poll::Pending if self.owes_flush => self.flush(),
                    Poll::Pending => {
                        let timer = room
                            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                        if timer.as_mut().poll(cx).is_ready() {
                            return Poll::Ready(Err(Error::Timeout { after: timeout }));
                        }
                        return Poll::Pending;
                    }
                }
            }
        })
        .await?;
        if flush != Flush::No {
            self.owes_flush = true;
        }
        self.in_flight += 1;
        self.unwritten += 1;
        if self.unwritten >= self.write_batch {
            self.flush();
        }
        Ok(id)
    }

    /// The next outcome (any order), with its call's id; first writes the requests
    /// queued since the last write. `None` when no call is in flight.
    pub async fn recv(&mut self) -> Option<(u64, Result<Bytes>)> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// [`Pipeline::recv`] as a poll.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<(u64, Result<Bytes>)>> {
        if let Some(outcome) = self.taken.pop_front() {
            self.in_flight -= 1;
            return Poll::Ready(Some(outcome));
        }
        // Nothing taken out yet: whatever was queued goes out before waiting.
        self.flush();
        if self.in_flight == 0 {
            return Poll::Ready(None);
        }
        {
            let mut state = self.conn.lock();
            let Some(Some(queue)) = state.pipes.get_mut(self.pipe as usize) else {
                // Unreachable: the queue lives as long as the pipeline.
                self.in_flight = 0;
                return Poll::Ready(None);
            };
            if queue.outcomes.is_empty() {
                match &queue.waker {
                    Some(waker) if waker.will_wake(cx.waker()) => {}
                    _ => queue.waker = Some(cx.waker().clone()),
                }
                return Poll::Pending;
            }
            std::mem::swap(&mut queue.outcomes, &mut self.taken);
        }
        self.in_flight -= 1;
        Poll::Ready(self.taken.pop_front())
    }

    /// Write the requests queued so far now, without waiting for an outcome.
    pub fn flush(&mut self) {
        self.unwritten = 0;
        if std::mem::take(&mut self.owes_flush) {
            self.conn.flush_now();
        }
    }

    /// Take call `id` back: its outcome will not be returned, and the server is told to
    /// stop. `false` if it is not in flight (its outcome is already in, or it is not a
    /// call of this pipeline).
    pub fn cancel(&mut self, id: u64) -> bool {
        let cancelled = self.conn.cancel_piped(self.pipe, id);
        if cancelled {
            self.in_flight -= 1;
        }
        cancelled
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.conn.close_pipe(self.pipe, self.in_flight > 0);
        if self.owes_flush {
            self.conn.give_flush_to_writer();
        }
    }
}

impl Connection {
    /// A queue for a new pipeline; its index.
    fn open_pipe(&self) -> Result<u32> {
        let mut state = self.lock();
        if let Some(closed) = &state.closed {
            return Err(closed.to_error());
        }
        let index = match state.pipes.iter().position(Option::is_none) {
            Some(index) => index,
            None => {
                state.pipes.push(None);
                state.pipes.len() - 1
            }
        };
        state.pipes[index] = Some(PipeQueue::default());
        Ok(index as u32)
    }

    /// Forget piped call `id` of pipeline `pipe` if still pending, and tell the server.
    fn cancel_piped(&self, pipe: u32, id: u64) -> bool {
        let mut wakeups = Wakeups::new();
        let cancelled = {
            let mut state = self.lock();
            let ours =
                matches!(state.calls.get(id), Some(Slot::Piped { pipe: p, .. }) if *p == pipe);
            ours && Self::forget(&mut state, id, &mut wakeups)
        };
        wake_all(&mut wakeups);
        cancelled
    }

    /// A pipeline goes away: free its queue and, if it has calls pending
    /// (`pending`), forget them and tell the server to stop them.
    fn close_pipe(&self, pipe: u32, pending: bool) {
        let mut wakeups = Wakeups::new();
        {
            let mut state = self.lock();
            if pending {
                let ours: Vec<u64> = state
                    .calls
                    .iter_mut()
                    .filter_map(|(id, slot)| {
                        matches!(slot, Slot::Piped { pipe: p, .. } if *p == pipe).then_some(id)
                    })
                    .collect();
                for id in ours {
                    Self::forget(&mut state, id, &mut wakeups);
                }
            }
            if let Some(queue) = state.pipes.get_mut(pipe as usize) {
                *queue = None;
            }
        }
        wake_all(&mut wakeups);
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use tokio::io::AsyncWriteExt;

    use super::super::tests::{assert_still_works, echoes, next_request, reply, scripted_client};
    use super::*;
    use crate::frame::{self, EncodeOptions};
    use crate::{ClientConfig, MethodBuilder, NeoConfig, NeoServer, ServiceBuilder};

    /// The next outcome, within 5 s.
    async fn next(pipe: &mut Pipeline) -> Option<(u64, Result<Bytes>)> {
        tokio::time::timeout(Duration::from_secs(5), pipe.recv())
            .await
            .expect("no outcome within 5 s")
    }

    #[tokio::test]
    async fn outcomes_come_in_any_order_each_with_its_calls_id() {
        let (client, mut rx, mut write) = scripted_client().await;
        let mut pipe = client.pipeline().await.unwrap();
        let mut sent = Vec::new();
        for body in [&b"a"[..], b"bb", b"ccc"] {
            let id = pipe.send(1, 1, Bytes::from_static(body)).await.unwrap();
            sent.push((id, body));
        }
        assert_eq!(pipe.in_flight(), 3);
        // Nothing is written before the pipeline waits or flushes.
        pipe.flush();
        let mut requests = Vec::new();
        for _ in 0..3 {
            requests.push(next_request(&mut rx).await);
        }
        // Answered in reverse order, in one write (one read for the client).
        write
            .write_all(&echoes(requests.iter().rev()))
            .await
            .unwrap();
        let mut got = Vec::new();
        for _ in 0..3 {
            let (id, outcome) = next(&mut pipe).await.unwrap();
            got.push((id, outcome.unwrap()));
        }
        assert_eq!(got.len(), 3);
        for (id, body) in sent.iter().rev() {
            let (_, reply) = got.iter().find(|(got_id, _)| got_id == id).unwrap();
            assert_eq!(&reply[..], *body);
        }
        assert_eq!(got[0].0, sent[2].0, "the order the replies came in");
        assert_eq!(pipe.in_flight(), 0);
        assert!(next(&mut pipe).await.is_none(), "nothing in flight");
        assert_still_works(&client, &mut rx, &mut write).await;
    }

    #[tokio::test]
    async fn recv_writes_what_was_queued_and_a_remote_error_is_an_outcome() {
        let (client, mut rx, mut write) = scripted_client().await;
        let mut pipe = client.pipeline().await.unwrap();
        let id = pipe.send(1, 1, Bytes::from_static(b"x")).await.unwrap();
        let server = async {
            let request = next_request(&mut rx).await;
            let mut buf = BytesMut::new();
            let err = crate::RpcError::new(crate::ErrorCode::UnknownMethod, "no such thing");
            let frame = err.to_frame(request.correlation_id, 1, 1);
            frame::encode(&frame, &EncodeOptions::default(), &mut buf).unwrap();
            write.write_all(&buf).await.unwrap();
        };
        // `recv` alone gets the request out: no flush needed.
        let (outcome, ()) = tokio::join!(next(&mut pipe), server);
        let (got, outcome) = outcome.unwrap();
        assert_eq!(got, id);
        let err = outcome.unwrap_err();
        assert!(
            matches!(&err, Error::Rpc(rpc) if rpc.error_code() == Some(crate::ErrorCode::UnknownMethod)),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_full_write_batch_goes_out_without_waiting_for_recv() {
        let (client, mut rx, mut write) = scripted_client().await;
        let mut pipe = client.pipeline().await.unwrap().with_write_batch(2);
        let first = pipe.send(1, 1, Bytes::from_static(b"1")).await.unwrap();
        let second = pipe.send(1, 1, Bytes::from_static(b"2")).await.unwrap();
        // No recv, no flush: the second send completed a batch and wrote both.
        let a = next_request(&mut rx).await;
        let b = next_request(&mut rx).await;
        assert_eq!((a.correlation_id, b.correlation_id), (first, second));
        // A third stays queued until the pipeline waits.
        let third = pipe.send(1, 1, Bytes::from_static(b"3")).await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(100), next_request(&mut rx))
                .await
                .is_err(),
            "half a batch is not written yet"
        );
        for request in [&a, &b] {
            reply(&mut write, request, request.body.clone()).await;
        }
        let mut ids = Vec::new();
        for _ in 0..2 {
            ids.push(next(&mut pipe).await.unwrap().0);
        }
        let c = next_request(&mut rx).await;
        assert_eq!(c.correlation_id, third);
        reply(&mut write, &c, c.body.clone()).await;
        ids.push(next(&mut pipe).await.unwrap().0);
        assert_eq!(ids, [first, second, third]);
    }

    #[tokio::test]
    async fn a_call_that_times_out_is_an_outcome_and_the_server_is_told() {
        let (client, mut rx, mut write) = scripted_client().await;
        let mut pipe = client
            .pipeline()
            .await
            .unwrap()
            .with_timeout(Duration::from_millis(50));
        let id = pipe.send(1, 1, Bytes::from_static(b"slow")).await.unwrap();
        pipe.flush();
        let request = next_request(&mut rx).await;
        assert_eq!(request.correlation_id, id);
        let (got, outcome) = next(&mut pipe).await.unwrap();
        assert_eq!(got, id);
        assert!(
            matches!(outcome, Err(Error::Timeout { after }) if after == Duration::from_millis(50)),
            "{outcome:?}"
        );
        let cancel = next_request(&mut rx).await;
        assert_eq!((cancel.kind, cancel.correlation_id), (Kind::Cancel, id));
        // A late reply is ignored; the pipeline has nothing in flight.
        reply(&mut write, &request, Bytes::from_static(b"late")).await;
        assert!(next(&mut pipe).await.is_none());
        assert_still_works(&client, &mut rx, &mut write).await;
    }

    #[tokio::test]
    async fn cancel_takes_a_call_back_and_tells_the_server() {
        let (client, mut rx, mut write) = scripted_client().await;
        let mut pipe = client.pipeline().await.unwrap();
        let kept = pipe.send(1, 1, Bytes::from_static(b"kept")).await.unwrap();
        let dropped = pipe.send(1, 1, Bytes::from_static(b"no")).await.unwrap();
        pipe.flush();
        let first = next_request(&mut rx).await;
        let second = next_request(&mut rx).await;
        assert_eq!(
            (first.correlation_id, second.correlation_id),
            (kept, dropped)
        );
        assert!(pipe.cancel(dropped));
        assert!(!pipe.cancel(dropped), "already taken back");
        assert!(!pipe.cancel(12345), "not a call of this pipeline");
        assert_eq!(pipe.in_flight(), 1);
        let cancel = next_request(&mut rx).await;
        assert_eq!(
            (cancel.kind, cancel.correlation_id),
            (Kind::Cancel, dropped)
        );
        reply(&mut write, &second, Bytes::from_static(b"ignored")).await;
        reply(&mut write, &first, Bytes::from_static(b"kept")).await;
        let (id, outcome) = next(&mut pipe).await.unwrap();
        assert_eq!((id, &outcome.unwrap()[..]), (kept, &b"kept"[..]));
        assert!(next(&mut pipe).await.is_none());
    }

    #[tokio::test]
    async fn dropping_a_pipeline_cancels_its_calls_and_writes_what_it_queued() {
        let (client, mut rx, mut write) = scripted_client().await;
        let mut pipe = client.pipeline().await.unwrap();
        let a = pipe.send(1, 1, Bytes::from_static(b"a")).await.unwrap();
        let b = pipe.send(1, 1, Bytes::from_static(b"b")).await.unwrap();
        // Never flushed: dropping hands the queued requests (and the cancels) to the
        // writer task.
        drop(pipe);
        let mut seen = Vec::new();
        for _ in 0..4 {
            let frame = next_request(&mut rx).await;
            seen.push((frame.kind, frame.correlation_id));
        }
        for id in [a, b] {
            assert!(seen.contains(&(Kind::Request, id)), "{seen:?}");
            assert!(seen.contains(&(Kind::Cancel, id)), "{seen:?}");
        }
        assert_still_works(&client, &mut rx, &mut write).await;
    }

    #[tokio::test]
    async fn the_connections_end_is_every_calls_outcome_and_later_sends_fail() {
        let (client, mut rx, write) = scripted_client().await;
        let mut pipe = client.pipeline().await.unwrap();
        let mut ids = Vec::new();
        for _ in 0..5 {
            ids.push(pipe.send(1, 1, Bytes::from_static(b"x")).await.unwrap());
        }
        pipe.flush();
        for _ in 0..5 {
            next_request(&mut rx).await;
        }
        drop(write);
        drop(rx);
        let mut failed = Vec::new();
        while let Some((id, outcome)) = next(&mut pipe).await {
            assert!(
                matches!(outcome, Err(Error::ConnectionClosed)),
                "{outcome:?}"
            );
            failed.push(id);
        }
        failed.sort();
        ids.sort();
        assert_eq!(failed, ids);
        let err = pipe.send(1, 1, Bytes::new()).await.unwrap_err();
        assert!(matches!(err, Error::ConnectionClosed), "{err:?}");
    }

    #[tokio::test]
    async fn sends_beyond_the_in_flight_bound_are_refused_until_recv_takes_outcomes() {
        let (client, mut rx, mut write) = scripted_client().await;
        let mut pipe = client.pipeline().await.unwrap().with_in_flight_max(2);
        pipe.send(1, 1, Bytes::from_static(b"a")).await.unwrap();
        pipe.send(1, 1, Bytes::from_static(b"b")).await.unwrap();
        let err = pipe.send(1, 1, Bytes::from_static(b"c")).await.unwrap_err();
        assert!(
            matches!(&err, Error::Rpc(rpc) if rpc.error_code() == Some(ErrorCode::Busy)),
            "{err:?}"
        );
        assert_eq!(pipe.in_flight(), 2);
        pipe.flush();
        let request = next_request(&mut rx).await;
        reply(&mut write, &request, request.body.clone()).await;
        next(&mut pipe).await.unwrap().1.unwrap();
        pipe.send(1, 1, Bytes::from_static(b"c")).await.unwrap();
        assert_eq!(pipe.in_flight(), 2);
    }

    #[tokio::test]
    async fn a_body_too_large_is_refused_before_anything_is_queued() {
        let (client, _rx, _write) = scripted_client().await;
        let mut pipe = client.pipeline().await.unwrap();
        let body = Bytes::from(vec![0u8; ClientConfig::default().frame_size_bytes_max]);
        let err = pipe.send(1, 1, body).await.unwrap_err();
        assert!(
            matches!(err, Error::Frame(crate::frame::FrameError::TooLarge { .. })),
            "{err:?}"
        );
        assert_eq!(pipe.in_flight(), 0);
        assert!(next(&mut pipe).await.is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_window_of_calls_against_a_real_server_pairs_every_reply_with_its_call() {
        let mut server = NeoServer::new(NeoConfig::default());
        server
            .register(
                ServiceBuilder::new("echo")
                    .method(MethodBuilder::new("echo").raw_sync_handler(|_, body| Ok(body))),
            )
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let _handle = server.start(listener).unwrap();
        // A small outbound queue: sends beyond it write the pipeline's own requests.
        let config = ClientConfig {
            outbound_queue_frames_max: 8,
            ..ClientConfig::default()
        };
        let client = NeoClient::connect(addr, config).await.unwrap();
        let (service, method) = client.resolve("echo", "echo").await.unwrap();
        let mut pipe = client.pipeline().await.unwrap();
        let total = 5_000u32;
        let mut bodies = std::collections::HashMap::new();
        let mut sent = 0u32;
        async fn send(pipe: &mut Pipeline, ids: (u16, u16), n: u32) -> u64 {
            let body = Bytes::from(n.to_be_bytes().to_vec());
            pipe.send(ids.0, ids.1, body).await.unwrap()
        }
        // Fill a window of 64 (beyond the outbound queue of 8), then keep it full.
        while sent < 64 {
            bodies.insert(send(&mut pipe, (service, method), sent).await, sent);
            sent += 1;
        }
        let mut received = 0u32;
        while let Some((id, outcome)) = next(&mut pipe).await {
            let n = bodies.remove(&id).expect("an id this pipeline sent, once");
            assert_eq!(&outcome.unwrap()[..], &n.to_be_bytes()[..]);
            received += 1;
            if sent < total {
                bodies.insert(send(&mut pipe, (service, method), sent).await, sent);
                sent += 1;
            }
        }
        assert_eq!(received, total);
        assert!(bodies.is_empty());
    }
}
