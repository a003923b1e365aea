//! The read API over HTTP (axum).
//!
//! | route | answer |
//! |---|---|
//! | `GET /v1/feeds/{user}/{home,user,notifications}?limit&cursor&aggregate` | `{"entries": [...], "next_cursor": …}`, newest first |
//! | `GET /v1/feeds/{user}/home:stream[?since=CURSOR]` | server-sent events, one `item` per new home item |
//! | `GET /v1/feeds/{user}/notifications:counts` | `{"unseen": n, "unread": n}` |
//! | `POST /v1/feeds/{user}/notifications:mark` | body `{"mark": "seen"|"read", "up_to"?: id}` → counts |
//! | `GET /v1/activities/{id}` | the activity; 404 if unknown or retracted |
//! | `GET /openapi.json` | the OpenAPI document of the whole HTTP API |
//!
//! Client mistakes (bad user, limit, cursor, body, unknown feed) get 4xx with `{"error": …}`;
//! store trouble gets 503. An unknown user has an empty feed. Under load an operator can mark
//! `query.cache_only` down (feed pages come from the page cache only; a miss is a 503 with
//! `Retry-After`) and `query.sse` (`home:stream` is a 503), see [`QueryOptions::control`].

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use tidings_core::control::Control;
use tidings_core::keys::feed::{FeedKind, Position};
use tidings_core::keys::marks::Mark;
use tidings_core::page::{Cursor, PageEntry};
use tidings_core::{EventId, UserId};
use tidings_store::Store;

use crate::cache::{self, PageCache};
use crate::feed::{self, FeedRequest, QueryError, ReadConfig, Validators, MAX_LIMIT};
use crate::notify::{self, MarkError};

/// Page size when the client gives none.
pub const DEFAULT_LIMIT: usize = 20;

/// The OpenAPI document of the whole HTTP API (ingest and query), kept in the repository.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// How the query service runs.
#[derive(Clone, Debug)]
pub struct QueryOptions {
    /// How pages are read.
    pub read: ReadConfig,
    /// Page cache bound in bytes; 0 turns the cache off.
    pub cache_bytes: usize,
    /// How often a `home:stream` checks its feed's version.
    pub stream_poll: Duration,
    /// Set when the server shuts down: open streams end, so a graceful shutdown does not wait
    /// for clients that never hang up.
    pub closing: Arc<AtomicBool>,
    /// Run-time switches: `query.cache_only` and `query.sse` (see [`tidings_core::control`]).
    pub control: Arc<Control>,
}

impl Default for QueryOptions {
    fn default() -> Self {
        QueryOptions {
            read: ReadConfig::default(),
            cache_bytes: 64 << 20,
            stream_poll: Duration::from_millis(20),
            closing: Arc::new(AtomicBool::new(false)),
            control: Arc::default(),
        }
    }
}

#[derive(Clone)]
struct Reader {
    store: Arc<dyn Store>,
    read: Arc<ReadConfig>,
    cache: Option<Arc<PageCache>>,
    stream_poll: Duration,
    closing: Arc<AtomicBool>,
    control: Arc<Control>,
}

/// The query routes over `store`.
pub fn router(store: Arc<dyn Store>, opts: QueryOptions) -> Router {
    let cache = (opts.cache_bytes > 0).then(|| Arc::new(PageCache::new(opts.cache_bytes)));
    Router::new()
        .route("/v1/feeds/{user}/{kind}", get(feed_get).post(feed_post))
        .route("/v1/activities/{id}", get(get_activity))
        .route(
            "/openapi.json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }),
        )
        .with_state(Reader {
            store,
            read: Arc::new(opts.read),
            cache,
            stream_poll: opts.stream_poll,
            closing: opts.closing,
            control: opts.control,
        })
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// Seconds a client is asked to wait when a feature is marked down.
const RETRY_AFTER_S: u64 = 10;

/// A 503 for a request refused because `feature` is marked down (graceful degradation).
fn shed(feature: &'static str, message: String) -> Response {
    metrics::counter!("tidings_query_shed_total", "feature" => feature).increment(1);
    let mut resp = error(StatusCode::SERVICE_UNAVAILABLE, message);
    resp.headers_mut().insert(
        header::RETRY_AFTER,
        header::HeaderValue::from(RETRY_AFTER_S),
    );
    resp
}

fn store_error(e: impl std::fmt::Display) -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("store unavailable: {e}; retry later, and check the store's health"),
    )
}

