//! Bad input: every failure is the right typed error, and nothing panics.

#![allow(clippy::unwrap_used)]

mod common;

use proptest::prelude::*;
use tidings_core::{Event, GraphChange, GraphOp, Producer};
use tidings_schemas::{
    decode, decode_and_validate, encode, fingerprint_of, DecodeError, RecordKind, HEADER_LEN, MAGIC,
};

fn graph() -> Event {
    Event::Graph(GraphChange {
        id: common::id("01890a5d-ac96-774b-bcce-b302099a8057"),
        actor: 42,
        subject: 7,
        op: GraphOp::Follow,
        time_ms: 1_700_000_000_000,
        producer: Producer::new("graph-api", "1"),
    })
}

/// Header for `kind`'s latest version followed by `datum`.
fn with_header(kind: RecordKind, datum: &[u8]) -> Vec<u8> {
    let fp = fingerprint_of(kind, tidings_schemas::latest_version(kind)).unwrap();
    [&MAGIC[..], &fp.to_le_bytes(), datum].concat()
}

#[test]
fn empty_and_wrong_magic_are_not_single_object() {
    let valid = encode(&graph());
    assert_eq!(decode(b""), Err(DecodeError::NotSingleObject));
    assert_eq!(decode(b"{\"actor\":1}"), Err(DecodeError::NotSingleObject));
    let mut confluent = vec![0x00, 0, 0, 0, 1];
    confluent.extend_from_slice(&valid[HEADER_LEN..]);
    assert_eq!(decode(&confluent), Err(DecodeError::NotSingleObject));
    let mut wrong_version = valid.clone();
    wrong_version[1] = 0x02;
    assert_eq!(decode(&wrong_version), Err(DecodeError::NotSingleObject));
    assert_eq!(decode(&[0x01]), Err(DecodeError::NotSingleObject));
    assert_eq!(decode(b"").unwrap_err().reason_code(), "not_single_object");
}

#[test]
fn magic_alone_or_partial_header_is_truncated() {
    assert_eq!(decode(&[0xC3]), Err(DecodeError::Truncated));
    assert_eq!(decode(&MAGIC), Err(DecodeError::Truncated));
    assert_eq!(decode(&[0xC3, 0x01, 1, 2, 3]), Err(DecodeError::Truncated));
}

#[test]
fn unknown_fingerprint_is_reported_in_hex() {
    // the fingerprint of the schema "int": known everywhere, not a tidings record
    let payload = [
        &MAGIC[..],
        &[0x8f, 0x5c, 0x39, 0x3f, 0x1a, 0xd5, 0x75, 0x72],
        &[0x02],
    ]
    .concat();
    let err = decode(&payload).unwrap_err();
    assert_eq!(err, DecodeError::UnknownFingerprint(0x7275_d51a_3f39_5c8f));
    assert!(
        err.to_string()
            .contains("0x7275d51a3f395c8f is not known to this build"),
        "{err}"
    );
    assert_eq!(err.reason_code(), "unknown_fingerprint");
}

#[test]
fn every_truncation_of_every_sample_is_truncated() {
    for e in common::all_samples() {
        let bytes = encode(&e);
        for len in 1..bytes.len() {
            assert_eq!(
                decode(&bytes[..len]),
                Err(DecodeError::Truncated),
                "{e:?} cut at {len}"
            );
        }
        assert_eq!(decode(&bytes[..0]), Err(DecodeError::NotSingleObject));
    }
}

#[test]
fn trailing_bytes_are_an_error() {
    for e in common::all_samples() {
        let mut bytes = encode(&e);
        bytes.push(0);
        assert_eq!(decode(&bytes), Err(DecodeError::TrailingBytes));
        bytes.extend_from_slice(&encode(&e));
        assert_eq!(
            decode(&bytes),
            Err(DecodeError::TrailingBytes),
            "two records concatenated"
        );
    }
}

fn bad_field(r: Result<Event, DecodeError>) -> String {
    match r {
        Err(DecodeError::BadField { field, .. }) => field,
        other => panic!("expected BadField, got {other:?}"),
    }
}

