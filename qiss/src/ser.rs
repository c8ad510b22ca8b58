//! Encoding: serde's data model to Qiss bytes.
//!
//! One `Serializer` generic over where the bytes go ([`Output`]): a `Vec<u8>` (the fast
//! path: `to_vec`, `append_to_vec`), an `io::Write` (`to_writer`), or a byte counter
//! (`serialized_size`). The layout is in `docs/qiss.md`; in short, everything is written
//! in declaration order without names or type tags, integers wider than a byte as
//! varints, and every variable-length thing behind a varint length.
//!
//! Sequences and maps must know their length up front (serde passes `Some(len)` for
//! every std collection and for derived types): the length prefix comes first and
//! Qiss does not buffer to find it out. A `None` length (a hand-written `Serialize`
//! using `collect_seq` on an iterator without an exact size, or `#[serde(flatten)]`)
//! is [`Error::Unsupported`].

use std::io;

use serde::ser::{self, Serialize};

use crate::error::{Error, Result};
use crate::varint;

/// Where a serializer writes. Private: the public API is the three functions below.
pub(crate) trait Output {
    fn put(&mut self, bytes: &[u8]) -> Result<()>;
    fn put_byte(&mut self, byte: u8) -> Result<()>;
    /// Writes a varint of at least two bytes (`v >= 0x80`).
    #[inline]
    fn put_varint(&mut self, v: u64) -> Result<()> {
        let mut buf = [0u8; varint::MAX_LEN_U64];
        let n = varint::encode_u64(v, &mut buf);
        self.put(&buf[..n])
    }
    /// Writes any varint.
    #[inline(always)]
    fn varint(&mut self, v: u64) -> Result<()> {
        if v < 0x80 {
            self.put_byte(v as u8)
        } else {
            self.put_varint(v)
        }
    }
}

impl Output for &mut Vec<u8> {
    #[inline]
    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.extend_from_slice(bytes);
        Ok(())
    }
    #[inline]
    fn put_byte(&mut self, byte: u8) -> Result<()> {
        self.push(byte);
        Ok(())
    }
    // Forced inline: serializing integer-heavy structs is mostly this call, and
    // inlined its `Result` vanishes (measured ~25% of a metadata encode+decode).
    #[inline(always)]
    fn put_varint(&mut self, v: u64) -> Result<()> {
        varint::push_u64(self, v);
        Ok(())
    }
}

struct IoOutput<W>(W);

impl<W: io::Write> Output for IoOutput<W> {
    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.0
            .write_all(bytes)
            .map_err(|e| Error::Io(e.to_string()))
    }
    fn put_byte(&mut self, byte: u8) -> Result<()> {
        self.put(&[byte])
    }
}

/// Counts bytes instead of writing them.
struct SizeOutput(u64);

impl Output for SizeOutput {
    #[inline]
    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.0 += bytes.len() as u64;
        Ok(())
    }
    #[inline]
    fn put_byte(&mut self, _: u8) -> Result<()> {
        self.0 += 1;
        Ok(())
    }
    #[inline]
    fn put_varint(&mut self, v: u64) -> Result<()> {
        self.0 += varint::len_u64(v) as u64;
        Ok(())
    }
}

/// Bounds the encoded size from above without looking at integer values: every varint
/// counts as its longest form. Strings, byte strings and floats are counted exactly.
/// Everything it does is an addition of a constant or of a length, so after inlining a
/// struct's fields fold into a handful of instructions (an exact sizing pass has to
/// measure every varint, which cost integer-heavy structs more than it saved).
struct BoundOutput {
    /// Bytes of strings, byte strings and fixed-width fields: exact.
    bulk: usize,
    /// Bytes of varints and single-byte fields: an upper bound.
    scalars: usize,
}

impl Output for BoundOutput {
    #[inline(always)]
    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.bulk = self.bulk.wrapping_add(bytes.len());
        Ok(())
    }
    #[inline(always)]
    fn put_byte(&mut self, _: u8) -> Result<()> {
        self.scalars = self.scalars.wrapping_add(1);
        Ok(())
    }
    #[inline(always)]
    fn varint(&mut self, _: u64) -> Result<()> {
        self.scalars = self.scalars.wrapping_add(varint::MAX_LEN_U64);
        Ok(())
    }
}

/// The capacity [`to_vec`] starts with. Room for a typical RPC body; a value whose
/// integers alone could need more (a long sequence of integers) gets a quarter of their
/// bound, since varints are mostly far shorter than their longest form, and grows
/// geometrically from there if that is not enough.
pub(crate) const FIRST_CAPACITY: usize = 256;

