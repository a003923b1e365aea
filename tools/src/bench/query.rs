//! `tidings bench query`: feed pages over loopback HTTP, with the page cache on and off.
//!
//! Builds (or reuses, with `--dir`) a RocksDB store of `--users` users, each following
//! `--follows` authors who posted `--posts` items, so every home feed holds follows × posts
//! entries (defaults: 10,000 users, 1,000-entry feeds: 10M index entries, 200k bodies), written
//! straight in the store's layout. Then serves the query API on 127.0.0.1 and drives it from
//! `--connections` keep-alive HTTP clients in the same process, each asking for the first home
//! page (20 items, aggregated) of a uniformly random user, for `--seconds` per phase: cache on
//! (after one warm-up request per user, so the phase measures a warm cache), then off.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use rand::{Rng, SeedableRng};
use tidings_core::event::{Activity, Event, Producer as Who};
use tidings_core::keys::feed::{self, FeedEntry, FeedKind, Position, Reason};
use tidings_core::keys::graph::{self, Edge};
use tidings_core::keys::messages;
use tidings_core::EventId;
use tidings_query::http::QueryOptions;
use tidings_store::rocks::{RocksOptions, RocksStore};
use tidings_store::{Store, WriteBatch};

use super::Report;
use crate::progress;

/// Flags of `tidings bench query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// Store directory; reused when it already holds a store built with the same sizes.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Users (each has a home feed).
    #[arg(long, default_value_t = 10_000)]
    users: i64,
    /// Authors each user follows.
    #[arg(long, default_value_t = 50)]
    follows: usize,
    /// Posts per user (home feeds hold follows × posts entries).
    #[arg(long, default_value_t = 20)]
    posts: usize,
    /// Concurrent HTTP connections of the load generator.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Seconds per phase (cache on, cache off).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Page size asked for.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Seed of the generator.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Which phases to run: `both`, or only `on` / `off` (e.g. to profile one).
    #[arg(long, value_enum, default_value_t = Phases::Both)]
    cache: Phases,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The phases `--cache` selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Phases {
    Both,
    On,
    Off,
}

const BASE_MS: i64 = 1_767_225_600_000;

fn build(store: &dyn Store, a: &QueryArgs) -> anyhow::Result<u64> {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(a.seed);
    // followers[author] = users following them.
    let mut followers: Vec<Vec<i64>> = vec![Vec::new(); a.users as usize];
    let mut b = WriteBatch::new();
    for u in 0..a.users {
        let mut chosen = std::collections::BTreeSet::new();
        while chosen.len() < a.follows.min(a.users as usize - 1) {
            let f = rng.random_range(0..a.users);
            if f != u {
                chosen.insert(f);
            }
        }
        for f in chosen {
            followers[f as usize].push(u);
            b.set(graph::edge(1, Edge::Following, u, f), BASE_MS.to_le_bytes());
            b.set(graph::edge(1, Edge::Follower, f, u), BASE_MS.to_le_bytes());
        }
        if b.mutations.len() > 2_000 {
            store.commit(std::mem::take(&mut b))?;
        }
    }
    store.commit(std::mem::take(&mut b))?;
    let total = a.users as u64 * a.posts as u64;
    let pb = progress::bar(total, "build");
    let mut entries = 0u64;
    let verbs = ["post", "post", "like", "comment", "share"];
    for n in 0..total {
        let author = (n % a.users as u64) as i64;
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&n.to_be_bytes());
        id[8] = 0x70;
        let id = EventId::from_bytes(id);
        let verb = verbs[rng.random_range(0..verbs.len())];
        let object = if verb == "post" {
            format!("post:{n}")
        } else {
            format!("post:{}", rng.random_range(0..total))
        };
        let act = Activity {
            id,
            actor: author,
            verb: verb.into(),
            object: object.clone(),
            target: None,
            time_ms: BASE_MS + n as i64 * 100,
            to: vec![],
            text: "x".repeat(rng.random_range(40..240)),
            attributes: BTreeMap::new(),
            producer: Who::new("bench", env!("CARGO_PKG_VERSION")),
        };
        let pos = Position {
            time_ms: act.time_ms,
            id,
        };
        b.set(
            messages::key(1, id),
            tidings_schemas::encode(&Event::Activity(act)),
        );
        let entry = FeedEntry {
            actor: author,
            verb: verb.into(),
            object,
            reason: Reason::Follow,
        }
        .encode();
        for f in &followers[author as usize] {
            b.set(feed::key(1, *f, FeedKind::Home, pos), entry.clone());
            entries += 1;
        }
        if b.mutations.len() >= 2_000 {
            store.commit(std::mem::take(&mut b))?;
            pb.set_position(n);
        }
    }
    store.commit(b)?;
    pb.finish_and_clear();
    Ok(entries)
}

/// What one load phase measured.
pub(super) struct Phase {
    pub pages: u64,
    pub errors: u64,
    pub secs: f64,
    /// Request latencies in µs.
    pub hist: hdrhistogram::Histogram<u64>,
}

impl Phase {
    /// Adds `{name}: pages/s`, `{name}: p50` and `{name}: p99` (ms) to `report`.
    pub fn report(
        &self,
        report: &mut Report,
        name: &str,
        pages_target: Option<f64>,
        p99_target: Option<f64>,
    ) {
        report.figure(
            &format!("{name}: pages/s"),
            self.pages as f64 / self.secs,
            "pages/s",
            pages_target,
        );
        for (q, label, target) in [(0.5, "p50", None), (0.99, "p99", p99_target)] {
            report.figure_low(
                &format!("{name}: {label}"),
                self.hist.value_at_quantile(q) as f64 / 1000.0,
                "ms",
                target,
            );
        }
    }
}

