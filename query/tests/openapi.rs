//! The OpenAPI document (`query/openapi.json`, served at `GET /openapi.json`) against the code.
//!
//! 1. The document itself: OpenAPI 3.1, every operation complete (operationId, summary, a
//!    declared tag, responses), operationIds unique, path templates and path parameters agree,
//!    every `$ref` resolves inside the document, every example matches its schema.
//! 2. The routes: the real routers (the ingest gateway merged with the query service, as
//!    `tidings up` serves them) get one or more requests per documented operation. An answer
//!    must come from the operation's handler — axum's own fallback answers an unknown path with
//!    404 and an empty body and a known path with another method with 405, while every 404 of
//!    the app carries a JSON `{"error": …}` — with the probe's expected status, a status the
//!    operation documents, a documented content type and, for JSON, a body that matches the
//!    documented schema (objects may not carry undocumented fields).
//!
//! Ingest probes send invalid input, so the gateway answers 400 before publishing anything; its
//! producer points at a port where no broker listens anyway. `/health` and `/metrics` are
//! served by `tidings up` itself (tools/src/pipeline.rs), not by these routers: documented, not
//! probed here; nor are `/ready` and the admin API (`/v1/admin/...`), served around these
//! routers by every role and tested against running processes in `tools/tests/ops.rs`.
//!
//! Requests go through [`Handler::call`] on `any_service(router)` (tower is not a dependency of
//! the workspace, so `ServiceExt::oneshot` is not at hand); that runs the router exactly as a
//! server would.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::handler::Handler;
use axum::http::{header, Request, StatusCode};
use axum::routing::{any_service, MethodRouter};
use axum::Router;
use serde_json::Value;
use tidings_core::fanout::{plan_activity, FanoutConfig, FanoutOptions, GraphView};
use tidings_core::keys::meta::DEFAULT_PROJECTION;
use tidings_core::{Activity, Event, EventId, Producer, UserId};
use tidings_store::rocks::{RocksOptions, RocksStore};
use tidings_store::{Store, WriteBatch};

const DOCUMENT: &str = include_str!("../openapi.json");

/// Operations served by every role around the routers under test (tools/src/ops/: health,
/// readiness, metrics and the admin API).
const SERVED_BY_THE_PIPELINE: [&str; 9] = [
    "/health",
    "/metrics",
    "/ready",
    "/v1/admin/status",
    "/v1/admin/consumers/pause",
    "/v1/admin/consumers/resume",
    "/v1/admin/features/{name}/down",
    "/v1/admin/features/{name}/up",
    "/v1/admin/pipeline",
];

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn document() -> Value {
    serde_json::from_str(DOCUMENT).expect("query/openapi.json is JSON")
}

/// `(method, path, operation)` for every operation of the document, in document order.
fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
    let mut out = Vec::new();
    let paths = doc["paths"].as_object().expect("`paths` is an object");
    for (path, item) in paths {
        let item = item.as_object().expect("a path item is an object");
        for (method, op) in item {
            if METHODS.contains(&method.as_str()) {
                out.push((method.clone(), path.clone(), op));
            }
        }
    }
    out
}

/// Follows `$ref`s (each must point inside the document).
fn resolve<'a>(doc: &'a Value, mut v: &'a Value) -> Option<&'a Value> {
    for _ in 0..32 {
        match v.get("$ref") {
            None => return Some(v),
            Some(r) => v = doc.pointer(r.as_str()?.strip_prefix('#')?)?,
        }
    }
    None
}

/// The names between braces in a path template.
fn template_params(path: &str) -> BTreeSet<String> {
    path.split('{')
        .skip(1)
        .filter_map(|s| s.split_once('}').map(|(name, _)| name.to_owned()))
        .collect()
}

/// The parameters an operation takes: the path item's, overridden by the operation's.
fn parameters<'a>(doc: &'a Value, path_item: &'a Value, op: &'a Value) -> Vec<&'a Value> {
    let mut by_key: BTreeMap<(String, String), &Value> = BTreeMap::new();
    for list in [&path_item["parameters"], &op["parameters"]] {
        for p in list.as_array().into_iter().flatten() {
            let p = resolve(doc, p).expect("parameter $ref resolves");
            let key = (
                p["in"].as_str().unwrap_or("").to_owned(),
                p["name"].as_str().unwrap_or("").to_owned(),
            );
            by_key.insert(key, p);
        }
    }
    by_key.into_values().collect()
}

