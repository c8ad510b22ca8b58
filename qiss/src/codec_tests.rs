//! Tests of the value codec: exact bytes, every data model type, borrowing, hostile
//! input, and property-based round trips.

use std::borrow::Cow;
use std::collections::BTreeMap;

use proptest::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{Error, Limits, from_slice, from_slice_with, serialized_size, to_vec, to_writer};

fn rt<T>(v: &T) -> Vec<u8>
where
    T: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug,
{
    let bytes = to_vec(v).unwrap();
    assert_eq!(serialized_size(v).unwrap(), bytes.len() as u64);
    let mut w = Vec::new();
    to_writer(&mut w, v).unwrap();
    assert_eq!(w, bytes);
    let back: T = from_slice(&bytes).unwrap();
    assert_eq!(&back, v);
    bytes
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Unit;

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Newtype(u32);

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct TupleStruct(i8, String, Option<bool>);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum E {
    A,
    B(i64),
    C(u8, String),
    D { x: f64, y: Vec<u16> },
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Everything {
    b: bool,
    i8: i8,
    i16: i16,
    i32: i32,
    i64: i64,
    i128: i128,
    u8: u8,
    u16: u16,
    u32: u32,
    u64: u64,
    u128: u128,
    f32: f32,
    f64: f64,
    c: char,
    s: String,
    #[serde(with = "serde_bytes")]
    bytes: Vec<u8>,
    opt: Option<Box<Everything>>,
    unit: (),
    unit_struct: Unit,
    newtype: Newtype,
    tuple: (u8, i32, String),
    tuple_struct: TupleStruct,
    seq: Vec<E>,
    map: BTreeMap<String, Vec<u8>>,
}

fn everything() -> Everything {
    Everything {
        b: true,
        i8: -5,
        i16: i16::MIN,
        i32: -70000,
        i64: i64::MAX,
        i128: i128::MIN,
        u8: 255,
        u16: u16::MAX,
        u32: 300,
        u64: u64::MAX,
        u128: u128::MAX,
        f32: 1.5,
        f64: -0.25,
        c: '\u{1F600}',
        s: "héllo".into(),
        bytes: vec![0, 1, 2, 255],
        opt: Some(Box::new(Everything {
            opt: None,
            seq: vec![],
            map: BTreeMap::new(),
            ..everything_leaf()
        })),
        unit: (),
        unit_struct: Unit,
        newtype: Newtype(7),
        tuple: (1, -1, "t".into()),
        tuple_struct: TupleStruct(-128, String::new(), Some(false)),
        seq: vec![
            E::A,
            E::B(-3),
            E::C(9, "c".into()),
            E::D {
                x: f64::INFINITY,
                y: vec![1, 2, 65535],
            },
        ],
        map: [("k".to_string(), vec![1u8]), ("".to_string(), vec![])]
            .into_iter()
            .collect(),
    }
}

fn everything_leaf() -> Everything {
    Everything {
        b: false,
        i8: 0,
        i16: 0,
        i32: 0,
        i64: 0,
        i128: 0,
        u8: 0,
        u16: 0,
        u32: 0,
        u64: 0,
        u128: 0,
        f32: 0.0,
        f64: 0.0,
        c: 'a',
        s: String::new(),
        bytes: vec![],
        opt: None,
        unit: (),
        unit_struct: Unit,
        newtype: Newtype(0),
        tuple: (0, 0, String::new()),
        tuple_struct: TupleStruct(0, String::new(), None),
        seq: vec![],
        map: BTreeMap::new(),
    }
}

#[test]
fn every_data_model_type_round_trips() {
    rt(&everything());
    rt(&everything_leaf());
}

#[test]
fn exact_bytes() {
    assert_eq!(rt(&0u64), [0x00]);
    assert_eq!(rt(&300u32), [0xac, 0x02]);
    assert_eq!(rt(&-1i32), [0x01]);
    assert_eq!(rt(&1i64), [0x02]);
    assert_eq!(rt(&200u8), [200]);
    assert_eq!(rt(&-2i8), [0xfe]);
    assert_eq!(rt(&true), [1]);
    assert_eq!(rt(&"hi".to_string()), [2, b'h', b'i']);
    assert_eq!(rt(&Some(5u16)), [1, 5]);
    assert_eq!(rt(&None::<u16>), [0]);
    assert_eq!(rt(&vec![1u32, 2]), [2, 1, 2]);
    assert_eq!(rt(&(1u8, 2u8)), [1, 2]);
    assert_eq!(rt(&E::A), [0]);
    assert_eq!(rt(&E::B(-1)), [1, 1]);
    assert_eq!(rt(&E::C(3, "x".into())), [2, 3, 1, b'x']);
    assert_eq!(rt(&E::D { x: 1.0, y: vec![] }), {
        let mut v = vec![3];
        v.extend_from_slice(&1.0f64.to_le_bytes());
        v.push(0);
        v
    });
    assert_eq!(rt(&1.0f32), 1.0f32.to_le_bytes());
    assert_eq!(rt(&'A'), [0x41]);
    assert_eq!(rt(&()), [] as [u8; 0]);
    assert_eq!(rt(&u128::MAX).len(), 19);
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Borrowed<'a> {
    s: &'a str,
    #[serde(with = "serde_bytes")]
    b: &'a [u8],
    #[serde(borrow)]
    c: Cow<'a, str>,
    #[serde(borrow)]
    list: Vec<&'a str>,
}

#[test]
fn borrowed_views_point_into_the_input() {
    let v = Borrowed {
        s: "abc",
        b: b"\x00\x01",
        c: Cow::Borrowed("cow"),
        list: vec!["x", "yz"],
    };
    let bytes = to_vec(&v).unwrap();
    let back: Borrowed<'_> = from_slice(&bytes).unwrap();
    assert_eq!(back, v);
    let range = bytes.as_ptr_range();
    assert!(range.contains(&back.s.as_ptr()));
    assert!(range.contains(&back.b.as_ptr()));
    assert!(matches!(back.c, Cow::Borrowed(_)));
    assert!(range.contains(&back.c.as_ptr()));
    assert!(range.contains(&back.list[1].as_ptr()));
}

#[test]
fn trailing_bytes_are_rejected() {
    assert_eq!(
        from_slice::<u8>(&[1, 2]),
        Err(Error::TrailingBytes { remaining: 1 })
    );
    let (v, rest) = crate::take_from_slice::<u8>(&[1, 2], &Limits::DEFAULT).unwrap();
    assert_eq!((v, rest), (1, &[2u8][..]));
}

#[test]
fn invalid_scalars() {
    assert!(matches!(
        from_slice::<bool>(&[2]),
        Err(Error::Invalid { what: "bool", .. })
    ));
    assert!(matches!(
        from_slice::<Option<u8>>(&[2, 0]),
        Err(Error::Invalid {
            what: "option tag",
            ..
        })
    ));
    // 0xD800 is a surrogate: not a char.
    let bytes = to_vec(&0xD800u32).unwrap();
    assert!(matches!(
        from_slice::<char>(&bytes),
        Err(Error::Invalid { what: "char", .. })
    ));
    let bytes = to_vec(&70000u32).unwrap();
    assert!(matches!(
        from_slice::<u16>(&bytes),
        Err(Error::Invalid { what: "u16", .. })
    ));
    assert!(matches!(
        from_slice::<String>(&[2, 0xff, 0xfe]),
        Err(Error::Utf8 { position: 0 })
    ));
    // Unknown enum variant index.
    assert!(matches!(from_slice::<E>(&[9]), Err(Error::Custom(_))));
}

#[test]
fn hostile_lengths_fail_without_allocating() {
    // 2^60 as a varint.
    let mut huge = Vec::new();
    crate::varint::push_u64(&mut huge, 1 << 60);
    assert!(matches!(
        from_slice::<Vec<u64>>(&huge),
        Err(Error::LengthLimit { .. })
    ));
    assert!(matches!(
        from_slice::<String>(&huge),
        Err(Error::LengthLimit { .. })
    ));
    assert!(matches!(
        from_slice::<BTreeMap<u8, u8>>(&huge),
        Err(Error::LengthLimit { .. })
    ));
    // A count under the limit but far beyond the input: serde preallocates from our
    // size hint, which is capped by the remaining bytes, so this fails on reading.
    let mut lying = Vec::new();
    crate::varint::push_u64(&mut lying, 60_000_000);
    lying.extend_from_slice(&[1, 2, 3]);
    assert!(matches!(
        from_slice::<Vec<u64>>(&lying),
        Err(Error::UnexpectedEof { .. })
    ));
    // A byte length beyond the input.
    assert!(matches!(
        from_slice::<&[u8]>(&[5, 1, 2]),
        Err(Error::LengthLimit {
            position: 0,
            len: 5,
            limit: 2
        })
    ));
    // A configured limit.
    let limits = Limits {
        length_max: 3,
        ..Limits::DEFAULT
    };
    let bytes = to_vec("abcd").unwrap();
    assert!(matches!(
        from_slice_with::<&str>(&bytes, &limits),
        Err(Error::LengthLimit { limit: 3, .. })
    ));
    // Zero-sized elements are fine up to the limit.
    let units = vec![(); 1000];
    assert_eq!(rt(&units).len(), 2);
}

#[test]
fn nesting_is_bounded() {
    // Option<Option<...>> nested deeper than the limit: 200 Some tags.
    let bytes = vec![1u8; 200];
    type Deep = Option<Box<Deep2>>;
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Deep2(Deep);
    let r = from_slice::<Deep>(&bytes);
    assert!(matches!(r, Err(Error::DepthLimit { limit: 128 })), "{r:?}");
    let limits = Limits {
        depth_max: 2,
        ..Limits::DEFAULT
    };
    assert!(from_slice_with::<Vec<Vec<u8>>>(&[1, 1, 0], &limits).is_ok());
    assert!(matches!(
        from_slice_with::<Vec<Vec<Vec<u8>>>>(&[1, 1, 1, 0], &limits),
        Err(Error::DepthLimit { limit: 2 })
    ));
}

#[test]
fn to_vec_reserves_enough_up_front() {
    use crate::ser::{FIRST_CAPACITY, capacity_for};
    #[derive(Serialize)]
    struct Big<'a> {
        id: u64,
        timestamp: i64,
        names: Vec<String>,
        #[serde(with = "serde_bytes")]
        payload: &'a [u8],
        ratio: f64,
    }
    for len in [0, 1, 100, 255, 256, 1024, 5000, 70_000] {
        let payload = vec![7u8; len];
        let v = Big {
            id: u64::MAX,
            timestamp: i64::MIN,
            names: vec!["trace-id".into(), "é".repeat(40)],
            payload: &payload,
            ratio: 0.5,
        };
        let bytes = to_vec(&v).unwrap();
        // Strings and bytes counted exactly, every varint at its longest: an upper
        // bound when the integers are few, so the payload never makes `to_vec` grow.
        let cap = capacity_for(&v);
        assert!(cap >= bytes.len(), "{len}: {cap} < {}", bytes.len());
        assert!(cap <= bytes.len() + 7 * 10, "{len}: {cap} too generous");
    }
    // Integer-heavy values get a quarter of their bound (at least the first buffer)
    // and grow from there; the encoding is the same either way.
    let many: Vec<u64> = (0..10_000).collect();
    let cap = capacity_for(&many);
    assert_eq!(cap, (10 + 10_000 * 10) / 4);
    assert_eq!(
        to_vec(&many).unwrap().len() as u64,
        serialized_size(&many).unwrap()
    );
    assert_eq!(capacity_for(&[1u64, 2, 3][..]), 40);
    // A value the serializer refuses gets the default, and the real pass reports it.
    struct Refuses;
    impl Serialize for Refuses {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq((0..3).filter(|_| true))
        }
    }
    assert_eq!(capacity_for(&Refuses), FIRST_CAPACITY);
}

