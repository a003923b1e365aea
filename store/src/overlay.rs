//! A read view that sees a batch's own pending writes.
//!
//! The consume loop plans many events against one snapshot and commits them in one batch. An
//! event must see the effects of the events before it in the same batch (a follow, then a post
//! by the followee; a post, then its retraction), exactly as if each had been committed alone.
//! [`Overlay`] layers the pending mutations over the snapshot with the store's own semantics:
//! set, clear, clear-range and atomic add, in order.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::ops::Bound;

use tidings_core::write::{decode_i64, encode_i64};
use tidings_core::Mutation;

use crate::keysort::head_words;
use crate::{layout, KeyValue, RangeOptions, ReadView, Result};

/// A pending key with its first 24 bytes held inline: a lookup in the ordered map compares
/// against every key of a node on its way down, and following each key's pointer cost a cache
/// miss per comparison (memcmp alone was ~17% of a rebuild's planning thread). Ordered as the
/// bytes are.
#[derive(Clone, Debug)]
struct PendingKey {
    head: [u64; 3],
    bytes: Vec<u8>,
}

impl PendingKey {
    fn new(bytes: Vec<u8>) -> PendingKey {
        PendingKey {
            head: head_words(&bytes),
            bytes,
        }
    }
}

/// What the ordered map compares: a [`PendingKey`] in the map, or a [`Probe`] looked up.
trait KeyBytes {
    fn head(&self) -> &[u64; 3];
    fn bytes(&self) -> &[u8];
}

impl KeyBytes for PendingKey {
    fn head(&self) -> &[u64; 3] {
        &self.head
    }
    fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// A borrowed key to look up, with its head computed once.
struct Probe<'a> {
    head: [u64; 3],
    bytes: &'a [u8],
}

impl<'a> Probe<'a> {
    fn new(bytes: &'a [u8]) -> Probe<'a> {
        Probe {
            head: head_words(bytes),
            bytes,
        }
    }
}

impl KeyBytes for Probe<'_> {
    fn head(&self) -> &[u64; 3] {
        &self.head
    }
    fn bytes(&self) -> &[u8] {
        self.bytes
    }
}

impl Ord for dyn KeyBytes + '_ {
    fn cmp(&self, other: &Self) -> Ordering {
        self.head()
            .cmp(other.head())
            .then_with(|| self.bytes().cmp(other.bytes()))
    }
}

impl PartialOrd for dyn KeyBytes + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for dyn KeyBytes + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for dyn KeyBytes + '_ {}

impl<'a> Borrow<dyn KeyBytes + 'a> for PendingKey {
    fn borrow(&self) -> &(dyn KeyBytes + 'a) {
        self
    }
}

impl Ord for PendingKey {
    fn cmp(&self, other: &Self) -> Ordering {
        (self as &dyn KeyBytes).cmp(other as &dyn KeyBytes)
    }
}

impl PartialOrd for PendingKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for PendingKey {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for PendingKey {}

/// The map's keys in `begin..end`, as range bounds.
fn probe_bounds<'p>(
    begin: &'p Probe<'_>,
    end: &'p Probe<'_>,
) -> (Bound<&'p dyn KeyBytes>, Bound<&'p dyn KeyBytes>) {
    (Bound::Included(begin), Bound::Excluded(end))
}

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
#[derive(Clone, Debug, Default)]
pub struct Delta {
    keys: BTreeMap<PendingKey, Pending>,
    cleared: Vec<(Vec<u8>, Vec<u8>)>,
    /// The keyspaces ([`layout::keyspace`]) of the keys written into `keys`: a read of another
    /// keyspace (a post's followers while the batch holds bodies and user feeds) skips the
    /// ordered map, whose lookups compare long keys at every level.
    spaces: Vec<Vec<u8>>,
    /// A key without a whole keyspace prefix was written: `spaces` filters nothing.
    unfiltered: bool,
}

impl PartialEq for Delta {
    fn eq(&self, other: &Self) -> bool {
        // `spaces` only summarises `keys` (and may still name a keyspace cleared since).
        self.keys == other.keys && self.cleared == other.cleared
    }
}

