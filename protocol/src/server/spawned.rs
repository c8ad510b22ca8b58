//! Requests run as tasks (async and event handlers): what the connection keeps of them
//! (to cancel or drain them) and what a task does when its handler is done.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::error::RpcError;
use crate::frame::{Frame, Kind};
use crate::server::ServerShared;
use crate::server::observer::{self, Answer};
use crate::server::outbox::Outbox;

/// A spawned request, so a cancel or shutdown can stop it.
pub(crate) struct Task {
    pub(crate) abort: AbortHandle,
    pub(crate) streaming: bool,
    pub(crate) service_id: u16,
    pub(crate) method_id: u16,
}

pub(crate) type Tasks = Arc<Mutex<HashMap<u64, Task>>>;

/// What a spawned request task does once its handler is done: forget the task, free
/// the bytes its request held (`inflight_request_bytes_max`), send the answer (waiting
/// for room in the connection's outbox), report it to the observer, free its in-flight
/// slot.
pub(crate) struct Done {
    pub(crate) tasks: Tasks,
    pub(crate) outbox: Outbox,
    pub(crate) shared: Arc<ServerShared>,
    pub(crate) names: Arc<observer::MethodNames>,
    pub(crate) received_at: Instant,
    pub(crate) permit: OwnedSemaphorePermit,
    /// The request body's share of `inflight_request_bytes_max`.
    pub(crate) request_bytes: OwnedSemaphorePermit,
    pub(crate) service_id: u16,
    pub(crate) method_id: u16,
    pub(crate) correlation_id: u64,
}

impl Done {
    pub(crate) async fn finish(self, result: std::result::Result<bytes::Bytes, RpcError>) {
        drop(self.request_bytes);
        let (reply, answer) =
            answer_frame(result, self.service_id, self.method_id, self.correlation_id);
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.correlation_id);
        let _ = self.outbox.send(reply).await;
        observer::report(
            self.shared.observer.as_deref(),
            &self.names,
            answer,
            self.received_at,
        );
        drop(self.permit);
    }
}

/// The answer frame of a handler's result (a response, or the error's frame) and how
/// the observer counts it.
pub(crate) fn answer_frame(
    result: std::result::Result<bytes::Bytes, RpcError>,
    service_id: u16,
    method_id: u16,
    correlation_id: u64,
) -> (Frame, Answer) {
    match result {
        Ok(body) => (
            Frame {
                kind: Kind::Response,
                service_id,
                method_id,
                correlation_id,
                body,
            },
            Answer::Ok,
        ),
        Err(err) => (
            err.to_frame(correlation_id, service_id, method_id),
            Answer::of_error(&err),
        ),
    }
}

/// The share of `inflight_request_bytes_max` a request body of `len` bytes holds (a
/// body larger than the whole bound takes all of it).
pub(crate) fn request_room(config: &crate::server::NeoConfig, len: usize) -> u32 {
    let bound = config
        .inflight_request_bytes_max
        .clamp(1, Semaphore::MAX_PERMITS);
    u32::try_from(len.min(bound)).unwrap_or(u32::MAX)
}
