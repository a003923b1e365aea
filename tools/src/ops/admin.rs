//! The control surface, `/v1/admin/...`, behind a bearer token.
//!
//! | method and path | does |
//! |---|---|
//! | `GET /v1/admin/status` | role, consumers (pause, partitions, lag, totals), every feature and whether it is down |
//! | `POST /v1/admin/consumers/pause` | pauses the consume loop after the batch in flight; waits up to 10 s for it |
//! | `POST /v1/admin/consumers/resume` | resumes it |
//! | `POST /v1/admin/features/{name}/down` | marks a feature down (see `tidings_core::control`) |
//! | `POST /v1/admin/features/{name}/up` | marks it up again |
//!
//! Every route, including ones merged in by other modules ([`router`]'s `extra`, e.g. the
//! processor chain's `POST /v1/admin/pipeline`), passes one guard: no token configured → 403
//! saying how to enable the API; a missing or wrong `Authorization: Bearer <token>` → 401.
//! Tokens are compared in constant time. Each change is logged (WARN, with what changed) and
//! exported (`tidings_feature_down{feature}`; the consume loop sets `tidings_consumer_paused`).
//!
//! Non-goals: users and roles (one shared token), persistence (a restart starts with everything
//! up), and steering other processes (call each process's own admin API).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tidings_core::control::{known_names, Control, FEATURES};

use super::Ops;

/// How long a pause or resume request waits for the consume loop to carry it out.
const CONFIRM_WITHIN: Duration = Duration::from_secs(10);

/// The admin routes, plus `extra` routers (already given their state), all behind the token
/// guard. `token: None` turns the API off (every route answers 403).
pub fn router(ops: Arc<Ops>, token: Option<Arc<str>>, extra: Vec<Router>) -> Router {
    let mut r = Router::new()
        .route("/v1/admin/status", get(status))
        .route("/v1/admin/consumers/pause", post(pause))
        .route("/v1/admin/consumers/resume", post(resume))
        .route("/v1/admin/features/{name}/down", post(feature_down))
        .route("/v1/admin/features/{name}/up", post(feature_up))
        .with_state(ops);
    for e in extra {
        r = r.merge(e);
    }
    guarded(r, token)
}

/// `routes` behind the admin token (403 when there is none, 401 without the right one).
pub fn guarded(routes: Router, token: Option<Arc<str>>) -> Router {
    routes.layer(axum::middleware::from_fn_with_state(token, guard))
}

fn answer(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    answer(status, json!({ "error": message.into() }))
}

/// Equal lengths and bytes, in time independent of where they differ.
fn same_token(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

async fn guard(State(token): State<Option<Arc<str>>>, req: Request, next: Next) -> Response {
    let Some(token) = token else {
        return error(
            StatusCode::FORBIDDEN,
            "the admin API is off: no token is configured. Set TIDINGS_ADMIN_TOKEN (or `token` under [admin] in the config file), restart, and send `Authorization: Bearer <token>`",
        );
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        // The scheme is case-insensitive (RFC 7235): `bearer t` is as good as `Bearer t`.
        .and_then(|(scheme, token)| scheme.eq_ignore_ascii_case("bearer").then_some(token));
    let refuse = |why: &str| {
        let mut r = error(StatusCode::UNAUTHORIZED, why);
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"tidings-admin\""),
        );
        r
    };
    match given {
        Some(g) if same_token(g.trim().as_bytes(), token.as_bytes()) => next.run(req).await,
        Some(_) => {
            tracing::warn!("admin API request with a wrong token refused");
            refuse("wrong admin token")
        }
        None => refuse("missing `Authorization: Bearer <token>` (the admin token)"),
    }
}

