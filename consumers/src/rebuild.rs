//! Rebuilding a projection from the log while the live one serves.
//!
//! [`run`] reads every input partition from the beginning (or from the offsets a killed run
//! stored) with a [`LogReader`] in **merge order** (record timestamp, topic, partition; each
//! partition in offset order) and applies the records with the live consumers' own
//! [`Applier`] into projection `N`, in bulk (more records and bytes per store batch). So:
//!
//! - **determinism**: the order depends only on the log, batch boundaries change nothing
//!   (events in a batch see each other through the overlay), so the same log always yields
//!   byte-identical keyspaces;
//! - **resumable**: offsets are committed with effects, under the live consumers' name, in
//!   projection `N`; a killed rebuild resumes from them, and because the merge order is a
//!   function of per-partition positions, it continues the very same sequence;
//! - **switchable**: after `tidings switch N` the live consumers find their offsets in `N`
//!   and continue from where the rebuild stopped; with `follow` the rebuild keeps applying
//!   new records until it sees `N` active, so a switch loses nothing.
//!
//! Options: `until` (a time: each partition stops before its first record stamped later; or
//! offsets per partition) gives the state as of that point; `skip` leaves out events matching a
//! [`Filter`] (e.g. every event of `producer=svc-x@1.4.2`), and with them every effect they
//! would have had: fan-out, notifications, counts, and what later events built on them.
//!
//! `("meta","building",N)` is set while the rebuild has not reached the head seen at start
//! (`tidings switch` refuses such a projection) and `("meta","rebuild",N)` records the options
//! so that resuming with other options is refused. Dead letters are not sent again: the live
//! consumers sent them; the rebuild counts them.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidings_core::event::Event;
use tidings_core::keys::{meta, Projection};
use tidings_core::write::encode_i64;
use tidings_core::UserId;
use tidings_producers::{KafkaConfig, Topics};
use tidings_store::{Store, WriteBatch};

use crate::apply::{
    Applier, ApplyError, DeadLetter, DeadLetterSink, Decoded, Outcome, Positions, Record,
    SkipFilter, Stats,
};
use crate::chain::{ChainHandle, SideRecord};
use crate::log::{LogError, LogReader, Next, PartitionRange};
use crate::project::Projector;
use crate::versions;

/// A point in the log to stop at.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Until {
    /// Each partition stops before its first record stamped after this (ms since the epoch).
    Time(i64),
    /// Each listed partition stops before this offset; unlisted ones read to the head.
    Offsets(BTreeMap<String, i64>),
}

impl FromStr for Until {
    type Err = String;

    /// A time (`2026-11-01T00:00Z`, ms since the epoch) or offsets
    /// `TOPIC:PARTITION=OFFSET[,…]` (exclusive).
    fn from_str(s: &str) -> Result<Self, String> {
        if !s.contains('=') {
            return tidings_core::time::parse_ms(s).map(Until::Time);
        }
        let mut out = BTreeMap::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = || {
                format!(
                    "expected TOPIC:PARTITION=OFFSET[,…] (e.g. tidings.activities:0=1200), got {part:?}"
                )
            };
            let (tp, off) = part.split_once('=').ok_or_else(bad)?;
            let (topic, p) = tp.rsplit_once(':').ok_or_else(bad)?;
            let p: i32 = p.parse().map_err(|_| bad())?;
            let off: i64 = off.parse().map_err(|_| bad())?;
            if topic.is_empty() || p < 0 || off < 0 {
                return Err(bad());
            }
            out.insert(format!("{topic}:{p}"), off);
        }
        if out.is_empty() {
            return Err("expected a time or TOPIC:PARTITION=OFFSET[,…], got nothing".into());
        }
        Ok(Until::Offsets(out))
    }
}

/// Which events to match: every given condition must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Filter {
    /// `producer=NAME` or `producer=NAME@VERSION`.
    pub producer: Option<(String, Option<String>)>,
    /// `actor=ID` (also `user=ID`): the acting user.
    pub actor: Option<UserId>,
    /// `verb=VERB`: the activity's verb, `retract`, `update`, or the graph op.
    pub verb: Option<String>,
}

