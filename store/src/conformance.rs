//! The conformance suite every [`Store`] backend must pass.
//!
//! Each check is a function over a [`Harness`] that opens a fresh, empty keyspace (a temporary
//! directory for RocksDB, a cleared key prefix on a FoundationDB cluster). The
//! [`conformance_suite!`](crate::conformance_suite) macro turns every check into a `#[test]`,
//! so a backend's test file is one line, and a failure names the property that broke:
//! snapshot isolation, batch atomicity, precondition conflicts under concurrent writers,
//! atomic add under concurrency, range order and reverse, limits, durability across reopen,
//! bulk loads and bounded scans, bulk commits.
//!
//! The checks panic on failure (they are test code); they never touch keys outside the prefix
//! the harness hands them.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::sync::Arc;
use std::thread;

use crate::error::Error;
use crate::limits::{MAX_BATCH, MAX_KEY, MAX_VALUE};
use crate::{KeyGroups, RangeOptions, Store, WriteBatch};

/// Opens stores for the suite.
pub trait Harness {
    /// Keeps the store's backing resources alive (e.g. a temporary directory).
    type Guard;
    /// A fresh store and a key prefix under which it is empty.
    fn open(&self) -> (Self::Guard, Arc<dyn Store>, Vec<u8>);
    /// Closes `store` and opens the same data again.
    fn reopen(&self, guard: &Self::Guard, store: Arc<dyn Store>) -> Arc<dyn Store>;
}

fn k(prefix: &[u8], s: &str) -> Vec<u8> {
    [prefix, s.as_bytes()].concat()
}

fn commit(s: &dyn Store, f: impl FnOnce(&mut WriteBatch)) -> crate::Result<()> {
    let mut b = WriteBatch::new();
    f(&mut b);
    s.commit(b)
}

/// Set, get, clear, get-many.
pub fn point_reads_and_writes<H: Harness>(h: &H) {
    let (_g, s, p) = h.open();
    let s = &*s;
    commit(s, |b| {
        b.set(k(&p, "a"), b"1".to_vec())
            .set(k(&p, "b"), b"2".to_vec());
    })
    .unwrap();
    let v = s.snapshot().unwrap();
    assert_eq!(v.get(&k(&p, "a")).unwrap(), Some(b"1".to_vec()));
    assert_eq!(
        v.get_many(&[k(&p, "b"), k(&p, "zz"), k(&p, "a")]).unwrap(),
        vec![Some(b"2".to_vec()), None, Some(b"1".to_vec())]
    );
    commit(s, |b| {
        b.clear(k(&p, "a")).clear(k(&p, "never-set"));
    })
    .unwrap();
    assert_eq!(s.snapshot().unwrap().get(&k(&p, "a")).unwrap(), None);
}

/// A view sees the state at its creation, whatever commits after it.
pub fn snapshot_isolation<H: Harness>(h: &H) {
    let (_g, s, p) = h.open();
    let s = &*s;
    commit(s, |b| {
        b.set(k(&p, "x"), b"old".to_vec()).add(k(&p, "n"), 1);
    })
    .unwrap();
    let before = s.snapshot().unwrap();
    commit(s, |b| {
        b.set(k(&p, "x"), b"new".to_vec())
            .set(k(&p, "y"), b"y".to_vec())
            .add(k(&p, "n"), 1)
            .clear_range(k(&p, "a"), k(&p, "b"));
    })
    .unwrap();
    assert_eq!(before.get(&k(&p, "x")).unwrap(), Some(b"old".to_vec()));
    assert_eq!(before.get(&k(&p, "y")).unwrap(), None);
    assert_eq!(
        before.get(&k(&p, "n")).unwrap(),
        Some(1i64.to_le_bytes().to_vec())
    );
    let (b, e) = (k(&p, ""), k(&p, "\u{7f}"));
    assert_eq!(
        before.range(&b, &e, RangeOptions::default()).unwrap().len(),
        2
    );
    let after = s.snapshot().unwrap();
    assert_eq!(after.get(&k(&p, "x")).unwrap(), Some(b"new".to_vec()));
    assert_eq!(
        after.get(&k(&p, "n")).unwrap(),
        Some(2i64.to_le_bytes().to_vec())
    );
}

