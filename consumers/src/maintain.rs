//! Background upkeep of feeds: trimming and unfollow cleanup, behind the consumers.
//!
//! Readers never depend on it — read-time filtering already hides unfollowed actors, and pages
//! never read past what they show — it only keeps the store from growing without bound:
//!
//! - **trim**: a feed keeps its newest `max_entries` entries (default 1,000); older ones are
//!   cleared with one clear-range;
//! - **unfollow cleanup**: home entries pushed because the owner followed an actor they no
//!   longer follow are cleared, each guarded by a precondition "the follow edge is still
//!   absent", so a re-follow that races with cleanup keeps its entries.
//!
//! A pass walks the feed-version keys (`(p, "fver", owner, kind)`) in chunks and tidies only the
//! feeds whose version moved since this process last tidied them, so an idle store costs one
//! range read of versions per pass. Everything is idempotent: tidying a tidy feed writes
//! nothing, and a crash between passes loses only work that the next pass redoes.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tidings_core::keys::feed::{self, FeedEntry, FeedKind, Reason};
use tidings_core::keys::graph::{self, Edge};
use tidings_core::keys::{fver, meta, Projection};
use tidings_core::write::decode_i64;
use tidings_core::UserId;
use tidings_store::{RangeOptions, Store, WriteBatch};

/// Tunables.
#[derive(Clone, Debug)]
pub struct MaintainConfig {
    /// Entries a feed keeps (0: no trimming).
    pub max_entries: usize,
    /// Pause between passes.
    pub interval: Duration,
    /// Feed versions read per store read.
    pub chunk: usize,
}

impl Default for MaintainConfig {
    fn default() -> Self {
        MaintainConfig {
            max_entries: 1_000,
            interval: Duration::from_secs(1),
            chunk: 1_000,
        }
    }
}

/// What maintenance did so far.
#[derive(Debug, Default)]
pub struct MaintainStats {
    /// Completed passes over all feeds.
    pub passes: AtomicU64,
    /// Feeds read because their version moved.
    pub feeds_checked: AtomicU64,
    /// Entries removed by trimming (ranges counted by what the read saw).
    pub trimmed: AtomicU64,
    /// Entries of unfollowed actors removed.
    pub unfollowed: AtomicU64,
}

/// The maintenance loop's state.
pub struct Maintainer {
    store: Arc<dyn Store>,
    cfg: MaintainConfig,
    tidied: HashMap<(Projection, UserId, FeedKind), Option<Vec<u8>>>,
    stats: Arc<MaintainStats>,
}

impl std::fmt::Debug for Maintainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Maintainer")
            .field("cfg", &self.cfg)
            .finish()
    }
}

impl Maintainer {
    /// A maintainer of `store`.
    pub fn new(store: Arc<dyn Store>, cfg: MaintainConfig) -> Self {
        Maintainer {
            store,
            cfg,
            tidied: HashMap::new(),
            stats: Arc::default(),
        }
    }

    /// Counters, shared.
    pub fn stats(&self) -> Arc<MaintainStats> {
        self.stats.clone()
    }

    /// One pass over every feed whose version moved.
    pub fn pass(&mut self) -> Result<(), tidings_store::Error> {
        let p = self
            .store
            .snapshot()?
            .get(&meta::active())?
            .map_or(meta::DEFAULT_PROJECTION, |v| decode_i64(&v));
        let (mut begin, end) = fver::range(p);
        loop {
            let rows = self.store.snapshot()?.range(
                &begin,
                &end,
                RangeOptions::forward(self.cfg.chunk.max(1)),
            )?;
            let Some((last, _)) = rows.last() else { break };
            begin = last.clone();
            begin.push(0);
            let full = rows.len() == self.cfg.chunk.max(1);
            for (k, v) in rows {
                let Some((owner, kind)) = fver::parse_key(p, &k) else {
                    continue;
                };
                let id = (p, owner, kind);
                if self.tidied.get(&id) == Some(&Some(v.clone())) {
                    continue;
                }
                self.stats.feeds_checked.fetch_add(1, Ordering::Relaxed);
                match self.tidy(p, owner, kind) {
                    // Remember the version seen before tidying: our own bump moves it once
                    // more, so the feed is checked once again and then left alone.
                    Ok(()) => {
                        self.tidied.insert(id, Some(v));
                    }
                    Err(e) if e.is_conflict() => {} // a racing follow: next pass
                    Err(e) => return Err(e),
                }
            }
            if !full {
                break;
            }
        }
        self.stats.passes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Trims one feed and, for a home feed, clears entries of actors no longer followed.
    fn tidy(
        &self,
        p: Projection,
        owner: UserId,
        kind: FeedKind,
    ) -> Result<(), tidings_store::Error> {
        let view = self.store.snapshot()?;
        let sub = feed::feed(p, owner, kind);
        let (b, e) = sub.range();
        let keep = if self.cfg.max_entries == 0 {
            usize::MAX
        } else {
            self.cfg.max_entries
        };
        let rows = view.range(&b, &e, RangeOptions::forward(keep.saturating_add(1)))?;
        let mut batch = WriteBatch::new();
        let trimmed = rows.len().saturating_sub(keep) as u64;
        if trimmed > 0 {
            batch.clear_range(rows[keep].0.clone(), e.clone());
        }
        let mut unfollowed = 0;
        if kind == FeedKind::Home {
            let kept = &rows[..rows.len().min(keep)];
            let actors: BTreeSet<UserId> = kept
                .iter()
                .filter_map(|(_, v)| FeedEntry::decode(v))
                .filter(|e| e.reason == Reason::Follow && e.actor != owner)
                .map(|e| e.actor)
                .collect();
            let actors: Vec<UserId> = actors.into_iter().collect();
            let edges: Vec<Vec<u8>> = actors
                .iter()
                .map(|a| graph::edge(p, Edge::Following, owner, *a))
                .collect();
            let found = view.get_many(&edges)?;
            let gone: BTreeSet<UserId> = actors
                .iter()
                .zip(&found)
                .filter(|(_, f)| f.is_none())
                .map(|(a, _)| *a)
                .collect();
            for a in &gone {
                batch.require(graph::edge(p, Edge::Following, owner, *a), None);
            }
            for (k, v) in kept {
                if FeedEntry::decode(v)
                    .is_some_and(|e| e.reason == Reason::Follow && gone.contains(&e.actor))
                {
                    batch.clear(k.clone());
                    unfollowed += 1;
                }
            }
        }
        drop(view);
        if batch.mutations.is_empty() {
            return Ok(());
        }
        batch.extend([fver::bump(p, owner, kind)]);
        self.store.commit(batch)?;
        self.stats.trimmed.fetch_add(trimmed, Ordering::Relaxed);
        metrics::counter!("tidings_maintain_trimmed_total").increment(trimmed);
        self.stats
            .unfollowed
            .fetch_add(unfollowed, Ordering::Relaxed);
        metrics::counter!("tidings_maintain_unfollow_cleaned_total").increment(unfollowed);
        Ok(())
    }

    /// Runs passes every `interval` on a thread until `stop` is set.
    pub fn spawn(mut self, stop: Arc<AtomicBool>) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("maintain".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Err(e) = self.pass() {
                        tracing::warn!(error = %e, "feed maintenance pass failed; retrying next interval (feeds stay correct, only trimming waits)");
                    }
                    let mut slept = Duration::ZERO;
                    while slept < self.cfg.interval && !stop.load(Ordering::Relaxed) {
                        let step = Duration::from_millis(50).min(self.cfg.interval - slept);
                        std::thread::sleep(step);
                        slept += step;
                    }
                }
            })
    }
}
