//! `tidings backup`, `backups`, `archive`, `restore` and `verify`: hot backups with their
//! offsets, the log archive, restore with point-in-time recovery, and drift detection
//! (library side: `tidings_consumers::{backup, verify}`).

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use tidings_consumers::backup::restore::{self, RestoreOptions};
use tidings_consumers::backup::{self, BackupOptions, LogSource};
use tidings_consumers::rebuild::{self, RebuildConfig};
use tidings_consumers::verify::{self, VerifyOptions, VerifyReport};
use tidings_consumers::versions;
use tidings_core::keys::Projection;

use crate::pipeline::{KafkaArgs, ProjectorArgs};
use crate::rollback::StoreArgs;

/// Backups `tidings up` takes by itself: the embedded store allows one process, so
/// `tidings backup` cannot open it beside `up`.
#[derive(Debug, Clone, Args)]
pub struct ScheduleArgs {
    /// Back up the running store into this directory on a schedule (full and incremental).
    #[arg(long, env = "TIDINGS_BACKUP_DIR")]
    pub backup_dir: Option<PathBuf>,
    /// Seconds between full backups (the first one this long after start; into a directory
    /// without any backup, after one incremental interval).
    #[arg(long, default_value_t = 86_400)]
    pub backup_full_every_s: u64,
    /// Seconds between incrementals (the log since the last backup); 0: none.
    #[arg(long, default_value_t = 3_600)]
    pub backup_incremental_every_s: u64,
    /// Read at most this many MB/s while backing up.
    #[arg(long, default_value_t = 100)]
    pub backup_max_mb_per_s: u64,
}

impl ScheduleArgs {
    /// Starts the schedule on its own thread (nothing without --backup-dir); `stop` ends it.
    pub fn spawn(
        &self,
        store: std::sync::Arc<dyn tidings_store::Store>,
        src: LogSource,
        group: String,
        stop: std::sync::Arc<AtomicBool>,
    ) -> anyhow::Result<Option<std::thread::JoinHandle<()>>> {
        let Some(dir) = self.backup_dir.clone() else {
            return Ok(None);
        };
        if self.backup_full_every_s == 0 {
            bail!("--backup-full-every-s must be at least 1");
        }
        let (full_every, incr_every) = (
            std::time::Duration::from_secs(self.backup_full_every_s),
            std::time::Duration::from_secs(self.backup_incremental_every_s),
        );
        let o = BackupOptions {
            max_bytes_per_s: Some(self.backup_max_mb_per_s.max(1) * 1_000_000),
            ..BackupOptions::default()
        };
        let handle = std::thread::Builder::new()
            .name("backup".into())
            .spawn(move || {
                let (mut last_full, mut last_any) = (Instant::now(), Instant::now());
                let mut have_full = backup::list(&dir).is_ok_and(|l| !l.is_empty());
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(std::time::Duration::from_millis(200));
                    let full_due = last_full.elapsed() >= full_every || !have_full && last_any.elapsed() >= incr_every.min(full_every);
                    let incr_due = have_full && !incr_every.is_zero() && last_any.elapsed() >= incr_every;
                    if !(full_due || incr_due) {
                        continue;
                    }
                    let r = if full_due {
                        backup::full(&*store, &dir, &o, &mut |_, _| {})
                    } else {
                        backup::incremental(&*store, &dir, &src, &group, &o, &mut |_, _| {})
                    };
                    last_any = Instant::now();
                    if full_due {
                        last_full = last_any;
                    }
                    match r {
                        Ok(m) => {
                            have_full = true;
                            tracing::info!(id = %m.id, kind = ?m.kind, records = m.records, dir = %dir.display(), "scheduled backup written");
                            eprintln!("backup {} ({:?}, {} records) written to {}", m.id, m.kind, m.records, dir.display());
                        }
                        Err(e) => {
                            tracing::error!(error = %e, dir = %dir.display(), "scheduled backup failed; the next one is tried at its time");
                            eprintln!("scheduled backup into {} failed: {e}", dir.display());
                        }
                    }
                }
            })
            .context("starting the backup thread")?;
        Ok(Some(handle))
    }
}

