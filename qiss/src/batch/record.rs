//! One record inside the records section: how it is written and read.
//!
//! ```text
//! length           uvarint   bytes of the record after this field
//! offset_delta     uvarint   offset - base_offset; equals the record's index in v1
//! timestamp_delta  zvarint   timestamp - first_timestamp (zigzag, may be negative)
//! key_length       zvarint   -1: no key (null), else the key's byte count
//! key              bytes
//! header_count     uvarint
//!   name_length    uvarint   } header_count times
//!   name           UTF-8     }
//!   value_length   uvarint   }
//!   value          bytes     }
//! value_length     uvarint   must equal the bytes left in the record
//! value            bytes
//! ```
//!
//! The leading `length` lets a reader bound every later field by the record rather than
//! by the section, and a reader skip a record without decoding it. Kafka's record v2
//! layout is the model (minus its unused per-record attributes byte); the value comes
//! last so that `value_length` doubles as a structural check.

use crate::error::{Error, Result};
use crate::varint;

/// Byte ranges of one parsed record, relative to the records section.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawRecord {
    pub(crate) timestamp_delta: i64,
    pub(crate) key: Option<(usize, usize)>,
    pub(crate) headers: (usize, usize),
    pub(crate) header_count: u32,
    pub(crate) value: (usize, usize),
}

fn corrupt(index: u32, reason: &'static str) -> Error {
    Error::CorruptRecord { index, reason }
}

/// Bytes the record would take, `length` prefix included.
pub(crate) fn encoded_len(
    index: u32,
    timestamp_delta: i64,
    key: Option<&[u8]>,
    headers: &[(&str, &[u8])],
    value: &[u8],
) -> usize {
    let body = body_len(index, timestamp_delta, key, headers, value);
    varint::len_u64(body as u64) + body
}

fn body_len(
    index: u32,
    timestamp_delta: i64,
    key: Option<&[u8]>,
    headers: &[(&str, &[u8])],
    value: &[u8],
) -> usize {
    let mut n = varint::len_u64(u64::from(index))
        + varint::len_u64(varint::zigzag64(timestamp_delta))
        + varint::len_u64(headers.len() as u64)
        + varint::len_u64(value.len() as u64)
        + value.len();
    n += match key {
        Some(k) => varint::len_u64(varint::zigzag64(k.len() as i64)) + k.len(),
        None => 1,
    };
    for (name, v) in headers {
        n += varint::len_u64(name.len() as u64)
            + name.len()
            + varint::len_u64(v.len() as u64)
            + v.len();
    }
    n
}

/// Appends one record to `out`.
pub(crate) fn write(
    out: &mut Vec<u8>,
    index: u32,
    timestamp_delta: i64,
    key: Option<&[u8]>,
    headers: &[(&str, &[u8])],
    value: &[u8],
) {
    let body = body_len(index, timestamp_delta, key, headers, value);
    out.reserve(body + varint::MAX_LEN_U64);
    varint::push_u64(out, body as u64);
    varint::push_u64(out, u64::from(index));
    varint::push_i64(out, timestamp_delta);
    match key {
        Some(k) => {
            varint::push_i64(out, k.len() as i64);
            out.extend_from_slice(k);
        }
        None => varint::push_i64(out, -1),
    }
    varint::push_u64(out, headers.len() as u64);
    for (name, v) in headers {
        varint::push_u64(out, name.len() as u64);
        out.extend_from_slice(name.as_bytes());
        varint::push_u64(out, v.len() as u64);
        out.extend_from_slice(v);
    }
    varint::push_u64(out, value.len() as u64);
    out.extend_from_slice(value);
}

/// Reads a length-prefixed field of the record ending at `end`, checking the length
/// against the bytes left in the record before slicing.
#[inline]
fn field(pos: &mut usize, end: usize, len: u64, index: u32) -> Result<(usize, usize)> {
    if len > (end - *pos) as u64 {
        return Err(corrupt(index, "field longer than its record"));
    }
    let start = *pos;
    *pos += len as usize;
    Ok((start, *pos))
}

