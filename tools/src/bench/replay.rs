//! `tidings bench replay`: how fast the log is read back (replay) and turned into a projection
//! (rebuild), compared with the live consumers' fan-out over the same log.
//!
//! Starts the local broker (tansu, in memory), publishes a seeded graph (`--users`, each
//! followed by `--followers` others) and `--posts` posts, then measures on one machine:
//! 1. replay read: every record from offset 0 to the high watermark, decoded (Avro), through
//!    the very loop `tidings replay` runs (`replay::read`) — events/s;
//! 2. the live consumers (`kafka::spawn`, one instance) applying the posts into projection 1,
//!    the graph already applied (as it would be live) — index entries/s;
//! 3. `rebuild` of the same log into projection 2 (bulk batches) — index entries/s, and the
//!    ratio to the live rate. The digests of 1 and 2 are compared (they must be equal).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use rand::{Rng, SeedableRng};
use tidings_consumers::apply::Applier;
use tidings_consumers::kafka::{self, Assignment, ConsumerConfig};
use tidings_consumers::log::{LogReader, PartitionRange};
use tidings_consumers::project::Projector;
use tidings_consumers::rebuild::{self, RebuildConfig};
use tidings_core::event::{Activity, Event, GraphChange, GraphOp, Producer as Who};
use tidings_core::EventId;
use tidings_producers::broker::{BrokerStorage, LocalBroker};
use tidings_producers::{Producer, ProducerConfig, Topics};
use tidings_store::Store;

use super::{report, Report};

/// Flags of `tidings bench replay`.
#[derive(Debug, Args)]
pub struct ReplayBenchArgs {
    /// Users.
    #[arg(long, default_value_t = 5_000)]
    users: i64,
    /// Followers per user.
    #[arg(long, default_value_t = 20)]
    followers: i64,
    /// Posts (each fans out to its author's followers).
    #[arg(long, default_value_t = 200_000)]
    posts: i64,
    /// Partitions of the topics.
    #[arg(long, default_value_t = 8)]
    partitions: i32,
    /// Seed of the generated graph.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// The rebuild's store batch size in MiB (`tidings rebuild --batch-mb`).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=512))]
    batch_mb: u16,
    /// Directory for the broker log and the store (default: a temporary one).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Also write the figures as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn events(a: &ReplayBenchArgs) -> Vec<Event> {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(a.seed);
    let who = Who::new("bench", "1");
    let t0 = 1_793_491_200_000;
    let mut n: u64 = 0;
    let mut next = || {
        n += 1;
        (
            EventId(uuid::Uuid::from_u64_pair(0x0190_0000_0000_7000, n)),
            t0 + n as i64,
        )
    };
    let mut out = Vec::new();
    for u in 1..=a.users {
        for _ in 0..a.followers {
            let f = rng.random_range(1..=a.users);
            if f == u {
                continue;
            }
            let (id, time_ms) = next();
            out.push(Event::Graph(GraphChange {
                id,
                actor: f,
                subject: u,
                op: GraphOp::Follow,
                time_ms,
                producer: who.clone(),
            }));
        }
    }
    for i in 0..a.posts {
        let (id, time_ms) = next();
        let actor = rng.random_range(1..=a.users);
        out.push(Event::Activity(Activity {
            id,
            actor,
            verb: "post".into(),
            object: format!("post:{i}"),
            target: None,
            time_ms,
            to: vec![],
            text: "a post of ordinary length for a benchmark".into(),
            attributes: Default::default(),
            producer: who.clone(),
        }));
    }
    out
}

fn projector(p: i64) -> Projector {
    Projector::new(p)
}

/// CPU seconds of the whole process since a point (see [`report::cpu_seconds`]).
struct CpuClock(Option<f64>);

impl CpuClock {
    fn start() -> Self {
        CpuClock(report::cpu_seconds())
    }

    fn elapsed(&self) -> Option<f64> {
        Some(report::cpu_seconds()? - self.0?)
    }
}

