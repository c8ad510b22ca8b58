//! Qiss against bincode 1.3 (serde) and prost 0.14 on the same values, in the same run,
//! plus record-batch validation throughput.
//!
//! Run: `cargo bench -p qiss --bench codec -- --warm-up-time 1 --measurement-time 4`
//! Encoded sizes are printed first; the figures go to docs/BENCHMARKS.md.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput};
use prost::Message as _;
use serde::{Deserialize, Serialize};

use qiss::batch::{BatchBuilder, Compression, RecordBatch};

// ---- the broker message ----------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Header {
    name: String,
    #[serde(with = "serde_bytes")]
    value: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Message {
    id: u64,
    timestamp: i64,
    #[serde(with = "serde_bytes")]
    key: Vec<u8>,
    headers: Vec<Header>,
    #[serde(with = "serde_bytes")]
    payload: Vec<u8>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct HeaderRef<'a> {
    name: &'a str,
    #[serde(with = "serde_bytes")]
    value: &'a [u8],
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct MessageRef<'a> {
    id: u64,
    timestamp: i64,
    #[serde(with = "serde_bytes")]
    key: &'a [u8],
    #[serde(borrow)]
    headers: Vec<HeaderRef<'a>>,
    #[serde(with = "serde_bytes")]
    payload: &'a [u8],
}

#[derive(Clone, PartialEq, prost::Message)]
struct PHeader {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PMessage {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(sint64, tag = "2")]
    timestamp: i64,
    #[prost(bytes = "vec", tag = "3")]
    key: Vec<u8>,
    #[prost(message, repeated, tag = "4")]
    headers: Vec<PHeader>,
    #[prost(bytes = "vec", tag = "5")]
    payload: Vec<u8>,
}

/// prost's closest thing to borrowed decoding: `bytes::Bytes` fields sliced from the
/// input buffer (strings are still copied).
#[derive(Clone, PartialEq, prost::Message)]
struct PHeaderB {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(bytes = "bytes", tag = "2")]
    value: Bytes,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PMessageB {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(sint64, tag = "2")]
    timestamp: i64,
    #[prost(bytes = "bytes", tag = "3")]
    key: Bytes,
    #[prost(message, repeated, tag = "4")]
    headers: Vec<PHeaderB>,
    #[prost(bytes = "bytes", tag = "5")]
    payload: Bytes,
}

