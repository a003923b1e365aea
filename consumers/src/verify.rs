//! Drift detection: compares a projection with another (a rebuild from the log, another store)
//! or with a backup, by per-range digests, and names the first differing keys.
//!
//! Each keyspace is cut into ranges of about [`VerifyOptions::range_bytes`] on the left side;
//! both sides hash each range (keys relative to their projection, so version 1 compares with
//! version 2) and only ranges whose digests differ are read again, pair by pair, to find the
//! keys. Against a backup the ranges are the backup's chunks, whose digests its manifest holds,
//! so the backup's files are only opened where the live store differs.
//!
//! Compared: every keyspace but `off` (consumer positions, not state) and, unless asked,
//! `fver` (feed versions count changes, so they depend on the order events were applied in;
//! see [`crate::digest`]). Like a digest, compare projections nobody writes meanwhile, or
//! expect the ranges written meanwhile to differ.

use sha2::{Digest as _, Sha256};
use tidings_core::keys::{self, Projection, KEYSPACES};
use tidings_store::{KeyValue, Store};

use crate::backup::{self, BackupError, Manifest, MARKS};

/// What to compare.
#[derive(Clone, Debug)]
pub struct VerifyOptions {
    /// Also compare feed versions.
    pub with_fver: bool,
    /// Stop listing differences after this many.
    pub max_differences: usize,
    /// Bytes of pairs per compared range.
    pub range_bytes: usize,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            with_fver: false,
            max_differences: 10,
            range_bytes: 1 << 20,
        }
    }
}

impl VerifyOptions {
    fn compares(&self, keyspace: &str) -> bool {
        keyspace != "off" && (self.with_fver || keyspace != "fver")
    }
}

/// One differing key.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Difference {
    /// Keyspace short name.
    pub keyspace: String,
    /// The key relative to its projection, printable (`\xNN` escapes).
    pub key: String,
    /// The left side's value (hex, at most 64 bytes shown), `None`: absent.
    pub left: Option<String>,
    /// The right side's value.
    pub right: Option<String>,
}

/// What `verify` found.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct VerifyReport {
    /// Ranges compared.
    pub ranges: u64,
    /// Ranges whose digests differ.
    pub differing_ranges: u64,
    /// Pairs on the left side.
    pub keys: u64,
    /// The first differing keys (at most `max_differences`).
    pub differences: Vec<Difference>,
    /// No range differs.
    pub same: bool,
}

/// Errors of a comparison.
pub type Result<T> = std::result::Result<T, BackupError>;

