//! Feed index keyspace: small entries, one per (feed, activity).
//!
//! ```text
//! key:   (p, "feed", owner: int, kind: int, !time_ms: int, !event_id: uuid)
//! value: [1] actor:varint verb_len:u8 verb object_len:varint object reason:u8
//! ```
//!
//! `kind` is [`FeedKind::code`]: 0 home, 1 user (the owner's own actions), 2 notifications.
//! Time and id are stored bit-inverted (`!time_ms`, every byte of the id complemented), so keys
//! sort **newest first**: a page is one *forward* range read from a cursor. Forward matters for
//! speed: a RocksDB memtable skip list has no back links, so every reverse step is a new search
//! from its head, and SST blocks are also cheaper to scan forward (layout version 2; version 1
//! stored the plain values and read pages in reverse). Entries are written only once per event
//! and owner, so replaying an event rewrites the same bytes.
//! A value is ~30–40 bytes: enough to filter (actor) and aggregate (verb, object) without
//! touching the body. The leading byte versions the value layout; a new layout gets a new byte
//! and readers keep decoding the old one.

use foundationdb_tuple::Subspace;

use super::{keyspace, Projection};
use crate::event::{EventId, UserId};

/// Which of a user's feeds.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum FeedKind {
    /// What the people the owner follows did (plus the owner's own actions).
    Home,
    /// What the owner did.
    User,
    /// What was addressed to the owner (mentions, likes of their posts, replies).
    Notifications,
}

impl FeedKind {
    /// Every kind.
    pub const ALL: [FeedKind; 3] = [FeedKind::Home, FeedKind::User, FeedKind::Notifications];

    /// The integer in keys. Stable: never renumber.
    pub fn code(self) -> i64 {
        match self {
            FeedKind::Home => 0,
            FeedKind::User => 1,
            FeedKind::Notifications => 2,
        }
    }

    /// Inverse of [`FeedKind::code`].
    pub fn from_code(c: i64) -> Option<FeedKind> {
        FeedKind::ALL.into_iter().find(|k| k.code() == c)
    }

    /// The name in URLs: `home`, `user`, `notifications`.
    pub fn as_str(self) -> &'static str {
        match self {
            FeedKind::Home => "home",
            FeedKind::User => "user",
            FeedKind::Notifications => "notifications",
        }
    }

    /// Parses [`FeedKind::as_str`].
    pub fn parse(s: &str) -> Option<FeedKind> {
        FeedKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// The position of an entry in a feed: its key minus the feed prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// Activity time, ms since the epoch.
    pub time_ms: i64,
    /// Activity id (tie-breaker).
    pub id: EventId,
}

/// The subspace of one feed: `(p, "feed", owner, kind)`.
pub fn feed(p: Projection, owner: UserId, kind: FeedKind) -> Subspace {
    keyspace(p, "feed").subspace(&(owner, kind.code()))
}

/// The subspace of all feeds of one owner: `(p, "feed", owner)`.
pub fn owner(p: Projection, owner: UserId) -> Subspace {
    keyspace(p, "feed").subspace(&(owner,))
}

fn invert(id: uuid::Uuid) -> uuid::Uuid {
    uuid::Uuid::from_u128(!id.as_u128())
}

/// The key of one entry. Within a feed, newer positions have smaller keys.
pub fn key(p: Projection, owner: UserId, kind: FeedKind, pos: Position) -> Vec<u8> {
    super::key_in(
        p,
        "feed",
        &(owner, kind.code(), !pos.time_ms, invert(pos.id.0)),
    )
}

/// [`key`] of one position in the `kind` feeds of many owners (a fan-out's entries): the
/// bytes before and after the owner are packed once and copied around each owner's id.
#[derive(Clone, Debug)]
pub struct KeysAt {
    head: Vec<u8>,
    tail: Vec<u8>,
}

