//! Offsets keyspace: the consumers' own positions, committed with their effects.
//!
//! ```text
//! key:   (p, "off", consumer: string, topic: string, partition: int)
//! value: next offset to consume, i64 LE
//! ```
//!
//! A consumer batch writes its effects and the new offset in one atomic batch, with the
//! precondition that this key still holds the batch's first offset (absent = start of the
//! partition). Kafka's committed offsets are only a lag hint. `consumer` names the projection
//! job (e.g. `fanout`), so a rebuild into another projection keeps its own positions.

use super::{key_in, keyspace, Projection};

/// The offset key of one consumer on one partition.
pub fn key(p: Projection, consumer: &str, topic: &str, partition: i32) -> Vec<u8> {
    key_in(p, "off", &(consumer, topic, partition as i64))
}

/// The range of all offsets of one consumer (every topic and partition).
pub fn consumer_range(p: Projection, consumer: &str) -> (Vec<u8>, Vec<u8>) {
    keyspace(p, "off").subspace(&(consumer,)).range()
}

/// Decodes `(consumer, topic, partition)` from an offset key of projection `p`.
pub fn parse_key(p: Projection, key: &[u8]) -> Option<(String, String, i32)> {
    let (c, t, part): (String, String, i64) = keyspace(p, "off").unpack(key).ok()?;
    Some((c, t, i32::try_from(part).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_bytes_and_parse() {
        let k = key(1, "fanout", "t", 3);
        assert_eq!(
            k,
            [
                &[0x15, 0x01][..],
                b"\x02off\x00",
                b"\x02fanout\x00",
                b"\x02t\x00",
                &[0x15, 0x03]
            ]
            .concat()
        );
        assert_eq!(parse_key(1, &k), Some(("fanout".into(), "t".into(), 3)));
        let (b, e) = consumer_range(1, "fanout");
        assert!(b < k && k < e);
    }
}
