//! The consume loop: Kafka → [`Applier`] → store, with dead letters to `tidings.dlq`.
//!
//! Partitions are owned by Kafka group assignment (default) or statically (`--instance i/n`:
//! partitions `p` with `p % n == i`, the seed design's static binding). On assignment the
//! stored offsets are read and the consumer starts there; Kafka's committed offsets are only
//! written as a lag hint for operators' tools. The loop runs on its own thread; polling,
//! applying and committing are synchronous, so a batch is either committed with its offsets
//! or not at all.
//!
//! Between batches the loop obeys the operator's pause switch and exports lag per partition
//! (see [`crate::steer`]).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tidings_producers::{KafkaConfig, Topics};

use tidings_core::control::Control;

use crate::apply::{
    Applier, DeadLetter, DeadLetterSink, Outcome, Positions, Record, Stats, TopicPartition,
};
use crate::chain::SideRecord;
use crate::log::Watermarks;
use crate::steer::{LagExporter, Monitor, Pauser};

/// Who owns which partitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Assignment {
    /// Kafka's consumer group protocol decides (rebalances on join/leave).
    Group,
    /// Static: this is instance `instance` of `of`; it owns partitions `p % of == instance`
    /// of every input topic.
    Static {
        /// This instance, `0..of`.
        instance: u32,
        /// How many instances share the topics.
        of: u32,
    },
}

impl std::str::FromStr for Assignment {
    type Err = String;

    /// `group`, or `I/N` (e.g. `0/3`).
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "group" {
            return Ok(Assignment::Group);
        }
        let bad = || format!("expected `group` or INSTANCE/COUNT like `0/3`, got {s:?}");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let instance: u32 = i.trim().parse().map_err(|_| bad())?;
        let of: u32 = n.trim().parse().map_err(|_| bad())?;
        if of == 0 || instance >= of {
            return Err(format!("instance must be in 0..COUNT, got {instance}/{of}"));
        }
        Ok(Assignment::Static { instance, of })
    }
}

/// Consume loop settings.
#[derive(Clone, Debug)]
pub struct ConsumerConfig {
    /// Brokers.
    pub kafka: KafkaConfig,
    /// Topic names.
    pub topics: Topics,
    /// Kafka consumer group (also the name offsets are stored under).
    pub group: String,
    /// Partition ownership.
    pub assignment: Assignment,
    /// Most records applied in one go (split further into ≤ 1 MB store batches).
    pub max_batch: usize,
    /// How long to wait for the first record of a batch.
    pub poll_wait: Duration,
    /// Kafka `session.timeout.ms` (tansu's first JoinGroup waits about half of it).
    pub session_timeout: Duration,
    /// After a restart or rebalance, fetch from the start of the log and skip what is
    /// stored, instead of fetching from the stored offset. Needed on tansu 0.6 (see
    /// [`start_offset`]); `tidings up` sets it for its local broker.
    pub reread_from_start: bool,
    /// Check `("meta","active")` before every batch and move to the projection it names
    /// (re-reading that projection's stored offsets), so `tidings switch` needs no restart.
    pub follow_active: bool,
    /// The switches an operator flips: the loop pauses and resumes on request (see
    /// [`crate::steer`]). Share it with the projector and the admin API.
    pub control: Arc<Control>,
    /// How often librdkafka reports statistics, the source of the high watermarks behind the
    /// lag figures (`statistics.interval.ms`).
    pub stats_interval: Duration,
}

impl ConsumerConfig {
    /// Defaults: group `tidings-fanout`, group assignment, batches of up to 1,000 records.
    pub fn new(kafka: KafkaConfig) -> Self {
        ConsumerConfig {
            kafka,
            topics: Topics::default(),
            group: "tidings-fanout".into(),
            assignment: Assignment::Group,
            max_batch: 1_000,
            poll_wait: Duration::from_millis(50),
            session_timeout: Duration::from_secs(10),
            reread_from_start: false,
            follow_active: true,
            control: Arc::default(),
            stats_interval: Duration::from_secs(1),
        }
    }
}

/// Why the loop could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    /// Kafka client error.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// Store error at start (reading offsets).
    #[error("{0}")]
    Apply(#[from] crate::apply::ApplyError),
    /// Configuration or metadata problem.
    #[error("{0}")]
    Setup(String),
}

