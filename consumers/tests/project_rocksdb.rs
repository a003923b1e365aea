//! The projector on the real embedded store: events encoded as producers send them, applied
//! batch by batch, read back through the query path.

use std::sync::Arc;

use tidings_consumers::project::{ProjectError, Projector};
use tidings_core::keys::feed::FeedKind;
use tidings_core::keys::{self, messages};
use tidings_core::page::PageEntry;
use tidings_core::{
    Activity, Event, EventId, GraphChange, GraphOp, Producer, Retraction, Update, UserId,
};
use tidings_query::FeedRequest;
use tidings_store::rocks::{RocksOptions, RocksStore};
use tidings_store::{RangeOptions, Store};

fn producer() -> Producer {
    Producer::new("test", "1")
}

fn id(n: u8) -> EventId {
    EventId::from_bytes([n; 16])
}

fn follow(n: u8, actor: UserId, subject: UserId, op: GraphOp) -> Event {
    Event::Graph(GraphChange {
        id: id(n),
        actor,
        subject,
        op,
        time_ms: 1_000 + n as i64,
        producer: producer(),
    })
}

fn post(n: u8, actor: UserId, to: Vec<UserId>) -> Event {
    Event::Activity(Activity {
        id: id(n),
        actor,
        verb: "post".into(),
        object: format!("post:{n}"),
        target: None,
        time_ms: 10_000 + n as i64,
        to,
        text: format!("post {n}"),
        attributes: Default::default(),
        producer: producer(),
    })
}

fn apply(p: &Projector, s: &dyn Store, e: &Event) -> Result<u64, ProjectError> {
    let body = tidings_schemas::encode(e);
    let decoded = tidings_schemas::decode_and_validate(&body).expect("valid event");
    p.apply(s, &decoded, &body)
}

fn ids(s: &dyn Store, user: UserId, kind: FeedKind) -> Vec<EventId> {
    let page = tidings_query::read(
        s,
        &FeedRequest {
            user,
            kind,
            limit: 100,
            cursor: None,
            aggregate: false,
        },
        &tidings_query::ReadConfig {
            rules: vec![],
            ..Default::default()
        },
    )
    .expect("page");
    page.entries
        .iter()
        .map(|e| match e {
            PageEntry::Item(i) => i.id,
            PageEntry::Group(g) => panic!("no grouping asked for: {g:?}"),
        })
        .collect()
}

fn index_entries(s: &dyn Store) -> usize {
    let (b, e) = keys::keyspace_range(1, "feed");
    s.snapshot()
        .expect("snapshot")
        .range(&b, &e, RangeOptions::default())
        .expect("range over the feed keyspace")
        .len()
}

/// An empty RocksDB store in a temporary directory (kept alive by the returned guard).
fn fresh_store() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = RocksStore::open(dir.path(), RocksOptions::default()).expect("open RocksDB");
    (dir, Arc::new(store))
}

#[test]
fn follow_post_retract_update_through_the_store() {
    let (_dir, store) = fresh_store();
    let s = &*store;
    let mut p = Projector::new(1);
    p.fanout.max_entries_per_step = 2; // force fan-outs over several batches

    for (n, f) in [(1u8, 2), (2, 3), (3, 4), (4, 5), (5, 6)] {
        apply(&p, s, &follow(n, f, 1, GraphOp::Follow)).unwrap();
    }
    // A repeated follow changes nothing.
    apply(&p, s, &follow(6, 2, 1, GraphOp::Follow)).unwrap();

    // user, own home, 1 notification, 5 followers.
    assert_eq!(apply(&p, s, &post(10, 1, vec![9])).unwrap(), 8);
    for u in 1..=6 {
        assert_eq!(ids(s, u, FeedKind::Home), vec![id(10)], "home of {u}");
    }
    assert_eq!(ids(s, 9, FeedKind::Notifications), vec![id(10)]);
    assert_eq!(ids(s, 1, FeedKind::User), vec![id(10)]);
    assert!(
        s.get(&keys::fanout::key(1, id(10))).unwrap().is_none(),
        "fan-out finished"
    );

    // Replaying the same event rewrites the same entries.
    let before = index_entries(s);
    apply(&p, s, &post(10, 1, vec![9])).unwrap();
    assert_eq!(index_entries(s), before);

    // An update changes the body, not the index.
    apply(
        &p,
        s,
        &Event::Update(Update {
            id: id(11),
            activity_id: id(10),
            actor: 1,
            time_ms: 20_000,
            text: Some("edited".into()),
            attributes: [("lang".to_owned(), "en".to_owned())].into(),
            producer: producer(),
        }),
    )
    .unwrap();
    let page = tidings_query::read(
        s,
        &FeedRequest {
            user: 2,
            kind: FeedKind::Home,
            limit: 10,
            cursor: None,
            aggregate: false,
        },
        &tidings_query::ReadConfig {
            rules: vec![],
            ..Default::default()
        },
    )
    .unwrap();
    match &page.entries[0] {
        PageEntry::Item(i) => {
            assert_eq!(i.text, "edited");
            assert_eq!(i.attributes.get("lang").map(String::as_str), Some("en"));
        }
        other => panic!("{other:?}"),
    }

    // Unfollow hides the author's items at read time, before any cleanup.
    apply(&p, s, &follow(12, 3, 1, GraphOp::Unfollow)).unwrap();
    assert_eq!(ids(s, 3, FeedKind::Home), vec![]);
    assert_eq!(ids(s, 2, FeedKind::Home), vec![id(10)]);

    // Someone else cannot retract it.
    let steal = Event::Retraction(Retraction {
        id: id(13),
        activity_id: id(10),
        actor: 2,
        time_ms: 30_000,
        producer: producer(),
    });
    assert!(matches!(
        apply(&p, s, &steal),
        Err(ProjectError::Rejected(_))
    ));

    // The author can: every index entry goes, the body becomes a tombstone.
    let retract = Event::Retraction(Retraction {
        id: id(14),
        activity_id: id(10),
        actor: 1,
        time_ms: 30_000,
        producer: producer(),
    });
    apply(&p, s, &retract).unwrap();
    for u in 1..=9 {
        assert_eq!(ids(s, u, FeedKind::Home), vec![], "home of {u}");
    }
    assert_eq!(ids(s, 9, FeedKind::Notifications), vec![]);
    // User 3 unfollowed before the retraction, so their stale entry awaits background cleanup;
    // everything else is gone.
    assert_eq!(index_entries(s), 1);
    let tomb = s.get(&messages::key(1, id(10))).unwrap().unwrap();
    assert!(matches!(
        messages::MessageValue::parse(&tomb),
        messages::MessageValue::Retracted { .. }
    ));
    // A redelivered copy of the activity does not resurrect it.
    assert_eq!(apply(&p, s, &post(10, 1, vec![9])).unwrap(), 0);
    assert_eq!(ids(s, 2, FeedKind::Home), vec![]);
}

#[test]
fn follow_backfills_recent_items() {
    let (_dir, store) = fresh_store();
    let s = &*store;
    let p = Projector::new(1);
    for n in 20..25 {
        apply(&p, s, &post(n, 7, vec![])).unwrap();
    }
    assert_eq!(ids(s, 8, FeedKind::Home), vec![]);
    apply(&p, s, &follow(1, 8, 7, GraphOp::Follow)).unwrap();
    assert_eq!(
        ids(s, 8, FeedKind::Home),
        (20..25).rev().map(id).collect::<Vec<_>>()
    );
}
