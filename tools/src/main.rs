//! `tidings`: every subcommand of the activity-feed pipeline.
//!
//! `main` parses flags, sets up logging and calls into the libraries; the subcommands live in
//! their own modules. Run `tidings --help` for the list.

mod admin_pipeline;
mod backup;
mod bench;
mod chain;
#[cfg(test)]
mod compose_tests;
mod config;
mod demo;
mod logging;
mod memory;
mod ops;
mod pipeline;
mod pipeline_test;
mod progress;
mod replay;
mod rollback;
mod workload;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc malloc: a page read allocates many small short-lived buffers
/// (keys, values, decoded entries, JSON). Measured with `tidings bench query --cache off` on an
/// otherwise idle machine: 2,341 pages/s with glibc, 3,817 with mimalloc, same code.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// tidings: an event-sourced activity-feed pipeline (Kafka → fan-out → FoundationDB-shaped store).
#[derive(Debug, Parser)]
#[command(name = "tidings", version, about, long_about = None)]
struct Cli {
    /// Log filter: a level and/or comma-separated `target=level` directives, e.g. `info` or
    /// `warn,tidings_consumers=debug`.
    #[arg(long, env = "TIDINGS_LOG", default_value = "warn", global = true)]
    log: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the whole pipeline in one process: local broker (unless --brokers), ingest
    /// gateway, consumers and query API on the embedded store.
    Up(pipeline::UpArgs),
    /// Runs the consumers alone against --brokers, on the embedded store or --store URL
    /// (with --listen: /metrics, /health, /ready and the admin API).
    Consume(pipeline::ConsumeCmd),
    /// Runs the query service alone over a store URL (e.g. `fdb:` beside `tidings consume`
    /// processes; the embedded store allows one process, so use `up` for it).
    Serve(pipeline::ServeArgs),
    /// Runs the HTTP ingest gateway alone against --brokers.
    Ingest(pipeline::IngestArgs),
    /// Summarises dead letters and logged errors by reason, producer and time window.
    Errors(ops::digest::ErrorsArgs),
    /// Manages tidings' Kafka topics.
    #[command(subcommand)]
    Topics(pipeline::TopicsCommand),
    /// The processor chain: `tidings pipeline test --config F --events FILE.jsonl` dry-runs it
    /// over recorded events.
    #[command(subcommand)]
    Pipeline(pipeline_test::PipelineCommand),
    /// Runs the whole pipeline in one process (local broker, ingest, consumers, query) on a
    /// seeded social workload and prints a report.
    Demo(demo::DemoArgs),
    /// Measures the whole pipeline (ingest, fan-out, publish→visible latency, feed reads,
    /// celebrity post, peak memory) and prints a table (and JSON with --json); `store` and
    /// `query`, `replay` measure one part.
    Bench(bench::BenchArgs),
    /// Reads a topic range (offsets, times, user, verb, producer) as JSON lines or --stats,
    /// without a consumer group.
    Replay(replay::ReplayArgs),
    /// Builds projection N from the log while the live one serves (--until, --skip, --follow).
    Rebuild(rollback::RebuildArgs),
    /// Makes projection N the active one, atomically (rollback: switch back).
    Switch(rollback::SwitchArgs),
    /// Removes projection N (never the active one).
    Drop(rollback::DropArgs),
    /// Lists the projections in the store.
    Versions(rollback::VersionsArgs),
    /// Prints a digest per keyspace of projection N.
    Digest(rollback::DigestArgs),
    /// Copies a topic into a new one with more partitions.
    #[command(subcommand)]
    Migrate(rollback::MigrateCommand),
    /// Backs up the active projection with its offsets while everything runs (--incremental:
    /// the log since the previous backup).
    Backup(backup::BackupArgs),
    /// Lists the backups in a backup directory.
    Backups(backup::BackupsArgs),
    /// Copies the input topics' records not yet archived into a backup directory.
    Archive(backup::ArchiveArgs),
    /// Restores a backup into an empty store and replays the log after it (--until TIME).
    Restore(backup::RestoreArgs),
    /// Compares the active projection with another, a rebuild from the log or a backup, and
    /// prints the first differing keys (exit status 1 when they differ).
    Verify(backup::VerifyArgs),
}

