#![allow(clippy::unwrap_used)]

use super::*;
use crate::event::Producer;
use proptest::prelude::*;

fn id(n: u8) -> EventId {
    EventId::from_bytes([n; 16])
}

fn scanned(
    n: u8,
    actor: UserId,
    verb: &str,
    object: &str,
    time_ms: i64,
    reason: Reason,
) -> Scanned {
    Scanned {
        pos: Position { time_ms, id: id(n) },
        entry: FeedEntry {
            actor,
            verb: verb.into(),
            object: object.into(),
            reason,
        },
        body: Some(Activity {
            id: id(n),
            actor,
            verb: verb.into(),
            object: object.into(),
            target: None,
            time_ms,
            to: vec![],
            text: format!("#{n}"),
            attributes: Default::default(),
            producer: Producer::new("t", "1"),
        }),
    }
}

fn viewer_following(v: UserId, f: &[UserId]) -> Visibility {
    Visibility {
        viewer: v,
        following: f.iter().copied().collect(),
        ..Default::default()
    }
}

fn ids(p: &Page) -> Vec<EventId> {
    p.entries
        .iter()
        .flat_map(|e| match e {
            PageEntry::Item(i) => vec![i.id],
            PageEntry::Group(g) => g.activity_ids.clone(),
        })
        .collect()
}

#[test]
fn cursor_round_trips_and_rejects_garbage() {
    let c = Cursor(Position {
        time_ms: 1_700_000_000_000,
        id: id(3),
    });
    assert_eq!(Cursor::decode(&c.encode()), Ok(c));
    assert!(Cursor::decode("").is_err());
    assert!(Cursor::decode("!!!").is_err());
    assert!(Cursor::decode("AAAA").is_err());
    let msg = Cursor::decode("zzz").unwrap_err().to_string();
    assert!(msg.contains("next_cursor"), "{msg}");
}

#[test]
fn hides_retracted_unfollowed_blocked_and_muted() {
    let mut retracted = scanned(1, 2, "post", "a", 10, Reason::Follow);
    retracted.body = None;
    let rows = vec![
        retracted,
        scanned(2, 3, "post", "b", 9, Reason::Follow), // no longer followed
        scanned(3, 4, "post", "c", 8, Reason::Follow), // blocked
        scanned(4, 5, "post", "d", 7, Reason::Follow), // muted
        scanned(5, 2, "post", "e", 6, Reason::Follow), // shown
        scanned(6, 9, "post", "f", 5, Reason::Own),    // the viewer's own
    ];
    let mut vis = viewer_following(9, &[2, 4, 5]);
    vis.blocked.insert(4);
    vis.muted.insert(5);
    let page = assemble(FeedKind::Home, &rows, false, &vis, &[], false, 20);
    assert_eq!(ids(&page), vec![id(5), id(6)]);
    assert_eq!(page.next_cursor, None);
}

#[test]
fn notifications_show_strangers_but_not_blocked_ones() {
    let rows = vec![
        scanned(1, 7, "comment", "p", 2, Reason::Mention),
        scanned(2, 8, "comment", "p", 1, Reason::Mention),
    ];
    let mut vis = viewer_following(1, &[]);
    vis.blocked.insert(8);
    let page = assemble(FeedKind::Notifications, &rows, false, &vis, &[], false, 20);
    assert_eq!(ids(&page), vec![id(1)]);
}

#[test]
fn cursor_points_after_the_last_taken_entry() {
    let rows: Vec<_> = (0..5)
        .map(|n| scanned(n, 2, "post", "x", 100 - n as i64, Reason::Follow))
        .collect();
    let vis = viewer_following(1, &[2]);
    let page = assemble(FeedKind::Home, &rows, false, &vis, &[], false, 3);
    assert_eq!(ids(&page), vec![id(0), id(1), id(2)]);
    let c = Cursor::decode(page.next_cursor.as_deref().unwrap()).unwrap();
    assert_eq!(c.0, rows[2].pos);
    // A scan that hid everything but was cut short still moves the cursor on.
    let vis = viewer_following(1, &[]);
    let page = assemble(FeedKind::Home, &rows, true, &vis, &[], false, 3);
    assert!(page.entries.is_empty());
    assert_eq!(
        Cursor::decode(page.next_cursor.as_deref().unwrap())
            .unwrap()
            .0,
        rows[4].pos
    );
}

