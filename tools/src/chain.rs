//! Hot reload of the processor chain: the config file watcher of `tidings up` and `tidings
//! consume`, and the reload hook the admin API calls ([`Reloader::reload_from_toml`]).
//!
//! The consumers hold the chain in a [`ChainHandle`] and take it once per batch, so a swap
//! lands between batches and loses or doubles nothing (`tidings_consumers::chain`). A new file
//! is parsed and built completely first (the whole config file, `deny_unknown_fields`, every
//! processor checked and every expression compiled); only then is it swapped in. A file that
//! fails is refused as a whole: the error is logged with what to fix, counted in
//! `tidings_pipeline_reload_failures_total`, and the old chain keeps running. Successful
//! reloads count in `tidings_pipeline_reloads_total`; the chain's version is the gauge
//! `tidings_pipeline_chain_version`.
//!
//! The watcher polls a hash of the file's contents (every ~1 s by default): no inotify
//! dependency, and it works the same on every file system and for editors that replace the
//! file. A change is loaded once two polls in a row read the same new contents, so a file
//! caught mid-write (truncated by a plain write, not yet filled) is not loaded.
//!
//! Non-goals: reloading `[query]` (the query service reads it at start).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tidings_consumers::chain::ChainHandle;
use tidings_core::process::Chain;

use crate::config::Config;

/// Creates side-output topics a new chain names (the local broker creates no topic by itself).
pub type EnsureTopics = Arc<dyn Fn(&[String]) -> Result<(), String> + Send + Sync>;

/// What a successful reload installed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ReloadSummary {
    /// The chain's version now (1 is the one started with).
    pub version: u64,
    /// `(id, kind)` of each processor, in order.
    pub processors: Vec<(String, String)>,
    /// The topics its side outputs go to.
    pub side_topics: Vec<String>,
}

/// Swaps the consumers' chain from config text.
#[derive(Clone)]
pub struct Reloader {
    handle: ChainHandle,
    ensure_topics: Option<EnsureTopics>,
    failures: Arc<AtomicU64>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
}

impl Reloader {
    /// A reloader of `handle`; `ensure_topics` (if any) creates the side-output topics of a
    /// new chain before it is swapped in.
    pub fn new(handle: ChainHandle, ensure_topics: Option<EnsureTopics>) -> Self {
        Reloader {
            handle,
            ensure_topics,
            failures: Arc::default(),
        }
    }

    /// Reloads refused so far (by this reloader and its clones; also the metric).
    #[cfg(test)]
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::SeqCst)
    }

    /// Parses `text` as a whole config file, builds its `[pipeline]` chain and swaps it in. On
    /// an error nothing changes (the old chain keeps running); the error says what to fix.
    pub fn reload_from_toml(&self, text: &str) -> Result<ReloadSummary, String> {
        let built = Config::parse(text)
            .and_then(|c| c.build_chain())
            .map_err(|e| format!("{e:#}"));
        let chain = match built {
            Ok(c) => c,
            Err(e) => return Err(self.failed(e)),
        };
        if let Some(ensure) = &self.ensure_topics {
            if let Err(e) = ensure(&chain.topics()) {
                return Err(self.failed(format!(
                    "creating the chain's side-output topics {:?}: {e}",
                    chain.topics()
                )));
            }
        }
        let processors = chain.summary();
        let side_topics = chain.topics();
        let version = self.handle.swap(Arc::new(chain));
        metrics::counter!("tidings_pipeline_reloads_total").increment(1);
        tracing::warn!(
            version,
            processors = ?processors,
            "processor chain reloaded; it applies from the next batch"
        );
        Ok(ReloadSummary {
            version,
            processors,
            side_topics,
        })
    }

    fn failed(&self, e: String) -> String {
        self.failures.fetch_add(1, Ordering::SeqCst);
        metrics::counter!("tidings_pipeline_reload_failures_total").increment(1);
        tracing::error!(
            error = %e,
            "processor chain NOT reloaded; the running chain stays; fix the config and save it again"
        );
        e
    }

    /// Reads `path` and reloads from it.
    pub fn reload_from_file(&self, path: &Path) -> Result<ReloadSummary, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => self.reload_from_toml(&text),
            Err(e) => Err(self.failed(format!("reading {}: {e}", path.display()))),
        }
    }

    /// Watches `path` on its own thread, reloading when its contents differ from `loaded` (the
    /// [`stamp`] taken before the running chain was read from it, so an edit in between is not
    /// missed), until `stop` is set.
    pub fn watch(
        self,
        path: PathBuf,
        loaded: Stamp,
        every: Duration,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("config-watch".into())
            .spawn(move || {
                let mut settle = Settle::new(loaded);
                while !stop.load(Ordering::SeqCst) {
                    std::thread::sleep(every);
                    if settle.observe(stamp(&path)) {
                        tracing::info!(path = %path.display(), "config file changed; reloading the processor chain");
                        let _ = self.reload_from_file(&path);
                    }
                }
            })
    }
}

