//! The processor chain through the real `Applier` on the embedded store: every flow outcome
//! changes what is written exactly as configured; state is exact across batches; a swap lands
//! between calls; a resumed split fan-out is not decided twice. Also the `Applier`'s own write
//! order: a fan-out split over batches lands after what the events before it in its batch
//! wrote.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tidings_consumers::apply::{Applier, DeadLetter, DeadLetterSink, Outcome, Positions, Record};
use tidings_consumers::chain::{ChainHandle, SideRecord};
use tidings_consumers::project::Projector;
use tidings_core::keys::feed::{self, FeedKind};
use tidings_core::keys::{self, messages};
use tidings_core::process::{Chain, PipelineConfig};
use tidings_core::{Activity, Event, EventId, GraphChange, GraphOp, Producer, Retraction, UserId};
use tidings_store::rocks::{RocksOptions, RocksStore};
use tidings_store::{KeyGroups, RangeOptions, ReadView, Store, WriteBatch};

const ACTS: &str = "tidings.activities";
const GRAPH: &str = "tidings.graph";

fn chain(text: &str) -> Arc<Chain> {
    #[derive(serde::Deserialize)]
    struct File {
        pipeline: PipelineConfig,
    }
    let f: File = toml::from_str(text).unwrap();
    Arc::new(Chain::build(&f.pipeline).unwrap())
}

/// Records dead letters and side outputs.
#[derive(Default)]
struct Sink {
    dead: Mutex<Vec<DeadLetter>>,
    side: Mutex<Vec<SideRecord>>,
}

impl DeadLetterSink for Sink {
    fn send(&self, letters: &[DeadLetter]) -> Result<(), String> {
        self.dead.lock().unwrap().extend(letters.iter().cloned());
        Ok(())
    }
    fn emit(&self, outputs: &[SideRecord]) -> Result<(), String> {
        self.side.lock().unwrap().extend(outputs.iter().cloned());
        Ok(())
    }
}

impl Sink {
    fn side_ids(&self, topic: &str) -> Vec<String> {
        self.side
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.topic == topic)
            .map(|s| header(s, "tidings-event-id"))
            .collect()
    }
}

fn header(s: &SideRecord, name: &str) -> String {
    s.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("no header {name} in {s:?}"))
}

fn id(n: u64) -> EventId {
    EventId(uuid::Uuid::from_u128(n as u128 + 1))
}

fn who() -> Producer {
    Producer::new("test", "1")
}

fn post(n: u64, actor: UserId, text: &str) -> Activity {
    Activity {
        id: id(n),
        actor,
        verb: "post".into(),
        object: format!("post:{n}"),
        target: None,
        time_ms: 1_700_000_000_000 + n as i64,
        to: vec![],
        text: text.into(),
        attributes: BTreeMap::new(),
        producer: who(),
    }
}

fn graph(n: u64, actor: UserId, subject: UserId, op: GraphOp) -> Event {
    Event::Graph(GraphChange {
        id: id(n),
        actor,
        subject,
        op,
        time_ms: 1_700_000_000_000 + n as i64,
        producer: who(),
    })
}

/// Turns events into consumed records, one partition per topic, offsets counting up.
#[derive(Default)]
struct Log {
    next: HashMap<&'static str, i64>,
}

impl Log {
    fn record(&mut self, e: &Event, timestamp_ms: Option<i64>) -> Record {
        let topic = if matches!(e, Event::Graph(_)) {
            GRAPH
        } else {
            ACTS
        };
        let off = self.next.entry(topic).or_default();
        let r = Record {
            topic: topic.into(),
            partition: 0,
            offset: *off,
            key: Some(e.kafka_key().into_bytes()),
            payload: Some(tidings_schemas::encode(e)),
            timestamp_ms,
        };
        *off += 1;
        r
    }

    fn records(&mut self, events: &[Event]) -> Vec<Record> {
        events
            .iter()
            .map(|e| self.record(e, Some(e.time_ms())))
            .collect()
    }
}

fn positions() -> Positions {
    [
        ((ACTS.to_string(), 0), None),
        ((GRAPH.to_string(), 0), None),
    ]
    .into()
}

