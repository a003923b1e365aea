//! The live pipeline against a real broker process (tansu): producer library and HTTP
//! gateway → Kafka → exactly-once consumers → RocksDB → feeds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use tidings_consumers::apply::Applier;
use tidings_consumers::kafka::{self, Assignment, ConsumerConfig};
use tidings_consumers::project::Projector;
use tidings_core::event::{Activity, Event, Producer as Who};
use tidings_core::keys::feed::FeedKind;
use tidings_core::EventId;

fn post(actor: i64, n: i64, to: Vec<i64>) -> Event {
    Event::Activity(Activity {
        id: EventId::MIN,
        actor,
        verb: "post".into(),
        object: format!("post:{actor}-{n}"),
        target: None,
        time_ms: 1_767_225_600_000 + n,
        to,
        text: format!("post {n} by {actor}"),
        attributes: BTreeMap::new(),
        producer: Who::new("test", "1"),
    })
}

#[test]
fn library_and_http_events_reach_followers_and_retractions_leave() {
    let tmp = tempfile::tempdir().unwrap();
    let b = broker(tmp.path());
    let store = store(&tmp.path().join("store"));
    let rt = rt();

    // Group assignment, as `tidings up` runs it.
    let mut cfg = ConsumerConfig::new(b.kafka());
    cfg.session_timeout = Duration::from_secs(6);
    let consumer = kafka::spawn(
        cfg,
        Applier::new(store.clone(), Projector::new(1), "fanout"),
    )
    .unwrap();

    let p = producer(&b.kafka());
    rt.block_on(async {
        for f in [2, 3, 5] {
            p.publish(follow(f, 1)).await.unwrap();
        }
    });
    // Through the library: a post by 1, mentioning 4.
    let lib = rt.block_on(p.publish(post(1, 1, vec![4]))).unwrap();
    assert_eq!(
        lib.partition,
        tidings_producers::partition::partition_for_user(1, PARTITIONS)
    );

    // Through HTTP: a post by 1, and one with an invalid field.
    let app = tidings_producers::gateway::router(p.clone());
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move { axum::serve(listener, app).await });
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    let (status, body): (u16, Value) = rt.block_on(async {
        let r = http
            .post(format!("{base}/v1/activities"))
            .json(&json!({"actor": 1, "verb": "post", "object": "post:http", "text": "hello from HTTP", "to": [6]}))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    });
    assert_eq!(status, 202, "{body}");
    let http_id: EventId = EventId(body["id"].as_str().unwrap().parse().unwrap());
    assert!(body["offset"].as_i64().unwrap() >= 0);

    wait_until(
        Duration::from_secs(60),
        "both posts in every follower's home feed",
        || {
            [2, 3, 5].iter().all(|f| {
                let ids = feed_ids(&*store, *f, FeedKind::Home);
                ids.contains(&lib.id) && ids.contains(&http_id)
            })
        },
    );
    assert_eq!(feed_ids(&*store, 4, FeedKind::Notifications), vec![lib.id]);
    assert_eq!(feed_ids(&*store, 6, FeedKind::Notifications), vec![http_id]);

    // Retract both (library post over HTTP too): gone from every feed.
    rt.block_on(async {
        for id in [lib.id, http_id] {
            let r = http
                .delete(format!("{base}/v1/activities/{}?actor=1", id.0))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 202);
        }
    });
    wait_until(
        Duration::from_secs(30),
        "retracted posts gone from every feed",
        || {
            [2, 3, 5]
                .iter()
                .all(|f| feed_ids(&*store, *f, FeedKind::Home).is_empty())
                && feed_ids(&*store, 4, FeedKind::Notifications).is_empty()
                && feed_ids(&*store, 6, FeedKind::Notifications).is_empty()
                && feed_ids(&*store, 1, FeedKind::User).is_empty()
        },
    );
    let stats = consumer.stats();
    consumer.stop().unwrap();
    assert_eq!(stats.dead.load(std::sync::atomic::Ordering::Relaxed), 0);
}

/// Every record of the dead letter topic: (reason-code header, source-offset header, reason).
fn dead_letters(
    kafka: &tidings_producers::KafkaConfig,
    want: usize,
) -> Vec<(String, String, String)> {
    use rdkafka::message::{Headers, Message};
    read_from_start(kafka, &["tidings.dlq"], want)
        .iter()
        .map(|m| {
            let h = m.headers().expect("dead letters carry headers");
            let get = |k: &str| {
                h.iter()
                    .find(|x| x.key == k)
                    .and_then(|x| x.value)
                    .map(|v| String::from_utf8_lossy(v).to_string())
                    .unwrap_or_default()
            };
            assert_eq!(get("source-topic"), "tidings.activities");
            assert!(!get("source-partition").is_empty());
            (get("reason-code"), get("source-offset"), get("reason"))
        })
        .collect()
}

