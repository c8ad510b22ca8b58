//! Neo RPC requests and connections, recorded by the protocol server through
//! [`neo_protocol::ServerObserver`] ([`RpcMetrics`] is the observer).

use std::net::SocketAddr;

use neo_protocol::api::BROKER_METHODS;
use neo_protocol::{AnsweredRequest, ServerObserver};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::LatencyHistogram;

/// `method` and `code` of `neo_rpc_requests_total`.
type RequestLabels = [(&'static str, &'static str); 2];
/// `method` of `neo_rpc_request_duration_seconds`.
type MethodLabel = [(&'static str, &'static str); 1];

/// The Neo RPC series. Cheap to clone (every metric is shared).
#[derive(Clone, Debug)]
pub(crate) struct RpcMetrics {
    connections_active: Gauge,
    connections: Counter,
    requests: Family<RequestLabels, Counter>,
    durations: Family<MethodLabel, LatencyHistogram>,
}

/// The label of a method name: the registered name (a `&'static str` of
/// [`BROKER_METHODS`]), or `other` for a name outside it (bounded cardinality).
pub(crate) fn method_label(method: &str) -> &'static str {
    BROKER_METHODS
        .iter()
        .find(|(_, name, _, _)| *name == method)
        .map_or("other", |(_, name, _, _)| name)
}

impl RpcMetrics {
    pub(crate) fn register(registry: &mut Registry) -> RpcMetrics {
        let m = RpcMetrics {
            connections_active: Gauge::default(),
            connections: Counter::default(),
            requests: Family::default(),
            durations: Family::default(),
        };
        registry.register(
            "neo_rpc_connections_active",
            "Client connections open now on the Neo RPC port",
            m.connections_active.clone(),
        );
        registry.register(
            "neo_rpc_connections",
            "Client connections accepted on the Neo RPC port",
            m.connections.clone(),
        );
        registry.register(
            "neo_rpc_requests",
            "Neo RPC requests answered, by method and code (ok, or the error code in snake_case)",
            m.requests.clone(),
        );
        registry.register(
            "neo_rpc_request_duration_seconds",
            "Neo RPC request duration, from the receipt of its frame to its answer queued for writing, by method",
            m.durations.clone(),
        );
        m
    }
}

impl ServerObserver for RpcMetrics {
    fn connection_opened(&self, _peer: SocketAddr) {
        self.connections.inc();
        self.connections_active.inc();
    }

    fn connection_closed(&self, _peer: SocketAddr) {
        self.connections_active.dec();
    }

    fn request_answered(&self, r: &AnsweredRequest<'_>) {
        let method = method_label(r.method);
        self.requests
            .get_or_create(&[("method", method), ("code", r.answer.label())])
            .inc();
        self.durations
            .get_or_create(&[("method", method)])
            .observe(r.duration);
    }
}
