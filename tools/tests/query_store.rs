//! The query service over a real RocksDB store, events applied by the real projector (no
//! broker: the pipeline tests in `query_pipeline.rs` add Kafka and HTTP).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use common::model::{scenario, Model, BASE_MS};
use tidings_consumers::maintain::{MaintainConfig, Maintainer};
use tidings_consumers::project::Projector;
use tidings_core::event::{
    Activity, Event, GraphChange, GraphOp, Producer as Who, Retraction, Update,
};
use tidings_core::keys::feed::FeedKind;
use tidings_core::keys::marks::Mark;
use tidings_core::keys::pull;
use tidings_core::{EventId, UserId};
use tidings_query::cache::{page_json, PageCache};
use tidings_query::notify;
use tidings_query::{FeedRequest, ReadConfig};
use tidings_store::Store;

const CELEB: UserId = 100;
const USERS: i64 = 12;

fn projector() -> Projector {
    let mut p = Projector::new(1);
    p.fanout.hybrid_threshold = 5;
    p
}

fn apply(store: &dyn Store, e: &Event) {
    let body = tidings_schemas::encode(e);
    projector().apply(store, e, &body).expect("apply");
}

fn flat() -> ReadConfig {
    ReadConfig {
        rules: vec![],
        ..ReadConfig::default()
    }
}

/// Every id of a feed, walking pages of `limit` through `cache` (if any).
fn walk(
    store: &dyn Store,
    cache: Option<&PageCache>,
    user: UserId,
    kind: FeedKind,
    limit: usize,
) -> Vec<EventId> {
    let mut ids = Vec::new();
    let mut cursor = None;
    loop {
        let req = FeedRequest {
            user,
            kind,
            limit,
            cursor: cursor.clone(),
            aggregate: false,
        };
        let page: serde_json::Value =
            serde_json::from_slice(&page_json(store, cache, &req, &flat()).unwrap()).unwrap();
        for e in page["entries"].as_array().unwrap() {
            ids.push(EventId(e["id"].as_str().unwrap().parse().unwrap()));
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return ids,
        }
    }
}

fn raw_entries(store: &dyn Store, user: UserId, kind: FeedKind) -> usize {
    common::index_ids(store, user, kind).len()
}

#[test]
fn every_page_equals_the_feed_expected_from_the_actions() {
    let tmp = tempfile::tempdir().unwrap();
    let store = common::store(tmp.path());
    let mut model = Model::default();
    let events = scenario(7, USERS, CELEB);
    for e in &events {
        apply(&*store, e);
        model.apply(e);
    }
    // The celebrity is above the threshold: pulled, and its later posts were not pushed.
    let snap = store.snapshot().unwrap();
    assert!(snap.get(&pull::key(1, CELEB)).unwrap().is_some());
    drop(snap);
    let celeb_posts: Vec<EventId> = model.feed(CELEB, FeedKind::User);
    assert!(celeb_posts.len() >= 3);
    let pushed_to_3 = common::index_ids(&*store, 3, FeedKind::Home);
    assert!(
        celeb_posts.iter().any(|id| !pushed_to_3.contains(id)),
        "some celebrity post must be served by pull, not by push"
    );

    let cache = PageCache::new(8 << 20);
    for user in (1..=USERS).chain([CELEB]) {
        for kind in FeedKind::ALL {
            let want = model.feed(user, kind);
            for limit in [1, 3, 100] {
                let got = walk(&*store, Some(&cache), user, kind, limit);
                assert_eq!(got, want, "user {user} {kind:?} limit {limit}");
            }
        }
    }
    // Unknown user: empty feeds.
    assert!(walk(&*store, None, 99_999, FeedKind::Home, 20).is_empty());
}

fn post(n: u64, actor: UserId, to: Vec<UserId>) -> Event {
    Event::Activity(Activity {
        id: EventId(uuid::Uuid::from_u128(0xabcd_0000 + n as u128)),
        actor,
        verb: "post".into(),
        object: format!("post:x{n}"),
        target: None,
        time_ms: BASE_MS + 10_000_000 + n as i64 * 1_000,
        to,
        text: format!("post {n}"),
        attributes: BTreeMap::new(),
        producer: Who::new("t", "1"),
    })
}

fn graph(op: GraphOp, actor: UserId, subject: UserId, n: u64) -> Event {
    Event::Graph(GraphChange {
        id: EventId(uuid::Uuid::from_u128(0xbbbb_0000 + n as u128)),
        actor,
        subject,
        op,
        time_ms: BASE_MS + n as i64,
        producer: Who::new("t", "1"),
    })
}

