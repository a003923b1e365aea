//! Pulled-authors keyspace: authors whose activities are not pushed (hybrid fan-out).
//!
//! ```text
//! (p, "pull", author)      → empty      the author was above the hybrid threshold when posting
//! (p, "pull", "version")   → i64 LE     atomic add whenever an author joins the set
//! ```
//!
//! Fan-out skips followers of an author with more followers than the hybrid threshold and adds
//! the author here (once: the consumer writes the key only while it is absent). The home feed
//! reader merges the recent items of every pulled author it follows from that author's user
//! feed. Membership is sticky: an author who drops below the threshold again stays pulled, so an
//! item posted while pulled never disappears from a home feed; items that were pushed as well
//! are de-duplicated by id. The version counter invalidates cached home pages when the set
//! grows.

use foundationdb_tuple::Subspace;

use super::{keyspace, Projection};
use crate::event::UserId;
use crate::write::Mutation;

/// The subspace of pulled authors (the version key sorts before every author: strings come
/// before integers in the tuple layer, so reading authors starts after it).
pub fn set(p: Projection) -> Subspace {
    keyspace(p, "pull")
}

/// The key marking `author` as pulled.
pub fn key(p: Projection, author: UserId) -> Vec<u8> {
    set(p).pack(&(author,))
}

/// Decodes the author from a key of [`set`].
pub fn parse_key(p: Projection, key: &[u8]) -> Option<UserId> {
    set(p).unpack::<(UserId,)>(key).ok().map(|(a,)| a)
}

/// The set's version counter.
pub fn version(p: Projection) -> Vec<u8> {
    set(p).pack(&("version",))
}

/// The writes that add `author` to the set.
pub fn add(p: Projection, author: UserId) -> [Mutation; 2] {
    [
        Mutation::Set {
            key: key(p, author),
            value: Vec::new(),
        },
        Mutation::Add {
            key: version(p),
            delta: 1,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_bytes() {
        assert_eq!(key(1, 5), b"\x15\x01\x02pull\x00\x15\x05");
        assert_eq!(version(1), b"\x15\x01\x02pull\x00\x02version\x00");
        assert_eq!(parse_key(1, &key(1, 5)), Some(5));
        assert_eq!(parse_key(1, &version(1)), None);
        // Authors sort after the version key.
        assert!(version(1) < key(1, i64::MIN));
    }
}