/// How much room [`to_vec`] reserves up front for `value`: enough for its strings and
/// byte strings exactly, plus a guess for its integers, so that a value with a large
/// payload is allocated once and written without a reallocation (which would copy
/// the bytes before the payload and cost a second allocation).
#[inline(always)]
pub(crate) fn capacity_for<T: ?Sized + Serialize>(value: &T) -> usize {
    let mut bound = Serializer {
        out: BoundOutput {
            bulk: 0,
            scalars: 0,
        },
    };
    match value.serialize(&mut bound) {
        Ok(()) => {
            let BoundOutput { bulk, scalars } = bound.out;
            let scalars = scalars.min(FIRST_CAPACITY.max(scalars / 4));
            // Overflow is impossible for a real value (its bytes exist in memory), but
            // the counters wrap rather than panic, and a wrapped bound is only a guess.
            bulk.saturating_add(scalars)
        }
        // The real pass reports the error.
        Err(_) => FIRST_CAPACITY,
    }
}

/// Encodes `value` into a new buffer.
pub fn to_vec<T: ?Sized + Serialize>(value: &T) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(capacity_for(value));
    value.serialize(&mut Serializer { out: &mut out })?;
    Ok(out)
}

/// Encodes `value` at the end of `out` (so a caller can write a frame header and the
/// body into one buffer). On error `out` may hold a partial encoding after its old end.
pub fn append_to_vec<T: ?Sized + Serialize>(out: &mut Vec<u8>, value: &T) -> Result<()> {
    value.serialize(&mut Serializer { out })
}

/// Encodes `value` into `writer`. Many small writes: give it a buffered writer.
pub fn to_writer<W: io::Write, T: ?Sized + Serialize>(writer: W, value: &T) -> Result<()> {
    value.serialize(&mut Serializer {
        out: IoOutput(writer),
    })
}

/// The number of bytes [`to_vec`] would produce, without allocating.
pub fn serialized_size<T: ?Sized + Serialize>(value: &T) -> Result<u64> {
    let mut ser = Serializer { out: SizeOutput(0) };
    value.serialize(&mut ser)?;
    Ok(ser.out.0)
}

pub(crate) struct Serializer<O> {
    out: O,
}

impl<O: Output> Serializer<O> {
    #[inline(always)]
    fn varint(&mut self, v: u64) -> Result<()> {
        self.out.varint(v)
    }

    #[inline(always)]
    fn len(&mut self, len: usize) -> Result<()> {
        self.varint(len as u64)
    }

    #[inline]
    fn variant(&mut self, index: u32) -> Result<()> {
        self.varint(u64::from(index))
    }
}