impl Eq for Delta {}

impl Delta {
    /// Applies `ms` in order, as a commit would.
    fn apply<'m>(&mut self, ms: impl IntoIterator<Item = &'m Mutation>) {
        for m in ms {
            match m {
                Mutation::Set { key, value } => {
                    self.note_keyspace(key);
                    self.keys
                        .insert(PendingKey::new(key.clone()), Pending::Value(value.clone()));
                }
                Mutation::Clear { key } => {
                    self.note_keyspace(key);
                    self.keys
                        .insert(PendingKey::new(key.clone()), Pending::Cleared);
                }
                Mutation::ClearRange { begin, end } => {
                    if begin >= end {
                        continue;
                    }
                    let (b, e) = (Probe::new(begin), Probe::new(end));
                    let inside: Vec<PendingKey> = self
                        .keys
                        .range::<dyn KeyBytes, _>(probe_bounds(&b, &e))
                        .map(|(k, _)| k.clone())
                        .collect();
                    for k in inside {
                        self.keys.remove(&k);
                    }
                    self.cleared.push((begin.clone(), end.clone()));
                }
                Mutation::Add { key, delta } => {
                    // Mostly a key added to before in the batch (a user's follower count):
                    // changed in place, without copying the key for a second descent.
                    let probe = Probe::new(key);
                    if let Some(pending) = self.keys.get_mut(&probe as &dyn KeyBytes) {
                        *pending = match pending {
                            Pending::Value(v) => {
                                Pending::Value(encode_i64(decode_i64(v).wrapping_add(*delta)))
                            }
                            Pending::Cleared => Pending::Value(encode_i64(*delta)),
                            Pending::Add(d) => Pending::Add(d.wrapping_add(*delta)),
                        };
                        continue;
                    }
                    self.note_keyspace(key);
                    let next = if self.range_cleared(key) {
                        Pending::Value(encode_i64(*delta))
                    } else {
                        Pending::Add(*delta)
                    };
                    self.keys.insert(
                        PendingKey {
                            head: probe.head,
                            bytes: key.clone(),
                        },
                        next,
                    );
                }
            }
        }
    }

    fn note_keyspace(&mut self, key: &[u8]) {
        if self.unfiltered {
            return;
        }
        match layout::keyspace(key) {
            Some(space) => {
                if !self.spaces.iter().any(|s| s == space) {
                    self.spaces.push(space.to_vec());
                }
            }
            None => self.unfiltered = true,
        }
    }

    /// Whether `keys` may hold `key` (`false`: it certainly does not).
    fn may_hold(&self, key: &[u8]) -> bool {
        if self.keys.is_empty() {
            return false;
        }
        match layout::keyspace(key) {
            Some(space) if !self.unfiltered => self.spaces.iter().any(|s| s == space),
            _ => true,
        }
    }

    /// Whether `keys` may hold a key in `begin..end` (`false`: certainly none).
    fn may_hold_range(&self, begin: &[u8], end: &[u8]) -> bool {
        if self.keys.is_empty() {
            return false;
        }
        match layout::keyspace(begin) {
            // Every key from `begin` up to `space ++ 0xff` is of that keyspace (after a string
            // element, 0x00 0xff would be an escaped zero: the string, hence the keyspace, goes
            // on). Ranges of a subspace end there or before.
            Some(space)
                if !self.unfiltered
                    && end.starts_with(space)
                    && end[space.len()..] <= [0xff][..] =>
            {
                self.spaces.iter().any(|s| s == space)
            }
            _ => true,
        }
    }

    /// The pending write of `key`, if any (not counting cleared ranges).
    fn pending(&self, key: &[u8]) -> Option<&Pending> {
        if self.may_hold(key) {
            self.keys.get(&Probe::new(key) as &dyn KeyBytes)
        } else {
            None
        }
    }

    /// The pending writes of keys in `begin..end`, in key order.
    fn pending_in(&self, begin: &[u8], end: &[u8]) -> Vec<(&[u8], &Pending)> {
        if begin >= end || !self.may_hold_range(begin, end) {
            return Vec::new();
        }
        let (b, e) = (Probe::new(begin), Probe::new(end));
        self.keys
            .range::<dyn KeyBytes, _>(probe_bounds(&b, &e))
            .map(|(k, p)| (k.bytes.as_slice(), p))
            .collect()
    }

    /// The keys set, cleared or added (not counting cleared ranges), in key order.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &[u8]> {
        self.keys.keys().map(|k| k.bytes.as_slice())
    }

    /// How many keys are set, cleared or added.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no range was cleared.
    pub(crate) fn clears_nothing_by_range(&self) -> bool {
        self.cleared.is_empty()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.cleared.is_empty()
    }

    /// Whether the delta writes `key` (sets, clears or adds it, or clears a range holding it).
    pub fn touches(&self, key: &[u8]) -> bool {
        self.pending(key).is_some() || self.range_cleared(key)
    }

    /// Whether the delta writes any key in `begin..end`.
    pub fn touches_range(&self, begin: &[u8], end: &[u8]) -> bool {
        if begin >= end {
            return false;
        }
        (self.may_hold_range(begin, end) && {
            let (b, e) = (Probe::new(begin), Probe::new(end));
            self.keys
                .range::<dyn KeyBytes, _>(probe_bounds(&b, &e))
                .next()
                .is_some()
        }) || self.clears_any(begin, end)
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
        match self.pending(key) {
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

    fn range_visit(
        &self,
        begin: &[u8],
        end: &[u8],
        opts: RangeOptions,
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<()> {
        self.with_view(|v| v.range_visit(begin, end, opts, visit))
    }
}

/// One delta over a read view.
struct Layer<'a> {
    base: &'a dyn ReadView,
    delta: &'a Delta,
}

impl ReadView for Layer<'_> {
    fn range_visit(
        &self,
        begin: &[u8],
        end: &[u8],
        opts: RangeOptions,
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<()> {
        if !self.delta.touches_range(begin, end) {
            // Nothing pending there: the base's rows as they are, uncopied.
            return self.base.range_visit(begin, end, opts, visit);
        }
        for (k, v) in self.range(begin, end, opts)? {
            visit(&k, &v);
        }
        Ok(())
    }

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
        let mut pending = self.delta.pending_in(begin, end);
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
        // Past the last base row read (in read order) lie unread base rows; at least `limit`
        // visible rows come before, so pending keys there could only be cut off below.
        let complete = base_limit == 0 || base_rows.len() < base_limit;
        if opts.reverse {
            pending.reverse();
        }
        // Both lists are in read order: merge them.
        let before = |a: &[u8], b: &[u8]| if opts.reverse { a > b } else { a < b };
        let mut rows = Vec::with_capacity(base_rows.len() + pending.len());
        let mut pending = pending.into_iter().peekable();
        let mut base_rows = base_rows.into_iter().peekable();
        loop {
            let take_base = match (base_rows.peek(), pending.peek()) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some((b, _)), Some((k, _))) => before(b, k),
            };
            if take_base {
                let (k, v) = base_rows.next().expect("peeked");
                if !(ranges_hit && self.delta.range_cleared(&k)) {
                    rows.push((k, v));
                }
                continue;
            }
            let (k, state) = pending.next().expect("peeked");
            let base = base_rows.next_if(|(b, _)| b == k).map(|(_, v)| v);
            if base.is_none() && !complete {
                // Not among the base rows read: either absent from the base (before the last
                // row read) or unread (after it, and then cut off by `limit`).
                if base_rows.peek().is_none() {
                    break;
                }
            }
            let value = match state {
                Pending::Value(v) => Some(v.clone()),
                Pending::Cleared => None,
                // An add is pending only on a key no cleared range held: on top of the base.
                Pending::Add(d) => Some(encode_i64(
                    base.map_or(0, |v| decode_i64(&v)).wrapping_add(*d),
                )),
            };
            if let Some(v) = value {
                rows.push((k.to_vec(), v));
            }
        }
        if opts.limit > 0 {
            rows.truncate(opts.limit);
        }
        Ok(rows)
    }
}
