//! `tidings replay`: analysts read a range of a topic as JSON lines or statistics.
//!
//! Reads with `assign()` (no consumer group, no commits: the live consumers' offsets never
//! move), by partition, offset range and time range (record timestamps), filtered by user,
//! verb or producer. Stops at the high watermark seen at start unless `--follow`. A record that
//! cannot be decoded is reported on stderr with its position and reason and skipped.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use tidings_consumers::apply::Record;
use tidings_consumers::log::{LogReader, Next, PartitionRange};
use tidings_consumers::rebuild::Filter;
use tidings_core::event::Event;
use tidings_core::time::{format_ms, hour_of, parse_ms};
use tidings_core::UserId;

use crate::pipeline::KafkaArgs;

/// Flags of `tidings replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Topic to read (repeatable; any topic of Avro single-object records). Default: the
    /// activities and graph topics.
    #[arg(long = "topic", value_name = "NAME")]
    pub topics: Vec<String>,
    /// Partition to read (repeatable). Default: all.
    #[arg(long = "partition", value_name = "N")]
    pub partitions: Vec<i32>,
    /// First offset to read in each partition.
    #[arg(long, value_name = "OFFSET", default_value_t = 0)]
    pub from_offset: i64,
    /// Offset to stop before in each partition (default: the high watermark at start).
    #[arg(long, value_name = "OFFSET")]
    pub to_offset: Option<i64>,
    /// Only records stamped at or after this time (e.g. 2026-11-01T00:00Z).
    #[arg(long, value_name = "TIME", value_parser = parse_ms)]
    pub from: Option<i64>,
    /// Only records stamped before this time.
    #[arg(long, value_name = "TIME", value_parser = parse_ms)]
    pub to: Option<i64>,
    /// Only events whose acting user is this id.
    #[arg(long, value_name = "ID")]
    pub user: Option<UserId>,
    /// Only events with this verb (activity verb, `retract`, `update`, or a graph op).
    #[arg(long)]
    pub verb: Option<String>,
    /// Only events of this producer, NAME or NAME@VERSION.
    #[arg(long, value_name = "NAME[@VERSION]", value_parser = Filter::parse_producer)]
    pub producer: Option<(String, Option<String>)>,
    /// Print counts (by verb, by hour, top actors) as one JSON object instead of events.
    #[arg(long)]
    pub stats: bool,
    /// How many top actors `--stats` lists.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Keep reading past the high watermark seen at start (until Ctrl-C).
    #[arg(long)]
    pub follow: bool,
}

/// One output line.
#[derive(serde::Serialize)]
struct Line<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
    timestamp_ms: Option<i64>,
    time: Option<String>,
    key: Option<&'a str>,
    event: &'a Event,
}

/// What `--stats` prints.
#[derive(Debug, Default, serde::Serialize)]
pub struct ReplayStats {
    /// Records read in range.
    pub records: u64,
    /// Events matching the filters.
    pub events: u64,
    /// Records that could not be decoded.
    pub bad: u64,
    /// Matching events by verb.
    pub by_verb: BTreeMap<String, u64>,
    /// Matching events by hour (UTC, `2026-11-01T13`).
    pub by_hour: BTreeMap<String, u64>,
    /// The most active users: `[user, events]`, most first.
    pub top_actors: Vec<(UserId, u64)>,
}

/// A filter over decoded events and record times.
#[derive(Debug, Default, Clone)]
pub struct Matcher {
    /// User, verb, producer.
    pub filter: Filter,
    /// `[from, to)` over record timestamps.
    pub from: Option<i64>,
    /// See `from`.
    pub to: Option<i64>,
}

impl Matcher {
    fn in_time(&self, ts: Option<i64>) -> bool {
        match ts {
            Some(t) => self.from.is_none_or(|f| t >= f) && self.to.is_none_or(|e| t < e),
            None => self.from.is_none() && self.to.is_none(),
        }
    }
}

/// Records handed from the fetching thread to the decoding one at a time.
const CHUNK: usize = 1024;

