//! The embedded backend: RocksDB on disk, with FoundationDB semantics.
//!
//! - A column family per projection version, the rest in the default family ([`families`]):
//!   a rebuild's compactions stay in its own family, deferred until it has ingested the log
//!   ([`Store::finish_bulk`]). A write batch is atomic across families; reads take one
//!   snapshot of all of them and walk a range family by family, in key order.
//! - Reads: a RocksDB snapshot per [`ReadView`]; ranges use iterate bounds so a reverse page read
//!   is one seek. Whole-key bloom filters (10 bits/key) make body multi-gets and feed-version
//!   point reads skip files; prefix blooms do not pay here because tuple-encoded prefixes are
//!   variable-length and every range read is bounded anyway.
//! - Writes: one RocksDB `WriteBatch` per commit; atomic add is a merge operator (`i64add`,
//!   little-endian wrapping add, as FDB `ADD`), so counters never read before writing.
//!   Preconditions are checked under a commit lock against the latest state, then the batch is
//!   written: the lock makes check-and-write atomic (one process owns the directory).
//! - Durability: the WAL is always on. With `sync=false` (default) a commit survives a process
//!   crash (the WAL is in the OS page cache) and a power loss loses at most the last commits —
//!   as a prefix, so effects and offsets stay together and consumers replay what was lost.
//!   `sync=true` fsyncs every commit.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rocksdb::{
    BlockBasedOptions, BoundColumnFamily, Cache, ColumnFamilyDescriptor, CompactOptions,
    DBCompressionType, DBWithThreadMode, Direction, Env, IngestExternalFileOptions, IteratorMode,
    MergeOperands, MultiThreaded, Options, ReadOptions, SnapshotWithThreadMode, SstFileWriter,
    WriteOptions, DEFAULT_COLUMN_FAMILY_NAME,
};
use tidings_core::write::decode_i64;
use tidings_core::Mutation;

use crate::error::{Error, Result};
use crate::families::{self, Families, Segment};
use crate::keysort::{self, prefetch};
use crate::layout::keyspace_prefix;
use crate::limits::{self, READ_VIEW_LIFETIME};
use crate::{KeyGroups, KeyValue, RangeOptions, ReadView, Store, WriteBatch};

/// Tuning of the RocksDB backend (from the URL's query string).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RocksOptions {
    /// fsync the WAL on every commit.
    pub sync: bool,
    /// Block cache size in MiB.
    pub cache_mb: usize,
    /// Size of one memtable (write buffer) in MiB.
    pub memtable_mb: usize,
}

impl Default for RocksOptions {
    fn default() -> Self {
        RocksOptions {
            sync: false,
            cache_mb: 256,
            memtable_mb: 8,
        }
    }
}

/// L0 files at which RocksDB starts delaying writes (its default), and at which a bulk commit
/// waits for compaction before ingesting more: ingestion itself never stalls, and a rebuild's
/// files overlap one another (each batch spans every owner), so they all land in L0.
const L0_SLOWDOWN: i32 = 20;

/// L0 files at which the store reports a bulk backlog ([`Store::bulk_backlog`]): compaction is
/// behind the bulk commits, so fewer, larger ones cost less.
const L0_BACKLOG: u64 = L0_SLOWDOWN as u64 / 2;

/// Memtables of a family (one being written, the others flushing).
const MEMTABLES: u64 = 4;

/// Bytes of write-ahead log kept, in memtables ([`RocksStore::open`] says why).
const MAX_WAL_MEMTABLES: u64 = 2 * MEMTABLES;

/// L0 files at which RocksDB stops writes (its default), restored with [`L0_SLOWDOWN`] when a
/// family's deferred compactions end.
const L0_STOP: i32 = 36;

/// L0 files at which a bulk commit into a family whose compactions are deferred compacts that
/// family first ([`RocksStore::compact_family`]): a rebuild of a very long log must neither
/// leave the reads of its own keys (graph edges, counts) a walk over hundreds of files nor
/// end with one merge of all of them.
const DEFERRED_L0_MAX: u64 = 96;

/// How long a bulk commit waits for L0 to drain before it ingests anyway (with a warning):
/// compaction paused or failing must not hang a rebuild.
const L0_WAIT_LIMIT: Duration = Duration::from_secs(60);

type Db = DBWithThreadMode<MultiThreaded>;

/// A column family's handle.
type Family<'a> = Arc<BoundColumnFamily<'a>>;

/// RocksDB behind the [`Store`] port.
pub struct RocksStore {
    db: Db,
    /// Which family holds which projection version.
    families: RwLock<Families>,
    /// Options of the families created for new versions.
    family_opts: Options,
    /// Families whose automatic compactions are off while a bulk run ingests into them.
    deferred: Mutex<BTreeSet<String>>,
    /// Whether a bulk run is open ([`Store::begin_bulk`]): only its bulk commits defer.
    bulk_run: AtomicBool,
    commit_lock: Mutex<()>,
    sync: bool,
    path: String,
    /// Options of the table files [`Store::load_sorted`] writes (as the store's bottom level).
    sst_opts: Options,
    /// Options of the table files [`Store::commit_bulk`] writes: uncompressed, as they usually
    /// land in L0 and are rewritten by compaction soon.
    bulk_opts: Options,
    /// Numbers the files both write.
    loads: AtomicU64,
}

impl std::fmt::Debug for RocksStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksStore")
            .field("path", &self.path)
            .field("sync", &self.sync)
            .finish()
    }
}

fn i64_add(_key: &[u8], existing: Option<&[u8]>, operands: &MergeOperands) -> Option<Vec<u8>> {
    let mut sum = existing.map_or(0, decode_i64);
    for op in operands {
        sum = sum.wrapping_add(decode_i64(op));
    }
    Some(sum.to_le_bytes().to_vec())
}

fn backend_err(e: rocksdb::Error) -> Error {
    Error::Backend {
        backend: "rocksdb",
        message: e.into_string(),
    }
}

impl RocksStore {
    /// Opens (creating if missing) the store in `path`.
    pub fn open(path: &Path, o: RocksOptions) -> Result<RocksStore> {
        let location = path.display().to_string();
        std::fs::create_dir_all(path).map_err(|e| Error::Open {
            backend: "rocksdb",
            location: location.clone(),
            message: e.to_string(),
        })?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        opts.increase_parallelism(cores as i32);
        opts.set_max_background_jobs(4);
        // An L0 compaction is split by key range over up to one thread per core. It runs alone
        // (one L0 compaction at a time), and a rebuild's commits wait for it once L0 fills
        // ([`RocksStore::wait_for_l0`]), which left the other core idle. A rebuild of 27
        // batches (`tidings bench replay --posts 1000000`, two alternated pairs) ran at 1.06M
        // and 981k entries/s against 774k and 946k, waiting 8.5 and 11.2 s against 17.2 and
        // 11.1 s; six batches (three pairs) did not slow down.
        opts.set_max_subcompactions(cores as u32);
        opts.set_level_zero_slowdown_writes_trigger(L0_SLOWDOWN);
        opts.set_level_zero_stop_writes_trigger(L0_STOP);
        // Compactions run at nice 19: on a busy machine they take the cores the threads that
        // commit and serve leave idle, instead of a share of theirs (a rebuild's planning and
        // commit threads were preempted by compactions of the files they had just ingested).
        // They still keep up: at the L0 slowdown trigger RocksDB delays writes, and a bulk
        // commit waits ([`RocksStore::wait_for_l0`]), which leaves them the cores. Flushes (the
        // high-priority pool) keep the normal priority.
        let mut env = Env::new().map_err(|e| Error::Open {
            backend: "rocksdb",
            location: location.clone(),
            message: e.into_string(),
        })?;
        env.lower_thread_pool_cpu_priority();
        opts.set_env(&env);
        // Small memtables: fan-out inserts land on random feeds, and a skip-list insert's cost is
        // its cache misses, which grow with the list (`tidings bench store --memtable-mb`: 8 MiB
        // wrote ~1.3x the entries/s of 32 MiB; sizing L1 down to 4 memtables as well made page
        // reads slower, more levels per seek, so L1 keeps RocksDB's 256 MiB).
        opts.set_write_buffer_size(o.memtable_mb << 20);
        opts.set_max_write_buffer_number(MEMTABLES as i32);
        // A write-ahead log file is deleted once every family has flushed what it holds, and
        // the default family (meta, marks) is written rarely: without a bound, its memtable
        // kept every log file since its first write (100 MB of logs for 73 MB of tables after
        // the demo). Past this many bytes of logs, RocksDB flushes the families holding the
        // oldest: twice what one family's memtables hold, so a family being written is not
        // flushed early for it.
        opts.set_max_total_wal_size((MAX_WAL_MEMTABLES * o.memtable_mb as u64) << 20);
        opts.set_target_file_size_base(64 << 20);
        opts.set_level_compaction_dynamic_level_bytes(true);
        // L0/L1 are rewritten soon by compaction: compressing them costs a core for nothing.
        opts.set_compression_per_level(&[
            DBCompressionType::None,
            DBCompressionType::None,
            DBCompressionType::Lz4,
            DBCompressionType::Lz4,
            DBCompressionType::Lz4,
            DBCompressionType::Lz4,
            DBCompressionType::Lz4,
        ]);
        opts.set_bytes_per_sync(1 << 20);
        opts.set_merge_operator_associative("i64add", i64_add);
        // HyperClockCache: lookups without the LRU's per-shard mutex, which page reads (many
        // small point reads from the async workers) contended on.
        let cache = Cache::new_hyper_clock_cache(o.cache_mb << 20, 4 << 10);
        opts.set_block_based_table_factory(&table_options(&cache));
        let mut sst_opts = Options::default();
        sst_opts.set_compression_type(DBCompressionType::Lz4);
        sst_opts.set_block_based_table_factory(&table_options(&cache));
        let mut bulk_opts = Options::default();
        bulk_opts.set_compression_type(DBCompressionType::None);
        bulk_opts.set_merge_operator_associative("i64add", i64_add);
        bulk_opts.set_block_based_table_factory(&bulk_table_options(&cache));
        opts.create_missing_column_families(true);
        let family_opts = opts.clone();
        // Every family on disk must be opened; only `projection-N` ones hold a version.
        let names = Db::list_cf(&opts, path).unwrap_or_default();
        // The default family named too, so that it has a handle.
        let descriptors = std::iter::once(ColumnFamilyDescriptor::new(
            DEFAULT_COLUMN_FAMILY_NAME,
            opts.clone(),
        ))
        .chain(
            names
                .iter()
                .filter(|n| *n != DEFAULT_COLUMN_FAMILY_NAME)
                .map(|n| ColumnFamilyDescriptor::new(n, family_opts.clone())),
        );
        let mut families = Families::default();
        for n in &names {
            if let Some(prefix) = families::prefix_of(n) {
                families.add_own(prefix, n.clone());
            }
        }
        let db = Db::open_cf_descriptors(&opts, path, descriptors).map_err(|e| Error::Open {
            backend: "rocksdb",
            location: location.clone(),
            message: format!(
                "{}{}",
                e.clone().into_string(),
                if e.into_string().contains("lock") {
                    " (is another tidings process using this directory? the embedded store allows one process)"
                } else {
                    ""
                }
            ),
        })?;
        tracing::debug!(path = %location, sync = o.sync, cache_mb = o.cache_mb, "opened rocksdb store");
        Ok(RocksStore {
            db,
            families: RwLock::new(families),
            family_opts,
            deferred: Mutex::new(BTreeSet::new()),
            bulk_run: AtomicBool::new(false),
            commit_lock: Mutex::new(()),
            sync: o.sync,
            path: location,
            sst_opts,
            bulk_opts,
            loads: AtomicU64::new(0),
        })
    }

