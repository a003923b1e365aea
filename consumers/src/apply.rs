//! Exactly-once application of consumed records (DESIGN.md, "Exactly-once effects").
//!
//! [`Applier::apply`] takes records as polled from Kafka and turns them into store batches.
//! Every batch carries, for each partition it advances, the new offset **and the precondition
//! that the stored offset is still the one this consumer last saw**. So:
//!
//! - a crash before a commit loses nothing (the records are polled again from the stored
//!   offset), a crash after it doubles nothing (records below the stored offset are skipped);
//! - a zombie that lost its partition but still polls fails the precondition
//!   ([`Outcome::Fenced`]) and must re-seek to the stored offset;
//! - a fan-out too large for one batch is committed in steps; the offset stays on the event
//!   until the last step, and the event's progress key tells a restart where to resume.
//!
//! Events in one batch are planned against an [`Overlay`] of the snapshot and the batch's own
//! pending writes, so each event sees the ones before it exactly as if committed alone.
//! Records that cannot be decoded or are rejected become dead letters, acknowledged by the
//! dead-letter sink **before** the batch that moves the offset past them is committed.
//!
//! Between decoding and planning, each event goes through the processor chain (see
//! [`crate::chain`]): it may be dropped, stopped or dead-lettered (its offset still moves),
//! transformed (the re-encoded body is stored), routed, and it may push side outputs, which the
//! sink acknowledges before the commit, like dead letters. The chain's state writes join the
//! batch and the overlay, so later events of the batch see them.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tidings_core::clock::Clock;
use tidings_core::event::Event;
use tidings_core::fanout::{FanoutOptions, Plan, Spread};
use tidings_core::keys::{self, Projection};
use tidings_core::process::{Flow, Input, Verdict};
use tidings_core::write::{decode_i64, encode_i64};
use tidings_core::Mutation;
use tidings_schemas::DecodeError;
use tidings_store::fasthash::FastMap;
use tidings_store::{Delta, KeyGroups, Memo, Overlay, ReadCache, Store, WriteBatch};

use crate::chain::{self, ChainHandle, SideRecord, StoreState, Tally};
use crate::graph::FollowerMemo;
use crate::project::{ProjectError, Projector};
use tidings_core::process::Chain;

/// Aim for store batches under this many bytes (FoundationDB's advice: under 1 MB).
pub const BATCH_BYTES: usize = 1 << 20;

/// How long a batch plans against one read view before it is committed: well inside the view's
/// lifetime ([`tidings_store::limits::READ_VIEW_LIFETIME`]), as one event may still read after.
const VIEW_USE: std::time::Duration = std::time::Duration::from_secs(2);

/// `(topic, partition)`.
pub type TopicPartition = (String, i32);

/// One consumed record, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Source topic.
    pub topic: String,
    /// Source partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Kafka key (the actor's id as decimal ASCII).
    pub key: Option<Vec<u8>>,
    /// The Avro single-object encoded event.
    pub payload: Option<Vec<u8>>,
    /// Broker or producer timestamp, ms since the epoch.
    pub timestamp_ms: Option<i64>,
}

impl Record {
    /// Its topic and partition.
    pub fn tp(&self) -> TopicPartition {
        (self.topic.clone(), self.partition)
    }
}

/// A record with its payload decoded and validated ahead, off the planning thread (a
/// rebuild's reader decodes while the planner plans).
#[derive(Debug)]
pub struct Decoded {
    /// The record.
    pub record: Record,
    event: Option<Result<Event, DecodeError>>,
}

impl Decoded {
    /// Decodes and validates `record`'s payload.
    pub fn new(record: Record) -> Decoded {
        let event = decode(&record);
        Decoded { record, event }
    }
}

/// `r`'s payload decoded and validated (`None`: it has none).
fn decode(r: &Record) -> Option<Result<Event, DecodeError>> {
    r.payload
        .as_deref()
        .map(tidings_schemas::decode_and_validate)
}

/// A record for the bulk planner: borrowed (decoded as it is planned) or decoded ahead.
#[expect(
    clippy::large_enum_variant,
    reason = "moved once per record in a stream; boxing would allocate per record"
)]
enum Incoming<'r> {
    Borrowed(&'r Record),
    Decoded(Decoded),
}

/// A record that could not be applied, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// The record, as consumed.
    pub record: Record,
    /// A stable machine-readable reason (`bad_magic`, `unknown_fingerprint`, `invalid_field`,
    /// `rejected`, …): the `reason` header and the metric label.
    pub code: String,
    /// What is wrong, for people.
    pub reason: String,
    /// `name@version` of the producer that published the record, when it decoded (events
    /// that failed validation or were rejected): the `producer` header, for the error digest.
    pub producer: Option<String>,
}

/// Where dead letters and side outputs go; both methods return once everything is durable.
pub trait DeadLetterSink {
    /// Sends and waits for acknowledgement; an error means "not durable, do not move on".
    fn send(&self, letters: &[DeadLetter]) -> Result<(), String>;
    /// Sends the processor chain's side outputs and waits for acknowledgement, like
    /// [`DeadLetterSink::send`] (a rebuild's sink counts them instead: they were sent live).
    fn emit(&self, outputs: &[SideRecord]) -> Result<(), String>;
}

/// The expected stored offset per partition this consumer owns (`None`: nothing stored yet).
pub type Positions = HashMap<TopicPartition, Option<i64>>;

/// What one [`Applier::apply`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Events applied.
    pub events: u64,
    /// Records sent to the dead letter topic.
    pub dead: u64,
    /// Records skipped because the store already had them (redelivery after a restart).
    pub skipped: u64,
    /// Feed index entries written or removed.
    pub entries: u64,
    /// Store batches committed.
    pub batches: u64,
    /// Events the processor chain dropped.
    pub dropped: u64,
    /// Events the processor chain stopped (`term`).
    pub terminated: u64,
    /// Side outputs sent.
    pub side_outputs: u64,
}