impl FromStr for Filter {
    type Err = String;

    /// `KEY=VALUE[,KEY=VALUE…]` with keys `producer`, `actor` (or `user`), `verb`.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut f = Filter::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                format!("expected KEY=VALUE with KEY producer, actor or verb (e.g. producer=svc-x@1.4.2), got {part:?}")
            })?;
            match k.trim() {
                "producer" => f.producer = Some(Filter::parse_producer(v)?),
                "actor" | "user" => {
                    f.actor = Some(v.trim().parse().map_err(|_| {
                        format!("expected a user id (an integer) after {k}=, got {v:?}")
                    })?)
                }
                "verb" => f.verb = Some(v.trim().to_string()),
                other => {
                    return Err(format!(
                        "unknown filter key {other:?}: expected producer, actor or verb"
                    ))
                }
            }
        }
        if f == Filter::default() {
            return Err(format!(
                "expected at least one KEY=VALUE (producer=…, actor=…, verb=…), got {s:?}"
            ));
        }
        Ok(f)
    }
}

impl Filter {
    /// `NAME` or `NAME@VERSION`.
    pub fn parse_producer(v: &str) -> Result<(String, Option<String>), String> {
        let v = v.trim();
        let (name, version) = match v.split_once('@') {
            Some((n, ver)) => (n, Some(ver.to_string())),
            None => (v, None),
        };
        if name.is_empty() || version.as_deref() == Some("") {
            return Err(format!(
                "expected a producer NAME or NAME@VERSION (e.g. svc-x@1.4.2), got {v:?}"
            ));
        }
        Ok((name.to_string(), version))
    }

    /// Whether `e` matches every condition.
    pub fn matches(&self, e: &Event) -> bool {
        if let Some((name, version)) = &self.producer {
            let p = e.producer();
            if p.name != *name || version.as_ref().is_some_and(|v| p.version != *v) {
                return false;
            }
        }
        if self.actor.is_some_and(|a| e.actor() != a) {
            return false;
        }
        if self.verb.as_ref().is_some_and(|v| e.verb() != v) {
            return false;
        }
        true
    }
}

/// How to rebuild.
#[derive(Clone, Debug)]
pub struct RebuildConfig {
    /// Brokers.
    pub kafka: KafkaConfig,
    /// Input topics.
    pub topics: Topics,
    /// The projector (its `projection` is the version built; tunables as the live ones).
    pub projector: Projector,
    /// The live consumers' group name: offsets are stored under it so they can take over.
    pub consumer: String,
    /// Stop point.
    pub until: Option<Until>,
    /// Events to leave out (any filter matching).
    pub skip: Vec<Filter>,
    /// After catching up, keep applying new records until the projection is active.
    pub follow: bool,
    /// Most records per store batch (bulk batches end at `batch_bytes` first by default), and
    /// per apply while following.
    pub batch_records: usize,
    /// Bytes per store batch (bulk mode, see [`Applier::bulk`]: capped under the transaction
    /// limit on a store without a bulk path).
    pub batch_bytes: usize,
    /// Fetch from offset 0 and drop what is stored (tansu 0.6; see `log`).
    pub reread: bool,
    /// Continue a projection whose rebuild already caught up (e.g. a `follow` that stopped).
    pub resume_finished: bool,
    /// Allow the active projection: a restore replays into a store no consumer serves yet,
    /// whose projection is active by default.
    pub into_active: bool,
    /// The processor chain, as the live consumers run it (its decisions shape the projection;
    /// side outputs are not sent again).
    pub chain: ChainHandle,
}

impl RebuildConfig {
    /// Bulk defaults: 64 MiB store batches of at most 250,000 records.
    pub fn new(kafka: KafkaConfig, projector: Projector) -> Self {
        RebuildConfig {
            kafka,
            topics: Topics::default(),
            projector,
            consumer: "tidings-fanout".into(),
            until: None,
            skip: Vec::new(),
            follow: false,
            batch_records: 250_000,
            batch_bytes: 64 << 20,
            reread: false,
            resume_finished: false,
            into_active: false,
            chain: ChainHandle::default(),
        }
    }