fn fresh() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let s = RocksStore::open(dir.path(), RocksOptions::default()).unwrap();
    (dir, Arc::new(s))
}

fn apply(a: &Applier, pos: &mut Positions, records: &[Record], sink: &Sink) {
    match a.apply(pos, records, sink).unwrap() {
        Outcome::Done(_) => {}
        o => panic!("{o:?}"),
    }
}

/// The event ids in a feed's index (no read-time filtering).
fn index(s: &dyn Store, user: UserId, kind: FeedKind) -> HashSet<EventId> {
    let sub = feed::feed(1, user, kind);
    let (b, e) = sub.range();
    s.snapshot()
        .unwrap()
        .range(&b, &e, RangeOptions::default())
        .unwrap()
        .iter()
        .map(|(k, _)| feed::parse_key(&sub, k).unwrap().id)
        .collect()
}

fn ids(ns: &[u64]) -> HashSet<EventId> {
    ns.iter().map(|n| id(*n)).collect()
}

fn follows(n0: u64, followers: &[UserId], of: UserId) -> Vec<Event> {
    followers
        .iter()
        .enumerate()
        .map(|(i, f)| graph(n0 + i as u64, *f, of, GraphOp::Follow))
        .collect()
}

const FLOWS: &str = r#"
[[pipeline.processor]]
id = "vip"
kind = "rule"
when = 'attributes.vip == "yes"'
then = "jump:audit"

[[pipeline.processor]]
id = "no-ads"
kind = "rule"
when = 'text.contains("buy now")'
then = "drop"
reason = "ad"

[[pipeline.processor]]
id = "silent"
kind = "rule"
when = 'attributes.silent == "yes"'
then = "term"

[[pipeline.processor]]
id = "fields"
kind = "validate"
max_text_bytes = 40

[[pipeline.processor]]
id = "audit"
kind = "rule"
when = 'verb == "share"'
emit = { topic = "audit", format = "json", note = "shared" }

[[pipeline.processor]]
id = "copy"
kind = "rule"
when = 'verb == "share"'
emit = { topic = "copies", format = "avro" }
"#;

#[test]
fn each_flow_outcome_changes_what_is_written_as_configured() {
    let (_d, store) = fresh();
    let s = &*store;
    let a = Applier::new(store.clone(), Projector::new(1), "c")
        .with_chain(ChainHandle::new(chain(FLOWS)));
    let sink = Sink::default();
    let mut log = Log::default();
    let mut pos = positions();

    let with = |mut p: Activity, k: &str, v: &str| {
        p.attributes.insert(k.into(), v.into());
        p
    };
    let mut events = follows(100, &[2, 3], 1);
    events.extend([
        Event::Activity(post(1, 1, "hello")),    // next … → projected
        Event::Activity(post(2, 1, "buy now!")), // drop
        Event::Activity(with(post(3, 1, "psst"), "silent", "yes")), // term
        Event::Activity(post(4, 1, &"x".repeat(50))), // dead letter
        Event::Activity(with(
            post(5, 1, &format!("buy now {}", "y".repeat(50))),
            "vip",
            "yes",
        )), // jump
    ]);
    let mut share = post(6, 1, "look");
    share.verb = "share".into();
    events.push(Event::Activity(share));
    let records = log.records(&events);
    apply(&a, &mut pos, &records, &sink);

    let projected = ids(&[1, 5, 6]);
    for u in [2, 3] {
        assert_eq!(index(s, u, FeedKind::Home), projected, "home of {u}");
    }
    assert_eq!(index(s, 1, FeedKind::User), projected);
    for n in [2, 3, 4] {
        assert!(
            s.get(&messages::key(1, id(n))).unwrap().is_none(),
            "no body for {n}"
        );
    }
    // An unchanged event's body is the record as consumed.
    assert_eq!(
        s.get(&messages::key(1, id(1))).unwrap().as_deref(),
        records[2].payload.as_deref()
    );

    let dead = sink.dead.lock().unwrap().clone();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].code.as_str(), dead[0].record.offset),
        ("text_too_long", 3)
    );
    assert!(
        dead[0].reason.contains("processor `fields`"),
        "{}",
        dead[0].reason
    );

    // Side outputs: the JSON document and the record itself, with their headers.
    assert_eq!(sink.side_ids("audit"), vec![id(6).to_string()]);
    assert_eq!(sink.side_ids("copies"), vec![id(6).to_string()]);
    let side = sink.side.lock().unwrap().clone();
    let json: serde_json::Value = serde_json::from_slice(&side[0].payload).unwrap();
    assert_eq!(json["processor"], "audit");
    assert_eq!(json["note"], "shared");
    assert_eq!(json["event"]["verb"], "share");
    assert_eq!(json["source"]["offset"], 5);
    assert_eq!(header(&side[0], "tidings-processor"), "audit");
    assert_eq!(header(&side[0], "tidings-source-offset"), "5");
    assert_eq!(side[1].payload, records[7].payload.clone().unwrap());
    assert_eq!(side[1].key.as_deref(), Some(&b"1"[..]));

    let st = a.stats();
    let n = |x: &std::sync::atomic::AtomicU64| x.load(Ordering::Relaxed);
    assert_eq!(
        (
            n(&st.events),
            n(&st.dropped),
            n(&st.terminated),
            n(&st.dead),
            n(&st.side_outputs)
        ),
        (5, 1, 1, 1, 2)
    );
    assert_eq!(st.finished(), records.len() as u64);
    assert_eq!(a.stored_offset(ACTS, 0).unwrap(), Some(6));
}