    /// Flushes memtables to disk, every family's (used before backups and at shutdown).
    pub fn flush(&self) -> Result<()> {
        for family in self.all_families() {
            self.db.flush_cf(&family).map_err(backend_err)?;
        }
        Ok(())
    }

    /// The default family: meta, marks, and the versions a store written before families
    /// kept there.
    fn default_family(&self) -> Family<'_> {
        self.db
            .cf_handle(DEFAULT_COLUMN_FAMILY_NAME)
            .expect("RocksDB always opens the default family")
    }

    /// The handle of `family` (`None`: the default one).
    fn handle(&self, family: Option<&str>) -> Family<'_> {
        family
            .and_then(|n| self.db.cf_handle(n))
            .unwrap_or_else(|| self.default_family())
    }

    /// The default family and every version's family.
    fn all_families(&self) -> Vec<Family<'_>> {
        let f = read(&self.families);
        std::iter::once(None)
            .chain(f.names().map(Some))
            .map(|n| self.handle(n))
            .collect()
    }

    /// The family that holds `key`, to read it.
    fn family(&self, key: &[u8]) -> Family<'_> {
        self.handle(read(&self.families).of(key))
    }

    /// The families of `keys`, in order (consecutive keys of one version share a lookup).
    fn families_of(&self, keys: &[Vec<u8>]) -> Vec<Family<'_>> {
        let f = read(&self.families);
        let mut last: Option<(Option<&[u8]>, Family<'_>)> = None;
        keys.iter()
            .map(|k| {
                let prefix = families::version_prefix(k);
                match &last {
                    Some((p, fam)) if *p == prefix => fam.clone(),
                    _ => {
                        let fam = self.handle(f.of(k));
                        last = Some((prefix, fam.clone()));
                        fam
                    }
                }
            })
            .collect()
    }

    /// `begin..end` cut where its family changes, in key order, each part with its family.
    fn segments(&self, begin: &[u8], end: &[u8]) -> Vec<(Family<'_>, Vec<u8>, Vec<u8>)> {
        read(&self.families)
            .segments(begin, end)
            .into_iter()
            .map(|Segment { family, begin, end }| (self.handle(family), begin, end))
            .collect()
    }

    /// The family to write `key` into (and its name, `None` for the default family). The
    /// first write of a version in this process places it: in a family of its own, created
    /// now, unless the default family holds keys of it already (a store written before
    /// families, whose versions stay where they are).
    fn write_family(&self, key: &[u8]) -> Result<(Family<'_>, Option<String>)> {
        let Some(prefix) = families::version_prefix(key) else {
            return Ok((self.default_family(), None));
        };
        let found = |f: &Families| {
            let name = f.of(key).map(str::to_owned);
            (self.handle(name.as_deref()), name)
        };
        {
            let f = read(&self.families);
            if f.placed(prefix) {
                return Ok(found(&f));
            }
        }
        let mut f = self
            .families
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !f.placed(prefix) {
            let mut it = self.db.raw_iterator_cf(&self.default_family());
            it.seek(prefix);
            let legacy = it.key().is_some_and(|k| k.starts_with(prefix));
            it.status().map_err(backend_err)?;
            if legacy {
                tracing::info!(
                    family = %families::family_name(prefix),
                    "this projection's keys stay in the default column family, where a build before families wrote them"
                );
                f.add_shared(prefix.to_vec());
            } else {
                let name = families::family_name(prefix);
                self.db
                    .create_cf(&name, &self.family_opts)
                    .map_err(backend_err)?;
                tracing::debug!(family = %name, "created a column family for a projection");
                f.add_own(prefix.to_vec(), name);
            }
        }
        Ok(found(&f))
    }

    /// Turns automatic compactions of `name` off for a bulk run into it (once per run): its
    /// ingested files stay in L0 until [`Store::finish_bulk`] merges them in one pass, instead
    /// of each L0 compaction rewriting the family's whole base level. Its L0 must not stall
    /// writes meanwhile (RocksDB delays every family's writes when one family's L0 is full).
    fn defer_compactions(&self, family: &Family<'_>, name: &str) -> Result<()> {
        let mut deferred = lock(&self.deferred);
        if deferred.contains(name) {
            return Ok(());
        }
        self.auto_compactions(family, false)?;
        deferred.insert(name.to_owned());
        tracing::debug!(family = name, "bulk run: compactions deferred");
        Ok(())
    }

    /// Ends the deferral of `name`'s compactions: merges its files now first if `compact`,
    /// then turns automatic compactions and write stalls back on. The merge runs without the
    /// deferral lock, which every commit checks: live writers never wait for it.
    fn end_deferral(&self, name: &str, compact: bool) -> Result<()> {
        if !lock(&self.deferred).contains(name) {
            return Ok(());
        }
        let family = self.handle(Some(name));
        if compact {
            self.compact_family(&family, name, "merged a bulk run's files");
        } else {
            tracing::warn!(
                family = name,
                level0_files = self.level0_files(&family),
                "a commit outside a bulk run writes a projection whose rebuild did not finish: its compactions resume now, and writes may slow down until they drain L0"
            );
        }
        let mut deferred = lock(&self.deferred);
        if !deferred.contains(name) {
            // Ended meanwhile by another thread.
            return Ok(());
        }
        self.auto_compactions(&family, true)?;
        deferred.remove(name);
        Ok(())
    }

    /// Turns `family`'s automatic compactions on or off, and its L0 write stalls with them:
    /// off, its L0 grows past RocksDB's triggers without stalling the store's writes (well
    /// past [`DEFERRED_L0_MAX`], where a bulk commit compacts it first).
    fn auto_compactions(&self, family: &Family<'_>, on: bool) -> Result<()> {
        let (slowdown, stop) = if on {
            (L0_SLOWDOWN.to_string(), L0_STOP.to_string())
        } else {
            let never = (DEFERRED_L0_MAX * 4).to_string();
            (never.clone(), never)
        };
        self.db
            .set_options_cf(
                family,
                &[
                    (
                        "disable_auto_compactions",
                        if on { "false" } else { "true" },
                    ),
                    ("level0_slowdown_writes_trigger", &slowdown),
                    ("level0_stop_writes_trigger", &stop),
                ],
            )
            .map_err(backend_err)
    }

    /// Compacts every family whose keys `ms` cleared all of (a dropped projection): its range
    /// tombstone alone would leave the files on disk until enough other writes there trigger
    /// a compaction, and a dropped version gets none. Waits (an operator's drop); views open
    /// before the clear keep what they read, as compaction keeps what a snapshot sees.
    fn reclaim_cleared(&self, ms: &[Mutation]) {
        if !ms.iter().any(|m| matches!(m, Mutation::ClearRange { .. })) {
            return;
        }
        let mut cleared = Vec::new();
        {
            let f = read(&self.families);
            for m in ms {
                let Mutation::ClearRange { begin, end } = m else {
                    continue;
                };
                for seg in f.segments(begin, end) {
                    let Some(name) = seg.family else { continue };
                    let Some(prefix) = families::prefix_of(name) else {
                        continue;
                    };
                    // Every key of the version lies in prefix·00 .. prefix·ff (tuple codes).
                    let whole = seg.begin <= [prefix.as_slice(), &[0x00]].concat()
                        && seg.end >= [prefix.as_slice(), &[0xff]].concat();
                    if whole {
                        cleared.push(name.to_owned());
                    }
                }
            }
        }
        for name in cleared {
            self.compact_family(
                &self.handle(Some(&name)),
                &name,
                "reclaimed the disk space of a cleared projection",
            );
        }
    }

    /// Compacts all of `family` now and waits: its L0 files are merged into the levels below
    /// in one pass (into the bottom level while the family is small, as a new version is).
    /// Other families' compactions go on meanwhile.
    ///
    /// The bottom level is written compressed (LZ4) in this merge only. It is the base level of
    /// a small family, which [`RocksStore::open`]'s list leaves uncompressed: cheap to rewrite
    /// and to read while a store is small, but a rebuilt version lands there whole (22M index
    /// entries: 525 MB compressed, ~1.5 GB not), and later compactions rewrite it only piece
    /// by piece.
    fn compact_family(&self, family: &Family<'_>, name: &str, what: &str) {
        let (started, files) = (Instant::now(), self.level0_files(family));
        let mut o = CompactOptions::default();
        o.set_exclusive_manual_compaction(false);
        let bottom = |compression: &str| {
            if let Err(e) = self
                .db
                .set_options_cf(family, &[("bottommost_compression", compression)])
            {
                tracing::warn!(family = name, error = %e.into_string(), "cannot set the bottom level's compression");
            }
        };
        bottom("kLZ4Compression");
        self.db
            .compact_range_cf_opt(family, None::<&[u8]>, None::<&[u8]>, &o);
        bottom("kDisableCompressionOption");
        tracing::info!(
            family = name,
            level0_files = files,
            ms = started.elapsed().as_millis() as u64,
            left_in_level0 = self.level0_files(family),
            "{what}"
        );
    }

    /// Flushes the memtables and waits until no compaction is queued or running: a benchmark
    /// measures its own work on a store at rest, not the store finishing what it was doing
    /// when it was last closed (RocksDB cancels a running compaction at close and starts it
    /// again at the next open). Call it while nothing writes: RocksDB waits for whatever
    /// compactions new writes keep causing.
    pub fn settle(&self) -> Result<()> {
        let mut o = rocksdb::WaitForCompactOptions::default();
        o.set_flush(true);
        // Paused background work would never finish: return instead of waiting forever.
        o.set_abort_on_pause(true);
        self.db.wait_for_compact(&o).map_err(backend_err)
    }

    /// Checks the preconditions against the latest state and, if they hold, runs `write`, all
    /// under the commit lock (one process owns the directory, so that makes it atomic).
    fn checked<T>(
        &self,
        preconditions: &[crate::Precondition],
        write: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        // A poisoned lock only means another commit panicked; the DB itself is consistent.
        let _guard = self
            .commit_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for p in preconditions {
            let found = self
                .db
                .get_cf(&self.family(&p.key), &p.key)
                .map_err(backend_err)?;
            if found != p.expected {
                return Err(Error::Conflict {
                    key: p.key.clone(),
                    expected: p.expected.clone(),
                    found,
                });
            }
        }
        write()
    }

    /// Commits through the memtable and the WAL.
    fn write_batch(&self, batch: &WriteBatch) -> Result<()> {
        let wb = self.rocks_batch(&batch.mutations)?;
        let mut wo = WriteOptions::default();
        wo.set_sync(self.sync);
        self.checked(&batch.preconditions, || {
            self.db.write_opt(wb, &wo).map_err(backend_err)
        })
    }

    /// The files in `family`'s L0 now.
    fn level0_files(&self, family: &Family<'_>) -> u64 {
        self.db
            .property_int_value_cf(family, "rocksdb.num-files-at-level0")
            .ok()
            .flatten()
            .unwrap_or(0)
    }

    /// Waits while `family`'s L0 holds [`L0_SLOWDOWN`] files or more (at most
    /// [`L0_WAIT_LIMIT`]), as RocksDB's own write stall would for a write through the memtable.
    fn wait_for_l0(&self, family: &Family<'_>) {
        let (started, mut files) = (Instant::now(), self.level0_files(family));
        if files < L0_SLOWDOWN as u64 {
            return;
        }
        while files >= L0_SLOWDOWN as u64 {
            if started.elapsed() >= L0_WAIT_LIMIT {
                tracing::warn!(
                    files,
                    waited_s = started.elapsed().as_secs(),
                    "L0 is not draining (is compaction failing? see RocksDB's LOG in the store directory); ingesting anyway"
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
            files = self.level0_files(family);
        }
        tracing::debug!(
            files_now = files,
            ms = started.elapsed().as_millis() as u64,
            "bulk commit waited for compaction to drain L0"
        );
    }

    /// Writes the keys of `w` at `order` (in key order) as one table file per keyspace,
    /// pushing each file's path to `paths` as it is created (so a failure can remove them).
    fn write_tables(
        &self,
        w: Writes<'_>,
        order: &[u32],
        paths: &mut Vec<PathBuf>,
    ) -> std::result::Result<(), rocksdb::Error> {
        // One file per keyspace: the keys are in order, so each keyspace is one run. A key
        // that starts with the open file's whole keyspace (both elements parsed) is of that
        // keyspace, as tuple elements delimit themselves; only other keys are parsed.
        let mut file: Option<(&[u8], bool, SstFileWriter)> = None;
        fold_in_order(w, order, |k, f| {
            let same = match &file {
                Some((open, true, _)) => k.starts_with(open),
                Some((open, false, _)) => *open == keyspace_prefix(k).0,
                None => false,
            };
            let writer = match &mut file {
                Some((_, _, writer)) if same => writer,
                _ => {
                    if let Some((_, _, mut done)) = file.take() {
                        done.finish()?;
                    }
                    let (space, whole) = keyspace_prefix(k);
                    let path = self.table_path("bulk");
                    let writer = SstFileWriter::create(&self.bulk_opts);
                    writer.open(&path)?;
                    paths.push(path);
                    &mut file.insert((space, whole, writer)).2
                }
            };
            match f {
                Folded::Put(v) => writer.put(k, v),
                Folded::PutSum(n) => writer.put(k, n.to_le_bytes()),
                Folded::Delete => writer.delete(k),
                Folded::Merge(d) => writer.merge(k, d.to_le_bytes()),
            }
        })?;
        if let Some((_, _, mut done)) = file {
            done.finish()?;
        }
        Ok(())
    }

    /// A fresh path for a table file beside the store.
    fn table_path(&self, what: &str) -> PathBuf {
        let n = self.loads.fetch_add(1, Ordering::Relaxed);
        PathBuf::from(&self.path).join(format!("{what}-{}-{n}.sst", std::process::id()))
    }

    /// Ingests the table files at `paths` (moved into `family`) in one atomic step, if
    /// writing them (`written`) succeeded; removes them on any failure.
    fn ingest(
        &self,
        written: Result<()>,
        paths: &[PathBuf],
        preconditions: &[crate::Precondition],
        family: &Family<'_>,
    ) -> Result<()> {
        let mut io = IngestExternalFileOptions::default();
        io.set_move_files(true);
        let done = written.and_then(|()| {
            self.checked(preconditions, || {
                self.db
                    .ingest_external_file_cf_opts(family, &io, paths.iter().collect())
                    .map_err(backend_err)
            })
        });
        if done.is_err() {
            for p in paths {
                let _ = std::fs::remove_file(p);
            }
        }
        done
    }

    /// The RocksDB write batch of `ms`, in [`memtable_order`], each key in its family.
    fn rocks_batch(&self, ms: &[Mutation]) -> Result<rocksdb::WriteBatch> {
        let mut wb = rocksdb::WriteBatch::default();
        let ordered = memtable_order(ms);
        let mut ms = ordered.iter().copied().peekable();
        // Keys in order: consecutive ones are mostly of one version, which shares a lookup.
        let mut last: Option<(Option<Vec<u8>>, Family<'_>)> = None;
        let mut family = |key: &[u8]| -> Result<Family<'_>> {
            let prefix = families::version_prefix(key);
            if let Some((p, f)) = &last {
                if p.as_deref() == prefix {
                    return Ok(f.clone());
                }
            }
            let (f, _) = self.write_family(key)?;
            last = Some((prefix.map(<[u8]>::to_vec), f.clone()));
            Ok(f)
        };
        while let Some(m) = ms.next() {
            match m {
                Mutation::Set { key, value } => wb.put_cf(&family(key)?, key, value),
                Mutation::Clear { key } => wb.delete_cf(&family(key)?, key),
                Mutation::ClearRange { begin, end } => {
                    for (f, b, e) in self.segments(begin, end) {
                        wb.delete_range_cf(&f, b, e);
                    }
                }
                Mutation::Add { key, delta } => {
                    // Adds to one key sit next to each other now (e.g. a feed's version, bumped
                    // per fanned-out entry): one merge operand for their sum, not one each.
                    let mut sum = *delta;
                    while let Some(Mutation::Add { key: k, delta: d }) = ms.peek() {
                        if k != key {
                            break;
                        }
                        sum = sum.wrapping_add(*d);
                        ms.next();
                    }
                    wb.merge_cf(&family(key)?, key, sum.to_le_bytes())
                }
            }
        }
        Ok(wb)
    }
}

/// Reads a lock a panicked holder poisoned: what it guards stays consistent (each update is one
/// insert).
fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Locks a mutex a panicked holder poisoned (see [`read`]).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What a key ends as after a batch's mutations: one entry of a table file.
#[derive(Debug, PartialEq, Eq)]
enum Folded<'a> {
    Put(&'a [u8]),
    PutSum(i64),
    Delete,
    /// An add over whatever the store holds: a merge operand.
    Merge(i64),
}

/// A bulk batch's writes, numbered: its mutations, then its groups' keys (the order they apply
/// in).
#[derive(Clone, Copy)]
struct Writes<'a> {
    ms: &'a [Mutation],
    groups: &'a KeyGroups,
}

