//! Digests of a projection, one per keyspace, to prove two projections byte-identical.
//!
//! Keys are hashed **without** their projection prefix `(p,)`, so version 1 and version 2 of
//! the same log compare equal. Per keyspace: SHA-256 over every `(key, value)` in key order
//! (each as a 4-byte little-endian length and the bytes), the number of keys and their bytes.
//!
//! The projection digest combines every keyspace **except `off`**: offsets are positions of a
//! named consumer (`(p, "off", consumer, topic, partition)`), not state derived from the log —
//! a rebuild stopped with `--until`, or consumers under another group name, hold other ones
//! over the same state. `off` still gets its own line. Nothing else is excluded: feed versions
//! (`fver`), fan-out progress (`fan`, empty once every fan-out finished), pulled authors
//! (`pull`), graph counts (`cnt`) and processor state (`prc`: dedupe records and rate-limit
//! admissions, bucketed by log time, for a given chain configuration) are all functions of
//! the log. Background maintenance
//! (trimming, unfollow cleanup) is not: it bumps feed versions and removes entries whenever it
//! runs, so compare projections written without it (or after it settled on both).
//!
//! A second combination, **`content`**, also leaves out `fver`: what readers see. Feed
//! versions count changes, so they depend on the order events were applied in, not only on
//! the log: live consumers reading a backlog apply partitions as fetched, a rebuild in merge
//! order (timestamp, topic, partition). A follow applied before the followee's posts bumps a
//! feed once per fanned-out post; applied after them, once for the backfill. The entries end
//! up the same, the counters not. So two rebuilds of one log match on `state`; the live
//! projection and a rebuild match on `state` when the live consumers applied in merge order
//! (events published in time order, as they happen), and on `content` always.
//!
//! The walk reads in chunks, each in a fresh read view (a view lives ≤ 5 s): digest a
//! projection nobody is writing.

use sha2::{Digest as _, Sha256};
use tidings_core::keys::{self, Projection};
use tidings_store::{RangeOptions, Store};

/// Keys read per read view.
const CHUNK: usize = 20_000;

/// One keyspace's digest.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct KeyspaceDigest {
    /// The keyspace's short name (`msg`, `feed`, `fver`, …).
    pub name: String,
    /// Keys in it.
    pub keys: u64,
    /// Bytes of keys (without the projection prefix) and values.
    pub bytes: u64,
    /// SHA-256, hex.
    pub sha256: String,
}

/// The digest of one projection.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ProjectionDigest {
    /// The projection.
    pub projection: Projection,
    /// Every keyspace present, in key order.
    pub keyspaces: Vec<KeyspaceDigest>,
    /// SHA-256 over the keyspace digests except `off` (see the module doc).
    pub state: String,
    /// SHA-256 over the keyspace digests except `off` and `fver` (see the module doc).
    pub content: String,
}

impl ProjectionDigest {
    /// The digest of keyspace `name`, if present.
    pub fn keyspace(&self, name: &str) -> Option<&KeyspaceDigest> {
        self.keyspaces.iter().find(|k| k.name == name)
    }
}

/// The keyspace name a projection-relative key starts with (a tuple string: `02 … 00`).
fn keyspace_name(rel: &[u8]) -> String {
    match rel.split_first() {
        Some((0x02, rest)) => {
            let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
            String::from_utf8_lossy(&rest[..end]).into_owned()
        }
        _ => format!("?{:02x}", rel.first().copied().unwrap_or(0)),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Digests projection `p` of `store`.
pub fn digest(store: &dyn Store, p: Projection) -> Result<ProjectionDigest, tidings_store::Error> {
    let sub = keys::projection(p);
    let prefix = sub.bytes().len();
    let (mut begin, end) = sub.range();
    let mut out: Vec<KeyspaceDigest> = Vec::new();
    let mut current: Option<(String, Sha256, u64, u64)> = None;
    let finish = |c: (String, Sha256, u64, u64), out: &mut Vec<KeyspaceDigest>| {
        out.push(KeyspaceDigest {
            name: c.0,
            keys: c.2,
            bytes: c.3,
            sha256: hex(&c.1.finalize()),
        });
    };
    loop {
        let rows = store
            .snapshot()?
            .range(&begin, &end, RangeOptions::forward(CHUNK))?;
        let full = rows.len() == CHUNK;
        for (k, v) in &rows {
            let rel = &k[prefix.min(k.len())..];
            let name = keyspace_name(rel);
            if current.as_ref().is_none_or(|c| c.0 != name) {
                if let Some(c) = current.take() {
                    finish(c, &mut out);
                }
                current = Some((name, Sha256::new(), 0, 0));
            }
            let c = current.as_mut().expect("set above");
            c.1.update((rel.len() as u32).to_le_bytes());
            c.1.update(rel);
            c.1.update((v.len() as u32).to_le_bytes());
            c.1.update(v);
            c.2 += 1;
            c.3 += (rel.len() + v.len()) as u64;
        }
        match rows.last() {
            Some((k, _)) if full => {
                begin = k.clone();
                begin.push(0);
            }
            _ => break,
        }
    }
    if let Some(c) = current.take() {
        finish(c, &mut out);
    }
    let combine = |leave_out: &[&str]| {
        let mut h = Sha256::new();
        for k in out.iter().filter(|k| !leave_out.contains(&k.name.as_str())) {
            h.update(k.name.as_bytes());
            h.update([0]);
            h.update(k.sha256.as_bytes());
        }
        hex(&h.finalize())
    };
    let (state, content) = (combine(&["off"]), combine(&["off", "fver"]));
    Ok(ProjectionDigest {
        projection: p,
        keyspaces: out,
        state,
        content,
    })
}
