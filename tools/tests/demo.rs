//! `tidings demo` at a tiny size, as a user runs it: its report must agree with the store it
//! leaves behind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::process::Command;

use tidings_core::keys::feed::FeedKind;
use tidings_core::keys::{self, pull};
use tidings_core::page::PageEntry;
use tidings_core::{EventId, UserId};
use tidings_query::{FeedRequest, ReadConfig};
use tidings_store::{RangeOptions, Store};

fn count(store: &dyn Store, keyspace: &str) -> u64 {
    let (b, e) = keys::keyspace_range(1, keyspace);
    store
        .snapshot()
        .unwrap()
        .range(&b, &e, RangeOptions::default())
        .unwrap()
        .len() as u64
}

/// Every id a reader can page through, and the actors of those items.
fn readable(store: &dyn Store, user: UserId, kind: FeedKind) -> Vec<(EventId, UserId)> {
    let cfg = ReadConfig {
        rules: vec![],
        ..ReadConfig::default()
    };
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let req = FeedRequest {
            user,
            kind,
            limit: 100,
            cursor,
            aggregate: false,
        };
        let page = tidings_query::read(store, &req, &cfg).unwrap();
        for e in page.entries {
            let PageEntry::Item(i) = e else {
                panic!("a group in a flat page")
            };
            out.push((i.id, i.actor));
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
}

#[test]
fn the_demo_report_agrees_with_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["demo", "--users", "60", "--events", "800", "--rate", "0"])
        .args(["--seed", "3", "--data"])
        .arg(tmp.path())
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "graph",
        "published",
        "fan-out",
        "publish→visible",
        "dead letters",
        "home feed of user",
    ] {
        assert!(stdout.contains(line), "report lacks {line:?}:\n{stdout}");
    }
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let num = |v: &serde_json::Value| v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"));

    // Every record published was applied exactly once or dead-lettered.
    let published = num(&r["graph"]["follows"])
        + num(&r["published"]["actions"])
        + num(&r["published"]["malformed"]);
    assert_eq!(
        num(&r["applied"]["events"]) + num(&r["applied"]["dead_letters"]),
        published
    );
    // The malformed records, and only they, reached the dead letter topic, with reasons.
    let dead = r["dead_letters"].as_object().unwrap();
    let total: u64 = dead.values().map(|v| num(&v["count"])).sum();
    assert_eq!(total, num(&r["published"]["malformed"]));
    assert_eq!(total, num(&r["applied"]["dead_letters"]));
    for (code, v) in dead {
        assert!(
            ["not_single_object", "truncated", "unknown_fingerprint"].contains(&code.as_str()),
            "unexpected reason {code}"
        );
        assert!(!v["example"].as_str().unwrap().is_empty());
    }
    // One publish→visible sample per action (follows of the graph phase are not counted).
    assert_eq!(
        num(&r["latency_ms"]["count"]),
        num(&r["published"]["actions"])
    );
    assert!(num(&r["latency_ms"]["p50"]) <= num(&r["latency_ms"]["max"]));

    // The counts describe the store left behind.
    let store = common::store(std::path::Path::new(r["data"]["store"].as_str().unwrap()));
    assert_eq!(num(&r["fanout"]["index_entries"]), count(&*store, "feed"));
    assert_eq!(num(&r["fanout"]["bodies"]), count(&*store, "msg"));
    assert!(num(&r["fanout"]["entries_written_or_removed"]) >= num(&r["fanout"]["index_entries"]));

    // Entries written are entries readable: after the demo's last upkeep pass (no blocks or
    // mutes in its mix), every index entry can be paged to, and a reader sees nothing else
    // except items of pulled authors (hybrid fan-out: never pushed).
    let pulled: HashSet<UserId> = {
        let (b, e) = pull::set(1).range();
        store
            .snapshot()
            .unwrap()
            .range(&b, &e, RangeOptions::default())
            .unwrap()
            .iter()
            .filter_map(|(k, _)| pull::parse_key(1, k))
            .collect()
    };
    assert!(pulled.contains(&0), "the celebrity must be pulled");
    let mut checked = 0;
    for user in 0..60 {
        for kind in FeedKind::ALL {
            let index = common::index_ids(&*store, user, kind);
            let seen = readable(&*store, user, kind);
            let seen_ids: HashSet<EventId> = seen.iter().map(|(id, _)| *id).collect();
            assert_eq!(
                seen_ids.len(),
                seen.len(),
                "user {user} {kind:?}: an item twice"
            );
            let unread: Vec<_> = index.difference(&seen_ids).collect();
            assert!(
                unread.is_empty(),
                "user {user} {kind:?}: written but not readable: {unread:?}"
            );
            for (id, actor) in &seen {
                assert!(
                    index.contains(id) || (kind == FeedKind::Home && pulled.contains(actor)),
                    "user {user} {kind:?}: {id} by {actor} readable but never written"
                );
            }
            checked += index.len();
        }
    }
    assert!(
        checked > 1_000,
        "too small to mean anything: {checked} entries"
    );

    // The sample feed is the reader's first page now.
    let reader = num(&r["sample"]["user"]) as UserId;
    let page = tidings_query::read(
        &*store,
        &FeedRequest {
            user: reader,
            kind: FeedKind::Home,
            limit: 12,
            cursor: None,
            aggregate: true,
        },
        &ReadConfig::default(),
    )
    .unwrap();
    assert!(!page.entries.is_empty());
    assert_eq!(
        r["sample"]["lines"].as_array().unwrap().len(),
        page.entries.len()
    );
}
