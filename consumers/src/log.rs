//! Reading ranges of the log without a consumer group: replay, rebuild and migration.
//!
//! A [`LogReader`] `assign()`s the partitions it is given (it never `subscribe()`s, so it
//! joins no group and triggers no rebalance) and never commits, so the live consumers' offsets
//! — Kafka's and the store's — do not move. Each partition has a range `[start, end)`; an
//! open end is fixed at the **high watermark the fetch answers report** (through librdkafka's
//! statistics, see [`Watermarks`]; tansu 0.6's ListOffsets(latest) can be wrong) by
//! [`LogReader::fix_ends`], so a bounded read stops at the head seen at start.
//!
//! Records come out in two orders:
//! - [`LogReader::next_polled`]: as fetched (fast; per-partition order only), for replay;
//! - [`LogReader::next_merged`]: a deterministic merge of every partition by (record
//!   timestamp, topic, partition), each partition in offset order, for rebuilds: the order
//!   depends only on the log, never on fetch timing, so the same log always yields the same
//!   projection, and resuming from stored per-partition offsets continues the same sequence.
//!   A reader opened for it ([`LogReader::open_merged`]) takes each partition's records from
//!   that partition's own librdkafka queue, which librdkafka bounds per partition by fetching
//!   no more of it. Through the one shared queue a merge had to buffer partitions itself and
//!   pause the full ones; librdkafka fetches a resumed partition from its last delivered
//!   record, mostly inside a record batch, which tansu 0.6 answers with a later batch, so the
//!   partition was read again from offset 0 (7 of 16 partitions in a rebuild of a 1.3M-record
//!   log). And the first record of every partition comes as soon as it is fetched, not after
//!   every record queued before it (the first merged record came ~50 ms sooner; the local
//!   broker itself answers partition after partition).
//!
//! Broker quirk handled here as in the consume loop: tansu 0.6 answers a fetch starting inside
//! a record batch with the next batch (or with nothing). The first record of a partition
//! positioned past 0 is checked, and so is the first after a partition paused (its buffer
//! full: [`BUFFER_CAP`]) is resumed, since librdkafka then fetches again from the last record
//! it delivered; past the position, the partition is re-read from offset 0 and what lies below
//! it is dropped (`reread` does that up front for the start).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use tidings_producers::KafkaConfig;

use crate::apply::{Record, TopicPartition};

/// Buffered records per partition before its fetching pauses (records fetched while the ends
/// are fixed, on a reader without partition queues), or, with partition queues, queued in
/// librdkafka before it stops fetching that partition.
const BUFFER_CAP: usize = 50_000;

/// Records taken from a partition's own queue at a time (merge mode): the rest wait in
/// librdkafka's queue, which bounds itself per partition.
const REFILL: usize = 256;

/// Bytes queued per partition in librdkafka (merge mode) before it stops fetching that
/// partition.
const PARTITION_QUEUE_KB: &str = "32768";

/// Records a merge read takes from partition queues between two services of the consumer's
/// own queue (statistics, errors).
const READ_BETWEEN_SERVES: usize = 4096;

/// How long a positioned partition may stay silent below its high watermark before it is
/// re-read from offset 0 (tansu 0.6 can answer a fetch inside a record batch with nothing).
const PROBE_STALL: Duration = Duration::from_secs(2);

/// A partition to read, from `start` (inclusive) to `end` (exclusive; `None`: the high
/// watermark at start, or forever when following).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionRange {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// First offset wanted.
    pub start: i64,
    /// First offset not wanted.
    pub end: Option<i64>,
}

/// Why reading failed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Kafka client error.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The brokers did not answer in time.
    #[error("{0}")]
    Timeout(String),
    /// librdkafka gave no queue of its own for a partition (an unknown topic or partition).
    #[error("cannot read partition {0}:{1} on its own: is it a partition of the topic?")]
    NoQueue(String, i32),
}

/// One record with its headers (only when asked for: [`LogReader::with_headers`]).
pub type Headered = (Record, Vec<(String, Vec<u8>)>);