/// Flags of `tidings backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The backup directory (created if missing; backups go to DIR/backups/ID).
    #[arg(long)]
    to: PathBuf,
    /// Only the log since the newest backup in DIR (needs --brokers).
    #[arg(long)]
    incremental: bool,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    kafka: KafkaArgs,
    /// The projection (default: the active one).
    #[arg(long)]
    version: Option<Projection>,
    /// The live consumers' group (whose offsets an incremental continues from).
    #[arg(long, env = "TIDINGS_GROUP", default_value = "tidings-fanout")]
    group: String,
    /// Read at most this many MB of keys and values per second (spare the live pipeline).
    #[arg(long, value_name = "MB")]
    max_mb_per_s: Option<u64>,
    /// MiB of keys and values per chunk file (and per read view).
    #[arg(long, default_value_t = 4)]
    chunk_mb: usize,
    /// Reader threads, and as many compressing and writing (default: twice the cores).
    #[arg(long, default_value_t = BackupOptions::default().threads)]
    threads: usize,
    /// Fetch from the start of the log and skip what is not wanted (tansu 0.6).
    #[arg(long, env = "TIDINGS_REREAD_FROM_START")]
    reread_from_start: bool,
}

/// A bar over bytes or records.
fn bar(what: &str) -> indicatif::ProgressBar {
    let b = crate::progress::bar(0, what);
    b.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix:>12} [{bar:40}] {decimal_bytes}/{decimal_total_bytes} {decimal_bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    b
}

/// `tidings backup`.
pub fn backup(args: BackupArgs) -> anyhow::Result<()> {
    if args.chunk_mb == 0 || args.chunk_mb > 64 || args.threads == 0 {
        bail!("--chunk-mb must be 1..=64 and --threads at least 1");
    }
    let store = args.store.open()?;
    let o = BackupOptions {
        projection: args.version,
        chunk_bytes: args.chunk_mb << 20,
        max_bytes_per_s: args.max_mb_per_s.map(|m| m * 1_000_000),
        threads: args.threads,
    };
    let started = Instant::now();
    let pb = bar("backup");
    let m = if args.incremental {
        let src = LogSource {
            kafka: args.kafka.required()?,
            topics: args.kafka.topics(),
            reread: args.reread_from_start,
        };
        pb.set_style(
            indicatif::ProgressStyle::with_template("{prefix:>12} [{bar:40}] {pos}/{len} records")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        backup::incremental(&*store, &args.to, &src, &args.group, &o, &mut |d, t| {
            pb.set_length(t);
            pb.set_position(d);
        })?
    } else {
        backup::full(&*store, &args.to, &o, &mut |d, t| {
            pb.set_length(t);
            pb.set_position(d);
        })?
    };
    pb.finish_and_clear();
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    println!(
        "{}",
        serde_json::json!({"id": m.id, "kind": m.kind, "parent": m.parent, "projection": m.projection,
            "records": m.records, "raw_bytes": m.raw_bytes, "bytes": m.bytes, "seconds": secs,
            "offsets": m.offsets})
    );
    eprintln!(
        "backup {} ({:?}) of projection {}: {} {}, {:.1} MB ({:.1} MB in files) in {:.1} s, {:.0} MB/s → {}",
        m.id,
        m.kind,
        m.projection,
        m.records,
        if args.incremental { "log records" } else { "pairs" },
        m.raw_bytes as f64 / 1e6,
        m.bytes as f64 / 1e6,
        secs,
        m.raw_bytes as f64 / 1e6 / secs,
        backup::Manifest::path(&args.to, &m.id).display()
    );
    Ok(())
}

/// Flags of `tidings backups`.
#[derive(Debug, Args)]
pub struct BackupsArgs {
    /// The backup directory.
    #[arg(long)]
    from: PathBuf,
}

/// `tidings backups`: lists the complete backups.
pub fn list(args: BackupsArgs) -> anyhow::Result<()> {
    for m in backup::list(&args.from)? {
        println!(
            "{:28} {:11?} projection {} finished {} {:>12} records {:>10.1} MB{}",
            m.id,
            m.kind,
            m.projection,
            tidings_core::time::format_ms(m.finished_ms),
            m.records,
            m.bytes as f64 / 1e6,
            m.parent.map(|p| format!(" after {p}")).unwrap_or_default()
        );
    }
    Ok(())
}

/// Flags of `tidings archive`.
#[derive(Debug, Args)]
pub struct ArchiveArgs {
    /// The backup directory (segments go to DIR/archive/TOPIC/PARTITION).
    #[arg(long)]
    to: PathBuf,
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Fetch from the start of the log and skip what is archived (tansu 0.6).
    #[arg(long, env = "TIDINGS_REREAD_FROM_START")]
    reread_from_start: bool,
}

/// `tidings archive`.
pub fn archive(args: ArchiveArgs) -> anyhow::Result<()> {
    let src = LogSource {
        kafka: args.kafka.required()?,
        topics: args.kafka.topics(),
        reread: args.reread_from_start,
    };
    let pb = crate::progress::bar(0, "archive");
    let r = backup::archive(&args.to, &src, &mut |d, t| {
        pb.set_length(t);
        pb.set_position(d);
    })?;
    pb.finish_and_clear();
    println!("{}", serde_json::to_string(&r)?);
    eprintln!(
        "archived {} records in {} segments ({:.1} MB) into {}",
        r.records,
        r.segments,
        r.bytes as f64 / 1e6,
        args.to.join("archive").display()
    );
    Ok(())
}

/// Flags of `tidings restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup directory.
    #[arg(long)]
    from: PathBuf,
    /// The backup to restore (an id from `tidings backups`; default: the newest).
    #[arg(long)]
    backup: Option<String>,
    /// The state as of this time (e.g. 2026-11-01T00:00Z): the newest full backup finished by
    /// then, its incrementals, the archive and the log up to it.
    #[arg(long, value_parser = tidings_core::time::parse_ms)]
    until: Option<i64>,
    /// Replace what the target store holds.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Do not replay from Kafka after the backup and archive (the live consumers will).
    #[arg(long)]
    no_kafka: bool,
    /// The live consumers' group.
    #[arg(long, env = "TIDINGS_GROUP", default_value = "tidings-fanout")]
    group: String,
    // As the live consumers' (replay applies events with them).
    #[command(flatten)]
    projector: ProjectorArgs,
    /// Config file (TOML) whose `[pipeline]` processor chain the live consumers run: its
    /// decisions shape the projection, so give the live one.
    #[arg(long, env = "TIDINGS_CONFIG")]
    config: Option<PathBuf>,
    /// Threads loading chunks.
    #[arg(long, default_value_t = std::thread::available_parallelism().map_or(2, |n| n.get()))]
    threads: usize,
    /// Fetch from the start of the log and skip what is restored (tansu 0.6).
    #[arg(long, env = "TIDINGS_REREAD_FROM_START")]
    reread_from_start: bool,
}

