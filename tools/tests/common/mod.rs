//! Shared by the pipeline tests: a real tansu broker per test, topics, stores and polling.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use tidings_core::keys::feed::FeedKind;
use tidings_core::page::PageEntry;
use tidings_core::{EventId, UserId};
use tidings_producers::broker::{BrokerStorage, LocalBroker};
use tidings_producers::{KafkaConfig, Producer, ProducerConfig, Topics};
use tidings_query::FeedRequest;
use tidings_store::rocks::{RocksOptions, RocksStore};
use tidings_store::{RangeOptions, Store};

pub mod model;
pub mod roles;

pub const PARTITIONS: i32 = 4;

/// A spawned `tidings` process that is killed when dropped: a test that fails (panics) before
/// stopping it must not leave it running.
pub struct KillOnDrop(pub std::process::Child);

impl std::ops::Deref for KillOnDrop {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // Already exited (the test stopped it): both are no-ops.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A broker in memory with tidings' topics created.
pub fn broker(tmp: &std::path::Path) -> LocalBroker {
    broker_on(BrokerStorage::Memory, tmp)
}

/// A broker on `storage` with tidings' topics created.
pub fn broker_on(storage: BrokerStorage, tmp: &std::path::Path) -> LocalBroker {
    let b = LocalBroker::start(storage, tmp).expect(
        "start tansu (installed by scripts/setup.sh; set TIDINGS_TANSU to use another binary)",
    );
    rt().block_on(tidings_producers::topics::create(
        &b.kafka(),
        &Topics::default(),
        PARTITIONS,
    ))
    .expect("create topics");
    b
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// `actor` follows `subject` (id `EventId::MIN`: the producer assigns one).
pub fn follow(actor: UserId, subject: UserId) -> tidings_core::event::Event {
    use tidings_core::event::{Event, GraphChange, GraphOp, Producer as Who};
    Event::Graph(GraphChange {
        id: EventId::MIN,
        actor,
        subject,
        op: GraphOp::Follow,
        time_ms: model::BASE_MS,
        producer: Who::new("test", "1"),
    })
}

pub fn producer(kafka: &KafkaConfig) -> Producer {
    let mut c = ProducerConfig::new(kafka.brokers.clone());
    c.delivery_timeout = Duration::from_secs(10);
    Producer::new(c).unwrap()
}

/// Publishes every event, all in flight at once; panics unless each is acknowledged.
pub fn publish_all(
    p: &Producer,
    events: &[tidings_core::event::Event],
) -> Vec<tidings_producers::Delivery> {
    rt().block_on(futures::future::join_all(
        events.iter().cloned().map(|e| p.publish(e)),
    ))
    .into_iter()
    .map(|r| r.expect("acknowledged"))
    .collect()
}

pub fn store(dir: &std::path::Path) -> Arc<dyn Store> {
    Arc::new(RocksStore::open(dir, RocksOptions::default()).expect("open RocksDB"))
}

/// Polls `cond` until it holds or `limit` passes; panics with `what`.
pub fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("timed out after {limit:?} waiting for: {what}");
}

/// The ids in a flat page of `user`'s `kind` feed (up to 100).
pub fn feed_ids(store: &dyn Store, user: UserId, kind: FeedKind) -> Vec<EventId> {
    let req = FeedRequest {
        user,
        kind,
        limit: 100,
        cursor: None,
        aggregate: false,
    };
    let cfg = tidings_query::ReadConfig {
        rules: vec![],
        ..Default::default()
    };
    tidings_query::read(store, &req, &cfg)
        .expect("read feed")
        .entries
        .into_iter()
        .map(|e| match e {
            PageEntry::Item(i) => i.id,
            PageEntry::Group(g) => panic!("aggregate=false returned a group: {g:?}"),
        })
        .collect()
}

/// The ids in a feed's index (projection 1), hidden or not: no read-time filtering.
pub fn index_ids(
    store: &dyn Store,
    user: UserId,
    kind: FeedKind,
) -> std::collections::HashSet<EventId> {
    let sub = tidings_core::keys::feed::feed(1, user, kind);
    let (b, e) = sub.range();
    store
        .snapshot()
        .unwrap()
        .range(&b, &e, RangeOptions::default())
        .unwrap()
        .iter()
        .map(|(k, _)| {
            tidings_core::keys::feed::parse_key(&sub, k)
                .expect("an index key this build can parse")
                .id
        })
        .collect()
}

/// Every key and value in the store, for whole-store comparisons.
pub fn dump(store: &dyn Store) -> Vec<(Vec<u8>, Vec<u8>)> {
    store
        .snapshot()
        .unwrap()
        .range(&[], &[0xff], RangeOptions::default())
        .unwrap()
}

/// Every message of `topics` from the start of the log, without a consumer group's offsets,
/// until `want` arrived or 30 s passed.
pub fn read_from_start(
    kafka: &KafkaConfig,
    topics: &[&str],
    want: usize,
) -> Vec<rdkafka::message::OwnedMessage> {
    let start = Instant::now();
    read_from_start_until(kafka, topics, |read, _| {
        read.len() >= want || start.elapsed() >= Duration::from_secs(30)
    })
}

/// Every message of `topics` from the start of the log, without a consumer group's offsets,
/// polled until `enough(messages so far, time since the last one arrived)`.
pub fn read_from_start_until(
    kafka: &KafkaConfig,
    topics: &[&str],
    mut enough: impl FnMut(&[rdkafka::message::OwnedMessage], Duration) -> bool,
) -> Vec<rdkafka::message::OwnedMessage> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let mut c = kafka.client();
    c.set("group.id", "test-reader")
        .set("enable.auto.commit", "false");
    let consumer: BaseConsumer = c.create().unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for t in topics {
        for p in 0..PARTITIONS {
            tpl.add_partition_offset(t, p, rdkafka::Offset::Beginning)
                .unwrap();
        }
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let mut last = Instant::now();
    while !enough(&out, last.elapsed()) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            out.push(m.detach());
            last = Instant::now();
        }
    }
    out
}
