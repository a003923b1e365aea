//! # tidings-producers
//!
//! What services use to publish into tidings: event ids ([`ids`]) and the key/partitioner
//! contract ([`partition`]) every producer, in any language, must follow so one user's events
//! land on one partition in order. The Kafka producer library and the HTTP ingest gateway build
//! on these.

pub mod ids;
pub mod partition;
