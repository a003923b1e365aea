//! Logged problems kept for the error digest: a `tracing` layer that appends every WARN and
//! ERROR event of a long-running role to a JSON-lines file (`DATA/errors.jsonl` by default).
//!
//! One line per event:
//!
//! ```text
//! {"ts_ms":1796540000000,"level":"WARN","target":"tidings_consumers::apply",
//!  "message":"record sent to the dead letter topic","fields":{"code":"invalid","offset":4}}
//! ```
//!
//! The file is bounded: once it passes `max_bytes` it is renamed to `errors.jsonl.1`
//! (replacing the previous one) and a new file starts, so at most twice the bound is on disk.
//! [`read`] reads both, oldest first, for `tidings errors` and the webhook digest.
//!
//! Why a file of its own: the digest must see problems of the last hours even after the
//! terminal scrolled away, without a log pipeline. Non-goals: shipping logs anywhere (collect
//! stderr for that), INFO and below, and compaction (the digest groups on read).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// Default bound of one file.
pub const DEFAULT_MAX_BYTES: u64 = 16 << 20;

/// One logged problem, as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Logged {
    /// When, ms since the epoch.
    pub ts_ms: i64,
    /// `WARN` or `ERROR`.
    pub level: String,
    /// The module that logged it.
    pub target: String,
    /// The message (a fixed text; the details are in `fields`).
    pub message: String,
    /// The event's other fields.
    #[serde(default)]
    pub fields: Map<String, Value>,
}

/// The layer: WARN and ERROR events to the file at `path`.
#[derive(Debug)]
pub struct ErrorLog {
    inner: Mutex<Sink>,
}

#[derive(Debug)]
struct Sink {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    max_bytes: u64,
    /// Set after a write failed (reported once on stderr, not through tracing: no loop).
    broken: bool,
}

/// The error log a role uses: `explicit` (`--errors-log`), else `DATA/errors.jsonl`.
pub fn path_in(data: &Path, explicit: Option<&Path>) -> PathBuf {
    explicit.map_or_else(|| data.join("errors.jsonl"), Path::to_path_buf)
}

/// The rotated file beside `path`.
pub fn rotated(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".1");
    PathBuf::from(s)
}

impl ErrorLog {
    /// Appends to `path` (created with its directory), rotating past `max_bytes`.
    pub fn open(path: &Path, max_bytes: u64) -> std::io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(ErrorLog {
            inner: Mutex::new(Sink {
                path: path.to_path_buf(),
                file: Some(file),
                size,
                max_bytes: max_bytes.max(1024),
                broken: false,
            }),
        })
    }

    /// Appends one entry (the layer calls this; tests too).
    pub fn append(&self, entry: &Logged) {
        let Ok(mut line) = serde_json::to_vec(entry) else {
            return;
        };
        line.push(b'\n');
        let mut s = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(e) = s.write(&line) {
            if !s.broken {
                s.broken = true;
                eprintln!(
                    "cannot write the error log {}: {e}; logged problems are not kept for `tidings errors` (check the disk and the path)",
                    s.path.display()
                );
            }
        }
    }
}

impl Sink {
    fn write(&mut self, line: &[u8]) -> std::io::Result<()> {
        if self.size > 0 && self.size + line.len() as u64 > self.max_bytes {
            self.file = None;
            std::fs::rename(&self.path, rotated(&self.path))?;
            self.size = 0;
        }
        if self.file.is_none() {
            self.file = Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?,
            );
        }
        if let Some(f) = self.file.as_mut() {
            f.write_all(line)?;
            self.size += line.len() as u64;
        }
        self.broken = false;
        Ok(())
    }
}

/// Collects an event's fields as JSON.
#[derive(Default)]
struct Fields {
    message: String,
    rest: Map<String, Value>,
}

impl Fields {
    fn put(&mut self, field: &Field, v: Value) {
        if field.name() == "message" {
            self.message = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
        } else {
            self.rest.insert(field.name().to_owned(), v);
        }
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::String(value.to_string()));
    }
}