async fn status(State(ops): State<Arc<Ops>>) -> Response {
    let control = &ops.control;
    let features: Vec<Value> = FEATURES
        .iter()
        .map(|f| {
            json!({
                "name": f.name,
                "down": control.is_down(f.name).unwrap_or(false),
                "applies_here": ops.applies(f),
                "effect": f.effect,
            })
        })
        .collect();
    let consumers = ops.consumers.as_ref().map(|m| {
        let s = m.stats();
        json!({
            "running": m.running(),
            "pause_requested": control.pause_requested(),
            "paused": m.paused(),
            "events_applied": s.events.load(std::sync::atomic::Ordering::Relaxed),
            "dead_letters": s.dead.load(std::sync::atomic::Ordering::Relaxed),
            "partitions": m.partitions(),
        })
    });
    answer(
        StatusCode::OK,
        json!({
            "role": ops.role.name(),
            "consumers": consumers,
            "features": features,
            "down": control.down(),
        }),
    )
}

async fn pause(State(ops): State<Arc<Ops>>) -> Response {
    set_pause(&ops, true).await
}

async fn resume(State(ops): State<Arc<Ops>>) -> Response {
    set_pause(&ops, false).await
}

async fn set_pause(ops: &Ops, pause: bool) -> Response {
    let Some(m) = &ops.consumers else {
        return error(
            StatusCode::CONFLICT,
            format!(
                "this process ({}) runs no consumers; pause the `tidings consume` (or `tidings up`) processes",
                ops.role.name()
            ),
        );
    };
    let control: &Control = &ops.control;
    let (ticket, changed) = control.request_pause(pause);
    if changed {
        tracing::warn!(
            pause,
            "admin: consumers asked to {}",
            if pause { "pause" } else { "resume" }
        );
    }
    let deadline = Instant::now() + CONFIRM_WITHIN;
    while !control.acknowledged(ticket) && m.running() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let confirmed = control.acknowledged(ticket);
    let mut body = json!({
        "pause_requested": pause,
        "paused": m.paused(),
        "changed": changed,
        "confirmed": confirmed,
    });
    if confirmed {
        answer(StatusCode::OK, body)
    } else {
        body["note"] = json!(format!(
            "requested; the consume loop has not carried it out within {CONFIRM_WITHIN:?} (a long batch in flight, or a stopped loop): GET /v1/admin/status shows when it has"
        ));
        answer(StatusCode::ACCEPTED, body)
    }
}

async fn feature_down(State(ops): State<Arc<Ops>>, Path(name): Path<String>) -> Response {
    set_feature(&ops, &name, true)
}

async fn feature_up(State(ops): State<Arc<Ops>>, Path(name): Path<String>) -> Response {
    set_feature(&ops, &name, false)
}

fn set_feature(ops: &Ops, name: &str, down: bool) -> Response {
    let f = match Control::feature(name) {
        Ok(f) => f,
        Err(e) => {
            return answer(
                StatusCode::NOT_FOUND,
                json!({ "error": e.to_string(), "known": known_names() }),
            )
        }
    };
    if !ops.applies(&f) {
        return error(
            StatusCode::CONFLICT,
            format!(
                "{} is honoured by the {}, which this process ({}) does not run; mark it on those processes",
                f.name,
                match f.side {
                    tidings_core::control::Side::Consumers => "consumers (`tidings consume`, `tidings up`)",
                    tidings_core::control::Side::Query => "query service (`tidings serve`, `tidings up`)",
                },
                ops.role.name()
            ),
        );
    }
    let changed = ops.control.set_down(f.name, down).unwrap_or(false);
    super::export_feature(f.name, down);
    if changed && down {
        tracing::warn!(
            feature = f.name,
            "admin: feature marked down: {}; POST /v1/admin/features/{}/up restores it",
            f.effect,
            f.name
        );
    } else if changed {
        tracing::warn!(feature = f.name, "admin: feature marked up again");
    }
    answer(
        StatusCode::OK,
        json!({ "feature": f.name, "down": down, "changed": changed, "effect": f.effect }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(same_token(b"s3cret", b"s3cret"));
        assert!(!same_token(b"s3cre", b"s3cret"));
        assert!(!same_token(b"s3cret!", b"s3cret"));
        assert!(!same_token(b"S3cret", b"s3cret"));
        assert!(!same_token(b"", b"s3cret"));
    }
}
