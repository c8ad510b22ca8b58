//! Unit tests of [`super`]: round trips, rotation and crypto-shredding, topic binding
//! and forwarding, tampering, garbage headers, the two poll modes, and a seeded
//! property test (any round trip works, any flipped bit fails).

use std::error::Error as _;

use super::*;

const PLAINTEXT: &[u8] = b"card 4111 1111 1111 1111";

fn ring(key_id: &str, algorithm: AeadAlgorithm, fill: u8) -> SharedKeyring {
    SharedKeyring::with_key(key_id, algorithm, &[fill; KEY_BYTES]).unwrap()
}

/// `record` sealed by `ring` as a producer would, then as a consumer gets it back from
/// the broker at `offset`.
fn stored(ring: &SharedKeyring, record: ProducerRecord, offset: u64) -> ConsumerRecord {
    let mut record = record;
    ring.encrypt(&mut record).unwrap();
    as_consumed(record, offset)
}

fn as_consumed(record: ProducerRecord, offset: u64) -> ConsumerRecord {
    ConsumerRecord {
        topic: record.topic,
        partition: 0,
        offset,
        timestamp_ms: record.timestamp_ms.unwrap_or(1),
        key: record.key,
        value: record.value,
        headers: record.headers,
    }
}

fn orders(value: &[u8]) -> ProducerRecord {
    ProducerRecord::new("orders", Bytes::copy_from_slice(value))
        .key("user-1")
        .header("trace", "t-1")
}

fn header_of(record: &ConsumerRecord) -> EncryptionHeader {
    let (_, value) = record
        .headers
        .iter()
        .find(|(n, _)| n == ENCRYPTION_HEADER)
        .unwrap();
    EncryptionHeader::parse(value).unwrap()
}

/// Decrypting must fail and leave the record as it was; the error.
fn refused(ring: &SharedKeyring, record: &ConsumerRecord) -> EncryptionError {
    let mut copy = record.clone();
    let err = ring.decrypt(&mut copy).unwrap_err();
    assert_eq!(&copy, record, "a failed decryption changes nothing");
    err
}

#[test]
fn round_trip_with_both_algorithms() {
    for algorithm in [AeadAlgorithm::Aes256Gcm, AeadAlgorithm::ChaCha20Poly1305] {
        let ring = ring("key-1", algorithm, 7);
        let mut record = stored(&ring, orders(PLAINTEXT), 0);
        assert_eq!(record.value.len(), PLAINTEXT.len() + 16, "ciphertext ‖ tag");
        assert!(!record.value.windows(4).any(|w| w == b"4111"));
        assert_eq!(
            record.key.as_deref(),
            Some(&b"user-1"[..]),
            "keys stay clear"
        );
        let header = header_of(&record);
        assert_eq!(
            (header.algorithm, header.key_id.as_str()),
            (algorithm, "key-1")
        );
        assert!(ring.decrypt(&mut record).unwrap());
        assert_eq!(record.value, PLAINTEXT);
        assert_eq!(
            record.headers,
            vec![("trace".to_string(), Bytes::from_static(b"t-1"))],
            "neo-enc is gone once the value is plaintext"
        );
    }
}

#[test]
fn nonces_are_fresh_per_record() {
    let ring = ring("k", AeadAlgorithm::Aes256Gcm, 1);
    let a = stored(&ring, orders(PLAINTEXT), 0);
    let b = stored(&ring, orders(PLAINTEXT), 1);
    assert_ne!(header_of(&a).nonce, header_of(&b).nonce);
    assert_ne!(a.value, b.value);
}

#[test]
fn rotation_keeps_old_records_readable_and_retiring_shreds_them() {
    let producer_ring = ring("k1", AeadAlgorithm::Aes256Gcm, 1);
    // The consumer's clone shares the ring: the application rotates one of them.
    let consumer_ring = producer_ring.clone();
    let old = stored(&producer_ring, orders(b"old"), 0);
    producer_ring
        .add_key("k2", AeadAlgorithm::ChaCha20Poly1305, &[2; KEY_BYTES])
        .unwrap();
    assert_eq!(consumer_ring.current_key_id().as_deref(), Some("k2"));
    let new = stored(&producer_ring, orders(b"new"), 1);
    assert_eq!(header_of(&new).key_id, "k2");
    for (record, plaintext) in [(&old, &b"old"[..]), (&new, b"new")] {
        let mut copy = record.clone();
        assert!(consumer_ring.decrypt(&mut copy).unwrap());
        assert_eq!(copy.value, plaintext);
    }
    assert!(consumer_ring.retire("k2").is_err(), "the current key stays");
    consumer_ring.retire("k1").unwrap();
    assert_eq!(producer_ring.key_ids(), vec!["k2".to_string()]);
    assert_eq!(
        refused(&consumer_ring, &old),
        EncryptionError::Crypto(CryptoFailure::UnknownKey {
            key_id: "k1".into()
        })
    );
    let mut copy = new.clone();
    assert!(consumer_ring.decrypt(&mut copy).unwrap());
}

