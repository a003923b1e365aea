//! Replay, rebuild, switch and migration against a real broker (tansu) and RocksDB on disk.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tidings_consumers::apply::Applier;
use tidings_consumers::digest::{digest, ProjectionDigest};
use tidings_consumers::kafka::{self, Assignment, ConsumerConfig};
use tidings_consumers::log::{LogReader, Next, PartitionRange};
use tidings_consumers::project::Projector;
use tidings_consumers::rebuild::{self, Filter, RebuildConfig, Until};
use tidings_consumers::versions;
use tidings_core::event::{Activity, Event, GraphChange, GraphOp, Producer as Who};
use tidings_core::keys::feed::FeedKind;
use tidings_core::keys::meta;
use tidings_core::{EventId, UserId};
use tidings_producers::{Delivery, KafkaConfig, Producer, Topics};
use tidings_store::{KeyGroups, ReadView, Store, WriteBatch};

const T0: i64 = 1_793_491_200_000; // 2026-11-01T00:00Z
const GROUP: &str = "tidings-fanout";
const THRESHOLD: u64 = 6;

fn id(n: u64) -> EventId {
    EventId(uuid::Uuid::from_u64_pair(0x0190_0000_0000_7000, n))
}

fn follow(n: u64, actor: UserId, subject: UserId, who: &Who) -> Event {
    Event::Graph(GraphChange {
        id: id(n),
        actor,
        subject,
        op: GraphOp::Follow,
        time_ms: T0 + n as i64 * 1000,
        producer: who.clone(),
    })
}

fn act(n: u64, actor: UserId, verb: &str, object: &str, to: Vec<UserId>, who: &Who) -> Event {
    Event::Activity(Activity {
        id: id(n),
        actor,
        verb: verb.into(),
        object: object.into(),
        target: None,
        time_ms: T0 + n as i64 * 1000,
        to,
        text: format!("event {n}"),
        attributes: BTreeMap::new(),
        producer: who.clone(),
    })
}

fn producer_with(kafka: &KafkaConfig, topics: Topics) -> Producer {
    let mut c = tidings_producers::ProducerConfig::new(kafka.brokers.clone());
    c.topics = topics;
    Producer::new(c).unwrap()
}

fn tidings() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tidings"));
    c.env("TIDINGS_LOG", "warn");
    c
}

fn projector(p: i64) -> Projector {
    let mut pr = Projector::new(p);
    pr.fanout.hybrid_threshold = THRESHOLD;
    pr.fanout.max_entries_per_step = 4;
    pr
}

/// A workload over `users` users: follows (user 1 becomes a pulled author), then posts with
/// mentions and likes, by two producers; `bad` marks which events come from `bad@1.4.2`.
fn workload(users: i64, base: u64) -> (Vec<Event>, Vec<Event>, Vec<bool>) {
    let good = Who::new("good", "1.0.0");
    let bad = Who::new("bad", "1.4.2");
    let mut n = base;
    let mut graph = Vec::new();
    for u in 2..=users {
        n += 1;
        graph.push(follow(n, u, 1, &good));
        n += 1;
        let v = (u % users) + 1;
        let who = if u % 5 == 0 { &bad } else { &good };
        graph.push(follow(n, u, v, who));
    }
    let mut acts = Vec::new();
    let mut is_bad = Vec::new();
    for round in 0..4 {
        for u in 1..=users {
            n += 1;
            let b = (u + round) % 4 == 0;
            let who = if b { &bad } else { &good };
            acts.push(act(
                n,
                u,
                "post",
                &format!("post:{n}"),
                vec![(u % users) + 1],
                who,
            ));
            is_bad.push(b);
            n += 1;
            acts.push(act(
                n,
                (u % users) + 1,
                "like",
                &format!("post:{}", n - 1),
                vec![u],
                who,
            ));
            is_bad.push(b);
        }
    }
    (graph, acts, is_bad)
}

fn ends_of(deliveries: &[Delivery]) -> HashMap<(String, i32), i64> {
    let mut ends = HashMap::new();
    for d in deliveries {
        let e = ends.entry((d.topic.clone(), d.partition)).or_insert(0);
        *e = (*e).max(d.offset + 1);
    }
    ends
}

