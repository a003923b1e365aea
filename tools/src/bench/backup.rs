//! `tidings bench backup`: full backup and restore throughput on a store of realistic shape.
//!
//! The store (default ≥ 2 GB of keys and values) is written through ordinary store batches,
//! so it has the levels and overlaps of a live store: a follow graph with counts, Avro bodies
//! of posts (`msg`), and each post's fan-out into the author's user feed and followers' home
//! feeds, with feed versions. `--store-dir` keeps it for the next run. Then `tidings backup`'s
//! code backs it up, and `tidings restore`'s loads it into an empty store (no log to replay).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use rand::{Rng, SeedableRng};
use tidings_consumers::backup::restore::{self, RestoreOptions};
use tidings_consumers::backup::{self, BackupOptions};
use tidings_consumers::project::Projector;
use tidings_core::event::{Activity, Event, Producer};
use tidings_core::keys::feed::{self, FeedEntry, FeedKind, Position, Reason};
use tidings_core::keys::graph::{self, Count, Edge};
use tidings_core::keys::{self, fver, messages};
use tidings_core::EventId;
use tidings_store::rocks::{RocksOptions, RocksStore};
use tidings_store::{Store, WriteBatch};

use super::Report;
use crate::progress;

/// Flags of `tidings bench backup`.
#[derive(Debug, Args)]
pub struct BackupBenchArgs {
    /// Keep the generated store here and reuse it next time (default: a temporary directory).
    #[arg(long)]
    store_dir: Option<PathBuf>,
    /// Directory for the backup and the restored store (default: a temporary directory).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// GB of keys and values to write.
    #[arg(long, default_value_t = 2.1)]
    gb: f64,
    /// Users.
    #[arg(long, default_value_t = 200_000)]
    users: i64,
    /// Follows per user (and home feeds each post fans out to).
    #[arg(long, default_value_t = 20)]
    fanout: usize,
    /// Backup readers (and as many writers); default: twice the cores, as `tidings backup`.
    #[arg(long, default_value_t = BackupOptions::default().threads)]
    threads: usize,
    /// Restore loaders; default: the cores, as `tidings restore`.
    #[arg(long, default_value_t = std::thread::available_parallelism().map_or(2, |n| n.get()))]
    restore_threads: usize,
    /// Seed of the generator.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

const WORDS: [&str; 16] = [
    "coffee", "release", "weekend", "kafka", "feed", "party", "photo", "deploy", "rain", "garden",
    "match", "lunch", "train", "music", "launch", "review",
];

/// Writes the store; returns bytes of keys and values written.
fn generate(store: &dyn Store, a: &BackupBenchArgs) -> anyhow::Result<u64> {
    let want = (a.gb * 1e9) as u64;
    let mut rng = rand::rngs::SmallRng::seed_from_u64(a.seed);
    let pb = progress::bar(want, "generate");
    let mut bytes = 0u64;
    let mut b = WriteBatch::new();
    let flush = |b: &mut WriteBatch, bytes: &mut u64| -> anyhow::Result<()> {
        // Keys and values of sets: feed-version adds to one key end as one pair.
        *bytes += b
            .mutations
            .iter()
            .map(|m| match m {
                tidings_core::Mutation::Set { key, value } => key.len() + value.len(),
                _ => 0,
            })
            .sum::<usize>() as u64;
        store.commit(std::mem::take(b))?;
        pb.set_position(*bytes);
        Ok(())
    };
    // The graph: each user follows `fanout` others.
    let mut followers: BTreeMap<i64, i64> = BTreeMap::new();
    for u in 0..a.users {
        for _ in 0..a.fanout {
            let v = rng.random_range(0..a.users);
            let since = 8u64.to_le_bytes();
            b.set(graph::edge(1, Edge::Following, u, v), since.to_vec());
            b.set(graph::edge(1, Edge::Follower, v, u), since.to_vec());
            *followers.entry(v).or_default() += 1;
        }
        b.set(
            graph::count(1, u, Count::Following),
            (a.fanout as i64).to_le_bytes().to_vec(),
        );
        if b.size() > 1 << 20 {
            flush(&mut b, &mut bytes)?;
        }
    }
    for (v, n) in followers {
        b.set(
            graph::count(1, v, Count::Followers),
            n.to_le_bytes().to_vec(),
        );
        if b.size() > 1 << 20 {
            flush(&mut b, &mut bytes)?;
        }
    }
    // Posts: a body once, entries in the author's user feed and `fanout` home feeds.
    let base = 1_793_491_200_000i64;
    let mut seq = 0u64;
    let mut pending = 0usize;
    while bytes < want {
        seq += 1;
        let actor = rng.random_range(0..a.users);
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&seq.to_be_bytes());
        rng.fill(&mut id[8..]);
        let id = EventId::from_bytes(id);
        let time_ms = base + seq as i64 * 7;
        let words = rng.random_range(8..40);
        let text: Vec<&str> = (0..words)
            .map(|_| WORDS[rng.random_range(0..WORDS.len())])
            .collect();
        let post = Activity {
            id,
            actor,
            verb: "post".into(),
            object: format!("post:{seq}"),
            target: None,
            time_ms,
            to: Vec::new(),
            text: text.join(" "),
            attributes: BTreeMap::new(),
            producer: Producer::new("bench", "1.0.0"),
        };
        b.set(
            messages::key(1, id),
            tidings_schemas::encode(&Event::Activity(post)),
        );
        let entry = FeedEntry {
            actor,
            verb: "post".into(),
            object: format!("post:{seq}"),
            reason: Reason::Own,
        };
        let pos = Position { time_ms, id };
        b.set(feed::key(1, actor, FeedKind::User, pos), entry.encode());
        b.add(fver::key(1, actor, FeedKind::User), 1);
        let home = FeedEntry {
            reason: Reason::Follow,
            ..entry
        }
        .encode();
        for _ in 0..a.fanout {
            let owner = rng.random_range(0..a.users);
            b.set(feed::key(1, owner, FeedKind::Home, pos), home.clone());
            b.add(fver::key(1, owner, FeedKind::Home), 1);
        }
        pending += 1;
        if pending == 400 {
            pending = 0;
            flush(&mut b, &mut bytes)?;
        }
    }
    b.set(
        keys::offsets::key(1, "tidings-fanout", "tidings.activities", 0),
        (seq as i64).to_le_bytes().to_vec(),
    );
    flush(&mut b, &mut bytes)?;
    pb.finish_and_clear();
    Ok(bytes)
}