impl Applied {
    /// Adds `other`'s counts to these.
    fn absorb(&mut self, other: &Applied) {
        self.events += other.events;
        self.dead += other.dead;
        self.skipped += other.skipped;
        self.entries += other.entries;
        self.batches += other.batches;
        self.dropped += other.dropped;
        self.terminated += other.terminated;
        self.side_outputs += other.side_outputs;
    }
}

/// The result of applying a run of records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Everything was applied (or skipped as already applied).
    Done(Applied),
    /// Another consumer moved a stored offset: this one no longer owns these partitions'
    /// positions. The stored offsets are given; seek there. What was committed before the
    /// conflict stays (it is in `applied`).
    Fenced {
        /// Work committed before the conflict.
        applied: Applied,
        /// The stored offsets of the partitions involved, to seek to.
        stored: BTreeMap<TopicPartition, Option<i64>>,
    },
}

/// Why applying stopped (nothing uncommitted is lost; retry the same records).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] tidings_store::Error),
    /// The dead letter topic did not acknowledge.
    #[error("dead letter topic: {0}")]
    DeadLetters(String),
    /// A side output's topic did not acknowledge (does the topic exist?).
    #[error("side output: {0}")]
    SideOutputs(String),
    /// The processor chain could not read its state.
    #[error("processor chain: {0}")]
    Processor(String),
}

/// Running totals, shared with whoever reports progress.
#[derive(Debug, Default)]
pub struct Stats {
    /// Publish→visible latency of applied events (see [`VisibleLatency`]).
    pub visible: VisibleLatency,
    /// Events applied.
    pub events: AtomicU64,
    /// Dead letters.
    pub dead: AtomicU64,
    /// Redelivered records skipped.
    pub skipped: AtomicU64,
    /// Index entries written or removed.
    pub entries: AtomicU64,
    /// Store batches committed.
    pub batches: AtomicU64,
    /// Commits refused because another consumer had moved the offset.
    pub fenced: AtomicU64,
    /// Records left out by a skip filter (a rebuild's `--skip`); their offsets still move.
    pub filtered: AtomicU64,
    /// Events the processor chain dropped.
    pub dropped: AtomicU64,
    /// Events the processor chain stopped (`term`).
    pub terminated: AtomicU64,
    /// Side outputs sent.
    pub side_outputs: AtomicU64,
}

/// Publish→visible latency, in ms: the time an event's effects were committed (readable by
/// the next page read) minus its record's timestamp. tidings' producer stamps each record with
/// the event's time, so a load generator that sets the event time to when it *meant* to send
/// gets figures corrected for coordinated omission. Millisecond resolution (Kafka timestamps).
/// Also exported as the `tidings_publish_visible_seconds` histogram.
#[derive(Debug)]
pub struct VisibleLatency(std::sync::Mutex<hdrhistogram::Histogram<u64>>);

impl Default for VisibleLatency {
    fn default() -> Self {
        VisibleLatency(std::sync::Mutex::new(
            hdrhistogram::Histogram::new_with_bounds(1, 24 * 3_600_000, 3)
                .expect("static histogram bounds are valid"),
        ))
    }
}

impl VisibleLatency {
    fn record(&self, published_ms: &[i64]) {
        if published_ms.is_empty() {
            return;
        }
        let now = tidings_core::clock::SystemClock.now_ms();
        let exported = metrics::histogram!("tidings_publish_visible_seconds");
        let mut h = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for &t in published_ms {
            let ms = (now - t).max(0) as u64;
            h.saturating_record(ms.max(1));
            exported.record(ms as f64 / 1000.0);
        }
    }

    /// A copy of the histogram so far (values in ms; 0 and 1 ms are both recorded as 1).
    pub fn snapshot(&self) -> hdrhistogram::Histogram<u64> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Forgets what was recorded (e.g. after a warm-up).
    pub fn reset(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).reset();
    }
}

impl Stats {
    /// Records finished: applied, sent to the dead letter topic, or dropped or stopped by the
    /// processor chain (redeliveries not counted).
    pub fn finished(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
            + self.dead.load(Ordering::Relaxed)
            + self.dropped.load(Ordering::Relaxed)
            + self.terminated.load(Ordering::Relaxed)
    }

    fn add(&self, a: &Applied) {
        self.events.fetch_add(a.events, Ordering::Relaxed);
        self.dead.fetch_add(a.dead, Ordering::Relaxed);
        self.dropped.fetch_add(a.dropped, Ordering::Relaxed);
        self.terminated.fetch_add(a.terminated, Ordering::Relaxed);
        self.side_outputs
            .fetch_add(a.side_outputs, Ordering::Relaxed);
        self.entries.fetch_add(a.entries, Ordering::Relaxed);
        self.batches.fetch_add(a.batches, Ordering::Relaxed);
    }
}

/// Events an [`Applier`] leaves out (they change nothing, their offsets still move): the
/// surgical rollback of a bad deploy (`tidings rebuild --skip producer=svc-x@1.4.2`).
#[derive(Clone)]
pub struct SkipFilter(pub Arc<dyn Fn(&Event) -> bool + Send + Sync>);

impl std::fmt::Debug for SkipFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SkipFilter(..)")
    }
}

/// Applies records to one projection for one named consumer.
#[derive(Debug, Clone)]
pub struct Applier {
    store: Arc<dyn Store>,
    projector: Projector,
    consumer: String,
    stats: Arc<Stats>,
    skip: Option<SkipFilter>,
    chain: ChainHandle,
    batch_bytes: usize,
    /// Most records planned into one store batch (see [`Applier::batch_records`]).
    batch_records: usize,
    /// Commit with [`Store::commit_bulk`] (a projection being rebuilt; see [`Applier::bulk`]).
    bulk: bool,
    /// When following the active projection: the raw `("meta","active")` value this applier
    /// was chosen by. Every commit requires it unchanged, so a batch polled just before a
    /// switch cannot land in the projection switched away from (it is fenced and re-polled).
    active_guard: Option<Option<Vec<u8>>>,
}