fn query_error(e: QueryError) -> Response {
    match e {
        QueryError::BadCursor(_) | QueryError::BadLimit(_) => {
            error(StatusCode::BAD_REQUEST, e.to_string())
        }
        QueryError::Store(e) => store_error(e),
    }
}

fn parse_user(s: &str) -> Result<UserId, Box<Response>> {
    match s.parse::<i64>() {
        Ok(u) if u >= 0 => Ok(u),
        _ => Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            format!("user must be a non-negative integer id, got {s:?}"),
        ))),
    }
}

/// Runs blocking store work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Response> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("request task failed: {e}"),
        )
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    limit: Option<usize>,
    cursor: Option<String>,
    aggregate: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamQuery {
    since: Option<String>,
}

async fn feed_get(
    State(r): State<Reader>,
    Path((user, which)): Path<(String, String)>,
    headers: HeaderMap,
    raw: axum::extract::RawQuery,
) -> Response {
    let user = match parse_user(&user) {
        Ok(u) => u,
        Err(resp) => return *resp,
    };
    let query = raw.0.unwrap_or_default();
    match which.as_str() {
        "home:stream" => {
            if r.control.sse_down() {
                return shed(
                    "query.sse",
                    format!("home:stream is turned off for now (the feature query.sse is marked down under load); poll GET /v1/feeds/{user}/home instead, or retry in {RETRY_AFTER_S} s"),
                );
            }
            let q: StreamQuery = match serde_urlencoded(&query) {
                Ok(q) => q,
                Err(e) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!("bad query string: {e} (expected since=CURSOR)"),
                    )
                }
            };
            // A reconnecting EventSource sends the id of the last event it saw.
            let since = q.since.or_else(|| {
                headers
                    .get("last-event-id")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            });
            stream(r, user, since).await
        }
        "notifications:counts" => {
            if !query.is_empty() {
                return error(
                    StatusCode::BAD_REQUEST,
                    "notifications:counts takes no query parameters",
                );
            }
            let store = r.store.clone();
            match blocking(move || notify::counts(&*store, user)).await {
                Ok(Ok(c)) => Json(c).into_response(),
                Ok(Err(e)) => query_error(e),
                Err(resp) => resp,
            }
        }
        other => {
            let Some(kind) = FeedKind::parse(other) else {
                return error(
                    StatusCode::NOT_FOUND,
                    format!("no feed {other:?}: expected home, user, notifications, home:stream or notifications:counts"),
                );
            };
            let q: PageQuery = match serde_urlencoded(&query) {
                Ok(q) => q,
                Err(e) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!("bad query string: {e} (expected limit=1..{MAX_LIMIT}, cursor=…, aggregate=true|false)"),
                    )
                }
            };
            let req = FeedRequest {
                user,
                kind,
                limit: q.limit.unwrap_or(DEFAULT_LIMIT),
                cursor: q.cursor,
                aggregate: q.aggregate.unwrap_or(true),
            };
            // A cache hit is one multi-get of a few small keys (microseconds): answered here.
            let mut looked_up = false;
            if let Some(cache) = &r.cache {
                if feed::check(&req).is_ok() {
                    match cache.get(&*r.store, &req) {
                        Ok(cache::Lookup::Hit(body)) => {
                            return ([(header::CONTENT_TYPE, "application/json")], body)
                                .into_response()
                        }
                        Ok(cache::Lookup::Miss) => looked_up = true,
                        Err(e) => return store_error(e),
                    }
                }
            }
            if r.control.cache_only() {
                // `query.cache_only` marked down: a valid cached page (answered above) or 503.
                return match feed::check(&req) {
                    Err(e) => query_error(e),
                    Ok(_) => shed(
                        "query.cache_only",
                        format!("this page is not in the cache and only cached pages are served for now (the feature query.cache_only is marked down under load); retry in {RETRY_AFTER_S} s"),
                    ),
                };
            }
            // On the embedded store a page read is CPU work of a few hundred microseconds:
            // done here it avoids two thread switches, which on a loaded machine cost more than
            // the read (measured in `tidings bench query`). A remote store's reads wait on the
            // network, so they go to the blocking pool.
            let read = if r.store.local_reads() {
                Ok(page_bytes(&r, &req, looked_up))
            } else {
                blocking(move || page_bytes(&r, &req, looked_up)).await
            };
            match read {
                Ok(Ok(body)) => {
                    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
                }
                Ok(Err(e)) => query_error(e),
                Err(resp) => resp,
            }
        }
    }
}

