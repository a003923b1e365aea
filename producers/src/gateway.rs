//! The ingest gateway: HTTP → Kafka (the seed design's forward servers).
//!
//! Every write answers `202 {id, topic, partition, offset}` only after the broker acknowledged
//! the record; `400 {error, field}` names the bad field; `503 {error}` when the brokers did not
//! acknowledge in time: a 202 is never returned for an event that was not acknowledged.
//!
//! | method | path | event |
//! |---|---|---|
//! | POST | `/v1/activities` | activity |
//! | POST | `/v1/activities:batch` | up to 1,000 activities, `{"activities": [...]}` |
//! | DELETE | `/v1/activities/{id}?actor=U` | retraction |
//! | PATCH | `/v1/activities/{id}` | update `{actor, text?, attributes?}` |
//! | POST | `/v1/follows` `/v1/blocks` `/v1/mutes` | `{actor, subject}` follow / block / mute |
//! | DELETE | `/v1/follows/{actor}/{subject}` (and blocks, mutes) | unfollow / unblock / unmute |

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, patch, post};
use axum::Router;
use serde::Deserialize;
use serde_json::json;
use tidings_core::clock::{Clock, SystemClock};
use tidings_core::event::{
    Activity, Event, GraphChange, GraphOp, Producer as ProducerName, Retraction, Update,
};
use tidings_core::{EventId, UserId};

use crate::publish::{Delivery, Producer, PublishError};

/// Most activities one batch request may carry.
pub const MAX_BATCH: usize = 1_000;

/// The producer name recorded for events that arrive over HTTP without one.
pub const HTTP_PRODUCER: &str = "ingest-http";

#[derive(Clone)]
struct Gateway {
    producer: Producer,
    clock: Arc<dyn Clock>,
}

/// The gateway's routes, ready to be merged into a server.
pub fn router(producer: Producer) -> Router {
    router_with_clock(producer, Arc::new(SystemClock))
}

/// [`router`] with an explicit clock for event times the caller leaves out.
pub fn router_with_clock(producer: Producer, clock: Arc<dyn Clock>) -> Router {
    let g = Gateway { producer, clock };
    Router::new()
        .route("/v1/activities", post(post_activity))
        .route("/v1/activities:batch", post(post_batch))
        .route("/v1/activities/{id}", delete(delete_activity))
        .route("/v1/activities/{id}", patch(patch_activity))
        .route("/v1/follows", post(follow))
        .route("/v1/blocks", post(block))
        .route("/v1/mutes", post(mute))
        .route("/v1/follows/{actor}/{subject}", delete(unfollow))
        .route("/v1/blocks/{actor}/{subject}", delete(unblock))
        .route("/v1/mutes/{actor}/{subject}", delete(unmute))
        .with_state(g)
}

/// An error answer: status plus `{"error": …, "field": …}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    field: Option<String>,
}

impl ApiError {
    /// A 400 naming what is wrong.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            field: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.message });
        if let Some(f) = self.field {
            body["field"] = json!(f);
        }
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<PublishError> for ApiError {
    fn from(e: PublishError) -> Self {
        match e {
            PublishError::Invalid(v) => ApiError {
                status: StatusCode::BAD_REQUEST,
                message: v.to_string(),
                field: Some(v.field),
            },
            PublishError::Unavailable(k) => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: format!(
                    "the event was not acknowledged by the brokers ({k}); it may be retried with the same id"
                ),
                field: None,
            },
            PublishError::Config(k) => ApiError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                message: format!("producer misconfigured: {k}"),
                field: None,
            },
        }
    }
}

/// JSON extractor whose rejections are 400s with serde's message (which names the field).
struct Body<T>(T);

impl<S, T> FromRequest<S> for Body<T>
where
    axum::Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Body(v)),
            Err(r) => Err(ApiError {
                status: if r.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE {
                    StatusCode::UNSUPPORTED_MEDIA_TYPE
                } else {
                    StatusCode::BAD_REQUEST
                },
                message: format!("invalid JSON body: {}", r.body_text()),
                field: None,
            }),
        }
    }
}