#[test]
fn a_cached_page_is_never_served_after_its_feed_changed() {
    let tmp = tempfile::tempdir().unwrap();
    let store = common::store(tmp.path());
    let cache = PageCache::new(8 << 20);
    for e in scenario(11, USERS, CELEB) {
        apply(&*store, &e);
    }
    let reader: UserId = 4;
    let followee = 50;
    apply(&*store, &graph(GraphOp::Follow, reader, followee, 1));
    apply(&*store, &post(1, followee, vec![reader]));
    let check = |what: &str| {
        for kind in FeedKind::ALL {
            for limit in [3, 20] {
                let cached = walk(&*store, Some(&cache), reader, kind, limit);
                let fresh = walk(&*store, None, reader, kind, limit);
                assert_eq!(cached, fresh, "after {what}: {kind:?} limit {limit}");
            }
        }
    };
    check("warm-up");
    let (hits_before, _) = cache.stats();
    check("nothing");
    assert!(
        cache.stats().0 > hits_before,
        "unchanged pages are cache hits"
    );

    let changes: Vec<(&str, Event)> = vec![
        ("a followee's post", post(2, followee, vec![])),
        ("a mention", post(3, 7, vec![reader])),
        ("a pulled author's post", post(4, CELEB, vec![])),
        (
            "an update of a shown body",
            Event::Update(Update {
                id: EventId(uuid::Uuid::from_u128(0xcccc_0001)),
                activity_id: EventId(uuid::Uuid::from_u128(0xabcd_0000 + 2)),
                actor: followee,
                time_ms: BASE_MS + 20_000_000,
                text: Some("edited".into()),
                attributes: BTreeMap::new(),
                producer: Who::new("t", "1"),
            }),
        ),
        (
            "a retraction",
            Event::Retraction(Retraction {
                id: EventId(uuid::Uuid::from_u128(0xcccc_0002)),
                activity_id: EventId(uuid::Uuid::from_u128(0xabcd_0000 + 4)),
                actor: CELEB,
                time_ms: BASE_MS + 20_000_001,
                producer: Who::new("t", "1"),
            }),
        ),
        ("a mute", graph(GraphOp::Mute, reader, 7, 2)),
        ("a block", graph(GraphOp::Block, reader, followee, 3)),
        ("an unblock", graph(GraphOp::Unblock, reader, followee, 4)),
        ("an unfollow", graph(GraphOp::Unfollow, reader, followee, 5)),
    ];
    for (what, e) in changes {
        apply(&*store, &e);
        check(what);
    }
    // The update is visible through the cache.
    let req = FeedRequest {
        user: 50,
        kind: FeedKind::User,
        limit: 20,
        cursor: None,
        aggregate: false,
    };
    let body = page_json(&*store, Some(&cache), &req, &flat()).unwrap();
    assert!(String::from_utf8_lossy(&body).contains("edited"));
    // Background trimming changes feeds too.
    let mut m = Maintainer::new(
        store.clone(),
        MaintainConfig {
            max_entries: 5,
            ..MaintainConfig::default()
        },
    );
    m.pass().unwrap();
    check("trimming");
}

#[test]
fn paging_while_items_arrive_returns_each_item_once() {
    let tmp = tempfile::tempdir().unwrap();
    let store = common::store(tmp.path());
    let reader = 1;
    for a in 2..=6 {
        apply(&*store, &graph(GraphOp::Follow, reader, a, a as u64));
    }
    let mut n = 0;
    for _ in 0..12 {
        for a in 2..=6 {
            n += 1;
            apply(&*store, &post(n, a, vec![]));
        }
    }
    let before = walk(&*store, None, reader, FeedKind::Home, 100);
    assert_eq!(before.len(), 60);
    let cache = PageCache::new(1 << 20);
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let req = FeedRequest {
            user: reader,
            kind: FeedKind::Home,
            limit: 7,
            cursor: cursor.clone(),
            aggregate: false,
        };
        let page: serde_json::Value =
            serde_json::from_slice(&page_json(&*store, Some(&cache), &req, &flat()).unwrap())
                .unwrap();
        for e in page["entries"].as_array().unwrap() {
            seen.push(EventId(e["id"].as_str().unwrap().parse().unwrap()));
        }
        // New items arrive at the head between pages.
        for a in 2..=4 {
            n += 1;
            apply(&*store, &post(n, a, vec![]));
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let unique: HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "an item was shown twice");
    assert_eq!(
        seen, before,
        "every item present at the start, once, in order"
    );
}

#[test]
fn notification_counts_and_marks() {
    let tmp = tempfile::tempdir().unwrap();
    let store = common::store(tmp.path());
    let me = 1;
    for n in 1..=5 {
        apply(&*store, &post(n, 10 + n as i64, vec![me]));
    }
    let c = notify::counts(&*store, me).unwrap();
    assert_eq!((c.unseen, c.unread), (5, 5));
    let third = EventId(uuid::Uuid::from_u128(0xabcd_0000 + 3));
    let c = notify::mark(&*store, me, Mark::Seen, Some(third)).unwrap();
    assert_eq!((c.unseen, c.unread), (2, 5));
    // Marks never move back.
    let first = EventId(uuid::Uuid::from_u128(0xabcd_0000 + 1));
    let c = notify::mark(&*store, me, Mark::Seen, Some(first)).unwrap();
    assert_eq!((c.unseen, c.unread), (2, 5));
    // Reading marks seen as well.
    let c = notify::mark(&*store, me, Mark::Read, None).unwrap();
    assert_eq!((c.unseen, c.unread), (0, 0));
    apply(&*store, &post(6, 16, vec![me]));
    apply(&*store, &post(7, 17, vec![me]));
    apply(&*store, &graph(GraphOp::Mute, me, 17, 1));
    let c = notify::counts(&*store, me).unwrap();
    assert_eq!((c.unseen, c.unread), (1, 1), "muted actors do not count");
    // Not one of my notifications: refused.
    let other = EventId(uuid::Uuid::from_u128(0xabcd_0000 + 99));
    assert!(matches!(
        notify::mark(&*store, me, Mark::Seen, Some(other)),
        Err(notify::MarkError::NotInFeed(..))
    ));
    // Nobody's notifications: zero.
    let c = notify::counts(&*store, 4242).unwrap();
    assert_eq!((c.unseen, c.unread), (0, 0));
}

