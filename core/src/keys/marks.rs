//! Notification marks: how far a user has seen and read their notifications.
//!
//! ```text
//! ("mark", user, "seen") → time_ms i64 BE ++ event_id (16 bytes)
//! ("mark", user, "read") → same
//! ```
//!
//! A mark is the position of the newest notification covered; entries at or older than it are
//! seen (read). Marks are reader state written by the query service, not events: they live
//! outside every projection (like `meta`), so a rebuild or a switch of projections keeps them,
//! and positions mean the same in every projection. They only move forward.

use foundationdb_tuple::pack;

use crate::event::{EventId, UserId};
use crate::keys::feed::Position;

/// Which mark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mark {
    /// The user has seen the notification list up to here.
    Seen,
    /// The user has opened the notifications up to here.
    Read,
}

/// `(begin, end)` of every user's marks.
pub fn range() -> (Vec<u8>, Vec<u8>) {
    foundationdb_tuple::Subspace::from_bytes(pack(&("mark",))).range()
}

/// The key of one of a user's marks.
pub fn key(user: UserId, mark: Mark) -> Vec<u8> {
    let name = match mark {
        Mark::Seen => "seen",
        Mark::Read => "read",
    };
    pack(&("mark", user, name))
}

/// Encodes a mark's value.
pub fn encode(pos: Position) -> Vec<u8> {
    let mut v = Vec::with_capacity(24);
    v.extend_from_slice(&pos.time_ms.to_be_bytes());
    v.extend_from_slice(pos.id.as_bytes());
    v
}

/// Decodes [`encode`]; `None` for anything else.
pub fn decode(v: &[u8]) -> Option<Position> {
    if v.len() != 24 {
        return None;
    }
    Some(Position {
        time_ms: i64::from_be_bytes(v[..8].try_into().ok()?),
        id: EventId::from_bytes(v[8..].try_into().ok()?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_and_value_bytes() {
        assert_eq!(key(7, Mark::Seen), b"\x02mark\x00\x15\x07\x02seen\x00");
        let pos = Position {
            time_ms: 258,
            id: EventId::from_bytes([9; 16]),
        };
        let v = encode(pos);
        assert_eq!(&v[..8], &[0, 0, 0, 0, 0, 0, 1, 2]);
        assert_eq!(decode(&v), Some(pos));
        assert_eq!(decode(&v[1..]), None);
    }
}
