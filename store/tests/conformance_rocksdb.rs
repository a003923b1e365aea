//! The conformance suite on the embedded RocksDB backend: always runs.

use std::sync::Arc;

use tidings_store::conformance::Harness;
use tidings_store::rocks::{RocksOptions, RocksStore};
use tidings_store::Store;

struct Rocks;

impl Harness for Rocks {
    type Guard = tempfile::TempDir;

    fn open(&self) -> (Self::Guard, Arc<dyn Store>, Vec<u8>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = RocksStore::open(dir.path(), RocksOptions::default()).expect("open rocksdb");
        (dir, Arc::new(store), b"conformance/".to_vec())
    }

    fn reopen(&self, dir: &Self::Guard, store: Arc<dyn Store>) -> Arc<dyn Store> {
        assert_eq!(
            Arc::strong_count(&store),
            1,
            "the store must be closed before reopening"
        );
        drop(store);
        Arc::new(RocksStore::open(dir.path(), RocksOptions::default()).expect("reopen rocksdb"))
    }
}

tidings_store::conformance_suite!(Some(Rocks));
