//! `tidings bench`: the whole pipeline's figures, everything co-located on this machine (local
//! broker with its log in memory, consumers, RocksDB store, query API over loopback HTTP).
//!
//! 1. **ingest** — `--ingest-events` posts by users nobody follows (fan-out off: each writes
//!    its body and the author's own feed entry) are produced first (events/s acknowledged), then
//!    a consumer starts and applies them (events/s produced → consumed → decoded → committed).
//! 2. **fan-out** — the demo's follow graph over `--users` ([`crate::workload::graph`]) is
//!    applied, then `--fanout-events` posts by uniform authors are produced while the consumer is
//!    stopped; it restarts and the time to apply them gives index entries/s and events/s.
//! 3. **publish→visible** — posts are offered at `--load` × the fan-out events/s for
//!    `--seconds`, each stamped with its intended send time; the consumers record commit time
//!    minus that stamp (corrected for coordinated omission; millisecond resolution).
//! 4. **feed reads** — the query API on the fan-out store, driven like `bench query` (first home
//!    page of random users, keep-alive connections) with the cache on, then off, while posts
//!    keep arriving at the same offered load.
//! 5. **celebrity** — `--celebrity-followers` follow edges of one author are written straight
//!    into a fresh store (in the projector's layout); one post is published and the time until
//!    the consumer committed it and a sample of followers' home pages show it is measured: first
//!    with the default hybrid threshold (served by pull), then with push forced.
//! 6. **peak RSS** of this process (the broker runs as its own process).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tidings_consumers::apply::{Applier, Stats};
use tidings_consumers::kafka::{self as consumers, Assignment, ConsumerConfig, ConsumerHandle};
use tidings_consumers::project::Projector;
use tidings_core::clock::{Clock, SystemClock};
use tidings_core::keys::feed::FeedKind;
use tidings_core::keys::graph::{self, Count, Edge};
use tidings_core::keys::meta;
use tidings_core::page::PageEntry;
use tidings_core::write::encode_i64;
use tidings_core::{Event, GraphOp, Producer as Who, UserId};
use tidings_producers::broker::{BrokerStorage, LocalBroker};
use tidings_producers::topics::{self, DEFAULT_PARTITIONS};
use tidings_producers::{KafkaConfig, Producer, ProducerConfig, Topics};
use tidings_query::http::QueryOptions;
use tidings_query::FeedRequest;
use tidings_store::rocks::{RocksOptions, RocksStore};
use tidings_store::{Store, WriteBatch};

use super::query::{load, Load};
use super::Report;
use crate::workload::{self, event_id};

/// Flags of `tidings bench` (the pipeline benchmark).
#[derive(Debug, Clone, Args)]
pub struct PipelineArgs {
    /// Posts of the ingest phase.
    #[arg(long, default_value_t = 200_000)]
    ingest_events: u64,
    /// Users of the fan-out graph (the demo's follower distribution).
    #[arg(long, default_value_t = 10_000)]
    users: i64,
    /// Posts of the fan-out phase.
    #[arg(long, default_value_t = 20_000)]
    fanout_events: u64,
    /// Offered load of the latency and read phases, as a share of the measured fan-out rate.
    #[arg(long, default_value_t = 0.5)]
    load: f64,
    /// Seconds of the latency phase and of each read phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Followers of the celebrity.
    #[arg(long, default_value_t = 1_000_000)]
    celebrity_followers: i64,
    /// Concurrent HTTP connections of the read phases.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Where stores go (default: a temporary directory, removed afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Seed of the generators.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Phases to run, comma-separated (latency and reads need fanout).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "ingest,fanout,latency,reads,celebrity"
    )]
    phases: Vec<Phase>,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The benchmark's phases.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Phase {
    Ingest,
    Fanout,
    Latency,
    Reads,
    Celebrity,
}

const HYBRID_THRESHOLD: u64 = 10_000;

fn who() -> Who {
    Who::new("tidings-bench", env!("CARGO_PKG_VERSION"))
}

fn post(rng: &mut SmallRng, actor: UserId, time_ms: i64) -> Event {
    let id = event_id(rng, time_ms);
    let text = "benchmark post: a sentence of ordinary length, like most posts have";
    Event::Activity(workload::post(id, actor, time_ms, text, &who()))
}

/// The broker, a runtime and a producer shared by every phase.
struct Rig {
    rt: tokio::runtime::Runtime,
    _broker: LocalBroker,
    kafka: KafkaConfig,
    dir: PathBuf,
}

impl Rig {
    fn topics(&self, name: &str) -> anyhow::Result<Topics> {
        let t = Topics::with_prefix(&format!("bench-{name}"));
        self.rt
            .block_on(topics::create(&self.kafka, &t, DEFAULT_PARTITIONS))
            .map_err(anyhow::Error::msg)?;
        Ok(t)
    }