    /// The options as stored in `("meta","rebuild",N)`: a resumed run must match them.
    pub(crate) fn record(&self) -> String {
        let (chain, _) = self.chain.current();
        if chain.is_empty() {
            return serde_json::json!({"until": self.until, "skip": self.skip}).to_string();
        }
        let pipeline = format!("{:016x}", chain.fingerprint());
        serde_json::json!({"until": self.until, "skip": self.skip, "pipeline": pipeline})
            .to_string()
    }
}

/// Why a rebuild stopped early.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    /// Not allowed as asked.
    #[error("{0}")]
    Refused(String),
    /// Reading the log failed.
    #[error("{0}")]
    Log(#[from] LogError),
    /// Applying failed (nothing uncommitted is lost: rerun to resume).
    #[error("{0}")]
    Apply(#[from] ApplyError),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] tidings_store::Error),
}

/// What a rebuild did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RebuildReport {
    /// The projection built.
    pub projection: Projection,
    /// Records read from the log (after the stored offsets).
    pub records: u64,
    /// Events applied.
    pub events: u64,
    /// Index entries written or removed.
    pub entries: u64,
    /// Events left out by `skip`.
    pub skipped: u64,
    /// Records the live consumers dead-lettered (counted, not sent again).
    pub dead: u64,
    /// Store batches.
    pub batches: u64,
    /// Seconds spent.
    pub seconds: f64,
    /// Of `seconds`, those the store spent after the last batch on the work the bulk commits
    /// deferred ([`Store::finish_bulk`]: on RocksDB, merging the rebuilt files).
    pub merge_seconds: f64,
    /// Whether it reached the head seen at start (or the `until` point).
    pub caught_up: bool,
    /// Where each partition stopped (next offset).
    pub positions: BTreeMap<String, i64>,
    /// Whether it resumed a killed run.
    pub resumed: bool,
}

/// Records per chunk the reader thread hands over, and chunks it may read ahead.
const READ_CHUNK: usize = 4096;
const READ_AHEAD: usize = 32;

/// How often a rebuild reports progress between batches while it reads up to the head.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Counts dead letters and side outputs instead of sending them (the live consumers sent them
/// already).
struct CountDeadLetters;

impl DeadLetterSink for CountDeadLetters {
    fn send(&self, letters: &[DeadLetter]) -> Result<(), String> {
        for d in letters {
            tracing::debug!(topic = %d.record.topic, partition = d.record.partition, offset = d.record.offset, code = %d.code, "dead letter (not re-sent by a rebuild)");
        }
        Ok(())
    }

    fn emit(&self, outputs: &[SideRecord]) -> Result<(), String> {
        tracing::debug!(
            count = outputs.len(),
            "side outputs (not re-sent by a rebuild: the live consumers sent them)"
        );
        Ok(())
    }
}

/// Progress: (totals of the committed batches, records read, caught up). Called after every
/// batch (up to the head: at the next record read after a commit, and every 250 ms).
pub type OnProgress<'a> = &'a mut dyn FnMut(&Stats, u64, bool);