fn wait_caught_up(store: &Arc<dyn Store>, p: i64, ends: &HashMap<(String, i32), i64>) {
    let a = Applier::new(store.clone(), projector(p), GROUP);
    wait_until(Duration::from_secs(60), "live consumers caught up", || {
        ends.iter()
            .all(|((t, part), e)| a.stored_offset(t, *part).unwrap().unwrap_or(0) >= *e)
    });
}

/// The live consumers of projection 1 (following switches), all partitions in one.
fn live_consumers(kafka: &KafkaConfig, store: &Arc<dyn Store>) -> kafka::ConsumerHandle {
    let mut cfg = ConsumerConfig::new(kafka.clone());
    cfg.assignment = Assignment::Static { instance: 0, of: 1 };
    cfg.group = GROUP.into();
    kafka::spawn(cfg, Applier::new(store.clone(), projector(1), GROUP)).unwrap()
}

fn rebuild_cfg(kafka: &KafkaConfig, p: i64) -> RebuildConfig {
    let mut c = RebuildConfig::new(kafka.clone(), projector(p));
    c.consumer = GROUP.into();
    c.batch_records = 97; // many batches, odd boundaries: they must not matter
    c
}

/// A store that counts the bulk runs begun and finished through it ([`Store::begin_bulk`],
/// [`Store::finish_bulk`]).
#[derive(Debug)]
struct CountsMerges {
    inner: Arc<dyn Store>,
    begun: AtomicUsize,
    merges: AtomicUsize,
}

impl Store for CountsMerges {
    fn snapshot(&self) -> tidings_store::Result<Box<dyn ReadView + '_>> {
        self.inner.snapshot()
    }
    fn commit(&self, batch: WriteBatch) -> tidings_store::Result<()> {
        self.inner.commit(batch)
    }
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    fn estimated_size(&self, begin: &[u8], end: &[u8]) -> tidings_store::Result<u64> {
        self.inner.estimated_size(begin, end)
    }
    fn bulk_batch_limit(&self) -> Option<usize> {
        self.inner.bulk_batch_limit()
    }
    fn bulk_backlog(&self) -> bool {
        self.inner.bulk_backlog()
    }
    fn begin_bulk(&self) -> tidings_store::Result<()> {
        self.begun.fetch_add(1, Ordering::SeqCst);
        self.inner.begin_bulk()
    }
    fn finish_bulk(&self) -> tidings_store::Result<()> {
        self.merges.fetch_add(1, Ordering::SeqCst);
        self.inner.finish_bulk()
    }
    fn commit_bulk(&self, batch: WriteBatch) -> tidings_store::Result<()> {
        self.inner.commit_bulk(batch)
    }
    fn commit_bulk_groups(
        &self,
        batch: WriteBatch,
        groups: KeyGroups,
    ) -> tidings_store::Result<()> {
        self.inner.commit_bulk_groups(batch, groups)
    }
}

/// Sets its flag when dropped (also while a panic unwinds).
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn rebuild_into(cfg: &RebuildConfig, store: &Arc<dyn Store>) -> rebuild::RebuildReport {
    let r = rebuild::run(
        cfg,
        store.clone(),
        &AtomicBool::new(false),
        &mut |_, _, _| {},
    )
    .unwrap();
    assert!(r.caught_up, "{r:?}");
    r
}

fn assert_same(a: &ProjectionDigest, b: &ProjectionDigest, with_offsets: bool) {
    let names = |d: &ProjectionDigest| -> Vec<String> {
        d.keyspaces
            .iter()
            .filter(|k| with_offsets || k.name != "off")
            .map(|k| k.name.clone())
            .collect()
    };
    assert_eq!(
        names(a),
        names(b),
        "keyspaces of {} and {}",
        a.projection,
        b.projection
    );
    for k in a
        .keyspaces
        .iter()
        .filter(|k| with_offsets || k.name != "off")
    {
        let o = b.keyspace(&k.name).unwrap();
        assert_eq!(
            (o.keys, &o.sha256),
            (k.keys, &k.sha256),
            "keyspace {} of projections {} and {}",
            k.name,
            a.projection,
            b.projection
        );
    }
    assert_eq!(
        a.state, b.state,
        "state digests of {} and {}",
        a.projection, b.projection
    );
}