/// Shared between the loop and the rebalance callback (which runs inside `poll`).
struct Ctx {
    /// The applier of the projection written now (replaced when the active one changes).
    applier: Mutex<Applier>,
    positions: Arc<Mutex<Positions>>,
    /// Partitions just positioned at a stored offset, to verify (see [`Probe`]).
    probes: Mutex<Vec<(TopicPartition, i64)>>,
    /// Fetch from the start of the log after every (re)positioning.
    reread: bool,
    /// High watermarks from librdkafka's statistics (for lag).
    marks: Arc<Watermarks>,
}

/// Where to start fetching a partition whose stored next offset is `stored`.
///
/// At the stored offset itself on Apache Kafka. With `reread`, at the start of the log:
/// tansu 0.6 answers a fetch from an offset inside a record batch with the *next* batch,
/// silently skipping the rest of the one asked for (or with nothing when it is the last), so
/// against it the consumer re-reads from the start after a restart or rebalance and skips
/// (without decoding) every record below the stored offset. Either way the first record
/// delivered is checked (see [`Probe`]).
fn start_offset(stored: Option<i64>, reread: bool) -> Offset {
    match stored {
        Some(x) if x > 0 && !reread => Offset::Offset(x),
        // Offset 0 rather than `Beginning`: no ListOffsets round trip (tansu's answers to it
        // are unreliable); a log that no longer starts at 0 falls back to
        // `auto.offset.reset=earliest`.
        _ => Offset::Offset(0),
    }
}

/// The stored offset to check the first delivered record against, if any: none when fetching
/// from the start anyway.
fn probe_target(stored: Option<i64>, reread: bool) -> Option<i64> {
    stored.filter(|x| *x > 0 && !reread)
}

/// A partition positioned at stored offset `target` (> 0) whose first delivered record has
/// not yet been checked. If that record lies past `target`, the broker skipped records: the
/// partition is re-read from the start of the log instead (records below `target` are skipped
/// as already applied), so nothing is ever lost to a broker's fetch quirk.
#[derive(Debug)]
struct Probe {
    target: i64,
}

impl ClientContext for Ctx {
    fn stats_raw(&self, json: &[u8]) {
        self.marks.update(json);
    }
}

impl ConsumerContext for Ctx {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let mut positions = self
                    .positions
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let tps: Vec<(String, i32)> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect();
                let applier = self
                    .applier
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                for (topic, partition) in tps {
                    match applier.stored_offset(&topic, partition) {
                        Ok(stored) => {
                            let _ = tpl.set_partition_offset(
                                &topic,
                                partition,
                                start_offset(stored, self.reread),
                            );
                            positions.insert((topic.clone(), partition), stored);
                            if let Some(x) = probe_target(stored, self.reread) {
                                self.probes
                                    .lock()
                                    .unwrap_or_else(PoisonError::into_inner)
                                    .push(((topic.clone(), partition), x));
                            }
                            tracing::info!(%topic, partition, ?stored, "partition assigned; starting at the stored offset");
                        }
                        Err(e) => {
                            // Without the stored offset we cannot start safely: leave the
                            // partition out; the loop reports the store error.
                            tracing::error!(%topic, partition, error = %e, "cannot read the stored offset; partition not started");
                            let _ = tpl.set_partition_offset(&topic, partition, Offset::Invalid);
                        }
                    }
                }
                if let Err(e) = consumer.assign(tpl) {
                    tracing::error!(error = %e, "assign failed");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let mut positions = self
                    .positions
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                for e in tpl.elements() {
                    positions.remove(&(e.topic().to_string(), e.partition()));
                    tracing::info!(
                        topic = e.topic(),
                        partition = e.partition(),
                        "partition revoked"
                    );
                }
                if let Err(e) = consumer.unassign() {
                    tracing::error!(error = %e, "unassign failed");
                }
            }
            other => tracing::error!(error = ?other, "rebalance error"),
        }
    }
}

/// Dead letters to `tidings.dlq`: the original key and value, with headers `reason`,
/// `reason-code`, `source-topic`, `source-partition`, `source-offset`, and `producer`
/// (`name@version`) when the record decoded. Also sends the processor chain's side outputs to
/// their topics (headers in [`SideRecord::headers`]).
pub struct KafkaDeadLetters {
    producer: FutureProducer,
    topic: String,
}

