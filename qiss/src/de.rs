//! Decoding: Qiss bytes to serde's data model.
//!
//! The deserializer reads from one borrowed slice with a cursor. Strings and byte
//! strings are handed to visitors with `visit_borrowed_*`, so `&'de str`, `&'de [u8]`
//! (with `serde_bytes`) and `#[serde(borrow)] Cow<'de, str>` point into the input
//! without copying.
//!
//! Hostile input is bounded before it costs anything:
//! - a byte/string length is checked against [`Limits::length_max`] and against the
//!   bytes that remain, before a slice is taken (nothing is allocated for it at all
//!   when the target borrows);
//! - a sequence/map element count is checked against [`Limits::length_max`]; the size
//!   hint given to the visitor (which std collections use to preallocate) is capped by
//!   the bytes that remain, since every element but a zero-sized one takes at least a
//!   byte. A count of 2^60 thus fails at once, and a count of 10^6 with 3 bytes left
//!   preallocates for at most 3 elements and fails on the fourth read;
//! - nesting (options, newtypes, sequences, tuples, maps, structs, enum variants) is
//!   bounded by [`Limits::depth_max`], so a deeply nested input cannot exhaust the
//!   stack;
//! - bytes left over after the value are [`Error::TrailingBytes`].
//!
//! Qiss is not self-describing: `deserialize_any` and `deserialize_ignored_any` (used by
//! untagged/internally tagged enums, `#[serde(flatten)]` and unknown-field skipping)
//! are [`Error::Unsupported`].

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};

use crate::error::{Error, Result};
use crate::varint;

/// Bounds a decoder enforces on untrusted input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest value any single length prefix may carry: bytes for strings and byte
    /// strings, elements for sequences and maps.
    pub length_max: u64,
    /// Deepest nesting of containers (options, newtypes, sequences, tuples, maps,
    /// structs, enum variants) the decoder follows.
    pub depth_max: u32,
}

impl Limits {
    /// 64 MiB per length prefix, 128 levels of nesting: far above any Neo message, far
    /// below what would hurt a node.
    pub const DEFAULT: Limits = Limits {
        length_max: 64 * 1024 * 1024,
        depth_max: 128,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// Decodes a `T` that fills `bytes` exactly, with [`Limits::DEFAULT`].
pub fn from_slice<'de, T: de::Deserialize<'de>>(bytes: &'de [u8]) -> Result<T> {
    from_slice_with(bytes, &Limits::DEFAULT)
}

/// Decodes a `T` that fills `bytes` exactly, with the given limits.
pub fn from_slice_with<'de, T: de::Deserialize<'de>>(
    bytes: &'de [u8],
    limits: &Limits,
) -> Result<T> {
    let mut de = Deserializer::new(bytes, limits);
    let value = T::deserialize(&mut de)?;
    let remaining = bytes.len() - de.pos;
    if remaining != 0 {
        return Err(Error::TrailingBytes { remaining });
    }
    Ok(value)
}

/// Decodes a `T` that fills `bytes` exactly, with [`Limits::DEFAULT`]; fields declared
/// `#[serde(with = "qiss::bytes")]` become slices of `bytes` (no copy). Borrowed `&[u8]`
/// and `&str` fields borrow from `bytes` as with [`from_slice`].
pub fn from_bytes<'de, T: de::Deserialize<'de>>(bytes: &'de bytes::Bytes) -> Result<T> {
    from_bytes_with(bytes, &Limits::DEFAULT)
}

/// [`from_bytes`] with the given limits.
pub fn from_bytes_with<'de, T: de::Deserialize<'de>>(
    bytes: &'de bytes::Bytes,
    limits: &Limits,
) -> Result<T> {
    let _published = crate::bytes::publish(bytes);
    from_slice_with(bytes, limits)
}

/// Decodes a `T` from the start of `bytes` and returns it with the bytes after it (for
/// a caller that reads several values back to back).
pub fn take_from_slice<'de, T: de::Deserialize<'de>>(
    bytes: &'de [u8],
    limits: &Limits,
) -> Result<(T, &'de [u8])> {
    let mut de = Deserializer::new(bytes, limits);
    let value = T::deserialize(&mut de)?;
    Ok((value, &bytes[de.pos..]))
}

pub(crate) struct Deserializer<'de> {
    input: &'de [u8],
    pos: usize,
    length_max: u64,
    depth_max: u32,
    /// Levels of nesting still allowed.
    depth_left: u32,
}

impl<'de> Deserializer<'de> {
    fn new(input: &'de [u8], limits: &Limits) -> Self {
        Deserializer {
            input,
            pos: 0,
            length_max: limits.length_max,
            depth_max: limits.depth_max,
            depth_left: limits.depth_max,
        }
    }