/// How a load phase asks: the first home page of uniformly random users.
pub(super) struct Load {
    pub users: i64,
    pub connections: usize,
    pub limit: usize,
    pub seed: u64,
    pub seconds: u64,
}

impl QueryArgs {
    fn load(&self) -> Load {
        Load {
            users: self.users,
            connections: self.connections,
            limit: self.limit,
            seed: self.seed,
            seconds: self.seconds,
        }
    }
}

/// Asks for every user's first page once (fills the cache before a cache-on phase).
async fn warm(client: &reqwest::Client, base: &str, a: &Load) -> anyhow::Result<()> {
    let mut tasks = Vec::new();
    for c in 0..a.connections as i64 {
        let client = client.clone();
        let base = base.to_owned();
        let (users, conns, limit) = (a.users, a.connections as i64, a.limit);
        tasks.push(tokio::spawn(async move {
            let mut u = c;
            while u < users {
                client
                    .get(format!("{base}/v1/feeds/{u}/home?limit={limit}"))
                    .send()
                    .await?
                    .bytes()
                    .await?;
                u += conns;
            }
            Ok::<_, reqwest::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

pub(super) async fn load(base: String, a: &Load, warm_up: bool) -> anyhow::Result<Phase> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(a.connections)
        .build()?;
    if warm_up {
        warm(&client, &base, a).await?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..a.connections {
        let client = client.clone();
        let base = base.clone();
        let stop = stop.clone();
        let errors = errors.clone();
        let (users, limit, seed) = (a.users, a.limit, a.seed + c as u64);
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
            let mut hist = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let u = rng.random_range(0..users);
                let t = Instant::now();
                let ok = match client
                    .get(format!("{base}/v1/feeds/{u}/home?limit={limit}"))
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                    _ => false,
                };
                if ok {
                    let _ = hist.record(t.elapsed().as_micros() as u64);
                    n += 1;
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            (n, hist)
        }));
    }
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(a.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut hist = hdrhistogram::Histogram::<u64>::new(3)?;
    let mut pages = 0;
    for t in tasks {
        let (n, h) = t.await?;
        pages += n;
        hist.add(h)?;
    }
    Ok(Phase {
        pages,
        errors: errors.load(Ordering::Relaxed),
        secs: start.elapsed().as_secs_f64(),
        hist,
    })
}

pub fn run(a: QueryArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.users >= 2, "--users must be at least 2");
    anyhow::ensure!(a.connections > 0, "--connections must be at least 1");
    anyhow::ensure!(
        (1..=tidings_query::feed::MAX_LIMIT).contains(&a.limit),
        "--limit must be between 1 and {}",
        tidings_query::feed::MAX_LIMIT
    );
    let tmp;
    let dir = match &a.dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::Builder::new()
                .prefix("tidings-bench-query")
                .tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let marker = dir.join("bench-query-sizes");
    let sizes = format!("{} {} {} {}", a.users, a.follows, a.posts, a.seed);
    let store: Arc<dyn Store> = Arc::new(RocksStore::open(
        &dir.join("store"),
        RocksOptions::default(),
    )?);
    let entries = if std::fs::read_to_string(&marker).ok().as_deref() == Some(sizes.as_str()) {
        eprintln!("reusing the store in {}", dir.display());
        a.users as u64 * a.follows as u64 * a.posts as u64
    } else {
        let t = Instant::now();
        let n = build(&*store, &a)?;
        std::fs::write(&marker, &sizes).context("writing the size marker")?;
        eprintln!(
            "built {n} index entries in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        n
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut report = Report::new("query");
    report.context("users", a.users);
    report.context("entries per home feed", a.follows * a.posts);
    report.context("index entries", entries);
    report.context("connections", a.connections);
    report.context(
        "page",
        format!("first home page, {} items, aggregated", a.limit),
    );
    report.context("seconds per phase", a.seconds);
    report.context("cache on", "warmed with one request per user first");
    let phases: &[(&str, usize)] = match a.cache {
        Phases::Both => &[("cache on", 256 << 20), ("cache off", 0)],
        Phases::On => &[("cache on", 256 << 20)],
        Phases::Off => &[("cache off", 0)],
    };
    for &(name, cache_bytes) in phases {
        let opts = QueryOptions {
            cache_bytes,
            ..QueryOptions::default()
        };
        let app = tidings_query::http::router(store.clone(), opts);
        let phase = rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            let server = tokio::spawn(async move { axum::serve(listener, app).await });
            eprintln!("{name}: {} s of load…", a.seconds);
            let r = load(format!("http://{addr}"), &a.load(), cache_bytes > 0).await;
            server.abort();
            r
        })?;
        let target = match (name, a.limit) {
            ("cache on", 20) => Some(20_000.0),
            ("cache off", 20) => Some(5_000.0),
            _ => None,
        };
        phase.report(
            &mut report,
            name,
            target,
            (name == "cache on").then_some(10.0),
        );
        report.context(&format!("{name}: failed requests"), phase.errors);
    }
    report.emit(a.json.as_deref())
}