#[test]
fn mentions_store_the_reencoded_body_and_a_retraction_finds_the_notification() {
    let (_d, store) = fresh();
    let s = &*store;
    let a = Applier::new(store.clone(), Projector::new(1), "c").with_chain(ChainHandle::new(
        chain("[[pipeline.processor]]\nid = \"m\"\nkind = \"mentions\"\n"),
    ));
    let (sink, mut log, mut pos) = (Sink::default(), Log::default(), positions());
    let e = Event::Activity(post(1, 1, "hi @5 and @6"));
    apply(&a, &mut pos, &log.records(&[e]), &sink);
    for u in [5, 6] {
        assert_eq!(index(s, u, FeedKind::Notifications), ids(&[1]));
    }
    let body = s.get(&messages::key(1, id(1))).unwrap().unwrap();
    let Ok(Event::Activity(stored)) = tidings_schemas::decode(&body) else {
        panic!("stored body decodes")
    };
    assert_eq!(stored.to, vec![5, 6]);

    let r = Event::Retraction(Retraction {
        id: id(2),
        activity_id: id(1),
        actor: 1,
        time_ms: 1_700_000_100_000,
        producer: who(),
    });
    apply(&a, &mut pos, &log.records(&[r]), &sink);
    for u in [1, 5, 6] {
        for kind in FeedKind::ALL {
            assert!(index(s, u, kind).is_empty(), "{u} {kind:?}");
        }
    }
}

#[test]
fn routes_and_block_mute_filters_shape_the_fanout() {
    let (_d, store) = fresh();
    let s = &*store;
    let a =
        Applier::new(store.clone(), Projector::new(1), "c").with_chain(ChainHandle::new(chain(
            r#"
[[pipeline.processor]]
id = "likes"
kind = "route"
verbs = ["like"]
targets = ["notifications"]

[[pipeline.processor]]
id = "blocks"
kind = "block_mute_filter"
mutes = true
"#,
        )));
    let (sink, mut log, mut pos) = (Sink::default(), Log::default(), positions());
    let mut events = follows(100, &[2, 3, 4], 1);
    events.push(graph(110, 3, 1, GraphOp::Block));
    events.push(graph(111, 4, 1, GraphOp::Mute));
    let mut like = post(1, 1, "");
    like.verb = "like".into();
    like.to = vec![9];
    events.push(Event::Activity(like));
    let mut p = post(2, 1, "hello");
    p.to = vec![3, 5];
    events.push(Event::Activity(p));
    apply(&a, &mut pos, &log.records(&events), &sink);

    // The like: only the owner's notification.
    assert_eq!(index(s, 9, FeedKind::Notifications), ids(&[1]));
    assert_eq!(index(s, 1, FeedKind::User), ids(&[2]));
    assert_eq!(index(s, 2, FeedKind::Home), ids(&[2]));
    // The post: not to the blocker nor the muter, no notification for the blocker.
    assert!(index(s, 3, FeedKind::Home).is_empty());
    assert!(index(s, 4, FeedKind::Home).is_empty());
    assert!(index(s, 3, FeedKind::Notifications).is_empty());
    assert_eq!(index(s, 5, FeedKind::Notifications), ids(&[2]));
}

