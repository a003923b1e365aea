//! Operations against real processes: `tidings consume`, `ingest`, `serve` and `up` with a
//! real broker (tansu) — readiness and metrics of a paused consumer and of a downed broker,
//! the admin token, and features marked down without a restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::roles::{checks, sample, Http, Role};
use common::*;
use serde_json::{json, Value};
use tidings_core::event::{Activity, Event, Producer as Who};
use tidings_core::keys::feed::FeedKind;
use tidings_core::keys::meta::DEFAULT_PROJECTION;
use tidings_core::EventId;
use tidings_producers::broker::LocalBroker;

const TOKEN: &str = "s3cret-admin-token";

fn activity(actor: i64, verb: &str, n: i64) -> Event {
    Event::Activity(Activity {
        id: EventId::MIN,
        actor,
        verb: verb.into(),
        object: format!("post:{actor}-{n}"),
        target: None,
        time_ms: model::BASE_MS + n,
        to: vec![],
        text: format!("{verb} {n} by {actor}"),
        attributes: BTreeMap::new(),
        producer: Who::new("test", "1"),
    })
}

/// `tidings consume` on all partitions of `b`, its store in `data`, with the admin token.
fn admin_consumer(tmp: &std::path::Path, b: &LocalBroker, data: &std::path::Path) -> Role {
    admin_consumer_with(tmp, b, data, &[])
}

/// [`admin_consumer`] with `extra` flags.
fn admin_consumer_with(
    tmp: &std::path::Path,
    b: &LocalBroker,
    data: &std::path::Path,
    extra: &[&str],
) -> Role {
    let bootstrap = b.bootstrap();
    let mut args = vec![
        "consume",
        "--brokers",
        &bootstrap,
        "--data",
        data.to_str().unwrap(),
        "--instance",
        "0/1",
        "--reread-from-start",
    ];
    args.extend_from_slice(extra);
    Role::start("consume", &args, &[("TIDINGS_ADMIN_TOKEN", TOKEN)], tmp)
}

fn status(http: &Http, role: &Role) -> Value {
    let a = http.get(&format!("{}/v1/admin/status", role.base), Some(TOKEN));
    assert_eq!(a.status, 200, "{}", a.text);
    a.json()
}

/// `POST /v1/admin/consumers/{verb}` (pause, resume) with the token; asserts 200.
fn steer(http: &Http, role: &Role, verb: &str) -> Value {
    let a = http.post(
        &format!("{}/v1/admin/consumers/{verb}", role.base),
        Some(TOKEN),
        None,
    );
    assert_eq!(a.status, 200, "{}", a.text);
    a.json()
}

fn applied(http: &Http, role: &Role) -> u64 {
    status(http, role)["consumers"]["events_applied"]
        .as_u64()
        .unwrap()
}