    fn producer(&self, topics: &Topics) -> anyhow::Result<Producer> {
        let mut c = ProducerConfig::new(self.kafka.brokers.clone());
        c.kafka = self.kafka.clone();
        c.topics = topics.clone();
        c.delivery_timeout = Duration::from_secs(60);
        Ok(Producer::new(c)?)
    }

    fn store(&self, name: &str) -> anyhow::Result<Arc<dyn Store>> {
        let dir = self.dir.join(name);
        Ok(Arc::new(RocksStore::open(&dir, RocksOptions::default())?))
    }

    fn consumer(
        &self,
        store: Arc<dyn Store>,
        topics: &Topics,
        threshold: u64,
    ) -> anyhow::Result<ConsumerHandle> {
        let mut projector = Projector::new(meta::DEFAULT_PROJECTION);
        projector.fanout.hybrid_threshold = threshold;
        let applier = Applier::new(store, projector, "bench");
        let mut c = ConsumerConfig::new(self.kafka.clone());
        c.topics = topics.clone();
        c.group = "bench".into();
        c.assignment = Assignment::Static { instance: 0, of: 1 };
        // Resume at the stored offsets (not a re-read of the whole log, which would time the
        // skipping of every earlier record): the consumer checks the first record it gets
        // after a seek and falls back to a re-read if tansu skipped any.
        c.reread_from_start = false;
        Ok(consumers::spawn(c, applier)?)
    }

    /// Publishes everything as fast as the producer takes it; seconds until all acknowledged.
    fn burst(&self, producer: &Producer, events: Vec<Event>) -> anyhow::Result<f64> {
        let start = Instant::now();
        let failed = self.rt.block_on(workload::publish_all(producer, events));
        if failed > 0 {
            bail!("{failed} publishes were not acknowledged");
        }
        Ok(start.elapsed().as_secs_f64())
    }
}

/// Publishes posts by uniform authors at `rate`/s until `stop`, each stamped with its intended
/// send time; returns how many.
async fn paced(producer: Producer, users: i64, rate: f64, seed: u64, stop: Arc<AtomicBool>) -> u64 {
    let mut rng = SmallRng::seed_from_u64(seed);
    let start = Instant::now();
    let t0 = SystemClock.now_ms();
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let offset = workload::until_due(start, i, rate).await;
        let actor = rng.random_range(1..users);
        let e = post(&mut rng, actor, t0 + offset.as_millis() as i64);
        let p = producer.clone();
        tokio::spawn(async move {
            if let Err(e) = p.publish(e).await {
                tracing::warn!(error = %e, "a benchmark publish failed");
            }
        });
        i += 1;
    }
    i
}

/// Waits until `want` records were applied (no progress for 60 s is an error).
fn wait_for(stats: &Stats, want: u64, what: &str) -> anyhow::Result<()> {
    crate::progress::wait_applied(stats, want, what, Duration::from_secs(60))
}

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

pub fn run(a: PipelineArgs) -> anyhow::Result<()> {
    if a.users < 100 {
        bail!("--users must be at least 100 (got {})", a.users);
    }
    if !(a.load > 0.0 && a.load <= 1.0) {
        bail!("--load must be in (0, 1] (got {})", a.load);
    }
    if a.celebrity_followers < 1 {
        bail!("--celebrity-followers must be at least 1");
    }
    let on = |p| a.phases.contains(&p);
    if (on(Phase::Latency) || on(Phase::Reads)) && !on(Phase::Fanout) {
        bail!("--phases: latency and reads run on the fan-out phase's store; add fanout");
    }
    let tmp;
    let dir = match &a.dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::Builder::new().prefix("tidings-bench").tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    std::fs::create_dir_all(&dir)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let broker = LocalBroker::start(BrokerStorage::Memory, &dir)
        .context("starting the local broker (scripts/setup.sh installs tansu)")?;
    let rig = Rig {
        rt,
        kafka: broker.kafka(),
        _broker: broker,
        dir: dir.clone(),
    };
    let mut report = Report::new("pipeline");
    report.context("broker", "tansu 0.6, log in memory, same machine");
    report.context("partitions", DEFAULT_PARTITIONS);
    let mut rng = SmallRng::seed_from_u64(a.seed);

    if on(Phase::Ingest) {
        ingest(&rig, &a, &mut report, &mut rng)?;
    }
    if on(Phase::Fanout) {
        fanout(&rig, &a, &mut report, &mut rng)?;
    }
    if on(Phase::Celebrity) {
        celebrity(&rig, &a, &mut report, &mut rng)?;
    }
    if let Some(mib) = peak_rss_mib() {
        report.figure_low("peak RSS (this process)", mib, "MiB", None);
    }
    report.emit(a.json.as_deref())
}

