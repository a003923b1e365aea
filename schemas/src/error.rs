//! [`DecodeError`]: every way a payload can fail to become an [`Event`](tidings_core::Event).
//!
//! Consumers never crash on a bad record: they dead-letter it with [`DecodeError::reason_code`]
//! in a header (and as a metric label) and the `Display` text as the human-readable reason.
//! Each variant's doc says what an operator should do about it.

use thiserror::Error;
use tidings_core::validate::ValidationError;

/// Why a payload could not be decoded (or, for [`DecodeError::Invalid`], decoded but failed
/// field validation).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The payload does not start with the single-object magic `C3 01` (this includes an empty
    /// payload). Operator: the producer is not using tidings' Avro encoding (JSON, a Confluent
    /// `00`+id framing, a Kafka tombstone…) or wrote to the wrong topic; fix the producer's
    /// serializer or topic.
    #[error(
        "payload is empty or not Avro single-object encoded (it does not start with C3 01): \
         check the producer's serializer and topic"
    )]
    NotSingleObject,

    /// The payload ends before the header or the datum is complete. Operator: the record was cut
    /// short by the producer or in transit; check the producer and any size limit between it
    /// and the broker (`max.request.size`, `message.max.bytes`).
    #[error(
        "payload ends before the record is complete: the record was cut short by the producer \
         or in transit"
    )]
    Truncated,

    /// The header names a writer schema this build does not know. Operator: a producer runs a
    /// newer schema than this consumer (deploy the build that ships it, then replay the dead
    /// letters), or the producer computes its fingerprint wrongly.
    #[error(
        "writer schema fingerprint 0x{0:016x} is not known to this build: deploy the newer \
         schemas or check the producer"
    )]
    UnknownFingerprint(u64),

    /// The datum is not valid Avro for its writer schema (bad varint, negative length, union
    /// branch out of range…); the text says where. Operator: the producer's encoder is broken
    /// or the bytes were corrupted; inspect the record with `tidings replay` and fix the producer.
    #[error("malformed Avro datum: {0}")]
    Malformed(String),

    /// Bytes remain after a complete datum. Operator: the producer appends something (or
    /// concatenates records) after the datum, or used a different schema than its header names;
    /// fix the producer.
    #[error("bytes remain after the end of the Avro datum: the producer wrote more than its schema says")]
    TrailingBytes,

    /// A field is well-framed Avro but cannot be a domain value (an id that is not a UUID, text
    /// that is not UTF-8, an enum symbol this build does not know). Operator: fix the producer
    /// that wrote this field; for an unknown symbol, deploy the build that knows it.
    #[error("field `{field}` cannot be decoded: {reason}")]
    BadField {
        /// The field, as named in the schema, e.g. `id`, `op`, `producer.name`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The record decoded but breaks the field rules of `tidings_core::validate`. Operator: the
    /// producer sends values outside the documented limits; the message names the field to fix.
    #[error("{0}")]
    Invalid(#[from] ValidationError),
}

impl DecodeError {
    /// A short, stable, low-cardinality code for dead-letter headers and metric labels.
    pub fn reason_code(&self) -> &'static str {
        match self {
            DecodeError::NotSingleObject => "not_single_object",
            DecodeError::Truncated => "truncated",
            DecodeError::UnknownFingerprint(_) => "unknown_fingerprint",
            DecodeError::Malformed(_) => "malformed",
            DecodeError::TrailingBytes => "trailing_bytes",
            DecodeError::BadField { .. } => "bad_field",
            DecodeError::Invalid(_) => "invalid",
        }
    }

    pub(crate) fn bad_field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        DecodeError::BadField {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fingerprint_message_names_the_fingerprint_in_hex_and_the_fix() {
        let e = DecodeError::UnknownFingerprint(0x0123_4567_89ab_cdef);
        assert_eq!(
            e.to_string(),
            "writer schema fingerprint 0x0123456789abcdef is not known to this build: \
             deploy the newer schemas or check the producer"
        );
        assert_eq!(e.reason_code(), "unknown_fingerprint");
    }

    #[test]
    fn reason_codes_are_distinct() {
        let all = [
            DecodeError::NotSingleObject,
            DecodeError::Truncated,
            DecodeError::UnknownFingerprint(1),
            DecodeError::Malformed(String::new()),
            DecodeError::TrailingBytes,
            DecodeError::bad_field("id", "x"),
            DecodeError::Invalid(ValidationError {
                field: "actor".into(),
                reason: "x".into(),
            }),
        ];
        let codes: std::collections::BTreeSet<_> = all.iter().map(|e| e.reason_code()).collect();
        assert_eq!(codes.len(), all.len());
    }
}
