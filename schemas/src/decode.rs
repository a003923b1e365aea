//! Decoding: `C3 01` + fingerprint + datum → [`Event`], resolving old writer schemas into the
//! latest reader schema.
//!
//! Steps, each with its own [`DecodeError`]: check the magic ([`DecodeError::NotSingleObject`]),
//! look the fingerprint up in the [`Registry`](crate::Registry)
//! ([`DecodeError::UnknownFingerprint`]), check the datum's framing against the writer schema
//! (`frame`: [`DecodeError::Truncated`], [`DecodeError::Malformed`], [`DecodeError::BadField`],
//! [`DecodeError::TrailingBytes`]), let apache-avro decode it and resolve it into the latest
//! version of the record (`from_avro_datum(writer, bytes, Some(reader))`; skipped when the writer
//! already is the latest), then map the Avro value onto the domain type.
//!
//! Decoding never runs field validation: [`decode`] answers "is this a record tidings can read",
//! [`decode_and_validate`] also asks "does it obey the rules of `tidings_core::validate`". Nothing
//! here panics on any input; the proptests in `tests/garbage.rs` hold it to that.

use std::collections::{BTreeMap, HashMap};

use apache_avro::types::Value;
use tidings_core::{
    validate, Activity, Event, EventId, GraphChange, GraphOp, Producer, Retraction, Update,
};

use crate::encode::op_symbol;
use crate::registry::{registry, RecordKind};
use crate::{frame, DecodeError, HEADER_LEN, MAGIC};

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
    let used = frame::check(writer.schema(), datum)?;
    if used != datum.len() {
        return Err(DecodeError::TrailingBytes);
    }
    let reader = reg.latest(writer.kind());
    let reader_schema = (reader.fingerprint() != writer.fingerprint()).then(|| reader.schema());
    // `frame::check` walked the datum to its end, so the reader consumes exactly the payload.
    let value = writer
        .read(payload)
        .and_then(|v| match reader_schema {
            Some(schema) => v.resolve(schema),
            None => Ok(v),
        })
        .map_err(|e| DecodeError::Malformed(e.to_string()))?;
    to_event(writer.kind(), value)
}

/// [`decode`], then `tidings_core::validate::event`: [`DecodeError::Invalid`] if a field breaks
/// the rules.
pub fn decode_and_validate(payload: &[u8]) -> Result<Event, DecodeError> {
    let event = decode(payload)?;
    validate::event(&event)?;
    Ok(event)
}

/// The fields of a decoded record, taken out by name.
struct Record {
    /// Prefix for field names in errors (`""` or `"producer."`).
    prefix: &'static str,
    fields: Vec<(String, Value)>,
}

impl Record {
    fn new(prefix: &'static str, value: Value) -> Result<Record, DecodeError> {
        match value {
            Value::Record(fields) => Ok(Record { prefix, fields }),
            other => Err(DecodeError::Malformed(format!(
                "expected a record{}, got {other:?}",
                prefix.trim_end_matches('.')
            ))),
        }
    }

    fn bad(&self, name: &str, reason: impl Into<String>) -> DecodeError {
        DecodeError::bad_field(format!("{}{name}", self.prefix), reason)
    }

    fn take(&mut self, name: &str) -> Result<Value, DecodeError> {
        let i = self
            .fields
            .iter()
            .position(|(n, _)| n == name)
            .ok_or_else(|| self.bad(name, "missing from the resolved record"))?;
        Ok(std::mem::replace(&mut self.fields[i].1, Value::Null))
    }

    fn mismatch(&self, name: &str, expected: &str, got: &Value) -> DecodeError {
        self.bad(name, format!("expected {expected}, got {got:?}"))
    }

    fn id(&mut self, name: &str) -> Result<EventId, DecodeError> {
        match self.take(name)? {
            Value::Uuid(u) => Ok(EventId(u)),
            Value::String(s) => s
                .parse()
                .map_err(|e| self.bad(name, format!("{s:?} is not a UUID: {e}"))),
            other => Err(self.mismatch(name, "a UUID", &other)),
        }
    }

    fn long(&mut self, name: &str) -> Result<i64, DecodeError> {
        match self.take(name)? {
            Value::Long(n) | Value::TimestampMillis(n) => Ok(n),
            Value::Int(n) => Ok(n.into()),
            other => Err(self.mismatch(name, "a long", &other)),
        }
    }

    fn string(&mut self, name: &str) -> Result<String, DecodeError> {
        match self.take(name)? {
            Value::String(s) => Ok(s),
            other => Err(self.mismatch(name, "a string", &other)),
        }
    }

    fn opt_string(&mut self, name: &str) -> Result<Option<String>, DecodeError> {
        match self.take(name)? {
            Value::Union(_, v) => match *v {
                Value::Null => Ok(None),
                Value::String(s) => Ok(Some(s)),
                other => Err(self.mismatch(name, "null or a string", &other)),
            },
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s)),
            other => Err(self.mismatch(name, "null or a string", &other)),
        }
    }

    fn longs(&mut self, name: &str) -> Result<Vec<i64>, DecodeError> {
        match self.take(name)? {
            Value::Array(items) => items
                .into_iter()
                .map(|v| match v {
                    Value::Long(n) => Ok(n),
                    other => Err(self.mismatch(name, "an array of longs", &other)),
                })
                .collect(),
            other => Err(self.mismatch(name, "an array", &other)),
        }
    }

    fn string_map(&mut self, name: &str) -> Result<BTreeMap<String, String>, DecodeError> {
        match self.take(name)? {
            Value::Map(m) => to_string_map(m).map_err(|v| self.mismatch(name, "string values", &v)),
            other => Err(self.mismatch(name, "a map", &other)),
        }
    }

    fn producer(&mut self, name: &str) -> Result<Producer, DecodeError> {
        let mut p = Record::new("producer.", self.take(name)?)?;
        Ok(Producer {
            name: p.string("name")?,
            version: p.string("version")?,
        })
    }

    fn op(&mut self, name: &str) -> Result<GraphOp, DecodeError> {
        match self.take(name)? {
            Value::Enum(_, symbol) => GraphOp::ALL
                .into_iter()
                .find(|&op| op_symbol(op) == symbol)
                .ok_or_else(|| {
                    self.bad(
                        name,
                        format!("unknown symbol {symbol:?}: deploy the build that knows it"),
                    )
                }),
            other => Err(self.mismatch(name, "an enum symbol", &other)),
        }
    }
}

fn to_string_map(m: HashMap<String, Value>) -> Result<BTreeMap<String, String>, Value> {
    m.into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k, s)),
            other => Err(other),
        })
        .collect()
}

/// Maps a value resolved into the latest schema of `kind` onto the domain type.
fn to_event(kind: RecordKind, value: Value) -> Result<Event, DecodeError> {
    let mut r = Record::new("", value)?;
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
