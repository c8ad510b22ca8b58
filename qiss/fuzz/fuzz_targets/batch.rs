//! Arbitrary bytes as a record batch, raw and behind a resealed header (so the fuzzer
//! gets past the CRC into the records walk and zstd): never a panic, and a batch that
//! validates can be iterated completely.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use qiss::batch::{CRC_POS, CRC_START, HEADER_LEN, RecordBatch, validate};

fn iterate(bytes: Vec<u8>) {
    let ok = validate(&bytes).is_ok();
    match RecordBatch::new(Bytes::from(bytes)) {
        Ok(batch) => {
            assert!(ok, "RecordBatch::new and validate disagree");
            let mut n = 0u32;
            for r in batch.records() {
                let _ = (r.key(), r.value(), r.headers().count(), r.value_bytes());
                n += 1;
            }
            assert!(
                batch.is_control() || n == batch.len(),
                "validated batch iterated short"
            );
        }
        Err(_) => assert!(!ok, "RecordBatch::new and validate disagree"),
    }
}

fuzz_target!(|data: &[u8]| {
    iterate(data.to_vec());
    if data.len() >= HEADER_LEN {
        let mut framed = data.to_vec();
        let len = framed.len() as u32;
        framed[8..12].copy_from_slice(&len.to_le_bytes());
        framed[12..16].copy_from_slice(b"QISB");
        framed[16] = 1;
        let crc = crc32fast::hash(&framed[CRC_START..]);
        framed[CRC_POS..CRC_POS + 4].copy_from_slice(&crc.to_le_bytes());
        iterate(framed);
    }
});
