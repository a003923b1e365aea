//! `tidings rebuild`, `switch`, `drop`, `versions`, `digest` and `migrate topic`: rollback and
//! migration from the log (DESIGN.md, "Replay, rollback, migration, backup").
//!
//! The embedded store allows one process: run these against `--data DIR` while no `tidings
//! up`/`consume` holds it, or against a shared store (`--store fdb:…`) at any time. The library
//! side (`tidings_consumers::{rebuild, versions, digest, migrate}`) is what the tests drive
//! in-process beside live consumers and readers.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use tidings_consumers::digest;
use tidings_consumers::migrate::{self, MigrateConfig};
use tidings_consumers::rebuild::{self, Filter, RebuildConfig, Until};
use tidings_consumers::versions;
use tidings_core::keys::Projection;
use tidings_store::Store;

use crate::pipeline::{KafkaArgs, ProjectorArgs};

/// Which store.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Data directory of the embedded store (DATA/store), as `tidings up --data`.
    #[arg(long, env = "TIDINGS_DATA", default_value = "./data")]
    pub data: PathBuf,
    /// A store URL instead (`rocksdb:PATH`, `fdb:CLUSTER_FILE`); overrides --data.
    #[arg(long, env = "TIDINGS_STORE")]
    pub store: Option<String>,
}

impl StoreArgs {
    /// Opens the store (checking its key layout).
    pub fn open(&self) -> anyhow::Result<Arc<dyn Store>> {
        match &self.store {
            Some(url) => {
                let s =
                    tidings_store::open(url).with_context(|| format!("opening the store {url}"))?;
                tidings_store::layout::ensure(&*s, url)?;
                Ok(s)
            }
            None => crate::pipeline::open_store(&self.data),
        }
    }
}

/// Flags of `tidings rebuild`.
#[derive(Debug, Args)]
pub struct RebuildArgs {
    /// The projection version to build (not the active one).
    #[arg(long)]
    version: Projection,
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    store: StoreArgs,
    /// Stop at a point: a time (each partition stops before its first record stamped later,
    /// e.g. 2026-11-01T00:00Z) or offsets `TOPIC:PARTITION=OFFSET[,…]` (exclusive).
    #[arg(long, value_name = "TIME|OFFSETS")]
    until: Option<Until>,
    /// Leave out events matching KEY=VALUE[,…] (keys: producer, actor, verb), e.g.
    /// `producer=svc-x@1.4.2`. Repeatable (an event matching any is left out).
    #[arg(long, value_name = "FILTER")]
    skip: Vec<Filter>,
    /// After catching up, keep applying new records until this version is switched to.
    #[arg(long)]
    follow: bool,
    /// Catch up a version whose rebuild already finished (same --until/--skip).
    #[arg(long)]
    resume: bool,
    /// The live consumers' group: offsets are stored under it so they continue after a switch.
    #[arg(long, env = "TIDINGS_GROUP", default_value = "tidings-fanout")]
    group: String,
    // As the live consumers' (other values build a different projection).
    #[command(flatten)]
    projector: ProjectorArgs,
    /// Config file (TOML) whose `[pipeline]` processor chain the live consumers run: its
    /// decisions shape the projection, so give the live one.
    #[arg(long, env = "TIDINGS_CONFIG")]
    config: Option<PathBuf>,
    /// Most records per store batch (bulk mode; batches usually end at --batch-mb first).
    #[arg(long, default_value_t = 250_000)]
    batch_records: usize,
    /// Store batch size in MiB (bulk mode). RocksDB writes each batch as one table file (up to
    /// 512), and twice this once compaction is behind (10 files in L0); on FoundationDB
    /// batches stay under its 10 MB transaction limit whatever is asked.
    #[arg(long, default_value_t = 64)]
    batch_mb: usize,
    /// Fetch from the start of the log and skip what is stored (needed with tansu 0.6).
    #[arg(long, env = "TIDINGS_REREAD_FROM_START")]
    reread_from_start: bool,
    /// Print a JSON progress line to stdout at this interval (ms).
    #[arg(long)]
    progress_ms: Option<u64>,
}

