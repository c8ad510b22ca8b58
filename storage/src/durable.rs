//! Durability notifications: callbacks and a tiny oneshot ([`Durable`]) that can be
//! waited on from a thread or `.await`ed from any executor (no tokio dependency).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::error::Result;

/// A durability callback: called exactly once, with `Ok(())` only after an `fdatasync`
/// covering the batch has returned, or with the error that prevents it ([`Error::Io`] /
/// [`Error::Failed`] when the sync failed, [`Error::Truncated`] when the batch was cut
/// away first, [`Error::Closed`] when the log was dropped and its final sync failed).
///
/// It runs on the thread that completed the sync (the flusher, or a caller of `sync`,
/// `truncate_suffix` or an append that rolled a segment), never while a log lock is held,
/// so it may call back into the log. Keep it short: the flusher runs the next group
/// commit only after every callback of the current one has returned.
pub type DurableCallback = Box<dyn FnOnce(Result<()>) + Send + 'static>;

/// A pending notification: fire `callback` once everything below `end` is durable.
pub(crate) struct Waiter {
    pub(crate) end: u64,
    pub(crate) callback: DurableCallback,
}

/// Runs callbacks outside every lock.
pub(crate) fn fire(waiters: Vec<Waiter>, result: &Result<()>) {
    for w in waiters {
        (w.callback)(result.clone());
    }
}

#[derive(Default)]
struct Slot {
    result: Option<Result<()>>,
    waker: Option<Waker>,
}

#[derive(Default)]
struct Inner {
    slot: Mutex<Slot>,
    ready: Condvar,
}

/// A handle that resolves once an appended batch is durable (or can never be).
///
/// Wait on it with [`Durable::wait`] from a thread, or `.await` it. Dropping it does not
/// cancel anything.
#[must_use = "a Durable does nothing unless waited on"]
pub struct Durable {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Durable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Durable")
            .field("ready", &self.try_result().is_some())
            .finish()
    }
}

impl Durable {
    /// A handle and the callback that completes it.
    pub(crate) fn pair() -> (Durable, DurableCallback) {
        let inner = Arc::new(Inner::default());
        let tx = Arc::clone(&inner);
        let cb: DurableCallback = Box::new(move |r| {
            let waker = {
                let mut slot = tx.slot.lock().unwrap_or_else(|p| p.into_inner());
                slot.result = Some(r);
                slot.waker.take()
            };
            tx.ready.notify_all();
            if let Some(w) = waker {
                w.wake();
            }
        });
        (Durable { inner }, cb)
    }

    /// Blocks until the batch is durable.
    pub fn wait(self) -> Result<()> {
        let mut slot = self.inner.slot.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(r) = slot.result.take() {
                return r;
            }
            slot = self
                .inner
                .ready
                .wait(slot)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Blocks at most `timeout`; `None` if still pending.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<Result<()>> {
        let slot = self.inner.slot.lock().unwrap_or_else(|p| p.into_inner());
        let (slot, _) = self
            .inner
            .ready
            .wait_timeout_while(slot, timeout, |s| s.result.is_none())
            .unwrap_or_else(|p| p.into_inner());
        slot.result.clone()
    }

    /// The outcome if it is known, without blocking.
    pub fn try_result(&self) -> Option<Result<()>> {
        self.inner
            .slot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .result
            .clone()
    }
}

impl Future for Durable {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let mut slot = self.inner.slot.lock().unwrap_or_else(|p| p.into_inner());
        match slot.result.take() {
            Some(r) => Poll::Ready(r),
            None => {
                slot.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use std::task::Wake;

    struct Flag(std::sync::atomic::AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn durable_resolves_from_another_thread_and_as_a_future() {
        let (d, cb) = Durable::pair();
        assert!(d.try_result().is_none());
        std::thread::spawn(move || cb(Ok(()))).join().unwrap();
        assert!(d.wait().is_ok());

        let (mut d, cb) = Durable::pair();
        let flag = Arc::new(Flag(Default::default()));
        let waker = Waker::from(Arc::clone(&flag));
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut d).poll(&mut cx).is_pending());
        cb(Err(Error::Closed));
        assert!(flag.0.load(std::sync::atomic::Ordering::SeqCst));
        assert!(matches!(
            Pin::new(&mut d).poll(&mut cx),
            Poll::Ready(Err(Error::Closed))
        ));
    }
}