fn dir_bytes(p: &std::path::Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
        let Ok(m) = e.metadata() else { continue };
        n += if m.is_dir() {
            dir_bytes(&e.path())
        } else {
            m.len()
        };
    }
    n
}

pub fn run(a: BackupBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.gb > 0.0, "--gb must be positive");
    anyhow::ensure!(
        a.users > 0 && a.fanout > 0 && a.threads > 0 && a.restore_threads > 0,
        "--users, --fanout and --threads must be at least 1"
    );
    let (tmp_store, tmp_work);
    let store_dir = match &a.store_dir {
        Some(d) => d.clone(),
        None => {
            tmp_store = tempfile::Builder::new()
                .prefix("tidings-bench-backup")
                .tempdir()?;
            tmp_store.path().to_path_buf()
        }
    };
    let work = match &a.work_dir {
        Some(d) => d.clone(),
        None => {
            tmp_work = tempfile::Builder::new()
                .prefix("tidings-bench-backup-work")
                .tempdir()?;
            tmp_work.path().to_path_buf()
        }
    };
    let rocks = Arc::new(RocksStore::open(&store_dir, RocksOptions::default())?);
    let store: Arc<dyn Store> = rocks.clone();
    tidings_store::layout::ensure(&*store, &store_dir.display().to_string())?;
    let (pb, pe) = keys::projection(1).range();
    let have = store.estimated_size(&pb, &pe)?;
    let started = Instant::now();
    if have < (a.gb * 1e9 * 0.5) as u64 {
        anyhow::ensure!(
            have == 0,
            "{} holds another store; pass an empty or absent --store-dir",
            store_dir.display()
        );
        let written = generate(&*store, &a)?;
        eprintln!(
            "generated {:.2} GB of keys and values in {:.0} s",
            written as f64 / 1e9,
            started.elapsed().as_secs_f64()
        );
    }
    // Let the store finish its flushes and compactions first (a reused store restarts the
    // compaction its last close cancelled): the figures are the backup's, not RocksDB's.
    let settling = Instant::now();
    eprintln!("waiting for the store's flushes and compactions to finish…");
    rocks.settle()?;
    drop(rocks);
    let mut report = Report::new("backup");
    report.context("store", store_dir.display());
    report.context(
        "store settled before timing (s)",
        format!("{:.1}", settling.elapsed().as_secs_f64()),
    );
    report.context(
        "store on disk (GB)",
        format!("{:.2}", dir_bytes(&store_dir) as f64 / 1e9),
    );
    report.context("backup readers / writers", a.threads);
    report.context("restore loaders", a.restore_threads);

    // Backup.
    let bdir = work.join("backups");
    let _ = std::fs::remove_dir_all(&bdir);
    let o = BackupOptions {
        threads: a.threads,
        ..BackupOptions::default()
    };
    let bar = progress::bar(0, "backup");
    let t = Instant::now();
    let m = backup::full(&*store, &bdir, &o, &mut |d, total| {
        bar.set_length(total);
        bar.set_position(d);
    })?;
    let backup_secs = t.elapsed().as_secs_f64();
    bar.finish_and_clear();
    drop(store);
    // The chunks hold keys without the projection prefix, each pair behind two u32 lengths:
    // count the store's own bytes of keys and values.
    let prefix = keys::projection(1).bytes().len() as u64;
    let store_bytes = m.raw_bytes + m.records * prefix - m.records * 8;
    report.context(
        "store: keys and values (GB)",
        format!("{:.2}", store_bytes as f64 / 1e9),
    );
    report.context("store: pairs", m.records);
    report.context("backup files (GB)", format!("{:.2}", m.bytes as f64 / 1e9));
    report.context("backup chunks", m.chunks.len());
    report.figure(
        "backup: MB/s of keys and values",
        store_bytes as f64 / 1e6 / backup_secs,
        "MB/s",
        Some(200.0),
    );
    report.figure(
        "backup: pairs/s",
        m.records as f64 / backup_secs,
        "pairs/s",
        None,
    );

    // Restore into an empty store.
    let rdir = work.join("restored");
    let _ = std::fs::remove_dir_all(&rdir);
    let target: Arc<dyn Store> = Arc::new(RocksStore::open(&rdir, RocksOptions::default())?);
    let mut ro = RestoreOptions::new(Projector::new(1), "tidings-fanout");
    ro.threads = a.restore_threads;
    let bar = progress::bar(0, "restore");
    let r = restore::run(target, &bdir, &ro, &mut |_, d, total| {
        bar.set_length(total);
        bar.set_position(d);
    })?;
    bar.finish_and_clear();
    report.figure(
        "restore: entries/s loaded",
        r.pairs as f64 / r.load_seconds,
        "entries/s",
        Some(1_000_000.0),
    );
    report.figure(
        "restore: MB/s loaded",
        store_bytes as f64 / 1e6 / r.load_seconds,
        "MB/s",
        None,
    );
    report.figure(
        "restore: entries/s, whole (load, counts, replay)",
        r.pairs as f64 / r.seconds,
        "entries/s",
        None,
    );
    report.context("restore: graph counts recomputed", r.counts);
    report.emit(a.json.as_deref())
}