impl<S: Subscriber> Layer<S> for ErrorLog {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        if *meta.level() > Level::WARN {
            return;
        }
        let mut f = Fields::default();
        event.record(&mut f);
        self.append(&Logged {
            ts_ms: now_ms(),
            level: meta.level().to_string(),
            target: meta.target().to_owned(),
            message: f.message,
            fields: f.rest,
        });
    }
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    use tidings_core::clock::Clock;
    tidings_core::clock::SystemClock.now_ms()
}

/// The entries of `path` (and its rotated predecessor) stamped in `[from_ms, to_ms)`, oldest
/// first, and how many lines could not be read. A missing file is no entries.
pub fn read(path: &Path, from_ms: i64, to_ms: i64) -> std::io::Result<(Vec<Logged>, u64)> {
    let mut out = Vec::new();
    let mut bad = 0;
    for p in [rotated(path), path.to_path_buf()] {
        let file = match File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for line in BufReader::new(file).lines() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Logged>(&line) {
                Ok(l) if l.ts_ms >= from_ms && l.ts_ms < to_ms => out.push(l),
                Ok(_) => {}
                Err(_) => bad += 1,
            }
        }
    }
    Ok((out, bad))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn warn_and_error_events_become_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/errors.jsonl");
        let log = ErrorLog::open(&path, DEFAULT_MAX_BYTES).unwrap();
        let subscriber = tracing_subscriber::registry().with(log);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("not kept");
            tracing::warn!(
                code = "invalid",
                offset = 4_i64,
                ok = false,
                "record sent to the dead letter topic"
            );
            tracing::error!(error = %"disk full", "batch not applied");
            tracing::debug!("not kept either");
        });
        let (got, bad) = read(&path, 0, i64::MAX).unwrap();
        assert_eq!(bad, 0);
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].level.as_str(), got[0].message.as_str()),
            ("WARN", "record sent to the dead letter topic")
        );
        assert_eq!(got[0].target, module_path!());
        assert_eq!(
            Value::Object(got[0].fields.clone()),
            serde_json::json!({"code": "invalid", "offset": 4, "ok": false})
        );
        assert_eq!(
            (got[1].level.as_str(), got[1].message.as_str()),
            ("ERROR", "batch not applied")
        );
        assert_eq!(got[1].fields["error"], "disk full");
        assert!(got[0].ts_ms > 1_700_000_000_000 && got[0].ts_ms <= got[1].ts_ms);
        // The time range filters.
        assert!(read(&path, got[1].ts_ms + 1, i64::MAX)
            .unwrap()
            .0
            .is_empty());
    }

    #[test]
    fn the_file_rotates_past_its_bound_and_both_parts_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("errors.jsonl");
        let log = ErrorLog::open(&path, 4096).unwrap();
        let entry = |i: i64| Logged {
            ts_ms: 1_000 + i,
            level: "WARN".into(),
            target: "t".into(),
            message: format!("problem {i:04}"),
            fields: Map::new(),
        };
        for i in 0..200 {
            log.append(&entry(i));
        }
        let current = std::fs::metadata(&path).unwrap().len();
        let old = std::fs::metadata(rotated(&path)).unwrap().len();
        assert!(current <= 4096 && old <= 4096, "{current} {old}");
        let (got, bad) = read(&path, 0, i64::MAX).unwrap();
        assert_eq!(bad, 0);
        // The newest entries are kept, in order, and the last one is the last written.
        assert!(got.len() < 200 && got.len() > 80, "{}", got.len());
        let first = 200 - got.len() as i64;
        assert_eq!(got, (first..200).map(entry).collect::<Vec<_>>());
        std::fs::write(&path, "not json\n").unwrap();
        assert_eq!(read(&path, 0, i64::MAX).unwrap().1, 1);
    }
}
