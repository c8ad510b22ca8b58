//! Storage: segment appends and `fdatasync`s (the process-wide statistics of
//! `neo-storage`, [`neo_storage::stats`]), segments and bytes from [`Gauges`].

use std::sync::atomic::Ordering;

use super::Gauges;
use super::scrape::Scrape;

pub(crate) fn render(s: &mut Scrape, g: &Gauges) {
    let st = neo_storage::stats();
    s.histogram(
        "neo_storage_append_seconds",
        "One append: the write of a record batch to a log's active segment",
        st.append.snapshot(),
    );
    s.histogram(
        "neo_storage_fsync_seconds",
        "One fdatasync of a log's segment (group-commit round, interval flush or segment seal)",
        st.fsync.snapshot(),
    );
    s.counter(
        "neo_storage_appended_bytes",
        "Record batch bytes appended to segment logs on this node",
        st.appended_bytes.load(Ordering::Relaxed),
    );
    s.counter(
        "neo_storage_fsyncs",
        "fdatasync calls on segment data on this node",
        st.fsyncs.load(Ordering::Relaxed),
    );
    s.gauge(
        "neo_storage_segments",
        "Segment files of every group log hosted here (partitions and metadata)",
        g.segments,
    );
    s.gauge(
        "neo_storage_free_bytes",
        "Bytes free on the data directory's filesystem (statvfs, as available to the node)",
        g.storage_free_bytes,
    );
    s.gauge(
        "neo_storage_reserve_bytes",
        "Free space produce must leave (--storage-reserve-bytes); below it: StorageFull",
        g.storage_reserve_bytes,
    );
    s.gauge(
        "neo_replicas_stopped",
        "Partition replicas hosted here whose log failed (write or fdatasync error) and that are being reopened",
        g.replicas_stopped,
    );
    s.counter(
        "neo_storage_damaged_logs_cut",
        "Group logs found damaged when opened (bad CRC or header) and cut at the first bad batch; the rest is in the log's quarantine folder",
        neo_raft::damaged_logs_cut(),
    );
    s.counter(
        "neo_replica_reopens",
        "Stopped partition replicas this node closed and reopened (from their last successful sync)",
        neo_broker::replica_reopens(),
    );
    s.gauge(
        "neo_log_bytes_stored",
        "Bytes of partition segment logs on this node",
        g.log_bytes,
    );
    s.gauges(
        "neo_topic_log_bytes",
        "Bytes of the segment logs of a topic's partition replicas hosted here",
        g.topic_log_bytes
            .iter()
            .map(|(topic, bytes)| (vec![("topic", topic.clone())], *bytes)),
    );
}