impl<O: Output> ser::Serializer for &mut Serializer<O> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    fn is_human_readable(&self) -> bool {
        false
    }

    #[inline(always)]
    fn serialize_bool(self, v: bool) -> Result<()> {
        self.out.put_byte(u8::from(v))
    }
    #[inline(always)]
    fn serialize_i8(self, v: i8) -> Result<()> {
        self.out.put_byte(v as u8)
    }
    #[inline(always)]
    fn serialize_i16(self, v: i16) -> Result<()> {
        self.varint(varint::zigzag64(i64::from(v)))
    }
    #[inline(always)]
    fn serialize_i32(self, v: i32) -> Result<()> {
        self.varint(varint::zigzag64(i64::from(v)))
    }
    #[inline(always)]
    fn serialize_i64(self, v: i64) -> Result<()> {
        self.varint(varint::zigzag64(v))
    }
    fn serialize_i128(self, v: i128) -> Result<()> {
        self.serialize_u128(varint::zigzag128(v))
    }
    #[inline(always)]
    fn serialize_u8(self, v: u8) -> Result<()> {
        self.out.put_byte(v)
    }
    #[inline(always)]
    fn serialize_u16(self, v: u16) -> Result<()> {
        self.varint(u64::from(v))
    }
    #[inline(always)]
    fn serialize_u32(self, v: u32) -> Result<()> {
        self.varint(u64::from(v))
    }
    #[inline(always)]
    fn serialize_u64(self, v: u64) -> Result<()> {
        self.varint(v)
    }
    fn serialize_u128(self, v: u128) -> Result<()> {
        let mut buf = [0u8; varint::MAX_LEN_U128];
        let n = varint::encode_u128(v, &mut buf);
        self.out.put(&buf[..n])
    }
    #[inline(always)]
    fn serialize_f32(self, v: f32) -> Result<()> {
        self.out.put(&v.to_le_bytes())
    }
    #[inline(always)]
    fn serialize_f64(self, v: f64) -> Result<()> {
        self.out.put(&v.to_le_bytes())
    }
    fn serialize_char(self, v: char) -> Result<()> {
        self.varint(u64::from(u32::from(v)))
    }
    #[inline(always)]
    fn serialize_str(self, v: &str) -> Result<()> {
        self.len(v.len())?;
        self.out.put(v.as_bytes())
    }
    #[inline(always)]
    fn serialize_bytes(self, v: &[u8]) -> Result<()> {
        self.len(v.len())?;
        self.out.put(v)
    }
    #[inline(always)]
    fn serialize_none(self) -> Result<()> {
        self.out.put_byte(0)
    }
    #[inline(always)]
    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Result<()> {
        self.out.put_byte(1)?;
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<()> {
        Ok(())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<()> {
        Ok(())
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        variant_index: u32,
        _variant: &'static str,
    ) -> Result<()> {
        self.variant(variant_index)
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<()> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _name: &'static str,
        variant_index: u32,
        _variant: &'static str,
        value: &T,
    ) -> Result<()> {
        self.variant(variant_index)?;
        value.serialize(self)
    }
    #[inline(always)]
    fn serialize_seq(self, len: Option<usize>) -> Result<Self> {
        let len = len.ok_or(Error::Unsupported("sequence of unknown length"))?;
        self.len(len)?;
        Ok(self)
    }
    fn serialize_tuple(self, _len: usize) -> Result<Self> {
        Ok(self)
    }
    fn serialize_tuple_struct(self, _name: &'static str, _len: usize) -> Result<Self> {
        Ok(self)
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        variant_index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self> {
        self.variant(variant_index)?;
        Ok(self)
    }
    fn serialize_map(self, len: Option<usize>) -> Result<Self> {
        let len = len.ok_or(Error::Unsupported("map of unknown length"))?;
        self.len(len)?;
        Ok(self)
    }
    #[inline(always)]
    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<Self> {
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        variant_index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self> {
        self.variant(variant_index)?;
        Ok(self)
    }
}

impl<O: Output> ser::SerializeSeq for &mut Serializer<O> {
    type Ok = ();
    type Error = Error;
    #[inline(always)]
    fn serialize_element<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<()> {
        value.serialize(&mut **self)
    }
    #[inline]
    fn end(self) -> Result<()> {
        Ok(())
    }
}

impl<O: Output> ser::SerializeTuple for &mut Serializer<O> {
    type Ok = ();
    type Error = Error;
    #[inline(always)]
    fn serialize_element<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<()> {
        value.serialize(&mut **self)
    }
    #[inline]
    fn end(self) -> Result<()> {
        Ok(())
    }
}

impl<O: Output> ser::SerializeTupleStruct for &mut Serializer<O> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<()> {
        value.serialize(&mut **self)
    }
    fn end(self) -> Result<()> {
        Ok(())
    }
}

impl<O: Output> ser::SerializeTupleVariant for &mut Serializer<O> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<()> {
        value.serialize(&mut **self)
    }
    fn end(self) -> Result<()> {
        Ok(())
    }
}

impl<O: Output> ser::SerializeMap for &mut Serializer<O> {
    type Ok = ();
    type Error = Error;
    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> Result<()> {
        key.serialize(&mut **self)
    }
    fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<()> {
        value.serialize(&mut **self)
    }
    fn end(self) -> Result<()> {
        Ok(())
    }
}

impl<O: Output> ser::SerializeStruct for &mut Serializer<O> {
    type Ok = ();
    type Error = Error;
    #[inline(always)]
    fn serialize_field<T: ?Sized + Serialize>(
        &mut self,
        _key: &'static str,
        value: &T,
    ) -> Result<()> {
        value.serialize(&mut **self)
    }
    fn skip_field(&mut self, _key: &'static str) -> Result<()> {
        // A skipped field would shift every later field: positional layouts cannot
        // express it, so refuse rather than write bytes no reader can decode.
        Err(Error::Unsupported(
            "skipped struct field (skip_serializing_if)",
        ))
    }
    #[inline]
    fn end(self) -> Result<()> {
        Ok(())
    }
}

impl<O: Output> ser::SerializeStructVariant for &mut Serializer<O> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: ?Sized + Serialize>(
        &mut self,
        _key: &'static str,
        value: &T,
    ) -> Result<()> {
        value.serialize(&mut **self)
    }
    fn skip_field(&mut self, _key: &'static str) -> Result<()> {
        Err(Error::Unsupported(
            "skipped struct field (skip_serializing_if)",
        ))
    }
    fn end(self) -> Result<()> {
        Ok(())
    }
}