impl std::fmt::Debug for KafkaDeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaDeadLetters")
            .field("topic", &self.topic)
            .finish()
    }
}

impl KafkaDeadLetters {
    /// An idempotent producer to `topic`.
    pub fn new(kafka: &KafkaConfig, topic: &str) -> Result<Self, KafkaError> {
        let mut c = kafka.client();
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "1")
            .set("message.timeout.ms", "30000");
        Ok(KafkaDeadLetters {
            producer: c.create()?,
            topic: topic.to_string(),
        })
    }
}

impl DeadLetterSink for KafkaDeadLetters {
    fn send(&self, letters: &[DeadLetter]) -> Result<(), String> {
        let mut pending = Vec::with_capacity(letters.len());
        for d in letters {
            let r = &d.record;
            let partition = r.partition.to_string();
            let offset = r.offset.to_string();
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "reason",
                    value: Some(d.reason.as_bytes()),
                })
                .insert(Header {
                    key: "reason-code",
                    value: Some(d.code.as_bytes()),
                })
                .insert(Header {
                    key: "source-topic",
                    value: Some(r.topic.as_bytes()),
                })
                .insert(Header {
                    key: "source-partition",
                    value: Some(partition.as_bytes()),
                })
                .insert(Header {
                    key: "source-offset",
                    value: Some(offset.as_bytes()),
                });
            let headers = match &d.producer {
                Some(p) => headers.insert(Header {
                    key: "producer",
                    value: Some(p.as_bytes()),
                }),
                None => headers,
            };
            let mut rec: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&self.topic).headers(headers);
            if let Some(k) = &r.key {
                rec = rec.key(k.as_slice());
            }
            if let Some(v) = &r.payload {
                rec = rec.payload(v.as_slice());
            }
            pending.push(
                self.producer
                    .send_result(rec)
                    .map_err(|(e, _)| e.to_string())?,
            );
        }
        // Durable before the offset moves past them: every delivery must be acknowledged.
        for result in futures::executor::block_on(futures::future::join_all(pending)) {
            match result {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(format!("dead letter not acknowledged: {e}")),
                Err(_) => return Err("dead letter producer shut down".into()),
            }
        }
        Ok(())
    }

    fn emit(&self, outputs: &[SideRecord]) -> Result<(), String> {
        let mut pending = Vec::with_capacity(outputs.len());
        for o in outputs {
            let mut headers = OwnedHeaders::new_with_capacity(o.headers.len());
            for (k, v) in &o.headers {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(v.as_bytes()),
                });
            }
            let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&o.topic)
                .headers(headers)
                .payload(o.payload.as_slice());
            if let Some(k) = &o.key {
                rec = rec.key(k.as_slice());
            }
            pending.push((
                &o.topic,
                self.producer
                    .send_result(rec)
                    .map_err(|(e, _)| e.to_string())?,
            ));
        }
        // Acknowledged before the batch commits (at-least-once; see `chain`).
        let (topics, futs): (Vec<_>, Vec<_>) = pending.into_iter().unzip();
        let results = futures::executor::block_on(futures::future::join_all(futs));
        for (topic, result) in topics.into_iter().zip(results) {
            match result {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => {
                    return Err(format!(
                        "side output to {topic} not acknowledged: {e} (create the topic, or fix the processor's topic in the config)"
                    ))
                }
                Err(_) => return Err("side output producer shut down".into()),
            }
        }
        Ok(())
    }
}

/// A running consume loop.
#[derive(Debug)]
pub struct ConsumerHandle {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), ConsumeError>>>,
    monitor: Monitor,
}

impl ConsumerHandle {
    /// Running totals.
    pub fn stats(&self) -> Arc<Stats> {
        self.monitor.stats.clone()
    }

    /// The partitions owned right now and their stored offsets.
    pub fn positions(&self) -> Positions {
        self.monitor
            .positions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A view of the loop for readiness checks and the admin API (lag, pause, totals).
    pub fn monitor(&self) -> Monitor {
        self.monitor.clone()
    }

    /// Whether the loop thread ended (after an error, or a stop).
    pub fn finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Finishes the batch in flight, then stops.
    pub fn stop(mut self) -> Result<(), ConsumeError> {
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(ConsumeError::Setup("the consumer thread panicked".into())),
            None => Ok(()),
        }
    }
}

