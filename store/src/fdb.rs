//! The FoundationDB backend (cargo feature `fdb`): the [`Store`] port on a cluster.
//!
//! The port was shaped on FoundationDB, so this adapter is mostly a direct mapping. It is the
//! reference the RocksDB adapter ([`crate::rocks`]) imitates; both pass [`crate::conformance`].
//!
//! # Semantics mapping
//!
//! - **Read view** ([`Store::snapshot`]): one FDB transaction used only for snapshot reads
//!   (`snapshot = true`, read-your-writes disabled), whose read version is fetched when the view
//!   is created — FDB would otherwise pick it lazily at the first read, and the view would not
//!   see the state at its creation. `get_many` issues every get at once and joins them; `range`
//!   is one `get_range` stream (`begin` inclusive, `end` exclusive, `limit` 0 = unlimited,
//!   `reverse`) in `WantAll` mode. A view older than [`READ_VIEW_LIFETIME`] refuses to read with
//!   [`Error::ReadViewExpired`], exactly as RocksDB's does; FDB's own `transaction_too_old`
//!   (1007) maps to the same error. The view transaction also carries a timeout slightly longer
//!   than its lifetime, so a read against an unreachable cluster fails instead of hanging.
//! - **Write** ([`Store::commit`]): [`limits::check_batch`] first, then one FDB transaction in a
//!   retry loop driven by `on_error` (FDB's backoff and retryable-error rules), at most
//!   [`COMMIT_RETRY_LIMIT`] retries:
//!   1. every precondition key is read with `snapshot = false`, which adds a read conflict
//!      range: if another writer changes it before this commit, FDB fails the commit with
//!      `not_committed` (1020) and the loop retries, re-reading the key;
//!   2. a precondition that does not hold is [`Error::Conflict`] (not retried);
//!   3. mutations are applied in order: `Set` → `set`, `Clear` → `clear`, `ClearRange` →
//!      `clear_range` (skipped when `begin >= end`, as RocksDB does), `Add` → `atomic_op(ADD)`
//!      with the 8-byte little-endian delta (wrapping, absent = 0 — FDB's own semantics);
//!   4. `commit`.
//!
//!   FDB's `transaction_too_large` (2101) maps to [`Error::BatchTooLarge`]: FDB also counts
//!   conflict ranges (about twice every key), so a batch just under the port's limit can still
//!   exceed the cluster's.
//! - **Size** ([`Store::estimated_size`]): FDB's sampled `get_estimated_range_size_bytes`;
//!   small ranges (below the sampling granularity, ~100 kB+) may report 0.
//!
//! # Caveats
//!
//! - *Unknown commit results.* `commit_unknown_result` (1021) is retryable under FDB's rules, so
//!   the loop retries it, and the first attempt may in fact have committed. For a batch with a
//!   precondition the replay is safe: the precondition no longer holds and the retry reports
//!   [`Error::Conflict`] (which callers already treat as "re-read and decide"; a consumer
//!   re-reads its offset and finds the batch applied). A batch with an `Add` and **no**
//!   precondition may apply the add twice — FDB's own documented caveat for non-idempotent
//!   transactions. Consumer batches always carry the offset precondition, so they are safe.
//!   (FDB 7.3's `automatic_idempotency` option would remove this, but FDB marks it "not ready
//!   for general use".) Every such retry is logged at `warn`.
//! - *Unreachable cluster.* Views and [`FdbStore::open`] time out; a commit, like FDB's own
//!   retry loops, waits for the cluster for as long as it takes (a commit timeout would turn
//!   into another unknown result).
//! - *Network.* FDB's client network thread is started once per process and never stopped
//!   (see [`boot_network`]).
//! - Keys starting with `\xff` are FDB's system keyspace and rejected by the cluster with a
//!   [`Error::Backend`] error; tidings' tuple-encoded keys never start with it.
//!
//! # Running the conformance suite against a cluster
//!
//! Install the FoundationDB client library (`libfdb_c`, 7.3 or newer: the `foundationdb-clients`
//! package from <https://github.com/apple/foundationdb/releases>) and have a cluster reachable
//! (for a local one, also `foundationdb-server`), then:
//!
//! ```text
//! TIDINGS_FDB_CLUSTER_FILE=/etc/foundationdb/fdb.cluster \
//!     cargo test -p tidings-store --features fdb --test conformance_fdb
//! ```
//!
//! (`FDB_CLUSTER_FILE` works too.) Every check uses a fresh key prefix
//! `tidings-conformance/<unique>/`, cleared before and after. Without a cluster file the tests
//! skip with a message; without `libfdb_c` the test binary cannot even be linked, so CI only
//! type-checks this module (`cargo check --features fdb`, headers embedded).