const STATEFUL: &str = r#"
[[pipeline.processor]]
id = "dedupe"
kind = "dedupe"
window_ms = 600000

[[pipeline.processor]]
id = "flood"
kind = "rate_limit"
max_events = 5
per_ms = 60000
"#;

#[test]
fn dedupe_and_the_rate_limit_hold_within_and_across_batches() {
    let (_d, store) = fresh();
    let s = &*store;
    let a = Applier::new(store.clone(), Projector::new(1), "c")
        .with_chain(ChainHandle::new(chain(STATEFUL)));
    let (sink, mut log, mut pos) = (Sink::default(), Log::default(), positions());
    // Twelve posts in one batch, all in one minute of log time.
    let flood: Vec<Event> = (0..12)
        .map(|n| Event::Activity(post(n, 7, "spam")))
        .collect();
    apply(&a, &mut pos, &log.records(&flood), &sink);
    assert_eq!(index(s, 7, FeedKind::User), ids(&[0, 1, 2, 3, 4]));
    // A re-published admitted post (another offset): a duplicate; three more: over the limit.
    let mut again = log.records(&flood[..1]);
    again.extend(log.records(&[
        Event::Activity(post(20, 7, "more")),
        Event::Activity(post(21, 7, "more")),
        Event::Activity(post(22, 7, "more")),
    ]));
    apply(&a, &mut pos, &again, &sink);
    assert_eq!(index(s, 7, FeedKind::User).len(), 5);
    // Another user is not held back; the next minute admits again.
    let mut later = post(30, 7, "later");
    later.time_ms += 60_000;
    apply(
        &a,
        &mut pos,
        &log.records(&[Event::Activity(post(31, 8, "hi")), Event::Activity(later)]),
        &sink,
    );
    assert_eq!(index(s, 8, FeedKind::User), ids(&[31]));
    assert_eq!(index(s, 7, FeedKind::User).len(), 6);
    let st = a.stats();
    assert_eq!(st.dropped.load(Ordering::Relaxed), 7 + 1 + 3);
    assert_eq!(st.events.load(Ordering::Relaxed), 7);
    // The state is in the projection's `prc` keyspace.
    let (b, e) = keys::keyspace_range(1, "prc");
    let prc = s
        .snapshot()
        .unwrap()
        .range(&b, &e, RangeOptions::default())
        .unwrap();
    // dedupe: its cursor and the 17 distinct ids it let through; rate limit: its cursor and
    // the 7 events it admitted (the first minute is the previous bucket now, still kept).
    assert_eq!(prc.len(), 1 + 17 + 1 + 7);
}

#[test]
fn a_swap_lands_between_batches() {
    let (_d, store) = fresh();
    let emit_to = |topic: &str| {
        chain(&format!(
            "[[pipeline.processor]]\nid = \"e\"\nkind = \"rule\"\nwhen = \"true\"\nemit = {{ topic = \"{topic}\" }}\n"
        ))
    };
    let handle = ChainHandle::new(emit_to("a"));
    let a = Applier::new(store.clone(), Projector::new(1), "c").with_chain(handle.clone());
    // A clone (as the consume loop keeps after a projection switch) shares the handle.
    let b = a.for_projection(1);
    let (sink, mut log, mut pos) = (Sink::default(), Log::default(), positions());
    let events: Vec<Event> = (0..10).map(|n| Event::Activity(post(n, 1, "x"))).collect();
    let records = log.records(&events);
    apply(&a, &mut pos, &records[..4], &sink);
    assert_eq!(handle.swap(emit_to("b")), 2);
    apply(&b, &mut pos, &records[4..], &sink);
    let want = |r: std::ops::Range<u64>| r.map(|n| id(n).to_string()).collect::<Vec<_>>();
    assert_eq!(sink.side_ids("a"), want(0..4));
    assert_eq!(sink.side_ids("b"), want(4..10));
    assert_eq!(index(&*store, 1, FeedKind::User).len(), 10);
}

