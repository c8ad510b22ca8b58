//! `/v1/stats`: what the console's live charts plot, read out of this node's own
//! Prometheus text by the metric names of the metrics contract (so that the console
//! does not depend on how the metrics are kept): produce and fetch totals (records,
//! bytes, requests; summed over labels) and the produce and fetch latency histograms
//! (buckets summed over labels). The page turns successive answers into rates and
//! into latency quantiles of each interval.

use std::collections::BTreeMap;

use serde_json::json;

use crate::http::Reply;
use crate::node::Shared;

/// Counters reported, by the JSON field name.
const COUNTERS: &[(&str, &str)] = &[
    ("produce_records", "neo_produce_records_total"),
    ("produce_bytes", "neo_produce_bytes_total"),
    ("produce_requests", "neo_produce_requests_total"),
    ("fetch_records", "neo_fetch_records_total"),
    ("fetch_bytes", "neo_fetch_bytes_total"),
    ("fetch_requests", "neo_fetch_requests_total"),
];

/// Histograms reported, by the JSON field name.
const HISTOGRAMS: &[(&str, &str)] = &[
    ("produce_latency", "neo_produce_latency_seconds"),
    ("fetch_latency", "neo_fetch_latency_seconds"),
];

pub(super) fn stats(shared: &Shared) -> Reply {
    // Only counters and histograms are read: empty gauges spare the scan of every
    // hosted group (and group lags, queue counts) that a scrape computes.
    let text = shared.metrics.render(&crate::metrics::Gauges::default());
    let mut v = from_text(&text);
    v["node_id"] = json!(shared.node_id);
    v["time_ms"] = json!(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    );
    Reply::json(200, v)
}

/// One sample line: metric name, its labels (raw text between the braces), value.
fn sample(line: &str) -> Option<(&str, &str, f64)> {
    if line.starts_with('#') || line.trim().is_empty() {
        return None;
    }
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let close = line.rfind('}')?;
            (&line[..open], &line[open + 1..close], &line[close + 1..])
        }
        None => {
            let (name, rest) = line.split_once(' ')?;
            (name, "", rest)
        }
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some((name.trim(), labels, value))
}

/// The `le` label's value.
fn le(labels: &str) -> Option<&str> {
    labels.split(',').find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == "le").then(|| v.trim().trim_matches('"'))
    })
}

/// The stats of a Prometheus (or OpenMetrics) text: counters and histograms by the
/// contract's names, summed over their labels; `null` for a series not present.
pub(super) fn from_text(text: &str) -> serde_json::Value {
    let mut counters: BTreeMap<&str, f64> = BTreeMap::new();
    // Histogram name -> (le -> cumulative count), count, sum.
    let mut buckets: BTreeMap<&str, BTreeMap<String, f64>> = BTreeMap::new();
    let mut totals: BTreeMap<(&str, &str), f64> = BTreeMap::new();
    for (name, labels, value) in text.lines().filter_map(sample) {
        if let Some(&(_, m)) = COUNTERS.iter().find(|(_, m)| *m == name) {
            *counters.entry(m).or_default() += value;
            continue;
        }
        for &(_, h) in HISTOGRAMS {
            let Some(suffix) = name.strip_prefix(h) else {
                continue;
            };
            match (suffix, le(labels)) {
                ("_bucket", Some(le)) => {
                    *buckets
                        .entry(h)
                        .or_default()
                        .entry(le.to_string())
                        .or_default() += value
                }
                ("_count", _) => *totals.entry((h, "count")).or_default() += value,
                ("_sum", _) => *totals.entry((h, "sum")).or_default() += value,
                _ => {}
            }
        }
    }
    let mut out = serde_json::Map::new();
    for &(field, m) in COUNTERS {
        out.insert(field.into(), json!(counters.get(m)));
    }
    for &(field, h) in HISTOGRAMS {
        let Some(b) = buckets.get(h) else {
            out.insert(field.into(), serde_json::Value::Null);
            continue;
        };
        let mut list: Vec<(f64, &String, f64)> = b
            .iter()
            .map(|(le, c)| (le.parse::<f64>().unwrap_or(f64::INFINITY), le, *c))
            .collect();
        list.sort_by(|a, b| a.0.total_cmp(&b.0));
        let list: Vec<_> = list.into_iter().map(|(_, le, c)| json!([le, c])).collect();
        out.insert(
            field.into(),
            json!({
                "buckets": list,
                "count": totals.get(&(h, "count")),
                "sum": totals.get(&(h, "sum")),
            }),
        );
    }
    serde_json::Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_histograms_are_summed_over_labels() {
        let text = "\
# HELP neo_produce_records_total Records.
# TYPE neo_produce_records_total counter
neo_produce_records_total 42
neo_fetch_bytes_total{topic=\"a\"} 10
neo_fetch_bytes_total{topic=\"b\"} 5.5
neo_produce_latency_seconds_bucket{acks=\"all\",le=\"0.001\"} 3
neo_produce_latency_seconds_bucket{acks=\"leader\",le=\"0.001\"} 1
neo_produce_latency_seconds_bucket{acks=\"all\",le=\"+Inf\"} 7
neo_produce_latency_seconds_bucket{acks=\"all\",le=\"0.01\"} 6
neo_produce_latency_seconds_count{acks=\"all\"} 7
neo_produce_latency_seconds_sum{acks=\"all\"} 0.25
neo_produce_records_totally_else 1
garbage line without a number x
";
        let v = from_text(text);
        assert_eq!(v["produce_records"], json!(42.0));
        assert_eq!(v["fetch_bytes"], json!(15.5));
        assert_eq!(v["fetch_records"], serde_json::Value::Null);
        let h = &v["produce_latency"];
        assert_eq!(
            h["buckets"],
            json!([["0.001", 4.0], ["0.01", 6.0], ["+Inf", 7.0]])
        );
        assert_eq!(h["count"], json!(7.0));
        assert_eq!(h["sum"], json!(0.25));
        assert_eq!(v["fetch_latency"], serde_json::Value::Null);
    }
}
