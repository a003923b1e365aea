//! A bounded LRU cache of serialized pages, validated on every hit.
//!
//! A page is cached with its validators: the feed-version keys it was built from and the values
//! they held in the page's snapshot (see [`crate::feed::read_validated`]). Every write that can
//! change what a page shows bumps one of them in the same batch — an index insert or removal
//! bumps the feed's version, a follow/block/mute bumps the viewer's, an update or retraction the
//! projection's body version, a new pulled author the pulled-set version, a switch changes the
//! active projection. A hit costs one multi-get of those few keys in a fresh snapshot: equal
//! values serve the cached bytes, any difference drops the entry and reads the page again. So a
//! cached page is never served after its feed changed, across processes too (the validators
//! live in the store, not in this process).
//!
//! The bound is in bytes (pages, keys and validators), evicting least recently used pages.
//! Metrics: `tidings_query_cache_{hits,misses,stale}_total`, `tidings_query_cache_bytes`,
//! `tidings_query_cache_capacity_bytes`, `tidings_query_cache_entries`,
//! `tidings_query_cache_hit_ratio`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use lru::LruCache;
use tidings_store::Store;

use crate::feed::{self, FeedRequest, QueryError, ReadConfig, Validators};

/// One page as JSON bytes, through `cache` when there is one.
pub fn page_json(
    store: &dyn Store,
    cache: Option<&PageCache>,
    req: &FeedRequest,
    cfg: &ReadConfig,
) -> Result<Bytes, QueryError> {
    feed::check(req)?;
    if let Some(cache) = cache {
        if let Lookup::Hit(body) = cache.get(store, req)? {
            return Ok(body);
        }
    }
    read_and_fill(store, cache, req, cfg)
}

/// Reads a page from the store (no lookup) and caches it.
pub fn read_and_fill(
    store: &dyn Store,
    cache: Option<&PageCache>,
    req: &FeedRequest,
    cfg: &ReadConfig,
) -> Result<Bytes, QueryError> {
    let (page, validators) = feed::read_validated(store, req, cfg)?;
    let body = Bytes::from(serde_json::to_vec(&page).unwrap_or_default());
    if let Some(cache) = cache {
        cache.put(req.clone(), validators, body.clone());
    }
    Ok(body)
}

/// One cached page.
#[derive(Debug)]
struct Cached {
    validators: Validators,
    body: Bytes,
    size: usize,
}

#[derive(Debug)]
struct Inner {
    lru: LruCache<FeedRequest, Arc<Cached>>,
    bytes: usize,
}

/// The page cache.
#[derive(Debug)]
pub struct PageCache {
    inner: Mutex<Inner>,
    capacity: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup {
    /// A valid page: serve these bytes.
    Hit(Bytes),
    /// Nothing cached, or the cached page was stale (and is dropped).
    Miss,
}

fn size_of(req: &FeedRequest, validators: &Validators, body: &Bytes) -> usize {
    const OVERHEAD: usize = 128;
    OVERHEAD
        + std::mem::size_of::<FeedRequest>()
        + req.cursor.as_ref().map_or(0, String::len)
        + validators
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len) + 48)
            .sum::<usize>()
        + body.len()
}

impl PageCache {
    /// A cache holding at most `capacity_bytes`.
    pub fn new(capacity_bytes: usize) -> Self {
        metrics::gauge!("tidings_query_cache_capacity_bytes").set(capacity_bytes as f64);
        PageCache {
            inner: Mutex::new(Inner {
                lru: LruCache::unbounded(),
                bytes: 0,
            }),
            capacity: capacity_bytes,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves a consistent LRU (no partial updates).
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Looks `req` up and validates it against the store (one multi-get).
    pub fn get(
        &self,
        store: &dyn Store,
        req: &FeedRequest,
    ) -> Result<Lookup, tidings_store::Error> {
        let cached = self.lock().lru.get(req).cloned();
        let Some(c) = cached else {
            self.count(false);
            return Ok(Lookup::Miss);
        };
        if feed::still_valid(store, &c.validators)? {
            self.count(true);
            return Ok(Lookup::Hit(c.body.clone()));
        }
        metrics::counter!("tidings_query_cache_stale_total").increment(1);
        let mut inner = self.lock();
        // Drop it unless a fresher copy replaced it meanwhile.
        if inner.lru.peek(req).is_some_and(|cur| Arc::ptr_eq(cur, &c)) {
            inner.lru.pop(req);
            inner.bytes -= c.size;
            Self::export(&inner);
        }
        drop(inner);
        self.count(false);
        Ok(Lookup::Miss)
    }

    /// Caches a page read with `validators`.
    pub fn put(&self, req: FeedRequest, validators: Validators, body: Bytes) {
        let size = size_of(&req, &validators, &body);
        if size > self.capacity {
            return;
        }
        let entry = Arc::new(Cached {
            validators,
            body,
            size,
        });
        let mut inner = self.lock();
        if let Some(old) = inner.lru.put(req, entry) {
            inner.bytes -= old.size;
        }
        inner.bytes += size;
        while inner.bytes > self.capacity {
            match inner.lru.pop_lru() {
                Some((_, old)) => inner.bytes -= old.size,
                None => break,
            }
        }
        Self::export(&inner);
    }

    fn export(inner: &Inner) {
        metrics::gauge!("tidings_query_cache_bytes").set(inner.bytes as f64);
        metrics::gauge!("tidings_query_cache_entries").set(inner.lru.len() as f64);
    }

    fn count(&self, hit: bool) {
        let (h, m) = if hit {
            metrics::counter!("tidings_query_cache_hits_total").increment(1);
            (
                self.hits.fetch_add(1, Ordering::Relaxed) + 1,
                self.misses.load(Ordering::Relaxed),
            )
        } else {
            metrics::counter!("tidings_query_cache_misses_total").increment(1);
            (
                self.hits.load(Ordering::Relaxed),
                self.misses.fetch_add(1, Ordering::Relaxed) + 1,
            )
        };
        metrics::gauge!("tidings_query_cache_hit_ratio").set(h as f64 / (h + m) as f64);
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Hits and misses so far.
    pub fn stats(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }
}
