//! The key-layout marker `("meta","layout")`: written when a store is first used, checked on
//! every open, so a build never misreads keys written in another layout.

use tidings_core::keys::meta::{self, LAYOUT_VERSION};
use tidings_core::write::decode_i64;

use crate::{Error, RangeOptions, Result, Store, WriteBatch};

/// The layout a store that has data but no marker was written with (before markers existed).
const UNMARKED_LAYOUT: i64 = 1;

/// Checks that `store` uses this build's key layout, writing the marker into a store that has
/// none and holds nothing else. `location` names the store in the error.
pub fn ensure(store: &dyn Store, location: &str) -> Result<()> {
    let view = store.snapshot()?;
    let found = match view.get(&meta::layout())? {
        Some(v) => decode_i64(&v),
        None => {
            let (begin, end) = (vec![0u8], vec![0xffu8]);
            let meta_prefix = meta::prefix();
            let holds_data = view
                .range(&begin, &end, RangeOptions::forward(8))?
                .iter()
                .any(|(k, _)| !k.starts_with(&meta_prefix));
            if holds_data {
                UNMARKED_LAYOUT
            } else {
                let mut b = WriteBatch::new();
                b.require(meta::layout(), None)
                    .set(meta::layout(), LAYOUT_VERSION.to_le_bytes());
                match store.commit(b) {
                    // Someone else marked it first: read what they wrote.
                    Err(e) if e.is_conflict() => return ensure(store, location),
                    other => other?,
                }
                LAYOUT_VERSION
            }
        }
    };
    if found != LAYOUT_VERSION {
        return Err(Error::Layout {
            location: location.to_owned(),
            found,
            want: LAYOUT_VERSION,
        });
    }
    Ok(())
}

/// `key`'s keyspace prefix — its first two FoundationDB tuple elements when they are
/// integers, strings or byte strings: `(p, "feed")` of a tidings projection key,
/// `("meta", "active")` — or as much of that as parses, and whether both elements parsed. A
/// bulk commit writes one table file per keyspace (two at the cut of a large batch, see
/// `RocksStore::commit_bulk`), so files of different keyspaces never
/// overlap: a graph read never consults a file of feed entries, and a keyspace written in key
/// order (bodies under time-ordered ids, offsets) is ingested at the bottom level, needing no
/// compaction.
pub fn keyspace_prefix(key: &[u8]) -> (&[u8], bool) {
    let (n, parsed) = parse_keyspace(key);
    (&key[..n], parsed == 2)
}

/// `key`'s keyspace prefix when both of its elements parse (see [`keyspace_prefix`]). Every
/// key that starts with that prefix has the same keyspace, so a range whose ends share it lies
/// in one keyspace.
pub fn keyspace(key: &[u8]) -> Option<&[u8]> {
    match keyspace_prefix(key) {
        (space, true) => Some(space),
        (_, false) => None,
    }
}

/// (bytes, elements) of the keyspace prefix that parses.
fn parse_keyspace(key: &[u8]) -> (usize, usize) {
    let mut at = 0;
    for parsed in 0..2 {
        let Some(&code) = key.get(at) else {
            return (at, parsed);
        };
        let next = match code {
            // Byte string or string: escaped bytes up to a 0x00 not followed by 0xff.
            0x01 | 0x02 => {
                let mut i = at + 1;
                loop {
                    match key.get(i) {
                        Some(0x00) if key.get(i + 1) == Some(&0xff) => i += 2,
                        Some(0x00) => break Some(i + 1),
                        Some(_) => i += 1,
                        None => break None,
                    }
                }
            }
            // Integers: the code says how many bytes follow.
            0x0c..=0x1c => {
                let n = usize::from(code.abs_diff(0x14));
                (at + 1 + n <= key.len()).then_some(at + 1 + n)
            }
            _ => None,
        };
        match next {
            Some(n) => at = n,
            None => return (at, parsed),
        }
    }
    (at, 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rocks::{RocksOptions, RocksStore};

    #[test]
    fn marks_an_empty_store_and_refuses_other_layouts() {
        let dir = tempfile::tempdir().unwrap();
        let store = RocksStore::open(dir.path(), RocksOptions::default()).unwrap();
        ensure(&store, "t").unwrap();
        let v = store.snapshot().unwrap().get(&meta::layout()).unwrap();
        assert_eq!(v, Some(LAYOUT_VERSION.to_le_bytes().to_vec()));
        ensure(&store, "t").unwrap();

        let mut b = WriteBatch::new();
        b.set(meta::layout(), 1i64.to_le_bytes());
        store.commit(b).unwrap();
        let e = ensure(&store, "t").unwrap_err().to_string();
        assert!(e.contains("key layout 1") && e.contains("rebuild"), "{e}");
    }

    #[test]
    fn data_without_a_marker_is_the_first_layout() {
        let dir = tempfile::tempdir().unwrap();
        let store = RocksStore::open(dir.path(), RocksOptions::default()).unwrap();
        let mut b = WriteBatch::new();
        b.set(meta::active(), 1i64.to_le_bytes()).set(
            tidings_core::keys::fver::key(1, 7, tidings_core::keys::feed::FeedKind::Home),
            1i64.to_le_bytes(),
        );
        store.commit(b).unwrap();
        let e = ensure(&store, "t").unwrap_err().to_string();
        assert!(e.contains("key layout 1"), "{e}");
    }

    #[test]
    fn keyspace_prefix_is_the_first_two_tuple_elements() {
        let len = |k: &[u8]| keyspace_prefix(k).0.len();
        // (2, "feed", 5000, 0): int 2, string "feed", then the rest.
        let feed = [
            0x15, 0x02, 0x02, b'f', b'e', b'e', b'd', 0x00, 0x16, 0x13, 0x88, 0x14,
        ];
        assert_eq!(len(&feed), 8);
        // ("meta", "active")
        let meta = [0x02, b'm', b'e', b't', b'a', 0x00, 0x02, b'a', 0x00];
        assert_eq!(len(&meta), 9);
        // An escaped zero inside a string does not end it.
        let esc = [0x15, 0x01, 0x02, b'a', 0x00, 0xff, b'b', 0x00, 0x15, 0x07];
        assert_eq!(len(&esc), 8);
        // Not a tuple (or cut short): as much as parses.
        assert_eq!(len(b"conformance/x"), 0);
        assert_eq!(len(&[0x15, 0x02, 0x02, b'f']), 2);
        assert_eq!(len(&[0x16, 0x01]), 0);
        assert_eq!(keyspace(&feed), Some(&feed[..8]));
        assert_eq!(keyspace(&meta), Some(&meta[..]));
        assert_eq!(keyspace(&[0x15, 0x02, 0x02, b'f']), None);
        assert_eq!(keyspace(b"conformance/x"), None);
    }
}
