//! The one error type of the store crate. Each variant says what an operator should do.

use std::fmt;

/// A store result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Shows bytes as printable ASCII with `\xNN` escapes, like FDB's tools.
pub(crate) struct Printable<'a>(pub &'a [u8]);

impl fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in self.0.iter().take(200) {
            if b.is_ascii_graphic() && b != b'\\' {
                write!(f, "{}", b as char)?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        if self.0.len() > 200 {
            write!(f, "…")?;
        }
        Ok(())
    }
}

fn opt(v: &Option<Vec<u8>>) -> String {
    v.as_ref()
        .map_or_else(|| "<absent>".to_owned(), |v| Printable(v).to_string())
}

/// What can go wrong talking to a store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A precondition did not hold: another writer changed the key since it was read. A
    /// consumer that sees this on its offset key has lost its partition (zombie fencing): it
    /// must stop or re-read its offset and re-seek. Anyone else: re-read and retry.
    #[error("conflict on key {}: expected {}, found {}", Printable(.key), opt(.expected), opt(.found))]
    Conflict {
        /// The key whose precondition failed.
        key: Vec<u8>,
        /// What the writer expected.
        expected: Option<Vec<u8>>,
        /// What was there.
        found: Option<Vec<u8>>,
    },
    /// A key exceeds FoundationDB's key limit. Shorten the key layout; this is a bug in the caller.
    #[error("key of {size} bytes exceeds the {limit}-byte key limit")]
    KeyTooLarge {
        /// Actual size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A value exceeds FoundationDB's value limit. Split the value or reject the input upstream.
    #[error("value of {size} bytes exceeds the {limit}-byte value limit")]
    ValueTooLarge {
        /// Actual size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A batch exceeds FoundationDB's transaction limit. Split it (aim under 1 MB).
    #[error(
        "batch of {size} bytes exceeds the {limit}-byte batch limit; split it into smaller batches"
    )]
    BatchTooLarge {
        /// Actual size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A read view was used after FoundationDB's 5-second limit. Read in shorter chunks, each
    /// in a fresh view.
    #[error(
        "read view is {age_ms} ms old, past the 5 s limit; read in shorter chunks with fresh views"
    )]
    ReadViewExpired {
        /// How old the view was.
        age_ms: u128,
    },
    /// The store URL could not be understood.
    #[error("invalid store URL {url:?}: {reason}. Expected rocksdb:PATH[?sync=true&cache_mb=N&memtable_mb=N] or fdb:[CLUSTER_FILE]")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The URL names a backend this binary was built without.
    #[error("the {scheme} backend is not compiled into this binary; rebuild with `cargo build --features {feature}`")]
    BackendNotCompiled {
        /// The URL scheme.
        scheme: String,
        /// The cargo feature that enables it.
        feature: String,
    },
    /// Opening the store failed. For RocksDB: check the path exists and is writable, and that no
    /// other process holds it (the embedded store allows one process). For FDB: check the
    /// cluster file and that libfdb_c is installed.
    #[error("cannot open {backend} store at {location}: {message}")]
    Open {
        /// Backend name.
        backend: &'static str,
        /// Path or cluster file.
        location: String,
        /// The backend's message.
        message: String,
    },
    /// The store holds data in a key layout this build does not read (see
    /// `tidings_core::keys::meta::LAYOUT_VERSION`). The log is the source of truth: build the
    /// store again from it.
    #[error("the store at {location} was written with key layout {found}, this build reads layout {want}; rebuild it from the log: stop tidings, move the store directory aside (or use a new FoundationDB key prefix) and start the consumers with --reread-from-start")]
    Layout {
        /// Path or cluster file.
        location: String,
        /// Layout found in the store.
        found: i64,
        /// Layout this build writes.
        want: i64,
    },
    /// The backend failed an operation. Usually an I/O or cluster problem: see the message,
    /// check disk space (RocksDB) or cluster health (`fdbcli status`).
    #[error("{backend} error: {message}")]
    Backend {
        /// Backend name.
        backend: &'static str,
        /// The backend's message.
        message: String,
    },
}

impl Error {
    /// True for [`Error::Conflict`].
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict { .. })
    }
}