/// `tidings restore`.
pub fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    if args.threads == 0 {
        bail!("--threads must be at least 1");
    }
    // The projection number is the backup's; restore sets it.
    let projector = args.projector.projector(1)?;
    let store = args.store.open()?;
    let mut o = RestoreOptions::new(projector, args.group.clone());
    o.backup = args.backup.clone();
    o.until = args.until;
    o.force = args.force;
    o.threads = args.threads;
    o.chain = crate::chain::handle_from(args.config.as_deref())?;
    if !args.no_kafka {
        let kafka = args.kafka.required().context(
            "restore replays the log after the backup from Kafka; pass --brokers, or --no-kafka to stop after the backup and archive",
        )?;
        o.log = Some(LogSource {
            kafka,
            topics: args.kafka.topics(),
            reread: args.reread_from_start,
        });
    }
    let pb = bar("restore");
    let mut phase = String::new();
    let r = restore::run(store, &args.from, &o, &mut |what, done, total| {
        if what != phase {
            phase = what.to_string();
            pb.set_prefix(phase.clone());
            if what != "load" {
                pb.set_style(
                    indicatif::ProgressStyle::with_template("{prefix:>18} [{bar:40}] {pos}/{len}")
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
            }
        }
        pb.set_length(total.max(done));
        pb.set_position(done);
    })?;
    pb.finish_and_clear();
    println!("{}", serde_json::to_string(&r)?);
    eprintln!(
        "restored {} into projection {} (now active): {} pairs in {:.1} s ({:.0} pairs/s), {} counts recomputed, {} records replayed from the backup and archive, {} from Kafka; {:.1} s in all",
        r.chain.join(" + "),
        r.projection,
        r.pairs,
        r.load_seconds,
        r.pairs as f64 / r.load_seconds.max(1e-9),
        r.counts,
        r.replayed_segments,
        r.replayed_kafka,
        r.seconds
    );
    Ok(())
}