use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use foundationdb::api::{FdbApiBuilder, NetworkAutoStop};
use foundationdb::options::{MutationType, StreamingMode, TransactionOption};
use foundationdb::{Database, FdbError, KeySelector, RangeOption, Transaction};
use futures::executor::block_on;
use futures::future::try_join_all;
use futures::TryStreamExt;
use tidings_core::Mutation;

use crate::batch::Precondition;
use crate::error::{Error, Result};
use crate::limits::{self, MAX_BATCH, READ_VIEW_LIFETIME};
use crate::{KeyValue, RangeOptions, ReadView, Store, WriteBatch};

const BACKEND: &str = "fdb";

/// Most retries of one commit after retryable errors (conflicts, recoveries, unknown results);
/// FDB applies its exponential backoff between them. Past it the commit fails with
/// [`Error::Backend`].
pub const COMMIT_RETRY_LIMIT: u32 = 100;

/// How long [`FdbStore::open`] waits for the cluster to hand out a read version.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// Timeout of a view's transaction: its lifetime plus a margin, so reads never hang on an
/// unreachable cluster while expiry is still reported by [`READ_VIEW_LIFETIME`]'s own check.
const VIEW_TIMEOUT: Duration = Duration::from_millis(READ_VIEW_LIFETIME.as_millis() as u64 + 1_000);

// FoundationDB error codes (flow/error_definitions.h).
const TRANSACTION_TOO_OLD: i32 = 1007;
const TRANSACTION_TIMED_OUT: i32 = 1031;
const TRANSACTION_TOO_LARGE: i32 = 2101;

/// The client network, started at most once per process (see [`boot_network`]). The `Err` of a
/// failed start is kept too: FDB cannot select its API version or set up its network twice.
static NETWORK: OnceLock<std::result::Result<NetworkAutoStop, String>> = OnceLock::new();

/// Starts FoundationDB's client network thread if it is not running yet; [`FdbStore::open`]
/// calls it. Tests call it to skip cleanly when the client cannot start.
///
/// FDB allows one network per process and cannot restart it, so the first call decides for
/// the life of the process: the thread then runs until the process exits and is **never
/// stopped** — its `NetworkAutoStop` guard lives in a `static`, and statics are not dropped.
/// Consequences: a failed start (e.g. a `libfdb_c` older than API 7.3) fails every later call
/// too; nothing else in the process may boot FDB (the `foundationdb` crate panics on a second
/// API selection, reported here as an error); and the process exits with the network thread
/// still running, as after a crash (no client state is lost: the cluster is the authority, and
/// a commit in flight at exit is an unknown result like any other).
pub fn boot_network() -> Result<()> {
    network().map_err(|message| Error::Open {
        backend: BACKEND,
        location: "the FoundationDB client (libfdb_c)".to_owned(),
        message,
    })
}

fn network() -> std::result::Result<(), String> {
    match NETWORK.get_or_init(start_network) {
        Ok(_) => Ok(()),
        Err(message) => Err(message.clone()),
    }
}