/// What the next call produced.
#[derive(Debug)]
pub enum Next {
    /// A record within its partition's range.
    Record(Box<Headered>),
    /// Nothing yet (call again; check your stop flag).
    Waiting,
    /// Every partition reached its end.
    End,
}

#[derive(Debug)]
struct Part {
    /// Next offset wanted (records below are dropped).
    next: i64,
    end: Option<i64>,
    /// Stop before the first record with a timestamp after this.
    time_limit: Option<i64>,
    /// The first delivered record must be at or below this (see the module doc).
    probe: Option<i64>,
    /// When the reader was opened: a probe still unanswered [`PROBE_STALL`] later, below a
    /// known high watermark, means the broker answers this position with nothing at all.
    opened: Instant,
    buf: VecDeque<Headered>,
    paused: bool,
    /// Rank of the topic in the merge order.
    topic_rank: usize,
}

impl Part {
    fn done(&self) -> bool {
        self.end.is_some_and(|e| self.next >= e) && self.buf.is_empty()
    }
}

/// A group-less, commit-less reader of partition ranges.
pub struct LogReader {
    consumer: Arc<BaseConsumer<Watermarks>>,
    parts: BTreeMap<TopicPartition, Part>,
    /// Each partition's own queue (a reader opened by [`LogReader::open_merged`]); empty: every
    /// record comes through the consumer's queue.
    queues: BTreeMap<TopicPartition, PartitionQueue<Watermarks>>,
    /// Records taken since the consumer's own queue was last served (merge mode).
    since_served: usize,
    headers: bool,
    /// Buffered records per partition before its fetching pauses ([`BUFFER_CAP`]).
    buffer_cap: usize,
}

impl std::fmt::Debug for LogReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogReader")
            .field("parts", &self.parts.len())
            .finish()
    }
}

/// The partition count of every topic.
pub fn partitions_of(kafka: &KafkaConfig, topic: &str) -> Result<i32, String> {
    tidings_producers::topics::partition_count(kafka, topic)
}

impl LogReader {
    /// Assigns `ranges`. `reread`: fetch from offset 0 and drop what lies below each start
    /// (for tansu 0.6; see the module doc). Topic order in `ranges` is the merge tie-break.
    pub fn open(
        kafka: &KafkaConfig,
        ranges: &[PartitionRange],
        reread: bool,
    ) -> Result<Self, LogError> {
        LogReader::opened(kafka, ranges, reread, false)
    }

    /// [`LogReader::open`] for [`LogReader::next_merged`]: every partition's records come
    /// through its own queue (see the module doc), which librdkafka bounds per partition.
    pub fn open_merged(
        kafka: &KafkaConfig,
        ranges: &[PartitionRange],
        reread: bool,
    ) -> Result<Self, LogError> {
        LogReader::opened(kafka, ranges, reread, true)
    }