#[test]
fn bad_records_go_to_the_dead_letter_topic_and_the_pipeline_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let b = broker(tmp.path());
    let store = store(&tmp.path().join("store"));
    let rt = rt();
    let p = producer(&b.kafka());
    let mut cfg = ConsumerConfig::new(b.kafka());
    cfg.assignment = Assignment::Static { instance: 0, of: 1 };
    let consumer = kafka::spawn(
        cfg,
        Applier::new(store.clone(), Projector::new(1), "fanout"),
    )
    .unwrap();

    let good = tidings_schemas::encode(&{
        let mut e = post(9, 1, vec![]);
        if let Event::Activity(a) = &mut e {
            a.id = tidings_producers::ids::new_event_id(&tidings_core::clock::SystemClock);
        }
        e
    });
    let mut unknown_fp = good.clone();
    unknown_fp[2..10].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3]);
    let invalid = |f: &dyn Fn(&mut Activity)| {
        let mut e = post(9, 2, vec![]);
        if let Event::Activity(a) = &mut e {
            a.id = tidings_producers::ids::new_event_id(&tidings_core::clock::SystemClock);
            f(a);
        }
        tidings_schemas::encode(&e)
    };
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"\x00\x01not avro at all".to_vec()),
        ("truncated", good[..good.len() - 7].to_vec()),
        ("unknown fingerprint", unknown_fp),
        ("negative user", invalid(&|a| a.actor = -5)),
        ("empty verb", invalid(&|a| a.verb.clear())),
        ("oversized text", invalid(&|a| a.text = "x".repeat(100_000))),
    ];
    rt.block_on(async {
        for (_, bytes) in &bad {
            p.publish_raw("tidings.activities", b"9", bytes, &[])
                .await
                .unwrap();
        }
        p.publish(follow(10, 9)).await.unwrap();
        p.publish(post(9, 3, vec![])).await.unwrap();
    });
    wait_until(
        Duration::from_secs(30),
        "the valid post after the bad records",
        || feed_ids(&*store, 10, FeedKind::Home).len() == 1,
    );
    let letters = dead_letters(&b.kafka(), bad.len());
    let codes: Vec<&str> = letters.iter().map(|(c, _, _)| c.as_str()).collect();
    assert_eq!(
        letters.len(),
        bad.len(),
        "one dead letter per bad record: {letters:?}"
    );
    for want in ["not_single_object", "unknown_fingerprint", "invalid"] {
        assert!(codes.contains(&want), "reason code {want} among {codes:?}");
    }
    for (code, offset, reason) in &letters {
        assert!(
            !reason.is_empty() && offset.parse::<i64>().is_ok(),
            "{code}: {reason} at {offset}"
        );
    }
    let reasons: String = letters
        .iter()
        .map(|l| l.2.clone())
        .collect::<Vec<_>>()
        .join("\n");
    for field in ["actor", "verb", "text"] {
        assert!(
            reasons.contains(&format!("`{field}`")),
            "a reason names `{field}`:\n{reasons}"
        );
    }
    consumer.stop().unwrap();
}