/// Selects the API version and starts the network thread; only [`NETWORK`]'s initialiser calls
/// it, so at most once per process.
#[allow(unsafe_code)]
fn start_network() -> std::result::Result<NetworkAutoStop, String> {
    let version = FdbApiBuilder::default().runtime_version();
    let builder = std::panic::catch_unwind(|| FdbApiBuilder::default().build())
        .map_err(|_| {
            "the FoundationDB API was already initialised in this process by other code; \
             let tidings_store::fdb start the client (it does so once per process)"
                .to_owned()
        })?
        .map_err(|e| {
            format!(
                "cannot select FoundationDB API version {version}: {} (fdb error {}); \
                 install libfdb_c 7.3 or newer (package foundationdb-clients)",
                e.message(),
                e.code()
            )
        })?;
    // SAFETY: `NetworkBuilder::boot` is unsafe because its contract asks that the returned guard
    // be dropped (stopping and joining FDB's network thread) before the process exits. What
    // soundness needs while the process runs holds here:
    // - boot runs at most once per process: only from `NETWORK`'s `OnceLock` initialiser, and a
    //   second API selection by other code is caught above before reaching this call;
    // - the guard is stored in that `static` and never dropped, so the network can never stop
    //   while a `Database`, `Transaction` or pending future still depends on it (stopping it
    //   under them would hang them or use torn-down client state).
    // The one part of the contract deliberately not met is the stop at exit: the thread is
    // still running when the process exits, which is what the contract already accepts for an
    // aborted process. The client holds no durable state, so the worst case is FDB's own
    // teardown racing the thread after `main` returns — never corrupt data or a torn commit.
    let guard = unsafe { builder.boot() }.map_err(|e| {
        format!(
            "cannot start the FoundationDB client network: {} (fdb error {})",
            e.message(),
            e.code()
        )
    })?;
    tracing::debug!(
        api_version = version,
        "started the FoundationDB client network"
    );
    Ok(guard)
}

fn backend_err(context: &str, e: FdbError) -> Error {
    Error::Backend {
        backend: BACKEND,
        message: format!("{context}: {} (fdb error {})", e.message(), e.code()),
    }
}

fn millis(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}

/// A FoundationDB cluster behind the [`Store`] port.
pub struct FdbStore {
    db: Database,
    location: String,
}

impl std::fmt::Debug for FdbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FdbStore")
            .field("cluster_file", &self.location)
            .finish()
    }
}

impl FdbStore {
    /// Connects to the cluster named by `cluster_file` (`None`: FDB's default resolution —
    /// `$FDB_CLUSTER_FILE`, `./fdb.cluster`, then `/etc/foundationdb/fdb.cluster` on Linux).
    /// Starts the client network on first use ([`boot_network`]) and checks the cluster answers
    /// within 5 seconds, so a wrong cluster file fails here rather than hanging later.
    pub fn open(cluster_file: Option<&Path>) -> Result<FdbStore> {
        let location = cluster_file.map_or_else(
            || "the default cluster file".to_owned(),
            |p| p.display().to_string(),
        );
        let open_err = |message: String| Error::Open {
            backend: BACKEND,
            location: location.clone(),
            message,
        };
        let path = match cluster_file {
            None => None,
            Some(p) => {
                if !p.is_file() {
                    return Err(open_err(
                        "no such cluster file (it is the `fdb.cluster` file of the cluster, \
                         e.g. /etc/foundationdb/fdb.cluster)"
                            .to_owned(),
                    ));
                }
                let s = p.to_str().filter(|s| !s.contains('\0')).ok_or_else(|| {
                    open_err("the cluster file path is not valid UTF-8".to_owned())
                })?;
                Some(s)
            }
        };
        network().map_err(open_err)?;
        let db = Database::new(path).map_err(|e| {
            open_err(format!(
                "{} (fdb error {}); check the cluster file",
                e.message(),
                e.code()
            ))
        })?;
        let probe = db
            .create_trx()
            .and_then(|trx| {
                trx.set_option(TransactionOption::Timeout(millis(OPEN_TIMEOUT)))?;
                block_on(trx.get_read_version())
            })
            .map_err(|e| {
                let hint = if e.code() == TRANSACTION_TIMED_OUT {
                    format!(
                        "the cluster did not answer within {} s; check that its coordinators \
                         are up (`fdbcli -C FILE --exec status`) and that libfdb_c's version \
                         matches the server's",
                        OPEN_TIMEOUT.as_secs()
                    )
                } else {
                    "check the cluster (`fdbcli -C FILE --exec status`)".to_owned()
                };
                open_err(format!("{} (fdb error {}); {hint}", e.message(), e.code()))
            });
        probe?;
        tracing::debug!(cluster_file = %location, "opened fdb store");
        Ok(FdbStore { db, location })
    }
}

/// A read view: one transaction at one read version, snapshot reads only.
#[derive(Debug)]
struct FdbView {
    trx: Transaction,
    created: Instant,
}

impl FdbView {
    fn check_age(&self) -> Result<()> {
        let age = self.created.elapsed();
        if age > READ_VIEW_LIFETIME {
            return Err(Error::ReadViewExpired {
                age_ms: age.as_millis(),
            });
        }
        Ok(())
    }