    fn opened(
        kafka: &KafkaConfig,
        ranges: &[PartitionRange],
        reread: bool,
        merged: bool,
    ) -> Result<Self, LogError> {
        let mut c = kafka.client();
        c.set("group.id", "tidings-log-reader")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "20")
            .set("fetch.max.bytes", "104857600")
            .set("max.partition.fetch.bytes", "16777216")
            .set("queued.max.messages.kbytes", "262144")
            // librdkafka stops fetching a partition once 100,000 messages are queued and then
            // waits fetch.queue.backoff.ms (1 s) before looking again: a reader that drains
            // faster than that sat idle a third of the time (replay read 180k → 300k+ events/s).
            .set("queued.min.messages", "1000000")
            .set("fetch.queue.backoff.ms", "0")
            .set("isolation.level", "read_uncommitted")
            .set("statistics.interval.ms", STATS_INTERVAL_MS);
        if merged {
            // Per partition once its queue is its own.
            c.set("queued.min.messages", BUFFER_CAP.to_string())
                .set("queued.max.messages.kbytes", PARTITION_QUEUE_KB);
        }
        for (k, v) in &kafka.extra {
            c.set(k, v);
        }
        let consumer: Arc<BaseConsumer<Watermarks>> =
            Arc::new(c.create_with_context(Watermarks::default())?);
        let mut tpl = TopicPartitionList::new();
        let mut parts = BTreeMap::new();
        let mut topics: Vec<&str> = Vec::new();
        for r in ranges {
            if !topics.contains(&r.topic.as_str()) {
                topics.push(&r.topic);
            }
            let start = r.start.max(0);
            let from = if reread || start == 0 { 0 } else { start };
            tpl.add_partition_offset(&r.topic, r.partition, Offset::Offset(from))?;
            parts.insert(
                (r.topic.clone(), r.partition),
                Part {
                    next: start,
                    end: r.end,
                    time_limit: None,
                    probe: (from > 0).then_some(from),
                    opened: Instant::now(),
                    buf: VecDeque::new(),
                    paused: false,
                    topic_rank: topics.iter().position(|t| *t == r.topic).unwrap_or(0),
                },
            );
        }
        consumer.assign(&tpl)?;
        let mut queues = BTreeMap::new();
        if merged {
            // After `assign`, which would undo it; before any poll.
            for tp in parts.keys() {
                let q = consumer
                    .split_partition_queue(&tp.0, tp.1)
                    .ok_or_else(|| LogError::NoQueue(tp.0.clone(), tp.1))?;
                queues.insert(tp.clone(), q);
            }
        }
        Ok(LogReader {
            consumer,
            parts,
            queues,
            since_served: 0,
            headers: false,
            buffer_cap: BUFFER_CAP,
        })
    }

    /// Pauses a partition's fetching at `records` buffered instead of [`BUFFER_CAP`] (at
    /// least 2).
    pub fn with_buffer_cap(mut self, records: usize) -> Self {
        self.buffer_cap = records.max(2);
        self
    }

    /// Also collect each record's headers (migration copies them).
    pub fn with_headers(mut self) -> Self {
        self.headers = true;
        self
    }

    /// Stops every partition before its first record stamped after `limit_ms`.
    pub fn stop_after_time(&mut self, limit_ms: i64) {
        for p in self.parts.values_mut() {
            p.time_limit = Some(limit_ms);
        }
    }

    /// Fixes every end at the first high watermark reported after a fetch answer (a given end
    /// beyond it is lowered to it; records fetched meanwhile are kept). Returns each partition's end.
    pub fn fix_ends(&mut self, limit: Duration) -> Result<BTreeMap<TopicPartition, i64>, LogError> {
        let started = Instant::now();
        loop {
            let missing: Vec<TopicPartition> = self
                .parts
                .keys()
                .filter(|tp| self.consumer.context().get(tp).is_none())
                .cloned()
                .collect();
            if missing.is_empty() {
                break;
            }
            if started.elapsed() > limit {
                return Err(LogError::Timeout(format!(
                    "no fetch answer with a high watermark within {limit:?} for {missing:?}: are the brokers up and the topics created?"
                )));
            }
            self.poll_into_buffers(Duration::from_millis(20));
        }
        let mut ends = BTreeMap::new();
        for (tp, p) in self.parts.iter_mut() {
            let hi = self.consumer.context().get(tp).ok_or_else(|| {
                LogError::Timeout(format!("the high watermark of {tp:?} is no longer known"))
            })?;
            // Statistics can lag the fetches: a record already accepted existed at start too.
            let hi = hi.max(p.next);
            let end = p.end.map_or(hi, |e| e.min(hi));
            p.end = Some(end);
            p.buf.retain(|(r, _)| r.offset < end);
            ends.insert(tp.clone(), end);
        }
        Ok(ends)
    }

    /// Opens every end again (following the head after a bounded catch-up).
    pub fn open_ends(&mut self) {
        for (tp, p) in self.parts.iter_mut() {
            p.end = None;
            if p.paused {
                resume(&self.consumer, tp, p);
            }
        }
    }

    /// The next offset wanted per partition (where a bounded read stopped).
    pub fn positions(&self) -> BTreeMap<TopicPartition, i64> {
        self.parts
            .iter()
            .map(|(tp, p)| (tp.clone(), p.buf.front().map_or(p.next, |(r, _)| r.offset)))
            .collect()
    }

    /// Whether every partition reached its end.
    pub fn done(&self) -> bool {
        self.parts.values().all(Part::done)
    }

    /// The next record as fetched.
    pub fn next_polled(&mut self, wait: Duration) -> Next {
        if let Some(r) = self.pop_buffered() {
            return Next::Record(Box::new(r));
        }
        if self.done() {
            return Next::End;
        }
        if !self.queues.is_empty() {
            // Partition queues (a merge read now following the head): what any of them holds,
            // else a short wait on the consumer's own queue, which serves its callbacks.
            let tps: Vec<TopicPartition> = self.queues.keys().cloned().collect();
            for tp in &tps {
                self.refill(tp, Duration::ZERO);
            }
            if let Some(r) = self.pop_buffered() {
                return Next::Record(Box::new(r));
            }
            self.poll_into_buffers(wait.min(Duration::from_millis(5)));
            self.unstall();
            return Next::Waiting;
        }
        let Some(m) = self.consumer.poll(wait) else {
            self.unstall();
            return Next::Waiting;
        };
        match m {
            Ok(m) => match accept(&mut self.parts, &self.consumer, self.headers, &m) {
                Some(r) => Next::Record(Box::new(r)),
                None => Next::Waiting,
            },
            Err(e) => {
                tracing::warn!(error = %e, "fetch error (the client retries by itself)");
                Next::Waiting
            }
        }
    }

    /// A buffered record, if any. Its partition resumes once its buffer is half empty (paused
    /// when full while the ends were fixed).
    fn pop_buffered(&mut self) -> Option<Headered> {
        let (consumer, cap) = (&self.consumer, self.buffer_cap);
        self.parts
            .iter_mut()
            .find_map(|(tp, p)| pop_head(consumer, cap, tp, p))
    }

    /// The next record in merge order (see the module doc): waits until every unfinished
    /// partition has a record buffered, then hands out the smallest (timestamp, topic,
    /// partition).
    pub fn next_merged(&mut self, wait: Duration) -> Next {
        loop {
            let mut best: Option<(&TopicPartition, (i64, usize, i32))> = None;
            let mut blocked = false;
            for (tp, p) in &self.parts {
                match p.buf.front() {
                    Some((r, _)) => {
                        let k = (r.timestamp_ms.unwrap_or(0), p.topic_rank, tp.1);
                        if best.as_ref().is_none_or(|(_, b)| k < *b) {
                            best = Some((tp, k));
                        }
                    }
                    None if p.done() => {}
                    None => blocked = true,
                }
            }
            if !blocked {
                let Some((tp, _)) = best else {
                    return Next::End;
                };
                let tp = tp.clone();
                let p = self.parts.get_mut(&tp).expect("a buffered partition");
                let r = pop_head(&self.consumer, self.buffer_cap, &tp, p).expect("a head");
                if !self.queues.is_empty() {
                    if p.buf.is_empty() && !p.done() {
                        self.refill(&tp, Duration::ZERO);
                    }
                    self.since_served += 1;
                    if self.since_served >= READ_BETWEEN_SERVES {
                        // Statistics (the watermarks) and errors come through it.
                        self.since_served = 0;
                        self.poll_into_buffers(Duration::ZERO);
                    }
                }
                return Next::Record(Box::new(r));
            }
            let got = if self.queues.is_empty() {
                self.poll_into_buffers(wait)
            } else {
                self.refill_blocked(wait)
            };
            if !got {
                self.unstall();
                return Next::Waiting;
            }
        }
    }

    /// Takes up to [`REFILL`] records of `tp` from its own queue, waiting up to `wait` for the
    /// first; whether any came (wanted or not).
    fn refill(&mut self, tp: &TopicPartition, wait: Duration) -> bool {
        let (Some(q), Some(p)) = (self.queues.get(tp), self.parts.get_mut(tp)) else {
            return false;
        };
        let mut wait = wait;
        for n in 0..REFILL {
            match q.poll(wait) {
                None => return n > 0,
                Some(Ok(m)) => {
                    if let Some(r) = accept_into(p, &self.consumer, self.headers, &m) {
                        p.buf.push_back(r);
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(topic = %tp.0, partition = tp.1, error = %e, "fetch error (the client retries by itself)");
                    return n > 0;
                }
            }
            wait = Duration::ZERO;
        }
        true
    }

    /// Refills every partition that blocks the merge (nothing buffered, not done): the first
    /// waiting up to `wait`, the others not waiting. Serves the consumer's own queue too.
    /// Whether any record came.
    fn refill_blocked(&mut self, wait: Duration) -> bool {
        self.since_served = 0;
        let mut got = self.poll_into_buffers(Duration::ZERO);
        let blocked: Vec<TopicPartition> = self
            .parts
            .iter()
            .filter(|(_, p)| p.buf.is_empty() && !p.done())
            .map(|(tp, _)| tp.clone())
            .collect();
        let mut wait = wait;
        for tp in &blocked {
            if self.refill(tp, wait) {
                got = true;
            }
            // Waiting on one queue lets the others fill meanwhile.
            wait = Duration::ZERO;
        }
        got
    }

    /// Re-reads from offset 0 every partition whose start position got no answer for
    /// [`PROBE_STALL`] although records lie past it (see [`PROBE_STALL`]).
    fn unstall(&mut self) {
        for (tp, p) in self.parts.iter_mut() {
            let Some(target) = p.probe else { continue };
            let behind = self
                .consumer
                .context()
                .get(tp)
                .is_some_and(|hi| hi > target);
            if behind && p.opened.elapsed() > PROBE_STALL {
                tracing::warn!(
                    topic = %tp.0, partition = tp.1, wanted = target,
                    "no records came back from this position; re-reading this partition from offset 0"
                );
                p.probe = None;
                if let Err(e) =
                    self.consumer
                        .seek(&tp.0, tp.1, Offset::Offset(0), Duration::from_secs(5))
                {
                    tracing::warn!(topic = %tp.0, partition = tp.1, error = %e, "seek to 0 failed");
                }
            }
        }
    }

    /// Polls what is there into the partition buffers; false if nothing came within `wait`.
    fn poll_into_buffers(&mut self, wait: Duration) -> bool {
        let mut any = false;
        let mut wait = wait;
        for _ in 0..10_000 {
            let Some(m) = self.consumer.poll(wait) else {
                break;
            };
            wait = Duration::ZERO;
            any = true;
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "fetch error (the client retries by itself)");
                    break;
                }
            };
            if let Some(r) = accept(&mut self.parts, &self.consumer, self.headers, &m) {
                let tp = r.0.tp();
                if let Some(p) = self.parts.get_mut(&tp) {
                    p.buf.push_back(r);
                    if p.buf.len() >= self.buffer_cap && !p.paused {
                        let mut tpl = TopicPartitionList::new();
                        let _ = tpl.add_partition(&tp.0, tp.1);
                        let _ = self.consumer.pause(&tpl);
                        p.paused = true;
                    }
                }
            }
        }
        any
    }
}