/// Parses a query string the way axum's `Query` does (its rejection texts are kept).
fn serde_urlencoded<T: serde::de::DeserializeOwned>(q: &str) -> Result<T, String> {
    let uri: axum::http::Uri = format!("/?{q}")
        .parse()
        .map_err(|e: axum::http::uri::InvalidUri| e.to_string())?;
    Query::<T>::try_from_uri(&uri)
        .map(|Query(t)| t)
        .map_err(|e: QueryRejection| e.body_text())
}

fn page_bytes(r: &Reader, req: &FeedRequest, looked_up: bool) -> Result<Bytes, QueryError> {
    if looked_up {
        cache::read_and_fill(&*r.store, r.cache.as_deref(), req, &r.read)
    } else {
        cache::page_json(&*r.store, r.cache.as_deref(), req, &r.read)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MarkBody {
    mark: Mark,
    up_to: Option<EventId>,
}

async fn feed_post(
    State(r): State<Reader>,
    Path((user, which)): Path<(String, String)>,
    body: Result<Json<MarkBody>, JsonRejection>,
) -> Response {
    let user = match parse_user(&user) {
        Ok(u) => u,
        Err(resp) => return *resp,
    };
    if which != "notifications:mark" {
        return error(
            StatusCode::NOT_FOUND,
            format!("no action {which:?}: expected notifications:mark"),
        );
    }
    let body = match body {
        Ok(Json(b)) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "bad body: {} (expected {{\"mark\": \"seen\"|\"read\", \"up_to\": ACTIVITY_ID}}, up_to optional)",
                    e.body_text()
                ),
            )
        }
    };
    let store = r.store.clone();
    match blocking(move || notify::mark(&*store, user, body.mark, body.up_to)).await {
        Ok(Ok(c)) => Json(c).into_response(),
        Ok(Err(e @ MarkError::NotInFeed(..))) => error(StatusCode::NOT_FOUND, e.to_string()),
        Ok(Err(MarkError::Query(e))) => query_error(e),
        Err(resp) => resp,
    }
}

async fn get_activity(State(r): State<Reader>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<uuid::Uuid>() else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("activity id must be a UUID, got {id:?}"),
        );
    };
    let store = r.store.clone();
    match blocking(move || feed::activity(&*store, EventId(id))).await {
        Ok(Ok(Some(a))) => Json(a).into_response(),
        Ok(Ok(None)) => error(
            StatusCode::NOT_FOUND,
            format!("no activity {id} (unknown, or retracted)"),
        ),
        Ok(Err(e)) => query_error(e),
        Err(resp) => resp,
    }
}

/// State of one `home:stream` connection.
struct Watch {
    r: Reader,
    user: UserId,
    /// Newest position sent (or the client's `since`).
    last: Option<Position>,
    /// Validators of the last read; unchanged validators mean nothing new.
    validators: Option<Validators>,
    /// Items found but not yet sent, oldest first.
    pending: std::collections::VecDeque<SseEvent>,
}

