//! Backup, archive, restore and verify against a real broker (tansu) and RocksDB on disk.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use tidings_consumers::apply::Applier;
use tidings_consumers::backup::restore::{self, RestoreOptions};
use tidings_consumers::backup::{self, BackupOptions, LogSource, Manifest};
use tidings_consumers::digest::{digest, ProjectionDigest};
use tidings_consumers::kafka::{self, Assignment, ConsumerConfig};
use tidings_consumers::project::Projector;
use tidings_consumers::verify::{self, VerifyOptions};
use tidings_core::event::{Activity, Event, GraphChange, GraphOp, Producer as Who, Retraction};
use tidings_core::keys::feed::FeedKind;
use tidings_core::{EventId, UserId};
use tidings_producers::{Delivery, KafkaConfig, Producer, Topics};
use tidings_store::{Store, WriteBatch};

const GROUP: &str = "tidings-fanout";
const USERS: i64 = 14;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Events numbered from `n`, stamped now (restore `--until` compares record times with the
/// backups' wall-clock times).
struct Gen {
    n: u64,
    who: Who,
}

impl Gen {
    fn id(&mut self) -> (EventId, i64) {
        self.n += 1;
        (
            EventId(uuid::Uuid::from_u64_pair(0x0190_0000_0000_7000, self.n)),
            now_ms(),
        )
    }

    fn follow(&mut self, actor: UserId, subject: UserId) -> Event {
        let (id, t) = self.id();
        Event::Graph(GraphChange {
            id,
            actor,
            subject,
            op: GraphOp::Follow,
            time_ms: t,
            producer: self.who.clone(),
        })
    }

    fn act(&mut self, actor: UserId, verb: &str, object: String, to: Vec<UserId>) -> Event {
        let (id, t) = self.id();
        Event::Activity(Activity {
            id,
            actor,
            verb: verb.into(),
            object,
            target: None,
            time_ms: t,
            to,
            text: format!("event {}", self.n),
            attributes: BTreeMap::new(),
            producer: self.who.clone(),
        })
    }

    fn retract(&mut self, of: &Event) -> Event {
        let (id, t) = self.id();
        Event::Retraction(Retraction {
            id,
            activity_id: of.id(),
            actor: of.actor(),
            time_ms: t,
            producer: self.who.clone(),
        })
    }

    /// Posts and likes by every user (each post mentions the next user).
    fn round(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        for u in 1..=USERS {
            let next = (u % USERS) + 1;
            let post = self.act(u, "post", format!("post:{}", self.n + 1), vec![next]);
            let like = self.act(next, "like", format!("post:{}", post.id()), vec![u]);
            out.push(post);
            out.push(like);
        }
        out
    }

    /// Everyone follows user 1 (a pulled author) and the next user.
    fn graph(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        for u in 2..=USERS {
            out.push(self.follow(u, 1));
            out.push(self.follow(u, (u % USERS) + 1));
        }
        out
    }
}

fn gen() -> Gen {
    Gen {
        n: 0,
        who: Who::new("svc", "1.0.0"),
    }
}

fn projector() -> Projector {
    let mut pr = Projector::new(1);
    pr.fanout.hybrid_threshold = 6;
    pr
}

/// Live consumers on `store` and where each partition must reach.
struct Live {
    store: Arc<dyn Store>,
    ends: HashMap<(String, i32), i64>,
    _consumer: kafka::ConsumerHandle,
}

impl Live {
    fn start(kafka: &KafkaConfig, store: Arc<dyn Store>) -> Live {
        let mut cfg = ConsumerConfig::new(kafka.clone());
        cfg.assignment = Assignment::Static { instance: 0, of: 1 };
        cfg.group = GROUP.into();
        let consumer = kafka::spawn(cfg, Applier::new(store.clone(), projector(), GROUP)).unwrap();
        Live {
            store,
            ends: HashMap::new(),
            _consumer: consumer,
        }
    }

    fn published(&mut self, deliveries: &[Delivery]) {
        for d in deliveries {
            let e = self.ends.entry((d.topic.clone(), d.partition)).or_insert(0);
            *e = (*e).max(d.offset + 1);
        }
    }

    fn wait(&self) {
        let a = Applier::new(self.store.clone(), projector(), GROUP);
        wait_until(Duration::from_secs(60), "live consumers caught up", || {
            self.ends
                .iter()
                .all(|((t, part), e)| a.stored_offset(t, *part).unwrap().unwrap_or(0) >= *e)
        });
    }

    fn publish(&mut self, p: &Producer, events: &[Event]) {
        let d = publish_all(p, events);
        self.published(&d);
        self.wait();
    }
}

fn source(kafka: &KafkaConfig) -> LogSource {
    LogSource {
        kafka: kafka.clone(),
        topics: Topics::default(),
        reread: false,
    }
}

fn restore_into(
    store: &Arc<dyn Store>,
    dir: &Path,
    backup: Option<&str>,
    until: Option<i64>,
    kafka: Option<&KafkaConfig>,
) -> restore::RestoreReport {
    let mut o = RestoreOptions::new(projector(), GROUP);
    o.backup = backup.map(str::to_string);
    o.until = until;
    o.log = kafka.map(source);
    o.batch_records = 37;
    restore::run(store.clone(), dir, &o, &mut |_, _, _| {}).unwrap()
}

/// What readers see must match; `fver` (change counters) may be higher after a fuzzy restore.
fn assert_same_content(a: &ProjectionDigest, b: &ProjectionDigest, what: &str) {
    for k in a
        .keyspaces
        .iter()
        .filter(|k| k.name != "off" && k.name != "fver")
    {
        let o = b
            .keyspace(&k.name)
            .unwrap_or_else(|| panic!("{what}: keyspace {} missing", k.name));
        assert_eq!(
            (o.keys, &o.sha256),
            (k.keys, &k.sha256),
            "{what}: keyspace {}",
            k.name
        );
    }
    assert_eq!(a.content, b.content, "{what}: content digests");
}

fn tidings() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tidings"));
    c.env("TIDINGS_LOG", "warn");
    c
}

