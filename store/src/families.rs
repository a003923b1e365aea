//! Which RocksDB column family holds which keys: each projection version in a family of its
//! own, everything else (meta, marks, raw keys) in the default family.
//!
//! Why: a rebuild ingests a table file per keyspace and batch, and every batch spans all of the
//! version's feeds, so its files overlap one another in L0. In one shared family each L0
//! compaction rewrote the version's whole base level and L0's file count slowed every writer
//! of the store, live consumers included. A family per version lets the rebuild defer its
//! compactions and merge its files once at the end (`RocksStore::finish_bulk`), without
//! touching the families that serve.
//!
//! A version's keys are the keys whose first tuple element is that non-negative integer: one
//! contiguous key range, `[prefix, strinc(prefix))`. A family owns its whole range, so a read
//! of a range is a walk over the [`Segment`]s it crosses, in key order.
//!
//! Stores written before families keep each version that already has keys in the default
//! family there (decided at its first write in a process, see `RocksStore::write_family`).

use std::collections::{BTreeMap, HashSet};

/// The name of the family of the version whose keys start with `prefix`.
pub(crate) fn family_name(prefix: &[u8]) -> String {
    let v = prefix[1..]
        .iter()
        .fold(0u64, |v, b| (v << 8) | u64::from(*b));
    format!("projection-{v}")
}

/// The key prefix of the version a family named by [`family_name`] holds, or `None` for any
/// other family name.
pub(crate) fn prefix_of(name: &str) -> Option<Vec<u8>> {
    let v: u64 = name.strip_prefix("projection-")?.parse().ok()?;
    if v.to_string() != name["projection-".len()..] {
        return None;
    }
    // The tuple layer's integer encoding: a code of 0x14 plus the byte count, then the value's
    // significant bytes, big-endian.
    let bytes = v.to_be_bytes();
    let skip = (v.leading_zeros() / 8) as usize;
    let mut p = vec![0x14 + (8 - skip) as u8];
    p.extend_from_slice(&bytes[skip..]);
    Some(p)
}

/// The first tuple element of `key` when it is a non-negative integer, a projection version:
/// the bytes every key of that version starts with.
pub(crate) fn version_prefix(key: &[u8]) -> Option<&[u8]> {
    let code = *key.first()?;
    if !(0x14..=0x1c).contains(&code) {
        return None;
    }
    let n = usize::from(code - 0x14) + 1;
    key.get(..n)
}

/// The first key after every key that starts with `prefix` (`None`: no such key, the prefix is
/// all 0xff).
pub(crate) fn strinc(prefix: &[u8]) -> Option<Vec<u8>> {
    let last = prefix.iter().rposition(|b| *b != 0xff)?;
    let mut end = prefix[..=last].to_vec();
    end[last] += 1;
    Some(end)
}

/// A part of a key range that one family holds: `family` `None` is the default family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Segment<'f> {
    pub family: Option<&'f str>,
    pub begin: Vec<u8>,
    pub end: Vec<u8>,
}

/// The versions with a family of their own, and the ones that stay in the default family.
#[derive(Debug, Default)]
pub(crate) struct Families {
    /// Version prefix → family name; sorted by prefix, which is key order.
    own: BTreeMap<Vec<u8>, String>,
    /// Versions whose keys are in the default family (a store written before families).
    shared: HashSet<Vec<u8>>,
}

impl Families {
    /// The family that holds `key` (`None`: the default one).
    pub fn of(&self, key: &[u8]) -> Option<&str> {
        let prefix = version_prefix(key)?;
        self.own.get(prefix).map(String::as_str)
    }

    /// Whether the version `prefix` was placed already (in a family or the default).
    pub fn placed(&self, prefix: &[u8]) -> bool {
        self.own.contains_key(prefix) || self.shared.contains(prefix)
    }

    /// Records that version `prefix` lives in the family `name`.
    pub fn add_own(&mut self, prefix: Vec<u8>, name: String) {
        self.own.insert(prefix, name);
    }

    /// Records that version `prefix` lives in the default family.
    pub fn add_shared(&mut self, prefix: Vec<u8>) {
        self.shared.insert(prefix);
    }

