//! The frame: a fixed 26-byte header followed by a body. Pure functions, no I/O.
//!
//! ```text
//! offset size field           notes
//!      0    2 magic           0x4E 0x52 ("NR")
//!      2    1 version         1
//!      3    1 kind            see `Kind`
//!      4    1 flags           bit 0: body is zstd-compressed, bit 1: crc32 is set
//!      5    1 reserved        must be 0
//!      6    2 service_id      u16, big-endian (0 = the built-in `neo.system` service)
//!      8    2 method_id       u16, big-endian
//!     10    8 correlation_id  u64, big-endian
//!     18    4 body_len        u32, big-endian: bytes of body on the wire
//!     22    4 crc32           u32, big-endian: CRC32 (IEEE) of the body as sent, or 0
//!     26    - body            `body_len` bytes
//! ```
//!
//! Decoding is "check, then parse": [`decode`] returns `Ok(None)` while the buffer
//! holds less than a whole frame (a normal outcome), and rejects the header before
//! waiting for a body whose declared length is above the limit, so a hostile length
//! never makes us buffer or allocate more than `frame_size_bytes_max`.

use bytes::{Buf, Bytes, BytesMut};

/// Length of the fixed header in bytes.
pub const HEADER_LEN: usize = 26;
/// Where the correlation id sits in the header.
pub(crate) const CORRELATION_ID_OFFSET: usize = 10;
/// First two bytes of every frame: "NR" (Neo RPC).
pub const MAGIC: u16 = 0x4E52;
/// The protocol version this crate speaks.
pub const VERSION: u8 = 1;
/// Default bound on a whole frame (header + body on the wire, and the body after
/// decompression): 16 MiB.
pub const FRAME_SIZE_BYTES_MAX_DEFAULT: usize = 16 * 1024 * 1024;
/// zstd level used for compressed bodies: the fastest level keeps the hot path cheap.
const ZSTD_LEVEL: i32 = 1;

/// What a frame is for.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Client to server: call `service_id`/`method_id`; the body is the Qiss-encoded input.
    Request = 1,
    /// Server to client: success for the request with the same correlation id; the body is
    /// the Qiss-encoded output. For an event method it ends the stream (empty body).
    Response = 2,
    /// Server to client: failure for the request with the same correlation id (or, with
    /// correlation id 0, for the connection as a whole); the body is a Qiss `RpcError`.
    Error = 3,
    /// Server to client: one event of the subscription opened by the request with the
    /// same correlation id; the body is the Qiss-encoded event.
    Event = 4,
    /// Either direction: heartbeat probe. Empty body. Answered by `Pong` with the same
    /// correlation id.
    Ping = 5,
    /// Either direction: heartbeat answer. Empty body.
    Pong = 6,
    /// Client to server: authentication handshake; the body is the raw token bytes.
    /// Answered by `Response` (body: Qiss `AuthOk`) or `Error` (`Unauthenticated`).
    Auth = 7,
    /// Client to server: stop the request (or subscription) with this correlation id.
    /// Empty body. The server sends nothing more for that id.
    Cancel = 8,
}

impl Kind {
    /// The kind for a wire byte.
    pub fn from_u8(byte: u8) -> Option<Kind> {
        Some(match byte {
            1 => Kind::Request,
            2 => Kind::Response,
            3 => Kind::Error,
            4 => Kind::Event,
            5 => Kind::Ping,
            6 => Kind::Pong,
            7 => Kind::Auth,
            8 => Kind::Cancel,
            _ => return None,
        })
    }

    /// Kinds whose body must be empty.
    fn body_must_be_empty(self) -> bool {
        matches!(self, Kind::Ping | Kind::Pong | Kind::Cancel)
    }
}

/// Header flag bits.
pub mod flags {
    /// The body is a single zstd frame that records its content size.
    pub const ZSTD: u8 = 0b0000_0001;
    /// The header's crc32 field holds the CRC32 of the body as sent.
    pub const CRC32: u8 = 0b0000_0010;
    /// Every bit this version understands; any other bit set is malformed.
    pub const KNOWN: u8 = ZSTD | CRC32;
}