#[test]
fn http_rejects_bad_input_with_400_and_an_unreachable_broker_with_503() {
    let rt = rt();
    // No broker at all on this port: every publish must fail, never answer 202.
    let dead = tidings_producers::broker::free_port().unwrap();
    let mut c = tidings_producers::ProducerConfig::new(format!("127.0.0.1:{dead}"));
    c.delivery_timeout = Duration::from_secs(2);
    let p = tidings_producers::Producer::new(c).unwrap();
    let app = tidings_producers::gateway::router(p);
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move { axum::serve(listener, app).await });
    let http = reqwest::Client::new();
    let send = |method: reqwest::Method, path: &str, body: Option<&str>| {
        let mut r = http.request(method, format!("http://{addr}{path}"));
        if let Some(b) = body {
            r = r
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        rt.block_on(async {
            let resp = r.send().await.unwrap();
            let status = resp.status().as_u16();
            let v: Value = resp.json().await.unwrap_or(Value::Null);
            (status, v)
        })
    };
    use reqwest::Method;
    let cases = [
        (
            Method::POST,
            "/v1/activities",
            Some("{not json"),
            "invalid JSON",
        ),
        (
            Method::POST,
            "/v1/activities",
            Some(r#"{"actor": "x", "verb": "post", "object": "o"}"#),
            "actor",
        ),
        (
            Method::POST,
            "/v1/activities",
            Some(r#"{"actor": -1, "verb": "post", "object": "o"}"#),
            "`actor`",
        ),
        (
            Method::POST,
            "/v1/activities",
            Some(r#"{"actor": 1, "verb": "", "object": "o"}"#),
            "`verb`",
        ),
        (
            Method::POST,
            "/v1/activities",
            Some(r#"{"actor": 1, "verb": "post", "object": "o", "colour": 1}"#),
            "colour",
        ),
        (
            Method::POST,
            "/v1/activities:batch",
            Some(r#"{"activities": []}"#),
            "activities",
        ),
        (
            Method::DELETE,
            "/v1/activities/not-a-uuid?actor=1",
            None,
            "UUID",
        ),
        (
            Method::DELETE,
            "/v1/activities/0192f3c4-5b6a-7c8d-9e0f-112233445566",
            None,
            "actor",
        ),
        (
            Method::POST,
            "/v1/follows",
            Some(r#"{"actor": 1, "subject": 1}"#),
            "themselves",
        ),
        (Method::DELETE, "/v1/follows/x/2", None, "user ids"),
    ];
    for (m, path, body, says) in cases {
        let (status, v) = send(m.clone(), path, body);
        assert_eq!(status, 400, "{m} {path} {body:?} → {v}");
        let msg = v["error"].as_str().unwrap_or_default();
        assert!(
            msg.contains(says),
            "{m} {path}: message {msg:?} should mention {says:?}"
        );
    }
    let (status, v) = send(
        Method::POST,
        "/v1/activities",
        Some(r#"{"actor": 1, "verb": "post", "object": "o"}"#),
    );
    assert_eq!(status, 503, "unreachable broker → 503, got {v}");
    assert!(
        v["error"].as_str().unwrap().contains("not acknowledged"),
        "{v}"
    );
}

#[test]
fn tidings_up_serves_ingest_and_feeds_and_stops_cleanly_on_ctrl_c() {
    use std::process::{Command, Stdio};
    let tmp = tempfile::tempdir().unwrap();
    let port = tidings_producers::broker::free_port().unwrap();
    let mut up = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_tidings"))
            .args(["up", "--partitions", "2", "--session-timeout-ms", "6000"])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--data")
            .arg(tmp.path())
            // The embedded store allows one process: `up` takes the backups itself.
            .arg("--backup-dir")
            .arg(tmp.path().join("backups"))
            .args([
                "--backup-full-every-s",
                "3",
                "--backup-incremental-every-s",
                "1",
            ])
            .env("TIDINGS_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let rt = rt();
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    wait_until(
        Duration::from_secs(60),
        "tidings up answers /health",
        || {
            rt.block_on(http.get(format!("{base}/health")).send())
                .is_ok_and(|r| r.status() == 200)
        },
    );
    let post = |path: &str, body: Value| {
        rt.block_on(async {
            let r = http
                .post(format!("{base}{path}"))
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        })
    };
    assert_eq!(
        post("/v1/follows", json!({"actor": 2, "subject": 1})).0,
        202
    );
    let (status, body) = post(
        "/v1/activities:batch",
        json!({"activities": [
            {"actor": 1, "verb": "post", "object": "post:a", "text": "one"},
            {"actor": 1, "verb": "post", "object": "post:b", "text": "two"}
        ]}),
    );
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["deliveries"].as_array().unwrap().len(), 2);
    wait_until(
        Duration::from_secs(60),
        "both posts in user 2's home feed over HTTP",
        || {
            let page: Value = rt
                .block_on(async {
                    http.get(format!("{base}/v1/feeds/2/home?aggregate=false"))
                        .send()
                        .await?
                        .json()
                        .await
                })
                .unwrap_or(Value::Null);
            page["entries"].as_array().is_some_and(|e| e.len() == 2)
        },
    );
    let bad = rt
        .block_on(
            http.get(format!("{base}/v1/feeds/2/home?limit=1000"))
                .send(),
        )
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    let metrics = rt
        .block_on(async {
            http.get(format!("{base}/metrics"))
                .send()
                .await?
                .text()
                .await
        })
        .unwrap();
    assert!(
        metrics.contains("tidings_events_applied_total"),
        "{metrics}"
    );

    // Scheduled backups of the running store: a full one, then incrementals after it.
    wait_until(
        Duration::from_secs(60),
        "a full and an incremental backup by `up`",
        || {
            let l = tidings_consumers::backup::list(&tmp.path().join("backups")).unwrap();
            l.iter()
                .any(|m| m.kind == tidings_consumers::backup::Kind::Full && m.records > 0)
                && l.iter().any(|m| m.parent.is_some())
        },
    );

    // Ctrl-C: drain and exit 0.
    let ok = Command::new("kill")
        .args(["-INT", &up.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = up.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "tidings up did not stop on Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut log = String::new();
    std::io::Read::read_to_string(&mut up.stderr.take().unwrap(), &mut log).unwrap();
    assert!(status.success(), "exit status {status}; log:\n{log}");
    assert!(log.contains("stopped cleanly"), "{log}");
}
