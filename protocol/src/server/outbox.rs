//! The queue of a connection's replies and events from spawned handlers, bounded twice:
//! in frames (`outbound_queue_frames_max`, the channel) and in bytes
//! (`outbound_queue_bytes_max`, a semaphore). A sender takes room for its frame's body
//! before queueing it; the connection gives the room back once the frame is written to
//! the socket, so a peer that does not read pins at most the byte bound per connection
//! (plus what the kernel's socket buffers hold), whatever its handlers produce.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::frame::{Frame, HEADER_LEN};

/// A frame on its way to the writer, with the room it holds in the byte bound.
pub(crate) struct Queued {
    pub(crate) frame: Frame,
    pub(crate) room: OwnedSemaphorePermit,
}

/// The connection is gone: nothing can be queued any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Closed;

/// The sending side, one clone per spawned handler.
#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    tx: mpsc::Sender<Queued>,
    bytes: Arc<Semaphore>,
    /// Room one frame takes at most: a frame larger than the whole bound still goes,
    /// once it has the bound to itself.
    frame_room_max: u32,
}

impl Outbox {
    /// A queue of at most `frames_max` frames and `bytes_max` bytes of frames.
    pub(crate) fn new(frames_max: usize, bytes_max: usize) -> (Outbox, mpsc::Receiver<Queued>) {
        let (tx, rx) = mpsc::channel(frames_max.max(1));
        let bytes_max = bytes_max.clamp(1, u32::MAX as usize);
        let outbox = Outbox {
            tx,
            bytes: Arc::new(Semaphore::new(bytes_max)),
            frame_room_max: bytes_max as u32,
        };
        (outbox, rx)
    }

    /// The room `frame` takes in the byte bound.
    fn room_of(&self, frame: &Frame) -> u32 {
        let len = frame.body.len().saturating_add(HEADER_LEN);
        u32::try_from(len)
            .unwrap_or(u32::MAX)
            .min(self.frame_room_max)
    }

    /// Queue `frame` once it has room; waits while the connection holds its bound
    /// unwritten (the peer does not read), fails once the connection is closed.
    pub(crate) async fn send(&self, frame: Frame) -> Result<(), Closed> {
        let room = Arc::clone(&self.bytes)
            .acquire_many_owned(self.room_of(&frame))
            .await
            .map_err(|_| Closed)?;
        self.tx
            .send(Queued { frame, room })
            .await
            .map_err(|_| Closed)
    }

    /// Whether the connection is gone.
    pub(crate) fn is_closed(&self) -> bool {
        self.tx.is_closed() || self.bytes.is_closed()
    }

    /// Wake every sender waiting for room with `Closed` (the connection ends).
    pub(crate) fn close(&self) {
        self.bytes.close();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::frame::Kind;

    fn frame(body_len: usize) -> Frame {
        Frame {
            body: vec![0u8; body_len].into(),
            ..Frame::control(Kind::Response, 1)
        }
    }

    #[tokio::test]
    async fn senders_wait_for_room_until_the_writer_frees_it() {
        let (outbox, mut rx) = Outbox::new(1024, 1000);
        outbox.send(frame(500)).await.unwrap();
        // 526 + 526 > 1000: the second waits until the first is written.
        let second = tokio::time::timeout(Duration::from_millis(50), outbox.send(frame(500)));
        assert!(second.await.is_err(), "no room: the sender waits");
        let first = rx.recv().await.unwrap();
        drop(first.room);
        tokio::time::timeout(Duration::from_secs(5), outbox.send(frame(500)))
            .await
            .expect("room given back")
            .unwrap();
    }

    #[tokio::test]
    async fn a_frame_larger_than_the_bound_goes_alone() {
        let (outbox, mut rx) = Outbox::new(1024, 1000);
        outbox.send(frame(10_000)).await.unwrap();
        let big = rx.recv().await.unwrap();
        assert_eq!(big.frame.body.len(), 10_000);
        let blocked = tokio::time::timeout(Duration::from_millis(50), outbox.send(frame(1)));
        assert!(
            blocked.await.is_err(),
            "the big frame holds the whole bound"
        );
    }

    #[tokio::test]
    async fn closing_wakes_waiting_senders() {
        let (outbox, _rx) = Outbox::new(1024, 100);
        outbox.send(frame(50)).await.unwrap();
        let waiting = {
            let outbox = outbox.clone();
            tokio::spawn(async move { outbox.send(frame(50)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        outbox.close();
        let result = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken")
            .unwrap();
        assert_eq!(result, Err(Closed));
        assert!(outbox.is_closed());
    }
}
