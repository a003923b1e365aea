//! Mutations: what a plan asks the store to do, in FoundationDB's vocabulary.
//!
//! Planning code in this crate returns `Vec<Mutation>`; the `Store` port (in `tidings-store`)
//! commits a list of them atomically together with preconditions. Keeping the type here lets
//! the planners stay free of any store dependency.

/// One write in an atomic batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mutation {
    /// Set `key` to `value`.
    Set {
        /// The tuple-encoded key.
        key: Vec<u8>,
        /// The value bytes.
        value: Vec<u8>,
    },
    /// Remove `key` (no error if absent).
    Clear {
        /// The tuple-encoded key.
        key: Vec<u8>,
    },
    /// Remove every key in `begin..end`.
    ClearRange {
        /// Inclusive start.
        begin: Vec<u8>,
        /// Exclusive end.
        end: Vec<u8>,
    },
    /// Add `delta` to the little-endian i64 at `key` (absent counts as 0), like FDB's `ADD`.
    Add {
        /// The tuple-encoded key.
        key: Vec<u8>,
        /// The signed amount; wraps on overflow, as FDB does.
        delta: i64,
    },
}

impl Mutation {
    /// Bytes this mutation contributes to a batch, as FoundationDB counts them
    /// (key + value; both bounds for a range clear).
    pub fn size(&self) -> usize {
        match self {
            Mutation::Set { key, value } => key.len() + value.len(),
            Mutation::Clear { key } => key.len(),
            Mutation::ClearRange { begin, end } => begin.len() + end.len(),
            Mutation::Add { key, .. } => key.len() + 8,
        }
    }

    /// The (first) key this mutation touches.
    pub fn key(&self) -> &[u8] {
        match self {
            Mutation::Set { key, .. } | Mutation::Clear { key } | Mutation::Add { key, .. } => key,
            Mutation::ClearRange { begin, .. } => begin,
        }
    }
}

/// Encodes an i64 the way FDB's atomic `ADD` and every counter in tidings store it.
pub fn encode_i64(v: i64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

/// Decodes an i64 counter value. Shorter values are zero-extended and longer ones truncated,
/// exactly as FoundationDB's `ADD` treats operands of another width.
pub fn decode_i64(bytes: &[u8]) -> i64 {
    let mut b = [0u8; 8];
    let n = bytes.len().min(8);
    b[..n].copy_from_slice(&bytes[..n]);
    i64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn i64_is_little_endian_like_fdb_add() {
        assert_eq!(encode_i64(1), vec![1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(encode_i64(-1), vec![0xff; 8]);
        assert_eq!(decode_i64(&[5]), 5);
        assert_eq!(decode_i64(&[]), 0);
        assert_eq!(decode_i64(&encode_i64(i64::MIN)), i64::MIN);
    }
}