/// A decoded frame. The body is always the plain (decompressed, verified) body:
/// compression and checksums are the transport's business, chosen by [`EncodeOptions`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What the frame is for.
    pub kind: Kind,
    /// Target service of a request (echoed in its replies).
    pub service_id: u16,
    /// Target method of a request (echoed in its replies).
    pub method_id: u16,
    /// Ties replies, events and cancels to their request.
    pub correlation_id: u64,
    /// The plain body.
    pub body: Bytes,
}

impl Frame {
    /// A frame with an empty body.
    pub fn control(kind: Kind, correlation_id: u64) -> Frame {
        Frame {
            kind,
            service_id: 0,
            method_id: 0,
            correlation_id,
            body: Bytes::new(),
        }
    }
}

/// The parsed, validated fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The frame's kind.
    pub kind: Kind,
    /// Flag bits (only known bits are ever set here).
    pub flags: u8,
    /// Service id.
    pub service_id: u16,
    /// Method id.
    pub method_id: u16,
    /// Correlation id.
    pub correlation_id: u64,
    /// Body bytes on the wire.
    pub body_len: u32,
    /// CRC32 of the body as sent (0 unless `flags::CRC32`).
    pub crc32: u32,
}

/// Why bytes are not a valid frame. Every variant except `Io` means the stream is out
/// of sync or hostile: the receiver replies with an error frame if it can and closes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The first two bytes are not the magic.
    #[error("bad magic 0x{found:04x}")]
    BadMagic {
        /// What was there instead.
        found: u16,
    },
    /// A protocol version this crate does not speak.
    #[error("unsupported protocol version {found}")]
    UnsupportedVersion {
        /// The version byte.
        found: u8,
    },
    /// An unknown kind byte.
    #[error("unknown frame kind {found}")]
    UnknownKind {
        /// The kind byte.
        found: u8,
    },
    /// Unknown flag bits or a non-zero reserved byte.
    #[error("reserved bits set (flags 0x{flags:02x}, reserved 0x{reserved:02x})")]
    ReservedBits {
        /// The flags byte.
        flags: u8,
        /// The reserved byte.
        reserved: u8,
    },
    /// The frame (or the decompressed body) is larger than the limit.
    #[error("frame of {len} bytes exceeds frame_size_bytes_max {max}")]
    TooLarge {
        /// The declared or attempted length.
        len: u64,
        /// The limit.
        max: usize,
        /// The frame's correlation id, for the error reply.
        correlation_id: u64,
    },
    /// The body's CRC32 does not match the header.
    #[error("body crc32 0x{actual:08x} does not match header 0x{expected:08x}")]
    ChecksumMismatch {
        /// From the header.
        expected: u32,
        /// Computed over the body.
        actual: u32,
        /// The frame's correlation id, for the error reply.
        correlation_id: u64,
    },
    /// The zstd body does not decompress (or does not declare its content size).
    #[error("body does not decompress: {reason}")]
    Decompress {
        /// zstd's explanation.
        reason: String,
        /// The frame's correlation id, for the error reply.
        correlation_id: u64,
    },
    /// A kind that must have an empty body has one.
    #[error("{kind:?} frame must have an empty body, has {len} bytes")]
    UnexpectedBody {
        /// The kind.
        kind: Kind,
        /// The body length.
        len: u32,
    },
    /// The transport failed while reading or writing frames.
    #[error("i/o: {0}")]
    Io(String),
}

impl FrameError {
    /// The correlation id of the offending frame when the header was readable, else 0
    /// (0 means "the connection as a whole" in an error frame).
    pub fn correlation_id(&self) -> u64 {
        match self {
            FrameError::TooLarge { correlation_id, .. }
            | FrameError::ChecksumMismatch { correlation_id, .. }
            | FrameError::Decompress { correlation_id, .. } => *correlation_id,
            _ => 0,
        }
    }

    /// The wire error code to reply with.
    pub fn error_code(&self) -> crate::ErrorCode {
        use crate::ErrorCode;
        match self {
            FrameError::TooLarge { .. } => ErrorCode::FrameTooLarge,
            FrameError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            FrameError::ChecksumMismatch { .. } => ErrorCode::ChecksumMismatch,
            _ => ErrorCode::Malformed,
        }
    }
}

impl From<std::io::Error> for FrameError {
    fn from(err: std::io::Error) -> FrameError {
        FrameError::Io(err.to_string())
    }
}