impl Drop for ConsumerHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts the consume loop on its own thread.
pub fn spawn(cfg: ConsumerConfig, applier: Applier) -> Result<ConsumerHandle, ConsumeError> {
    let positions: Arc<Mutex<Positions>> = Arc::default();
    let marks = Arc::new(Watermarks::default());
    let ctx = Ctx {
        applier: Mutex::new(applier.clone()),
        positions: positions.clone(),
        probes: Mutex::default(),
        reread: cfg.reread_from_start,
        marks: marks.clone(),
    };
    let mut c = cfg.kafka.client();
    c.set("group.id", &cfg.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set(
            "session.timeout.ms",
            cfg.session_timeout.as_millis().to_string(),
        )
        .set(
            "heartbeat.interval.ms",
            (cfg.session_timeout.as_millis() / 5).max(100).to_string(),
        )
        // How long the broker may hold an empty fetch. tansu 0.6 holds it the whole time even
        // when records arrive, so this bounds publish→visible latency at low load: 50 ms gave a
        // p50 of ~100 ms in `tidings bench`, 5 ms gives ~23 ms, at the cost of more (empty)
        // fetch requests while idle.
        .set("fetch.wait.max.ms", "5")
        .set("isolation.level", "read_uncommitted")
        .set(
            "statistics.interval.ms",
            cfg.stats_interval.as_millis().max(10).to_string(),
        );
    for (k, v) in &cfg.kafka.extra {
        c.set(k, v);
    }
    let consumer: BaseConsumer<Ctx> = c.create_with_context(ctx)?;
    let dlq = KafkaDeadLetters::new(&cfg.kafka, &cfg.topics.dlq)?;
    let inputs = cfg.topics.inputs();
    match cfg.assignment {
        Assignment::Group => consumer.subscribe(&inputs)?,
        Assignment::Static { instance, of } => {
            let mut tpl = TopicPartitionList::new();
            let mut pos = positions.lock().unwrap_or_else(PoisonError::into_inner);
            for topic in inputs {
                let n = tidings_producers::topics::partition_count(&cfg.kafka, topic)
                    .map_err(ConsumeError::Setup)?;
                for p in (0..n).filter(|p| *p as u32 % of == instance) {
                    let stored = applier.stored_offset(topic, p)?;
                    tpl.add_partition_offset(
                        topic,
                        p,
                        start_offset(stored, cfg.reread_from_start),
                    )?;
                    pos.insert((topic.to_string(), p), stored);
                    if let Some(x) = probe_target(stored, cfg.reread_from_start) {
                        consumer
                            .context()
                            .probes
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(((topic.to_string(), p), x));
                    }
                }
            }
            tracing::info!(instance, of, partitions = tpl.count(), "static assignment");
            consumer.assign(&tpl)?;
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let monitor = Monitor {
        positions,
        marks,
        control: cfg.control.clone(),
        stats: applier.stats(),
        running: Arc::new(AtomicBool::new(true)),
    };
    metrics::gauge!("tidings_consumer_paused").set(0.0);
    let thread = {
        let stop = stop.clone();
        let monitor = monitor.clone();
        std::thread::Builder::new()
            .name(format!("consume-{}", cfg.group))
            .spawn(move || {
                // Cleared however the loop ends, a panic included, so /ready and the admin
                // API never report a dead loop as running.
                struct NotRunning(Arc<AtomicBool>);
                impl Drop for NotRunning {
                    fn drop(&mut self) {
                        self.0.store(false, Ordering::SeqCst);
                    }
                }
                let _running = NotRunning(monitor.running.clone());
                let r = run(&cfg, &consumer, applier, &dlq, &monitor, &stop);
                if let Err(e) = &r {
                    tracing::error!(error = %e, "the consume loop stopped with an error; restart the process");
                }
                r
            })
            .map_err(|e| ConsumeError::Setup(format!("cannot start the consumer thread: {e}")))?
    };
    Ok(ConsumerHandle {
        stop,
        thread: Some(thread),
        monitor,
    })
}

/// A consumed Kafka message as an owned [`Record`].
pub fn to_record(m: &impl Message) -> Record {
    Record {
        topic: m.topic().to_string(),
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec),
        payload: m.payload().map(<[u8]>::to_vec),
        timestamp_ms: m.timestamp().to_millis(),
    }
}

fn run(
    cfg: &ConsumerConfig,
    consumer: &BaseConsumer<Ctx>,
    mut applier: Applier,
    dlq: &KafkaDeadLetters,
    monitor: &Monitor,
    stop: &AtomicBool,
) -> Result<(), ConsumeError> {
    let positions: &Mutex<Positions> = &monitor.positions;
    let mut last_hint = Instant::now();
    let mut last_lag = Instant::now();
    let mut lag = LagExporter::default();
    let mut pauser = Pauser::default();
    let mut backoff = Duration::from_millis(100);
    let mut batch: Vec<Record> = Vec::with_capacity(cfg.max_batch);
    let mut probes: HashMap<TopicPartition, Probe> = HashMap::new();
    while !stop.load(Ordering::SeqCst) {
        batch.clear();
        if last_lag.elapsed() >= cfg.stats_interval {
            lag.export(monitor);
            last_lag = Instant::now();
        }
        // Between batches: carry out a pause or resume asked for meanwhile.
        for tp in pauser.step(consumer, &cfg.control) {
            let stored = positions
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&tp)
                .copied();
            if let Some(stored) = stored {
                reposition(cfg, consumer, &mut probes, tp, stored);
            }
        }
        if pauser.paused() {
            // Polling goes on (group membership, rebalances); nothing is applied (a record
            // handed out is dropped: on resume every partition is sought back).
            let _ = consumer.poll(cfg.poll_wait.max(Duration::from_millis(50)));
            continue;
        }
        if cfg.follow_active {
            if let Err(e) = follow_active(cfg, consumer, &mut applier, positions, &mut probes) {
                tracing::error!(error = %e, retry_in = ?backoff, "cannot read the active projection; retrying");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        }
        check_positions(consumer, &mut probes, &mut batch);
        let mut wait = cfg.poll_wait;
        while batch.len() < cfg.max_batch {
            match consumer.poll(wait) {
                Some(Ok(m)) => batch.push(to_record(&m)),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "poll error (the client retries by itself)");
                    break;
                }
                None => break,
            }
            wait = Duration::ZERO;
        }
        check_positions(consumer, &mut probes, &mut batch);
        if batch.is_empty() {
            continue;
        }
        // The rebalance callback runs inside poll on this thread, so the positions seen here
        // match the assignment the records came from.
        let mut pos = positions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let outcome = loop {
            match applier.apply(&mut pos, &batch, dlq) {
                Ok(o) => break o,
                Err(e) => {
                    tracing::error!(error = %e, retry_in = ?backoff, "batch not applied (nothing of it is lost); retrying");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    if stop.load(Ordering::SeqCst) {
                        return Ok(());
                    }
                }
            }
        };
        backoff = Duration::from_millis(100);
        {
            let mut shared = positions.lock().unwrap_or_else(PoisonError::into_inner);
            for (tp, off) in &pos {
                if let Some(slot) = shared.get_mut(tp) {
                    *slot = *off;
                }
            }
        }
        if let Outcome::Fenced { stored, .. } = outcome {
            // Fenced by a switch (the active-projection guard), not by another consumer: the
            // next loop moves to the new projection and seeks to its offsets.
            let switched = cfg.follow_active
                && applier
                    .active_projection()
                    .is_ok_and(|p| p != applier.projection());
            for ((topic, partition), off) in stored {
                if switched {
                    tracing::info!(
                        %topic, partition,
                        "the active projection changed during this batch; it goes to the new one"
                    );
                } else {
                    tracing::warn!(
                        %topic, partition, stored = ?off,
                        "another consumer moved this partition's stored offset (a rebalance or a zombie); re-seeking there"
                    );
                }
                reposition(cfg, consumer, &mut probes, (topic, partition), off);
            }
        }
        if cfg.assignment == Assignment::Group && last_hint.elapsed() > Duration::from_secs(1) {
            commit_lag_hint(consumer, positions);
            last_hint = Instant::now();
        }
    }
    if cfg.assignment == Assignment::Group {
        commit_lag_hint(consumer, positions);
    }
    tracing::info!(group = %cfg.group, "consumer stopped after its last batch");
    Ok(())
}

