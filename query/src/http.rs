//! The read API over HTTP (axum).
//!
//! `GET /v1/feeds/{user}/{home|user|notifications}?limit=20&cursor=…&aggregate=true`
//! answers `{"entries": [...], "next_cursor": "…"|null}`, newest first. Bad `user`, `limit`,
//! `cursor` or feed name → 400 with a message; store trouble → 503. An unknown user has an
//! empty feed.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tidings_core::keys::feed::FeedKind;
use tidings_core::page::AggregationRule;
use tidings_store::Store;

use crate::feed::{self, FeedRequest, QueryError, MAX_LIMIT};

/// Page size when the client gives none.
pub const DEFAULT_LIMIT: usize = 20;

#[derive(Clone)]
struct Reader {
    store: Arc<dyn Store>,
    rules: Arc<Vec<AggregationRule>>,
}

/// The query routes over `store` with aggregation `rules`.
pub fn router(store: Arc<dyn Store>, rules: Vec<AggregationRule>) -> Router {
    Router::new()
        .route("/v1/feeds/{user}/{kind}", get(feed_page))
        .with_state(Reader {
            store,
            rules: Arc::new(rules),
        })
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    limit: Option<usize>,
    cursor: Option<String>,
    aggregate: Option<bool>,
}

fn kind(s: &str) -> Option<FeedKind> {
    match s {
        "home" => Some(FeedKind::Home),
        "user" => Some(FeedKind::User),
        "notifications" => Some(FeedKind::Notifications),
        _ => None,
    }
}

async fn feed_page(
    State(r): State<Reader>,
    Path((user, which)): Path<(String, String)>,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    let Ok(user) = user.parse::<i64>() else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("user must be a non-negative integer id, got {user:?}"),
        );
    };
    if user < 0 {
        return error(
            StatusCode::BAD_REQUEST,
            format!("user must be a non-negative integer id, got {user}"),
        );
    }
    let Some(kind) = kind(&which) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no feed {which:?}: expected home, user or notifications"),
        );
    };
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("bad query string: {} (expected limit=1..{MAX_LIMIT}, cursor=…, aggregate=true|false)", e.body_text()),
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
    let store = r.store.clone();
    let rules = r.rules.clone();
    let result = tokio::task::spawn_blocking(move || feed::read(&*store, &req, &rules)).await;
    match result {
        Ok(Ok(page)) => Json(page).into_response(),
        Ok(Err(e @ (QueryError::BadCursor(_) | QueryError::BadLimit(_)))) => {
            error(StatusCode::BAD_REQUEST, e.to_string())
        }
        Ok(Err(e @ QueryError::Store(_))) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("page task failed: {e}"),
        ),
    }
}
