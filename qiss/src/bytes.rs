//! Zero-copy `bytes::Bytes` fields: `#[serde(with = "qiss::bytes")]`.
//!
//! Serialized as a Qiss byte string (length prefix + bytes), the same bytes as
//! `serde_bytes` writes, so switching a field from `Vec<u8>` to `Bytes` does not change
//! the wire format.
//!
//! Decoding with [`crate::from_bytes`] makes the field a reference-counted slice of the
//! input `Bytes` ([`Bytes::slice_ref`]): no copy, however large the field. Decoding from
//! a plain slice ([`crate::from_slice`]) or with another serde format copies it into a
//! new `Bytes`, as a `Vec<u8>` field would.
//!
//! How the field finds the input `Bytes`: serde hands a visitor only a `&[u8]`, so
//! [`crate::from_bytes`] publishes its input in a thread-local for the duration of the
//! call (restored on return, so nested calls work), and the visitor slices it when the
//! `&[u8]` lies inside it. Decoding is synchronous, so the value cannot be seen by a
//! decode that runs on another thread or after the call.

use std::cell::RefCell;

use bytes::Bytes;
use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};

thread_local! {
    /// The input of the innermost [`crate::from_bytes`] running on this thread.
    static SOURCE: RefCell<Option<Bytes>> = const { RefCell::new(None) };
}

/// Publishes `source` as this thread's decode input until the guard drops (which puts
/// back whatever an outer call had published).
pub(crate) fn publish(source: &Bytes) -> SourceGuard {
    let previous = SOURCE.with(|s| s.replace(Some(source.clone())));
    SourceGuard { previous }
}

/// Restores the outer decode input on drop (also when decoding unwinds).
pub(crate) struct SourceGuard {
    previous: Option<Bytes>,
}

impl Drop for SourceGuard {
    fn drop(&mut self) {
        let previous = self.previous.take();
        SOURCE.with(|s| *s.borrow_mut() = previous);
    }
}

/// `slice` as a shared slice of the published input if it lies inside it, else a copy.
fn share_or_copy(slice: &[u8]) -> Bytes {
    SOURCE.with(|s| match s.borrow().as_ref() {
        Some(source) if contains(source, slice) => source.slice_ref(slice),
        _ => Bytes::copy_from_slice(slice),
    })
}

/// Whether `inner`'s memory lies within `outer`'s (what `Bytes::slice_ref` requires; it
/// panics otherwise, so this is checked first).
fn contains(outer: &[u8], inner: &[u8]) -> bool {
    let start = outer.as_ptr() as usize;
    let end = start + outer.len();
    let at = inner.as_ptr() as usize;
    !inner.is_empty() && at >= start && at + inner.len() <= end
}

/// Writes `bytes` as a byte string.
pub fn serialize<S: Serializer>(bytes: &Bytes, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_bytes(bytes)
}

/// Reads a byte string as a slice of the [`crate::from_bytes`] input (or a copy).
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Bytes, D::Error> {
    deserializer.deserialize_byte_buf(BytesVisitor)
}

struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Bytes;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<Bytes, E> {
        Ok(share_or_copy(v))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
        Ok(Bytes::copy_from_slice(v))
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
        Ok(Bytes::from(v))
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Carrier {
        name: String,
        #[serde(with = "crate::bytes")]
        body: Bytes,
        #[serde(with = "serde_bytes")]
        plain: Vec<u8>,
    }

    fn carrier() -> Carrier {
        Carrier {
            name: "t".into(),
            body: Bytes::from((0..=255u8).collect::<Vec<_>>()),
            plain: vec![1, 2, 3],
        }
    }

    fn inside(outer: &Bytes, inner: &Bytes) -> bool {
        let start = outer.as_ptr() as usize;
        let at = inner.as_ptr() as usize;
        at >= start && at + inner.len() <= start + outer.len()
    }

    #[test]
    fn from_bytes_shares_the_input() {
        let wire = Bytes::from(crate::to_vec(&carrier()).unwrap());
        let back: Carrier = crate::from_bytes(&wire).unwrap();
        assert_eq!(back, carrier());
        assert!(
            inside(&wire, &back.body),
            "the field is a slice of the input"
        );
    }

    #[test]
    fn from_slice_copies_and_the_wire_format_is_serde_bytes() {
        #[derive(Serialize)]
        struct AsVec {
            name: String,
            #[serde(with = "serde_bytes")]
            body: Vec<u8>,
            #[serde(with = "serde_bytes")]
            plain: Vec<u8>,
        }
        let c = carrier();
        let wire = crate::to_vec(&c).unwrap();
        let same = crate::to_vec(&AsVec {
            name: c.name.clone(),
            body: c.body.to_vec(),
            plain: c.plain.clone(),
        })
        .unwrap();
        assert_eq!(wire, same);
        let back: Carrier = crate::from_slice(&wire).unwrap();
        assert_eq!(back, c);
        // No input `Bytes` is published here: the field is a copy.
        let wire = Bytes::from(wire);
        assert!(!inside(&wire, &back.body));
    }

    #[test]
    fn a_nested_from_bytes_restores_the_outer_input() {
        let outer = Bytes::from(crate::to_vec(&carrier()).unwrap());
        let guard = super::publish(&outer);
        let inner = Bytes::from(crate::to_vec(&carrier()).unwrap());
        let from_inner: Carrier = crate::from_bytes(&inner).unwrap();
        assert!(inside(&inner, &from_inner.body));
        // Back to the outer input: a slice of it is shared again.
        let shared = super::share_or_copy(&outer[3..10]);
        assert!(inside(&outer, &shared));
        drop(guard);
        assert!(!inside(&outer, &super::share_or_copy(&outer[3..10])));
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        let wire = Bytes::from(crate::to_vec(&carrier()).unwrap());
        for cut in 0..wire.len() {
            assert!(crate::from_bytes::<Carrier>(&wire.slice(..cut)).is_err());
        }
    }
}
