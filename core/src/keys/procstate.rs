//! Processor-state keyspace: what the stateful processors of the chain remember.
//!
//! ```text
//! (p, "prc", processor_id, "cur")                          → tuple (kind, bucket_ms, bucket)
//! (p, "prc", processor_id, bucket, event_id)               → dedupe: tuple (topic, partition, offset)
//! (p, "prc", processor_id, bucket, actor, event_id)        → rate_limit: empty (an admitted event)
//! ```
//!
//! `processor_id` is the `id` of a `[[pipeline.processor]]`; `bucket` is `log_time_ms /
//! bucket_ms` (the record timestamp, else the event time: never the wall clock, so a replay
//! decides the same). State is written in the same atomic batch as the event's effects and the
//! consumer's offsets, so a decision is made exactly once across crashes, and a rebuild (which
//! writes its own projection, hence its own `prc`) makes the same decisions.
//!
//! **Bounded.** The `"cur"` key holds the newest bucket a processor has seen. When an event
//! moves it forward, the processor clears every bucket older than the previous one with one
//! range clear (once per bucket change, not per event): a dedupe processor keeps at most two
//! windows of event ids, a rate limiter two windows of admitted events per actor. When the
//! `"cur"` key names another kind or bucket size (the processor's config changed under the
//! same id) its whole state is cleared and starts afresh.
//!
//! **Idempotent under replay.** A dedupe entry records where the event was first seen; the same
//! record applied again (a restore replaying the log over a backup) is recognised as itself,
//! not as a duplicate. A rate-limit entry is per admitted event, so a replayed admitted event
//! finds itself and is admitted again, and the count never includes an event twice.
//!
//! Strings sort before integers in the tuple layer, so `"cur"` sorts before every bucket and a
//! clear of old buckets (`(id, i64::MIN) .. (id, bucket)`) never touches it.

use foundationdb_tuple::{pack, unpack, Subspace};

use super::{keyspace, Projection};
use crate::event::{EventId, UserId};
use crate::write::Mutation;

/// The subspace of one processor's state.
pub fn processor(p: Projection, id: &str) -> Subspace {
    keyspace(p, "prc").subspace(&(id,))
}

/// The key of a processor's newest bucket.
pub fn cursor(p: Projection, id: &str) -> Vec<u8> {
    processor(p, id).pack(&("cur",))
}

/// Encodes the value of [`cursor`].
pub fn encode_cursor(kind: &str, bucket_ms: i64, bucket: i64) -> Vec<u8> {
    pack(&(kind, bucket_ms, bucket))
}

/// Decodes the value of [`cursor`]: `(kind, bucket_ms, bucket)`.
pub fn decode_cursor(v: &[u8]) -> Option<(String, i64, i64)> {
    unpack(v).ok()
}

/// A dedupe processor's record of event `id` in `bucket`.
pub fn seen(p: Projection, id: &str, bucket: i64, event: EventId) -> Vec<u8> {
    processor(p, id).pack(&(bucket, event.0))
}

/// Encodes where an event was first seen (the value of [`seen`]).
pub fn encode_origin(topic: &str, partition: i32, offset: i64) -> Vec<u8> {
    pack(&(topic, partition as i64, offset))
}

/// A rate limiter's record of an admitted event of `actor` in `bucket`.
pub fn admitted(p: Projection, id: &str, bucket: i64, actor: UserId, event: EventId) -> Vec<u8> {
    processor(p, id).pack(&(bucket, actor, event.0))
}

/// `(begin, end)` of the events of `actor` a rate limiter admitted in `bucket`.
pub fn admitted_range(p: Projection, id: &str, bucket: i64, actor: UserId) -> (Vec<u8>, Vec<u8>) {
    processor(p, id).subspace(&(bucket, actor)).range()
}

/// Clears every bucket of a processor older than `bucket` (the cursor stays).
pub fn clear_before(p: Projection, id: &str, bucket: i64) -> Mutation {
    let s = processor(p, id);
    Mutation::ClearRange {
        begin: s.pack(&(i64::MIN,)),
        end: s.pack(&(bucket,)),
    }
}

/// Clears a processor's whole state, cursor included.
pub fn clear_all(p: Projection, id: &str) -> Mutation {
    let (begin, end) = processor(p, id).range();
    Mutation::ClearRange { begin, end }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_bytes() {
        assert_eq!(cursor(1, "d"), b"\x15\x01\x02prc\x00\x02d\x00\x02cur\x00");
        let mut want = b"\x15\x01\x02prc\x00\x02d\x00\x15\x07\x30".to_vec();
        want.extend_from_slice(&[9; 16]);
        assert_eq!(seen(1, "d", 7, EventId::from_bytes([9; 16])), want);
        let mut want = b"\x15\x01\x02prc\x00\x02r\x00\x15\x07\x15\x05\x30".to_vec();
        want.extend_from_slice(&[9; 16]);
        assert_eq!(admitted(1, "r", 7, 5, EventId::from_bytes([9; 16])), want);
        assert_eq!(
            decode_cursor(&encode_cursor("dedupe", 60_000, 3)),
            Some(("dedupe".to_string(), 60_000, 3))
        );
    }

    #[test]
    fn clearing_old_buckets_keeps_the_cursor_and_newer_buckets() {
        let Mutation::ClearRange { begin, end } = clear_before(1, "d", 7) else {
            panic!("a range clear")
        };
        let inside = |k: &[u8]| begin.as_slice() <= k && k < end.as_slice();
        let e = EventId::from_bytes([1; 16]);
        assert!(inside(&seen(1, "d", 6, e)));
        assert!(inside(&seen(1, "d", -3, e)));
        assert!(!inside(&seen(1, "d", 7, e)));
        assert!(!inside(&cursor(1, "d")));
        assert!(!inside(&seen(1, "e", 6, e)), "another processor's state");
        let (b, e2) = admitted_range(1, "r", 7, 5);
        let k = admitted(1, "r", 7, 5, e);
        assert!(b < k && k < e2);
        assert!(admitted(1, "r", 7, 6, e) > e2);
    }
}