#[test]
fn the_document_is_openapi_3_1_and_every_operation_is_complete() {
    let doc = document();
    let version = doc["openapi"].as_str().expect("`openapi` is a string");
    assert!(version.starts_with("3.1"), "openapi is {version:?}");
    assert!(doc["info"]["title"].is_string(), "info.title");
    assert!(doc["info"]["version"].is_string(), "info.version");
    let tags: BTreeSet<&str> = doc["tags"]
        .as_array()
        .expect("top-level tags are declared")
        .iter()
        .map(|t| t["name"].as_str().expect("a tag has a name"))
        .collect();

    let ops = operations(&doc);
    assert!(!ops.is_empty(), "no operations");
    let mut problems = Vec::new();
    let mut ids: BTreeMap<&str, String> = BTreeMap::new();
    for (method, path, op) in &ops {
        let at = format!("{} {path}", method.to_uppercase());
        match op["operationId"].as_str() {
            Some(id) if !id.is_empty() => {
                if let Some(other) = ids.insert(id, at.clone()) {
                    problems.push(format!("{at}: operationId {id:?} is also used by {other}"));
                }
            }
            _ => problems.push(format!("{at}: no operationId")),
        }
        if op["summary"].as_str().is_none_or(str::is_empty) {
            problems.push(format!("{at}: no summary"));
        }
        match op["tags"].as_array() {
            Some(t) if !t.is_empty() => {
                for tag in t {
                    if !tag.as_str().is_some_and(|t| tags.contains(t)) {
                        problems.push(format!("{at}: tag {tag} is not declared"));
                    }
                }
            }
            _ => problems.push(format!("{at}: no tag")),
        }
        match op["responses"].as_object() {
            Some(r) if !r.is_empty() => {
                for (status, response) in r {
                    let code_ok = status == "default"
                        || (status.len() == 3 && status.bytes().all(|b| b.is_ascii_digit()));
                    if !code_ok {
                        problems.push(format!("{at}: response key {status:?} is not a status"));
                    }
                    match resolve(&doc, response) {
                        Some(r) if r["description"].is_string() => {}
                        _ => problems.push(format!("{at} {status}: no description")),
                    }
                }
            }
            _ => problems.push(format!("{at}: no responses")),
        }
        if let Some(body) = op.get("requestBody") {
            let body = resolve(&doc, body).expect("requestBody $ref resolves");
            // JSON bodies, or a config file as text (`POST /v1/admin/pipeline`).
            let schema = |ct: &str| body["content"][ct]["schema"].is_object();
            if !schema("application/json") && !schema("text/plain") {
                problems.push(format!("{at}: request body without a JSON schema"));
            }
        }
        let params = parameters(&doc, &doc["paths"][path.as_str()], op);
        let declared: BTreeSet<String> = params
            .iter()
            .filter(|p| p["in"] == "path")
            .map(|p| p["name"].as_str().unwrap_or("").to_owned())
            .collect();
        if declared != template_params(path) {
            problems.push(format!(
                "{at}: path parameters {declared:?} do not match the template"
            ));
        }
        for p in &params {
            if p["in"] == "path" && p["required"] != true {
                problems.push(format!(
                    "{at}: path parameter {} is not required",
                    p["name"]
                ));
            }
            if !p["schema"].is_object() {
                problems.push(format!("{at}: parameter {} has no schema", p["name"]));
            }
        }
    }
    for path in SERVED_BY_THE_PIPELINE {
        if !doc["paths"][path].is_object() {
            problems.push(format!("{path} is not documented"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_ref_resolves_inside_the_document() {
    fn walk(doc: &Value, v: &Value, at: &str, problems: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                if let Some(r) = o.get("$ref") {
                    let target = r
                        .as_str()
                        .and_then(|r| r.strip_prefix('#'))
                        .and_then(|p| doc.pointer(p));
                    if target.is_none() {
                        problems.push(format!("{at}: $ref {r} does not resolve in the document"));
                    }
                }
                for (k, x) in o {
                    walk(doc, x, &format!("{at}/{k}"), problems);
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    walk(doc, x, &format!("{at}/{i}"), problems);
                }
            }
            _ => {}
        }
    }
    let doc = document();
    let mut problems = Vec::new();
    walk(&doc, &doc, "#", &mut problems);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_example_matches_its_schema() {
    fn walk(doc: &Value, v: &Value, at: &str, checked: &mut usize, problems: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                // A media type or parameter object: `example` against its `schema`.
                if let (Some(example), Some(schema)) = (o.get("example"), o.get("schema")) {
                    *checked += 1;
                    Validator { doc }.check(schema, example, at, true, problems);
                }
                // A schema with `examples`: each against the schema itself.
                if let Some(Value::Array(examples)) = o.get("examples") {
                    for (i, example) in examples.iter().enumerate() {
                        *checked += 1;
                        let at = format!("{at}/examples/{i}");
                        Validator { doc }.check(v, example, &at, true, problems);
                    }
                }
                for (k, x) in o {
                    walk(doc, x, &format!("{at}/{k}"), checked, problems);
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    walk(doc, x, &format!("{at}/{i}"), checked, problems);
                }
            }
            _ => {}
        }
    }
    let doc = document();
    let mut problems = Vec::new();
    let mut checked = 0;
    walk(&doc, &doc, "#", &mut checked, &mut problems);
    assert!(checked > 10, "only {checked} examples found");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A JSON Schema checker for the keywords the document uses. A keyword it does not know is
/// an error, so the document cannot lean on a constraint nobody checks. `pattern` is the one
/// keyword accepted without being checked (no regex engine among the dependencies).
struct Validator<'a> {
    doc: &'a Value,
}

const KNOWN_KEYWORDS: [&str; 27] = [
    "$ref",
    "type",
    "const",
    "enum",
    "properties",
    "required",
    "additionalProperties",
    "propertyNames",
    "minProperties",
    "maxProperties",
    "items",
    "minItems",
    "maxItems",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "format",
    "oneOf",
    "anyOf",
    "discriminator",
    "title",
    "description",
    "default",
    "examples",
    "example",
];

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "string" => v.is_string(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        _ => false,
    }
}

impl Validator<'_> {
    /// Appends to `problems` every way `v` fails `schema`. `strict`: an object may not carry a
    /// property its schema does not list (responses must be fully documented).
    fn check(&self, schema: &Value, v: &Value, at: &str, strict: bool, problems: &mut Vec<String>) {
        let Some(s) = schema.as_object() else {
            problems.push(format!("{at}: schema {schema} is not an object"));
            return;
        };
        for k in s.keys() {
            if !KNOWN_KEYWORDS.contains(&k.as_str()) {
                problems.push(format!(
                    "{at}: the test's validator does not know keyword {k:?}"
                ));
            }
        }
        if let Some(r) = s.get("$ref") {
            match r
                .as_str()
                .and_then(|r| r.strip_prefix('#'))
                .and_then(|p| self.doc.pointer(p))
            {
                Some(target) => self.check(target, v, at, strict, problems),
                None => problems.push(format!("{at}: $ref {r} does not resolve")),
            }
        }
        if let Some(t) = s.get("type") {
            let types: Vec<&str> = match t {
                Value::String(t) => vec![t.as_str()],
                Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            if !types.iter().any(|t| type_matches(t, v)) {
                problems.push(format!("{at}: expected {}, got {v}", types.join(" or ")));
                return;
            }
        }
        if let Some(c) = s.get("const") {
            if c != v {
                problems.push(format!("{at}: expected {c}, got {v}"));
            }
        }
        if let Some(Value::Array(allowed)) = s.get("enum") {
            if !allowed.contains(v) {
                problems.push(format!("{at}: {v} is not one of {allowed:?}"));
            }
        }
        let count = |k: &str| s.get(k).and_then(Value::as_u64).map(|n| n as usize);
        match v {
            Value::Object(o) => {
                let props = s.get("properties").and_then(Value::as_object);
                for r in s
                    .get("required")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if !o.contains_key(r.as_str().unwrap_or_default()) {
                        problems.push(format!("{at}: required property {r} is missing"));
                    }
                }
                for (k, x) in o {
                    let at_k = format!("{at}.{k}");
                    match (props.and_then(|p| p.get(k)), s.get("additionalProperties")) {
                        (Some(p), _) => self.check(p, x, &at_k, strict, problems),
                        (None, Some(Value::Bool(false))) => {
                            problems.push(format!("{at_k}: property not allowed"));
                        }
                        (None, Some(extra @ Value::Object(_))) => {
                            self.check(extra, x, &at_k, strict, problems);
                        }
                        (None, _) => {
                            if strict && props.is_some() {
                                problems.push(format!("{at_k}: property not documented"));
                            }
                        }
                    }
                    if let Some(names) = s.get("propertyNames") {
                        let name = Value::String(k.clone());
                        self.check(names, &name, &format!("{at_k} (name)"), strict, problems);
                    }
                }
                if count("minProperties").is_some_and(|n| o.len() < n)
                    || count("maxProperties").is_some_and(|n| o.len() > n)
                {
                    problems.push(format!("{at}: {} properties is out of bounds", o.len()));
                }
            }
            Value::Array(a) => {
                if let Some(items) = s.get("items") {
                    for (i, x) in a.iter().enumerate() {
                        self.check(items, x, &format!("{at}[{i}]"), strict, problems);
                    }
                }
                if count("minItems").is_some_and(|n| a.len() < n)
                    || count("maxItems").is_some_and(|n| a.len() > n)
                {
                    problems.push(format!("{at}: {} items is out of bounds", a.len()));
                }
            }
            Value::String(x) => {
                let n = x.chars().count();
                if count("minLength").is_some_and(|m| n < m)
                    || count("maxLength").is_some_and(|m| n > m)
                {
                    problems.push(format!("{at}: length {n} is out of bounds"));
                }
                if s.get("format").and_then(Value::as_str) == Some("uuid") && !is_uuid(x) {
                    problems.push(format!("{at}: {x:?} is not a UUID"));
                }
            }
            Value::Number(n) => {
                let x = n.as_f64().unwrap_or(f64::NAN);
                if s.get("minimum")
                    .and_then(Value::as_f64)
                    .is_some_and(|m| x < m)
                    || s.get("maximum")
                        .and_then(Value::as_f64)
                        .is_some_and(|m| x > m)
                {
                    problems.push(format!("{at}: {n} is out of bounds"));
                }
                let fits = match s.get("format").and_then(Value::as_str) {
                    Some("int32") => n.as_i64().is_some_and(|i| i32::try_from(i).is_ok()),
                    Some("int64") => n.is_i64(),
                    _ => true,
                };
                if !fits {
                    problems.push(format!("{at}: {n} does not fit its format"));
                }
            }
            _ => {}
        }
        if let Some(Value::Array(branches)) = s.get("oneOf") {
            let mut passing = 0;
            let mut why = Vec::new();
            for b in branches {
                let mut p = Vec::new();
                self.check(b, v, at, strict, &mut p);
                if p.is_empty() {
                    passing += 1;
                } else {
                    why.push(p);
                }
            }
            // With a discriminator the value names its branch: report only that branch's
            // problems (the others fail on the tag anyway).
            let named = s["discriminator"]["propertyName"]
                .as_str()
                .and_then(|p| v.get(p))
                .and_then(Value::as_str)
                .and_then(|tag| s["discriminator"]["mapping"].get(tag));
            if let Some(target) = named {
                match branches.iter().position(|b| b.get("$ref") == Some(target)) {
                    None => problems.push(format!(
                        "{at}: discriminator maps to {target}, not a branch"
                    )),
                    Some(i) => {
                        let mut p = Vec::new();
                        self.check(&branches[i], v, at, strict, &mut p);
                        why = vec![p];
                    }
                }
            }
            if passing != 1 {
                let why: Vec<String> = why.into_iter().flatten().collect();
                problems.push(format!(
                    "{at}: matches {passing} branches of oneOf, not exactly one: {}",
                    why.join("; ")
                ));
            }
        }
        if let Some(Value::Array(branches)) = s.get("anyOf") {
            let passes = |b: &Value| {
                let mut p = Vec::new();
                self.check(b, v, at, false, &mut p);
                p.is_empty()
            };
            if !branches.iter().any(passes) {
                problems.push(format!("{at}: matches no branch of anyOf"));
            }
        }
    }
}