/// A store whose commits fail after `left` more succeed: a crash between two commits.
#[derive(Debug)]
struct FailAfter {
    inner: Arc<dyn Store>,
    left: AtomicUsize,
}

impl Store for FailAfter {
    fn snapshot(&self) -> tidings_store::Result<Box<dyn ReadView + '_>> {
        self.inner.snapshot()
    }
    fn commit(&self, batch: WriteBatch) -> tidings_store::Result<()> {
        if self
            .left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_err()
        {
            return Err(tidings_store::Error::Backend {
                backend: "fail-after",
                message: "crash (test)".into(),
            });
        }
        self.inner.commit(batch)
    }
    fn backend(&self) -> &'static str {
        "fail-after"
    }
    fn estimated_size(&self, begin: &[u8], end: &[u8]) -> tidings_store::Result<u64> {
        self.inner.estimated_size(begin, end)
    }
}

/// A RocksDB store reporting a bulk backlog or not, counting bulk commits.
#[derive(Debug)]
struct Backlog {
    inner: Arc<dyn Store>,
    backlog: bool,
    bulk_commits: AtomicUsize,
}

impl Store for Backlog {
    fn snapshot(&self) -> tidings_store::Result<Box<dyn ReadView + '_>> {
        self.inner.snapshot()
    }
    fn commit(&self, batch: WriteBatch) -> tidings_store::Result<()> {
        self.inner.commit(batch)
    }
    fn backend(&self) -> &'static str {
        "backlog"
    }
    fn estimated_size(&self, begin: &[u8], end: &[u8]) -> tidings_store::Result<u64> {
        self.inner.estimated_size(begin, end)
    }
    fn bulk_batch_limit(&self) -> Option<usize> {
        self.inner.bulk_batch_limit()
    }
    fn bulk_backlog(&self) -> bool {
        self.backlog
    }
    fn commit_bulk(&self, batch: WriteBatch) -> tidings_store::Result<()> {
        self.bulk_commits.fetch_add(1, Ordering::SeqCst);
        self.inner.commit_bulk(batch)
    }
    fn commit_bulk_groups(
        &self,
        batch: WriteBatch,
        groups: KeyGroups,
    ) -> tidings_store::Result<()> {
        self.bulk_commits.fetch_add(1, Ordering::SeqCst);
        self.inner.commit_bulk_groups(batch, groups)
    }
    fn begin_bulk(&self) -> tidings_store::Result<()> {
        self.inner.begin_bulk()
    }
    fn finish_bulk(&self) -> tidings_store::Result<()> {
        self.inner.finish_bulk()
    }
}

/// While the store reports a backlog, a bulk run plans batches of twice the size: about half
/// as many commits, and the same projection.
#[test]
fn a_bulk_run_plans_larger_batches_while_the_store_reports_a_backlog() {
    let followers: Vec<UserId> = (2..50).collect();
    let mut events = follows(1_000, &followers, 1);
    events.extend((0..200).map(|n| Event::Activity(post(n, 1, "hello"))));
    let run = |backlog: bool| {
        let (_d, inner) = fresh();
        let store = Arc::new(Backlog {
            inner,
            backlog,
            bulk_commits: AtomicUsize::new(0),
        });
        let a = Applier::new(store.clone(), Projector::new(1), "c").bulk(64 << 10);
        let mut pos = positions();
        apply(
            &a,
            &mut pos,
            &Log::default().records(&events),
            &Sink::default(),
        );
        let digest = tidings_consumers::digest::digest(&*store, 1).unwrap();
        (store.bulk_commits.load(Ordering::SeqCst), digest)
    };
    let (plain, want) = run(false);
    let (larger, got) = run(true);
    assert!(plain >= 8, "{plain} batches: too few to compare");
    assert!(
        larger < plain && larger * 2 <= plain + 2,
        "{larger} batches with a backlog against {plain} without"
    );
    // Every post reached every follower's home feed, in both runs alike.
    assert!(want.keyspace("feed").unwrap().keys >= 200 * followers.len() as u64);
    assert_eq!(got, want);
}

