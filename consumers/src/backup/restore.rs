//! `tidings restore`: a backup chain into an empty store, then the log after it.
//!
//! 1. Pick the chain: the newest backup (or the one named), or with `until` the newest full
//!    backup finished by then and the incrementals after it; check every file's checksum
//!    before anything is written.
//! 2. Load the full backup's chunks with [`Store::load_sorted`] (RocksDB: table files ingested
//!    straight into the bottom level), in parallel; set the consumers' offsets to the ones the
//!    backup read first; recompute the graph counts from the edges (see the module doc of
//!    [`super`]).
//! 3. Replay the log from those offsets with the live consumers' [`Applier`], in merge order:
//!    first from the incrementals' and the archive's segments, then — given brokers — from
//!    Kafka through [`rebuild::run`], up to `until` or the head.
//! 4. Make the projection active.
//!
//! A restore that fails midway leaves a partial store: rerun it with `force`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tidings_core::keys::graph::{self, Count, Edge};
use tidings_core::keys::{self, meta, meta::LAYOUT_VERSION, Projection};
use tidings_core::write::encode_i64;
use tidings_store::{KeyValue, RangeOptions, Store, WriteBatch};

use super::{files, list, BackupError, Kind, LogSource, Manifest, Segment, MARKS};
use crate::apply::{Applier, DeadLetter, DeadLetterSink, Outcome, Positions, Record};
use crate::chain::{ChainHandle, SideRecord};
use crate::project::Projector;
use crate::rebuild::{self, RebuildConfig, Until};

/// How to restore.
#[derive(Clone, Debug)]
pub struct RestoreOptions {
    /// The backup to restore (full or incremental; default: the newest).
    pub backup: Option<String>,
    /// The state as of this time (ms since the epoch): each partition stops before its first
    /// record stamped later.
    pub until: Option<i64>,
    /// Replace what the target store holds.
    pub force: bool,
    /// The live consumers' group (whose offsets the replay continues).
    pub consumer: String,
    /// Projector settings, as the live consumers' (its projection is the backup's).
    pub projector: Projector,
    /// Brokers to replay the rest of the log from (`None`: backup and archive only; the live
    /// consumers continue from the restored offsets).
    pub log: Option<LogSource>,
    /// Threads loading chunks.
    pub threads: usize,
    /// Records per apply while replaying.
    pub batch_records: usize,
    /// The processor chain, as the live consumers run it (side outputs are not sent again).
    pub chain: ChainHandle,
}

impl RestoreOptions {
    /// Defaults for the group `consumer`.
    pub fn new(projector: Projector, consumer: impl Into<String>) -> Self {
        RestoreOptions {
            backup: None,
            until: None,
            force: false,
            consumer: consumer.into(),
            projector,
            log: None,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            batch_records: 20_000,
            chain: ChainHandle::default(),
        }
    }
}

/// What a restore did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RestoreReport {
    /// The backups restored, full first.
    pub chain: Vec<String>,
    /// The projection restored (now active).
    pub projection: Projection,
    /// Pairs loaded from the full backup.
    pub pairs: u64,
    /// Bytes of them.
    pub bytes: u64,
    /// Seconds loading them.
    pub load_seconds: f64,
    /// Graph counts recomputed from the edges.
    pub counts: u64,
    /// Records replayed from backup and archive segments.
    pub replayed_segments: u64,
    /// Records replayed from Kafka.
    pub replayed_kafka: u64,
    /// Index entries the replay wrote.
    pub entries: u64,
    /// Where the consumer's offsets stand now (`topic:partition` → next offset).
    pub positions: BTreeMap<String, i64>,
    /// Seconds in all.
    pub seconds: f64,
}

/// Progress of a phase: (phase, done, total).
pub type OnProgress<'a> = &'a mut dyn FnMut(&str, u64, u64);

