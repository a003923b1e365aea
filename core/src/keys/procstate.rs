//! Processor-state keyspace: what the stateful processors of the chain remember.
//!
//! ```text
//! (p, "prc", processor_id, topic, partition, "cur")                     → tuple (kind, bucket_ms, bucket)
//! (p, "prc", processor_id, topic, partition, bucket, event_id)          → dedupe: tuple (topic, partition, offset)
//! (p, "prc", processor_id, topic, partition, bucket, actor, event_id)   → rate_limit: empty (an admitted event)
//! ```
//!
//! `processor_id` is the `id` of a `[[pipeline.processor]]`; `bucket` is `log_time_ms /
//! bucket_ms` (the record timestamp, else the event time: never the wall clock, so a replay
//! decides the same). State is written in the same atomic batch as the event's effects and the
//! consumer's offsets, so a decision is made exactly once across crashes, and a rebuild (which
//! writes its own projection, hence its own `prc`) makes the same decisions.
//!
//! **Per source partition.** State is kept per processor *and* per `(topic, partition)` the
//! event came from ([`scope`]). Everything a processor compares lives in one partition — an
//! actor's events, and every copy of an event id, are keyed by the actor (the producer
//! contract) — so live consumers applying partitions in any interleaving and a rebuild applying
//! them in merge order make the same decisions, and one partition's clock (its log times) never
//! clears another's state.
//!
//! **Bounded.** The `"cur"` key holds the newest bucket seen in the scope. When an event moves
//! it forward, the processor clears every bucket older than the previous one with one range
//! clear (once per bucket change, not per event): a dedupe processor keeps at most two windows
//! of event ids, a rate limiter two windows of admitted events per actor. An event older than
//! the kept buckets is judged in the oldest kept one (late, not exempt), so nothing is written
//! below them. When the `"cur"` key names another kind or bucket size (the processor's config
//! changed under the same id) the scope's state is cleared and starts afresh.
//!
//! **Idempotent under replay.** A dedupe entry records where the event was first seen; the same
//! record applied again (a restore replaying the log over a backup) is recognised as itself,
//! not as a duplicate. A rate-limit entry is per admitted event, so a replayed admitted event
//! finds itself and is admitted again, and the count never includes an event twice.
//!
//! Strings sort before integers in the tuple layer, so `"cur"` sorts before every bucket and a
//! clear of old buckets (`(…, i64::MIN) .. (…, bucket)`) never touches it.

use foundationdb_tuple::{pack, unpack, Subspace};

use super::{keyspace, Projection};
use crate::event::{EventId, UserId};
use crate::write::Mutation;

/// The subspace of one processor's state (every scope).
pub fn processor(p: Projection, id: &str) -> Subspace {
    keyspace(p, "prc").subspace(&(id,))
}

/// The subspace of one processor's state for events from `topic`/`partition`.
pub fn scope(p: Projection, id: &str, topic: &str, partition: i32) -> Subspace {
    processor(p, id).subspace(&(topic, i64::from(partition)))
}

/// The key of a scope's newest bucket.
pub fn cursor(s: &Subspace) -> Vec<u8> {
    s.pack(&("cur",))
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
pub fn seen(s: &Subspace, bucket: i64, event: EventId) -> Vec<u8> {
    s.pack(&(bucket, event.0))
}

/// Encodes where an event was first seen (the value of [`seen`]).
pub fn encode_origin(topic: &str, partition: i32, offset: i64) -> Vec<u8> {
    pack(&(topic, partition as i64, offset))
}

/// A rate limiter's record of an admitted event of `actor` in `bucket`.
pub fn admitted(s: &Subspace, bucket: i64, actor: UserId, event: EventId) -> Vec<u8> {
    s.pack(&(bucket, actor, event.0))
}

/// `(begin, end)` of the events of `actor` a rate limiter admitted in `bucket`.
pub fn admitted_range(s: &Subspace, bucket: i64, actor: UserId) -> (Vec<u8>, Vec<u8>) {
    s.subspace(&(bucket, actor)).range()
}

/// Clears every bucket of a scope older than `bucket` (the cursor stays).
pub fn clear_before(s: &Subspace, bucket: i64) -> Mutation {
    Mutation::ClearRange {
        begin: s.pack(&(i64::MIN,)),
        end: s.pack(&(bucket,)),
    }
}

/// Clears a scope's whole state, cursor included.
pub fn clear_all(s: &Subspace) -> Mutation {
    let (begin, end) = s.range();
    Mutation::ClearRange { begin, end }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_bytes() {
        let d = scope(1, "d", "t", 2);
        assert_eq!(
            cursor(&d),
            b"\x15\x01\x02prc\x00\x02d\x00\x02t\x00\x15\x02\x02cur\x00"
        );
        let mut want = b"\x15\x01\x02prc\x00\x02d\x00\x02t\x00\x15\x02\x15\x07\x30".to_vec();
        want.extend_from_slice(&[9; 16]);
        assert_eq!(seen(&d, 7, EventId::from_bytes([9; 16])), want);
        let r = scope(1, "r", "t", 0);
        let mut want = b"\x15\x01\x02prc\x00\x02r\x00\x02t\x00\x14\x15\x07\x15\x05\x30".to_vec();
        want.extend_from_slice(&[9; 16]);
        assert_eq!(admitted(&r, 7, 5, EventId::from_bytes([9; 16])), want);
        assert_eq!(
            decode_cursor(&encode_cursor("dedupe", 60_000, 3)),
            Some(("dedupe".to_string(), 60_000, 3))
        );
    }

    #[test]
    fn clearing_old_buckets_keeps_the_cursor_newer_buckets_and_other_scopes() {
        let d = scope(1, "d", "t", 0);
        let Mutation::ClearRange { begin, end } = clear_before(&d, 7) else {
            panic!("a range clear")
        };
        let inside = |k: &[u8]| begin.as_slice() <= k && k < end.as_slice();
        let e = EventId::from_bytes([1; 16]);
        assert!(inside(&seen(&d, 6, e)));
        assert!(inside(&seen(&d, -3, e)));
        assert!(!inside(&seen(&d, 7, e)));
        assert!(!inside(&cursor(&d)));
        assert!(
            !inside(&seen(&scope(1, "e", "t", 0), 6, e)),
            "another processor's state"
        );
        assert!(
            !inside(&seen(&scope(1, "d", "t", 1), 6, e)),
            "another partition's state"
        );
        let Mutation::ClearRange { begin, end } = clear_all(&d) else {
            panic!("a range clear")
        };
        assert!(begin <= cursor(&d) && cursor(&d) < end);
        assert!(cursor(&scope(1, "d", "t", 1)) >= end);
        let r = scope(1, "r", "t", 0);
        let (b, e2) = admitted_range(&r, 7, 5);
        let k = admitted(&r, 7, 5, e);
        assert!(b < k && k < e2);
        assert!(admitted(&r, 7, 6, e) > e2);
    }
}
