//! The overlay must read exactly what a commit of the same mutations would leave behind.
//! Oracle: RocksDB itself (base committed, then the pending mutations committed).

use proptest::prelude::*;
use tidings_store::rocks::{RocksOptions, RocksStore};
use tidings_store::{Mutation, Overlay, RangeOptions, ReadView, Store, WriteBatch};

fn key(i: u8) -> Vec<u8> {
    vec![b'k', i]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (0u8..12, any::<u8>()).prop_map(|(k, v)| Mutation::Set {
            key: key(k),
            value: vec![v],
        }),
        (0u8..12).prop_map(|k| Mutation::Clear { key: key(k) }),
        (0u8..12, 0u8..12).prop_map(|(a, b)| Mutation::ClearRange {
            begin: key(a.min(b)),
            end: key(a.max(b)),
        }),
        (0u8..12, -3i64..4).prop_map(|(k, delta)| Mutation::Add { key: key(k), delta }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn overlay_reads_like_a_commit(
        base in prop::collection::vec(mutation(), 0..16),
        pending in prop::collection::vec(mutation(), 0..16),
        limit in 0usize..6,
        reverse in any::<bool>(),
        from in 0u8..12,
        to in 0u8..13,
    ) {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = RocksStore::open(dir.path(), RocksOptions::default()).expect("open RocksDB");
        let mut b = WriteBatch::new();
        b.extend(base);
        store.commit(b).expect("commit base");

        let snap = store.snapshot().expect("snapshot");
        let mut overlay = Overlay::new(&*snap);
        overlay.apply(&pending);
        let opts = RangeOptions { limit, reverse };
        let keys: Vec<Vec<u8>> = (0..12).map(key).collect();
        let seen_get = overlay.get_many(&keys).expect("overlay get_many");
        let seen_one: Vec<_> = keys.iter().map(|k| overlay.get(k).expect("overlay get")).collect();
        let seen_range = overlay.range(&key(from), &key(to), opts).expect("overlay range");
        drop(overlay);
        drop(snap);

        let mut p = WriteBatch::new();
        p.extend(pending);
        store.commit(p).expect("commit pending");
        let after = store.snapshot().expect("snapshot");
        let want_get = after.get_many(&keys).expect("get_many");
        let want_range = after.range(&key(from), &key(to), opts).expect("range");
        prop_assert_eq!(&seen_get, &want_get);
        prop_assert_eq!(&seen_one, &want_get);
        prop_assert_eq!(seen_range, want_range);
    }
}
