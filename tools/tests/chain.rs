//! The processor chain end to end, against a real broker process (tansu) and RocksDB on disk:
//! side outputs land in their topics, dropped events are absent, a re-published duplicate is
//! dropped, a flooding actor is held to its limit, a rebuild with the same chain gives the live
//! digest; hot reload (file edit and `POST /v1/admin/pipeline`) mid-stream loses and doubles
//! nothing and an invalid config leaves the old chain running; `tidings pipeline test`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::message::{Headers, Message};
use tidings_consumers::apply::Applier;
use tidings_consumers::chain::ChainHandle;
use tidings_consumers::digest::digest;
use tidings_consumers::kafka::{self, Assignment, ConsumerConfig};
use tidings_consumers::project::Projector;
use tidings_consumers::rebuild::{self, RebuildConfig};
use tidings_core::event::{Activity, Event, GraphChange, GraphOp, Producer as Who};
use tidings_core::keys::feed::FeedKind;
use tidings_core::process::{Chain, PipelineConfig};
use tidings_core::{EventId, UserId};
use tidings_producers::KafkaConfig;
use tidings_store::{RangeOptions, Store};

const T0: i64 = 1_793_491_200_000; // 2026-11-01T00:00Z
const GROUP: &str = "tidings-fanout";

fn id(n: u64) -> EventId {
    EventId(uuid::Uuid::from_u64_pair(0x0190_0000_0000_7000, n))
}

fn post(n: u64, actor: UserId, text: &str, to: Vec<UserId>) -> Activity {
    Activity {
        id: id(n),
        actor,
        verb: "post".into(),
        object: format!("post:{n}"),
        target: None,
        time_ms: T0 + n as i64,
        to,
        text: text.into(),
        attributes: BTreeMap::new(),
        producer: Who::new("test", "1"),
    }
}

fn follow(n: u64, actor: UserId, subject: UserId) -> Event {
    Event::Graph(GraphChange {
        id: id(n),
        actor,
        subject,
        op: GraphOp::Follow,
        time_ms: T0 + n as i64,
        producer: Who::new("test", "1"),
    })
}

fn chain_of(text: &str) -> ChainHandle {
    #[derive(serde::Deserialize)]
    struct File {
        pipeline: PipelineConfig,
    }
    let f: File = toml::from_str(text).unwrap();
    ChainHandle::new(Arc::new(Chain::build(&f.pipeline).unwrap()))
}

fn create_topics(kafka: &KafkaConfig, names: &[&str]) {
    rt().block_on(tidings_producers::topics::create_named(
        kafka, names, PARTITIONS,
    ))
    .unwrap();
}

/// Every record of `topics` from the start, once none arrived for `settle`.
fn read_topics(
    kafka: &KafkaConfig,
    topics: &[&str],
    settle: Duration,
) -> Vec<rdkafka::message::OwnedMessage> {
    read_from_start_until(kafka, topics, |_, idle| idle >= settle)
}

fn header(m: &rdkafka::message::OwnedMessage, name: &str) -> String {
    let h = m.headers().expect("headers");
    h.iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_else(|| panic!("no header {name}"))
}

/// The entries of a feed's index (projection `p`), unfiltered.
fn index_of(store: &dyn Store, p: i64, user: UserId, kind: FeedKind) -> HashSet<EventId> {
    let sub = tidings_core::keys::feed::feed(p, user, kind);
    let (b, e) = sub.range();
    store
        .snapshot()
        .unwrap()
        .range(&b, &e, RangeOptions::default())
        .unwrap()
        .iter()
        .map(|(k, _)| tidings_core::keys::feed::parse_key(&sub, k).unwrap().id)
        .collect()
}

const CHAIN: &str = r#"
[[pipeline.processor]]
id = "dedupe"
kind = "dedupe"
window_ms = 3600000
emit = { topic = "tidings.audit", format = "json" }

[[pipeline.processor]]
id = "flood"
kind = "rate_limit"
max_events = 4
per_ms = 60000
verbs = ["post"]
excess_topic = "tidings.deferred"

[[pipeline.processor]]
id = "ads"
kind = "rule"
when = 'text.contains("buy now")'
then = "drop"
reason = "ad"

[[pipeline.processor]]
id = "mentions"
kind = "mentions"