#[test]
fn likes_group_by_object_and_posts_by_actor_window() {
    let rows = vec![
        scanned(1, 2, "like", "post:1", 100, Reason::Mention),
        scanned(2, 3, "like", "post:1", 99, Reason::Mention),
        scanned(3, 4, "post", "photo:1", 98, Reason::Mention),
        scanned(4, 5, "like", "post:1", 97, Reason::Mention),
        scanned(5, 6, "like", "post:1", 96, Reason::Mention),
        scanned(6, 4, "post", "photo:2", 95, Reason::Mention),
        scanned(7, 2, "like", "post:2", 94, Reason::Mention),
        scanned(8, 4, "post", "photo:3", 10, Reason::Mention), // outside the window of the first burst
    ];
    let rules = vec![
        AggregationRule {
            name: "likes".into(),
            verbs: vec!["like".into()],
            feeds: vec![],
            by: GroupBy::VerbObject,
            window_ms: 0,
        },
        AggregationRule {
            name: "bursts".into(),
            verbs: vec!["post".into()],
            feeds: vec![],
            by: GroupBy::VerbActor,
            window_ms: 50,
        },
    ];
    let page = assemble(
        FeedKind::Notifications,
        &rows,
        false,
        &viewer_following(1, &[]),
        &rules,
        true,
        20,
    );
    assert_eq!(page.entries.len(), 4);
    let PageEntry::Group(likes) = &page.entries[0] else {
        panic!("{:?}", page.entries[0])
    };
    assert_eq!(likes.actors, vec![2, 3, 5, 6]);
    assert_eq!(
        (likes.count, likes.newest_time_ms, likes.oldest_time_ms),
        (4, 100, 96)
    );
    assert_eq!(likes.summary, "user 2, user 3 and 2 others liked post:1");
    let PageEntry::Group(burst) = &page.entries[1] else {
        panic!()
    };
    assert_eq!(burst.activity_ids, vec![id(3), id(6)]);
    assert_eq!(burst.summary, "user 4 posted 2 times");
    assert!(matches!(&page.entries[2], PageEntry::Item(i) if i.id == id(7)));
    assert!(matches!(&page.entries[3], PageEntry::Item(i) if i.id == id(8)));
    // Flat when asked, and with no rules.
    let flat = assemble(
        FeedKind::Notifications,
        &rows,
        false,
        &viewer_following(1, &[]),
        &rules,
        false,
        20,
    );
    assert_eq!(flat.entries.len(), 8);
    assert_eq!(group(FeedKind::Home, vec![], &rules), vec![]);
}

#[test]
fn rules_can_be_limited_to_feeds() {
    let rows = vec![
        scanned(1, 2, "like", "o", 2, Reason::Own),
        scanned(2, 3, "like", "o", 1, Reason::Own),
    ];
    let rules = vec![AggregationRule {
        name: "n".into(),
        verbs: vec![],
        feeds: vec![FeedKind::Notifications],
        by: GroupBy::VerbObject,
        window_ms: 0,
    }];
    let vis = Visibility {
        viewer: 2,
        following: [3].into(),
        ..Default::default()
    };
    assert_eq!(
        assemble(FeedKind::Home, &rows, false, &vis, &rules, true, 20)
            .entries
            .len(),
        2
    );
    assert_eq!(
        assemble(
            FeedKind::Notifications,
            &rows,
            false,
            &vis,
            &rules,
            true,
            20
        )
        .entries
        .len(),
        1
    );
}

#[test]
fn rules_parse_from_config() {
    let rules: Vec<AggregationRule> = serde_json::from_str(
        r#"[{"name":"likes","verbs":["like"],"by":"verb_object"},{"name":"b","by":"verb_actor","window_ms":60000}]"#,
    )
    .unwrap();
    assert_eq!(
        (rules[1].by, rules[1].window_ms),
        (GroupBy::VerbActor, 60_000)
    );
    assert_eq!(rules[0].window_ms, 3_600_000);
    assert!(serde_json::from_str::<Vec<AggregationRule>>(
        r#"[{"name":"x","by":"verb_object","typo":1}]"#
    )
    .is_err());
}

proptest! {
    /// Walking a feed page by page with cursors yields every visible item exactly once.
    #[test]
    fn paging_walk_sees_each_item_once(n in 0usize..60, limit in 1usize..10, hidden in proptest::collection::vec(any::<bool>(), 60)) {
        let rows: Vec<_> = (0..n).map(|i| {
            let actor = if hidden[i] { 3 } else { 2 };
            scanned(i as u8, actor, "post", "x", 1_000 - i as i64, Reason::Follow)
        }).collect();
        let vis = viewer_following(1, &[2]);
        let mut seen = Vec::new();
        let mut from: Option<Position> = None;
        for _ in 0..100 {
            // Emulate the store: entries strictly older than the cursor, `limit * 2` at a time.
            let window: Vec<_> = rows.iter().filter(|r| from.is_none_or(|c| r.pos < c)).take(limit * 2).cloned().collect();
            let more = rows.iter().filter(|r| from.is_none_or(|c| r.pos < c)).count() > window.len();
            let page = assemble(FeedKind::Home, &window, more, &vis, &[], false, limit);
            seen.extend(ids(&page));
            match page.next_cursor {
                Some(c) => from = Some(Cursor::decode(&c).unwrap().0),
                None => break,
            }
        }
        let want: Vec<_> = rows.iter().filter(|r| r.entry.actor == 2).map(|r| r.pos.id).collect();
        prop_assert_eq!(seen, want);
    }
}