fn feed_of(store: &dyn Store, user: UserId, kind: FeedKind) -> Vec<EventId> {
    feed_ids(store, user, kind)
}

#[test]
fn replay_reads_back_what_was_produced_with_filters_and_time_ranges() {
    let tmp = tempfile::tempdir().unwrap();
    let b = broker(tmp.path());
    let p = producer(&b.kafka());
    let (graph, acts, _) = workload(12, 0);
    let events: Vec<Event> = graph.iter().chain(&acts).cloned().collect();
    let deliveries = publish_all(&p, &events);
    // One record no decoder can read: reported and skipped, never a crash.
    rt().block_on(p.publish_raw("tidings.activities", b"3", b"not avro", &[]))
        .unwrap();
    let where_: HashMap<EventId, &Delivery> = deliveries.iter().map(|d| (d.id, d)).collect();
    let by_id: HashMap<EventId, &Event> = events.iter().map(|e| (e.id(), e)).collect();

    let replay = |args: &[&str]| -> (Vec<serde_json::Value>, String) {
        let out = tidings()
            .args(["replay", "--brokers", &b.bootstrap()])
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "replay {args:?} failed: {stderr}");
        let lines = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (lines, stderr)
    };
    let ids = |lines: &[serde_json::Value]| -> Vec<EventId> {
        let mut v: Vec<EventId> = lines
            .iter()
            .map(|l| {
                serde_json::from_value::<Event>(l["event"].clone())
                    .unwrap()
                    .id()
            })
            .collect();
        v.sort();
        v
    };
    let expect = |f: &dyn Fn(&Event) -> bool| -> Vec<EventId> {
        let mut v: Vec<EventId> = events.iter().filter(|e| f(e)).map(Event::id).collect();
        v.sort();
        v
    };

    // Everything: count, content and position.
    let (all, stderr) = replay(&[]);
    assert_eq!(all.len(), events.len());
    for l in &all {
        let e: Event = serde_json::from_value(l["event"].clone()).unwrap();
        assert_eq!(&e, by_id[&e.id()], "decoded event equals the produced one");
        let d = where_[&e.id()];
        assert_eq!(
            (
                l["topic"].as_str().unwrap(),
                l["partition"].as_i64().unwrap(),
                l["offset"].as_i64().unwrap()
            ),
            (d.topic.as_str(), i64::from(d.partition), d.offset)
        );
        assert_eq!(l["timestamp_ms"].as_i64(), Some(e.time_ms()));
        assert_eq!(l["key"].as_str(), Some(e.actor().to_string().as_str()));
    }
    assert!(stderr.contains("skipped tidings.activities/"), "{stderr}");
    assert!(stderr.contains("1 undecodable"), "{stderr}");

    // Filters.
    assert_eq!(
        ids(&replay(&["--user", "7"]).0),
        expect(&|e| e.actor() == 7)
    );
    assert_eq!(
        ids(&replay(&["--verb", "like"]).0),
        expect(&|e| e.verb() == "like")
    );
    assert_eq!(
        ids(&replay(&["--producer", "bad@1.4.2", "--topic", "tidings.activities"]).0),
        expect(&|e| e.producer().name == "bad" && !matches!(e, Event::Graph(_)))
    );
    // A time range: [T0 + 40 s, T0 + 90 s).
    let (from, to) = (T0 + 40_000, T0 + 90_000);
    let (lines, _) = replay(&["--from", "2026-11-01T00:00:40Z", "--to", &to.to_string()]);
    let want = expect(&|e| e.time_ms() >= from && e.time_ms() < to);
    assert!(!want.is_empty());
    assert_eq!(ids(&lines), want);
    // An offset range of one partition.
    let (lines, _) = replay(&[
        "--topic",
        "tidings.activities",
        "--partition",
        "1",
        "--from-offset",
        "2",
        "--to-offset",
        "6",
    ]);
    let offs: Vec<i64> = lines
        .iter()
        .map(|l| l["offset"].as_i64().unwrap())
        .collect();
    assert_eq!(offs.len(), 4, "{offs:?}");
    assert!(offs.iter().all(|o| (2..6).contains(o)));

    // Stats.
    let out = tidings()
        .args([
            "replay",
            "--brokers",
            &b.bootstrap(),
            "--stats",
            "--top",
            "3",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["events"].as_u64(), Some(events.len() as u64));
    assert_eq!(s["bad"].as_u64(), Some(1));
    for verb in ["post", "like", "follow"] {
        let n = events.iter().filter(|e| e.verb() == verb).count() as u64;
        assert_eq!(s["by_verb"][verb].as_u64(), Some(n), "{verb}");
    }
    let hours: u64 = s["by_hour"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(hours, events.len() as u64);
    assert_eq!(s["top_actors"].as_array().unwrap().len(), 3);

    // Bad flags say what was expected.
    let out = tidings()
        .args(["replay", "--brokers", &b.bootstrap(), "--from", "yesterday"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected a time like"));
}

/// Rebuilds equal the live projection and each other; `--until` gives the state as it was;
/// `--skip` leaves out exactly one producer; switching moves readers and live consumers.
#[test]
fn rebuild_until_skip_and_switch_against_live_consumers() {
    let tmp = tempfile::tempdir().unwrap();
    let b = broker(tmp.path());
    let kafka = b.kafka();
    let store = store(&tmp.path().join("store"));
    let live = live_consumers(&kafka, &store);

    // The same events on a second set of topics, without the bad producer's: the reference
    // for --skip.
    let clean = Topics::with_prefix("clean");
    rt().block_on(tidings_producers::topics::create(
        &kafka, &clean, PARTITIONS,
    ))
    .unwrap();
    let p = producer(&kafka);
    let pc = producer_with(&kafka, clean.clone());

    let (graph, acts, is_bad) = workload(16, 0);
    let half = acts.len() / 2;
    let mut ends = ends_of(&publish_all(&p, &graph));
    wait_caught_up(&store, 1, &ends);
    ends.extend(ends_of(&publish_all(&p, &acts[..half])));
    wait_caught_up(&store, 1, &ends);
    // The state at the middle: a run stopped there.
    let middle = digest(&*store, 1).unwrap();
    let middle_feed = feed_of(&*store, 3, FeedKind::Home);
    let t_middle = acts[half - 1].time_ms();
    ends.extend(ends_of(&publish_all(&p, &acts[half..])));
    wait_caught_up(&store, 1, &ends);
    let live_digest = digest(&*store, 1).unwrap();
    assert!(live_digest.keyspace("feed").unwrap().keys > 100);
    assert!(live_digest.keyspace("pull").is_some(), "user 1 is pulled");

    // Rebuilds while the live consumers run: equal to the live projection, and to each other.
    rebuild_into(&rebuild_cfg(&kafka, 2), &store);
    rebuild_into(&rebuild_cfg(&kafka, 3), &store);
    let (d2, d3) = (digest(&*store, 2).unwrap(), digest(&*store, 3).unwrap());
    assert_same(&live_digest, &d2, true);
    assert_same(&d2, &d3, true);
    assert!(!versions::building(&*store, 2).unwrap());

    // --until the middle: the state the live run had there, offsets included.
    let mut c = rebuild_cfg(&kafka, 4);
    c.until = Some(Until::Time(t_middle));
    rebuild_into(&c, &store);
    assert_same(&middle, &digest(&*store, 4).unwrap(), true);

    // --skip the bad producer: equal to the log without its events (offsets differ: another log).
    let good: Vec<Event> = graph
        .iter()
        .filter(|e| e.producer().name != "bad")
        .cloned()
        .chain(
            acts.iter()
                .zip(&is_bad)
                .filter(|(_, b)| !**b)
                .map(|(e, _)| e.clone()),
        )
        .collect();
    publish_all(&pc, &good);
    let mut c = rebuild_cfg(&kafka, 5);
    c.skip = vec!["producer=bad@1.4.2".parse::<Filter>().unwrap()];
    let r5 = rebuild_into(&c, &store);
    assert_eq!(r5.skipped as usize, graph.len() + acts.len() - good.len());
    let mut c = rebuild_cfg(&kafka, 6);
    c.topics = clean.clone();
    rebuild_into(&c, &store);
    let (d5, d6) = (digest(&*store, 5).unwrap(), digest(&*store, 6).unwrap());
    assert_same(&d5, &d6, false);
    assert_ne!(
        d5.state, live_digest.state,
        "the bad producer had effects to remove"
    );

    // Switch under concurrent reads: every page is one whole version's.
    let user = 3;
    let v1_home = feed_of(&*store, user, FeedKind::Home);
    versions::switch(&*store, 5, false).unwrap();
    let v5_home = feed_of(&*store, user, FeedKind::Home);
    let v5_notes = feed_of(&*store, user, FeedKind::Notifications);
    versions::switch(&*store, 1, false).unwrap();
    assert_ne!(v1_home, v5_home);
    assert_eq!(v1_home, feed_of(&*store, user, FeedKind::Home));
    let bad_ids: Vec<EventId> = acts
        .iter()
        .zip(&is_bad)
        .filter(|(_, b)| **b)
        .map(|(e, _)| e.id())
        .collect();
    assert!(
        v1_home.iter().any(|i| bad_ids.contains(i)),
        "the bad producer reached user 3"
    );
    assert!(
        !v5_home.iter().chain(&v5_notes).any(|i| bad_ids.contains(i)),
        "and is gone in 5"
    );
    assert!(middle_feed.len() < v1_home.len());
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (store, done) = (store.clone(), done.clone());
            let (a, b) = (v1_home.clone(), v5_home.clone());
            std::thread::spawn(move || {
                let mut seen = (0, 0);
                while !done.load(Ordering::SeqCst) {
                    let page = feed_of(&*store, user, FeedKind::Home);
                    if page == a {
                        seen.0 += 1;
                    } else if page == b {
                        seen.1 += 1;
                    } else {
                        panic!("a page of neither version: {page:?}");
                    }
                }
                seen
            })
        })
        .collect();
    for i in 0..40 {
        versions::switch(&*store, if i % 2 == 0 { 5 } else { 1 }, false).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    done.store(true, Ordering::SeqCst);
    for r in readers {
        let (a, b) = r.join().unwrap();
        assert!(a + b > 0);
    }

    // Refusals: an empty version, a version being rebuilt, dropping the active one.
    assert!(versions::switch(&*store, 99, false).is_err());
    let mut mark = tidings_store::WriteBatch::new();
    mark.set(meta::building(6), tidings_core::write::encode_i64(1));
    store.commit(mark).unwrap();
    let e = versions::switch(&*store, 6, false).unwrap_err().to_string();
    assert!(e.contains("still being rebuilt"), "{e}");

    // The live consumers follow a switch: new events land in 5, 1 stays as it was.
    versions::switch(&*store, 5, false).unwrap();
    let before_1 = digest(&*store, 1).unwrap();
    let more = vec![act(
        90_000,
        2,
        "post",
        "post:after-switch",
        vec![user],
        &Who::new("good", "1.0.0"),
    )];
    let ends_more = ends_of(&publish_all(&p, &more));
    wait_caught_up(&store, 5, &ends_more);
    wait_until(Duration::from_secs(30), "the new post in 5", || {
        feed_of(&*store, user, FeedKind::Notifications).contains(&id(90_000))
    });
    assert_eq!(
        digest(&*store, 1).unwrap(),
        before_1,
        "the old projection is left alone"
    );
    let e = versions::drop_version(&*store, 5).unwrap_err().to_string();
    assert!(e.contains("active"), "{e}");
    versions::drop_version(&*store, 1).unwrap();
    assert!(!versions::exists(&*store, 1).unwrap());
    live.stop().unwrap();
}

/// `follow`: a rebuild that caught up keeps applying what is published after, until its
/// projection is switched to; the live consumers then continue it from its offsets, so the
/// switch loses nothing: the projection ends equal to a rebuild of the whole log.
#[test]
fn a_following_rebuild_applies_new_records_until_switched_to() {
    let tmp = tempfile::tempdir().unwrap();
    let b = broker(tmp.path());
    let kafka = b.kafka();
    let store = store(&tmp.path().join("store"));
    let live = live_consumers(&kafka, &store);
    let p = producer(&kafka);
    let (graph, acts, _) = workload(12, 0);
    let half = acts.len() / 2;
    let mut ends = ends_of(&publish_all(&p, &graph));
    ends.extend(ends_of(&publish_all(&p, &acts[..half])));
    wait_caught_up(&store, 1, &ends);

    let mut c = rebuild_cfg(&kafka, 2);
    c.follow = true;
    let (stop, caught_up) = (AtomicBool::new(false), AtomicBool::new(false));
    let report = std::thread::scope(|s| {
        let following = s.spawn(|| {
            rebuild::run(&c, store.clone(), &stop, &mut |_, _, up| {
                caught_up.fetch_or(up, Ordering::SeqCst);
            })
        });
        // A failed wait below stops the rebuild, so the scope can join it: the test then
        // fails with the wait's message instead of hanging.
        let _stop_on_panic = StopOnDrop(&stop);
        wait_until(Duration::from_secs(60), "the rebuild caught up", || {
            caught_up.load(Ordering::SeqCst)
        });
        // Published while it follows: applied to 2 by the rebuild (the live consumers write 1).
        ends.extend(ends_of(&publish_all(&p, &acts[half..])));
        wait_caught_up(&store, 2, &ends);
        wait_caught_up(&store, 1, &ends);
        assert_same(
            &digest(&*store, 1).unwrap(),
            &digest(&*store, 2).unwrap(),
            true,
        );
        versions::switch(&*store, 2, false).unwrap();
        following.join().unwrap()
    })
    .unwrap();
    assert!(report.caught_up, "{report:?}");

    // After the switch the live consumers write 2, from where the rebuild stopped.
    let (_, after, _) = workload(12, 50_000);
    ends.extend(ends_of(&publish_all(&p, &after)));
    wait_caught_up(&store, 2, &ends);
    live.stop().unwrap();
    rebuild_into(&rebuild_cfg(&kafka, 3), &store);
    assert_same(
        &digest(&*store, 2).unwrap(),
        &digest(&*store, 3).unwrap(),
        true,
    );
}

/// Runs `cmd` to success and parses the JSON report on its last stdout line.
fn final_report(mut cmd: Command) -> serde_json::Value {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap()
}

fn rebuild_cmd(bootstrap: &str, data: &Path) -> Command {
    let mut c = tidings();
    c.args([
        "rebuild",
        "--version",
        "2",
        "--brokers",
        bootstrap,
        "--reread-from-start",
    ])
    .args([
        "--hybrid-threshold",
        &THRESHOLD.to_string(),
        "--fanout-step",
        "4",
    ])
    .args(["--batch-records", "10", "--progress-ms", "1"])
    .arg("--data")
    .arg(data);
    c
}

#[test]
fn a_rebuild_killed_midway_and_rerun_gives_the_same_digest() {
    let tmp = tempfile::tempdir().unwrap();
    let b = broker_on(
        tidings_producers::broker::BrokerStorage::Sqlite(tmp.path().join("broker")),
        tmp.path(),
    );
    let p = producer(&b.kafka());
    let (graph, acts, _) = workload(60, 0);
    publish_all(&p, &graph);
    publish_all(&p, &acts);
    let data = tmp.path().join("data");

    let mut child = rebuild_cmd(&b.bootstrap(), &data)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut killed_at = None;
    for line in lines.by_ref() {
        let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        if v.get("caught_up").is_some() && v["batches"].as_u64().unwrap() >= 3 {
            assert_eq!(v["caught_up"], false, "killed before the end");
            killed_at = Some(v["records"].as_u64().unwrap());
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let killed_at = killed_at.expect("progress before the end");
    {
        let s = store(&data.join("store"));
        assert!(
            versions::building(&*s, 2).unwrap(),
            "the rebuild had not finished"
        );
    }
    let report = final_report(rebuild_cmd(&b.bootstrap(), &data));
    assert_eq!(report["resumed"], true);
    assert!(report["caught_up"].as_bool().unwrap());
    assert!(killed_at > 0);

    // An uninterrupted rebuild of the same log into another store: it merges its bulk run
    // once, when it has caught up.
    let reference = store(&tmp.path().join("reference"));
    let counted = Arc::new(CountsMerges {
        inner: reference.clone(),
        begun: AtomicUsize::new(0),
        merges: AtomicUsize::new(0),
    });
    let mut c = rebuild_cfg(&b.kafka(), 2);
    c.reread = true;
    let r = rebuild_into(&c, &(counted.clone() as Arc<dyn Store>));
    assert_eq!(counted.begun.load(Ordering::SeqCst), 1);
    assert_eq!(counted.merges.load(Ordering::SeqCst), 1);
    assert!(r.merge_seconds <= r.seconds, "{r:?}");
    let resumed = store(&data.join("store"));
    assert_same(
        &digest(&*reference, 2).unwrap(),
        &digest(&*resumed, 2).unwrap(),
        true,
    );

    // The CLI digest prints the same state digest.
    drop(resumed);
    let out = tidings()
        .args(["digest", "--version", "2", "--json", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        d["state"].as_str(),
        Some(digest(&*reference, 2).unwrap().state.as_str())
    );
}

/// Every record of `topic` (all `n` partitions) with its headers.
fn read_topic(kafka: &KafkaConfig, topic: &str, n: i32) -> Vec<tidings_consumers::log::Headered> {
    let ranges: Vec<PartitionRange> = (0..n)
        .map(|p| PartitionRange {
            topic: topic.into(),
            partition: p,
            start: 0,
            end: None,
        })
        .collect();
    let mut r = LogReader::open(kafka, &ranges, false)
        .unwrap()
        .with_headers();
    r.fix_ends(Duration::from_secs(30)).unwrap();
    let mut out = Vec::new();
    loop {
        match r.next_polled(Duration::from_millis(50)) {
            Next::Record(x) => out.push(*x),
            Next::Waiting => {}
            Next::End => return out,
        }
    }
}

#[test]
fn topic_migration_keeps_per_key_order_and_loses_nothing_across_a_kill() {
    let tmp = tempfile::tempdir().unwrap();
    let b = broker_on(
        tidings_producers::broker::BrokerStorage::Sqlite(tmp.path().join("broker")),
        tmp.path(),
    );
    let kafka = b.kafka();
    let src = "tidings.activities";
    let p = producer(&kafka);
    let records: Vec<(String, String)> = (0..1500)
        .map(|i| ((i % 37).to_string(), format!("{}:{}", i % 37, i / 37)))
        .collect();
    rt().block_on(async {
        for chunk in records.chunks(300) {
            futures::future::join_all(
                chunk
                    .iter()
                    .map(|(k, v)| p.publish_raw(src, k.as_bytes(), v.as_bytes(), &[])),
            )
            .await
            .into_iter()
            .for_each(|r| {
                r.unwrap();
            });
        }
    });
    let per_key = |recs: &[tidings_consumers::log::Headered]| {
        let mut m: BTreeMap<Vec<u8>, Vec<Vec<u8>>> = BTreeMap::new();
        let mut sorted: Vec<_> = recs.iter().map(|(r, _)| r).collect();
        sorted.sort_by_key(|r| (r.partition, r.offset));
        for r in sorted {
            m.entry(r.key.clone().unwrap())
                .or_default()
                .push(r.payload.clone().unwrap());
        }
        m
    };
    let source = read_topic(&kafka, src, PARTITIONS);
    assert_eq!(source.len(), records.len());
    let state = tmp.path().join("migrate.json");
    let cmd = || {
        let mut c = tidings();
        c.args([
            "migrate",
            "topic",
            "--brokers",
            &b.bootstrap(),
            "--from",
            src,
        ])
        .args([
            "--to",
            "wide.activities",
            "--partitions",
            "7",
            "--checkpoint-every",
            "100",
        ])
        .args(["--progress", "--reread-from-start", "--state"])
        .arg(&state);
        c
    };
    let mut child = cmd().stdout(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        first["copied"].as_u64().unwrap() < records.len() as u64,
        "killed midway: {first}"
    );
    let report = final_report(cmd());
    assert_eq!(report["complete"], true);
    assert_eq!(report["dest_records"].as_i64(), Some(records.len() as i64));

    let dest = read_topic(&kafka, "wide.activities", 7);
    assert_eq!(dest.len(), records.len(), "nothing lost, nothing doubled");
    for (r, h) in &dest {
        let k = r.key.as_deref().unwrap();
        assert_eq!(
            r.partition,
            tidings_producers::partition::partition_for_key(k, 7)
        );
        assert!(h
            .iter()
            .any(|(k, _)| k == tidings_consumers::migrate::SOURCE_HEADER));
    }
    let (s, d) = (per_key(&source), per_key(&dest));
    assert_eq!(s.len(), 37);
    for (k, seq) in &s {
        assert_eq!(d.get(k), Some(seq), "key {}", String::from_utf8_lossy(k));
    }
}

/// A merge read whose partitions pause (buffer full) and resume still hands out every record
/// of every partition, once, in offset order: the local broker answers a fetch that starts
/// inside a record batch with the next batch or nothing, and a resumed partition is fetched
/// from where its delivered records end — mostly inside a batch. (Without the check of a
/// resumed position this read hung.)
#[test]
fn a_merge_read_loses_nothing_across_pauses_and_resumes() {
    read_loses_nothing(buffered(1_000), |r| {
        r.next_merged(Duration::from_millis(50))
    });
}

/// A read as fetched whose partitions filled their buffers while the ends were fixed (and
/// paused) resumes them once it has handed those records out. (Before, such a partition was
/// never resumed and the read waited forever.)
#[test]
fn a_polled_read_resumes_partitions_paused_while_its_ends_were_fixed() {
    read_loses_nothing(buffered(10), |r| r.next_polled(Duration::from_millis(50)));
}

/// Opens a reader through the consumer's one queue that pauses a partition at `cap` records
/// buffered.
fn buffered(cap: usize) -> impl Fn(&KafkaConfig, &[PartitionRange]) -> LogReader {
    move |kafka, ranges| {
        LogReader::open(kafka, ranges, false)
            .unwrap()
            .with_buffer_cap(cap)
    }
}

/// The same through partition queues (a rebuild's reader), librdkafka holding back each
/// partition's fetching at 100 queued records (of ~1,500): nothing paused, nothing lost.
#[test]
fn a_merge_read_through_partition_queues_loses_nothing() {
    read_loses_nothing(
        |kafka, ranges| {
            let mut kafka = kafka.clone();
            kafka
                .extra
                .push(("queued.min.messages".into(), "100".into()));
            LogReader::open_merged(&kafka, ranges, false).unwrap()
        },
        |r| r.next_merged(Duration::from_millis(50)),
    );
}

/// Publishes 6,000 follows in record batches of many records and reads them back with the
/// reader `open` gives, by `next`, after fixing its ends: every record of every partition,
/// once, in order.
fn read_loses_nothing(
    open: impl Fn(&KafkaConfig, &[PartitionRange]) -> LogReader,
    next: impl Fn(&mut LogReader) -> Next,
) {
    let tmp = tempfile::tempdir().unwrap();
    let b = broker(tmp.path());
    let p = producer(&b.kafka());
    let who = Who::new("pauses", "1");
    // Batched by the producer: many records per record batch.
    let events: Vec<Event> = (0..6_000u64)
        .map(|n| follow(n, (n % 97) as UserId, 1_000 + n as UserId, &who))
        .collect();
    let deliveries = publish_all(&p, &events);
    let ends = ends_of(&deliveries);
    let ranges: Vec<PartitionRange> = (0..PARTITIONS)
        .map(|part| PartitionRange {
            topic: "tidings.graph".into(),
            partition: part,
            start: 0,
            end: None,
        })
        .collect();
    let mut reader = open(&b.kafka(), &ranges);
    reader.fix_ends(Duration::from_secs(30)).unwrap();
    let mut seen: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    let started = std::time::Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the read did not end"
        );
        match next(&mut reader) {
            Next::Record(r) => seen.entry(r.0.partition).or_default().push(r.0.offset),
            Next::Waiting => {}
            Next::End => break,
        }
    }
    for part in 0..PARTITIONS {
        let end = ends
            .get(&("tidings.graph".to_string(), part))
            .copied()
            .unwrap_or(0);
        let got = seen.remove(&part).unwrap_or_default();
        let want: Vec<i64> = (0..end).collect();
        let missing = want.iter().filter(|o| !got.contains(o)).count();
        assert!(
            got == want,
            "partition {part}: {} records, {missing} of 0..{end} missing (first offsets {:?})",
            got.len(),
            &got[..got.len().min(8)]
        );
    }
}
