//! LEB128 varints and zigzag mapping, shared by the value codec and the record encoding.
//!
//! A varint stores 7 bits per byte, least significant group first; the high bit of a
//! byte says another byte follows. Decoding is strict so that every value has exactly
//! one encoding: a varint longer than its type needs, one whose last byte is zero
//! (an over-long encoding of a smaller number), or one that overflows its type is an
//! [`Error::BadVarint`]. Strictness costs one compare per multi-byte varint and makes
//! "decode then re-encode gives the same bytes" a property the tests can check.

use crate::error::{Error, Result};

/// Longest varint of a `u16`.
pub(crate) const MAX_LEN_U16: usize = 3;
/// Longest varint of a `u32`.
pub(crate) const MAX_LEN_U32: usize = 5;
/// Longest varint of a `u64`.
pub(crate) const MAX_LEN_U64: usize = 10;
/// Longest varint of a `u128`.
pub(crate) const MAX_LEN_U128: usize = 19;

/// Maps a signed integer onto an unsigned one so that small magnitudes stay small
/// (0, -1, 1, -2, ... become 0, 1, 2, 3, ...).
#[inline(always)]
pub(crate) fn zigzag64(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

/// Inverse of [`zigzag64`].
#[inline]
pub(crate) fn unzigzag64(n: u64) -> i64 {
    ((n >> 1) as i64) ^ -((n & 1) as i64)
}

/// Zigzag for 128-bit integers.
#[inline]
pub(crate) fn zigzag128(n: i128) -> u128 {
    ((n << 1) ^ (n >> 127)) as u128
}

/// Inverse of [`zigzag128`].
#[inline]
pub(crate) fn unzigzag128(n: u128) -> i128 {
    ((n >> 1) as i128) ^ -((n & 1) as i128)
}

/// Encodes `v` into `buf`, returning how many bytes it used (1..=10).
#[inline]
pub(crate) fn encode_u64(mut v: u64, buf: &mut [u8; MAX_LEN_U64]) -> usize {
    let mut i = 0;
    while v >= 0x80 {
        buf[i] = (v as u8) | 0x80;
        v >>= 7;
        i += 1;
    }
    buf[i] = v as u8;
    i + 1
}

/// Encodes `v` into `buf`, returning how many bytes it used (1..=19).
#[inline]
pub(crate) fn encode_u128(mut v: u128, buf: &mut [u8; MAX_LEN_U128]) -> usize {
    let mut i = 0;
    while v >= 0x80 {
        buf[i] = (v as u8) | 0x80;
        v >>= 7;
        i += 1;
    }
    buf[i] = v as u8;
    i + 1
}

/// Appends the varint of `v` to `out`.
#[inline(always)]
pub(crate) fn push_u64(out: &mut Vec<u8>, v: u64) {
    if v < 0x80 {
        out.push(v as u8);
        return;
    }
    if v < 1 << 56 {
        // At most 8 bytes: spread the 7-bit groups over a word, read the length off the
        // spread word (no division by 7), write all eight bytes and cut back: two fixed-
        // size moves instead of a loop with a bounds check per byte.
        let x = spread_7bit_groups(v);
        let bits = (64 - x.leading_zeros()) as usize;
        let len = bits.div_ceil(8);
        // Continuation bits on every byte but the last.
        let continuation = 0x8080_8080_8080_8080u64 >> (72 - 8 * len);
        let start = out.len();
        out.extend_from_slice(&(x | continuation).to_le_bytes());
        out.truncate(start + len);
    } else {
        push_u64_long(out, v);
    }
}

/// The rare 9- and 10-byte varints (values of 2^56 and more), kept out of line so that
/// the hot path above stays small enough to inline into every field.
#[cold]
#[inline(never)]
fn push_u64_long(out: &mut Vec<u8>, v: u64) {
    let mut buf = [0u8; MAX_LEN_U64];
    let n = encode_u64(v, &mut buf);
    out.extend_from_slice(&buf[..n]);
}

/// Moves the 7-bit groups of `v` (< 2^56) into the low 7 bits of successive bytes: the
/// inverse of [`compact_7bit_groups`], without continuation bits.
#[inline(always)]
fn spread_7bit_groups(v: u64) -> u64 {
    let mut x = v;
    x = (x & 0x0000_0000_0fff_ffff) | ((x & 0x00ff_ffff_f000_0000) << 4);
    x = (x & 0x0000_3fff_0000_3fff) | ((x & 0x0fff_c000_0fff_c000) << 2);
    // lo + 2*hi == x + hi: one mask instead of two.
    x + (x & 0x3f80_3f80_3f80_3f80)
}

/// Appends the zigzag varint of `v` to `out`.
#[inline(always)]
pub(crate) fn push_i64(out: &mut Vec<u8>, v: i64) {
    push_u64(out, zigzag64(v));
}

/// Number of bytes the varint of `v` takes.
#[inline(always)]
pub(crate) fn len_u64(v: u64) -> usize {
    // 1 + floor(bits/7), with 0 taking one byte.
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Decodes a varint of at most `max_len` bytes from `buf` at `*pos`, advancing `*pos`.
/// The result may still be too large for a type narrower than 64 bits: the caller
/// checks the range.
// Forced inline: every caller is a hot decode loop, and once inlined the large
// `Result<u64, Error>` never has to go through memory.
#[inline(always)]
pub(crate) fn read_u64(buf: &[u8], pos: &mut usize, max_len: usize) -> Result<u64> {
    let start = *pos;
    let Some(&b0) = buf.get(start) else {
        return Err(Error::UnexpectedEof {
            position: start,
            needed: 1,
        });
    };
    if b0 < 0x80 {
        *pos = start + 1;
        return Ok(u64::from(b0));
    }
    if let Some(word) = buf.get(start..start + 8) {
        let word = u64::from_le_bytes(word.try_into().unwrap_or([0; 8]));
        // The first byte without its continuation bit ends the varint.
        let stops = !word & 0x8080_8080_8080_8080;
        if stops != 0 {
            return finish_word(word, stops, pos, max_len);
        }
    }
    read_u64_slow(buf, pos, max_len, b0)
}

/// Ends a word-at-a-time read: `stops` (non-zero) marks the bytes of `word` without a
/// continuation bit; the first of them is the varint's last byte.
#[inline(always)]
fn finish_word(word: u64, stops: u64, pos: &mut usize, max_len: usize) -> Result<u64> {
    let start = *pos;
    let len = (stops.trailing_zeros() as usize + 1) / 8;
    // The bytes of the varint: every bit up to and including the first stop bit.
    let bytes = word & (stops ^ (stops - 1));
    // Over-long: the last byte carries no bits (its stop bit is clear too).
    if len > max_len || bytes >> ((len - 1) * 8) == 0 {
        return Err(Error::BadVarint { position: start });
    }
    *pos = start + len;
    Ok(compact_7bit_groups(bytes))
}

/// Gathers the 7-bit payloads of a varint's bytes (at most 8, already cut from the
/// word, continuation bits included) into one integer, by halving the number of lanes
/// three times instead of looping per byte.
#[inline(always)]
fn compact_7bit_groups(bytes: u64) -> u64 {
    let mut x = bytes & 0x7f7f_7f7f_7f7f_7f7f;
    // Pairs of 7-bit lanes: lo + hi/2 == x - hi/2, one mask instead of two.
    x -= (x & 0x7f00_7f00_7f00_7f00) >> 1;
    x = (x & 0x0000_3fff_0000_3fff) | ((x & 0x3fff_0000_3fff_0000) >> 2);
    (x & 0x0000_0000_0fff_ffff) | ((x & 0x0fff_ffff_0000_0000) >> 4)
}

#[inline(never)]
fn read_u64_slow(buf: &[u8], pos: &mut usize, max_len: usize, b0: u8) -> Result<u64> {
    let start = *pos;
    let mut v = u64::from(b0 & 0x7f);
    let mut shift = 7u32;
    let mut i = start + 1;
    loop {
        if i - start >= max_len {
            return Err(Error::BadVarint { position: start });
        }
        let Some(&b) = buf.get(i) else {
            return Err(Error::UnexpectedEof {
                position: i,
                needed: 1,
            });
        };
        i += 1;
        // The tenth byte of a u64 may only carry the top bit.
        if shift == 63 && b > 1 {
            return Err(Error::BadVarint { position: start });
        }
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            if b == 0 {
                return Err(Error::BadVarint { position: start });
            }
            *pos = i;
            return Ok(v);
        }
        shift += 7;
    }
}

/// Decodes a 128-bit varint from `buf` at `*pos`, advancing `*pos`.
pub(crate) fn read_u128(buf: &[u8], pos: &mut usize) -> Result<u128> {
    let start = *pos;
    let mut v = 0u128;
    let mut shift = 0u32;
    let mut i = start;
    loop {
        if i - start >= MAX_LEN_U128 {
            return Err(Error::BadVarint { position: start });
        }
        let Some(&b) = buf.get(i) else {
            return Err(Error::UnexpectedEof {
                position: i,
                needed: 1,
            });
        };
        i += 1;
        // The nineteenth byte may only carry the top two bits.
        if shift == 126 && b > 3 {
            return Err(Error::BadVarint { position: start });
        }
        v |= u128::from(b & 0x7f) << shift;
        if b < 0x80 {
            if b == 0 && i - start > 1 {
                return Err(Error::BadVarint { position: start });
            }
            *pos = i;
            return Ok(v);
        }
        shift += 7;
    }
}

/// Decodes a zigzag varint of at most 10 bytes.
#[inline(always)]
pub(crate) fn read_i64(buf: &[u8], pos: &mut usize) -> Result<i64> {
    read_u64(buf, pos, MAX_LEN_U64).map(unzigzag64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(v: u64) {
        let mut buf = [0u8; MAX_LEN_U64];
        let n = encode_u64(v, &mut buf);
        assert_eq!(n, len_u64(v));
        let mut pos = 0;
        assert_eq!(read_u64(&buf[..n], &mut pos, MAX_LEN_U64).unwrap(), v);
        assert_eq!(pos, n);
    }

    #[test]
    fn u64_edges() {
        for v in [
            0,
            1,
            127,
            128,
            255,
            16383,
            16384,
            u32::MAX as u64,
            u64::MAX - 1,
        ] {
            roundtrip(v);
        }
        roundtrip(u64::MAX);
        let mut buf = [0u8; MAX_LEN_U64];
        assert_eq!(encode_u64(300, &mut buf), 2);
        assert_eq!(&buf[..2], &[0xac, 0x02]);
    }

    #[test]
    fn push_matches_encode() {
        for shift in 0..64 {
            for v in [1u64 << shift, (1u64 << shift) - 1, u64::MAX >> shift] {
                let mut buf = [0u8; MAX_LEN_U64];
                let n = encode_u64(v, &mut buf);
                let mut out = vec![0xee];
                push_u64(&mut out, v);
                assert_eq!(&out[1..], &buf[..n], "{v:#x}");
            }
        }
    }

    #[test]
    fn fast_and_slow_paths_agree() {
        // Every length 1..=10, decoded from a buffer with and without 8 bytes of slack.
        for shift in 0..64 {
            for v in [1u64 << shift, (1u64 << shift) - 1, (1u64 << shift) | 1] {
                let mut buf = [0u8; MAX_LEN_U64];
                let n = encode_u64(v, &mut buf);
                let mut padded = buf[..n].to_vec();
                padded.extend_from_slice(&[0xff; 8]);
                let mut pos = 0;
                assert_eq!(read_u64(&padded, &mut pos, MAX_LEN_U64).unwrap(), v);
                assert_eq!(pos, n);
            }
        }
        // Over-long and too-long caught on the fast path too.
        let mut pos = 0;
        assert!(read_u64(&[0x81, 0x80, 0x00, 0, 0, 0, 0, 0], &mut pos, 10).is_err());
        pos = 0;
        assert!(read_u64(&[0x81, 0x80, 0x80, 0x01, 0, 0, 0, 0], &mut pos, 3).is_err());
    }

    #[test]
    fn strictness() {
        let mut pos = 0;
        // Over-long zero.
        assert_eq!(
            read_u64(&[0x80, 0x00], &mut pos, MAX_LEN_U64),
            Err(Error::BadVarint { position: 0 })
        );
        // Eleven bytes.
        let long = [0xff; 11];
        pos = 0;
        assert!(matches!(
            read_u64(&long, &mut pos, MAX_LEN_U64),
            Err(Error::BadVarint { .. })
        ));
        // Tenth byte carrying more than one bit overflows u64.
        let mut over = [0xffu8; 10];
        over[9] = 0x02;
        pos = 0;
        assert!(matches!(
            read_u64(&over, &mut pos, MAX_LEN_U64),
            Err(Error::BadVarint { .. })
        ));
        // Truncated.
        pos = 0;
        assert_eq!(
            read_u64(&[0x80], &mut pos, MAX_LEN_U64),
            Err(Error::UnexpectedEof {
                position: 1,
                needed: 1
            })
        );
        // Too long for a u16.
        pos = 0;
        assert!(matches!(
            read_u64(&[0x80, 0x80, 0x80, 0x01], &mut pos, MAX_LEN_U16),
            Err(Error::BadVarint { .. })
        ));
    }

    #[test]
    fn u128_edges() {
        for v in [0u128, 1, 127, 128, u64::MAX as u128 + 1, u128::MAX] {
            let mut buf = [0u8; MAX_LEN_U128];
            let n = encode_u128(v, &mut buf);
            let mut pos = 0;
            assert_eq!(read_u128(&buf[..n], &mut pos).unwrap(), v);
            assert_eq!(pos, n);
        }
        let mut over = [0xffu8; 19];
        over[18] = 0x04;
        let mut pos = 0;
        assert!(read_u128(&over, &mut pos).is_err());
    }

    #[test]
    fn zigzag() {
        for v in [0i64, -1, 1, -2, i64::MIN, i64::MAX] {
            assert_eq!(unzigzag64(zigzag64(v)), v);
        }
        assert_eq!(zigzag64(-1), 1);
        assert_eq!(zigzag64(1), 2);
        for v in [0i128, -1, i128::MIN, i128::MAX] {
            assert_eq!(unzigzag128(zigzag128(v)), v);
        }
    }
}
