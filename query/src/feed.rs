//! One feed page from one consistent snapshot.
//!
//! 1. Read the active projection (`("meta","active")`) and the page's validators (feed
//!    versions: what a cached copy of this page must still match, see [`crate::cache`]).
//! 2. Forward range over `(p, "feed", owner, kind)` (keys sort newest first) from just past the
//!    cursor, over-fetching so hidden entries rarely cost a second round trip.
//! 3. Home feeds only: the same range over the user feed of every pulled author the reader
//!    follows (hybrid fan-out: their items were never pushed), merged by position and
//!    de-duplicated by id, so a pulled author's items page exactly like pushed ones.
//! 4. One multi-get of the bodies; tombstones and missing bodies are hidden.
//! 5. One multi-get of the reader's relations to the page's actors (follows, blocks, mutes).
//! 6. [`tidings_core::page::assemble`]: filter, aggregate, next cursor.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};

use tidings_core::keys::feed::{self as feed_keys, FeedEntry, FeedKind, Position, Reason};
use tidings_core::keys::graph::{self, Count, Edge};
use tidings_core::keys::messages::{self, MessageValue};
use tidings_core::keys::{fver, meta, pull, Projection};
use tidings_core::page::{self, AggregationRule, Cursor, CursorError, Page, Scanned, Visibility};
use tidings_core::write::decode_i64;
use tidings_core::{Activity, Event, EventId, UserId};
use tidings_store::{RangeOptions, ReadView, Store};

/// Most entries a client may ask for in one page.
pub const MAX_LIMIT: usize = 100;

/// What a reader asks for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
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

/// How pages are read; shared by every request.
#[derive(Clone, Debug)]
pub struct ReadConfig {
    /// Aggregation rules (from the config file).
    pub rules: Vec<AggregationRule>,
    /// The consumers' follow backfill (`--backfill`): a pulled author's items older than the
    /// follow are shown up to this many, as a pushed author's backfill would have copied them.
    pub backfill: usize,
    /// Most pulled authors considered per home page (the pulled set is meant to be small: the
    /// few authors above the hybrid threshold).
    pub max_pulled: usize,
    /// The pulled set as last read, shared by clones of this config.
    pub pulled_set: PulledSetCache,
}

/// The set of pulled authors, kept between pages: it changes only when its version key
/// (`(p, "pull", "version")`, bumped with every addition) does, and every home page reads that
/// key anyway as a validator, so a page re-reads the set only after it changed.
#[derive(Clone, Debug, Default)]
pub struct PulledSetCache(Arc<Mutex<Option<PulledSet>>>);

#[derive(Debug)]
struct PulledSet {
    projection: Projection,
    version: Option<Vec<u8>>,
    authors: Arc<[UserId]>,
}

impl PulledSetCache {
    /// The pulled authors of projection `p` whose version key holds `version` in `view`.
    fn get(
        &self,
        view: &dyn ReadView,
        p: Projection,
        version: &Option<Vec<u8>>,
        max: usize,
    ) -> Result<Arc<[UserId]>, tidings_store::Error> {
        if let Some(set) = &*self.0.lock().unwrap_or_else(|e| e.into_inner()) {
            if set.projection == p && &set.version == version {
                return Ok(set.authors.clone());
            }
        }
        let set = pull::set(p);
        let (begin, end) = set.range();
        let authors: Arc<[UserId]> = view
            .range(&begin, &end, RangeOptions::forward(max + 1))?
            .iter()
            .filter_map(|(k, _)| pull::parse_key(p, k))
            .collect();
        if authors.len() > max {
            tracing::warn!(
                max,
                "more pulled authors than --max-pulled; home feeds show only the first ones (raise the hybrid threshold or --max-pulled)"
            );
        }
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(PulledSet {
            projection: p,
            version: version.clone(),
            authors: authors.clone(),
        });
        Ok(authors)
    }
}