/// The high watermark of every assigned partition as the fetch answers gave it, taken from
/// librdkafka's statistics (`hi_offset`, the very value librdkafka caches per partition from
/// fetch answers). rdkafka 0.39 has no safe call for the cached value itself: its
/// `fetch_watermarks` sends a ListOffsets request, which tansu 0.6 can answer wrongly, and
/// messages carry no watermark. Statistics come every [`STATS_INTERVAL_MS`] through `poll`.
#[derive(Debug, Default)]
pub struct Watermarks(Mutex<HashMap<TopicPartition, i64>>);

/// How often librdkafka reports statistics (and so the high watermarks) to a [`LogReader`].
const STATS_INTERVAL_MS: &str = "100";

impl Watermarks {
    /// The last reported high watermark of `tp`; `None` before the first fetch answer.
    pub fn get(&self, tp: &TopicPartition) -> Option<i64> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(tp)
            .copied()
    }

    /// Takes the high watermarks out of one librdkafka statistics document (JSON).
    pub fn update(&self, json: &[u8]) {
        #[derive(serde::Deserialize)]
        struct Stats {
            #[serde(default)]
            topics: HashMap<String, Topic>,
        }
        #[derive(serde::Deserialize)]
        struct Topic {
            #[serde(default)]
            partitions: HashMap<String, Part>,
        }
        #[derive(serde::Deserialize)]
        struct Part {
            partition: i32,
            hi_offset: i64,
        }
        let stats: Stats = match serde_json::from_slice(json) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "unreadable librdkafka statistics");
                return;
            }
        };
        let mut marks = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for (topic, t) in stats.topics {
            for p in t.partitions.into_values() {
                if p.partition >= 0 && p.hi_offset >= 0 {
                    marks.insert((topic.clone(), p.partition), p.hi_offset);
                }
            }
        }
    }
}

