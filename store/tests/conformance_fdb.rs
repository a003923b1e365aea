//! The conformance suite on a FoundationDB cluster (cargo feature `fdb`).
//!
//! Runs when `TIDINGS_FDB_CLUSTER_FILE` (or `FDB_CLUSTER_FILE`) names a cluster file:
//!
//! ```text
//! TIDINGS_FDB_CLUSTER_FILE=/etc/foundationdb/fdb.cluster \
//!     cargo test -p tidings-store --features fdb --test conformance_fdb
//! ```
//!
//! Without one, or when the FoundationDB client cannot start, every check prints why and
//! skips. Note that this binary links `libfdb_c`: where the library is not installed it cannot
//! be built (link error) or started (loader error), so CI only type-checks it
//! (`cargo check --features fdb --all-targets`).
//!
//! Each check gets its own key prefix `tidings-conformance/<pid>-<nanos>-<n>/`, cleared before
//! the check and again when its guard drops.

#![cfg(feature = "fdb")]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tidings_store::conformance::Harness;
use tidings_store::fdb::{self, FdbStore};
use tidings_store::{Store, WriteBatch};

const SKIP: &str = "skipping FoundationDB conformance: set TIDINGS_FDB_CLUSTER_FILE to a cluster file (needs libfdb_c)";

/// A cluster named by a cluster file.
struct Fdb {
    cluster_file: PathBuf,
}

/// The harness, or `None` (after saying why) when no cluster is configured or the client
/// cannot start.
fn cluster() -> Option<Fdb> {
    let file = ["TIDINGS_FDB_CLUSTER_FILE", "FDB_CLUSTER_FILE"]
        .into_iter()
        .filter_map(std::env::var_os)
        .find(|v| !v.is_empty());
    let Some(file) = file else {
        eprintln!("{SKIP}");
        return None;
    };
    if let Err(e) = fdb::boot_network() {
        eprintln!("{SKIP}: {e}");
        return None;
    }
    Some(Fdb {
        cluster_file: PathBuf::from(file),
    })
}

/// Clears a key prefix: `prefix..prefix\xff` holds every key the checks write under it.
fn clear_prefix(store: &dyn Store, prefix: &[u8]) -> tidings_store::Result<()> {
    let mut end = prefix.to_vec();
    end.push(0xff);
    let mut b = WriteBatch::new();
    b.clear_range(prefix.to_vec(), end);
    store.commit(b)
}

/// One check's keyspace on the cluster; cleared again when dropped.
struct Keyspace {
    store: Arc<FdbStore>,
    prefix: Vec<u8>,
}

impl Drop for Keyspace {
    fn drop(&mut self) {
        if let Err(e) = clear_prefix(&*self.store, &self.prefix) {
            eprintln!("could not clean up the conformance keyspace: {e}");
        }
    }
}

fn unique_prefix() -> Vec<u8> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "tidings-conformance/{}-{nanos}-{}/",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
    .into_bytes()
}

impl Fdb {
    fn connect(&self) -> FdbStore {
        FdbStore::open(Some(&self.cluster_file)).unwrap_or_else(|e| {
            panic!("TIDINGS_FDB_CLUSTER_FILE is set but the cluster cannot be used: {e}")
        })
    }
}

impl Harness for Fdb {
    type Guard = Keyspace;

    fn open(&self) -> (Self::Guard, Arc<dyn Store>, Vec<u8>) {
        let store = Arc::new(self.connect());
        let prefix = unique_prefix();
        clear_prefix(&*store, &prefix).expect("clear the conformance prefix");
        let guard = Keyspace {
            store: Arc::clone(&store),
            prefix: prefix.clone(),
        };
        (guard, store, prefix)
    }

    fn reopen(&self, _keyspace: &Self::Guard, store: Arc<dyn Store>) -> Arc<dyn Store> {
        // The cluster is durable by itself: a new client handle sees everything committed.
        drop(store);
        Arc::new(self.connect())
    }
}

tidings_store::conformance_suite!(cluster());