#[test]
fn unsupported_shapes() {
    assert!(matches!(
        from_slice::<serde::de::IgnoredAny>(&[0]),
        Err(Error::Unsupported(_))
    ));
    struct Unsized;
    impl Serialize for Unsized {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq((0..3).filter(|_| true))
        }
    }
    assert!(matches!(to_vec(&Unsized), Err(Error::Unsupported(_))));
    #[derive(Serialize)]
    struct Skips {
        #[serde(skip_serializing_if = "Option::is_none")]
        a: Option<u8>,
    }
    assert!(matches!(
        to_vec(&Skips { a: None }),
        Err(Error::Unsupported(_))
    ));
}

#[test]
fn writer_errors_are_typed() {
    struct Full;
    impl std::io::Write for Full {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("disk full"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    assert!(matches!(to_writer(Full, &1u8), Err(Error::Io(_))));
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = to_vec(&everything()).unwrap();
    for n in 0..bytes.len() {
        let r = from_slice::<Everything>(&bytes[..n]);
        assert!(r.is_err(), "prefix of {n} bytes decoded");
    }
}

// ---- property tests -------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Tree {
    Leaf(i64),
    Named { name: String, weight: Option<f64> },
    Node(Vec<Tree>),
    Map(BTreeMap<u32, Tree>),
    Empty,
}

fn tree() -> impl Strategy<Value = Tree> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(Tree::Leaf),
        (
            ".{0,8}",
            any::<Option<f64>>().prop_filter("NaN != NaN", |w| !w.is_some_and(f64::is_nan))
        )
            .prop_map(|(name, weight)| Tree::Named { name, weight }),
        Just(Tree::Empty),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Tree::Node),
            prop::collection::btree_map(any::<u32>(), inner, 0..4).prop_map(Tree::Map),
        ]
    })
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Mixed {
    a: u128,
    b: i128,
    c: (u16, i16, char),
    d: Option<Vec<u32>>,
    #[serde(with = "serde_bytes")]
    e: Vec<u8>,
    f: Tree,
}