impl Default for ReadConfig {
    fn default() -> Self {
        ReadConfig {
            rules: page::default_rules(),
            backfill: 100,
            max_pulled: 10_000,
            pulled_set: PulledSetCache::default(),
        }
    }
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

/// The keys (and the values they held) a page was built from: while every one still holds the
/// same value, the page is still what a fresh read would return.
pub type Validators = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// Whether every validator key still holds the value it held when the page was read (one
/// multi-get in a fresh snapshot).
pub fn still_valid(
    store: &dyn Store,
    validators: &Validators,
) -> Result<bool, tidings_store::Error> {
    let keys: Vec<Vec<u8>> = validators.iter().map(|(k, _)| k.clone()).collect();
    let now = store.snapshot()?.get_many(&keys)?;
    Ok(validators
        .iter()
        .zip(&now)
        .all(|((_, then), now)| then == now))
}

/// The projection readers use now.
pub fn active_projection(view: &dyn ReadView) -> Result<Projection, tidings_store::Error> {
    Ok(view
        .get(&meta::active())?
        .map_or(meta::DEFAULT_PROJECTION, |v| decode_i64(&v)))
}

/// Checks a request's limit and cursor without touching the store.
pub fn check(req: &FeedRequest) -> Result<Option<Cursor>, QueryError> {
    if req.limit == 0 || req.limit > MAX_LIMIT {
        return Err(QueryError::BadLimit(req.limit));
    }
    Ok(req.cursor.as_deref().map(Cursor::decode).transpose()?)
}

/// Serves one page.
pub fn read(store: &dyn Store, req: &FeedRequest, cfg: &ReadConfig) -> Result<Page, QueryError> {
    Ok(read_validated(store, req, cfg)?.0)
}

/// A pulled author the reader follows, and since when.
struct Pulled {
    author: UserId,
    since_ms: i64,
}

/// Serves one page and the validators it was built from (same snapshot).
pub fn read_validated(
    store: &dyn Store,
    req: &FeedRequest,
    cfg: &ReadConfig,
) -> Result<(Page, Validators), QueryError> {
    let cursor = check(req)?;
    let view = store.snapshot()?;
    let active = view.get(&meta::active())?;
    let p = active
        .as_deref()
        .map_or(meta::DEFAULT_PROJECTION, decode_i64);
    let mut keys = vec![fver::key(p, req.user, req.kind), fver::bodies(p)];
    if req.kind == FeedKind::Home {
        keys.push(pull::version(p));
    }
    // The reader's block and mute counts ride along (they are not validators: a block or mute
    // bumps the reader's feed versions itself).
    let n = keys.len();
    keys.extend(relation_count_keys(p, req.user));
    let mut values = view.get_many(&keys)?;
    keys.truncate(n);
    let relation_counts = values.split_off(n);
    let mut validators: Validators = std::iter::once((meta::active(), active))
        .chain(keys.into_iter().zip(values))
        .collect();
    let pulled = if req.kind == FeedKind::Home {
        let authors = cfg
            .pulled_set
            .get(&*view, p, &validators[3].1, cfg.max_pulled)?;
        followed_pulled(
            &*view,
            p,
            req.user,
            &authors[..authors.len().min(cfg.max_pulled)],
        )?
    } else {
        Vec::new()
    };
    if !pulled.is_empty() {
        let keys: Vec<Vec<u8>> = pulled
            .iter()
            .map(|a| fver::key(p, a.author, FeedKind::User))
            .collect();
        let values = view.get_many(&keys)?;
        validators.extend(keys.into_iter().zip(values));
    }

    // A quarter more than the page for entries hidden at read time (retracted, unfollowed,
    // blocked): rarely more after upkeep, and a short page is still a valid page (the cursor
    // goes on). Every entry scanned costs its decoding; twice the page was 10–20% of a read.
    let want = req.limit + req.limit / 4 + 4;
    let cursor = cursor.map(|Cursor(pos)| pos);
    let (mut entries, mut more) = scan(&*view, p, req.user, req.kind, cursor, want)?;
    for a in &pulled {
        let (items, m) = scan_pulled(&*view, p, a, cursor, want, cfg.backfill)?;
        more |= m;
        entries.extend(items);
    }
    if !pulled.is_empty() {
        // Newest first, each activity once (an author pushed before being pulled has both).
        entries.sort_by_key(|e| std::cmp::Reverse(e.0));
        let mut seen = HashSet::new();
        entries.retain(|(pos, _)| seen.insert(pos.id));
        if entries.len() > want {
            entries.truncate(want);
            more = true;
        }
    }

    // Filter on the index alone first, then fetch only the bodies the page needs (a few spare
    // for retracted ones), in rounds until the page is full or the scan is used up.
    let vis = visibility(&*view, p, req.user, req.kind, &entries, relation_counts)?;
    let mut scanned: Vec<Scanned> = Vec::with_capacity(entries.len());
    let mut shown = 0;
    let mut entries = entries.into_iter().peekable();
    while shown < req.limit && entries.peek().is_some() {
        let mut round = Vec::new();
        let mut fetch = Vec::new();
        while fetch.len() < req.limit - shown + 2 {
            let Some((pos, entry)) = entries.next() else {
                break;
            };
            if vis.shows(req.kind, &entry) {
                fetch.push(round.len());
            }
            round.push((pos, entry));
        }
        let keys: Vec<Vec<u8>> = fetch
            .iter()
            .map(|&i| messages::key(p, round[i].0.id))
            .collect();
        let mut bodies = view.get_many(&keys)?.into_iter();
        let mut next_fetched = fetch.iter().peekable();
        for (i, (pos, entry)) in round.into_iter().enumerate() {
            let body = if next_fetched.peek() == Some(&&i) {
                next_fetched.next();
                bodies.next().flatten().and_then(|b| decode_body(&b))
            } else {
                None
            };
            shown += usize::from(body.is_some());
            scanned.push(Scanned { pos, entry, body });
        }
    }
    more |= entries.peek().is_some();
    let page = page::assemble(
        req.kind,
        &scanned,
        more,
        &vis,
        &cfg.rules,
        req.aggregate,
        req.limit,
    );
    Ok((page, validators))
}

/// Reads up to `want` entries of one feed after `cursor`; `true` if the feed goes on.
fn scan(
    view: &dyn ReadView,
    p: Projection,
    owner: UserId,
    kind: FeedKind,
    cursor: Option<Position>,
    want: usize,
) -> Result<(Vec<(Position, FeedEntry)>, bool), tidings_store::Error> {
    let sub = feed_keys::feed(p, owner, kind);
    let (mut begin, end) = sub.range();
    if let Some(pos) = cursor {
        begin = feed_keys::after(p, owner, kind, pos);
    }
    let rows = view.range(&begin, &end, RangeOptions::forward(want))?;
    let more = rows.len() == want;
    Ok((decode_rows(&sub, owner, &rows), more))
}

pub(crate) fn decode_rows(
    sub: &foundationdb_tuple::Subspace,
    owner: UserId,
    rows: &[(Vec<u8>, Vec<u8>)],
) -> Vec<(Position, FeedEntry)> {
    let mut out = Vec::with_capacity(rows.len());
    for (k, v) in rows {
        let (Some(pos), Some(entry)) = (feed_keys::parse_key(sub, k), FeedEntry::decode(v)) else {
            tracing::warn!(owner, "skipping an index entry this build cannot decode");
            continue;
        };
        out.push((pos, entry));
    }
    out
}

/// Those of the pulled `authors` that `viewer` follows, with the follow's time.
fn followed_pulled(
    view: &dyn ReadView,
    p: Projection,
    viewer: UserId,
    authors: &[UserId],
) -> Result<Vec<Pulled>, tidings_store::Error> {
    let authors: Vec<UserId> = authors.iter().copied().filter(|a| *a != viewer).collect();
    if authors.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<Vec<u8>> = authors
        .iter()
        .map(|a| graph::edge(p, Edge::Following, viewer, *a))
        .collect();
    let since = view.get_many(&keys)?;
    Ok(authors
        .into_iter()
        .zip(since)
        .filter_map(|(author, s)| {
            s.map(|v| Pulled {
                author,
                since_ms: decode_i64(&v),
            })
        })
        .collect())
}

/// A pulled author's items as they would sit in the reader's home feed had they been pushed:
/// everything since the follow, plus the `backfill` newest items before it (what the consumer's
/// follow backfill copies for a pushed author).
fn scan_pulled(
    view: &dyn ReadView,
    p: Projection,
    a: &Pulled,
    cursor: Option<Position>,
    want: usize,
    backfill: usize,
) -> Result<(Vec<(Position, FeedEntry)>, bool), tidings_store::Error> {
    let sub = feed_keys::feed(p, a.author, FeedKind::User);
    let (feed_begin, feed_end) = sub.range();
    let begin = match cursor {
        Some(pos) => feed_keys::after(p, a.author, FeedKind::User, pos),
        None => feed_begin,
    };
    // The first key older than the follow: newest-first order puts every item at or after
    // `since_ms` before it.
    let older = feed_keys::key(
        p,
        a.author,
        FeedKind::User,
        Position {
            time_ms: a.since_ms - 1,
            id: EventId(uuid::Uuid::max()),
        },
    );
    let mut rows = if begin < older {
        view.range(&begin, &older, RangeOptions::forward(want))?
    } else {
        Vec::new()
    };
    if rows.len() < want && backfill > 0 {
        let window = view.range(&older, &feed_end, RangeOptions::forward(backfill))?;
        let room = want - rows.len();
        rows.extend(window.into_iter().filter(|(k, _)| *k >= begin).take(room));
    }
    let more = rows.len() == want;
    let items = decode_rows(&sub, a.author, &rows)
        .into_iter()
        .map(|(pos, e)| {
            (
                pos,
                FeedEntry {
                    reason: Reason::Follow,
                    ..e
                },
            )
        })
        .collect();
    Ok((items, more))
}

/// Decodes a stored body; `None` for tombstones and undecodable bodies.
pub fn decode_body(b: &[u8]) -> Option<Activity> {
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

/// `GET /v1/activities/{id}`: the activity, `None` if unknown or retracted.
pub fn activity(store: &dyn Store, id: EventId) -> Result<Option<Activity>, QueryError> {
    let view = store.snapshot()?;
    let p = active_projection(&*view)?;
    Ok(view
        .get(&messages::key(p, id))?
        .and_then(|b| decode_body(&b)))
}

/// The reader's relations that decide what of `entries` a `kind` feed may show.
pub(crate) fn visibility(
    view: &dyn ReadView,
    p: Projection,
    viewer: UserId,
    kind: FeedKind,
    entries: &[(Position, FeedEntry)],
    relation_counts: Vec<Option<Vec<u8>>>,
) -> Result<Visibility, tidings_store::Error> {
    // Only home entries pushed because of a follow depend on following the actor now.
    let followed: BTreeSet<UserId> = if kind == FeedKind::Home {
        entries
            .iter()
            .filter(|(_, e)| e.reason == Reason::Follow)
            .map(|(_, e)| e.actor)
            .collect()
    } else {
        BTreeSet::new()
    };
    relations(view, p, viewer, followed, Some(relation_counts))
}

/// The keys of `viewer`'s block and mute counts, in the order [`relations`] takes their values.
pub(crate) fn relation_count_keys(p: Projection, viewer: UserId) -> [Vec<u8>; 2] {
    [
        graph::count(p, viewer, Count::Blocking),
        graph::count(p, viewer, Count::Muting),
    ]
}

/// Most blocks or mutes of one reader loaded per page (beyond it, the oldest-id ones apply).
const MAX_LISTED: usize = 100_000;

/// Readers following at most this many are checked with one range over their followees.
const FOLLOWEES_IN_ONE_RANGE: usize = 256;

/// Fewest actors to check before one range over the followees beats a point read per actor.
const RANGE_FROM_ACTORS: usize = 8;

/// Which of `follow_checks` the viewer follows, and their whole block and mute lists (a range
/// read each, only when their count says there is something to read). `counts`: the values of
/// [`relation_count_keys`] if the caller already read them.
pub(crate) fn relations(
    view: &dyn ReadView,
    p: Projection,
    viewer: UserId,
    follow_checks: BTreeSet<UserId>,
    counts: Option<Vec<Option<Vec<u8>>>>,
) -> Result<Visibility, tidings_store::Error> {
    let actors: Vec<UserId> = follow_checks.into_iter().filter(|a| *a != viewer).collect();
    let mut vis = Visibility {
        viewer,
        following: following_among(view, p, viewer, &actors)?,
        ..Visibility::default()
    };
    // Most readers never blocked or muted anyone: two absent counts (bloom filters) instead of
    // two empty range reads.
    let counts = match counts {
        Some(c) => c,
        None => view.get_many(&relation_count_keys(p, viewer))?,
    };
    for ((set, out), n) in [
        (Edge::Block, &mut vis.blocked),
        (Edge::Mute, &mut vis.muted),
    ]
    .into_iter()
    .zip(counts)
    {
        if n.is_none_or(|n| decode_i64(&n) <= 0) {
            continue;
        }
        let sub = graph::edges_of(p, set, viewer);
        let (b, e) = sub.range();
        for (k, _) in view.range(&b, &e, RangeOptions::forward(MAX_LISTED))? {
            if let Some(u) = graph::parse_edge(&sub, &k) {
                out.insert(u);
            }
        }
    }
    Ok(vis)
}

/// Which of `actors` the viewer follows. Most readers follow a few hundred at most: one range
/// over their followees (one seek) then costs less than a point read per actor (a seek each,
/// measured in `tidings bench query`); beyond [`FOLLOWEES_IN_ONE_RANGE`], point reads.
fn following_among(
    view: &dyn ReadView,
    p: Projection,
    viewer: UserId,
    actors: &[UserId],
) -> Result<HashSet<UserId>, tidings_store::Error> {
    if actors.len() >= RANGE_FROM_ACTORS {
        let sub = graph::edges_of(p, Edge::Following, viewer);
        let (b, e) = sub.range();
        let rows = view.range(&b, &e, RangeOptions::forward(FOLLOWEES_IN_ONE_RANGE + 1))?;
        if rows.len() <= FOLLOWEES_IN_ONE_RANGE {
            let all: HashSet<UserId> = rows
                .iter()
                .filter_map(|(k, _)| graph::parse_edge(&sub, k))
                .collect();
            return Ok(actors.iter().copied().filter(|a| all.contains(a)).collect());
        }
    }
    let keys: Vec<Vec<u8>> = actors
        .iter()
        .map(|a| graph::edge(p, Edge::Following, viewer, *a))
        .collect();
    let found = view.get_many(&keys)?;
    Ok(actors
        .iter()
        .zip(found)
        .filter(|(_, f)| f.is_some())
        .map(|(a, _)| *a)
        .collect())
}
