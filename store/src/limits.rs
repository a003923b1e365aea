//! FoundationDB's limits, enforced by every backend so nothing that passes on RocksDB fails on
//! a cluster. See <https://apple.github.io/foundationdb/known-limitations.html>.

use std::time::Duration;

use crate::batch::{KeyGroups, WriteBatch};
use crate::error::{Error, Result};

/// Largest key, bytes.
pub const MAX_KEY: usize = 10_000;
/// Largest value, bytes.
pub const MAX_VALUE: usize = 100_000;
/// Largest batch (keys + values of every mutation and precondition), bytes.
pub const MAX_BATCH: usize = 10_000_000;
/// Batch size to aim for; above it FDB commits get slow.
pub const TARGET_BATCH: usize = 1_000_000;
/// Longest life of a read view (FDB's transaction read version).
pub const READ_VIEW_LIFETIME: Duration = Duration::from_secs(5);

/// Checks a key's size.
pub fn check_key(key: &[u8]) -> Result<()> {
    if key.len() > MAX_KEY {
        return Err(Error::KeyTooLarge {
            size: key.len(),
            limit: MAX_KEY,
        });
    }
    Ok(())
}

/// Largest batch [`crate::Store::commit_bulk`] takes on a backend with a bulk path (RocksDB),
/// bytes: a projection being rebuilt is written in batches this large.
pub const MAX_BULK_BATCH: usize = 512 << 20;

/// Checks every size in a batch.
pub fn check_batch(batch: &WriteBatch) -> Result<()> {
    check_batch_up_to(batch, MAX_BATCH)
}

/// Checks a value's size (its length, `len`).
pub(crate) fn check_value_len(len: usize) -> Result<()> {
    if len > MAX_VALUE {
        return Err(Error::ValueTooLarge {
            size: len,
            limit: MAX_VALUE,
        });
    }
    Ok(())
}

/// Checks every key and value in a batch, and its total against `limit`.
pub fn check_batch_up_to(batch: &WriteBatch, limit: usize) -> Result<()> {
    check_each(batch)?;
    check_total(batch.size(), limit)
}

/// [`check_batch_up_to`] of a batch committed with key groups: every key and value, and the
/// total of both against `limit`.
pub fn check_bulk(batch: &WriteBatch, groups: &KeyGroups, limit: usize) -> Result<()> {
    check_each(batch)?;
    for i in 0..groups.len() {
        check_key(groups.key(i))?;
    }
    check_value_len(groups.largest_value())?;
    check_total(batch.size() + groups.size(), limit)
}

/// Checks every key and value of a batch's mutations and preconditions.
fn check_each(batch: &WriteBatch) -> Result<()> {
    use tidings_core::Mutation;
    for m in &batch.mutations {
        match m {
            Mutation::Set { key, value } => {
                check_key(key)?;
                check_value_len(value.len())?;
            }
            Mutation::Clear { key } | Mutation::Add { key, .. } => check_key(key)?,
            Mutation::ClearRange { begin, end } => {
                check_key(begin)?;
                check_key(end)?;
            }
        }
    }
    for p in &batch.preconditions {
        check_key(&p.key)?;
    }
    Ok(())
}

/// Checks a batch's total size.
fn check_total(size: usize, limit: usize) -> Result<()> {
    if size > limit {
        return Err(Error::BatchTooLarge { size, limit });
    }
    Ok(())
}
