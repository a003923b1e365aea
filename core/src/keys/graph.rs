//! Graph keyspace: the follow graph both ways, blocks, mutes, and counts.
//!
//! ```text
//! (p, "fwr", followee, follower) → since_ms i64 LE   followers of a user, in id order
//! (p, "fwg", follower, followee) → since_ms i64 LE   whom a user follows
//! (p, "blk", blocker, blocked)   → since_ms i64 LE
//! (p, "mut", muter, muted)       → since_ms i64 LE
//! (p, "cnt", user, "followers")  → i64 LE (atomic add)
//! (p, "cnt", user, "following")  → i64 LE (atomic add)
//! (p, "cnt", user, "blocking")   → i64 LE (atomic add)   how many the user blocks
//! (p, "cnt", user, "muting")     → i64 LE (atomic add)   how many the user mutes
//! ```
//!
//! Both directions of a follow are written in one batch: `fwr` drives fan-out (a range read of
//! followers, resumable by follower id), `fwg` drives read-time filtering and the hybrid pull of
//! high-follower authors. Counts let fan-out decide push vs pull with one point read, and let a
//! page read skip the block and mute ranges of the many readers who never blocked or muted
//! anyone (an absent key costs a bloom-filter probe, an empty range a seek in every level).

use foundationdb_tuple::Subspace;

use super::{key_in, keyspace, Projection};
use crate::event::UserId;

/// Which edge set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Edge {
    /// `(p, "fwr", followee, follower)`.
    Follower,
    /// `(p, "fwg", follower, followee)`.
    Following,
    /// `(p, "blk", blocker, blocked)`.
    Block,
    /// `(p, "mut", muter, muted)`.
    Mute,
}

impl Edge {
    fn name(self) -> &'static str {
        match self {
            Edge::Follower => "fwr",
            Edge::Following => "fwg",
            Edge::Block => "blk",
            Edge::Mute => "mut",
        }
    }
}

/// The key of edge `a → b` in the given set.
pub fn edge(p: Projection, set: Edge, a: UserId, b: UserId) -> Vec<u8> {
    key_in(p, set.name(), &(a, b))
}

/// The subspace of all edges of `a` in the given set (e.g. all followers of `a`).
pub fn edges_of(p: Projection, set: Edge, a: UserId) -> Subspace {
    keyspace(p, set.name()).subspace(&(a,))
}

/// The subspace of a whole edge set (every `(a, b)` of it).
pub fn edges(p: Projection, set: Edge) -> Subspace {
    keyspace(p, set.name())
}

/// Decodes `(a, b)` from a key inside [`edges`]`(p, set)`.
pub fn parse_any_edge(sub: &Subspace, key: &[u8]) -> Option<(UserId, UserId)> {
    sub.unpack::<(UserId, UserId)>(key).ok()
}

/// Decodes `b` from a key inside [`edges_of`]`(p, set, a)`.
pub fn parse_edge(sub: &Subspace, key: &[u8]) -> Option<UserId> {
    sub.unpack::<(UserId,)>(key).ok().map(|(b,)| b)
}

/// Which count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Count {
    /// How many follow the user.
    Followers,
    /// How many the user follows.
    Following,
    /// How many the user blocks.
    Blocking,
    /// How many the user mutes.
    Muting,
}

impl Count {
    /// Every count.
    pub const ALL: [Count; 4] = [
        Count::Followers,
        Count::Following,
        Count::Blocking,
        Count::Muting,
    ];

    /// Its name in the key ([`count`]).
    pub fn name(self) -> &'static str {
        match self {
            Count::Followers => "followers",
            Count::Following => "following",
            Count::Blocking => "blocking",
            Count::Muting => "muting",
        }
    }
}

/// The key of a user's count.
pub fn count(p: Projection, user: UserId, what: Count) -> Vec<u8> {
    key_in(p, "cnt", &(user, what.name()))
}

/// The subspace of every count of projection `p`.
pub fn counts(p: Projection) -> Subspace {
    keyspace(p, "cnt")
}

/// Decodes the user of a key inside [`counts`]`(p)`.
pub fn parse_count_user(sub: &Subspace, key: &[u8]) -> Option<UserId> {
    parse_count(sub, key).map(|(u, _)| u)
}

/// The user and the count of a key of [`counts`]; `None` for any other key (the count's kind
/// too when its name is not one of [`Count`]'s).
pub fn parse_count(sub: &Subspace, key: &[u8]) -> Option<(UserId, Option<Count>)> {
    let (user, name) = sub
        .unpack::<(UserId, std::borrow::Cow<'_, str>)>(key)
        .ok()?;
    Some((user, Count::ALL.into_iter().find(|c| c.name() == name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_bytes() {
        assert_eq!(
            edge(1, Edge::Follower, 5, 6),
            b"\x15\x01\x02fwr\x00\x15\x05\x15\x06"
        );
        assert_eq!(
            edge(1, Edge::Following, 6, 5),
            b"\x15\x01\x02fwg\x00\x15\x06\x15\x05"
        );
        assert_eq!(
            edge(1, Edge::Block, 0, 1),
            b"\x15\x01\x02blk\x00\x14\x15\x01"
        );
        assert_eq!(
            edge(1, Edge::Mute, 1, 0),
            b"\x15\x01\x02mut\x00\x15\x01\x14"
        );
        assert_eq!(
            count(1, 5, Count::Followers),
            b"\x15\x01\x02cnt\x00\x15\x05\x02followers\x00"
        );
    }

    #[test]
    fn followers_range_parses_in_id_order() {
        let sub = edges_of(1, Edge::Follower, 5);
        let (b, e) = sub.range();
        let k1 = edge(1, Edge::Follower, 5, 2);
        let k2 = edge(1, Edge::Follower, 5, 300);
        assert!(b < k1 && k1 < k2 && k2 < e);
        assert_eq!(parse_edge(&sub, &k2), Some(300));
    }

    #[test]
    fn count_keys_parse_to_their_user() {
        let sub = counts(1);
        for what in Count::ALL {
            assert_eq!(parse_count_user(&sub, &count(1, -7, what)), Some(-7));
            assert_eq!(
                parse_count(&sub, &count(1, -7, what)),
                Some((-7, Some(what)))
            );
        }
        assert_eq!(
            parse_count(&sub, &sub.pack(&(3i64, "other"))),
            Some((3, None))
        );
        assert_eq!(parse_count_user(&sub, &edge(1, Edge::Follower, 5, 6)), None);
    }
}