fn mixed() -> impl Strategy<Value = Mixed> {
    (
        any::<u128>(),
        any::<i128>(),
        any::<(u16, i16, char)>(),
        any::<Option<Vec<u32>>>(),
        prop::collection::vec(any::<u8>(), 0..40),
        tree(),
    )
        .prop_map(|(a, b, c, d, e, f)| Mixed { a, b, c, d, e, f })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn prop_round_trip(v in mixed()) {
        let bytes = to_vec(&v).unwrap();
        prop_assert_eq!(serialized_size(&v).unwrap(), bytes.len() as u64);
        let back: Mixed = from_slice(&bytes).unwrap();
        prop_assert_eq!(&back, &v);
        // Strict varints: decoding then encoding gives the same bytes.
        prop_assert_eq!(to_vec(&back).unwrap(), bytes.clone());
        // Every proper prefix fails, and no prefix panics.
        for n in 0..bytes.len() {
            prop_assert!(from_slice::<Mixed>(&bytes[..n]).is_err());
        }
    }

    #[test]
    fn prop_borrowed_round_trip(
        strs in prop::collection::vec(".{0,12}", 0..6),
        blobs in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..16), 0..6),
    ) {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct B<'a> {
            #[serde(borrow)]
            strs: Vec<&'a str>,
            #[serde(borrow)]
            blobs: Vec<&'a serde_bytes::Bytes>,
        }
        let v = B {
            strs: strs.iter().map(String::as_str).collect(),
            blobs: blobs.iter().map(|b| serde_bytes::Bytes::new(b)).collect(),
        };
        let bytes = to_vec(&v).unwrap();
        let back: B<'_> = from_slice(&bytes).unwrap();
        prop_assert_eq!(back, v);
    }

    #[test]
    fn prop_random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = from_slice::<Mixed>(&bytes);
        let _ = from_slice::<Tree>(&bytes);
        let _ = from_slice::<Vec<String>>(&bytes);
        let _ = from_slice::<(u128, i128, char, f32)>(&bytes);
    }
}

/// The worked example of docs/qiss.md, byte for byte.
#[test]
fn spec_example() {
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Kind {
        A,
        B(u16),
    }
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Example {
        id: u64,
        name: String,
        tags: Vec<i32>,
        kind: Option<Kind>,
    }
    let v = Example {
        id: 300,
        name: "neo".into(),
        tags: vec![-1, 2],
        kind: Some(Kind::B(7)),
    };
    assert_eq!(
        rt(&v),
        [
            0xac, 0x02, 0x03, 0x6e, 0x65, 0x6f, 0x02, 0x01, 0x04, 0x01, 0x01, 0x07
        ]
    );
    let _ = Kind::A;
}