/// A batch whose precondition fails, or that breaks a limit, writes nothing at all.
pub fn batch_is_all_or_nothing<H: Harness>(h: &H) {
    let (_g, s, p) = h.open();
    let s = &*s;
    commit(s, |b| {
        b.set(k(&p, "guard"), b"v1".to_vec());
    })
    .unwrap();
    let r = commit(s, |b| {
        b.set(k(&p, "a"), b"1".to_vec())
            .add(k(&p, "n"), 5)
            .require(k(&p, "guard"), Some(b"v0".to_vec()));
    });
    assert!(matches!(r, Err(Error::Conflict { .. })), "{r:?}");
    let r = commit(s, |b| {
        b.set(k(&p, "a"), b"1".to_vec())
            .set(k(&p, "big"), vec![0u8; MAX_VALUE + 1]);
    });
    assert!(matches!(r, Err(Error::ValueTooLarge { .. })), "{r:?}");
    let v = s.snapshot().unwrap();
    assert_eq!(v.get(&k(&p, "a")).unwrap(), None);
    assert_eq!(v.get(&k(&p, "n")).unwrap(), None);
}

/// Preconditions: absent, present with a value, and the conflict error naming what was found.
pub fn preconditions_conflict<H: Harness>(h: &H) {
    let (_g, s, p) = h.open();
    let s = &*s;
    let key = k(&p, "off");
    commit(s, |b| {
        b.require(key.clone(), None)
            .set(key.clone(), b"10".to_vec());
    })
    .unwrap();
    match commit(s, |b| {
        b.require(key.clone(), None)
            .set(key.clone(), b"99".to_vec());
    }) {
        Err(Error::Conflict {
            key: ck,
            expected,
            found,
        }) => {
            assert_eq!(
                (ck, expected, found),
                (key.clone(), None, Some(b"10".to_vec()))
            );
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    commit(s, |b| {
        b.require(key.clone(), Some(b"10".to_vec()))
            .set(key.clone(), b"20".to_vec());
    })
    .unwrap();
    assert_eq!(
        s.snapshot().unwrap().get(&key).unwrap(),
        Some(b"20".to_vec())
    );
}

/// Read-check-write loops in several threads lose no update: every failed precondition is a
/// conflict, every success is counted exactly once.
pub fn preconditions_fence_concurrent_writers<H: Harness>(h: &H) {
    let (_g, s, p) = h.open();
    let key = k(&p, "counter");
    let threads = 4;
    let per_thread = 100;
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let s = Arc::clone(&s);
            let key = key.clone();
            thread::spawn(move || {
                let mut conflicts = 0u64;
                let mut done = 0;
                while done < per_thread {
                    let cur = s.snapshot().unwrap().get(&key).unwrap();
                    let n = cur.as_deref().map_or(0, tidings_core::write::decode_i64);
                    let mut b = WriteBatch::new();
                    b.require(key.clone(), cur)
                        .set(key.clone(), (n + 1).to_le_bytes().to_vec());
                    match s.commit(b) {
                        Ok(()) => done += 1,
                        Err(e) if e.is_conflict() => conflicts += 1,
                        Err(e) => panic!("{e}"),
                    }
                }
                conflicts
            })
        })
        .collect();
    let _conflicts: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    let v = s.snapshot().unwrap().get(&key).unwrap().unwrap();
    assert_eq!(
        tidings_core::write::decode_i64(&v),
        (threads * per_thread) as i64
    );
}

