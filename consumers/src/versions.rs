//! Projection versions: which exist, which is active, switching and dropping.
//!
//! `("meta","active")` names the projection readers and consumers use. [`switch`] flips it
//! in one atomic batch guarded by a precondition (the value it read), so two racing switches
//! cannot both win and a reader — who reads the active version and the page in one read view —
//! sees either the old projection or the new one, never a mix. Switching to a projection still
//! being rebuilt (`("meta","building",p)` set) or holding nothing is refused unless forced.
//! [`drop_version`] clears a projection with one clear-range; the active one is refused.

use tidings_core::keys::{self, meta, Projection};
use tidings_core::write::{decode_i64, encode_i64};
use tidings_store::{RangeOptions, Store, WriteBatch};

/// Why a version operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] tidings_store::Error),
    /// Not allowed as asked; the message says why and what to do.
    #[error("{0}")]
    Refused(String),
}

/// What is known about one projection.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct VersionInfo {
    /// The projection.
    pub projection: Projection,
    /// Whether `("meta","active")` names it.
    pub active: bool,
    /// Whether a rebuild into it has not caught up yet.
    pub building: bool,
    /// Estimated bytes.
    pub bytes: u64,
}

/// The active projection (absent: [`meta::DEFAULT_PROJECTION`]).
pub fn active(store: &dyn Store) -> Result<Projection, tidings_store::Error> {
    Ok(store
        .get(&meta::active())?
        .map_or(meta::DEFAULT_PROJECTION, |v| decode_i64(&v)))
}

/// Whether projection `p` holds at least one key.
pub fn exists(store: &dyn Store, p: Projection) -> Result<bool, tidings_store::Error> {
    let (b, e) = keys::projection(p).range();
    Ok(!store
        .snapshot()?
        .range(&b, &e, RangeOptions::forward(1))?
        .is_empty())
}

/// Whether a rebuild into `p` has not caught up yet.
pub fn building(store: &dyn Store, p: Projection) -> Result<bool, tidings_store::Error> {
    Ok(store.get(&meta::building(p))?.is_some())
}

/// Every projection holding keys, in order.
pub fn list(store: &dyn Store) -> Result<Vec<VersionInfo>, tidings_store::Error> {
    let active = active(store)?;
    let mut out = Vec::new();
    // Projection keys start with a tuple integer; step from one projection to the next.
    // Integer codes run 0x0c..=0x1c; meta and marks (strings, 0x02) sort before them.
    let mut begin = vec![0x0c];
    let end = vec![0x1d];
    loop {
        let rows = store
            .snapshot()?
            .range(&begin, &end, RangeOptions::forward(1))?;
        let Some((k, _)) = rows.first() else { break };
        let Some(p) = projection_of(k) else { break };
        let (b, e) = keys::projection(p).range();
        out.push(VersionInfo {
            projection: p,
            active: p == active,
            building: building(store, p)?,
            bytes: store.estimated_size(&b, &e)?,
        });
        if p == i64::MAX {
            break;
        }
        begin = keys::projection(p + 1).bytes().to_vec();
    }
    if !out.iter().any(|v| v.active) {
        out.push(VersionInfo {
            projection: active,
            active: true,
            building: false,
            bytes: 0,
        });
        out.sort_by_key(|v| v.projection);
    }
    Ok(out)
}

/// The projection a key belongs to, if it is a projection key.
fn projection_of(key: &[u8]) -> Option<Projection> {
    // Tuple integers: 0x14 is zero, 0x15..=0x1c positive with 1..=8 big-endian bytes,
    // 0x0c..=0x13 negative (one's complement).
    let code = *key.first()?;
    if !(0x0c..=0x1c).contains(&code) {
        return None;
    }
    let n = (code as i64 - 0x14).unsigned_abs() as usize;
    let bytes = key.get(1..1 + n)?;
    let mut v: u64 = 0;
    for b in bytes {
        v = (v << 8) | u64::from(*b);
    }
    if code >= 0x14 {
        i64::try_from(v).ok()
    } else {
        // One's complement for negatives.
        let max = if n == 8 {
            u64::MAX
        } else {
            (1u64 << (8 * n)) - 1
        };
        i64::try_from(max - v).ok().map(|m| -m)
    }
}

/// Makes `to` the active projection; returns the previous one. Refused while `to` is being
/// rebuilt or holds nothing, unless `force`.
pub fn switch(store: &dyn Store, to: Projection, force: bool) -> Result<Projection, VersionError> {
    let view = store.snapshot()?;
    let raw = view.get(&meta::active())?;
    let from = raw.as_deref().map_or(meta::DEFAULT_PROJECTION, decode_i64);
    drop(view);
    if from == to {
        return Ok(from);
    }
    if !force && building(store, to)? {
        return Err(VersionError::Refused(format!(
            "projection {to} is still being rebuilt (it has not caught up with the log); wait for `tidings rebuild --version {to}` to report it caught up, or pass --force"
        )));
    }
    if !force && !exists(store, to)? {
        return Err(VersionError::Refused(format!(
            "projection {to} holds nothing; build it first with `tidings rebuild --version {to}` (or pass --force)"
        )));
    }
    let mut batch = WriteBatch::new();
    batch.require(meta::active(), raw);
    batch.set(meta::active(), encode_i64(to));
    match store.commit(batch) {
        Ok(()) => Ok(from),
        Err(e) if e.is_conflict() => Err(VersionError::Refused(
            "another switch changed the active projection at the same time; look with `tidings versions` and retry".into(),
        )),
        Err(e) => Err(e.into()),
    }
}

/// Removes projection `p` (all its keyspaces, its building flag and rebuild record). Refused
/// for the active projection.
pub fn drop_version(store: &dyn Store, p: Projection) -> Result<(), VersionError> {
    let raw = store.get(&meta::active())?;
    let active = raw.as_deref().map_or(meta::DEFAULT_PROJECTION, decode_i64);
    if active == p {
        return Err(VersionError::Refused(format!(
            "projection {p} is the active one; switch to another first (`tidings switch N`)"
        )));
    }
    let (b, e) = keys::projection(p).range();
    let mut batch = WriteBatch::new();
    // Guarded: a switch to `p` racing with this drop makes the drop fail instead.
    batch.require(meta::active(), raw);
    batch.clear_range(b, e);
    batch.clear(meta::building(p));
    batch.clear(meta::rebuild(p));
    store.commit(batch).map_err(|e| {
        if e.is_conflict() {
            VersionError::Refused(format!(
                "the active projection changed while dropping {p}; nothing was dropped, retry"
            ))
        } else {
            e.into()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projection_of_reads_tuple_integers() {
        for p in [0, 1, 2, 255, 256, 70_000, i64::MAX, -1, -300] {
            let k = keys::projection(p).bytes().to_vec();
            assert_eq!(projection_of(&k), Some(p), "{p}: {k:?}");
        }
        assert_eq!(projection_of(&meta::active()), None);
    }
}
