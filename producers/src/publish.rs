//! The typed producer library: events → Avro single-object encoding → Kafka.
//!
//! ```no_run
//! # async fn f() -> Result<(), tidings_producers::PublishError> {
//! use tidings_producers::{Producer, ProducerConfig};
//! let producer = Producer::new(ProducerConfig::new("127.0.0.1:9092"))?;
//! # let event: tidings_core::event::Event = todo!();
//! let delivery = producer.publish(event).await?; // acknowledged by the broker
//! println!("{} at {}/{}", delivery.id, delivery.partition, delivery.offset);
//! # Ok(()) }
//! ```
//!
//! The contract every producer in any language keeps: the key is the acting user's id as
//! decimal ASCII and the partitioner is murmur2 (Java's default), so one user's events land on
//! one partition, in order. Idempotence is on, so a retry inside the client cannot duplicate a
//! record; the event id is the idempotency key downstream, so a retry by the caller (same id)
//! cannot duplicate an effect either.

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use tidings_core::clock::{Clock, SystemClock};
use tidings_core::event::Event;
use tidings_core::validate::{self, ValidationError};
use tidings_core::EventId;

use crate::ids::new_event_id;
use crate::topics::{KafkaConfig, Topics};

/// Producer settings.
#[derive(Clone, Debug)]
pub struct ProducerConfig {
    /// Where the brokers are.
    pub kafka: KafkaConfig,
    /// Topic names.
    pub topics: Topics,
    /// How long a record may wait in the client before it is sent (batching).
    pub linger: Duration,
    /// How long to keep retrying before a publish fails (the caller then gets an error, never
    /// a silent loss).
    pub delivery_timeout: Duration,
}

impl ProducerConfig {
    /// Defaults tuned for throughput with a bounded wait.
    pub fn new(brokers: impl Into<String>) -> Self {
        ProducerConfig {
            kafka: KafkaConfig::new(brokers),
            topics: Topics::default(),
            linger: Duration::from_millis(5),
            delivery_timeout: Duration::from_secs(10),
        }
    }
}

/// Where an acknowledged event landed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Delivery {
    /// The event's id (assigned here if the caller left it nil).
    pub id: EventId,
    /// The topic written.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset in that partition.
    pub offset: i64,
}

/// Why a publish failed. Nothing was acknowledged: the caller may retry with the same event.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The event is invalid; it was not sent.
    #[error("invalid event: {0}")]
    Invalid(#[from] ValidationError),
    /// The brokers did not acknowledge it in time (unreachable, or overloaded).
    #[error("the brokers did not acknowledge the event: {0}")]
    Unavailable(KafkaError),
    /// The client could not be created (bad configuration).
    #[error("bad Kafka client configuration: {0}")]
    Config(KafkaError),
}

/// A producer of tidings events; cheap to clone (one librdkafka client underneath).
#[derive(Clone)]
pub struct Producer {
    inner: FutureProducer,
    topics: Topics,
    clock: std::sync::Arc<dyn Clock>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

/// Whether an event's id is unset (nil): the producer assigns one.
fn id_unset(e: &Event) -> bool {
    e.id() == EventId::MIN
}

fn set_id(e: &mut Event, id: EventId) {
    match e {
        Event::Activity(a) => a.id = id,
        Event::Retraction(r) => r.id = id,
        Event::Update(u) => u.id = id,
        Event::Graph(g) => g.id = id,
    }
}

impl Producer {
    /// Connects lazily: the first publish fails with [`PublishError::Unavailable`] if no
    /// broker answers within the delivery timeout.
    pub fn new(cfg: ProducerConfig) -> Result<Self, PublishError> {
        let mut c = cfg.kafka.client();
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("partitioner", "murmur2_random")
            .set("linger.ms", cfg.linger.as_millis().to_string())
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.messages", "1000000")
            .set(
                "message.timeout.ms",
                cfg.delivery_timeout.as_millis().to_string(),
            );
        for (k, v) in &cfg.kafka.extra {
            c.set(k, v);
        }
        let inner: FutureProducer = c.create().map_err(PublishError::Config)?;
        Ok(Producer {
            inner,
            topics: cfg.topics,
            clock: std::sync::Arc::new(SystemClock),
        })
    }

    /// The topic names in use.
    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// Validates, encodes and publishes one event; returns once the broker acknowledged it.
    /// An event with a nil id gets a fresh UUIDv7; keep the returned id to retry safely.
    pub async fn publish(&self, mut event: Event) -> Result<Delivery, PublishError> {
        if id_unset(&event) {
            set_id(&mut event, new_event_id(&*self.clock));
        }
        validate::event(&event)?;
        let payload = tidings_schemas::encode(&event);
        let key = event.kafka_key();
        let topic = self.topics.for_event(&event).to_string();
        let headers = OwnedHeaders::new().insert(Header {
            key: "tidings-producer",
            value: Some(event.producer().to_string().as_bytes()),
        });
        let record = FutureRecord::to(&topic)
            .key(&key)
            .payload(&payload)
            .timestamp(event.time_ms())
            .headers(headers);
        let result = self.inner.send(record, Duration::ZERO).await;
        match result {
            Ok(d) => {
                metrics::counter!("tidings_published_total", "topic" => topic.clone(), "verb" => event.verb_label()).increment(1);
                Ok(Delivery {
                    id: event.id(),
                    topic,
                    partition: d.partition,
                    offset: d.offset,
                })
            }
            Err((e, _)) => {
                metrics::counter!("tidings_publish_failures_total", "topic" => topic).increment(1);
                Err(PublishError::Unavailable(e))
            }
        }
    }

    /// Publishes raw bytes with a key (tests and tools: the dead-letter path, foreign
    /// producers). Returns (partition, offset).
    pub async fn publish_raw(
        &self,
        topic: &str,
        key: &[u8],
        payload: &[u8],
        headers: &[(&str, &[u8])],
    ) -> Result<(i32, i64), PublishError> {
        let mut h = OwnedHeaders::new();
        for (k, v) in headers {
            h = h.insert(Header {
                key: k,
                value: Some(*v),
            });
        }
        let record = FutureRecord::to(topic).key(key).payload(payload).headers(h);
        match self.inner.send(record, Duration::ZERO).await {
            Ok(d) => Ok((d.partition, d.offset)),
            Err((e, _)) => Err(PublishError::Unavailable(e)),
        }
    }

    /// Waits until everything queued was acknowledged (or `timeout` passed).
    pub fn flush(&self, timeout: Duration) -> Result<(), PublishError> {
        self.inner.flush(timeout).map_err(PublishError::Unavailable)
    }
}

/// Whether a Kafka error means "the brokers are unreachable or did not answer in time".
pub fn is_unavailable(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageTimedOut
                | RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::QueueFull
                | RDKafkaErrorCode::RequestTimedOut
        )
    )
}
