//! Notification counts and marks.
//!
//! Counts are read from the notification feed itself: entries newer than the user's `seen`
//! (`read`) mark, from actors the user has not blocked or muted, counted up to [`COUNT_CAP`]
//! (the feed is trimmed to about that many anyway; clients show "999+"). Marks only move
//! forward, with a precondition on the old value so two concurrent marks cannot move one back.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use tidings_core::keys::feed::{self as feed_keys, FeedKind, Position};
use tidings_core::keys::marks::{self, Mark};
use tidings_core::keys::messages;
use tidings_core::{EventId, UserId};
use tidings_store::{RangeOptions, ReadView, Store, WriteBatch};

use crate::feed::{active_projection, decode_body, decode_rows, relations, QueryError};

/// Most notifications counted.
pub const COUNT_CAP: usize = 1_000;

/// Unseen and unread notifications.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Newer than the `seen` mark.
    pub unseen: u64,
    /// Newer than the `read` mark.
    pub unread: u64,
}

/// Why a mark was refused.
#[derive(Debug, thiserror::Error)]
pub enum MarkError {
    /// `up_to` is not one of the user's notifications: answer 404.
    #[error("activity {0} is not in user {1}'s notifications")]
    NotInFeed(EventId, UserId),
    /// The store failed.
    #[error(transparent)]
    Query(#[from] QueryError),
}

impl From<tidings_store::Error> for MarkError {
    fn from(e: tidings_store::Error) -> Self {
        MarkError::Query(e.into())
    }
}

fn read_marks(
    view: &dyn ReadView,
    user: UserId,
) -> Result<[Option<Position>; 2], tidings_store::Error> {
    let v = view.get_many(&[marks::key(user, Mark::Seen), marks::key(user, Mark::Read)])?;
    Ok([
        v[0].as_deref().and_then(marks::decode),
        v[1].as_deref().and_then(marks::decode),
    ])
}

/// The user's unseen and unread counts.
pub fn counts(store: &dyn Store, user: UserId) -> Result<Counts, QueryError> {
    let view = store.snapshot()?;
    Ok(counts_in(&*view, user)?)
}

fn counts_in(view: &dyn ReadView, user: UserId) -> Result<Counts, tidings_store::Error> {
    let p = active_projection(view)?;
    let [seen, read] = read_marks(view, user)?;
    let sub = feed_keys::feed(p, user, FeedKind::Notifications);
    let (begin, end) = sub.range();
    let rows = view.range(&begin, &end, RangeOptions::forward(COUNT_CAP))?;
    let entries = decode_rows(&sub, user, &rows);
    // Notifications do not depend on following the actor: blocks and mutes only.
    let vis = relations(view, p, user, BTreeSet::new(), None)?;
    let mut c = Counts::default();
    for (pos, e) in &entries {
        if !vis.shows(FeedKind::Notifications, e) {
            continue;
        }
        if seen.is_none_or(|m| *pos > m) {
            c.unseen += 1;
        }
        if read.is_none_or(|m| *pos > m) {
            c.unread += 1;
        }
    }
    Ok(c)
}

/// Moves `mark` (and, for `read`, `seen` too) forward to `up_to`, or to the newest
/// notification when `up_to` is `None`. Returns the counts after.
pub fn mark(
    store: &dyn Store,
    user: UserId,
    mark: Mark,
    up_to: Option<EventId>,
) -> Result<Counts, MarkError> {
    for _ in 0..8 {
        let view = store.snapshot()?;
        let p = active_projection(&*view)?;
        let target = match up_to {
            Some(id) => {
                let time_ms = view
                    .get(&messages::key(p, id))?
                    .and_then(|b| decode_body(&b))
                    .map(|a| a.time_ms)
                    .ok_or(MarkError::NotInFeed(id, user))?;
                let pos = Position { time_ms, id };
                if view
                    .get(&feed_keys::key(p, user, FeedKind::Notifications, pos))?
                    .is_none()
                {
                    return Err(MarkError::NotInFeed(id, user));
                }
                pos
            }
            None => {
                let sub = feed_keys::feed(p, user, FeedKind::Notifications);
                let (b, e) = sub.range();
                match view.range(&b, &e, RangeOptions::forward(1))?.first() {
                    Some((k, _)) => match feed_keys::parse_key(&sub, k) {
                        Some(pos) => pos,
                        None => return Ok(counts_in(&*view, user)?),
                    },
                    None => return Ok(counts_in(&*view, user)?),
                }
            }
        };
        let [seen, read] = read_marks(&*view, user)?;
        let mut b = WriteBatch::new();
        let mut moves = vec![(Mark::Seen, seen)];
        if mark == Mark::Read {
            moves.push((Mark::Read, read));
        }
        for (m, current) in moves {
            if current.is_some_and(|c| c >= target) {
                continue;
            }
            let key = marks::key(user, m);
            b.require(key.clone(), current.map(marks::encode))
                .set(key, marks::encode(target));
        }
        drop(view);
        if b.is_empty() {
            return Ok(counts(store, user)?);
        }
        match store.commit(b) {
            Ok(()) => return Ok(counts(store, user)?),
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(MarkError::Query(QueryError::Store(
        tidings_store::Error::Backend {
            backend: "marks",
            message: "too many concurrent marks of one user; retry".into(),
        },
    )))
}