impl Command {
    /// Whether glibc's heap keeps what it freed ([`memory::keep_c_heap`]): for the commands
    /// that run to completion (a replay, a rebuild, a migration, a restore: the bulk log
    /// readers) but not for the long-running roles, whose memory stays resident, nor the
    /// benches that measure them.
    fn keeps_c_heap(&self) -> bool {
        match self {
            Command::Up(_) | Command::Consume(_) | Command::Serve(_) | Command::Ingest(_) => false,
            Command::Bench(b) => !b.measures_a_role(),
            _ => true,
        }
    }

    /// Where a long-running role keeps its WARN and ERROR logs (see `ops::errlog`).
    fn errors_log(&self) -> Option<std::path::PathBuf> {
        match self {
            Command::Up(a) => Some(a.errors_log()),
            Command::Consume(a) => Some(a.errors_log()),
            Command::Serve(a) => a.ops.errors_log.clone(),
            Command::Ingest(a) => a.ops.errors_log.clone(),
            _ => None,
        }
    }
}

/// Logs to stderr through the `--log` filter and, for long-running roles, WARN and ERROR to
/// the error log as well (whatever `--log` says); see [`logging`].
fn init_logging(cli: &Cli) -> anyhow::Result<()> {
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = logging::parse_filter(&cli.log)?;
    let errors = match cli.command.errors_log() {
        Some(path) => Some(
            ops::errlog::ErrorLog::open(&path, ops::errlog::DEFAULT_MAX_BYTES).map_err(|e| {
                anyhow::anyhow!(
                    "cannot open the error log {}: {e} (check the directory, or set --errors-log)",
                    path.display()
                )
            })?,
        ),
        None => None,
    };
    logging::subscriber(filter, errors, std::io::stderr).init();
    Ok(())
}

fn main() -> anyhow::Result<()> {
    // First, before the work allocates: see `memory`.
    let pages = memory::apply(std::env::var_os(memory::MIMALLOC_ALLOW_THP));
    let cli = Cli::parse();
    let c_heap = cli
        .command
        .keeps_c_heap()
        .then(|| memory::keep_c_heap(|name| std::env::var(name).ok()));
    init_logging(&cli)?;
    tracing::debug!(?pages, ?c_heap, "memory settings");
    match cli.command {
        Command::Up(args) => pipeline::up(args),
        Command::Consume(args) => pipeline::consume(args),
        Command::Serve(args) => pipeline::serve(args),
        Command::Ingest(args) => pipeline::ingest(args),
        Command::Errors(args) => ops::digest::run(args),
        Command::Topics(cmd) => pipeline::topics(cmd),
        Command::Pipeline(cmd) => pipeline_test::run(cmd),
        Command::Demo(args) => demo::run(args),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Replay(args) => replay::run(args),
        Command::Rebuild(args) => rollback::rebuild(args),
        Command::Switch(args) => rollback::switch(args),
        Command::Drop(args) => rollback::drop_version(args),
        Command::Versions(args) => rollback::list(args),
        Command::Digest(args) => rollback::digest(args),
        Command::Migrate(cmd) => rollback::migrate(cmd),
        Command::Backup(args) => backup::backup(args),
        Command::Backups(args) => backup::list(args),
        Command::Archive(args) => backup::archive(args),
        Command::Restore(args) => backup::restore(args),
        Command::Verify(args) => backup::verify(args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keeps(args: &[&str]) -> bool {
        let cli = Cli::try_parse_from(std::iter::once("tidings").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        cli.command.keeps_c_heap()
    }

    #[test]
    fn batch_commands_keep_glibcs_heap_and_long_running_roles_do_not() {
        for batch in [
            &["replay"][..],
            &["rebuild", "--version", "2"],
            &["bench", "replay"],
            &["bench", "backup"],
        ] {
            assert!(keeps(batch), "{batch:?}");
        }
        for role in [
            &["up"][..],
            &["consume"],
            &["serve", "--store", "rocksdb:/tmp/x"],
            &["ingest"],
            &["bench"],
            &["bench", "query"],
        ] {
            assert!(!keeps(role), "{role:?}");
        }
    }
}