#[test]
fn a_paused_consumer_fails_readiness_applies_nothing_and_resumes_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let b = broker(tmp.path());
    let http = Http::default();
    let data = tmp.path().join("consumer");
    let mut c = admin_consumer(tmp.path(), &b, &data);
    c.wait_ready(&http);
    let p = producer(&b.kafka());
    publish_all(&p, &[follow(2, 1), activity(1, "post", 0)]);
    wait_until(
        Duration::from_secs(30),
        "the first two events applied",
        || applied(&http, &c) == 2,
    );

    // Pause: confirmed once the loop has paused (no batch in flight afterwards).
    assert_eq!(
        steer(&http, &c, "pause"),
        json!({"pause_requested": true, "paused": true, "changed": true, "confirmed": true})
    );
    let ready = http.get(&format!("{}/ready", c.base), None);
    assert_eq!(ready.status, 503, "{}", ready.text);
    let by_name = checks(&ready.json());
    let (ok, detail, fix) = &by_name["consumers_not_paused"];
    assert!(!ok && detail.contains("paused by an operator"), "{detail}");
    assert!(fix.contains("POST /v1/admin/consumers/resume"), "{fix}");
    for other in ["broker", "store", "consumers_running", "consumers_assigned"] {
        assert!(by_name[other].0, "{other} still passes: {by_name:?}");
    }
    assert_eq!(ready.json()["ready"], false);
    assert_eq!(
        sample(&c.metrics(&http), "tidings_consumer_paused", ""),
        Some(1.0)
    );
    assert_eq!(status(&http, &c)["consumers"]["paused"], true);

    // Published while paused: fetched or not, nothing is applied.
    let posts: Vec<Event> = (1..=20).map(|n| activity(1, "post", n)).collect();
    let deliveries = publish_all(&p, &posts);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(applied(&http, &c), 2, "nothing applied while paused");

    assert_eq!(steer(&http, &c, "resume")["paused"], false);
    wait_until(Duration::from_secs(60), "all 22 events applied", || {
        applied(&http, &c) >= 22
    });
    c.wait_ready(&http);
    let m = c.metrics(&http);
    assert_eq!(sample(&m, "tidings_consumer_paused", ""), Some(0.0));
    assert_eq!(
        sample(
            &m,
            "tidings_events_total",
            r#"topic="tidings.activities",verb="post""#
        ),
        Some(21.0),
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            "tidings_events_total",
            r#"topic="tidings.graph",verb="follow""#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            "tidings_http_request_duration_seconds_count",
            r#"route="/v1/admin/consumers/pause",method="POST",status="200""#
        ),
        Some(1.0),
        "{m}"
    );
    assert!(sample(&m, "tidings_store_bytes", "").is_some(), "{m}");
    // Lag per partition, from the fetch answers' high watermarks: 0 once caught up.
    wait_until(Duration::from_secs(30), "lag 0 on all 8 partitions", || {
        let m = c.metrics(&http);
        let lags: Vec<&str> = m
            .lines()
            .filter(|l| l.starts_with("tidings_consumer_lag{"))
            .collect();
        lags.len() == 8 && lags.iter().all(|l| l.ends_with(" 0"))
    });
    let parts = status(&http, &c)["consumers"]["partitions"].clone();
    assert_eq!(parts.as_array().unwrap().len(), 8);
    assert!(
        parts.as_array().unwrap().iter().all(|p| p["lag"] == 0),
        "{parts}"
    );
    assert_eq!(applied(&http, &c), 22, "each event applied once");

    // Exactly once in the store too.
    c.stop();
    let store = store(&data.join("store"));
    let home = feed_ids(&*store, 2, FeedKind::Home);
    assert_eq!(home.len(), 21, "{home:?}");
    for d in &deliveries {
        assert_eq!(home.iter().filter(|id| **id == d.id).count(), 1);
    }
}

