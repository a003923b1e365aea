//! Copying a topic into a new one with more (or fewer) partitions, per-key order kept.
//!
//! Each source record goes to the destination partition the key/partitioner contract gives
//! its key (`murmur2(key) % P`, `tidings_producers::partition`), so producers writing to the
//! new topic afterwards put a user's events where the copy put the old ones. A key lives on
//! one source partition, which is read in offset order and produced in that order by an
//! idempotent producer (`acks=all`), so per-key order holds in the copy. Keys, values,
//! timestamps and headers are copied; each copy gets a header
//! `tidings-migrated-from: PARTITION:OFFSET` naming its source record.
//!
//! **Resumable.** Every `checkpoint_every` records, once all of them are acknowledged, a state
//! file records the next source offset per source partition and the end of each destination
//! partition. A restarted migration first reads the destination past the checkpoint: records
//! copied after it (acknowledged before the crash) carry their source position in the header,
//! so the copy resumes right after the last one — nothing is copied twice, nothing skipped.
//!
//! **Count check.** At the end the destination's records (fetch high watermarks) must equal
//! the source's up to the head seen at start; a mismatch is an error. Stop producers to the
//! source first (or migrate again to copy the tail: it resumes).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tidings_producers::partition::partition_for_key;
use tidings_producers::KafkaConfig;

use crate::log::{LogReader, Next, PartitionRange};

/// The header naming a copy's source record.
pub const SOURCE_HEADER: &str = "tidings-migrated-from";

/// How to migrate.
#[derive(Clone, Debug)]
pub struct MigrateConfig {
    /// Brokers.
    pub kafka: KafkaConfig,
    /// Source topic.
    pub from: String,
    /// Destination topic (created with `partitions` if missing).
    pub to: String,
    /// Destination partitions.
    pub partitions: i32,
    /// The state file (progress for resuming).
    pub state: PathBuf,
    /// Records per checkpoint.
    pub checkpoint_every: usize,
    /// Fetch from offset 0 and drop what lies below (tansu 0.6).
    pub reread: bool,
}

/// The durable progress of a migration.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MigrateState {
    /// Source topic.
    pub from: String,
    /// Destination topic.
    pub to: String,
    /// Destination partitions.
    pub partitions: i32,
    /// Next source offset per source partition (everything below is copied).
    pub source_next: BTreeMap<i32, i64>,
    /// End of each destination partition at the checkpoint.
    pub dest_ends: BTreeMap<i32, i64>,
}

/// What a migration did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct MigrateReport {
    /// Records copied by this run.
    pub copied: u64,
    /// Records found copied after the last checkpoint of a previous run.
    pub recovered: u64,
    /// Source records (up to the head seen at start).
    pub source_records: i64,
    /// Destination records at the end.
    pub dest_records: i64,
    /// Whether the migration reached the source's head (false: stopped; rerun to resume).
    pub complete: bool,
    /// Seconds spent.
    pub seconds: f64,
}

fn load(cfg: &MigrateConfig) -> Result<MigrateState, String> {
    match std::fs::read(&cfg.state) {
        Ok(bytes) => {
            let s: MigrateState = serde_json::from_slice(&bytes).map_err(|e| {
                format!(
                    "the state file {} is not a migration state ({e}); remove it only if no migration wrote to {}",
                    cfg.state.display(),
                    cfg.to
                )
            })?;
            if (s.from.as_str(), s.to.as_str(), s.partitions)
                != (cfg.from.as_str(), cfg.to.as_str(), cfg.partitions)
            {
                return Err(format!(
                    "the state file {} belongs to the migration {} → {} ({} partitions); use another --state",
                    cfg.state.display(),
                    s.from,
                    s.to,
                    s.partitions
                ));
            }
            Ok(s)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(MigrateState {
            from: cfg.from.clone(),
            to: cfg.to.clone(),
            partitions: cfg.partitions,
            ..MigrateState::default()
        }),
        Err(e) => Err(format!("reading {}: {e}", cfg.state.display())),
    }
}

/// Writes the state durably: a temporary file, fsynced, renamed over the old one.
fn save(path: &std::path::Path, s: &MigrateState) -> Result<(), String> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(s).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| format!("writing the state file {}: {e}", path.display()))
}