fn accepted(d: Delivery) -> Response {
    (StatusCode::ACCEPTED, axum::Json(d)).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProducerIn {
    name: String,
    #[serde(default)]
    version: String,
}

/// An activity as JSON. `id`, `time_ms` and `producer` may be left out.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActivityIn {
    id: Option<uuid::Uuid>,
    actor: UserId,
    verb: String,
    object: String,
    target: Option<String>,
    time_ms: Option<i64>,
    #[serde(default)]
    to: Vec<UserId>,
    #[serde(default)]
    text: String,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
    producer: Option<ProducerIn>,
}

fn producer_name(p: Option<ProducerIn>) -> ProducerName {
    p.map_or_else(
        || ProducerName::new(HTTP_PRODUCER, env!("CARGO_PKG_VERSION")),
        |p| ProducerName::new(p.name, p.version),
    )
}

impl Gateway {
    fn id(&self, id: Option<uuid::Uuid>) -> EventId {
        id.map_or(EventId::MIN, EventId)
    }

    fn activity(&self, a: ActivityIn) -> Event {
        Event::Activity(Activity {
            id: self.id(a.id),
            actor: a.actor,
            verb: a.verb,
            object: a.object,
            target: a.target,
            time_ms: a.time_ms.unwrap_or_else(|| self.clock.now_ms()),
            to: a.to,
            text: a.text,
            attributes: a.attributes,
            producer: producer_name(a.producer),
        })
    }
}

