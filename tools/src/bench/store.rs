//! `tidings bench store`: the ceiling the fan-out path works against.
//!
//! Writes index-entry-sized pairs (real feed keys and values from `tidings_core::keys::feed`)
//! in batches, then reads 20-entry pages newest first from random feeds, each in a fresh read
//! view, from several threads — the query service's access pattern without HTTP.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use rand::{Rng, SeedableRng};
use tidings_core::keys::feed::{self, FeedEntry, FeedKind, Position, Reason};
use tidings_core::EventId;
use tidings_store::rocks::{RocksOptions, RocksStore};
use tidings_store::{RangeOptions, Store, WriteBatch};

use super::Report;
use crate::progress;

/// Flags of `tidings bench store`.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// Directory for the benchmark's RocksDB (default: a temporary directory, removed after).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Index entries to write.
    #[arg(long, default_value_t = 2_000_000)]
    entries: u64,
    /// Entries per atomic batch.
    #[arg(long, default_value_t = 1_000)]
    batch: usize,
    /// Distinct feeds (owners) the entries spread over.
    #[arg(long, default_value_t = 10_000)]
    feeds: i64,
    /// Pages to read.
    #[arg(long, default_value_t = 400_000)]
    pages: u64,
    /// Entries per page.
    #[arg(long, default_value_t = 20)]
    page_size: usize,
    /// Reader threads.
    #[arg(long, default_value_t = 2)]
    readers: usize,
    /// Size of one RocksDB memtable in MiB (the store URL's `memtable_mb`).
    #[arg(long, default_value_t = RocksOptions::default().memtable_mb)]
    memtable_mb: usize,
    /// fsync every batch (durable against power loss, not just process crashes).
    #[arg(long)]
    sync: bool,
    /// Seed of the generator.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn run(a: StoreArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.batch > 0, "--batch must be at least 1");
    anyhow::ensure!(a.feeds > 0, "--feeds must be at least 1");
    let tmp;
    let dir = match &a.dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::Builder::new()
                .prefix("tidings-bench-store")
                .tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let store: Arc<dyn Store> = Arc::new(RocksStore::open(
        &dir,
        RocksOptions {
            sync: a.sync,
            memtable_mb: a.memtable_mb,
            ..RocksOptions::default()
        },
    )?);
    let mut rng = rand::rngs::SmallRng::seed_from_u64(a.seed);
    let verbs = ["post", "like", "comment", "share"];
    let mut value_bytes = 0u64;
    let mut key_bytes = 0u64;

    // Write phase.
    let pb = progress::bar(a.entries, "write");
    let mut batch_lat = hdrhistogram::Histogram::<u64>::new(3)?;
    let start = Instant::now();
    let mut written = 0u64;
    let base_time = 1_767_225_600_000i64; // 2026-01-01
    while written < a.entries {
        let n = (a.entries - written).min(a.batch as u64);
        let mut b = WriteBatch::new();
        for i in 0..n {
            let owner = rng.random_range(0..a.feeds);
            let seq = written + i;
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&seq.to_be_bytes());
            rng.fill(&mut id[8..]);
            let pos = Position {
                time_ms: base_time + (seq as i64) * 10,
                id: EventId::from_bytes(id),
            };
            let key = feed::key(1, owner, FeedKind::Home, pos);
            let value = FeedEntry {
                actor: rng.random_range(0..1_000_000),
                verb: verbs[rng.random_range(0..verbs.len())].to_owned(),
                object: format!("post:{}", rng.random_range(0..10_000_000u64)),
                reason: Reason::Follow,
            }
            .encode();
            key_bytes += key.len() as u64;
            value_bytes += value.len() as u64;
            b.set(key, value);
        }
        let t = Instant::now();
        store.commit(b)?;
        batch_lat.record(t.elapsed().as_micros() as u64)?;
        written += n;
        pb.set_position(written);
    }
    let write_secs = start.elapsed().as_secs_f64();
    pb.finish_and_clear();

    // Read phase: random feeds, newest-first pages, fresh view each.
    let pb = progress::bar(a.pages, "read");
    let per_thread = a.pages / a.readers.max(1) as u64;
    let start = Instant::now();
    let results: Vec<anyhow::Result<(u64, u64, hdrhistogram::Histogram<u64>)>> =
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..a.readers.max(1))
                .map(|t| {
                    let store = Arc::clone(&store);
                    let pb = pb.clone();
                    let seed = a.seed + 1 + t as u64;
                    let (feeds, page) = (a.feeds, a.page_size);
                    s.spawn(move || -> anyhow::Result<_> {
                        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
                        let mut hist = hdrhistogram::Histogram::<u64>::new(3)?;
                        let mut rows = 0u64;
                        for i in 0..per_thread {
                            let owner = rng.random_range(0..feeds);
                            let (b, e) = feed::feed(1, owner, FeedKind::Home).range();
                            let t = Instant::now();
                            let view = store.snapshot()?;
                            rows += view.range(&b, &e, RangeOptions::forward(page))?.len() as u64;
                            hist.record(t.elapsed().as_nanos() as u64)?;
                            if i % 1024 == 0 {
                                pb.inc(1024);
                            }
                        }
                        Ok((per_thread, rows, hist))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .map_err(|_| anyhow::anyhow!("reader thread panicked"))?
                })
                .collect()
        });
    let read_secs = start.elapsed().as_secs_f64();
    pb.finish_and_clear();
    let mut pages = 0u64;
    let mut rows = 0u64;
    let mut read_lat = hdrhistogram::Histogram::<u64>::new(3)?;
    for r in results {
        let (p, n, h) = r?;
        pages += p;
        rows += n;
        read_lat.add(h)?;
    }

    let mut report = Report::new("store");
    report.context("backend", "rocksdb (embedded, on disk)");
    report.context("wal fsync per batch", a.sync);
    report.context("memtable MiB", a.memtable_mb);
    report.context("entries", a.entries);
    report.context("batch", a.batch);
    report.context("feeds", a.feeds);
    report.context(
        "avg key / value bytes",
        format!(
            "{:.1} / {:.1}",
            key_bytes as f64 / a.entries.max(1) as f64,
            value_bytes as f64 / a.entries.max(1) as f64
        ),
    );
    report.context("reader threads", a.readers);
    report.context(
        "avg entries per page",
        format!("{:.1}", rows as f64 / pages.max(1) as f64),
    );
    let target = (a.batch >= 1_000 && !a.sync).then_some(300_000.0);
    report.figure(
        "batch write: index entries/s",
        a.entries as f64 / write_secs,
        "entries/s",
        target,
    );
    report.figure_low(
        "batch commit p50",
        batch_lat.value_at_quantile(0.5) as f64 / 1000.0,
        "ms",
        None,
    );
    report.figure_low(
        "batch commit p99",
        batch_lat.value_at_quantile(0.99) as f64 / 1000.0,
        "ms",
        None,
    );
    let target = (a.page_size == 20).then_some(50_000.0);
    let name = format!("page reads ({} entries, fresh view)/s", a.page_size);
    report.figure(&name, pages as f64 / read_secs, "pages/s", target);
    report.figure_low(
        "page read p50",
        read_lat.value_at_quantile(0.5) as f64 / 1000.0,
        "µs",
        None,
    );
    report.figure_low(
        "page read p99",
        read_lat.value_at_quantile(0.99) as f64 / 1000.0,
        "µs",
        None,
    );
    report.emit(a.json.as_deref())
}
