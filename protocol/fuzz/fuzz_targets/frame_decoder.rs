//! Feed arbitrary bytes to the frame decoder, as a socket would deliver them: any
//! outcome but a panic (or an allocation beyond the limit) is fine.
//!
//! `cargo +nightly fuzz run frame_decoder` (from `protocol/`).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use neo_protocol::frame::{self, EncodeOptions};

const FRAME_SIZE_BYTES_MAX: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    // The first byte picks a split point, so partial reads are exercised too.
    let (split, data) = match data.split_first() {
        Some((split, rest)) => (*split as usize % (rest.len() + 1), rest),
        None => return,
    };
    let mut buf = BytesMut::new();
    let mut decoded = Vec::new();
    'parts: for part in [&data[..split], &data[split..]] {
        buf.extend_from_slice(part);
        loop {
            match frame::decode(&mut buf, FRAME_SIZE_BYTES_MAX) {
                Ok(Some(frame)) => decoded.push(frame),
                Ok(None) => break,
                Err(_) => break 'parts,
            }
        }
    }
    // Whatever decoded must re-encode and decode to the same frame.
    for frame in decoded {
        let mut out = BytesMut::new();
        frame::encode(
            &frame,
            &EncodeOptions {
                frame_size_bytes_max: FRAME_SIZE_BYTES_MAX,
                ..Default::default()
            },
            &mut out,
        )
        .expect("a decoded frame fits the limit it was decoded under");
        assert_eq!(
            frame::decode(&mut out, FRAME_SIZE_BYTES_MAX).unwrap(),
            Some(frame)
        );
    }
});
