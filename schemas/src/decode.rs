//! Decoding: `C3 01` + fingerprint + datum → [`Event`], resolving old writer schemas into the
//! latest reader schema.
//!
//! Steps, each with its own [`DecodeError`]: check the magic ([`DecodeError::NotSingleObject`]),
//! look the fingerprint up in the [`Registry`](crate::Registry)
//! ([`DecodeError::UnknownFingerprint`]), check the datum's framing against the writer schema
//! (`frame`: [`DecodeError::Truncated`], [`DecodeError::Malformed`], [`DecodeError::BadField`],
//! [`DecodeError::TrailingBytes`]) while reading every field. A record written with the latest
//! version is mapped from that walk straight onto the domain type; an older one is decoded by
//! apache-avro and resolved into the latest version of the record (defaults, promotions), then
//! mapped. Both paths are held equal by a test.
//!
//! Decoding never runs field validation: [`decode`] answers "is this a record tidings can read",
//! [`decode_and_validate`] also asks "does it obey the rules of `tidings_core::validate`". Nothing
//! here panics on any input; the proptests in `tests/garbage.rs` hold it to that.

use std::collections::BTreeMap;

use apache_avro::types::Value;
use tidings_core::{
    validate, Activity, Event, EventId, GraphChange, GraphOp, Producer, Retraction, Update,
};

use crate::encode::op_symbol;
use crate::frame::{self, Lite};
use crate::registry::{registry, RecordKind, SchemaVersion};
use crate::{DecodeError, HEADER_LEN, MAGIC};

/// The writer-schema fingerprint in a payload's header, without decoding the datum (for
/// dead-letter headers and metrics).
pub fn writer_fingerprint(payload: &[u8]) -> Result<u64, DecodeError> {
    match payload {
        [] => Err(DecodeError::NotSingleObject),
        [m0] if *m0 == MAGIC[0] => Err(DecodeError::Truncated),
        [m0, m1, ..] if [*m0, *m1] == MAGIC => {
            let fp = payload.get(2..HEADER_LEN).ok_or(DecodeError::Truncated)?;
            let mut b = [0u8; 8];
            b.copy_from_slice(fp);
            Ok(u64::from_le_bytes(b))
        }
        _ => Err(DecodeError::NotSingleObject),
    }
}

/// Decodes one single-object-encoded record, written with any schema version this build knows,
/// into the domain [`Event`]. Does not validate fields: see [`decode_and_validate`].
pub fn decode(payload: &[u8]) -> Result<Event, DecodeError> {
    let fp = writer_fingerprint(payload)?;
    let reg = registry();
    let writer = reg
        .by_fingerprint(fp)
        .ok_or(DecodeError::UnknownFingerprint(fp))?;
    let datum = &payload[HEADER_LEN..];
    let (lite, used) = frame::read(writer.schema(), datum)?;
    if used != datum.len() {
        return Err(DecodeError::TrailingBytes);
    }
    let reader = reg.latest(writer.kind());
    if reader.fingerprint() == writer.fingerprint() {
        // Written with the latest version: the framing walk already read every field.
        return to_event(writer.kind(), &mut LiteRecord::new("", lite)?);
    }
    via_avro(writer, reader, payload)
}

/// An older version: apache-avro decodes it and resolves it into the latest (defaults,
/// promotions). The payload's framing must have been checked.
fn via_avro(
    writer: &SchemaVersion,
    reader: &SchemaVersion,
    payload: &[u8],
) -> Result<Event, DecodeError> {
    let value = writer
        .read(payload)
        .and_then(|v| {
            if reader.fingerprint() == writer.fingerprint() {
                Ok(v)
            } else {
                v.resolve(reader.schema())
            }
        })
        .map_err(|e| DecodeError::Malformed(e.to_string()))?;
    to_event(writer.kind(), &mut LiteRecord::new("", lite(&value)?)?)
}

/// Borrows an apache-avro value as a [`Lite`] one, so one mapping serves both decode paths.
fn lite(v: &Value) -> Result<Lite<'_, '_>, DecodeError> {
    Ok(match v {
        Value::Null => Lite::Null,
        Value::Boolean(b) => Lite::Bool(*b),
        Value::Int(n) => Lite::Long((*n).into()),
        Value::Long(n) | Value::TimestampMillis(n) => Lite::Long(*n),
        Value::String(s) => Lite::Str(s),
        Value::Uuid(u) => Lite::Uuid(*u),
        Value::Enum(_, symbol) => Lite::Enum(symbol),
        Value::Union(_, v) => lite(v)?,
        Value::Array(items) => Lite::Array(items.iter().map(lite).collect::<Result<_, _>>()?),
        Value::Map(m) => Lite::Map(
            m.iter()
                .map(|(k, v)| Ok((k.as_str(), lite(v)?)))
                .collect::<Result<_, DecodeError>>()?,
        ),
        Value::Record(fields) => Lite::Record(
            fields
                .iter()
                .map(|(n, v)| Ok((n.as_str(), lite(v)?)))
                .collect::<Result<_, DecodeError>>()?,
        ),
        other => {
            return Err(DecodeError::Malformed(format!(
                "unexpected value in a resolved record: {other:?}"
            )))
        }
    })
}