/// Parses the record at `section[*pos..]`, the `index`-th of its batch, and advances
/// `*pos` past it. Every length is checked against the record's own length, which is
/// checked against the section. With `check_utf8`, header names are checked too (the
/// validating walk does; iteration after validation need not). Forced inline so that
/// each of the two callers gets a copy specialised for its `check_utf8`.
#[inline(always)]
pub(crate) fn parse(
    section: &[u8],
    pos: &mut usize,
    index: u32,
    check_utf8: bool,
) -> Result<RawRecord> {
    let bad_varint = |_| corrupt(index, "bad varint");
    let len = varint::read_u64(section, pos, varint::MAX_LEN_U64).map_err(bad_varint)?;
    if len > (section.len() - *pos) as u64 {
        return Err(corrupt(index, "record longer than the records section"));
    }
    let end = *pos + len as usize;
    // Every read below is bounded by the record, not by the section.
    let rec = &section[..end];
    let offset_delta = varint::read_u64(rec, pos, varint::MAX_LEN_U64).map_err(bad_varint)?;
    if offset_delta != u64::from(index) {
        return Err(corrupt(index, "offset_delta is not the record's index"));
    }
    let timestamp_delta = varint::read_i64(rec, pos).map_err(bad_varint)?;
    let key_len = varint::read_i64(rec, pos).map_err(bad_varint)?;
    let key = match key_len {
        -1 => None,
        n if n >= 0 => Some(field(pos, end, n as u64, index)?),
        _ => return Err(corrupt(index, "negative key length")),
    };
    let header_count = varint::read_u64(rec, pos, varint::MAX_LEN_U32).map_err(bad_varint)?;
    // Each header takes at least two bytes: a bound that needs no loop.
    if header_count > ((end - *pos) / 2) as u64 {
        return Err(corrupt(index, "header count larger than its record"));
    }
    let headers_start = *pos;
    for _ in 0..header_count {
        let n = varint::read_u64(rec, pos, varint::MAX_LEN_U64).map_err(bad_varint)?;
        let (s, e) = field(pos, end, n, index)?;
        // Names are nearly always ASCII; the ASCII scan is much cheaper than UTF-8.
        let name = &rec[s..e];
        if check_utf8 && !name.is_ascii() && std::str::from_utf8(name).is_err() {
            return Err(corrupt(index, "header name is not UTF-8"));
        }
        let n = varint::read_u64(rec, pos, varint::MAX_LEN_U64).map_err(bad_varint)?;
        field(pos, end, n, index)?;
    }
    let headers = (headers_start, *pos);
    let value_len = varint::read_u64(rec, pos, varint::MAX_LEN_U64).map_err(bad_varint)?;
    if value_len != (end - *pos) as u64 {
        return Err(corrupt(index, "value_length does not end the record"));
    }
    let value = (*pos, end);
    *pos = end;
    Ok(RawRecord {
        timestamp_delta,
        key,
        headers,
        header_count: header_count as u32,
        value,
    })
}

/// Reads the next `(name, value)` of a headers region already checked by [`parse`].
/// `None` at the end, or (defensively) on bytes that do not parse.
#[inline]
pub(crate) fn next_header<'a>(region: &'a [u8], pos: &mut usize) -> Option<(&'a str, &'a [u8])> {
    let name = take(region, pos)?;
    let value = take(region, pos)?;
    Some((std::str::from_utf8(name).ok()?, value))
}

fn take<'a>(region: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
    let n = varint::read_u64(region, pos, varint::MAX_LEN_U64).ok()?;
    let n = usize::try_from(n).ok()?;
    let s = region.get(*pos..pos.checked_add(n)?)?;
    *pos += n;
    Some(s)
}