impl ClientContext for Watermarks {
    fn stats_raw(&self, json: &[u8]) {
        self.update(json);
    }
}

impl ConsumerContext for Watermarks {}

/// The head of `p`'s buffer, if any; a paused partition resumes once its buffer (of `cap`
/// records) is half empty.
fn pop_head(
    consumer: &BaseConsumer<Watermarks>,
    cap: usize,
    tp: &TopicPartition,
    p: &mut Part,
) -> Option<Headered> {
    let r = p.buf.pop_front()?;
    if p.paused && p.buf.len() < cap / 2 {
        resume(consumer, tp, p);
    }
    Some(r)
}

/// Resumes fetching a paused partition. librdkafka dropped what it had fetched of it beyond
/// the records delivered and fetches again from there: most likely inside a record batch,
/// which tansu 0.6 answers with the next batch (or nothing), so the position is checked as a
/// fresh one is (see the module doc) — before, such gaps were taken for the log's own.
fn resume(consumer: &BaseConsumer<Watermarks>, tp: &TopicPartition, p: &mut Part) {
    let mut tpl = TopicPartitionList::new();
    let _ = tpl.add_partition(&tp.0, tp.1);
    let _ = consumer.resume(&tpl);
    p.paused = false;
    p.probe = Some(p.next);
    p.opened = Instant::now();
}

