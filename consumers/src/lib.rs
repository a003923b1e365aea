//! # tidings-consumers
//!
//! Applies events to the store. [`project::Projector`] turns decoded events into store batches
//! using the pure planners of `tidings-core` and a [`graph::StoreGraph`] view of the follow
//! graph; the Kafka consume loop (exactly-once offsets, dead letters) builds on it.

pub mod apply;
pub mod graph;
pub mod kafka;
pub mod maintain;
pub mod project;
