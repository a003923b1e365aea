//! `tidings bench …`: benchmarks that print their figures, run on purpose (never in tests).

mod query;
mod replay;
mod report;
mod store;

use clap::Subcommand;

pub use report::Report;

/// Which benchmark.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Raw store throughput: index-entry batch writes and 20-entry page reads.
    Store(store::StoreArgs),
    /// Feed pages over loopback HTTP, page cache on and off.
    Query(query::QueryArgs),
    /// Replay read events/s and rebuild index entries/s against the live fan-out rate.
    Replay(replay::ReplayBenchArgs),
}

/// Runs a benchmark.
pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Store(args) => store::run(args),
        BenchCommand::Query(args) => query::run(args),
        BenchCommand::Replay(args) => replay::run(args),
    }
}