fn filler(len: usize, seed: u64) -> Vec<u8> {
    // xorshift: deterministic, not trivially compressible.
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn message(payload_len: usize) -> Message {
    Message {
        id: 1_234_567_890_123,
        timestamp: 1_732_000_000_000,
        key: filler(16, 1),
        headers: vec![
            Header {
                name: "trace-id".into(),
                value: filler(8, 2),
            },
            Header {
                name: "source".into(),
                value: b"billing".to_vec(),
            },
            Header {
                name: "type".into(),
                value: b"order.v1".to_vec(),
            },
        ],
        payload: filler(payload_len, 3),
    }
}

fn p_message(m: &Message) -> PMessage {
    PMessage {
        id: m.id,
        timestamp: m.timestamp,
        key: m.key.clone(),
        headers: m
            .headers
            .iter()
            .map(|h| PHeader {
                name: h.name.clone(),
                value: h.value.clone(),
            })
            .collect(),
        payload: m.payload.clone(),
    }
}

// ---- the metadata struct ---------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Cleanup {
    Delete,
    Compact,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Segment {
    base_offset: u64,
    size_bytes: u32,
    first_timestamp: i64,
    sealed: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Metadata {
    topic: String,
    partition: u32,
    leader: u64,
    leader_epoch: i32,
    replicas: Vec<u64>,
    high_watermark: u64,
    log_start_offset: u64,
    retention_ms: i64,
    cleanup: Cleanup,
    compression: Option<String>,
    max_message_bytes: u32,
    config_version: u64,
    segments: Vec<Segment>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct MetadataRef<'a> {
    topic: &'a str,
    partition: u32,
    leader: u64,
    leader_epoch: i32,
    replicas: Vec<u64>,
    high_watermark: u64,
    log_start_offset: u64,
    retention_ms: i64,
    cleanup: Cleanup,
    #[serde(borrow)]
    compression: Option<&'a str>,
    max_message_bytes: u32,
    config_version: u64,
    segments: Vec<Segment>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PSegment {
    #[prost(uint64, tag = "1")]
    base_offset: u64,
    #[prost(uint32, tag = "2")]
    size_bytes: u32,
    #[prost(sint64, tag = "3")]
    first_timestamp: i64,
    #[prost(bool, tag = "4")]
    sealed: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PMetadata {
    #[prost(string, tag = "1")]
    topic: String,
    #[prost(uint32, tag = "2")]
    partition: u32,
    #[prost(uint64, tag = "3")]
    leader: u64,
    #[prost(sint32, tag = "4")]
    leader_epoch: i32,
    #[prost(uint64, repeated, tag = "5")]
    replicas: Vec<u64>,
    #[prost(uint64, tag = "6")]
    high_watermark: u64,
    #[prost(uint64, tag = "7")]
    log_start_offset: u64,
    #[prost(sint64, tag = "8")]
    retention_ms: i64,
    #[prost(int32, tag = "9")]
    cleanup: i32,
    #[prost(string, optional, tag = "10")]
    compression: Option<String>,
    #[prost(uint32, tag = "11")]
    max_message_bytes: u32,
    #[prost(uint64, tag = "12")]
    config_version: u64,
    #[prost(message, repeated, tag = "13")]
    segments: Vec<PSegment>,
}

fn metadata() -> Metadata {
    Metadata {
        topic: "orders.eu-west.v2".into(),
        partition: 17,
        leader: 3,
        leader_epoch: 42,
        replicas: vec![3, 1, 2],
        high_watermark: 98_765_432,
        log_start_offset: 12_000_000,
        retention_ms: 7 * 24 * 3600 * 1000,
        cleanup: Cleanup::Delete,
        compression: Some("zstd".into()),
        max_message_bytes: 1 << 20,
        config_version: 9,
        segments: (0..10)
            .map(|i| Segment {
                base_offset: 12_000_000 + i * 8_000_000,
                size_bytes: 1 << 30,
                first_timestamp: 1_732_000_000_000 + i as i64 * 3_600_000,
                sealed: i < 9,
            })
            .collect(),
    }
}

fn p_metadata(m: &Metadata) -> PMetadata {
    PMetadata {
        topic: m.topic.clone(),
        partition: m.partition,
        leader: m.leader,
        leader_epoch: m.leader_epoch,
        replicas: m.replicas.clone(),
        high_watermark: m.high_watermark,
        log_start_offset: m.log_start_offset,
        retention_ms: m.retention_ms,
        cleanup: match m.cleanup {
            Cleanup::Delete => 0,
            Cleanup::Compact => 1,
        },
        compression: m.compression.clone(),
        max_message_bytes: m.max_message_bytes,
        config_version: m.config_version,
        segments: m
            .segments
            .iter()
            .map(|s| PSegment {
                base_offset: s.base_offset,
                size_bytes: s.size_bytes,
                first_timestamp: s.first_timestamp,
                sealed: s.sealed,
            })
            .collect(),
    }
}

// ---- the operations ----------------------------------------------------------------
//
// One function per measured operation, shared by the criterion benches and by the
// instruction-counting mode below, so both measure exactly the same code.

fn qiss_encode<T: Serialize>(v: &T) -> Vec<u8> {
    qiss::to_vec(black_box(v)).unwrap()
}
fn bincode_encode<T: Serialize>(v: &T) -> Vec<u8> {
    bincode::serialize(black_box(v)).unwrap()
}
/// prost's real-use encode: `encode_to_vec` sizes the buffer with an `encoded_len` pass
/// first, as bincode's `serialize` does.
fn prost_encode<M: prost::Message>(m: &M) -> Vec<u8> {
    black_box(m).encode_to_vec()
}
fn qiss_decode<'a, T: Deserialize<'a>>(b: &'a [u8]) -> T {
    qiss::from_slice(black_box(b)).unwrap()
}
fn bincode_decode<'a, T: Deserialize<'a>>(b: &'a [u8]) -> T {
    bincode::deserialize(black_box(b)).unwrap()
}
fn prost_decode<M: prost::Message + Default>(b: &[u8]) -> M {
    M::decode(black_box(b)).unwrap()
}
fn qiss_roundtrip<T: Serialize + for<'a> Deserialize<'a>>(v: &T) -> T {
    qiss_decode(&qiss_encode(v))
}
fn bincode_roundtrip<T: Serialize + for<'a> Deserialize<'a>>(v: &T) -> T {
    bincode_decode(&bincode_encode(v))
}
fn prost_roundtrip<M: prost::Message + Default>(m: &M) -> M {
    prost_decode(&prost_encode(m))
}

// ---- benches ---------------------------------------------------------------------

/// The same six measurements for any value that has an owned serde form, a borrowed
/// serde form and a prost form.
macro_rules! codec_group {
    ($c:expr, $name:expr, $value:expr, $owned:ty, $borrowed:ty, $prost:expr, $prost_ty:ty) => {{
        let value: $owned = $value;
        let pv: $prost_ty = $prost;
        let q = qiss::to_vec(&value).unwrap();
        let b = bincode::serialize(&value).unwrap();
        let p = pv.encode_to_vec();
        assert_eq!(qiss::from_slice::<$owned>(&q).unwrap(), value);
        assert_eq!(bincode::deserialize::<$owned>(&b).unwrap(), value);
        assert_eq!(<$prost_ty>::decode(&p[..]).unwrap(), pv);

        let mut g = $c.benchmark_group($name);
        g.bench_function("encode+decode/qiss", |bch| {
            bch.iter(|| black_box(qiss_roundtrip::<$owned>(&value)))
        });
        g.bench_function("encode+decode/bincode", |bch| {
            bch.iter(|| black_box(bincode_roundtrip::<$owned>(&value)))
        });
        g.bench_function("encode+decode/prost", |bch| {
            bch.iter(|| black_box(prost_roundtrip::<$prost_ty>(&pv)))
        });
        g.bench_function("decode_borrowed/qiss", |bch| {
            bch.iter(|| black_box(qiss_decode::<$borrowed>(&q)))
        });
        g.bench_function("decode_borrowed/bincode", |bch| {
            bch.iter(|| black_box(bincode_decode::<$borrowed>(&b)))
        });
        g.bench_function("decode/prost", |bch| {
            bch.iter(|| black_box(prost_decode::<$prost_ty>(&p)))
        });
        g.finish();
        (q.len(), b.len(), p.len())
    }};
}

/// Instruction-counting mode, for callgrind: `QISS_COUNT=<value>/<op>` runs one
/// operation [`COUNT_ITERS`] times inside [`count_loop`] and exits, e.g.
///
/// ```sh
/// QISS_COUNT=message_1KiB/roundtrip/qiss valgrind --tool=callgrind \
///   --collect-atstart=no '--toggle-collect=*count_loop*' --callgrind-out-file=/dev/null \
///   target/release/deps/codec-<hash>
/// ```
///
/// and the "Collected" total divided by [`COUNT_ITERS`] is instructions per operation
/// (building the values is outside `count_loop`, so it is not counted). Ops:
/// `roundtrip|encode|decode|decode_borrowed` / `qiss|bincode`, and
/// `roundtrip|encode|decode` / `prost`.
macro_rules! count_op {
    ($op:expr, $value:expr, $owned:ty, $borrowed:ty, $prost:expr, $prost_ty:ty) => {{
        let value: $owned = $value;
        let pv: $prost_ty = $prost;
        let q = qiss::to_vec(&value).unwrap();
        let b = bincode::serialize(&value).unwrap();
        let p = pv.encode_to_vec();
        match $op {
            "roundtrip/qiss" => count_loop(|| drop(black_box(qiss_roundtrip::<$owned>(&value)))),
            "roundtrip/bincode" => {
                count_loop(|| drop(black_box(bincode_roundtrip::<$owned>(&value))))
            }
            "roundtrip/prost" => count_loop(|| drop(black_box(prost_roundtrip::<$prost_ty>(&pv)))),
            "encode/qiss" => count_loop(|| drop(black_box(qiss_encode(&value)))),
            "encode/bincode" => count_loop(|| drop(black_box(bincode_encode(&value)))),
            "encode/prost" => count_loop(|| drop(black_box(prost_encode(&pv)))),
            "decode/qiss" => count_loop(|| drop(black_box(qiss_decode::<$owned>(&q)))),
            "decode/bincode" => count_loop(|| drop(black_box(bincode_decode::<$owned>(&b)))),
            "decode/prost" => count_loop(|| drop(black_box(prost_decode::<$prost_ty>(&p)))),
            "decode_borrowed/qiss" => count_loop(|| drop(black_box(qiss_decode::<$borrowed>(&q)))),
            "decode_borrowed/bincode" => {
                count_loop(|| drop(black_box(bincode_decode::<$borrowed>(&b))))
            }
            other => panic!("unknown op {other}"),
        }
    }};
}

/// Iterations of one operation in counting mode.
const COUNT_ITERS: u32 = 2000;

#[inline(never)]
fn count_loop(mut f: impl FnMut()) {
    for _ in 0..COUNT_ITERS {
        f();
    }
}

fn count(spec: &str) {
    let (value, op) = spec.split_once('/').expect("QISS_COUNT=<value>/<op>");
    let len = match value {
        "message_100B" => 100,
        "message_1KiB" => 1024,
        "message_64KiB" => 64 * 1024,
        "metadata" => {
            let m = metadata();
            count_op!(
                op,
                m.clone(),
                Metadata,
                MetadataRef<'_>,
                p_metadata(&m),
                PMetadata
            );
            return;
        }
        other => panic!("unknown value {other}"),
    };
    let m = message(len);
    count_op!(
        op,
        m.clone(),
        Message,
        MessageRef<'_>,
        p_message(&m),
        PMessage
    );
}

fn sizes_line(name: &str, (q, b, p): (usize, usize, usize)) {
    println!("encoded size {name}: qiss {q} B, bincode {b} B, prost {p} B");
}

fn codec(c: &mut Criterion) {
    for (name, len) in [
        ("message_100B", 100),
        ("message_1KiB", 1024),
        ("message_64KiB", 64 * 1024),
    ] {
        let m = message(len);
        let pm = p_message(&m);
        let sizes = codec_group!(c, name, m.clone(), Message, MessageRef<'_>, pm, PMessage);
        sizes_line(name, sizes);
        // prost with Bytes fields decoding from a Bytes buffer (its zero-copy mode).
        let pb = Bytes::from(p_message(&m).encode_to_vec());
        let mut g = c.benchmark_group(name);
        g.bench_function("decode_bytes/prost", |bch| {
            bch.iter(|| black_box(PMessageB::decode(black_box(pb.clone())).unwrap()))
        });
        g.finish();
    }
    let m = metadata();
    let pm = p_metadata(&m);
    let sizes = codec_group!(
        c,
        "metadata",
        m.clone(),
        Metadata,
        MetadataRef<'_>,
        pm,
        PMetadata
    );
    sizes_line("metadata", sizes);
}

fn one_mib_batch(value_len: usize, compression: Compression) -> Bytes {
    let headers: [(&str, &[u8]); 3] = [
        ("trace-id", b"0123abcd"),
        ("source", b"billing"),
        ("type", b"order.v1"),
    ];
    let key = filler(16, 1);
    let mut b = BatchBuilder::new();
    b.compression(compression);
    let mut i = 0u64;
    loop {
        let value = filler(value_len, i + 7);
        let ts = 1_732_000_000_000 + i as i64;
        if b.encoded_len() + b.record_len(ts, Some(&key), &headers, &value) > 1 << 20 {
            break;
        }
        b.push(ts, Some(&key), &headers, &value).unwrap();
        i += 1;
    }
    b.build().unwrap()
}

fn batch(c: &mut Criterion) {
    let mut g = c.benchmark_group("batch_1MiB");
    for (name, value_len) in [("1KiB_records", 1024), ("100B_records", 100)] {
        let bytes = one_mib_batch(value_len, Compression::None);
        println!(
            "batch {name}: {} B, {} records",
            bytes.len(),
            qiss::batch::validate(&bytes).unwrap().record_count
        );
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_with_input(BenchmarkId::new("validate", name), &bytes, |bch, bytes| {
            bch.iter(|| qiss::batch::validate(black_box(bytes)).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("crc_only", name), &bytes, |bch, bytes| {
            bch.iter(|| qiss::batch::check(black_box(bytes)).unwrap())
        });
        g.bench_with_input(
            BenchmarkId::new("new+iterate", name),
            &bytes,
            |bch, bytes| {
                bch.iter(|| {
                    let batch = RecordBatch::new(black_box(bytes.clone())).unwrap();
                    batch.records().map(|r| r.value().len()).sum::<usize>()
                })
            },
        );
    }
    // Throughput is measured against the uncompressed 1 MiB.
    let bytes = one_mib_batch(1024, Compression::Zstd);
    let h = qiss::batch::validate(&bytes).unwrap();
    println!(
        "batch zstd: {} B stored, {} B records",
        bytes.len(),
        h.records_length
    );
    g.throughput(Throughput::Bytes(u64::from(h.records_length)));
    g.bench_with_input(
        BenchmarkId::new("validate_zstd", "1KiB_records"),
        &bytes,
        |bch, bytes| bch.iter(|| qiss::batch::validate(black_box(bytes)).unwrap()),
    );
    g.finish();
}

fn main() {
    if let Ok(spec) = std::env::var("QISS_COUNT") {
        count(&spec);
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    codec(&mut c);
    batch(&mut c);
    c.final_summary();
}