#[test]
fn another_topic_does_not_decrypt_unless_the_origin_is_named() {
    let ring = ring("k", AeadAlgorithm::Aes256Gcm, 1);
    let record = stored(&ring, orders(PLAINTEXT), 0);
    let mut moved = record.clone();
    moved.topic = "payments".into();
    assert_eq!(
        refused(&ring, &moved),
        EncryptionError::Crypto(CryptoFailure::DecryptFailed)
    );
    // Dead-lettered with `forward`: the origin travels in neo-enc-topic.
    let forwarded = forward(&record, "orders.dlq");
    assert_eq!(forwarded.topic, "orders.dlq");
    let mut dead = as_consumed(forwarded, 5);
    assert!(ring.decrypt(&mut dead).unwrap());
    assert_eq!(dead.value, PLAINTEXT);
    assert!(
        dead.headers
            .contains(&(ORIGIN_TOPIC_HEADER.into(), Bytes::from_static(b"orders"))),
        "the origin stays visible on the decrypted record"
    );
    // Redriven from the dead-letter topic: the header is not added twice.
    let mut twice = as_consumed(forward(&as_consumed(forward(&record, "a"), 1), "b"), 2);
    let origins = twice
        .headers
        .iter()
        .filter(|(n, _)| n == ORIGIN_TOPIC_HEADER)
        .count();
    assert_eq!(origins, 1);
    assert!(ring.decrypt(&mut twice).unwrap());
    // A lying origin does not help either.
    let mut lying = moved.clone();
    lying
        .headers
        .push((ORIGIN_TOPIC_HEADER.into(), Bytes::from_static(b"payments")));
    assert_eq!(
        refused(&ring, &lying),
        EncryptionError::Crypto(CryptoFailure::DecryptFailed)
    );
    // A plaintext record is forwarded without an origin header.
    let plain = as_consumed(orders(b"x"), 0);
    assert_eq!(forward(&plain, "b").headers, plain.headers);
}

#[test]
fn an_encrypting_producer_binds_the_named_origin() {
    // A plaintext record that names its origin (a decrypted record, redriven) is
    // sealed for that origin, as the consumer will check it.
    let ring = ring("k", AeadAlgorithm::Aes256Gcm, 1);
    let record = orders(b"v").header(ORIGIN_TOPIC_HEADER, "orders");
    let mut record = stored(
        &ring,
        ProducerRecord {
            topic: "retry".into(),
            ..record
        },
        0,
    );
    assert!(ring.decrypt(&mut record).unwrap());
    assert_eq!(record.value, &b"v"[..]);
}

