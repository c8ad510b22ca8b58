//! [`QueueConsumer::run`]: a handler per message with bounded concurrency.
//!
//! ```text
//! loop until closed (or a fatal receive error):
//!   free = concurrency - handlers running ─▶ receive(free, short wait)
//!   each message ─▶ keep_alive ─▶ a task: handler(message)
//!       Ok      ─▶ ack
//!       Err(e)  ─▶ nack (the queue's backoff), reason = e
//!       panic   ─▶ nack, reason "handler panicked"
//!     ─▶ the lease guard dropped after the settle answered
//! then: wait for every running handler (each settles), close
//! ```

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use neo_protocol::ErrorCode;
use neo_protocol::api::{QUEUE_NAME_LEN_MAX, ReceiptOutcome};
use tokio::task::JoinSet;

use super::consumer::{Core, QueueConsumer};
use super::lease::LeaseGuard;
use super::settle::SettleOp;
use super::{QueueDelivery, truncate_utf8};
use crate::error::{Error, Result};

/// How long one receive of the run loop waits, so that it notices finished handlers
/// and a close promptly.
const RUN_RECEIVE_WAIT: Duration = Duration::from_millis(200);

/// Most handlers at once.
const CONCURRENCY_MAX: usize = 10_000;

/// What a [`QueueConsumer::run`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Messages handed to the handler (finished, panics included).
    pub handled: u64,
    /// Acks the broker answered `Ok`.
    pub acked: u64,
    /// Nacks the broker answered `Ok` (after an `Err` or a panic).
    pub nacked: u64,
    /// Handlers that panicked.
    pub panicked: u64,
    /// Settles not answered `Ok` (lease lost, already done, unknown, or the request
    /// failed): those messages come again (or were already done).
    pub settle_failed: u64,
}

/// What one handler task ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handled {
    Acked,
    Nacked { panicked: bool },
    SettleFailed { panicked: bool },
}

impl RunReport {
    fn count(&mut self, h: Handled) {
        self.handled += 1;
        match h {
            Handled::Acked => self.acked += 1,
            Handled::Nacked { panicked } => {
                self.nacked += 1;
                self.panicked += u64::from(panicked);
            }
            Handled::SettleFailed { panicked } => {
                self.settle_failed += 1;
                self.panicked += u64::from(panicked);
            }
        }
    }
}

/// Whether a receive error ends a run: the queue is not there, the client may not
/// consume it, or the consumer is misconfigured (a share group on a queue, none on a
/// plain topic: `InvalidArgument`). Anything else is waited out.
pub(crate) fn ends_run(err: &Error) -> bool {
    matches!(
        err,
        Error::UnknownTopic { .. } | Error::InvalidArgument(_) | Error::ConsumerClosed
    ) || matches!(
        err.code(),
        Some(
            ErrorCode::UnknownQueue
                | ErrorCode::UnknownTopic
                | ErrorCode::InvalidArgument
                | ErrorCode::Unauthenticated
                | ErrorCode::PermissionDenied
        )
    )
}

impl QueueConsumer {
    /// Hand every message to `handler`, at most `concurrency` at once (at least 1),
    /// until [`QueueConsumer::close`] is called (from another clone or task) or a
    /// receive fails for good (unknown queue, access refused: returned as the
    /// error). `Ok` acks the message, `Err` nacks it (the queue's redelivery backoff;
    /// the error's text as the reason), a panic nacks it too; while the handler runs
    /// its lease is extended every third of the lease. Before returning, it waits for
    /// the handlers still running (and their settles).
    pub async fn run<H, Fut, E>(&self, handler: H, concurrency: usize) -> Result<RunReport>
    where
        H: Fn(QueueDelivery) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<(), E>> + Send + 'static,
        E: fmt::Display + Send + 'static,
    {
        self.run_until(handler, concurrency, std::future::pending::<()>())
            .await
    }