fn create_topic(kafka: &KafkaConfig, topic: &str, partitions: i32) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = kafka
        .client()
        .create()
        .map_err(|e| format!("cannot create a Kafka admin client: {e}"))?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(-1));
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = futures::executor::block_on(admin.create_topics([&new], &opts))
        .map_err(|e| format!("cannot create topic {topic}: {e}"))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => return Err(format!("creating topic {name} failed: {code}")),
        }
    }
    Ok(())
}

fn ranges(topic: &str, n: i32, start: &BTreeMap<i32, i64>) -> Vec<PartitionRange> {
    (0..n)
        .map(|p| PartitionRange {
            topic: topic.to_string(),
            partition: p,
            start: start.get(&p).copied().unwrap_or(0),
            end: None,
        })
        .collect()
}

/// Reads `ranges` to the head seen at start, calling `f` per record.
fn read_all(
    kafka: &KafkaConfig,
    ranges: &[PartitionRange],
    reread: bool,
    headers: bool,
    mut f: impl FnMut(crate::log::Headered),
) -> Result<BTreeMap<i32, i64>, String> {
    let mut r = LogReader::open(kafka, ranges, reread).map_err(|e| e.to_string())?;
    if headers {
        r = r.with_headers();
    }
    let ends = r
        .fix_ends(Duration::from_secs(30))
        .map_err(|e| e.to_string())?;
    loop {
        match r.next_polled(Duration::from_millis(50)) {
            Next::Record(rec) => f(*rec),
            Next::Waiting => {}
            Next::End => break,
        }
    }
    Ok(ends.into_iter().map(|((_, p), e)| (p, e)).collect())
}

/// Parses `PARTITION:OFFSET`.
fn parse_source(v: &[u8]) -> Option<(i32, i64)> {
    let s = std::str::from_utf8(v).ok()?;
    let (p, o) = s.split_once(':')?;
    Some((p.parse().ok()?, o.parse().ok()?))
}

