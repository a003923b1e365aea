//! Message keyspace: each activity body stored once.
//!
//! ```text
//! key:   (p, "msg", event_id: uuid)
//! value: 0xC3 0x01 …        the activity as an Avro single object (tidings-schemas)
//!      | 0x00 time_ms:i64LE  tombstone: retracted at time_ms
//! ```
//!
//! Index entries in every feed point here; a page read does one multi-get of bodies. A
//! retraction replaces the body by a tombstone rather than clearing it, so a replayed or
//! re-delivered copy of the activity cannot resurrect it. Evolution: a body written with an old
//! schema stays readable (the single-object header names its writer schema); new value kinds
//! take a new first byte.

use super::{key_in, keyspace, Projection};
use crate::event::EventId;

/// The key of an activity's body.
pub fn key(p: Projection, id: EventId) -> Vec<u8> {
    key_in(p, "msg", &id.0)
}

/// Decodes the event id back from a message key of projection `p`.
pub fn parse_key(p: Projection, key: &[u8]) -> Option<EventId> {
    keyspace(p, "msg")
        .unpack::<uuid::Uuid>(key)
        .ok()
        .map(EventId)
}

const TOMBSTONE: u8 = 0x00;

/// What the message keyspace holds for one id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageValue<'a> {
    /// The encoded activity body.
    Body(&'a [u8]),
    /// The activity was retracted at this time.
    Retracted {
        /// When, ms since the epoch.
        time_ms: i64,
    },
}

impl<'a> MessageValue<'a> {
    /// Interprets stored bytes. Unknown leading bytes are treated as a body (the decoder will
    /// name the problem).
    pub fn parse(bytes: &'a [u8]) -> MessageValue<'a> {
        if bytes.len() == 9 && bytes[0] == TOMBSTONE {
            let mut t = [0u8; 8];
            t.copy_from_slice(&bytes[1..]);
            MessageValue::Retracted {
                time_ms: i64::from_le_bytes(t),
            }
        } else {
            MessageValue::Body(bytes)
        }
    }
}

/// The tombstone value written by a retraction.
pub fn tombstone(time_ms: i64) -> Vec<u8> {
    let mut v = Vec::with_capacity(9);
    v.push(TOMBSTONE);
    v.extend_from_slice(&time_ms.to_le_bytes());
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_bytes() {
        let id = EventId::from_bytes([0xab; 16]);
        let mut want = vec![0x15, 0x01, 0x02, b'm', b's', b'g', 0x00, 0x30];
        want.extend_from_slice(&[0xab; 16]);
        assert_eq!(key(1, id), want);
        assert_eq!(parse_key(1, &want), Some(id));
        assert_eq!(parse_key(2, &want), None);
    }

    #[test]
    fn tombstone_round_trip() {
        let t = tombstone(1_700_000_000_123);
        assert_eq!(
            MessageValue::parse(&t),
            MessageValue::Retracted {
                time_ms: 1_700_000_000_123
            }
        );
        assert_eq!(
            MessageValue::parse(b"\xc3\x01abc"),
            MessageValue::Body(b"\xc3\x01abc")
        );
    }
}