/// [`decode`], then `tidings_core::validate::event`: [`DecodeError::Invalid`] if a field breaks
/// the rules.
pub fn decode_and_validate(payload: &[u8]) -> Result<Event, DecodeError> {
    let event = decode(payload)?;
    validate::event(&event)?;
    Ok(event)
}

/// The symbol of a [`GraphOp`] back to the op.
fn op_named(symbol: &str) -> Option<GraphOp> {
    GraphOp::ALL.into_iter().find(|&op| op_symbol(op) == symbol)
}

/// Why an enum symbol is not an op this build knows.
fn unknown_op(symbol: &str) -> String {
    format!("unknown symbol {symbol:?}: deploy the build that knows it")
}

/// A decoded record's fields, taken out by name: read by the framing walk (the latest writer
/// version) or borrowed from the value apache-avro resolved an older one into ([`lite`]).
struct LiteRecord<'d, 's> {
    /// Prefix for field names in errors (`""` or `"producer."`).
    prefix: &'static str,
    fields: Vec<(&'s str, Lite<'d, 's>)>,
}

impl<'d, 's> LiteRecord<'d, 's> {
    fn new(prefix: &'static str, value: Lite<'d, 's>) -> Result<Self, DecodeError> {
        match value {
            Lite::Record(fields) => Ok(LiteRecord { prefix, fields }),
            other => Err(DecodeError::Malformed(format!(
                "expected a record{}, got {other:?}",
                prefix.trim_end_matches('.')
            ))),
        }
    }

    fn bad(&self, name: &str, reason: impl Into<String>) -> DecodeError {
        DecodeError::bad_field(format!("{}{name}", self.prefix), reason)
    }

    fn take(&mut self, name: &str) -> Result<Lite<'d, 's>, DecodeError> {
        let i = self
            .fields
            .iter()
            .position(|(n, _)| *n == name)
            .ok_or_else(|| self.bad(name, "missing from the record"))?;
        Ok(std::mem::replace(&mut self.fields[i].1, Lite::Null))
    }

    fn mismatch(&self, name: &str, expected: &str, got: &Lite<'_, '_>) -> DecodeError {
        self.bad(name, format!("expected {expected}, got {got:?}"))
    }
}

impl LiteRecord<'_, '_> {
    fn id(&mut self, name: &str) -> Result<EventId, DecodeError> {
        match self.take(name)? {
            Lite::Str(s) => s
                .parse()
                .map(EventId)
                .map_err(|e| self.bad(name, format!("{s:?} is not a UUID: {e}"))),
            Lite::Uuid(u) => Ok(EventId(u)),
            other => Err(self.mismatch(name, "a UUID", &other)),
        }
    }

    fn long(&mut self, name: &str) -> Result<i64, DecodeError> {
        match self.take(name)? {
            Lite::Long(n) => Ok(n),
            other => Err(self.mismatch(name, "a long", &other)),
        }
    }

    fn string(&mut self, name: &str) -> Result<String, DecodeError> {
        match self.take(name)? {
            Lite::Str(s) => Ok(s.to_string()),
            other => Err(self.mismatch(name, "a string", &other)),
        }
    }

    fn opt_string(&mut self, name: &str) -> Result<Option<String>, DecodeError> {
        match self.take(name)? {
            Lite::Null => Ok(None),
            Lite::Str(s) => Ok(Some(s.to_string())),
            other => Err(self.mismatch(name, "null or a string", &other)),
        }
    }

    fn longs(&mut self, name: &str) -> Result<Vec<i64>, DecodeError> {
        match self.take(name)? {
            Lite::Array(items) => items
                .into_iter()
                .map(|v| match v {
                    Lite::Long(n) => Ok(n),
                    other => Err(self.mismatch(name, "an array of longs", &other)),
                })
                .collect(),
            other => Err(self.mismatch(name, "an array", &other)),
        }
    }

    fn string_map(&mut self, name: &str) -> Result<BTreeMap<String, String>, DecodeError> {
        match self.take(name)? {
            Lite::Map(entries) => entries
                .into_iter()
                .map(|(k, v)| match v {
                    Lite::Str(s) => Ok((k.to_string(), s.to_string())),
                    other => Err(self.mismatch(name, "string values", &other)),
                })
                .collect(),
            other => Err(self.mismatch(name, "a map", &other)),
        }
    }