/// Picks the chain to restore: a full backup and the incrementals after it, in order.
pub fn chain(
    dir: &Path,
    backup: Option<&str>,
    until: Option<i64>,
) -> Result<Vec<Manifest>, BackupError> {
    let all = list(dir)?;
    if all.is_empty() {
        return Err(BackupError::Refused(format!(
            "{} holds no complete backup (a backup directory without manifest.json was interrupted)",
            dir.display()
        )));
    }
    let by_id: HashMap<&str, &Manifest> = all.iter().map(|m| (m.id.as_str(), m)).collect();
    let parents = |m: &Manifest| -> Result<Vec<Manifest>, BackupError> {
        let mut out = vec![m.clone()];
        while let Some(p) = &out.last().expect("one").parent {
            let parent = by_id.get(p.as_str()).ok_or_else(|| {
                BackupError::Refused(format!(
                    "backup {} continues {p}, which is not in {}: restore an older full backup",
                    out.last().expect("one").id,
                    dir.display()
                ))
            })?;
            out.push((*parent).clone());
        }
        out.reverse();
        Ok(out)
    };
    let target = match (backup, until) {
        (Some(id), _) => by_id.get(id).copied().ok_or_else(|| {
            BackupError::Refused(format!(
                "no backup {id} in {} (there are: {})",
                dir.display(),
                all.iter()
                    .map(|m| m.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?,
        (None, Some(t)) => {
            let full = all
                .iter()
                .rev()
                .find(|m| m.kind == Kind::Full && m.finished_ms <= t)
                .ok_or_else(|| {
                    BackupError::Refused(format!(
                        "no full backup in {} finished by {}: rebuild that state from the log instead (`tidings rebuild --version N --until …`)",
                        dir.display(),
                        tidings_core::time::format_ms(t)
                    ))
                })?;
            // The newest backup descending from it: its incrementals are replayed up to `until`.
            let mut best = full;
            for m in all.iter().rev() {
                if parents(m)?.iter().any(|a| a.id == full.id) {
                    best = m;
                    break;
                }
            }
            best
        }
        (None, None) => all.last().expect("not empty"),
    };
    let chain = parents(target)?;
    if chain.first().is_none_or(|m| m.kind != Kind::Full) {
        return Err(BackupError::Refused(format!(
            "backup {} does not go back to a full backup",
            target.id
        )));
    }
    Ok(chain)
}

/// Checks every file of the chain against its manifest (before anything is written).
pub fn check_chain(dir: &Path, chain: &[Manifest]) -> Result<(), BackupError> {
    for m in chain {
        if m.layout != LAYOUT_VERSION {
            return Err(BackupError::Refused(format!(
                "backup {} has key layout {}, this build uses {LAYOUT_VERSION}: restore it with the tidings version that wrote it ({}), then rebuild",
                m.id, m.layout, m.tidings_version
            )));
        }
        let bdir = Manifest::path(dir, &m.id);
        for (file, sha) in m.files() {
            files::check_file(&bdir.join(file), sha)?;
        }
    }
    Ok(())
}

/// Drops dead letters and side outputs instead of sending them (the live consumers sent them).
struct CountDeadLetters;

impl DeadLetterSink for CountDeadLetters {
    fn send(&self, _letters: &[DeadLetter]) -> Result<(), String> {
        Ok(())
    }

    fn emit(&self, _outputs: &[SideRecord]) -> Result<(), String> {
        Ok(())
    }
}

/// Restores into `store` (see the module doc).
pub fn run(
    store: Arc<dyn Store>,
    dir: &Path,
    o: &RestoreOptions,
    on_progress: OnProgress<'_>,
) -> Result<RestoreReport, BackupError> {
    let started = Instant::now();
    let chain = chain(dir, o.backup.as_deref(), o.until)?;
    check_chain(dir, &chain)?;
    let full = &chain[0];
    let p = full.projection;
    empty_target(&*store, o.force)?;
    let mut report = RestoreReport {
        chain: chain.iter().map(|m| m.id.clone()).collect(),
        projection: p,
        ..RestoreReport::default()
    };

    // 2. Load, set offsets, recompute counts.
    let t = Instant::now();
    let (pairs, bytes) = load(&*store, dir, full, o.threads, on_progress)?;
    report.pairs = pairs;
    report.bytes = bytes;
    report.load_seconds = t.elapsed().as_secs_f64();
    let mut b = WriteBatch::new();
    for (consumer, offs) in &full.offsets {
        for (tp, off) in offs {
            let (topic, part) = split_tp(tp)?;
            b.set(
                keys::offsets::key(p, consumer, topic, part),
                encode_i64(*off),
            );
        }
    }
    b.set(meta::layout(), LAYOUT_VERSION.to_le_bytes());
    store.commit(b)?;
    report.counts = recount(&*store, p)?;

    // 3. Replay: segments, then Kafka.
    let mut projector = o.projector.clone();
    projector.projection = p;
    let mut rcfg = RebuildConfig::new(
        o.log.as_ref().map_or_else(
            || tidings_producers::KafkaConfig::new(""),
            |l| l.kafka.clone(),
        ),
        projector.clone(),
    );
    rcfg.consumer = o.consumer.clone();
    rcfg.until = o.until.map(Until::Time);
    rcfg.resume_finished = true;
    rcfg.into_active = true;
    rcfg.chain = o.chain.clone();
    if let Some(l) = &o.log {
        rcfg.topics = l.topics.clone();
        rcfg.reread = l.reread;
    }
    let mut mark = WriteBatch::new();
    mark.set(meta::building(p), encode_i64(1))
        .set(meta::rebuild(p), rcfg.record().into_bytes());
    store.commit(mark)?;

    let applier =
        Applier::new(store.clone(), projector, o.consumer.clone()).with_chain(o.chain.clone());
    let stats = applier.stats();
    let mut positions: Positions = HashMap::new();
    if let Some(offs) = full.offsets.get(&o.consumer) {
        for (tp, off) in offs {
            let (topic, part) = split_tp(tp)?;
            positions.insert((topic.to_string(), part), Some(*off));
        }
    }
    report.replayed_segments = replay_segments(
        dir,
        &chain,
        &applier,
        &mut positions,
        o,
        &rcfg.topics,
        on_progress,
    )?;
    if o.log.is_some() {
        let stop = AtomicBool::new(false);
        let mut cb = |s: &crate::apply::Stats, read: u64, _caught_up: bool| {
            on_progress("replay from kafka", read, s.events.load(Ordering::Relaxed));
        };
        let r = rebuild::run(&rcfg, store.clone(), &stop, &mut cb).map_err(|e| {
            BackupError::Replay(format!(
                "replaying the log from Kafka after the backup: {e} (rerun the restore with --force)"
            ))
        })?;
        report.replayed_kafka = r.records;
        report.entries += r.entries;
    }
    report.entries += stats.entries.load(Ordering::Relaxed);

    // 4. Active.
    let mut done = WriteBatch::new();
    done.clear(meta::building(p))
        .clear(meta::rebuild(p))
        .set(meta::active(), encode_i64(p));
    store.commit(done)?;
    let (b, e) = keys::offsets::consumer_range(p, &o.consumer);
    for (k, v) in store.snapshot()?.range(&b, &e, RangeOptions::default())? {
        if let Some((_, topic, part)) = keys::offsets::parse_key(p, &k) {
            report.positions.insert(
                format!("{topic}:{part}"),
                tidings_core::write::decode_i64(&v),
            );
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    tracing::info!(chain = ?report.chain, projection = p, pairs = report.pairs, replayed = report.replayed_segments + report.replayed_kafka, "restored");
    Ok(report)
}

fn split_tp(tp: &str) -> Result<(&str, i32), BackupError> {
    tp.rsplit_once(':')
        .and_then(|(t, p)| Some((t, p.parse().ok()?)))
        .ok_or_else(|| BackupError::Refused(format!("offset key {tp:?} is not TOPIC:PARTITION")))
}

/// Refuses a store holding anything but the layout marker, or (`force`) clears it.
fn empty_target(store: &dyn Store, force: bool) -> Result<(), BackupError> {
    let (begin, end) = (vec![0u8], vec![0xffu8]);
    let layout = meta::layout();
    let found = store
        .snapshot()?
        .range(&begin, &end, RangeOptions::forward(2))?
        .into_iter()
        .find(|(k, _)| *k != layout);
    if let Some((k, _)) = found {
        if !force {
            return Err(BackupError::Refused(format!(
                "the target store is not empty (it holds e.g. key {}): restore into an empty store, or pass --force to replace everything in it",
                files::hex(&k)
            )));
        }
        tracing::warn!("--force: clearing the target store before restoring");
        let mut b = WriteBatch::new();
        b.clear_range(begin, end);
        store.commit(b)?;
    }
    Ok(())
}

/// Loads every chunk of `full` but its offsets, on `threads` threads. Returns (pairs, bytes).
fn load(
    store: &dyn Store,
    dir: &Path,
    full: &Manifest,
    threads: usize,
    on_progress: OnProgress<'_>,
) -> Result<(u64, u64), BackupError> {
    let bdir = Manifest::path(dir, &full.id);
    let prefix = keys::projection(full.projection).bytes().to_vec();
    let prefix = &prefix;
    let chunks: Vec<_> = full.chunks.iter().filter(|c| c.keyspace != "off").collect();
    let total: u64 = chunks.iter().map(|c| c.raw_bytes).sum();
    let next = AtomicUsize::new(0);
    let (pairs, bytes) = (AtomicU64::new(0), AtomicU64::new(0));
    let failed = AtomicBool::new(false);
    let (tx, rx) = std::sync::mpsc::channel::<Result<u64, BackupError>>();
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            let tx = tx.clone();
            let (next, pairs, bytes, failed, chunks, bdir) =
                (&next, &pairs, &bytes, &failed, &chunks, &bdir);
            s.spawn(move || {
                while !failed.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(c) = chunks.get(i) else { break };
                    let path = bdir.join(&c.file);
                    let r = super::read_chunk(&path, c)
                        .map(|kv| absolute(kv, c.keyspace != MARKS, prefix))
                        .and_then(|kv| {
                            store.load_sorted(&kv)?;
                            Ok(kv.len() as u64)
                        });
                    if let Ok(n) = &r {
                        pairs.fetch_add(*n, Ordering::Relaxed);
                        bytes.fetch_add(c.raw_bytes, Ordering::Relaxed);
                    } else {
                        failed.store(true, Ordering::Relaxed);
                    }
                    if tx.send(r).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let mut first_err = None;
        for r in rx {
            match r {
                Ok(_) => on_progress("load", bytes.load(Ordering::Relaxed), total),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    })?;
    Ok((pairs.into_inner(), bytes.into_inner()))
}

/// Chunk keys are relative to the projection (but marks'): put the prefix back.
fn absolute(kv: Vec<KeyValue>, projection_keys: bool, prefix: &[u8]) -> Vec<KeyValue> {
    if !projection_keys {
        return kv;
    }
    kv.into_iter()
        .map(|(k, v)| ([prefix, k.as_slice()].concat(), v))
        .collect()
}

/// Recomputes every graph count of projection `p` from its edges. Returns how many.
fn recount(store: &dyn Store, p: Projection) -> Result<u64, BackupError> {
    let (cb, ce) = keys::keyspace_range(p, "cnt");
    let mut counts: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
    for (set, what) in [
        (Edge::Follower, Count::Followers),
        (Edge::Following, Count::Following),
        (Edge::Block, Count::Blocking),
        (Edge::Mute, Count::Muting),
    ] {
        let sub = graph::edges(p, set);
        let (mut from, end) = sub.range();
        // Runs of one user's edges are adjacent: count a run, then look the key up once.
        let mut run: Option<(i64, i64)> = None;
        let flush = |run: Option<(i64, i64)>, counts: &mut BTreeMap<Vec<u8>, i64>| {
            if let Some((user, n)) = run {
                *counts.entry(graph::count(p, user, what)).or_default() += n;
            }
        };
        loop {
            let mut batch_run = run.take();
            let next = store.snapshot()?.scan(&from, &end, 4 << 20, &mut |k, _| {
                if let Some((a, _)) = graph::parse_any_edge(&sub, k) {
                    match &mut batch_run {
                        Some((u, n)) if *u == a => *n += 1,
                        other => {
                            if let Some((u, n)) = other.take() {
                                *counts.entry(graph::count(p, u, what)).or_default() += n;
                            }
                            *other = Some((a, 1));
                        }
                    }
                }
            })?;
            run = batch_run;
            match next {
                Some(n) => from = n,
                None => break,
            }
        }
        flush(run, &mut counts);
    }
    let mut clear = WriteBatch::new();
    clear.clear_range(cb, ce);
    store.commit(clear)?;
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = counts
        .into_iter()
        .filter(|(_, n)| *n != 0)
        .map(|(k, n)| (k, encode_i64(n)))
        .collect();
    for part in pairs.chunks(100_000) {
        store.load_sorted(part)?;
    }
    Ok(pairs.len() as u64)
}

/// One partition's segments (backup and archive), read on demand from a position.
struct PartSource {
    tp: (String, i32),
    rank: usize,
    /// (file path, segment), by first offset.
    segments: Vec<(PathBuf, Segment)>,
    buf: VecDeque<Record>,
    /// Next offset wanted.
    next: i64,
    /// Stopped: no segment continues `next`, or `until` reached.
    done: bool,
}

impl PartSource {
    /// Fills the buffer from the segment holding `next`; false when none does.
    fn fill(&mut self) -> Result<bool, BackupError> {
        while self.buf.is_empty() && !self.done {
            let Some((path, s)) = self
                .segments
                .iter()
                .find(|(_, s)| s.from <= self.next && self.next < s.to)
                .cloned()
            else {
                self.done = true;
                break;
            };
            let raw = files::read(&path, files::SEGMENT_MAGIC, &s.sha256, s.raw_bytes)?;
            let records = files::records(&path, &raw, &s.topic, s.partition)?;
            self.buf = records
                .into_iter()
                .filter(|r| r.offset >= self.next)
                .collect();
            if self.buf.is_empty() {
                // Nothing left in it (e.g. trailing offsets without records): skip past it.
                self.next = s.to;
            }
        }
        Ok(!self.buf.is_empty())
    }
}

/// Replays the chain's incrementals and the archive from `positions`, in merge order, up to
/// `o.until`. Returns the records applied.
fn replay_segments(
    dir: &Path,
    chain: &[Manifest],
    applier: &Applier,
    positions: &mut Positions,
    o: &RestoreOptions,
    topics: &tidings_producers::Topics,
    on_progress: OnProgress<'_>,
) -> Result<u64, BackupError> {
    let mut by_tp: BTreeMap<(String, i32), Vec<(PathBuf, Segment)>> = BTreeMap::new();
    for m in &chain[1..] {
        let bdir = Manifest::path(dir, &m.id);
        for s in &m.segments {
            by_tp
                .entry((s.topic.clone(), s.partition))
                .or_default()
                .push((bdir.join(&s.file), s.clone()));
        }
    }
    let archive = dir.join("archive");
    if let Ok(topics_dir) = std::fs::read_dir(&archive) {
        for t in topics_dir.flatten() {
            let topic = t.file_name().to_string_lossy().into_owned();
            for part in std::fs::read_dir(t.path()).into_iter().flatten().flatten() {
                let Ok(partition) = part.file_name().to_string_lossy().parse::<i32>() else {
                    continue;
                };
                for s in super::archived(dir, &topic, partition)? {
                    let path = super::archive_dir(dir, &topic, partition).join(&s.file);
                    by_tp
                        .entry((topic.clone(), partition))
                        .or_default()
                        .push((path, s));
                }
            }
        }
    }
    let inputs = topics.inputs();
    let mut parts: Vec<PartSource> = Vec::new();
    for (tp, mut segments) in by_tp {
        segments.sort_by_key(|(_, s)| s.from);
        let next = positions.get(&tp).copied().flatten().unwrap_or(0);
        positions.entry(tp.clone()).or_insert(None);
        parts.push(PartSource {
            rank: inputs
                .iter()
                .position(|t| *t == tp.0)
                .unwrap_or(inputs.len()),
            tp,
            segments,
            buf: VecDeque::new(),
            next,
            done: false,
        });
    }
    let total: u64 = parts
        .iter()
        .flat_map(|p| p.segments.iter().map(|(_, s)| s.records))
        .sum();
    let mut batch: Vec<Record> = Vec::with_capacity(o.batch_records);
    let mut applied = 0u64;
    let apply = |batch: &mut Vec<Record>, positions: &mut Positions| -> Result<(), BackupError> {
        if batch.is_empty() {
            return Ok(());
        }
        match applier
            .apply(positions, batch, &CountDeadLetters)
            .map_err(|e| BackupError::Replay(format!("replaying the backup's log: {e}")))?
        {
            Outcome::Done(_) => {}
            Outcome::Fenced { stored, .. } => {
                return Err(BackupError::Replay(format!(
                    "another writer moved the restored projection's offsets ({stored:?}): is a consumer running against the target store?"
                )))
            }
        }
        batch.clear();
        Ok(())
    };
    loop {
        // The smallest (timestamp, topic rank, partition) head among unfinished partitions.
        let mut best: Option<(usize, (i64, usize, i32))> = None;
        for (i, part) in parts.iter_mut().enumerate() {
            if !part.fill()? {
                continue;
            }
            let r = part.buf.front().expect("filled");
            if o.until.is_some_and(|t| r.timestamp_ms.unwrap_or(0) > t) {
                part.done = true;
                part.buf.clear();
                continue;
            }
            let k = (r.timestamp_ms.unwrap_or(0), part.rank, part.tp.1);
            if best.is_none_or(|(_, b)| k < b) {
                best = Some((i, k));
            }
        }
        let Some((i, _)) = best else { break };
        let r = parts[i].buf.pop_front().expect("a head");
        parts[i].next = r.offset + 1;
        batch.push(r);
        if batch.len() >= o.batch_records {
            applied += batch.len() as u64;
            apply(&mut batch, positions)?;
            on_progress("replay from backup", applied, total);
        }
    }
    applied += batch.len() as u64;
    apply(&mut batch, positions)?;
    on_progress("replay from backup", applied, total);
    Ok(applied)
}
