//! Choosing a backend by URL: `rocksdb:PATH[?opts]` or `fdb:[CLUSTER_FILE]`.

use std::path::PathBuf;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::rocks::RocksOptions;
use crate::Store;

/// A parsed store URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreUrl {
    /// The embedded RocksDB store in a directory.
    Rocks {
        /// The directory.
        path: PathBuf,
        /// Tuning.
        options: RocksOptions,
    },
    /// A FoundationDB cluster (`None`: the default cluster file).
    Fdb {
        /// The cluster file.
        cluster_file: Option<PathBuf>,
    },
}

impl std::str::FromStr for StoreUrl {
    type Err = Error;

    fn from_str(url: &str) -> Result<Self> {
        let bad = |reason: &str| Error::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let (scheme, rest) = url.split_once(':').ok_or_else(|| bad("missing scheme"))?;
        let (location, query) = match rest.split_once('?') {
            Some((l, q)) => (l, Some(q)),
            None => (rest, None),
        };
        match scheme {
            "rocksdb" => {
                if location.is_empty() {
                    return Err(bad("missing path after rocksdb:"));
                }
                let mut options = RocksOptions::default();
                for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
                    let (k, v) = pair
                        .split_once('=')
                        .ok_or_else(|| bad("options are key=value"))?;
                    match k {
                        "sync" => {
                            options.sync = v.parse().map_err(|_| bad("sync is true or false"))?;
                        }
                        "cache_mb" => {
                            options.cache_mb =
                                v.parse().map_err(|_| bad("cache_mb is a number of MiB"))?;
                        }
                        "memtable_mb" => {
                            options.memtable_mb =
                                v.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
                                    bad("memtable_mb is a positive number of MiB")
                                })?;
                        }
                        other => {
                            return Err(bad(&format!(
                                "unknown option {other:?} (sync, cache_mb, memtable_mb)"
                            )))
                        }
                    }
                }
                Ok(StoreUrl::Rocks {
                    path: PathBuf::from(location),
                    options,
                })
            }
            "fdb" => {
                if query.is_some() {
                    return Err(bad("fdb: takes no options"));
                }
                Ok(StoreUrl::Fdb {
                    cluster_file: (!location.is_empty()).then(|| PathBuf::from(location)),
                })
            }
            other => Err(bad(&format!("unknown scheme {other:?}"))),
        }
    }
}

/// Opens the store a URL names and checks its key layout ([`crate::layout::ensure`]).
pub fn open(url: &str) -> Result<Arc<dyn Store>> {
    let store = open_unchecked(url)?;
    crate::layout::ensure(&*store, url)?;
    Ok(store)
}

fn open_unchecked(url: &str) -> Result<Arc<dyn Store>> {
    match url.parse::<StoreUrl>()? {
        StoreUrl::Rocks { path, options } => {
            Ok(Arc::new(crate::rocks::RocksStore::open(&path, options)?))
        }
        #[cfg(feature = "fdb")]
        StoreUrl::Fdb { cluster_file } => Ok(Arc::new(crate::fdb::FdbStore::open(
            cluster_file.as_deref(),
        )?)),
        #[cfg(not(feature = "fdb"))]
        StoreUrl::Fdb { .. } => Err(Error::BackendNotCompiled {
            scheme: "fdb".into(),
            feature: "fdb".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        assert_eq!(
            "rocksdb:./data?sync=true&cache_mb=64"
                .parse::<StoreUrl>()
                .ok(),
            Some(StoreUrl::Rocks {
                path: "./data".into(),
                options: RocksOptions {
                    sync: true,
                    cache_mb: 64,
                    ..RocksOptions::default()
                }
            })
        );
        assert_eq!(
            "fdb:/etc/foundationdb/fdb.cluster".parse::<StoreUrl>().ok(),
            Some(StoreUrl::Fdb {
                cluster_file: Some("/etc/foundationdb/fdb.cluster".into())
            })
        );
        assert_eq!(
            "fdb:".parse::<StoreUrl>().ok(),
            Some(StoreUrl::Fdb { cluster_file: None })
        );
    }

    #[test]
    fn bad_urls_say_what_was_expected() {
        for (url, needle) in [
            ("./data", "missing scheme"),
            ("redis:x", "unknown scheme"),
            ("rocksdb:", "missing path"),
            ("rocksdb:x?sync=maybe", "sync is true or false"),
            ("rocksdb:x?fast=1", "unknown option"),
        ] {
            let e = url.parse::<StoreUrl>().unwrap_err().to_string();
            assert!(
                e.contains(needle) && e.contains("rocksdb:PATH"),
                "{url}: {e}"
            );
        }
    }

    #[cfg(not(feature = "fdb"))]
    #[test]
    fn fdb_without_the_feature_says_how_to_get_it() {
        let e = open("fdb:").unwrap_err().to_string();
        assert!(e.contains("--features fdb"), "{e}");
    }
}