/// A pause that lands while records stream in: whatever the consume loop had fetched or is
/// handed afterwards is not applied while paused (records handed out are dropped and their
/// partitions sought back on resume), and after the resume every event is applied once.
#[test]
fn a_pause_mid_stream_loses_and_doubles_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let b = broker(tmp.path());
    let http = Http::default();
    let data = tmp.path().join("consumer");
    let mut c = admin_consumer(tmp.path(), &b, &data);
    c.wait_ready(&http);
    let p = producer(&b.kafka());
    publish_all(&p, &[follow(2, 1)]);
    wait_until(Duration::from_secs(30), "the follow applied", || {
        applied(&http, &c) == 1
    });
    // Posts in rounds; the pause is requested while the stream is being applied.
    let mut deliveries = Vec::new();
    let mut paused_at = None;
    for round in 0..10 {
        let posts: Vec<Event> = (0..50)
            .map(|n| activity(1, "post", round * 50 + n))
            .collect();
        deliveries.extend(publish_all(&p, &posts));
        if round == 4 {
            // Confirmed: the batch in flight finished, nothing is applied from here on.
            assert_eq!(steer(&http, &c, "pause")["confirmed"], true);
            paused_at = Some(applied(&http, &c));
        }
    }
    let paused_at = paused_at.unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(status(&http, &c)["consumers"]["paused"], true);
    assert_eq!(
        applied(&http, &c),
        paused_at,
        "nothing applied while paused (500 posts published, {paused_at} applied)"
    );
    steer(&http, &c, "resume");
    wait_until(Duration::from_secs(60), "all 501 events applied", || {
        applied(&http, &c) >= 501
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(applied(&http, &c), 501, "each event applied once");
    c.stop();
    // Every index entry of the follower's home feed (a page holds only 100).
    let store = store(&data.join("store"));
    let sub = tidings_core::keys::feed::feed(DEFAULT_PROJECTION, 2, FeedKind::Home);
    let (b, e) = sub.range();
    let rows = store
        .snapshot()
        .unwrap()
        .range(&b, &e, tidings_store::RangeOptions::default())
        .unwrap();
    let home: std::collections::HashSet<EventId> = rows
        .iter()
        .map(|(k, _)| tidings_core::keys::feed::parse_key(&sub, k).unwrap().id)
        .collect();
    assert_eq!(
        (rows.len(), home.len()),
        (500, 500),
        "500 entries, none twice"
    );
    for d in &deliveries {
        assert!(home.contains(&d.id), "{} lost", d.id);
    }
}

/// A pause that lands inside a record batch: small polls (`--max-batch 7`) over posts the
/// producer sent in large batches, paused mid-way and resumed; every post applied once.
#[test]
fn a_pause_inside_a_record_batch_loses_nothing_on_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let b = broker(tmp.path());
    let http = Http::default();
    let data = tmp.path().join("consumer");
    let mut c = admin_consumer_with(tmp.path(), &b, &data, &["--max-batch", "7"]);
    c.wait_ready(&http);
    let p = producer(&b.kafka());
    publish_all(&p, &[follow(2, 1)]);
    let posts: Vec<Event> = (0..2_000).map(|n| activity(1, "post", n)).collect();
    publish_all(&p, &posts);
    wait_until(Duration::from_secs(60), "some posts applied", || {
        applied(&http, &c) >= 100
    });
    assert_eq!(steer(&http, &c, "pause")["confirmed"], true);
    let paused_at = applied(&http, &c);
    std::thread::sleep(Duration::from_millis(500));
    steer(&http, &c, "resume");
    wait_until(
        Duration::from_secs(60),
        &format!("all 2,001 events applied (paused at {paused_at})"),
        || applied(&http, &c) >= 2_001,
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(applied(&http, &c), 2_001, "each event applied once");
    c.stop();
}

#[test]
fn a_downed_broker_fails_readiness_of_consumers_and_ingest_naming_the_broker() {
    let tmp = tempfile::tempdir().unwrap();
    let mut b = broker(tmp.path());
    let http = Http::default();
    let brokers = b.bootstrap();
    let data = tmp.path().join("consumer");
    let mut c = Role::start(
        "consume",
        &[
            "consume",
            "--brokers",
            &brokers,
            "--data",
            data.to_str().unwrap(),
            "--instance",
            "0/1",
        ],
        &[],
        tmp.path(),
    );
    let mut i = Role::start(
        "ingest",
        &["ingest", "--brokers", &brokers],
        &[],
        tmp.path(),
    );
    c.wait_ready(&http);
    i.wait_ready(&http);
    let ready = http.get(&format!("{}/ready", i.base), None).json();
    assert_eq!(
        checks(&ready).keys().collect::<Vec<_>>(),
        vec!["broker"],
        "ingest checks only the brokers"
    );
    let a = http.post(
        &format!("{}/v1/activities", i.base),
        None,
        Some(json!({"actor": 1, "verb": "post", "object": "post:x"})),
    );
    assert_eq!(a.status, 202, "{}", a.text);

    b.kill();
    for role in [&mut c, &mut i] {
        wait_until(
            Duration::from_secs(30),
            "/ready 503 naming the broker",
            || {
                let a = http.get(&format!("{}/ready", role.base), None);
                a.status == 503 && checks(&a.json()).get("broker").is_some_and(|b| !b.0)
            },
        );
        let by_name = checks(&http.get(&format!("{}/ready", role.base), None).json());
        let (_, detail, fix) = &by_name["broker"];
        assert!(detail.contains(&brokers), "{detail}");
        assert!(fix.contains("brokers are up"), "{fix}");
        // Alive all the same.
        assert_eq!(http.get(&format!("{}/health", role.base), None).status, 200);
        role.alive();
    }
    assert!(checks(&http.get(&format!("{}/ready", c.base), None).json())["store"].0);
}

/// A store with user 2 and 3 following 1, and a post by 1 (projection 1).
fn seeded_store(dir: &std::path::Path) {
    let store = store(dir);
    tidings_store::layout::ensure(&*store, "test").unwrap();
    let projector = tidings_consumers::project::Projector::new(1);
    for (n, e) in [follow(2, 1), follow(3, 1), activity(1, "post", 1)]
        .into_iter()
        .enumerate()
    {
        let e = match e {
            Event::Activity(mut a) => {
                a.id = EventId(uuid::Uuid::from_u128(n as u128 + 1));
                Event::Activity(a)
            }
            Event::Graph(mut g) => {
                g.id = EventId(uuid::Uuid::from_u128(n as u128 + 1));
                Event::Graph(g)
            }
            other => other,
        };
        projector
            .apply(&*store, &e, &tidings_schemas::encode(&e))
            .unwrap();
    }
}

#[test]
fn the_admin_token_is_enforced_and_query_features_are_marked_down_without_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    seeded_store(&dir);
    let url = format!("rocksdb:{}", dir.display());
    let http = Http::default();

    // No token configured: the admin API is off and says how to turn it on.
    let mut s = Role::start("serve-open", &["serve", "--store", &url], &[], tmp.path());
    s.wait_ready(&http);
    let a = http.get(&format!("{}/v1/admin/status", s.base), Some(TOKEN));
    assert_eq!(a.status, 403, "{}", a.text);
    assert!(a.json()["error"]
        .as_str()
        .unwrap()
        .contains("TIDINGS_ADMIN_TOKEN"));
    s.stop();

    let mut s = Role::start(
        "serve",
        &["serve", "--store", &url],
        &[("TIDINGS_ADMIN_TOKEN", TOKEN)],
        tmp.path(),
    );
    s.wait_ready(&http);
    let admin = |path: &str| format!("{}/v1/admin/{path}", s.base);
    let a = http.get(&admin("status"), None);
    assert_eq!(a.status, 401, "{}", a.text);
    assert_eq!(
        a.headers["www-authenticate"],
        "Bearer realm=\"tidings-admin\""
    );
    assert_eq!(http.get(&admin("status"), Some("wrong")).status, 401);
    assert_eq!(
        http.post(&admin("features/query.sse/down"), Some("wrong"), None)
            .status,
        401
    );
    let st = status(&http, &s);
    assert_eq!(
        (st["role"].clone(), st["consumers"].clone()),
        (json!("serve"), Value::Null)
    );
    let applies: BTreeMap<String, bool> = st["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap().to_owned(),
                f["applies_here"] == true,
            )
        })
        .collect();
    assert_eq!(applies.len(), 6);
    assert!(applies["query.sse"] && applies["query.cache_only"] && !applies["fanout.like"]);

    // Unknown feature: 404 with the known ones; a consumers' feature here: 409; no consumers.
    let a = http.post(&admin("features/fanout.likes/down"), Some(TOKEN), None);
    assert_eq!(a.status, 404);
    assert_eq!(a.json()["known"].as_array().unwrap().len(), 6);
    assert!(a.json()["error"].as_str().unwrap().contains("fanout.like,"));
    assert_eq!(
        http.post(&admin("features/fanout.like/down"), Some(TOKEN), None)
            .status,
        409
    );
    assert_eq!(
        http.post(&admin("consumers/pause"), Some(TOKEN), None)
            .status,
        409
    );

    // query.sse: the stream is refused while down, served again when up.
    let stream = format!("{}/v1/feeds/2/home:stream", s.base);
    assert_eq!(http.head_of(&stream).0, 200);
    let a = http.post(&admin("features/query.sse/down"), Some(TOKEN), None);
    assert_eq!(
        a.json(),
        json!({"feature": "query.sse", "down": true, "changed": true,
               "effect": "home:stream (server-sent events) is refused with a 503"})
    );
    let refused = http.get(&stream, None);
    assert_eq!(refused.status, 503);
    assert_eq!(refused.headers["retry-after"], "10");
    assert!(refused.json()["error"]
        .as_str()
        .unwrap()
        .contains("query.sse"));
    assert_eq!(
        sample(
            &s.metrics(&http),
            "tidings_feature_down",
            r#"feature="query.sse""#
        ),
        Some(1.0)
    );
    assert_eq!(
        http.post(&admin("features/query.sse/up"), Some(TOKEN), None)
            .status,
        200
    );
    let (st, headers) = http.head_of(&stream);
    assert_eq!(
        (st, headers["content-type"].to_str().unwrap()),
        (200, "text/event-stream")
    );

    // query.cache_only: cached pages are served, a miss is a 503 with Retry-After.
    let page = |u: i64| format!("{}/v1/feeds/{u}/home", s.base);
    let cached = http.get(&page(2), None);
    assert_eq!(cached.status, 200);
    assert_eq!(cached.json()["entries"].as_array().unwrap().len(), 1);
    assert_eq!(
        http.post(&admin("features/query.cache_only/down"), Some(TOKEN), None)
            .status,
        200
    );
    assert_eq!(status(&http, &s)["down"], json!(["query.cache_only"]));
    let hit = http.get(&page(2), None);
    assert_eq!((hit.status, hit.text.clone()), (200, cached.text.clone()));
    let miss = http.get(&page(3), None);
    assert_eq!(miss.status, 503, "{}", miss.text);
    assert_eq!(miss.headers["retry-after"], "10");
    assert!(miss.json()["error"]
        .as_str()
        .unwrap()
        .contains("not in the cache"));
    assert_eq!(http.get(&format!("{}?limit=0", page(3)), None).status, 400);
    let m = s.metrics(&http);
    assert_eq!(
        sample(&m, "tidings_feature_down", r#"feature="query.cache_only""#),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            "tidings_query_shed_total",
            r#"feature="query.cache_only""#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, "tidings_feature_down", r#"feature="fanout.like""#),
        None
    );
    assert_eq!(
        http.post(&admin("features/query.cache_only/up"), Some(TOKEN), None)
            .status,
        200
    );
    assert_eq!(http.get(&page(3), None).status, 200);
    let log = s.stop();
    assert!(log.contains("admin: feature marked down"), "{log}");
}