#[test]
fn bad_fields_are_named() {
    let bytes = encode(&graph());
    // id: a 36-byte string that is not a UUID
    let mut b = bytes.clone();
    b[HEADER_LEN + 1] = b'z';
    assert_eq!(bad_field(decode(&b)), "id");
    // op: symbol index 6 of 6 (after id: 1 + 36 bytes, actor and subject: 1 byte each)
    let mut b = bytes.clone();
    assert_eq!(b[HEADER_LEN + 39], 0x00, "op FOLLOW");
    b[HEADER_LEN + 39] = 0x0c;
    assert_eq!(bad_field(decode(&b)), "op");
    // producer.version: not UTF-8
    let mut b = bytes.clone();
    *b.last_mut().unwrap() = 0xff;
    assert_eq!(bad_field(decode(&b)), "producer.version");
}

#[test]
fn impossible_structure_is_malformed() {
    // union branch 5 of ["null", "string"] in an Update's `text`
    let e = &common::samples(RecordKind::Update)[1];
    let bytes = encode(e);
    let text_at = HEADER_LEN + 2 * 37 + 1 + 1; // two uuids, actor 7, time_ms 1
    assert_eq!(bytes[text_at], 0x00, "text: null branch");
    let mut b = bytes.clone();
    b[text_at] = 0x0a;
    let err = decode(&b).unwrap_err();
    assert!(
        matches!(&err, DecodeError::Malformed(m) if m.contains("field `text`")),
        "{err}"
    );
    assert_eq!(err.reason_code(), "malformed");
    // a negative string length for the id
    let b = with_header(RecordKind::GraphChange, &[0x03]);
    assert!(matches!(decode(&b), Err(DecodeError::Malformed(_))));
    // an 11-byte varint
    let b = with_header(RecordKind::GraphChange, &[0xff; 11]);
    assert!(matches!(decode(&b), Err(DecodeError::Malformed(_))));
}

#[test]
fn bogus_lengths_do_not_allocate() {
    for len in [1u64 << 60, i64::MAX as u64, 1 << 31, 100_000_000] {
        let mut datum = Vec::new();
        let mut z = len << 1; // zig-zag of a positive length
        while z > 0x7f {
            datum.push((z as u8 & 0x7f) | 0x80);
            z >>= 7;
        }
        datum.push(z as u8);
        datum.extend_from_slice(b"0123456789");
        let b = with_header(RecordKind::Activity, &datum);
        assert_eq!(
            decode(&b),
            Err(DecodeError::Truncated),
            "string length {len}"
        );
    }
    // a huge block count in `to`
    let e = &common::samples(RecordKind::Activity)[1];
    let bytes = encode(e);
    // id (37), actor 0 (1), verb "post" (5), object "post:1" (7), target null (1), time_ms 1 (1)
    let to_at = HEADER_LEN + 37 + 1 + 5 + 7 + 1 + 1;
    assert_eq!(bytes[to_at], 0x00, "to: empty");
    let b = [
        &bytes[..to_at],
        &[0xfe, 0xff, 0xff, 0xff, 0x0f][..],
        &bytes[to_at + 1..],
    ]
    .concat();
    assert_eq!(decode(&b), Err(DecodeError::Truncated));
}

#[test]
fn invalid_records_decode_but_do_not_validate() {
    let mut e = graph();
    if let Event::Graph(g) = &mut e {
        g.subject = g.actor;
    }
    let bytes = encode(&e);
    assert_eq!(decode(&bytes), Ok(e));
    let err = decode_and_validate(&bytes).unwrap_err();
    assert!(
        matches!(&err, DecodeError::Invalid(v) if v.field == "subject"),
        "{err}"
    );
    assert_eq!(err.reason_code(), "invalid");
    assert!(err.to_string().contains("`subject`"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode(&bytes);
        let _ = decode_and_validate(&bytes);
    }

    #[test]
    fn arbitrary_datum_after_a_known_header_never_panics(
        kind in proptest::sample::select(RecordKind::ALL.to_vec()),
        datum in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let _ = decode(&with_header(kind, &datum));
    }

    /// A corrupted record is either an error or some event that itself round-trips.
    #[test]
    fn a_flipped_byte_never_panics(e in common::event(), at in any::<prop::sample::Index>(), mask in 1u8..) {
        let mut bytes = encode(&e);
        let i = at.index(bytes.len());
        bytes[i] ^= mask;
        if let Ok(got) = decode(&bytes) {
            prop_assert_eq!(decode(&encode(&got)), Ok(got));
        }
    }

    #[test]
    fn any_cut_is_truncated(e in common::event(), at in any::<prop::sample::Index>()) {
        let bytes = encode(&e);
        let len = 1 + at.index(bytes.len() - 1);
        prop_assert_eq!(decode(&bytes[..len]), Err(DecodeError::Truncated));
    }
}
