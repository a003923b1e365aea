//! `tidings demo`: the whole pipeline in one process on a seeded social workload, and a report.
//!
//! 1. Starts the local broker (tansu, durable sqlite log), creates the topics, opens the
//!    embedded store, starts the consumers, background upkeep and the HTTP API (ingest gateway
//!    and query service) on a free port.
//! 2. Publishes the follow graph ([`crate::workload::graph`]: power-law follower counts and a
//!    celebrity above the hybrid threshold) and waits until it is applied.
//! 3. Publishes `--events` actions ([`crate::workload::Actions`]) at `--rate` per second, each
//!    stamped with the time it was meant to be sent (so latency is corrected for coordinated
//!    omission): most through the producer library, every 50th as JSON through
//!    `POST /v1/activities`, and a few malformed records straight into the topic.
//! 4. Waits until the consumers applied every record, runs a last upkeep pass, reads the dead
//!    letter topic and a sample home feed over HTTP, counts what the store holds, and prints
//!    the report (and writes it as JSON with `--json`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use serde_json::{json, Value};
use tidings_consumers::apply::{Applier, Stats};
use tidings_consumers::kafka::{self as consumers, Assignment, ConsumerConfig};
use tidings_consumers::maintain::{MaintainConfig, Maintainer};
use tidings_consumers::project::Projector;
use tidings_core::clock::{Clock, SystemClock};
use tidings_core::keys::{self, meta};
use tidings_core::{Event, GraphOp, Producer as Who, UserId};
use tidings_producers::broker::{free_port, BrokerStorage, LocalBroker};
use tidings_producers::topics::{self, DEFAULT_PARTITIONS};
use tidings_producers::{KafkaConfig, Producer, ProducerConfig, Topics};
use tidings_store::{RangeOptions, Store};

use crate::progress;
use crate::workload::{self, Actions, CELEBRITY};

/// Flags of `tidings demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the run's data goes: a fresh DATA/demo-<time> directory per run (broker log and
    /// store), kept afterwards for inspection.
    #[arg(long, env = "TIDINGS_DATA", default_value = "./data")]
    data: PathBuf,
    /// Users in the generated graph.
    #[arg(long, default_value_t = 5_000)]
    users: i64,
    /// Actions to publish after the graph (posts, likes, comments, follows, retractions).
    #[arg(long, default_value_t = 40_000)]
    events: u64,
    /// Offered load of the action phase, actions per second (0: as fast as possible).
    #[arg(long, default_value_t = 2_000)]
    rate: u64,
    /// Seed of the generator: the same seed gives the same graph and actions.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Share of users following the celebrity.
    #[arg(long, default_value_t = 0.6)]
    celebrity_share: f64,
    /// Authors with more followers than this are pulled at read time instead of pushed
    /// (default: users / 10, so the celebrity is pulled at any size).
    #[arg(long)]
    hybrid_threshold: Option<u64>,
    /// Keep the local broker's log in sqlite under DATA/demo-*/broker (durable, as `tidings up`
    /// does) instead of in memory. tansu 0.6's sqlite engine is much slower under concurrent
    /// produce and fetch, so the demo defaults to memory (the store is on disk either way).
    #[arg(long)]
    broker_sqlite: bool,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Malformed records published on purpose: not Avro (a JSON string), an unknown writer
/// schema, a truncated record, an empty value.
fn malformed() -> Vec<Vec<u8>> {
    let id = tidings_core::EventId(uuid::Uuid::from_u128(
        0x0190_0000_0000_7000_8000_0000_0000_0001,
    ));
    let bad = Who::new("tidings-demo-bad", "0");
    let good = tidings_schemas::encode(&Event::Activity(workload::post(
        id,
        1,
        1_767_225_600_000,
        "cut short",
        &bad,
    )));
    let mut unknown = good.clone();
    unknown[2..10].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef, 0xde, 0xad, 0xbe, 0xef]);
    vec![
        br#"{"verb":"post"}"#.to_vec(),
        unknown,
        good[..good.len() - 4].to_vec(),
        Vec::new(),
    ]
}

struct Pipeline {
    rt: tokio::runtime::Runtime,
    broker: LocalBroker,
    kafka: KafkaConfig,
    topics: Topics,
    store: Arc<dyn Store>,
    consumer: consumers::ConsumerHandle,
    stats: Arc<Stats>,
    maintain_stop: Arc<AtomicBool>,
    maintain: std::thread::JoinHandle<()>,
    producer: Producer,
    http: std::net::SocketAddr,
}

