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
}