/// Rebuilds `cfg.projector.projection` from the log into `store` until caught up (and, with
/// `follow`, until the projection is active or `stop` is set). See the module doc.
pub fn run(
    cfg: &RebuildConfig,
    store: Arc<dyn Store>,
    stop: &AtomicBool,
    on_progress: OnProgress<'_>,
) -> Result<RebuildReport, RebuildError> {
    let p = cfg.projector.projection;
    let started = Instant::now();
    if !cfg.into_active && versions::active(&*store)? == p {
        return Err(RebuildError::Refused(format!(
            "projection {p} is the active one; rebuild into a new version (e.g. --version {}) and switch to it",
            p + 1
        )));
    }
    let record = cfg.record();
    let stored_record = store.get(&meta::rebuild(p))?;
    let building = versions::building(&*store, p)?;
    let resumed = match &stored_record {
        Some(r) if building || cfg.resume_finished => {
            if r != record.as_bytes() {
                return Err(RebuildError::Refused(format!(
                    "projection {p} was being rebuilt with other options ({}); rerun with the same --until/--skip/--config, or `tidings drop {p}` and start over",
                    String::from_utf8_lossy(r)
                )));
            }
            true
        }
        Some(_) => {
            return Err(RebuildError::Refused(format!(
                "projection {p} already holds a finished rebuild; `tidings drop {p}` first, or pass --resume to catch it up with the log"
            )))
        }
        None if versions::exists(&*store, p)? => {
            return Err(RebuildError::Refused(format!(
                "projection {p} already holds data that no rebuild wrote; `tidings drop {p}` first or pick another --version"
            )))
        }
        None => false,
    };
    let mut mark = WriteBatch::new();
    mark.set(meta::building(p), encode_i64(1));
    mark.set(meta::rebuild(p), record.into_bytes());
    store.commit(mark)?;
    // Up to the head, the store may defer what the bulk commits leave to do (RocksDB: the
    // version's compactions) and do it once at the end, in `finish_bulk` below.
    store.begin_bulk()?;

    let mut applier = Applier::new(store.clone(), cfg.projector.clone(), cfg.consumer.clone())
        .bulk(cfg.batch_bytes)
        .batch_records(cfg.batch_records)
        .with_chain(cfg.chain.clone());
    if !cfg.skip.is_empty() {
        let filters = cfg.skip.clone();
        applier = applier.with_skip(SkipFilter(Arc::new(move |e: &Event| {
            filters.iter().any(|f| f.matches(e))
        })));
    }
    let stats = applier.stats();

    // Where each partition starts (stored offsets of a killed run) and ends.
    let mut positions: Positions = Positions::new();
    let mut ranges = Vec::new();
    for topic in cfg.topics.inputs() {
        let n = crate::log::partitions_of(&cfg.kafka, topic).map_err(RebuildError::Refused)?;
        for part in 0..n {
            let stored = applier.stored_offset(topic, part)?;
            positions.insert((topic.to_string(), part), stored);
            let end = match &cfg.until {
                Some(Until::Offsets(m)) => m.get(&format!("{topic}:{part}")).copied(),
                _ => None,
            };
            ranges.push(PartitionRange {
                topic: topic.to_string(),
                partition: part,
                start: stored.unwrap_or(0),
                end,
            });
        }
    }
    if let Some(Until::Offsets(m)) = &cfg.until {
        for k in m.keys() {
            if !ranges
                .iter()
                .any(|r| format!("{}:{}", r.topic, r.partition) == *k)
            {
                return Err(RebuildError::Refused(format!(
                    "--until names {k}, which is not a partition of the input topics {:?}",
                    cfg.topics.inputs()
                )));
            }
        }
    }
    let mut reader = LogReader::open_merged(&cfg.kafka, &ranges, cfg.reread)?;
    if let Some(Until::Time(t)) = cfg.until {
        reader.stop_after_time(t);
    }
    reader.fix_ends(Duration::from_secs(30))?;
    tracing::debug!(
        projection = p,
        partitions = ranges.len(),
        ms = started.elapsed().as_millis() as u64,
        "rebuild: the log's ends are fixed; reading"
    );

    let mut report = RebuildReport {
        projection: p,
        resumed,
        ..RebuildReport::default()
    };
    // Whether to go on after an apply: `false` once the projection was switched to (the live
    // consumers own it now).
    let settle = |outcome: Outcome| -> Result<bool, RebuildError> {
        match outcome {
            Outcome::Done(_) => Ok(true),
            Outcome::Fenced { .. } if versions::active(&*store)? == p => Ok(false),
            Outcome::Fenced { stored, .. } => Err(RebuildError::Refused(format!(
                "another writer moved projection {p}'s offsets ({stored:?}): the live consumers after a switch, or a second rebuild; this rebuild stops"
            ))),
        }
    };
    let apply = |batch: &mut Vec<Record>,
                 positions: &mut Positions,
                 report: &mut RebuildReport|
     -> Result<bool, RebuildError> {
        if batch.is_empty() {
            return Ok(true);
        }
        report.records += batch.len() as u64;
        let going = settle(applier.apply(positions, batch, &CountDeadLetters)?)?;
        batch.clear();
        Ok(going)
    };

    // Phase 1: the log up to the head seen at start (or `until`), in merge order, as one
    // stream: a reader thread fetches and merges chunks ahead of the applier, whose batches
    // run on across chunk boundaries (its pipeline never drains until the end).
    let mut caught_up = false;
    std::thread::scope(|s| -> Result<(), RebuildError> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<(Vec<Decoded>, bool)>(READ_AHEAD);
        let reader = &mut reader;
        std::thread::Builder::new()
            .name("rebuild-read".into())
            .spawn_scoped(s, move || {
                let mut chunk = Vec::with_capacity(READ_CHUNK);
                while !stop.load(Ordering::SeqCst) {
                    match reader.next_merged(Duration::from_millis(50)) {
                        Next::Record(r) => {
                            // Decoded here, beside the fetching, off the planner's thread.
                            chunk.push(Decoded::new(r.0));
                            if chunk.len() >= READ_CHUNK {
                                let full =
                                    std::mem::replace(&mut chunk, Vec::with_capacity(READ_CHUNK));
                                if tx.send((full, false)).is_err() {
                                    return;
                                }
                            }
                        }
                        Next::Waiting => {}
                        Next::End => {
                            let _ = tx.send((chunk, true));
                            return;
                        }
                    }
                }
            })
            .map_err(|e| RebuildError::Refused(format!("cannot start the reader thread: {e}")))?;
        let mut ended = false;
        let mut read = 0u64;
        let (mut batches, mut last_progress) = (0, Instant::now());
        // Ending early (an error, a fence) drops `rx`, which stops the reader at its next send.
        let records = rx
            .iter()
            .flat_map(|(chunk, end)| {
                ended |= end;
                chunk
            })
            .inspect(|_| {
                if read == 0 {
                    // The merge waits for a record of every partition (see `LogReader`).
                    tracing::debug!(
                        ms = started.elapsed().as_millis() as u64,
                        "rebuild: first record in merge order"
                    );
                }
                read += 1;
                // After every committed batch (seen at the next record), and now and then.
                let now = stats.batches.load(Ordering::Relaxed);
                if now != batches || (read % 1024 == 0 && last_progress.elapsed() >= PROGRESS_EVERY)
                {
                    (batches, last_progress) = (now, Instant::now());
                    on_progress(&stats, read, false);
                }
            });
        let outcome = applier.apply_stream(&mut positions, records, &CountDeadLetters)?;
        report.records = read;
        caught_up = settle(outcome)? && ended;
        Ok(())
    })?;
    if caught_up {
        // Before the projection may be switched to: the store merges what the bulk commits
        // left for later (RocksDB: the table files in the version's column family), so that
        // readers of N never meet it half compacted. Part of the rebuild's time.
        tracing::info!(
            projection = p,
            "rebuild: the log is applied; the store merges the rebuilt files now"
        );
        let t = Instant::now();
        store.finish_bulk()?;
        report.merge_seconds = t.elapsed().as_secs_f64();
        let mut done = WriteBatch::new();
        done.clear(meta::building(p));
        store.commit(done)?;
        on_progress(&stats, report.records, true);
        tracing::info!(projection = p, "rebuild caught up with the log");
    }

    // Phase 2 (`follow`, without `until`): new records as they come, until N is active.
    if caught_up && cfg.follow && cfg.until.is_none() {
        reader.open_ends();
        let mut batch: Vec<Record> = Vec::new();
        let mut last_check = Instant::now();
        let mut last_apply = Instant::now();
        while !stop.load(Ordering::SeqCst) {
            match reader.next_polled(Duration::from_millis(50)) {
                Next::Record(r) => batch.push(r.0),
                Next::Waiting | Next::End => {}
            }
            if batch.len() >= cfg.batch_records
                || (!batch.is_empty() && last_apply.elapsed() > Duration::from_millis(50))
            {
                if !apply(&mut batch, &mut positions, &mut report)? {
                    break;
                }
                on_progress(&stats, report.records, true);
                last_apply = Instant::now();
            }
            if last_check.elapsed() > Duration::from_millis(100) {
                last_check = Instant::now();
                if versions::active(&*store)? == p {
                    let _ = apply(&mut batch, &mut positions, &mut report)?;
                    tracing::info!(
                        projection = p,
                        "projection is active: the live consumers continue it; the rebuild stops"
                    );
                    break;
                }
            }
        }
        let _ = apply(&mut batch, &mut positions, &mut report)?;
    }

    report.caught_up = caught_up;
    report.events = stats.events.load(Ordering::Relaxed);
    report.entries = stats.entries.load(Ordering::Relaxed);
    report.skipped = stats.filtered.load(Ordering::Relaxed);
    report.dead = stats.dead.load(Ordering::Relaxed);
    report.batches = stats.batches.load(Ordering::Relaxed);
    report.positions = positions
        .iter()
        .map(|((t, part), off)| (format!("{t}:{part}"), off.unwrap_or(0)))
        .collect();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidings_core::event::{GraphChange, GraphOp, Producer};
    use tidings_core::EventId;

    #[test]
    fn the_record_names_the_chain_so_a_resume_under_another_is_refused() {
        let cfg = RebuildConfig::new(KafkaConfig::new("x"), Projector::new(2));
        // Without a chain: the record of builds before the chain existed.
        assert!(!cfg.record().contains("pipeline"), "{}", cfg.record());
        let chain = |window: i64| {
            let text =
                format!("[[processor]]\nid = \"d\"\nkind = \"dedupe\"\nwindow_ms = {window}\n");
            let pc: tidings_core::process::PipelineConfig =
                toml::from_str(&text).expect("a pipeline");
            ChainHandle::new(Arc::new(
                tidings_core::process::Chain::build(&pc).expect("a chain"),
            ))
        };
        let mut a = cfg.clone();
        a.chain = chain(1000);
        let mut b = cfg.clone();
        b.chain = chain(2000);
        assert!(a.record().contains("\"pipeline\""), "{}", a.record());
        assert_ne!(a.record(), b.record());
        let mut a2 = cfg;
        a2.chain = chain(1000);
        assert_eq!(a.record(), a2.record());
    }

    #[test]
    fn parses_until_and_filters() {
        assert_eq!(
            "2026-11-01T00:00Z".parse::<Until>(),
            Ok(Until::Time(1_793_491_200_000))
        );
        let Ok(Until::Offsets(m)) = "tidings.activities:0=12, tidings.graph:3=4".parse() else {
            panic!("offsets not parsed")
        };
        assert_eq!(m.get("tidings.graph:3"), Some(&4));
        assert!("tidings.activities=12".parse::<Until>().is_err());
        let f: Filter = "producer=svc-x@1.4.2,verb=follow".parse().expect("filter");
        let mut e = GraphChange {
            id: EventId::MIN,
            actor: 1,
            subject: 2,
            op: GraphOp::Follow,
            time_ms: 0,
            producer: Producer::new("svc-x", "1.4.2"),
        };
        assert!(f.matches(&Event::Graph(e.clone())));
        e.producer.version = "1.4.3".into();
        assert!(!f.matches(&Event::Graph(e.clone())));
        assert!("producer=svc-x"
            .parse::<Filter>()
            .is_ok_and(|f| f.matches(&Event::Graph(e))));
        for bad in ["", "producer=", "colour=red", "actor=bob", "producer=x@"] {
            assert!(bad.parse::<Filter>().is_err(), "{bad:?} accepted");
        }
    }
}