/// Reads and decodes; `out(record, event)` per matching event. Returns the totals.
///
/// Fetching (librdkafka's per-message poll, copying each record out) and decoding take about
/// as long as each other, so they run on two threads: this one decodes, filters and hands
/// out events in the order they were fetched, a scoped thread polls `reader` and passes
/// records over in chunks.
pub fn read(
    reader: &mut LogReader,
    m: &Matcher,
    stop: &std::sync::atomic::AtomicBool,
    mut out: impl FnMut(&Record, &Event) -> anyhow::Result<()>,
    mut tick: impl FnMut(u64),
) -> anyhow::Result<ReplayStats> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Record>>(16);
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let mut chunk = Vec::with_capacity(CHUNK);
            while !stop.load(Ordering::SeqCst) {
                let wait = if chunk.is_empty() { 100 } else { 0 };
                match reader.next_polled(Duration::from_millis(wait)) {
                    Next::Record(r) => {
                        chunk.push(r.0);
                        if chunk.len() < CHUNK {
                            continue;
                        }
                    }
                    Next::Waiting if chunk.is_empty() => continue,
                    Next::Waiting => {}
                    Next::End => break,
                }
                if tx.send(std::mem::take(&mut chunk)).is_err() {
                    return; // the decoding side stopped (an output error)
                }
            }
            if !chunk.is_empty() {
                let _ = tx.send(chunk);
            }
        });
        let mut s = ReplayStats::default();
        for r in rx.iter().flatten() {
            s.records += 1;
            if s.records % 4096 == 0 {
                tick(s.records);
            }
            if !m.in_time(r.timestamp_ms) {
                continue;
            }
            let event = match r.payload.as_deref().map(tidings_schemas::decode) {
                Some(Ok(e)) => e,
                Some(Err(e)) => {
                    s.bad += 1;
                    eprintln!(
                        "skipped {}/{}@{}: {} ({})",
                        r.topic,
                        r.partition,
                        r.offset,
                        e,
                        e.reason_code()
                    );
                    continue;
                }
                None => {
                    s.bad += 1;
                    eprintln!(
                        "skipped {}/{}@{}: the record has no value",
                        r.topic, r.partition, r.offset
                    );
                    continue;
                }
            };
            if m.filter != Filter::default() && !m.filter.matches(&event) {
                continue;
            }
            s.events += 1;
            out(&r, &event)?;
        }
        tick(s.records);
        Ok(s)
    })
}

/// `tidings replay`.
pub fn run(args: ReplayArgs) -> anyhow::Result<()> {
    let kafka = args.kafka.required()?;
    if args.from_offset < 0 {
        bail!("--from-offset must be 0 or more, got {}", args.from_offset);
    }
    if let Some(a) = args.to_offset.filter(|a| *a < args.from_offset) {
        bail!(
            "--to-offset {a} is before --from-offset {}",
            args.from_offset
        );
    }
    if let (Some(a), Some(b)) = (args.from, args.to) {
        if b < a {
            bail!("--to {} is before --from {}", format_ms(b), format_ms(a));
        }
    }
    let topics = if args.topics.is_empty() {
        let t = args.kafka.topics();
        vec![t.activities.clone(), t.graph.clone()]
    } else {
        args.topics.clone()
    };
    let mut ranges = Vec::new();
    for t in &topics {
        let n =
            tidings_producers::topics::partition_count(&kafka, t).map_err(anyhow::Error::msg)?;
        for p in 0..n {
            if !args.partitions.is_empty() && !args.partitions.contains(&p) {
                continue;
            }
            ranges.push(PartitionRange {
                topic: t.clone(),
                partition: p,
                start: args.from_offset,
                end: args.to_offset,
            });
        }
        for p in &args.partitions {
            if *p < 0 || *p >= n {
                bail!("--partition {p}: topic {t} has partitions 0..{n}");
            }
        }
    }
    let mut reader = LogReader::open(&kafka, &ranges, false).context("opening the log reader")?;
    let ends = reader.fix_ends(Duration::from_secs(30))?;
    let total: i64 = ends.values().map(|e| (e - args.from_offset).max(0)).sum();
    if args.follow && args.to_offset.is_none() {
        reader.open_ends();
    }
    let matcher = Matcher {
        filter: Filter {
            producer: args.producer.clone(),
            actor: args.user,
            verb: args.verb.clone(),
        },
        from: args.from,
        to: args.to,
    };
    let bar = crate::progress::bar(total.max(0) as u64, "replay");
    let stop = crate::pipeline::ctrl_c_flag()?;
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let started = Instant::now();
    let mut by_actor: HashMap<UserId, u64> = HashMap::new();
    let mut by_verb: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_hour: BTreeMap<String, u64> = BTreeMap::new();
    let stats_only = args.stats;
    let mut s = read(
        &mut reader,
        &matcher,
        &stop,
        |r, e| {
            if stats_only {
                *by_actor.entry(e.actor()).or_default() += 1;
                *by_verb.entry(e.verb().to_string()).or_default() += 1;
                *by_hour
                    .entry(hour_of(r.timestamp_ms.unwrap_or_else(|| e.time_ms())))
                    .or_default() += 1;
                return Ok(());
            }
            let key = r.key.as_deref().and_then(|k| std::str::from_utf8(k).ok());
            serde_json::to_writer(
                &mut w,
                &Line {
                    topic: &r.topic,
                    partition: r.partition,
                    offset: r.offset,
                    timestamp_ms: r.timestamp_ms,
                    time: r.timestamp_ms.map(format_ms),
                    key,
                    event: e,
                },
            )?;
            w.write_all(b"\n")?;
            Ok(())
        },
        |n| bar.set_position(n),
    )?;
    bar.finish_and_clear();
    if stats_only {
        s.by_verb = by_verb;
        s.by_hour = by_hour;
        let mut top: Vec<(UserId, u64)> = by_actor.into_iter().collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        top.truncate(args.top);
        s.top_actors = top;
        serde_json::to_writer_pretty(&mut w, &s)?;
        w.write_all(b"\n")?;
    }
    w.flush()?;
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    eprintln!(
        "replay: {} records read, {} events matched, {} undecodable, {:.0} records/s",
        s.records,
        s.events,
        s.bad,
        s.records as f64 / secs
    );
    Ok(())
}
