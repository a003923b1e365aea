//! Framing check: walks a datum against its writer schema before apache-avro decodes it.
//!
//! This pass allocates nothing and reads every varint, length, union branch and enum index, so
//! that decoding can tell apart what an operator needs told apart, and so that no bogus length
//! ever reaches an allocator:
//!
//! - the input ends early → [`DecodeError::Truncated`] (apache-avro instead turns an early end
//!   inside a string or union into `null`, and its errors do not say "truncated");
//! - a length, union branch or varint is impossible → [`DecodeError::Malformed`], naming the field;
//! - a UUID that does not parse, text that is not UTF-8, an enum index past the symbols →
//!   [`DecodeError::BadField`];
//! - it returns how many bytes the datum used, so the caller can report trailing bytes.
//!
//! Every length is checked against the bytes actually left in the input, so whatever
//! apache-avro's process-wide allocation limit is, decoding allocates at most about the size of
//! the payload. Only the schema features the `.avsc` files use are supported;
//! [`check_supported`] rejects anything else when the registry is built.

use apache_avro::Schema;
use uuid::Uuid;

use crate::DecodeError;

/// A value read by the framing walk: strings borrowed from the datum, field and enum symbol
/// names from the schema (or, for older writer versions, all borrowed from apache-avro's value). Decoding the latest writer version maps it straight onto the domain
/// type (no apache-avro `Value`, whose records allocate every field name).
#[derive(Debug)]
pub(crate) enum Lite<'d, 's> {
    Null,
    /// No event field is a boolean today; kept so the walk reads every supported type.
    #[allow(dead_code)]
    Bool(bool),
    Long(i64),
    /// A string or a UUID (already checked to parse).
    Str(&'d str),
    /// A UUID apache-avro already parsed (records of older writer versions, see `decode`).
    Uuid(Uuid),
    /// An enum symbol.
    Enum(&'s str),
    Array(Vec<Lite<'d, 's>>),
    Map(Vec<(&'d str, Lite<'d, 's>)>),
    Record(Vec<(&'s str, Lite<'d, 's>)>),
}

/// Reads one complete, well-formed value of `schema` from the start of `datum`; returns it and
/// the number of bytes it takes.
pub(crate) fn read<'d, 's>(
    schema: &'s Schema,
    datum: &'d [u8],
) -> Result<(Lite<'d, 's>, usize), DecodeError> {
    let mut c = Cursor {
        buf: datum,
        pos: 0,
        path: Vec::new(),
    };
    let v = c.value(schema)?;
    Ok((v, c.pos))
}

/// Checks that `datum` begins with one complete, well-formed value of `schema`; returns the
/// number of bytes it takes.
#[cfg(test)]
pub(crate) fn check(schema: &Schema, datum: &[u8]) -> Result<usize, DecodeError> {
    read(schema, datum).map(|(_, n)| n)
}

/// Rejects schema features [`check`] does not walk.
pub(crate) fn check_supported(schema: &Schema) -> Result<(), String> {
    match schema {
        Schema::Null
        | Schema::Boolean
        | Schema::Int
        | Schema::Long
        | Schema::TimestampMillis
        | Schema::String
        | Schema::Uuid
        | Schema::Enum(_) => Ok(()),
        Schema::Array(a) => check_supported(&a.items),
        Schema::Map(m) => check_supported(&m.types),
        Schema::Union(u) => u.variants().iter().try_for_each(check_supported),
        Schema::Record(r) => r.fields.iter().try_for_each(|f| {
            check_supported(&f.schema).map_err(|e| format!("field `{}`: {e}", f.name))
        }),
        other => Err(format!(
            "schema type {:?} is not supported by the framing check (src/frame.rs); add it there",
            apache_avro::schema::SchemaKind::from(other)
        )),
    }
}

struct Cursor<'d, 's> {
    buf: &'d [u8],
    pos: usize,
    /// Field names from the root to the current value, for error messages.
    path: Vec<&'s str>,
}

impl<'d, 's> Cursor<'d, 's> {
    fn field(&self) -> String {
        if self.path.is_empty() {
            "<root>".to_string()
        } else {
            self.path.join(".")
        }
    }

    fn malformed(&self, what: impl std::fmt::Display) -> DecodeError {
        DecodeError::Malformed(format!(
            "field `{}` at byte {}: {what}",
            self.field(),
            self.pos
        ))
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn byte(&mut self) -> Result<u8, DecodeError> {
        let b = *self.buf.get(self.pos).ok_or(DecodeError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    /// A zig-zag varint of at most 10 bytes, as apache-avro reads it.
    fn long(&mut self) -> Result<i64, DecodeError> {
        let mut z = 0u64;
        for i in 0..10 {
            let b = self.byte()?;
            z |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(((z >> 1) as i64) ^ -((z & 1) as i64));
            }
        }
        Err(self.malformed("varint longer than 10 bytes"))
    }

    /// A byte length that must fit in what is left of the input.
    fn len(&mut self) -> Result<usize, DecodeError> {
        let n = self.long()?;
        let n = usize::try_from(n).map_err(|_| self.malformed(format!("negative length {n}")))?;
        if n > self.remaining() {
            return Err(DecodeError::Truncated);
        }
        Ok(n)
    }

    fn bytes(&mut self) -> Result<&'d [u8], DecodeError> {
        let n = self.len()?;
        let b = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(b)
    }

    fn str(&mut self) -> Result<&'d str, DecodeError> {
        let b = self.bytes()?;
        std::str::from_utf8(b)
            .map_err(|e| DecodeError::bad_field(self.field(), format!("not UTF-8: {e}")))
    }

    /// Block count of an array or map: `Some(n)` items follow, `None` ends it. Each item takes
    /// at least one byte here, so a count beyond the input means it was cut short.
    fn block(&mut self) -> Result<Option<usize>, DecodeError> {
        let n = self.long()?;
        if n == 0 {
            return Ok(None);
        }
        if n < 0 {
            // A negative count is followed by the block's size in bytes.
            let size = self.long()?;
            if size < 0 {
                return Err(self.malformed(format!("negative block size {size}")));
            }
        }
        let n = usize::try_from(n.unsigned_abs()).unwrap_or(usize::MAX);
        if n > self.remaining() {
            return Err(DecodeError::Truncated);
        }
        Ok(Some(n))
    }

    fn value(&mut self, schema: &'s Schema) -> Result<Lite<'d, 's>, DecodeError> {
        Ok(match schema {
            Schema::Null => Lite::Null,
            Schema::Boolean => {
                let b = self.byte()?;
                if b > 1 {
                    return Err(self.malformed(format!("boolean byte {b}")));
                }
                Lite::Bool(b == 1)
            }
            Schema::Int => {
                let n = self.long()?;
                if i32::try_from(n).is_err() {
                    return Err(self.malformed(format!("int {n} out of range")));
                }
                Lite::Long(n)
            }
            Schema::Long | Schema::TimestampMillis => Lite::Long(self.long()?),
            Schema::String => Lite::Str(self.str()?),
            Schema::Uuid => {
                let s = self.str()?;
                if let Err(e) = Uuid::try_parse(s) {
                    return Err(DecodeError::bad_field(
                        self.field(),
                        format!("{s:?} is not a UUID: {e}"),
                    ));
                }
                Lite::Str(s)
            }
            Schema::Enum(e) => {
                let i = self.long()?;
                match usize::try_from(i).ok().and_then(|i| e.symbols.get(i)) {
                    Some(symbol) => Lite::Enum(symbol),
                    None => {
                        return Err(DecodeError::bad_field(
                            self.field(),
                            format!(
                                "symbol index {i} is not one of the {} symbols of {}",
                                e.symbols.len(),
                                e.name
                            ),
                        ))
                    }
                }
            }
            Schema::Array(a) => {
                let mut items = Vec::new();
                while let Some(n) = self.block()? {
                    items.reserve(n);
                    for _ in 0..n {
                        items.push(self.value(&a.items)?);
                    }
                }
                Lite::Array(items)
            }
            Schema::Map(m) => {
                let mut entries = Vec::new();
                while let Some(n) = self.block()? {
                    entries.reserve(n);
                    for _ in 0..n {
                        let k = self.str()?;
                        entries.push((k, self.value(&m.types)?));
                    }
                }
                Lite::Map(entries)
            }
            Schema::Union(u) => {
                let i = self.long()?;
                let variant = usize::try_from(i)
                    .ok()
                    .and_then(|i| u.variants().get(i))
                    .ok_or_else(|| self.malformed(format!("union branch {i} does not exist")))?;
                self.value(variant)?
            }
            Schema::Record(r) => {
                let mut fields = Vec::with_capacity(r.fields.len());
                for f in &r.fields {
                    self.path.push(&f.name);
                    let v = self.value(&f.schema)?;
                    self.path.pop();
                    fields.push((f.name.as_str(), v));
                }
                Lite::Record(fields)
            }
            other => {
                return Err(self.malformed(format!(
                    "unsupported schema type {:?}",
                    apache_avro::schema::SchemaKind::from(other)
                )))
            }
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn schema(json: &str) -> Schema {
        Schema::parse_str(json).unwrap()
    }

    #[test]
    fn huge_string_length_is_truncated_not_allocated() {
        // length 2^60 (zig-zag), then nothing
        let mut datum = vec![0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x20];
        datum.extend_from_slice(b"abc");
        assert_eq!(
            check(&schema(r#""string""#), &datum),
            Err(DecodeError::Truncated)
        );
    }

    #[test]
    fn negative_length_is_malformed() {
        let e = check(&schema(r#""string""#), &[0x01]).unwrap_err();
        assert!(
            matches!(e, DecodeError::Malformed(ref m) if m.contains("negative length -1")),
            "{e}"
        );
    }

    #[test]
    fn eleven_byte_varint_is_malformed() {
        let e = check(&schema(r#""long""#), &[0xff; 11]).unwrap_err();
        assert!(matches!(e, DecodeError::Malformed(_)), "{e}");
    }

    #[test]
    fn negative_block_counts_carry_a_size() {
        let s = schema(r#"{"type":"array","items":"long"}"#);
        // count -2, size 2 bytes, items 1 and 2, end
        assert_eq!(check(&s, &[0x03, 0x04, 0x02, 0x04, 0x00]), Ok(5));
    }

    #[test]
    fn bad_union_branch_and_enum_index_name_the_field() {
        let s = schema(
            r#"{"type":"record","name":"R","fields":[
                {"name":"t","type":["null","string"]},
                {"name":"e","type":{"type":"enum","name":"E","symbols":["A","B"]}}]}"#,
        );
        let e = check(&s, &[0x04]).unwrap_err();
        assert!(
            matches!(e, DecodeError::Malformed(ref m) if m.contains("field `t`")),
            "{e}"
        );
        assert_eq!(
            check(&s, &[0x00, 0x04]).unwrap_err().reason_code(),
            "bad_field",
            "enum index 2 of 2 symbols"
        );
        assert_eq!(check(&s, &[0x00, 0x02]), Ok(2));
    }
}