/// Seeks a partition to where its stored next offset says (see [`start_offset`]) and arms the
/// check of the first record delivered there.
fn reposition(
    cfg: &ConsumerConfig,
    consumer: &BaseConsumer<Ctx>,
    probes: &mut HashMap<TopicPartition, Probe>,
    tp: TopicPartition,
    stored: Option<i64>,
) {
    if let Err(e) = consumer.seek(
        &tp.0,
        tp.1,
        start_offset(stored, cfg.reread_from_start),
        Duration::from_secs(5),
    ) {
        tracing::error!(topic = %tp.0, partition = tp.1, error = %e, "seek failed");
    }
    if let Some(x) = probe_target(stored, cfg.reread_from_start) {
        probes.insert(tp, Probe { target: x });
    }
}

/// Moves the loop to the projection `("meta","active")` names, if it changed: from the next
/// batch on, effects go there and every owned partition restarts from that projection's own
/// stored offsets (a rebuild stores them under this consumer's name), so nothing is lost or
/// applied twice in the new projection. Called between batches, never with one in flight.
fn follow_active(
    cfg: &ConsumerConfig,
    consumer: &BaseConsumer<Ctx>,
    applier: &mut Applier,
    positions: &Mutex<Positions>,
    probes: &mut HashMap<TopicPartition, Probe>,
) -> Result<(), crate::apply::ApplyError> {
    let Some(next) = applier.follow_active()? else {
        return Ok(());
    };
    let active = next.projection();
    let mut pos = positions.lock().unwrap_or_else(PoisonError::into_inner);
    let mut moved = Vec::new();
    for tp in pos.keys() {
        moved.push((tp.clone(), next.stored_offset(&tp.0, tp.1)?));
    }
    tracing::warn!(
        from = applier.projection(),
        to = active,
        partitions = moved.len(),
        "the active projection changed; the consumer moves to it"
    );
    *consumer
        .context()
        .applier
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = next.clone();
    for (tp, stored) in moved {
        pos.insert(tp.clone(), stored);
        reposition(cfg, consumer, probes, tp, stored);
    }
    *applier = next;
    metrics::counter!("tidings_consumer_projection_switches_total").increment(1);
    Ok(())
}