/// Parse and validate the fixed header from the first [`HEADER_LEN`] bytes of `buf`.
/// Returns `Ok(None)` if fewer bytes are available. Checks magic, version, kind,
/// reserved bits and the length bound; does not look at the body.
pub fn parse_header(buf: &[u8], frame_size_bytes_max: usize) -> Result<Option<Header>, FrameError> {
    // Check the magic as soon as two bytes are in, so garbage is refused without
    // waiting for a full header.
    if buf.len() >= 2 {
        let magic = u16::from_be_bytes([buf[0], buf[1]]);
        if magic != MAGIC {
            return Err(FrameError::BadMagic { found: magic });
        }
    }
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    // A fixed-size view: the field reads below need no bounds checks.
    let Ok(h) = <&[u8; HEADER_LEN]>::try_from(&buf[..HEADER_LEN]) else {
        return Ok(None);
    };
    let version = h[2];
    if version != VERSION {
        return Err(FrameError::UnsupportedVersion { found: version });
    }
    let kind_byte = h[3];
    let kind = Kind::from_u8(kind_byte).ok_or(FrameError::UnknownKind { found: kind_byte })?;
    let flags = h[4];
    let reserved = h[5];
    if flags & !flags::KNOWN != 0 || reserved != 0 {
        return Err(FrameError::ReservedBits { flags, reserved });
    }
    let service_id = u16::from_be_bytes([h[6], h[7]]);
    let method_id = u16::from_be_bytes([h[8], h[9]]);
    let correlation_id =
        u64::from_be_bytes([h[10], h[11], h[12], h[13], h[14], h[15], h[16], h[17]]);
    let body_len = u32::from_be_bytes([h[18], h[19], h[20], h[21]]);
    let crc32 = u32::from_be_bytes([h[22], h[23], h[24], h[25]]);
    let frame_len = HEADER_LEN as u64 + u64::from(body_len);
    if frame_len > frame_size_bytes_max as u64 {
        return Err(FrameError::TooLarge {
            len: frame_len,
            max: frame_size_bytes_max,
            correlation_id,
        });
    }
    if kind.body_must_be_empty() && body_len != 0 {
        return Err(FrameError::UnexpectedBody {
            kind,
            len: body_len,
        });
    }
    if flags & flags::CRC32 == 0 && crc32 != 0 {
        return Err(FrameError::ReservedBits { flags, reserved });
    }
    Ok(Some(Header {
        kind,
        flags,
        service_id,
        method_id,
        correlation_id,
        body_len,
        crc32,
    }))
}

/// Take one whole frame off the front of `buf`: `Ok(None)` if it holds less than a
/// frame (nothing is consumed), `Err` if the bytes are not a valid frame (the stream
/// cannot be resynchronised: close it).
pub fn decode(
    buf: &mut BytesMut,
    frame_size_bytes_max: usize,
) -> Result<Option<Frame>, FrameError> {
    let Some(header) = parse_header(buf, frame_size_bytes_max)? else {
        // Reserve the rest of the header only; the body is reserved once its length
        // has been checked.
        buf.reserve(HEADER_LEN.saturating_sub(buf.len()));
        return Ok(None);
    };
    let frame_len = HEADER_LEN + header.body_len as usize;
    if buf.len() < frame_len {
        buf.reserve(frame_len - buf.len());
        return Ok(None);
    }
    buf.advance(HEADER_LEN);
    let wire_body = buf.split_to(header.body_len as usize).freeze();
    let body = open_body(&header, wire_body, frame_size_bytes_max)?;
    Ok(Some(Frame {
        kind: header.kind,
        service_id: header.service_id,
        method_id: header.method_id,
        correlation_id: header.correlation_id,
        body,
    }))
}

