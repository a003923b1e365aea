//! The topics tidings uses, and creating them.
//!
//! | topic | carries | key |
//! |---|---|---|
//! | `tidings.activities` | activities, retractions, updates | acting user id, decimal ASCII |
//! | `tidings.graph` | follow / unfollow / block / unblock / mute / unmute | acting user id |
//! | `tidings.dlq` | records that could not be processed, reason in headers | the original key |

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::ClientConfig;
use tidings_core::event::Event;

/// Default partition count of newly created topics.
pub const DEFAULT_PARTITIONS: i32 = 8;

/// The names of tidings' topics (a prefix lets several deployments share a cluster).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topics {
    /// Activities, retractions, updates.
    pub activities: String,
    /// Graph changes.
    pub graph: String,
    /// Dead letters.
    pub dlq: String,
}

impl Default for Topics {
    fn default() -> Self {
        Topics::with_prefix("tidings")
    }
}

impl Topics {
    /// `{prefix}.activities`, `{prefix}.graph`, `{prefix}.dlq`.
    pub fn with_prefix(prefix: &str) -> Self {
        Topics {
            activities: format!("{prefix}.activities"),
            graph: format!("{prefix}.graph"),
            dlq: format!("{prefix}.dlq"),
        }
    }

    /// The topic an event is published to.
    pub fn for_event(&self, e: &Event) -> &str {
        match e {
            Event::Graph(_) => &self.graph,
            _ => &self.activities,
        }
    }

    /// The topics the consumers read.
    pub fn inputs(&self) -> [&str; 2] {
        [&self.activities, &self.graph]
    }

    /// All three.
    pub fn all(&self) -> [&str; 3] {
        [&self.activities, &self.graph, &self.dlq]
    }
}

/// Settings every Kafka client of tidings shares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port…]`.
    pub brokers: String,
    /// Extra librdkafka properties (`security.protocol`, `sasl.*`, …), applied last.
    pub extra: Vec<(String, String)>,
}

impl KafkaConfig {
    /// Plain connection to `brokers`.
    pub fn new(brokers: impl Into<String>) -> Self {
        KafkaConfig {
            brokers: brokers.into(),
            extra: Vec::new(),
        }
    }

    /// A librdkafka config with the brokers and the extras set.
    pub fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        // The local broker listens on IPv4 only.
        c.set("broker.address.family", "v4");
        for (k, v) in &self.extra {
            c.set(k, v);
        }
        c
    }
}

/// What [`create`] did per topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Created {
    /// The topic was created.
    New(String),
    /// It existed already (left as it is).
    Existed(String),
}

/// Creates the topics that do not exist yet with `partitions` partitions.
pub async fn create(
    kafka: &KafkaConfig,
    topics: &Topics,
    partitions: i32,
) -> Result<Vec<Created>, String> {
    create_named(kafka, &topics.all(), partitions).await
}

/// Creates the named topics that do not exist yet (e.g. the processor chain's side-output
/// topics) with `partitions` partitions.
pub async fn create_named(
    kafka: &KafkaConfig,
    names: &[&str],
    partitions: i32,
) -> Result<Vec<Created>, String> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    if partitions < 1 {
        return Err(format!("partitions must be at least 1, got {partitions}"));
    }
    let admin: AdminClient<DefaultClientContext> = kafka
        .client()
        .create()
        .map_err(|e| format!("cannot create a Kafka admin client: {e}"))?;
    let new: Vec<NewTopic<'_>> = names
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(-1)))
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin.create_topics(new.iter(), &opts).await.map_err(|e| {
        format!(
            "cannot reach the brokers at {} to create topics: {e}",
            kafka.brokers
        )
    })?;
    let mut out = Vec::new();
    for r in results {
        match r {
            Ok(name) => out.push(Created::New(name)),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => out.push(Created::Existed(name)),
            Err((name, code)) => return Err(format!("creating topic {name} failed: {code}")),
        }
    }
    Ok(out)
}

/// The partition count of `topic`, from the brokers' metadata.
pub fn partition_count(kafka: &KafkaConfig, topic: &str) -> Result<i32, String> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = kafka
        .client()
        .create()
        .map_err(|e| format!("cannot create a Kafka client: {e}"))?;
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| format!("metadata of {topic} from {}: {e}", kafka.brokers))?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| format!("topic {topic} not in the metadata"))?;
    if t.partitions().is_empty() {
        return Err(format!(
            "topic {topic} does not exist: create it with `tidings topics create`"
        ));
    }
    Ok(t.partitions().len() as i32)
}
