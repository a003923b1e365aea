//! Where log events go: stderr through the `--log` filter and, for long-running roles, WARN and
//! ERROR to the error log as well (whatever `--log` says).
//!
//! One filter decides for the whole subscriber, per callsite (target and level), what either
//! output wants; each output then drops what it does not want itself (stderr by formatting
//! nothing, the error log by level). No per-layer filter: with one, a question the `log` crate
//! asks ("is this level enabled?" — librdkafka's client asks it as it polls) leaves a mark that
//! swallows the thread's next event (tokio-rs/tracing#2519): debug lines went missing under a
//! per-target `--log`, and a warning could have missed the error log.

use std::sync::Arc;

use tracing::level_filters::LevelFilter;
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

use crate::ops::errlog::ErrorLog;

/// Parses a `--log` filter: a default level and/or `target=level` directives, comma-separated
/// (`warn`, `tidings_consumers=debug`, `info,rdkafka=warn`).
pub fn parse_filter(s: &str) -> anyhow::Result<Targets> {
    s.parse::<Targets>().map_err(|e| {
        anyhow::anyhow!(
            "invalid --log filter {s:?}: {e} (expected a level or comma-separated target=level \
             directives, e.g. `info` or `warn,tidings_consumers=debug`)"
        )
    })
}

/// The subscriber: `stderr` (made by `make_stderr`) gets what `filter` enables, `errors` every
/// WARN and ERROR.
pub fn subscriber<W>(
    filter: Targets,
    errors: Option<ErrorLog>,
    make_stderr: W,
) -> impl Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let stderr = Arc::new(filter);
    let wanted = Wanted {
        stderr: stderr.clone(),
        errors: errors.is_some(),
    };
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(make_stderr)
        .event_format(Asked {
            inner: tracing_subscriber::fmt::format(),
            stderr,
        });
    tracing_subscriber::registry()
        .with(wanted)
        .with(fmt)
        .with(errors)
}

/// Formats only the events `--log` asked for; the rest (warnings the error log wanted) come
/// out empty. Judged by the normalized metadata: an event from the `log` crate arrives through
/// tracing-log's callsite of its level, whose target is `log`, not the record's.
struct Asked<F> {
    inner: F,
    stderr: Arc<Targets>,
}

impl<S, N, F> FormatEvent<S, N> for Asked<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let normalized = event.normalized_metadata();
        let m = normalized.as_ref().unwrap_or_else(|| event.metadata());
        if self.stderr.would_enable(m.target(), m.level()) {
            self.inner.format_event(ctx, writer, event)
        } else {
            Ok(())
        }
    }
}

/// The subscriber-wide filter: an event either output wants.
struct Wanted {
    stderr: Arc<Targets>,
    /// The error log is on: WARN and ERROR of every target.
    errors: bool,
}

impl Wanted {
    fn wants(&self, m: &Metadata<'_>) -> bool {
        (self.errors && *m.level() <= Level::WARN)
            || self.stderr.would_enable(m.target(), m.level())
    }
}

impl<S: Subscriber> Layer<S> for Wanted {
    fn register_callsite(&self, m: &'static Metadata<'static>) -> Interest {
        if self.wants(m) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, m: &Metadata<'_>, _: Context<'_, S>) -> bool {
        self.wants(m)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        let stderr = self
            .stderr
            .iter()
            .map(|(_, level)| level)
            .chain(self.stderr.default_level())
            .max()
            .unwrap_or(LevelFilter::OFF);
        Some(if self.errors {
            stderr.max(LevelFilter::WARN)
        } else {
            stderr
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Everything written to "stderr", shared with the test.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }

        /// Runs `f` under the subscriber of `filter` and `errors`, stderr captured here.
        fn run(&self, filter: &str, errors: Option<ErrorLog>, f: impl FnOnce()) {
            let w = self.clone();
            let sub = subscriber(parse_filter(filter).unwrap(), errors, move || w.clone());
            tracing::subscriber::with_default(sub, f);
        }
    }

    /// Routes the `log` crate into tracing, as `init` does in `main`.
    fn log_bridge() {
        // Another test may have installed it already (one logger per process).
        let _ = tracing_log::LogTracer::init();
    }

    #[test]
    fn a_log_level_query_does_not_swallow_the_next_event() {
        log_bridge();
        let out = Captured::default();
        out.run("warn,tidings=debug", None, || {
            tracing::debug!(target: "tidings::a", "first");
            // What librdkafka's client asks as it polls.
            let asked = log::Metadata::builder()
                .level(log::Level::Debug)
                .target("librdkafka")
                .build();
            assert!(!log::logger().enabled(&asked));
            tracing::debug!(target: "tidings::a", "second");
            tracing::debug!(target: "elsewhere", "not asked for");
            log::warn!(target: "rdkafka::client", "from the log crate");
        });
        let text = out.text();
        for want in ["first", "second", "from the log crate"] {
            assert!(text.contains(want), "{want:?} missing from:\n{text}");
        }
        assert!(!text.contains("not asked for"), "{text}");
    }

    #[test]
    fn log_crate_events_are_judged_by_their_own_target() {
        log_bridge();
        let out = Captured::default();
        out.run("warn,rdkafka=debug,quiet=error", None, || {
            log::debug!(target: "rdkafka::client", "asked for by target");
            log::warn!(target: "quiet::x", "below its target's level");
            log::info!(target: "elsewhere", "below the default");
        });
        let text = out.text();
        assert!(text.contains("asked for by target"), "{text}");
        assert!(!text.contains("below its target's level"), "{text}");
        assert!(!text.contains("below the default"), "{text}");
    }

    #[test]
    fn warnings_reach_the_error_log_whatever_the_filter() {
        log_bridge();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("errors.jsonl");
        let errors = ErrorLog::open(&path, crate::ops::errlog::DEFAULT_MAX_BYTES).unwrap();
        let out = Captured::default();
        out.run("tidings=info", Some(errors), || {
            tracing::info!(target: "tidings::a", "shown");
            tracing::warn!(target: "elsewhere", "filtered from stderr");
            tracing::info!(target: "elsewhere", "nowhere");
            log::warn!(target: "rdkafka::client", "a log-crate warning");
        });
        let text = out.text();
        assert!(text.contains("shown"), "{text}");
        assert!(!text.contains("filtered from stderr"), "{text}");
        assert!(!text.contains("a log-crate warning"), "{text}");
        let (logged, bad) = crate::ops::errlog::read(&path, 0, i64::MAX).unwrap();
        assert_eq!(bad, 0);
        let messages: Vec<&str> = logged.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(messages, ["filtered from stderr", "a log-crate warning"]);
    }

    #[test]
    fn bad_filters_say_what_was_expected() {
        let e = parse_filter("tidings=loud").unwrap_err().to_string();
        assert!(e.contains("expected a level"), "{e}");
        assert!(parse_filter("info,rdkafka=warn").is_ok());
    }
}