/// Fan-out without followers: an activity reaches its actor's feeds and its recipients'
/// notifications only.
struct NoFollowers;

impl GraphView for NoFollowers {
    type Error = Infallible;
    fn follower_count(&self, _: UserId) -> Result<u64, Infallible> {
        Ok(0)
    }
    fn followers_after(
        &self,
        _: UserId,
        _: Option<UserId>,
        _: usize,
    ) -> Result<Vec<UserId>, Infallible> {
        Ok(Vec::new())
    }
    fn excluded(
        &self,
        _: UserId,
        users: &[UserId],
        _: bool,
        _: bool,
    ) -> Result<Vec<bool>, Infallible> {
        Ok(vec![false; users.len()])
    }
}

fn id(n: u8) -> EventId {
    EventId::from_bytes([n; 16])
}

/// Applies an activity to the store the way the projector does (no followers).
fn apply(store: &dyn Store, a: Activity) {
    let body = tidings_schemas::encode(&Event::Activity(a.clone()));
    let cfg = FanoutConfig::default();
    let opts = FanoutOptions::default();
    let Ok(plan) = plan_activity(
        DEFAULT_PROJECTION,
        &a,
        body,
        &NoFollowers,
        &cfg,
        &opts,
        None,
    );
    assert!(plan.resume.is_none(), "one step without followers");
    let mut batch = WriteBatch::new();
    batch.extend(plan.writes());
    store.commit(batch).expect("commit the seed activity");
}

