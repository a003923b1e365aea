//! Backups of a projection: hot snapshots with their offsets, incrementals, the log archive,
//! restore and point-in-time recovery (DESIGN.md, "Replay, rollback, migration, backup").
//!
//! A backup directory holds `backups/ID/` (one per backup: `manifest.json` and its files) and
//! `archive/TOPIC/PARTITION/` (log segments copied by [`archive`]).
//!
//! **Full backup** ([`full`]): the consumers' offsets are read **first**, then every keyspace
//! of the projection (and the users' notification marks) in chunks of bounded size, each chunk
//! from its own read view (a view lives ≤ 5 s on FoundationDB). The chunks are from different
//! moments: a *fuzzy* snapshot. It is made consistent at restore by replaying the log from the
//! offsets read first: every effect of the log at or after them is applied again, and applying
//! an effect twice changes nothing (sets and clears of keys whose values depend on the event
//! only; existence checks decide the rest). Two kinds of state would not survive that on their
//! own, and are handled:
//!
//! - **guards read late**: a retraction replayed against a message already tombstoned does
//!   nothing, so the feed entries it removed must not be in the snapshot. Keyspaces are read in
//!   phases ([`SCAN_ORDER`]): every keyspace replay checks (messages, fan-out cursors, graph
//!   edges, pulled authors) completely before any it writes from those checks (feed entries,
//!   versions, counts), so a guard is never newer than the effects it guards. Within a phase,
//!   ranges are split and read by parallel readers;
//! - **processor decisions** (`prc`, see `tidings_core::keys::procstate`) are read in a phase
//!   of their own before everything else, so no decision in the snapshot is newer than the
//!   effects read after it. They are replay-safe besides: a dedupe record names the record
//!   where the event was first seen, so replaying that very record applies it again (only
//!   other copies are duplicates), and a rate limiter records each admitted event rather than
//!   a counter, so a replayed admitted event is admitted again and never counted twice;
//! - **counters** (`cnt`, by atomic add): restore recomputes them from the restored edges
//!   before replaying, so edges and counts agree and replay keeps them agreeing. Feed versions
//!   (`fver`) may end higher than an uninterrupted run's: they are cache validators, which only
//!   have to grow, never counts readers see.
//!
//! **Incremental** ([`incremental`]): the log records between the previous backup's offsets and
//! the current ones, as compressed segments. A snapshot plus the log after its offsets is a
//! point-in-time backup (as FoundationDB's backup is a snapshot plus a mutation log). Why not
//! key-range digests: a feed store changes everywhere — one post touches a thousand feeds
//! spread over the whole index — so most ranges differ from one day to the next, and finding
//! out still means reading the whole store; the log is the compact record of what changed
//! (one event, not its thousand effects), and it is what a restore replays anyway. The price:
//! restoring an incremental replays it at rebuild speed, so take a full backup often enough
//! that the chain stays short.
//!
//! **Archive** ([`archive`]): a copy of the input topics' records, continued from where the
//! last run stopped, so recovery does not depend on Kafka's retention.

mod files;
pub mod restore;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest as _, Sha256};
use tidings_core::keys::{self, meta::LAYOUT_VERSION, Projection};
use tidings_producers::{KafkaConfig, Topics};
use tidings_store::{RangeOptions, Store};

pub use files::{hex, unhex};

use crate::apply::Record;
use crate::log::{LogError, LogReader, Next, PartitionRange};
use crate::versions;

/// The order keyspaces are read in (see the module doc): the processors' decisions (`prc`)
/// first of all, then the [`GUARDS`] (what replay checks) completely before the effects they
/// guard. `off` is also read first of all, into the manifest; its chunk is kept for the record.
pub const SCAN_ORDER: [&str; 12] = [
    "prc", "msg", "fan", "fwr", "fwg", "blk", "mut", "pull", "feed", "fver", "cnt", "off",
];

/// The name of the users' notification marks in manifests (they live outside projections).
pub const MARKS: &str = "mark";

/// Format version of manifests and files.
pub const FORMAT: u32 = 1;

/// Why a backup, archive or restore failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Not allowed as asked.
    #[error("{0}")]
    Refused(String),
    /// A backup file does not match its manifest.
    #[error("corrupt backup: {file} {why}; restore from another backup (`tidings backups --from DIR` lists them)")]
    Corrupt {
        /// The file.
        file: String,
        /// What is wrong.
        why: String,
    },
    /// Reading or writing the backup directory failed.
    #[error("{0}")]
    Io(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] tidings_store::Error),
    /// Reading the log failed.
    #[error("{0}")]
    Log(#[from] LogError),
    /// Replaying failed (rerun the restore with --force).
    #[error("{0}")]
    Replay(String),
}