    #[inline]
    fn remaining(&self) -> usize {
        self.input.len() - self.pos
    }

    #[inline(always)]
    fn byte(&mut self) -> Result<u8> {
        match self.input.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                Ok(b)
            }
            None => Err(Error::UnexpectedEof {
                position: self.pos,
                needed: 1,
            }),
        }
    }

    #[inline]
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        match self
            .input
            .get(self.pos..self.pos + N)
            .and_then(|s| <[u8; N]>::try_from(s).ok())
        {
            Some(a) => {
                self.pos += N;
                Ok(a)
            }
            None => Err(Error::UnexpectedEof {
                position: self.pos,
                needed: N - self.remaining(),
            }),
        }
    }

    #[inline(always)]
    fn varint(&mut self, max_len: usize) -> Result<u64> {
        varint::read_u64(self.input, &mut self.pos, max_len)
    }

    #[inline(always)]
    fn unsigned<T: TryFrom<u64>>(&mut self, max_len: usize, what: &'static str) -> Result<T> {
        let position = self.pos;
        let v = self.varint(max_len)?;
        T::try_from(v).map_err(|_| Error::Invalid { what, position })
    }

    #[inline(always)]
    fn signed<T: TryFrom<i64>>(&mut self, max_len: usize, what: &'static str) -> Result<T> {
        let position = self.pos;
        let v = varint::unzigzag64(self.varint(max_len)?);
        T::try_from(v).map_err(|_| Error::Invalid { what, position })
    }

    /// Reads a count prefix and checks it against the configured limit.
    #[inline(always)]
    fn count(&mut self) -> Result<usize> {
        let position = self.pos;
        let len = self.varint(varint::MAX_LEN_U64)?;
        if len > self.length_max {
            return Err(Error::LengthLimit {
                position,
                len,
                limit: self.length_max,
            });
        }
        // length_max may exceed usize on 32-bit targets.
        usize::try_from(len).map_err(|_| Error::LengthLimit {
            position,
            len,
            limit: usize::MAX as u64,
        })
    }

    /// Reads a byte-length prefix and the bytes it covers, checking the length against
    /// the limit and the remaining input before taking the slice.
    #[inline(always)]
    fn bytes(&mut self) -> Result<&'de [u8]> {
        let position = self.pos;
        let len = self.varint(varint::MAX_LEN_U64)?;
        let remaining = (self.input.len() - self.pos) as u64;
        // One compare against the tighter bound instead of two.
        let limit = self.length_max.min(remaining);
        if len > limit {
            return Err(Error::LengthLimit {
                position,
                len,
                limit,
            });
        }
        let start = self.pos;
        self.pos += len as usize;
        Ok(&self.input[start..self.pos])
    }

    #[inline(always)]
    fn str(&mut self) -> Result<&'de str> {
        let position = self.pos;
        let bytes = self.bytes()?;
        std::str::from_utf8(bytes).map_err(|_| Error::Utf8 { position })
    }

    #[inline(always)]
    fn enter(&mut self) -> Result<()> {
        if self.depth_left == 0 {
            return Err(Error::DepthLimit {
                limit: self.depth_max,
            });
        }
        self.depth_left -= 1;
        Ok(())
    }

    #[inline(always)]
    fn leave(&mut self) {
        self.depth_left += 1;
    }

    #[inline(always)]
    fn seq_of<V: Visitor<'de>>(&mut self, len: usize, visitor: V) -> Result<V::Value> {
        self.enter()?;
        let r = visitor.visit_seq(SeqAccess {
            de: self,
            left: len,
        });
        self.leave();
        r
    }
}

