//! An optional hook on the server's work ([`NeoServer::with_observer`]): connections
//! opened and closed, requests answered (service, method, outcome, duration). The node
//! turns these into metrics; this crate stays free of any metrics library.
//!
//! [`NeoServer::with_observer`]: crate::NeoServer::with_observer

use std::net::SocketAddr;
use std::time::Duration;

use std::sync::Arc;

use crate::error::{ErrorCode, RpcError};

/// What a request to a registered method was answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// A `Response` (for a subscription: its end of stream).
    Ok,
    /// An `Error` with this code (timeouts, `Busy` and panics included).
    Error(ErrorCode),
    /// An `Error` with a service's own code (outside [`ErrorCode`]).
    Custom(u16),
}

impl Answer {
    /// `"ok"`, or the error code's name in snake_case (`not_leader`, `throttled`): a
    /// label value of low cardinality.
    pub fn label(self) -> &'static str {
        match self {
            Answer::Ok => "ok",
            Answer::Error(code) => error_code_name(code),
            Answer::Custom(_) => "custom",
        }
    }

    /// The answer an error reply gives.
    pub fn of_error(err: &RpcError) -> Answer {
        match err.error_code() {
            Some(code) => Answer::Error(code),
            None => Answer::Custom(err.code),
        }
    }
}

/// One answered request, as [`ServerObserver::request_answered`] sees it.
#[derive(Debug, Clone, Copy)]
pub struct AnsweredRequest<'a> {
    /// The service's registered name.
    pub service: &'a str,
    /// The method's registered name.
    pub method: &'a str,
    /// Ok or the error code.
    pub answer: Answer,
    /// From the receipt of the request frame to its answer being queued for the
    /// connection's writer.
    pub duration: Duration,
}

/// Told about the server's work. Every method has an empty default; they are called on
/// the connection's task (or the request's), so they must be cheap and never block.
pub trait ServerObserver: Send + Sync + 'static {
    /// A connection was accepted (past `connections_max`, before any TLS handshake).
    fn connection_opened(&self, _peer: SocketAddr) {}

    /// A connection accepted earlier ended, for whatever reason.
    fn connection_closed(&self, _peer: SocketAddr) {}

    /// A request to a registered method was answered (requests to unknown services or
    /// methods and `neo.system` are not reported; a cancelled request is not either).
    fn request_answered(&self, _request: &AnsweredRequest<'_>) {}
}

/// The names a registered method is reported under.
#[derive(Debug)]
pub(crate) struct MethodNames {
    pub(crate) service: Arc<str>,
    pub(crate) method: Arc<str>,
}

/// Tells `observer` (if any) that a request to `names` was answered `answer`, its
/// frame having been read at `received`.
pub(crate) fn report(
    observer: Option<&dyn ServerObserver>,
    names: &MethodNames,
    answer: Answer,
    received: tokio::time::Instant,
) {
    if let Some(o) = observer {
        o.request_answered(&AnsweredRequest {
            service: &names.service,
            method: &names.method,
            answer,
            duration: received.elapsed(),
        });
    }
}

/// The span a spawned request runs in: its request id (`<connection id>-<correlation
/// id>`) and method name, carried by every log line the request's handler writes. At
/// the ERROR level so that it is on whenever any line of the request is logged (a span
/// writes nothing itself; `NEO_LOG=warn` must still show the request id of a WARN).
pub(crate) fn request_span(connection: u64, correlation: u64, method: &str) -> tracing::Span {
    tracing::error_span!(
        "request",
        request_id = %format_args!("{connection}-{correlation}"),
        method
    )
}

