//! Exactly-once effects against a real broker: zombie fencing, SIGKILL crash safety, and a
//! producer in another language.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use tidings_consumers::apply::{Applier, DeadLetter, DeadLetterSink, Outcome, Positions, Record};
use tidings_consumers::chain::SideRecord;
use tidings_consumers::kafka::{self, Assignment, ConsumerConfig};
use tidings_consumers::project::Projector;
use tidings_core::event::{Activity, Event, GraphChange, GraphOp, Producer as Who, Retraction};
use tidings_core::keys::feed::FeedKind;
use tidings_core::{EventId, UserId};
use tidings_producers::{Delivery, KafkaConfig, Producer};

const T0: i64 = 1_767_225_600_000;

fn id(n: u64) -> EventId {
    EventId(uuid::Uuid::from_u64_pair(0x0190_0000_0000_7000, n))
}

fn follow(n: u64, actor: UserId, subject: UserId) -> Event {
    Event::Graph(GraphChange {
        id: id(n),
        actor,
        subject,
        op: GraphOp::Follow,
        time_ms: T0,
        producer: Who::new("test", "1"),
    })
}

fn activity(n: u64, actor: UserId, verb: &str, object: String, to: Vec<UserId>) -> Event {
    Event::Activity(Activity {
        id: id(n),
        actor,
        verb: verb.into(),
        object,
        target: None,
        time_ms: T0 + n as i64,
        to,
        text: format!("event {n}"),
        attributes: BTreeMap::new(),
        producer: Who::new("test", "1"),
    })
}

fn retract(n: u64, actor: UserId, of: u64) -> Event {
    Event::Retraction(Retraction {
        id: id(n),
        activity_id: id(of),
        actor,
        time_ms: T0 + n as i64,
        producer: Who::new("test", "1"),
    })
}

fn publish_all(p: &Producer, events: Vec<Event>) -> Vec<Delivery> {
    rt().block_on(futures::future::join_all(
        events.into_iter().map(|e| p.publish(e)),
    ))
    .into_iter()
    .map(|r| r.expect("acknowledged"))
    .collect()
}

/// Every record of the input topics from the beginning, in poll order.
fn read_all(kafka: &KafkaConfig, want: usize) -> Vec<Record> {
    let out: Vec<Record> = read_from_start(kafka, &["tidings.activities", "tidings.graph"], want)
        .iter()
        .map(kafka::to_record)
        .collect();
    assert_eq!(out.len(), want, "all records read back");
    out
}

struct NoDeadLetters;
impl DeadLetterSink for NoDeadLetters {
    fn send(&self, letters: &[DeadLetter]) -> Result<(), String> {
        panic!("unexpected dead letters: {letters:?}")
    }
    fn emit(&self, outputs: &[SideRecord]) -> Result<(), String> {
        panic!("unexpected side outputs: {outputs:?}")
    }
}

fn all_partitions() -> Positions {
    let mut p = HashMap::new();
    for t in ["tidings.activities", "tidings.graph"] {
        for i in 0..PARTITIONS {
            p.insert((t.to_string(), i), None);
        }
    }
    p
}

#[test]
fn a_zombie_cannot_commit_an_offset_range_another_consumer_committed() {
    let tmp = tempfile::tempdir().unwrap();
    let b = broker(tmp.path());
    let p = producer(&b.kafka());
    let mut events: Vec<Event> = (0..8).map(|f| follow(f, 100 + f as i64, 1)).collect();
    events.extend((10..40).map(|n| activity(n, 1, "post", format!("post:{n}"), vec![2])));
    let n = events.len();
    publish_all(&p, events);
    let records = read_all(&b.kafka(), n);

    let shared = store(&tmp.path().join("shared"));
    let a = Applier::new(shared.clone(), Projector::new(1), "fanout");
    let zombie = Applier::new(shared.clone(), Projector::new(1), "fanout");
    let mut pos_a = all_partitions();
    let mut pos_z = all_partitions(); // read before A committed: stale from here on

    let Outcome::Done(done) = a.apply(&mut pos_a, &records, &NoDeadLetters).unwrap() else {
        panic!("the owner must not be fenced")
    };
    assert_eq!(done.events as usize, n);
    let after_owner = dump(&*shared);

    match zombie.apply(&mut pos_z, &records, &NoDeadLetters).unwrap() {
        Outcome::Fenced { applied, stored } => {
            assert_eq!(applied.events, 0, "the zombie committed nothing");
            for (tp, off) in &stored {
                assert_eq!(
                    pos_a.get(tp),
                    Some(off),
                    "fenced with the owner's offset of {tp:?}"
                );
            }
        }
        Outcome::Done(d) => panic!("the zombie committed over the owner: {d:?}"),
    }
    assert_eq!(
        dump(&*shared),
        after_owner,
        "the zombie's attempt changed nothing"
    );
    // Re-seeked to the stored offsets, it finds nothing left to do.
    let Outcome::Done(again) = zombie.apply(&mut pos_z, &records, &NoDeadLetters).unwrap() else {
        panic!("not fenced after re-seeking")
    };
    assert_eq!((again.events, again.skipped as usize), (0, n));
    assert_eq!(dump(&*shared), after_owner);

    // And the result is exactly one application: compare with a store only A wrote.
    let reference = store(&tmp.path().join("reference"));
    let mut pos = all_partitions();
    Applier::new(reference.clone(), Projector::new(1), "fanout")
        .apply(&mut pos, &records, &NoDeadLetters)
        .unwrap();
    assert_eq!(dump(&*reference), after_owner);
}

