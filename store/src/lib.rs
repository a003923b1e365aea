//! # tidings-store
//!
//! The `Store` port and its adapters. The port is shaped on FoundationDB so code that passes on
//! the embedded backend also holds on a cluster:
//!
//! - a read is a [`ReadView`]: one consistent snapshot offering get, multi-get and range
//!   (limit, reverse), living at most [`limits::READ_VIEW_LIFETIME`] (FDB's 5 s);
//! - a write is one atomic [`WriteBatch`]: set, clear, clear-range, atomic i64 add (FDB `ADD`,
//!   little-endian) and preconditions ("key still holds V"), checked atomically with the write —
//!   [`Error::Conflict`] if one fails;
//! - FDB's size limits ([`limits`]) are enforced by every backend, before anything is written.
//!
//! Backends are chosen at run time by URL ([`open`]): `rocksdb:PATH` (the embedded default,
//! [`rocks`]) or `fdb:CLUSTER_FILE` (cargo feature `fdb`). [`conformance`] is the one test
//! suite every backend must pass.
//!
//! Non-goals: key layout (that is `tidings_core::keys`), long-running scans in one snapshot
//! (page with a fresh view instead, as FDB requires).

pub mod batch;
pub mod conformance;
mod error;
mod families;
pub mod fasthash;
#[cfg(feature = "fdb")]
pub mod fdb;
mod keysort;
pub mod layout;
pub mod limits;
pub mod memo;
pub mod overlay;
pub mod rocks;
mod url;

use std::fmt;

pub use batch::{KeyGroups, Precondition, WriteBatch};
pub use error::{Error, Result};
pub use memo::{Memo, ReadCache};
pub use overlay::{Delta, Overlay};
pub use tidings_core::write::Mutation;
pub use url::{open, StoreUrl};

/// A key and its value.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// How a range read walks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RangeOptions {
    /// Most pairs returned; 0 means no limit (use only on ranges known to be small).
    pub limit: usize,
    /// Walk from the end of the range backwards.
    pub reverse: bool,
}

impl RangeOptions {
    /// Forward, at most `limit`.
    pub fn forward(limit: usize) -> Self {
        RangeOptions {
            limit,
            reverse: false,
        }
    }

    /// Backward, at most `limit`.
    pub fn reverse(limit: usize) -> Self {
        RangeOptions {
            limit,
            reverse: true,
        }
    }
}

/// One consistent snapshot of the store.
pub trait ReadView {
    /// The value of `key`, if any.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// The values of `keys`, in order.
    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>>;

    /// Pairs with `begin <= key < end`, in key order (or reverse), at most `opts.limit`.
    fn range(&self, begin: &[u8], end: &[u8], opts: RangeOptions) -> Result<Vec<KeyValue>>;

