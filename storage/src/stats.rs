//! Process-wide storage statistics: every [`crate::SegmentLog`] of the process adds to
//! one set of atomic counters and lock-free latency histograms ([`stats`]), which the
//! node reads when `/metrics` is scraped. Recording is a few relaxed atomic adds next
//! to a `pwrite` or an `fdatasync`, so it costs nothing measurable.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds: 50 µs to 10 s (a `+Inf` bucket
/// follows). Shared with the node's own histograms so that every latency of a broker
/// is read on one scale.
pub const LATENCY_BUCKETS_S: [f64; 17] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

/// A latency histogram on [`LATENCY_BUCKETS_S`]: one relaxed add per observation into
/// its bucket, one into the sum (in nanoseconds). Lock-free; a reader may see an
/// observation's bucket before its sum (harmless for monitoring).
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Non-cumulative counts per bucket; the last is `+Inf`.
    counts: [AtomicU64; LATENCY_BUCKETS_S.len() + 1],
    sum_ns: AtomicU64,
}

/// A point-in-time copy of a [`LatencyHistogram`].
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound in seconds, non-cumulative count)`; the last bound is `f64::INFINITY`.
    pub buckets: Vec<(f64, u64)>,
    /// Sum of every observation, in seconds.
    pub sum_seconds: f64,
    /// Number of observations.
    pub count: u64,
}

impl LatencyHistogram {
    /// An empty histogram (usable in a `static`).
    pub const fn new() -> LatencyHistogram {
        LatencyHistogram {
            counts: [const { AtomicU64::new(0) }; LATENCY_BUCKETS_S.len() + 1],
            sum_ns: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = LATENCY_BUCKETS_S
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(LATENCY_BUCKETS_S.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// A copy of the counts.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS_S
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.counts.iter().map(|c| c.load(Ordering::Relaxed)))
            .collect();
        HistogramSnapshot {
            count: buckets.iter().map(|(_, c)| c).sum(),
            buckets,
            sum_seconds: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

/// The storage statistics of the whole process (every log).
#[derive(Debug, Default)]
pub struct StorageStats {
    /// One append: the `pwrite` of a batch to the active segment (a segment roll it
    /// caused is not included).
    pub append: LatencyHistogram,
    /// One `fdatasync` of a log's segment (group-commit rounds, interval flushes,
    /// the seal of a rolled segment).
    pub fsync: LatencyHistogram,
    /// Batch bytes appended to segments.
    pub appended_bytes: AtomicU64,
    /// `fdatasync` calls on segment data.
    pub fsyncs: AtomicU64,
}

impl StorageStats {
    /// Notes one append of `bytes` that took `took`.
    pub(crate) fn appended(&self, bytes: u64, took: Duration) {
        self.append.observe(took);
        self.appended_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Notes one `fdatasync` of segment data that took `took`.
    pub(crate) fn synced(&self, took: Duration) {
        self.fsync.observe(took);
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
    }
}

static STATS: StorageStats = StorageStats {
    append: LatencyHistogram::new(),
    fsync: LatencyHistogram::new(),
    appended_bytes: AtomicU64::new(0),
    fsyncs: AtomicU64::new(0),
};

/// The process-wide storage statistics.
pub fn stats() -> &'static StorageStats {
    &STATS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_their_bucket_and_the_sum() {
        let h = LatencyHistogram::new();
        h.observe(Duration::from_micros(10));
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let s = h.snapshot();
        assert_eq!(s.count, 4);
        assert_eq!(s.buckets.len(), LATENCY_BUCKETS_S.len() + 1);
        assert_eq!(s.buckets[0], (0.00005, 2));
        let at_5ms = s.buckets.iter().find(|(b, _)| *b == 0.005).unwrap();
        assert_eq!(at_5ms.1, 1);
        assert_eq!(*s.buckets.last().unwrap(), (f64::INFINITY, 1));
        assert!((s.sum_seconds - 60.00306).abs() < 1e-9, "{}", s.sum_seconds);
    }

    #[test]
    fn an_append_and_a_sync_are_counted() {
        let before = stats().appended_bytes.load(Ordering::Relaxed);
        let fsyncs = stats().fsyncs.load(Ordering::Relaxed);
        stats().appended(100, Duration::from_micros(5));
        stats().synced(Duration::from_micros(5));
        assert!(stats().appended_bytes.load(Ordering::Relaxed) >= before + 100);
        assert!(stats().fsyncs.load(Ordering::Relaxed) > fsyncs);
    }
}