impl<'de> de::Deserializer<'de> for &mut Deserializer<'de> {
    type Error = Error;

    fn is_human_readable(&self) -> bool {
        false
    }

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value> {
        Err(Error::Unsupported(
            "deserialize_any: Qiss is not self-describing",
        ))
    }

    #[inline(always)]
    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let position = self.pos;
        match self.byte()? {
            0 => visitor.visit_bool(false),
            1 => visitor.visit_bool(true),
            _ => Err(Error::Invalid {
                what: "bool",
                position,
            }),
        }
    }

    #[inline(always)]
    fn deserialize_i8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_i8(self.byte()? as i8)
    }
    #[inline(always)]
    fn deserialize_i16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_i16(self.signed(varint::MAX_LEN_U16, "i16")?)
    }
    #[inline(always)]
    fn deserialize_i32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_i32(self.signed(varint::MAX_LEN_U32, "i32")?)
    }
    #[inline(always)]
    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_i64(varint::unzigzag64(self.varint(varint::MAX_LEN_U64)?))
    }
    fn deserialize_i128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let v = varint::read_u128(self.input, &mut self.pos)?;
        visitor.visit_i128(varint::unzigzag128(v))
    }
    #[inline(always)]
    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_u8(self.byte()?)
    }
    #[inline(always)]
    fn deserialize_u16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_u16(self.unsigned(varint::MAX_LEN_U16, "u16")?)
    }
    #[inline(always)]
    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_u32(self.unsigned(varint::MAX_LEN_U32, "u32")?)
    }
    #[inline(always)]
    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_u64(self.varint(varint::MAX_LEN_U64)?)
    }
    fn deserialize_u128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_u128(varint::read_u128(self.input, &mut self.pos)?)
    }
    #[inline(always)]
    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_f32(f32::from_le_bytes(self.array()?))
    }
    #[inline(always)]
    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_f64(f64::from_le_bytes(self.array()?))
    }
    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let position = self.pos;
        let v: u32 = self.unsigned(varint::MAX_LEN_U32, "char")?;
        let c = char::from_u32(v).ok_or(Error::Invalid {
            what: "char",
            position,
        })?;
        visitor.visit_char(c)
    }
    #[inline(always)]
    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_borrowed_str(self.str()?)
    }
    #[inline(always)]
    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_borrowed_str(self.str()?)
    }
    #[inline(always)]
    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_borrowed_bytes(self.bytes()?)
    }
    #[inline(always)]
    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_borrowed_bytes(self.bytes()?)
    }
    #[inline(always)]
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let position = self.pos;
        match self.byte()? {
            0 => visitor.visit_none(),
            1 => {
                self.enter()?;
                let r = visitor.visit_some(&mut *self);
                self.leave();
                r
            }
            _ => Err(Error::Invalid {
                what: "option tag",
                position,
            }),
        }
    }
    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_unit()
    }
    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        visitor.visit_unit()
    }
    #[inline(always)]
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        self.enter()?;
        let r = visitor.visit_newtype_struct(&mut *self);
        self.leave();
        r
    }
    #[inline(always)]
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let len = self.count()?;
        self.seq_of(len, visitor)
    }
    #[inline(always)]
    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value> {
        self.seq_of(len, visitor)
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value> {
        self.seq_of(len, visitor)
    }
    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let len = self.count()?;
        self.enter()?;
        let r = visitor.visit_map(MapAccess {
            de: &mut *self,
            left: len,
        });
        self.leave();
        r
    }
    #[inline(always)]
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        self.seq_of(fields.len(), visitor)
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        self.enter()?;
        let r = visitor.visit_enum(&mut *self);
        self.leave();
        r
    }
    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        // Only enum variants reach here in practice (struct fields are positional):
        // the identifier is the variant index.
        visitor.visit_u32(self.unsigned(varint::MAX_LEN_U32, "variant index")?)
    }
    fn deserialize_ignored_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value> {
        Err(Error::Unsupported(
            "deserialize_ignored_any: Qiss is not self-describing",
        ))
    }
}

struct SeqAccess<'a, 'de> {
    de: &'a mut Deserializer<'de>,
    left: usize,
}

impl<'de> de::SeqAccess<'de> for SeqAccess<'_, 'de> {
    type Error = Error;

    #[inline(always)]
    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.de).map(Some)
    }

    // serde's default forwards to `next_element_seed` but is not marked inline, and
    // derived code calls it once per field: forced inline so that the compiler's
    // inlining budget never turns every field of a struct into a call.
    #[inline(always)]
    fn next_element<T: de::Deserialize<'de>>(&mut self) -> Result<Option<T>> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        T::deserialize(&mut *self.de).map(Some)
    }

    #[inline]
    fn size_hint(&self) -> Option<usize> {
        // Capped by the input so that a lying count cannot make a visitor preallocate.
        Some(self.left.min(self.de.remaining()))
    }
}

struct MapAccess<'a, 'de> {
    de: &'a mut Deserializer<'de>,
    left: usize,
}

impl<'de> de::MapAccess<'de> for MapAccess<'_, 'de> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.de).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value> {
        seed.deserialize(&mut *self.de)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left.min(self.de.remaining()))
    }
}

impl<'de> de::EnumAccess<'de> for &mut Deserializer<'de> {
    type Error = Error;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self)> {
        let index: u32 = self.unsigned(varint::MAX_LEN_U32, "variant index")?;
        let index: de::value::U32Deserializer<Error> = index.into_deserializer();
        let value = seed.deserialize(index)?;
        Ok((value, self))
    }
}

impl<'de> de::VariantAccess<'de> for &mut Deserializer<'de> {
    type Error = Error;

    fn unit_variant(self) -> Result<()> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value> {
        self.seq_of(len, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        self.seq_of(fields.len(), visitor)
    }
}