/// A backup taken while events are applied (chunks from different moments), restored into an
/// empty store and completed from the log, equals the uninterrupted run; consumers started on
/// the restored store resume from its offsets and stay equal.
#[test]
fn hot_backup_during_ingest_restores_to_the_uninterrupted_state() {
    let tmp = tempfile::tempdir().unwrap();
    let b = broker(tmp.path());
    let kafka = b.kafka();
    let p = producer(&kafka);
    let mut live = Live::start(&kafka, store(&tmp.path().join("live")));
    let mut g = gen();
    let graph = g.graph();
    live.publish(&p, &graph);
    let first = g.round();
    live.publish(&p, &first);

    // During the backup: more posts, retractions of earlier posts and new follows.
    let mut during = Vec::new();
    for (i, e) in first.iter().enumerate().filter(|(i, _)| i % 6 == 0) {
        during.push(g.retract(e));
        let u = (i as i64 % USERS) + 1;
        during.push(g.follow(u, ((u + 4) % USERS) + 1));
        during.extend(g.round().into_iter().take(6));
    }
    let dir = tmp.path().join("backups");
    let o = BackupOptions {
        chunk_bytes: 1 << 10, // many small chunks: many read views, far apart in time
        max_bytes_per_s: Some(20_000),
        ..BackupOptions::default()
    };
    let source_store = live.store.clone();
    let (manifest, published) = std::thread::scope(|s| {
        let backup = s.spawn(|| backup::full(&*source_store, &dir, &o, &mut |_, _| {}).unwrap());
        let mut published = Vec::new();
        for slice in during.chunks(8) {
            published.extend(publish_all(&p, slice));
            std::thread::sleep(Duration::from_millis(150));
        }
        (backup.join().unwrap(), published)
    });
    live.published(&published);
    live.wait();
    assert!(
        manifest.chunks.len() > 20,
        "{} chunks",
        manifest.chunks.len()
    );
    let behind: i64 = manifest.offsets[GROUP].values().sum();
    let head: i64 = live.ends.values().sum();
    assert!(
        behind < head,
        "the backup's offsets ({behind}) precede events applied after them ({head})"
    );

    let after = g.round();
    live.publish(&p, &after);
    let uninterrupted = digest(&*live.store, 1).unwrap();
    assert!(uninterrupted.keyspace("feed").unwrap().keys > 200);

    let restored = store(&tmp.path().join("restored"));
    let r = restore_into(&restored, &dir, None, None, Some(&kafka));
    assert_eq!(r.chain, vec![manifest.id.clone()]);
    assert!(r.replayed_kafka > 0 && r.counts > 0, "{r:?}");
    assert_same_content(&uninterrupted, &digest(&*restored, 1).unwrap(), "restored");
    for u in [1, 3, 7] {
        for kind in [FeedKind::Home, FeedKind::User, FeedKind::Notifications] {
            assert_eq!(
                feed_ids(&*restored, u, kind),
                feed_ids(&*live.store, u, kind),
                "{kind:?} feed of user {u}"
            );
        }
    }

    // Resume: consumers on the restored store continue from its offsets.
    let mut resumed = Live::start(&kafka, restored.clone());
    resumed.ends = live.ends.clone();
    let last = g.round();
    let d = publish_all(&p, &last);
    live.published(&d);
    resumed.published(&d);
    live.wait();
    resumed.wait();
    assert_same_content(
        &digest(&*live.store, 1).unwrap(),
        &digest(&*restored, 1).unwrap(),
        "after resuming",
    );

    // Refused: a non-empty target without --force.
    let e = restore::run(
        restored.clone(),
        &dir,
        &RestoreOptions::new(projector(), GROUP),
        &mut |_, _, _| {},
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("not empty") && e.to_string().contains("--force"),
        "{e}"
    );
}

