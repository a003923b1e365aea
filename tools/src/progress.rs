//! Progress bars for long CLI work: drawn on a terminal, silent when output is piped.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tidings_consumers::apply::Stats;

/// A bar of `len` steps labelled `what`; hidden unless stderr is a terminal.
pub fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    }
    pb.set_style(
        ProgressStyle::with_template("{prefix:>12} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_prefix(what.to_owned());
    pb
}

/// Waits, with a bar labelled `what`, until the consumers behind `stats` finished `want`
/// records; an error when they make no progress for `stall`.
pub fn wait_applied(stats: &Stats, want: u64, what: &str, stall: Duration) -> anyhow::Result<()> {
    let pb = bar(want, what);
    let mut last = (stats.finished(), Instant::now());
    while stats.finished() < want {
        // Short: benchmarks time phases by when this returns.
        std::thread::sleep(Duration::from_millis(2));
        let now = stats.finished();
        pb.set_position(now);
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > stall {
            pb.abandon();
            anyhow::bail!(
                "{what}: the consumers stopped making progress at {now} of {want} records for {} s; \
                 run with --log tidings=debug to see why",
                stall.as_secs()
            );
        }
    }
    pb.finish_and_clear();
    Ok(())
}
