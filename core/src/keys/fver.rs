//! Feed version keyspace: one counter per feed, the cache validator.
//!
//! ```text
//! key:   (p, "fver", owner: int, kind: int)
//! value: i64 LE, incremented by atomic add on every change to that feed
//! ```
//!
//! Every mutation of a feed's index (insert, removal, trim, graph change that alters what the
//! feed shows) adds 1 in the same batch. A cached page remembers the version it was built at;
//! one point read tells whether it is still valid. Being an atomic add, concurrent writers never
//! conflict on it.

use super::{keyspace, Projection};
use crate::event::UserId;
use crate::keys::feed::FeedKind;
use crate::write::Mutation;

/// The version key of one feed.
pub fn key(p: Projection, owner: UserId, kind: FeedKind) -> Vec<u8> {
    super::key_in(p, "fver", &(owner, kind.code()))
}

/// Decodes `(owner, kind)` from a feed's version key (`None` for [`bodies`] and other keys).
pub fn parse_key(p: Projection, key: &[u8]) -> Option<(UserId, FeedKind)> {
    let (owner, kind): (UserId, i64) = keyspace(p, "fver").unpack(key).ok()?;
    Some((owner, FeedKind::from_code(kind)?))
}

/// `(begin, end)` of every version key of projection `p`.
pub fn range(p: Projection) -> (Vec<u8>, Vec<u8>) {
    keyspace(p, "fver").range()
}

/// The projection-wide body version: bumped when a stored body changes without its feeds'
/// indexes changing (an update, the tombstone of a retraction), so cached pages showing the old
/// body are invalid at once, before (or without) any per-feed bump.
pub fn bodies(p: Projection) -> Vec<u8> {
    keyspace(p, "fver").pack(&("bodies",))
}

/// The mutation that bumps [`bodies`].
pub fn bump_bodies(p: Projection) -> Mutation {
    Mutation::Add {
        key: bodies(p),
        delta: 1,
    }
}

/// A bump of one feed's version, before its key is built: a fan-out bumps a feed per entry,
/// and a consume loop sums them per feed first (a bulk batch bumps each feed many times).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Bump {
    /// Projection.
    pub p: Projection,
    /// The feed's owner.
    pub owner: UserId,
    /// The feed.
    pub kind: FeedKind,
}

impl Bump {
    /// The feed's version key.
    pub fn key(&self) -> Vec<u8> {
        key(self.p, self.owner, self.kind)
    }

    /// The mutation that adds `delta` bumps.
    pub fn mutation(&self, delta: i64) -> Mutation {
        Mutation::Add {
            key: self.key(),
            delta,
        }
    }
}

/// The mutation that bumps a feed's version.
pub fn bump(p: Projection, owner: UserId, kind: FeedKind) -> Mutation {
    Mutation::Add {
        key: key(p, owner, kind),
        delta: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_bytes() {
        assert_eq!(
            key(1, 300, FeedKind::Notifications),
            vec![0x15, 0x01, 0x02, b'f', b'v', b'e', b'r', 0x00, 0x16, 0x01, 0x2c, 0x15, 0x02]
        );
        assert_eq!(
            parse_key(1, &key(1, 300, FeedKind::Notifications)),
            Some((300, FeedKind::Notifications))
        );
        assert_eq!(parse_key(1, &bodies(1)), None);
        let (b, e) = range(1);
        assert!(
            b < bodies(1)
                && bodies(1) < key(1, i64::MIN, FeedKind::Home)
                && key(1, i64::MAX, FeedKind::User) < e
        );
    }
}
