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
    /// A range `base` holds no key of (see [`Memo::noting_empty`]).
    empty: Option<(Vec<u8>, Vec<u8>)>,
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
        Memo {
            base,
            cache,
            empty: None,
        }
    }

    /// Looks (one range read) whether the base holds any key of `begin..end`; if none, every
    /// read inside that range answers "nothing" at once, without the base or the cache. A
    /// rebuild's first batch is planned over its projection still empty, and a follow reads
    /// keys of it that cannot be there yet (does the edge exist? the subject's posts to
    /// backfill), each a RocksDB lookup and a cache entry. One range is noted: a later empty
    /// one replaces it.
    pub fn noting_empty(mut self, begin: &[u8], end: &[u8]) -> Result<Self> {
        if begin < end
            && self
                .base
                .range(begin, end, RangeOptions::forward(1))?
                .is_empty()
        {
            self.empty = Some((begin.to_vec(), end.to_vec()));
        }
        Ok(self)
    }

    /// Whether `key` lies in the range the base holds nothing of.
    fn known_absent(&self, key: &[u8]) -> bool {
        self.empty
            .as_ref()
            .is_some_and(|(b, e)| b.as_slice() <= key && key < e.as_slice())
    }

    /// Whether `begin..end` lies inside the range the base holds nothing of.
    fn known_empty(&self, begin: &[u8], end: &[u8]) -> bool {
        self.empty
            .as_ref()
            .is_some_and(|(b, e)| b.as_slice() <= begin && end <= e.as_slice())
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
        if self.known_absent(key) {
            return Ok(None);
        }
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
                .filter(|k| !self.known_absent(k) && !gets.contains_key(*k))
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
            .map(|k| {
                if self.known_absent(k) {
                    None
                } else {
                    gets.get(k).cloned().flatten()
                }
            })
            .collect())
    }

    fn range(&self, begin: &[u8], end: &[u8], opts: RangeOptions) -> Result<Vec<KeyValue>> {
        if self.known_empty(begin, end) {
            return Ok(Vec::new());
        }
        Ok(self.cached_range(begin, end, opts)?.to_vec())
    }

    fn range_visit(
        &self,
        begin: &[u8],
        end: &[u8],
        opts: RangeOptions,
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<()> {
        if self.known_empty(begin, end) {
            return Ok(());
        }
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

    /// A RocksDB store on disk holding `pairs`.
    fn store_with(pairs: &[(&[u8], &[u8])]) -> (tempfile::TempDir, RocksStore) {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = RocksStore::open(dir.path(), RocksOptions::default()).expect("open RocksDB");
        let mut b = WriteBatch::new();
        for (k, v) in pairs {
            b.set(k.to_vec(), v.to_vec());
        }
        store.commit(b).expect("commit");
        (dir, store)
    }

    /// A view that counts the reads reaching it.
    struct Counted<'a>(&'a dyn ReadView, std::cell::Cell<usize>);

    impl ReadView for Counted<'_> {
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
            self.1.set(self.1.get() + 1);
            self.0.get(key)
        }
        fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
            self.1.set(self.1.get() + 1);
            self.0.get_many(keys)
        }
        fn range(&self, begin: &[u8], end: &[u8], opts: RangeOptions) -> Result<Vec<KeyValue>> {
            self.1.set(self.1.get() + 1);
            self.0.range(begin, end, opts)
        }
    }

    #[test]
    fn reads_inside_a_range_the_base_holds_nothing_of_answer_without_it() {
        let (_dir, store) = store_with(&[(b"b1", b"x"), (b"c1", b"y")]);
        let snap = store.snapshot().expect("snapshot");
        let base = Counted(&*snap, Default::default());
        let cache = ReadCache::new();
        let memo = Memo::new(&base, &cache)
            .noting_empty(b"a", b"b")
            .expect("look")
            // Holds keys: not noted.
            .noting_empty(b"b", b"c")
            .expect("look");
        assert_eq!(base.1.get(), 2, "one range read per look");
        let fwd = RangeOptions::forward(0);
        assert_eq!(memo.get(b"a5").expect("get"), None);
        assert_eq!(
            memo.get_many(&[b"a1".to_vec()]).expect("get_many"),
            vec![None]
        );
        assert!(memo.range(b"a1", b"a9", fwd).expect("range").is_empty());
        let mut visited = 0;
        memo.range_visit(b"a", b"b", fwd, &mut |_, _| visited += 1)
            .expect("visit");
        assert_eq!(
            (visited, base.1.get()),
            (0, 2),
            "the base was read inside the empty range"
        );
        assert_eq!(format!("{cache:?}"), "ReadCache { gets: 0, ranges: 0 }");
        // Outside it (`b..c` holds keys, so it was not noted), or reaching past it: the base.
        assert_eq!(memo.get(b"b1").expect("get"), Some(b"x".to_vec()));
        assert_eq!(memo.range(b"a", b"c", fwd).expect("range").len(), 1);
        assert_eq!(
            memo.get_many(&[b"a1".to_vec(), b"c1".to_vec()])
                .expect("get_many"),
            vec![None, Some(b"y".to_vec())]
        );
        assert_eq!(base.1.get(), 5);
    }

    #[test]
    fn a_visitor_may_read_the_view_it_visits() {
        let (_dir, store) = store_with(&[(b"a1", b"x"), (b"a2", b"y")]);
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
