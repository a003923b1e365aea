//! Exact wire bytes, pinned. The expected bytes were produced independently by Python fastavro
//! (`schemaless_writer` + `fastavro.schema.fingerprint(..., "CRC-64-AVRO")`); if one of these
//! tests fails, the wire format changed: that needs a new schema version, not a new constant.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use tidings_core::{Activity, Event, GraphChange, GraphOp, Producer};

use crate::{decode, encode, encode_with_version, fingerprint_of, RecordKind, HEADER_LEN};

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn graph_change() -> Event {
    Event::Graph(GraphChange {
        id: "01890a5d-ac96-774b-bcce-b302099a8057".parse().unwrap(),
        actor: 42,
        subject: 7,
        op: GraphOp::Block,
        time_ms: 1_700_000_000_000,
        producer: Producer::new("graph-api", "1.4.2"),
    })
}

fn activity() -> Event {
    Event::Activity(Activity {
        id: "0192f3c4-5b6a-7c8d-9e0f-112233445566".parse().unwrap(),
        actor: 7,
        verb: "like".into(),
        object: "post:1".into(),
        target: Some("album:9".into()),
        time_ms: 1_700_000_000_123,
        to: vec![1, 300],
        text: "hi".into(),
        // inserted out of order: the wire order is the key order
        attributes: BTreeMap::from([("b".into(), "2".into()), ("a".into(), "1".into())]),
        producer: Producer::new("posts-api", "2.0"),
    })
}

#[test]
fn graph_change_bytes() {
    let expected = cat(&[
        &[0xc3, 0x01],                                     // magic
        &[0xf8, 0x4e, 0x7c, 0x41, 0x20, 0x63, 0x37, 0x26], // fingerprint of graph_change.v1, LE
        &[0x48],                                           // id: string of 36 bytes
        b"01890a5d-ac96-774b-bcce-b302099a8057",
        &[0x54],                               // actor 42
        &[0x0e],                               // subject 7
        &[0x04],                               // op: symbol 2 = BLOCK
        &[0x80, 0xa0, 0xab, 0xfe, 0xf9, 0x62], // time_ms 1_700_000_000_000
        &[0x12],                               // producer.name: 9 bytes
        b"graph-api",
        &[0x0a], // producer.version: 5 bytes
        b"1.4.2",
    ]);
    let bytes = encode(&graph_change());
    assert_eq!(bytes, expected);
    assert_eq!(decode(&bytes), Ok(graph_change()));
}

#[test]
fn activity_bytes() {
    let expected = cat(&[
        &[0xc3, 0x01],
        &[0x33, 0x54, 0x41, 0xcb, 0x2f, 0x59, 0x84, 0xdd], // fingerprint of activity.v2, LE
        &[0x48],
        b"0192f3c4-5b6a-7c8d-9e0f-112233445566",
        &[0x0e], // actor 7
        &[0x08],
        b"like",
        &[0x0c],
        b"post:1",
        &[0x02, 0x0e], // target: union branch 1 (string), 7 bytes
        b"album:9",
        &[0xf6, 0xa1, 0xab, 0xfe, 0xf9, 0x62], // time_ms 1_700_000_000_123
        &[0x04, 0x02, 0xd8, 0x04, 0x00],       // to: block of 2: 1, 300; end
        &[0x04],
        b"hi",
        &[0x04, 0x02, b'a', 0x02, b'1', 0x02, b'b', 0x02, b'2', 0x00], // attributes, key order
        &[0x12],
        b"posts-api",
        &[0x06],
        b"2.0",
    ]);
    let bytes = encode(&activity());
    assert_eq!(bytes, expected);
    assert_eq!(decode(&bytes), Ok(activity()));
}

#[test]
fn activity_v1_drops_attributes_and_reads_back_empty() {
    let v1 = encode_with_version(&activity(), 1).unwrap();
    let fp = fingerprint_of(RecordKind::Activity, 1).unwrap();
    assert_eq!(v1[2..HEADER_LEN], fp.to_le_bytes());
    let v2 = encode(&activity());
    // v1 is v2 without the attributes block (10 bytes), and with another fingerprint
    assert_eq!(v1.len(), v2.len() - 10);
    let Ok(Event::Activity(a)) = decode(&v1) else {
        panic!("v1 decodes as an activity")
    };
    let Event::Activity(mut expected) = activity() else {
        unreachable!()
    };
    expected.attributes.clear();
    assert_eq!(a, expected);
}

#[test]
fn encoding_is_deterministic() {
    let mut a = activity();
    if let Event::Activity(a) = &mut a {
        a.attributes = (0..20)
            .map(|i| (format!("k{i}"), format!("v{i}")))
            .collect();
    }
    let first = encode(&a);
    for _ in 0..10 {
        assert_eq!(encode(&a.clone()), first);
    }
}

#[test]
fn unknown_version_is_none() {
    assert_eq!(encode_with_version(&graph_change(), 0), None);
    assert_eq!(encode_with_version(&graph_change(), 2), None);
    assert!(encode_with_version(&graph_change(), 1).is_some());
}