    /// The families of their own.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.own.values().map(String::as_str)
    }

    /// `begin..end` cut where the family holding it changes, in key order; empty when the
    /// range is.
    pub fn segments(&self, begin: &[u8], end: &[u8]) -> Vec<Segment<'_>> {
        let mut out = Vec::new();
        if begin >= end {
            return out;
        }
        // Fast path: the whole range within one version.
        if let Some(prefix) = version_prefix(begin) {
            if end.starts_with(prefix) || strinc(prefix).is_some_and(|e| end <= e.as_slice()) {
                out.push(Segment {
                    family: self.own.get(prefix).map(String::as_str),
                    begin: begin.to_vec(),
                    end: end.to_vec(),
                });
                return out;
            }
        }
        let mut at = begin.to_vec();
        for (prefix, name) in &self.own {
            let own_end = strinc(prefix).unwrap_or_else(|| vec![0xff; prefix.len() + 1]);
            if own_end.as_slice() <= at.as_slice() {
                continue;
            }
            if prefix.as_slice() >= end {
                break;
            }
            if at.as_slice() < prefix.as_slice() {
                out.push(Segment {
                    family: None,
                    begin: std::mem::replace(&mut at, prefix.clone()),
                    end: prefix.clone(),
                });
            }
            let stop = if own_end.as_slice() < end {
                own_end
            } else {
                end.to_vec()
            };
            out.push(Segment {
                family: Some(name),
                begin: std::mem::replace(&mut at, stop.clone()),
                end: stop,
            });
            if at.as_slice() >= end {
                return out;
            }
        }
        out.push(Segment {
            family: None,
            begin: at,
            end: end.to_vec(),
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidings_core::keys::projection;

    #[test]
    fn names_and_prefixes_are_the_tuple_encoding_of_the_version() {
        for p in [0i64, 1, 2, 255, 256, 65_535, 1 << 40, i64::MAX] {
            let prefix = projection(p).bytes().to_vec();
            assert_eq!(
                version_prefix(&projection(p).pack(&("feed", 1))),
                Some(&prefix[..])
            );
            let name = family_name(&prefix);
            assert_eq!(name, format!("projection-{p}"));
            assert_eq!(prefix_of(&name), Some(prefix), "{name}");
        }
        assert_eq!(version_prefix(&projection(-1).pack(&("feed",))), None);
        assert_eq!(version_prefix(b"\x02meta\x00"), None);
        assert_eq!(version_prefix(b"\x16\x01"), None, "a truncated integer");
        for bad in ["default", "projection-", "projection-x", "projection-01"] {
            assert_eq!(prefix_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn strinc_is_the_end_of_a_prefix() {
        assert_eq!(strinc(b"\x15\x01"), Some(b"\x15\x02".to_vec()));
        assert_eq!(strinc(b"\x15\xff"), Some(b"\x16".to_vec()));
        assert_eq!(strinc(b"\xff\xff"), None);
    }

    #[test]
    fn segments_follow_the_families_in_key_order() {
        let (p1, p2, p3) = (
            projection(1).bytes().to_vec(),
            projection(2).bytes().to_vec(),
            projection(3).bytes().to_vec(),
        );
        let mut f = Families::default();
        f.add_own(p1.clone(), family_name(&p1));
        f.add_own(p3.clone(), family_name(&p3));
        f.add_shared(p2.clone());
        let seg = |family: Option<&'static str>, b: &[u8], e: &[u8]| Segment {
            family,
            begin: b.to_vec(),
            end: e.to_vec(),
        };
        let all = f.segments(b"\x00", b"\xff");
        assert_eq!(
            all,
            vec![
                seg(None, b"\x00", &p1),
                seg(Some("projection-1"), &p1, &p2),
                seg(None, &p2, &p3),
                seg(Some("projection-3"), &p3, b"\x15\x04"),
                seg(None, b"\x15\x04", b"\xff"),
            ]
        );
        // Within one version: one segment, whatever the range's ends are.
        let feed = projection(1).pack(&("feed",));
        assert_eq!(
            f.segments(&feed, &p2),
            vec![seg(Some("projection-1"), &feed, &p2)]
        );
        let (b, e) = projection(3).range();
        assert_eq!(f.segments(&b, &e), vec![seg(Some("projection-3"), &b, &e)]);
        // Starting inside one family and ending inside another.
        let mid3 = projection(3).pack(&("msg",));
        assert_eq!(
            f.segments(&feed, &mid3),
            vec![
                seg(Some("projection-1"), &feed, &p2),
                seg(None, &p2, &p3),
                seg(Some("projection-3"), &p3, &mid3),
            ]
        );
        assert!(f.segments(&p2, &p2).is_empty());
        assert_eq!(f.of(&feed), Some("projection-1"));
        assert_eq!(f.of(&projection(2).pack(&("feed",))), None);
        assert!(f.placed(&p2) && f.placed(&p3) && !f.placed(projection(4).bytes()));
    }
}