/// One store batch under construction.
struct Pending {
    batch: WriteBatch,
    /// Blind atomic adds (the body version), summed per key. No planner sets or clears a blind
    /// counter, so adding the sums at the end of the batch changes nothing.
    adds: FastMap<Vec<u8>, i64>,
    /// Followers' home entries and feed-version bumps, summed per feed, built at commit (see
    /// [`Unbuilt`]).
    unbuilt: Unbuilt,
    next: BTreeMap<TopicPartition, i64>,
    dead: Vec<DeadLetter>,
    side: Vec<SideRecord>,
    tally: Tally,
    applied: Applied,
    /// The batch's size so far, kept as events are added (recomputing it per event is
    /// quadratic): exact for built writes, estimated for unbuilt ones (see `Pending::add`).
    bytes: usize,
    /// Record timestamps of the events this batch completes.
    published_ms: Vec<i64>,
    /// Metric labels of the events this batch completes: (topic, verb label, not pushed).
    labels: Vec<(String, &'static str, bool)>,
    /// A bulk run's follower memo, told of every write planning may read back.
    memo: Option<Rc<FollowerMemo>>,
}

impl Pending {
    fn new() -> Self {
        Pending {
            batch: WriteBatch::new(),
            adds: FastMap::default(),
            unbuilt: Unbuilt::default(),
            next: BTreeMap::new(),
            dead: Vec::new(),
            side: Vec::new(),
            tally: Tally::default(),
            applied: Applied::default(),
            bytes: 0,
            published_ms: Vec::new(),
            labels: Vec::new(),
            memo: None,
        }
    }

    fn is_empty(&self) -> bool {
        self.batch.is_empty()
            && self.adds.is_empty()
            && self.unbuilt.is_empty()
            && self.next.is_empty()
            && self.dead.is_empty()
            && self.side.is_empty()
    }

    /// Adds a planned step's writes to the batch, making the ones later planning may read
    /// visible through `overlay` (blind writes only need committing).
    fn add(&mut self, overlay: &mut Overlay<'_>, plan: Plan) {
        self.add_visible(overlay, plan.visible);
        for m in plan.blind {
            match m {
                Mutation::Add { key, delta } => match self.adds.get_mut(&key) {
                    Some(sum) => *sum = sum.wrapping_add(delta),
                    None => {
                        self.bytes += key.len() + 8;
                        self.adds.insert(key, delta);
                    }
                },
                m => {
                    self.bytes += m.size();
                    self.batch.mutations.push(m);
                }
            }
        }
        for s in plan.spreads {
            // Each entry's bump counted as if its feed were new to the batch, as finding out is
            // the work left for later: an overestimate, as bumps of one feed are summed (a
            // bulk batch comes out ~20% under its bound).
            let bump = s.bumps().next().map_or(0, |b| b.key().len() + 8);
            self.bytes += s.size() + s.owners.len() * bump;
            self.unbuilt.spreads.push(s);
        }
        for b in plan.bumps {
            match self.unbuilt.bumps.get_mut(&b) {
                Some(n) => *n += 1,
                None => {
                    self.bytes += b.key().len() + 8;
                    self.unbuilt.bumps.insert(b, 1);
                }
            }
        }
    }

    /// Adds writes later planning may read: to the batch and, through `overlay`, to reads.
    fn add_visible(&mut self, overlay: &mut Overlay<'_>, ms: Vec<Mutation>) {
        if let Some(memo) = &self.memo {
            memo.wrote(&ms);
        }
        overlay.apply(&ms);
        self.bytes += ms.iter().map(Mutation::size).sum::<usize>();
        self.batch.extend(ms);
    }

    /// The record goes to the dead letter topic; its offset moves past it.
    fn dead_letter(&mut self, r: &Record, letter: DeadLetter) {
        self.dead.push(letter);
        self.next.insert(r.tp(), r.offset + 1);
    }
}

/// Blind writes of a batch left unbuilt until it is committed: the followers' home entries
/// (most of a fan-out's writes) and the feed-version bumps, summed per feed. A bulk writer
/// builds them on its commit thread, which has time while the next batch is planned.
#[derive(Default)]
struct Unbuilt {
    spreads: Vec<Spread>,
    bumps: FastMap<keys::fver::Bump, i64>,
}

impl Unbuilt {
    fn is_empty(&self) -> bool {
        self.spreads.is_empty() && self.bumps.is_empty()
    }

    /// Appends the writes to `batch`: the entries in plan order, then an add per feed version.
    fn build_into(mut self, batch: &mut WriteBatch) {
        let entries: usize = self.spreads.iter().map(|s| s.owners.len()).sum();
        batch.mutations.reserve(entries + self.bumps.len());
        for s in &self.spreads {
            batch.extend(s.entries());
            for b in s.bumps() {
                *self.bumps.entry(b).or_insert(0) += 1;
            }
        }
        batch.extend(self.bumps.drain().map(|(b, n)| b.mutation(n)));
    }

    /// [`Unbuilt::build_into`] for a bulk commit: the bumps go to `batch`, the entries come
    /// back as key groups (one per spread, its value held once).
    fn build_bulk(mut self, batch: &mut WriteBatch) -> KeyGroups {
        let entries: usize = self.spreads.iter().map(|s| s.owners.len()).sum();
        let mut groups = KeyGroups::new();
        // A home entry's key is ~36 bytes: ~11 of projection, keyspace and owner, ~25 of kind
        // and position (time and id).
        groups.reserve(entries, 40);
        for s in self.spreads {
            for b in s.bumps() {
                *self.bumps.entry(b).or_insert(0) += 1;
            }
            let keys = s.keys();
            groups.group(s.value);
            for &owner in &s.owners {
                groups.push_with(|out| keys.key_into(owner, out));
            }
        }
        batch.extend(self.bumps.drain().map(|(b, n)| b.mutation(n)));
        groups
    }
}

/// What [`Applier::plan_record`] left to do.
enum Planned {
    /// The record is planned into the batch (or skipped, or dead-lettered).
    Done,
    /// The event's fan-out needs more batches (outside bulk mode): its first step is in the
    /// batch with the offset left on it; commit, then finish the fan-out from `cursor`.
    Split {
        /// The event after the processor chain.
        event: Box<Event>,
        /// Its body re-encoded, when the chain changed it.
        encoded: Option<Vec<u8>>,
        /// The fan-out options the chain chose.
        opts: FanoutOptions,
        /// Where its fan-out continues.
        cursor: tidings_core::UserId,
    },
}

/// A batch being committed on another thread (bulk mode).
struct InFlight {
    writer: std::thread::JoinHandle<Result<(), tidings_store::Error>>,
    pending: Pending,
    started: Instant,
}

/// What the remaining steps of a split fan-out need: the event after the chain, the body to
/// store and the fan-out options the chain chose.
struct Rest<'a> {
    event: &'a Event,
    body: &'a [u8],
    opts: &'a FanoutOptions,
}