/// `tidings rebuild`.
pub fn rebuild(args: RebuildArgs) -> anyhow::Result<()> {
    if args.batch_records == 0 || args.batch_mb == 0 {
        bail!("--batch-records and --batch-mb must be at least 1");
    }
    if args.batch_mb > tidings_store::limits::MAX_BULK_BATCH >> 20 {
        bail!(
            "--batch-mb must be at most {} (the largest table file a bulk batch becomes)",
            tidings_store::limits::MAX_BULK_BATCH >> 20
        );
    }
    if args.follow && args.until.is_some() {
        bail!("--follow and --until exclude each other: a rebuild as of a point stops there");
    }
    let kafka = args.kafka.required()?;
    let store = args.store.open()?;
    let projector = args.projector.projector(args.version)?;
    let mut cfg = RebuildConfig::new(kafka, projector);
    cfg.topics = args.kafka.topics();
    cfg.consumer = args.group.clone();
    cfg.until = args.until.clone();
    cfg.skip = args.skip.clone();
    cfg.follow = args.follow;
    cfg.batch_records = args.batch_records;
    cfg.batch_bytes = args.batch_mb << 20;
    cfg.reread = args.reread_from_start;
    cfg.resume_finished = args.resume;
    cfg.chain = crate::chain::handle_from(args.config.as_deref())?;
    let stop = crate::pipeline::ctrl_c_flag()?;
    let bar = crate::progress::bar(0, "rebuild");
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix:>12} {spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.set_prefix("rebuild");
    let started = Instant::now();
    let mut last_line = Instant::now();
    let every = args.progress_ms.map(Duration::from_millis);
    let report = rebuild::run(&cfg, store.clone(), &stop, &mut |s, records, caught_up| {
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        let events = s.events.load(Ordering::Relaxed);
        let entries = s.entries.load(Ordering::Relaxed);
        bar.set_message(format!(
            "{records} records, {events} events, {entries} entries, {:.0} events/s, {:.0} entries/s{}",
            events as f64 / secs,
            entries as f64 / secs,
            if caught_up { ", caught up (following)" } else { "" }
        ));
        bar.tick();
        if every.is_some_and(|e| last_line.elapsed() >= e) {
            last_line = Instant::now();
            println!(
                "{}",
                serde_json::json!({"records": records, "events": events, "entries": entries,
                    "batches": s.batches.load(Ordering::Relaxed), "caught_up": caught_up})
            );
        }
    })?;
    bar.finish_and_clear();
    println!("{}", serde_json::to_string(&report)?);
    eprintln!(
        "projection {}: {} events, {} index entries, {} skipped, {} dead letters in {:.1} s ({:.0} events/s, {:.0} entries/s; {:.1} s of it the store's merge of the rebuilt files){}",
        report.projection,
        report.events,
        report.entries,
        report.skipped,
        report.dead,
        report.seconds,
        report.events as f64 / report.seconds.max(1e-9),
        report.entries as f64 / report.seconds.max(1e-9),
        report.merge_seconds,
        if report.caught_up {
            format!("; caught up — `tidings switch {}` makes it live", report.projection)
        } else {
            "; stopped before catching up — rerun to resume".into()
        }
    );
    Ok(())
}

/// Flags of `tidings switch`.
#[derive(Debug, Args)]
pub struct SwitchArgs {
    /// The projection to make active.
    version: Projection,
    #[command(flatten)]
    store: StoreArgs,
    /// Switch even to a projection still being rebuilt or empty.
    #[arg(long)]
    force: bool,
}

/// `tidings switch N`.
pub fn switch(args: SwitchArgs) -> anyhow::Result<()> {
    let store = args.store.open()?;
    let from = versions::switch(&*store, args.version, args.force)?;
    if from == args.version {
        println!("projection {from} is already active");
    } else {
        println!(
            "active projection: {from} → {} (rollback: `tidings switch {from}`; free the old one with `tidings drop {from}`)",
            args.version
        );
    }
    Ok(())
}

/// Flags of `tidings drop`.
#[derive(Debug, Args)]
pub struct DropArgs {
    /// The projection to remove (never the active one).
    version: Projection,
    #[command(flatten)]
    store: StoreArgs,
}

/// `tidings drop N`.
pub fn drop_version(args: DropArgs) -> anyhow::Result<()> {
    let store = args.store.open()?;
    versions::drop_version(&*store, args.version)?;
    println!("projection {} dropped", args.version);
    Ok(())
}