fn start(dir: &Path, threshold: u64, sqlite: bool) -> anyhow::Result<Pipeline> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let store = crate::pipeline::open_store(dir)?;
    let storage = if sqlite {
        BrokerStorage::Sqlite(dir.join("broker"))
    } else {
        BrokerStorage::Memory
    };
    let broker = LocalBroker::start_on(storage, dir, free_port()?)
        .context("starting the local broker (scripts/setup.sh installs tansu)")?;
    let kafka = broker.kafka();
    let topics = Topics::default();
    rt.block_on(topics::create(&kafka, &topics, DEFAULT_PARTITIONS))
        .map_err(anyhow::Error::msg)?;
    let mut projector = Projector::new(meta::DEFAULT_PROJECTION);
    projector.fanout.hybrid_threshold = threshold;
    let applier = Applier::new(store.clone(), projector, "tidings-demo");
    let stats = applier.stats();
    let mut ccfg = ConsumerConfig::new(kafka.clone());
    ccfg.topics = topics.clone();
    ccfg.group = "tidings-demo".into();
    // One process owns every partition: static assignment skips the group join.
    ccfg.assignment = Assignment::Static { instance: 0, of: 1 };
    ccfg.reread_from_start = true;
    let consumer = consumers::spawn(ccfg, applier)?;
    let maintain_stop = Arc::new(AtomicBool::new(false));
    let maintain = Maintainer::new(store.clone(), MaintainConfig::default())
        .spawn(maintain_stop.clone())
        .context("starting the maintenance thread")?;
    let mut pcfg = ProducerConfig::new(kafka.brokers.clone());
    pcfg.kafka = kafka.clone();
    pcfg.topics = topics.clone();
    let producer = Producer::new(pcfg)?;
    let app = tidings_producers::gateway::router(producer.clone()).merge(
        tidings_query::http::router(store.clone(), tidings_query::http::QueryOptions::default()),
    );
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let http = listener.local_addr()?;
    rt.spawn(async move { axum::serve(listener, app).await });
    Ok(Pipeline {
        rt,
        broker,
        kafka,
        topics,
        store,
        consumer,
        stats,
        maintain_stop,
        maintain,
        producer,
        http,
    })
}

/// Counts keys in `begin..end` in chunks (no read view lives long).
fn count_keys(store: &dyn Store, begin: &[u8], end: &[u8]) -> anyhow::Result<u64> {
    let mut from = begin.to_vec();
    let mut n = 0u64;
    loop {
        let rows = store
            .snapshot()?
            .range(&from, end, RangeOptions::forward(10_000))?;
        n += rows.len() as u64;
        match rows.last() {
            Some((k, _)) if rows.len() == 10_000 => {
                from = k.clone();
                from.push(0);
            }
            _ => return Ok(n),
        }
    }
}

