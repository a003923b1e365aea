//! # tidings-schemas
//!
//! The wire format of tidings: versioned Avro schemas (`schemas/*.avsc`, the source of truth)
//! and the codec between them and the domain [`Event`](tidings_core::Event).
//!
//! ## Wire layout
//!
//! Every Kafka record value is one Avro **single-object encoding**:
//!
//! ```text
//! offset  size  content
//! 0       2     C3 01                      magic
//! 2       8     CRC-64-AVRO fingerprint    of the writer schema's Parsing Canonical Form,
//!                                          little-endian (as the Avro spec says)
//! 10      …     Avro binary datum          of io.tidings.{Activity,Retraction,Update,GraphChange}
//! ```
//!
//! ## Why single-object encoding
//!
//! A record names its own writer schema, so no schema-registry service has to run, be reachable
//! or be consistent; any Avro implementation (Java, Python fastavro, …) can compute the same
//! fingerprint from the `.avsc` files and read or write records (`tests/interop.rs` checks
//! Python both ways). A reader resolves the writer's schema into the latest one it knows
//! (Activity v1 data reads with empty `attributes`), so producers and consumers upgrade
//! independently as long as each new version reads every older one (tested for every pair).
//!
//! ## Use
//!
//! ```
//! use tidings_core::{Event, EventId, GraphChange, GraphOp, Producer};
//!
//! let event = Event::Graph(GraphChange {
//!     id: EventId::MIN,
//!     actor: 1,
//!     subject: 2,
//!     op: GraphOp::Follow,
//!     time_ms: 1_700_000_000_000,
//!     producer: Producer::new("graph-api", "1.0.0"),
//! });
//! let bytes = tidings_schemas::encode(&event);
//! assert_eq!(bytes[..2], [0xC3, 0x01]);
//! assert_eq!(tidings_schemas::decode_and_validate(&bytes), Ok(event));
//! ```
//!
//! Garbage never panics: every failure is a [`DecodeError`] whose
//! [`reason_code`](DecodeError::reason_code) labels the dead letter.
//!
//! ## Non-goals
//!
//! Avro object container files, a schema-registry service or Confluent framing, generic Avro
//! (only the records in this directory), and field validation (that is
//! `tidings_core::validate`; [`decode_and_validate`] chains it).
//!
//! ## Modules
//!
//! - `registry`: the `.avsc` files of this build, their fingerprints, latest version per kind;
//! - `encode`: domain → bytes, written with the latest (or a chosen) version;
//! - `decode`: bytes → domain, resolving any known older version;
//! - `frame`: the allocation-free framing check that runs before apache-avro decodes;
//! - `fingerprint`: CRC-64-AVRO and a spec-conformant canonical form;
//! - `error`: [`DecodeError`].

mod decode;
mod encode;
mod error;
mod fingerprint;
mod frame;
mod registry;
#[cfg(test)]
mod wire_tests;

pub use decode::{decode, decode_and_validate, writer_fingerprint};
pub use encode::{encode, encode_with_version};
pub use error::DecodeError;
pub use fingerprint::{canonical_form, crc64_avro, schema_fingerprint};
pub use registry::{
    fingerprint_of, latest_version, registry, schema_files, RecordKind, Registry, SchemaVersion,
    MAX_ALLOCATION_BYTES,
};

/// The two magic bytes that open every single-object-encoded record.
pub const MAGIC: [u8; 2] = [0xC3, 0x01];

/// Length of the single-object header: magic plus 8-byte fingerprint.
pub const HEADER_LEN: usize = 10;
