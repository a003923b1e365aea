//! Fan-out progress keyspace: the cursor of a fan-out too large for one batch.
//!
//! ```text
//! key:   (p, "fan", event_id: uuid)
//! value: last follower id written, i64 LE; then whose cursor it is: b'+' (the activity's
//!        fan-out) or b'-' (its removal by a retraction), and that event's actor, i64 LE
//!
//! key:   (p, "fan", event_id: uuid, "place")
//! value: where a retracted activity sat (time, recipients, entry), see `fanout::Placement`
//! ```
//!
//! A fan-out to more followers than fit one batch is split; each partial batch writes this
//! cursor, and the consumer's offset stays on the event until the last part clears it. After a
//! crash the consumer re-reads the event from its stored offset, finds the cursor and resumes
//! after it. The same key serves a retraction that removes a large fan-out; the owner kept in
//! the value tells the two apart, so that neither another user's retraction of the activity
//! nor an event reusing its id takes the resume path of a cursor that is not its own. A value
//! of 8 bytes (written before owners were kept) has no owner and is taken as before.

use super::{key_in, Projection};
use crate::event::{EventId, UserId};
use crate::write::{encode_i64, Mutation};

/// The progress key of one event's fan-out.
pub fn key(p: Projection, id: EventId) -> Vec<u8> {
    key_in(p, "fan", &id.0)
}

/// The key keeping the placement of an activity whose removal spans several batches (its body
/// is a tombstone by then, so the placement cannot be re-read from it).
pub fn placement(p: Projection, id: EventId) -> Vec<u8> {
    key_in(p, "fan", &(id.0, "place"))
}

/// Which event a cursor belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// The fan-out of the activity, posted by this user.
    Fanout(UserId),
    /// The removal of the activity's entries by this user's retraction.
    Removal(UserId),
}

/// A stored cursor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// The last follower written (or removed).
    pub last: UserId,
    /// Whose cursor it is; `None` for a value written before owners were kept.
    pub owner: Option<Owner>,
}

impl Cursor {
    /// Decodes a stored value; `None` for a value of no known shape.
    pub fn decode(v: &[u8]) -> Option<Cursor> {
        let last = i64::from_le_bytes(v.get(..8)?.try_into().ok()?);
        let owner = match v.len() {
            8 => None,
            17 => {
                let actor = i64::from_le_bytes(v[9..17].try_into().ok()?);
                Some(match v[8] {
                    b'+' => Owner::Fanout(actor),
                    b'-' => Owner::Removal(actor),
                    _ => return None,
                })
            }
            _ => return None,
        };
        Some(Cursor { last, owner })
    }

    /// Whether the event `wants` may resume from this cursor.
    pub fn belongs_to(&self, wants: Owner) -> bool {
        self.owner.is_none_or(|o| o == wants)
    }
}

/// Records that followers up to and including `last` have been written by `owner`'s step.
pub fn set(p: Projection, id: EventId, last: UserId, owner: Owner) -> Mutation {
    let mut value = encode_i64(last);
    let (tag, actor) = match owner {
        Owner::Fanout(a) => (b'+', a),
        Owner::Removal(a) => (b'-', a),
    };
    value.push(tag);
    value.extend_from_slice(&actor.to_le_bytes());
    Mutation::Set {
        key: key(p, id),
        value,
    }
}

/// Marks the fan-out complete.
pub fn clear(p: Projection, id: EventId) -> Mutation {
    Mutation::Clear { key: key(p, id) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_bytes() {
        let mut want = vec![0x15, 0x01, 0x02, b'f', b'a', b'n', 0x00, 0x30];
        want.extend_from_slice(&[7; 16]);
        assert_eq!(key(1, EventId::from_bytes([7; 16])), want);
        let mut place = want.clone();
        place.extend_from_slice(b"\x02place\x00");
        assert_eq!(placement(1, EventId::from_bytes([7; 16])), place);
    }

    #[test]
    fn cursor_values_round_trip_and_keep_their_owner() {
        let id = EventId::from_bytes([7; 16]);
        for owner in [Owner::Fanout(-3), Owner::Removal(i64::MAX)] {
            let Mutation::Set { value, .. } = set(1, id, 42, owner) else {
                panic!("a cursor is a set");
            };
            assert_eq!(value.len(), 17);
            let c = Cursor::decode(&value).expect("decodes");
            assert_eq!(
                c,
                Cursor {
                    last: 42,
                    owner: Some(owner)
                }
            );
            assert!(c.belongs_to(owner));
        }
        let c = Cursor::decode(&set_value(42, b'+', 5)).unwrap();
        assert!(
            !c.belongs_to(Owner::Removal(5)),
            "a fan-out is not a removal"
        );
        assert!(!c.belongs_to(Owner::Fanout(6)), "nor another user's");
        // Written before owners were kept: anyone resumes, as then.
        let old = Cursor::decode(&encode_i64(9)).unwrap();
        assert_eq!(
            old,
            Cursor {
                last: 9,
                owner: None
            }
        );
        assert!(old.belongs_to(Owner::Removal(1)));
        for bad in [&b""[..], &[1; 7], &[1; 9], &set_value(1, b'?', 2)] {
            assert_eq!(Cursor::decode(bad), None, "{bad:?}");
        }
    }

    fn set_value(last: i64, tag: u8, actor: i64) -> Vec<u8> {
        let mut v = encode_i64(last);
        v.push(tag);
        v.extend_from_slice(&actor.to_le_bytes());
        v
    }
}
