//! The error digest (the seed design's remote error collection): dead letters and logged
//! problems of a period, counted by reason, by producer (or module) and by time window.
//!
//! Sources: the dead letter topic, read with the group-less [`LogReader`] (headers
//! `reason-code`, `reason`, `producer`), and the role's error log ([`super::errlog`]).
//! `tidings errors` prints a digest of the last `--since`; `tidings up --errors-webhook URL`
//! POSTs one every `--errors-every-s` seconds covering the time since the last delivery
//! ([`Webhook`]), skipping empty ones. A failed delivery is logged and its period is folded
//! into the next digest, so nothing goes unreported.
//!
//! JSON shape (`kind` = `tidings.error_digest`):
//!
//! ```text
//! {"kind", "from_ms", "to_ms", "from", "to", "window_ms",
//!  "dead_letters": {"total", "by_reason": [{"key", "count", "example"}], "by_producer": [...],
//!                   "windows": [{"start_ms", "start", "count", "by_reason": {code: n}}]},
//!  "logged": {"total", "by_message": [{"key": "LEVEL target: message", "count", "example"}],
//!             "by_level": [...], "windows": [...]},
//!  "unreadable_log_lines"}
//! ```
//!
//! Non-goals: alerting rules (Prometheus has the metrics), de-duplicating across processes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use tidings_consumers::apply::TopicPartition;
use tidings_consumers::log::{partitions_of, LogReader, Next, PartitionRange};
use tidings_core::time::{format_ms, parse_duration_ms};
use tidings_producers::KafkaConfig;

use super::errlog::{self, Logged};

/// One count, with an example of what was counted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Count {
    /// What is counted (a reason code, a producer, a message).
    pub key: String,
    /// How many.
    pub count: u64,
    /// One instance's details (the first seen).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub example: Option<String>,
}

/// One time window.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Window {
    /// Its start, ms since the epoch (a multiple of the window width).
    pub start_ms: i64,
    /// The same, as a UTC time.
    pub start: String,
    /// How many in it.
    pub count: u64,
    /// By reason (dead letters) or message (logged).
    pub by_reason: BTreeMap<String, u64>,
}

/// Counts by one key, kept in first-seen order and sorted by count at the end.
#[derive(Debug, Default)]
struct Tally(BTreeMap<String, Count>);

impl Tally {
    fn add(&mut self, key: &str, example: impl FnOnce() -> Option<String>) {
        let c = self.0.entry(key.to_owned()).or_insert_with(|| Count {
            key: key.to_owned(),
            count: 0,
            example: example(),
        });
        c.count += 1;
    }

    fn sorted(self) -> Vec<Count> {
        let mut v: Vec<Count> = self.0.into_values().collect();
        v.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
        v
    }
}

fn windows(items: &[(i64, String)], width: i64) -> Vec<Window> {
    let mut w: BTreeMap<i64, Window> = BTreeMap::new();
    for (ts, reason) in items {
        let start = ts.div_euclid(width) * width;
        let e = w.entry(start).or_insert_with(|| Window {
            start_ms: start,
            start: format_ms(start),
            ..Window::default()
        });
        e.count += 1;
        *e.by_reason.entry(reason.clone()).or_default() += 1;
    }
    w.into_values().collect()
}

/// Dead letters of the period.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DeadSection {
    /// How many.
    pub total: u64,
    /// By `reason-code`, with an example `reason`.
    pub by_reason: Vec<Count>,
    /// By `producer` header (`unknown` for records that did not decode).
    pub by_producer: Vec<Count>,
    /// By time window.
    pub windows: Vec<Window>,
}

/// Logged problems of the period.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LoggedSection {
    /// How many.
    pub total: u64,
    /// By `LEVEL target: message`, with an example's fields.
    pub by_message: Vec<Count>,
    /// By level.
    pub by_level: Vec<Count>,
    /// By time window.
    pub windows: Vec<Window>,
}