/// One write of a key, as the fold takes it.
enum Write<'a> {
    Set(&'a [u8]),
    Clear,
    Add(i64),
}

impl<'a> Writes<'a> {
    fn len(&self) -> usize {
        self.ms.len() + self.groups.len()
    }

    fn key(&self, i: u32) -> &'a [u8] {
        let i = i as usize;
        match self.ms.get(i) {
            Some(m) => m.key(),
            None => self.groups.key(i - self.ms.len()),
        }
    }

    fn write(&self, i: u32) -> Write<'a> {
        let i = i as usize;
        match self.ms.get(i) {
            Some(Mutation::Set { value, .. }) => Write::Set(value),
            // A clear-range never gets here (`key_order` refuses it).
            Some(Mutation::Clear { .. } | Mutation::ClearRange { .. }) => Write::Clear,
            Some(Mutation::Add { delta, .. }) => Write::Add(*delta),
            None => match self.groups.value(i - self.ms.len()) {
                Some(v) => Write::Set(v),
                None => Write::Clear,
            },
        }
    }

    /// Brings write `i` closer, in `stage`s from far (0) to near (2): each stage fetches what
    /// the previous one brought in points to.
    fn prefetch(&self, i: u32, stage: u8) {
        let i = i as usize;
        match (self.ms.get(i), stage) {
            (Some(m), 0) => prefetch(std::ptr::from_ref(m).cast()),
            (Some(m), 1) => {
                prefetch(m.key().as_ptr());
                if let Mutation::Set { value, .. } = m {
                    prefetch(value.as_ptr());
                }
            }
            (Some(_), _) => {}
            (None, stage) => self.groups.prefetch(i - self.ms.len(), stage),
        }
    }
}