fn dead_letter(record: &Record, code: &str, reason: String) -> DeadLetter {
    DeadLetter {
        record: record.clone(),
        code: code.to_string(),
        reason,
        producer: None,
    }
}

/// A dead letter with `code` for a record that decoded into `event` (the processor chain's
/// `validate` and `dead_letter` outcomes).
fn rejected_as(record: &Record, event: &Event, code: &str, why: String) -> DeadLetter {
    DeadLetter {
        producer: Some(event.producer().to_string()),
        ..dead_letter(record, code, why)
    }
}

/// A dead letter for a record that decoded into `event` but cannot be applied.
fn rejected(record: &Record, event: &Event, why: String) -> DeadLetter {
    rejected_as(record, event, "rejected", why)
}

/// The projection a raw `("meta","active")` value names (absent: the default, 1).
fn projection_named(raw: Option<&[u8]>) -> Projection {
    raw.map_or(keys::meta::DEFAULT_PROJECTION, decode_i64)
}

impl Applier {
    /// An applier writing `projector.projection` under consumer name `consumer`.
    pub fn new(store: Arc<dyn Store>, projector: Projector, consumer: impl Into<String>) -> Self {
        Applier {
            store,
            projector,
            consumer: consumer.into(),
            stats: Arc::default(),
            skip: None,
            chain: ChainHandle::default(),
            batch_bytes: BATCH_BYTES,
            batch_records: usize::MAX,
            bulk: false,
            active_guard: None,
        }
    }

    /// The same applier writing projection `p` instead (same consumer name and totals): how
    /// the consume loop follows `("meta","active")` after a switch.
    pub fn for_projection(&self, p: Projection) -> Self {
        let mut a = self.clone();
        a.projector.projection = p;
        a
    }

    /// Leaves out the events `skip` matches (their offsets still move past them).
    pub fn with_skip(mut self, skip: SkipFilter) -> Self {
        self.skip = Some(skip);
        self
    }

    /// Runs the processor chain `handle` holds (swappable between batches; every clone of this
    /// applier shares the handle).
    pub fn with_chain(mut self, handle: ChainHandle) -> Self {
        self.chain = handle;
        self
    }

    /// The handle of the processor chain this applier runs.
    pub fn chain(&self) -> &ChainHandle {
        &self.chain
    }

    /// Bulk mode, for a projection no reader serves yet (a rebuild, a restore's replay): where
    /// the store has a bulk path ([`Store::bulk_batch_limit`]), batches of up to `bytes` (capped
    /// by that limit) are committed with [`Store::commit_bulk`] — on RocksDB one table file per
    /// batch, no memtable or WAL — and a fan-out too large for one step is planned step by step
    /// into the same batch instead of one batch per step. What is written is the same as in
    /// ordinary mode; only batch boundaries move. One read differs: a split fan-out's cursor is
    /// read only for the record at its partition's stored offset (the one whose own split can
    /// have left it; see `plan_record`), where ordinary mode reads it for every activity and
    /// retraction and resumes only from a cursor the event owns (see
    /// [`Projector::stored_resume`]). Without a bulk path this only sets the batch size, kept
    /// under the transaction limit.
    pub fn bulk(mut self, bytes: usize) -> Self {
        match self.store.bulk_batch_limit() {
            Some(limit) => {
                self.bulk = true;
                self.batch_bytes = bytes.clamp(1, limit);
            }
            None => self.batch_bytes = bytes.clamp(1, tidings_store::limits::MAX_BATCH / 2),
        }
        self
    }

    /// The bytes the next bulk batch is planned to: the configured size, or twice that (within
    /// the store's limit) once the store reported a backlog ([`Store::bulk_backlog`]): a long
    /// rebuild on RocksDB is bound by compacting its batches out of L0, and larger batches are
    /// merged fewer times (`tidings bench replay --posts 1000000`: README, "Replay and
    /// rebuild"). The planner's memory follows the batch.
    fn bulk_target(&self, backlog: bool) -> usize {
        if !backlog {
            return self.batch_bytes;
        }
        // `bulk` kept the configured size within the limit, so this never falls below it.
        let limit = self.store.bulk_batch_limit().unwrap_or(self.batch_bytes);
        self.batch_bytes.saturating_mul(2).min(limit)
    }

    /// Plans at most `n` records into one store batch (default: no bound but the bytes). A
    /// rebuild's `--batch-records`; tests use it to move batch boundaries around.
    pub fn batch_records(mut self, n: usize) -> Self {
        self.batch_records = n.max(1);
        self
    }

    /// The running totals.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// The projection written.
    pub fn projection(&self) -> Projection {
        self.projector.projection
    }

    /// The projection `("meta","active")` names now (absent: the default, 1).
    pub fn active_projection(&self) -> Result<Projection, ApplyError> {
        Ok(projection_named(self.active_raw()?.as_deref()))
    }

    /// The raw `("meta","active")` value.
    fn active_raw(&self) -> Result<Option<Vec<u8>>, ApplyError> {
        Ok(self.store.snapshot()?.get(&keys::meta::active())?)
    }

    /// Reads `("meta","active")` and, if it names another projection, returns an applier for
    /// that one (`None`: this one is still active). Either way the active applier's commits
    /// from now on require the value just read (see `active_guard`).
    pub fn follow_active(&mut self) -> Result<Option<Applier>, ApplyError> {
        let raw = self.active_raw()?;
        let active = projection_named(raw.as_deref());
        if active == self.projection() {
            self.active_guard = Some(raw);
            return Ok(None);
        }
        let mut next = self.for_projection(active);
        next.active_guard = Some(raw);
        Ok(Some(next))
    }