async fn post_activity(
    State(g): State<Gateway>,
    Body(a): Body<ActivityIn>,
) -> Result<Response, ApiError> {
    let e = g.activity(a);
    Ok(accepted(g.producer.publish(e).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchIn {
    activities: Vec<ActivityIn>,
}

/// Publishes all activities concurrently; answers 202 only if every one was acknowledged,
/// otherwise the first error with the index of the failing activity (those before it may
/// have been published: retrying the batch with the returned ids is safe).
async fn post_batch(
    State(g): State<Gateway>,
    Body(b): Body<BatchIn>,
) -> Result<Response, ApiError> {
    if b.activities.is_empty() || b.activities.len() > MAX_BATCH {
        return Err(ApiError {
            status: StatusCode::BAD_REQUEST,
            message: format!(
                "expected 1..={MAX_BATCH} activities, got {}",
                b.activities.len()
            ),
            field: Some("activities".into()),
        });
    }
    let events: Vec<Event> = b.activities.into_iter().map(|a| g.activity(a)).collect();
    // Validate everything first so an invalid item publishes nothing.
    for (i, e) in events.iter().enumerate() {
        if let Err(v) = tidings_core::validate::event(e) {
            return Err(ApiError {
                status: StatusCode::BAD_REQUEST,
                message: format!("activities[{i}]: {v}"),
                field: Some(format!("activities[{i}].{}", v.field)),
            });
        }
    }
    let sends = events.into_iter().map(|e| g.producer.publish(e));
    let results = futures::future::join_all(sends).await;
    let mut out = Vec::with_capacity(results.len());
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Ok(d) => out.push(d),
            Err(e) => {
                let mut err = ApiError::from(e);
                err.message = format!("activities[{i}]: {}", err.message);
                return Err(err);
            }
        }
    }
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({ "deliveries": out })),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
struct ActorQuery {
    actor: UserId,
}

fn parse_id(s: &str) -> Result<EventId, ApiError> {
    uuid::Uuid::parse_str(s).map(EventId).map_err(|e| ApiError {
        status: StatusCode::BAD_REQUEST,
        message: format!("activity id must be a UUID, got {s:?}: {e}"),
        field: Some("id".into()),
    })
}

async fn delete_activity(
    State(g): State<Gateway>,
    Path(id): Path<String>,
    q: Result<Query<ActorQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let activity_id = parse_id(&id)?;
    let Query(q) = q.map_err(|r| ApiError {
        status: StatusCode::BAD_REQUEST,
        message: format!(
            "expected ?actor=USER_ID (the activity's author): {}",
            r.body_text()
        ),
        field: Some("actor".into()),
    })?;
    let e = Event::Retraction(Retraction {
        id: EventId::MIN,
        activity_id,
        actor: q.actor,
        time_ms: g.clock.now_ms(),
        producer: producer_name(None),
    });
    Ok(accepted(g.producer.publish(e).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateIn {
    id: Option<uuid::Uuid>,
    actor: UserId,
    text: Option<String>,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
    time_ms: Option<i64>,
    producer: Option<ProducerIn>,
}

async fn patch_activity(
    State(g): State<Gateway>,
    Path(id): Path<String>,
    Body(u): Body<UpdateIn>,
) -> Result<Response, ApiError> {
    let activity_id = parse_id(&id)?;
    if u.text.is_none() && u.attributes.is_empty() {
        return Err(ApiError {
            status: StatusCode::BAD_REQUEST,
            message: "nothing to update: give `text` and/or `attributes`".into(),
            field: Some("text".into()),
        });
    }
    let e = Event::Update(Update {
        id: g.id(u.id),
        activity_id,
        actor: u.actor,
        time_ms: u.time_ms.unwrap_or_else(|| g.clock.now_ms()),
        text: u.text,
        attributes: u.attributes,
        producer: producer_name(u.producer),
    });
    Ok(accepted(g.producer.publish(e).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EdgeIn {
    id: Option<uuid::Uuid>,
    actor: UserId,
    subject: UserId,
    time_ms: Option<i64>,
    producer: Option<ProducerIn>,
}

type UndoPath = Result<Path<(UserId, UserId)>, axum::extract::rejection::PathRejection>;

async fn follow(g: State<Gateway>, b: Body<EdgeIn>) -> Result<Response, ApiError> {
    edge(g, b, GraphOp::Follow).await
}
async fn block(g: State<Gateway>, b: Body<EdgeIn>) -> Result<Response, ApiError> {
    edge(g, b, GraphOp::Block).await
}
async fn mute(g: State<Gateway>, b: Body<EdgeIn>) -> Result<Response, ApiError> {
    edge(g, b, GraphOp::Mute).await
}
async fn unfollow(g: State<Gateway>, p: UndoPath) -> Result<Response, ApiError> {
    undo(g, p, GraphOp::Unfollow).await
}
async fn unblock(g: State<Gateway>, p: UndoPath) -> Result<Response, ApiError> {
    undo(g, p, GraphOp::Unblock).await
}
async fn unmute(g: State<Gateway>, p: UndoPath) -> Result<Response, ApiError> {
    undo(g, p, GraphOp::Unmute).await
}

async fn edge(
    State(g): State<Gateway>,
    Body(e): Body<EdgeIn>,
    op: GraphOp,
) -> Result<Response, ApiError> {
    let ev = Event::Graph(GraphChange {
        id: g.id(e.id),
        actor: e.actor,
        subject: e.subject,
        op,
        time_ms: e.time_ms.unwrap_or_else(|| g.clock.now_ms()),
        producer: producer_name(e.producer),
    });
    Ok(accepted(g.producer.publish(ev).await?))
}

async fn undo(State(g): State<Gateway>, p: UndoPath, op: GraphOp) -> Result<Response, ApiError> {
    let Path((actor, subject)) = p.map_err(|r| ApiError {
        status: StatusCode::BAD_REQUEST,
        message: format!(
            "expected /{{actor}}/{{subject}} as user ids: {}",
            r.body_text()
        ),
        field: None,
    })?;
    let ev = Event::Graph(GraphChange {
        id: EventId::MIN,
        actor,
        subject,
        op,
        time_ms: g.clock.now_ms(),
        producer: producer_name(None),
    });
    Ok(accepted(g.producer.publish(ev).await?))
}
