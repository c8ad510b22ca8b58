//! Arbitrary bytes into several shapes of value: decoding must return, never panic,
//! and whatever decodes must re-encode to the same bytes (or, with maps, to an equal
//! value).
#![no_main]

use std::borrow::Cow;
use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Node<'a> {
    Leaf(i64),
    Text(#[serde(borrow)] Cow<'a, str>),
    Blob(#[serde(with = "serde_bytes")] &'a [u8]),
    List(#[serde(borrow)] Vec<Node<'a>>),
    Map(#[serde(borrow)] BTreeMap<u32, Node<'a>>),
    Pair {
        a: Option<Box<Node<'a>>>,
        b: (u128, i128, char, bool),
    },
}

/// The owned twin of `Node`, for the re-encode check.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Tree {
    Leaf(i64),
    Text(String),
    Blob(serde_bytes::ByteBuf),
    List(Vec<Tree>),
    Map(BTreeMap<u32, Tree>),
    Pair {
        a: Option<Box<Tree>>,
        b: (u128, i128, char, bool),
    },
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Msg<'a> {
    id: u64,
    ts: i64,
    #[serde(with = "serde_bytes")]
    key: &'a [u8],
    headers: Vec<(&'a str, &'a str)>,
    small: (u8, i8, u16, i16, u32, i32),
    f: (f32, f64),
}

/// For types without maps: decode then encode gives back the same bytes (strict varints
/// make the encoding canonical).
fn check_canonical<'a, T>(data: &'a [u8])
where
    T: Deserialize<'a> + Serialize,
{
    if let Ok(v) = qiss::from_slice::<T>(data) {
        let again = qiss::to_vec(&v).expect("a decoded value encodes");
        assert_eq!(again, data, "decode then encode must give the same bytes");
    }
}

/// For types with maps (duplicate or unsorted keys collapse in a `BTreeMap`, so bytes
/// need not come back the same): the re-encoded value decodes to an equal value.
fn check_stable<T>(data: &[u8])
where
    T: for<'a> Deserialize<'a> + Serialize + PartialEq + std::fmt::Debug,
{
    if let Ok(v) = qiss::from_slice::<T>(data) {
        let again = qiss::to_vec(&v).expect("a decoded value encodes");
        let back: T = qiss::from_slice(&again).expect("re-encoded value decodes");
        assert_eq!(back, v);
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = qiss::from_slice::<Node<'_>>(data);
    check_stable::<Tree>(data);
    check_canonical::<Msg<'_>>(data);
    check_canonical::<Vec<String>>(data);
    let limits = qiss::Limits {
        length_max: 64,
        depth_max: 8,
    };
    let _ = qiss::from_slice_with::<Node<'_>>(data, &limits);
});
