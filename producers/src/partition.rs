//! The key/partitioner contract.
//!
//! - The record key is the acting user's id as decimal ASCII (`"42"`).
//! - The partition is Kafka's default for keyed records (Java's `DefaultPartitioner`,
//!   librdkafka's `murmur2_random`): `(murmur2(key) & 0x7fffffff) % partitions`.
//!
//! Any producer that follows both puts a user's events on the same partition as tidings' own
//! producers, so per-user order holds whichever service published.

use tidings_core::UserId;

/// The record key of a user's events.
pub fn key(user: UserId) -> String {
    user.to_string()
}

/// Kafka's murmur2 (the Java client's `Utils.murmur2`), seed 0x9747b28c.
pub fn murmur2(data: &[u8]) -> i32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = 0x9747_b28c ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition of a keyed record among `partitions`.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    assert!(partitions > 0, "a topic has at least one partition");
    ((murmur2(key) as u32 & 0x7fff_ffff) % partitions as u32) as i32
}

/// The partition of a user's events among `partitions`.
pub fn partition_for_user(user: UserId, partitions: i32) -> i32 {
    partition_for_key(key(user).as_bytes(), partitions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_the_java_client() {
        // Vectors from Apache Kafka's UtilsTest.testMurmur2.
        let cases: [(&str, i32); 6] = [
            ("21", -973_932_308),
            ("foobar", -790_332_482),
            ("a-little-bit-long-string", -985_981_536),
            ("a-little-bit-longer-string", -1_486_304_829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            ("abc", 479_470_107),
        ];
        for (s, want) in cases {
            assert_eq!(murmur2(s.as_bytes()), want, "{s}");
        }
    }

    #[test]
    fn a_user_always_lands_on_one_partition() {
        assert_eq!(key(42), "42");
        for p in [1, 8, 12] {
            let part = partition_for_user(42, p);
            assert!((0..p).contains(&part));
            assert_eq!(part, partition_for_key(b"42", p));
        }
    }
}
