//! # tidings-consumers
//!
//! Applies events to the store. [`project::Projector`] turns decoded events into store batches
//! using the pure planners of `tidings-core` and a [`graph::StoreGraph`] view of the follow
//! graph; the Kafka consume loop (exactly-once offsets, dead letters) builds on it, running the
//! processor chain of business rules before planning ([`chain`]: hot reload, processor state in
//! the store, side outputs); [`steer`] pauses it on request and reports its lag.
//!
//! Replay and rollback (DESIGN.md, "Replay, rollback, migration, backup"): [`log`] reads
//! partition ranges without a consumer group; [`rebuild`] builds a projection from the log with
//! the same [`apply::Applier`] the live consumers use; [`versions`] switches and drops
//! projections; [`digest`] proves two projections equal; [`migrate`] copies a topic into one
//! with more partitions; [`backup`] takes hot backups, archives the log and restores.

pub mod apply;
pub mod backup;
pub mod chain;
pub mod digest;
pub mod graph;
pub mod kafka;
pub mod log;
pub mod maintain;
pub mod migrate;
pub mod project;
pub mod rebuild;
pub mod steer;
pub mod verify;
pub mod versions;
