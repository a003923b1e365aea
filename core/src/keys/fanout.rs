//! Fan-out progress keyspace: the cursor of a fan-out too large for one batch.
//!
//! ```text
//! key:   (p, "fan", event_id: uuid)
//! value: last follower id written, i64 LE
//!
//! key:   (p, "fan", event_id: uuid, "place")
//! value: where a retracted activity sat (time, recipients, entry), see `fanout::Placement`
//! ```
//!
//! A fan-out to more followers than fit one batch is split; each partial batch writes this
//! cursor, and the consumer's offset stays on the event until the last part clears it. After a
//! crash the consumer re-reads the event from its stored offset, finds the cursor and resumes
//! after it. The same key serves a retraction that removes a large fan-out.

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

/// Records that followers up to and including `last` have been written.
pub fn set(p: Projection, id: EventId, last: UserId) -> Mutation {
    Mutation::Set {
        key: key(p, id),
        value: encode_i64(last),
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
}