/// Every dead letter's `reason-code` and `reason` headers, read from the start of the topic.
fn read_dead_letters(
    kafka: &KafkaConfig,
    topic: &str,
    want: u64,
) -> anyhow::Result<Vec<(String, String)>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    let mut c = kafka.client();
    c.set("group.id", "tidings-demo-report")
        .set("enable.auto.commit", "false");
    let consumer: BaseConsumer = c.create()?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..DEFAULT_PARTITIONS {
        tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut out = Vec::new();
    let start = Instant::now();
    while (out.len() as u64) < want && start.elapsed() < Duration::from_secs(15) {
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let header = |name: &str| {
            m.headers()
                .and_then(|h| h.iter().find(|x| x.key == name))
                .and_then(|x| x.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        };
        out.push((header("reason-code"), header("reason")));
    }
    Ok(out)
}

fn quantiles(h: &hdrhistogram::Histogram<u64>) -> Value {
    json!({
        "count": h.len(),
        "p50": h.value_at_quantile(0.5),
        "p99": h.value_at_quantile(0.99),
        "p999": h.value_at_quantile(0.999),
        "max": h.max(),
    })
}

fn activity_json(e: &Event) -> Option<Value> {
    let Event::Activity(a) = e else { return None };
    Some(json!({
        "id": a.id, "actor": a.actor, "verb": a.verb, "object": a.object, "target": a.target,
        "time_ms": a.time_ms, "to": a.to, "text": a.text,
        "producer": {"name": "tidings-demo-http", "version": env!("CARGO_PKG_VERSION")},
    }))
}

/// One page entry as a line of text.
fn render(entry: &Value) -> String {
    let short = |s: &str| {
        if s.chars().count() > 48 {
            format!("{}…", s.chars().take(47).collect::<String>())
        } else {
            s.to_owned()
        }
    };
    match entry["type"].as_str() {
        Some("group") => format!("* {}", entry["summary"].as_str().unwrap_or("")),
        _ => {
            let text = entry["text"].as_str().unwrap_or("");
            let what = entry["target"]
                .as_str()
                .or(entry["object"].as_str())
                .unwrap_or("");
            let verb = match entry["verb"].as_str().unwrap_or("") {
                "post" => "posted",
                "like" => "liked",
                "comment" => "commented on",
                "share" => "shared",
                other => other,
            };
            let mut line = format!("- user {} {verb} {}", entry["actor"], short(what));
            if !text.is_empty() {
                line.push_str(&format!(": \"{}\"", short(text)));
            }
            line
        }
    }
}

pub fn run(a: DemoArgs) -> anyhow::Result<()> {
    if a.users < 20 {
        bail!("--users must be at least 20 (got {})", a.users);
    }
    if a.events < 10 {
        bail!("--events must be at least 10 (got {})", a.events);
    }
    if !(0.0..=1.0).contains(&a.celebrity_share) {
        bail!(
            "--celebrity-share must be between 0 and 1 (got {})",
            a.celebrity_share
        );
    }
    let threshold = a.hybrid_threshold.unwrap_or((a.users as u64 / 10).max(5));
    let stamp = SystemClock.now_ms();
    let dir = a.data.join(format!("demo-{stamp}"));
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("creating the data directory {}", dir.display()))?;
    eprintln!(
        "tidings demo: starting broker, consumers and HTTP API in {}",
        dir.display()
    );
    let pipe = start(&dir, threshold, a.broker_sqlite)?;
    let who = Who::new("tidings-demo", env!("CARGO_PKG_VERSION"));
    let mut rng = SmallRng::seed_from_u64(a.seed);

    // 1. The graph.
    let edges = workload::graph(a.users, a.celebrity_share, a.seed);
    let followers = workload::follower_counts(a.users, &edges);
    let mut graph_time = stamp - 3_600_000;
    let follows: Vec<Event> = edges
        .iter()
        .map(|&(u, f)| {
            graph_time += 1;
            workload::follow(&mut rng, u, f, GraphOp::Follow, graph_time, &who)
        })
        .collect();
    let started = Instant::now();
    let failed = pipe
        .rt
        .block_on(workload::publish_all(&pipe.producer, follows));
    if failed > 0 {
        bail!("{failed} publishes were not acknowledged by the broker; see the log above");
    }
    let failures = Arc::new(AtomicU64::new(0));
    progress::wait_applied(
        &pipe.stats,
        edges.len() as u64,
        "follows",
        Duration::from_secs(60),
    )?;
    let graph_secs = started.elapsed().as_secs_f64();
    pipe.stats.visible.reset();

    // 2. The actions, paced, each stamped with its intended send time.
    let mut actions = Actions::new(a.users, a.seed, who.clone());
    let http_sent = Arc::new(AtomicU64::new(0));
    let mut http_expected = 0u64;
    let bad = malformed();
    let applied_before = pipe.stats.finished();
    let action_start = Instant::now();
    let t0 = SystemClock.now_ms();
    let base = format!("http://{}", pipe.http);
    let client = reqwest::Client::new();
    pipe.rt.block_on(async {
        let pb = progress::bar(a.events, "publish");
        for i in 0..a.events {
            let offset = workload::until_due(action_start, i, a.rate as f64).await;
            let e = actions.next(t0 + offset.as_millis() as i64);
            if i % 50 == 25 {
                if let Some(body) = activity_json(&e) {
                    http_expected += 1;
                    let (client, url, failures, sent) = (
                        client.clone(),
                        format!("{base}/v1/activities"),
                        failures.clone(),
                        http_sent.clone(),
                    );
                    tokio::spawn(async move {
                        match client.post(url).json(&body).send().await {
                            Ok(r) if r.status().is_success() => {
                                sent.fetch_add(1, Ordering::Relaxed);
                            }
                            _ => {
                                failures.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    });
                    continue;
                }
            }
            if i == a.events / 2 {
                for (n, payload) in bad.iter().enumerate() {
                    let key = n.to_string();
                    pipe.producer
                        .publish_raw(&pipe.topics.activities, key.as_bytes(), payload, &[])
                        .await?;
                }
            }
            let (producer, failures) = (pipe.producer.clone(), failures.clone());
            tokio::spawn(async move {
                if producer.publish(e).await.is_err() {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            });
            if i % 256 == 0 {
                pb.set_position(i);
            }
        }
        pb.finish_and_clear();
        Ok::<_, anyhow::Error>(())
    })?;
    let publish_secs = action_start.elapsed().as_secs_f64();
    // Wait for acknowledgements (spawned publishes), then for the consumers.
    pipe.producer.flush(Duration::from_secs(30))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_sent.load(Ordering::Relaxed) + failures.load(Ordering::Relaxed) < http_expected
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    let failed = failures.load(Ordering::Relaxed);
    if failed > 0 {
        bail!("{failed} publishes were not acknowledged by the broker; see the log above");
    }
    let total = edges.len() as u64 + a.events + bad.len() as u64;
    progress::wait_applied(&pipe.stats, total, "apply", Duration::from_secs(60))?;
    let action_secs = action_start.elapsed().as_secs_f64();
    let action_records = pipe.stats.finished() - applied_before;
    let latency = pipe.stats.visible.snapshot();

    // 3. Settle: stop consuming, a last upkeep pass, then count and read.
    let Pipeline {
        rt,
        broker,
        kafka,
        topics,
        store,
        consumer,
        stats,
        maintain_stop,
        maintain,
        producer,
        http,
    } = pipe;
    consumer.stop()?;
    maintain_stop.store(true, Ordering::SeqCst);
    let _ = maintain.join();
    let mut upkeep = Maintainer::new(store.clone(), MaintainConfig::default());
    upkeep.pass()?;
    let upkept = upkeep.stats();
    let dead = read_dead_letters(&kafka, &topics.dlq, stats.dead.load(Ordering::Relaxed))?;
    let mut dead_by_reason: BTreeMap<String, (u64, String)> = BTreeMap::new();
    for (code, reason) in dead {
        let e = dead_by_reason.entry(code).or_insert((0, reason));
        e.0 += 1;
    }
    let p = meta::DEFAULT_PROJECTION;
    let (fb, fe) = keys::keyspace_range(p, "feed");
    let index_entries = count_keys(&*store, &fb, &fe)?;
    let (mb, me) = keys::keyspace_range(p, "msg");
    let bodies = count_keys(&*store, &mb, &me)?;

    // A reader who follows the celebrity: their page mixes pushed and pulled items.
    let reader: UserId = edges
        .iter()
        .find(|(u, f)| *f == CELEBRITY && *u > 0)
        .map_or(1, |(u, _)| *u);
    let (page, counts): (Value, Value) = rt.block_on(async {
        let client = reqwest::Client::new();
        let page = client
            .get(format!("http://{http}/v1/feeds/{reader}/home?limit=12"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let counts = client
            .get(format!(
                "http://{http}/v1/feeds/{reader}/notifications:counts"
            ))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok::<_, reqwest::Error>((page, counts))
    })?;
    let lines: Vec<String> = page["entries"]
        .as_array()
        .map(|v| v.iter().map(render).collect())
        .unwrap_or_default();

    let mut sorted = followers.clone();
    sorted.sort_unstable();
    let pct = |q: f64| sorted[((sorted.len() - 1) as f64 * q) as usize];
    let applied = stats.events.load(Ordering::Relaxed);
    let report = json!({
        "seed": a.seed,
        "users": a.users,
        "graph": {
            "follows": edges.len(),
            "followers_median": pct(0.5),
            "followers_p99": pct(0.99),
            "followers_max_besides_celebrity": sorted[sorted.len().saturating_sub(2)],
            "celebrity": CELEBRITY,
            "celebrity_followers": followers[CELEBRITY as usize],
            "hybrid_threshold": threshold,
            "seconds": graph_secs,
        },
        "published": {
            "actions": a.events,
            "by_kind": actions.counts,
            "via_http": http_sent.load(Ordering::Relaxed),
            "malformed": bad.len(),
            "offered_rate": a.rate,
            "seconds": publish_secs,
        },
        "applied": {
            "events": applied,
            "dead_letters": stats.dead.load(Ordering::Relaxed),
            "redeliveries_skipped": stats.skipped.load(Ordering::Relaxed),
            "action_phase_records": action_records,
            "action_phase_seconds": action_secs,
            "events_per_s": action_records as f64 / action_secs,
        },
        "fanout": {
            "entries_written_or_removed": stats.entries.load(Ordering::Relaxed),
            "trimmed": upkept.trimmed.load(Ordering::Relaxed),
            "index_entries": index_entries,
            "bodies": bodies,
        },
        "latency_ms": quantiles(&latency),
        "dead_letters": dead_by_reason.iter().map(|(k, (n, why))| (k.clone(), json!({"count": n, "example": why}))).collect::<BTreeMap<_, _>>(),
        "sample": {"user": reader, "lines": lines, "notifications": counts},
        "data": {
            "dir": dir.display().to_string(),
            "store": dir.join("store").display().to_string(),
            "broker": if a.broker_sqlite {
                dir.join("broker").display().to_string()
            } else {
                "in memory (gone with the process; --broker-sqlite keeps it)".to_string()
            },
        },
    });
    print_report(&report, &a);
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    // Clients first, then the broker, so librdkafka has nothing to complain about on exit.
    drop(producer);
    rt.shutdown_timeout(Duration::from_secs(2));
    drop(broker);
    Ok(())
}

fn n(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if x.fract() == 0.0 => thousands(x as u64),
        Some(x) if x >= 100.0 => thousands(x.round() as u64),
        Some(x) => format!("{x:.1}"),
        None => v.to_string(),
    }
}

fn thousands(x: u64) -> String {
    let s = x.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn print_report(r: &Value, a: &DemoArgs) {
    let g = &r["graph"];
    let p = &r["published"];
    let ap = &r["applied"];
    let f = &r["fanout"];
    let l = &r["latency_ms"];
    println!(
        "tidings demo: seed {}, {} users, one process (broker, ingest, consumers, query)\n",
        a.seed,
        n(&r["users"])
    );
    println!(
        "graph         {} follows; followers per user: median {}, p99 {}, max {} (besides the celebrity)",
        n(&g["follows"]),
        n(&g["followers_median"]),
        n(&g["followers_p99"]),
        n(&g["followers_max_besides_celebrity"])
    );
    println!(
        "              celebrity user {}: {} followers, above the hybrid threshold {} (pulled at read time)",
        g["celebrity"],
        n(&g["celebrity_followers"]),
        n(&g["hybrid_threshold"])
    );
    let kinds: Vec<String> = p["by_kind"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| format!("{} {k}", n(v))).collect())
        .unwrap_or_default();
    println!(
        "published     {} actions ({}), {} of them via POST /v1/activities; {} malformed records",
        n(&p["actions"]),
        kinds.join(", "),
        n(&p["via_http"]),
        n(&p["malformed"])
    );
    println!(
        "applied       {} events exactly once, {} to the dead letter topic; action phase {} events/s",
        n(&ap["events"]),
        n(&ap["dead_letters"]),
        n(&ap["events_per_s"])
    );
    println!(
        "fan-out       {} index entries written or removed; {} in the store now ({} trimmed); {} bodies, each stored once",
        n(&f["entries_written_or_removed"]),
        n(&f["index_entries"]),
        n(&f["trimmed"]),
        n(&f["bodies"])
    );
    let offered = if a.rate == 0 {
        "unpaced".to_string()
    } else {
        format!("offered {}/s", thousands(a.rate))
    };
    println!(
        "latency       publish→visible ({offered}, {} actions): p50 {} ms, p99 {} ms, max {} ms",
        n(&l["count"]),
        n(&l["p50"]),
        n(&l["p99"]),
        n(&l["max"])
    );
    println!("dead letters");
    if let Some(m) = r["dead_letters"].as_object() {
        for (code, v) in m {
            println!(
                "  {:<22} {}  e.g. {}",
                code,
                n(&v["count"]),
                v["example"].as_str().unwrap_or("")
            );
        }
    }
    let s = &r["sample"];
    println!(
        "\nhome feed of user {} (first page, aggregated; notifications: {} unseen, {} unread):",
        s["user"], s["notifications"]["unseen"], s["notifications"]["unread"]
    );
    for line in s["lines"].as_array().into_iter().flatten() {
        println!("  {}", line.as_str().unwrap_or(""));
    }
    println!(
        "\ndata          {} (delete it when done)\n  store       {}\n  broker log  {}",
        r["data"]["dir"].as_str().unwrap_or(""),
        r["data"]["store"].as_str().unwrap_or(""),
        r["data"]["broker"].as_str().unwrap_or("")
    );
}
