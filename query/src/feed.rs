//! One feed page from one consistent snapshot.
//!
//! 1. Read the active projection (`("meta","active")`).
//! 2. Forward range over `(p, "feed", owner, kind)` (keys sort newest first) from just past the
//!    cursor, over-fetching so hidden entries rarely cost a second round trip.
//! 3. One multi-get of the bodies; tombstones and missing bodies are hidden.
//! 4. One multi-get of the reader's relations to the page's actors (follows, blocks, mutes).
//! 5. [`tidings_core::page::assemble`]: filter, aggregate, next cursor.

use std::collections::BTreeSet;

use tidings_core::keys::feed::{self as feed_keys, FeedEntry, FeedKind};
use tidings_core::keys::graph::{self, Edge};
use tidings_core::keys::messages::{self, MessageValue};
use tidings_core::keys::{meta, Projection};
use tidings_core::page::{self, AggregationRule, Cursor, CursorError, Page, Scanned, Visibility};
use tidings_core::write::decode_i64;
use tidings_core::{Event, UserId};
use tidings_store::{RangeOptions, ReadView, Store};

/// Most entries a client may ask for in one page.
pub const MAX_LIMIT: usize = 100;

/// What a reader asks for.
#[derive(Clone, Debug)]
pub struct FeedRequest {
    /// Whose feed (also the viewer).
    pub user: UserId,
    /// Which feed.
    pub kind: FeedKind,
    /// Activities per page, 1..=[`MAX_LIMIT`].
    pub limit: usize,
    /// Where the previous page ended.
    pub cursor: Option<String>,
    /// Group items by the aggregation rules.
    pub aggregate: bool,
}

/// Why a page could not be served.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The client sent a cursor this build cannot read: answer 400.
    #[error(transparent)]
    BadCursor(#[from] CursorError),
    /// The client asked for a page size out of range: answer 400.
    #[error("limit must be between 1 and {MAX_LIMIT}, got {0}")]
    BadLimit(usize),
    /// The store failed: answer 503 and check the store's health.
    #[error("store unavailable: {0}")]
    Store(#[from] tidings_store::Error),
}

/// The projection readers use now.
pub fn active_projection(view: &dyn ReadView) -> Result<Projection, tidings_store::Error> {
    Ok(view
        .get(&meta::active())?
        .map_or(meta::DEFAULT_PROJECTION, |v| decode_i64(&v)))
}

/// Serves one page.
pub fn read(
    store: &dyn Store,
    req: &FeedRequest,
    rules: &[AggregationRule],
) -> Result<Page, QueryError> {
    if req.limit == 0 || req.limit > MAX_LIMIT {
        return Err(QueryError::BadLimit(req.limit));
    }
    let cursor = req.cursor.as_deref().map(Cursor::decode).transpose()?;
    let view = store.snapshot()?;
    let p = active_projection(&*view)?;
    let sub = feed_keys::feed(p, req.user, req.kind);
    let (mut begin, end) = sub.range();
    if let Some(Cursor(pos)) = cursor {
        begin = feed_keys::after(p, req.user, req.kind, pos);
    }
    let want = req.limit * 2 + 8;
    let rows = view.range(&begin, &end, RangeOptions::forward(want))?;
    let more = rows.len() == want;
    let mut entries = Vec::with_capacity(rows.len());
    for (k, v) in &rows {
        let (Some(pos), Some(entry)) = (feed_keys::parse_key(&sub, k), FeedEntry::decode(v)) else {
            tracing::warn!(
                user = req.user,
                "skipping an index entry this build cannot decode"
            );
            continue;
        };
        entries.push((pos, entry));
    }
    let body_keys: Vec<Vec<u8>> = entries
        .iter()
        .map(|(pos, _)| messages::key(p, pos.id))
        .collect();
    let bodies = view.get_many(&body_keys)?;
    let scanned: Vec<Scanned> = entries
        .into_iter()
        .zip(bodies)
        .map(|((pos, entry), body)| Scanned {
            pos,
            entry,
            body: body.and_then(|b| decode_body(&b)),
        })
        .collect();
    let vis = visibility(&*view, p, req.user, &scanned)?;
    Ok(page::assemble(
        req.kind,
        &scanned,
        more,
        &vis,
        rules,
        req.aggregate,
        req.limit,
    ))
}

fn decode_body(b: &[u8]) -> Option<tidings_core::Activity> {
    match MessageValue::parse(b) {
        MessageValue::Retracted { .. } => None,
        MessageValue::Body(bytes) => match tidings_schemas::decode(bytes) {
            Ok(Event::Activity(a)) => Some(a),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(error = %e, "skipping a stored body this build cannot decode");
                None
            }
        },
    }
}

/// Loads the reader's relations to the actors of a page in one multi-get.
fn visibility(
    view: &dyn ReadView,
    p: Projection,
    viewer: UserId,
    scanned: &[Scanned],
) -> Result<Visibility, tidings_store::Error> {
    let actors: Vec<UserId> = scanned
        .iter()
        .map(|s| s.entry.actor)
        .filter(|a| *a != viewer)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut keys = Vec::with_capacity(actors.len() * 3);
    for a in &actors {
        keys.push(graph::edge(p, Edge::Following, viewer, *a));
        keys.push(graph::edge(p, Edge::Block, viewer, *a));
        keys.push(graph::edge(p, Edge::Mute, viewer, *a));
    }
    let found = view.get_many(&keys)?;
    let mut vis = Visibility {
        viewer,
        ..Visibility::default()
    };
    for (a, rel) in actors.iter().zip(found.chunks(3)) {
        if rel[0].is_some() {
            vis.following.insert(*a);
        }
        if rel[1].is_some() {
            vis.blocked.insert(*a);
        }
        if rel[2].is_some() {
            vis.muted.insert(*a);
        }
    }
    Ok(vis)
}