/// Copies `cfg.from` into `cfg.to` (see the module doc); `on_progress(copied, total)`.
pub fn run(
    cfg: &MigrateConfig,
    stop: &AtomicBool,
    on_progress: &mut dyn FnMut(u64, u64),
) -> Result<MigrateReport, String> {
    let started = Instant::now();
    if cfg.partitions < 1 {
        return Err(format!(
            "--partitions must be at least 1, got {}",
            cfg.partitions
        ));
    }
    if cfg.from == cfg.to {
        return Err("--from and --to name the same topic".into());
    }
    let source_parts = crate::log::partitions_of(&cfg.kafka, &cfg.from)?;
    create_topic(&cfg.kafka, &cfg.to, cfg.partitions)?;
    let dest_parts = crate::log::partitions_of(&cfg.kafka, &cfg.to)?;
    if dest_parts != cfg.partitions {
        return Err(format!(
            "topic {} exists with {dest_parts} partitions, not {}; pick another --to",
            cfg.to, cfg.partitions
        ));
    }
    let mut state = load(cfg)?;
    let mut report = MigrateReport::default();

    // Recovery: what was copied after the last checkpoint is in the destination already.
    let dest_ranges = ranges(&cfg.to, dest_parts, &state.dest_ends);
    let mut recovered = 0;
    let dest_ends = read_all(
        &cfg.kafka,
        &dest_ranges,
        cfg.reread,
        true,
        |(_, headers)| {
            if let Some((p, off)) = headers
                .iter()
                .find(|(k, _)| k == SOURCE_HEADER)
                .and_then(|(_, v)| parse_source(v))
            {
                let next = state.source_next.entry(p).or_insert(0);
                *next = (*next).max(off + 1);
                recovered += 1;
            }
        },
    )?;
    report.recovered = recovered;
    state.dest_ends = dest_ends;
    save(&cfg.state, &state)?;

    let mut c = cfg.kafka.client();
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .set("message.timeout.ms", "60000");
    let producer: FutureProducer = c.create().map_err(|e| format!("producer: {e}"))?;

    let mut reader = LogReader::open(
        &cfg.kafka,
        &ranges(&cfg.from, source_parts, &state.source_next),
        cfg.reread,
    )
    .map_err(|e| e.to_string())?
    .with_headers();
    let source_ends = reader
        .fix_ends(Duration::from_secs(30))
        .map_err(|e| e.to_string())?;
    report.source_records = source_ends.values().sum();
    let total_left: i64 = source_ends
        .iter()
        .map(|((_, p), e)| e - state.source_next.get(p).copied().unwrap_or(0))
        .sum();

    let mut pending = Vec::new();
    let mut chunk_next: BTreeMap<i32, i64> = BTreeMap::new();
    let flush = |pending: &mut Vec<_>,
                 chunk_next: &mut BTreeMap<i32, i64>,
                 state: &mut MigrateState|
     -> Result<(), String> {
        for r in futures::executor::block_on(futures::future::join_all(pending.drain(..))) {
            match r {
                Ok(Ok(d)) => {
                    let d: rdkafka::producer::future_producer::Delivery = d;
                    let e = state.dest_ends.entry(d.partition).or_insert(0);
                    *e = (*e).max(d.offset + 1);
                }
                Ok(Err((e, _))) => {
                    return Err(format!(
                    "a copy was not acknowledged ({e}); rerun to resume from the last checkpoint"
                ))
                }
                Err(_) => return Err("the producer shut down".into()),
            }
        }
        state.source_next.append(chunk_next);
        save(&cfg.state, state)
    };
    let mut copied = 0u64;
    loop {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        match reader.next_polled(Duration::from_millis(50)) {
            Next::Record(rec) => {
                let (r, hdrs) = *rec;
                let dest = match &r.key {
                    Some(k) => partition_for_key(k, cfg.partitions),
                    None => r.partition % cfg.partitions,
                };
                let mut h = OwnedHeaders::new();
                for (k, v) in &hdrs {
                    h = h.insert(Header {
                        key: k,
                        value: Some(v.as_slice()),
                    });
                }
                let src = format!("{}:{}", r.partition, r.offset);
                h = h.insert(Header {
                    key: SOURCE_HEADER,
                    value: Some(src.as_bytes()),
                });
                let mut fr: FutureRecord<'_, [u8], [u8]> =
                    FutureRecord::to(&cfg.to).partition(dest).headers(h);
                if let Some(k) = &r.key {
                    fr = fr.key(k.as_slice());
                }
                if let Some(v) = &r.payload {
                    fr = fr.payload(v.as_slice());
                }
                if let Some(ts) = r.timestamp_ms {
                    fr = fr.timestamp(ts);
                }
                pending.push(
                    producer
                        .send_result(fr)
                        .map_err(|(e, _)| format!("cannot queue a copy: {e}; rerun to resume"))?,
                );
                chunk_next.insert(r.partition, r.offset + 1);
                copied += 1;
                if pending.len() >= cfg.checkpoint_every.max(1) {
                    flush(&mut pending, &mut chunk_next, &mut state)?;
                    on_progress(copied, total_left.max(0) as u64);
                }
            }
            Next::Waiting => {}
            Next::End => {
                report.complete = true;
                break;
            }
        }
    }
    flush(&mut pending, &mut chunk_next, &mut state)?;
    on_progress(copied, total_left.max(0) as u64);
    report.copied = copied;
    if report.complete {
        report.dest_records = dest_high_watermarks(cfg, dest_parts)?.values().sum();
        if report.dest_records != report.source_records {
            return Err(format!(
                "count check failed: {} holds {} records, {} held {} at start; rerun to resume, and check that nothing else writes to {}",
                cfg.to, report.dest_records, cfg.from, report.source_records, cfg.to
            ));
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The fetch high watermark of every destination partition.
fn dest_high_watermarks(cfg: &MigrateConfig, n: i32) -> Result<BTreeMap<i32, i64>, String> {
    let mut r = LogReader::open(&cfg.kafka, &ranges(&cfg.to, n, &BTreeMap::new()), false)
        .map_err(|e| e.to_string())?;
    let ends = r
        .fix_ends(Duration::from_secs(30))
        .map_err(|e| e.to_string())?;
    Ok(ends.into_iter().map(|((_, p), e)| (p, e)).collect())
}