    /// The consumer name offsets are stored under.
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    fn offset_key(&self, tp: &TopicPartition) -> Vec<u8> {
        keys::offsets::key(self.projector.projection, &self.consumer, &tp.0, tp.1)
    }

    /// The stored next offset of a partition (`None`: start from the beginning).
    pub fn stored_offset(&self, topic: &str, partition: i32) -> Result<Option<i64>, ApplyError> {
        let key = self.offset_key(&(topic.to_string(), partition));
        Ok(self.store.snapshot()?.get(&key)?.map(|v| decode_i64(&v)))
    }

    /// Applies `records` (in poll order) exactly once. Records of partitions missing from
    /// `positions` are ignored (not assigned to this consumer). `positions` is updated after
    /// every commit.
    pub fn apply(
        &self,
        positions: &mut Positions,
        records: &[Record],
        dlq: &dyn DeadLetterSink,
    ) -> Result<Outcome, ApplyError> {
        if self.bulk {
            return self.apply_pipelined(positions, records.iter().map(Incoming::Borrowed), dlq);
        }
        let mut total = Applied::default();
        // Once per call: a swapped chain takes effect from the next call (between batches).
        let (procs, _) = self.chain.current();
        let mut i = 0;
        while i < records.len() {
            let snap = self.store.snapshot()?;
            let opened = Instant::now();
            let mut overlay = Overlay::new(&*snap);
            let mut p = Pending::new();
            let first = i;
            // A batch ends at its byte or record bound, or while its read view is well inside
            // its lifetime.
            while i < records.len()
                && p.bytes < self.batch_bytes
                && i - first < self.batch_records
                && opened.elapsed() < VIEW_USE
            {
                let r = &records[i];
                i += 1;
                let Some(stored) = positions.get(&r.tp()).copied() else {
                    continue;
                };
                let Planned::Split {
                    event,
                    encoded,
                    opts,
                    cursor,
                } = self.plan_record(
                    &procs,
                    &mut overlay,
                    &mut p,
                    (r, decode(r)),
                    stored,
                    &mut total,
                )?
                else {
                    continue;
                };
                // Too large for one batch: commit what we have with this first step, the
                // offset left on this event, then the remaining steps one batch each.
                let done = std::mem::replace(&mut p, Pending::new());
                if let Some(stored) = self.commit(positions, done, dlq, &mut total)? {
                    return Ok(Outcome::Fenced {
                        applied: total,
                        stored,
                    });
                }
                let rest = Rest {
                    event: &event,
                    body: encoded
                        .as_deref()
                        .unwrap_or_else(|| r.payload.as_deref().unwrap_or_default()),
                    opts: &opts,
                };
                if let Some(stored) =
                    self.finish_fanout(positions, r, &rest, Some(cursor), dlq, &mut total)?
                {
                    return Ok(Outcome::Fenced {
                        applied: total,
                        stored,
                    });
                }
                break;
            }
            drop(overlay);
            drop(snap);
            if !p.is_empty() {
                if let Some(stored) = self.commit(positions, p, dlq, &mut total)? {
                    return Ok(Outcome::Fenced {
                        applied: total,
                        stored,
                    });
                }
            }
        }
        Ok(Outcome::Done(total))
    }

    /// [`Applier::apply`] over a stream of records decoded ahead (a rebuild reading the log):
    /// in bulk mode one pipeline over the whole stream, so batches run on across the reader's
    /// chunks and the read cache stays warm; otherwise [`Applier::apply`] per run of up to
    /// [`Applier::batch_records`] records (at most 65,536), which decodes them again. Either
    /// way the result is that of applying the records in order: only batch boundaries differ.
    pub fn apply_stream(
        &self,
        positions: &mut Positions,
        records: impl Iterator<Item = Decoded>,
        dlq: &dyn DeadLetterSink,
    ) -> Result<Outcome, ApplyError> {
        if self.bulk {
            return self.apply_pipelined(positions, records.map(Incoming::Decoded), dlq);
        }
        let mut total = Applied::default();
        let mut records = records.map(|d| d.record).peekable();
        let run = self.batch_records.min(1 << 16);
        while records.peek().is_some() {
            let chunk: Vec<Record> = records.by_ref().take(run).collect();
            match self.apply(positions, &chunk, dlq)? {
                Outcome::Done(a) => total.absorb(&a),
                Outcome::Fenced { applied, stored } => {
                    total.absorb(&applied);
                    return Ok(Outcome::Fenced {
                        applied: total,
                        stored,
                    });
                }
            }
        }
        Ok(Outcome::Done(total))
    }

