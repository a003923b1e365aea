//! Write batches: mutations plus the preconditions that must hold when they commit.

use tidings_core::Mutation;

/// "`key` still holds `expected`" (`None`: the key is absent), checked atomically at commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Precondition {
    /// The key to check.
    pub key: Vec<u8>,
    /// The value it must hold, or `None` for absent.
    pub expected: Option<Vec<u8>>,
}

/// One atomic write.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    /// Applied in order.
    pub mutations: Vec<Mutation>,
    /// All must hold, or nothing is written.
    pub preconditions: Vec<Precondition>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to `value`.
    pub fn set(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> &mut Self {
        self.mutations.push(Mutation::Set {
            key: key.into(),
            value: value.into(),
        });
        self
    }

    /// Removes `key`.
    pub fn clear(&mut self, key: impl Into<Vec<u8>>) -> &mut Self {
        self.mutations.push(Mutation::Clear { key: key.into() });
        self
    }

    /// Removes `begin..end`.
    pub fn clear_range(&mut self, begin: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) -> &mut Self {
        self.mutations.push(Mutation::ClearRange {
            begin: begin.into(),
            end: end.into(),
        });
        self
    }

    /// Adds `delta` to the i64 LE at `key`.
    pub fn add(&mut self, key: impl Into<Vec<u8>>, delta: i64) -> &mut Self {
        self.mutations.push(Mutation::Add {
            key: key.into(),
            delta,
        });
        self
    }

    /// Requires `key` to hold `expected` (`None`: absent) at commit.
    pub fn require(&mut self, key: impl Into<Vec<u8>>, expected: Option<Vec<u8>>) -> &mut Self {
        self.preconditions.push(Precondition {
            key: key.into(),
            expected,
        });
        self
    }

    /// Appends planned mutations.
    pub fn extend(&mut self, ms: impl IntoIterator<Item = Mutation>) -> &mut Self {
        self.mutations.extend(ms);
        self
    }

    /// Bytes as FoundationDB counts them.
    pub fn size(&self) -> usize {
        self.mutations.iter().map(Mutation::size).sum::<usize>()
            + self
                .preconditions
                .iter()
                .map(|p| p.key.len() + p.expected.as_ref().map_or(0, Vec::len))
                .sum::<usize>()
    }

    /// True if the batch writes nothing and checks nothing.
    pub fn is_empty(&self) -> bool {
        self.mutations.is_empty() && self.preconditions.is_empty()
    }
}