#[test]
fn a_resumed_split_fanout_is_not_decided_or_emitted_twice() {
    resumed_split_fanout(false);
}

/// A rebuild in bulk mode restarted on a split its follow phase left: a bulk run reads the
/// cursor of the record at the stored offset only, which is this one.
#[test]
fn a_bulk_run_resumes_a_split_fanout_at_the_stored_offset() {
    resumed_split_fanout(true);
}

fn resumed_split_fanout(bulk: bool) {
    let (_d, store) = fresh();
    let s = &*store;
    let text = r#"
[[pipeline.processor]]
id = "dedupe"
kind = "dedupe"
window_ms = 600000

[[pipeline.processor]]
id = "m"
kind = "mentions"

[[pipeline.processor]]
id = "audit"
kind = "rule"
when = 'verb == "post"'
emit = { topic = "audit" }
"#;
    let handle = ChainHandle::new(chain(text));
    let mut projector = Projector::new(1);
    projector.fanout.max_entries_per_step = 2;
    let (sink, mut log, mut pos) = (Sink::default(), Log::default(), positions());
    let ok = Applier::new(store.clone(), projector.clone(), "c").with_chain(handle.clone());
    apply(
        &ok,
        &mut pos,
        &log.records(&follows(100, &[2, 3, 4, 5, 6], 1)),
        &sink,
    );

    // The post's first step commits (body, own entries, the mention, two followers, the
    // chain's state), then the process "crashes".
    let crashing: Arc<dyn Store> = Arc::new(FailAfter {
        inner: store.clone(),
        left: AtomicUsize::new(1),
    });
    let a = Applier::new(crashing, projector.clone(), "c").with_chain(handle.clone());
    let rec = log.records(&[Event::Activity(post(1, 1, "hi @9"))]);
    let mut crash_pos = pos.clone();
    assert!(a.apply(&mut crash_pos, &rec, &sink).is_err());
    assert!(
        s.get(&keys::fanout::key(1, id(1))).unwrap().is_some(),
        "split mid-way"
    );
    assert_eq!(
        ok.stored_offset(ACTS, 0).unwrap(),
        Some(0),
        "offset still on the post"
    );
    let prc_before = prc(s);
    assert_eq!(
        prc_before.len(),
        2 + 5 + 1,
        "dedupe's cursors (one per source partition: the graph's, the activities'), the follows and the post"
    );

    // Restarted: the same record again, resumed from the cursor.
    let mut pos = crash_pos;
    let mut restarted = Applier::new(store.clone(), projector, "c").with_chain(handle);
    if bulk {
        restarted = restarted.bulk(64 << 20);
    }
    apply(&restarted, &mut pos, &rec, &sink);
    for u in 2..=6 {
        assert_eq!(index(s, u, FeedKind::Home), ids(&[1]), "home of {u}");
    }
    assert_eq!(index(s, 9, FeedKind::Notifications), ids(&[1]));
    assert!(
        s.get(&keys::fanout::key(1, id(1))).unwrap().is_none(),
        "finished"
    );
    assert_eq!(
        sink.side_ids("audit"),
        vec![id(1).to_string()],
        "emitted once"
    );
    assert_eq!(prc(s), prc_before, "no decision taken again");
    assert_eq!(restarted.stats().dropped.load(Ordering::Relaxed), 0);
}