/// The order in which to fold the batch's writes: by key, and by position among the writes of
/// one key. `None` if the batch has a clear-range (it would have to cover keys of the same
/// file, which the file cannot order).
fn key_order(w: Writes<'_>) -> Option<Vec<u32>> {
    if w.ms
        .iter()
        .any(|m| matches!(m, Mutation::ClearRange { .. }))
    {
        return None;
    }
    let n = u32::try_from(w.len()).ok()?;
    Some(keysort::order(n, |i| w.key(i)))
}

/// A bulk batch with fewer keys than this is written on one thread.
const BULK_SPLIT_MIN: usize = 100_000;

/// `order` split in two halves between two different keys (each key's writes stay in one
/// half), or whole and an empty second part under `min` keys.
fn split_between_keys<'o>(w: Writes<'_>, order: &'o [u32], min: usize) -> (&'o [u32], &'o [u32]) {
    if order.len() < min.max(2) {
        return (order, &[]);
    }
    let mut mid = order.len() / 2;
    while mid < order.len() && w.key(order[mid - 1]) == w.key(order[mid]) {
        mid += 1;
    }
    order.split_at(mid)
}

/// Calls `emit` once per key of `w`, in key order ([`key_order`]), with what the key ends as:
/// what one table file can hold. Stops at `emit`'s first error.
///
/// In key order each write's key and value is a cache miss (mutations lie wherever the planner
/// allocated them; a group's keys spread over the whole keyspace): they are prefetched a few
/// keys ahead, and each is read once, while it is being written.
fn fold_in_order<'m, E>(
    w: Writes<'m>,
    order: &[u32],
    mut emit: impl FnMut(&'m [u8], Folded<'m>) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    // Where a write is found this far ahead, what that points to half as far, and so on.
    const AHEAD: usize = 16;
    let mut open: Option<(&[u8], Folded<'_>)> = None;
    for (j, &i) in order.iter().enumerate() {
        for (stage, ahead) in [(0, AHEAD), (1, AHEAD / 2), (2, AHEAD / 4)] {
            if let Some(&at) = order.get(j + ahead) {
                w.prefetch(at, stage);
            }
        }
        let key = w.key(i);
        let before = match open.take() {
            Some((k, f)) if k == key => Some(f),
            Some((k, f)) => {
                emit(k, f)?;
                None
            }
            None => None,
        };
        let now = match w.write(i) {
            Write::Set(v) => Folded::Put(v),
            Write::Clear => Folded::Delete,
            Write::Add(delta) => match before {
                None => Folded::Merge(delta),
                Some(Folded::Merge(d)) => Folded::Merge(d.wrapping_add(delta)),
                Some(Folded::Delete) => Folded::PutSum(delta),
                Some(Folded::PutSum(v)) => Folded::PutSum(v.wrapping_add(delta)),
                Some(Folded::Put(v)) => Folded::PutSum(decode_i64(v).wrapping_add(delta)),
            },
        };
        open = Some((key, now));
    }
    match open {
        Some((k, f)) => emit(k, f),
        None => Ok(()),
    }
}

/// Block-based table settings, shared by the store and the files bulk loads write.
fn table_options(cache: &Cache) -> BlockBasedOptions {
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    // A hash index inside each data block: point reads (bodies, counts, versions) find their
    // key without a binary search over the block's restart points.
    table.set_data_block_index_type(rocksdb::DataBlockIndexType::BinaryAndHash);
    table.set_data_block_hash_ratio(0.75);
    table.set_bloom_filter(10.0, false);
    table.set_cache_index_and_filter_blocks(true);
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);
    table.set_block_size(4 << 10);
    table
}

/// Settings of the files [`Store::commit_bulk`] writes. Each holds one keyspace of a batch and
/// sits in L0 until compaction rewrites it with [`table_options`]; meanwhile the only reads of
/// its keys are a rebuild's own (graph edges, counts, progress), so it skips the bloom filter
/// and the per-block hash index, which were a third of writing it.
fn bulk_table_options(cache: &Cache) -> BlockBasedOptions {
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    table.set_cache_index_and_filter_blocks(true);
    table.set_block_size(16 << 10);
    table
}

struct RocksView<'a> {
    store: &'a RocksStore,
    snap: SnapshotWithThreadMode<'a, Db>,
    created: Instant,
}

impl RocksView<'_> {
    fn check_age(&self) -> Result<()> {
        let age = self.created.elapsed();
        if age > READ_VIEW_LIFETIME {
            return Err(Error::ReadViewExpired {
                age_ms: age.as_millis(),
            });
        }
        Ok(())
    }
}

