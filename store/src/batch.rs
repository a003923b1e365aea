//! Write batches: mutations plus the preconditions that must hold when they commit.

use tidings_core::Mutation;

use crate::keysort::prefetch;

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

/// Groups of keys written with one value each (or all cleared): a fan-out's index entries, one
/// feed position under every follower's feed. The keys lie back to back in one buffer and each
/// group holds its value once, where a [`Mutation`] per key would allocate a key and a copy of
/// the value per entry — a million of each per bulk batch, to build, sort through and free.
///
/// Keys are applied in the order they were pushed, after the mutations of the batch they are
/// committed with ([`crate::Store::commit_bulk_groups`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyGroups {
    /// The keys, back to back.
    bytes: Vec<u8>,
    /// Per key: where it ends in `bytes`, and its group.
    keys: Vec<GroupKey>,
    /// Per group: the value its keys are set to, or `None`: they are cleared.
    values: Vec<Option<Vec<u8>>>,
    /// Keys + values of every key, as FoundationDB counts a batch's bytes.
    size: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct GroupKey {
    end: usize,
    group: u32,
}

impl KeyGroups {
    /// No groups.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a group: the keys pushed until the next one are set to `value` (`None`: cleared).
    pub fn group(&mut self, value: Option<Vec<u8>>) -> &mut Self {
        self.values.push(value);
        self
    }

    /// Adds a key to the open group, written by `write` at the end of the buffer it is given.
    ///
    /// # Panics
    /// If no group is open, or past 2^32 groups (a bulk batch is bounded far below that).
    pub fn push_with(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        let last = self
            .values
            .len()
            .checked_sub(1)
            .expect("a key group is open");
        let group = u32::try_from(last).expect("fewer than 2^32 key groups");
        let start = self.bytes.len();
        write(&mut self.bytes);
        let end = self.bytes.len();
        self.size += end - start + self.values[last].as_ref().map_or(0, Vec::len);
        self.keys.push(GroupKey { end, group });
    }

    /// Adds `key` to the open group (see [`KeyGroups::push_with`]).
    pub fn push(&mut self, key: &[u8]) {
        self.push_with(|b| b.extend_from_slice(key));
    }

    /// Reserves room for `keys` more keys of about `key_bytes` bytes each.
    pub fn reserve(&mut self, keys: usize, key_bytes: usize) {
        self.keys.reserve(keys);
        self.bytes.reserve(keys * key_bytes);
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True if there is no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Bytes as FoundationDB counts them: each key, plus its value when it is set.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Key `i` (pushed `i`-th).
    pub fn key(&self, i: usize) -> &[u8] {
        let start = i.checked_sub(1).map_or(0, |j| self.keys[j].end);
        &self.bytes[start..self.keys[i].end]
    }

    /// What key `i` is set to, or `None`: it is cleared.
    pub fn value(&self, i: usize) -> Option<&[u8]> {
        self.values[self.keys[i].group as usize].as_deref()
    }

    /// Brings key `i` closer, in `stage`s from far (0) to near (2): its place in the buffer,
    /// then its bytes and its group, then the group's value.
    pub(crate) fn prefetch(&self, i: usize, stage: u8) {
        let Some(k) = self.keys.get(i) else { return };
        match stage {
            0 => prefetch(std::ptr::from_ref(k).cast()),
            1 => {
                // A key may straddle two cache lines.
                let start = i.checked_sub(1).map_or(0, |j| self.keys[j].end);
                prefetch(self.bytes[start..].as_ptr());
                prefetch(self.bytes[k.end.saturating_sub(1)..].as_ptr());
                prefetch(std::ptr::from_ref(&self.values[k.group as usize]).cast());
            }
            _ => {
                if let Some(v) = &self.values[k.group as usize] {
                    prefetch(v.as_ptr());
                }
            }
        }
    }

    /// The largest value of a group.
    pub(crate) fn largest_value(&self) -> usize {
        self.values
            .iter()
            .map(|v| v.as_ref().map_or(0, Vec::len))
            .max()
            .unwrap_or(0)
    }

    /// The groups as one mutation per key, in order: for backends without a bulk path.
    pub fn mutations(&self) -> impl Iterator<Item = Mutation> + '_ {
        (0..self.len()).map(|i| {
            let key = self.key(i).to_vec();
            match self.value(i) {
                Some(v) => Mutation::Set {
                    key,
                    value: v.to_vec(),
                },
                None => Mutation::Clear { key },
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_expand_to_their_keys_in_order() {
        let mut g = KeyGroups::new();
        assert!(g.is_empty());
        g.group(Some(b"v".to_vec()));
        g.push(b"k1");
        g.push_with(|b| b.extend_from_slice(b"k22"));
        g.group(None).push(b"k1");
        g.group(Some(Vec::new()));
        assert_eq!(g.len(), 3);
        assert_eq!((g.key(1), g.value(1)), (&b"k22"[..], Some(&b"v"[..])));
        assert_eq!((g.key(2), g.value(2)), (&b"k1"[..], None));
        assert_eq!(g.size(), 3 + 4 + 2);
        let mut b = WriteBatch::new();
        b.set(b"k1".to_vec(), b"v".to_vec())
            .set(b"k22".to_vec(), b"v".to_vec())
            .clear(b"k1".to_vec());
        assert_eq!(g.mutations().collect::<Vec<_>>(), b.mutations);
        assert_eq!(g.size(), b.size());
    }
}