#[test]
fn another_users_retraction_of_a_split_fanout_is_dead_lettered_and_the_fanout_finishes() {
    // The fan-out cursor's key is the activity's id, shared with its retraction. A retraction
    // by someone else, from another partition, planned while the post's fan-out is split, must
    // be judged (and rejected) as a retraction, not taken for the removal's next step.
    let (_d, store) = fresh();
    let s = &*store;
    let mut projector = Projector::new(1);
    projector.fanout.max_entries_per_step = 2;
    let (sink, mut log, mut pos) = (Sink::default(), Log::default(), positions());
    let ok = Applier::new(store.clone(), projector.clone(), "c");
    let followers = [2, 3, 4, 5, 6];
    apply(
        &ok,
        &mut pos,
        &log.records(&follows(100, &followers, 1)),
        &sink,
    );

    // The post's first step commits, then the process "crashes".
    let crashing: Arc<dyn Store> = Arc::new(FailAfter {
        inner: store.clone(),
        left: AtomicUsize::new(1),
    });
    let a = Applier::new(crashing, projector.clone(), "c");
    let post_rec = log.records(&[Event::Activity(post(1, 1, "mine"))]);
    assert!(a.apply(&mut pos, &post_rec, &sink).is_err());
    let cursor = || {
        s.get(&keys::fanout::key(1, id(1)))
            .unwrap()
            .map(|v| keys::fanout::Cursor::decode(&v).unwrap())
    };
    let split = cursor().expect("split mid-way");
    assert_eq!(split.owner, Some(keys::fanout::Owner::Fanout(1)));

    // Another consumer, on the partition of user 2, plans user 2's retraction of the post.
    let steal = Event::Retraction(Retraction {
        id: id(2),
        activity_id: id(1),
        actor: 2,
        time_ms: 1_700_000_100_000,
        producer: who(),
    });
    let steal_rec = Record {
        topic: ACTS.into(),
        partition: 1,
        offset: 0,
        key: Some(steal.kafka_key().into_bytes()),
        payload: Some(tidings_schemas::encode(&steal)),
        timestamp_ms: Some(steal.time_ms()),
    };
    pos.insert((ACTS.to_string(), 1), None);
    apply(&ok, &mut pos, &[steal_rec], &sink);
    {
        let dead = sink.dead.lock().unwrap();
        assert_eq!(dead.len(), 1, "{dead:?}");
        assert!(
            dead[0].reason.contains("cannot retract"),
            "{}",
            dead[0].reason
        );
    }
    assert_eq!(ok.stored_offset(ACTS, 1).unwrap(), Some(1), "moved past it");
    assert_eq!(cursor(), Some(split), "the post's cursor is untouched");
    assert!(
        s.get(&keys::fanout::placement(1, id(1))).unwrap().is_none(),
        "no removal started"
    );

    // The post's consumer restarts and finishes the fan-out.
    apply(&ok, &mut pos, &post_rec, &sink);
    for u in followers {
        assert_eq!(index(s, u, FeedKind::Home), ids(&[1]), "home of {u}");
    }
    assert_eq!(cursor(), None, "finished");
}

#[test]
fn a_split_retraction_lands_after_the_post_planned_before_it_in_its_batch() {
    // The post fans out in one step (3 followers); two more follow, then its retraction needs
    // two steps (5 followers, 4 per step): the first is committed with the batch holding the
    // post, whose followers' entries are built at commit. They must come before the removal.
    let (_d, store) = fresh();
    let mut projector = Projector::new(1);
    projector.fanout.max_entries_per_step = 4;
    let a = Applier::new(store.clone(), projector, "c");
    let (mut log, mut pos, sink) = (Log::default(), positions(), Sink::default());
    let mut events = follows(100, &[10, 11, 12], 1);
    events.push(Event::Activity(post(1, 1, "soon gone")));
    events.extend(follows(103, &[13, 14], 1));
    events.push(Event::Retraction(Retraction {
        id: id(2),
        activity_id: id(1),
        actor: 1,
        time_ms: 1_700_000_100_000,
        producer: who(),
    }));
    apply(&a, &mut pos, &log.records(&events), &sink);
    for u in [10, 11, 12, 13, 14] {
        assert_eq!(index(&*store, u, FeedKind::Home), ids(&[]), "home of {u}");
    }
    assert_eq!(index(&*store, 1, FeedKind::User), ids(&[]));
    assert_eq!(index(&*store, 1, FeedKind::Home), ids(&[]));
}

fn prc(s: &dyn Store) -> Vec<(Vec<u8>, Vec<u8>)> {
    let (b, e) = keys::keyspace_range(1, "prc");
    s.snapshot()
        .unwrap()
        .range(&b, &e, RangeOptions::default())
        .unwrap()
}