fn io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> BackupError {
    move |e| BackupError::Io(format!("{what}: {e}"))
}

/// Full snapshot or log since the previous backup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Every keyspace.
    Full,
    /// The log since the parent's offsets.
    Incremental,
}

/// One chunk of a full backup: the pairs of `[begin, end)`, read in one view.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Chunk {
    /// File name in the backup's directory.
    pub file: String,
    /// Keyspace short name (`msg`, `feed`, …, or `mark`).
    pub keyspace: String,
    /// First key covered (hex, full key).
    pub begin: String,
    /// First key not covered (hex); chunks of a keyspace tile its range.
    pub end: String,
    /// Pairs in it.
    pub records: u64,
    /// Bytes of keys and values.
    pub raw_bytes: u64,
    /// Bytes of the file.
    pub bytes: u64,
    /// SHA-256 of the file.
    pub sha256: String,
    /// SHA-256 of its uncompressed body: its pairs, keys relative to the projection (what
    /// `verify` compares).
    pub content: String,
}

/// One log segment: records `[from, to)` of a partition.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Segment {
    /// File name (in the backup's directory, or the partition's archive directory).
    pub file: String,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// First offset covered.
    pub from: i64,
    /// First offset not covered.
    pub to: i64,
    /// Records in it.
    pub records: u64,
    /// Bytes of the records as encoded.
    pub raw_bytes: u64,
    /// Bytes of the file.
    pub bytes: u64,
    /// SHA-256 of the file.
    pub sha256: String,
}

/// A backup's manifest (`manifest.json`), written last: a backup without one is incomplete.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: u32,
    /// Its id (its directory name; sorts by time).
    pub id: String,
    /// Full or incremental.
    pub kind: Kind,
    /// The backup an incremental continues.
    pub parent: Option<String>,
    /// The projection backed up.
    pub projection: Projection,
    /// The key layout version.
    pub layout: i64,
    /// The tidings version that wrote it.
    pub tidings_version: String,
    /// The event schemas it knows (`name vN fingerprint`).
    pub schemas: Vec<String>,
    /// When it started (ms since the epoch).
    pub started_ms: i64,
    /// When it finished.
    pub finished_ms: i64,
    /// Per consumer, `topic:partition` → next offset, read before anything else: the state
    /// is complete once the log from these offsets is replayed.
    pub offsets: BTreeMap<String, BTreeMap<String, i64>>,
    /// Snapshot chunks (full).
    pub chunks: Vec<Chunk>,
    /// Log segments (incremental).
    pub segments: Vec<Segment>,
    /// Pairs (full) or records (incremental).
    pub records: u64,
    /// Bytes of them.
    pub raw_bytes: u64,
    /// Bytes of the files.
    pub bytes: u64,
}

impl Manifest {
    /// The backup's directory inside `dir`.
    pub fn path(dir: &Path, id: &str) -> PathBuf {
        dir.join("backups").join(id)
    }

    /// Every file of this backup with its checksum.
    pub fn files(&self) -> impl Iterator<Item = (&str, &str)> {
        self.chunks
            .iter()
            .map(|c| (c.file.as_str(), c.sha256.as_str()))
            .chain(
                self.segments
                    .iter()
                    .map(|s| (s.file.as_str(), s.sha256.as_str())),
            )
    }
}

/// The pairs of a chunk file (checked against the chunk's checksum).
pub fn read_chunk(path: &Path, c: &Chunk) -> Result<Vec<tidings_store::KeyValue>, BackupError> {
    let raw = files::read(path, files::CHUNK_MAGIC, &c.sha256, c.raw_bytes)?;
    files::pairs(path, &raw)
}

/// The paths in directory `dir` (none if it does not exist).
fn entries(dir: &Path) -> Result<Vec<PathBuf>, BackupError> {
    let read = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(dir.display())(e)),
    };
    read.map(|e| e.map(|e| e.path()).map_err(io(dir.display())))
        .collect()
}