/// User 1 posts twice (a `bursts` group in their user and home feeds) and replies once; users
/// 2 and 3 like the first post addressed to 1 (a `reactions` group in 1's notifications) and 2
/// comments on it (an item with a target). Returns the comment's id.
fn seed(store: &dyn Store) -> EventId {
    let t = 1_700_000_000_000;
    let activity =
        |n: u8, actor: UserId, verb: &str, object: &str, target: Option<&str>, to: Vec<UserId>| {
            Activity {
                id: id(n),
                actor,
                verb: verb.into(),
                object: object.into(),
                target: target.map(str::to_owned),
                time_ms: t + i64::from(n) * 1_000,
                to,
                text: format!("activity {n}"),
                attributes: [("lang".to_owned(), "en".to_owned())].into(),
                producer: Producer::new("openapi-test", "1"),
            }
        };
    apply(store, activity(1, 1, "post", "post:1", None, vec![]));
    apply(store, activity(2, 1, "post", "post:2", None, vec![]));
    apply(store, activity(3, 2, "like", "post:1", None, vec![1]));
    apply(store, activity(4, 3, "like", "post:1", None, vec![1]));
    apply(
        store,
        activity(5, 2, "comment", "comment:5", Some("post:1"), vec![1]),
    );
    apply(
        store,
        activity(6, 1, "comment", "comment:6", Some("post:9"), vec![]),
    );
    id(5)
}