    fn producer(&mut self, name: &str) -> Result<Producer, DecodeError> {
        let mut p = LiteRecord::new("producer.", self.take(name)?)?;
        Ok(Producer {
            name: p.string("name")?,
            version: p.string("version")?,
        })
    }

    fn op(&mut self, name: &str) -> Result<GraphOp, DecodeError> {
        match self.take(name)? {
            Lite::Enum(symbol) => {
                op_named(symbol).ok_or_else(|| self.bad(name, unknown_op(symbol)))
            }
            other => Err(self.mismatch(name, "an enum symbol", &other)),
        }
    }
}

/// Maps a value resolved into the latest schema of `kind` onto the domain type.
fn to_event(kind: RecordKind, r: &mut LiteRecord<'_, '_>) -> Result<Event, DecodeError> {
    Ok(match kind {
        RecordKind::Activity => Event::Activity(Activity {
            id: r.id("id")?,
            actor: r.long("actor")?,
            verb: r.string("verb")?,
            object: r.string("object")?,
            target: r.opt_string("target")?,
            time_ms: r.long("time_ms")?,
            to: r.longs("to")?,
            text: r.string("text")?,
            attributes: r.string_map("attributes")?,
            producer: r.producer("producer")?,
        }),
        RecordKind::Retraction => Event::Retraction(Retraction {
            id: r.id("id")?,
            activity_id: r.id("activity_id")?,
            actor: r.long("actor")?,
            time_ms: r.long("time_ms")?,
            producer: r.producer("producer")?,
        }),
        RecordKind::Update => Event::Update(Update {
            id: r.id("id")?,
            activity_id: r.id("activity_id")?,
            actor: r.long("actor")?,
            time_ms: r.long("time_ms")?,
            text: r.opt_string("text")?,
            attributes: r.string_map("attributes")?,
            producer: r.producer("producer")?,
        }),
        RecordKind::GraphChange => Event::Graph(GraphChange {
            id: r.id("id")?,
            actor: r.long("actor")?,
            subject: r.long("subject")?,
            op: r.op("op")?,
            time_ms: r.long("time_ms")?,
            producer: r.producer("producer")?,
        }),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The framing walk's direct mapping and apache-avro's decoding agree on every shape a
    /// latest-version record can take (optional fields both ways, maps, arrays, enums).
    #[test]
    fn direct_and_apache_avro_decoding_agree() {
        let who = Producer {
            name: "svc".into(),
            version: "1.2.3".into(),
        };
        let id = |n: u64| EventId(uuid::Uuid::from_u64_pair(0x0190_0000_0000_7000, n));
        let mut attributes = BTreeMap::new();
        attributes.insert("lang".to_string(), "en".to_string());
        attributes.insert("ü".to_string(), "∑".to_string());
        let events = vec![
            Event::Activity(Activity {
                id: id(1),
                actor: -7,
                verb: "like".into(),
                object: "post:1".into(),
                target: Some("user:9".into()),
                time_ms: 1_793_491_200_000,
                to: vec![1, i64::MAX, -1],
                text: "héllo".into(),
                attributes: attributes.clone(),
                producer: who.clone(),
            }),
            Event::Activity(Activity {
                id: id(2),
                actor: 1,
                verb: "post".into(),
                object: "post:2".into(),
                target: None,
                time_ms: 0,
                to: vec![],
                text: String::new(),
                attributes: BTreeMap::new(),
                producer: who.clone(),
            }),
            Event::Retraction(Retraction {
                id: id(3),
                activity_id: id(1),
                actor: 1,
                time_ms: 5,
                producer: who.clone(),
            }),
            Event::Update(Update {
                id: id(4),
                activity_id: id(2),
                actor: 1,
                time_ms: 6,
                text: Some("edited".into()),
                attributes,
                producer: who.clone(),
            }),
        ]
        .into_iter()
        .chain(GraphOp::ALL.into_iter().enumerate().map(|(i, op)| {
            Event::Graph(GraphChange {
                id: id(10 + i as u64),
                actor: 2,
                subject: 3,
                op,
                time_ms: 7,
                producer: who.clone(),
            })
        }));
        for e in events {
            let payload = crate::encode(&e);
            let reg = registry();
            let writer = reg
                .by_fingerprint(writer_fingerprint(&payload).unwrap())
                .unwrap();
            let latest = reg.latest(writer.kind());
            assert_eq!(
                writer.fingerprint(),
                latest.fingerprint(),
                "encode writes the latest"
            );
            let direct = decode(&payload).unwrap();
            assert_eq!(direct, e);
            assert_eq!(via_avro(writer, latest, &payload).unwrap(), direct);
        }
    }
}
