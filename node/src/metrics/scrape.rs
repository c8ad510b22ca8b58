//! [`Scrape`]: a registry filled at each scrape with constant values (gauges, counters,
//! labelled families, histograms from bucket snapshots), encoded after the node's own;
//! [`LatencyHistogram`], the lock-free histogram of the request path.

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use super::Labels;

/// A latency histogram for the request path: lock-free buckets
/// ([`neo_storage::LatencyHistogram`], one relaxed add per observation) on the broker's
/// bucket scale, shared by its clones. prometheus-client's own histogram takes a mutex
/// per observation.
#[derive(Debug, Default, Clone)]
pub(crate) struct LatencyHistogram(Arc<neo_storage::LatencyHistogram>);

impl LatencyHistogram {
    pub(crate) fn observe(&self, d: Duration) {
        self.0.observe(d);
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encode_snapshot(&self.0.snapshot(), encoder)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

fn encode_snapshot(
    s: &neo_storage::HistogramSnapshot,
    mut encoder: MetricEncoder,
) -> Result<(), std::fmt::Error> {
    encoder.encode_histogram::<NoLabelSet>(s.sum_seconds, s.count, &s.buckets, None)
}

/// A histogram whose buckets were counted elsewhere (a process-wide
/// `neo_storage::LatencyHistogram`), encoded as it is.
#[derive(Debug)]
pub(crate) struct SnapshotHistogram(pub(crate) neo_storage::HistogramSnapshot);

impl EncodeMetric for SnapshotHistogram {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encode_snapshot(&self.0, encoder)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// The series of one scrape. Names are given without the `_total` of counters (the
/// encoder adds it) and help texts without a final period (the registry adds one).
#[derive(Debug, Default)]
pub(crate) struct Scrape {
    registry: Registry,
}

impl Scrape {
    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    pub(crate) fn gauge(&mut self, name: &str, help: &str, v: u64) {
        self.registry.register(
            name,
            help,
            ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX)),
        );
    }

    pub(crate) fn gauge_f64(&mut self, name: &str, help: &str, v: f64) {
        self.registry.register(name, help, ConstGauge::new(v));
    }

    pub(crate) fn counter(&mut self, name: &str, help: &str, v: u64) {
        self.registry.register(name, help, ConstCounter::new(v));
    }

    pub(crate) fn counter_f64(&mut self, name: &str, help: &str, v: f64) {
        self.registry.register(name, help, ConstCounter::new(v));
    }

    /// A gauge family: one series per row (rows with equal labels add up).
    pub(crate) fn gauges(
        &mut self,
        name: &str,
        help: &str,
        rows: impl IntoIterator<Item = (Labels, u64)>,
    ) {
        let family = Family::<Labels, Gauge>::default();
        for (labels, v) in rows {
            family
                .get_or_create(&labels)
                .inc_by(i64::try_from(v).unwrap_or(i64::MAX));
        }
        self.registry.register(name, help, family);
    }

    /// A counter family: one series per row (rows with equal labels add up).
    pub(crate) fn counters(
        &mut self,
        name: &str,
        help: &str,
        rows: impl IntoIterator<Item = (Labels, u64)>,
    ) {
        let family = Family::<Labels, Counter>::default();
        for (labels, v) in rows {
            family.get_or_create(&labels).inc_by(v);
        }
        self.registry.register(name, help, family);
    }

    pub(crate) fn histogram(
        &mut self,
        name: &str,
        help: &str,
        snapshot: neo_storage::HistogramSnapshot,
    ) {
        self.registry
            .register(name, help, SnapshotHistogram(snapshot));
    }
}