/// The snake_case name of an error code, e.g. `not_leader`.
pub fn error_code_name(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::Malformed => "malformed",
        ErrorCode::FrameTooLarge => "frame_too_large",
        ErrorCode::UnsupportedVersion => "unsupported_version",
        ErrorCode::ChecksumMismatch => "checksum_mismatch",
        ErrorCode::UnknownService => "unknown_service",
        ErrorCode::UnknownMethod => "unknown_method",
        ErrorCode::InvalidArgument => "invalid_argument",
        ErrorCode::Busy => "busy",
        ErrorCode::Timeout => "timeout",
        ErrorCode::Cancelled => "cancelled",
        ErrorCode::ShuttingDown => "shutting_down",
        ErrorCode::Throttled => "throttled",
        ErrorCode::Unauthenticated => "unauthenticated",
        ErrorCode::PermissionDenied => "permission_denied",
        ErrorCode::PrincipalMismatch => "principal_mismatch",
        ErrorCode::Internal => "internal",
        ErrorCode::NotLeader => "not_leader",
        ErrorCode::UnknownTopic => "unknown_topic",
        ErrorCode::TopicAlreadyExists => "topic_already_exists",
        ErrorCode::UnknownPartition => "unknown_partition",
        ErrorCode::UnknownGroup => "unknown_group",
        ErrorCode::UnknownQueue => "unknown_queue",
        ErrorCode::InvalidRecordBatch => "invalid_record_batch",
        ErrorCode::OffsetOutOfRange => "offset_out_of_range",
        ErrorCode::NotEnoughReplicas => "not_enough_replicas",
        ErrorCode::StaleGeneration => "stale_generation",
        ErrorCode::DuplicateSequence => "duplicate_sequence",
        ErrorCode::FencedMember => "fenced_member",
        ErrorCode::NotCoordinator => "not_coordinator",
        ErrorCode::GroupNotEmpty => "group_not_empty",
        ErrorCode::StorageFull => "storage_full",
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn every_code_has_a_distinct_snake_case_name() {
        let names: std::collections::BTreeSet<&str> =
            ErrorCode::ALL.iter().map(|c| error_code_name(*c)).collect();
        assert_eq!(names.len(), ErrorCode::ALL.len());
        for (code, name) in ErrorCode::ALL.iter().map(|c| (c, error_code_name(*c))) {
            let camel: String = name
                .split('_')
                .map(|w| {
                    let mut c = w.chars();
                    c.next()
                        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                        .unwrap_or_default()
                })
                .collect();
            assert_eq!(camel, format!("{code:?}"), "{name}");
        }
        assert_eq!(Answer::Ok.label(), "ok");
        assert_eq!(Answer::Error(ErrorCode::NotLeader).label(), "not_leader");
    }

    /// Records what the server tells it.
    #[derive(Default)]
    struct Seen {
        opened: AtomicUsize,
        closed: AtomicUsize,
        answered: std::sync::Mutex<Vec<(String, String, &'static str)>>,
    }

    impl ServerObserver for Arc<Seen> {
        fn connection_opened(&self, _: SocketAddr) {
            self.opened.fetch_add(1, Ordering::SeqCst);
        }

        fn connection_closed(&self, _: SocketAddr) {
            self.closed.fetch_add(1, Ordering::SeqCst);
        }

        fn request_answered(&self, r: &AnsweredRequest<'_>) {
            self.answered.lock().unwrap().push((
                r.service.to_string(),
                r.method.to_string(),
                r.answer.label(),
            ));
        }
    }

    #[tokio::test]
    async fn the_observer_sees_connections_and_answers() {
        use crate::{ClientConfig, MethodBuilder, NeoClient, NeoConfig, NeoServer, ServiceBuilder};

        let seen = Arc::new(Seen::default());
        let mut server = NeoServer::new(NeoConfig::default()).with_observer(Arc::new(seen.clone()));
        server
            .register(
                ServiceBuilder::new("svc")
                    .method(
                        MethodBuilder::new("echo")
                            .async_handler(|s: String| async move { Ok::<_, RpcError>(s) }),
                    )
                    .method(
                        MethodBuilder::new("refuse").async_handler(|_: String| async move {
                            Err::<String, _>(RpcError::not_leader(None))
                        }),
                    )
                    .method(
                        MethodBuilder::new("inline").sync_handler(|s: String| Ok::<_, RpcError>(s)),
                    ),
            )
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let handle = server.start(listener).unwrap();
        let client = NeoClient::connect(handle.local_addr().to_string(), ClientConfig::default())
            .await
            .unwrap();
        let echoed: String = client.call("svc", "echo", "hi").await.unwrap();
        assert_eq!(echoed, "hi");
        assert!(
            client
                .call::<_, String>("svc", "refuse", "x")
                .await
                .is_err()
        );
        let inline: String = client.call("svc", "inline", "yo").await.unwrap();
        assert_eq!(inline, "yo");
        drop(client);
        handle.shutdown().await;
        // Every connection task has ended once shutdown returns.
        assert_eq!(seen.opened.load(Ordering::SeqCst), 1);
        assert_eq!(seen.closed.load(Ordering::SeqCst), 1);
        let mut answered = seen.answered.lock().unwrap().clone();
        answered.sort();
        let s = |m: &str, a: &'static str| ("svc".to_string(), m.to_string(), a);
        assert_eq!(
            answered,
            vec![
                s("echo", "ok"),
                s("inline", "ok"),
                s("refuse", "not_leader")
            ]
        );
    }
}
