//! A read view that sees a batch's own pending writes.
//!
//! The consume loop plans many events against one snapshot and commits them in one batch. An
//! event must see the effects of the events before it in the same batch (a follow, then a post
//! by the followee; a post, then its retraction), exactly as if each had been committed alone.
//! [`Overlay`] layers the pending mutations over the snapshot with the store's own semantics:
//! set, clear, clear-range and atomic add, in order.

use std::collections::BTreeMap;
use std::ops::Bound;

use tidings_core::write::{decode_i64, encode_i64};
use tidings_core::Mutation;

use crate::{KeyValue, RangeOptions, ReadView, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
enum Pending {
    Value(Vec<u8>),
    Cleared,
    /// An add on top of whatever the base holds (the base key was not range-cleared before).
    Add(i64),
}

/// Pending mutations without a base: what an [`Overlay`] layers over a read view.
///
/// Taken out of an overlay ([`Overlay::into_deltas`]), a delta can lie under the next overlay
/// ([`Overlay::layered`]) while its own batch is still being committed: a bulk writer plans
/// batch N+1 over "snapshot + delta N" while batch N is written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delta {
    keys: BTreeMap<Vec<u8>, Pending>,
    cleared: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Delta {
    /// Applies `ms` in order, as a commit would.
    fn apply<'m>(&mut self, ms: impl IntoIterator<Item = &'m Mutation>) {
        for m in ms {
            match m {
                Mutation::Set { key, value } => {
                    self.keys.insert(key.clone(), Pending::Value(value.clone()));
                }
                Mutation::Clear { key } => {
                    self.keys.insert(key.clone(), Pending::Cleared);
                }
                Mutation::ClearRange { begin, end } => {
                    if begin >= end {
                        continue;
                    }
                    let inside: Vec<Vec<u8>> = self
                        .keys
                        .range::<[u8], _>((Bound::Included(&begin[..]), Bound::Excluded(&end[..])))
                        .map(|(k, _)| k.clone())
                        .collect();
                    for k in inside {
                        self.keys.remove(&k);
                    }
                    self.cleared.push((begin.clone(), end.clone()));
                }
                Mutation::Add { key, delta } => {
                    let next = match self.keys.get(key) {
                        Some(Pending::Value(v)) => {
                            Pending::Value(encode_i64(decode_i64(v).wrapping_add(*delta)))
                        }
                        Some(Pending::Cleared) => Pending::Value(encode_i64(*delta)),
                        Some(Pending::Add(d)) => Pending::Add(d.wrapping_add(*delta)),
                        None if self.range_cleared(key) => Pending::Value(encode_i64(*delta)),
                        None => Pending::Add(*delta),
                    };
                    self.keys.insert(key.clone(), next);
                }
            }
        }
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.cleared.is_empty()
    }

    /// Whether the delta writes `key` (sets, clears or adds it, or clears a range holding it).
    pub fn touches(&self, key: &[u8]) -> bool {
        self.keys.contains_key(key) || self.range_cleared(key)
    }

    /// Whether the delta writes any key in `begin..end`.
    pub fn touches_range(&self, begin: &[u8], end: &[u8]) -> bool {
        if begin >= end {
            return false;
        }
        self.keys
            .range::<[u8], _>((Bound::Included(begin), Bound::Excluded(end)))
            .next()
            .is_some()
            || self.clears_any(begin, end)
    }

    /// Whether a cleared range overlaps `begin..end`.
    fn clears_any(&self, begin: &[u8], end: &[u8]) -> bool {
        self.cleared
            .iter()
            .any(|(b, e)| b.as_slice() < end && begin < e.as_slice())
    }

    fn range_cleared(&self, key: &[u8]) -> bool {
        self.cleared
            .iter()
            .any(|(b, e)| b.as_slice() <= key && key < e.as_slice())
    }

    /// The delta's view of one key given the base's value.
    fn resolve(
        &self,
        key: &[u8],
        base: impl FnOnce() -> Result<Option<Vec<u8>>>,
    ) -> Result<Option<Vec<u8>>> {
        match self.keys.get(key) {
            Some(Pending::Value(v)) => Ok(Some(v.clone())),
            Some(Pending::Cleared) => Ok(None),
            Some(Pending::Add(d)) => {
                let old = base()?.map_or(0, |v| decode_i64(&v));
                Ok(Some(encode_i64(old.wrapping_add(*d))))
            }
            None if self.range_cleared(key) => Ok(None),
            None => base(),
        }
    }
}

/// `base` plus the mutations applied so far (and, when layered, a delta between the two).
pub struct Overlay<'a> {
    base: &'a dyn ReadView,
    /// Empty unless layered.
    lower: Delta,
    own: Delta,
}

