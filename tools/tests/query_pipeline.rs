//! The query service over the real pipeline: tansu broker, producer library, exactly-once
//! consumers, RocksDB, and the HTTP API (pages, activities, notifications, SSE).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::model::{scenario, Model};
use common::{broker, producer, rt, store, wait_until};
use serde_json::{json, Value};
use std::io::{BufRead, Write};
use tidings_consumers::apply::Applier;
use tidings_consumers::kafka::{self, ConsumerConfig};
use tidings_consumers::project::Projector;
use tidings_core::event::{Activity, Event, Producer as Who};
use tidings_core::keys::feed::FeedKind;
use tidings_core::{EventId, UserId};
use tidings_query::http::QueryOptions;

const CELEB: UserId = 100;
const USERS: i64 = 10;

/// Walks every page of a feed over HTTP; returns the ids.
async fn walk(
    http: &reqwest::Client,
    base: &str,
    user: UserId,
    kind: &str,
    limit: usize,
) -> Vec<EventId> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{base}/v1/feeds/{user}/{kind}?aggregate=false&limit={limit}");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let r = http.get(url).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let page: Value = r.json().await.unwrap();
        for e in page["entries"].as_array().unwrap() {
            ids.push(EventId(e["id"].as_str().unwrap().parse().unwrap()));
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return ids,
        }
    }
}

#[test]
fn the_http_feeds_equal_the_feeds_expected_from_the_published_actions() {
    let tmp = tempfile::tempdir().unwrap();
    let b = broker(tmp.path());
    let store = store(&tmp.path().join("store"));
    let rt = rt();
    let mut projector = Projector::new(1);
    projector.fanout.hybrid_threshold = 4;
    let mut cfg = ConsumerConfig::new(b.kafka());
    cfg.session_timeout = Duration::from_secs(6);
    let consumer = kafka::spawn(cfg, Applier::new(store.clone(), projector, "fanout")).unwrap();

    let p = producer(&b.kafka());
    let app = tidings_producers::gateway::router(p.clone()).merge(tidings_query::http::router(
        store.clone(),
        QueryOptions::default(),
    ));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move { axum::serve(listener, app).await });
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();

    let events = scenario(3, USERS, CELEB);
    let mut model = Model::default();
    rt.block_on(async {
        for e in &events {
            p.publish(e.clone()).await.unwrap();
            model.apply(e);
        }
    });
    wait_until(Duration::from_secs(90), "every event applied", || {
        let s = consumer.stats();
        s.events.load(Ordering::Relaxed) + s.skipped.load(Ordering::Relaxed) >= events.len() as u64
    });
    rt.block_on(async {
        for user in (1..=USERS).chain([CELEB]) {
            for (kind, name) in [
                (FeedKind::Home, "home"),
                (FeedKind::User, "user"),
                (FeedKind::Notifications, "notifications"),
            ] {
                let want = model.feed(user, kind);
                for limit in [2, 100] {
                    let got = walk(&http, &base, user, name, limit).await;
                    assert_eq!(got, want, "user {user} {name} limit {limit}");
                }
            }
        }

        // Aggregation: likes of one post become one group naming its likers.
        let mut likes: HashMap<(UserId, String), Vec<UserId>> = HashMap::new();
        for id in model.feed(1, FeedKind::Notifications) {
            let a = &model.activities[&id];
            if a.verb == "like" {
                likes.entry((1, a.object.clone())).or_default().push(a.actor);
            }
        }
        let page: Value = http
            .get(format!("{base}/v1/feeds/1/notifications?limit=100"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for ((_, object), likers) in likes.iter().filter(|(_, l)| l.len() > 1) {
            let group = page["entries"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["type"] == "group" && e["object"] == object.as_str())
                .unwrap_or_else(|| panic!("no group for likes of {object}: {page}"));
            assert_eq!(group["count"], likers.len());
            assert!(group["summary"].as_str().unwrap().contains("liked"));
        }

        // One activity; a retracted one is 404; bad input is 4xx with a message.
        let shown = model.feed(CELEB, FeedKind::User)[0];
        let r = http.get(format!("{base}/v1/activities/{}", shown.0)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let a: Value = r.json().await.unwrap();
        assert_eq!(a["actor"], CELEB);
        let gone = *model.retracted.iter().next().unwrap();
        let r = http.get(format!("{base}/v1/activities/{}", gone.0)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 404);
        for (url, status) in [
            ("/v1/activities/not-a-uuid", 400),
            ("/v1/feeds/1/home?limit=0", 400),
            ("/v1/feeds/1/home?limit=101", 400),
            ("/v1/feeds/1/home?cursor=%%%", 400),
            ("/v1/feeds/1/home?cursor=AAAA", 400),
            ("/v1/feeds/1/home?limt=5", 400),
            ("/v1/feeds/-3/home", 400),
            ("/v1/feeds/x/home", 400),
            ("/v1/feeds/1/inbox", 404),
            ("/v1/feeds/1/notifications:counts?x=1", 400),
        ] {
            let r = http.get(format!("{base}{url}")).send().await.unwrap();
            assert_eq!(r.status().as_u16(), status, "{url}");
            let body: Value = r.json().await.unwrap();
            assert!(body["error"].as_str().is_some_and(|m| !m.is_empty()), "{url}: {body}");
        }
        let r = http
            .post(format!("{base}/v1/feeds/1/notifications:mark"))
            .json(&json!({"mark": "glanced"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400);

        // Notification counts, then mark everything read.
        let want = model.feed(1, FeedKind::Notifications).len() as u64;
        let c: Value = http
            .get(format!("{base}/v1/feeds/1/notifications:counts"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(c, json!({"unseen": want, "unread": want}));
        let c: Value = http
            .post(format!("{base}/v1/feeds/1/notifications:mark"))
            .json(&json!({"mark": "read"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(c, json!({"unseen": 0, "unread": 0}));

        // A connected home stream gets a followee's new post.
        let reader = 5;
        let followee = (1..=USERS)
            .find(|f| model.follows.contains(&(reader, *f)) && !model.mutes.contains(&(reader, *f)) && !model.blocks.contains(&(reader, *f)))
            .expect("reader 5 follows someone");
        let mut sse = std::net::TcpStream::connect(addr).unwrap();
        sse.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        sse.write_all(
            format!("GET /v1/feeds/{reader}/home:stream HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
        let mut lines = std::io::BufReader::new(sse).lines();
        let status = lines.next().unwrap().unwrap();
        assert!(status.contains("200"), "{status}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let new = Event::Activity(Activity {
            id: EventId::MIN,
            actor: followee,
            verb: "post".into(),
            object: "post:live".into(),
            target: None,
            time_ms: common::model::BASE_MS + 90_000_000,
            to: vec![],
            text: "live".into(),
            attributes: Default::default(),
            producer: Who::new("t", "1"),
        });
        let d = p.publish(new).await.unwrap();
        let want = d.id.0.to_string();
        let found = tokio::task::spawn_blocking(move || {
            lines.any(|l| l.is_ok_and(|l| l.starts_with("data:") && l.contains(&want)))
        })
        .await
        .unwrap();
        assert!(found, "the new post was pushed on the stream");
    });
    consumer.stop().unwrap();
}