/// When a polled file has changed for good: its new contents read the same twice in a row.
/// A plain write truncates the file, then fills it; a poll in between reads an empty or
/// partial file, which must not be loaded (an empty file is a valid, empty chain).
#[derive(Debug)]
struct Settle {
    /// The contents last loaded (or found at start).
    seen: Stamp,
    /// New contents read once, waiting for a second read.
    pending: Option<Stamp>,
}

impl Settle {
    fn new(loaded: Stamp) -> Settle {
        Settle {
            seen: loaded,
            pending: None,
        }
    }

    /// Takes one poll's stamp; true when the file should be loaded now.
    fn observe(&mut self, now: Stamp) -> bool {
        if now == self.seen {
            self.pending = None;
            return false;
        }
        if self.pending == Some(now) {
            self.seen = now;
            self.pending = None;
            return true;
        }
        self.pending = Some(now);
        false
    }
}

/// What tells a file changed: a hash of its contents (`None`: unreadable). Not its modification
/// time and length: a same-length edit within the file system's time granularity, or two saves
/// between polls, would go unseen (config files are small; reading one per poll is cheap).
pub type Stamp = Option<u64>;

/// The [`Stamp`] of `path` now.
pub fn stamp(path: &Path) -> Stamp {
    use std::hash::{Hash, Hasher};
    let bytes = std::fs::read(path).ok()?;
    // SipHash with fixed keys: the same contents give the same stamp within the process.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    Some(h.finish())
}

/// The chain of the config file at `path` (empty without one), in a new handle.
pub fn handle_from(path: Option<&Path>) -> anyhow::Result<ChainHandle> {
    handle_of(&Config::load(path)?)
}