    fn read_err(&self, e: FdbError) -> Error {
        match e.code() {
            TRANSACTION_TOO_OLD => Error::ReadViewExpired {
                age_ms: self.created.elapsed().as_millis(),
            },
            TRANSACTION_TIMED_OUT => Error::Backend {
                backend: BACKEND,
                message: format!(
                    "read timed out after {} ms (fdb error {}); is the cluster reachable and \
                     healthy? (`fdbcli --exec status`)",
                    self.created.elapsed().as_millis(),
                    e.code()
                ),
            },
            _ => backend_err("read", e),
        }
    }
}

impl ReadView for FdbView {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.check_age()?;
        limits::check_key(key)?;
        let v = block_on(self.trx.get(key, true)).map_err(|e| self.read_err(e))?;
        Ok(v.map(|s| s.to_vec()))
    }

    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        self.check_age()?;
        for k in keys {
            limits::check_key(k)?;
        }
        // Every get is issued before any is awaited: one round trip's latency, not `n`.
        let found = block_on(try_join_all(keys.iter().map(|k| self.trx.get(k, true))))
            .map_err(|e| self.read_err(e))?;
        Ok(found.into_iter().map(|v| v.map(|s| s.to_vec())).collect())
    }

    fn range(&self, begin: &[u8], end: &[u8], opts: RangeOptions) -> Result<Vec<KeyValue>> {
        self.check_age()?;
        limits::check_key(begin)?;
        limits::check_key(end)?;
        if begin >= end {
            return Ok(Vec::new());
        }
        let opt = RangeOption {
            begin: KeySelector::first_greater_or_equal(begin),
            end: KeySelector::first_greater_or_equal(end),
            limit: (opts.limit > 0).then_some(opts.limit),
            // The whole result is collected: ask for it in as few round trips as possible.
            mode: StreamingMode::WantAll,
            reverse: opts.reverse,
            ..RangeOption::default()
        };
        let capacity = if opts.limit == 0 {
            64
        } else {
            opts.limit.min(64)
        };
        let mut out = Vec::with_capacity(capacity);
        block_on(async {
            let mut chunks = self.trx.get_ranges(opt, true);
            while let Some(chunk) = chunks.try_next().await? {
                out.extend(
                    chunk
                        .iter()
                        .map(|kv| (kv.key().to_vec(), kv.value().to_vec())),
                );
            }
            Ok::<_, FdbError>(())
        })
        .map_err(|e| self.read_err(e))?;
        if opts.limit > 0 {
            out.truncate(opts.limit);
        }
        Ok(out)
    }
}

/// Reads every precondition key (serializable: each adds a read conflict range) and compares.
/// `Ok(Some(_))` is a precondition that does not hold.
async fn check_preconditions(
    trx: &Transaction,
    preconditions: &[Precondition],
) -> std::result::Result<Option<Error>, FdbError> {
    let found = try_join_all(preconditions.iter().map(|p| trx.get(&p.key, false))).await?;
    for (p, found) in preconditions.iter().zip(found) {
        if found.as_deref() != p.expected.as_deref() {
            return Ok(Some(Error::Conflict {
                key: p.key.clone(),
                expected: p.expected.clone(),
                found: found.map(|s| s.to_vec()),
            }));
        }
    }
    Ok(None)
}

fn apply(trx: &Transaction, mutations: &[Mutation]) {
    for m in mutations {
        match m {
            Mutation::Set { key, value } => trx.set(key, value),
            Mutation::Clear { key } => trx.clear(key),
            Mutation::ClearRange { begin, end } => {
                if begin < end {
                    trx.clear_range(begin, end);
                }
            }
            Mutation::Add { key, delta } => {
                trx.atomic_op(key, &delta.to_le_bytes(), MutationType::Add);
            }
        }
    }
}

/// The batch's size as FDB counts it against its 10 MB limit: the port's count plus the
/// conflict ranges (`key..key\0` for every written or checked key, the bounds of a range clear).
fn fdb_size(batch: &WriteBatch) -> usize {
    let conflicts: usize = batch
        .mutations
        .iter()
        .map(|m| match m {
            Mutation::ClearRange { begin, end } => begin.len() + end.len(),
            other => 2 * other.key().len() + 1,
        })
        .chain(batch.preconditions.iter().map(|p| 2 * p.key.len() + 1))
        .sum();
    batch.size() + conflicts
}

