//! `tidings bench …`: benchmarks that print their figures, run on purpose (never in tests).

mod backup;
mod pipeline;
mod query;
mod replay;
mod report;
mod store;

use clap::{Args, Subcommand};

pub use report::Report;

/// `tidings bench`: the pipeline benchmark, or one part with a subcommand.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: Option<BenchCommand>,
    #[command(flatten)]
    pipeline: pipeline::PipelineArgs,
}

/// Which benchmark.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Raw store throughput: index-entry batch writes and 20-entry page reads.
    Store(store::StoreArgs),
    /// Feed pages over loopback HTTP, page cache on and off.
    Query(query::QueryArgs),
    /// Replay read events/s and rebuild index entries/s against the live fan-out rate.
    Replay(replay::ReplayBenchArgs),
    /// Full backup MB/s and restore entries/s on a generated store (default ≥ 2 GB).
    Backup(backup::BackupBenchArgs),
}

impl BenchArgs {
    /// Whether it measures a long-running role (the pipeline bench: `up`'s roles and their
    /// peak memory; `bench query`: the query service), which runs with that role's memory
    /// settings (see `memory`).
    pub fn measures_a_role(&self) -> bool {
        matches!(self.command, None | Some(BenchCommand::Query(_)))
    }
}

/// Runs a benchmark.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.command {
        None => pipeline::run(args.pipeline),
        Some(BenchCommand::Store(args)) => store::run(args),
        Some(BenchCommand::Query(args)) => query::run(args),
        Some(BenchCommand::Replay(args)) => replay::run(args),
        Some(BenchCommand::Backup(args)) => backup::run(args),
    }
}
