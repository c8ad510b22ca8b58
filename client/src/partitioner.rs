//! Which partition a record goes to.
//!
//! - An explicit partition wins.
//! - A keyed record goes to `(murmur2(key) & 0x7fff_ffff) % partition_count`: Kafka's
//!   murmur2 (seed `0x9747b28c`) and Kafka's "to positive" mask, so a key lands on the
//!   same partition as it would with Kafka's default partitioner, and on the same one
//!   in every release of this crate. **This function is a stable contract**: changing
//!   it would move keys between partitions and break per-key ordering.
//! - A record without a key goes round robin (one counter per producer).

use std::sync::atomic::{AtomicU32, Ordering};

/// Kafka's 32-bit murmur2 of `data` (seed `0x9747b28c`), as a signed value the way
/// Kafka's `Utils.murmur2` returns it.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let length = data.len();
    let mut h: u32 = SEED ^ (length as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition of a keyed record: `(murmur2(key) & 0x7fff_ffff) % partition_count`.
/// `partition_count` must be at least 1.
pub fn partition_for_key(key: &[u8], partition_count: u32) -> u32 {
    debug_assert!(partition_count > 0);
    ((murmur2(key) as u32) & 0x7fff_ffff) % partition_count.max(1)
}

/// Picks partitions: explicit, by key, or round robin.
#[derive(Debug, Default)]
pub(crate) struct Partitioner {
    round_robin: AtomicU32,
}

impl Partitioner {
    /// The partition for a record; `None` if `explicit` is out of range.
    pub(crate) fn choose(
        &self,
        explicit: Option<u32>,
        key: Option<&[u8]>,
        partition_count: u32,
    ) -> Option<u32> {
        if partition_count == 0 {
            return None;
        }
        match (explicit, key) {
            (Some(p), _) => (p < partition_count).then_some(p),
            (None, Some(key)) => Some(partition_for_key(key, partition_count)),
            (None, None) => {
                Some(self.round_robin.fetch_add(1, Ordering::Relaxed) % partition_count)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka() {
        // Kafka's own test vectors (UtilsTest.testMurmur2): keys hash the same here as
        // in Kafka's default partitioner.
        let cases: &[(&[u8], i32)] = &[
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (key, want) in cases {
            assert_eq!(murmur2(key), *want, "{}", String::from_utf8_lossy(key));
        }
    }

    #[test]
    fn key_partitions_are_stable() {
        // Pinned values: if this fails, keys moved partitions (a breaking change).
        assert_eq!(
            partition_for_key(b"foobar", 3),
            (-790_332_482i32 as u32 & 0x7fff_ffff) % 3
        );
        let pinned: Vec<u32> = ["a", "b", "c", "user-1", "user-2", ""]
            .iter()
            .map(|k| partition_for_key(k.as_bytes(), 12))
            .collect();
        assert_eq!(pinned, vec![4, 8, 10, 8, 8, 9]);
        assert!(pinned.iter().all(|p| *p < 12));
    }

    #[test]
    fn keys_spread_over_partitions() {
        let mut counts = [0u32; 8];
        for i in 0..8000 {
            counts[partition_for_key(format!("key-{i}").as_bytes(), 8) as usize] += 1;
        }
        assert!(counts.iter().all(|c| (700..1300).contains(c)), "{counts:?}");
    }

    #[test]
    fn choose_explicit_key_round_robin() {
        let p = Partitioner::default();
        assert_eq!(p.choose(Some(2), Some(b"k"), 3), Some(2));
        assert_eq!(p.choose(Some(3), None, 3), None);
        assert_eq!(
            p.choose(None, Some(b"foobar"), 3),
            Some(partition_for_key(b"foobar", 3))
        );
        let rr: Vec<u32> = (0..6).map(|_| p.choose(None, None, 3).unwrap()).collect();
        assert_eq!(rr, vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(p.choose(None, None, 0), None);
    }
}
