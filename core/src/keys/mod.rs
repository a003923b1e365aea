//! The store key layout: one module per keyspace (DESIGN.md, "Keyspaces").
//!
//! Every key is a FoundationDB tuple (`foundationdb-tuple`), so keys sort by their elements and
//! a prefix of a tuple is a range. All projection keyspaces live under a projection version
//! `p` — `(p, "msg", …)`, `(p, "feed", …)` — so a rebuild can write version N+1 while N serves;
//! only [`meta`] lives outside any projection, and names the live one.
//!
//! | module | key | value |
//! |---|---|---|
//! | [`messages`] | `(p, "msg", event_id)` | activity body (Avro single object) or a tombstone |
//! | [`feed`] | `(p, "feed", owner, kind, !time_ms, !event_id)` (newest first) | [`feed::FeedEntry`] (~30–40 B) |
//! | [`fver`] | `(p, "fver", owner, kind)` | i64 LE, atomic add per change |
//! | [`graph`] | `(p, "fwr"/"fwg"/"blk"/"mut", a, b)`, `(p, "cnt", user, "followers"/"following"/"blocking"/"muting")` | since (i64 LE) / count |
//! | [`pull`] | `(p, "pull", author)`, `(p, "pull", "version")` | authors served by pull (hybrid fan-out) |
//! | [`marks`] | `("mark", user, "seen"/"read")` | newest notification position seen / read |
//! | [`offsets`] | `(p, "off", consumer, topic, partition)` | next offset, i64 LE |
//! | [`fanout`] | `(p, "fan", event_id)` | cursor of an unfinished fan-out (or removal) and whose it is |
//! | [`procstate`] | `(p, "prc", processor_id, …)` | what stateful processors remember (dedupe, rate limits) |
//! | [`meta`] | `("meta", name)` | active projection version, layout version |
//!
//! Values that are counters are 8-byte little-endian i64, the encoding of FoundationDB's atomic
//! `ADD`, on every backend.

pub mod fanout;
pub mod feed;
pub mod fver;
pub mod graph;
pub mod marks;
pub mod messages;
pub mod meta;
pub mod offsets;
pub mod procstate;
pub mod pull;

use foundationdb_tuple::{pack, pack_into, TuplePack};

/// The tuple-layer subspace type the key functions return.
pub use foundationdb_tuple::Subspace;

/// A projection version: the first element of every projection key.
pub type Projection = i64;

/// The subspace `(p,)` holding everything of projection `p`; clearing its range drops it.
pub fn projection(p: Projection) -> Subspace {
    Subspace::from_bytes(pack(&(p,)))
}

/// The subspace `(p, name)` of one keyspace of projection `p`.
pub(crate) fn keyspace(p: Projection, name: &str) -> Subspace {
    Subspace::from_bytes(pack(&(p, name)))
}

/// The key `t` in keyspace `name` of projection `p`: `keyspace(p, name).pack(t)` in one
/// allocation (hot paths pack tens of keys per event).
pub(crate) fn key_in<T: TuplePack>(p: Projection, name: &str, t: &T) -> Vec<u8> {
    let mut k = Vec::with_capacity(64);
    pack_into(&(p, name), &mut k);
    pack_into(t, &mut k);
    k
}

/// The keyspaces of a projection, by the short name in their keys, for digests and backups.
pub const KEYSPACES: [&str; 12] = [
    "msg", "feed", "fver", "fwr", "fwg", "blk", "mut", "cnt", "pull", "off", "fan", "prc",
];

/// `(begin, end)` of keyspace `name` in projection `p`.
pub fn keyspace_range(p: Projection, name: &str) -> (Vec<u8>, Vec<u8>) {
    keyspace(p, name).range()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_in_is_the_keyspace_packing() {
        let t = (42i64, 3i64, !1_700_000_000_000i64);
        assert_eq!(key_in(7, "feed", &t), keyspace(7, "feed").pack(&t));
    }

    #[test]
    fn projection_prefix_bytes() {
        // (1,) — int 1 is 0x15 0x01 in the tuple layer.
        assert_eq!(projection(1).bytes(), &[0x15, 0x01]);
        let (b, e) = keyspace_range(2, "msg");
        assert_eq!(b, [0x15, 0x02, 0x02, b'm', b's', b'g', 0x00, 0x00]);
        assert_eq!(e, [0x15, 0x02, 0x02, b'm', b's', b'g', 0x00, 0xff]);
    }
}