impl Watch {
    /// Re-reads the head of the feed if it changed; queues items newer than `last`.
    fn poll(&mut self, first: bool) -> Result<(), QueryError> {
        if let Some(v) = &self.validators {
            if feed::still_valid(&*self.r.store, v)? {
                return Ok(());
            }
        }
        let req = FeedRequest {
            user: self.user,
            kind: FeedKind::Home,
            limit: MAX_LIMIT,
            cursor: None,
            aggregate: false,
        };
        let (page, validators) = feed::read_validated(&*self.r.store, &req, &self.r.read)?;
        self.validators = Some(validators);
        let items: Vec<_> = page
            .entries
            .into_iter()
            .filter_map(|e| match e {
                PageEntry::Item(i) => Some(i),
                PageEntry::Group(_) => None,
            })
            .collect();
        let newest = items.first().map(|i| Position {
            time_ms: i.time_ms,
            id: i.id,
        });
        if first && self.last.is_none() {
            // A new connection starts at the head: only what arrives from now on is pushed.
            self.last = newest;
            return Ok(());
        }
        for i in items.into_iter().rev() {
            let pos = Position {
                time_ms: i.time_ms,
                id: i.id,
            };
            if self.last.is_some_and(|l| pos <= l) {
                continue;
            }
            let ev = SseEvent::default()
                .event("item")
                .id(Cursor(pos).encode())
                .json_data(PageEntry::Item(i))
                .unwrap_or_else(|_| SseEvent::default().comment("unserializable item"));
            self.pending.push_back(ev);
            self.last = Some(pos);
        }
        Ok(())
    }
}

async fn stream(r: Reader, user: UserId, since: Option<String>) -> Response {
    let last = match since.as_deref().map(Cursor::decode).transpose() {
        Ok(c) => c.map(|Cursor(p)| p),
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let poll = r.stream_poll;
    let mut watch = Watch {
        r,
        user,
        last,
        validators: None,
        pending: Default::default(),
    };
    let watch = match blocking(move || watch.poll(true).map(|()| watch)).await {
        Ok(Ok(w)) => w,
        Ok(Err(e)) => return query_error(e),
        Err(resp) => return resp,
    };
    metrics::gauge!("tidings_query_streams").increment(1.0);
    let events = futures::stream::unfold(Some(watch), move |w| async move {
        let mut w = w?;
        loop {
            if let Some(ev) = w.pending.pop_front() {
                return Some((Ok::<_, Infallible>(ev), Some(w)));
            }
            tokio::time::sleep(poll).await;
            if w.r.closing.load(Ordering::Relaxed) {
                return None;
            }
            let started = Instant::now();
            let (back, result) = match tokio::task::spawn_blocking(move || {
                let r = w.poll(false);
                (w, r)
            })
            .await
            {
                Ok(x) => x,
                Err(_) => return None,
            };
            w = back;
            if let Err(e) = result {
                tracing::warn!(user = w.user, error = %e, "home stream could not read the feed; ending the stream (the client reconnects with Last-Event-ID)");
                return Some((
                    Ok(SseEvent::default().event("error").data(e.to_string())),
                    None,
                ));
            }
            metrics::histogram!("tidings_query_stream_poll_seconds")
                .record(started.elapsed().as_secs_f64());
        }
    });
    let events = StreamGuard(Box::pin(events));
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// Counts open streams down when a client goes away.
struct StreamGuard<S>(std::pin::Pin<Box<S>>);

impl<S> Drop for StreamGuard<S> {
    fn drop(&mut self) {
        metrics::gauge!("tidings_query_streams").decrement(1.0);
    }
}

impl<S: futures::Stream> futures::Stream for StreamGuard<S> {
    type Item = S::Item;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<S::Item>> {
        self.0.as_mut().poll_next(cx)
    }
}
