//! Remembering reads across snapshots, for a single writer.
//!
//! A read view is one immutable snapshot, so reading the same key or range twice gives the same
//! answer. A bulk writer (a rebuild) plans millions of events, batch after batch, and most of
//! its reads repeat — the followers and the follower count of an author who posts again —
//! while one RocksDB range read over a store with many table files costs tens of microseconds.
//! A [`ReadCache`] keeps the answers; [`Memo`] is a read view over a snapshot that serves
//! repeats from it.
//!
//! The answers stay right across snapshots because the writer tells the cache what it wrote:
//! before planning against a newer snapshot, [`ReadCache::forget`] drops every answer the newly
//! committed batch (its [`Delta`]) could have changed. That is only sound when **nobody else
//! writes** the keys read meanwhile — a projection being rebuilt — and the cache must sit
//! under an [`Overlay`](crate::Overlay), which answers for writes not yet committed.
//!
//! Non-goals: a cache for readers or for writers that share their keys with others.

use crate::fasthash::FastMap;
use crate::overlay::Delta;
use crate::{KeyValue, RangeOptions, ReadView, Result};
use std::cell::RefCell;
use std::rc::Rc;

/// A range read's arguments.
type RangeKey = (Vec<u8>, Vec<u8>, usize, bool);

/// Answers past this many are all dropped (most are one-off reads, e.g. of new message ids).
const MAX_ANSWERS: usize = 1 << 20;

/// Remembered answers (see the module doc).
#[derive(Default)]
pub struct ReadCache {
    gets: RefCell<FastMap<Vec<u8>, Option<Vec<u8>>>>,
    /// Shared, so a visit runs without the map borrowed (the visitor may read the view).
    ranges: RefCell<FastMap<RangeKey, Rc<Vec<KeyValue>>>>,
}

impl std::fmt::Debug for ReadCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadCache")
            .field("gets", &self.gets.borrow().len())
            .field("ranges", &self.ranges.borrow().len())
            .finish()
    }
}

impl ReadCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Drops every answer `written` (a batch now committed) may have changed: gets of its keys,
    /// ranges holding one of its keys or overlapping one of its cleared ranges.
    pub fn forget(&self, written: &Delta) {
        if written.is_empty() {
            return;
        }
        let mut gets = self.gets.borrow_mut();
        if written.clears_nothing_by_range() && written.len() < gets.len() {
            // Fewer written keys than answers (a batch's bodies against a warm cache).
            for k in written.keys() {
                gets.remove(k);
            }
        } else {
            gets.retain(|k, _| !written.touches(k));
        }
        drop(gets);
        self.ranges
            .borrow_mut()
            .retain(|(b, e, _, _), _| !written.touches_range(b, e));
    }

    /// Drops everything.
    pub fn clear(&self) {
        self.gets.borrow_mut().clear();
        self.ranges.borrow_mut().clear();
    }

    fn bound(&self) {
        if self.gets.borrow().len() + self.ranges.borrow().len() > MAX_ANSWERS {
            self.clear();
        }
    }
}

/// A read view of `base` that answers from (and fills) a [`ReadCache`].
pub struct Memo<'a> {
    base: &'a dyn ReadView,
    cache: &'a ReadCache,
}

impl std::fmt::Debug for Memo<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memo").field("cache", self.cache).finish()
    }
}

impl<'a> Memo<'a> {
    /// Reads `base` (one consistent snapshot) through `cache`, which must hold only answers
    /// true of `base` (see [`ReadCache::forget`]).
    pub fn new(base: &'a dyn ReadView, cache: &'a ReadCache) -> Self {
        cache.bound();
        Memo { base, cache }
    }
}

impl Memo<'_> {
    /// The rows of a range read, remembered or read from the base (and remembered). The map is
    /// not borrowed once this returns.
    fn cached_range(
        &self,
        begin: &[u8],
        end: &[u8],
        opts: RangeOptions,
    ) -> Result<Rc<Vec<KeyValue>>> {
        let key = (begin.to_vec(), end.to_vec(), opts.limit, opts.reverse);
        let cached = self.cache.ranges.borrow().get(&key).cloned();
        if let Some(rows) = cached {
            return Ok(rows);
        }
        let rows = Rc::new(self.base.range(begin, end, opts)?);
        self.cache.ranges.borrow_mut().insert(key, rows.clone());
        Ok(rows)
    }
}

impl ReadView for Memo<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(v) = self.cache.gets.borrow().get(key) {
            return Ok(v.clone());
        }
        let v = self.base.get(key)?;
        self.cache.gets.borrow_mut().insert(key.to_vec(), v.clone());
        Ok(v)
    }

    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        let missing: Vec<Vec<u8>> = {
            let gets = self.cache.gets.borrow();
            keys.iter()
                .filter(|k| !gets.contains_key(*k))
                .cloned()
                .collect()
        };
        if !missing.is_empty() {
            let found = self.base.get_many(&missing)?;
            self.cache
                .gets
                .borrow_mut()
                .extend(missing.into_iter().zip(found));
        }
        let gets = self.cache.gets.borrow();
        Ok(keys
            .iter()
            .map(|k| gets.get(k).cloned().flatten())
            .collect())
    }

    fn range(&self, begin: &[u8], end: &[u8], opts: RangeOptions) -> Result<Vec<KeyValue>> {
        Ok(self.cached_range(begin, end, opts)?.to_vec())
    }

    fn range_visit(
        &self,
        begin: &[u8],
        end: &[u8],
        opts: RangeOptions,
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<()> {
        for (k, v) in self.cached_range(begin, end, opts)?.iter() {
            visit(k, v);
        }
        Ok(())
    }

    fn scan(
        &self,
        begin: &[u8],
        end: &[u8],
        max_bytes: usize,
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<Option<Vec<u8>>> {
        // Walks over whole keyspaces are not repeated: straight to the base.
        self.base.scan(begin, end, max_bytes, visit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rocks::{RocksOptions, RocksStore};
    use crate::{Store, WriteBatch};

    #[test]
    fn a_visitor_may_read_the_view_it_visits() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = RocksStore::open(dir.path(), RocksOptions::default()).expect("open RocksDB");
        let mut b = WriteBatch::new();
        b.set(b"a1".to_vec(), b"x".to_vec())
            .set(b"a2".to_vec(), b"y".to_vec());
        store.commit(b).expect("commit");
        let snap = store.snapshot().expect("snapshot");
        let cache = ReadCache::new();
        let memo = Memo::new(&*snap, &cache);
        // Twice: from the base, then from the cache; each visit reads another range meanwhile.
        for _ in 0..2 {
            let mut seen = Vec::new();
            memo.range_visit(b"a", b"b", RangeOptions::forward(0), &mut |k, _| {
                let inner = memo
                    .range(k, b"b", RangeOptions::forward(0))
                    .expect("range inside a visit");
                seen.push((k.to_vec(), inner.len()));
            })
            .expect("range_visit");
            assert_eq!(seen, vec![(b"a1".to_vec(), 2), (b"a2".to_vec(), 1)]);
        }
    }
}