/// A digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Digest {
    /// Always `tidings.error_digest`.
    pub kind: &'static str,
    /// Start of the period (inclusive), ms since the epoch.
    pub from_ms: i64,
    /// End of the period (exclusive).
    pub to_ms: i64,
    /// Start, as a UTC time.
    pub from: String,
    /// End, as a UTC time.
    pub to: String,
    /// Width of the windows.
    pub window_ms: i64,
    /// Dead letters.
    pub dead_letters: DeadSection,
    /// Logged problems.
    pub logged: LoggedSection,
    /// Lines of the error log that could not be read.
    pub unreadable_log_lines: u64,
}

/// A dead letter as read from the topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadRecord {
    /// Record timestamp (ms).
    pub ts_ms: i64,
    /// `reason-code`.
    pub code: String,
    /// `reason`.
    pub reason: String,
    /// `producer`, if the record decoded.
    pub producer: Option<String>,
}

impl Digest {
    /// Builds the digest of `[from_ms, to_ms)` from what was read.
    pub fn build(
        from_ms: i64,
        to_ms: i64,
        window_ms: i64,
        dead: &[DeadRecord],
        logged: &[Logged],
        unreadable: u64,
    ) -> Digest {
        let width = window_ms.max(1);
        let (mut reasons, mut producers) = (Tally::default(), Tally::default());
        for d in dead {
            reasons.add(&d.code, || Some(d.reason.clone()));
            producers.add(d.producer.as_deref().unwrap_or("unknown"), || None);
        }
        let dead_items: Vec<(i64, String)> =
            dead.iter().map(|d| (d.ts_ms, d.code.clone())).collect();
        let (mut messages, mut levels) = (Tally::default(), Tally::default());
        for l in logged {
            messages.add(&format!("{} {}: {}", l.level, l.target, l.message), || {
                (!l.fields.is_empty())
                    .then(|| serde_json::Value::Object(l.fields.clone()).to_string())
            });
            levels.add(&l.level, || None);
        }
        let logged_items: Vec<(i64, String)> = logged
            .iter()
            .map(|l| (l.ts_ms, l.message.clone()))
            .collect();
        Digest {
            kind: "tidings.error_digest",
            from_ms,
            to_ms,
            from: format_ms(from_ms),
            to: format_ms(to_ms),
            window_ms: width,
            dead_letters: DeadSection {
                total: dead.len() as u64,
                by_reason: reasons.sorted(),
                by_producer: producers.sorted(),
                windows: windows(&dead_items, width),
            },
            logged: LoggedSection {
                total: logged.len() as u64,
                by_message: messages.sorted(),
                by_level: levels.sorted(),
                windows: windows(&logged_items, width),
            },
            unreadable_log_lines: unreadable,
        }
    }

    /// Whether there is nothing to report.
    pub fn is_empty(&self) -> bool {
        // Unreadable log lines are news too (a corrupted log hides errors).
        self.dead_letters.total == 0 && self.logged.total == 0 && self.unreadable_log_lines == 0
    }

    /// The digest for people.
    pub fn text(&self) -> String {
        let mut out = format!(
            "error digest {} .. {} (windows of {} s)\n",
            self.from,
            self.to,
            self.window_ms / 1000
        );
        let list = |out: &mut String, title: &str, v: &[Count]| {
            out.push_str(&format!("  {title}\n"));
            for c in v {
                out.push_str(&format!("    {:>7}  {}", c.count, c.key));
                if let Some(e) = &c.example {
                    out.push_str(&format!("  e.g. {e}"));
                }
                out.push('\n');
            }
        };
        let per_window = |out: &mut String, w: &[Window]| {
            out.push_str("  per window\n");
            for w in w {
                out.push_str(&format!("    {}  {:>7}\n", w.start, w.count));
            }
        };
        out.push_str(&format!("dead letters: {}\n", self.dead_letters.total));
        if self.dead_letters.total > 0 {
            list(&mut out, "by reason", &self.dead_letters.by_reason);
            list(&mut out, "by producer", &self.dead_letters.by_producer);
            per_window(&mut out, &self.dead_letters.windows);
        }
        out.push_str(&format!(
            "logged warnings and errors: {}\n",
            self.logged.total
        ));
        if self.logged.total > 0 {
            list(&mut out, "by message", &self.logged.by_message);
            per_window(&mut out, &self.logged.windows);
        }
        if self.unreadable_log_lines > 0 {
            out.push_str(&format!(
                "({} unreadable lines in the error log were skipped)\n",
                self.unreadable_log_lines
            ));
        }
        out
    }
}

