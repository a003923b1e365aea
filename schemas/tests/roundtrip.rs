//! Round trips: every event of every kind, through every schema version this build has.

#![allow(clippy::unwrap_used)]

mod common;

use proptest::prelude::*;
use tidings_core::validate;
use tidings_schemas::{
    decode, decode_and_validate, encode, encode_with_version, registry, writer_fingerprint,
    DecodeError, RecordKind,
};

#[test]
fn samples_round_trip_through_every_version() {
    for e in common::all_samples() {
        assert_eq!(decode(&encode(&e)), Ok(e.clone()));
        for sv in registry().versions_of(RecordKind::of(&e)) {
            let bytes = encode_with_version(&e, sv.version()).unwrap();
            assert_eq!(writer_fingerprint(&bytes), Ok(sv.fingerprint()));
            assert_eq!(
                decode(&bytes),
                Ok(common::project(&e, sv.version())),
                "{}",
                sv.file()
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_event_round_trips(e in common::event()) {
        let bytes = encode(&e);
        let latest = registry().latest(RecordKind::of(&e));
        prop_assert_eq!(writer_fingerprint(&bytes), Ok(latest.fingerprint()));
        prop_assert_eq!(decode(&bytes), Ok(e));
    }

    #[test]
    fn any_event_round_trips_through_every_older_version(e in common::event()) {
        for sv in registry().versions_of(RecordKind::of(&e)) {
            let bytes = encode_with_version(&e, sv.version()).unwrap();
            prop_assert_eq!(decode(&bytes), Ok(common::project(&e, sv.version())));
        }
    }

    #[test]
    fn decode_and_validate_is_decode_then_validate(e in common::event()) {
        let expected = validate::event(&e).map(|()| e.clone()).map_err(DecodeError::Invalid);
        prop_assert_eq!(decode_and_validate(&encode(&e)), expected);
    }
}