impl KeysAt {
    /// Keys of `pos` in `kind` feeds of projection `p`.
    pub fn new(p: Projection, kind: FeedKind, pos: Position) -> KeysAt {
        let mut head = Vec::with_capacity(16);
        foundationdb_tuple::pack_into(&(p, "feed"), &mut head);
        let mut tail = Vec::with_capacity(32);
        foundationdb_tuple::pack_into(&(kind.code(), !pos.time_ms, invert(pos.id.0)), &mut tail);
        KeysAt { head, tail }
    }

    /// The key of `owner`'s entry: [`key`]`(p, owner, kind, pos)`.
    pub fn key(&self, owner: UserId) -> Vec<u8> {
        // An integer packs into at most 9 bytes.
        let mut k = Vec::with_capacity(self.head.len() + 9 + self.tail.len());
        self.key_into(owner, &mut k);
        k
    }

    /// Appends [`KeysAt::key`]`(owner)` to `out`.
    pub fn key_into(&self, owner: UserId, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.head);
        foundationdb_tuple::pack_into(&owner, out);
        out.extend_from_slice(&self.tail);
    }
}

/// The first key of `feed` strictly older than `pos`: where the page after a cursor begins.
pub fn after(p: Projection, owner: UserId, kind: FeedKind, pos: Position) -> Vec<u8> {
    let mut k = key(p, owner, kind, pos);
    k.push(0);
    k
}

/// Decodes the position from a key of the given feed.
pub fn parse_key(feed: &Subspace, key: &[u8]) -> Option<Position> {
    let (inv_time, inv_id): (i64, uuid::Uuid) = feed.unpack(key).ok()?;
    Some(Position {
        time_ms: !inv_time,
        id: EventId(invert(inv_id)),
    })
}

/// Why an entry is in a feed; read-time filtering depends on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The owner did it (user feed, or own home).
    Own,
    /// The owner follows the actor (home feed); hidden once they unfollow.
    Follow,
    /// The owner was addressed in `to` (notifications).
    Mention,
}

impl Reason {
    fn code(self) -> u8 {
        match self {
            Reason::Own => 0,
            Reason::Follow => 1,
            Reason::Mention => 2,
        }
    }

    fn from_code(c: u8) -> Option<Reason> {
        match c {
            0 => Some(Reason::Own),
            1 => Some(Reason::Follow),
            2 => Some(Reason::Mention),
            _ => None,
        }
    }
}

/// The value of an index entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FeedEntry {
    /// Who acted.
    pub actor: UserId,
    /// What they did.
    pub verb: String,
    /// To what.
    pub object: String,
    /// Why it is in this feed.
    pub reason: Reason,
}

const VALUE_V1: u8 = 1;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos)?;
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

impl FeedEntry {
    /// Encodes the value (layout v1). Actors are non-negative (validated upstream); a negative
    /// actor is stored by its two's complement bits and decodes back unchanged.
    pub fn encode(&self) -> Vec<u8> {
        let verb = self.verb.as_bytes();
        let verb_len = verb.len().min(255);
        let mut out = Vec::with_capacity(4 + verb_len + self.object.len() + 12);
        out.push(VALUE_V1);
        put_varint(&mut out, self.actor as u64);
        out.push(verb_len as u8);
        out.extend_from_slice(&verb[..verb_len]);
        put_varint(&mut out, self.object.len() as u64);
        out.extend_from_slice(self.object.as_bytes());
        out.push(self.reason.code());
        out
    }

