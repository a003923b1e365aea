//! The overlay must read exactly what a commit of the same mutations would leave behind, also
//! layered over the delta of a batch not yet committed.
//! Oracle: RocksDB itself (base committed, then the pending mutations committed).

use proptest::prelude::*;
use tidings_store::rocks::{RocksOptions, RocksStore};
use tidings_store::{
    Memo, Mutation, Overlay, RangeOptions, ReadCache, ReadView, Store, WriteBatch,
};

/// Keys in the order of `i`: tuples `(1, "sN", j)` in three keyspaces (the overlay skips its
/// maps for a keyspace it holds nothing of), then one that is no tuple (which turns that off).
/// The keys of "s1" are `(1, "s1", "xx…", j)`, 30 bytes: they differ only past the first 24,
/// which the overlay holds inline.
fn key(i: u8) -> Vec<u8> {
    if i == 11 {
        return vec![b'k', i];
    }
    let mut k = vec![0x15, 0x01, 0x02, b's', b'0' + i / 4, 0x00];
    if i / 4 == 1 {
        k.push(0x02);
        k.extend_from_slice(&[b'x'; 20]);
        k.push(0x00);
    }
    k.extend_from_slice(&[0x15, i % 4]);
    k
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

/// A store on disk holding `base`.
fn store_with(base: Vec<Mutation>) -> (tempfile::TempDir, RocksStore) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = RocksStore::open(dir.path(), RocksOptions::default()).expect("open RocksDB");
    commit(&store, base);
    (dir, store)
}

fn commit(store: &RocksStore, ms: Vec<Mutation>) {
    let mut b = WriteBatch::new();
    b.extend(ms);
    store.commit(b).expect("commit");
}

/// Every key by `get_many`, every key by `get`, and the range `from..to` with `opts`.
type Reads = (
    Vec<Option<Vec<u8>>>,
    Vec<Option<Vec<u8>>>,
    Vec<(Vec<u8>, Vec<u8>)>,
);

/// `range_visit` (first, so a read cache answers it from the base) must visit what `range`
/// returns.
fn reads(v: &dyn ReadView, from: u8, to: u8, opts: RangeOptions) -> Reads {
    let keys: Vec<Vec<u8>> = (0..12).map(key).collect();
    let mut visited = Vec::new();
    v.range_visit(&key(from), &key(to), opts, &mut |k, v| {
        visited.push((k.to_vec(), v.to_vec()));
    })
    .expect("range_visit");
    let rows = v.range(&key(from), &key(to), opts).expect("range");
    assert_eq!(visited, rows, "range_visit against range");
    (
        v.get_many(&keys).expect("get_many"),
        keys.iter().map(|k| v.get(k).expect("get")).collect(),
        rows,
    )
}

/// Checks reads `seen` through a view against the committed store: `get_many` and `get` both
/// as the store's `get`, and the range as the store's.
fn same_as_committed(
    seen: Reads,
    store: &RocksStore,
    from: u8,
    to: u8,
    opts: RangeOptions,
) -> Result<(), TestCaseError> {
    let (seen_get, seen_one, seen_range) = seen;
    let (want_get, _, want_range) = reads(&*store.snapshot().expect("snapshot"), from, to, opts);
    prop_assert_eq!(&seen_get, &want_get);
    prop_assert_eq!(&seen_one, &want_get);
    prop_assert_eq!(seen_range, want_range);
    Ok(())
}

#[test]
fn a_range_past_its_keyspace_sees_keys_of_a_longer_one() {
    // `(1, "s0")` and `(1, "s0\0x")`: after the first's string, 0x00 0xff escapes a zero, so
    // the second is another keyspace whose keys sort inside `(1, "s0") ++ [0xff, 0xff]`.
    let s0 = vec![0x15, 0x01, 0x02, b's', b'0', 0x00];
    let mut longer = s0.clone();
    longer.extend([0xff, b'x', 0x00, 0x15, 0x01]);
    let (_dir, store) = store_with(vec![]);
    let snap = store.snapshot().expect("snapshot");
    let mut overlay = Overlay::new(&*snap);
    let set = Mutation::Set {
        key: longer.clone(),
        value: b"v".to_vec(),
    };
    overlay.apply(std::slice::from_ref(&set));
    let (mut begin, mut end) = (s0.clone(), s0);
    begin.extend([0x15, 0x00]);
    end.extend([0xff, 0xff]);
    let rows = overlay
        .range(&begin, &end, RangeOptions::default())
        .expect("range");
    assert_eq!(rows, vec![(longer, b"v".to_vec())]);
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
        let (_dir, store) = store_with(base);
        let opts = RangeOptions { limit, reverse };
        let snap = store.snapshot().expect("snapshot");
        let mut overlay = Overlay::new(&*snap);
        overlay.apply(&pending);
        let seen = reads(&overlay, from, to, opts);
        drop(overlay);
        drop(snap);

        commit(&store, pending);
        same_as_committed(seen, &store, from, to, opts)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn layered_overlay_reads_like_two_commits(
        base in prop::collection::vec(mutation(), 0..12),
        lower in prop::collection::vec(mutation(), 0..12),
        pending in prop::collection::vec(mutation(), 0..12),
        limit in 0usize..6,
        reverse in any::<bool>(),
        from in 0u8..12,
        to in 0u8..13,
    ) {
        let (_dir, store) = store_with(base);
        let opts = RangeOptions { limit, reverse };
        let snap = store.snapshot().expect("snapshot");
        let mut first = Overlay::new(&*snap);
        first.apply(&lower);
        let mut overlay = Overlay::layered(&*snap, first.into_deltas().1);
        overlay.apply(&pending);
        let seen = reads(&overlay, from, to, opts);
        drop(overlay);
        drop(snap);

        for ms in [lower, pending] {
            commit(&store, ms);
        }
        same_as_committed(seen, &store, from, to, opts)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A memo under an overlay reads like a commit, and its cache, told what the overlay's
    /// batch wrote once that is committed, keeps answering right over the newer snapshot.
    #[test]
    fn memo_reads_like_commits_across_snapshots(
        base in prop::collection::vec(mutation(), 0..16),
        first in prop::collection::vec(mutation(), 0..16),
        second in prop::collection::vec(mutation(), 0..16),
        limit in 0usize..6,
        reverse in any::<bool>(),
        from in 0u8..12,
        to in 0u8..13,
    ) {
        let (_dir, store) = store_with(base);
        let opts = RangeOptions { limit, reverse };
        let cache = ReadCache::new();
        // Reads of the whole space, twice each: the second time from the cache.
        let read = |v: &dyn ReadView| {
            let mut out = Vec::new();
            for _ in 0..2 {
                out.push((
                    reads(v, from, to, opts),
                    v.range(&key(0), &key(12), RangeOptions::default()).expect("whole range"),
                ));
            }
            out
        };
        let mut seen = Vec::new();
        let mut wants = Vec::new();
        for batch in [first, second] {
            let snap = store.snapshot().expect("snapshot");
            let memo = Memo::new(&*snap, &cache);
            let _ = read(&memo);
            let mut overlay = Overlay::new(&memo);
            overlay.apply(&batch);
            seen.push(read(&overlay));
            let (_, written) = overlay.into_deltas();
            drop(snap);
            commit(&store, batch);
            cache.forget(&written);
            wants.push(read(&*store.snapshot().expect("snapshot")));
        }
        for (s, w) in seen.iter().zip(&wants) {
            prop_assert_eq!(s, w);
        }
        let snap = store.snapshot().expect("snapshot");
        prop_assert_eq!(read(&Memo::new(&*snap, &cache)), wants[1].clone());
    }
}