/// Atomic adds from several threads sum exactly; absent counts as zero; adds wrap.
pub fn atomic_add_under_concurrency<H: Harness>(h: &H) {
    let (_g, s, p) = h.open();
    let key = k(&p, "sum");
    let handles: Vec<_> = (0..4i64)
        .map(|t| {
            let s = Arc::clone(&s);
            let key = key.clone();
            thread::spawn(move || {
                for i in 0..500i64 {
                    let mut b = WriteBatch::new();
                    b.add(key.clone(), if i % 5 == 0 { -t } else { t + 1 });
                    s.commit(b).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let want: i64 = (0..4i64)
        .map(|t| {
            (0..500i64)
                .map(|i| if i % 5 == 0 { -t } else { t + 1 })
                .sum::<i64>()
        })
        .sum();
    let got = s.snapshot().unwrap().get(&key).unwrap().unwrap();
    assert_eq!(got, want.to_le_bytes().to_vec());
    let wrap = k(&p, "wrap");
    commit(&*s, |b| {
        b.set(wrap.clone(), i64::MAX.to_le_bytes().to_vec())
            .add(wrap.clone(), 1);
    })
    .unwrap();
    assert_eq!(
        s.snapshot().unwrap().get(&wrap).unwrap(),
        Some(i64::MIN.to_le_bytes().to_vec())
    );
    // Many adds to a few keys in one batch, interleaved, one key set midway and one cleared:
    // each key ends as if the mutations ran one by one, in order.
    let (x, y, z) = (k(&p, "x"), k(&p, "y"), k(&p, "z"));
    commit(&*s, |b| {
        for i in 1..=50i64 {
            b.add(x.clone(), i).add(y.clone(), -i).add(z.clone(), 1);
            if i == 20 {
                b.set(y.clone(), 1000i64.to_le_bytes().to_vec());
            }
            if i == 40 {
                b.clear(z.clone());
            }
        }
    })
    .unwrap();
    let v = s.snapshot().unwrap();
    let sum = |r: std::ops::RangeInclusive<i64>| r.sum::<i64>();
    assert_eq!(v.get(&x).unwrap(), Some(sum(1..=50).to_le_bytes().to_vec()));
    assert_eq!(
        v.get(&y).unwrap(),
        Some((1000 - sum(21..=50)).to_le_bytes().to_vec())
    );
    assert_eq!(v.get(&z).unwrap(), Some(10i64.to_le_bytes().to_vec()));
}

/// Ranges are ordered, honour limit and reverse, exclude `end`; clear-range removes `[b, e)`.
pub fn ranges_order_limit_reverse<H: Harness>(h: &H) {
    let (_g, s, p) = h.open();
    let s = &*s;
    let names = ["d", "a", "c", "e", "b", "b\x00", "f"];
    commit(s, |b| {
        for n in names {
            b.set(k(&p, n), n.as_bytes().to_vec());
        }
    })
    .unwrap();
    let keys = |kvs: Vec<crate::KeyValue>| -> Vec<String> {
        kvs.into_iter()
            .map(|(key, _)| String::from_utf8(key[p.len()..].to_vec()).unwrap())
            .collect()
    };
    let v = s.snapshot().unwrap();
    let (b, e) = (k(&p, "a"), k(&p, "f"));
    assert_eq!(
        keys(v.range(&b, &e, RangeOptions::default()).unwrap()),
        ["a", "b", "b\x00", "c", "d", "e"]
    );
    assert_eq!(
        keys(v.range(&b, &e, RangeOptions::forward(2)).unwrap()),
        ["a", "b"]
    );
    assert_eq!(
        keys(v.range(&b, &e, RangeOptions::reverse(3)).unwrap()),
        ["e", "d", "c"]
    );
    assert_eq!(
        keys(v.range(&b, &e, RangeOptions::reverse(0)).unwrap()).len(),
        6
    );
    assert!(v.range(&e, &b, RangeOptions::default()).unwrap().is_empty());
    assert!(v.range(&b, &b, RangeOptions::default()).unwrap().is_empty());
    drop(v);
    commit(s, |bt| {
        bt.clear_range(k(&p, "b"), k(&p, "d"));
    })
    .unwrap();
    let v = s.snapshot().unwrap();
    assert_eq!(
        keys(
            v.range(&k(&p, ""), &k(&p, "z"), RangeOptions::default())
                .unwrap()
        ),
        ["a", "d", "e", "f"]
    );
}

/// FoundationDB's size limits are enforced, with the exact limit still accepted.
pub fn limits_are_enforced<H: Harness>(h: &H) {
    let (_g, s, p) = h.open();
    let s = &*s;
    let mut long_key = p.clone();
    long_key.resize(MAX_KEY, b'k');
    commit(s, |b| {
        b.set(long_key.clone(), vec![1u8; MAX_VALUE]);
    })
    .unwrap();
    let mut too_long = long_key.clone();
    too_long.push(b'k');
    let e = commit(s, |b| {
        b.set(too_long.clone(), vec![]);
    })
    .unwrap_err();
    assert!(
        matches!(e, Error::KeyTooLarge { size, limit } if size == MAX_KEY + 1 && limit == MAX_KEY),
        "{e}"
    );
    assert!(matches!(
        s.snapshot().unwrap().get(&too_long),
        Err(Error::KeyTooLarge { .. })
    ));
    let e = commit(s, |b| {
        for i in 0..(MAX_BATCH / MAX_VALUE + 1) {
            b.set(k(&p, &format!("v{i}")), vec![0u8; MAX_VALUE]);
        }
    })
    .unwrap_err();
    assert!(matches!(e, Error::BatchTooLarge { .. }), "{e}");
    assert!(e.to_string().contains("split"), "{e}");
}

/// A read view older than 5 seconds refuses to read (FDB's `transaction_too_old`).
pub fn read_views_expire<H: Harness>(h: &H) {
    let (_g, s, p) = h.open();
    let v = s.snapshot().unwrap();
    v.get(&k(&p, "x")).unwrap();
    thread::sleep(crate::limits::READ_VIEW_LIFETIME + std::time::Duration::from_millis(200));
    let e = v.get(&k(&p, "x")).unwrap_err();
    assert!(matches!(e, Error::ReadViewExpired { .. }), "{e}");
    s.snapshot().unwrap().get(&k(&p, "x")).unwrap();
}

/// Committed data, counters included, survives closing and reopening.
pub fn durable_across_reopen<H: Harness>(h: &H) {
    let (g, s, p) = h.open();
    for i in 0..100 {
        commit(&*s, |b| {
            b.set(k(&p, &format!("k{i:03}")), vec![i as u8; 100])
                .add(k(&p, "n"), 1);
        })
        .unwrap();
    }
    let s = h.reopen(&g, s);
    let v = s.snapshot().unwrap();
    assert_eq!(v.get(&k(&p, "k042")).unwrap(), Some(vec![42u8; 100]));
    assert_eq!(
        v.get(&k(&p, "n")).unwrap(),
        Some(100i64.to_le_bytes().to_vec())
    );
    assert_eq!(
        v.range(&k(&p, "k"), &k(&p, "l"), RangeOptions::default())
            .unwrap()
            .len(),
        100
    );
}

/// A bulk load sets sorted pairs (over what was there) and leaves the rest alone; a scan in
/// small steps, each resumed in a fresh view, visits every pair of its range once, in order.
pub fn bulk_load_and_scan<H: Harness>(h: &H) {
    let (_g, s, p) = h.open();
    let s = &*s;
    commit(s, |b| {
        b.set(k(&p, "k0005"), b"old".to_vec())
            .set(k(&p, "z"), b"outside".to_vec());
    })
    .unwrap();
    let pairs: Vec<crate::KeyValue> = (0..3_000)
        .map(|i| (k(&p, &format!("k{i:04}")), format!("v{i}").into_bytes()))
        .collect();
    s.load_sorted(&pairs[..1_000]).unwrap();
    s.load_sorted(&pairs[1_000..]).unwrap();
    s.load_sorted(&[]).unwrap();
    let v = s.snapshot().unwrap();
    assert_eq!(v.get(&k(&p, "k0005")).unwrap(), Some(b"v5".to_vec()));
    assert_eq!(v.get(&k(&p, "z")).unwrap(), Some(b"outside".to_vec()));
    drop(v);

    let (end, mut from) = (k(&p, "l"), Some(k(&p, "k")));
    let (mut seen, mut views) = (Vec::new(), 0);
    while let Some(b) = from {
        views += 1;
        from = s
            .snapshot()
            .unwrap()
            .scan(&b, &end, 5_000, &mut |key, val| {
                seen.push((key.to_vec(), val.to_vec()))
            })
            .unwrap();
    }
    assert_eq!(seen, pairs);
    assert!(
        views > 5,
        "a 5 kB bound should take several views, took {views}"
    );
    let mut none = 0;
    let rest = s
        .snapshot()
        .unwrap()
        .scan(&end, &k(&p, "m"), 5_000, &mut |_, _| none += 1)
        .unwrap();
    assert_eq!((rest, none), (None, 0));

    let unsorted = vec![(k(&p, "u2"), b"x".to_vec()), (k(&p, "u1"), b"x".to_vec())];
    let err = s.load_sorted(&unsorted);
    if let Err(e) = &err {
        assert!(e.to_string().contains("sorted"), "{e}");
    }
    let big = vec![(k(&p, "big"), vec![0u8; MAX_VALUE + 1])];
    assert!(matches!(
        s.load_sorted(&big),
        Err(Error::ValueTooLarge { .. })
    ));
}

/// A bulk commit is a commit: sets, clears and adds (also several to one key, and over values
/// already stored) end as they would through [`Store::commit`]; preconditions are checked and a
/// conflict writes nothing; an open view keeps its snapshot; a clear-range works; and where the
/// backend has a bulk path, a batch over the transaction limit is taken.
pub fn bulk_commit_is_a_commit<H: Harness>(h: &H) {
    let (_g, s, p) = h.open();
    let s = &*s;
    commit(s, |b| {
        b.set(k(&p, "set-over"), b"old".to_vec())
            .set(k(&p, "cleared"), b"old".to_vec())
            .add(k(&p, "sum"), 5)
            .set(k(&p, "guard"), b"1".to_vec());
    })
    .unwrap();
    let before = s.snapshot().unwrap();
    let mut b = WriteBatch::new();
    b.set(k(&p, "set-over"), b"new".to_vec())
        .clear(k(&p, "cleared"))
        .add(k(&p, "sum"), 2)
        .add(k(&p, "sum"), 3)
        .set(k(&p, "set-then-add"), 10i64.to_le_bytes().to_vec())
        .add(k(&p, "set-then-add"), 1)
        .clear(k(&p, "clear-then-add"))
        .add(k(&p, "clear-then-add"), 7)
        .set(k(&p, "fresh"), b"v".to_vec())
        .add(k(&p, "fresh-add"), -4)
        .require(k(&p, "guard"), Some(b"1".to_vec()));
    s.commit_bulk(b).unwrap();
    let v = s.snapshot().unwrap();
    let got = v
        .get_many(&[
            k(&p, "set-over"),
            k(&p, "cleared"),
            k(&p, "sum"),
            k(&p, "set-then-add"),
            k(&p, "clear-then-add"),
            k(&p, "fresh"),
            k(&p, "fresh-add"),
        ])
        .unwrap();
    assert_eq!(
        got,
        vec![
            Some(b"new".to_vec()),
            None,
            Some(10i64.to_le_bytes().to_vec()),
            Some(11i64.to_le_bytes().to_vec()),
            Some(7i64.to_le_bytes().to_vec()),
            Some(b"v".to_vec()),
            Some((-4i64).to_le_bytes().to_vec()),
        ]
    );
    assert_eq!(
        before.get(&k(&p, "set-over")).unwrap(),
        Some(b"old".to_vec()),
        "a view opened before the bulk commit must keep its snapshot"
    );
    drop((before, v));

    let mut b = WriteBatch::new();
    b.set(k(&p, "never"), b"x".to_vec())
        .require(k(&p, "guard"), Some(b"2".to_vec()));
    assert!(matches!(s.commit_bulk(b), Err(Error::Conflict { .. })));
    assert_eq!(s.snapshot().unwrap().get(&k(&p, "never")).unwrap(), None);

    let mut b = WriteBatch::new();
    b.set(k(&p, "r1"), b"x".to_vec())
        .set(k(&p, "r2"), b"x".to_vec());
    s.commit_bulk(b).unwrap();
    let mut b = WriteBatch::new();
    b.clear_range(k(&p, "r1"), k(&p, "r3"))
        .set(k(&p, "r2"), b"again".to_vec());
    s.commit_bulk(b).unwrap();
    let v = s.snapshot().unwrap();
    assert_eq!(
        v.range(&k(&p, "r"), &k(&p, "s"), RangeOptions::default())
            .unwrap(),
        vec![(k(&p, "r2"), b"again".to_vec())]
    );
    drop(v);

    if let Some(limit) = s.bulk_batch_limit() {
        assert!(limit > MAX_BATCH);
        let mut b = WriteBatch::new();
        for i in 0..(MAX_BATCH / 50_000 + 2) {
            b.set(k(&p, &format!("big{i:04}")), vec![i as u8; 50_000]);
        }
        assert!(b.size() > MAX_BATCH);
        s.commit_bulk(b).unwrap();
        let n = s
            .snapshot()
            .unwrap()
            .range(&k(&p, "big"), &k(&p, "bih"), RangeOptions::default())
            .unwrap()
            .len();
        assert_eq!(n, MAX_BATCH / 50_000 + 2);
    }
}

/// A bulk commit with key groups: the groups' keys apply after the batch's mutations, in the
/// order they were pushed, all or nothing; with a clear-range in the batch too.
pub fn bulk_commit_with_key_groups<H: Harness>(h: &H) {
    let (_g, s, p) = h.open();
    let s = &*s;
    commit(s, |b| {
        b.set(k(&p, "old"), b"old".to_vec())
            .set(k(&p, "guard"), b"1".to_vec());
    })
    .unwrap();
    let mut b = WriteBatch::new();
    b.set(k(&p, "a"), b"mutation".to_vec())
        .set(k(&p, "b"), b"mutation".to_vec())
        .add(k(&p, "n"), 2)
        .require(k(&p, "guard"), Some(b"1".to_vec()));
    let mut g = KeyGroups::new();
    g.group(Some(b"first".to_vec()));
    for key in ["a", "c", "n", "d"] {
        g.push(&k(&p, key));
    }
    g.group(None);
    for key in ["d", "old"] {
        g.push_with(|buf| buf.extend_from_slice(&k(&p, key)));
    }
    g.group(Some(b"last".to_vec())).push(&k(&p, "e"));
    s.commit_bulk_groups(b, g.clone()).unwrap();
    let got = s
        .snapshot()
        .unwrap()
        .range(&k(&p, "a"), &k(&p, "z"), RangeOptions::default())
        .unwrap();
    let want: Vec<(Vec<u8>, Vec<u8>)> = [
        ("a", "first"),
        ("b", "mutation"),
        ("c", "first"),
        ("e", "last"),
        ("guard", "1"),
        ("n", "first"),
    ]
    .iter()
    .map(|(key, v)| (k(&p, key), v.as_bytes().to_vec()))
    .collect();
    assert_eq!(got, want);

    let mut b = WriteBatch::new();
    b.require(k(&p, "guard"), Some(b"2".to_vec()));
    let mut g = KeyGroups::new();
    g.group(Some(b"never".to_vec())).push(&k(&p, "x"));
    assert!(matches!(
        s.commit_bulk_groups(b, g),
        Err(Error::Conflict { .. })
    ));
    assert_eq!(s.snapshot().unwrap().get(&k(&p, "x")).unwrap(), None);

    let mut b = WriteBatch::new();
    b.clear_range(k(&p, "a"), k(&p, "f"));
    let mut g = KeyGroups::new();
    g.group(Some(b"again".to_vec())).push(&k(&p, "c"));
    s.commit_bulk_groups(b, g).unwrap();
    let got = s
        .snapshot()
        .unwrap()
        .range(&k(&p, "a"), &k(&p, "f"), RangeOptions::default())
        .unwrap();
    assert_eq!(got, vec![(k(&p, "c"), b"again".to_vec())]);

    let mut g = KeyGroups::new();
    g.group(Some(vec![0; MAX_VALUE + 1])).push(&k(&p, "huge"));
    assert!(matches!(
        s.commit_bulk_groups(WriteBatch::new(), g),
        Err(Error::ValueTooLarge { .. })
    ));
    let mut g = KeyGroups::new();
    g.group(None).push(&vec![b'k'; MAX_KEY + 1]);
    assert!(matches!(
        s.commit_bulk_groups(WriteBatch::new(), g),
        Err(Error::KeyTooLarge { .. })
    ));
}

/// Expands to one `#[test]` per conformance check, for the harness expression given.
#[macro_export]
macro_rules! conformance_suite {
    ($harness:expr) => {
        $crate::conformance_suite!(@tests $harness;
            point_reads_and_writes, snapshot_isolation, batch_is_all_or_nothing,
            preconditions_conflict, preconditions_fence_concurrent_writers,
            atomic_add_under_concurrency, ranges_order_limit_reverse, limits_are_enforced,
            read_views_expire, durable_across_reopen, bulk_load_and_scan,
            bulk_commit_is_a_commit, bulk_commit_with_key_groups);
    };
    (@tests $harness:expr; $($check:ident),*) => {
        $(
            #[test]
            fn $check() {
                if let Some(h) = $harness {
                    $crate::conformance::$check(&h);
                }
            }
        )*
    };
}