/// Runs the benchmark.
pub fn run(a: ReplayBenchArgs) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = a.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let broker = LocalBroker::start(BrokerStorage::Memory, &dir)?;
    let kafka = broker.kafka();
    let topics = Topics::default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(tidings_producers::topics::create(
        &kafka,
        &topics,
        a.partitions,
    ))
    .map_err(anyhow::Error::msg)?;
    let evs = events(&a);
    let total = evs.len() as u64;
    let graph = evs.iter().filter(|e| matches!(e, Event::Graph(_))).count();
    let mut pc = ProducerConfig::new(kafka.brokers.clone());
    pc.delivery_timeout = Duration::from_secs(60);
    let producer = Producer::new(pc)?;
    let publish = |evs: &[Event]| {
        rt.block_on(async {
            for chunk in evs.chunks(20_000) {
                for r in
                    futures::future::join_all(chunk.iter().cloned().map(|e| producer.publish(e)))
                        .await
                {
                    r?;
                }
            }
            anyhow::Ok(())
        })
    };
    let rocks = Arc::new(crate::pipeline::open_rocks(&dir)?);
    let store: Arc<dyn Store> = rocks.clone();
    // The live and rebuild phases start on a store at rest: the flushes and compactions the
    // phase before left behind are its cost, not theirs.
    let mut settled = 0.0;
    let mut settle = || -> anyhow::Result<()> {
        let t = Instant::now();
        rocks.settle()?;
        settled += t.elapsed().as_secs_f64();
        Ok(())
    };
    let mut cfg = ConsumerConfig::new(kafka.clone());
    cfg.assignment = Assignment::Static { instance: 0, of: 1 };
    let applier = Applier::new(store.clone(), projector(1), "tidings-fanout");
    let stats = applier.stats();
    // Live consumers apply events as they happen: the graph is in place before the posts come
    // (applied out of order, a follow backfills instead, and the rates compare other work).
    eprintln!("publishing and applying the graph ({graph} follows) …");
    publish(&evs[..graph])?;
    let live = kafka::spawn(cfg.clone(), applier.clone())?;
    while stats.finished() < graph as u64 {
        std::thread::sleep(Duration::from_millis(20));
        anyhow::ensure!(!live.finished(), "the live consumer stopped");
    }
    live.stop()?;
    eprintln!("publishing {} posts …", evs.len() - graph);
    let started = Instant::now();
    publish(&evs[graph..])?;
    let publish_secs = started.elapsed().as_secs_f64();

    // 1. Replay read.
    let mut ranges = Vec::new();
    for t in topics.inputs() {
        for p in 0..a.partitions {
            ranges.push(PartitionRange {
                topic: t.into(),
                partition: p,
                start: 0,
                end: None,
            });
        }
    }
    let mut reader = LogReader::open(&kafka, &ranges, false)?;
    reader.fix_ends(Duration::from_secs(30))?;
    let started = Instant::now();
    let mut raw_bytes = 0u64;
    let s = crate::replay::read(
        &mut reader,
        &crate::replay::Matcher::default(),
        &AtomicBool::new(false),
        |r, _| {
            raw_bytes += r.payload.as_ref().map_or(0, |p| p.len() as u64);
            Ok(())
        },
        |_| {},
    )?;
    let (read, decoded) = (s.records, s.events);
    let replay_secs = started.elapsed().as_secs_f64();
    drop(reader);
    anyhow::ensure!(
        read == total && decoded == total,
        "replay read {read}, decoded {decoded} of {total}"
    );

    // 2. The live consumers over the posts (the graph is applied).
    settle()?;
    let before = stats.entries.load(Ordering::Relaxed);
    let started = Instant::now();
    let cpu = CpuClock::start();
    let live = kafka::spawn(cfg, applier)?;
    while stats.finished() < total {
        std::thread::sleep(Duration::from_millis(20));
        anyhow::ensure!(!live.finished(), "the live consumer stopped");
    }
    let live_secs = started.elapsed().as_secs_f64();
    live.stop()?;
    let live_cpu = cpu.elapsed();
    let live_entries = stats.entries.load(Ordering::Relaxed) - before;

    // 3. Rebuild.
    settle()?;
    let mut rc = RebuildConfig::new(kafka.clone(), projector(2));
    rc.topics = topics.clone();
    rc.batch_bytes = usize::from(a.batch_mb) << 20;
    let cpu = CpuClock::start();
    let report_r = rebuild::run(
        &rc,
        store.clone(),
        &AtomicBool::new(false),
        &mut |_, _, _| {},
    )?;
    let rebuild_cpu = cpu.elapsed();
    // What the rebuild left RocksDB to compact is its cost too, paid after it returned.
    let t = Instant::now();
    rocks.settle()?;
    let compacted_after = t.elapsed().as_secs_f64();
    let rebuild_cpu_settled = cpu.elapsed();
    let d1 = tidings_consumers::digest::digest(&*store, 1)?;
    let d2 = tidings_consumers::digest::digest(&*store, 2)?;

    let mut report = Report::new("replay");
    report.context("events in the log", total);
    report.context(
        "users / followers each / posts",
        format!("{} / {} / {}", a.users, a.followers, a.posts),
    );
    report.context("partitions per topic", a.partitions);
    report.context("rebuild store batch (MiB)", a.batch_mb);
    report.context(
        "avg record bytes",
        format!("{:.1}", raw_bytes as f64 / read.max(1) as f64),
    );
    report.context("posts published in", format!("{publish_secs:.1} s"));
    report.context(
        "store settled before the live and rebuild phases",
        format!("{settled:.1} s"),
    );
    report.context(
        "index entries (live, posts only / rebuild, whole log)",
        format!("{live_entries} / {}", report_r.entries),
    );
    // What readers see must be equal. The feed-version counters too, as the graph was applied
    // before the posts (otherwise backfills bump once where fan-out bumps per post).
    anyhow::ensure!(
        d1.content == d2.content,
        "the rebuild differs from the live projection in what readers see: {d1:?} vs {d2:?}"
    );
    report.context("content digests of live and rebuild", "equal");
    report.context(
        "feed-version counters equal too",
        if d1.state == d2.state {
            "yes"
        } else {
            "no (applied in another order; see `tidings digest`)"
        },
    );
    report.context(
        "the store's merge of the rebuilt files, the rebuild's last step",
        format!("{:.1} s", report_r.merge_seconds),
    );
    report.context(
        "compactions left by the rebuild, finished after it in",
        format!("{compacted_after:.1} s"),
    );
    if let (Some(live), Some(rebuild), Some(settled)) = (live_cpu, rebuild_cpu, rebuild_cpu_settled)
    {
        // Robust to a VM that runs slower at times: what the work itself costs.
        report.context(
            "CPU seconds, all threads (live / rebuild / rebuild and its compactions)",
            format!("{live:.2} / {rebuild:.2} / {settled:.2}"),
        );
        report.context(
            "CPU µs per index entry (live / rebuild)",
            format!(
                "{:.2} / {:.2}",
                live * 1e6 / live_entries.max(1) as f64,
                rebuild * 1e6 / report_r.entries.max(1) as f64
            ),
        );
    }
    let live_rate = live_entries as f64 / live_secs;
    // Applying the log, up to its last batch: the live rate's measure too (neither counts the
    // compactions after its last write). The merge of the rebuilt files is the next figure.
    let applied_secs = report_r.seconds - report_r.merge_seconds;
    let rebuild_rate = report_r.entries as f64 / applied_secs;
    let whole_rate = report_r.entries as f64 / report_r.seconds;
    report.figure(
        "replay read (fetch + decode): events/s",
        read as f64 / replay_secs,
        "events/s",
        Some(500_000.0),
    );
    report.figure(
        "rebuild: index entries/s",
        rebuild_rate,
        "entries/s",
        Some(1_000_000.0),
    );
    report.figure(
        "rebuild: events/s",
        report_r.events as f64 / applied_secs,
        "events/s",
        None,
    );
    report.figure(
        "live consumers: index entries/s",
        live_rate,
        "entries/s",
        None,
    );
    report.figure(
        "rebuild / live fan-out rate",
        rebuild_rate / live_rate,
        "×",
        Some(3.0),
    );
    report.figure(
        "rebuild with its merge: index entries/s",
        whole_rate,
        "entries/s",
        None,
    );
    report.figure(
        "rebuild with its merge / live fan-out rate",
        whole_rate / live_rate,
        "×",
        None,
    );
    report.emit(a.json.as_deref())
}
