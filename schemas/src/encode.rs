//! Encoding: [`Event`] → `C3 01` + fingerprint (LE) + Avro binary datum.
//!
//! The datum is written by walking the **writer schema's** fields and writing, for each field
//! name, the matching domain value. So one code path writes every version: an older schema that
//! lacks a field (Activity v1 has no `attributes`) simply never asks for it, and a new version
//! only needs a new case here if it adds a field the domain has never had. Every version is
//! checked against this code when the registry is built (`check_writable`).
//!
//! Why not `apache_avro::to_avro_datum` with a `Value::Record`? Its maps are `HashMap`s, so a
//! record with two or more attributes would encode its entries in a different order from one
//! call to the next (tidings wants one event to give one byte string: pinned tests,
//! byte-identical rebuilds); and it validates and allocates a `Value` tree per call. Measured
//! on one core (release, `tests/throughput.rs`): ~3 M events/s here against ~0.22 M/s for
//! `to_avro_datum` on an already-built `Value`. The output is plain Avro binary: decoding uses
//! apache-avro, and tests compare the bytes with apache-avro's and Python fastavro's.

use std::collections::BTreeMap;

use apache_avro::Schema;
use tidings_core::{Event, GraphOp, Producer};
use uuid::Uuid;

use crate::registry::{registry, RecordKind, SchemaVersion};
use crate::MAGIC;

/// Encodes `event` with the latest version of its record's schema.
pub fn encode(event: &Event) -> Vec<u8> {
    let latest = registry().latest(RecordKind::of(event));
    encode_as(event, latest)
        .expect("the latest schema of every kind writes every event: checked at registry build")
}

/// Encodes `event` with version `version` of its record's schema (fields that version lacks are
/// dropped: an Activity written as v1 loses its attributes). `None` if this build has no such
/// version, or the event cannot be expressed in it (e.g. an enum symbol that version lacks).
/// For tests and for producers that must keep writing an old version during a rollout.
pub fn encode_with_version(event: &Event, version: u32) -> Option<Vec<u8>> {
    let sv = registry().get(RecordKind::of(event), version)?;
    encode_as(event, sv).ok()
}

fn encode_as(event: &Event, sv: &SchemaVersion) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&sv.fingerprint().to_le_bytes());
    write_record(&fields(event), sv.schema(), &mut out)?;
    Ok(out)
}