/// The chain of a config file already loaded, in a new handle.
pub fn handle_of(cfg: &Config) -> anyhow::Result<ChainHandle> {
    let chain: Chain = cfg.build_chain()?;
    if !chain.is_empty() {
        eprintln!(
            "processor chain: {}",
            chain
                .summary()
                .iter()
                .map(|(id, kind)| format!("{id} ({kind})"))
                .collect::<Vec<_>>()
                .join(" → ")
        );
    }
    // The process's chain at start (appliers' own default handles do not touch the gauge).
    metrics::gauge!("tidings_pipeline_chain_version").set(1.0);
    Ok(ChainHandle::new(Arc::new(chain)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const ONE: &str = "[[pipeline.processor]]\nid = \"a\"\nkind = \"dedupe\"\nwindow_ms = 1000\n";
    const TWO: &str = "[[pipeline.processor]]\nid = \"a\"\nkind = \"dedupe\"\nwindow_ms = 1000\n\n[[pipeline.processor]]\nid = \"m\"\nkind = \"mentions\"\nemit = { topic = \"side\" }\n";

    #[test]
    fn a_reload_swaps_a_valid_chain_and_keeps_the_old_one_on_errors() {
        let handle = handle_from(None).unwrap();
        assert!(handle.current().0.is_empty());
        let created = Arc::new(std::sync::Mutex::new(Vec::new()));
        let c = created.clone();
        let ensure: EnsureTopics = Arc::new(move |t: &[String]| {
            c.lock().unwrap().extend(t.iter().cloned());
            Ok(())
        });
        let r = Reloader::new(handle.clone(), Some(ensure));
        let s = r.reload_from_toml(ONE).unwrap();
        assert_eq!(s.version, 2);
        assert_eq!(s.processors, vec![("a".to_string(), "dedupe".to_string())]);
        let s = r.reload_from_toml(TWO).unwrap();
        assert_eq!(
            (s.version, s.side_topics.clone()),
            (3, vec!["side".to_string()])
        );
        assert_eq!(*created.lock().unwrap(), vec!["side".to_string()]);

        // Invalid: refused, the running chain (version 3, two processors) stays.
        for bad in [
            "[[pipeline.processor]]\nid = \"a\"\nkind = \"dedupe\"\nwindow_ms = 0\n",
            "[[pipeline.processor]]\nid = \"r\"\nkind = \"rule\"\nwhen = \"nope(\"\n",
            "[pipeline]\nprocessor = 5\n",
            "not toml at all [",
        ] {
            assert!(r.reload_from_toml(bad).is_err(), "{bad}");
        }
        let e = r
            .reload_from_toml(
                "[[pipeline.processor]]\nid = \"a\"\nkind = \"dedupe\"\nwindow_ms = 0\n",
            )
            .unwrap_err();
        assert!(
            e.contains("processor `a`: window_ms must be positive"),
            "{e}"
        );
        let (chain, version) = handle.current();
        assert_eq!((chain.len(), version), (2, 3));

        // A topic that cannot be created refuses the reload too.
        let r = Reloader::new(
            handle.clone(),
            Some(Arc::new(|_: &[String]| Err("no broker".into()))),
        );
        let e = r.reload_from_toml(TWO).unwrap_err();
        assert!(e.contains("no broker"), "{e}");
        assert_eq!(handle.current().1, 3);
    }

    #[test]
    fn a_change_is_loaded_once_two_polls_agree_and_a_transient_never() {
        let (a, b, c, empty) = (Some(1), Some(2), Some(3), Some(0));
        let mut s = Settle::new(a);
        assert!(!s.observe(a));
        // Caught mid-write: empty, then the new contents; loaded at their second read only.
        assert!(!s.observe(empty));
        assert!(!s.observe(b));
        assert!(s.observe(b));
        assert!(!s.observe(b));
        // A change that reverts before its second read is never loaded.
        assert!(!s.observe(c));
        assert!(!s.observe(b));
        assert!(!s.observe(b));
        // Unreadable (deleted) counts as contents too: loaded (and refused) once it stays so.
        assert!(!s.observe(None));
        assert!(s.observe(None));
        assert!(!s.observe(a));
        assert!(s.observe(a));
    }

    #[test]
    fn the_watcher_reloads_when_the_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tidings.toml");
        std::fs::write(&path, ONE).unwrap();
        let loaded = stamp(&path);
        let handle = handle_from(Some(&path)).unwrap();
        assert_eq!(handle.current().0.len(), 1);
        let stop = Arc::new(AtomicBool::new(false));
        let reloader = Reloader::new(handle.clone(), None);
        let t = reloader
            .clone()
            .watch(
                path.clone(),
                loaded,
                Duration::from_millis(20),
                stop.clone(),
            )
            .unwrap();
        let wait = |what: &str, cond: &dyn Fn() -> bool| {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while !cond() {
                assert!(std::time::Instant::now() < deadline, "timed out: {what}");
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        std::fs::write(&path, TWO).unwrap();
        wait("reloaded", &|| handle.current().1 == 2);
        assert_eq!(handle.current().0.len(), 2);
        // A broken edit is refused; the chain stays.
        std::fs::write(&path, "[[pipeline.processor]]\nid = \"x\"\n").unwrap();
        wait("refused", &|| reloader.failures() == 1);
        assert_eq!(handle.current().1, 2);
        assert_eq!(handle.current().0.len(), 2);
        // A same-length edit (window 1000 → 2000) is seen too: contents, not time and size.
        let edited = TWO.replace("window_ms = 1000", "window_ms = 2000");
        assert_eq!(edited.len(), TWO.len());
        std::fs::write(&path, &edited).unwrap();
        wait("same-length edit reloaded", &|| handle.current().1 == 3);
        stop.store(true, Ordering::SeqCst);
        t.join().unwrap();
    }
}