/// One request and what must come back.
struct Probe {
    /// Method as the document spells it (lowercase).
    method: &'static str,
    /// The documented path template it exercises.
    template: &'static str,
    /// The concrete request target.
    uri: String,
    /// A body, sent as `application/json` unless `json` is false.
    body: Option<&'static str>,
    json: bool,
    /// The status the handler gives this request.
    expect: StatusCode,
}

fn probe(method: &'static str, template: &'static str, uri: impl Into<String>) -> Probe {
    Probe {
        method,
        template,
        uri: uri.into(),
        body: None,
        json: true,
        expect: StatusCode::OK,
    }
}

impl Probe {
    fn body(mut self, b: &'static str) -> Self {
        self.body = Some(b);
        self
    }
    fn not_json(mut self) -> Self {
        self.json = false;
        self
    }
    fn expect(mut self, s: StatusCode) -> Self {
        self.expect = s;
        self
    }
}

/// No activity has this id.
const UNKNOWN_ID: &str = "0192f5e4-3c1a-7b2d-9e8f-0a1b2c3d4e5f";

fn probes(known: EventId) -> Vec<Probe> {
    use StatusCode as S;
    let bad = S::BAD_REQUEST;
    vec![
        // Ingest: invalid input, answered 400 before anything is published.
        probe("post", "/v1/activities", "/v1/activities")
            .body(r#"{"bogus": 1}"#)
            .expect(bad),
        probe("post", "/v1/activities", "/v1/activities")
            .body(r#"{"actor": 1, "verb": "post", "object": "post:1"}"#)
            .not_json()
            .expect(S::UNSUPPORTED_MEDIA_TYPE),
        probe("post", "/v1/activities:batch", "/v1/activities:batch")
            .body(r#"{"activities": []}"#)
            .expect(bad),
        // No `?actor=`: refused before a retraction is built.
        probe(
            "delete",
            "/v1/activities/{id}",
            format!("/v1/activities/{UNKNOWN_ID}"),
        )
        .expect(bad),
        probe(
            "patch",
            "/v1/activities/{id}",
            format!("/v1/activities/{UNKNOWN_ID}"),
        )
        .body(r#"{"actor": 1}"#)
        .expect(bad),
        probe("post", "/v1/follows", "/v1/follows")
            .body(r#"{"actor": 1}"#)
            .expect(bad),
        probe("post", "/v1/blocks", "/v1/blocks")
            .body(r#"{"actor": 1}"#)
            .expect(bad),
        probe("post", "/v1/mutes", "/v1/mutes")
            .body(r#"{"actor": 1}"#)
            .expect(bad),
        // actor == subject fails validation, which runs before anything is sent.
        probe("delete", "/v1/follows/{actor}/{subject}", "/v1/follows/1/1").expect(bad),
        probe("delete", "/v1/blocks/{actor}/{subject}", "/v1/blocks/1/1").expect(bad),
        probe("delete", "/v1/mutes/{actor}/{subject}", "/v1/mutes/1/1").expect(bad),
        // Query.
        probe("get", "/v1/feeds/{user}/home", "/v1/feeds/1/home"),
        probe("get", "/v1/feeds/{user}/home", "/v1/feeds/1/home?limit=0").expect(bad),
        probe("get", "/v1/feeds/{user}/home", "/v1/feeds/77/home"),
        probe(
            "get",
            "/v1/feeds/{user}/user",
            "/v1/feeds/1/user?limit=1&aggregate=false",
        ),
        probe("get", "/v1/feeds/{user}/user", "/v1/feeds/1/user"),
        probe(
            "get",
            "/v1/feeds/{user}/notifications",
            "/v1/feeds/1/notifications",
        ),
        probe(
            "get",
            "/v1/feeds/{user}/notifications",
            "/v1/feeds/1/notifications?cursor=nope",
        )
        .expect(bad),
        probe(
            "get",
            "/v1/feeds/{user}/home:stream",
            "/v1/feeds/1/home:stream",
        ),
        probe(
            "get",
            "/v1/feeds/{user}/home:stream",
            "/v1/feeds/1/home:stream?since=nope",
        )
        .expect(bad),
        probe(
            "get",
            "/v1/feeds/{user}/notifications:counts",
            "/v1/feeds/1/notifications:counts",
        ),
        probe(
            "post",
            "/v1/feeds/{user}/notifications:mark",
            "/v1/feeds/1/notifications:mark",
        )
        .body(r#"{"mark": "seen"}"#),
        probe(
            "post",
            "/v1/feeds/{user}/notifications:mark",
            "/v1/feeds/1/notifications:mark",
        )
        .body(r#"{"mark": "read", "up_to": "0192f5e4-3c1a-7b2d-9e8f-0a1b2c3d4e5f"}"#)
        .expect(S::NOT_FOUND),
        probe(
            "post",
            "/v1/feeds/{user}/notifications:mark",
            "/v1/feeds/1/notifications:mark",
        )
        .body(r#"{"mark": "everything"}"#)
        .expect(bad),
        probe(
            "get",
            "/v1/activities/{id}",
            format!("/v1/activities/{known}"),
        ),
        probe(
            "get",
            "/v1/activities/{id}",
            format!("/v1/activities/{UNKNOWN_ID}"),
        )
        .expect(S::NOT_FOUND),
        probe("get", "/v1/activities/{id}", "/v1/activities/not-a-uuid").expect(bad),
        probe("get", "/openapi.json", "/openapi.json"),
    ]
}

/// The routers as `tidings up` merges them.
fn app(store: Arc<dyn Store>) -> Router {
    let dead = tidings_producers::broker::free_port().expect("a free port");
    let mut cfg = tidings_producers::ProducerConfig::new(format!("127.0.0.1:{dead}"));
    // Nothing is published; if a probe ever tried, it fails fast with 503 instead of hanging.
    cfg.delivery_timeout = Duration::from_secs(1);
    let producer = tidings_producers::Producer::new(cfg).expect("a producer");
    tidings_producers::gateway::router(producer).merge(tidings_query::http::router(
        store,
        tidings_query::http::QueryOptions::default(),
    ))
}

fn media_type(headers: &axum::http::HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or("")
        .trim()
        .to_owned()
}

/// Sends one probe; returns what is wrong with the answer.
async fn run(app: &Router, doc: &Value, op: &Value, p: &Probe) -> Vec<String> {
    let label = format!("{} {}", p.method.to_uppercase(), p.uri);
    let mut req = Request::builder()
        .method(p.method.to_uppercase().as_str())
        .uri(&p.uri);
    if p.json && p.body.is_some() {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    let req = req
        .body(p.body.map_or_else(Body::empty, Body::from))
        .expect("a request");
    let svc: MethodRouter<()> = any_service(app.clone());
    let call = <MethodRouter<()> as Handler<(), ()>>::call(svc, req, ());
    let Ok(resp) = tokio::time::timeout(Duration::from_secs(20), call).await else {
        return vec![format!("{label}: no answer within 20 s")];
    };
    let status = resp.status();
    let media = media_type(resp.headers());
    // An event stream never ends: only its status and type are checked.
    let body = if media == "text/event-stream" {
        None
    } else {
        Some(
            axum::body::to_bytes(resp.into_body(), 1 << 24)
                .await
                .expect("read the body"),
        )
    };
    let text = body
        .as_ref()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default();
    if status == StatusCode::METHOD_NOT_ALLOWED {
        return vec![format!(
            "{label}: 405 from axum: the path is routed, but not for {} (route missing)",
            p.method.to_uppercase()
        )];
    }
    if status == StatusCode::NOT_FOUND && text.is_empty() {
        return vec![format!(
            "{label}: axum's fallback 404 with an empty body (route missing)"
        )];
    }
    let mut problems = Vec::new();
    if status != p.expect {
        problems.push(format!(
            "{label}: expected {}, got {status} {text}",
            p.expect
        ));
    }
    let query = p.uri.split_once('?').map_or("", |(_, q)| q);
    let params = parameters(doc, &doc["paths"][p.template], op);
    for pair in query.split('&').filter(|s| !s.is_empty()) {
        let name = pair.split('=').next().unwrap_or("");
        if !params
            .iter()
            .any(|d| d["in"] == "query" && d["name"] == name)
        {
            problems.push(format!(
                "{label}: query parameter {name:?} is not documented"
            ));
        }
    }
    let Some(documented) = op["responses"]
        .get(status.as_str())
        .and_then(|r| resolve(doc, r))
    else {
        problems.push(format!(
            "{label}: answered {status}, which is not documented"
        ));
        return problems;
    };
    let Some(content) = documented["content"].as_object() else {
        if !text.is_empty() {
            problems.push(format!("{label}: a body where the document promises none"));
        }
        return problems;
    };
    let Some(media_doc) = content.get(&media) else {
        problems.push(format!(
            "{label}: {status} with content type {media:?}, documented: {:?}",
            content.keys().collect::<Vec<_>>()
        ));
        return problems;
    };
    if media == "application/json" {
        match serde_json::from_str::<Value>(&text) {
            Err(e) => problems.push(format!("{label}: the body is not JSON ({e}): {text}")),
            Ok(v) => {
                let at = format!("{label} → {status}");
                Validator { doc }.check(&media_doc["schema"], &v, &at, true, &mut problems);
                if p.template == "/openapi.json" && &v != doc {
                    problems.push(format!(
                        "{label}: serves another document than query/openapi.json"
                    ));
                }
            }
        }
    }
    problems
}

#[tokio::test]
async fn every_documented_operation_is_served_by_the_real_routers() {
    let doc = document();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let rocks = RocksStore::open(dir.path(), RocksOptions::default()).expect("open RocksDB");
    let store: Arc<dyn Store> = Arc::new(rocks);
    let known = seed(&*store);
    let app = app(store);
    let probes = probes(known);
    let ops = operations(&doc);

    let mut problems = Vec::new();
    for (method, path, _) in &ops {
        let n = probes
            .iter()
            .filter(|p| p.method == method && p.template == path)
            .count();
        let elsewhere = SERVED_BY_THE_PIPELINE.contains(&path.as_str());
        if n == 0 && !elsewhere {
            problems.push(format!(
                "{} {path}: documented, but no probe here",
                method.to_uppercase()
            ));
        }
    }
    for p in &probes {
        let Some((_, _, op)) = ops
            .iter()
            .find(|(m, path, _)| m == p.method && path == p.template)
        else {
            problems.push(format!(
                "{} {}: probed, but not documented",
                p.method.to_uppercase(),
                p.template
            ));
            continue;
        };
        problems.extend(run(&app, &doc, op, p).await);
    }
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}