    /// Decodes a value; `None` if it is not a layout this build knows.
    pub fn decode(b: &[u8]) -> Option<FeedEntry> {
        if b.first() != Some(&VALUE_V1) {
            return None;
        }
        let mut pos = 1;
        let actor = get_varint(b, &mut pos)? as i64;
        let verb_len = *b.get(pos)? as usize;
        pos += 1;
        let verb = std::str::from_utf8(b.get(pos..pos + verb_len)?)
            .ok()?
            .to_owned();
        pos += verb_len;
        let obj_len = usize::try_from(get_varint(b, &mut pos)?).ok()?;
        let end = pos.checked_add(obj_len)?;
        let object = std::str::from_utf8(b.get(pos..end)?).ok()?.to_owned();
        pos = end;
        let reason = Reason::from_code(*b.get(pos)?)?;
        if pos + 1 != b.len() {
            return None;
        }
        Some(FeedEntry {
            actor,
            verb,
            object,
            reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn keys_at_builds_the_keys_key_builds(
            p in any::<i64>(),
            owner in any::<i64>(),
            kind in 0usize..3,
            time_ms in any::<i64>(),
            id in any::<u128>(),
        ) {
            let pos = Position { time_ms, id: EventId(uuid::Uuid::from_u128(id)) };
            let kind = FeedKind::ALL[kind];
            prop_assert_eq!(KeysAt::new(p, kind, pos).key(owner), key(p, owner, kind, pos));
        }
    }

    #[test]
    fn key_bytes() {
        let pos = Position {
            time_ms: 1_700_000_000_000,
            id: EventId::from_bytes([1; 16]),
        };
        let k = key(3, 42, FeedKind::Home, pos);
        let mut want = vec![
            0x15, 0x03, 0x02, b'f', b'e', b'e', b'd', 0x00, 0x15, 42, 0x14,
        ];
        // !1_700_000_000_000 = -(0x018B_CFE5_6801): a six-byte negative int, code 0x14 - 6,
        // stored as the one's complement of its magnitude.
        want.extend_from_slice(&[0x0e, 0xfe, 0x74, 0x30, 0x1a, 0x97, 0xfe, 0x30]);
        want.extend_from_slice(&[0xfe; 16]);
        assert_eq!(k, want);
        assert_eq!(parse_key(&feed(3, 42, FeedKind::Home), &k), Some(pos));
        assert_eq!(parse_key(&feed(3, 42, FeedKind::User), &k), None);
    }

    #[test]
    fn keys_sort_newest_first() {
        let k = |t, b| {
            key(
                1,
                9,
                FeedKind::Home,
                Position {
                    time_ms: t,
                    id: EventId::from_bytes([b; 16]),
                },
            )
        };
        assert!(k(6, 0) < k(5, 9));
        assert!(k(6, 1) < k(6, 0));
        let (begin, end) = feed(1, 9, FeedKind::Home).range();
        assert!(begin < k(i64::MAX, 255) && k(i64::MIN, 0) < end && k(0, 0) < end);
        // The page after a cursor starts just past it and before the next older entry.
        let pos = |t, b| Position {
            time_ms: t,
            id: EventId::from_bytes([b; 16]),
        };
        let a = after(1, 9, FeedKind::Home, pos(6, 1));
        assert!(k(6, 1) < a && a <= k(6, 0));
        // Another owner's feed does not interleave.
        assert!(feed(1, 10, FeedKind::Home).range().0 > end);
    }

    #[test]
    fn value_bytes_are_small_and_pinned() {
        let e = FeedEntry {
            actor: 300,
            verb: "like".into(),
            object: "post:1".into(),
            reason: Reason::Follow,
        };
        let v = e.encode();
        assert_eq!(v, b"\x01\xac\x02\x04like\x06post:1\x01");
        assert_eq!(FeedEntry::decode(&v), Some(e));
        assert_eq!(FeedEntry::decode(&v[..v.len() - 1]), None);
        assert_eq!(FeedEntry::decode(b"\x02"), None);
    }

    proptest! {
        #[test]
        fn value_round_trips(actor in 0i64.., verb in "[a-z_]{1,32}", object in ".{0,300}", r in 0u8..3) {
            let e = FeedEntry { actor, verb, object, reason: Reason::from_code(r).unwrap() };
            prop_assert_eq!(FeedEntry::decode(&e.encode()), Some(e));
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = FeedEntry::decode(&bytes);
        }
    }
}