[[pipeline.processor]]
id = "likes"
kind = "route"
verbs = ["like"]
targets = ["notifications"]
"#;

#[test]
fn side_outputs_land_drops_are_absent_floods_are_held_and_a_rebuild_matches() {
    let tmp = tempfile::tempdir().unwrap();
    let b = broker(tmp.path());
    let kafka = b.kafka();
    create_topics(&kafka, &["tidings.audit", "tidings.deferred"]);
    let store = store(&tmp.path().join("store"));
    let mut cfg = ConsumerConfig::new(kafka.clone());
    cfg.assignment = Assignment::Static { instance: 0, of: 1 };
    cfg.group = GROUP.into();
    let live = Applier::new(store.clone(), Projector::new(1), GROUP).with_chain(chain_of(CHAIN));
    let consumer = kafka::spawn(cfg, live).unwrap();
    let stats = consumer.stats();
    let p = producer(&kafka);

    let graph = vec![
        follow(1, 2, 1),
        follow(2, 3, 1),
        follow(3, 4, 1),
        follow(4, 5, 7),
    ];
    publish_all(&p, &graph);
    wait_until(Duration::from_secs(60), "follows applied", || {
        stats.finished() == graph.len() as u64
    });

    let hello = Event::Activity(post(10, 1, "hello @9", vec![]));
    let mut like = post(12, 1, "", vec![5]);
    like.verb = "like".into();
    let mut acts = vec![
        hello.clone(),
        Event::Activity(post(11, 1, "buy now!", vec![])),
        hello.clone(), // re-published: a duplicate
        Event::Activity(like),
    ];
    // User 7 floods: ten posts within a second of log time.
    acts.extend((20..30).map(|n| Event::Activity(post(n, 7, "flood", vec![]))));
    // One at a time, so the duplicate comes after the original.
    for e in &acts {
        publish_all(&p, std::slice::from_ref(e));
    }
    let total = (graph.len() + acts.len()) as u64;
    wait_until(Duration::from_secs(60), "every record finished", || {
        stats.finished() == total
    });

    // Projected: the post (with its mention) and the like (to the owner only).
    for u in [1, 2, 3, 4] {
        assert_eq!(
            index_of(&*store, 1, u, FeedKind::Home),
            [id(10)].into(),
            "home of {u}"
        );
    }
    assert_eq!(
        index_of(&*store, 1, 9, FeedKind::Notifications),
        [id(10)].into()
    );
    assert_eq!(
        index_of(&*store, 1, 5, FeedKind::Notifications),
        [id(12)].into()
    );
    assert_eq!(index_of(&*store, 1, 1, FeedKind::User), [id(10)].into());
    // The flood: exactly the limit.
    assert_eq!(
        index_of(&*store, 1, 7, FeedKind::User),
        (20..24).map(id).collect(),
    );
    assert_eq!(
        index_of(&*store, 1, 5, FeedKind::Home),
        (20..24).map(id).collect()
    );
    assert_eq!(stats.dropped.load(Ordering::Relaxed), 1 + 1 + 6);
    assert_eq!(stats.dead.load(Ordering::Relaxed), 0);

    // The side topics: the duplicate (JSON), the deferred flood (the records themselves).
    let settle = Duration::from_secs(3);
    let audit = read_topics(&kafka, &["tidings.audit"], settle);
    assert_eq!(audit.len(), 1);
    assert_eq!(header(&audit[0], "tidings-event-id"), id(10).to_string());
    assert_eq!(header(&audit[0], "tidings-processor"), "dedupe");
    let doc: serde_json::Value = serde_json::from_slice(audit[0].payload().unwrap()).unwrap();
    assert_eq!(doc["event"]["id"], id(10).to_string());
    assert_eq!(doc["processor"], "dedupe");
    let deferred = read_topics(&kafka, &["tidings.deferred"], settle);
    let mut deferred_ids: Vec<EventId> = deferred
        .iter()
        .map(|m| tidings_schemas::decode(m.payload().unwrap()).unwrap().id())
        .collect();
    deferred_ids.sort();
    assert_eq!(deferred_ids, (24..30).map(id).collect::<Vec<_>>());
    assert!(deferred.iter().all(|m| m.key() == Some(&b"7"[..])));

    // A rebuild with the same chain: the same state, processor state included; nothing re-sent.
    let mut rc = RebuildConfig::new(kafka.clone(), Projector::new(2));
    rc.consumer = GROUP.into();
    rc.chain = chain_of(CHAIN);
    let r = rebuild::run(
        &rc,
        store.clone(),
        &AtomicBool::new(false),
        &mut |_, _, _| {},
    )
    .unwrap();
    assert!(r.caught_up);
    let (live_d, rebuilt) = (digest(&*store, 1).unwrap(), digest(&*store, 2).unwrap());
    assert!(live_d.keyspace("prc").is_some_and(|k| k.keys > 0));
    assert_eq!(live_d.keyspace("prc"), rebuilt.keyspace("prc"));
    assert_eq!(live_d.state, rebuilt.state);
    assert_eq!(
        read_topics(&kafka, &["tidings.audit", "tidings.deferred"], settle).len(),
        7
    );
    consumer.stop().unwrap();
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn emit_to(topic: &str) -> String {
    format!(
        "[[pipeline.processor]]\nid = \"e\"\nkind = \"rule\"\nwhen = 'verb == \"post\"'\nemit = {{ topic = \"{topic}\" }}\n"
    )
}

fn posts(from: u64, n: u64) -> Vec<Event> {
    (from..from + n)
        .map(|i| Event::Activity(post(i, 1 + (i % 5) as i64, "x", vec![])))
        .collect()
}

#[test]
fn hot_reload_mid_stream_loses_and_doubles_nothing_and_a_bad_file_keeps_the_old_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let b = broker(tmp.path());
    let kafka = b.kafka();
    create_topics(&kafka, &["side-a", "side-b", "side-c"]);
    let config = tmp.path().join("tidings.toml");
    std::fs::write(&config, emit_to("side-a")).unwrap();
    let port = tidings_producers::broker::free_port().unwrap();
    let log_path = tmp.path().join("up.log");
    let mut up = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_tidings"))
            .args([
                "up",
                "--brokers",
                &b.bootstrap(),
                "--partitions",
                &PARTITIONS.to_string(),
            ])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args([
                "--instance",
                "0/1",
                "--reread-from-start",
                "--config-poll-ms",
                "50",
            ])
            .args(["--admin-token", "t0ken"])
            .arg("--config")
            .arg(&config)
            .arg("--data")
            .arg(tmp.path().join("data"))
            .env("TIDINGS_LOG", "warn")
            .stderr(std::fs::File::create(&log_path).unwrap())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let rt = rt();
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let metrics = || {
        rt.block_on(async {
            http.get(format!("{base}/metrics"))
                .send()
                .await?
                .text()
                .await
        })
        .unwrap_or_default()
    };
    wait_until(
        Duration::from_secs(60),
        "tidings up answers /health",
        || {
            rt.block_on(http.get(format!("{base}/health")).send())
                .is_ok_and(|r| r.status() == 200)
        },
    );
    let applied = |n: u64| {
        wait_until(
            Duration::from_secs(90),
            &format!("{n} events applied"),
            || metric(&metrics(), "tidings_events_applied_total") as u64 == n,
        )
    };
    let p = producer(&kafka);

    // Chain A, then a broken file: refused, A runs on.
    let part1 = posts(0, 100);
    publish_all(&p, &part1);
    applied(100);
    std::fs::write(
        &config,
        "[[pipeline.processor]]\nid = \"e\"\nkind = \"rule\"\nwhen = 'verb =='\n",
    )
    .unwrap();
    wait_until(Duration::from_secs(30), "the bad file refused", || {
        metric(&metrics(), "tidings_pipeline_reload_failures_total") == 1.0
    });
    let part2 = posts(100, 100);
    publish_all(&p, &part2);
    applied(200);
    assert_eq!(metric(&metrics(), "tidings_pipeline_chain_version"), 1.0);

    // Chain B by editing the file while a stream is being applied (published in chunks, the
    // edit once part of it is in).
    let paced = |events: Vec<Event>| {
        let p = p.clone();
        std::thread::spawn(move || {
            for chunk in events.chunks(10) {
                publish_all(&p, chunk);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let part3 = posts(200, 200);
    let publisher = paced(part3.clone());
    wait_until(Duration::from_secs(60), "part 3 under way", || {
        metric(&metrics(), "tidings_events_applied_total") >= 250.0
    });
    std::fs::write(&config, emit_to("side-b")).unwrap();
    publisher.join().unwrap();
    wait_until(Duration::from_secs(30), "chain B in", || {
        metric(&metrics(), "tidings_pipeline_chain_version") == 2.0
    });

    // Chain C through the admin API, again mid-stream.
    let part4 = posts(400, 200);
    let publisher = paced(part4.clone());
    wait_until(Duration::from_secs(60), "part 4 under way", || {
        metric(&metrics(), "tidings_events_applied_total") >= 450.0
    });
    let (status, body) = rt.block_on(async {
        let r = http
            .post(format!("{base}/v1/admin/pipeline"))
            .header("authorization", "Bearer t0ken")
            .body(emit_to("side-c"))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    });
    assert_eq!(status, 200, "{body}");
    publisher.join().unwrap();
    let part5 = posts(600, 50);
    publish_all(&p, &part5);
    applied(650);

    // Every event decided by exactly one chain: each id in exactly one side topic, once.
    let settle = Duration::from_secs(3);
    let mut by_topic: HashMap<String, Vec<EventId>> = HashMap::new();
    for m in read_topics(&kafka, &["side-a", "side-b", "side-c"], settle) {
        let id: EventId = header(&m, "tidings-event-id").parse().unwrap();
        by_topic.entry(m.topic().to_string()).or_default().push(id);
    }
    let set =
        |t: &str| -> HashSet<EventId> { by_topic.get(t).into_iter().flatten().copied().collect() };
    let count: usize = by_topic.values().map(Vec::len).sum();
    assert_eq!(
        count,
        650,
        "side outputs: {:?}",
        by_topic
            .iter()
            .map(|(t, v)| (t, v.len()))
            .collect::<Vec<_>>()
    );
    let (a, bb, c) = (set("side-a"), set("side-b"), set("side-c"));
    eprintln!(
        "side outputs per chain: A {}, B {}, C {} (parts of 100, 100, 200, 200, 50)",
        a.len(),
        bb.len(),
        c.len()
    );
    assert_eq!(
        a.len() + bb.len() + c.len(),
        650,
        "no event in two topics, none twice"
    );
    let ids_of = |es: &[Event]| es.iter().map(Event::id).collect::<HashSet<_>>();
    assert!(ids_of(&part1).is_subset(&a) && ids_of(&part2).is_subset(&a));
    assert!(ids_of(&part3).is_subset(&a.union(&bb).copied().collect()));
    assert!(ids_of(&part4).is_subset(&bb.union(&c).copied().collect()));
    assert!(ids_of(&part5).is_subset(&c));
    let m = metrics();
    assert_eq!(
        metric(
            &m,
            "tidings_processor_decisions_total{outcome=\"next\",processor=\"e\"}"
        ) + metric(
            &m,
            "tidings_processor_decisions_total{processor=\"e\",outcome=\"next\"}"
        ),
        650.0,
        "{m}"
    );
    assert_eq!(metric(&m, "tidings_processor_side_outputs_total"), 650.0);
    assert_eq!(metric(&m, "tidings_pipeline_chain_version"), 3.0);

    // Stop, then every post is in its author's user feed exactly once.
    assert!(Command::new("kill")
        .args(["-INT", &up.id().to_string()])
        .status()
        .unwrap()
        .success());
    let started = Instant::now();
    while up.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "tidings up did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("NOT reloaded"), "{log}");
    assert!(log.contains("processor `e`: when:"), "{log}");
    let store = store(&tmp.path().join("data").join("store"));
    let total: usize = (1..=5)
        .map(|u| index_of(&*store, 1, u, FeedKind::User).len())
        .sum();
    assert_eq!(total, 650);
}

fn tidings_cmd(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(args)
        .current_dir(dir)
        .env("TIDINGS_LOG", "warn")
        .output()
        .unwrap()
}

#[test]
fn pipeline_test_dry_runs_recorded_events() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("c.toml"), CHAIN).unwrap();
    let mut lines: Vec<String> = Vec::new();
    let hello = Event::Activity(post(10, 1, "hello @9", vec![]));
    // As `tidings replay` prints records (processor state is per source partition, and an
    // actor's events, copies included, share one).
    lines.push(
        serde_json::json!({"topic": "tidings.activities", "partition": 2, "offset": 3,
            "timestamp_ms": T0 + 5, "time": "…", "key": "1", "event": hello})
        .to_string(),
    );
    lines.push(serde_json::to_string(&Event::Activity(post(11, 1, "buy now", vec![]))).unwrap());
    // The same event again (another offset).
    lines.push(
        serde_json::json!({"topic": "tidings.activities", "partition": 2, "offset": 7,
            "timestamp_ms": T0 + 10, "time": "…", "key": "1", "event": hello})
        .to_string(),
    );
    lines.push(String::new());
    let mut bad = post(13, 1, "x", vec![]);
    bad.actor = -1;
    lines.push(serde_json::to_string(&Event::Activity(bad)).unwrap());
    lines.extend(
        (20..26).map(|n| serde_json::to_string(&Event::Activity(post(n, 7, "f", vec![]))).unwrap()),
    );
    std::fs::write(tmp.path().join("e.jsonl"), lines.join("\n")).unwrap();

    let out = tidings_cmd(
        &[
            "pipeline", "test", "--config", "c.toml", "--events", "e.jsonl", "--json",
        ],
        tmp.path(),
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 10 + 1, "{stdout}");
    let outcome = |i: usize| rows[i]["verdict"]["outcome"].as_str().unwrap().to_string();
    assert_eq!(outcome(0), "project");
    assert_eq!(rows[0]["event"]["to"], serde_json::json!([9]));
    assert_eq!(rows[0]["changed"], true);
    assert_eq!(
        (outcome(1), rows[1]["verdict"]["reason"].as_str()),
        ("drop".into(), Some("ad"))
    );
    assert_eq!(
        (outcome(2), rows[2]["verdict"]["reason"].as_str()),
        ("drop".into(), Some("duplicate"))
    );
    assert_eq!(
        rows[2]["steps"][0]["emitted"],
        serde_json::json!(["tidings.audit"])
    );
    assert_eq!(
        rows[3]["line"], 5,
        "the empty line is skipped, numbers stay"
    );
    assert_eq!(
        (outcome(3), rows[3]["verdict"]["code"].as_str()),
        ("dead_letter".into(), Some("invalid"))
    );
    let flood: Vec<String> = (4..10).map(outcome).collect();
    assert_eq!(
        flood,
        ["project", "project", "project", "project", "drop", "drop"]
    );
    let summary = &rows[10]["summary"];
    assert_eq!(
        summary["verdicts"],
        serde_json::json!({"projected": 5, "dropped": 4, "dead_letter": 1})
    );
    let flood_row = summary["processors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["processor"] == "flood")
        .unwrap();
    assert_eq!(
        flood_row["outcomes"],
        serde_json::json!({"next": 6, "drop": 2})
    );
    assert_eq!(flood_row["side_outputs"], 2);

    // Text output; a line that is neither form is reported with its number, and fails.
    std::fs::write(
        tmp.path().join("bad.jsonl"),
        format!("{}\n{{\"type\": \"nope\"}}\nnot json\n", lines[0]),
    )
    .unwrap();
    let out = tidings_cmd(
        &[
            "pipeline",
            "test",
            "--config",
            "c.toml",
            "--events",
            "bad.jsonl",
        ],
        tmp.path(),
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(!out.status.success());
    assert!(stderr.contains("line 2: neither an event"), "{stderr}");
    assert!(stderr.contains("line 3: not JSON"), "{stderr}");
    assert!(
        stdout.contains("mentions") && stdout.contains("⇒ projected"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "events: 1 projected, 0 dropped, 0 stopped (term), 0 dead letters; 2 bad lines"
        ),
        "{stdout}"
    );

    // A config that does not validate names the processor.
    std::fs::write(
        tmp.path().join("bad.toml"),
        "[[pipeline.processor]]\nid = \"r\"\nkind = \"rule\"\nwhen = \"verb ==\"\n",
    )
    .unwrap();
    let out = tidings_cmd(
        &[
            "pipeline", "test", "--config", "bad.toml", "--events", "e.jsonl",
        ],
        tmp.path(),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("processor `r`: when:"));
}