/// Flags of `tidings versions`.
#[derive(Debug, Args)]
pub struct VersionsArgs {
    #[command(flatten)]
    store: StoreArgs,
}

/// `tidings versions`.
pub fn list(args: VersionsArgs) -> anyhow::Result<()> {
    let store = args.store.open()?;
    for v in versions::list(&*store)? {
        println!(
            "{:>6} {:8} {:10} ~{} bytes",
            v.projection,
            if v.active { "active" } else { "" },
            if v.building { "building" } else { "" },
            v.bytes
        );
    }
    Ok(())
}

/// Flags of `tidings digest`.
#[derive(Debug, Args)]
pub struct DigestArgs {
    /// The projection (default: the active one).
    #[arg(long)]
    version: Option<Projection>,
    #[command(flatten)]
    store: StoreArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// `tidings digest`.
pub fn digest(args: DigestArgs) -> anyhow::Result<()> {
    let store = args.store.open()?;
    let p = match args.version {
        Some(p) => p,
        None => versions::active(&*store)?,
    };
    let d = digest::digest(&*store, p)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&d)?);
        return Ok(());
    }
    println!("projection {p}");
    println!("| keyspace | keys | bytes | sha256 |");
    println!("|---|---:|---:|---|");
    for k in &d.keyspaces {
        println!("| {} | {} | {} | {} |", k.name, k.keys, k.bytes, k.sha256);
    }
    println!(
        "state (every keyspace but `off`, the consumers' named offsets): {}",
        d.state
    );
    println!(
        "content (also without `fver`, the feed change counters: what readers see): {}",
        d.content
    );
    Ok(())
}

/// `tidings migrate …`
#[derive(Debug, Subcommand)]
pub enum MigrateCommand {
    /// Copies a topic into a new one with P partitions, per-key order kept (resumable).
    Topic(MigrateTopicArgs),
}

/// Flags of `tidings migrate topic`.
#[derive(Debug, Args)]
pub struct MigrateTopicArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Source topic.
    #[arg(long)]
    from: String,
    /// Destination topic (created with --partitions if missing).
    #[arg(long)]
    to: String,
    /// Partitions of the destination.
    #[arg(long)]
    partitions: i32,
    /// Progress file for resuming (default: ./migrate-FROM-TO.json).
    #[arg(long)]
    state: Option<PathBuf>,
    /// Records per checkpoint.
    #[arg(long, default_value_t = 10_000)]
    checkpoint_every: usize,
    /// Fetch from the start of the log and skip what is copied (tansu 0.6).
    #[arg(long, env = "TIDINGS_REREAD_FROM_START")]
    reread_from_start: bool,
    /// Print a JSON progress line per checkpoint to stdout.
    #[arg(long)]
    progress: bool,
}

/// `tidings migrate`.
pub fn migrate(cmd: MigrateCommand) -> anyhow::Result<()> {
    let MigrateCommand::Topic(args) = cmd;
    let kafka = args.kafka.required()?;
    let cfg = MigrateConfig {
        kafka,
        state: args
            .state
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("migrate-{}-{}.json", args.from, args.to))),
        from: args.from.clone(),
        to: args.to.clone(),
        partitions: args.partitions,
        checkpoint_every: args.checkpoint_every.max(1),
        reread: args.reread_from_start,
    };
    let stop = crate::pipeline::ctrl_c_flag()?;
    let bar = crate::progress::bar(0, "migrate");
    let report = migrate::run(&cfg, &stop, &mut |copied, total| {
        bar.set_length(total);
        bar.set_position(copied);
        if args.progress {
            println!("{}", serde_json::json!({"copied": copied, "total": total}));
        }
    })
    .map_err(anyhow::Error::msg)?;
    bar.finish_and_clear();
    println!("{}", serde_json::to_string(&report)?);
    if report.complete {
        eprintln!(
            "migrated {} → {} ({} partitions): {} records, count check passed ({} = {})",
            cfg.from,
            cfg.to,
            cfg.partitions,
            report.dest_records,
            report.dest_records,
            report.source_records
        );
    } else {
        eprintln!("stopped; rerun the same command to resume");
    }
    Ok(())
}