fn tidings() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tidings"))
}

fn consume_cmd(bootstrap: &str, data: &Path) -> Command {
    let mut c = tidings();
    c.args([
        "consume",
        "--brokers",
        bootstrap,
        "--instance",
        "0/1",
        "--group",
        "crash",
    ])
    .args(["--fanout-step", "50", "--max-batch", "200"])
    .arg("--data")
    .arg(data)
    .env("TIDINGS_LOG", "warn");
    c
}

/// Whether the store's offsets reached `ends` (next offset per (topic, partition)).
fn caught_up(data: &Path, ends: &HashMap<(String, i32), i64>) -> bool {
    let s = store(&data.join("store"));
    let a = Applier::new(s, Projector::new(1), "crash");
    ends.iter()
        .all(|((t, p), end)| a.stored_offset(t, *p).unwrap().unwrap_or(0) >= *end)
}

/// Runs `tidings consume` until the store holds every record up to `ends`.
fn run_to_end(bootstrap: &str, data: &Path, ends: &HashMap<(String, i32), i64>) {
    for run in 0..6 {
        eprintln!("run {run} of the consumer on {}", data.display());
        let out = consume_cmd(bootstrap, data)
            .args(["--exit-when-idle-ms", "1500"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "consume failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if caught_up(data, ends) {
            return;
        }
    }
    panic!("the consumer did not catch up with {ends:?}");
}

fn stored_offsets(
    data: &Path,
    ends: &HashMap<(String, i32), i64>,
) -> Vec<((String, i32), Option<i64>)> {
    let s = store(&data.join("store"));
    let a = Applier::new(s, Projector::new(1), "crash");
    ends.keys()
        .map(|(t, p)| ((t.clone(), *p), a.stored_offset(t, *p).unwrap()))
        .collect()
}

fn ends_of(deliveries: &[Delivery]) -> HashMap<(String, i32), i64> {
    let mut ends = HashMap::new();
    for d in deliveries {
        let e = ends.entry((d.topic.clone(), d.partition)).or_insert(0);
        *e = (*e).max(d.offset + 1);
    }
    ends
}

fn fanout_in_progress(data: &Path) -> bool {
    let s = store(&data.join("store"));
    let (b, e) = tidings_core::keys::keyspace_range(1, "fan");
    let rows = s
        .snapshot()
        .unwrap()
        .range(&b, &e, tidings_store::RangeOptions::forward(1))
        .unwrap();
    !rows.is_empty()
}

#[test]
fn sigkill_in_the_middle_of_a_stream_loses_nothing_and_doubles_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let b = broker_on(
        tidings_producers::broker::BrokerStorage::Sqlite(tmp.path().join("broker")),
        tmp.path(),
    );
    let p = producer(&b.kafka());
    let (clean, crashed) = (tmp.path().join("clean"), tmp.path().join("crashed"));

    // Phase 1, the graph: user 1 has 400 followers, users 2..=40 a few each.
    let mut graph = Vec::new();
    let mut n = 0;
    for f in 1000..1400 {
        n += 1;
        graph.push(follow(n, f, 1));
    }
    for u in 2..=40 {
        for f in 0..5 {
            n += 1;
            graph.push(follow(n, 2000 + u * 10 + f, u));
        }
    }
    let mut ends = ends_of(&publish_all(&p, graph));
    run_to_end(&b.bootstrap(), &clean, &ends);
    run_to_end(&b.bootstrap(), &crashed, &ends);

    // Phase 2, activities: 30 posts by user 1 (400 entries each = 8 batches of 50), posts and
    // likes by others with mentions, and retractions of some of user 1's posts.
    let mut acts = Vec::new();
    for i in 0..30u64 {
        acts.push(activity(
            10_000 + i,
            1,
            "post",
            format!("post:1-{i}"),
            vec![],
        ));
    }
    for u in 2..=40i64 {
        for i in 0..10u64 {
            let k = 20_000 + u as u64 * 100 + i;
            acts.push(activity(
                k,
                u,
                "post",
                format!("post:{u}-{i}"),
                vec![u % 7 + 1],
            ));
            acts.push(activity(k + 50, u, "like", "post:1-3".into(), vec![1]));
        }
    }
    for i in [2u64, 11, 25] {
        acts.push(retract(30_000 + i, 1, 10_000 + i));
    }
    let total = acts.len();
    ends.extend(ends_of(&publish_all(&p, acts)));
    run_to_end(&b.bootstrap(), &clean, &ends);

    // The same stream, killed with SIGKILL over and over, then finished.
    let mut kills = 0;
    let mut mid_fanout = 0;
    for round in 0..12 {
        if caught_up(&crashed, &ends) {
            break;
        }
        let mut child = consume_cmd(&b.bootstrap(), &crashed)
            .args(["--progress-ms", "5"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut last_entries = 0;
        let mut rising = 0;
        let mut last_change = std::time::Instant::now();
        for line in lines {
            let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
            let entries = v["entries"].as_u64().unwrap();
            // Kill while index entries are being written in steps: a split fan-out.
            if entries > last_entries {
                rising += 1;
                last_change = std::time::Instant::now();
            }
            last_entries = entries;
            if rising > round % 3 {
                break;
            }
            // The rest of the stream may take fewer progress ticks than this round waits
            // for: a consumer with nothing left to write ends the round (checked below).
            if last_change.elapsed() > Duration::from_secs(5) {
                break;
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
        eprintln!("round {round}: killed after {last_entries} entries");
        assert!(
            rising > 0 || caught_up(&crashed, &ends),
            "round {round}: the restarted consumer wrote nothing although the stream was not done: stored {:?}, ends {ends:?}",
            stored_offsets(&crashed, &ends)
        );
        if fanout_in_progress(&crashed) {
            mid_fanout += 1;
        }
        if mid_fanout >= 2 && kills >= 4 {
            break;
        }
    }
    assert!(kills >= 3, "the consumer was killed {kills} times");
    assert!(
        mid_fanout >= 1,
        "at least one kill hit a fan-out split over batches ({kills} kills)"
    );
    run_to_end(&b.bootstrap(), &crashed, &ends);

    let (a, c) = (store(&clean.join("store")), store(&crashed.join("store")));
    let (da, dc) = (dump(&*a), dump(&*c));
    assert!(da.len() > total, "the clean run wrote the stream");
    assert_eq!(da.len(), dc.len(), "same number of keys");
    for (x, y) in da.iter().zip(&dc) {
        assert_eq!(x, y, "first differing key");
    }
    // Spot checks on top of byte equality: a retracted post is gone, a kept one is in all 400.
    let kept = id(10_004);
    assert!(feed_ids(&*c, 1000, FeedKind::Home).contains(&kept));
    assert!(!feed_ids(&*c, 1399, FeedKind::Home).contains(&id(10_011)));
}

#[test]
fn an_event_from_python_confluent_kafka_is_fanned_out_like_any_other() {
    let tmp = tempfile::tempdir().unwrap();
    let b = broker(tmp.path());
    let store = store(&tmp.path().join("store"));
    let p = producer(&b.kafka());
    publish_all(&p, vec![follow(1, 77, 42)]);
    let mut cfg = ConsumerConfig::new(b.kafka());
    cfg.assignment = Assignment::Static { instance: 0, of: 1 };
    let consumer = kafka::spawn(
        cfg,
        Applier::new(store.clone(), Projector::new(1), "fanout"),
    )
    .unwrap();

    // Cargo names this crate's directory to the running test (a cached binary may have been
    // built in another checkout).
    let dir =
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into());
    let schemas = format!("{dir}/../schemas");
    let script = format!("{dir}/tests/python_producer.py");
    let out = Command::new("python3")
        .args([
            &script,
            &schemas,
            &b.bootstrap(),
            "tidings.activities",
            "42",
            "post:from-python",
        ])
        .output()
        .expect("python3 (scripts/setup.sh installs confluent-kafka and fastavro)");
    assert!(
        out.status.success(),
        "python producer failed (run scripts/setup.sh for confluent-kafka + fastavro): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["partition"].as_i64().unwrap() as i32,
        tidings_producers::partition::partition_for_user(42, PARTITIONS),
        "Python's murmur2_random put user 42 where tidings' partitioner does"
    );
    let py_id = EventId(v["id"].as_str().unwrap().parse().unwrap());
    wait_until(
        Duration::from_secs(30),
        "the Python post in the follower's home feed",
        || feed_ids(&*store, 77, FeedKind::Home) == vec![py_id],
    );
    consumer.stop().unwrap();
}