#[test]
fn tampering_is_an_error() {
    let ring = ring("k1", AeadAlgorithm::Aes256Gcm, 1);
    ring.add_key("k2", AeadAlgorithm::Aes256Gcm, &[1; KEY_BYTES])
        .unwrap();
    let record = stored(&ring, orders(PLAINTEXT), 0);
    let failed = EncryptionError::Crypto(CryptoFailure::DecryptFailed);
    let with_value = |value: Vec<u8>| ConsumerRecord {
        value: Bytes::from(value),
        ..record.clone()
    };
    let with_header = |edit: &dyn Fn(&mut EncryptionHeader)| {
        let mut header = header_of(&record);
        edit(&mut header);
        let mut copy = record.clone();
        for (name, value) in &mut copy.headers {
            if name == ENCRYPTION_HEADER {
                *value = Bytes::from(header.to_bytes());
            }
        }
        copy
    };
    let mut flipped = record.value.to_vec();
    flipped[3] ^= 1;
    assert_eq!(refused(&ring, &with_value(flipped)), failed);
    let mut tag = record.value.to_vec();
    *tag.last_mut().unwrap() ^= 0x80;
    assert_eq!(refused(&ring, &with_value(tag)), failed);
    assert_eq!(
        refused(&ring, &with_value(record.value[..15].to_vec())),
        failed
    );
    assert_eq!(refused(&ring, &with_value(Vec::new())), failed);
    assert_eq!(refused(&ring, &with_header(&|h| h.nonce[0] ^= 1)), failed);
    // Relabelled: the other algorithm, or another key the reader holds (same
    // material, even): the id and algorithm are in the associated data.
    let relabelled = with_header(&|h| h.algorithm = AeadAlgorithm::ChaCha20Poly1305);
    assert_eq!(refused(&ring, &relabelled), failed);
    assert_eq!(header_of(&record).key_id, "k2");
    assert_eq!(
        refused(&ring, &with_header(&|h| h.key_id = "k1".into())),
        failed
    );
    // Same id, other material: a reader with the wrong ring.
    let wrong = SharedKeyring::with_key("k2", AeadAlgorithm::Aes256Gcm, &[9; KEY_BYTES]).unwrap();
    assert_eq!(refused(&wrong, &record), failed);
    // No key at all.
    assert_eq!(
        refused(&SharedKeyring::default(), &record),
        EncryptionError::Crypto(CryptoFailure::UnknownKey {
            key_id: "k2".into()
        })
    );
}

#[test]
fn a_record_without_the_header_passes_through() {
    let ring = ring("k", AeadAlgorithm::Aes256Gcm, 1);
    let plain = as_consumed(orders(PLAINTEXT), 0);
    let mut copy = plain.clone();
    assert!(!ring.decrypt(&mut copy).unwrap());
    assert_eq!(copy, plain);
    // An empty ring passes plaintext through too, and cannot seal.
    assert!(!SharedKeyring::default().decrypt(&mut copy).unwrap());
    assert_eq!(
        SharedKeyring::default().encrypt(&mut orders(b"x")),
        Err(EncryptionError::Crypto(CryptoFailure::NoCurrentKey))
    );
}

#[test]
fn an_encrypted_record_is_not_encrypted_again() {
    let ring = ring("k", AeadAlgorithm::Aes256Gcm, 1);
    let mut record = orders(PLAINTEXT);
    ring.encrypt(&mut record).unwrap();
    let once = record.clone();
    ring.encrypt(&mut record).unwrap();
    assert_eq!(record, once);
}

#[test]
fn a_garbage_header_is_a_typed_error() {
    let ring = ring("k", AeadAlgorithm::Aes256Gcm, 1);
    let record = stored(&ring, orders(PLAINTEXT), 0);
    let good = header_of(&record).to_bytes();
    let (enc, origin) = (ENCRYPTION_HEADER, ORIGIN_TOPIC_HEADER);
    let bad = |header, reason| EncryptionError::MalformedHeader { header, reason };
    type Headers<'a> = Vec<(&'a str, Vec<u8>)>;
    let cases: Vec<(Headers, EncryptionError)> = vec![
        (vec![(enc, vec![])], bad(enc, "empty")),
        (vec![(enc, vec![1])], bad(enc, "truncated")),
        (
            vec![(enc, good[..HEADER_FIXED_BYTES].to_vec())],
            bad(enc, "truncated"),
        ),
        (
            vec![(enc, b"AES-256-GCM:k".to_vec())],
            CryptoFailure::UnsupportedVersion { version: b'A' }.into(),
        ),
        (
            vec![(enc, vec![1, 9, 0, 0])],
            CryptoFailure::UnsupportedAlgorithm { algorithm: 9 }.into(),
        ),
        (
            vec![(enc, [&good[..HEADER_FIXED_BYTES], &[0xff]].concat())],
            bad(enc, "key id not UTF-8"),
        ),
        (
            vec![(enc, [&good[..], &[b'x'; 64]].concat())],
            bad(enc, "key id longer than 64 bytes"),
        ),
        (
            vec![(enc, good.clone()), (enc, good.clone())],
            bad(enc, "repeated"),
        ),
        (
            vec![(enc, good.clone()), (origin, vec![])],
            bad(origin, "empty"),
        ),
        (
            vec![
                (enc, good.clone()),
                (origin, b"o".to_vec()),
                (origin, b"o".to_vec()),
            ],
            bad(origin, "repeated"),
        ),
    ];
    for (headers, expected) in cases {
        let garbled = ConsumerRecord {
            headers: headers
                .into_iter()
                .map(|(n, v)| (n.to_string(), Bytes::from(v)))
                .collect(),
            ..record.clone()
        };
        assert_eq!(refused(&ring, &garbled), expected, "{:?}", garbled.headers);
    }
}