    /// Visits the pairs [`ReadView::range`] returns, in its order, without handing them over:
    /// a view that holds them already (a read cache) need not copy them.
    fn range_visit(
        &self,
        begin: &[u8],
        end: &[u8],
        opts: RangeOptions,
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<()> {
        for (k, v) in self.range(begin, end, opts)? {
            visit(&k, &v);
        }
        Ok(())
    }

    /// Visits the pairs of `begin..end` in key order until about `max_bytes` of keys and values
    /// were visited; returns the key to continue from in a fresh view (`None`: the range is
    /// done). For walks over whole keyspaces (backups, digests, verify): bounded work per view,
    /// and no copy per pair where the backend can avoid it.
    fn scan(
        &self,
        begin: &[u8],
        end: &[u8],
        max_bytes: usize,
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<Option<Vec<u8>>> {
        const PAGE: usize = 1_000;
        let mut from = begin.to_vec();
        let mut seen = 0usize;
        loop {
            let rows = self.range(&from, end, RangeOptions::forward(PAGE))?;
            let Some((last, _)) = rows.last() else {
                return Ok(None);
            };
            let mut next = last.clone();
            next.push(0);
            for (k, v) in &rows {
                visit(k, v);
                seen += k.len() + v.len();
            }
            if rows.len() < PAGE {
                return Ok(None);
            }
            if seen >= max_bytes {
                return Ok(Some(next));
            }
            from = next;
        }
    }
}

/// The store port: snapshots to read, atomic batches to write.
pub trait Store: Send + Sync + fmt::Debug {
    /// Opens a consistent read view at the latest committed state.
    fn snapshot(&self) -> Result<Box<dyn ReadView + '_>>;

    /// Commits a batch atomically: all of it or, on error, none of it.
    fn commit(&self, batch: WriteBatch) -> Result<()>;

    /// The backend's name (`rocksdb`, `fdb`), for logs and metrics.
    fn backend(&self) -> &'static str;

    /// Whether this process serves reads itself from local memory or disk (microseconds), so
    /// an async caller may run a short read in place instead of handing it to a blocking
    /// thread pool (two thread switches per request). `false` for a remote store, whose reads
    /// wait on the network.
    fn local_reads(&self) -> bool {
        false
    }

    /// Estimated bytes stored in `begin..end` (for the store-size metric and progress bars).
    fn estimated_size(&self, begin: &[u8], end: &[u8]) -> Result<u64>;

    /// The most bytes [`Store::commit_bulk`] takes in one batch, or `None` when the backend has
    /// no bulk path (every batch then stays under [`limits::MAX_BATCH`], as on FoundationDB).
    fn bulk_batch_limit(&self) -> Option<usize> {
        None
    }

    /// Whether the store is behind on the background work bulk commits leave (on RocksDB,
    /// compacting their files out of L0), so that fewer, larger bulk batches cost less: a bulk
    /// writer plans larger ones meanwhile, still within [`Store::bulk_batch_limit`]. `false`
    /// where there is no such work.
    fn bulk_backlog(&self) -> bool {
        false
    }

    /// A bulk run starts: until [`Store::finish_bulk`], the store may defer the background work
    /// of bulk commits (on RocksDB, compacting the files ingested into a version's column
    /// family) to do it once at the end. Bulk commits outside a run defer nothing. The default
    /// does nothing.
    fn begin_bulk(&self) -> Result<()> {
        Ok(())
    }

    /// A bulk run is over: the store does now the background work its bulk commits deferred,
    /// so the keys they wrote serve at full speed (on RocksDB, one merge of the table files
    /// they ingested into a version's column family), and returns when it is done. A rebuild
    /// calls it when it has caught up with the log, before it may be switched to. The default
    /// does nothing.
    fn finish_bulk(&self) -> Result<()> {
        Ok(())
    }

    /// Commits `batch` like [`Store::commit`] — atomically, preconditions checked — but the batch
    /// may exceed the transaction size limit, up to [`Store::bulk_batch_limit`]. For writing a
    /// key range that no reader serves yet (a projection being rebuilt): RocksDB writes the
    /// batch as one sorted table file and ingests it, with no memtable, no write-ahead log and
    /// no flush. The default is [`Store::commit`].
    fn commit_bulk(&self, batch: WriteBatch) -> Result<()> {
        self.commit(batch)
    }

    /// [`Store::commit_bulk`] of `batch` followed by `groups`' keys, in one atomic commit: a
    /// rebuild's batch with its fan-out entries. The default expands the groups into mutations;
    /// RocksDB writes them from their buffer.
    fn commit_bulk_groups(&self, mut batch: WriteBatch, groups: KeyGroups) -> Result<()> {
        batch.extend(groups.mutations());
        self.commit_bulk(batch)
    }

    /// Bulk load: sets `pairs` (sorted by key, keys distinct, within the size limits) in a key
    /// range nobody else writes meanwhile — a restore into an empty store. Not one atomic batch:
    /// when it returns every pair is written; after a failure, an unknown prefix is, and the
    /// caller loads the same pairs again (sets are idempotent). The default commits batches of
    /// about [`limits::TARGET_BATCH`] bytes; RocksDB writes a table file and ingests it.
    fn load_sorted(&self, pairs: &[KeyValue]) -> Result<()> {
        let mut batch = WriteBatch::new();
        for (k, v) in pairs {
            batch.set(k.clone(), v.clone());
            if batch.size() >= limits::TARGET_BATCH {
                self.commit(std::mem::take(&mut batch))?;
            }
        }
        if !batch.is_empty() {
            self.commit(batch)?;
        }
        Ok(())
    }
}

impl dyn Store + '_ {
    /// Convenience: one point read in a fresh view.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.snapshot()?.get(key)
    }
}