#[test]
fn fanout_of_likes_marked_down_stops_at_the_actor_and_resumes_when_marked_up() {
    let tmp = tempfile::tempdir().unwrap();
    let http = Http::default();
    let mut up = Role::start(
        "up",
        &[
            "up",
            "--data",
            tmp.path().join("data").to_str().unwrap(),
            "--partitions",
            "2",
            "--session-timeout-ms",
            "6000",
        ],
        &[("TIDINGS_ADMIN_TOKEN", TOKEN)],
        tmp.path(),
    );
    up.wait_ready(&http);
    let base = up.base.clone();
    let ids = |user: i64, feed: &str| -> Vec<String> {
        let page = http.get(
            &format!("{base}/v1/feeds/{user}/{feed}?aggregate=false"),
            None,
        );
        page.json()["entries"]
            .as_array()
            .map(|e| {
                e.iter()
                    .map(|i| i["id"].as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    for f in [2, 3] {
        let a = http.post(
            &format!("{base}/v1/follows"),
            None,
            Some(json!({"actor": f, "subject": 1})),
        );
        assert_eq!(a.status, 202);
    }
    let publish = |verb: &str, object: &str| -> String {
        let a = http.post(
            &format!("{base}/v1/activities"),
            None,
            Some(json!({"actor": 1, "verb": verb, "object": object, "to": [4]})),
        );
        assert_eq!(a.status, 202, "{}", a.text);
        a.json()["id"].as_str().unwrap().to_owned()
    };
    let first = publish("post", "post:1");
    wait_until(
        Duration::from_secs(60),
        "the post in both followers' feeds",
        || ids(2, "home").contains(&first) && ids(3, "home").contains(&first),
    );

    let a = http.post(
        &format!("{base}/v1/admin/features/fanout.like/down"),
        Some(TOKEN),
        None,
    );
    assert_eq!(a.status, 200, "{}", a.text);
    let like = publish("like", "post:9");
    let post = publish("post", "post:2");
    wait_until(
        Duration::from_secs(60),
        "the like and the post applied",
        || ids(1, "user").contains(&like) && ids(2, "home").contains(&post),
    );
    // Applied in one batch with its notification and the actor's feeds: not pushed.
    assert!(ids(1, "home").contains(&like));
    assert!(ids(4, "notifications").contains(&like));
    for f in [2, 3] {
        assert!(!ids(f, "home").contains(&like), "follower {f} got the like");
        assert!(ids(f, "home").contains(&post), "posts are still pushed");
    }

    assert_eq!(
        http.post(
            &format!("{base}/v1/admin/features/fanout.like/up"),
            Some(TOKEN),
            None
        )
        .status,
        200
    );
    let later = publish("like", "post:10");
    wait_until(
        Duration::from_secs(60),
        "the later like in both followers' feeds",
        || ids(2, "home").contains(&later) && ids(3, "home").contains(&later),
    );
    assert!(
        !ids(2, "home").contains(&like),
        "no backfill of the unpushed like"
    );
    let m = up.metrics(&http);
    assert_eq!(
        sample(&m, "tidings_fanout_unpushed_total", r#"verb="like""#),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            "tidings_events_total",
            r#"topic="tidings.activities",verb="like""#
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(&m, "tidings_feature_down", r#"feature="fanout.like""#),
        Some(0.0)
    );
    let log = up.stop();
    assert!(log.contains("fanout.like"), "{log}");
}