#[test]
fn poll_modes_stop_at_or_return_each_failure() {
    let ring = ring("k", AeadAlgorithm::Aes256Gcm, 1);
    let mut bad = stored(&ring, orders(b"2"), 2);
    bad.value = Bytes::from_static(b"not the ciphertext at all");
    let records = vec![
        as_consumed(orders(b"0"), 0),
        stored(&ring, orders(b"1"), 1),
        bad,
        stored(&ring, orders(b"3"), 3),
    ];
    let stop = ring.decrypt_records(records.clone(), DecryptMode::StopAtFailure);
    let values: Vec<Bytes> = stop
        .records
        .iter()
        .map(|r| r.as_ref().unwrap().value.clone())
        .collect();
    assert_eq!(
        values,
        vec![Bytes::from_static(b"0"), Bytes::from_static(b"1")]
    );
    let stopped = stop.stopped.unwrap();
    assert_eq!(stopped.record, records[2], "the record as stored");
    assert_eq!(
        stopped.error,
        EncryptionError::Crypto(CryptoFailure::DecryptFailed)
    );
    let each = ring.decrypt_records(records, DecryptMode::EachRecord);
    assert!(each.stopped.is_none());
    let shape: Vec<Result<u64, u64>> = each
        .records
        .iter()
        .map(|r| r.as_ref().map(|r| r.offset).map_err(|u| u.record.offset))
        .collect();
    assert_eq!(shape, vec![Ok(0), Ok(1), Err(2), Ok(3)]);
    // The per-record error becomes the client's typed error, source kept.
    let err = Error::from(stopped);
    assert!(
        matches!(&err, Error::Decrypt { topic, offset: 2, .. } if topic == "orders"),
        "{err:?}"
    );
    assert!(!err.is_retriable());
    assert!(err.to_string().contains("orders/0@2"), "{err}");
    assert!(err.source().is_some());
}

/// Property: any plaintext, topic and algorithm round-trips; any single flipped
/// bit in the value or the `neo-enc` header is refused, never garbage (seeded, so
/// a failure reproduces).
#[test]
fn any_round_trip_works_and_any_flip_fails() {
    let mut rng = fastrand::Rng::with_seed(0x006e_656f_2d65_6e63);
    for case in 0..500 {
        let algorithm = if rng.bool() {
            AeadAlgorithm::ChaCha20Poly1305
        } else {
            AeadAlgorithm::Aes256Gcm
        };
        let key_id: String = (0..rng.usize(1..=64)).map(|_| rng.alphanumeric()).collect();
        let ring = SharedKeyring::with_key(&key_id, algorithm, &[rng.u8(..); KEY_BYTES]).unwrap();
        let topic: String = (0..rng.usize(1..=40)).map(|_| rng.lowercase()).collect();
        let plaintext: Vec<u8> = (0..rng.usize(0..2048)).map(|_| rng.u8(..)).collect();
        let record = stored(
            &ring,
            ProducerRecord::new(topic, Bytes::from(plaintext.clone())),
            case,
        );
        let mut copy = record.clone();
        assert!(ring.decrypt(&mut copy).unwrap());
        assert_eq!(copy.value, plaintext);
        let mut bad = record.clone();
        let bit = 1u8 << rng.u32(0..8);
        if rng.bool() {
            let mut value = bad.value.to_vec();
            let at = rng.usize(..value.len());
            value[at] ^= bit;
            bad.value = Bytes::from(value);
        } else {
            let (_, header) = bad.headers.last_mut().unwrap();
            let mut bytes = header.to_vec();
            let at = rng.usize(..bytes.len());
            bytes[at] ^= bit;
            *header = Bytes::from(bytes);
        }
        refused(&ring, &bad);
    }
}

#[test]
fn debug_shows_ids_never_material() {
    let ring = ring("visible-id", AeadAlgorithm::Aes256Gcm, 0xab);
    let shown = format!("{ring:?}");
    assert!(shown.contains("visible-id"), "{shown}");
    assert!(!shown.contains("171"), "{shown}");
}
