//! [`FrameCodec`]: the frame functions of [`crate::frame`] as a tokio-util
//! `Decoder`/`Encoder`, so a socket half becomes a stream/sink of [`Frame`]s.

use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

use crate::frame::{self, EncodeOptions, Frame, FrameError};

/// Frames handled per batch: a server connection answers up to this many buffered
/// requests (and takes up to this many queued replies) per write.
pub(crate) const WRITE_BATCH_FRAMES_MAX: usize = 256;
/// Initial size of read and write buffers: room for many small frames per syscall.
pub(crate) const READ_BUFFER_BYTES: usize = 64 * 1024;
/// A read buffer is grown (by `READ_BUFFER_BYTES`) when less than this much room is
/// left for the next read.
pub(crate) const READ_ROOM_BYTES_MIN: usize = 4 * 1024;
/// A write buffer that grew past this (after a large frame) is given back.
pub(crate) const WRITE_BUFFER_RETAIN_BYTES_MAX: usize = 1024 * 1024;

/// Frame codec with its limits. Cheap to copy; one per connection half.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameCodec {
    options: EncodeOptions,
}

impl FrameCodec {
    /// A codec that bounds frames by `options.frame_size_bytes_max` in both directions
    /// and compresses/checksums outgoing bodies as `options` says.
    pub fn new(options: EncodeOptions) -> FrameCodec {
        FrameCodec { options }
    }

    /// The options in force.
    pub fn options(&self) -> &EncodeOptions {
        &self.options
    }
}

impl Default for FrameCodec {
    fn default() -> FrameCodec {
        FrameCodec::new(EncodeOptions::default())
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        frame::decode(src, self.options.frame_size_bytes_max)
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, item: Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        frame::encode(&item, &self.options, dst)
    }
}

impl Encoder<&Frame> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, item: &Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        frame::encode(item, &self.options, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Kind;
    use bytes::Bytes;

    #[test]
    fn codec_streams_frames_split_at_every_byte() {
        let mut codec = FrameCodec::default();
        let frames: Vec<Frame> = (0..3)
            .map(|i| Frame {
                kind: Kind::Response,
                service_id: 1,
                method_id: 2,
                correlation_id: i,
                body: Bytes::from(vec![i as u8; 10 * i as usize]),
            })
            .collect();
        let mut wire = BytesMut::new();
        for frame in &frames {
            codec.encode(frame, &mut wire).unwrap();
        }
        // Feed one byte at a time: every partial state must be "incomplete".
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for byte in wire.iter() {
            buf.extend_from_slice(&[*byte]);
            while let Some(frame) = codec.decode(&mut buf).unwrap() {
                out.push(frame);
            }
        }
        assert_eq!(out, frames);
    }
}