/// Every complete backup in `dir`, oldest first.
pub fn list(dir: &Path) -> Result<Vec<Manifest>, BackupError> {
    let mut out = Vec::new();
    for backup in entries(&dir.join("backups"))? {
        let path = backup.join("manifest.json");
        let Ok(text) = fs::read_to_string(&path) else {
            continue; // incomplete (no manifest yet)
        };
        let m: Manifest = serde_json::from_str(&text).map_err(|e| BackupError::Corrupt {
            file: path.display().to_string(),
            why: format!("is not a readable manifest: {e}"),
        })?;
        if m.format != FORMAT {
            return Err(BackupError::Refused(format!(
                "{} has backup format {}, this build reads {FORMAT}",
                path.display(),
                m.format
            )));
        }
        out.push(m);
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// How to take a backup.
#[derive(Clone, Debug)]
pub struct BackupOptions {
    /// The projection (default: the active one).
    pub projection: Option<Projection>,
    /// Bytes of pairs per chunk (and per read view).
    pub chunk_bytes: usize,
    /// Read at most this many bytes of pairs per second (spare the live pipeline).
    pub max_bytes_per_s: Option<u64>,
    /// Reader threads, and as many compressing and writing (readers wait on the store and on
    /// full queues, so twice the cores measured faster than once: `tidings bench backup`).
    pub threads: usize,
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions {
            projection: None,
            chunk_bytes: 4 << 20,
            max_bytes_per_s: None,
            threads: 2 * std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }
}

/// Progress: (bytes done, bytes expected).
pub type OnProgress<'a> = &'a mut dyn FnMut(u64, u64);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn new_id(kind: Kind) -> String {
    let ms = now_ms();
    let t = tidings_core::time::format_ms(ms)
        .replace([':', '-'], "")
        .replace('.', "");
    format!(
        "{t}-{}",
        match kind {
            Kind::Full => "full",
            Kind::Incremental => "incr",
        }
    )
}

/// A new, empty backup directory and its id (never an existing one).
fn create_backup_dir(dir: &Path, kind: Kind) -> Result<(String, PathBuf), BackupError> {
    let root = dir.join("backups");
    fs::create_dir_all(&root).map_err(io(root.display()))?;
    loop {
        let id = new_id(kind);
        let path = Manifest::path(dir, &id);
        match fs::create_dir(&path) {
            Ok(()) => return Ok((id, path)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) => return Err(io(path.display())(e)),
        }
    }
}

fn schemas() -> Vec<String> {
    tidings_schemas::registry()
        .versions()
        .iter()
        .map(|v| {
            format!(
                "{} v{} {:016x}",
                v.kind().full_name(),
                v.version(),
                v.fingerprint()
            )
        })
        .collect()
}

/// Every consumer's offsets in projection `p` (one read view).
pub fn read_offsets(
    store: &dyn Store,
    p: Projection,
) -> Result<BTreeMap<String, BTreeMap<String, i64>>, BackupError> {
    let (b, e) = keys::keyspace_range(p, "off");
    let mut out: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for (k, v) in store.snapshot()?.range(&b, &e, RangeOptions::default())? {
        if let Some((consumer, topic, part)) = keys::offsets::parse_key(p, &k) {
            out.entry(consumer).or_default().insert(
                format!("{topic}:{part}"),
                tidings_core::write::decode_i64(&v),
            );
        }
    }
    Ok(out)
}

/// A key range a full backup reads: keyspace name, begin, end, bytes of projection prefix.
type ScanRange = (String, Vec<u8>, Vec<u8>, usize);

/// The ranges a full backup reads, in phases (see the module doc): every guard keyspace is read
/// completely before any effect keyspace, then offsets and marks. Within a phase, ranges are
/// read in parallel.
fn scan_phases(p: Projection) -> Vec<Vec<ScanRange>> {
    let prefix = keys::projection(p).bytes().len();
    let range = |ks: &str| {
        let (b, e) = keys::keyspace_range(p, ks);
        (ks.to_string(), b, e, prefix)
    };
    let (mb, me) = keys::marks::range();
    vec![
        SCAN_ORDER[..DECISIONS].iter().map(|ks| range(ks)).collect(),
        SCAN_ORDER[DECISIONS..DECISIONS + GUARDS]
            .iter()
            .map(|ks| range(ks))
            .collect(),
        SCAN_ORDER[DECISIONS + GUARDS..SCAN_ORDER.len() - 1]
            .iter()
            .map(|ks| range(ks))
            .collect(),
        vec![range("off"), (MARKS.to_string(), mb, me, 0)],
    ]
}

/// How many of [`SCAN_ORDER`] are processor decisions (`prc`), read in a phase of their own.
pub const DECISIONS: usize = 1;

/// How many of [`SCAN_ORDER`] after the decisions are guards.
pub const GUARDS: usize = 7;

/// `parts - 1` keys splitting `[first, last]` evenly by their bytes after the common prefix
/// (read as a big-endian number): sub-ranges for parallel readers. Uneven key distributions
/// give uneven parts; readers take parts from a queue, so that only costs balance.
fn split_points(first: &[u8], last: &[u8], parts: usize) -> Vec<Vec<u8>> {
    let common = first.iter().zip(last).take_while(|(a, b)| a == b).count();
    let num = |k: &[u8]| {
        let mut b = [0u8; 8];
        for (i, x) in k.iter().skip(common).take(8).enumerate() {
            b[i] = *x;
        }
        u64::from_be_bytes(b)
    };
    let (a, z) = (num(first), num(last));
    if z <= a || parts < 2 {
        return Vec::new();
    }
    let mut out: Vec<Vec<u8>> = Vec::new();
    for i in 1..parts as u64 {
        let x = a + ((z - a) as u128 * i as u128 / parts as u128) as u64;
        let mut k = first[..common].to_vec();
        k.extend_from_slice(&x.to_be_bytes());
        if out.last().is_none_or(|l| *l < k) && k.as_slice() > first {
            out.push(k);
        }
    }
    out
}

/// Splits ranges larger than a few chunks into parts for parallel readers: by key
/// interpolation, then again any part still large by the store's size estimate (tuple-encoded
/// integers have variable lengths, so one interpolation step can leave most of a keyspace in
/// one part).
fn split_ranges(
    store: &dyn Store,
    ranges: Vec<ScanRange>,
    chunk_bytes: usize,
) -> Result<Vec<ScanRange>, BackupError> {
    let target = 4 * chunk_bytes as u64;
    let mut out = Vec::new();
    let mut work: Vec<(ScanRange, u32)> = ranges.into_iter().map(|r| (r, 0)).collect();
    while let Some(((ks, b, e, prefix), depth)) = work.pop() {
        let size = store.estimated_size(&b, &e)?;
        if size < 2 * target || depth >= 4 {
            out.push((ks, b, e, prefix));
            continue;
        }
        let view = store.snapshot()?;
        let first = view.range(&b, &e, RangeOptions::forward(1))?;
        let last = view.range(&b, &e, RangeOptions::reverse(1))?;
        drop(view);
        let (Some((first, _)), Some((last, _))) = (first.first(), last.first()) else {
            out.push((ks, b, e, prefix));
            continue;
        };
        let parts = (size / target).clamp(2, 16) as usize;
        let points = split_points(first, last, parts);
        if points.is_empty() {
            out.push((ks, b, e, prefix));
            continue;
        }
        let mut from = b;
        for point in points {
            if point > from && point < e {
                let begin = std::mem::replace(&mut from, point.clone());
                work.push(((ks.clone(), begin, point, prefix), depth + 1));
            }
        }
        work.push(((ks, from, e, prefix), depth + 1));
    }
    // Largest first, so the last part read is a small one.
    let mut sized = Vec::with_capacity(out.len());
    for r in out {
        sized.push((store.estimated_size(&r.1, &r.2)?, r));
    }
    sized.sort_by_key(|s| std::cmp::Reverse(s.0));
    Ok(sized.into_iter().map(|(_, r)| r).collect())
}

struct RawChunk {
    seq: usize,
    keyspace: String,
    begin: Vec<u8>,
    end: Vec<u8>,
    records: u64,
    raw: Vec<u8>,
}

/// Reads `range` chunk by chunk (a fresh view each) into `tx`; throttled by the shared count.
#[allow(clippy::too_many_arguments)]
fn read_range(
    store: &dyn Store,
    range: &ScanRange,
    chunk_bytes: usize,
    seq: &AtomicUsize,
    read_bytes: &AtomicU64,
    throttle: Option<(u64, Instant)>,
    stop: &AtomicBool,
    tx: &mpsc::SyncSender<RawChunk>,
) -> Result<(), BackupError> {
    let (ks, begin, end, prefix) = range;
    let mut from = begin.clone();
    // A chunk holds `chunk_bytes` of keys and values plus 8 bytes of lengths per pair (less
    // the projection prefix each key drops): size the next buffer like the largest chunk so
    // far, so it rarely grows (and copies) while it fills.
    let mut capacity = chunk_bytes + chunk_bytes / 4;
    while !stop.load(Ordering::Relaxed) {
        let mut raw = Vec::with_capacity(capacity + (64 << 10));
        let mut records = 0u64;
        let next = store
            .snapshot()?
            .scan(&from, end, chunk_bytes, &mut |k, v| {
                // Keys relative to the projection: the chunk's bytes are what its digest covers.
                files::push_pair(&mut raw, &k[(*prefix).min(k.len())..], v);
                records += 1;
            })?;
        capacity = capacity.max(raw.len());
        let chunk_end = next.clone().unwrap_or_else(|| end.clone());
        let total = read_bytes.fetch_add(raw.len() as u64, Ordering::Relaxed) + raw.len() as u64;
        let c = RawChunk {
            seq: seq.fetch_add(1, Ordering::Relaxed),
            keyspace: ks.clone(),
            begin: std::mem::replace(&mut from, chunk_end.clone()),
            end: chunk_end,
            records,
            raw,
        };
        if tx.send(c).is_err() {
            return Ok(()); // the writers stopped: their error is reported
        }
        if let Some((rate, started)) = throttle {
            let due = Duration::from_secs_f64(total as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        if next.is_none() {
            break;
        }
    }
    Ok(())
}

/// Takes a full backup of the projection into `dir/backups/ID` while everything runs (see the
/// module doc). Returns its manifest.
pub fn full(
    store: &dyn Store,
    dir: &Path,
    o: &BackupOptions,
    on_progress: OnProgress<'_>,
) -> Result<Manifest, BackupError> {
    let p = match o.projection {
        Some(p) => p,
        None => versions::active(store)?,
    };
    if !versions::exists(store, p)? {
        return Err(BackupError::Refused(format!(
            "projection {p} holds nothing to back up (`tidings versions` lists the projections)"
        )));
    }
    let started_ms = now_ms();
    let offsets = read_offsets(store, p)?;
    let (id, bdir) = create_backup_dir(dir, Kind::Full)?;
    let (pb, pe) = keys::projection(p).range();
    let expected = store.estimated_size(&pb, &pe)?.max(1);

    let threads = o.threads.max(1);
    let (raw_tx, raw_rx) = mpsc::sync_channel::<RawChunk>(threads * 2);
    let raw_rx = std::sync::Mutex::new(raw_rx);
    let (done_tx, done_rx) = mpsc::channel::<Result<Chunk, BackupError>>();
    let (seq, read_bytes, stop) = (
        AtomicUsize::new(0),
        AtomicU64::new(0),
        AtomicBool::new(false),
    );
    let throttle = o
        .max_bytes_per_s
        .filter(|r| *r > 0)
        .map(|r| (r, Instant::now()));
    let mut chunks: Vec<Chunk> = Vec::new();
    let read_result = std::thread::scope(|s| -> Result<(), BackupError> {
        // Writers: compress, checksum, write.
        for _ in 0..threads {
            let done_tx = done_tx.clone();
            let (raw_rx, bdir, stop) = (&raw_rx, &bdir, &stop);
            s.spawn(move || loop {
                let next = raw_rx
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .recv();
                let Ok(c) = next else { break };
                let file = format!("{:06}-{}.tdsnap", c.seq, c.keyspace);
                let content = hex(&Sha256::digest(&c.raw));
                let chunk =
                    files::write(&bdir.join(&file), files::CHUNK_MAGIC, &c.raw).map(|w| Chunk {
                        file,
                        keyspace: c.keyspace,
                        begin: hex(&c.begin),
                        end: hex(&c.end),
                        records: c.records,
                        raw_bytes: c.raw.len() as u64,
                        bytes: w.bytes,
                        sha256: w.sha256,
                        content,
                    });
                if chunk.is_err() {
                    stop.store(true, Ordering::Relaxed);
                }
                if done_tx.send(chunk).is_err() {
                    break;
                }
            });
        }
        drop(done_tx);
        // Readers, phase by phase.
        let mut outcome = Ok(());
        'phases: for phase in scan_phases(p) {
            let ranges = match split_ranges(store, phase, o.chunk_bytes) {
                Ok(r) => r,
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            };
            let next = AtomicUsize::new(0);
            let finished = AtomicUsize::new(0);
            let errors = std::sync::Mutex::new(Vec::new());
            std::thread::scope(|rs| {
                for _ in 0..threads.min(ranges.len()) {
                    let raw_tx = raw_tx.clone();
                    let (next, finished, errors, ranges) = (&next, &finished, &errors, &ranges);
                    let (seq, read_bytes, stop) = (&seq, &read_bytes, &stop);
                    rs.spawn(move || {
                        while let Some(r) = ranges.get(next.fetch_add(1, Ordering::Relaxed)) {
                            if let Err(e) = read_range(
                                store,
                                r,
                                o.chunk_bytes,
                                seq,
                                read_bytes,
                                throttle,
                                stop,
                                &raw_tx,
                            ) {
                                stop.store(true, Ordering::Relaxed);
                                errors
                                    .lock()
                                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                                    .push(e);
                                break;
                            }
                        }
                        finished.fetch_add(1, Ordering::Relaxed);
                    });
                }
                let readers = threads.min(ranges.len());
                while finished.load(Ordering::Relaxed) < readers {
                    std::thread::sleep(Duration::from_millis(50));
                    let done = read_bytes.load(Ordering::Relaxed);
                    on_progress(done, expected.max(done));
                }
            });
            if let Some(e) = errors
                .into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .into_iter()
                .next()
            {
                outcome = Err(e);
                break 'phases;
            }
            if stop.load(Ordering::Relaxed) {
                break;
            }
        }
        drop(raw_tx);
        outcome
    });
    for c in done_rx {
        chunks.push(c?);
    }
    read_result?;
    chunks.sort_by(|a, b| a.file.cmp(&b.file));
    let m = Manifest {
        format: FORMAT,
        id,
        kind: Kind::Full,
        parent: None,
        projection: p,
        layout: LAYOUT_VERSION,
        tidings_version: env!("CARGO_PKG_VERSION").to_string(),
        schemas: schemas(),
        started_ms,
        finished_ms: now_ms(),
        offsets,
        records: chunks.iter().map(|c| c.records).sum(),
        raw_bytes: chunks.iter().map(|c| c.raw_bytes).sum(),
        bytes: chunks.iter().map(|c| c.bytes).sum(),
        chunks,
        segments: Vec::new(),
    };
    write_manifest(&bdir, &m)?;
    tracing::info!(id = %m.id, projection = p, pairs = m.records, raw_mb = m.raw_bytes >> 20, file_mb = m.bytes >> 20, "full backup written");
    Ok(m)
}

fn write_manifest(bdir: &Path, m: &Manifest) -> Result<(), BackupError> {
    let path = bdir.join("manifest.json");
    let tmp = bdir.join("manifest.json.tmp");
    let text = serde_json::to_string_pretty(m).map_err(|e| BackupError::Io(e.to_string()))?;
    fs::write(&tmp, text).map_err(io(tmp.display()))?;
    fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io(tmp.display()))?;
    fs::rename(&tmp, &path).map_err(io(path.display()))
}

/// Where to read the log from, for incrementals and the archive.
#[derive(Clone, Debug)]
pub struct LogSource {
    /// Brokers.
    pub kafka: KafkaConfig,
    /// Input topics.
    pub topics: Topics,
    /// Fetch from offset 0 and drop what lies below (tansu 0.6; see `log`).
    pub reread: bool,
}

/// Raw bytes of records per segment file.
const SEGMENT_BYTES: usize = 16 << 20;

/// Reads `ranges` (each with an end) and writes them as segments into `out_dir`; `name` makes
/// a file name from (topic, partition, first offset). Returns the segments written.
fn copy_log(
    src: &LogSource,
    ranges: Vec<PartitionRange>,
    out_dir: &dyn Fn(&str, i32) -> PathBuf,
    on_progress: OnProgress<'_>,
) -> Result<Vec<Segment>, BackupError> {
    let ranges: Vec<PartitionRange> = ranges
        .into_iter()
        .filter(|r| r.end.is_none_or(|e| e > r.start))
        .collect();
    if ranges.is_empty() {
        return Ok(Vec::new());
    }
    let mut reader = LogReader::open(&src.kafka, &ranges, src.reread)?;
    let ends = reader.fix_ends(Duration::from_secs(30))?;
    let total: u64 = ranges
        .iter()
        .map(|r| {
            let end = ends
                .get(&(r.topic.clone(), r.partition))
                .copied()
                .unwrap_or(r.start);
            (end - r.start).max(0) as u64
        })
        .sum();
    for r in &ranges {
        let end = ends
            .get(&(r.topic.clone(), r.partition))
            .copied()
            .unwrap_or(r.start);
        if r.end.is_some_and(|want| end < want) {
            return Err(BackupError::Refused(format!(
                "{}:{} ends at offset {end} in Kafka, but the consumers stored {}: is this the cluster the store was fed from?",
                r.topic,
                r.partition,
                r.end.unwrap_or(0)
            )));
        }
    }
    struct Open {
        from: i64,
        next: i64,
        raw: Vec<u8>,
        records: u64,
    }
    let starts: BTreeMap<(String, i32), i64> = ranges
        .iter()
        .map(|r| ((r.topic.clone(), r.partition), r.start))
        .collect();
    let mut open: BTreeMap<(String, i32), Open> = BTreeMap::new();
    let mut out = Vec::new();
    let flush = |tp: &(String, i32), o: Open, out: &mut Vec<Segment>| -> Result<(), BackupError> {
        let dir = out_dir(&tp.0, tp.1);
        fs::create_dir_all(&dir).map_err(io(dir.display()))?;
        let file = format!("{}-{}-{:012}.tdlog", tp.0, tp.1, o.from);
        let w = files::write(&dir.join(&file), files::SEGMENT_MAGIC, &o.raw)?;
        out.push(Segment {
            file,
            topic: tp.0.clone(),
            partition: tp.1,
            from: o.from,
            to: o.next,
            records: o.records,
            raw_bytes: o.raw.len() as u64,
            bytes: w.bytes,
            sha256: w.sha256,
        });
        Ok(())
    };
    let mut done = 0u64;
    let mut last_seen = Instant::now();
    loop {
        match reader.next_polled(Duration::from_millis(100)) {
            Next::Record(h) => {
                last_seen = Instant::now();
                let r: Record = h.0;
                let tp = (r.topic.clone(), r.partition);
                let start = starts.get(&tp).copied().unwrap_or(0);
                let o = open.entry(tp.clone()).or_insert_with(|| Open {
                    from: start,
                    next: start,
                    raw: Vec::new(),
                    records: 0,
                });
                if o.records == 0 && o.from == start && r.offset > start && r.offset > o.next {
                    return Err(BackupError::Refused(format!(
                        "{}:{} no longer holds offsets {start}..{} (Kafka retention removed them): take a full backup, and run `tidings archive` more often than the retention",
                        tp.0, tp.1, r.offset
                    )));
                }
                files::push_record(&mut o.raw, &r);
                o.records += 1;
                o.next = r.offset + 1;
                done += 1;
                if o.raw.len() >= SEGMENT_BYTES {
                    let full = open.remove(&tp).expect("just used");
                    let next = full.next;
                    flush(&tp, full, &mut out)?;
                    open.insert(
                        tp,
                        Open {
                            from: next,
                            next,
                            raw: Vec::new(),
                            records: 0,
                        },
                    );
                }
                if done % 10_000 == 0 {
                    on_progress(done, total);
                }
            }
            Next::Waiting => {
                if last_seen.elapsed() > Duration::from_secs(60) {
                    return Err(BackupError::Log(LogError::Timeout(
                        "no record for 60 s although the partitions are not read to their ends: are the brokers up?".into(),
                    )));
                }
            }
            Next::End => break,
        }
    }
    for r in &ranges {
        let tp = (r.topic.clone(), r.partition);
        let end = ends.get(&tp).copied().unwrap_or(r.start);
        let mut o = open.remove(&tp).unwrap_or(Open {
            from: r.start,
            next: r.start,
            raw: Vec::new(),
            records: 0,
        });
        // Covered up to the end even if the last offsets held no record (e.g. markers).
        o.next = o.next.max(end);
        if o.next > o.from {
            flush(&tp, o, &mut out)?;
        }
    }
    on_progress(done, total);
    Ok(out)
}

/// Takes an incremental backup: the log between the newest backup's offsets (of `consumer`)
/// and the ones stored now (see the module doc).
pub fn incremental(
    store: &dyn Store,
    dir: &Path,
    src: &LogSource,
    consumer: &str,
    o: &BackupOptions,
    on_progress: OnProgress<'_>,
) -> Result<Manifest, BackupError> {
    let p = match o.projection {
        Some(p) => p,
        None => versions::active(store)?,
    };
    let parent = list(dir)?
        .into_iter()
        .rfind(|m| m.projection == p)
        .ok_or_else(|| {
            BackupError::Refused(format!(
                "{} holds no backup of projection {p} to continue: take a full backup first (without --incremental)",
                dir.display()
            ))
        })?;
    let started_ms = now_ms();
    let offsets = read_offsets(store, p)?;
    let before = parent.offsets.get(consumer).cloned().unwrap_or_default();
    let now = offsets.get(consumer).cloned().unwrap_or_default();
    let mut ranges = Vec::new();
    for (tp, to) in &now {
        let from = before.get(tp).copied().unwrap_or(0);
        if *to < from {
            return Err(BackupError::Refused(format!(
                "{consumer}'s offset of {tp} went back from {from} to {to} since backup {}: the store was restored or rebuilt; take a full backup",
                parent.id
            )));
        }
        let (topic, part) = tp.rsplit_once(':').unwrap_or((tp, "0"));
        ranges.push(PartitionRange {
            topic: topic.to_string(),
            partition: part.parse().unwrap_or(0),
            start: from,
            end: Some(*to),
        });
    }
    let (id, bdir) = create_backup_dir(dir, Kind::Incremental)?;
    let segments = copy_log(src, ranges, &|_, _| bdir.clone(), on_progress)?;
    let m = Manifest {
        format: FORMAT,
        id,
        kind: Kind::Incremental,
        parent: Some(parent.id),
        projection: p,
        layout: LAYOUT_VERSION,
        tidings_version: env!("CARGO_PKG_VERSION").to_string(),
        schemas: schemas(),
        started_ms,
        finished_ms: now_ms(),
        offsets,
        chunks: Vec::new(),
        records: segments.iter().map(|s| s.records).sum(),
        raw_bytes: segments.iter().map(|s| s.raw_bytes).sum(),
        bytes: segments.iter().map(|s| s.bytes).sum(),
        segments,
    };
    write_manifest(&bdir, &m)?;
    tracing::info!(id = %m.id, parent = ?m.parent, records = m.records, "incremental backup written");
    Ok(m)
}

/// The archive directory of a partition.
pub fn archive_dir(dir: &Path, topic: &str, partition: i32) -> PathBuf {
    dir.join("archive").join(topic).join(partition.to_string())
}

/// The archived segments of a partition, by first offset (each file has a `.json` sidecar,
/// written after it: a file without one is incomplete and ignored).
pub fn archived(dir: &Path, topic: &str, partition: i32) -> Result<Vec<Segment>, BackupError> {
    let mut out = Vec::new();
    for path in entries(&archive_dir(dir, topic, partition))? {
        if path.extension().is_some_and(|x| x == "json") {
            let text = fs::read_to_string(&path).map_err(io(path.display()))?;
            let s: Segment = serde_json::from_str(&text).map_err(|e| BackupError::Corrupt {
                file: path.display().to_string(),
                why: format!("is not a readable segment description: {e}"),
            })?;
            out.push(s);
        }
    }
    out.sort_by_key(|s| s.from);
    Ok(out)
}

/// What `tidings archive` copied.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ArchiveReport {
    /// Records copied this run.
    pub records: u64,
    /// Segments written this run.
    pub segments: usize,
    /// Bytes written this run.
    pub bytes: u64,
    /// Where each partition's archive ends now (next offset).
    pub ends: BTreeMap<String, i64>,
}

/// Copies the input topics' records not yet archived in `dir` (up to the head seen at start).
pub fn archive(
    dir: &Path,
    src: &LogSource,
    on_progress: OnProgress<'_>,
) -> Result<ArchiveReport, BackupError> {
    let mut ranges = Vec::new();
    for topic in src.topics.inputs() {
        let n = crate::log::partitions_of(&src.kafka, topic).map_err(BackupError::Refused)?;
        for part in 0..n {
            let start = archived(dir, topic, part)?.last().map_or(0, |s| s.to);
            ranges.push(PartitionRange {
                topic: topic.to_string(),
                partition: part,
                start,
                end: None,
            });
        }
    }
    let starts: BTreeMap<String, i64> = ranges
        .iter()
        .map(|r| (format!("{}:{}", r.topic, r.partition), r.start))
        .collect();
    let segments = copy_log(src, ranges, &|t, p| archive_dir(dir, t, p), on_progress)?;
    let mut report = ArchiveReport {
        ends: starts,
        ..ArchiveReport::default()
    };
    for s in &segments {
        let side = archive_dir(dir, &s.topic, s.partition).join(format!("{}.json", s.file));
        let text = serde_json::to_string_pretty(s).map_err(|e| BackupError::Io(e.to_string()))?;
        fs::write(&side, text).map_err(io(side.display()))?;
        report.records += s.records;
        report.bytes += s.bytes;
        report.segments += 1;
        let end = report
            .ends
            .entry(format!("{}:{}", s.topic, s.partition))
            .or_default();
        *end = (*end).max(s.to);
    }
    tracing::info!(
        records = report.records,
        segments = report.segments,
        "log archived"
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_points_are_ordered_and_inside() {
        let (first, last) = (
            b"\x15\x01\x02feed\x00\x14".to_vec(),
            b"\x15\x01\x02feed\x00\x17\x03\x0d\x3f".to_vec(),
        );
        let points = split_points(&first, &last, 16);
        assert!(points.len() >= 8, "{points:?}");
        assert!(points.windows(2).all(|w| w[0] < w[1]));
        assert!(points.iter().all(|p| *p > first && *p <= last));
        assert!(split_points(&first, &first, 8).is_empty());
        assert!(split_points(&first, &last, 1).is_empty());
    }
}