/// Full + 2 incrementals restore to what a full backup of the same moment restores to; `until`
/// gives the state at a time; the archive stands in for Kafka; a flipped byte is refused with
/// the file named; verify finds nothing on healthy copies and names an altered key.
#[test]
fn incremental_chain_until_archive_corruption_and_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let b = broker(tmp.path());
    let kafka = b.kafka();
    let p = producer(&kafka);
    let live_dir = tmp.path().join("live");
    let mut live = Live::start(&kafka, store(&live_dir));
    let dir = tmp.path().join("backups");
    let o = BackupOptions::default();
    let src = source(&kafka);
    let mut g = gen();

    live.publish(&p, &g.graph());
    live.publish(&p, &g.round());
    let full = backup::full(&*live.store, &dir, &o, &mut |_, _| {}).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let second = g.round();
    live.publish(&p, &second);
    let inc1 = backup::incremental(&*live.store, &dir, &src, GROUP, &o, &mut |_, _| {}).unwrap();
    assert_eq!(inc1.parent.as_deref(), Some(full.id.as_str()));
    assert_eq!(inc1.records, second.len() as u64);
    let at_second = digest(&*live.store, 1).unwrap();
    let until = second.iter().map(Event::time_ms).max().unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let mut third = g.round();
    third.push(g.retract(&second[0]));
    live.publish(&p, &third);
    let inc2 = backup::incremental(&*live.store, &dir, &src, GROUP, &o, &mut |_, _| {}).unwrap();
    assert_eq!(inc2.parent.as_deref(), Some(inc1.id.as_str()));
    let full2 = backup::full(&*live.store, &dir, &o, &mut |_, _| {}).unwrap();
    let now = digest(&*live.store, 1).unwrap();

    // The chain and the later full backup restore to the same state, without Kafka.
    let chain = store(&tmp.path().join("chain"));
    let r = restore_into(&chain, &dir, Some(&inc2.id), None, None);
    assert_eq!(
        r.chain,
        vec![full.id.clone(), inc1.id.clone(), inc2.id.clone()]
    );
    assert_eq!(r.replayed_segments, inc1.records + inc2.records);
    let single = store(&tmp.path().join("single"));
    restore_into(&single, &dir, Some(&full2.id), None, None);
    let (dc, ds) = (digest(&*chain, 1).unwrap(), digest(&*single, 1).unwrap());
    assert_same_content(&ds, &dc, "full + 2 incrementals vs full");
    assert_same_content(&now, &dc, "restored chain vs live");

    // --until the end of the second round: the newest full backup finished by then, the
    // first incremental and nothing of the third round.
    let then = store(&tmp.path().join("then"));
    let r = restore_into(&then, &dir, None, Some(until), None);
    assert_eq!(
        r.chain,
        vec![full.id.clone(), inc1.id.clone(), inc2.id.clone()]
    );
    assert_same_content(&at_second, &digest(&*then, 1).unwrap(), "--until");

    // The archive replaces Kafka: a full backup, then the archived log after it.
    let arch = backup::archive(&dir, &src, &mut |_, _| {}).unwrap();
    assert!(arch.records > 0);
    let again = backup::archive(&dir, &src, &mut |_, _| {}).unwrap();
    assert_eq!(
        again.records, 0,
        "a second run continues where the first stopped"
    );
    let from_archive = store(&tmp.path().join("archive"));
    let r = restore_into(&from_archive, &dir, Some(&full.id), None, None);
    assert!(r.replayed_segments > 0);
    assert_same_content(&now, &digest(&*from_archive, 1).unwrap(), "full + archive");

    // Verify: nothing on healthy copies.
    let vo = VerifyOptions::default();
    let v = verify::projections(&*live.store, 1, &*chain, 1, &vo).unwrap();
    assert!(v.same && v.keys > 100, "{v:?}");
    let v = verify::against_backup(&*live.store, 1, &dir, Some(&full2.id), &vo).unwrap();
    assert!(v.same, "{v:?}");
    // …and the altered key, by name, on both.
    let victim = tidings_core::keys::messages::key(1, second[2].id());
    let mut wb = WriteBatch::new();
    wb.set(victim.clone(), b"tampered".to_vec());
    chain.commit(wb).unwrap();
    let v = verify::projections(&*live.store, 1, &*chain, 1, &vo).unwrap();
    assert_eq!(
        (v.same, v.differing_ranges, v.differences.len()),
        (false, 1, 1),
        "{v:?}"
    );
    let rel = verify::printable(&victim[2..]);
    assert_eq!(v.differences[0].key, rel);
    assert_eq!(
        v.differences[0].right.as_deref(),
        Some(backup::hex(b"tampered").as_str())
    );
    let v = verify::against_backup(&*chain, 1, &dir, Some(&full2.id), &vo).unwrap();
    assert_eq!((v.same, v.differences.len()), (false, 1), "{v:?}");
    assert_eq!(v.differences[0].key, rel);

    // The CLI: verify's exit status; a flipped byte is refused, naming the file, and nothing
    // is written.
    drop(chain);
    let out = tidings()
        .args(["verify", "--store"])
        .arg(format!("rocksdb:{}", tmp.path().join("chain").display()))
        .arg("--backup")
        .arg(&dir)
        .args(["--backup-id", &full2.id])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains(&rel), "{stderr}");
    let victim_file = &full2
        .chunks
        .iter()
        .find(|c| c.keyspace == "feed")
        .unwrap()
        .file;
    let path = Manifest::path(&dir, &full2.id).join(victim_file);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    std::fs::write(&path, bytes).unwrap();
    let target = tmp.path().join("corrupt");
    let out = tidings()
        .args(["restore", "--no-kafka", "--from"])
        .arg(&dir)
        .args(["--backup", &full2.id, "--store"])
        .arg(format!("rocksdb:{}", target.display()))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(victim_file.as_str()) && stderr.contains("checksum"),
        "{stderr}"
    );
    let t = store(&target);
    let held = dump(&*t);
    assert!(
        held.iter()
            .all(|(k, _)| *k == tidings_core::keys::meta::layout()),
        "nothing restored from a corrupt backup: {} keys",
        held.len()
    );
}