impl ReadView for RocksView<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.check_age()?;
        limits::check_key(key)?;
        self.snap
            .get_cf(&self.store.family(key), key)
            .map_err(backend_err)
    }

    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        self.check_age()?;
        for k in keys {
            limits::check_key(k)?;
        }
        let families = self.store.families_of(keys);
        self.snap
            .multi_get_cf(families.iter().zip(keys))
            .into_iter()
            .map(|r| r.map_err(backend_err))
            .collect()
    }

    fn range(&self, begin: &[u8], end: &[u8], opts: RangeOptions) -> Result<Vec<KeyValue>> {
        self.check_age()?;
        limits::check_key(begin)?;
        limits::check_key(end)?;
        if begin >= end {
            return Ok(Vec::new());
        }
        let limit = if opts.limit == 0 {
            usize::MAX
        } else {
            opts.limit
        };
        // Limits are often generous bounds (a block list, the pulled set) on ranges that are
        // usually short: start small, as a large up-front allocation per read costs more than
        // the read (measured in `tidings bench query`).
        let mut out = Vec::with_capacity(limit.min(64));
        let mut segments = self.store.segments(begin, end);
        if opts.reverse {
            segments.reverse();
        }
        for (family, begin, end) in segments {
            let mut ro = ReadOptions::default();
            ro.set_iterate_lower_bound(begin.clone());
            ro.set_iterate_upper_bound(end);
            let mode = if opts.reverse {
                IteratorMode::End
            } else {
                IteratorMode::From(&begin, Direction::Forward)
            };
            for item in self.snap.iterator_cf_opt(&family, ro, mode) {
                let (k, v) = item.map_err(backend_err)?;
                out.push((k.into_vec(), v.into_vec()));
                if out.len() >= limit {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }

    fn scan(
        &self,
        begin: &[u8],
        end: &[u8],
        max_bytes: usize,
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<Option<Vec<u8>>> {
        self.check_age()?;
        limits::check_key(begin)?;
        limits::check_key(end)?;
        if begin >= end {
            return Ok(None);
        }
        let mut seen = 0usize;
        for (family, begin, end) in self.store.segments(begin, end) {
            let mut ro = ReadOptions::default();
            ro.set_iterate_upper_bound(end);
            // A walk over a whole keyspace must not evict what page reads keep cached.
            ro.fill_cache(false);
            ro.set_readahead_size(2 << 20);
            let mut it = self.snap.raw_iterator_cf_opt(&family, ro);
            it.seek(&begin);
            while let (Some(k), Some(v)) = (it.key(), it.value()) {
                if seen >= max_bytes {
                    return Ok(Some(k.to_vec()));
                }
                visit(k, v);
                seen += k.len() + v.len();
                it.next();
            }
            it.status().map_err(backend_err)?;
        }
        Ok(None)
    }
}

/// The batch's mutations in the order they are handed to RocksDB: sorted by key between
/// clear-ranges (a stable sort, so two mutations of one key keep their order; mutations of
/// different keys commute, and a clear-range is a barrier nothing moves across).
///
/// Why: a fan-out batch touches ~1,000 feeds spread over the whole keyspace. In key order, each
/// memtable skip-list insert starts from the splice the previous one left (RocksDB keeps it for
/// sequential inserts) instead of searching from the head, cache-missing on every level.
fn memtable_order(ms: &[Mutation]) -> Vec<&Mutation> {
    fn key(m: &Mutation) -> &[u8] {
        match m {
            Mutation::Set { key, .. } | Mutation::Clear { key } | Mutation::Add { key, .. } => key,
            Mutation::ClearRange { begin, .. } => begin,
        }
    }
    let mut out: Vec<&Mutation> = ms.iter().collect();
    for run in out.split_mut(|m| matches!(m, Mutation::ClearRange { .. })) {
        run.sort_by(|a, b| key(a).cmp(key(b)));
    }
    out
}

impl Store for RocksStore {
    fn snapshot(&self) -> Result<Box<dyn ReadView + '_>> {
        Ok(Box::new(RocksView {
            store: self,
            snap: self.db.snapshot(),
            created: Instant::now(),
        }))
    }

    fn commit(&self, batch: WriteBatch) -> Result<()> {
        limits::check_batch(&batch)?;
        // A commit outside a bulk run ends the deferral of the families it writes: their
        // version is being written live (a rebuild that stopped early, then switched to).
        if !lock(&self.deferred).is_empty() {
            let touched: BTreeSet<String> = {
                let f = read(&self.families);
                batch
                    .mutations
                    .iter()
                    .flat_map(|m| match m {
                        Mutation::ClearRange { begin, end } => f
                            .segments(begin, end)
                            .into_iter()
                            .filter_map(|s| s.family.map(str::to_owned))
                            .collect(),
                        Mutation::Set { key, .. }
                        | Mutation::Clear { key }
                        | Mutation::Add { key, .. } => {
                            f.of(key).map(str::to_owned).into_iter().collect::<Vec<_>>()
                        }
                    })
                    .collect()
            };
            for name in touched {
                self.end_deferral(&name, false)?;
            }
        }
        self.write_batch(&batch)?;
        self.reclaim_cleared(&batch.mutations);
        Ok(())
    }

    fn bulk_batch_limit(&self) -> Option<usize> {
        Some(limits::MAX_BULK_BATCH)
    }

    /// A family's L0 holds [`L0_BACKLOG`] files or more. Each bulk batch adds a few files to
    /// L0 (its keyspaces overlap the ones before), and each merge of them rewrites the rebuilt
    /// version's whole base level below: larger batches mean fewer files and fewer rewrites.
    fn bulk_backlog(&self) -> bool {
        self.all_families()
            .iter()
            .any(|f| self.level0_files(f) >= L0_BACKLOG)
    }

    /// From now on, the first bulk commit into a version's family turns its compactions off
    /// until [`Store::finish_bulk`].
    fn begin_bulk(&self) -> Result<()> {
        self.bulk_run.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Merges the files of every family whose compactions a bulk run deferred, one pass each,
    /// and turns their compactions back on. Bulk commits after it (a rebuild following the
    /// log's head) wait for compaction as outside a run.
    fn finish_bulk(&self) -> Result<()> {
        self.bulk_run.store(false, Ordering::SeqCst);
        let names: Vec<String> = lock(&self.deferred).iter().cloned().collect();
        for name in names {
            self.end_deferral(&name, true)?;
        }
        Ok(())
    }

    /// Folds the batch into one operation per key and writes it as table files, one per
    /// keyspace ([`keyspace_prefix`]; a batch of [`BULK_SPLIT_MIN`] keys or more is written as
    /// two halves of its key order on two threads, so the keyspace at the cut has two files
    /// that do not overlap), ingested together atomically after the preconditions are checked
    /// (a batch with a clear-range, or with keys of two families, goes through the memtable
    /// instead: RocksDB ingests atomically into one family only). Ingested files get a
    /// sequence number above every open view, so views keep their snapshot.
    ///
    /// Into a version's own family during a bulk run ([`Store::begin_bulk`]), the first bulk
    /// commit defers its compactions until [`Store::finish_bulk`] (or [`DEFERRED_L0_MAX`]
    /// files in L0); otherwise a commit waits while the family's L0 holds [`L0_SLOWDOWN`]
    /// files.
    fn commit_bulk(&self, batch: WriteBatch) -> Result<()> {
        self.commit_bulk_groups(batch, KeyGroups::new())
    }

    /// [`Store::commit_bulk`], the groups' keys folded in with the mutations from their buffer.
    fn commit_bulk_groups(&self, mut batch: WriteBatch, groups: KeyGroups) -> Result<()> {
        limits::check_bulk(&batch, &groups, limits::MAX_BULK_BATCH)?;
        let writes = Writes {
            ms: &batch.mutations,
            groups: &groups,
        };
        let Some(order) = key_order(writes) else {
            batch.extend(groups.mutations());
            return self.write_batch(&batch);
        };
        if order.is_empty() {
            return self.checked(&batch.preconditions, || Ok(()));
        }
        let (first_key, last_key) = (writes.key(order[0]), writes.key(order[order.len() - 1]));
        let (family, name) = self.write_family(first_key)?;
        self.write_family(last_key)?;
        let past_last = [last_key, &[0]].concat();
        if read(&self.families).segments(first_key, &past_last).len() > 1 {
            drop(order);
            batch.extend(groups.mutations());
            return self.write_batch(&batch);
        }
        // Two halves of the key order, written on two threads into their own table files:
        // the planning thread waits for this commit for much of it, leaving a core idle. The
        // halves split between two keys, so their files never overlap.
        let (first, second) = split_between_keys(writes, &order, BULK_SPLIT_MIN);
        let mut paths = Vec::new();
        let written = std::thread::scope(|scope| {
            let beside = if second.is_empty() {
                None
            } else {
                std::thread::Builder::new()
                    .name("bulk-write".into())
                    .spawn_scoped(scope, move || {
                        let mut paths = Vec::new();
                        (self.write_tables(writes, second, &mut paths), paths)
                    })
                    .ok()
            };
            let mut result = self.write_tables(writes, first, &mut paths);
            match beside {
                Some(h) => {
                    let (r, more) = h.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
                    paths.extend(more);
                    result = result.and(r);
                }
                // No second half, or no thread for it (then it is written here, after).
                None if result.is_ok() => result = self.write_tables(writes, second, &mut paths),
                None => {}
            }
            result
        })
        .map_err(backend_err);
        drop(order);
        // A failure here still goes through `ingest`, which removes the files written.
        let written = written.and_then(|()| {
            match &name {
                Some(name) if self.bulk_run.load(Ordering::SeqCst) => {
                    self.defer_compactions(&family, name)?;
                    if self.level0_files(&family) >= DEFERRED_L0_MAX {
                        self.compact_family(&family, name, "merged a bulk run's files (L0 full)");
                    }
                }
                _ => self.wait_for_l0(&family),
            }
            Ok(())
        });
        self.ingest(written, &paths, &batch.preconditions, &family)
    }

    fn backend(&self) -> &'static str {
        "rocksdb"
    }

    fn local_reads(&self) -> bool {
        true
    }

    /// Writes the pairs as one table file per family beside the store and ingests each: no
    /// memtable, no WAL, and in an empty range no compaction either (the file goes straight to
    /// the bottom level).
    fn load_sorted(&self, pairs: &[KeyValue]) -> Result<()> {
        for (k, v) in pairs {
            limits::check_key(k)?;
            limits::check_value_len(v.len())?;
        }
        // Sorted pairs: each family's are one run.
        let mut rest = pairs;
        while let Some((first, _)) = rest.first() {
            let (family, name) = self.write_family(first)?;
            let f = read(&self.families);
            let run = rest
                .iter()
                .position(|(k, _)| f.of(k) != name.as_deref())
                .unwrap_or(rest.len());
            drop(f);
            let (this, next) = rest.split_at(run);
            self.load_run(this, &family)?;
            rest = next;
        }
        Ok(())
    }

    fn estimated_size(&self, begin: &[u8], end: &[u8]) -> Result<u64> {
        let mut total = 0;
        for (family, begin, end) in self.segments(begin, end) {
            let sizes = self
                .db
                .get_approximate_sizes_cf(&family, &[rocksdb::Range::new(&begin, &end)]);
            total += sizes.first().copied().unwrap_or(0);
        }
        Ok(total)
    }
}

impl RocksStore {
    /// [`Store::load_sorted`] of pairs of one family: one table file.
    fn load_run(&self, pairs: &[KeyValue], family: &Family<'_>) -> Result<()> {
        let path = self.table_path("load");
        let written = (|| {
            let mut w = SstFileWriter::create(&self.sst_opts);
            w.open(&path)?;
            for (k, v) in pairs {
                w.put(k, v)?;
            }
            w.finish()
        })()
        .map_err(|e| Error::Backend {
            backend: "rocksdb",
            message: format!(
                "bulk load of {} pairs: {} (pairs must be sorted by key and distinct)",
                pairs.len(),
                e.into_string()
            ),
        });
        self.ingest(written, &[path], &[], family)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settle_waits_for_the_compaction_of_overlapping_files() {
        let dir = tempfile::tempdir().unwrap();
        let s = RocksStore::open(dir.path(), RocksOptions::default()).unwrap();
        let prop = |name: &str| s.db.property_int_value(name).unwrap().unwrap();
        // Eight flushed files over the same keys: past the L0 compaction trigger (4).
        for round in 0..8u32 {
            let mut b = WriteBatch::new();
            for i in 0..2_000u32 {
                b.set(
                    format!("k{i:05}").into_bytes(),
                    round.to_le_bytes().to_vec(),
                );
            }
            s.commit(b).unwrap();
            s.flush().unwrap();
        }
        s.settle().unwrap();
        assert_eq!(prop("rocksdb.compaction-pending"), 0);
        assert_eq!(prop("rocksdb.num-running-compactions"), 0);
        assert!(prop("rocksdb.num-files-at-level0") < 4);
        assert_eq!(
            s.snapshot().unwrap().get(b"k01999").unwrap(),
            Some(7u32.to_le_bytes().to_vec())
        );
    }

    #[test]
    fn bulk_commits_wait_for_compaction_past_the_l0_slowdown_trigger() {
        let dir = tempfile::tempdir().unwrap();
        let s = RocksStore::open(dir.path(), RocksOptions::default()).unwrap();
        let level0 = || s.level0_files(&s.default_family());
        let compactions = |on: bool| {
            s.db.set_options(&[(
                "disable_auto_compactions",
                if on { "false" } else { "true" },
            )])
            .unwrap()
        };
        // Each batch is one table file over the same keys.
        let batch = |round: u32| {
            let mut b = WriteBatch::new();
            for i in 0..500u32 {
                b.set(
                    format!("k{i:04}").into_bytes(),
                    round.to_le_bytes().to_vec(),
                );
            }
            b
        };
        compactions(false);
        // The first file overlaps nothing and goes to the bottom level; the rest stay in L0.
        let rounds = L0_SLOWDOWN as u32 + 1;
        assert!(!s.bulk_backlog());
        for round in 0..rounds {
            s.commit_bulk_groups(batch(round), KeyGroups::new())
                .unwrap();
            // Round r leaves r files in L0: a backlog from half the slowdown trigger on.
            assert_eq!(
                s.bulk_backlog(),
                u64::from(round) >= L0_BACKLOG,
                "round {round}"
            );
        }
        assert_eq!(level0(), L0_SLOWDOWN as u64);
        std::thread::scope(|scope| {
            let next = scope.spawn(|| s.commit_bulk_groups(batch(rounds), KeyGroups::new()));
            // With compactions off, L0 cannot drain: the commit is still waiting, however long
            // it is given.
            std::thread::sleep(Duration::from_millis(300));
            assert!(
                !next.is_finished(),
                "a bulk commit ingested past the trigger"
            );
            assert_eq!(level0(), L0_SLOWDOWN as u64);
            compactions(true);
            next.join().unwrap().unwrap();
        });
        assert!(level0() <= L0_SLOWDOWN as u64);
        s.settle().unwrap();
        assert!(!s.bulk_backlog(), "{} files left in L0", level0());
        let last = rounds.to_le_bytes().to_vec();
        assert_eq!(s.snapshot().unwrap().get(b"k0499").unwrap(), Some(last));
        // Those compactions ran on the low-priority pool, which lowers a thread's priority
        // before it runs a job.
        let niced = std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| {
                let t = t.ok()?.path();
                let comm = std::fs::read_to_string(t.join("comm")).ok()?;
                let stat = std::fs::read_to_string(t.join("stat")).ok()?;
                // The fields after the parenthesised name: state is the 3rd, nice the 19th.
                let nice = stat
                    .rsplit_once(')')?
                    .1
                    .split_whitespace()
                    .nth(16)?
                    .to_string();
                (comm.trim() == "rocksdb:low").then_some(nice)
            })
            .collect::<Vec<_>>();
        assert!(
            niced.iter().any(|n| n == "19"),
            "no compaction thread at nice 19: {niced:?}"
        );
    }

    #[test]
    fn a_large_bulk_commit_is_written_in_two_halves_that_keep_each_key_whole() {
        let dir = tempfile::tempdir().unwrap();
        let s = RocksStore::open(dir.path(), RocksOptions::default()).unwrap();
        let keys = BULK_SPLIT_MIN as u32;
        let key = |i: u32| tidings_core::keys::projection(1).pack(&("cnt", i64::from(i)));
        let mut b = WriteBatch::new();
        // Every key is added to three times, the writes of one key far apart in the batch:
        // a key whose writes were split between the halves would be written twice, overlapping.
        for round in 1..=3i64 {
            for i in 0..keys {
                b.add(key(i), round);
            }
        }
        s.commit_bulk(b).unwrap();
        let mut files = s.db.live_files().unwrap();
        assert_eq!(files.len(), 2, "{files:?}");
        files.sort_by(|x, y| x.start_key.cmp(&y.start_key));
        assert!(files[0].end_key < files[1].start_key, "{files:?}");
        assert_eq!(
            files.iter().map(|f| f.num_entries).sum::<u64>(),
            u64::from(keys)
        );
        let v = s.snapshot().unwrap();
        for i in [0, keys / 2 - 1, keys / 2, keys / 2 + 1, keys - 1] {
            assert_eq!(v.get(&key(i)).unwrap(), Some(6i64.to_le_bytes().to_vec()));
        }
    }

    #[test]
    fn split_between_keys_moves_the_cut_past_a_run_of_one_key() {
        let ms: Vec<Mutation> = [b"a", b"b", b"b", b"b", b"c"]
            .iter()
            .map(|k| Mutation::Set {
                key: k.to_vec(),
                value: Vec::new(),
            })
            .collect();
        let groups = KeyGroups::new();
        let w = Writes {
            ms: &ms,
            groups: &groups,
        };
        let order = [0, 1, 2, 3, 4];
        assert_eq!(split_between_keys(w, &order, 2), (&order[..4], &order[4..]));
        // The cut only moves forward: past the end, the whole is one part.
        assert_eq!(
            split_between_keys(w, &order[..4], 2),
            (&order[..4], &[][..])
        );
        assert_eq!(
            split_between_keys(w, &order[1..4], 2),
            (&order[1..4], &[][..])
        );
        assert_eq!(split_between_keys(w, &order, 6), (&order[..], &[][..]));
    }

    #[test]
    fn a_bulk_commit_writes_one_table_file_per_keyspace() {
        let dir = tempfile::tempdir().unwrap();
        let s = RocksStore::open(dir.path(), RocksOptions::default()).unwrap();
        let key = |p: i64, space: &str, n: i64| tidings_core::keys::projection(p).pack(&(space, n));
        let keyspace = |p: i64, space: &str| tidings_core::keys::projection(p).pack(&(space,));
        let mut b = WriteBatch::new();
        for n in 0..50 {
            // "feed" and "feedx" share bytes up to the end of "feed".
            for space in ["feed", "feedx", "msg"] {
                b.set(key(1, space, n), n.to_le_bytes().to_vec());
            }
            b.add(key(1, "cnt", n % 7), 1);
        }
        s.commit_bulk(b).unwrap();
        let files = s.db.live_files().unwrap();
        let spaces = |f: &rocksdb::LiveFile| {
            let (a, z) = (f.start_key.clone().unwrap(), f.end_key.clone().unwrap());
            (
                keyspace_prefix(&a).0.to_vec(),
                keyspace_prefix(&z).0.to_vec(),
            )
        };
        let mut seen: Vec<Vec<u8>> = files
            .iter()
            .map(|f| {
                assert_eq!(f.column_family_name, "projection-1", "{f:?}");
                let (first, last) = spaces(f);
                assert_eq!(first, last, "a file spans two keyspaces: {f:?}");
                first
            })
            .collect();
        seen.sort();
        let mut want = vec![
            keyspace(1, "cnt"),
            keyspace(1, "feed"),
            keyspace(1, "feedx"),
            keyspace(1, "msg"),
        ];
        want.sort();
        assert_eq!(seen, want);
        let v = s.snapshot().unwrap();
        assert_eq!(
            v.get(&key(1, "feedx", 49)).unwrap(),
            Some(49i64.to_le_bytes().to_vec())
        );
        assert_eq!(
            v.get(&key(1, "cnt", 0)).unwrap(),
            Some(8i64.to_le_bytes().to_vec())
        );
        drop(v);

        // Keys of two families (projection 2's, raw keys of the default family): RocksDB
        // ingests into one family at a time, so the batch goes through the memtable, whole.
        let mut b = WriteBatch::new();
        b.set(key(2, "feed", 1), b"two".to_vec())
            .set(b"\xferaw".to_vec(), b"raw".to_vec())
            .require(key(1, "msg", 3), Some(3i64.to_le_bytes().to_vec()));
        s.commit_bulk(b).unwrap();
        assert_eq!(s.db.live_files().unwrap().len(), files.len());
        let v = s.snapshot().unwrap();
        assert_eq!(v.get(&key(2, "feed", 1)).unwrap(), Some(b"two".to_vec()));
        assert_eq!(v.get(b"\xferaw").unwrap(), Some(b"raw".to_vec()));
    }

    fn key(p: i64, space: &str, n: i64) -> Vec<u8> {
        tidings_core::keys::projection(p).pack(&(space, n))
    }

    /// The names of the families holding live table files, and each file's level.
    fn files_by_family(s: &RocksStore) -> Vec<(String, i32)> {
        let mut files: Vec<(String, i32)> =
            s.db.live_files()
                .unwrap()
                .into_iter()
                .map(|f| (f.column_family_name, f.level))
                .collect();
        files.sort();
        files
    }

    /// The families holding live table files.
    fn families_with_files(s: &RocksStore) -> Vec<String> {
        let mut names: Vec<String> = files_by_family(s).into_iter().map(|f| f.0).collect();
        names.dedup();
        names
    }

    #[test]
    fn versions_live_in_families_of_their_own_and_reads_cross_them_in_key_order() {
        let dir = tempfile::tempdir().unwrap();
        let meta = tidings_core::keys::meta::active();
        let mut all = Vec::new();
        {
            let s = RocksStore::open(dir.path(), RocksOptions::default()).unwrap();
            let mut b = WriteBatch::new();
            b.set(meta.clone(), b"m".to_vec());
            all.push((meta.clone(), b"m".to_vec()));
            for p in [1, 2, 300] {
                for n in 0..10 {
                    b.set(key(p, "feed", n), vec![p as u8, n as u8]);
                    all.push((key(p, "feed", n), vec![p as u8, n as u8]));
                }
            }
            b.set(b"\xfe".to_vec(), b"raw".to_vec());
            all.push((b"\xfe".to_vec(), b"raw".to_vec()));
            // One atomic batch over four families.
            s.commit(b).unwrap();
            s.flush().unwrap();
            assert_eq!(
                families_with_files(&s),
                ["default", "projection-1", "projection-2", "projection-300"]
            );
        }
        all.sort();
        // Reopened: the families and what they hold are found again.
        let s = RocksStore::open(dir.path(), RocksOptions::default()).unwrap();
        let v = s.snapshot().unwrap();
        assert_eq!(
            v.range(&[0], &[0xff], RangeOptions::forward(0)).unwrap(),
            all
        );
        let mut rev = all.clone();
        rev.reverse();
        assert_eq!(
            v.range(&[0], &[0xff], RangeOptions::reverse(0)).unwrap(),
            rev
        );
        // Limits stop inside a family, wherever the walk started.
        assert_eq!(
            v.range(&[0], &[0xff], RangeOptions::forward(15)).unwrap(),
            all[..15]
        );
        assert_eq!(
            v.range(&[0], &[0xff], RangeOptions::reverse(12)).unwrap(),
            rev[..12]
        );
        let (b, e) = (key(1, "feed", 5), key(300, "feed", 2));
        let want: Vec<KeyValue> = all
            .iter()
            .filter(|(k, _)| *k >= b && *k < e)
            .cloned()
            .collect();
        assert_eq!(want.len(), 5 + 10 + 2);
        assert_eq!(v.range(&b, &e, RangeOptions::forward(0)).unwrap(), want);
        // A scan pages across families with the key to go on from.
        let mut seen = Vec::new();
        let mut from = vec![0u8];
        while let Some(next) = v
            .scan(&from, &[0xff], 40, &mut |k, v| {
                seen.push((k.to_vec(), v.to_vec()))
            })
            .unwrap()
        {
            from = next;
        }
        assert_eq!(seen, all);
        let keys = vec![
            key(300, "feed", 9),
            meta.clone(),
            key(1, "feed", 0),
            key(2, "x", 0),
        ];
        assert_eq!(
            v.get_many(&keys).unwrap(),
            vec![
                Some(vec![44, 9]),
                Some(b"m".to_vec()),
                Some(vec![1, 0]),
                None
            ]
        );
        assert!(s.estimated_size(&[0], &[0xff]).unwrap() > 0);
        drop(v);
        // A clear-range over parts of three families, in one batch.
        let mut c = WriteBatch::new();
        c.clear_range(key(1, "feed", 8), key(300, "feed", 1));
        s.commit(c).unwrap();
        let left: Vec<Vec<u8>> = s
            .snapshot()
            .unwrap()
            .range(&[0], &[0xff], RangeOptions::forward(0))
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        let want: Vec<Vec<u8>> = all
            .iter()
            .map(|(k, _)| k.clone())
            .filter(|k| *k < key(1, "feed", 8) || *k >= key(300, "feed", 1))
            .collect();
        assert_eq!(left, want);
    }

    #[test]
    fn a_rarely_written_family_does_not_keep_the_write_ahead_log() {
        let dir = tempfile::tempdir().unwrap();
        let s = RocksStore::open(dir.path(), RocksOptions::default()).unwrap();
        let mut b = WriteBatch::new();
        b.set(tidings_core::keys::meta::active(), b"1".to_vec());
        s.commit(b).unwrap();
        let logs = || -> u64 {
            std::fs::read_dir(dir.path())
                .unwrap()
                .filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
                .map(|e| e.metadata().unwrap().len())
                .sum()
        };
        // 160 MiB into projection 1's family, the default family's memtable holding one key.
        for round in 0..160i64 {
            let mut b = WriteBatch::new();
            for n in 0..1024 {
                b.set(key(1, "feed", round * 1024 + n), vec![7u8; 1000]);
            }
            s.commit(b).unwrap();
        }
        let bound = (MAX_WAL_MEMTABLES * RocksOptions::default().memtable_mb as u64) << 20;
        assert!(logs() < bound + (16 << 20), "{} MB of logs", logs() >> 20);
    }

    #[test]
    fn clearing_a_whole_version_reclaims_its_files_and_keeps_open_views() {
        let dir = tempfile::tempdir().unwrap();
        let s = RocksStore::open(dir.path(), RocksOptions::default()).unwrap();
        let fill = |p: i64| {
            let mut b = WriteBatch::new();
            for n in 0..1_000 {
                b.set(key(p, "feed", n), vec![1u8; 100]);
            }
            s.commit(b).unwrap();
        };
        fill(2);
        fill(3);
        s.flush().unwrap();
        let files_of = |name: &str| files_by_family(&s).iter().filter(|f| f.0 == name).count();
        assert!(files_of("projection-2") > 0 && files_of("projection-3") > 0);
        let (b, e) = tidings_core::keys::projection(2).range();
        // A part of a version: nothing to reclaim yet.
        let mut part = WriteBatch::new();
        part.clear_range(b.clone(), key(2, "feed", 500));
        s.commit(part).unwrap();
        assert!(files_of("projection-2") > 0);
        // The whole version, as `tidings drop` clears it, while a view is open.
        let view = s.snapshot().unwrap();
        let mut whole = WriteBatch::new();
        whole.clear_range(b.clone(), e.clone());
        s.commit(whole).unwrap();
        assert_eq!(
            view.get(&key(2, "feed", 999)).unwrap(),
            Some(vec![1u8; 100]),
            "an open view lost what it saw"
        );
        drop(view);
        // With no view open, the next drop leaves no file behind.
        fill(2);
        s.flush().unwrap();
        let mut again = WriteBatch::new();
        again.clear_range(b.clone(), e.clone());
        s.commit(again).unwrap();
        assert_eq!(files_of("projection-2"), 0);
        assert!(s
            .snapshot()
            .unwrap()
            .range(&b, &e, RangeOptions::forward(0))
            .unwrap()
            .is_empty());
        assert!(
            files_of("projection-3") > 0,
            "another version was compacted away"
        );
    }

    #[test]
    fn a_store_written_before_families_keeps_its_versions_in_the_default_family() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = RocksStore::open(dir.path(), RocksOptions::default()).unwrap();
            // As a build before families wrote projection 1: into the default family.
            s.db.put_cf(&s.default_family(), key(1, "feed", 0), b"old")
                .unwrap();
        }
        let s = RocksStore::open(dir.path(), RocksOptions::default()).unwrap();
        let mut b = WriteBatch::new();
        b.set(key(1, "feed", 1), b"new".to_vec())
            .set(key(2, "feed", 1), b"two".to_vec());
        s.commit(b).unwrap();
        s.flush().unwrap();
        assert_eq!(families_with_files(&s), ["default", "projection-2"]);
        let (b, e) = tidings_core::keys::projection(1).range();
        assert_eq!(
            s.snapshot()
                .unwrap()
                .range(&b, &e, RangeOptions::forward(0))
                .unwrap()
                .len(),
            2
        );
    }

    /// A value of round `round`: compressible.
    fn feed_value(round: i64) -> Vec<u8> {
        [round.to_le_bytes().as_slice(), &[0; 200]].concat()
    }

    /// A batch of 200 keys of projection 1's feed, each file over the same keys.
    fn feed_batch(round: i64) -> WriteBatch {
        let mut b = WriteBatch::new();
        for n in 0..200 {
            b.set(key(1, "feed", n), feed_value(round));
        }
        b
    }

    #[test]
    fn a_bulk_run_defers_its_familys_compactions_and_merges_its_files_once_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let s = RocksStore::open(dir.path(), RocksOptions::default()).unwrap();
        s.begin_bulk().unwrap();
        let rounds = L0_STOP as i64 + 4;
        for round in 0..rounds {
            s.commit_bulk(feed_batch(round)).unwrap();
        }
        let family = s.handle(Some("projection-1"));
        // Past RocksDB's L0 compaction and stop triggers, and nothing stalls: the first file
        // went to the bottom level (it overlapped nothing), the rest wait in L0.
        assert_eq!(s.level0_files(&family), rounds as u64 - 1);
        let prop = |name: &str| s.db.property_int_value(name).unwrap().unwrap();
        assert_eq!(prop("rocksdb.is-write-stopped"), 0);
        assert_eq!(prop("rocksdb.actual-delayed-write-rate"), 0);
        let mut live = WriteBatch::new();
        live.set(b"\xfelive".to_vec(), b"v".to_vec());
        s.commit(live).unwrap();
        assert!(s.bulk_backlog());
        s.settle().unwrap();
        assert_eq!(
            s.level0_files(&family),
            rounds as u64 - 1,
            "compacted before the end"
        );

        s.finish_bulk().unwrap();
        // One merge into the bottom level, compressed there: 200 values of 208 bytes, most of
        // them zeros.
        assert_eq!(s.level0_files(&family), 0);
        let files: Vec<rocksdb::LiveFile> =
            s.db.live_files()
                .unwrap()
                .into_iter()
                .filter(|f| f.column_family_name == "projection-1")
                .collect();
        assert!(files.iter().all(|f| f.level == 6), "{files:?}");
        let bytes: usize = files.iter().map(|f| f.size).sum();
        assert!(bytes < 200 * 208 / 2, "{bytes} bytes: not compressed");
        let v = s.snapshot().unwrap();
        assert_eq!(
            v.get(&key(1, "feed", 199)).unwrap(),
            Some(feed_value(rounds - 1))
        );
        drop(v);
        assert!(!s.bulk_backlog());
        // Compactions are on again: files flushed later are compacted in the background.
        for round in 0..6 {
            s.commit(feed_batch(round)).unwrap();
            s.db.flush_cf(&family).unwrap();
        }
        s.settle().unwrap();
        assert!(s.level0_files(&family) < 4);
    }

    #[test]
    fn bulk_commits_outside_a_bulk_run_leave_compaction_on() {
        let dir = tempfile::tempdir().unwrap();
        let s = RocksStore::open(dir.path(), RocksOptions::default()).unwrap();
        let settled_level0 = |from: i64| {
            for round in from..from + 8 {
                s.commit_bulk(feed_batch(round)).unwrap();
            }
            s.settle().unwrap();
            s.level0_files(&s.handle(Some("projection-1")))
        };
        // No run open: compacted as they come.
        let left = settled_level0(0);
        assert!(left < 4);
        // A run's commits wait in L0 until it finishes; the ones after it (a rebuild that
        // follows the log's head) are compacted again.
        s.begin_bulk().unwrap();
        assert_eq!(settled_level0(8), left + 8);
        s.finish_bulk().unwrap();
        assert_eq!(s.level0_files(&s.handle(Some("projection-1"))), 0);
        assert!(settled_level0(16) < 4);
    }

    #[test]
    fn a_commit_outside_the_bulk_run_resumes_the_deferred_compactions() {
        let dir = tempfile::tempdir().unwrap();
        let s = RocksStore::open(dir.path(), RocksOptions::default()).unwrap();
        s.begin_bulk().unwrap();
        for round in 0..8 {
            s.commit_bulk(feed_batch(round)).unwrap();
        }
        let family = s.handle(Some("projection-1"));
        assert_eq!(s.level0_files(&family), 7);
        // A rebuild stopped early, then its version written live: compactions come back.
        s.commit(feed_batch(8)).unwrap();
        s.settle().unwrap();
        assert!(s.level0_files(&family) < 4, "{}", s.level0_files(&family));
        assert!(lock(&s.deferred).is_empty());
    }

    #[test]
    fn a_long_bulk_run_compacts_its_family_when_level0_is_full() {
        let dir = tempfile::tempdir().unwrap();
        let s = RocksStore::open(dir.path(), RocksOptions::default()).unwrap();
        s.begin_bulk().unwrap();
        let mut most = 0;
        for round in 0..DEFERRED_L0_MAX as i64 + 2 {
            s.commit_bulk(feed_batch(round)).unwrap();
            most = most.max(s.level0_files(&s.handle(Some("projection-1"))));
        }
        // The file of round 0 went to the bottom level; rounds 1..=MAX filled L0, and the
        // next commit compacted it before ingesting its own file.
        assert_eq!(most, DEFERRED_L0_MAX);
        let family = s.handle(Some("projection-1"));
        assert_eq!(s.level0_files(&family), 1);
    }

    #[test]
    fn estimated_size_counts_flushed_data() {
        let dir = tempfile::tempdir().unwrap();
        let s = RocksStore::open(dir.path(), RocksOptions::default()).unwrap();
        let mut b = WriteBatch::new();
        for i in 0..10_000u32 {
            b.set(format!("k{i:05}").into_bytes(), vec![7u8; 100]);
        }
        s.commit(b).unwrap();
        s.flush().unwrap();
        let all = s.estimated_size(b"k", b"l").unwrap();
        assert!(all > 100_000, "{all} bytes estimated for ~1 MB");
        assert_eq!(s.estimated_size(b"x", b"y").unwrap(), 0);
    }

    #[test]
    fn folding_keeps_the_last_word_per_key_in_key_order() {
        let add = |k: &[u8], d| Mutation::Add {
            key: k.to_vec(),
            delta: d,
        };
        let ms = vec![
            add(b"c", 2),
            set(b"b", b"x"),
            add(b"c", 3),
            Mutation::Clear { key: b"b".to_vec() },
            set(b"a", &5i64.to_le_bytes()),
            add(b"a", 1),
            Mutation::Clear { key: b"d".to_vec() },
            add(b"d", 4),
        ];
        fn fold<'a>(
            ms: &'a [Mutation],
            groups: &'a KeyGroups,
        ) -> Option<Vec<(Vec<u8>, Folded<'a>)>> {
            let w = Writes { ms, groups };
            let order = key_order(w)?;
            let mut got = Vec::new();
            fold_in_order(w, &order, |k, f| {
                got.push((k.to_vec(), f));
                Ok::<_, ()>(())
            })
            .unwrap();
            Some(got)
        }
        let none = KeyGroups::new();
        let got = fold(&ms, &none).unwrap();
        assert_eq!(
            got,
            vec![
                (b"a".to_vec(), Folded::PutSum(6)),
                (b"b".to_vec(), Folded::Delete),
                (b"c".to_vec(), Folded::Merge(5)),
                (b"d".to_vec(), Folded::PutSum(4)),
            ]
        );
        // Group keys apply after the mutations, in the order they were pushed.
        let mut groups = KeyGroups::new();
        groups.group(Some(b"g1".to_vec()));
        for k in [b"b", b"e", b"c"] {
            groups.push(k);
        }
        groups.group(None).push(b"e");
        groups.group(Some(b"g3".to_vec())).push(b"a");
        let got = fold(&ms, &groups).unwrap();
        assert_eq!(
            got,
            vec![
                (b"a".to_vec(), Folded::Put(b"g3")),
                (b"b".to_vec(), Folded::Put(b"g1")),
                (b"c".to_vec(), Folded::Put(b"g1")),
                (b"d".to_vec(), Folded::PutSum(4)),
                (b"e".to_vec(), Folded::Delete),
            ]
        );
        let with_range = vec![Mutation::ClearRange {
            begin: b"a".to_vec(),
            end: b"b".to_vec(),
        }];
        assert!(fold(&with_range, &groups).is_none());
    }

    fn set(k: &[u8], v: &[u8]) -> Mutation {
        Mutation::Set {
            key: k.to_vec(),
            value: v.to_vec(),
        }
    }

    #[test]
    fn memtable_order_sorts_between_clear_ranges_and_keeps_same_key_order() {
        let cr = Mutation::ClearRange {
            begin: b"a".to_vec(),
            end: b"z".to_vec(),
        };
        let ms = vec![
            set(b"c", b"1"),
            set(b"a", b"1"),
            set(b"c", b"2"),
            Mutation::Clear { key: b"b".to_vec() },
            cr.clone(),
            set(b"b", b"3"),
            set(b"a", b"3"),
        ];
        let got: Vec<Mutation> = memtable_order(&ms).into_iter().cloned().collect();
        assert_eq!(
            got,
            vec![
                set(b"a", b"1"),
                Mutation::Clear { key: b"b".to_vec() },
                set(b"c", b"1"),
                set(b"c", b"2"),
                cr,
                set(b"a", b"3"),
                set(b"b", b"3"),
            ]
        );
    }
}
