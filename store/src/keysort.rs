//! Putting a bulk batch's keys in order.
//!
//! A rebuild commits batches of about a million mutations, and a table file takes them in key
//! order. Comparing the keys through their pointers costs a cache miss per comparison, so each
//! key's first 24 bytes are held inline ([`Head`]). A comparison sort of those still does ~20
//! comparisons per key; the keys of one batch share long prefixes (version, keyspace) and then
//! spread over owners, which suits a most-significant-byte-first radix sort: a pass per byte
//! position that tells the keys apart, buckets of a few dozen keys finished by comparison.
//!
//! The order is the keys' byte order, and for equal keys their positions in the batch (so the
//! mutations of one key keep their order when folded). The overlay's ordered map holds the
//! same inline words ([`head_words`]) for the same reason.

use std::cmp::Ordering;

/// The bytes held inline per key: a feed entry's keyspace, owner and kind and most of its time,
/// a graph key whole. Keys that agree on all of them are rare.
const HEAD_BYTES: usize = 24;

/// A bucket this small is sorted by comparison.
const SMALL: usize = 48;

/// A key's first 24 bytes (zero-padded) as three big-endian words, and its position.
/// Comparing heads orders keys as their bytes do, except that a tie needs the whole keys.
#[derive(Clone, Copy, Debug, Default)]
struct Head {
    words: [u64; 3],
    at: u32,
}

impl Head {
    fn of(key: &[u8], at: u32) -> Head {
        Head {
            words: head_words(key),
            at,
        }
    }

    /// Byte `d` (< 24) of the key, zero past its end.
    fn byte(&self, d: usize) -> u8 {
        (self.words[d / 8] >> (56 - 8 * (d % 8))) as u8
    }
}

/// The first 24 bytes of `key` (zero-padded) as three big-endian words: comparing them orders
/// keys as their bytes do, except that a tie needs the whole keys.
pub(crate) fn head_words(key: &[u8]) -> [u64; 3] {
    let mut b = [0u8; HEAD_BYTES];
    let n = key.len().min(HEAD_BYTES);
    b[..n].copy_from_slice(&key[..n]);
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[8 * i..8 * i + 8]);
        u64::from_be_bytes(w)
    };
    [word(0), word(1), word(2)]
}

/// The positions `0..n` ordered by (`key(position)`, position). `n` must fit in a `u32`.
pub(crate) fn order<'k>(n: u32, key: impl Fn(u32) -> &'k [u8]) -> Vec<u32> {
    // The keys lie wherever their batch allocated them: fetch them a few ahead.
    const AHEAD: u32 = 8;
    let mut heads: Vec<Head> = (0..n)
        .map(|i| {
            if i + AHEAD < n {
                prefetch(key(i + AHEAD).as_ptr());
            }
            Head::of(key(i), i)
        })
        .collect();
    let mut spare = vec![Head::default(); heads.len()];
    let full = |x: &Head, y: &Head| {
        x.words
            .cmp(&y.words)
            .then_with(|| key(x.at).cmp(key(y.at)))
            .then(x.at.cmp(&y.at))
    };
    sort(&mut heads, &mut spare, 0, &full);
    heads.into_iter().map(|h| h.at).collect()
}

/// Sorts `v`, whose heads agree on their first `d` bytes, using `spare` (as long) for scatter.
fn sort(
    v: &mut [Head],
    spare: &mut [Head],
    mut d: usize,
    full: &impl Fn(&Head, &Head) -> Ordering,
) {
    loop {
        if v.len() <= SMALL || d == HEAD_BYTES {
            v.sort_unstable_by(full);
            return;
        }
        let mut counts = [0usize; 256];
        for h in v.iter() {
            counts[usize::from(h.byte(d))] += 1;
        }
        if counts.contains(&v.len()) {
            // Every head has this byte: skip to the first byte on which two heads differ.
            match first_difference(v) {
                Some(at) => d = at,
                None => d = HEAD_BYTES,
            }
            continue;
        }
        let mut starts = [0usize; 256];
        let mut at = 0;
        for (s, c) in starts.iter_mut().zip(counts) {
            *s = at;
            at += c;
        }
        let mut next = starts;
        for h in v.iter() {
            let b = usize::from(h.byte(d));
            spare[next[b]] = *h;
            next[b] += 1;
        }
        v.copy_from_slice(spare);
        for (s, c) in starts.into_iter().zip(counts) {
            if c > 1 {
                sort(&mut v[s..s + c], &mut spare[s..s + c], d + 1, full);
            }
        }
        return;
    }
}

