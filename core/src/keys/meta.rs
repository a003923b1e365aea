//! Meta keyspace: facts outside any projection.
//!
//! ```text
//! ("meta", "active")          → i64 LE: the projection version readers and consumers use
//! ("meta", "layout")          → i64 LE: the key-layout version this store was created with
//! ("meta", "building", p)     → i64 LE: 1 while projection p is being rebuilt
//! ("meta", "rebuild", p)      → JSON: how projection p was rebuilt (until, skip), checked
//!                               when a killed rebuild is resumed
//! ```
//!
//! `active` is the one switch of a rollback or migration: flipping it is one atomic write, and
//! readers re-read it per request, so they move without a restart. Absent means projection 1.

use foundationdb_tuple::pack;

use super::Projection;

/// The projection used when `("meta","active")` was never written.
pub const DEFAULT_PROJECTION: Projection = 1;

/// The key-layout version written by this build. 2: feed-index keys sort newest first.
/// 3: block and mute counts (`(p, "cnt", user, "blocking"/"muting")`), which readers rely on.
pub const LAYOUT_VERSION: i64 = 3;

/// `("meta",)`: every meta key starts with these bytes.
pub fn prefix() -> Vec<u8> {
    pack(&("meta",))
}

/// `("meta", "active")`.
pub fn active() -> Vec<u8> {
    pack(&("meta", "active"))
}

/// `("meta", "layout")`.
pub fn layout() -> Vec<u8> {
    pack(&("meta", "layout"))
}

/// `("meta", "building", p)`.
pub fn building(p: Projection) -> Vec<u8> {
    pack(&("meta", "building", p))
}

/// `("meta", "rebuild", p)`.
pub fn rebuild(p: Projection) -> Vec<u8> {
    pack(&("meta", "rebuild", p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_bytes() {
        assert_eq!(active(), b"\x02meta\x00\x02active\x00");
        assert_eq!(building(2), b"\x02meta\x00\x02building\x00\x15\x02");
        // Meta keys sort before every projection (strings, code 0x02, sort before ints).
        assert!(active() < crate::keys::projection(0).range().0);
    }
}
