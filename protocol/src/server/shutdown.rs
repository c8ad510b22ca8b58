//! Listens for the server's shutdown signal (mini-redis style): the server drops (or
//! sends on) a broadcast channel; every connection holds a [`Shutdown`] and stops
//! reading new requests when it fires, then drains what is in flight.

use tokio::sync::broadcast;

/// One connection's view of the shutdown signal.
#[derive(Debug)]
pub(crate) struct Shutdown {
    /// Set once the signal has been seen, so `recv` returns at once afterwards.
    is_shutdown: bool,
    notify: broadcast::Receiver<()>,
}

impl Shutdown {
    pub(crate) fn new(notify: broadcast::Receiver<()>) -> Shutdown {
        Shutdown {
            is_shutdown: false,
            notify,
        }
    }

    /// Wait for the signal. A send and the sender's drop both count.
    pub(crate) async fn recv(&mut self) {
        if self.is_shutdown {
            return;
        }
        let _ = self.notify.recv().await;
        self.is_shutdown = true;
    }
}