/// Phase 1: ingest, fan-out off.
fn ingest(
    rig: &Rig,
    a: &PipelineArgs,
    report: &mut Report,
    rng: &mut SmallRng,
) -> anyhow::Result<()> {
    eprintln!("ingest: producing {} posts…", a.ingest_events);
    let topics = rig.topics("ingest")?;
    let producer = rig.producer(&topics)?;
    let t0 = SystemClock.now_ms();
    let events: Vec<Event> = (0..a.ingest_events)
        .map(|i| post(rng, 1_000_000 + (i as i64 % 100_000), t0 + i as i64 / 100))
        .collect();
    let produce_secs = rig.burst(&producer, events)?;
    let store = rig.store("ingest")?;
    let start = Instant::now();
    let c = rig.consumer(store, &topics, HYBRID_THRESHOLD)?;
    wait_for(&c.stats(), a.ingest_events, "ingest")?;
    let consume_secs = start.elapsed().as_secs_f64();
    c.stop()?;
    report.context("ingest events", a.ingest_events);
    report.figure(
        "ingest: produced (acknowledged)",
        a.ingest_events as f64 / produce_secs,
        "events/s",
        None,
    );
    report.figure(
        "ingest: consumed → decoded → committed",
        a.ingest_events as f64 / consume_secs,
        "events/s",
        Some(100_000.0),
    );

    Ok(())
}

/// Phases 2–4: fan-out at the demo's follower distribution, then latency and reads on it.
fn fanout(
    rig: &Rig,
    a: &PipelineArgs,
    report: &mut Report,
    rng: &mut SmallRng,
) -> anyhow::Result<()> {
    let topics = rig.topics("fanout")?;
    let producer = rig.producer(&topics)?;
    let store = rig.store("fanout")?;
    let edges = workload::graph(a.users, 0.6, a.seed);
    eprintln!("fan-out: applying {} follows…", edges.len());
    let mut time = SystemClock.now_ms() - 3_600_000;
    let follows: Vec<Event> = edges
        .iter()
        .map(|&(u, f)| {
            time += 1;
            workload::follow(rng, u, f, GraphOp::Follow, time, &who())
        })
        .collect();
    rig.burst(&producer, follows)?;
    let c = rig.consumer(store.clone(), &topics, HYBRID_THRESHOLD)?;
    wait_for(&c.stats(), edges.len() as u64, "follows")?;
    c.stop()?;
    eprintln!("fan-out: producing {} posts…", a.fanout_events);
    let now = SystemClock.now_ms();
    let posts: Vec<Event> = (0..a.fanout_events)
        .map(|i| {
            let actor = rng.random_range(0..a.users);
            post(rng, actor, now + i as i64 / 10)
        })
        .collect();
    rig.burst(&producer, posts)?;
    let start = Instant::now();
    let c = rig.consumer(store.clone(), &topics, HYBRID_THRESHOLD)?;
    let stats = c.stats();
    wait_for(&stats, a.fanout_events, "fan-out")?;
    let fanout_secs = start.elapsed().as_secs_f64();
    let entries = stats.entries.load(Ordering::Relaxed);
    let fanout_events_per_s = a.fanout_events as f64 / fanout_secs;
    report.context(
        "graph",
        format!("{} users, {} follows", a.users, edges.len()),
    );
    report.context("fan-out posts", a.fanout_events);
    report.figure(
        "fan-out: index entries written",
        entries as f64 / fanout_secs,
        "entries/s",
        Some(300_000.0),
    );
    report.figure(
        "fan-out: events fully fanned out",
        fanout_events_per_s,
        "events/s",
        None,
    );

    if !a.phases.contains(&Phase::Latency) && !a.phases.contains(&Phase::Reads) {
        c.stop()?;
        return Ok(());
    }
    // 3. Publish→visible at a fixed offered load.
    let rate = fanout_events_per_s * a.load;
    report.context(
        "offered load",
        format!(
            "{:.0} posts/s ({:.0}% of the fan-out rate)",
            rate,
            a.load * 100.0
        ),
    );
    eprintln!("latency: {rate:.0} posts/s for {} s…", a.seconds);
    stats.visible.reset();
    let before = stats.finished();
    if a.phases.contains(&Phase::Latency) {
        let stop = Arc::new(AtomicBool::new(false));
        let offered = rig.rt.spawn(paced(
            producer.clone(),
            a.users,
            rate,
            a.seed + 1,
            stop.clone(),
        ));
        std::thread::sleep(Duration::from_secs(a.seconds));
        stop.store(true, Ordering::Relaxed);
        let sent = rig.rt.block_on(offered)?;
        producer.flush(Duration::from_secs(30))?;
        wait_for(&stats, before + sent, "latency")?;
        let h = stats.visible.snapshot();
        for (name, q) in [("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999)] {
            report.figure_low(
                &format!("publish→visible {name}"),
                h.value_at_quantile(q) as f64,
                "ms",
                (name == "p99").then_some(50.0),
            );
        }
    }
    if !a.phases.contains(&Phase::Reads) {
        c.stop()?;
        return Ok(());
    }

    // 4. Feed reads while posts keep arriving.
    let stop = Arc::new(AtomicBool::new(false));
    let offered = rig.rt.spawn(paced(
        producer.clone(),
        a.users,
        rate,
        a.seed + 2,
        stop.clone(),
    ));
    for (name, cache_bytes) in [("cache on", 256usize << 20), ("cache off", 0)] {
        let app = tidings_query::http::router(
            store.clone(),
            QueryOptions {
                cache_bytes,
                ..QueryOptions::default()
            },
        );
        let spec = Load {
            users: a.users,
            connections: a.connections,
            limit: 20,
            seed: a.seed,
            seconds: a.seconds,
        };
        eprintln!("reads, {name}: {} s…", a.seconds);
        let phase = rig.rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            let server = tokio::spawn(async move { axum::serve(listener, app).await });
            let r = load(format!("http://{addr}"), &spec, cache_bytes > 0).await;
            server.abort();
            r
        })?;
        let on = name == "cache on";
        phase.report(
            report,
            &format!("reads, {name}"),
            on.then_some(20_000.0),
            on.then_some(10.0),
        );
    }
    stop.store(true, Ordering::Relaxed);
    let sent = rig.rt.block_on(offered)?;
    report.context("posts during the read phases", sent);
    c.stop()?;
    Ok(())
}