/// Logs a retry; a retry after an unknown result may replay a batch that already committed.
fn note_retry(e: FdbError, attempt: u32) {
    if e.is_maybe_committed() {
        tracing::warn!(
            attempt,
            code = e.code(),
            "fdb commit result unknown ({}); retrying — the batch may already be applied \
             (a precondition will then report a conflict; an unguarded add may apply twice)",
            e.message()
        );
    } else {
        tracing::debug!(
            attempt,
            code = e.code(),
            "fdb commit attempt failed: {}",
            e.message()
        );
    }
}

/// The error once `on_error` refuses to retry (non-retryable error, or the retry limit).
fn give_up(e: FdbError, attempts: u32) -> Error {
    let message = if attempts > COMMIT_RETRY_LIMIT {
        format!(
            "commit gave up after {attempts} attempts (retry limit {COMMIT_RETRY_LIMIT}): {} \
             (fdb error {}); the keys are heavily contended or the cluster is unhealthy \
             (`fdbcli --exec status`)",
            e.message(),
            e.code()
        )
    } else {
        format!("commit failed: {} (fdb error {})", e.message(), e.code())
    };
    let message = if e.is_maybe_committed() {
        format!("{message}; the batch may or may not have been applied")
    } else {
        message
    };
    Error::Backend {
        backend: BACKEND,
        message,
    }
}

async fn commit_with_retries(db: &Database, batch: &WriteBatch) -> Result<()> {
    let mut trx = db
        .create_trx()
        .map_err(|e| backend_err("create transaction", e))?;
    // FDB's own bound: past it `on_error` returns the last error instead of retrying.
    trx.set_option(TransactionOption::RetryLimit(COMMIT_RETRY_LIMIT as i32))
        .map_err(|e| backend_err("set retry limit", e))?;
    let mut attempt: u32 = 1;
    loop {
        let read_failure = match check_preconditions(&trx, &batch.preconditions).await {
            Ok(Some(conflict)) => return Err(conflict),
            Ok(None) => None,
            Err(e) => Some(e),
        };
        let retry = match read_failure {
            Some(e) => {
                note_retry(e, attempt);
                trx.on_error(e).await
            }
            None => {
                apply(&trx, &batch.mutations);
                match trx.commit().await {
                    Ok(_) => return Ok(()),
                    Err(failed) => {
                        let e = *failed;
                        if e.code() == TRANSACTION_TOO_LARGE {
                            return Err(Error::BatchTooLarge {
                                size: fdb_size(batch),
                                limit: MAX_BATCH,
                            });
                        }
                        note_retry(e, attempt);
                        failed.on_error().await
                    }
                }
            }
        };
        trx = retry.map_err(|e| give_up(e, attempt))?;
        attempt += 1;
    }
}

impl Store for FdbStore {
    fn snapshot(&self) -> Result<Box<dyn ReadView + '_>> {
        let created = Instant::now();
        let trx = self
            .db
            .create_trx()
            .map_err(|e| backend_err("create transaction", e))?;
        trx.set_option(TransactionOption::Timeout(millis(VIEW_TIMEOUT)))
            .and_then(|()| trx.set_option(TransactionOption::ReadYourWritesDisable))
            .map_err(|e| backend_err("set view options", e))?;
        let view = FdbView { trx, created };
        // Pin the read version now: the view is the state at its creation, not at first read.
        block_on(view.trx.get_read_version()).map_err(|e| view.read_err(e))?;
        Ok(Box::new(view))
    }

    fn commit(&self, batch: WriteBatch) -> Result<()> {
        limits::check_batch(&batch)?;
        if batch.is_empty() {
            return Ok(());
        }
        block_on(commit_with_retries(&self.db, &batch))
    }

    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn estimated_size(&self, begin: &[u8], end: &[u8]) -> Result<u64> {
        if begin >= end {
            return Ok(0);
        }
        let trx = self
            .db
            .create_trx()
            .map_err(|e| backend_err("create transaction", e))?;
        let bytes = block_on(trx.get_estimated_range_size_bytes(begin, end))
            .map_err(|e| backend_err("estimate range size", e))?;
        Ok(u64::try_from(bytes).unwrap_or(0))
    }
}