/// Flags of `tidings verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The projection checked (default: the active one).
    #[arg(long)]
    version: Option<Projection>,
    /// Compare with this projection of the same store (e.g. one `tidings rebuild` wrote).
    #[arg(long, conflicts_with_all = ["backup", "rebuild"])]
    against: Option<Projection>,
    /// Compare with the newest full backup in DIR (or --backup-id).
    #[arg(long, value_name = "DIR", conflicts_with = "rebuild")]
    backup: Option<PathBuf>,
    /// The backup to compare with.
    #[arg(long)]
    backup_id: Option<String>,
    /// Rebuild a scratch projection from the log (needs --brokers), compare, drop it.
    #[arg(long)]
    rebuild: bool,
    // With --rebuild: as the live consumers'.
    #[command(flatten)]
    projector: ProjectorArgs,
    /// Config file (TOML) whose `[pipeline]` processor chain the live consumers run: its
    /// decisions shape the projection, so give the live one.
    #[arg(long, env = "TIDINGS_CONFIG")]
    config: Option<PathBuf>,
    /// Also compare feed versions (they depend on the order events were applied in).
    #[arg(long)]
    with_fver: bool,
    /// Differing keys to print.
    #[arg(long, default_value_t = 10)]
    max_differences: usize,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    kafka: KafkaArgs,
    /// The live consumers' group.
    #[arg(long, env = "TIDINGS_GROUP", default_value = "tidings-fanout")]
    group: String,
    /// Fetch from the start of the log (tansu 0.6).
    #[arg(long, env = "TIDINGS_REREAD_FROM_START")]
    reread_from_start: bool,
}

fn print_report(what: &str, r: &VerifyReport) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(r)?);
    if r.same {
        eprintln!(
            "{what}: no difference ({} ranges, {} keys compared)",
            r.ranges, r.keys
        );
        return Ok(());
    }
    eprintln!(
        "{what}: {} of {} ranges differ; first differing keys:",
        r.differing_ranges, r.ranges
    );
    for d in &r.differences {
        eprintln!(
            "  {} {}: {} vs {}",
            d.keyspace,
            d.key,
            d.left.as_deref().unwrap_or("(absent)"),
            d.right.as_deref().unwrap_or("(absent)")
        );
    }
    bail!("verify found differences (exit status 1): investigate, then rebuild or restore the projection")
}

/// `tidings verify`.
pub fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    let store = args.store.open()?;
    let p = match args.version {
        Some(p) => p,
        None => versions::active(&*store)?,
    };
    let o = VerifyOptions {
        with_fver: args.with_fver,
        max_differences: args.max_differences,
        ..VerifyOptions::default()
    };
    if let Some(q) = args.against {
        let r = verify::projections(&*store, p, &*store, q, &o)?;
        return print_report(&format!("projection {p} vs projection {q}"), &r);
    }
    if let Some(dir) = &args.backup {
        let r = verify::against_backup(&*store, p, dir, args.backup_id.as_deref(), &o)?;
        return print_report(
            &format!("projection {p} vs backup in {}", dir.display()),
            &r,
        );
    }
    if !args.rebuild {
        bail!("say what to compare with: --against N, --backup DIR or --rebuild");
    }
    let kafka = args.kafka.required()?;
    let scratch = versions::list(&*store)?
        .iter()
        .map(|v| v.projection)
        .max()
        .unwrap_or(p)
        .max(p)
        + 1;
    let mut cfg = RebuildConfig::new(kafka, args.projector.projector(scratch)?);
    cfg.topics = args.kafka.topics();
    cfg.consumer = args.group.clone();
    cfg.reread = args.reread_from_start;
    cfg.chain = crate::chain::handle_from(args.config.as_deref())?;
    eprintln!("rebuilding scratch projection {scratch} from the log to compare with {p}…");
    let stop = AtomicBool::new(false);
    let report = rebuild::run(&cfg, store.clone(), &stop, &mut |_, _, _| {});
    let r = report
        .map_err(anyhow::Error::from)
        .and_then(|_| Ok(verify::projections(&*store, p, &*store, scratch, &o)?));
    versions::drop_version(&*store, scratch)
        .with_context(|| format!("dropping scratch projection {scratch}"))?;
    print_report(&format!("projection {p} vs a rebuild from the log"), &r?)
}