/// Range, probe and time checks for one fetched message; the record if it is wanted.
fn accept(
    parts: &mut BTreeMap<TopicPartition, Part>,
    consumer: &BaseConsumer<Watermarks>,
    with_headers: bool,
    m: &impl Message,
) -> Option<Headered> {
    let tp = (m.topic().to_string(), m.partition());
    accept_into(parts.get_mut(&tp)?, consumer, with_headers, m)
}

/// [`accept`] for a message of the partition `p`.
fn accept_into(
    p: &mut Part,
    consumer: &BaseConsumer<Watermarks>,
    with_headers: bool,
    m: &impl Message,
) -> Option<Headered> {
    let offset = m.offset();
    if let Some(target) = p.probe.take() {
        if offset > target {
            tracing::warn!(
                topic = %m.topic(), partition = m.partition(), wanted = target, got = offset,
                "the broker skipped records after positioning; re-reading this partition from offset 0"
            );
            let _ = consumer.seek(
                m.topic(),
                m.partition(),
                Offset::Offset(0),
                Duration::from_secs(5),
            );
            return None;
        }
    }
    if offset < p.next || p.end.is_some_and(|e| offset >= e) {
        return None;
    }
    let ts = m.timestamp().to_millis();
    if let (Some(limit), Some(ts)) = (p.time_limit, ts) {
        if ts > limit {
            // The log as it stood at the limit ends here for this partition.
            p.end = Some(p.end.map_or(offset, |e| e.min(offset)));
            return None;
        }
    }
    p.next = offset + 1;
    // Asked only when wanted: librdkafka parses a message's headers (allocating) on the first
    // ask, about half of this function's time in a replay read.
    let headers = match with_headers.then(|| m.headers()).flatten() {
        Some(h) => h
            .iter()
            .map(|h| {
                (
                    h.key.to_string(),
                    h.value.map(<[u8]>::to_vec).unwrap_or_default(),
                )
            })
            .collect(),
        None => Vec::new(),
    };
    Some((crate::kafka::to_record(m), headers))
}