/// A key, printable.
pub fn printable(key: &[u8]) -> String {
    let mut s = String::with_capacity(key.len());
    for &b in key {
        if b.is_ascii_graphic() && b != b'\\' {
            s.push(b as char);
        } else {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    s
}

fn shown(v: &[u8]) -> String {
    let mut h = backup::hex(&v[..v.len().min(64)]);
    if v.len() > 64 {
        h.push('…');
    }
    h
}

/// Hashes a pair with its key relative to the projection.
fn hash_pair(h: &mut Sha256, rel: &[u8], v: &[u8]) {
    h.update((rel.len() as u32).to_le_bytes());
    h.update(rel);
    h.update((v.len() as u32).to_le_bytes());
    h.update(v);
}

/// Every pair of `[begin, end)` with keys relative (`prefix` bytes stripped), view by view.
fn read_all(store: &dyn Store, begin: &[u8], end: &[u8], prefix: usize) -> Result<Vec<KeyValue>> {
    let mut out = Vec::new();
    let mut from = begin.to_vec();
    loop {
        let next = store.snapshot()?.scan(&from, end, 4 << 20, &mut |k, v| {
            out.push((k[prefix.min(k.len())..].to_vec(), v.to_vec()))
        })?;
        match next {
            Some(n) => from = n,
            None => return Ok(out),
        }
    }
}

/// The digest of `[begin, end)` (keys relative) and its pair count.
fn digest_range(
    store: &dyn Store,
    begin: &[u8],
    end: &[u8],
    prefix: usize,
) -> Result<(String, u64)> {
    let mut h = Sha256::new();
    let mut n = 0u64;
    let mut from = begin.to_vec();
    loop {
        let next = store.snapshot()?.scan(&from, end, 4 << 20, &mut |k, v| {
            hash_pair(&mut h, &k[prefix.min(k.len())..], v);
            n += 1;
        })?;
        match next {
            Some(n) => from = n,
            None => return Ok((backup::hex(&h.finalize()), n)),
        }
    }
}

/// Appends the differences of two sorted pair lists (relative keys) to `report`.
fn diff(
    keyspace: &str,
    left: &[KeyValue],
    right: &[KeyValue],
    o: &VerifyOptions,
    report: &mut VerifyReport,
) {
    let (mut i, mut j) = (0, 0);
    let mut push = |key: &[u8], l: Option<&[u8]>, r: Option<&[u8]>| {
        if report.differences.len() < o.max_differences {
            report.differences.push(Difference {
                keyspace: keyspace.to_string(),
                key: printable(key),
                left: l.map(shown),
                right: r.map(shown),
            });
        }
    };
    while i < left.len() || j < right.len() {
        match (left.get(i), right.get(j)) {
            (Some(a), Some(b)) if a.0 == b.0 => {
                if a.1 != b.1 {
                    push(&a.0, Some(&a.1), Some(&b.1));
                }
                i += 1;
                j += 1;
            }
            (Some(a), Some(b)) if a.0 < b.0 => {
                push(&a.0, Some(&a.1), None);
                i += 1;
            }
            (Some(_), Some(b)) | (None, Some(b)) => {
                push(&b.0, None, Some(&b.1));
                j += 1;
            }
            (Some(a), None) => {
                push(&a.0, Some(&a.1), None);
                i += 1;
            }
            (None, None) => break,
        }
    }
}

/// Compares projection `pa` of `a` with projection `pb` of `b` (see the module doc).
pub fn projections(
    a: &dyn Store,
    pa: Projection,
    b: &dyn Store,
    pb: Projection,
    o: &VerifyOptions,
) -> Result<VerifyReport> {
    let (prefix_a, prefix_b) = (
        keys::projection(pa).bytes().to_vec(),
        keys::projection(pb).bytes().to_vec(),
    );
    let mut report = VerifyReport::default();
    for ks in KEYSPACES.iter().filter(|ks| o.compares(ks)) {
        let (begin, end) = keys::keyspace_range(pa, ks);
        let mut from = begin;
        loop {
            let mut h = Sha256::new();
            let mut n = 0u64;
            let next = a
                .snapshot()?
                .scan(&from, &end, o.range_bytes, &mut |k, v| {
                    hash_pair(&mut h, &k[prefix_a.len()..], v);
                    n += 1;
                })?;
            let range_end = next.clone().unwrap_or_else(|| end.clone());
            let rel = |k: &[u8]| [prefix_b.as_slice(), &k[prefix_a.len()..]].concat();
            let (b_from, b_end) = (rel(&from), rel(&range_end));
            let left = backup::hex(&h.finalize());
            let (right, _) = digest_range(b, &b_from, &b_end, prefix_b.len())?;
            report.ranges += 1;
            report.keys += n;
            if left != right {
                report.differing_ranges += 1;
                if report.differences.len() < o.max_differences {
                    let l = read_all(a, &from, &range_end, prefix_a.len())?;
                    let r = read_all(b, &b_from, &b_end, prefix_b.len())?;
                    diff(ks, &l, &r, o, &mut report);
                }
            }
            match next {
                Some(n) => from = n,
                None => break,
            }
        }
    }
    report.same = report.differing_ranges == 0;
    Ok(report)
}

/// Compares a full backup (`id`, default the newest full one in `dir`) with projection `p` of
/// `store`, chunk by chunk.
pub fn against_backup(
    store: &dyn Store,
    p: Projection,
    dir: &std::path::Path,
    id: Option<&str>,
    o: &VerifyOptions,
) -> Result<VerifyReport> {
    let all = backup::list(dir)?;
    let m: &Manifest = match id {
        Some(id) => all.iter().find(|m| m.id == id),
        None => all.iter().rev().find(|m| m.kind == backup::Kind::Full),
    }
    .filter(|m| m.kind == backup::Kind::Full)
    .ok_or_else(|| {
        BackupError::Refused(format!(
            "no full backup {} in {}",
            id.unwrap_or("at all"),
            dir.display()
        ))
    })?;
    let backup_prefix = keys::projection(m.projection).bytes().len();
    let live_prefix = keys::projection(p).bytes().to_vec();
    let bdir = Manifest::path(dir, &m.id);
    let mut report = VerifyReport::default();
    for c in m.chunks.iter().filter(|c| o.compares(&c.keyspace)) {
        let bad = |what: &str| BackupError::Corrupt {
            file: bdir.join("manifest.json").display().to_string(),
            why: format!("has a chunk {} with a malformed {what}", c.file),
        };
        let (begin, end) = (
            backup::unhex(&c.begin).ok_or_else(|| bad("begin"))?,
            backup::unhex(&c.end).ok_or_else(|| bad("end"))?,
        );
        let (prefix, live_begin, live_end) = if c.keyspace == MARKS {
            (0, begin.clone(), end.clone())
        } else {
            let rel =
                |k: &[u8]| [live_prefix.as_slice(), &k[backup_prefix.min(k.len())..]].concat();
            (live_prefix.len(), rel(&begin), rel(&end))
        };
        let (live, n) = digest_range(store, &live_begin, &live_end, prefix)?;
        report.ranges += 1;
        report.keys += n;
        if live != c.content {
            report.differing_ranges += 1;
            if report.differences.len() < o.max_differences {
                let path = bdir.join(&c.file);
                let left = backup::read_chunk(&path, c)?;
                let right = read_all(store, &live_begin, &live_end, prefix)?;
                diff(&c.keyspace, &left, &right, o, &mut report);
            }
        }
    }
    report.same = report.differing_ranges == 0;
    Ok(report)
}