/// Checks the first record delivered for freshly positioned partitions (see [`Probe`]).
fn check_positions(
    consumer: &BaseConsumer<Ctx>,
    probes: &mut HashMap<TopicPartition, Probe>,
    batch: &mut Vec<Record>,
) {
    for (tp, target) in consumer
        .context()
        .probes
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .drain(..)
    {
        probes.insert(tp, Probe { target });
    }
    if probes.is_empty() {
        return;
    }
    let mut moved: HashSet<TopicPartition> = HashSet::new();
    batch.retain(|r| {
        let tp = r.tp();
        if moved.contains(&tp) {
            return false;
        }
        let Some(p) = probes.get(&tp) else {
            return true;
        };
        let target = p.target;
        probes.remove(&tp);
        if r.offset <= target {
            return true;
        }
        tracing::warn!(
            topic = %tp.0, partition = tp.1, stored = target, first = r.offset,
            "the broker skipped records after a seek; re-reading this partition from the start of the log"
        );
        if let Err(e) = consumer.seek(&tp.0, tp.1, Offset::Offset(0), Duration::from_secs(5)) {
            tracing::error!(topic = %tp.0, partition = tp.1, error = %e, "seek failed");
        }
        moved.insert(tp);
        false
    });
}

/// Kafka's committed offsets mirror the stored ones so lag tools see progress; they are never
/// read back for positioning.
fn commit_lag_hint(consumer: &BaseConsumer<Ctx>, positions: &Mutex<Positions>) {
    let pos = positions
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let mut tpl = TopicPartitionList::new();
    for ((t, p), off) in pos {
        if let Some(o) = off {
            let _ = tpl.add_partition_offset(&t, p, Offset::Offset(o));
        }
    }
    if tpl.count() > 0 {
        if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
            tracing::debug!(error = %e, "lag hint not committed");
        }
    }
}