    /// [`Applier::apply`] in bulk mode: batch N is committed on another thread while batch
    /// N+1 is planned over a snapshot taken before N was handed over plus N's pending writes
    /// ([`Overlay::layered`]). Reads of the snapshot are remembered across batches ([`Memo`]:
    /// an author's followers are read once, not once per post), each batch's writes forgotten
    /// from that cache once committed — sound because in bulk mode nothing else writes the
    /// projection (a second writer moves the offsets and is caught by their preconditions).
    /// Batch N+1 goes to the store only after N committed, with preconditions on the offsets
    /// N stored; if N fails or is fenced, N+1 is dropped unwritten. So the result is exactly
    /// that of committing one batch after the other.
    fn apply_pipelined<'r>(
        &self,
        positions: &mut Positions,
        records: impl Iterator<Item = Incoming<'r>>,
        dlq: &dyn DeadLetterSink,
    ) -> Result<Outcome, ApplyError> {
        let mut total = Applied::default();
        // Once per call, as in `apply`: a swapped chain takes effect from the next call.
        let (procs, _) = self.chain.current();
        let mut records = records.peekable();
        let mut inflight: Option<InFlight> = None;
        let mut lower = Delta::default();
        // Answers of the snapshot in use; each batch is forgotten from it once committed.
        let cache = ReadCache::new();
        // Decoded follower lists and counts, kept across batches (every planned write passes
        // `Pending::add_visible`, which tells it).
        let memo = Rc::new(FollowerMemo::new(self.projector.projection));
        let mut snap = self.store.snapshot()?;
        let mut opened = Instant::now();
        let mine = keys::projection(self.projector.projection).range();
        let mut backlog = false;
        while records.peek().is_some() {
            let planning = Instant::now();
            let mut n = 0;
            // Before its first commit a rebuild's projection is empty: reads of it need no store.
            let memo_view = Memo::new(&*snap, &cache).noting_empty(&mine.0, &mine.1)?;
            let mut overlay = Overlay::layered(&memo_view, std::mem::take(&mut lower));
            let mut p = Pending::new();
            p.memo = Some(memo.clone());
            // Once behind, a long run stays behind (the rebuilt base level only grows): a dip
            // in L0 right after a compaction does not shrink the batches again.
            backlog = backlog || self.store.bulk_backlog();
            let target = self.bulk_target(backlog);
            while p.bytes < target && n < self.batch_records {
                // Waiting for the next record (a reader behind) may age the view: look after.
                if records.peek().is_none() || opened.elapsed() >= VIEW_USE {
                    break;
                }
                let Some(incoming) = records.next() else {
                    break;
                };
                let owned;
                let (r, decoded) = match incoming {
                    Incoming::Borrowed(r) => (r, decode(r)),
                    Incoming::Decoded(Decoded { record, event }) => {
                        owned = record;
                        (&owned, event)
                    }
                };
                n += 1;
                let Some(stored) = positions.get(&r.tp()).copied() else {
                    continue;
                };
                let planned = self.plan_record(
                    &procs,
                    &mut overlay,
                    &mut p,
                    (r, decoded),
                    stored,
                    &mut total,
                )?;
                debug_assert!(matches!(planned, Planned::Done), "bulk plans every step");
            }
            let (committing, delta) = overlay.into_deltas();
            let planned_in = planning.elapsed();
            let waiting = Instant::now();
            if let Some(f) = inflight.take() {
                if let Some(stored) = self.settle(positions, f, &mut total)? {
                    return Ok(Outcome::Fenced {
                        applied: total,
                        stored,
                    });
                }
            }
            if records.peek().is_some() {
                // Everything settled is in this snapshot, and nothing of the batch handed over
                // next (the last batch plans nothing after it).
                snap = self.store.snapshot()?;
                cache.forget(&committing);
                opened = Instant::now();
            }
            if p.is_empty() {
                continue;
            }
            let (mut batch, unbuilt) = self.prepare(positions, &mut p, dlq)?;
            tracing::debug!(
                records = n,
                estimated_bytes = p.bytes,
                target_bytes = target,
                planned_ms = planned_in.as_millis() as u64,
                waited_for_commit_ms = waiting.elapsed().as_millis() as u64,
                "bulk batch planned"
            );
            let store = self.store.clone();
            let started = Instant::now();
            let writer = std::thread::Builder::new()
                .name("bulk-commit".into())
                .spawn(move || {
                    let t = Instant::now();
                    let groups = unbuilt.build_bulk(&mut batch);
                    let (mutations, entries) = (batch.mutations.len(), groups.len());
                    let bytes = batch.size() + groups.size();
                    let r = store.commit_bulk_groups(batch, groups);
                    tracing::debug!(
                        mutations,
                        entries,
                        bytes,
                        ms = t.elapsed().as_millis() as u64,
                        "bulk batch committed"
                    );
                    r
                })
                .map_err(|e| {
                    ApplyError::Store(tidings_store::Error::Backend {
                        backend: "tidings",
                        message: format!("cannot start the bulk commit thread: {e}"),
                    })
                })?;
            inflight = Some(InFlight {
                writer,
                pending: p,
                started,
            });
            lower = delta;
        }
        if let Some(f) = inflight.take() {
            if let Some(stored) = self.settle(positions, f, &mut total)? {
                return Ok(Outcome::Fenced {
                    applied: total,
                    stored,
                });
            }
        }
        Ok(Outcome::Done(total))
    }

    /// Plans one record of a partition whose stored offset is `stored`, with its payload
    /// decoded (`None`: it has none), into `p` (its writes, its offset, or its dead letter).
    /// Outside bulk mode, an event too large for one batch comes back as [`Planned::Split`]
    /// with its first step already in `p`.
    fn plan_record(
        &self,
        procs: &Chain,
        overlay: &mut Overlay<'_>,
        p: &mut Pending,
        (r, decoded): (&Record, Option<Result<Event, DecodeError>>),
        stored: Option<i64>,
        total: &mut Applied,
    ) -> Result<Planned, ApplyError> {
        let tp = r.tp();
        let expected = p.next.get(&tp).copied().or(stored).unwrap_or(0);
        if r.offset < expected {
            // Redelivered: the store has it. Counted now, as nothing is committed.
            total.skipped += 1;
            self.stats.skipped.fetch_add(1, Ordering::Relaxed);
            return Ok(Planned::Done);
        }
        let event = match decoded {
            None => {
                let d = dead_letter(r, "empty_payload", "the record has no value".into());
                p.dead_letter(r, d);
                return Ok(Planned::Done);
            }
            Some(Err(e)) => {
                let mut d = dead_letter(r, e.reason_code(), e.to_string());
                if let DecodeError::Invalid(_) = e {
                    // Well-formed but invalid: the producer is known.
                    d.producer = r
                        .payload
                        .as_deref()
                        .and_then(|b| tidings_schemas::decode(b).ok())
                        .map(|ev| ev.producer().to_string());
                }
                p.dead_letter(r, d);
                return Ok(Planned::Done);
            }
            Some(Ok(e)) => e,
        };
        if self.skip.as_ref().is_some_and(|f| (f.0)(&event)) {
            self.stats.filtered.fetch_add(1, Ordering::Relaxed);
            p.next.insert(tp, r.offset + 1);
            return Ok(Planned::Done);
        }
        // A fan-out split over batches leaves its cursor stored, and its partition's offset on
        // its event until the last step (see `Planned::Split`), so only a record at the stored
        // offset can have one. A bulk run never splits and its projection has no other writer:
        // it reads the cursor of that record alone, sparing a read that misses for every other.
        let may_resume = !self.bulk || (stored == Some(r.offset) && !p.next.contains_key(&tp));
        let resume = match may_resume
            .then(|| self.projector.stored_resume(&*overlay, &event))
            .transpose()
            .map(Option::flatten)
        {
            Ok(resume) => resume,
            Err(ProjectError::Store(e)) => return Err(e.into()),
            Err(ProjectError::Rejected(why)) => {
                p.dead_letter(r, rejected(r, &event, why));
                return Ok(Planned::Done);
            }
        };
        let Some((event, encoded, opts)) = self.run_chain(procs, overlay, p, r, event, resume)?
        else {
            return Ok(Planned::Done);
        };
        let body = encoded
            .as_deref()
            .unwrap_or_else(|| r.payload.as_deref().unwrap_or_default());
        let mut step = match self.projector.plan_memo(
            &*overlay,
            p.memo.as_deref(),
            &event,
            body,
            &opts,
            resume,
        ) {
            Ok(s) => s,
            Err(ProjectError::Store(e)) => return Err(e.into()),
            Err(ProjectError::Rejected(why)) => {
                p.dead_letter(r, rejected(r, &event, why));
                return Ok(Planned::Done);
            }
        };
        if let Some(reason) = step.noop {
            tracing::debug!(id = %event.id(), reason, "event changed nothing");
        }
        p.applied.entries += step.plan.entries;
        while let Some(cursor) = step.resume() {
            if !self.bulk {
                // The writes of the events before first, in order: a retraction split here
                // clears entries an earlier post of the batch left unbuilt.
                std::mem::take(&mut p.unbuilt).build_into(&mut p.batch);
                p.batch.extend(step.plan.writes());
                p.next.insert(tp, r.offset);
                return Ok(Planned::Split {
                    event: Box::new(event),
                    encoded,
                    opts,
                    cursor,
                });
            }
            // Bulk: the next step goes into the same batch, planned over this one.
            p.add(overlay, std::mem::take(&mut step.plan));
            step = match self.projector.plan_memo(
                &*overlay,
                p.memo.as_deref(),
                &event,
                body,
                &opts,
                Some(cursor),
            ) {
                Ok(s) => s,
                Err(ProjectError::Store(e)) => return Err(e.into()),
                Err(ProjectError::Rejected(why)) => {
                    // Cannot happen mid-way (the first step accepted the event); as in
                    // `finish_fanout`, keep the log moving rather than loop.
                    p.dead_letter(r, rejected(r, &event, why));
                    return Ok(Planned::Done);
                }
            };
            p.applied.entries += step.plan.entries;
        }
        p.labels
            .push((r.topic.clone(), event.verb_label(), step.unpushed));
        p.add(overlay, step.plan);
        p.next.insert(tp, r.offset + 1);
        p.applied.events += 1;
        p.published_ms.extend(r.timestamp_ms);
        Ok(Planned::Done)
    }

    /// Runs the processor chain over a decoded event: its state writes and side outputs join
    /// `p` (and the overlay, so later events of the batch see the state). `None` when the chain
    /// stopped the event (term, drop, dead letter: its offset moves past it); else the event
    /// to project, its re-encoded body when the chain changed it, and the fan-out options.
    #[allow(clippy::type_complexity)]
    fn run_chain(
        &self,
        procs: &Chain,
        overlay: &mut Overlay<'_>,
        p: &mut Pending,
        r: &Record,
        event: Event,
        resume: Option<tidings_core::UserId>,
    ) -> Result<Option<(Event, Option<Vec<u8>>, FanoutOptions)>, ApplyError> {
        if procs.is_empty() {
            return Ok(Some((event, None, FanoutOptions::default())));
        }
        let input = Input {
            event: &event,
            origin: &chain::origin(r),
            resuming: resume.is_some(),
        };
        let run = procs
            .run(self.projector.projection, input, &StoreState(&*overlay))
            .map_err(|e| ApplyError::Processor(e.to_string()))?;
        p.tally.add(&run);
        p.add_visible(overlay, run.mutations);
        p.side
            .extend(run.side_outputs.iter().map(|s| chain::render(s, r)));
        match run.verdict {
            Verdict::Project => {}
            Verdict::Term { .. } => {
                p.applied.terminated += 1;
                p.next.insert(r.tp(), r.offset + 1);
                return Ok(None);
            }
            Verdict::Drop { .. } => {
                p.applied.dropped += 1;
                p.next.insert(r.tp(), r.offset + 1);
                return Ok(None);
            }
            Verdict::DeadLetter { code, reason, .. } => {
                p.dead_letter(r, rejected_as(r, &event, &code, reason));
                return Ok(None);
            }
        }
        if resume.is_some()
            && run
                .steps
                .last()
                .is_some_and(|s| !matches!(s.flow, Flow::Next | Flow::Jump(_)))
        {
            tracing::warn!(id = %event.id(), "a resumed fan-out is finished although the chain now stops this event: it was admitted by the chain in force when its first step committed");
        }
        let encoded = run.changed.then(|| tidings_schemas::encode(&run.event));
        Ok(Some((run.event, encoded, run.fanout)))
    }

    /// The remaining steps of a split fan-out, each its own batch; the last one moves the
    /// offset past the event.
    fn finish_fanout(
        &self,
        positions: &mut Positions,
        r: &Record,
        rest: &Rest<'_>,
        mut resume: Option<tidings_core::UserId>,
        dlq: &dyn DeadLetterSink,
        total: &mut Applied,
    ) -> Result<Option<BTreeMap<TopicPartition, Option<i64>>>, ApplyError> {
        while resume.is_some() {
            let step = {
                let snap = self.store.snapshot()?;
                match self
                    .projector
                    .plan_with(&*snap, rest.event, rest.body, rest.opts, resume)
                {
                    Ok(s) => s,
                    Err(ProjectError::Store(e)) => return Err(e.into()),
                    Err(ProjectError::Rejected(why)) => {
                        // Cannot happen mid-way (the first step accepted the event); keep the
                        // log moving rather than loop.
                        let mut p = Pending::new();
                        p.dead_letter(r, rejected(r, rest.event, why));
                        return self.commit(positions, p, dlq, total);
                    }
                }
            };
            resume = step.resume();
            let mut p = Pending::new();
            p.applied.entries = step.plan.entries;
            p.batch.extend(step.plan.writes());
            if resume.is_none() {
                p.next.insert(r.tp(), r.offset + 1);
                p.applied.events = 1;
                p.published_ms.extend(r.timestamp_ms);
                p.labels
                    .push((r.topic.clone(), rest.event.verb_label(), false));
            } else {
                p.next.insert(r.tp(), r.offset);
            }
            if let Some(stored) = self.commit(positions, p, dlq, total)? {
                return Ok(Some(stored));
            }
        }
        Ok(None)
    }

    /// Sends the batch's dead letters, then commits its writes with the offsets and their
    /// preconditions. `Some(stored offsets)` when fenced.
    fn commit(
        &self,
        positions: &mut Positions,
        mut p: Pending,
        dlq: &dyn DeadLetterSink,
        total: &mut Applied,
    ) -> Result<Option<BTreeMap<TopicPartition, Option<i64>>>, ApplyError> {
        let (mut batch, unbuilt) = self.prepare(positions, &mut p, dlq)?;
        unbuilt.build_into(&mut batch);
        let started = Instant::now();
        let result = self.store.commit(batch);
        self.settled(positions, p, result, started, total)
    }

    /// Sends the batch's side outputs and dead letters (durable before the offset moves past
    /// them) and returns its store batch: the writes, the offsets and their preconditions —
    /// all but the unbuilt writes, which the caller builds into it ([`Unbuilt::build_into`]).
    fn prepare(
        &self,
        positions: &Positions,
        p: &mut Pending,
        dlq: &dyn DeadLetterSink,
    ) -> Result<(WriteBatch, Unbuilt), ApplyError> {
        if !p.side.is_empty() {
            dlq.emit(&p.side).map_err(ApplyError::SideOutputs)?;
            p.applied.side_outputs += p.side.len() as u64;
        }
        if !p.dead.is_empty() {
            dlq.send(&p.dead).map_err(ApplyError::DeadLetters)?;
            p.applied.dead += p.dead.len() as u64;
            for d in &p.dead {
                tracing::warn!(
                    topic = %d.record.topic, partition = d.record.partition, offset = d.record.offset,
                    code = %d.code, reason = %d.reason,
                    "record sent to the dead letter topic"
                );
                metrics::counter!("tidings_dead_letters_total", "reason" => d.code.clone())
                    .increment(1);
            }
        }
        let mut batch = std::mem::take(&mut p.batch);
        batch.extend(
            p.adds
                .drain()
                .map(|(key, delta)| Mutation::Add { key, delta }),
        );
        if let Some(raw) = &self.active_guard {
            batch.require(keys::meta::active(), raw.clone());
        }
        for (tp, next) in &p.next {
            let key = self.offset_key(tp);
            let expected = positions.get(tp).copied().flatten();
            batch.require(key.clone(), expected.map(encode_i64));
            batch.set(key, encode_i64(*next));
        }
        Ok((batch, std::mem::take(&mut p.unbuilt)))
    }

    /// Waits for a batch committed on another thread and settles it.
    fn settle(
        &self,
        positions: &mut Positions,
        f: InFlight,
        total: &mut Applied,
    ) -> Result<Option<BTreeMap<TopicPartition, Option<i64>>>, ApplyError> {
        let result = f.writer.join().unwrap_or_else(|_| {
            Err(tidings_store::Error::Backend {
                backend: "tidings",
                message: "the bulk commit thread panicked".into(),
            })
        });
        self.settled(positions, f.pending, result, f.started, total)
    }

    /// Accounts for a batch's commit: on success its offsets become the positions and its
    /// totals count; on a conflict the stored offsets are read back and returned (fenced).
    fn settled(
        &self,
        positions: &mut Positions,
        mut p: Pending,
        result: Result<(), tidings_store::Error>,
        started: Instant,
        total: &mut Applied,
    ) -> Result<Option<BTreeMap<TopicPartition, Option<i64>>>, ApplyError> {
        match result {
            Ok(()) => {
                metrics::histogram!("tidings_batch_commit_seconds")
                    .record(started.elapsed().as_secs_f64());
                for (tp, next) in p.next {
                    positions.insert(tp, Some(next));
                }
                p.applied.batches = 1;
                self.stats.add(&p.applied);
                std::mem::take(&mut p.tally).export();
                self.stats.visible.record(&p.published_ms);
                metrics::counter!("tidings_events_applied_total").increment(p.applied.events);
                // Summed per label set first: one registry lookup per (topic, verb) and batch,
                // not per event (a bulk batch holds hundreds of thousands).
                let mut by_label: BTreeMap<(String, &'static str), (u64, u64)> = BTreeMap::new();
                for (topic, verb, unpushed) in p.labels {
                    let n = by_label.entry((topic, verb)).or_default();
                    n.0 += 1;
                    n.1 += u64::from(unpushed);
                }
                for ((topic, verb), (events, unpushed)) in by_label {
                    metrics::counter!("tidings_events_total", "topic" => topic, "verb" => verb)
                        .increment(events);
                    if unpushed > 0 {
                        metrics::counter!("tidings_fanout_unpushed_total", "verb" => verb)
                            .increment(unpushed);
                    }
                }
                metrics::counter!("tidings_fanout_entries_total").increment(p.applied.entries);
                total.absorb(&p.applied);
                Ok(None)
            }
            Err(e) if e.is_conflict() => {
                self.stats.fenced.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("tidings_consumer_fenced_total").increment(1);
                let view = self.store.snapshot()?;
                let mut stored = BTreeMap::new();
                for tp in p.next.keys() {
                    let now = view.get(&self.offset_key(tp))?.map(|v| decode_i64(&v));
                    positions.insert(tp.clone(), now);
                    stored.insert(tp.clone(), now);
                }
                Ok(Some(stored))
            }
            Err(e) => Err(e.into()),
        }
    }
}