impl std::fmt::Debug for Overlay<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Overlay")
            .field("pending_keys", &self.own.keys.len())
            .field("cleared_ranges", &self.own.cleared.len())
            .field("layered", &!self.lower.is_empty())
            .finish()
    }
}

impl<'a> Overlay<'a> {
    /// An overlay with nothing pending: reads go straight to `base`.
    pub fn new(base: &'a dyn ReadView) -> Self {
        Overlay::layered(base, Delta::default())
    }

    /// An overlay over `base` plus `lower`, the pending writes of a batch that `base` does not
    /// hold yet (being committed meanwhile). `base` must not include any of `lower`'s writes:
    /// take it before that batch is committed.
    pub fn layered(base: &'a dyn ReadView, lower: Delta) -> Self {
        Overlay {
            base,
            lower,
            own: Delta::default(),
        }
    }

    /// Applies `ms` in order, as a commit would.
    pub fn apply<'m>(&mut self, ms: impl IntoIterator<Item = &'m Mutation>) {
        self.own.apply(ms);
    }

    /// Whether nothing is pending (in this overlay or a layer under it).
    pub fn is_empty(&self) -> bool {
        self.own.is_empty() && self.lower.is_empty()
    }

    /// The layer under this overlay (empty if none) and this overlay's own pending writes.
    pub fn into_deltas(self) -> (Delta, Delta) {
        (self.lower, self.own)
    }

    /// Runs `f` over the view this overlay reads: `own` over (`lower` over `base`).
    fn with_view<T>(&self, f: impl FnOnce(&Layer<'_>) -> T) -> T {
        if self.lower.is_empty() {
            return f(&Layer {
                base: self.base,
                delta: &self.own,
            });
        }
        let mid = Layer {
            base: self.base,
            delta: &self.lower,
        };
        f(&Layer {
            base: &mid,
            delta: &self.own,
        })
    }
}

impl ReadView for Overlay<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.with_view(|v| v.get(key))
    }

    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        self.with_view(|v| v.get_many(keys))
    }

    fn range(&self, begin: &[u8], end: &[u8], opts: RangeOptions) -> Result<Vec<KeyValue>> {
        self.with_view(|v| v.range(begin, end, opts))
    }
}

/// One delta over a read view.
struct Layer<'a> {
    base: &'a dyn ReadView,
    delta: &'a Delta,
}

impl ReadView for Layer<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.delta.resolve(key, || self.base.get(key))
    }

    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        if self.delta.is_empty() {
            return self.base.get_many(keys);
        }
        let base = self.base.get_many(keys)?;
        keys.iter()
            .zip(base)
            .map(|(k, b)| self.delta.resolve(k, || Ok(b)))
            .collect()
    }

    fn range(&self, begin: &[u8], end: &[u8], opts: RangeOptions) -> Result<Vec<KeyValue>> {
        if begin >= end {
            return Ok(Vec::new());
        }
        let pending: Vec<(&Vec<u8>, &Pending)> = self
            .delta
            .keys
            .range::<[u8], _>((Bound::Included(begin), Bound::Excluded(end)))
            .collect();
        let ranges_hit = self.delta.clears_any(begin, end);
        if pending.is_empty() && !ranges_hit {
            return self.base.range(begin, end, opts);
        }
        // Each pending key hides at most one base row, so `limit + pending` base rows are
        // enough to fill `limit` results; a cleared range can hide any number, so read all.
        let base_limit = if opts.limit == 0 || ranges_hit {
            0
        } else {
            opts.limit + pending.len()
        };
        let base_rows = self.base.range(
            begin,
            end,
            RangeOptions {
                limit: base_limit,
                reverse: opts.reverse,
            },
        )?;
        let complete = base_limit == 0 || base_rows.len() < base_limit;
        let last_base = base_rows.last().map(|(k, _)| k.clone());
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = base_rows
            .into_iter()
            .filter(|(k, _)| !self.delta.touches(k))
            .collect();
        for (k, _) in pending {
            // Past the last base row read (in read order) lie unread base rows; at least
            // `limit` visible rows come before, so such keys could only be cut off below.
            let beyond = last_base
                .as_ref()
                .is_some_and(|l| if opts.reverse { k < l } else { k > l });
            if !complete && beyond {
                continue;
            }
            if let Some(v) = self.delta.resolve(k, || self.base.get(k))? {
                merged.insert(k.clone(), v);
            }
        }
        let mut rows: Vec<KeyValue> = merged.into_iter().collect();
        if opts.reverse {
            rows.reverse();
        }
        if opts.limit > 0 {
            rows.truncate(opts.limit);
        }
        Ok(rows)
    }
}