#[test]
fn maintenance_trims_feeds_and_removes_unfollowed_entries_idempotently() {
    let tmp = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = common::store(tmp.path());
    let reader = 1;
    apply(&*store, &graph(GraphOp::Follow, reader, 2, 1));
    apply(&*store, &graph(GraphOp::Follow, reader, 3, 2));
    for n in 1..=8 {
        apply(&*store, &post(n, 2, vec![]));
    }
    for n in 9..=12 {
        apply(&*store, &post(n, 3, vec![]));
    }
    apply(&*store, &graph(GraphOp::Unfollow, reader, 3, 3));
    let visible = walk(&*store, None, reader, FeedKind::Home, 100);
    assert_eq!(
        visible.len(),
        8,
        "unfollowed entries are hidden before cleanup"
    );
    assert_eq!(raw_entries(&*store, reader, FeedKind::Home), 12);

    let mut m = Maintainer::new(
        store.clone(),
        MaintainConfig {
            max_entries: 6,
            ..MaintainConfig::default()
        },
    );
    m.pass().unwrap();
    let stats = m.stats();
    // Newest 6 kept (posts 7..12), of which 9..12 were by the unfollowed user 3.
    assert_eq!(raw_entries(&*store, reader, FeedKind::Home), 2);
    assert_eq!(
        stats.unfollowed.load(std::sync::atomic::Ordering::Relaxed),
        4
    );
    assert_eq!(raw_entries(&*store, 2, FeedKind::User), 6);
    let after = walk(&*store, None, reader, FeedKind::Home, 100);
    assert_eq!(after, visible[..2].to_vec());
    // Again: nothing more to do, nothing changes.
    let dump = common::dump(&*store);
    m.pass().unwrap();
    m.pass().unwrap();
    assert_eq!(common::dump(&*store), dump);
}

/// Read-time follow checks take two paths: one range over the reader's followees when they are
/// few, a point read per actor when they are many. Both must hide exactly the unfollowed.
#[test]
fn unfollowed_authors_are_hidden_for_readers_following_few_or_many() {
    use common::model::{id, who};
    use tidings_core::event::GraphOp;

    let tmp = tempfile::tempdir().unwrap();
    let store = common::store(tmp.path());
    let mut model = Model::default();
    let mut n = 0u64;
    let mut next = || {
        n += 1;
        (id(n), BASE_MS + n as i64 * 1_000)
    };
    let graph = common::model::graph_change;
    // Reader 1 follows 300 authors (more than one range's worth), reader 2 follows 20.
    const FEW: UserId = 2;
    const MANY: UserId = 1;
    let authors: Vec<UserId> = (1_000..1_300).collect();
    let mut events = Vec::new();
    for &a in &authors {
        events.push(graph(GraphOp::Follow, MANY, a, next()));
    }
    for &a in &authors[..20] {
        events.push(graph(GraphOp::Follow, FEW, a, next()));
    }
    for &a in &authors {
        let (id, time_ms) = next();
        events.push(Event::Activity(Activity {
            id,
            actor: a,
            verb: "post".into(),
            object: format!("post:{a}"),
            target: None,
            time_ms,
            to: vec![],
            text: format!("post by {a}"),
            attributes: BTreeMap::new(),
            producer: who(),
        }));
    }
    // Every seventh author is unfollowed by both readers (no cleanup runs: read time only).
    for &a in authors.iter().step_by(7) {
        events.push(graph(GraphOp::Unfollow, MANY, a, next()));
        if a < authors[20] {
            events.push(graph(GraphOp::Unfollow, FEW, a, next()));
        }
    }
    for e in &events {
        apply(&*store, e);
        model.apply(e);
    }
    for reader in [MANY, FEW] {
        let want = model.feed(reader, FeedKind::Home);
        assert!(!want.is_empty());
        let unfollowed_left = raw_entries(&*store, reader, FeedKind::Home) - want.len();
        assert!(
            unfollowed_left > 0,
            "reader {reader}: the index must still hold unfollowed items, or this tests nothing"
        );
        for limit in [7, 100] {
            assert_eq!(
                walk(&*store, None, reader, FeedKind::Home, limit),
                want,
                "reader {reader} limit {limit}"
            );
        }
    }
}