/// A borrowed domain value, as the writer needs it.
enum Field<'a> {
    Uuid(Uuid),
    Long(i64),
    Str(&'a str),
    OptStr(Option<&'a str>),
    Longs(&'a [i64]),
    StrMap(&'a BTreeMap<String, String>),
    Record(Fields<'a>),
    Op(GraphOp),
}

/// Looks a field of a domain record up by its schema name.
#[derive(Clone, Copy)]
enum Fields<'a> {
    Event(&'a Event),
    Producer(&'a Producer),
}

impl<'a> Fields<'a> {
    fn get(self, name: &str) -> Option<Field<'a>> {
        use Field as F;
        let e = match self {
            Fields::Producer(p) => {
                return match name {
                    "name" => Some(F::Str(&p.name)),
                    "version" => Some(F::Str(&p.version)),
                    _ => None,
                }
            }
            Fields::Event(e) => e,
        };
        if name == "producer" {
            return Some(F::Record(Fields::Producer(e.producer())));
        }
        let f = match (e, name) {
            (_, "id") => F::Uuid(e.id().0),
            (_, "actor") => F::Long(e.actor()),
            (_, "time_ms") => F::Long(e.time_ms()),
            (Event::Activity(a), "verb") => F::Str(&a.verb),
            (Event::Activity(a), "object") => F::Str(&a.object),
            (Event::Activity(a), "target") => F::OptStr(a.target.as_deref()),
            (Event::Activity(a), "to") => F::Longs(&a.to),
            (Event::Activity(a), "text") => F::Str(&a.text),
            (Event::Activity(a), "attributes") => F::StrMap(&a.attributes),
            (Event::Retraction(r), "activity_id") => F::Uuid(r.activity_id.0),
            (Event::Update(u), "activity_id") => F::Uuid(u.activity_id.0),
            (Event::Update(u), "text") => F::OptStr(u.text.as_deref()),
            (Event::Update(u), "attributes") => F::StrMap(&u.attributes),
            (Event::Graph(g), "subject") => F::Long(g.subject),
            (Event::Graph(g), "op") => F::Op(g.op),
            _ => return None,
        };
        Some(f)
    }
}

fn fields(event: &Event) -> Fields<'_> {
    Fields::Event(event)
}

fn write_record(fields: &Fields<'_>, schema: &Schema, out: &mut Vec<u8>) -> Result<(), String> {
    let Schema::Record(r) = schema else {
        return Err("expected a record schema".into());
    };
    for f in &r.fields {
        let value = fields
            .get(&f.name)
            .ok_or_else(|| format!("field `{}` has no counterpart in the domain type", f.name))?;
        write(&value, &f.schema, out).map_err(|e| format!("field `{}`: {e}", f.name))?;
    }
    Ok(())
}

fn write(value: &Field<'_>, schema: &Schema, out: &mut Vec<u8>) -> Result<(), String> {
    match (value, schema) {
        (Field::Uuid(u), Schema::Uuid | Schema::String) => {
            let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
            put_str(out, u.hyphenated().encode_lower(&mut buf));
        }
        (Field::Long(n), Schema::Long | Schema::TimestampMillis) => put_long(out, *n),
        (Field::Str(s), Schema::String) => put_str(out, s),
        (Field::OptStr(o), Schema::Union(u)) => {
            let want = |s: &Schema| match o {
                None => matches!(s, Schema::Null),
                Some(_) => matches!(s, Schema::String),
            };
            let i = u
                .variants()
                .iter()
                .position(want)
                .ok_or("expected a union of null and string")?;
            put_long(out, i as i64);
            if let Some(s) = o {
                put_str(out, s);
            }
        }
        (Field::Longs(xs), Schema::Array(a)) if matches!(*a.items, Schema::Long) => {
            if !xs.is_empty() {
                put_long(out, xs.len() as i64);
                xs.iter().for_each(|&x| put_long(out, x));
            }
            put_long(out, 0);
        }
        (Field::StrMap(m), Schema::Map(s)) if matches!(*s.types, Schema::String) => {
            if !m.is_empty() {
                put_long(out, m.len() as i64);
                for (k, v) in m.iter() {
                    put_str(out, k);
                    put_str(out, v);
                }
            }
            put_long(out, 0);
        }
        (Field::Record(fields), Schema::Record(_)) => write_record(fields, schema, out)?,
        (Field::Op(op), Schema::Enum(e)) => {
            let symbol = op_symbol(*op);
            let i = e
                .symbols
                .iter()
                .position(|s| s == symbol)
                .ok_or_else(|| format!("enum has no symbol {symbol}"))?;
            put_long(out, i as i64);
        }
        _ => return Err(format!("schema {schema:?} does not fit the domain value")),
    }
    Ok(())
}

/// The Avro enum symbol of a graph op (`FOLLOW`, …).
pub(crate) fn op_symbol(op: GraphOp) -> &'static str {
    match op {
        GraphOp::Follow => "FOLLOW",
        GraphOp::Unfollow => "UNFOLLOW",
        GraphOp::Block => "BLOCK",
        GraphOp::Unblock => "UNBLOCK",
        GraphOp::Mute => "MUTE",
        GraphOp::Unmute => "UNMUTE",
    }
}

/// Avro `long`: zig-zag, then base-128 varint, least significant group first.
fn put_long(out: &mut Vec<u8>, n: i64) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z > 0x7f {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// Avro `string`: length as a long, then the UTF-8 bytes.
fn put_str(out: &mut Vec<u8>, s: &str) {
    put_long(out, s.len() as i64);
    out.extend_from_slice(s.as_bytes());
}

/// Checks, when the registry is built, that this module can write `schema` for `kind`: a
/// representative event (every optional field set, every graph op) encodes without error.
pub(crate) fn check_writable(kind: RecordKind, schema: &Schema) -> Result<(), String> {
    for event in samples(kind) {
        write_record(&fields(&event), schema, &mut Vec::new())?;
    }
    Ok(())
}

fn samples(kind: RecordKind) -> Vec<Event> {
    use tidings_core::{Activity, EventId, GraphChange, Retraction, Update};
    let id = EventId::MIN;
    let producer = Producer::new("p", "1");
    let attributes = BTreeMap::from([("k".to_string(), "v".to_string())]);
    match kind {
        RecordKind::Activity => vec![Event::Activity(Activity {
            id,
            actor: 1,
            verb: "post".into(),
            object: "o".into(),
            target: Some("t".into()),
            time_ms: 1,
            to: vec![2],
            text: "x".into(),
            attributes,
            producer,
        })],
        RecordKind::Retraction => vec![Event::Retraction(Retraction {
            id,
            activity_id: id,
            actor: 1,
            time_ms: 1,
            producer,
        })],
        RecordKind::Update => vec![Event::Update(Update {
            id,
            activity_id: id,
            actor: 1,
            time_ms: 1,
            text: Some("x".into()),
            attributes,
            producer,
        })],
        RecordKind::GraphChange => GraphOp::ALL
            .into_iter()
            .map(|op| {
                Event::Graph(GraphChange {
                    id,
                    actor: 1,
                    subject: 2,
                    op,
                    time_ms: 1,
                    producer: producer.clone(),
                })
            })
            .collect(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn longs_are_zigzag_varints() {
        let enc = |n| {
            let mut v = Vec::new();
            put_long(&mut v, n);
            v
        };
        assert_eq!(enc(0), [0x00]);
        assert_eq!(enc(-1), [0x01]);
        assert_eq!(enc(1), [0x02]);
        assert_eq!(enc(-64), [0x7f]);
        assert_eq!(enc(64), [0x80, 0x01]);
        assert_eq!(
            enc(i64::MAX),
            [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
        );
        assert_eq!(
            enc(i64::MIN),
            [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
        );
    }

    /// Byte-for-byte the same datum as apache-avro's own encoder (one attribute, so its
    /// `HashMap` order cannot differ).
    #[test]
    fn same_bytes_as_apache_avro() {
        for kind in RecordKind::ALL {
            for sv in registry().versions_of(kind) {
                for event in samples(kind) {
                    let ours = encode_with_version(&event, sv.version()).unwrap();
                    let value =
                        apache_avro::from_avro_datum(sv.schema(), &mut &ours[10..], None).unwrap();
                    let theirs = apache_avro::to_avro_datum(sv.schema(), value).unwrap();
                    assert_eq!(ours[10..], theirs[..], "{}", sv.file());
                }
            }
        }
    }
}
