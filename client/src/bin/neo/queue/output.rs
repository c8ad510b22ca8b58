//! What `neo queue` prints: receive lines, describe reports, settle outcomes
//! (docs/cli.md, "Queues").

use std::borrow::Cow;

use neo_client::queue::{QueueDelivery, QueueTotals};
use neo_client::{QueueReport, QueueSettings, ReceiptOutcome};
use serde::Serialize;

use crate::Format;

/// One received message as `neo queue receive --format json` prints it (fields in
/// this order; key and value as UTF-8, invalid sequences replaced, like `neo
/// consume`).
#[derive(Debug, Serialize)]
struct JsonDelivery<'a> {
    partition: u32,
    offset: u64,
    receipt: String,
    delivery_count: u32,
    key: Option<Cow<'a, str>>,
    value: Cow<'a, str>,
}

/// The line `neo queue receive` prints for a message (without the newline).
pub(super) fn format_delivery(d: &QueueDelivery, format: Format, with_receipt: bool) -> String {
    match format {
        Format::Text if with_receipt => {
            format!("{} {}", d.receipt, String::from_utf8_lossy(&d.value))
        }
        Format::Text => String::from_utf8_lossy(&d.value).into_owned(),
        Format::Json => {
            let line = JsonDelivery {
                partition: d.partition,
                offset: d.offset,
                receipt: d.receipt.to_string(),
                delivery_count: d.delivery_count,
                key: d.key.as_deref().map(String::from_utf8_lossy),
                value: String::from_utf8_lossy(&d.value),
            };
            serde_json::to_string(&line).expect("strings and numbers always serialize")
        }
    }
}

/// How `neo queue ack|nack|extend|term` prints an outcome.
pub(super) fn outcome_name(outcome: ReceiptOutcome) -> &'static str {
    match outcome {
        ReceiptOutcome::Ok => "ok",
        ReceiptOutcome::LeaseLost => "lease_lost",
        ReceiptOutcome::AlreadyDone => "already_done",
        ReceiptOutcome::Unknown => "unknown",
    }
}

/// `neo queue describe --format json`: fields in this order; the counts of a
/// partition whose leader did not answer are `null`.
#[derive(Debug, Serialize)]
struct JsonReport<'a> {
    name: &'a str,
    share_group: Option<&'a str>,
    settings: &'a QueueSettings,
    partitions: Vec<JsonPartition<'a>>,
    total: QueueTotals,
}

#[derive(Debug, Serialize)]
struct JsonPartition<'a> {
    partition: u32,
    leader: Option<&'a str>,
    available: Option<u64>,
    in_flight: Option<u64>,
    delayed: Option<u64>,
    dead_lettered: Option<u64>,
    acked: Option<u64>,
    redelivered: Option<u64>,
    oldest_age_ms: Option<u64>,
    ack_floor: Option<u64>,
    end_offset: Option<u64>,
}

/// `neo queue describe` output.
pub(super) fn format_report(report: &QueueReport, format: Format) -> anyhow::Result<String> {
    if format == Format::Json {
        let partitions = report
            .partitions
            .iter()
            .map(|p| {
                let s = p.stats.as_ref();
                JsonPartition {
                    partition: p.partition,
                    leader: p.leader.as_deref(),
                    available: s.map(|s| s.available),
                    in_flight: s.map(|s| s.in_flight),
                    delayed: s.map(|s| s.delayed),
                    dead_lettered: s.map(|s| s.dead_lettered),
                    acked: s.map(|s| s.acked),
                    redelivered: s.map(|s| s.redelivered),
                    oldest_age_ms: s.map(|s| s.oldest_age_ms),
                    ack_floor: s.map(|s| s.ack_floor),
                    end_offset: s.map(|s| s.end_offset),
                }
            })
            .collect();
        return Ok(serde_json::to_string(&JsonReport {
            name: &report.name,
            share_group: report.share_group.as_deref(),
            settings: &report.settings,
            partitions,
            total: report.total(),
        })?);
    }
    let s = &report.settings;
    let group = report
        .share_group
        .as_ref()
        .map_or(String::new(), |g| format!(" share_group {g}"));
    let backoff: Vec<String> = s.redelivery_backoff_ms.iter().map(u32::to_string).collect();
    let mut out = format!(
        "queue {}{group} partitions {}\nsettings visibility_timeout_ms {} max_deliveries {} \
         dead_letter {} ordered_by_key {} max_in_flight {} max_in_flight_per_consumer {} \
         backoff_ms {}\n",
        report.name,
        report.partitions.len(),
        s.visibility_timeout_ms,
        s.max_deliveries,
        s.dead_letter.as_deref().unwrap_or("none"),
        s.ordered_by_key,
        s.max_in_flight,
        s.max_in_flight_per_consumer,
        if backoff.is_empty() {
            "-".to_string()
        } else {
            backoff.join(",")
        },
    );
    let header = [
        "partition",
        "available",
        "in_flight",
        "delayed",
        "dead_lettered",
        "acked",
        "oldest_age_ms",
        "leader",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for p in &report.partitions {
        let cells = match &p.stats {
            Some(s) => [
                s.available,
                s.in_flight,
                s.delayed,
                s.dead_lettered,
                s.acked,
                s.oldest_age_ms,
            ]
            .iter()
            .map(u64::to_string)
            .collect(),
            None => vec!["-".to_string(); 6],
        };
        let mut row = vec![p.partition.to_string()];
        row.extend(cells);
        row.push(p.leader.clone().unwrap_or_else(|| "-".into()));
        rows.push(row);
    }
    let t = report.total();
    let mut total = vec!["total".to_string()];
    total.extend(
        [
            t.available,
            t.in_flight,
            t.delayed,
            t.dead_lettered,
            t.acked,
            t.oldest_age_ms,
        ]
        .iter()
        .map(u64::to_string),
    );
    total.push(String::new());
    rows.push(total);
    out.push_str(&table(&rows));
    Ok(out.trim_end().to_string())
}

/// Rows as columns padded to their widest cell, two spaces apart (numbers right
/// aligned, the first and last columns left aligned).
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(String::len)
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                if c == 0 || c + 1 == columns {
                    format!("{cell:<w$}", w = widths[c])
                } else {
                    format!("{cell:>w$}", w = widths[c])
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}
