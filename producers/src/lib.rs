//! # tidings-producers
//!
//! What services use to publish into tidings:
//! - [`publish::Producer`], the typed producer library (Avro single-object encoding, key =
//!   acting user id, murmur2 partitioner, idempotence on);
//! - [`gateway`], the HTTP ingest gateway built on it;
//! - [`topics`], the topic names and their creation;
//! - [`broker`], the local Kafka-API broker (tansu) for one-machine runs and tests;
//! - [`ids`] and [`partition`], the id and key/partitioner contract every producer, in any
//!   language, must follow so one user's events land on one partition in order.

pub mod broker;
pub mod gateway;
pub mod ids;
pub mod partition;
pub mod publish;
pub mod topics;

pub use publish::{Delivery, Producer, ProducerConfig, PublishError};
pub use topics::{KafkaConfig, Topics};