/// Writes `n` followers of user 0 the way the projector's follow plan does.
fn celebrity_graph(store: &dyn Store, n: i64) -> anyhow::Result<()> {
    let p = meta::DEFAULT_PROJECTION;
    let since = encode_i64(SystemClock.now_ms() - 86_400_000);
    let pb = crate::progress::bar(n as u64, "followers");
    let mut b = WriteBatch::new();
    for f in 1..=n {
        b.set(graph::edge(p, Edge::Follower, 0, f), since.clone());
        b.set(graph::edge(p, Edge::Following, f, 0), since.clone());
        b.set(graph::count(p, f, Count::Following), encode_i64(1));
        if b.mutations.len() >= 30_000 {
            store.commit(std::mem::take(&mut b))?;
            pb.set_position(f as u64);
        }
    }
    b.set(graph::count(p, 0, Count::Followers), encode_i64(n));
    store.commit(b)?;
    pb.finish_and_clear();
    Ok(())
}

fn celebrity(
    rig: &Rig,
    a: &PipelineArgs,
    report: &mut Report,
    rng: &mut SmallRng,
) -> anyhow::Result<()> {
    let topics = rig.topics("celebrity")?;
    let producer = rig.producer(&topics)?;
    let store = rig.store("celebrity")?;
    eprintln!("celebrity: writing {} followers…", a.celebrity_followers);
    celebrity_graph(&*store, a.celebrity_followers)?;
    report.context("celebrity followers", a.celebrity_followers);
    let sample: Vec<UserId> = (0..1_000)
        .map(|_| rng.random_range(1..=a.celebrity_followers))
        .collect();
    for (name, threshold) in [("pulled", HYBRID_THRESHOLD), ("pushed", u64::MAX)] {
        let c = rig.consumer(store.clone(), &topics, threshold)?;
        // A post by someone without followers first: the clock starts with the consumer
        // caught up, not while it connects.
        let before = c.stats().finished();
        rig.burst(
            &producer,
            vec![post(rng, a.celebrity_followers + 1, SystemClock.now_ms())],
        )?;
        wait_for(&c.stats(), before + 1, "warm-up")?;
        let before = before + 1;
        let e = post(rng, 0, SystemClock.now_ms());
        let id = e.id();
        let start = Instant::now();
        rig.burst(&producer, vec![e])?;
        wait_for(&c.stats(), before + 1, "celebrity")?;
        let cfg = tidings_query::ReadConfig::default();
        for &u in &sample {
            loop {
                let page = tidings_query::read(
                    &*store,
                    &FeedRequest {
                        user: u,
                        kind: FeedKind::Home,
                        limit: 5,
                        cursor: None,
                        aggregate: false,
                    },
                    &cfg,
                )?;
                if page
                    .entries
                    .iter()
                    .any(|e| matches!(e, PageEntry::Item(i) if i.id == id))
                {
                    break;
                }
                if start.elapsed() > Duration::from_secs(120) {
                    bail!("celebrity post not visible to follower {u} after 120 s ({name})");
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let secs = start.elapsed().as_secs_f64();
        c.stop()?;
        report.figure_low(
            &format!("celebrity post visible to all ({name})"),
            secs,
            "s",
            (name == "pulled").then_some(5.0),
        );
    }
    Ok(())
}
