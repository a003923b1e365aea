//! Event ids: UUIDv7, assigned by the producer when the caller gives none.
//!
//! The id is the idempotency key downstream: every store key an event writes derives from it,
//! so a retried publish of the same event (same id) rewrites the same keys. UUIDv7 sorts by
//! creation time, which keeps the message keyspace append-mostly.

use tidings_core::clock::Clock;
use tidings_core::EventId;
use uuid::{NoContext, Timestamp, Uuid};

/// A fresh time-ordered event id taken at the clock's current time.
pub fn new_event_id(clock: &dyn Clock) -> EventId {
    let ms = clock.now_ms().max(0) as u64;
    let ts = Timestamp::from_unix(NoContext, ms / 1000, ((ms % 1000) * 1_000_000) as u32);
    EventId(Uuid::new_v7(ts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidings_core::clock::ManualClock;

    #[test]
    fn ids_are_v7_unique_and_time_ordered() {
        let clock = ManualClock::new(1_767_225_600_000);
        let a = new_event_id(&clock);
        let b = new_event_id(&clock);
        assert_ne!(a, b);
        assert_eq!(a.0.get_version_num(), 7);
        clock.advance(1);
        let c = new_event_id(&clock);
        assert!(c > a && c > b, "a later millisecond sorts later");
        let (secs, _) = a.0.get_timestamp().map(|t| t.to_unix()).unwrap_or_default();
        assert_eq!(secs, 1_767_225_600);
    }
}