/// Reads the dead letters stamped in `[from_ms, to_ms)` of `topic`, starting at `start`
/// (per partition; 0 where absent) and ending at the high watermark seen now. Returns them
/// and where the next read starts.
pub fn read_dead_letters(
    kafka: &KafkaConfig,
    topic: &str,
    start: &BTreeMap<TopicPartition, i64>,
    reread: bool,
    from_ms: i64,
    to_ms: i64,
) -> anyhow::Result<(Vec<DeadRecord>, BTreeMap<TopicPartition, i64>)> {
    let n = partitions_of(kafka, topic).map_err(anyhow::Error::msg)?;
    let ranges: Vec<PartitionRange> = (0..n)
        .map(|p| PartitionRange {
            topic: topic.to_owned(),
            partition: p,
            start: start.get(&(topic.to_owned(), p)).copied().unwrap_or(0),
            end: None,
        })
        .collect();
    let mut reader = LogReader::open(kafka, &ranges, reread)
        .context("opening the dead letter topic")?
        .with_headers();
    let ends = reader
        .fix_ends(Duration::from_secs(30))
        .context("reading the dead letter topic's high watermarks")?;
    let mut out = Vec::new();
    loop {
        match reader.next_polled(Duration::from_millis(100)) {
            Next::Record(rec) => {
                let (r, headers) = *rec;
                let ts = r.timestamp_ms.unwrap_or(from_ms);
                if ts < from_ms || ts >= to_ms {
                    continue;
                }
                let get = |k: &str| {
                    headers
                        .iter()
                        .find(|(hk, _)| hk == k)
                        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                };
                out.push(DeadRecord {
                    ts_ms: ts,
                    code: get("reason-code").unwrap_or_else(|| "unknown".into()),
                    reason: get("reason").unwrap_or_default(),
                    producer: get("producer"),
                });
            }
            Next::Waiting => {}
            Next::End => break,
        }
    }
    Ok((out, ends))
}

/// Flags of `tidings errors`.
#[derive(Debug, clap::Args)]
pub struct ErrorsArgs {
    #[command(flatten)]
    kafka: crate::pipeline::KafkaArgs,
    /// How far back to look (e.g. 90m, 24h, 7d).
    #[arg(long, default_value = "24h", value_parser = parse_duration_ms)]
    since: i64,
    /// Width of the time windows counts are split into.
    #[arg(long, default_value = "1h", value_parser = parse_duration_ms)]
    window: i64,
    /// The data directory of the role whose error log (DATA/errors.jsonl) is read.
    #[arg(long, env = "TIDINGS_DATA", default_value = "./data")]
    data: PathBuf,
    /// Read this error log instead of DATA/errors.jsonl.
    #[arg(long, env = "TIDINGS_ERRORS_LOG")]
    errors_log: Option<PathBuf>,
    /// Print the digest as JSON.
    #[arg(long)]
    json: bool,
}

/// `tidings errors`.
pub fn run(args: ErrorsArgs) -> anyhow::Result<()> {
    let kafka = args.kafka.required()?;
    let to_ms = errlog::now_ms() + 1;
    let from_ms = to_ms - args.since;
    let (dead, _) = read_dead_letters(
        &kafka,
        &args.kafka.topics().dlq,
        &BTreeMap::new(),
        false,
        from_ms,
        to_ms,
    )?;
    let path = errlog::path_in(&args.data, args.errors_log.as_deref());
    let (logged, bad) = errlog::read(&path, from_ms, to_ms)
        .with_context(|| format!("reading the error log {}", path.display()))?;
    let d = Digest::build(from_ms, to_ms, args.window, &dead, &logged, bad);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&d)?);
    } else {
        print!("{}", d.text());
    }
    Ok(())
}

#[cfg(test)]
#[path = "digest_tests.rs"]
mod tests;
