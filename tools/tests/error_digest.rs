//! The error digest: `tidings up --errors-webhook` delivers dead letters and logged errors,
//! counted by reason and producer, to a local HTTP receiver; `tidings errors` prints the same.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::roles::{sample, Http, Role};
use common::*;
use serde_json::Value;
use tidings_core::event::{Activity, Event, Producer as Who, Retraction};
use tidings_core::EventId;

const DEAD_LETTER_LOG: &str = "WARN tidings_consumers::apply: record sent to the dead letter topic";

fn activity(actor: i64, verb: &str) -> Activity {
    Activity {
        id: tidings_producers::ids::new_event_id(&tidings_core::clock::SystemClock),
        actor,
        verb: verb.into(),
        object: "post:1".into(),
        target: None,
        time_ms: model::BASE_MS,
        to: vec![],
        text: String::new(),
        attributes: BTreeMap::new(),
        producer: Who::new("test", "1"),
    }
}

/// Sums `section.field[key].count` over digests.
fn sum(digests: &[Value], section: &str, field: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for d in digests {
        for c in d[section][field].as_array().unwrap() {
            *out.entry(c["key"].as_str().unwrap().to_owned())
                .or_default() += c["count"].as_u64().unwrap();
        }
    }
    out
}

#[test]
fn the_digest_reaches_the_webhook_with_exact_counts_and_tidings_errors_agrees() {
    let tmp = tempfile::tempdir().unwrap();
    let http = Http::default();

    // The receiver: an axum server on 127.0.0.1:0 keeping what it is sent.
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(
                |axum::extract::State(got): axum::extract::State<Arc<Mutex<Vec<Value>>>>,
                 axum::Json(v): axum::Json<Value>| async move {
                    got.lock().unwrap().push(v);
                    "thanks"
                },
            ),
        )
        .with_state(got.clone());
    let listener = http
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    http.spawn(async move { axum::serve(listener, app).await });

    let broker_port = tidings_producers::broker::free_port().unwrap().to_string();
    let data = tmp.path().join("data");
    let mut up = Role::start(
        "up",
        &[
            "up",
            "--data",
            data.to_str().unwrap(),
            "--partitions",
            "2",
            "--session-timeout-ms",
            "6000",
            "--broker-port",
            &broker_port,
            "--errors-webhook",
            &hook,
            "--errors-every-s",
            "2",
        ],
        &[],
        tmp.path(),
    );
    up.wait_ready(&http);

    // Four dead letters: one undecodable, two invalid, one rejected.
    let kafka = tidings_producers::KafkaConfig::new(format!("127.0.0.1:{broker_port}"));
    let p = producer(&kafka);
    let mine = activity(1, "post");
    let mut bad_actor = activity(9, "post");
    bad_actor.actor = -5;
    let mut bad_verb = activity(9, "post");
    bad_verb.verb = "Not A Verb".into();
    http.block_on(async {
        p.publish_raw("tidings.activities", b"9", b"\x00\x01 not avro", &[])
            .await
            .unwrap();
        for a in [bad_actor, bad_verb] {
            let bytes = tidings_schemas::encode(&Event::Activity(a));
            p.publish_raw("tidings.activities", b"9", &bytes, &[])
                .await
                .unwrap();
        }
        p.publish(Event::Activity(mine.clone())).await.unwrap();
    });
    wait_until(Duration::from_secs(60), "user 1's post applied", || {
        let page = http
            .get(&format!("{}/v1/feeds/1/user", up.base), None)
            .json();
        page["entries"].as_array().is_some_and(|e| e.len() == 1)
    });
    // User 2 retracting user 1's post: rejected, from a known producer.
    http.block_on(p.publish(Event::Retraction(Retraction {
        id: EventId::MIN,
        activity_id: mine.id,
        actor: 2,
        time_ms: 1_767_225_600_001,
        producer: Who::new("test", "1"),
    })))
    .unwrap();

    let total = |got: &[Value]| -> u64 {
        got.iter()
            .map(|d| d["dead_letters"]["total"].as_u64().unwrap())
            .sum()
    };
    wait_until(Duration::from_secs(60), "4 dead letters delivered", || {
        total(&got.lock().unwrap()) >= 4
    });
    // Two more scheduled runs (empty digests are counted, not sent): nothing is sent twice.
    let runs = |up: &Role| {
        let m = up.metrics(&http);
        ["sent", "empty", "failed"]
            .iter()
            .filter_map(|o| {
                sample(
                    &m,
                    "tidings_error_digests_total",
                    &format!("outcome=\"{o}\""),
                )
            })
            .sum::<f64>()
    };
    let before = runs(&up);
    wait_until(Duration::from_secs(30), "two more digest runs", || {
        runs(&up) >= before + 2.0
    });
    assert_eq!(
        sample(
            &up.metrics(&http),
            "tidings_error_digests_total",
            r#"outcome="failed""#
        ),
        None,
        "no delivery failed"
    );
    let digests = got.lock().unwrap().clone();
    assert_eq!(total(&digests), 4, "{digests:#?}");
    assert_eq!(
        sum(&digests, "dead_letters", "by_reason"),
        BTreeMap::from([
            ("invalid".to_owned(), 2),
            ("not_single_object".to_owned(), 1),
            ("rejected".to_owned(), 1)
        ])
    );
    assert_eq!(
        sum(&digests, "dead_letters", "by_producer"),
        BTreeMap::from([("test@1".to_owned(), 3), ("unknown".to_owned(), 1)])
    );
    assert_eq!(sum(&digests, "logged", "by_message")[DEAD_LETTER_LOG], 4);
    for d in &digests {
        assert_eq!(d["kind"], "tidings.error_digest");
        assert!(
            d["dead_letters"]["total"].as_u64().unwrap() + d["logged"]["total"].as_u64().unwrap()
                > 0
        );
    }
    for pair in digests.windows(2) {
        assert!(
            pair[0]["to_ms"].as_i64() <= pair[1]["from_ms"].as_i64(),
            "periods overlap"
        );
    }

    // The CLI reads the same topic and error log.
    let errors = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tidings"))
            .args(["errors", "--brokers", &kafka.brokers, "--since", "1h"])
            .args(extra)
            .arg("--data")
            .arg(&data)
            .output()
            .unwrap()
    };
    let out = errors(&["--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d: Value = serde_json::from_slice(&out.stdout).unwrap();
    let one = [d.clone()];
    assert_eq!(d["dead_letters"]["total"], 4);
    assert_eq!(
        sum(&one, "dead_letters", "by_reason"),
        sum(&digests, "dead_letters", "by_reason")
    );
    assert_eq!(
        sum(&one, "dead_letters", "by_producer"),
        sum(&digests, "dead_letters", "by_producer")
    );
    assert_eq!(sum(&one, "logged", "by_message")[DEAD_LETTER_LOG], 4);
    let rejected = d["dead_letters"]["by_reason"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["key"] == "rejected")
        .unwrap()
        .clone();
    assert!(
        rejected["example"]
            .as_str()
            .unwrap()
            .contains("cannot retract"),
        "{rejected}"
    );
    let text = String::from_utf8(errors(&[]).stdout).unwrap();
    assert!(text.contains("dead letters: 4\n"), "{text}");
    up.stop();
}

#[test]
fn bad_durations_are_refused_with_the_expected_form() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["errors", "--brokers", "127.0.0.1:1", "--since", "yesterday"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--since") && err.contains("e.g. 90s, 15m, 24h, 7d"),
        "{err}"
    );
}