    /// [`QueueConsumer::run`] until `shutdown` resolves too: then the consumer is
    /// closed (buffered messages released), the running handlers finish, and the
    /// report is returned.
    pub async fn run_until<H, Fut, E, S>(
        &self,
        handler: H,
        concurrency: usize,
        shutdown: S,
    ) -> Result<RunReport>
    where
        H: Fn(QueueDelivery) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<(), E>> + Send + 'static,
        E: fmt::Display + Send + 'static,
        S: Future<Output = ()>,
    {
        self.start().await?;
        let concurrency = concurrency.clamp(1, CONCURRENCY_MAX);
        let handler = Arc::new(handler);
        let mut running: JoinSet<Handled> = JoinSet::new();
        let mut report = RunReport::default();
        let mut failed: Option<Error> = None;
        let mut failures = 0u32;
        tokio::pin!(shutdown);
        let mut signalled = false;
        loop {
            while let Some(done) = running.try_join_next() {
                count(&mut report, done);
            }
            if signalled || self.is_closed() {
                break;
            }
            let free = concurrency - running.len();
            if free == 0 {
                tokio::select! {
                    Some(done) = running.join_next() => count(&mut report, done),
                    _ = &mut shutdown, if !signalled => signalled = true,
                    _ = self.core().closed() => {}
                }
                if signalled {
                    break;
                }
                continue;
            }
            // Not cancelled by the signal: what it receives is leased to this
            // consumer and is handled (it waits RUN_RECEIVE_WAIT at most).
            let received = self.receive(free, RUN_RECEIVE_WAIT).await;
            if !signalled && shutdown.as_mut().now_or_never().is_some() {
                signalled = true;
            }
            match received {
                Ok(deliveries) => {
                    failures = 0;
                    for d in deliveries {
                        match self.keep_alive(&d).await {
                            Ok(guard) => {
                                let core = Arc::clone(self.core());
                                running.spawn(handle(core, Arc::clone(&handler), d, guard));
                            }
                            // Not handled: delivered again once its lease runs out.
                            Err(err) => {
                                failed.get_or_insert(err);
                            }
                        }
                    }
                    if failed.is_some() || signalled {
                        break;
                    }
                }
                Err(Error::ConsumerClosed) => break,
                Err(err) if ends_run(&err) => {
                    failed = Some(err);
                    break;
                }
                Err(err) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(queue = %self.queue(), error = %err, "receive failed");
                    let pause =
                        super::receiver::error_pause(&self.config().error_backoff, failures);
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = &mut shutdown, if !signalled => {
                            signalled = true;
                            break;
                        }
                    }
                }
            }
        }
        let closing = if signalled {
            Some(self.close().await)
        } else {
            None
        };
        while let Some(done) = running.join_next().await {
            count(&mut report, done);
        }
        if let Some(err) = failed {
            return Err(err);
        }
        if let Some(Err(err)) = closing {
            return Err(err);
        }
        Ok(report)
    }
}

fn count(report: &mut RunReport, done: std::result::Result<Handled, tokio::task::JoinError>) {
    match done {
        Ok(h) => report.count(h),
        // The handler's panic is caught inside the task; this is a cancelled task
        // (the runtime is shutting down): its message comes again.
        Err(err) => {
            tracing::debug!(error = %err, "handler task did not finish");
            report.handled += 1;
            report.settle_failed += 1;
        }
    }
}

/// One message: the handler, then its settle, then the lease guard goes.
async fn handle<H, Fut, E>(
    core: Arc<Core>,
    handler: Arc<H>,
    delivery: QueueDelivery,
    guard: LeaseGuard,
) -> Handled
where
    H: Fn(QueueDelivery) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<(), E>> + Send + 'static,
    E: fmt::Display + Send + 'static,
{
    let receipt = delivery.receipt;
    let outcome = AssertUnwindSafe(async { handler(delivery).await })
        .catch_unwind()
        .await;
    let (op, panicked) = match outcome {
        Ok(Ok(())) => (SettleOp::Ack, false),
        Ok(Err(e)) => {
            let reason = e.to_string();
            let reason = truncate_utf8(&reason, QUEUE_NAME_LEN_MAX).to_string();
            (
                SettleOp::Nack {
                    delay_ms: None,
                    reason,
                },
                false,
            )
        }
        Err(_) => (
            SettleOp::Nack {
                delay_ms: None,
                reason: "handler panicked".into(),
            },
            true,
        ),
    };
    let settled = core.settle(&op, &[receipt]).await;
    drop(guard);
    match settled.as_deref() {
        Ok([ReceiptOutcome::Ok]) if op == SettleOp::Ack => Handled::Acked,
        Ok([ReceiptOutcome::Ok]) => Handled::Nacked { panicked },
        Ok(other) => {
            tracing::debug!(%receipt, outcome = ?other, verb = op.verb(), "settle refused");
            Handled::SettleFailed { panicked }
        }
        Err(err) => {
            tracing::warn!(%receipt, error = %err, verb = op.verb(), "settle failed");
            Handled::SettleFailed { panicked }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use neo_protocol::RpcError;

    #[test]
    fn only_lasting_failures_end_a_run() {
        let rpc = |code| Error::from(neo_protocol::Error::Rpc(RpcError::new(code, "x")));
        assert!(ends_run(&rpc(ErrorCode::UnknownQueue)));
        assert!(ends_run(&rpc(ErrorCode::PermissionDenied)));
        assert!(
            ends_run(&rpc(ErrorCode::InvalidArgument)),
            "share group misuse"
        );
        assert!(ends_run(&Error::UnknownTopic { topic: "q".into() }));
        assert!(ends_run(&Error::ConsumerClosed));
        let exhausted = Error::DeadlineExceeded {
            deadline: Duration::from_secs(1),
            last: Box::new(rpc(ErrorCode::NotLeader)),
        };
        assert!(!ends_run(&exhausted), "a leader may come back");
        assert!(!ends_run(&rpc(ErrorCode::Busy)));
    }

    #[test]
    fn reports_count_each_ending() {
        let mut r = RunReport::default();
        r.count(Handled::Acked);
        r.count(Handled::Nacked { panicked: true });
        r.count(Handled::SettleFailed { panicked: false });
        assert_eq!(
            r,
            RunReport {
                handled: 3,
                acked: 1,
                nacked: 1,
                panicked: 1,
                settle_failed: 1
            }
        );
    }
}