/// Verify the checksum and undo compression of a body as sent.
fn open_body(
    header: &Header,
    wire_body: Bytes,
    frame_size_bytes_max: usize,
) -> Result<Bytes, FrameError> {
    let correlation_id = header.correlation_id;
    if header.flags & flags::CRC32 != 0 {
        let actual = crc32fast::hash(&wire_body);
        if actual != header.crc32 {
            return Err(FrameError::ChecksumMismatch {
                expected: header.crc32,
                actual,
                correlation_id,
            });
        }
    }
    if header.flags & flags::ZSTD == 0 {
        return Ok(wire_body);
    }
    let bound = frame_size_bytes_max.saturating_sub(HEADER_LEN);
    let declared = match zstd::zstd_safe::get_frame_content_size(&wire_body) {
        Ok(Some(size)) => size,
        Ok(None) => {
            return Err(FrameError::Decompress {
                reason: "zstd frame does not declare its content size".into(),
                correlation_id,
            });
        }
        Err(_) => {
            return Err(FrameError::Decompress {
                reason: "not a zstd frame".into(),
                correlation_id,
            });
        }
    };
    // Bound the allocation by the limit before trusting the declared size: a
    // decompression bomb is just another oversized frame.
    if declared > bound as u64 {
        return Err(FrameError::TooLarge {
            len: declared + HEADER_LEN as u64,
            max: frame_size_bytes_max,
            correlation_id,
        });
    }
    let body = zstd::bulk::decompress(&wire_body, declared as usize).map_err(|err| {
        FrameError::Decompress {
            reason: err.to_string(),
            correlation_id,
        }
    })?;
    if body.len() as u64 != declared {
        return Err(FrameError::Decompress {
            reason: "content size mismatch".into(),
            correlation_id,
        });
    }
    Ok(Bytes::from(body))
}

/// How the sender treats bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodeOptions {
    /// Bound on a whole frame; encoding a larger one fails with `TooLarge`.
    pub frame_size_bytes_max: usize,
    /// Bodies of at least this many bytes are zstd-compressed (when that shrinks them).
    /// `usize::MAX` disables compression.
    pub compression_threshold_bytes: usize,
    /// Whether to send a CRC32 of every non-empty body.
    pub checksum_bodies: bool,
}

impl Default for EncodeOptions {
    fn default() -> EncodeOptions {
        EncodeOptions {
            frame_size_bytes_max: FRAME_SIZE_BYTES_MAX_DEFAULT,
            compression_threshold_bytes: 64 * 1024,
            checksum_bodies: false,
        }
    }
}

/// Append `frame` to `dst`. On error nothing is appended.
pub fn encode(
    frame: &Frame,
    options: &EncodeOptions,
    dst: &mut BytesMut,
) -> Result<(), FrameError> {
    encode_parts(
        frame.kind,
        frame.service_id,
        frame.method_id,
        frame.correlation_id,
        &frame.body,
        options,
        dst,
    )
}