/// The first byte position at which two of `v`'s heads differ, if any.
fn first_difference(v: &[Head]) -> Option<usize> {
    let first = v.first()?.words;
    let mut diff = [0u64; 3];
    for h in v {
        for (d, (a, b)) in diff.iter_mut().zip(h.words.iter().zip(first)) {
            *d |= a ^ b;
        }
    }
    diff.iter()
        .position(|&w| w != 0)
        .map(|i| 8 * i + diff[i].leading_zeros() as usize / 8)
}

/// Asks the CPU to bring the cache line at `p` in: a hint, with no effect on what the program
/// computes.
#[inline(always)]
pub(crate) fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    #[allow(unsafe_code)]
    // SAFETY: a prefetch reads nothing the program can observe and cannot fault, whatever the
    // address; SSE is part of the x86_64 baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn by_comparison(keys: &[Vec<u8>]) -> Vec<u32> {
        let mut v: Vec<u32> = (0..keys.len() as u32).collect();
        v.sort_by(|a, b| keys[*a as usize].cmp(&keys[*b as usize]).then(a.cmp(b)));
        v
    }

    #[test]
    fn heads_order_like_the_bytes() {
        let keys: Vec<Vec<u8>> = vec![
            vec![],
            vec![0],
            vec![0, 0],
            vec![1; 31],
            vec![1; 32],
            vec![1; 40],
            [vec![1; 32], vec![0]].concat(),
            vec![1; 24],
            [vec![1; 24], vec![0]].concat(),
            vec![2],
            vec![0xff; 9],
        ];
        for a in &keys {
            for b in &keys {
                let (ha, hb) = (Head::of(a, 0), Head::of(b, 0));
                if ha.words != hb.words {
                    assert_eq!(ha.words.cmp(&hb.words), a.cmp(b), "{a:?} vs {b:?}");
                }
                for (d, &byte) in a.iter().take(HEAD_BYTES).enumerate() {
                    assert_eq!(ha.byte(d), byte);
                }
            }
        }
    }

    #[test]
    fn a_batch_shaped_like_a_rebuilds_is_ordered() {
        // Thousands of keys behind a shared prefix, past the inline bytes, with repeats.
        let keys: Vec<Vec<u8>> = (0..20_000u32)
            .map(|i| {
                let owner = i.wrapping_mul(2_654_435_761) % 700;
                let mut k = b"\x15\x02\x02feed\x00\x16".to_vec();
                k.extend_from_slice(&owner.to_be_bytes());
                k.extend_from_slice(&[0u8; 24]);
                k.extend_from_slice(&(i % 50).to_be_bytes());
                k
            })
            .collect();
        assert_eq!(
            order(keys.len() as u32, |i| &keys[i as usize]),
            by_comparison(&keys)
        );
    }

    proptest! {
        #[test]
        fn orders_by_key_then_position(
            prefix in prop::collection::vec(any::<u8>(), 0..40),
            tails in prop::collection::vec(prop::collection::vec(0u8..4, 0..40), 0..400),
        ) {
            // A shared prefix of any length and short tails over few byte values: many ties
            // in the inline bytes, equal keys, and keys that are prefixes of others.
            let keys: Vec<Vec<u8>> = tails.iter().map(|t| [prefix.clone(), t.clone()].concat()).collect();
            prop_assert_eq!(order(keys.len() as u32, |i| &keys[i as usize]), by_comparison(&keys));
        }
    }
}