/// [`encode`] from the frame's parts, for callers that do not own a [`Frame`].
pub(crate) fn encode_parts(
    kind: Kind,
    service_id: u16,
    method_id: u16,
    correlation_id: u64,
    plain_body: &[u8],
    options: &EncodeOptions,
    dst: &mut BytesMut,
) -> Result<(), FrameError> {
    let mut flag_bits = 0u8;
    let compressed;
    let mut body: &[u8] = plain_body;
    if body.len() >= options.compression_threshold_bytes && !kind.body_must_be_empty() {
        // Level 1 zstd; a failure or a body that does not shrink is sent as is.
        if let Ok(out) = zstd::bulk::compress(body, ZSTD_LEVEL)
            && out.len() < body.len()
        {
            compressed = out;
            body = &compressed;
            flag_bits |= flags::ZSTD;
        }
    }
    let frame_len = HEADER_LEN as u64 + body.len() as u64;
    // The receiver bounds the decompressed body too, so check the plain length as well.
    let plain_len = HEADER_LEN as u64 + plain_body.len() as u64;
    if frame_len.max(plain_len) > options.frame_size_bytes_max as u64 {
        return Err(FrameError::TooLarge {
            len: frame_len.max(plain_len),
            max: options.frame_size_bytes_max,
            correlation_id,
        });
    }
    let crc = if options.checksum_bodies && !body.is_empty() {
        flag_bits |= flags::CRC32;
        crc32fast::hash(body)
    } else {
        0
    };
    // The header is built on the stack and copied in once (one capacity check, not
    // eleven).
    let mut header = [0u8; HEADER_LEN];
    header[0..2].copy_from_slice(&MAGIC.to_be_bytes());
    header[2] = VERSION;
    header[3] = kind as u8;
    header[4] = flag_bits;
    // header[5]: reserved, 0.
    header[6..8].copy_from_slice(&service_id.to_be_bytes());
    header[8..10].copy_from_slice(&method_id.to_be_bytes());
    header[CORRELATION_ID_OFFSET..18].copy_from_slice(&correlation_id.to_be_bytes());
    header[18..22].copy_from_slice(&(body.len() as u32).to_be_bytes());
    header[22..26].copy_from_slice(&crc.to_be_bytes());
    dst.reserve(HEADER_LEN + body.len());
    dst.extend_from_slice(&header);
    dst.extend_from_slice(body);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX: usize = 1024 * 1024;

    fn sample() -> Frame {
        Frame {
            kind: Kind::Request,
            service_id: 3,
            method_id: 7,
            correlation_id: 0x0102_0304_0506_0708,
            body: Bytes::from_static(b"hello"),
        }
    }

    fn encoded(frame: &Frame, options: &EncodeOptions) -> BytesMut {
        let mut buf = BytesMut::new();
        encode(frame, options, &mut buf).unwrap();
        buf
    }

    #[test]
    fn the_correlation_id_sits_where_the_client_patches_it() {
        let buf = encoded(&sample(), &EncodeOptions::default());
        let at = CORRELATION_ID_OFFSET;
        assert_eq!(buf[at..at + 8], sample().correlation_id.to_be_bytes());
    }

    #[test]
    fn header_layout_matches_the_spec() {
        let buf = encoded(&sample(), &EncodeOptions::default());
        let expected: &[u8] = &[
            0x4E, 0x52, // magic
            0x01, // version
            0x01, // kind = request
            0x00, // flags
            0x00, // reserved
            0x00, 0x03, // service id
            0x00, 0x07, // method id
            0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, // correlation id
            0x00, 0x00, 0x00, 0x05, // body length
            0x00, 0x00, 0x00, 0x00, // crc32 (unused)
            b'h', b'e', b'l', b'l', b'o',
        ];
        assert_eq!(&buf[..], expected);
    }

    fn hex(text: &str) -> Vec<u8> {
        text.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }

    /// The hex example of docs/protocol.md, byte for byte.
    #[test]
    fn docs_hex_example_decodes() {
        let body = Bytes::from(qiss::to_vec("neo").unwrap());
        let request = Frame {
            kind: Kind::Request,
            service_id: 1,
            method_id: 1,
            correlation_id: 1,
            body: body.clone(),
        };
        let wire = hex(
            "4E 52 01 01 00 00 00 01 00 01 00 00 00 00 00 00 00 01 00 00 00 04 00 00 00 00 03 6E 65 6F",
        );
        assert_eq!(&encoded(&request, &EncodeOptions::default())[..], &wire[..]);

        let reply = Frame {
            kind: Kind::Response,
            body: Bytes::from(qiss::to_vec("NEO").unwrap()),
            ..request.clone()
        };
        let wire = hex(
            "4E 52 01 02 00 00 00 01 00 01 00 00 00 00 00 00 00 01 00 00 00 04 00 00 00 00 03 4E 45 4F",
        );
        assert_eq!(&encoded(&reply, &EncodeOptions::default())[..], &wire[..]);

        let err = crate::RpcError::new(crate::ErrorCode::UnknownMethod, "no such method");
        let wire = hex(
            "4E 52 01 03 00 00 00 01 00 09 00 00 00 00 00 00 00 02 00 00 00 11 00 00 00 00 \
             0B 0E 6E 6F 20 73 75 63 68 20 6D 65 74 68 6F 64 00",
        );
        assert_eq!(
            &encoded(&err.to_frame(2, 1, 9), &EncodeOptions::default())[..],
            &wire[..]
        );
        let mut buf = BytesMut::from(&wire[..]);
        let frame = decode(&mut buf, MAX).unwrap().unwrap();
        assert_eq!(crate::RpcError::from_body(&frame.body), err);

        let ping =
            hex("4E 52 01 05 00 00 00 00 00 00 00 00 00 00 00 00 00 07 00 00 00 00 00 00 00 00");
        assert_eq!(
            &encoded(&Frame::control(Kind::Ping, 7), &EncodeOptions::default())[..],
            &ping[..]
        );
    }

    #[test]
    fn every_truncation_is_incomplete_and_consumes_nothing() {
        for options in [
            EncodeOptions::default(),
            EncodeOptions {
                checksum_bodies: true,
                compression_threshold_bytes: 0,
                ..Default::default()
            },
        ] {
            let mut frame = sample();
            frame.body = Bytes::from(vec![b'a'; 300]);
            let full = encoded(&frame, &options);
            for cut in 0..full.len() {
                let mut buf = BytesMut::from(&full[..cut]);
                assert_eq!(decode(&mut buf, MAX), Ok(None), "cut at {cut}");
                assert_eq!(buf.len(), cut, "cut at {cut} consumed bytes");
            }
            let mut buf = full.clone();
            assert_eq!(decode(&mut buf, MAX).unwrap(), Some(frame));
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn two_frames_back_to_back() {
        let mut buf = encoded(&sample(), &EncodeOptions::default());
        let second = Frame::control(Kind::Ping, 9);
        encode(&second, &EncodeOptions::default(), &mut buf).unwrap();
        assert_eq!(decode(&mut buf, MAX).unwrap(), Some(sample()));
        assert_eq!(decode(&mut buf, MAX).unwrap(), Some(second));
        assert_eq!(decode(&mut buf, MAX).unwrap(), None);
    }

    #[test]
    fn hostile_lengths_are_refused_before_buffering() {
        for body_len in [MAX as u32 - HEADER_LEN as u32 + 1, u32::MAX / 2, u32::MAX] {
            let mut buf = encoded(&sample(), &EncodeOptions::default());
            buf.truncate(HEADER_LEN);
            buf[18..22].copy_from_slice(&body_len.to_be_bytes());
            let err = decode(&mut buf, MAX).unwrap_err();
            assert!(
                matches!(
                    err,
                    FrameError::TooLarge {
                        correlation_id: 0x0102_0304_0506_0708,
                        ..
                    }
                ),
                "{err:?}"
            );
            assert_eq!(err.error_code(), crate::ErrorCode::FrameTooLarge);
            // Nothing was reserved for the hostile body.
            assert!(buf.capacity() < MAX);
        }
        // Exactly at the limit is fine.
        let mut frame = sample();
        frame.body = Bytes::from(vec![0u8; 100 - HEADER_LEN]);
        let mut buf = encoded(
            &frame,
            &EncodeOptions {
                frame_size_bytes_max: 100,
                ..Default::default()
            },
        );
        assert_eq!(decode(&mut buf, 100).unwrap(), Some(frame.clone()));
        let mut buf = encoded(&frame, &EncodeOptions::default());
        assert!(matches!(
            decode(&mut buf, 99),
            Err(FrameError::TooLarge {
                len: 100,
                max: 99,
                ..
            })
        ));
    }

    #[test]
    fn encoder_refuses_oversized_frames() {
        let mut frame = sample();
        frame.body = Bytes::from(vec![0u8; 200]);
        let mut buf = BytesMut::new();
        let options = EncodeOptions {
            frame_size_bytes_max: 100,
            ..Default::default()
        };
        assert!(matches!(
            encode(&frame, &options, &mut buf),
            Err(FrameError::TooLarge { .. })
        ));
        assert!(buf.is_empty());
    }

    #[test]
    fn bad_headers_are_typed_errors() {
        let good = encoded(&sample(), &EncodeOptions::default());
        let cases: Vec<(usize, u8, FrameError)> = vec![
            (0, 0x00, FrameError::BadMagic { found: 0x0052 }),
            (2, 0x02, FrameError::UnsupportedVersion { found: 2 }),
            (3, 0x00, FrameError::UnknownKind { found: 0 }),
            (3, 0x09, FrameError::UnknownKind { found: 9 }),
            (
                4,
                0x80,
                FrameError::ReservedBits {
                    flags: 0x80,
                    reserved: 0,
                },
            ),
            (
                5,
                0x01,
                FrameError::ReservedBits {
                    flags: 0,
                    reserved: 1,
                },
            ),
            (
                25,
                0x01,
                FrameError::ReservedBits {
                    flags: 0,
                    reserved: 0,
                },
            ),
        ];
        for (offset, byte, expected) in cases {
            let mut buf = good.clone();
            buf[offset] = byte;
            assert_eq!(decode(&mut buf, MAX), Err(expected), "byte {offset}");
        }
        // Garbage is refused after two bytes, without waiting for a header.
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1"[..2]);
        assert!(matches!(
            decode(&mut buf, MAX),
            Err(FrameError::BadMagic { .. })
        ));
    }

    #[test]
    fn control_frames_must_be_empty() {
        let mut buf = encoded(&Frame::control(Kind::Ping, 1), &EncodeOptions::default());
        buf[21] = 1;
        buf.extend_from_slice(b"x");
        assert_eq!(
            decode(&mut buf, MAX),
            Err(FrameError::UnexpectedBody {
                kind: Kind::Ping,
                len: 1
            })
        );
    }

    #[test]
    fn checksum_is_verified() {
        let options = EncodeOptions {
            checksum_bodies: true,
            ..Default::default()
        };
        let mut buf = encoded(&sample(), &options);
        assert_eq!(buf[4], flags::CRC32);
        let last = buf.len() - 1;
        buf[last] ^= 0xFF;
        assert!(matches!(
            decode(&mut buf, MAX),
            Err(FrameError::ChecksumMismatch { .. })
        ));
    }

    #[test]
    fn compression_round_trips_and_is_bounded() {
        let options = EncodeOptions {
            compression_threshold_bytes: 64,
            checksum_bodies: true,
            ..Default::default()
        };
        let mut frame = sample();
        frame.body = Bytes::from(vec![b'z'; 10_000]);
        let mut buf = encoded(&frame, &options);
        assert_eq!(buf[4], flags::ZSTD | flags::CRC32);
        assert!(buf.len() < 1000);
        let wire = buf.clone();
        assert_eq!(decode(&mut buf, MAX).unwrap(), Some(frame));
        // The same bytes against a smaller limit: the declared content size is refused
        // before decompression (a zstd bomb is an oversized frame).
        let mut buf = wire.clone();
        assert!(matches!(
            decode(&mut buf, 5_000),
            Err(FrameError::TooLarge { .. })
        ));
        // A body flagged zstd that is not zstd.
        let mut buf = encoded(&sample(), &EncodeOptions::default());
        buf[4] = flags::ZSTD;
        assert!(matches!(
            decode(&mut buf, MAX),
            Err(FrameError::Decompress { .. })
        ));
    }

    #[test]
    fn incompressible_bodies_are_sent_plain() {
        let options = EncodeOptions {
            compression_threshold_bytes: 0,
            ..Default::default()
        };
        let buf = encoded(&sample(), &options);
        assert_eq!(buf[4], 0);
    }

    fn any_kind() -> impl Strategy<Value = Kind> {
        (1u8..=8).prop_map(|b| Kind::from_u8(b).unwrap())
    }

    proptest! {
        #[test]
        fn frames_round_trip(
            kind in any_kind(),
            service_id: u16,
            method_id: u16,
            correlation_id: u64,
            body in proptest::collection::vec(any::<u8>(), 0..2048),
            repeat in 1usize..4,
            compress: bool,
            checksum: bool,
        ) {
            let body: Vec<u8> = if kind.body_must_be_empty() { Vec::new() } else { body.repeat(repeat) };
            let frame = Frame { kind, service_id, method_id, correlation_id, body: Bytes::from(body) };
            let options = EncodeOptions {
                frame_size_bytes_max: MAX,
                compression_threshold_bytes: if compress { 16 } else { usize::MAX },
                checksum_bodies: checksum,
            };
            let mut buf = BytesMut::new();
            encode(&frame, &options, &mut buf).unwrap();
            prop_assert_eq!(decode(&mut buf, MAX).unwrap(), Some(frame));
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut buf = BytesMut::from(&bytes[..]);
            // Any outcome but a panic is fine; a consumed frame must have been whole.
            while let Ok(Some(_)) = decode(&mut buf, 4096) {}
        }

        #[test]
        fn arbitrary_bodies_after_a_valid_header_never_panic(
            flag_bits in 0u8..4,
            body in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let mut buf = BytesMut::new();
            let frame = Frame { kind: Kind::Request, service_id: 1, method_id: 1, correlation_id: 1, body: Bytes::from(body) };
            encode(&frame, &EncodeOptions::default(), &mut buf).unwrap();
            buf[4] = flag_bits;
            let _ = decode(&mut buf, 4096);
        }
    }
}
